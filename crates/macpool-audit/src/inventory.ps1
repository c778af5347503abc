# The Hyper-V inventory collector, shared by the agent (prepended to its bootstrap.ps1) and by
# `macpool hyperv export-script` (inside its $collect script block, so that it also runs on
# remote cluster nodes). It only reads. It writes exactly the document crate::hyperv_json reads:
# GUIDs, enums and dates become strings here, so Windows PowerShell 5.1 and PowerShell 7 agree.

# [likely] REG_BINARY, 6 bytes: the last MAC this host's allocator handed out.
function Get-MacpoolCursor {
    try {
        $raw = (Get-ItemProperty -Path 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Virtualization\Worker' -Name CurrentMacAddress -ErrorAction Stop).CurrentMacAddress
        if ($raw -is [byte[]]) { ($raw | ForEach-Object { $_.ToString('X2') }) -join '' } else { "$raw" }
    } catch { $null }
}

# The macpool-hyperv-inventory document (the shape macpool audit reads), for the host or one VM
# (-VMId). -All: every adapter on the host (the audit); -ManagementOS: the VMs' adapters and the
# management OS's vNICs, flagged IsManagementOs (the agent: they draw from the same range).
function Get-MacpoolInventory([string]$VMId, [switch]$All, [switch]$ManagementOS) {
    $vmHost = Get-VMHost
    $cluster = $null
    try { $cluster = (Get-Cluster -ErrorAction Stop).Name } catch { }
    $ips = @(Get-NetIPAddress -AddressFamily IPv4 -ErrorAction SilentlyContinue |
        Where-Object { $_.IPAddress -ne '127.0.0.1' -and $_.IPAddress -notlike '169.254.*' } |
        ForEach-Object { $_.IPAddress })
    if ($VMId) { $vms = @(Get-VM -Id $VMId -ErrorAction SilentlyContinue) } else { $vms = @(Get-VM) }
    $snapshots = @($vms | Get-VMSnapshot)
    if ($All) { $adapters = @(Get-VMNetworkAdapter -All) } else { $adapters = @($vms | Get-VMNetworkAdapter) }
    if ($ManagementOS -and -not $All) { $adapters += @(Get-VMNetworkAdapter -ManagementOS) }
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
        # plain property names before the computed ones: the PowerShell grammar of the test
        # suite's syntax gate (tree-sitter-pwsh) misreads a name after a hashtable
        VMs               = @($vms | Select-Object Name, @{ n = 'Id'; e = { "$($_.Id)" } },
                                @{ n = 'State'; e = { "$($_.State)" } },
                                @{ n = 'ParentCheckpointId'; e = { if ($_.ParentSnapshotId) { "$($_.ParentSnapshotId)" } else { $null } } },
                                @{ n = 'ParentCheckpointName'; e = { $_.ParentSnapshotName } })
        Checkpoints       = @($snapshots | Select-Object Name, VMName, @{ n = 'Id'; e = { "$($_.Id)" } },
                                @{ n = 'VMId'; e = { "$($_.VMId)" } },
                                @{ n = 'SnapshotType'; e = { "$($_.SnapshotType)" } },
                                @{ n = 'CreationTime'; e = { $_.CreationTime.ToUniversalTime().ToString('o') } })
        Adapters          = @($adapters | Select-Object Name, VMName, VMSnapshotName, MacAddress,
                                DynamicMacAddressEnabled, SwitchName, IsManagementOs, ComputerName, IsDeleted,
                                @{ n = 'Id'; e = { "$($_.Id)" } },
                                @{ n = 'VMId'; e = { "$($_.VMId)" } },
                                @{ n = 'VMSnapshotId'; e = { "$($_.VMSnapshotId)" } })
    }
}
