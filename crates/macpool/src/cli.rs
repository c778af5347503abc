//! The command line, as clap types. Global flags come first; each subcommand mirrors one task.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use macpool_core::MacFormat;

#[derive(Parser, Debug)]
#[command(
    name = "macpool",
    version,
    about = "Cluster-wide MAC address authority for Hyper-V and libvirt clusters",
    after_help = "Exit status: 0 ok, 1 the answer is no (conflict, not found, exhausted), \
                  2 usage or input error, 3 server unreachable or refused, 4 some input file \
                  could not be read (audit, hyperv events: the output covers the rest)."
)]
pub struct Cli {
    /// Authority URL for client commands.
    #[arg(
        long,
        global = true,
        env = "MACPOOL_SERVER",
        default_value = "http://127.0.0.1:7780"
    )]
    pub server: String,
    /// Bearer token for client commands.
    #[arg(long, global = true, env = "MACPOOL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the bearer token from this file instead (a service's credential file; keeps the
    /// token out of the process list). Surrounding whitespace is ignored.
    #[arg(
        long,
        global = true,
        env = "MACPOOL_TOKEN_FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
    /// Trust this PEM certificate (a private CA or the server's self-signed certificate).
    #[arg(long, global = true, env = "MACPOOL_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// How MACs are spelled on output: ieee (00-15-5D-0A-0B-0C), unix, hyperv, cisco.
    #[arg(long, global = true, default_value = "ieee", value_parser = parse_mac_format)]
    pub mac_format: MacFormat,
    #[command(subcommand)]
    pub command: Command,
}

fn parse_mac_format(s: &str) -> Result<MacFormat, String> {
    s.parse()
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the authority (HTTP API, metrics) on the embedded store.
    Serve(ServeArgs),
    /// Create, list, edit and delete pools; see what is free.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Allocate, release and inspect leases and holds.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// The history of a MAC or a VM, newest first.
    History(HistoryArgs),
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Offline MAC tools.
    #[command(subcommand)]
    Mac(MacCommand),
    /// Offline duplicate and latent-conflict report from exported inventories (no server).
    /// Exit 0 clean, 1 conflicts, 2 nothing readable, 4 no conflict but some input unreadable.
    Audit(AuditArgs),
    /// Hyper-V helpers: export script, range analysis.
    #[command(subcommand)]
    Hyperv(HypervCommand),
    /// The host agent: `macpool agent --hypervisor hyperv --strategy delegate …` runs it as a
    /// service; `macpool agent on-event …` decides one event (Task Scheduler mode).
    Agent(Box<AgentArgs>),
    /// Every conflict the authority sees across the hosts' latest inventories; exit 1 when
    /// there are any, 0 when none.
    Conflicts,
    /// Send host inventories to the authority.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// The hosts that report inventories: dynamic range, cursor, blocks, latest report.
    #[command(subcommand)]
    Host(HostCommand),
    /// Blocks of pools delegated to hosts' own allocators (the agent's delegate strategy).
    #[command(subcommand)]
    Block(BlockCommand),
    /// Simulate a Hyper-V cluster of RDS pooled desktops under each strategy and compare
    /// duplicates, forced restarts and outage (no server needed).
    Sim(crate::commands::sim::SimArgs),
    /// Store maintenance: copy a whole store into PostgreSQL (`store migrate`).
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy a whole store (pools, leases, holds, cooling, inventories, blocks, tokens,
    /// history) into an empty PostgreSQL database, and verify the counts. Stop `macpool serve`
    /// on the source first (an embedded store refuses a second opener).
    Migrate {
        /// The source: sqlite:DIR (or postgres://…).
        #[arg(long)]
        from: String,
        /// The target: postgres://user@host/db, holding no macpool data yet.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum HostCommand {
    /// Every host that reported an inventory (the dashboard's Hosts page): its dynamic range
    /// and hosts it overlaps, cursor, blocks, adapters, latest report and agent strategy.
    List,
}

#[derive(Subcommand, Debug)]
pub enum BlockCommand {
    /// Blocks that are not free yet: pending, active, draining.
    List {
        /// Only this host's.
        #[arg(long)]
        host: Option<String>,
    },
    /// Stop delegating a block (a host leaving the cluster); it returns to its pool once no
    /// VM or checkpoint uses its MACs and the cooldown has passed.
    Drain {
        /// The host the block is delegated to.
        host: String,
        /// The block's id (`macpool block list`).
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum InventoryCommand {
    /// Send one host's inventory from a Hyper-V PowerShell export (JSON, as `macpool audit` reads).
    Push {
        /// The export file.
        file: PathBuf,
        /// The host whose inventory to send (its ComputerName/HostName in the export).
        #[arg(long)]
        host: String,
        /// Must be greater than the last generation sent for this host.
        #[arg(long)]
        generation: u64,
    },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Files or directories (walked): Hyper-V PowerShell JSON, libvirt XML, MAC lists (text/CSV),
    /// DHCP leases (ISC dhcpd.leases, dnsmasq, Kea lease4 CSV).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print CSV (one row per conflict owner) instead of a table.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// Read every file as this format instead of detecting it.
    #[arg(long)]
    pub format: Option<String>,
    /// Worker threads for huge MAC lists (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Subcommand, Debug)]
pub enum HypervCommand {
    /// Print the PowerShell that exports a host's (or a cluster's) adapters for `macpool audit`.
    ExportScript {
        /// Every node of the failover cluster (Get-ClusterNode), not just this host.
        #[arg(long)]
        cluster: bool,
    },
    /// Each host's dynamic range (default: derived from its IP), collisions, and a
    /// non-overlapping plan as Set-VMHost lines (printed, never run).
    Ranges {
        /// NAME=IP (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// A file of NAME=IP lines, or an export-script JSON document.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Addresses per proposed range.
        #[arg(long, default_value_t = 256)]
        block_size: u64,
        /// Where new ranges are carved from.
        #[arg(long, default_value = "00155DF00000-00155DFFFFFF")]
        base: String,
        /// Ranges to keep clear of, e.g. your macpool pools (repeatable).
        #[arg(long)]
        avoid: Vec<String>,
        /// Give every host a new range, not only the colliding ones.
        #[arg(long)]
        renumber_all: bool,
    },
    /// List Hyper-V events from `wevtutil qe … /f:xml` exports or .evtx files. Exit 2 when
    /// nothing could be read, 4 when some file could not be (missing, or every event malformed).
    Events {
        /// Event exports: `wevtutil qe … /f:xml` output or .evtx files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Read-only checks on a real host (Hyper-V module, rights, event channel, range and cursor):
    /// a report to attach to a bug. Exit 1 when a check fails.
    Selftest {
        #[command(flatten)]
        powershell: PowerShellArgs,
    },
    /// Print the agent's PowerShell bootstrap as a .ps1 file (UTF-8 with BOM, CRLF) for
    /// `--bootstrap-file` (`-File` mode), e.g. to C:\ProgramData\macpool\agent-bootstrap.ps1;
    /// sign it there for AllSigned sites. Rewrite it after every macpool upgrade.
    BootstrapScript {
        /// Write to this file instead of stdout (PowerShell's `>` would re-encode it).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// The Hyper-V stand-in used by the tests (speaks the agent's protocol on stdin/stdout);
    /// only in test builds (feature `standin`).
    #[cfg(feature = "standin")]
    #[command(hide = true)]
    Standin {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print the Task Scheduler XML (UTF-16, as Windows writes it) that runs
    /// `macpool agent on-event` for every RDV_ROLLBACK restore (event 18596).
    TaskXml {
        /// Path of macpool.exe on the host.
        #[arg(long)]
        exe: String,
        /// Print UTF-8 instead of UTF-16LE (for reading, not for schtasks /XML).
        #[arg(long)]
        utf8: bool,
        /// Write the XML to this file instead of stdout (PowerShell's `>` would re-encode it).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Arguments appended to `agent on-event …` (e.g. --server URL --pool rds).
        #[arg(last = true)]
        extra_args: Vec<String>,
    },
    /// Print (never run) the PowerShell that makes `macpool serve` a Failover Cluster Generic
    /// Service role, its store on a Cluster Shared Volume, a clustered disk or PostgreSQL.
    ClusterRoleScript(crate::commands::cluster_role::ClusterRoleArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7780", env = "MACPOOL_LISTEN")]
    pub listen: SocketAddr,
    /// Directory of the embedded store (the default store: ./macpool-data).
    #[arg(long, env = "MACPOOL_DATA", conflicts_with = "database")]
    pub data: Option<PathBuf>,
    /// The store: sqlite:DIR (embedded, default) or postgres://user@host/db (shared by
    /// several replicas; any libpq-style URL, passwords are never printed).
    #[arg(long, env = "MACPOOL_DATABASE")]
    pub database: Option<String>,
    /// PEM certificate chain; with --tls-key, serve HTTPS.
    #[arg(long, env = "MACPOOL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "MACPOOL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve /metrics without a token.
    #[arg(long)]
    pub public_metrics: bool,
}

#[derive(Args, Debug, Default)]
pub struct PolicyArgs {
    /// next-fit (from a random start, moving on) or lowest.
    #[arg(long)]
    pub order: Option<String>,
    /// How long a released MAC rests before reuse, e.g. 24h, 30m, 0s.
    #[arg(long)]
    pub cooldown: Option<String>,
    /// deny or allow-and-flag, for requests of a specific MAC that is taken.
    #[arg(long)]
    pub duplicates: Option<String>,
    /// Report the pool as low below this share free, e.g. 5%.
    #[arg(long)]
    pub low_water: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Create a pool from one or more ranges.
    Create {
        /// The pool's name (letters, digits, `-`, `_`).
        name: String,
        /// FIRST-LAST, any MAC spelling (repeatable).
        #[arg(long = "range", required = true)]
        ranges: Vec<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// All pools with their counters.
    List,
    /// One pool in detail.
    Show {
        /// The pool's name.
        name: String,
    },
    /// Change ranges or policy.
    Edit {
        /// The pool's name.
        name: String,
        /// Replace all ranges with these (repeatable).
        #[arg(long = "range")]
        ranges: Vec<String>,
        /// Add a range (repeatable).
        #[arg(long = "add-range")]
        add_ranges: Vec<String>,
        /// Remove a range (repeatable).
        #[arg(long = "remove-range")]
        remove_ranges: Vec<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Delete a pool (refused while it has leases or holds).
    Delete {
        /// The pool's name.
        name: String,
    },
    /// Free addresses as runs, with totals.
    Available {
        /// The pool's name.
        name: String,
        /// List at most this many addresses.
        #[arg(long)]
        limit: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Give a VM adapter a MAC (asking again returns the same one).
    Allocate {
        /// The pool to allocate from.
        #[arg(long)]
        pool: String,
        /// The VM's id (Hyper-V VMId, libvirt UUID): the lease's owner.
        #[arg(long)]
        vm_id: String,
        /// The VM's name, for people reading the history.
        #[arg(long)]
        vm_name: Option<String>,
        /// The adapter's id, for a VM with several adapters.
        #[arg(long)]
        adapter_id: Option<String>,
        /// The host the VM runs on.
        #[arg(long)]
        host: Option<String>,
        /// The cluster the VM belongs to.
        #[arg(long)]
        cluster: Option<String>,
        /// Ask for this specific MAC.
        #[arg(long)]
        mac: Option<String>,
        /// Allocate several (adapters <adapter-id>#1, #2, …).
        #[arg(long)]
        count: Option<u32>,
    },
    /// Release a lease by MAC, or every lease of a VM.
    Release {
        /// The MAC to release (any spelling).
        mac: Option<String>,
        /// Instead of a MAC: release this VM's leases.
        #[arg(long = "vm")]
        vm_id: Option<String>,
        /// With --vm: only this adapter's lease.
        #[arg(long)]
        adapter_id: Option<String>,
    },
    /// Everything about one MAC, or a VM's leases.
    Show {
        /// The MAC to show (any spelling).
        mac: Option<String>,
        /// Instead of a MAC: this VM's leases.
        #[arg(long = "vm")]
        vm_id: Option<String>,
    },
    /// List live leases.
    List {
        /// Only this pool's leases.
        #[arg(long)]
        pool: Option<String>,
        /// Only leases of VMs on this host.
        #[arg(long)]
        host: Option<String>,
        /// Only this VM's leases.
        #[arg(long = "vm")]
        vm_id: Option<String>,
    },
    /// Keep a MAC out of circulation for a VM.
    Hold {
        /// The MAC to keep (any spelling).
        #[arg(long)]
        mac: String,
        /// The VM that keeps it (e.g. the VM whose checkpoint holds it).
        #[arg(long)]
        vm_id: String,
        /// checkpoint, template, backup or departed.
        #[arg(long)]
        reason: String,
        /// What keeps it (checkpoint id, template name).
        #[arg(long = "ref")]
        reference: Option<String>,
    },
    /// Remove a VM's hold(s) on a MAC.
    Unhold {
        /// The held MAC (any spelling).
        #[arg(long)]
        mac: String,
        /// The VM whose hold to remove.
        #[arg(long)]
        vm_id: String,
        /// Only the hold with this reason (checkpoint, template, backup, departed).
        #[arg(long)]
        reason: Option<String>,
        /// Only the hold with this reference (checkpoint id, template name).
        #[arg(long = "ref")]
        reference: Option<String>,
    },
    /// List holds.
    Holds {
        /// Only this VM's holds.
        #[arg(long = "vm")]
        vm_id: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The MAC whose history to show (any spelling).
    pub mac: Option<String>,
    /// Instead of a MAC: this VM's history.
    #[arg(long = "vm")]
    pub vm_id: Option<String>,
    /// Entries per page.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Only entries older than this ID (the last ID of the previous page).
    #[arg(long)]
    pub before: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        /// admin, agent (acts for --host only) or reader.
        #[arg(long)]
        role: String,
        /// The host an agent token acts for.
        #[arg(long)]
        host: Option<String>,
        /// A name to recognise the token by in `token list`.
        #[arg(long)]
        name: Option<String>,
    },
    /// Every token: id, name, role, host, created, revoked (never a secret).
    List,
    /// Revoke a token by id; requests with it fail from then on.
    Revoke {
        /// The token's id (`macpool token list`).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum MacCommand {
    /// Every spelling and what the bits say about a MAC.
    Explain {
        /// The MAC, in any spelling.
        mac: String,
    },
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
    #[command(flatten)]
    pub run: AgentRunArgs,
}

/// The agent as a service: events, inventory pushes, delegate ticks, until stopped.
#[derive(Args, Debug)]
pub struct AgentRunArgs {
    /// hyperv (one long-lived PowerShell) or libvirt (needs --connect).
    #[arg(long, default_value = "hyperv")]
    pub hypervisor: String,
    /// libvirt connection URI (qemu:///system, qemu+ssh://host/system, test:///default).
    #[arg(long)]
    pub connect: Option<String>,
    /// delegate, guard, delegate+guard, blog-compatible or observe.
    #[arg(long, default_value = "delegate")]
    pub strategy: String,
    /// The pool blocks (delegate) and fresh MACs (guard) come from.
    #[arg(long)]
    pub pool: Option<String>,
    /// guard: set a conflicting adapter to dynamic instead of a fresh static pool MAC.
    #[arg(long)]
    pub dynamic: bool,
    /// delegate: addresses per block (default 256).
    #[arg(long)]
    pub block_size: Option<u64>,
    /// delegate: rotate when this many addresses or fewer remain (default a quarter block).
    #[arg(long)]
    pub rotate_margin: Option<u64>,
    /// This host's name as the authority knows it (default: COMPUTERNAME / HOSTNAME).
    #[arg(long)]
    pub host: Option<String>,
    /// Checkpoint names that mark an RDS rollback (glob).
    #[arg(long, default_value = macpool_agent::decide::DEFAULT_ROLLBACK_PATTERN)]
    pub rollback_pattern: String,
    /// Full inventory push (and delegate check) interval.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub inventory_every: std::time::Duration,
    /// Where the event bookmark is kept (default: ./macpool-agent.bookmark.json).
    #[arg(long)]
    pub bookmark: Option<PathBuf>,
    /// Append every remediation (old → new MAC, event record id) to this JSON-lines file.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Decide and print the exact PowerShell, change nothing (no inventory push either).
    #[arg(long)]
    pub dry_run: bool,
    /// Stop after this long (tests, benchmarks); default: until SIGTERM / Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration, hide = true)]
    pub run_for: Option<std::time::Duration>,
    #[command(flatten)]
    pub powershell: PowerShellArgs,
}

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Task Scheduler mode: decide (and act) on one event, fetched by channel and record id.
    OnEvent(OnEventArgs),
}

#[derive(Args, Debug)]
pub struct OnEventArgs {
    /// Event channel (the task passes $(eventChannel)).
    #[arg(long)]
    pub channel: String,
    /// EventRecordID (the task passes $(eventRecordID)).
    #[arg(long)]
    pub record_id: u64,
    /// guard (fix only real conflicts), blog-compatible (the published workaround) or observe.
    #[arg(long, default_value = "guard")]
    pub strategy: String,
    /// Give a conflicting adapter a fresh static MAC from this pool.
    #[arg(long, conflicts_with = "dynamic")]
    pub pool: Option<String>,
    /// Set a conflicting adapter to dynamic instead (Hyper-V picks from this host's range).
    #[arg(long)]
    pub dynamic: bool,
    /// This host's name as the authority knows it (default: COMPUTERNAME / HOSTNAME).
    #[arg(long)]
    pub host: Option<String>,
    /// Checkpoint names that mark an RDS rollback (glob).
    #[arg(long, default_value = macpool_agent::decide::DEFAULT_ROLLBACK_PATTERN)]
    pub rollback_pattern: String,
    /// Decide and print the exact PowerShell, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub powershell: PowerShellArgs,
}

/// Which PowerShell the agent talks to.
#[derive(Args, Debug, Default)]
pub struct PowerShellArgs {
    /// The PowerShell to run (default: powershell.exe -NoLogo -NoProfile -NonInteractive -Command -).
    #[arg(long)]
    pub powershell: Option<String>,
    /// An argument for --powershell (repeatable).
    #[arg(long = "powershell-arg", allow_hyphen_values = true)]
    pub powershell_args: Vec<String>,
    /// Run the bootstrap from this file (`powershell.exe … -File FILE`) instead of loading it
    /// through stdin with Invoke-Expression, which endpoint protection may flag. Write it with
    /// `macpool hyperv bootstrap-script`; sign it where AllSigned applies.
    #[arg(long, num_args = 0..=1, default_missing_value = macpool_agent::powershell::bootstrap::DEFAULT_FILE)]
    pub bootstrap_file: Option<PathBuf>,
}

impl PowerShellArgs {
    pub fn child_config(&self) -> macpool_agent::powershell::ChildConfig {
        use macpool_agent::powershell::ChildConfig;
        match (&self.powershell, &self.bootstrap_file) {
            (Some(program), None) => {
                ChildConfig::program(program, self.powershell_args.iter().cloned())
            }
            (Some(program), Some(file)) => {
                let args = self.powershell_args.iter().cloned();
                let file_args = ["-File".to_string(), file.display().to_string()];
                ChildConfig::program(program, args.chain(file_args)).with_bootstrap_file(file)
            }
            (None, None) => ChildConfig::powershell(),
            (None, Some(file)) => ChildConfig::powershell_file(file),
        }
    }
}
