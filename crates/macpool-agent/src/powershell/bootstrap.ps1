# macpool agent bootstrap. Runs inside one long-lived powershell.exe: a read-eval loop over
# stdin speaking macpool's line protocol (one JSON request per line in, one JSON line per
# response out) plus event-log watchers that push matching events as they are written.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# Never [Console]::OutputEncoding: it calls SetConsoleOutputCP, which throws without a console and
# changes a console shared with others. Protocol lines go through MacpoolOut's own UTF-8 writer.
$macpoolSource = @'
using System;
using System.Collections.Generic;
using System.Diagnostics.Eventing.Reader;
using System.IO;
using System.Text;

public static class MacpoolOut {
    static readonly object Gate = new object();
    // A private UTF-8 stream on standard output: the console's encoding stays untouched.
    static readonly StreamWriter Out = new StreamWriter(Console.OpenStandardOutput(), new UTF8Encoding(false));
    // Responses (pipeline thread) and events (watcher threads) share stdout: one whole line at a time.
    public static void Line(string json) {
        lock (Gate) { Out.Write(json + "\n"); Out.Flush(); }
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
            // a distinct line: the agent resubscribes (with backoff); this watcher delivers no more
            MacpoolOut.Line("{\"watch_failed\":{\"channel\":" + MacpoolOut.Str(channel) + ",\"error\":"
                + MacpoolOut.Str(e.EventException.Message) + "}}");
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
# Add-Type on Windows PowerShell 5.1 references only System.dll and System.Management.Automation.dll;
# EventLogWatcher is in System.Core.dll on .NET Framework. On PowerShell 7 -ReferencedAssemblies
# replaces the defaults, so System.Core is named on Desktop edition only.
$macpoolType = @{ TypeDefinition = $macpoolSource }
if ($PSVersionTable.PSEdition -ne 'Core') { $macpoolType.ReferencedAssemblies = @('System.Core') }
Add-Type @macpoolType

$script:MacpoolWatches = @()
function Stop-MacpoolWatch {
    foreach ($w in $script:MacpoolWatches) { $w.Stop() }
    $script:MacpoolWatches = @()
}
# Returns the channel's newest record id ($null: empty): after `wevtutil cl` numbering restarts,
# and the agent re-anchors a bookmark that is ahead of it.
function Start-MacpoolWatch([string]$Channel, [int[]]$EventId, [long]$After) {
    $newest = $null
    try { $newest = (Get-WinEvent -LogName $Channel -MaxEvents 1 -ErrorAction Stop).RecordId } catch { }
    $script:MacpoolWatches += [MacpoolWatch]::new($Channel, $EventId, $After)
    [ordered]@{ Channel = $Channel; Newest = $newest }
}

# Get-MacpoolCursor and Get-MacpoolInventory come first, from macpool-audit's inventory.ps1
# (one collector for the agent and `macpool hyperv export-script`).

[MacpoolOut]::Line('{"ready":true,"version":' + [MacpoolOut]::Str("$($PSVersionTable.PSVersion)") + '}')
while ($true) {
    $line = [Console]::In.ReadLine()
    if ($null -eq $line) { break }
    if ($line.Trim() -eq '') { continue }
    $id = 0
    # Warning, Verbose, Debug and Information (Write-Host) would reach stdout between protocol
    # lines on Windows PowerShell: every stream is captured and sent inside the response.
    $notes = New-Object System.Collections.Generic.List[string]
    try {
        $req = ConvertFrom-Json -InputObject $line
        $id = [long]$req.id
        $out = @(& ([ScriptBlock]::Create([string]$req.script)) 3>&1 4>&1 5>&1 6>&1)
        $kept = New-Object System.Collections.Generic.List[object]
        foreach ($o in $out) {
            if ($o -is [System.Management.Automation.InformationalRecord] -or $o -is [System.Management.Automation.InformationRecord]) { $notes.Add("$o") } else { $kept.Add($o) }
        }
        if ($kept.Count -eq 0) { $result = $null } elseif ($kept.Count -eq 1) { $result = $kept[0] } else { $result = $kept.ToArray() }
        $json = ConvertTo-Json -InputObject $result -Depth 6 -Compress
        if ([string]::IsNullOrEmpty($json)) { $json = 'null' }
        $w = ''
        if ($notes.Count -gt 0) { $w = ',"warnings":' + (ConvertTo-Json -InputObject $notes.ToArray() -Compress) }
        [MacpoolOut]::Line('{"id":' + $id + ',"ok":true,"result":' + $json + $w + '}')
    } catch {
        $w = ''
        if ($notes.Count -gt 0) { $w = ',"warnings":' + (ConvertTo-Json -InputObject $notes.ToArray() -Compress) }
        [MacpoolOut]::Line('{"id":' + $id + ',"ok":false,"error":' + [MacpoolOut]::Str("$($_.Exception.Message)") + $w + '}')
    }
}
Stop-MacpoolWatch
