//! One module per command group. Each returns an exit code or a [`Failure`].

mod agent;
mod audit;
mod block;
pub mod cluster_role;
mod conflicts;
mod history;
mod host;
mod hyperv;
mod inventory;
mod lease;
mod mac;
mod pool;
pub(crate) mod sim;
mod store;
mod token;

use macpool_client::Client;

use crate::cli::{Cli, Command};
use crate::exit::{CmdResult, Failure};
use crate::output::Output;

/// What every client command needs.
pub struct Ctx {
    pub client: Client,
    pub out: Output,
}

pub async fn run(cli: Cli) -> CmdResult {
    let out = Output {
        json: cli.json,
        mac_format: cli.mac_format,
    };
    let token = || -> Result<Option<String>, Failure> {
        match &cli.token_file {
            Some(p) => {
                let t = std::fs::read_to_string(p).map_err(|e| {
                    Failure::usage(format!("cannot read the token file {}: {e}", p.display()))
                })?;
                let t = t.trim();
                if t.is_empty() {
                    return Err(Failure::usage(format!(
                        "the token file {} is empty",
                        p.display()
                    )));
                }
                Ok(Some(t.to_string()))
            }
            None => Ok(cli.token.clone()),
        }
    };
    let ctx = || -> Result<Ctx, Failure> {
        let ca = match &cli.ca_cert {
            Some(p) => Some(
                std::fs::read(p)
                    .map_err(|e| Failure::usage(format!("cannot read {}: {e}", p.display())))?,
            ),
            None => None,
        };
        Ok(Ctx {
            client: Client::with_ca(&cli.server, token()?, ca.as_deref())?,
            out,
        })
    };
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Pool(c) => pool::run(&ctx()?, c).await,
        Command::Lease(c) => lease::run(&ctx()?, c).await,
        Command::History(a) => history::run(&ctx()?, a).await,
        Command::Token(c) => token::run(&ctx()?, c).await,
        Command::Mac(c) => mac::run(out, c),
        Command::Audit(a) => audit::run(out, a),
        Command::Agent(c) => agent::run(&ctx()?, *c).await,
        Command::Hyperv(c) => hyperv::run(out, c).await,
        Command::Conflicts => conflicts::run(&ctx()?).await,
        Command::Inventory(c) => inventory::run(&ctx()?, c).await,
        Command::Host(c) => host::run(&ctx()?, c).await,
        Command::Block(c) => block::run(&ctx()?, c).await,
        Command::Sim(a) => sim::run(out, a).await,
        Command::Store(c) => store::run(out, c).await,
    }
}

/// `MACPOOL_BOOTSTRAP_TOKEN`, or the file `MACPOOL_BOOTSTRAP_TOKEN_FILE` names: a service
/// manager passes secrets as files (systemd's LoadCredential), which no other process can read
/// the way it can read another's environment.
fn bootstrap_token() -> Result<Option<String>, Failure> {
    if let Some(t) = std::env::var("MACPOOL_BOOTSTRAP_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(t));
    }
    let Some(path) = std::env::var_os("MACPOOL_BOOTSTRAP_TOKEN_FILE").filter(|p| !p.is_empty())
    else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::usage(format!(
            "cannot read MACPOOL_BOOTSTRAP_TOKEN_FILE {}: {e}",
            std::path::Path::new(&path).display()
        ))
    })?;
    Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
}

async fn serve(args: crate::cli::ServeArgs) -> CmdResult {
    let database = match (args.database, args.data) {
        (Some(db), _) => macpool_store::Location::parse(&db).map_err(Failure::usage)?,
        (None, Some(dir)) => macpool_store::Location::Sqlite(dir),
        (None, None) => macpool_store::Location::Sqlite("./macpool-data".into()),
    };
    let opts = macpool_server::serve::ServeOptions {
        listen: args.listen,
        database,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        public_metrics: args.public_metrics,
        bootstrap_token: bootstrap_token()?,
    };
    macpool_server::serve::run(opts).await?;
    Ok(crate::exit::OK)
}
