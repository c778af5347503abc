//! The inventory's wire additions (issues 16 and 17) driven in-process: management OS vNICs,
//! the agent's strategy and cursor source — accepted, validated, stored, returned, in the
//! conflicts (with each claimant's power state and guard's last action) and in /metrics; and an
//! older agent's push without them still accepted.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;
use common::{ADMIN, AGENT, READER};

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"));
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    )
}

fn vm(mac: &str) -> Value {
    json!([{"id": "desk", "name": "Desk 1", "state": "off",
            "adapters": [{"name": "Network Adapter", "mac": mac, "dynamic": true}]}])
}

#[tokio::test]
async fn management_vnics_strategy_and_cursor_source_go_over_the_wire() {
    let (router, _state, _dir) = common::app_with_tokens().await;
    let r = &router;
    let (s, _, _) = call(
        r,
        "POST",
        "/api/v1/pools",
        ADMIN,
        Some(json!({"name": "rds", "ranges": ["00155DF00000-00155DF000FF"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let path = "/api/v1/hosts/h1/inventory";

    // an older agent's push: none of the new fields; nothing of them comes back
    let (s, out, _) = call(
        r,
        "PUT",
        path,
        AGENT,
        Some(json!({"generation": 1, "vms": vm("00155DF00010")})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let (_, stored, _) = call(r, "GET", path, READER, None).await;
    for key in ["management_adapters", "cursor_source", "strategy"] {
        assert!(stored["inventory"].get(key).is_none(), "{key}: {stored}");
    }

    // bad input: a precise error, and nothing stored
    let refusals = [
        (
            json!({"generation": 2, "management_adapters": [{"name": "vEthernet (External)", "mac": "00155DF0001Z"}]}),
            "invalid-mac",
            "management_adapters[0] 'vEthernet (External)' mac",
        ),
        (
            json!({"generation": 2, "cursor_source": "guessed"}),
            "invalid-input",
            "cursor_source: unknown cursor source 'guessed'",
        ),
        (
            json!({"generation": 2, "strategy": "<b>guard</b>"}),
            "invalid-input",
            "strategy '<b>guard</b>' is not a strategy name",
        ),
        (
            json!({"generation": 2, "management_adapters": [{"mac": "00155DF00011", "checkpoint": {"id": "x"}}]}),
            "invalid-json",
            "checkpoint",
        ),
    ];
    for (body, slug, detail) in refusals {
        let (s, p, _) = call(r, "PUT", path, AGENT, Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} → {p}");
        assert!(p["type"].as_str().unwrap().ends_with(slug), "{body} → {p}");
        assert!(
            p["detail"].as_str().unwrap().contains(detail),
            "{body} → {p}"
        );
        let (_, now, _) = call(r, "GET", path, READER, None).await;
        assert_eq!(now, stored, "{body} changed the stored inventory");
    }

    // a current agent: its VM shares a MAC with its own management OS's vNIC
    let shared = "00-15-5D-F0-00-10";
    let body = json!({
        "generation": 3, "vms": vm(shared), "strategy": "delegate+guard",
        "cursor_source": "inventory-bound",
        "management_adapters": [{"name": "vEthernet (External)", "mac": "00155DF00010", "dynamic": true}],
    });
    let (s, out, _) = call(r, "PUT", path, AGENT, Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["bound"], json!([]), "a management vNIC is never leased");
    let (_, stored, _) = call(r, "GET", path, READER, None).await;
    let inv = &stored["inventory"];
    assert_eq!(inv["strategy"], "delegate+guard");
    assert_eq!(inv["cursor_source"], "inventory-bound");
    assert_eq!(
        inv["management_adapters"],
        json!([{"name": "vEthernet (External)", "mac": shared, "dynamic": true}])
    );
    let (_, info, _) = call(r, "GET", &format!("/api/v1/macs/{shared}"), READER, None).await;
    assert!(
        info["seen"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["management_os"] == true),
        "{info}"
    );

    let conflict = |all: Value| -> Value {
        all.as_array()
            .unwrap()
            .iter()
            .find(|c| c["mac"] == shared && c["class"] == "live-duplicate")
            .cloned()
            .unwrap_or_else(|| panic!("no live duplicate of {shared}: {all}"))
    };
    let owner = |c: &Value, seen: &str| -> Value {
        c["owners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["seen"] == seen)
            .cloned()
            .unwrap()
    };
    let (_, all, _) = call(r, "GET", "/api/v1/conflicts", READER, None).await;
    let c = conflict(all);
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains("the management OS of h1"),
        "{c}"
    );
    let desk = owner(&c, "live");
    assert_eq!(desk["state"], "off");
    assert!(desk.get("guard").is_none(), "guard did nothing yet: {desk}");
    let vnic = owner(&c, "management-os");
    assert_eq!(vnic["adapter"], "vEthernet (External)");
    assert!(vnic.get("state").is_none());

    // guard's replacement, as the agent words it, shows on the claimant
    let (s, lease, _) = call(
        r,
        "POST",
        "/api/v1/leases",
        AGENT,
        Some(json!({"pool": "rds", "vm_id": "desk", "adapter_id": "Microsoft:1", "host": "h1",
                    "reason": format!("guard: replaces {shared} of adapter 'Network Adapter' (in use) after rollback event x #9")})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{lease}");
    let (_, all, _) = call(r, "GET", "/api/v1/conflicts", READER, None).await;
    let desk = owner(&conflict(all), "live");
    assert_eq!(
        desk["guard"]["new_mac"], lease["allocations"][0]["lease"]["mac"],
        "{desk}"
    );

    let (_, _, metrics) = call(r, "GET", "/metrics", READER, None).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "macpool_host_cursor_estimated{host=\"h1\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_openapi_document_names_the_new_fields() {
    let doc = serde_json::to_value(macpool_server::openapi_document()).unwrap();
    let props = |schema: &str| doc["components"]["schemas"][schema]["properties"].clone();
    for field in ["management_adapters", "cursor_source", "strategy"] {
        assert!(
            props("InventoryBody").get(field).is_some(),
            "InventoryBody.{field}"
        );
    }
    for field in ["state", "guard"] {
        assert!(
            props("ConflictOwner").get(field).is_some(),
            "ConflictOwner.{field}"
        );
    }
    assert!(props("InventoryManagementAdapter").get("mac").is_some());
}
