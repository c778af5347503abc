//! The authorization matrix: every route × every kind of caller → the status it gets. The
//! routes come from the OpenAPI document (built from the router's own route list), so a new
//! route without a row here fails `every_route_has_a_row`; SECURITY.md shows the same table,
//! rendered by this file, so the document cannot drift from what is tested.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use macpool_server::openapi_document;
use macpool_store::Role;
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;
use common::token;

/// The callers of the matrix, in column order.
const CALLERS: [(&str, Option<&str>); 6] = [
    ("no token", None),
    ("revoked", Some("mp_rev_secretrevoked")),
    ("reader", Some("mp_rdr_secretreader")),
    ("admin", Some("mp_adm_secretadmin")),
    ("agent of h1", Some("mp_ag1_secretagent1")),
    ("agent of h2", Some("mp_ag2_secretagent2")),
];

/// One route: what is sent, and the status per caller in [`CALLERS`] order. Paths are under
/// `/api/v1` unless they start with `//` (the routes outside the API prefix). The store is
/// seeded by [`seed`]: pools `p` and `spare`, VM `vm1` on host `h1` with a lease of
/// `02AA00000010`, a checkpoint adapter and a template hold, block 1 active and block 2 pending
/// for `h1`.
struct Row {
    method: &'static str,
    /// The route as the OpenAPI document names it.
    route: &'static str,
    /// The concrete path requested.
    path: &'static str,
    body: Option<fn() -> Value>,
    expect: [u16; 6],
}

const fn row(
    method: &'static str,
    route: &'static str,
    path: &'static str,
    body: Option<fn() -> Value>,
    expect: [u16; 6],
) -> Row {
    Row {
        method,
        route,
        path,
        body,
        expect,
    }
}

const MATRIX: &[Row] = &[
    row(
        "GET",
        "/pools",
        "/pools",
        None,
        [401, 401, 200, 200, 403, 403],
    ),
    row(
        "POST",
        "/pools",
        "/pools",
        Some(|| json!({"name": "q", "ranges": ["02CC00000000-02CC000000FF"]})),
        [401, 401, 403, 201, 403, 403],
    ),
    row(
        "GET",
        "/pools/{name}",
        "/pools/p",
        None,
        [401, 401, 200, 200, 403, 403],
    ),
    row(
        "PATCH",
        "/pools/{name}",
        "/pools/p",
        Some(|| json!({"order": "lowest"})),
        [401, 401, 403, 200, 403, 403],
    ),
    row(
        "DELETE",
        "/pools/{name}",
        "/pools/spare",
        None,
        [401, 401, 403, 204, 403, 403],
    ),
    row(
        "GET",
        "/pools/{name}/available",
        "/pools/p/available",
        None,
        [401, 401, 200, 200, 403, 403],
    ),
    // An agent allocates for a new VM of its own host (the VM-created event), so both may.
    row(
        "POST",
        "/pools/{name}/available",
        "/pools/p/available",
        Some(|| json!({"vm_id": "vm9"})),
        [401, 401, 403, 201, 201, 201],
    ),
    row(
        "GET",
        "/leases",
        "/leases",
        None,
        [401, 401, 200, 200, 403, 403],
    ),
    row(
        "POST",
        "/leases",
        "/leases",
        Some(|| json!({"pool": "p", "vm_id": "vm9"})),
        [401, 401, 403, 201, 201, 201],
    ),
    row(
        "POST",
        "/leases/release",
        "/leases/release",
        Some(|| json!({"vm_id": "vm1"})),
        [401, 401, 403, 200, 200, 403],
    ),
    // Guard asks who else uses an address, so every agent may look one up.
    row(
        "GET",
        "/macs/{mac}",
        "/macs/02AA00000010",
        None,
        [401, 401, 200, 200, 200, 200],
    ),
    row(
        "GET",
        "/holds",
        "/holds",
        None,
        [401, 401, 200, 200, 403, 403],
    ),
    row(
        "POST",
        "/holds",
        "/holds",
        Some(|| json!({"mac": "02AA00000030", "vm_id": "vm1", "reason": "backup"})),
        [401, 401, 403, 201, 201, 403],
    ),
    row(
        "POST",
        "/holds/remove",
        "/holds/remove",
        Some(|| json!({"mac": "02AA00000020", "vm_id": "vm1"})),
        [401, 401, 403, 200, 200, 403],
    ),
    row(
        "GET",
        "/history",
        "/history",
        None,
        [401, 401, 200, 200, 403, 403],
    ),
    row(
        "GET",
        "/tokens",
        "/tokens",
        None,
        [401, 401, 403, 200, 403, 403],
    ),
    row(
        "POST",
        "/tokens",
        "/tokens",
        Some(|| json!({"name": "n", "role": "reader"})),
        [401, 401, 403, 201, 403, 403],
    ),
    row(
        "DELETE",
        "/tokens/{id}",
        "/tokens/rdr",
        None,
        [401, 401, 403, 200, 403, 403],
    ),
    row(
        "PUT",
        "/hosts/{host}/inventory",
        "/hosts/h1/inventory",
        Some(|| inventory(2)),
        [401, 401, 403, 200, 200, 403],
    ),
    row(
        "GET",
        "/hosts/{host}/inventory",
        "/hosts/h1/inventory",
        None,
        [401, 401, 200, 200, 200, 403],
    ),
    row(
        "GET",
        "/hosts",
        "/hosts",
        None,
        [401, 401, 200, 200, 403, 403],
    ),
    row(
        "GET",
        "/conflicts",
        "/conflicts",
        None,
        [401, 401, 200, 200, 403, 403],
    ),
    // h1 has a pending block: claiming again returns it (200).
    row(
        "POST",
        "/hosts/{host}/blocks",
        "/hosts/h1/blocks",
        Some(|| json!({"pool": "p", "size": 256})),
        [401, 401, 403, 200, 200, 403],
    ),
    row(
        "GET",
        "/hosts/{host}/blocks",
        "/hosts/h1/blocks",
        None,
        [401, 401, 200, 200, 200, 403],
    ),
    row(
        "GET",
        "/blocks",
        "/blocks",
        None,
        [401, 401, 200, 200, 403, 403],
    ),
    row(
        "POST",
        "/hosts/{host}/blocks/{id}/activate",
        "/hosts/h1/blocks/2/activate",
        None,
        [401, 401, 403, 200, 200, 403],
    ),
    row(
        "POST",
        "/hosts/{host}/blocks/{id}/drain",
        "/hosts/h1/blocks/1/drain",
        None,
        [401, 401, 403, 200, 200, 403],
    ),
    row(
        "GET",
        "//metrics",
        "//metrics",
        None,
        [401, 401, 200, 200, 403, 403],
    ),
    row(
        "GET",
        "//healthz",
        "//healthz",
        None,
        [200, 200, 200, 200, 200, 200],
    ),
    row(
        "GET",
        "//api/v1/openapi.json",
        "//api/v1/openapi.json",
        None,
        [200, 200, 200, 200, 200, 200],
    ),
];

fn inventory(generation: u64) -> Value {
    json!({"generation": generation, "vms": [{"id": "vm1", "name": "desk-1", "state": "running",
        "adapters": [
            {"name": "Network Adapter", "mac": "02AA00000010", "dynamic": false},
            {"name": "Network Adapter", "mac": "02AA00000011", "dynamic": false,
             "checkpoint": {"id": "cp1", "name": "RDV_ROLLBACK", "type": "standard"}}]}]})
}

struct App {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

impl App {
    /// A fresh store with every kind of token, seeded as [`Row`] says.
    async fn seeded() -> App {
        let mut revoked = token("rev", "secretrevoked", Role::Admin, None);
        revoked.revoked = Some(macpool_core::Timestamp(1));
        let (router, _state, dir) = common::app_with(vec![
            token("adm", "secretadmin", Role::Admin, None),
            token("rdr", "secretreader", Role::Reader, None),
            token("ag1", "secretagent1", Role::Agent, Some("h1")),
            token("ag2", "secretagent2", Role::Agent, Some("h2")),
            revoked,
        ])
        .await;
        let app = App { router, _dir: dir };
        app.seed().await;
        app
    }

    async fn seed(&self) {
        let admin = CALLERS[3].1;
        let agent = CALLERS[4].1;
        let steps: [(&str, &str, Option<&str>, Value, u16); 8] = [
            (
                "POST",
                "/pools",
                admin,
                json!({"name": "p", "ranges": ["02AA00000000-02AA000007FF"]}),
                201,
            ),
            (
                "POST",
                "/pools",
                admin,
                json!({"name": "spare", "ranges": ["02BB00000000-02BB000000FF"]}),
                201,
            ),
            (
                "POST",
                "/leases",
                admin,
                json!({"pool": "p", "vm_id": "vm1", "host": "h1", "mac": "02AA00000010"}),
                201,
            ),
            ("PUT", "/hosts/h1/inventory", agent, inventory(1), 200),
            (
                "POST",
                "/holds",
                admin,
                json!({"mac": "02AA00000020", "vm_id": "vm1", "reason": "template"}),
                201,
            ),
            (
                "POST",
                "/hosts/h1/blocks",
                agent,
                json!({"pool": "p", "size": 256}),
                201,
            ),
            (
                "POST",
                "/hosts/h1/blocks/1/activate",
                agent,
                Value::Null,
                200,
            ),
            (
                "POST",
                "/hosts/h1/blocks",
                agent,
                json!({"pool": "p", "size": 256}),
                201,
            ),
        ];
        for (i, (method, path, token, body, want)) in steps.into_iter().enumerate() {
            let body = (!body.is_null()).then_some(body);
            let (got, out) = self
                .call(method, &format!("/api/v1{path}"), token, body, i as u8)
                .await;
            assert_eq!(got, want, "seed step {method} {path}: {out}");
        }
    }

    /// One request from client address 10.0.0.`client` (each caller its own, so the failed-token
    /// throttle never mixes into the statuses under test).
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        client: u8,
    ) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, client)), 40000);
        req.extensions_mut().insert(ConnectInfo(addr));
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

fn full_path(p: &str) -> String {
    match p.strip_prefix("//") {
        Some(rest) => format!("/{rest}"),
        None => format!("/api/v1{p}"),
    }
}

#[test]
fn every_route_has_a_row() {
    let doc = openapi_document();
    let mut missing = Vec::new();
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if item.get(method.to_lowercase()).is_some() {
                documented.push((method, path.clone()));
                if !MATRIX.iter().any(|r| r.method == method && r.route == path) {
                    missing.push(format!("{method} {path}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "routes without a row in the authorization matrix: {missing:?}"
    );
    for r in MATRIX.iter().filter(|r| !r.route.starts_with("//")) {
        assert!(
            documented
                .iter()
                .any(|(m, p)| *m == r.method && p == r.route),
            "the matrix names {} {}, which the API does not have",
            r.method,
            r.route
        );
    }
}

#[tokio::test]
async fn every_route_answers_every_caller_as_the_matrix_says() {
    let mut wrong = Vec::new();
    for r in MATRIX {
        for (col, (who, token)) in CALLERS.iter().enumerate() {
            // A fresh store each time: no request sees another's effects.
            let app = App::seeded().await;
            let (got, out) = app
                .call(
                    r.method,
                    &full_path(r.path),
                    *token,
                    r.body.map(|b| b()),
                    100 + col as u8,
                )
                .await;
            if got != r.expect[col] {
                wrong.push(format!(
                    "{} {} as {who}: expected {}, got {got}: {out}",
                    r.method, r.path, r.expect[col]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The matrix as SECURITY.md shows it.
fn markdown() -> String {
    let mut out = String::from("| Route |");
    for (who, _) in CALLERS {
        out.push_str(&format!(" {who} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(CALLERS.len()));
    out.push('\n');
    for r in MATRIX {
        out.push_str(&format!("| `{} {}` |", r.method, full_path(r.route)));
        for s in r.expect {
            out.push_str(&format!(" {s} |"));
        }
        out.push('\n');
    }
    out
}

#[test]
fn security_md_shows_the_tested_matrix() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../SECURITY.md");
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    let table = markdown();
    if std::env::var_os("MACPOOL_WRITE_SECURITY_TABLE").is_some() {
        println!("{table}");
    }
    assert!(
        doc.contains(&table),
        "SECURITY.md must contain the authorization matrix exactly as tested; \
         print it with MACPOOL_WRITE_SECURITY_TABLE=1 cargo test -p macpool-server --test authz \
         -- --nocapture security_md\n\n{table}"
    );
}

#[tokio::test]
async fn an_agent_cannot_free_another_hosts_checkpoint_mac_and_lease_it() {
    // The seed's duplicate through the API: vm1's checkpoint on h1 keeps 02AA00000011 (held by
    // h1's inventory). h2's agent may neither remove that hold nor lease the MAC to its VM.
    let app = App::seeded().await;
    let h2 = CALLERS[5].1;
    let (s, out) = app
        .call(
            "POST",
            "/api/v1/holds/remove",
            h2,
            Some(json!({"mac": "02AA00000011", "vm_id": "vm1"})),
            7,
        )
        .await;
    assert_eq!(s, 403, "{out}");
    let (s, out) = app
        .call(
            "POST",
            "/api/v1/leases",
            h2,
            Some(json!({"pool": "p", "vm_id": "intruder", "mac": "02AA00000011"})),
            7,
        )
        .await;
    assert_eq!(s, 409, "the MAC is still held: {out}");
    // Nor may it hold another host's VM's address for itself under that VM's name.
    let (s, out) = app
        .call(
            "POST",
            "/api/v1/holds",
            h2,
            Some(json!({"mac": "02AA00000040", "vm_id": "vm1", "reason": "backup"})),
            7,
        )
        .await;
    assert_eq!(s, 403, "{out}");
    // h1's own agent may (its inventory created the hold) — and then the MAC cools down.
    let (s, out) = app
        .call(
            "POST",
            "/api/v1/holds/remove",
            CALLERS[4].1,
            Some(json!({"mac": "02AA00000020", "vm_id": "vm1"})),
            8,
        )
        .await;
    assert_eq!(s, 200, "{out}");
}

#[tokio::test]
async fn repeated_bad_tokens_are_slowed_down_and_counted() {
    // The exact allowance is unit-tested with a fake clock (auth.rs); here only that a burst of
    // bad tokens over HTTP meets 429 with Retry-After, and is counted.
    let app = App::seeded().await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let (s, _) = app
            .call("GET", "/api/v1/pools", Some("mp_adm_wrongsecret"), None, 9)
            .await;
        statuses.push(s);
    }
    assert_eq!(statuses[0], 401);
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    // While throttled even the right token from that address waits; another address does not.
    let mut req = Request::builder()
        .uri("/api/v1/pools")
        .header("authorization", format!("Bearer {}", CALLERS[3].1.unwrap()))
        .body(Body::empty())
        .unwrap();
    req.extensions_mut().insert(ConnectInfo(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
        1,
    )));
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let secs: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs >= 1, "Retry-After {secs}");
    let body: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("too-many-failures"),
        "{body}"
    );
    let (s, _) = app
        .call("GET", "/api/v1/pools", CALLERS[3].1, None, 10)
        .await;
    assert_eq!(s, 200);
    let req = Request::builder()
        .uri("/metrics")
        .header("authorization", format!("Bearer {}", CALLERS[2].1.unwrap()))
        .body(Body::empty())
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        text.contains("macpool_auth_failures_total 31"),
        "{}",
        text.lines()
            .filter(|l| l.contains("auth") || l.contains("too-many"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
