//! The dashboard driven in-process: sign-in, sessions, CSRF, roles, previews, escaping. The
//! real-browser checks are in `crates/macpool/tests/dashboard.rs`.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use common::{ADMIN, AGENT, READER};

struct Ui {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

/// A signed-in browser: its session cookie and the CSRF token its pages carry.
struct Browser {
    cookie: String,
    csrf: String,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

fn hidden_csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..at + body[at..].find('"').unwrap()].to_string()
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl Ui {
    async fn new() -> Ui {
        let (router, _state, dir) = common::app_with_tokens().await;
        let ui = Ui { router, _dir: dir };
        ui.api(
            "POST",
            "/api/v1/pools",
            json!({"name": "p", "ranges": ["00155D000000-00155D0003FF"], "cooldown": "1h"}),
        )
        .await;
        ui
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn api(&self, method: &str, path: &str, body: Value) -> Value {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let r = self.send(req).await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
        serde_json::from_str(&r.body).unwrap_or(Value::Null)
    }

    async fn get(&self, path: &str, b: Option<&Browser>) -> Reply {
        let mut req = Request::builder().uri(path);
        if let Some(b) = b {
            req = req.header(header::COOKIE, &b.cookie);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn post(&self, path: &str, b: &Browser, pairs: &[(&str, &str)]) -> Reply {
        let req = Request::builder()
            .method("POST")
            .uri(path)
            .header(header::COOKIE, &b.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form(pairs)))
            .unwrap();
        self.send(req).await
    }

    /// Signs in through the form as a browser would; `Err` is the refusal.
    async fn sign_in(&self, token: &str) -> Result<Browser, Reply> {
        let page = self.get("/login", None).await;
        let login_cookie = page.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let csrf = hidden_csrf(&page.body);
        let req = Request::builder()
            .method("POST")
            .uri("/login")
            .header(header::COOKIE, &login_cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form(&[("token", token), ("csrf", &csrf)])))
            .unwrap();
        let r = self.send(req).await;
        if r.status != StatusCode::SEE_OTHER {
            return Err(r);
        }
        let set = r
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|c| c.starts_with("macpool_session="))
            .expect("a session cookie");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        let pools = self
            .get(
                "/pools",
                Some(&Browser {
                    cookie: cookie.clone(),
                    csrf: String::new(),
                }),
            )
            .await;
        assert_eq!(pools.status, StatusCode::OK);
        Ok(Browser {
            cookie,
            csrf: hidden_csrf(&pools.body),
        })
    }

    async fn leases(&self) -> Vec<Value> {
        self.api("GET", "/api/v1/leases", Value::Null)
            .await
            .as_array()
            .unwrap()
            .clone()
    }
}

#[tokio::test]
async fn pages_need_a_session_and_agents_cannot_sign_in() {
    let ui = Ui::new().await;
    for path in ["/pools", "/pools/p/map", "/conflicts", "/history", "/hosts"] {
        let r = ui.get(path, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers[header::LOCATION], "/login");
    }
    let refused = ui.sign_in(AGENT).await.err().expect("agent refused");
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let wrong = ui
        .sign_in("mp_adm_wrong")
        .await
        .err()
        .expect("bad token refused");
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // a sign-in form posted without its cookie (a cross-site form) is refused
    let req = Request::builder()
        .method("POST")
        .uri("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form(&[("token", ADMIN), ("csrf", "x")])))
        .unwrap();
    assert_eq!(ui.send(req).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn every_page_has_a_strict_content_security_policy() {
    let ui = Ui::new().await;
    let b = ui.sign_in(ADMIN).await.ok().unwrap();
    for path in [
        "/pools",
        "/pools/p/map",
        "/pools/p/map?zoom=1",
        "/pools/p/map?zoom=2",
        "/pools/p/addresses",
        "/pools/p/free",
        "/conflicts",
        "/hosts",
        "/history",
        "/tokens",
        "/audit",
        "/mac/00155D000001",
    ] {
        let r = ui.get(path, Some(&b)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!r.body.contains(" style=\""), "{path} has an inline style");
        assert!(!r.body.contains("<script>"), "{path} has an inline script");
    }
}

#[tokio::test]
async fn an_admin_action_shows_a_preview_then_acts_and_lands_in_the_history() {
    let ui = Ui::new().await;
    let b = ui.sign_in(ADMIN).await.ok().unwrap();
    let fields = [
        ("csrf", b.csrf.as_str()),
        ("vm_id", "vm-ui"),
        ("count", "3"),
        ("consecutive", "1"),
    ];
    // no CSRF token: refused, nothing changed
    let forged = ui.post("/pools/p/allocate", &b, &fields[1..]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let wrong = [("csrf", "0000"), ("vm_id", "vm-ui")];
    assert_eq!(
        ui.post("/pools/p/allocate", &b, &wrong).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(ui.leases().await.is_empty());
    // the preview says what will happen and changes nothing
    let preview = ui.post("/pools/p/allocate", &b, &fields).await;
    assert_eq!(preview.status, StatusCode::OK);
    assert!(
        preview
            .body
            .contains("3 consecutive addresses from 00-15-5D-00-00-00"),
        "{}",
        preview.body
    );
    assert!(preview.body.contains("name=\"confirm\" value=\"1\""));
    assert!(ui.leases().await.is_empty());
    // confirmed: three consecutive leases, in the history under the token's name
    let mut confirmed = fields.to_vec();
    confirmed.push(("mac", "00-15-5D-00-00-00"));
    confirmed.push(("confirm", "1"));
    let done = ui.post("/pools/p/allocate", &b, &confirmed).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let macs: Vec<String> = ui
        .leases()
        .await
        .iter()
        .map(|l| l["mac"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        macs,
        [
            "00-15-5D-00-00-00",
            "00-15-5D-00-00-01",
            "00-15-5D-00-00-02"
        ]
    );
    let history = ui
        .get("/history?actor=admin-test&action=allocated", Some(&b))
        .await;
    assert_eq!(
        history.body.matches("<tr data-id=").count(),
        3,
        "{}",
        history.body
    );
}

#[tokio::test]
async fn a_reader_sees_no_actions_and_a_hand_made_post_is_refused() {
    let ui = Ui::new().await;
    ui.api(
        "POST",
        "/api/v1/leases",
        json!({"pool": "p", "vm_id": "vm1"}),
    )
    .await;
    let r = ui.sign_in(READER).await.ok().unwrap();
    let free = ui.get("/pools/p/free", Some(&r)).await;
    assert!(
        !free.body.contains("/pools/p/allocate"),
        "a reader sees an allocate form"
    );
    let mac = ui.get("/mac/00-15-5D-00-00-00", Some(&r)).await;
    assert!(
        !mac.body.contains("/release"),
        "a reader sees a release form"
    );
    let tokens = ui.get("/tokens", Some(&r)).await;
    assert_eq!(tokens.status, StatusCode::FORBIDDEN);
    let fields = [
        ("csrf", r.csrf.as_str()),
        ("vm_id", "vm1"),
        ("confirm", "1"),
    ];
    for path in [
        "/pools/p/allocate",
        "/mac/00-15-5D-00-00-00/release",
        "/tokens",
    ] {
        let refused = ui.post(path, &r, &fields).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            refused.body
        );
    }
    assert_eq!(ui.leases().await.len(), 1, "nothing changed");
}

#[tokio::test]
async fn hostile_names_render_as_text() {
    let ui = Ui::new().await;
    for (vm, name) in [
        ("x1", "<script>alert(1)</script>"),
        ("x2", "\"'><img src=x onerror=alert(2)>"),
    ] {
        ui.api(
            "POST",
            "/api/v1/leases",
            json!({"pool": "p", "vm_id": vm, "vm_name": name, "host": "<b>h</b>"}),
        )
        .await;
    }
    let b = ui.sign_in(ADMIN).await.ok().unwrap();
    for path in [
        "/pools/p/addresses",
        "/mac/00-15-5D-00-00-00",
        "/mac/00-15-5D-00-00-01",
        "/history",
        "/search?q=alert",
    ] {
        let r = ui.get(path, Some(&b)).await;
        assert!(!r.body.contains("<script>alert"), "{path}");
        assert!(!r.body.contains("<img src=x"), "{path}");
        assert!(!r.body.contains("<b>h</b>"), "{path}");
    }
    let page = ui.get("/pools/p/addresses", Some(&b)).await;
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        page.body
            .contains("&quot;&#39;&gt;&lt;img src=x onerror=alert(2)&gt;")
    );
}

#[tokio::test]
async fn revoking_a_token_ends_its_sessions_and_signing_out_ends_one() {
    let ui = Ui::new().await;
    let admin = ui.sign_in(ADMIN).await.ok().unwrap();
    let reader = ui.sign_in(READER).await.ok().unwrap();
    let preview = ui
        .post("/tokens/rdr/revoke", &admin, &[("csrf", &admin.csrf)])
        .await;
    assert!(preview.body.contains("Revoke token"));
    assert_eq!(
        ui.get("/pools", Some(&reader)).await.status,
        StatusCode::OK,
        "a preview changes nothing"
    );
    let done = ui
        .post(
            "/tokens/rdr/revoke",
            &admin,
            &[("csrf", &admin.csrf), ("confirm", "1")],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let gone = ui.get("/pools", Some(&reader)).await;
    assert_eq!(
        gone.status,
        StatusCode::SEE_OTHER,
        "the revoked token's session ended"
    );
    // sign-out needs the CSRF token too
    assert_eq!(
        ui.post("/logout", &admin, &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(ui.get("/pools", Some(&admin)).await.status, StatusCode::OK);
    ui.post("/logout", &admin, &[("csrf", &admin.csrf)]).await;
    assert_eq!(
        ui.get("/pools", Some(&admin)).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn the_map_legend_counts_what_the_store_holds() {
    let ui = Ui::new().await;
    ui.api(
        "POST",
        "/api/v1/leases",
        json!({"pool": "p", "vm_id": "a", "mac": "00155D000001"}),
    )
    .await;
    ui.api(
        "POST",
        "/api/v1/leases",
        json!({"pool": "p", "vm_id": "b", "mac": "00155D000002"}),
    )
    .await;
    ui.api(
        "POST",
        "/api/v1/leases/release",
        json!({"mac": "00155D000002"}),
    )
    .await;
    ui.api(
        "POST",
        "/api/v1/holds",
        json!({"mac": "00155D000003", "vm_id": "c", "reason": "template", "ref": "gold"}),
    )
    .await;
    let b = ui.sign_in(READER).await.ok().unwrap();
    let map = ui.get("/pools/p/map", Some(&b)).await.body;
    let count = |key: &str| {
        let at = map.find(&format!("data-legend=\"{key}\"")).unwrap();
        let c = at + map[at..].find("class=\"count\">").unwrap() + 14;
        map[c..c + map[c..].find('<').unwrap()]
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(
        (
            count("leased"),
            count("cooling"),
            count("held"),
            count("free")
        ),
        (1, 1, 1, 253)
    );
    assert!(map.contains("data-mac=\"00-15-5D-00-00-01\" data-state=\"leased\""));
    assert!(map.contains("data-mac=\"00-15-5D-00-00-03\" data-state=\"held\""));
    // zoomed out, one cell holds the whole 1,024-address pool's first quarter
    let zoomed = ui.get("/pools/p/map?zoom=1", Some(&b)).await.body;
    assert!(
        zoomed.contains("data-first=\"00-15-5D-00-00-00\" data-used=\"3\" data-in-pool=\"256\""),
        "{zoomed}"
    );
    // a bad go-to is a precise error page
    let bad = ui.get("/pools/p/map?at=zz", Some(&b)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("go to &#39;zz&#39;"));
}

#[tokio::test]
async fn the_address_table_keeps_free_rows_and_exports_the_filtered_set() {
    let ui = Ui::new().await;
    for (vm, mac, host) in [("a", "00155D000001", "hv1"), ("b", "00155D000005", "hv2")] {
        ui.api(
            "POST",
            "/api/v1/leases",
            json!({"pool": "p", "vm_id": vm, "mac": mac, "host": host}),
        )
        .await;
    }
    let b = ui.sign_in(READER).await.ok().unwrap();
    let page = ui.get("/pools/p/addresses?host=hv1", Some(&b)).await.body;
    let rows: Vec<&str> = page
        .match_indices("data-row=\"")
        .map(|(i, _)| &page[i + 10..i + 14])
        .collect();
    assert_eq!(
        rows,
        ["free", "used", "free", "free"],
        "free rows stay in place under a filter"
    );
    let csv = ui
        .get("/pools/p/addresses?host=hv1&format=csv", Some(&b))
        .await;
    assert_eq!(csv.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    let used: Vec<&str> = csv
        .body
        .lines()
        .filter(|l| l.starts_with("used,"))
        .collect();
    assert_eq!(used.len(), 1);
    assert!(used[0].starts_with("used,00-15-5D-00-00-01,"));
    let json = ui.get("/pools/p/addresses?format=json", Some(&b)).await;
    let v: Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(
        v.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["row"] == "used")
            .count(),
        2
    );
    let bad = ui.get("/pools/p/addresses?state=nope", Some(&b)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

/// The address table's rows as `kind last-octet` (`free 02`, `used 05`), in page order.
fn address_rows(page: &str) -> Vec<String> {
    page.match_indices("<tr data-row=\"")
        .map(|(i, _)| {
            let kind = &page[i + 14..i + 18];
            let at = i + page[i..].find("00-15-5D-00-00-").unwrap() + 15;
            format!("{kind} {}", &page[at..at + 2])
        })
        .collect()
}

#[tokio::test]
async fn the_address_table_sorts_by_each_column_and_keeps_its_free_rows() {
    let ui = Ui::new().await;
    for (mac, vm, name, host) in [
        ("00155D000001", "z", "zeta", Some("hv2")),
        ("00155D000005", "a", "Alpha", Some("hv1")),
        ("00155D000009", "m", "mid", None),
    ] {
        let mut body = json!({"pool": "p", "vm_id": vm, "vm_name": name, "mac": mac});
        if let Some(h) = host {
            body["host"] = json!(h);
        }
        ui.api("POST", "/api/v1/leases", body).await;
        // distinct creation times for `since`
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    ui.api(
        "POST",
        "/api/v1/holds",
        json!({"mac": "00155D00000C", "vm_id": "t", "reason": "template", "ref": "gold"}),
    )
    .await;
    let b = ui.sign_in(READER).await.ok().unwrap();
    let rows = |q: &'static str| {
        let (ui, b) = (&ui, &b);
        async move {
            let page = ui.get(&format!("/pools/p/addresses?{q}"), Some(b)).await;
            assert_eq!(page.status, StatusCode::OK, "{q}: {}", page.body);
            address_rows(&page.body)
        }
    };
    let free = ["free 00", "free 02", "free 06", "free 0A", "free 0D"];
    assert_eq!(
        rows("").await,
        [
            "free 00", "used 01", "free 02", "used 05", "free 06", "used 09", "free 0A", "used 0C",
            "free 0D"
        ]
    );
    let cases: [(&str, &[&str]); 9] = [
        (
            "sort=mac&order=desc",
            &[
                "free 0D", "used 0C", "free 0A", "used 09", "free 06", "used 05", "free 02",
                "used 01", "free 00",
            ],
        ),
        // legend order: free, leased, held; ties in MAC order
        (
            "sort=state",
            &[
                "free 00", "free 02", "free 06", "free 0A", "free 0D", "used 01", "used 05",
                "used 09", "used 0C",
            ],
        ),
        (
            "sort=state&order=desc",
            &[
                "used 0C", "used 01", "used 05", "used 09", "free 00", "free 02", "free 06",
                "free 0A", "free 0D",
            ],
        ),
        // without regard to case; rows without a name after, in MAC order
        (
            "sort=vm",
            &[
                "used 05", "used 09", "used 01", "free 00", "free 02", "free 06", "free 0A",
                "used 0C", "free 0D",
            ],
        ),
        (
            "sort=vm&order=desc",
            &[
                "used 01", "used 09", "used 05", "free 00", "free 02", "free 06", "free 0A",
                "used 0C", "free 0D",
            ],
        ),
        (
            "sort=host",
            &[
                "used 05", "used 01", "free 00", "free 02", "free 06", "used 09", "free 0A",
                "used 0C", "free 0D",
            ],
        ),
        (
            "sort=host&order=desc",
            &[
                "used 01", "used 05", "free 00", "free 02", "free 06", "used 09", "free 0A",
                "used 0C", "free 0D",
            ],
        ),
        (
            "sort=since",
            &[
                "used 01", "used 05", "used 09", "free 00", "free 02", "free 06", "free 0A",
                "used 0C", "free 0D",
            ],
        ),
        (
            "sort=since&order=desc",
            &[
                "used 09", "used 05", "used 01", "free 00", "free 02", "free 06", "free 0A",
                "used 0C", "free 0D",
            ],
        ),
    ];
    for (q, want) in cases {
        let got = rows(q).await;
        assert_eq!(got, want, "{q}");
        for f in free {
            assert!(got.iter().any(|r| r == f), "{q}: {f} is still there");
        }
    }
    // a filter and a sort: the free rows stay, in MAC order
    assert_eq!(
        rows("host=hv1&sort=vm&order=desc").await,
        [
            "used 05", "free 00", "free 02", "free 06", "free 0A", "free 0D"
        ]
    );
    // a later page of a sorted table starts at a row number
    assert_eq!(rows("sort=state&skip=7").await, ["used 09", "used 0C"]);

    // headers are links (no JavaScript needed); the sorted one says so and links the reverse
    let page = ui
        .get("/pools/p/addresses?vm=a&sort=vm", Some(&b))
        .await
        .body;
    assert!(
        page.contains(
            "<th scope=\"col\" aria-sort=\"ascending\"><a href=\"/pools/p/addresses?state=&amp;host=&amp;vm=a&amp;sort=vm&amp;order=desc\""
        ),
        "{page}"
    );
    assert!(page.contains(
        "<th scope=\"col\"><a href=\"/pools/p/addresses?state=&amp;host=&amp;vm=a&amp;sort=host&amp;order=asc\""
    ));
    // the export follows the page's order
    let csv = ui
        .get(
            "/pools/p/addresses?sort=since&order=desc&format=csv",
            Some(&b),
        )
        .await
        .body;
    let used: Vec<&str> = csv
        .lines()
        .filter(|l| l.starts_with("used,"))
        .map(|l| &l[5..22])
        .collect();
    assert_eq!(
        used,
        [
            "00-15-5D-00-00-09",
            "00-15-5D-00-00-05",
            "00-15-5D-00-00-01",
            "00-15-5D-00-00-0C"
        ]
    );
    for bad in ["sort=nope", "order=up", "sort=vm&skip=x"] {
        let r = ui.get(&format!("/pools/p/addresses?{bad}"), Some(&b)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn search_takes_any_spelling_a_partial_mac_or_a_vm_name() {
    let ui = Ui::new().await;
    ui.api(
        "POST",
        "/api/v1/leases",
        json!({"pool": "p", "vm_id": "6d1c", "vm_name": "Büro-01", "mac": "00155D00007A"}),
    )
    .await;
    let b = ui.sign_in(READER).await.ok().unwrap();
    for q in [
        "00-15-5D-00-00-7A",
        "00:15:5d:00:00:7a",
        "00155D00007A",
        "0015.5d00.007a",
        "5D-00-00-7A",
        "büro",
        "6d1c",
    ] {
        let r = ui
            .get(
                &format!("/search?q={}", form(&[("", q)]).trim_start_matches('=')),
                Some(&b),
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{q}: {}", r.body);
        assert_eq!(r.headers[header::LOCATION], "/mac/00-15-5D-00-00-7A", "{q}");
    }
}

#[tokio::test]
async fn an_uploaded_audit_finds_the_duplicate_and_stores_nothing() {
    let ui = Ui::new().await;
    let b = ui.sign_in(READER).await.ok().unwrap();
    let boundary = "XyZ";
    let body = |csrf: &str| {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"../../etc/list.txt\"\r\n\
             Content-Type: text/plain\r\n\r\n00-15-5D-00-00-01\n00:15:5d:00:00:01\n00-15-5D-00-00-02\n\r\n--{boundary}--\r\n"
        )
    };
    let upload = |csrf: String| {
        Request::builder()
            .method("POST")
            .uri("/audit")
            .header(header::COOKIE, &b.cookie)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body(&csrf)))
            .unwrap()
    };
    let r = ui.send(upload(b.csrf.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains("<strong>1 conflicts</strong>"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("list.txt") && !r.body.contains("../"),
        "the name is shown, never a path"
    );
    assert_eq!(
        ui.send(upload("bad".into())).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(ui.leases().await.is_empty());
}

#[tokio::test]
async fn an_admin_edits_a_pool_after_a_preview_and_a_bad_value_changes_nothing() {
    let ui = Ui::new().await;
    let b = ui.sign_in(ADMIN).await.ok().unwrap();
    let cooldown =
        || async { ui.api("GET", "/api/v1/pools/p", Value::Null).await["cooldown"].clone() };
    let before = cooldown().await;
    let fields = [("csrf", b.csrf.as_str()), ("cooldown", "2h")];
    let preview = ui.post("/pools/p/edit", &b, &fields).await;
    assert!(
        preview.body.contains("set the cooldown to 2h"),
        "{}",
        preview.body
    );
    assert_eq!(cooldown().await, before);
    let bad = ui
        .post(
            "/pools/p/edit",
            &b,
            &[("csrf", &b.csrf), ("cooldown", "soon"), ("confirm", "1")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(cooldown().await, before);
    let done = ui
        .post(
            "/pools/p/edit",
            &b,
            &[("csrf", &b.csrf), ("cooldown", "2h"), ("confirm", "1")],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_ne!(cooldown().await, before);
}

/// Issues 16 and 17: the Hosts page shows the agent's strategy and an estimated cursor; the
/// Conflicts page each claimant's power state and what guard did ("nothing yet"); the MAC page
/// a management OS vNIC.
#[tokio::test]
async fn hosts_conflicts_and_mac_pages_show_what_the_agent_reported() {
    let ui = Ui::new().await;
    ui.api(
        "PUT",
        "/api/v1/hosts/h1/inventory",
        json!({"generation": 1, "strategy": "delegate+guard", "cursor_source": "inventory-bound",
               "range_min": "00155DF00000", "range_max": "00155DF000FF",
               "vms": [{"id": "desk", "name": "Desk", "state": "saved",
                        "adapters": [{"name": "Network Adapter", "mac": "00155DF00010", "dynamic": true}]}],
               "management_adapters": [{"name": "vEthernet (External)", "mac": "00155DF00010", "dynamic": true}]}),
    )
    .await;
    let b = ui.sign_in(READER).await.ok().unwrap();
    let hosts = ui.get("/hosts", Some(&b)).await.body;
    assert!(
        hosts.contains("<td class=\"strategy\">delegate+guard</td>"),
        "{hosts}"
    );
    assert!(hosts.contains(">estimated</span>"), "{hosts}");
    let conflicts = ui.get("/conflicts", Some(&b)).await.body;
    assert!(conflicts.contains("management OS vNIC"), "{conflicts}");
    assert!(
        conflicts.contains("<td class=\"power\">saved</td>"),
        "{conflicts}"
    );
    assert!(
        conflicts.contains("<td class=\"guard\">nothing yet</td>"),
        "{conflicts}"
    );
    let mac = ui.get("/mac/00-15-5D-F0-00-10", Some(&b)).await.body;
    assert!(
        mac.contains("vNIC &#39;vEthernet (External)&#39; of the management OS of h1")
            || mac.contains("vNIC 'vEthernet (External)' of the management OS of h1"),
        "{mac}"
    );
}
