//! The OpenAPI document tells the truth: every operation's declared statuses are exactly the
//! statuses it is made to return here, each by a request that produces it; every error is
//! problem+json with its own title. A route without an entry in `cases` fails the test.
//! Also: listings say when a limit was cut and give the next page's cursor, and host names in
//! paths are checked like other names.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use macpool_api::problem::PROBLEM_TYPES;
use macpool_server::error::ApiError;
use macpool_server::openapi_document;
use macpool_store::StoreError;
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;
use common::{ADMIN, AGENT, READER};

struct App {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: u16,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl App {
    async fn send(&self, req: Request<Body>) -> Answer {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status >= 400 {
            let ct = headers.get("content-type").map(|v| v.to_str().unwrap());
            assert_eq!(
                ct,
                Some("application/problem+json"),
                "{status} is not problem+json: {body}"
            );
            let slug = body["type"].as_str().unwrap().rsplit('/').next().unwrap();
            let title = PROBLEM_TYPES.iter().find(|(s, _)| *s == slug);
            assert!(
                title.is_some(),
                "problem type {slug} has no title of its own"
            );
            assert_eq!(body["title"], title.unwrap().1);
            assert_eq!(body["status"], status);
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let a = self.call(method, path, Some(ADMIN), Some(body)).await;
        assert!(a.status < 300, "{method} {path}: {} {}", a.status, a.body);
        a.body
    }
}

/// A store with something for every route to find: pool `p` (lease of VM `a` on host `h1` at
/// …00, a hold of VM `hv` at …10), an empty pool `e`, pool `dup` (two flagged leases of one
/// MAC), pool `blk` with block 1 pending for `h1`, and an inventory of `h1` (generation 5).
async fn fixture() -> App {
    let (router, _state, dir) = common::app_with_tokens().await;
    let app = App { router, _dir: dir };
    let pool = |name: &str, range: &str| json!({"name": name, "ranges": [range], "order": "lowest", "cooldown": "0s"});
    app.ok("POST", "/pools", pool("p", "00155D000000-00155D0000FF"))
        .await;
    app.ok("POST", "/pools", pool("e", "00155D400000-00155D4000FF"))
        .await;
    app.ok("POST", "/pools", pool("blk", "00155D200000-00155D20000F"))
        .await;
    let mut dup = pool("dup", "00155D500000-00155D5000FF");
    dup["duplicates"] = json!("allow-and-flag");
    app.ok("POST", "/pools", dup).await;
    app.ok(
        "POST",
        "/leases",
        json!({"pool": "p", "vm_id": "a", "host": "h1"}),
    )
    .await;
    for vm in ["x1", "x2"] {
        app.ok(
            "POST",
            "/leases",
            json!({"pool": "dup", "vm_id": vm, "mac": "00155D500000"}),
        )
        .await;
    }
    app.ok(
        "POST",
        "/holds",
        json!({"mac": "00155D000010", "vm_id": "hv", "reason": "template"}),
    )
    .await;
    app.ok("PUT", "/hosts/h1/inventory", json!({"generation": 5}))
        .await;
    let block = app
        .ok(
            "POST",
            "/hosts/h1/blocks",
            json!({"pool": "blk", "size": 8}),
        )
        .await;
    assert_eq!(block["id"], 1);
    app
}

/// One request and the status it must get.
struct Case {
    status: u16,
    path: &'static str,
    token: Option<&'static str>,
    body: Option<Value>,
}

fn case(status: u16, path: &'static str, token: &'static str, body: Option<Value>) -> Case {
    Case {
        status,
        path,
        token: Some(token),
        body,
    }
}

/// Per operation: a path that routes to it (for the cases every operation shares), then the
/// cases particular to it, run in order on a fresh [`fixture`].
fn cases() -> BTreeMap<&'static str, (&'static str, Vec<Case>)> {
    let b = |v: Value| Some(v);
    let mut m = BTreeMap::new();
    let mut add = |op: &'static str, path: &'static str, cases: Vec<Case>| {
        m.insert(op, (path, cases));
    };
    add(
        "get /pools",
        "/pools",
        vec![
            case(403, "/pools", AGENT, None),
            case(200, "/pools", READER, None),
        ],
    );
    add(
        "post /pools",
        "/pools",
        vec![
            case(
                201,
                "/pools",
                ADMIN,
                b(json!({"name": "q", "ranges": ["00155D300000-00155D3000FF"]})),
            ),
            case(
                400,
                "/pools",
                ADMIN,
                b(json!({"name": "r", "ranges": ["00155D3000FF-00155D300000"]})),
            ),
            case(
                403,
                "/pools",
                AGENT,
                b(json!({"name": "r", "ranges": ["00155D600000-00155D6000FF"]})),
            ),
            case(
                409,
                "/pools",
                ADMIN,
                b(json!({"name": "p", "ranges": ["00155D700000-00155D7000FF"]})),
            ),
        ],
    );
    add(
        "get /pools/{name}",
        "/pools/p",
        vec![
            case(403, "/pools/p", AGENT, None),
            case(200, "/pools/p", READER, None),
            case(400, "/pools/%FF", READER, None),
            case(404, "/pools/nope", READER, None),
        ],
    );
    add(
        "patch /pools/{name}",
        "/pools/p",
        vec![
            case(200, "/pools/p", ADMIN, b(json!({"order": "next-fit"}))),
            case(400, "/pools/p", ADMIN, b(json!({"cooldown": "soon"}))),
            case(403, "/pools/p", READER, b(json!({}))),
            case(404, "/pools/nope", ADMIN, b(json!({}))),
            case(
                409,
                "/pools/p",
                ADMIN,
                b(json!({"add_ranges": ["00155D200000-00155D2000FF"]})),
            ),
        ],
    );
    add(
        "delete /pools/{name}",
        "/pools/e",
        vec![
            case(400, "/pools/%FF", ADMIN, None),
            case(403, "/pools/e", AGENT, None),
            case(404, "/pools/nope", ADMIN, None),
            case(409, "/pools/p", ADMIN, None),
            case(204, "/pools/e", ADMIN, None),
        ],
    );
    add(
        "get /pools/{name}/available",
        "/pools/p/available",
        vec![
            case(403, "/pools/p/available", AGENT, None),
            case(200, "/pools/p/available", READER, None),
            case(400, "/pools/p/available?limit=abc", READER, None),
            case(404, "/pools/nope/available", READER, None),
        ],
    );
    add(
        "post /pools/{name}/available",
        "/pools/p/available",
        vec![
            case(201, "/pools/p/available", ADMIN, b(json!({"vm_id": "b"}))),
            case(200, "/pools/p/available", ADMIN, b(json!({"vm_id": "b"}))),
            case(
                400,
                "/pools/p/available",
                ADMIN,
                b(json!({"vm_id": "c", "mac": "00155D00000"})),
            ),
            case(403, "/pools/p/available", READER, b(json!({"vm_id": "c"}))),
            case(
                404,
                "/pools/nope/available",
                ADMIN,
                b(json!({"vm_id": "c"})),
            ),
            case(
                409,
                "/pools/p/available",
                ADMIN,
                b(json!({"vm_id": "c", "mac": "00155D000000"})),
            ),
        ],
    );
    add(
        "get /leases",
        "/leases",
        vec![
            case(403, "/leases", AGENT, None),
            case(200, "/leases", READER, None),
            case(400, "/leases?after=zz", READER, None),
        ],
    );
    add(
        "post /leases",
        "/leases",
        vec![
            case(201, "/leases", ADMIN, b(json!({"pool": "p", "vm_id": "d"}))),
            case(200, "/leases", ADMIN, b(json!({"pool": "p", "vm_id": "d"}))),
            case(400, "/leases", ADMIN, b(json!({"vm_id": "d"}))),
            case(
                403,
                "/leases",
                AGENT,
                b(json!({"pool": "p", "vm_id": "d", "host": "h2"})),
            ),
            case(
                404,
                "/leases",
                ADMIN,
                b(json!({"pool": "nope", "vm_id": "d"})),
            ),
            case(
                409,
                "/leases",
                ADMIN,
                b(json!({"pool": "p", "vm_id": "f", "mac": "00155D000000"})),
            ),
        ],
    );
    add(
        "post /leases/release",
        "/leases/release",
        vec![
            case(400, "/leases/release", ADMIN, b(json!({}))),
            case(403, "/leases/release", READER, b(json!({"vm_id": "a"}))),
            case(404, "/leases/release", ADMIN, b(json!({"vm_id": "nobody"}))),
            case(
                409,
                "/leases/release",
                ADMIN,
                b(json!({"mac": "00155D500000"})),
            ),
            case(200, "/leases/release", ADMIN, b(json!({"vm_id": "a"}))),
        ],
    );
    add(
        "get /macs/{mac}",
        "/macs/00155D000000",
        vec![
            case(200, "/macs/00155D000000", READER, None),
            case(400, "/macs/zz", READER, None),
        ],
    );
    add(
        "get /holds",
        "/holds",
        vec![
            case(403, "/holds", AGENT, None),
            case(200, "/holds", READER, None),
            case(400, "/holds?vm=a&vm=b", READER, None),
        ],
    );
    add(
        "post /holds",
        "/holds",
        vec![
            case(
                201,
                "/holds",
                ADMIN,
                b(json!({"mac": "00155D000020", "vm_id": "h", "reason": "backup"})),
            ),
            case(
                400,
                "/holds",
                ADMIN,
                b(json!({"mac": "00155D000021", "vm_id": "h", "reason": "whim"})),
            ),
            case(
                403,
                "/holds",
                READER,
                b(json!({"mac": "00155D000021", "vm_id": "h", "reason": "backup"})),
            ),
            case(
                409,
                "/holds",
                ADMIN,
                b(json!({"mac": "00155D000000", "vm_id": "h", "reason": "backup"})),
            ),
        ],
    );
    add(
        "post /holds/remove",
        "/holds/remove",
        vec![
            case(
                400,
                "/holds/remove",
                ADMIN,
                b(json!({"mac": "zz", "vm_id": "hv"})),
            ),
            case(
                403,
                "/holds/remove",
                READER,
                b(json!({"mac": "00155D000010", "vm_id": "hv"})),
            ),
            case(
                404,
                "/holds/remove",
                ADMIN,
                b(json!({"mac": "00155D000011", "vm_id": "hv"})),
            ),
            case(
                200,
                "/holds/remove",
                ADMIN,
                b(json!({"mac": "00155D000010", "vm_id": "hv"})),
            ),
        ],
    );
    add(
        "get /history",
        "/history",
        vec![
            case(403, "/history", AGENT, None),
            case(200, "/history", READER, None),
            case(400, "/history?mac=zz", READER, None),
        ],
    );
    add(
        "get /tokens",
        "/tokens",
        vec![
            case(200, "/tokens", ADMIN, None),
            case(403, "/tokens", READER, None),
        ],
    );
    add(
        "post /tokens",
        "/tokens",
        vec![
            case(
                201,
                "/tokens",
                ADMIN,
                b(json!({"name": "n", "role": "reader"})),
            ),
            case(
                400,
                "/tokens",
                ADMIN,
                b(json!({"name": "n", "role": "king"})),
            ),
            case(
                403,
                "/tokens",
                READER,
                b(json!({"name": "n", "role": "reader"})),
            ),
        ],
    );
    add(
        "delete /tokens/{id}",
        "/tokens/rdr",
        vec![
            case(400, "/tokens/%FF", ADMIN, None),
            case(403, "/tokens/rdr", READER, None),
            case(404, "/tokens/nope", ADMIN, None),
            case(409, "/tokens/adm", ADMIN, None),
            case(200, "/tokens/rdr", ADMIN, None),
        ],
    );
    add(
        "put /hosts/{host}/inventory",
        "/hosts/h1/inventory",
        vec![
            case(
                200,
                "/hosts/h1/inventory",
                ADMIN,
                b(json!({"generation": 6})),
            ),
            case(
                400,
                "/hosts/h1/inventory",
                ADMIN,
                b(json!({"generation": 7, "range_min": "00155D000000"})),
            ),
            case(
                403,
                "/hosts/h2/inventory",
                AGENT,
                b(json!({"generation": 1})),
            ),
            case(
                409,
                "/hosts/h1/inventory",
                ADMIN,
                b(json!({"generation": 1})),
            ),
        ],
    );
    add(
        "get /hosts/{host}/inventory",
        "/hosts/h1/inventory",
        vec![
            case(403, "/hosts/h2/inventory", AGENT, None),
            case(200, "/hosts/h1/inventory", READER, None),
            case(400, "/hosts/%01/inventory", READER, None),
            case(404, "/hosts/h9/inventory", READER, None),
        ],
    );
    add(
        "get /hosts",
        "/hosts",
        vec![
            case(403, "/hosts", AGENT, None),
            case(200, "/hosts", READER, None),
        ],
    );
    add(
        "get /conflicts",
        "/conflicts",
        vec![
            case(403, "/conflicts", AGENT, None),
            case(200, "/conflicts", READER, None),
        ],
    );
    add(
        "post /hosts/{host}/blocks",
        "/hosts/h1/blocks",
        vec![
            case(
                201,
                "/hosts/h2/blocks",
                ADMIN,
                b(json!({"pool": "blk", "size": 8})),
            ),
            case(
                200,
                "/hosts/h1/blocks",
                ADMIN,
                b(json!({"pool": "blk", "size": 8})),
            ),
            case(
                400,
                "/hosts/h3/blocks",
                ADMIN,
                b(json!({"pool": "blk", "size": 3})),
            ),
            case(
                403,
                "/hosts/h3/blocks",
                AGENT,
                b(json!({"pool": "blk", "size": 8})),
            ),
            case(
                404,
                "/hosts/h3/blocks",
                ADMIN,
                b(json!({"pool": "nope", "size": 8})),
            ),
            case(
                409,
                "/hosts/h3/blocks",
                ADMIN,
                b(json!({"pool": "blk", "size": 8})),
            ),
        ],
    );
    add(
        "get /hosts/{host}/blocks",
        "/hosts/h1/blocks",
        vec![
            case(403, "/hosts/h2/blocks", AGENT, None),
            case(200, "/hosts/h1/blocks", READER, None),
            case(400, "/hosts/%01/blocks", READER, None),
        ],
    );
    add(
        "get /blocks",
        "/blocks",
        vec![
            case(403, "/blocks", AGENT, None),
            case(200, "/blocks", READER, None),
        ],
    );
    add(
        "post /hosts/{host}/blocks/{id}/activate",
        "/hosts/h1/blocks/1/activate",
        vec![
            case(400, "/hosts/h1/blocks/abc/activate", ADMIN, None),
            case(403, "/hosts/h1/blocks/1/activate", READER, None),
            case(404, "/hosts/h1/blocks/99/activate", ADMIN, None),
            case(200, "/hosts/h1/blocks/1/activate", AGENT, None),
        ],
    );
    add(
        "post /hosts/{host}/blocks/{id}/drain",
        "/hosts/h1/blocks/1/drain",
        vec![
            case(400, "/hosts/h1/blocks/abc/drain", ADMIN, None),
            case(403, "/hosts/h2/blocks/1/drain", AGENT, None),
            case(404, "/hosts/h1/blocks/99/drain", ADMIN, None),
            case(200, "/hosts/h1/blocks/1/drain", ADMIN, None),
        ],
    );
    m
}

/// The cases every operation shares, derived from its shape as the server sees it.
fn shared_cases(path: &'static str, has_body: bool, inventory: bool) -> Vec<(u16, Request<Body>)> {
    let auth = format!("Bearer {ADMIN}");
    let builder = |method: &str, uri: String| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", auth.clone())
    };
    let json = |b: axum::http::request::Builder| b.header("content-type", "application/json");
    let method = "METHOD";
    let mut out = vec![
        // No token.
        (
            401,
            Request::builder()
                .method(method)
                .uri(format!("/api/v1{path}"))
                .body(Body::empty())
                .unwrap(),
        ),
        // A URI longer than the server reads.
        (
            414,
            builder(
                method,
                format!(
                    "/api/v1{path}?pad={}",
                    "a".repeat(macpool_server::MAX_URI_BYTES)
                ),
            )
            .body(Body::empty())
            .unwrap(),
        ),
        // Headers larger than the server reads.
        (
            431,
            builder(method, format!("/api/v1{path}"))
                .header("x-pad", "a".repeat(macpool_server::MAX_HEADER_BYTES))
                .body(Body::empty())
                .unwrap(),
        ),
    ];
    if has_body {
        out.push((
            415,
            builder(method, format!("/api/v1{path}"))
                .body(Body::from("{}"))
                .unwrap(),
        ));
        out.push((
            400,
            json(builder(method, format!("/api/v1{path}")))
                .body(Body::from("{"))
                .unwrap(),
        ));
        let limit = if inventory {
            macpool_server::MAX_INVENTORY_BYTES
        } else {
            macpool_server::MAX_BODY_BYTES
        };
        let big = format!("{{\"pad\": \"{}\"}}", "a".repeat(limit));
        out.push((
            413,
            json(builder(method, format!("/api/v1{path}")))
                .body(Body::from(big))
                .unwrap(),
        ));
    }
    out
}

#[tokio::test]
async fn every_route_declares_exactly_the_statuses_it_returns() {
    // Every handler goes to the store, and a store that cannot take requests is answered, in
    // the one place statuses are chosen, with 503: declared for every operation, and shown
    // here through that mapping rather than by breaking a store per route.
    let unavailable = ApiError::from(StoreError::Unavailable("down".into()));
    assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);

    let doc = openapi_document();
    let mut table = cases();
    let mut seen_ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let key = format!("{method} {path}");
            let (concrete, cases) = table
                .remove(key.as_str())
                .unwrap_or_else(|| panic!("{key} has no entry in cases(): add one"));
            seen_ops.insert(key.clone());
            let declared: BTreeSet<u16> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|s| s.parse().unwrap())
                .collect();
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let content: Vec<&String> =
                        response["content"].as_object().unwrap().keys().collect();
                    assert_eq!(content, ["application/problem+json"], "{key} {status}");
                }
            }
            let mut shown = BTreeSet::from([503]);
            let app = fixture().await;
            for c in cases {
                let a = app
                    .call(&method.to_uppercase(), c.path, c.token, c.body.clone())
                    .await;
                assert_eq!(
                    a.status, c.status,
                    "{key}: {} {:?}: {}",
                    c.path, c.body, a.body
                );
                shown.insert(c.status);
            }
            let has_body = op.get("requestBody").is_some();
            for (status, mut req) in shared_cases(concrete, has_body, path.ends_with("/inventory"))
            {
                *req.method_mut() = method.to_uppercase().parse().unwrap();
                let a = app.send(req).await;
                assert_eq!(a.status, status, "{key}: shared case {status}: {}", a.body);
                shown.insert(status);
            }
            // 429: after ten unknown tokens from one address, the next request from it waits.
            let throttled = || {
                let mut req = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(format!("/api/v1{concrete}"))
                    .header("authorization", "Bearer mp_nobody_wrong")
                    .body(Body::empty())
                    .unwrap();
                req.extensions_mut().insert(axum::extract::ConnectInfo(
                    std::net::SocketAddr::from(([192, 0, 2, 1], 1)),
                ));
                req
            };
            for _ in 0..10 {
                app.send(throttled()).await;
            }
            let a = app.send(throttled()).await;
            assert_eq!(a.status, 429, "{key}: throttled: {}", a.body);
            shown.insert(429);
            assert_eq!(
                declared, shown,
                "{key}: the document declares {declared:?}, requests here got {shown:?}"
            );
        }
    }
    assert!(
        table.is_empty(),
        "cases() lists operations the API does not have: {:?}",
        table.keys().collect::<Vec<_>>()
    );
    assert_eq!(seen_ops.len(), 27, "the API has 27 operations");
}

#[tokio::test]
async fn history_says_when_its_limit_was_cut_and_gives_the_cursor() {
    let app = fixture().await;
    let all = app
        .call("GET", "/history?limit=10000", Some(READER), None)
        .await;
    let n = all.body.as_array().unwrap().len();
    assert!(n >= 5, "{n} entries");
    assert!(
        all.headers.get("macpool-next-cursor").is_none(),
        "everything fit"
    );
    assert!(all.headers.get("macpool-limit-capped").is_none());

    let capped = app
        .call("GET", "/history?limit=50000", Some(READER), None)
        .await;
    assert_eq!(capped.status, 200);
    assert_eq!(capped.headers["macpool-limit-capped"], "10000");

    // Paging by the cursor header reaches every entry once.
    let mut paged = Vec::new();
    let mut path = "/history?limit=2".to_string();
    loop {
        let page = app.call("GET", &path, Some(READER), None).await;
        paged.extend(
            page.body
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].clone()),
        );
        match page.headers.get("macpool-next-cursor") {
            Some(c) => path = format!("/history?limit=2&before={}", c.to_str().unwrap()),
            None => break,
        }
    }
    let ids: Vec<Value> = all
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(paged, ids);
}

#[tokio::test]
async fn lease_listings_page_like_history() {
    let app = fixture().await;
    for vm in ["l1", "l2", "l3"] {
        app.ok("POST", "/leases", json!({"pool": "p", "vm_id": vm}))
            .await;
    }
    let all = app.call("GET", "/leases", Some(READER), None).await;
    let macs = |v: &Value| -> Vec<(Value, Value)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| (l["mac"].clone(), l["vm_id"].clone()))
            .collect()
    };
    assert_eq!(all.body.as_array().unwrap().len(), 6, "{}", all.body);
    assert!(all.headers.get("macpool-next-cursor").is_none());
    let mut paged = Vec::new();
    let mut path = "/leases?limit=1".to_string();
    loop {
        let page = app.call("GET", &path, Some(READER), None).await;
        assert!(page.body.as_array().unwrap().len() <= 1);
        paged.extend(macs(&page.body));
        match page.headers.get("macpool-next-cursor") {
            Some(c) => path = format!("/leases?limit=1&after={}", c.to_str().unwrap()),
            None => break,
        }
    }
    assert_eq!(
        paged,
        macs(&all.body),
        "the two flagged leases of one MAC included"
    );
    let capped = app
        .call("GET", "/leases?limit=10001", Some(READER), None)
        .await;
    assert_eq!(capped.headers["macpool-limit-capped"], "10000");
    let filtered = app
        .call("GET", "/leases?pool=dup&limit=1", Some(READER), None)
        .await;
    assert_eq!(filtered.body[0]["vm_id"], "x1");
    assert!(filtered.headers.get("macpool-next-cursor").is_some());
}

#[tokio::test]
async fn host_names_in_paths_are_checked_and_a_refused_one_changes_nothing() {
    let app = fixture().await;
    let before = app
        .call("GET", "/history?limit=10000", Some(ADMIN), None)
        .await
        .body;
    let long = "h".repeat(300);
    let cases = [
        (
            "PUT",
            format!("/hosts/{long}/inventory"),
            Some(json!({"generation": 1})),
            "host is 300 bytes long",
        ),
        (
            "PUT",
            "/hosts/h%0A1/inventory".to_string(),
            Some(json!({"generation": 1})),
            "control character",
        ),
        (
            "PUT",
            "/hosts/%20/inventory".to_string(),
            Some(json!({"generation": 1})),
            "must not be empty",
        ),
        (
            "GET",
            format!("/hosts/{long}/inventory"),
            None,
            "host is 300 bytes long",
        ),
        (
            "POST",
            "/hosts/h%01/blocks".to_string(),
            Some(json!({"pool": "blk"})),
            "control character",
        ),
        (
            "GET",
            "/hosts/h%01/blocks".to_string(),
            None,
            "control character",
        ),
        (
            "POST",
            "/hosts/h%01/blocks/1/activate".to_string(),
            None,
            "control character",
        ),
        (
            "POST",
            "/hosts/h%01/blocks/1/drain".to_string(),
            None,
            "control character",
        ),
    ];
    for (method, path, body, detail) in cases {
        let a = app.call(method, &path, Some(ADMIN), body).await;
        assert_eq!(a.status, 400, "{method} {path}: {}", a.body);
        assert!(
            a.body["detail"].as_str().unwrap().contains(detail),
            "{method} {path}: {}",
            a.body
        );
    }
    let after = app
        .call("GET", "/history?limit=10000", Some(ADMIN), None)
        .await
        .body;
    assert_eq!(before, after, "a refused request changed the store");
}
