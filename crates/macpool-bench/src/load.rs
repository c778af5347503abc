//! The allocating clients every HTTP benchmark runs (`allocate`, and beside the dashboard's and
//! the fleet's load): one lean connection per client, on a thread of their own.

use std::time::Instant;

use macpool_api::dto::{AllocateBody, AllocationResult};
use macpool_client::Client;

use crate::cli::BenchAllocateArgs;
use crate::exit::Failure;
use crate::measure::{Measured, Stopwatch};
use crate::wire::LoadConnection;

/// What one run of the allocating clients saw.
pub(crate) struct Report {
    pub ok: u64,
    pub errors: u64,
    pub distinct: u64,
    pub timed: Measured,
    pub latencies_us: Vec<u64>,
    pub first_error: Option<String>,
}

impl Report {
    /// The latencies, sorted, of a run that must have had no errors (the dashboard's and the
    /// fleet's allocations beside their load); a failure naming the first error otherwise.
    pub fn into_sorted_latencies(self) -> Result<Vec<u64>, Failure> {
        if self.errors > 0 {
            return Err(Failure::no(format!(
                "allocations failed: {}",
                self.first_error.unwrap_or_default()
            )));
        }
        let mut us = self.latencies_us;
        us.sort_unstable();
        Ok(us)
    }
}

/// Runs the clients on their own single-threaded runtime and OS thread, so that the load
/// generator takes as little CPU from the server (which shares this machine) as it can.
pub(crate) async fn drive(
    servers: &[Client],
    token: &str,
    pool: &str,
    run_id: &str,
    args: &BenchAllocateArgs,
) -> Result<Report, Failure> {
    let (servers, token, pool, run_id, clients, per_client, warm_up) = (
        servers.to_vec(),
        token.to_string(),
        pool.to_string(),
        run_id.to_string(),
        args.clients,
        args.per_client,
        args.warm_up,
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let report = rt.map(|rt| {
            rt.block_on(load(
                servers, token, pool, run_id, clients, per_client, warm_up,
            ))
        });
        let _ = tx.send(report);
    });
    rx.await
        .map_err(|_| Failure::usage("the load generator thread died"))?
        .map_err(|e| Failure::usage(format!("cannot start the load generator: {e}")))
}

/// How one simulated client sends its allocations: over its own kept-alive connection where
/// the target is plain HTTP (the cheapest for the machine being measured), else through the
/// general client.
enum Sender {
    Wire(LoadConnection),
    General(Client),
}

impl Sender {
    fn new(server: &Client, token: &str) -> Sender {
        match LoadConnection::for_base(server.base(), token) {
            Some(wire) => Sender::Wire(wire),
            None => Sender::General(server.clone()),
        }
    }

    /// Opens the connection before the clock starts.
    async fn warm_up(&mut self) -> Result<(), String> {
        match self {
            Sender::Wire(wire) => wire.connect().await,
            Sender::General(server) => server.health().await.map(drop).map_err(|e| e.to_string()),
        }
    }

    /// Allocates one MAC; returns it as the server spelled it.
    async fn allocate(&mut self, body: &AllocateBody) -> Result<String, String> {
        let result: AllocationResult = match self {
            Sender::Wire(wire) => {
                let json = serde_json::to_vec(body).expect("an allocation body serializes");
                let reply = wire.post(&json).await?;
                serde_json::from_slice(reply)
                    .map_err(|e| format!("unexpected reply to an allocation: {e}"))?
            }
            Sender::General(server) => server.allocate(body).await.map_err(|e| e.to_string())?,
        };
        result
            .allocations
            .into_iter()
            .next()
            .map(|a| a.lease.mac)
            .ok_or_else(|| "the server allocated nothing".to_string())
    }
}

/// `clients` tasks, client `c` talking to `servers[c % servers.len()]`.
async fn load(
    servers: Vec<Client>,
    token: String,
    pool: String,
    run_id: String,
    clients: usize,
    per_client: usize,
    warm_up: bool,
) -> Report {
    let mut senders: Vec<Sender> = (0..clients)
        .map(|c| Sender::new(&servers[c % servers.len()], &token))
        .collect();
    if warm_up {
        // Each client's connection open before the clock starts, all at once (the general
        // client opens one per concurrent request). A failure here shows again, counted, on the
        // client's first timed request. The order they come back in does not matter: a
        // client's server is in its sender, and its index only makes its VM ids unique.
        let mut warming = tokio::task::JoinSet::new();
        for mut sender in senders {
            warming.spawn(async move {
                let _ = sender.warm_up().await;
                sender
            });
        }
        senders = warming.join_all().await;
    }
    let stopwatch = Stopwatch::start();
    let mut tasks = Vec::new();
    for (c, mut sender) in senders.into_iter().enumerate() {
        let pool = pool.clone();
        let run_id = run_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            let mut macs = Vec::with_capacity(per_client);
            let mut errors = 0u64;
            let mut first_error: Option<String> = None;
            for i in 0..per_client {
                let body = AllocateBody {
                    pool: Some(pool.clone()),
                    vm_id: format!("bench-{run_id}-{c}-{i}"),
                    ..AllocateBody::default()
                };
                let t = Instant::now();
                match sender.allocate(&body).await {
                    Ok(mac) => {
                        lat.push(t.elapsed().as_micros() as u64);
                        macs.push(mac);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, macs, errors, first_error)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut macs = std::collections::HashSet::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut ok = 0;
    for t in tasks {
        let Ok((lat, m, e, first)) = t.await else {
            errors += per_client as u64;
            continue;
        };
        ok += m.len() as u64;
        latencies_us.extend(lat);
        macs.extend(m);
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    let timed = stopwatch.stop();
    latencies_us.sort_unstable();
    Report {
        ok,
        errors,
        distinct: macs.len() as u64,
        timed,
        latencies_us,
        first_error,
    }
}
