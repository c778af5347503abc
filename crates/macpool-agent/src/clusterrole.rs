//! The PowerShell that makes `macpool serve` a clustered Generic Service role of a Windows
//! Failover Cluster, so the authority fails over with the cluster. Printed, never run: an
//! administrator reads it and runs it once on one node.
//!
//! Every value from outside enters the script as a single-quoted literal ([`quote`]), after
//! [`ClusterRole::validate`] has refused what Windows would refuse anyway; the rest of the text
//! is fixed. The fixed parts contain no single quote, so [`literals`] of the script returns
//! exactly the quoted values (the tests check this).
//!
//! [`literals`]: crate::powershell::quote::literals

use std::net::Ipv4Addr;

use crate::powershell::quote::quote;

/// Where the clustered authority keeps its store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterStore {
    /// The embedded store in a directory on a Cluster Shared Volume (`C:\ClusterStorage\…`):
    /// every node sees it at the same path, only the role's owner node runs the service.
    Csv { dir: String },
    /// The embedded store on a clustered disk that moves with the role (`-Storage`), in `dir`
    /// on that disk's drive letter.
    Disk { resource: String, dir: String },
    /// PostgreSQL (no password in the URL: use client certificates or a password file on each
    /// node); TLS key, certificate and bootstrap token in `config_dir`, present on every node.
    Postgres { url: String, config_dir: String },
}

/// What the role is made of. Build it, [`validate`](ClusterRole::validate) it, then
/// [`cluster_role_script`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRole {
    /// The role and its client access point (network name): clients use
    /// `https://<name>:<port>`. A NetBIOS name: 1–15 letters, digits or hyphens.
    pub name: String,
    /// The Windows service (WinSW wrapper) installed on every node.
    pub service: String,
    /// Where `macpool.exe`, the WinSW exe (named after the service) and its XML are on each node.
    pub install_dir: String,
    /// Static IPv4 addresses of the network name; none: DHCP.
    pub addresses: Vec<Ipv4Addr>,
    pub port: u16,
    pub store: ClusterStore,
}

impl ClusterRole {
    /// Refuses names and paths that Windows or the cluster would refuse, so the script fails
    /// here and not half-way on the cluster.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > 15
            || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || n.chars().all(|c| c.is_ascii_digit())
        {
            return Err(format!(
                "role name '{n}': a network name is 1-15 letters, digits or hyphens, not only digits"
            ));
        }
        let s = &self.service;
        if s.is_empty()
            || s.len() > 64
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "service name '{s}': 1-64 letters, digits, hyphens or underscores"
            ));
        }
        if self.port == 0 {
            return Err("port 0: the role needs a fixed port clients can reach".into());
        }
        windows_path("install directory", &self.install_dir)?;
        match &self.store {
            ClusterStore::Csv { dir } => {
                windows_path("CSV directory", dir)?;
                if !dir.to_ascii_lowercase().starts_with("c:\\clusterstorage\\") {
                    return Err(format!(
                        "'{dir}' is not on a Cluster Shared Volume (C:\\ClusterStorage\\<volume>\\...)"
                    ));
                }
            }
            ClusterStore::Disk { resource, dir } => {
                windows_path("disk directory", dir)?;
                if resource.trim().is_empty() || resource.chars().any(char::is_control) {
                    return Err(format!(
                        "disk resource '{resource}': the cluster disk resource name, e.g. 'Cluster Disk 2'"
                    ));
                }
            }
            ClusterStore::Postgres { url, config_dir } => {
                windows_path("config directory", config_dir)?;
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(format!("'{url}' is not a postgres:// URL"));
                }
                let authority = url.split("://").nth(1).unwrap_or("");
                let userinfo = authority.split('/').next().unwrap_or("");
                if userinfo.contains('@') && userinfo.split('@').next().unwrap_or("").contains(':')
                    || url.contains("password=")
                {
                    return Err(
                        "the PostgreSQL URL holds a password, which the script would store in the registry of every node; use a password file or a client certificate".into(),
                    );
                }
                if url.chars().any(char::is_control) {
                    return Err("the PostgreSQL URL contains a control character".into());
                }
            }
        }
        Ok(())
    }

    /// Where the TLS files and the bootstrap token are, on every node the role can move to.
    fn config_dir(&self) -> &str {
        match &self.store {
            ClusterStore::Csv { dir } | ClusterStore::Disk { dir, .. } => dir,
            ClusterStore::Postgres { config_dir, .. } => config_dir,
        }
    }
}

/// An absolute Windows path (`X:\…`) without control characters or characters Windows forbids.
fn windows_path(what: &str, p: &str) -> Result<(), String> {
    let b = p.as_bytes();
    let absolute = b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\';
    if !absolute
        || p[2..]
            .chars()
            .any(|c| c.is_control() || "<>\"|?*/:".contains(c))
    {
        return Err(format!(
            "{what} '{p}': an absolute Windows path like D:\\macpool"
        ));
    }
    Ok(())
}

/// `dir\leaf`, with one backslash.
fn join(dir: &str, leaf: &str) -> String {
    format!("{}\\{leaf}", dir.trim_end_matches('\\'))
}

/// The PowerShell script for `role` (which must have passed [`ClusterRole::validate`]).
pub fn cluster_role_script(role: &ClusterRole) -> String {
    let config = role.config_dir();
    let mut env = vec![format!("MACPOOL_LISTEN=0.0.0.0:{}", role.port)];
    match &role.store {
        ClusterStore::Csv { dir } | ClusterStore::Disk { dir, .. } => {
            env.push(format!("MACPOOL_DATA={}", join(dir, "data")));
        }
        ClusterStore::Postgres { url, .. } => env.push(format!("MACPOOL_DATABASE={url}")),
    }
    env.push(format!("MACPOOL_TLS_CERT={}", join(config, "tls.crt")));
    env.push(format!("MACPOOL_TLS_KEY={}", join(config, "tls.key")));
    env.push(format!(
        "MACPOOL_BOOTSTRAP_TOKEN_FILE={}",
        join(config, "bootstrap-token")
    ));
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "@()".to_string()
        } else {
            format!("@({})", items.join(", "))
        }
    };

    let mut s = String::new();
    let mut line = |l: &str| {
        s.push_str(l);
        s.push('\n');
    };
    line("# macpool authority as a Failover Cluster Generic Service role.");
    line(
        "# Printed by macpool hyperv cluster-role-script; read it, then run it once, on one node,",
    );
    line("# as a cluster administrator. See docs\\cluster-role.md in the macpool zip.");
    line("#Requires -Modules FailoverClusters");
    line("$ErrorActionPreference = \"Stop\"");
    line("");
    line(&format!("$Role = {}", quote(&role.name)));
    line(&format!("$Service = {}", quote(&role.service)));
    line(&format!("$InstallDir = {}", quote(&role.install_dir)));
    line(&format!("$ConfigDir = {}", quote(config)));
    line(&format!("$Port = {}", role.port));
    line(&format!(
        "$StaticAddress = {}",
        list(
            role.addresses
                .iter()
                .map(|a| quote(&a.to_string()))
                .collect()
        )
    ));
    // The service environment (registry value Environment of the service key): where macpool
    // serve finds its store, TLS files and bootstrap token. Checkpointed below.
    line(&format!(
        "$Environment = {}",
        list(env.iter().map(|e| quote(e)).collect())
    ));
    if let ClusterStore::Disk { resource, .. } = &role.store {
        line(&format!("$Disk = {}", quote(resource)));
    }
    line("$ServiceKey = \"SYSTEM\\CurrentControlSet\\Services\\$Service\"");
    line("");
    line("# 1. The files every node needs. The store directory is created on first start.");
    line("$Nodes = @(Get-ClusterNode | Where-Object State -eq Up | ForEach-Object Name)");
    line("foreach ($file in @(\"tls.crt\", \"tls.key\", \"bootstrap-token\")) {");
    line("    if (-not (Test-Path -LiteralPath (Join-Path $ConfigDir $file))) {");
    line("        throw \"$ConfigDir\\$file is missing (docs\\cluster-role.md: what goes there)\"");
    line("    }");
    line("}");
    if let ClusterStore::Disk { .. } = &role.store {
        line("# (run this on the node that owns the disk: its files are checked above)");
        line("Get-ClusterResource -Name $Disk | Out-Null   # stops here if there is no such disk");
    }
    line("");
    line("# 2. The service on every node: the WinSW wrapper, started only by the cluster.");
    line("foreach ($node in $Nodes) {");
    line(
        "    Invoke-Command -ComputerName $node -ArgumentList $InstallDir, $Service, $Environment -ScriptBlock {",
    );
    line("        param($InstallDir, $Service, $Environment)");
    line("        $wrapper = Join-Path $InstallDir \"$Service.exe\"");
    line(
        "        foreach ($need in @((Join-Path $InstallDir \"macpool.exe\"), $wrapper, (Join-Path $InstallDir \"$Service.xml\"))) {",
    );
    line(
        "            if (-not (Test-Path -LiteralPath $need)) { throw \"${env:COMPUTERNAME}: $need is missing\" }",
    );
    line("        }");
    line("        if (-not (Get-Service -Name $Service -ErrorAction SilentlyContinue)) {");
    line("            & $wrapper install");
    line(
        "            if ($LASTEXITCODE -ne 0) { throw \"${env:COMPUTERNAME}: $wrapper install failed\" }",
    );
    line("        }");
    line("        Set-Service -Name $Service -StartupType Manual");
    line(
        "        Set-ItemProperty -Path \"HKLM:\\SYSTEM\\CurrentControlSet\\Services\\$Service\" -Name Environment -Type MultiString -Value $Environment",
    );
    line("    }");
    line("}");
    line("");
    line("# 3. The role: network name (and IP address), the service, the registry checkpoint that");
    line("#    carries the service environment to whichever node owns the role.");
    line("$params = @{ ServiceName = $Service; Name = $Role; CheckpointKey = $ServiceKey }");
    line("if ($StaticAddress.Count -gt 0) { $params.StaticAddress = $StaticAddress }");
    if let ClusterStore::Disk { .. } = &role.store {
        line("$params.Storage = $Disk");
    }
    line("$group = Add-ClusterGenericServiceRole @params");
    line("");
    line("# 4. Dependencies: the service starts only after its network name is online");
    if let ClusterStore::Disk { .. } = &role.store {
        line("#    and its disk is.");
    } else {
        line(
            "#    (a CSV or PostgreSQL is no resource of the role, so there is no storage dependency).",
        );
    }
    line(
        "$resources = @(Get-ClusterResource | Where-Object { $_.OwnerGroup.Name -eq $group.Name })",
    );
    line(
        "$serviceResource = $resources | Where-Object { $_.ResourceType.Name -eq \"Generic Service\" }",
    );
    line("$nameResource = $resources | Where-Object { $_.ResourceType.Name -eq \"Network Name\" }");
    line("$dependency = \"[\" + $nameResource.Name + \"]\"");
    if let ClusterStore::Disk { .. } = &role.store {
        line("$dependency = $dependency + \" and [\" + $Disk + \"]\"");
    }
    line("Set-ClusterResourceDependency -InputObject $serviceResource -Dependency $dependency");
    line("");
    line("# 5. Online, and what it looks like.");
    line("Start-ClusterGroup -InputObject $group | Out-Null");
    line(
        "Get-ClusterResource | Where-Object { $_.OwnerGroup.Name -eq $group.Name } | Format-Table Name, ResourceType, State, OwnerNode",
    );
    line("Get-ClusterResourceDependency -InputObject $serviceResource | Format-List");
    line(
        "Get-ClusterCheckpoint -ResourceName $serviceResource.Name | Format-Table Name, CheckpointName",
    );
    line("Write-Host \"then, from any machine: macpool --server https://${Role}:$Port pool list\"");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::powershell::quote::literals;

    fn csv() -> ClusterRole {
        ClusterRole {
            name: "macpool".into(),
            service: "macpool-cluster".into(),
            install_dir: "C:\\Program Files\\macpool".into(),
            addresses: vec!["10.0.0.50".parse().unwrap()],
            port: 7780,
            store: ClusterStore::Csv {
                dir: "C:\\ClusterStorage\\Volume1\\macpool".into(),
            },
        }
    }

    /// Golden files: `MACPOOL_UPDATE_GOLDEN=1 cargo test -p macpool-agent clusterrole` rewrites
    /// them; review the diff like code.
    fn golden(name: &str, script: &str) {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("MACPOOL_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, script).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            script, want,
            "{path} differs (MACPOOL_UPDATE_GOLDEN=1 rewrites it)"
        );
    }

    #[test]
    fn csv_role_matches_its_golden_script() {
        let role = csv();
        role.validate().unwrap();
        golden("cluster-role-csv.ps1", &cluster_role_script(&role));
    }

    #[test]
    fn disk_role_depends_on_its_disk_and_postgres_role_on_no_storage() {
        let mut disk = csv();
        disk.store = ClusterStore::Disk {
            resource: "Cluster Disk 2".into(),
            dir: "E:\\macpool".into(),
        };
        disk.addresses.clear();
        disk.validate().unwrap();
        golden("cluster-role-disk.ps1", &cluster_role_script(&disk));
        let mut pg = csv();
        pg.store = ClusterStore::Postgres {
            url: "postgres://macpool@db.example/macpool?sslmode=verify-full".into(),
            config_dir: "C:\\ProgramData\\macpool".into(),
        };
        pg.validate().unwrap();
        golden("cluster-role-postgres.ps1", &cluster_role_script(&pg));
    }

    /// The only literals in the script are the values, quoted: a value with quotes (typographic
    /// ones included), `$(…)` or backticks comes back unchanged and runs nothing.
    #[test]
    fn values_enter_only_as_literals() {
        let mut role = csv();
        let hostile = "Cluster Disk ’; Remove-Item C:\\ -Recurse; ‘ $(whoami) `n";
        role.store = ClusterStore::Disk {
            resource: hostile.into(),
            dir: "E:\\macpool".into(),
        };
        role.validate().unwrap();
        let script = cluster_role_script(&role);
        let lits = literals(&script).unwrap();
        assert!(lits.iter().any(|l| l == hostile), "{lits:?}");
        let mut values = vec![
            role.name.clone(),
            role.service.clone(),
            role.install_dir.clone(),
            "E:\\macpool".into(),
            "10.0.0.50".into(),
            hostile.into(),
        ];
        values.extend(
            [
                "MACPOOL_LISTEN=0.0.0.0:7780",
                "MACPOOL_DATA=E:\\macpool\\data",
                "MACPOOL_TLS_CERT=E:\\macpool\\tls.crt",
                "MACPOOL_TLS_KEY=E:\\macpool\\tls.key",
                "MACPOOL_BOOTSTRAP_TOKEN_FILE=E:\\macpool\\bootstrap-token",
            ]
            .map(String::from),
        );
        let mut got = lits.clone();
        got.sort();
        values.sort();
        assert_eq!(got, values);
    }

    #[test]
    fn refuses_what_windows_or_the_cluster_would() {
        let bad = |f: fn(&mut ClusterRole)| {
            let mut r = csv();
            f(&mut r);
            r.validate().unwrap_err()
        };
        assert!(bad(|r| r.name = "macpool-authority-1".into()).contains("1-15"));
        assert!(bad(|r| r.name = "12345".into()).contains("not only digits"));
        assert!(bad(|r| r.name = "mac pool".into()).contains("network name"));
        assert!(bad(|r| r.service = "mac pool".into()).contains("service name"));
        assert!(bad(|r| r.port = 0).contains("port 0"));
        assert!(bad(|r| r.install_dir = "macpool".into()).contains("absolute Windows path"));
        assert!(
            bad(|r| r.store = ClusterStore::Csv {
                dir: "D:\\macpool".into()
            })
            .contains("Cluster Shared Volume")
        );
        assert!(
            bad(|r| r.store = ClusterStore::Postgres {
                url: "postgres://macpool:secret@db/macpool".into(),
                config_dir: "C:\\ProgramData\\macpool".into()
            })
            .contains("password")
        );
        assert!(
            bad(|r| r.store = ClusterStore::Csv {
                dir: "C:\\ClusterStorage\\Volume1\\a\"b".into()
            })
            .contains("absolute Windows path")
        );
    }
}
