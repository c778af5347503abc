# macpool agent bootstrap. Runs inside one long-lived powershell.exe: a read-eval loop over
# stdin speaking macpool's line protocol (one JSON request per line in, one JSON line per
# response out) plus event-log watchers that push matching events as they are written.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$utf8 = New-Object System.Text.UTF8Encoding $false
[Console]::OutputEncoding = $utf8
Add-Type -TypeDefinition @'
using System;
using System.Collections.Generic;
using System.Diagnostics.Eventing.Reader;
using System.Text;

public static class MacpoolOut {
    static readonly object Gate = new object();
    // Responses (pipeline thread) and events (watcher threads) share stdout: one whole line at a time.
    public static void Line(string json) {
        lock (Gate) { Console.Out.Write(json + "\n"); Console.Out.Flush(); }
    }
    public static string Str(string s) {
        if (s == null) return "null";
        var b = new StringBuilder("\"");
        foreach (char c in s) {
            switch (c) {
                case '"': b.Append("\\\""); break;
                case '\\': b.Append("\\\\"); break;
                case '\n': b.Append("\\n"); break;
                case '\r': b.Append("\\r"); break;
                case '\t': b.Append("\\t"); break;
                default:
                    if (c < 0x20) b.AppendFormat("\\u{0:x4}", (int)c); else b.Append(c);
                    break;
            }
        }
        return b.Append('"').ToString();
    }
}

public class MacpoolWatch {
    readonly EventLogWatcher watcher;
    readonly string channel;
    // after < 0: only events written from now on; else every event with a larger record id first.
    public MacpoolWatch(string channel, int[] ids, long after) {
        this.channel = channel;
        var conds = new List<string>();
        if (ids != null && ids.Length > 0) {
            var sel = new List<string>();
            foreach (var i in ids) sel.Add("EventID=" + i);
            conds.Add("(" + string.Join(" or ", sel.ToArray()) + ")");
        }
        if (after >= 0) conds.Add("EventRecordID>" + after);
        string xpath = conds.Count == 0 ? "*" : "*[System[" + string.Join(" and ", conds.ToArray()) + "]]";
        var q = new EventLogQuery(channel, PathType.LogName, xpath);
        watcher = new EventLogWatcher(q, null, after >= 0);
        watcher.EventRecordWritten += OnEvent;
        watcher.Enabled = true;
    }
    void OnEvent(object sender, EventRecordWrittenEventArgs e) {
        if (e.EventException != null) {
            MacpoolOut.Line("{\"log\":" + MacpoolOut.Str("watcher " + channel + ": " + e.EventException.Message) + "}");
            return;
        }
        using (var r = e.EventRecord) {
            if (r == null || !r.RecordId.HasValue) return;
            MacpoolOut.Line("{\"event\":{\"channel\":" + MacpoolOut.Str(channel) + ",\"record_id\":" + r.RecordId.Value
                + ",\"xml\":" + MacpoolOut.Str(r.ToXml()) + "}}");
        }
    }
    public void Stop() { watcher.Enabled = false; watcher.Dispose(); }
}
'@

$script:MacpoolWatches = @()
function Stop-MacpoolWatch {
    foreach ($w in $script:MacpoolWatches) { $w.Stop() }
    $script:MacpoolWatches = @()
}
function Start-MacpoolWatch([string]$Channel, [int[]]$EventId, [long]$After) {
    $script:MacpoolWatches += [MacpoolWatch]::new($Channel, $EventId, $After)
}

# Get-MacpoolCursor and Get-MacpoolInventory come first, from macpool-audit's inventory.ps1
# (one collector for the agent and `macpool hyperv export-script`).

[MacpoolOut]::Line('{"ready":true,"version":' + [MacpoolOut]::Str("$($PSVersionTable.PSVersion)") + '}')
while ($true) {
    $line = [Console]::In.ReadLine()
    if ($null -eq $line) { break }
    if ($line.Trim() -eq '') { continue }
    $id = 0
    try {
        $req = ConvertFrom-Json -InputObject $line
        $id = [long]$req.id
        $result = & ([ScriptBlock]::Create([string]$req.script))
        $json = ConvertTo-Json -InputObject $result -Depth 6 -Compress
        if ([string]::IsNullOrEmpty($json)) { $json = 'null' }
        [MacpoolOut]::Line('{"id":' + $id + ',"ok":true,"result":' + $json + '}')
    } catch {
        [MacpoolOut]::Line('{"id":' + $id + ',"ok":false,"error":' + [MacpoolOut]::Str("$($_.Exception.Message)") + '}')
    }
}
Stop-MacpoolWatch
