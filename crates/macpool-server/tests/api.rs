//! The API driven in-process (no socket): routes, auth, problem+json, and that refused
//! requests change nothing.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use macpool_server::openapi_document;
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;
use common::{ADMIN, AGENT, READER};

struct Api {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    let (router, _state, dir) = common::app_with_tokens().await;
    Api { router, _dir: dir }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        self.raw(req).await
    }

    async fn raw(&self, req: Request<Body>) -> (StatusCode, Value) {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let is_problem = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/problem+json"));
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            assert!(is_problem, "error {status} without problem+json: {v}");
        }
        (status, v)
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    /// The Prometheus text of /metrics, read with a reader token (asserts 200).
    async fn metrics(&self) -> String {
        let req = Request::builder()
            .uri("/metrics")
            .header("authorization", format!("Bearer {READER}"))
            .body(Body::empty())
            .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    /// Everything a refused request must leave unchanged.
    async fn snapshot(&self) -> (Value, Value, Value, Value) {
        (
            self.admin("GET", "/api/v1/pools", None).await.1,
            self.admin("GET", "/api/v1/leases", None).await.1,
            self.admin("GET", "/api/v1/holds", None).await.1,
            self.admin("GET", "/api/v1/history?limit=10000", None)
                .await
                .1,
        )
    }
}

fn slug(v: &Value) -> &str {
    v["type"].as_str().unwrap().rsplit('/').next().unwrap()
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_nothing_else_is() {
    let api = api().await;
    let doc = serde_json::to_value(openapi_document()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{name}", "p")
                .replace("{mac}", "00155D000001")
                .replace("{id}", "x")
                .replace("{host}", "h1");
            let (status, body) = api
                .call(
                    &method.to_uppercase(),
                    &format!("/api/v1{concrete}"),
                    None,
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            operations += 1;
        }
    }
    assert_eq!(
        operations, 27,
        "the API has 27 operations; update this when adding one"
    );
    let (status, body) = api
        .call("GET", "/api/v1/nothing-here", Some(ADMIN), None)
        .await;
    assert_eq!((status, slug(&body)), (StatusCode::NOT_FOUND, "no-route"));
    let (status, body) = api.call("PUT", "/api/v1/pools", Some(ADMIN), None).await;
    assert_eq!(
        (status, slug(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed")
    );
    let (status, served) = api.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served["paths"], doc["paths"]);
}

#[tokio::test]
async fn allocate_see_free_release_and_history() {
    let api = api().await;
    let (s, p) = api
        .admin("POST", "/api/v1/pools", Some(json!({"name": "rds", "ranges": ["00:15:5d:f0:00:00-00:15:5d:f0:00:ff"], "cooldown": "1h"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["size"], 256);
    let (s, a) = api
        .call(
            "POST",
            "/api/v1/pools/rds/available",
            Some(AGENT),
            Some(json!({"vm_id": "vm-1", "count": 3})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["allocations"].as_array().unwrap().len(), 3);
    assert_eq!(
        a["allocations"][0]["lease"]["host"], "h1",
        "agent host filled in"
    );
    let (s, again) = api
        .call(
            "POST",
            "/api/v1/pools/rds/available",
            Some(AGENT),
            Some(json!({"vm_id": "vm-1", "count": 3})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "idempotent repeat is not a creation");
    // a body naming another pool than the path is refused, and nothing is allocated
    let (s, p) = api
        .call(
            "POST",
            "/api/v1/pools/rds/available",
            Some(AGENT),
            Some(json!({"vm_id": "vm-2", "pool": "pYf*"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("the path names pool 'rds'"),
        "{p}"
    );
    assert_eq!(
        again["allocations"],
        json!(
            a["allocations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| {
                    let mut x = x.clone();
                    x["existing"] = json!(true);
                    x
                })
                .collect::<Vec<_>>()
        )
    );
    let (_, free) = api.admin("GET", "/api/v1/pools/rds/available", None).await;
    assert_eq!(free["free"], 253);
    let listed: u64 = free["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(listed, 253);
    let mac = a["allocations"][1]["lease"]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, rel) = api
        .admin("POST", "/api/v1/leases/release", Some(json!({"mac": mac})))
        .await;
    assert_eq!(s, StatusCode::OK, "{rel}");
    assert!(rel[0]["cooling_until"].as_str().unwrap().ends_with('Z'));
    let (_, info) = api.admin("GET", &format!("/api/v1/macs/{mac}"), None).await;
    assert_eq!(info["state"], "cooling");
    let (_, hist) = api
        .admin("GET", &format!("/api/v1/history?mac={mac}"), None)
        .await;
    let actions: Vec<&str> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["released", "allocated"]);
    // One row per page: the second page starts before the first page's id.
    let newest = hist[0]["id"].as_u64().unwrap();
    let (_, page) = api
        .admin(
            "GET",
            &format!("/api/v1/history?mac={mac}&limit=1&before={newest}"),
            None,
        )
        .await;
    assert_eq!(page.as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page[0]["action"], "allocated");
    assert_eq!(page[0]["id"], hist[1]["id"]);
    let oldest = hist[1]["id"].as_u64().unwrap();
    let (_, rest) = api
        .admin(
            "GET",
            &format!("/api/v1/history?mac={mac}&before={oldest}"),
            None,
        )
        .await;
    assert_eq!(rest, json!([]), "nothing before the first entry");
}

#[tokio::test]
async fn bad_input_gets_a_precise_problem_and_changes_nothing() {
    let api = api().await;
    api.admin(
        "POST",
        "/api/v1/pools",
        Some(json!({"name": "p", "ranges": ["00155D000000-00155D000001"], "cooldown": "0s", "order": "lowest"})),
    )
    .await;
    api.admin(
        "POST",
        "/api/v1/leases",
        Some(json!({"pool": "p", "vm_id": "a", "host": "h1"})),
    )
    .await;
    let before = api.snapshot().await;
    /// method, path, token, body, status, problem type, words the detail must contain
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<Value>,
        u16,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/v1/leases",
            Some(ADMIN),
            Some(json!({"pool": "p", "vm_id": "b", "mac": "00:15:5d:00:00:0g"})),
            400,
            "invalid-mac",
            "bad digit 'g' at position 17",
        ),
        (
            "POST",
            "/api/v1/pools",
            Some(ADMIN),
            Some(json!({"name": "q", "ranges": ["00155D0000FF-00155D000010"]})),
            400,
            "invalid-range",
            "inverted",
        ),
        (
            "POST",
            "/api/v1/pools",
            Some(ADMIN),
            Some(json!({"name": "q", "ranges": ["01005E000000-01005E0000FF"]})),
            400,
            "invalid-range",
            "multicast",
        ),
        (
            "POST",
            "/api/v1/pools",
            Some(ADMIN),
            Some(json!({"name": "q", "ranges": ["00155D000001-00155D0000FF"]})),
            409,
            "range-overlap",
            "of pool 'p'",
        ),
        (
            "POST",
            "/api/v1/pools",
            Some(ADMIN),
            Some(json!({"name": "p", "ranges": ["00155D100000-00155D1000FF"]})),
            409,
            "pool-exists",
            "already exists",
        ),
        (
            "POST",
            "/api/v1/leases",
            Some(ADMIN),
            Some(json!({"pool": "nope", "vm_id": "b"})),
            404,
            "not-found",
            "no pool named 'nope'",
        ),
        (
            "POST",
            "/api/v1/leases",
            Some(ADMIN),
            Some(json!({"pool": "p", "vm_id": "b", "count": 2})),
            409,
            "pool-exhausted",
            "2 wanted, 1 free",
        ),
        (
            "POST",
            "/api/v1/leases",
            Some(ADMIN),
            Some(json!({"pool": "p", "vm_id": "b", "mac": "00155D000000"})),
            409,
            "mac-in-use",
            "leased to VM a",
        ),
        (
            "POST",
            "/api/v1/leases",
            Some(ADMIN),
            Some(json!({"pool": "p", "vm_id": "b", "bogus": 1})),
            400,
            "invalid-json",
            "unknown field `bogus`",
        ),
        (
            "POST",
            "/api/v1/leases",
            Some(ADMIN),
            Some(json!({"pool": "p"})),
            400,
            "invalid-json",
            "missing field `vm_id`",
        ),
        (
            "POST",
            "/api/v1/leases",
            None,
            Some(json!({"pool": "p", "vm_id": "b"})),
            401,
            "unauthorized",
            "missing",
        ),
        (
            "POST",
            "/api/v1/leases",
            Some("mp_adm_wrongsecret"),
            Some(json!({"pool": "p", "vm_id": "b"})),
            401,
            "unauthorized",
            "unknown or revoked",
        ),
        (
            "POST",
            "/api/v1/leases",
            Some(READER),
            Some(json!({"pool": "p", "vm_id": "b"})),
            403,
            "forbidden",
            "reader token",
        ),
        (
            "POST",
            "/api/v1/leases",
            Some(AGENT),
            Some(json!({"pool": "p", "vm_id": "b", "host": "h2"})),
            403,
            "forbidden",
            "bound to host 'h1'",
        ),
        (
            "POST",
            "/api/v1/pools",
            Some(AGENT),
            Some(json!({"name": "z", "ranges": ["00155D200000-00155D2000FF"]})),
            403,
            "forbidden",
            "admin token",
        ),
        (
            "DELETE",
            "/api/v1/pools/p",
            Some(ADMIN),
            None,
            409,
            "pool-in-use",
            "1 leased",
        ),
        (
            "POST",
            "/api/v1/holds",
            Some(ADMIN),
            Some(json!({"mac": "00155D000000", "vm_id": "other", "reason": "checkpoint"})),
            409,
            "mac-in-use",
            "leased to VM a",
        ),
        (
            "POST",
            "/api/v1/holds",
            Some(ADMIN),
            Some(json!({"mac": "00155D000001", "vm_id": "x", "reason": "whim"})),
            400,
            "invalid-input",
            "unknown hold reason",
        ),
        (
            "GET",
            "/api/v1/history?limit=abc",
            Some(ADMIN),
            None,
            400,
            "invalid-input",
            "limit",
        ),
        (
            "GET",
            "/api/v1/history?before=-1",
            Some(ADMIN),
            None,
            400,
            "invalid-input",
            "before",
        ),
    ];
    for (method, path, tok, body, status, want_slug, detail) in cases {
        let (s, v) = api.call(method, path, tok, body.clone()).await;
        assert_eq!(s.as_u16(), status, "{method} {path} {body:?}: {v}");
        assert_eq!(slug(&v), want_slug, "{method} {path}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains(detail),
            "{method} {path}: detail {:?} lacks {detail:?}",
            v["detail"]
        );
        assert_eq!(v["status"], status);
    }
    // Oversized and malformed bodies.
    let big = json!({"pool": "p", "vm_id": "x".repeat(70_000)});
    let (s, v) = api.admin("POST", "/api/v1/leases", Some(big)).await;
    assert_eq!((s.as_u16(), slug(&v)), (413, "payload-too-large"));
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/leases")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(Body::from("{\"pool\": \"p\", "))
        .unwrap();
    let (s, v) = api.raw(req).await;
    assert_eq!((s.as_u16(), slug(&v)), (400, "invalid-json"));
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/leases")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::from("{}"))
        .unwrap();
    let (s, v) = api.raw(req).await;
    assert_eq!((s.as_u16(), slug(&v)), (415, "unsupported-media-type"));
    assert_eq!(
        api.snapshot().await,
        before,
        "a refused request changed the store"
    );
}

#[tokio::test]
async fn metrics_show_pools_errors_and_latency() {
    let api = api().await;
    api.admin(
        "POST",
        "/api/v1/pools",
        Some(json!({"name": "m", "ranges": ["00155D300000-00155D3000FF"]})),
    )
    .await;
    api.admin(
        "POST",
        "/api/v1/leases",
        Some(json!({"pool": "m", "vm_id": "a"})),
    )
    .await;
    api.admin(
        "POST",
        "/api/v1/leases",
        Some(json!({"pool": "nope", "vm_id": "a"})),
    )
    .await;
    let text = api.metrics().await;
    for line in [
        "macpool_pool_size{pool=\"m\"} 256",
        "macpool_pool_leased{pool=\"m\"} 1",
        "macpool_pool_free{pool=\"m\"} 255",
        "macpool_allocations_total{pool=\"m\"} 1",
        "macpool_errors_total{type=\"not-found\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "metrics lack {line:?}:\n{text}"
        );
    }
    assert!(text.contains("macpool_http_request_duration_seconds_count"));
    let (s, _) = api.call("GET", "/metrics", None, None).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "metrics are not public by default"
    );
}

#[tokio::test]
async fn tokens_are_admin_only_and_revocation_takes_effect() {
    let api = api().await;
    let (s, _) = api.call("GET", "/api/v1/tokens", Some(READER), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, created) = api
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "agent-h9", "role": "agent", "host": "h9"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let secret = created["token"].as_str().unwrap().to_string();
    // (an agent reads one MAC's status; pools are not for agents, see authz.rs)
    let probe = "/api/v1/macs/02AA00000001";
    let (s, _) = api.call("GET", probe, Some(&secret), None).await;
    assert_eq!(s, StatusCode::OK);
    let (_, list) = api.admin("GET", "/api/v1/tokens", None).await;
    assert!(
        !list.to_string().contains(&secret),
        "token secrets are never listed"
    );
    let id = created["id"].as_str().unwrap();
    let (s, _) = api
        .admin("DELETE", &format!("/api/v1/tokens/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api.call("GET", probe, Some(&secret), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = api
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "x", "role": "agent"})),
        )
        .await;
    assert_eq!((s.as_u16(), slug(&v)), (400, "invalid-input"));
    let (s, v) = api.admin("DELETE", "/api/v1/tokens/adm", None).await;
    assert_eq!((s.as_u16(), slug(&v)), (409, "last-admin"));
}

/// An inventory body: `(vm id, live MACs, checkpoint (mac, id) pairs)`.
type TestVm<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);

fn inventory(generation: u64, vms: &[TestVm]) -> Value {
    let vms: Vec<Value> = vms
        .iter()
        .map(|(id, live, cps)| {
            let mut adapters: Vec<Value> = live
                .iter()
                .map(|m| json!({"name": "Network Adapter", "mac": m, "dynamic": true}))
                .collect();
            adapters.extend(cps.iter().map(|(m, cp)| {
                json!({"name": "Network Adapter", "mac": m, "dynamic": true,
                       "checkpoint": {"id": cp, "name": format!("RDV_ROLLBACK {cp}"), "type": "standard",
                                      "created": "2015-10-14T10:00:00Z"}})
            }));
            json!({"id": id, "name": format!("name-{id}"), "state": "running", "adapters": adapters})
        })
        .collect();
    json!({"generation": generation, "vms": vms})
}

#[tokio::test]
async fn inventory_binds_holds_and_the_seed_scenario_is_a_latent_conflict() {
    let api = api().await;
    api.admin(
        "POST",
        "/api/v1/pools",
        Some(json!({"name": "rds", "ranges": ["00155DF00000-00155DF000FF"], "order": "lowest"})),
    )
    .await;
    let (s, _) = api
        .admin(
            "POST",
            "/api/v1/leases",
            Some(json!({"pool": "rds", "vm_id": "desk"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, out) = api
        .call(
            "PUT",
            "/api/v1/hosts/h1/inventory",
            Some(AGENT),
            Some(inventory(
                1,
                &[("desk", &["00155DF00000"], &[("00155DF00000", "rdv")])],
            )),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["bound"][0]["state"], "bound");
    assert_eq!(out["bound"][0]["host"], "h1");
    assert_eq!(out["held"][0]["ref"], "rdv");
    let (s, stored) = api.admin("GET", "/api/v1/hosts/h1/inventory", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(stored["inventory"]["generation"], 1);
    assert_eq!(
        stored["inventory"]["vms"][0]["adapters"][1]["checkpoint"]["created"],
        "2015-10-14T10:00:00.000Z"
    );
    let (_, c) = api.admin("GET", "/api/v1/conflicts", None).await;
    assert_eq!(c, json!([]));
    // desk migrates to h2 (new native MAC, old checkpoint); h1 reuses its MAC for a new VM
    let (s, _) = api
        .admin(
            "PUT",
            "/api/v1/hosts/h2/inventory",
            Some(inventory(
                1,
                &[("desk", &["00155D990022"], &[("00155DF00000", "rdv")])],
            )),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .admin(
            "PUT",
            "/api/v1/hosts/h1/inventory",
            Some(inventory(2, &[("new-vm", &["00155DF00000"], &[])])),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, c) = api
        .call("GET", "/api/v1/conflicts", Some(READER), None)
        .await;
    let c = c.as_array().unwrap();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0]["class"], "latent");
    assert_eq!(c[0]["mac"], "00-15-5D-F0-00-00");
    let owners: Vec<(&str, &str, &str)> = c[0]["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["seen"].as_str().unwrap(),
                o["host"].as_str().unwrap(),
                o["vm_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        owners,
        [("live", "h1", "new-vm"), ("checkpoint", "h2", "desk")]
    );
    assert_eq!(c[0]["owners"][1]["checkpoint_id"], "rdv");
    assert!(c[0]["fix"].as_str().unwrap().contains("Get-VMSnapshot"));
    let (_, leases) = api.admin("GET", "/api/v1/leases", None).await;
    assert_eq!(leases[0]["host"], "h2", "the lease followed its VM");
    let text = api.metrics().await;
    for line in [
        "macpool_conflicts{class=\"latent\"} 1",
        "macpool_conflicts{class=\"live-duplicate\"} 0",
        "macpool_conflicts{class=\"unmanaged\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "metrics lack {line:?}:\n{text}"
        );
    }
}

#[tokio::test]
async fn refused_inventories_get_precise_problems_and_change_nothing() {
    let api = api().await;
    api.admin(
        "POST",
        "/api/v1/pools",
        Some(json!({"name": "rds", "ranges": ["00155DF00000-00155DF000FF"]})),
    )
    .await;
    api.admin(
        "POST",
        "/api/v1/leases",
        Some(json!({"pool": "rds", "vm_id": "desk", "mac": "00155DF00007"})),
    )
    .await;
    let (s, _) = api
        .admin(
            "PUT",
            "/api/v1/hosts/h1/inventory",
            Some(inventory(5, &[("desk", &["00155DF00007"], &[])])),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let before = api.snapshot().await;
    let inv_before = api.admin("GET", "/api/v1/hosts/h1/inventory", None).await.1;
    let conflicts_before = api.admin("GET", "/api/v1/conflicts", None).await.1;

    // an empty inventory would release desk's lease: refused as stale, so it must not
    let (s, p) = api
        .admin("PUT", "/api/v1/hosts/h1/inventory", Some(inventory(5, &[])))
        .await;
    assert_eq!((s, slug(&p)), (StatusCode::CONFLICT, "stale-generation"));
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("generation 5 of host 'h1'"),
        "{p}"
    );

    let (s, p) = api
        .call(
            "PUT",
            "/api/v1/hosts/h2/inventory",
            Some(AGENT),
            Some(inventory(1, &[("x", &["00155DF00009"], &[])])),
        )
        .await;
    assert_eq!((s, slug(&p)), (StatusCode::FORBIDDEN, "forbidden"));
    assert!(p["detail"].as_str().unwrap().contains("host 'h2'"), "{p}");

    let mut bad = inventory(6, &[("desk", &["00155DF00007"], &[])]);
    bad["vms"][0]["adapters"][0]["name"] = json!("NIC 2");
    bad["vms"][0]["adapters"][0]["mac"] = json!("00:15:5d:zz:00:07");
    let (s, p) = api
        .admin("PUT", "/api/v1/hosts/h1/inventory", Some(bad))
        .await;
    assert_eq!((s, slug(&p)), (StatusCode::BAD_REQUEST, "invalid-mac"));
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("vms[0] (desk) adapters[0] 'NIC 2' mac"),
        "{detail}"
    );

    let (s, p) = api
        .call(
            "PUT",
            "/api/v1/hosts/h1/inventory",
            Some(READER),
            Some(inventory(7, &[])),
        )
        .await;
    assert_eq!((s, slug(&p)), (StatusCode::FORBIDDEN, "forbidden"));

    let mut cp = inventory(8, &[("desk", &[], &[("00155DF00007", "x")])]);
    cp["vms"][0]["adapters"][0]["checkpoint"]["id"] = json!(" ");
    let (s, p) = api
        .admin("PUT", "/api/v1/hosts/h1/inventory", Some(cp))
        .await;
    assert_eq!((s, slug(&p)), (StatusCode::BAD_REQUEST, "invalid-input"));
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("checkpoint id must not be empty"),
        "{p}"
    );

    assert_eq!(api.snapshot().await, before);
    assert_eq!(
        api.admin("GET", "/api/v1/hosts/h1/inventory", None).await.1,
        inv_before
    );
    assert_eq!(
        api.admin("GET", "/api/v1/conflicts", None).await.1,
        conflicts_before
    );
    let (s, p) = api.admin("GET", "/api/v1/hosts/h2/inventory", None).await;
    assert_eq!((s, slug(&p)), (StatusCode::NOT_FOUND, "not-found"));
}

#[tokio::test]
async fn a_large_host_inventory_fits_where_other_bodies_would_not() {
    let api = api().await;
    // 2,000 VMs: about 200 KiB, over the 64 KiB limit of every other body.
    let names: Vec<(String, Vec<String>)> = (0..2000)
        .map(|i| (format!("vm-{i}"), vec![format!("00155D7{i:05X}")]))
        .collect();
    let body = json!({"generation": 1, "vms": names.iter().map(|(id, macs)| json!({
        "id": id, "name": id, "state": "running",
        "adapters": [{"name": "Network Adapter", "mac": macs[0], "dynamic": true}]
    })).collect::<Vec<_>>()});
    assert!(body.to_string().len() > 64 * 1024);
    let (s, out) = api
        .call("PUT", "/api/v1/hosts/h1/inventory", Some(AGENT), Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let (_, stored) = api.admin("GET", "/api/v1/hosts/h1/inventory", None).await;
    assert_eq!(stored["inventory"]["vms"].as_array().unwrap().len(), 2000);
}

#[tokio::test]
async fn blocks_are_claimed_activated_rotated_and_bad_claims_change_nothing() {
    let api = api().await;
    let (s, _) = api
        .admin(
            "POST",
            "/api/v1/pools",
            Some(json!({"name": "rds", "ranges": ["00155DF00000-00155DF003FF"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let claim = |size: u64| json!({"pool": "rds", "size": size});
    let (s, b1) = api
        .call(
            "POST",
            "/api/v1/hosts/h1/blocks",
            Some(AGENT),
            Some(claim(256)),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b1}");
    assert_eq!(
        (
            b1["first"].as_str(),
            b1["last"].as_str(),
            b1["state"].as_str()
        ),
        (
            Some("00-15-5D-F0-00-00"),
            Some("00-15-5D-F0-00-FF"),
            Some("pending")
        )
    );
    let (s, again) = api
        .call(
            "POST",
            "/api/v1/hosts/h1/blocks",
            Some(AGENT),
            Some(claim(256)),
        )
        .await;
    assert_eq!(
        (s, &again["id"], &again["existing"]),
        (StatusCode::OK, &b1["id"], &json!(true))
    );
    let id = b1["id"].as_u64().unwrap();
    let (s, active) = api
        .call(
            "POST",
            &format!("/api/v1/hosts/h1/blocks/{id}/activate"),
            Some(AGENT),
            None,
        )
        .await;
    assert_eq!(
        (s, active["state"].as_str()),
        (StatusCode::OK, Some("active"))
    );
    let (_, pool) = api.admin("GET", "/api/v1/pools/rds", None).await;
    assert_eq!(
        (pool["delegated"].as_u64(), pool["free"].as_u64()),
        (Some(256), Some(768))
    );

    let before = api.snapshot().await;
    let cases = [
        (
            Some(AGENT),
            "/api/v1/hosts/h2/blocks",
            claim(256),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            Some(ADMIN),
            "/api/v1/hosts/h2/blocks",
            claim(4),
            StatusCode::BAD_REQUEST,
            "invalid-input",
        ),
        (
            Some(ADMIN),
            "/api/v1/hosts/h2/blocks",
            claim(1024),
            StatusCode::CONFLICT,
            "pool-exhausted",
        ),
        (
            Some(ADMIN),
            "/api/v1/hosts/h2/blocks",
            json!({"pool": "nope"}),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            Some(ADMIN),
            "/api/v1/hosts/h2/blocks",
            json!({"pool": "rds", "extra": 1}),
            StatusCode::BAD_REQUEST,
            "invalid-json",
        ),
        (
            Some(READER),
            "/api/v1/hosts/h1/blocks",
            claim(256),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ];
    for (token, path, body, status, kind) in cases {
        let (s, v) = api.call("POST", path, token, Some(body.clone())).await;
        assert_eq!((s, slug(&v)), (status, kind), "{body}: {v}");
    }
    let (s, v) = api
        .admin("POST", "/api/v1/hosts/h2/blocks/999/activate", None)
        .await;
    assert_eq!((s, slug(&v)), (StatusCode::NOT_FOUND, "not-found"), "{v}");
    assert_eq!(api.snapshot().await, before);

    // rotate: the new block becomes active, the old one drains
    let (_, b2) = api
        .call(
            "POST",
            "/api/v1/hosts/h1/blocks",
            Some(AGENT),
            Some(claim(256)),
        )
        .await;
    let id2 = b2["id"].as_u64().unwrap();
    api.call(
        "POST",
        &format!("/api/v1/hosts/h1/blocks/{id2}/activate"),
        Some(AGENT),
        None,
    )
    .await;
    let (s, list) = api.call("GET", "/api/v1/blocks", Some(READER), None).await;
    assert_eq!(s, StatusCode::OK);
    let states: Vec<(u64, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_u64().unwrap(), b["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(id, "draining"), (id2, "active")]);
    let (_, history) = api.admin("GET", "/api/v1/history?limit=100", None).await;
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["action"].as_str())
        .filter(|a| a.starts_with("block-"))
        .collect();
    assert_eq!(
        actions,
        [
            "block-activated",
            "block-draining",
            "block-claimed",
            "block-activated",
            "block-claimed"
        ]
    );
}

#[tokio::test]
async fn hosts_list_what_the_hosts_page_shows() {
    let api = api().await;
    api.admin(
        "POST",
        "/api/v1/pools",
        Some(json!({"name": "rds", "ranges": ["00155DF00000-00155DF003FF"]})),
    )
    .await;
    let (s, block) = api
        .call(
            "POST",
            "/api/v1/hosts/h1/blocks",
            Some(AGENT),
            Some(json!({"pool": "rds", "size": 256})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{block}");
    let mut h1 = inventory(3, &[("vm1", &["00155D100001"], &[("00155D100002", "cp1")])]);
    h1["range_min"] = json!("00155D100000");
    h1["range_max"] = json!("00155D1000FF");
    h1["cursor_source"] = json!("inventory-bound");
    h1["strategy"] = json!("delegate+guard");
    h1["cluster"] = json!("c1");
    let mut h2 = inventory(1, &[]);
    h2["range_min"] = json!("00155D100080");
    h2["range_max"] = json!("00155D10017F");
    h2["cursor"] = json!("00155D100090");
    h2["cursor_source"] = json!("registry");
    for (host, body) in [("h1", h1), ("h2", h2)] {
        let (s, v) = api
            .admin(
                "PUT",
                &format!("/api/v1/hosts/{host}/inventory"),
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    let (s, hosts) = api.call("GET", "/api/v1/hosts", Some(READER), None).await;
    assert_eq!(s, StatusCode::OK, "{hosts}");
    let h1 = &hosts[0];
    assert_eq!(
        (
            &h1["host"],
            &h1["cluster"],
            &h1["range_min"],
            &h1["range_max"]
        ),
        (
            &json!("h1"),
            &json!("c1"),
            &json!("00-15-5D-10-00-00"),
            &json!("00-15-5D-10-00-FF")
        )
    );
    assert_eq!(
        (&h1["cursor"], &h1["cursor_source"], &h1["cursor_estimated"]),
        (&Value::Null, &json!("inventory-bound"), &json!(true))
    );
    assert_eq!(h1["overlaps"], json!(["h2"]));
    assert_eq!(
        (&h1["blocks"][0]["id"], &h1["blocks"][0]["state"]),
        (&block["id"], &json!("pending"))
    );
    assert_eq!(
        (
            &h1["vms"],
            &h1["live_adapters"],
            &h1["checkpoint_adapters"],
            &h1["management_adapters"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(0))
    );
    assert_eq!(
        (&h1["generation"], &h1["strategy"]),
        (&json!(3), &json!("delegate+guard"))
    );
    assert!(h1["received"].as_str().unwrap().ends_with('Z'), "{h1}");
    let h2 = &hosts[1];
    assert_eq!(
        (
            &h2["host"],
            &h2["cursor"],
            &h2["cursor_estimated"],
            &h2["overlaps"],
            &h2["blocks"]
        ),
        (
            &json!("h2"),
            &json!("00-15-5D-10-00-90"),
            &json!(false),
            &json!(["h1"]),
            &json!([])
        )
    );
    assert_eq!(hosts.as_array().unwrap().len(), 2);

    let (s, v) = api.call("GET", "/api/v1/hosts", Some(AGENT), None).await;
    assert_eq!((s, slug(&v)), (StatusCode::FORBIDDEN, "forbidden"));
}
