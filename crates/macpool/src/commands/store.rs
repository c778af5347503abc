//! `macpool store migrate`: copies a whole store into an empty PostgreSQL database and checks
//! that every table arrived complete.

use std::path::Path;

use macpool_store::{AnyStore, Counts, Location, postgres};

use crate::cli::StoreCommand;
use crate::exit::{CmdResult, Failure, OK, UNREACHABLE};
use crate::output::{Output, table};

fn refused(message: String) -> Failure {
    Failure {
        code: UNREACHABLE,
        message,
    }
}

pub async fn run(out: Output, cmd: StoreCommand) -> CmdResult {
    let StoreCommand::Migrate { from, to } = cmd;
    let source = Location::parse(&from).map_err(Failure::usage)?;
    let target = match Location::parse(&to).map_err(Failure::usage)? {
        Location::Postgres(url) => url,
        Location::Sqlite(_) => {
            return Err(Failure::usage(
                "--to must be a PostgreSQL database (postgres://user@host/db)",
            ));
        }
    };
    if let Location::Sqlite(dir) = &source
        && !Path::new(dir).join("macpool.db").is_file()
    {
        return Err(Failure::usage(format!(
            "{} holds no macpool store (no macpool.db)",
            dir.display()
        )));
    }
    if source == Location::Postgres(target.clone()) {
        return Err(Failure::usage("--from and --to name the same database"));
    }
    let store = AnyStore::open(&source).await.map_err(refused)?;
    let snapshot = store
        .export()
        .await
        .map_err(|e| refused(format!("cannot read {source}: {e}")))?;
    drop(store);
    let expected = Counts::of(&snapshot);
    if !out.json {
        eprintln!(
            "copying {} leases, {} history entries and the rest from {source} to {} …",
            expected.leases,
            expected.history,
            postgres::redact(&target)
        );
    }
    let copied = postgres::import(&target, &snapshot)
        .await
        .map_err(refused)?;
    let pairs = expected.rows().into_iter().zip(copied.rows());
    if out.json {
        let per_table: serde_json::Map<String, serde_json::Value> = pairs
            .map(|((what, src), (_, dst))| {
                (
                    what.to_string(),
                    serde_json::json!({"source": src, "target": dst}),
                )
            })
            .collect();
        out.print_json(&serde_json::json!({
            "from": source.to_string(),
            "to": postgres::redact(&target),
            "verified": copied == expected,
            "counts": per_table,
        }));
    } else {
        let rows: Vec<Vec<String>> = pairs
            .map(|((what, src), (_, dst))| {
                let check = if src == dst { "ok" } else { "MISMATCH" };
                vec![what.into(), src.to_string(), dst.to_string(), check.into()]
            })
            .collect();
        print!("{}", table(&["what", "source", "target", "check"], &rows));
        println!(
            "migrated and verified: start the replicas with --database {}",
            postgres::redact(&target)
        );
    }
    Ok(OK)
}
