//! `macpool-bench decide`: how fast the agent reacts to a rollback. Each iteration restores an
//! RDS desktop whose checkpoint MAC the authority has leased to another VM (a real conflict), and
//! measures from the moment the 18596 event reaches the agent (`next_event` returns) to the
//! moment guard sends its first command (`Stop-VM`) to the hypervisor — the window in which a
//! duplicate MAC is live on the network. In between: the VM read from the hypervisor and one
//! authority lookup per live adapter over HTTP. The hypervisor is the Hyper-V stand-in, a real
//! child process on the agent's line protocol; the authority is a real `macpool serve`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use macpool_agent::decide::{
    ClientAuthority, DecideConfig, Outcome, Remedy, Strategy, handle_event,
};
use macpool_agent::hypervisor::{HostRangeState, HvResult, VmStatus};
use macpool_agent::powershell::{ChildConfig, PowerShellHypervisor};
use macpool_agent::{AdapterRef, Bookmarks, EventKind, HvEvent, Hypervisor, MacSetting};
use macpool_api::dto::{AllocateBody, PoolCreate};
use macpool_client::Client;
use macpool_core::MacRange;
use macpool_core::inventory::HostInventory;
use serde_json::json;

use crate::cli::BenchDecideArgs;
use crate::exit::{CmdResult, Failure, OK};
use crate::measure::percentile_ms;
use crate::output::{Output, fields};
use crate::server::SpawnedServer;

const DESK: &str = "b7d3c1e0-0000-4000-8000-00000000be9c";

/// The hypervisor, with the instant of the first command that changes something.
struct Timed<H> {
    inner: H,
    first_change: Mutex<Option<Instant>>,
}

impl<H> Timed<H> {
    fn mark(&self) {
        let mut f = self.first_change.lock().unwrap();
        f.get_or_insert_with(Instant::now);
    }
}

impl<H: Hypervisor> Hypervisor for Timed<H> {
    async fn inventory(&self) -> HvResult<HostInventory> {
        self.inner.inventory().await
    }
    async fn vm(&self, vm_id: &str) -> HvResult<Option<VmStatus>> {
        self.inner.vm(vm_id).await
    }
    async fn host_range(&self) -> HvResult<HostRangeState> {
        self.inner.host_range().await
    }
    async fn set_host_range(&self, range: MacRange) -> HvResult<()> {
        self.mark();
        self.inner.set_host_range(range).await
    }
    async fn set_adapter_mac(&self, adapter: &AdapterRef, setting: MacSetting) -> HvResult<()> {
        self.mark();
        self.inner.set_adapter_mac(adapter, setting).await
    }
    async fn turn_off(&self, vm_id: &str) -> HvResult<()> {
        self.mark();
        self.inner.turn_off(vm_id).await
    }
    async fn start(&self, vm_id: &str) -> HvResult<()> {
        self.mark();
        self.inner.start(vm_id).await
    }
    async fn watch(&self, resume: &Bookmarks) -> HvResult<()> {
        self.inner.watch(resume).await
    }
    async fn pause(&self, wait: Duration) {
        self.inner.pause(wait).await
    }

    async fn next_event(&self, wait: Duration) -> HvResult<Option<HvEvent>> {
        self.inner.next_event(wait).await
    }
    async fn event(&self, channel: &str, record_id: u64) -> HvResult<Option<HvEvent>> {
        self.inner.event(channel, record_id).await
    }
}

fn failed(what: &str) -> impl Fn(String) -> Failure + '_ {
    move |e| Failure::usage(format!("{what}: {e}"))
}

pub async fn run(out: Output, args: BenchDecideArgs) -> CmdResult {
    let server = SpawnedServer::start(None, None)?;
    let client = Client::new(&server.url, Some(server.token.clone()))?;
    client
        .create_pool(&PoolCreate {
            name: "bench-decide".into(),
            ranges: vec!["00155D0E0000-00155D0E00FF".into()],
            order: Some("lowest".into()),
            ..PoolCreate::default()
        })
        .await?;
    let exe = std::env::current_exe().map_err(|e| Failure::usage(e.to_string()))?;
    let mut cfg = ChildConfig::program(
        exe.display().to_string(),
        [
            "standin",
            "--host",
            "HV-BENCH",
            "--range",
            "00155D0E0000-00155D0E0003",
        ],
    );
    cfg.request_timeout = Duration::from_secs(10);
    let hv = Timed {
        inner: PowerShellHypervisor::new(cfg),
        first_change: Mutex::new(None),
    };
    let control = |v: serde_json::Value| {
        let hv = &hv.inner;
        async move {
            hv.child()
                .control(v)
                .await
                .map_err(|e| failed("stand-in")(e.to_string()))
        }
    };
    // The desktop gets 00-15-5D-0E-00-00 and freezes it in its RDV_ROLLBACK checkpoint; the
    // authority then leases that MAC to another VM: every rollback is a real conflict.
    control(json!({"cmd": "create-vm", "id": DESK, "name": "RDS Desk bench"})).await?;
    hv.inner
        .start(DESK)
        .await
        .map_err(|e| failed("start")(e.to_string()))?;
    let cp = control(json!({"cmd": "checkpoint", "vm_id": DESK, "name": "RDV_ROLLBACK - bench"}))
        .await?;
    client
        .allocate(&AllocateBody {
            pool: Some("bench-decide".into()),
            vm_id: "someone-else".into(),
            mac: Some("00155D0E0000".into()),
            ..AllocateBody::default()
        })
        .await?;
    let authority = ClientAuthority(client.clone());
    let mut decide = DecideConfig::new(
        Strategy::Guard,
        "HV-BENCH",
        Remedy::FreshStatic {
            pool: "bench-decide".into(),
        },
    );
    decide.blog_wait = Duration::ZERO;
    hv.watch(&Bookmarks::new())
        .await
        .map_err(|e| failed("watch")(e.to_string()))?;

    let mut to_first_command = Vec::new();
    let mut to_done = Vec::new();
    let started = Instant::now();
    for i in 0..args.iterations {
        control(json!({"cmd": "restore", "vm_id": DESK, "checkpoint_id": cp["id"]})).await?;
        let ev = loop {
            match hv.next_event(Duration::from_secs(10)).await {
                Ok(Some(ev)) if ev.kind == EventKind::Restored => break ev,
                Ok(Some(_)) => continue,
                Ok(None) => return Err(Failure::usage("no restore event within 10 s")),
                Err(e) => return Err(failed("events")(e.to_string())),
            }
        };
        let arrived = Instant::now();
        *hv.first_change.lock().unwrap() = None;
        let d = handle_event(&hv, &authority, &decide, &ev).await;
        let done = Instant::now();
        let Outcome::Done { .. } = d.outcome else {
            return Err(Failure::usage(format!(
                "iteration {i}: expected a remediation, got {}",
                d.outcome.summary()
            )));
        };
        let first = hv
            .first_change
            .lock()
            .unwrap()
            .expect("a remediation sends commands");
        to_first_command.push((first - arrived).as_micros() as u64);
        to_done.push((done - arrived).as_micros() as u64);
    }
    let elapsed = started.elapsed();
    to_first_command.sort_unstable();
    to_done.sort_unstable();
    let p = |v: &[u64], q| percentile_ms(v, q);
    if out.json {
        out.print_json(&json!({
            "iterations": args.iterations,
            "seconds": elapsed.as_secs_f64(),
            "event_to_first_command_ms": {"p50": p(&to_first_command, 50.0), "p90": p(&to_first_command, 90.0), "p99": p(&to_first_command, 99.0), "max": p(&to_first_command, 100.0)},
            "event_to_remediated_ms": {"p50": p(&to_done, 50.0), "p90": p(&to_done, 90.0), "p99": p(&to_done, 99.0), "max": p(&to_done, 100.0)},
        }));
    } else {
        let line = |v: &[u64]| {
            format!(
                "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                p(v, 50.0),
                p(v, 90.0),
                p(v, 99.0),
                p(v, 100.0)
            )
        };
        print!(
            "{}",
            fields(&[
                (
                    "rollbacks",
                    format!(
                        "{} decided in {:.1} s",
                        args.iterations,
                        elapsed.as_secs_f64()
                    )
                ),
                ("event → first command", line(&to_first_command)),
                ("event → remediated", line(&to_done)),
            ])
        );
    }
    Ok(OK)
}
