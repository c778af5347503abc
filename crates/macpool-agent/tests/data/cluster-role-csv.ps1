# macpool authority as a Failover Cluster Generic Service role.
# Printed by macpool hyperv cluster-role-script; read it, then run it once, on one node,
# as a cluster administrator. See docs\cluster-role.md in the macpool zip.
#Requires -Modules FailoverClusters
$ErrorActionPreference = "Stop"

$Role = 'macpool'
$Service = 'macpool-cluster'
$InstallDir = 'C:\Program Files\macpool'
$ConfigDir = 'C:\ClusterStorage\Volume1\macpool'
$Port = 7780
$StaticAddress = @('10.0.0.50')
$Environment = @('MACPOOL_LISTEN=0.0.0.0:7780', 'MACPOOL_DATA=C:\ClusterStorage\Volume1\macpool\data', 'MACPOOL_TLS_CERT=C:\ClusterStorage\Volume1\macpool\tls.crt', 'MACPOOL_TLS_KEY=C:\ClusterStorage\Volume1\macpool\tls.key', 'MACPOOL_BOOTSTRAP_TOKEN_FILE=C:\ClusterStorage\Volume1\macpool\bootstrap-token')
$ServiceKey = "SYSTEM\CurrentControlSet\Services\$Service"

# 1. The files every node needs. The store directory is created on first start.
$Nodes = @(Get-ClusterNode | Where-Object State -eq Up | ForEach-Object Name)
foreach ($file in @("tls.crt", "tls.key", "bootstrap-token")) {
    if (-not (Test-Path -LiteralPath (Join-Path $ConfigDir $file))) {
        throw "$ConfigDir\$file is missing (docs\cluster-role.md: what goes there)"
    }
}

# 2. The service on every node: the WinSW wrapper, started only by the cluster.
foreach ($node in $Nodes) {
    Invoke-Command -ComputerName $node -ArgumentList $InstallDir, $Service, $Environment -ScriptBlock {
        param($InstallDir, $Service, $Environment)
        $wrapper = Join-Path $InstallDir "$Service.exe"
        foreach ($need in @((Join-Path $InstallDir "macpool.exe"), $wrapper, (Join-Path $InstallDir "$Service.xml"))) {
            if (-not (Test-Path -LiteralPath $need)) { throw "${env:COMPUTERNAME}: $need is missing" }
        }
        if (-not (Get-Service -Name $Service -ErrorAction SilentlyContinue)) {
            & $wrapper install
            if ($LASTEXITCODE -ne 0) { throw "${env:COMPUTERNAME}: $wrapper install failed" }
        }
        Set-Service -Name $Service -StartupType Manual
        Set-ItemProperty -Path "HKLM:\SYSTEM\CurrentControlSet\Services\$Service" -Name Environment -Type MultiString -Value $Environment
    }
}

# 3. The role: network name (and IP address), the service, the registry checkpoint that
#    carries the service environment to whichever node owns the role.
$params = @{ ServiceName = $Service; Name = $Role; CheckpointKey = $ServiceKey }
if ($StaticAddress.Count -gt 0) { $params.StaticAddress = $StaticAddress }
$group = Add-ClusterGenericServiceRole @params

# 4. Dependencies: the service starts only after its network name is online
#    (a CSV or PostgreSQL is no resource of the role, so there is no storage dependency).
$resources = @(Get-ClusterResource | Where-Object { $_.OwnerGroup.Name -eq $group.Name })
$serviceResource = $resources | Where-Object { $_.ResourceType.Name -eq "Generic Service" }
$nameResource = $resources | Where-Object { $_.ResourceType.Name -eq "Network Name" }
$dependency = "[" + $nameResource.Name + "]"
Set-ClusterResourceDependency -InputObject $serviceResource -Dependency $dependency

# 5. Online, and what it looks like.
Start-ClusterGroup -InputObject $group | Out-Null
Get-ClusterResource | Where-Object { $_.OwnerGroup.Name -eq $group.Name } | Format-Table Name, ResourceType, State, OwnerNode
Get-ClusterResourceDependency -InputObject $serviceResource | Format-List
Get-ClusterCheckpoint -ResourceName $serviceResource.Name | Format-Table Name, CheckpointName
Write-Host "then, from any machine: macpool --server https://${Role}:$Port pool list"
