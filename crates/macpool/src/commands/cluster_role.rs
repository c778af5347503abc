//! `macpool hyperv cluster-role-script`: its flags and how they become a
//! [`macpool_agent::clusterrole::ClusterRole`]. Kept apart from cli.rs, which only names it.

use std::net::Ipv4Addr;

use clap::{ArgGroup, Args};
use macpool_agent::clusterrole::{ClusterRole, ClusterStore, cluster_role_script};

use crate::exit::{CmdResult, Failure, OK};

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("store").required(true).args(["csv", "disk", "postgres"])))]
pub struct ClusterRoleArgs {
    /// The role and its network name (clients use https://NAME:PORT); 1-15 letters, digits, hyphens.
    #[arg(long, default_value = "macpool")]
    pub name: String,
    /// Static IPv4 address of the network name (repeat for several networks); none: DHCP.
    #[arg(long = "address")]
    pub addresses: Vec<Ipv4Addr>,
    /// Port macpool serve listens on.
    #[arg(long, default_value_t = 7780)]
    pub port: u16,
    /// Windows service name of the WinSW wrapper installed on every node (the shipped
    /// macpool-cluster.xml's id).
    #[arg(long, default_value = "macpool-cluster")]
    pub service: String,
    /// Where macpool.exe, SERVICE.exe (WinSW) and SERVICE.xml are on every node.
    #[arg(long, default_value = "C:\\Program Files\\macpool")]
    pub install_dir: String,
    /// Embedded store on a Cluster Shared Volume: a directory under C:\ClusterStorage\ that
    /// also holds tls.crt, tls.key and bootstrap-token.
    #[arg(long, value_name = "DIR")]
    pub csv: Option<String>,
    /// Embedded store on this clustered disk resource (e.g. "Cluster Disk 2"), in --disk-dir.
    #[arg(long, value_name = "RESOURCE", requires = "disk_dir")]
    pub disk: Option<String>,
    /// With --disk: the directory on that disk (e.g. E:\macpool), also holding the TLS files
    /// and bootstrap-token.
    #[arg(long, value_name = "DIR", requires = "disk")]
    pub disk_dir: Option<String>,
    /// Shared store: a postgres:// URL without a password (client certificate or password file).
    #[arg(long, value_name = "URL", requires = "config_dir")]
    pub postgres: Option<String>,
    /// With --postgres: the directory, on every node, holding tls.crt, tls.key and bootstrap-token.
    #[arg(long, value_name = "DIR", requires = "postgres")]
    pub config_dir: Option<String>,
}

impl ClusterRoleArgs {
    fn role(self) -> ClusterRole {
        let store = match (
            self.csv,
            self.disk,
            self.disk_dir,
            self.postgres,
            self.config_dir,
        ) {
            (Some(dir), ..) => ClusterStore::Csv { dir },
            (None, Some(resource), Some(dir), ..) => ClusterStore::Disk { resource, dir },
            (None, _, _, Some(url), Some(config_dir)) => ClusterStore::Postgres { url, config_dir },
            // clap's group and `requires` allow nothing else
            _ => unreachable!("one of --csv, --disk/--disk-dir, --postgres/--config-dir"),
        };
        ClusterRole {
            name: self.name,
            service: self.service,
            install_dir: self.install_dir,
            addresses: self.addresses,
            port: self.port,
            store,
        }
    }
}

pub fn run(args: ClusterRoleArgs) -> CmdResult {
    let role = args.role();
    role.validate().map_err(Failure::usage)?;
    print!("{}", cluster_role_script(&role));
    Ok(OK)
}
