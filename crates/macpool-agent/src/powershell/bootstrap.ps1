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

# [likely] REG_BINARY, 6 bytes: the last MAC this host's allocator handed out.
function Get-MacpoolCursor {
    try {
        $raw = (Get-ItemProperty -Path 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Virtualization\Worker' -Name CurrentMacAddress -ErrorAction Stop).CurrentMacAddress
        if ($raw -is [byte[]]) { ($raw | ForEach-Object { $_.ToString('X2') }) -join '' } else { "$raw" }
    } catch { $null }
}

# The macpool-hyperv-inventory document (the shape macpool audit reads), for the host or one VM.
function Get-MacpoolInventory([string]$VMId) {
    $vmHost = Get-VMHost
    $cluster = $null
    try { $cluster = (Get-Cluster -ErrorAction Stop).Name } catch { }
    $ips = @(Get-NetIPAddress -AddressFamily IPv4 -ErrorAction SilentlyContinue |
        Where-Object { $_.IPAddress -ne '127.0.0.1' -and $_.IPAddress -notlike '169.254.*' } |
        ForEach-Object { $_.IPAddress })
    if ($VMId) { $vms = @(Get-VM -Id $VMId -ErrorAction SilentlyContinue) } else { $vms = @(Get-VM) }
    $snapshots = @($vms | Get-VMSnapshot)
    $adapters = @($vms | Get-VMNetworkAdapter)
    if ($snapshots.Count -gt 0) { $adapters += @($snapshots | Get-VMNetworkAdapter) }
    [ordered]@{
        Format            = 'macpool-hyperv-inventory'
        Version           = 1
        HostName          = $env:COMPUTERNAME
        Cluster           = $cluster
        IPAddresses       = $ips
        MacAddressMinimum = "$($vmHost.MacAddressMinimum)"
        MacAddressMaximum = "$($vmHost.MacAddressMaximum)"
        CurrentMacAddress = (Get-MacpoolCursor)
        VMs               = @($vms | Select-Object @{ n = 'Id'; e = { "$($_.Id)" } }, Name,
                                @{ n = 'State'; e = { "$($_.State)" } },
                                @{ n = 'ParentCheckpointId'; e = { if ($_.ParentSnapshotId) { "$($_.ParentSnapshotId)" } else { $null } } },
                                @{ n = 'ParentCheckpointName'; e = { $_.ParentSnapshotName } })
        Checkpoints       = @($snapshots | Select-Object @{ n = 'Id'; e = { "$($_.Id)" } }, Name,
                                @{ n = 'VMId'; e = { "$($_.VMId)" } }, VMName,
                                @{ n = 'SnapshotType'; e = { "$($_.SnapshotType)" } },
                                @{ n = 'CreationTime'; e = { $_.CreationTime.ToUniversalTime().ToString('o') } })
        Adapters          = @($adapters | Select-Object Name, @{ n = 'Id'; e = { "$($_.Id)" } },
                                @{ n = 'VMId'; e = { "$($_.VMId)" } }, VMName,
                                @{ n = 'VMSnapshotId'; e = { "$($_.VMSnapshotId)" } }, VMSnapshotName,
                                MacAddress, DynamicMacAddressEnabled, SwitchName, IsManagementOs,
                                ComputerName, IsDeleted)
    }
}

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
