//! `macpool-bench dashboard`: seeds a fleet-sized store through the API (a 1,048,576-address
//! pool, 100,000 leases, 10,000 holds, 64 hosts × 1,000 adapters), signs in as a browser does,
//! and times each page over loopback (request sent → last byte read, gzip accepted, so the
//! bytes are what crosses the wire). Then allocations run twice side by side: alone, and while
//! `--browsers` clients reload the conflicts page once a second each.

use std::time::{Duration, Instant};

use macpool_api::dto::{AllocateBody, HoldBody, InventoryBody, InventoryVm, PoolCreate};
use macpool_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{BenchAllocateArgs, BenchDashboardArgs};
use crate::desktop::{desktop_adapter, mac};
use crate::exit::{CmdResult, Failure, OK, fail};
use crate::load::drive;
use crate::measure::{latency_json, percentile_ms, random_u64};
use crate::output::Output;
use crate::server::SpawnedServer;

const POOL: &str = "dash";
/// The pool: 00-15-5D-80-00-00 … 00-15-5D-8F-FF-FF.
const FIRST: u64 = 0x00155D800000;
const SIZE: u64 = 0x10_0000;
const VMS_PER_HOST: u32 = 250;

pub async fn run(out: Output, args: BenchDashboardArgs) -> CmdResult {
    if args.hosts > 255 {
        return Err(Failure::usage("--hosts must be at most 255"));
    }
    let server = SpawnedServer::start(args.binary.as_deref(), args.data.clone())?;
    let api = Client::new(&server.url, Some(server.token.clone()))?;
    let seeded = Instant::now();
    seed(&api, &args).await?;
    let seed_s = seeded.elapsed().as_secs_f64();
    let conflicts = api.conflicts().await.map_err(fail)?.len();
    let addr = server
        .url
        .strip_prefix("http://")
        .ok_or_else(|| Failure::usage("the bench server is not plain http"))?
        .to_string();
    let cookie = sign_in(&addr, &server.token).await?;
    let some_lease = mac(FIRST + 12_345);
    let pages = [
        ("pools", "/pools".to_string()),
        (
            "map (256 addresses)",
            format!("/pools/{POOL}/map?at={some_lease}"),
        ),
        (
            "map zoomed out (65,536)",
            format!("/pools/{POOL}/map?zoom=1"),
        ),
        (
            "map zoomed out (16,777,216)",
            format!("/pools/{POOL}/map?zoom=2"),
        ),
        ("addresses", format!("/pools/{POOL}/addresses")),
        ("free runs", format!("/pools/{POOL}/free")),
        ("conflicts", "/conflicts".to_string()),
        ("hosts", "/hosts".to_string()),
        ("MAC page", format!("/mac/{some_lease}")),
        ("history", "/history".to_string()),
    ];
    let mut rows = Vec::new();
    for (name, path) in &pages {
        let mut us = Vec::new();
        let mut bytes = 0;
        for i in 0..=args.requests {
            let started = Instant::now();
            let (status, len) = get(&addr, path, &cookie).await?;
            if status != 200 {
                return Err(Failure::no(format!("{path} answered {status}")));
            }
            if i > 0 {
                // the first request warms caches and is not counted
                us.push(started.elapsed().as_micros() as u64);
            }
            bytes = len;
        }
        us.sort_unstable();
        rows.push((name.to_string(), path.clone(), us, bytes));
    }
    let alone = allocations(&server, &args, 0, &addr, &cookie).await?;
    let watched = allocations(&server, &args, args.browsers, &addr, &cookie).await?;
    if out.json {
        let pages: Vec<_> = rows
            .iter()
            .map(|(name, path, us, bytes)| {
                serde_json::json!({"page": name, "path": path, "latency_ms": latency_json(us), "gzip_bytes": bytes})
            })
            .collect();
        out.print_json(&serde_json::json!({
            "seed": {"leases": args.leases, "holds": args.holds, "hosts": args.hosts,
                     "adapters": u64::from(args.hosts) * u64::from(VMS_PER_HOST) * 4, "seconds": seed_s,
                     "conflicts": conflicts},
            "pages": pages,
            "allocations_alone_ms": latency_json(&alone.0),
            "allocations_with_browsers_ms": latency_json(&watched.0),
            "browsers": args.browsers,
            "conflict_page_loads": watched.1,
        }));
    } else {
        println!(
            "seeded {} leases, {} holds, {} hosts × {} adapters ({conflicts} conflicts) in {seed_s:.0} s",
            args.leases,
            args.holds,
            args.hosts,
            VMS_PER_HOST * 4
        );
        println!(
            "{:<30} {:>9} {:>9} {:>9} {:>11}",
            "PAGE", "P50 MS", "P99 MS", "MAX MS", "GZIP BYTES"
        );
        for (name, _, us, bytes) in &rows {
            println!(
                "{name:<30} {:>9.2} {:>9.2} {:>9.2} {bytes:>11}",
                percentile_ms(us, 50.0),
                percentile_ms(us, 99.0),
                percentile_ms(us, 100.0)
            );
        }
        for (label, (us, loads)) in [
            ("allocations alone", &alone),
            ("allocations with browsers", &watched),
        ] {
            println!(
                "{label:<30} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} allocations; {loads} conflict-page loads)",
                percentile_ms(us, 50.0),
                percentile_ms(us, 99.0),
                percentile_ms(us, 100.0),
                us.len()
            );
        }
    }
    Ok(OK)
}

/// The fleet: leases from the bottom of the pool, holds above them, and every host's inventory
/// (live adapters from each host's own Hyper-V range, checkpoints keeping older MACs, ten live
/// duplicates, odd host with the even one before it).
async fn seed(api: &Client, args: &BenchDashboardArgs) -> Result<(), Failure> {
    api.create_pool(&PoolCreate {
        name: POOL.into(),
        ranges: vec![format!("{}-{}", mac(FIRST), mac(FIRST + SIZE - 1))],
        order: Some("lowest".into()),
        ..PoolCreate::default()
    })
    .await
    .map_err(fail)?;
    let mut left = args.leases;
    let mut batch = 0;
    while left > 0 {
        let n = left.min(4096) as u32;
        api.allocate(&AllocateBody {
            pool: Some(POOL.into()),
            vm_id: format!("seed-{batch}"),
            vm_name: Some(format!("Desk-{batch:03}")),
            host: Some(format!("HV{:02}", batch % u64::from(args.hosts.max(1)))),
            count: Some(n),
            ..AllocateBody::default()
        })
        .await
        .map_err(fail)?;
        left -= u64::from(n);
        batch += 1;
    }
    let base = FIRST + args.leases + 1000;
    let holds = (0..args.holds).map(|i| HoldBody {
        mac: mac(base + i * 2),
        vm_id: format!("tpl-{i}"),
        reason: "template".into(),
        reference: Some(format!("gold-{}", i % 16)),
    });
    let holds: Vec<HoldBody> = holds.collect();
    // 64 at a time: the store's group commit makes them cheap
    for chunk in holds.chunks(64) {
        let mut set = tokio::task::JoinSet::new();
        for h in chunk {
            let (api, h) = (api.clone(), h.clone());
            set.spawn(async move { api.hold(&h).await });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(fail)?.map_err(fail)?;
        }
    }
    for h in 0..args.hosts {
        let range_lo = 0x00155D010000 + (u64::from(h) << 8);
        let vms = (0..VMS_PER_HOST)
            .map(|v| {
                let mut live = range_lo + u64::from(v);
                if v == 0 && h % 2 == 1 && h < 20 {
                    live = range_lo - 256; // host h-1's VM 0: a live duplicate
                }
                let older = 0x00155D020000 + (u64::from(h) << 8) + u64::from(v);
                let adapter = |m: u64, cp: Option<u32>| {
                    desktop_adapter(m, cp.map(|c| (format!("cp-{h}-{v}-{c}"), c)))
                };
                InventoryVm {
                    id: format!("vm-{h}-{v}"),
                    name: format!("RDS-{h:02}-{v:03}"),
                    state: Some("running".into()),
                    adapters: vec![
                        adapter(live, None),
                        adapter(live, Some(0)),
                        adapter(live, Some(1)),
                        adapter(older, Some(2)),
                    ],
                }
            })
            .collect();
        api.put_inventory(
            &format!("HV{h:02}"),
            &InventoryBody {
                generation: 1,
                range_min: Some(mac(range_lo)),
                range_max: Some(mac(range_lo + 255)),
                vms,
                ..InventoryBody::default()
            },
        )
        .await
        .map_err(fail)?;
    }
    Ok(())
}

/// One HTTP/1.1 GET over a fresh loopback connection; returns the status and the body's bytes
/// as sent (gzip accepted).
async fn get(addr: &str, path: &str, cookie: &str) -> Result<(u16, usize), Failure> {
    let (status, _, body) = request(addr, "GET", path, cookie, None, true).await?;
    Ok((status, body.len()))
}

async fn request(
    addr: &str,
    method: &str,
    path: &str,
    cookie: &str,
    form: Option<&str>,
    gzip: bool,
) -> Result<(u16, String, Vec<u8>), Failure> {
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(fail)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if gzip {
        req += "Accept-Encoding: gzip\r\n";
    }
    if !cookie.is_empty() {
        req += &format!("Cookie: {cookie}\r\n");
    }
    if let Some(f) = form {
        req += &format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            f.len()
        );
    }
    req += "\r\n";
    if let Some(f) = form {
        req += f;
    }
    s.write_all(req.as_bytes()).await.map_err(fail)?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.map_err(fail)?;
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| Failure::usage(format!("{path}: no reply head")))?;
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = all[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, head, body))
}

/// The payload of a chunked body (the sizes and CRLFs removed).
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

fn cookie_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| v.trim().split(';').next())
        .find(|kv| kv.starts_with(&format!("{name}=")))
}

/// Signs in through the form, as a browser does; returns the session cookie.
async fn sign_in(addr: &str, token: &str) -> Result<String, Failure> {
    let (_, head, body) = request(addr, "GET", "/login", "", None, false).await?;
    let login = cookie_value(&head, "macpool_login")
        .ok_or_else(|| Failure::usage("no sign-in cookie"))?
        .to_string();
    let body = String::from_utf8_lossy(&body);
    let at = body
        .find("name=\"csrf\" value=\"")
        .ok_or_else(|| Failure::usage("no csrf field on the sign-in page"))?
        + 19;
    let csrf = &body[at..at + body[at..].find('"').unwrap_or(0)];
    let form = format!("csrf={csrf}&token={token}");
    let (status, head, _) = request(addr, "POST", "/login", &login, Some(&form), false).await?;
    if status != 303 {
        return Err(Failure::usage(format!("sign-in answered {status}")));
    }
    cookie_value(&head, "macpool_session")
        .map(str::to_string)
        .ok_or_else(|| Failure::usage("no session cookie"))
}

/// One allocation run; with `browsers`, that many reload the conflicts page once a second
/// until it ends. Returns the sorted latencies and how many pages the browsers loaded.
async fn allocations(
    server: &SpawnedServer,
    args: &BenchDashboardArgs,
    browsers: usize,
    addr: &str,
    cookie: &str,
) -> Result<(Vec<u64>, u64), Failure> {
    let api = Client::new(&server.url, Some(server.token.clone()))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for b in 0..browsers {
        let (addr, cookie, stop) = (addr.to_string(), cookie.to_string(), stop.clone());
        tasks.push(tokio::spawn(async move {
            // spread the browsers over the second
            tokio::time::sleep(Duration::from_millis(100 * b as u64)).await;
            let mut loads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                if get(&addr, "/conflicts", &cookie).await.is_ok() {
                    loads += 1;
                }
                tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
            }
            loads
        }));
    }
    let run = format!("{:08x}", random_u64() as u32);
    let bench = BenchAllocateArgs::beside_load(args.clients, args.per_client, POOL, SIZE);
    let report = drive(&[api], &server.token, POOL, &run, &bench).await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut loads = 0;
    for t in tasks {
        loads += t.await.unwrap_or(0);
    }
    Ok((report.into_sorted_latencies()?, loads))
}
