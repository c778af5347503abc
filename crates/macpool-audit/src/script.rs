//! The PowerShell that `macpool hyperv export-script` prints, around the shared collector
//! `inventory.ps1`. It writes exactly the document shape [`crate::hyperv_json`] reads: one JSON object per host with its name, cluster, IPv4 addresses,
//! dynamic range (`Get-VMHost`), allocation cursor, VMs, checkpoints and every live, management-OS
//! and checkpoint adapter. GUIDs, enums and dates are turned into strings in the script, so
//! Windows PowerShell 5.1 and PowerShell 7 write the same thing.

/// The collector functions (`Get-MacpoolCursor`, `Get-MacpoolInventory`); the agent prepends the
/// same text to its bootstrap, so both write one document shape from one source.
pub const INVENTORY_PS1: &str = include_str!("inventory.ps1");

/// `$collect`: a self-contained script block (functions included) so `Invoke-Command` can run it
/// on every cluster node.
fn collect() -> String {
    format!(
        "$collect = {{\n    $ErrorActionPreference = 'Stop'\n{INVENTORY_PS1}\n    Get-MacpoolInventory -All | ConvertTo-Json -Depth 6 -Compress\n}}\n"
    )
}

const HEADER: &str = "# Written by `macpool hyperv export-script`. Run in an elevated PowerShell (Windows PowerShell 5.1
# or PowerShell 7) on a Hyper-V host. It only reads: it changes nothing on the host.
# Then: macpool audit <the file it wrote>
#Requires -Modules Hyper-V
$ErrorActionPreference = 'Stop'
";

const ONE_HOST: &str = r#"
$json = & $collect
$path = Join-Path (Get-Location) ('macpool-inventory-{0}.json' -f $env:COMPUTERNAME)
[System.IO.File]::WriteAllText($path, $json, (New-Object System.Text.UTF8Encoding $false))
Write-Host "wrote $path"
"#;

const CLUSTER: &str = r#"
# One document per node of this failover cluster, gathered over PowerShell remoting.
$clusterName = (Get-Cluster).Name
$docs = @()
foreach ($node in Get-ClusterNode) {
    if ("$($node.State)" -ne 'Up') { Write-Warning "skipping node $($node.Name): it is $($node.State)"; continue }
    $docs += Invoke-Command -ComputerName $node.Name -ScriptBlock $collect
}
$json = '[' + ($docs -join ',') + ']'
$path = Join-Path (Get-Location) ('macpool-inventory-{0}.json' -f $clusterName)
[System.IO.File]::WriteAllText($path, $json, (New-Object System.Text.UTF8Encoding $false))
Write-Host "wrote $path ($($docs.Count) nodes)"
"#;

/// The PowerShell for one host, or (`cluster`) for every node of the local failover cluster
/// (`Get-ClusterNode`), written to `macpool-inventory-<HOST or CLUSTER>.json`.
pub fn export_script(cluster: bool) -> String {
    format!(
        "{HEADER}\n{}{}",
        collect(),
        if cluster { CLUSTER } else { ONE_HOST }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_gathers_what_the_reader_needs() {
        let one = export_script(false);
        for needle in [
            "Get-VMHost",
            "MacAddressMinimum",
            "Get-VMNetworkAdapter -All",
            "$snapshots | Get-VMNetworkAdapter",
            "Get-NetIPAddress -AddressFamily IPv4",
            "HostName          = $env:COMPUTERNAME",
            "function Get-MacpoolInventory",
            "Get-MacpoolInventory -All | ConvertTo-Json -Depth 6",
            "UTF8Encoding $false",
        ] {
            assert!(one.contains(needle), "missing {needle}");
        }
        assert!(!one.contains("Get-ClusterNode"));
        let all = export_script(true);
        assert!(
            all.contains("Get-ClusterNode")
                && all.contains("Invoke-Command -ComputerName $node.Name")
        );
        // nothing in it changes a host
        for verb in ["Set-VM", "Stop-VM", "Remove-", "Set-ItemProperty"] {
            assert!(!all.contains(verb) && !one.contains(verb), "{verb}");
        }
    }
}
