//! The web dashboard in a real headless Chromium, driven over WebDriver (chromedriver), against
//! the real `macpool serve` on a SQLite store filled through the API.
//!
//! One server and one browser serve every check, so the file stays fast. Each check runs to its
//! end and the test fails once, listing every failed check: a page that is missing does not hide
//! what the other pages do. `scripts/screenshots` runs the ignored `screenshots` test, which seeds
//! a larger demo store and writes PNGs of the main pages.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use common::Server;
use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{Value, json};

const POOL: &str = "lab";
/// 240 addresses: the map's first page ends in 16 cells outside the pool.
const RANGE: &str = "00155DF00000-00155DF000EF";
const XSS_SCRIPT: &str = "<script>alert(1)</script>";
const XSS_IMG: &str = "\"'><img src=x onerror=alert(2)>";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Every legend key of a map cell.
const STATES: [&str; 7] = [
    "free",
    "leased",
    "held",
    "cooling",
    "delegated",
    "unmanaged",
    "outside",
];

/// Written straight to stderr: libtest captures `eprintln!` of passing tests, and a skipped
/// part must be seen.
fn notice(msg: &str) {
    let _ = writeln!(std::io::stderr(), "dashboard: NOTICE: {msg}");
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `00155DF0000A` → `00-15-5D-F0-00-0A`.
fn ieee(mac: &str) -> String {
    let hex = bare(mac);
    (0..6)
        .map(|i| &hex[i * 2..i * 2 + 2])
        .collect::<Vec<_>>()
        .join("-")
}

/// Upper-case hex digits only: every spelling of a MAC compares equal.
fn bare(mac: &str) -> String {
    mac.chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_uppercase()
}

/// The MAC `offset` addresses after the pool's first.
fn mac_at(offset: u64) -> String {
    ieee(&format!("{:012X}", 0x00155DF00000u64 + offset))
}

/// `application/x-www-form-urlencoded`, as a browser sends a form.
fn form_body(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// chromedriver's log endpoint: the browser console (errors, CSP reports, failed loads) since the
/// last read. Not in the W3C protocol, so fantoccini has no method for it.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// chromedriver and the headless Chromium it starts, in their own process group so that both
/// go away together, whatever way the test ends.
struct Browser {
    driver: Child,
    web: Client,
}

impl Browser {
    /// `None` (after a notice) when Chromium is not installed and this is not CI.
    async fn start() -> Option<Browser> {
        if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
            let msg = format!(
                "{CHROMIUM} or {CHROMEDRIVER} is missing (scripts/setup installs chromium and \
                 chromium-driver): the browser tests did NOT run"
            );
            assert!(!ci(), "{msg}");
            notice(&msg);
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--window-size=1400,1000", "--disable-extensions",
                         "--no-first-run", "--disable-background-networking"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let guard = Browser {
            driver,
            web: match ClientBuilder::rustls()
                .expect("rustls")
                .capabilities(caps.as_object().unwrap().clone())
                .connect(&format!("http://127.0.0.1:{port}/"))
                .await
            {
                Ok(c) => c,
                Err(e) => panic!("chromedriver session (Chromium {CHROMIUM}): {e}"),
            },
        };
        // a page that never finishes fails its check instead of hanging the suite
        guard
            .web
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(20)),
                Some(Duration::ZERO),
            ))
            .await
            .unwrap();
        Some(guard)
    }

    async fn close(self) {
        let _ = self.web.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = self.driver.id().to_string();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = self.driver.wait();
    }
}

/// axe-core's script, installed by scripts/setup; `None` (after a notice) outside CI.
fn axe_source() -> Option<String> {
    let path = std::env::var_os("MACPOOL_AXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../.cache/npm/node_modules/axe-core/axe.min.js")
        });
    match std::fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) => {
            let msg = format!(
                "{} is missing ({e}; scripts/setup installs axe-core): the accessibility \
                 checks did NOT run",
                path.display()
            );
            assert!(!ci(), "{msg}");
            notice(&msg);
            None
        }
    }
}

/// What the seed put in the store, for the checks to look for.
#[derive(Default)]
struct Seed {
    /// (MAC, vm_id, vm_name, host) of every lease.
    leases: Vec<(String, String, String, String)>,
    web_mac: String,
    xss_script_mac: String,
    xss_img_mac: String,
    cooling_mac: String,
    held_mac: String,
    unmanaged_mac: String,
    block: (String, String),
    admin: String,
    reader: String,
    reader_id: String,
    agent: String,
}

async fn token(s: &Server, name: &str, role: &str, host: Option<&str>) -> (String, String) {
    let t = s
        .api(
            Method::POST,
            "/tokens",
            Some(json!({"name": name, "role": role, "host": host})),
        )
        .await;
    (
        t["token"].as_str().unwrap().to_string(),
        t["id"].as_str().unwrap().to_string(),
    )
}

async fn lease(s: &Server, pool: &str, vm_id: &str, vm_name: &str, host: &str) -> String {
    let r = s
        .api(
            Method::POST,
            "/leases",
            Some(json!({"pool": pool, "vm_id": vm_id, "vm_name": vm_name, "host": host})),
        )
        .await;
    r["allocations"][0]["lease"]["mac"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A block of `size` for `host`, activated, and the host's report that it uses it.
async fn delegate(s: &Server, pool: &str, host: &str, size: u64, generation: u64) -> Value {
    let b = s
        .api(
            Method::POST,
            &format!("/hosts/{host}/blocks"),
            Some(json!({"pool": pool, "size": size})),
        )
        .await;
    s.api(
        Method::POST,
        &format!("/hosts/{host}/blocks/{}/activate", b["id"]),
        None,
    )
    .await;
    s.api(
        Method::PUT,
        &format!("/hosts/{host}/inventory"),
        Some(
            json!({"generation": generation, "range_min": b["first"], "range_max": b["last"],
                    "vms": []}),
        ),
    )
    .await;
    b
}

/// The pool of the checks: every map state on its first page (leases, a hold, a cooling address,
/// a delegated block, an unmanaged MAC, addresses outside the pool) and the XSS names.
async fn seed(s: &Server) -> Seed {
    s.api(
        Method::POST,
        "/pools",
        Some(json!({"name": POOL, "ranges": [RANGE], "order": "lowest", "cooldown": "1h"})),
    )
    .await;
    let mut seed = Seed::default();
    // the block first: it takes the lowest aligned 16, the leases come after it
    let b = delegate(s, POOL, "hv2", 16, 1).await;
    seed.block = (
        b["first"].as_str().unwrap().into(),
        b["last"].as_str().unwrap().into(),
    );
    for i in 1..=10 {
        let (id, name) = (format!("vm-web-{i:02}"), format!("web-{i:02}"));
        let host = if i % 2 == 0 { "hv1" } else { "hv4" };
        let mac = lease(s, POOL, &id, &name, host).await;
        seed.leases.push((mac, id, name, host.into()));
    }
    seed.web_mac = seed.leases[0].0.clone();
    for (id, name) in [("vm-xss-1", XSS_SCRIPT), ("vm-xss-2", XSS_IMG)] {
        let mac = lease(s, POOL, id, name, "hv1").await;
        seed.leases
            .push((mac, id.into(), name.into(), "hv1".into()));
    }
    seed.xss_script_mac = seed.leases[10].0.clone();
    seed.xss_img_mac = seed.leases[11].0.clone();
    seed.cooling_mac = lease(s, POOL, "vm-gone", "gone-01", "hv1").await;
    s.api(
        Method::POST,
        "/leases/release",
        Some(json!({"mac": seed.cooling_mac})),
    )
    .await;
    seed.held_mac = mac_at(0x80);
    s.api(
        Method::POST,
        "/holds",
        Some(
            json!({"mac": seed.held_mac, "vm_id": "vm-tmpl", "reason": "template",
                    "ref": "gold-image"}),
        ),
    )
    .await;
    seed.unmanaged_mac = mac_at(0x90);
    s.api(
        Method::PUT,
        "/hosts/hv3/inventory",
        Some(
            json!({"generation": 1, "vms": [{"id": "vm-rogue", "name": "rogue-vm",
            "state": "running",
            "adapters": [{"name": "Network Adapter", "mac": seed.unmanaged_mac}]}]}),
        ),
    )
    .await;
    (seed.admin, _) = token(s, "ui-admin", "admin", None).await;
    (seed.reader, seed.reader_id) = token(s, "ui-reader", "reader", None).await;
    (seed.agent, _) = token(s, "ui-agent", "agent", Some("hv1")).await;
    seed
}

/// The server, the browser and what the store holds.
struct Ctx {
    s: Server,
    web: Client,
    seed: Seed,
    axe: Option<String>,
    /// No redirects followed: the checks look at the status and `Location` themselves.
    http: reqwest::Client,
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.s.url)
    }

    async fn js(&self, script: &str) -> Result<Value> {
        Ok(self.web.execute(script, vec![]).await?)
    }

    async fn path(&self) -> Result<String> {
        let u = self.web.current_url().await?;
        Ok(match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        })
    }

    async fn text(&self) -> Result<String> {
        Ok(self
            .js("return document.body ? document.body.innerText : ''")
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Severe browser-console entries since the last call.
    async fn console_errors(&self) -> Result<Vec<String>> {
        let log = self.web.issue_cmd(BrowserLog).await?;
        Ok(log
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect())
    }

    /// Clicks `el` and waits until the page it leads to has loaded.
    async fn click_and_wait(&self, el: Element) -> Result<()> {
        self.js("window.__mpOld = true; return null").await?;
        el.click().await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let state = self
                .js("return window.__mpOld === true ? 'old' : document.readyState")
                .await
                .ok();
            if state.as_ref().and_then(Value::as_str) == Some("complete") {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "no new page after the click");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn find(&self, css: &str) -> Result<Element> {
        let path = self.path().await.unwrap_or_default();
        self.web
            .find(Locator::Css(css))
            .await
            .map_err(|_| anyhow!("{path}: no `{css}`"))
    }

    async fn count(&self, css: &str) -> Result<usize> {
        Ok(self.web.find_all(Locator::Css(css)).await?.len())
    }

    /// Signs in through the form; `Ok(false)` when the server stayed on the sign-in page.
    async fn sign_in(&self, token: &str) -> Result<bool> {
        self.web.delete_all_cookies().await?;
        self.web.goto(&self.url("/login")).await?;
        let input = self
            .find("form[method=post][action='/login'] input[name=token]#token[type=password]")
            .await?;
        input.send_keys(token).await?;
        let button = self
            .find("form[action='/login'] button, form[action='/login'] input[type=submit]")
            .await?;
        self.click_and_wait(button).await?;
        Ok(!self.path().await?.starts_with("/login"))
    }

    async fn session_cookie(&self) -> Result<String> {
        let c = self
            .web
            .get_named_cookie("macpool_session")
            .await
            .context("no macpool_session cookie")?;
        Ok(c.value().to_string())
    }

    /// The csrf token the current page carries in its forms.
    async fn csrf(&self) -> Result<String> {
        let v = self
            .js("const e = document.querySelector('input[name=csrf]'); return e ? e.value : ''")
            .await?;
        let v = v.as_str().unwrap_or_default().to_string();
        ensure!(!v.is_empty(), "no csrf input on {}", self.path().await?);
        Ok(v)
    }

    /// A POST made by hand (not by the browser), as a script or a forged page would.
    async fn post(&self, path: &str, cookie: Option<&str>, pairs: &[(&str, &str)]) -> Result<u16> {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", &self.s.url)
            .body(form_body(pairs));
        if let Some(c) = cookie {
            req = req.header("cookie", format!("macpool_session={c}"));
        }
        Ok(req.send().await?.status().as_u16())
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Result<reqwest::Response> {
        let mut req = self.http.get(self.url(path));
        if let Some(c) = cookie {
            req = req.header("cookie", format!("macpool_session={c}"));
        }
        Ok(req.send().await?)
    }

    async fn leases_of(&self, vm: &str) -> usize {
        self.s
            .api(Method::GET, &format!("/leases?vm={vm}"), None)
            .await
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Loads `path` and returns what is wrong with it as a page: its status, console errors,
    /// failed requests, the search form, csrf fields, and axe-core's serious/critical findings.
    async fn page_problems(&self, path: &str, signed_in: bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.console_errors().await?;
        self.web.goto(&self.url(path)).await?;
        let landed = self.path().await?;
        if landed != path {
            out.push(format!("landed on {landed}"));
        }
        let status = self
            .js("const n = performance.getEntriesByType('navigation')[0]; \
                 return n ? n.responseStatus : 0")
            .await?;
        if status.as_u64() != Some(200) {
            out.push(format!("status {status}"));
        }
        let failed = self
            .js("return performance.getEntriesByType('resource')\
                 .filter(r => r.responseStatus >= 400 || r.responseStatus === 0 && r.transferSize === 0 && r.decodedBodySize === 0)\
                 .map(r => r.name + ' ' + r.responseStatus)")
            .await?;
        for f in failed.as_array().into_iter().flatten() {
            out.push(format!("failed request {f}"));
        }
        if signed_in {
            let search = "form[role=search][action='/search'] input[name=q]";
            if self.count(search).await? == 0 {
                out.push(format!("no `{search}`"));
            }
            let bare = self
                .js(
                    "return [...document.forms].filter(f => f.method === 'post' && \
                     !(f.querySelector('input[type=hidden][name=csrf]') || {}).value)\
                     .map(f => f.getAttribute('action'))",
                )
                .await?;
            for f in bare.as_array().into_iter().flatten() {
                out.push(format!("POST form {f} without a csrf value"));
            }
        }
        if let Some(axe) = &self.axe {
            for v in self.axe_violations(axe).await? {
                out.push(format!("axe: {v}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for e in self.console_errors().await? {
            out.push(format!("console: {e}"));
        }
        Ok(out)
    }

    async fn axe_violations(&self, axe: &str) -> Result<Vec<String>> {
        self.web
            .execute(&format!("{axe}\n;return typeof axe"), vec![])
            .await
            .context("inject axe-core")?;
        let r = self
            .web
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']})
                   .then(r => done(r.violations
                       .filter(v => v.impact === 'serious' || v.impact === 'critical')
                       .map(v => v.impact + ' ' + v.id + ': ' + v.help + ' at ' +
                            v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | '))))
                   .catch(e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await?;
        Ok(r.as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect())
    }
}

/// Runs named checks, each to its end, and remembers which failed.
#[derive(Default)]
struct Report {
    passed: Vec<String>,
    failed: Vec<(String, String)>,
}

impl Report {
    async fn run<F: std::future::Future<Output = Result<()>>>(&mut self, name: &str, f: F) {
        let started = Instant::now();
        let r = match tokio::time::timeout(Duration::from_secs(90), f).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("timed out")),
        };
        let took = started.elapsed().as_millis();
        match r {
            Ok(()) => self.passed.push(format!("{name} ({took} ms)")),
            Err(e) => self.failed.push((name.to_string(), format!("{e:#}"))),
        }
    }

    fn finish(self) {
        let mut msg = String::new();
        for p in &self.passed {
            msg.push_str(&format!("  ok    {p}\n"));
        }
        for (name, e) in &self.failed {
            msg.push_str(&format!("  FAIL  {name}: {e}\n"));
        }
        if self.failed.is_empty() {
            let _ = write!(std::io::stderr(), "dashboard checks:\n{msg}");
        }
        assert!(
            self.failed.is_empty(),
            "{} of {} dashboard checks failed:\n{msg}",
            self.failed.len(),
            self.failed.len() + self.passed.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let seed = seed(&s).await;
    let ctx = Ctx {
        s,
        web: browser.web.clone(),
        seed,
        axe: axe_source(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    };
    let c = &ctx;
    let mut r = Report::default();

    r.run(
        "harness: the console reader and axe-core catch a planted fault",
        harness(c),
    )
    .await;
    r.run("signed out: every page redirects to /login", signed_out(c))
        .await;
    r.run("security headers: CSP", csp(c)).await;
    r.run("page /login", async {
        let p = c.page_problems("/login", false).await?;
        ensure!(p.is_empty(), "{}", p.join("; "));
        Ok(())
    })
    .await;
    r.run("sign-in: an agent token is refused", async {
        ensure!(
            !c.sign_in(&c.seed.agent).await?,
            "the agent token signed in"
        );
        ensure!(
            c.web.get_named_cookie("macpool_session").await.is_err(),
            "a session cookie was set for an agent token"
        );
        Ok(())
    })
    .await;
    r.run("sign-in: an admin token lands on /pools", sign_in_admin(c))
        .await;
    let mac_page = format!("/mac/{}", c.seed.cooling_mac);
    let pages = [
        "/pools".to_string(),
        format!("/pools/{POOL}/map"),
        format!("/pools/{POOL}/map?zoom=1"),
        format!("/pools/{POOL}/map?zoom=2"),
        format!("/pools/{POOL}/addresses"),
        format!("/pools/{POOL}/free"),
        "/conflicts".into(),
        "/hosts".into(),
        mac_page.clone(),
        format!("/mac/{}", c.seed.unmanaged_mac),
        "/history".into(),
        "/tokens".into(),
        "/audit".into(),
        "/search?q=web".into(),
    ];
    for p in &pages {
        r.run(
            &format!("page {p}: loads clean, search form, csrf, axe"),
            async {
                let problems = c.page_problems(p, true).await?;
                ensure!(problems.is_empty(), "{}", problems.join("; "));
                Ok(())
            },
        )
        .await;
    }
    r.run(
        "map: every cell's state and the legend equal the store",
        map(c),
    )
    .await;
    r.run("map: one colour per state", map_colours(c)).await;
    r.run("pools: a row per pool with its free count", pools(c))
        .await;
    r.run("addresses: filters and CSV/JSON exports", addresses(c))
        .await;
    r.run(
        "conflicts, hosts, MAC pages, tokens show the store",
        contents(c),
    )
    .await;
    r.run(
        "map: a click on a cell shows its holder in the side panel",
        map_panel(c),
    )
    .await;
    r.run(
        "conflicts: the open page's title counts a conflict pushed through the API",
        conflicts_live(c),
    )
    .await;
    r.run(
        "audit: an uploaded Hyper-V export shows its findings",
        audit_upload(c),
    )
    .await;
    r.run("search: every MAC spelling, VM name, id, host", search(c))
        .await;
    r.run("XSS names render as text", xss(c)).await;
    r.run(
        "admin allocates in the browser: preview, confirm, history",
        allocate(c),
    )
    .await;
    r.run("a POST without a valid csrf is refused", no_csrf(c))
        .await;
    r.run(
        "reader: no action buttons; a hand-made POST is refused",
        reader(c),
    )
    .await;
    r.run("a revoked token's session ends", revoked(c)).await;
    r.run("sign-out ends the session", sign_out(c)).await;

    drop(ctx);
    browser.close().await;
    r.finish();
}

/// No cookie: pages lead to the sign-in page (through any redirects), they do not render.
async fn signed_out(c: &Ctx) -> Result<()> {
    let mut bad = Vec::new();
    for p in ["/", "/pools", "/conflicts", "/history", "/tokens"] {
        let res = c.s.client().get(c.url(p)).send().await?;
        if !res.url().path().starts_with("/login") {
            bad.push(format!("{p}: {} at {}", res.status(), res.url().path()));
        }
    }
    ensure!(bad.is_empty(), "{}", bad.join("; "));
    Ok(())
}

/// The harness itself: axe-core and the console reader find what a broken page has, so that
/// their silence on the dashboard means something.
async fn harness(c: &Ctx) -> Result<()> {
    c.console_errors().await?;
    c.web
        .goto("data:text/html,<html><body><img src=data:image/png,x><script>console.error('planted')</script>")
        .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let errors = c.console_errors().await?;
    ensure!(
        errors.iter().any(|e| e.contains("planted")),
        "the console reader missed a planted error: {errors:?}"
    );
    if let Some(axe) = &c.axe {
        let v = c.axe_violations(axe).await?;
        ensure!(
            v.iter().any(|v| v.contains("image-alt")),
            "axe-core missed an image without alt: {v:?}"
        );
    }
    Ok(())
}

async fn csp(c: &Ctx) -> Result<()> {
    let res = c.get("/login", None).await?;
    let csp = res
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .context("/login has no Content-Security-Policy")?
        .to_string();
    ensure!(
        csp.contains("frame-ancestors 'none'"),
        "no frame-ancestors 'none': {csp}"
    );
    let script = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .or_else(|| {
            csp.split(';')
                .map(str::trim)
                .find(|d| d.starts_with("default-src"))
        })
        .with_context(|| format!("no script-src or default-src: {csp}"))?;
    ensure!(
        !script.contains("unsafe-inline") && !script.contains("unsafe-eval"),
        "scripts may run inline: {csp}"
    );
    Ok(())
}

async fn sign_in_admin(c: &Ctx) -> Result<()> {
    c.web.goto(&c.url("/login")).await?;
    ensure!(
        c.count("form[action='/login'] input[type=hidden][name=csrf]")
            .await?
            == 1,
        "/login: no hidden csrf input in the form"
    );
    ensure!(
        c.sign_in(&c.seed.admin).await?,
        "the admin token was refused"
    );
    let path = c.path().await?;
    ensure!(path == "/pools", "landed on {path}, not /pools");
    let cookie = c
        .web
        .get_named_cookie("macpool_session")
        .await
        .context("no macpool_session cookie")?;
    ensure!(
        cookie.http_only() == Some(true),
        "macpool_session is not HttpOnly"
    );
    ensure!(
        format!("{:?}", cookie.same_site()) == "Some(Strict)",
        "macpool_session is not SameSite=Strict: {:?}",
        cookie.same_site()
    );
    ensure!(
        !cookie.value().contains(&c.seed.admin),
        "the cookie holds the token itself"
    );
    Ok(())
}

/// What a map cell should be, from the API: the store's word for the MAC, its blocks, the hosts'
/// sightings and the conflicts.
async fn expected_cells(c: &Ctx, first: u64) -> Result<Vec<(String, String, bool)>> {
    let blocks = c.s.api(Method::GET, "/blocks", None).await;
    let in_block = |mac: &str| {
        let m = u64::from_str_radix(&bare(mac), 16).unwrap();
        blocks.as_array().into_iter().flatten().any(|b| {
            let lo = u64::from_str_radix(&bare(b["first"].as_str().unwrap()), 16).unwrap();
            let hi = u64::from_str_radix(&bare(b["last"].as_str().unwrap()), 16).unwrap();
            (lo..=hi).contains(&m)
        })
    };
    let conflicts: BTreeSet<String> =
        c.s.api(Method::GET, "/conflicts", None)
            .await
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["mac"].as_str().map(bare))
            .collect();
    let mut out = Vec::new();
    for i in 0..256 {
        let mac = mac_at(first + i);
        let info = c.s.api(Method::GET, &format!("/macs/{mac}"), None).await;
        let api = info["state"].as_str().unwrap_or_default();
        let state = if info["pool"].is_null() {
            "outside"
        } else if in_block(&mac) {
            "delegated"
        } else if api != "free" {
            api
        } else if info["seen"].as_array().is_some_and(|s| !s.is_empty()) {
            "unmanaged"
        } else {
            "free"
        };
        out.push((
            bare(&mac),
            state.to_string(),
            conflicts.contains(&bare(&mac)),
        ));
    }
    Ok(out)
}

async fn map(c: &Ctx) -> Result<()> {
    let want = expected_cells(c, 0).await?;
    // the oracle itself must cover every state, or the check would prove little
    let want_counts = want.iter().fold(BTreeMap::new(), |mut m, (_, s, _)| {
        *m.entry(s.as_str()).or_insert(0u64) += 1;
        m
    });
    for s in STATES {
        ensure!(
            want_counts.contains_key(s),
            "seed: no {s} address on the first page ({want_counts:?})"
        );
    }
    ensure!(want.iter().any(|w| w.2), "seed: no conflict on the page");

    c.web
        .goto(&c.url(&format!("/pools/{POOL}/map?at={}&zoom=0", mac_at(0))))
        .await?;
    let got = c
        .js("return [...document.querySelectorAll('a.cell')].map(a => \
             [a.dataset.mac || '', a.dataset.state || '', a.dataset.conflict === '1', \
              a.classList.contains('s-' + a.dataset.state)])")
        .await?;
    let got = got.as_array().cloned().unwrap_or_default();
    ensure!(
        got.len() == 256,
        "{} `a.cell` on the first page, not 256",
        got.len()
    );
    let mut bad = Vec::new();
    for (g, (mac, state, conflict)) in got.iter().zip(&want) {
        let gmac = bare(g[0].as_str().unwrap_or_default());
        let gstate = g[1].as_str().unwrap_or_default();
        let gconf = g[2].as_bool().unwrap_or_default();
        if gmac != *mac || gstate != state || gconf != *conflict || g[3] != true {
            bad.push(format!(
                "cell {} is {gstate}{} (class s-{gstate}: {}), store says {} {state}{}",
                g[0],
                if gconf { " conflict" } else { "" },
                g[3],
                ieee(mac),
                if *conflict { " conflict" } else { "" },
            ));
        }
    }
    let legend = c
        .js(
            "return [...document.querySelectorAll('li[data-legend]')].map(l => \
             [l.dataset.legend, (l.querySelector('.count') || {}).textContent || ''])",
        )
        .await?;
    let legend: BTreeMap<String, String> = legend
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l[0].as_str().unwrap_or_default().to_string(),
                l[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for s in STATES {
        let want = want_counts.get(s).copied().unwrap_or(0);
        match legend.get(s) {
            None if want == 0 || s == "outside" => {}
            None => bad.push(format!("no legend entry for {s} ({want} cells)")),
            Some(text) => {
                let n: String = text.chars().filter(char::is_ascii_digit).collect();
                if n.parse::<u64>().ok() != Some(want) {
                    bad.push(format!("legend {s} says {text:?}, the page has {want}"));
                }
            }
        }
    }
    ensure!(
        bad.is_empty(),
        "{} problems: {}",
        bad.len(),
        bad.iter().take(12).cloned().collect::<Vec<_>>().join("; ")
    );
    Ok(())
}

/// The colour is the state: cells of one state share a colour, different states differ.
async fn map_colours(c: &Ctx) -> Result<()> {
    c.web.goto(&c.url(&format!("/pools/{POOL}/map"))).await?;
    let got = c
        .js(
            "return [...document.querySelectorAll('a.cell:not([data-conflict=\"1\"])')].map(a => \
             [a.dataset.state, getComputedStyle(a).backgroundColor])",
        )
        .await?;
    let mut by_state: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for g in got.as_array().into_iter().flatten() {
        *by_state
            .entry(g[0].as_str().unwrap_or_default().into())
            .or_default()
            .entry(g[1].as_str().unwrap_or_default().into())
            .or_default() += 1;
    }
    ensure!(by_state.len() >= 6, "cells of only {:?}", by_state.keys());
    let mut colour_of = BTreeMap::new();
    for (state, colours) in &by_state {
        ensure!(
            colours.len() == 1,
            "{state} cells have several colours: {colours:?}"
        );
        let colour = colours.keys().next().unwrap().clone();
        if let Some(other) = colour_of.insert(colour.clone(), state.clone()) {
            bail!("{state} and {other} cells are both {colour}");
        }
    }
    Ok(())
}

async fn pools(c: &Ctx) -> Result<()> {
    let info = c.s.api(Method::GET, &format!("/pools/{POOL}"), None).await;
    c.web.goto(&c.url("/pools")).await?;
    let row = c.find(&format!("tr[data-pool='{POOL}']")).await?;
    let text = row.text().await?;
    let free = info["free"].to_string();
    ensure!(
        text.contains(&free),
        "row {text:?} does not show {free} free"
    );
    ensure!(c.count("tr[data-pool]").await? == 1, "not one row per pool");
    Ok(())
}

async fn addresses(c: &Ctx) -> Result<()> {
    let leased: Vec<&str> = c.seed.leases.iter().map(|l| l.0.as_str()).collect();
    let used_rows = |q: String| async move {
        c.web
            .goto(&c.url(&format!("/pools/{POOL}/addresses{q}")))
            .await?;
        let rows = c
            .js(
                "return [...document.querySelectorAll('tr[data-row]')].map(r => \
                 [r.dataset.row, r.innerText])",
            )
            .await?;
        Ok::<_, anyhow::Error>(rows.as_array().cloned().unwrap_or_default())
    };
    let all = used_rows(String::new()).await?;
    let kinds: BTreeSet<&str> = all.iter().filter_map(|r| r[0].as_str()).collect();
    ensure!(
        kinds == BTreeSet::from(["used", "free", "block"]),
        "row kinds {kinds:?}, want used, free and block"
    );
    let text: String = all
        .iter()
        .filter_map(|r| r[1].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for m in leased
        .iter()
        .chain([&c.seed.held_mac.as_str(), &c.seed.cooling_mac.as_str()])
    {
        ensure!(text.contains(*m), "no row shows {m}");
    }
    let leased_rows = used_rows("?state=leased".into()).await?;
    let n = leased_rows.iter().filter(|r| r[0] == "used").count();
    ensure!(
        n == leased.len(),
        "state=leased: {n} used rows, {} leases",
        leased.len()
    );
    ensure!(
        leased_rows.iter().any(|r| r[0] == "free"),
        "state=leased: the free rows vanished"
    );
    let hv1 = c.seed.leases.iter().filter(|l| l.3 == "hv1").count();
    let n = used_rows("?host=hv1".into())
        .await?
        .iter()
        .filter(|r| r[0] == "used")
        .count();
    ensure!(n == hv1, "host=hv1: {n} used rows, {hv1} leases");
    let n = used_rows("?vm=web-01".into())
        .await?
        .iter()
        .filter(|r| r[0] == "used")
        .count();
    ensure!(n == 1, "vm=web-01: {n} used rows");

    let cookie = c.session_cookie().await?;
    for format in ["csv", "json"] {
        let res = c
            .get(
                &format!("/pools/{POOL}/addresses?state=leased&format={format}"),
                Some(&cookie),
            )
            .await?;
        let status = res.status();
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = res.text().await?;
        ensure!(status == 200, "{format} export: {status}");
        ensure!(ct.contains(format), "{format} export: content-type {ct}");
        if format == "json" {
            serde_json::from_str::<Value>(&body).context("json export does not parse")?;
        }
        for m in &leased {
            let spellings = [m.to_string(), m.replace('-', ":"), bare(m)];
            ensure!(
                spellings
                    .iter()
                    .any(|s| body.to_ascii_uppercase().contains(&s.to_ascii_uppercase())),
                "{format} export lacks {m}"
            );
        }
    }
    Ok(())
}

async fn contents(c: &Ctx) -> Result<()> {
    let mut bad = Vec::new();
    let conflicts = c.s.api(Method::GET, "/conflicts", None).await;
    let n = conflicts.as_array().map_or(0, Vec::len);
    c.web.goto(&c.url("/conflicts")).await?;
    if !c.text().await?.contains(&c.seed.unmanaged_mac) {
        bad.push(format!("/conflicts does not show {}", c.seed.unmanaged_mac));
    }
    let title = c.web.title().await?;
    if !title.contains(&n.to_string()) {
        bad.push(format!("/conflicts title {title:?} lacks the count {n}"));
    }
    c.web.goto(&c.url("/hosts")).await?;
    let text = c.text().await?;
    for want in ["hv2", "hv3", &c.seed.block.0] {
        if !text.contains(want) {
            bad.push(format!("/hosts does not show {want}"));
        }
    }
    for mac in [&c.seed.cooling_mac, &c.seed.web_mac] {
        let hist =
            c.s.api(Method::GET, &format!("/history?mac={mac}"), None)
                .await;
        c.web.goto(&c.url(&format!("/mac/{mac}"))).await?;
        let text = c.text().await?.to_lowercase();
        for h in hist.as_array().into_iter().flatten() {
            let action = h["action"].as_str().unwrap_or_default().to_lowercase();
            if !text.contains(&action) {
                bad.push(format!("/mac/{mac} lacks history row {} {action}", h["id"]));
            }
        }
    }
    c.web
        .goto(&c.url(&format!("/mac/{}", c.seed.unmanaged_mac)))
        .await?;
    let text = c.text().await?;
    if !(text.contains("hv3") && text.contains("rogue-vm")) {
        bad.push("the unmanaged MAC's page lacks its sighting (hv3, rogue-vm)".into());
    }
    c.web.goto(&c.url("/tokens")).await?;
    let text = c.text().await?;
    for name in ["ui-admin", "ui-reader", "ui-agent"] {
        if !text.contains(name) {
            bad.push(format!("/tokens lacks {name}"));
        }
    }
    let source = c.web.source().await?;
    for secret in [&c.seed.admin, &c.seed.reader, &c.seed.agent] {
        let tail = secret.rsplit('_').next().unwrap_or(secret);
        if source.contains(tail) {
            bad.push("/tokens shows a token's secret".into());
        }
    }
    c.web.goto(&c.url("/audit")).await?;
    if c.count("form[method=post][enctype='multipart/form-data'] input[type=file]")
        .await?
        == 0
    {
        bad.push("/audit has no multipart upload form".into());
    }
    ensure!(bad.is_empty(), "{}", bad.join("; "));
    Ok(())
}

/// A click on a map cell fills the side panel with its holder, without leaving the map.
async fn map_panel(c: &Ctx) -> Result<()> {
    let (mac, _, name, _) = &c.seed.leases[0];
    let map = format!("/pools/{POOL}/map");
    c.web.goto(&c.url(&map)).await?;
    c.find(&format!(".grid a.cell[data-mac='{mac}']"))
        .await?
        .click()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let panel = c
            .js("const p = document.getElementById('panel'); return p ? p.innerText : ''")
            .await?;
        let panel = panel.as_str().unwrap_or_default();
        if panel.contains(name.as_str()) && panel.contains(mac.as_str()) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the panel shows {panel:?}, not {mac} of {name}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = c.path().await?;
    ensure!(path == map, "the click left the map for {path}");
    Ok(())
}

/// The open Conflicts page notices a conflict pushed through the API: its title counts it.
async fn conflicts_live(c: &Ctx) -> Result<()> {
    let n = |v: Value| v.as_array().map_or(0, Vec::len);
    let before = n(c.s.api(Method::GET, "/conflicts", None).await);
    c.web.goto(&c.url("/conflicts")).await?;
    let title = c.web.title().await?;
    ensure!(
        title.starts_with(&format!("({before}) ")),
        "title {title:?} before"
    );
    // a VM on a new host uses a free pool address without a lease: unmanaged
    let inventory = |generation: u64, vms: Value| {
        c.s.api(
            Method::PUT,
            "/hosts/hv6/inventory",
            Some(json!({"generation": generation, "vms": vms})),
        )
    };
    inventory(
        1,
        json!([{"id": "vm-stray", "name": "stray-vm", "state": "running",
                "adapters": [{"name": "Network Adapter", "mac": mac_at(0xA0)}]}]),
    )
    .await;
    let after = n(c.s.api(Method::GET, "/conflicts", None).await);
    // a reload would forget this
    c.js("window.macpoolNotReloaded = true; return null")
        .await?;
    let result = async {
        ensure!(after == before + 1, "{before} conflicts, then {after}");
        // the page polls every 10 s
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let title = c.web.title().await?;
            if title.starts_with(&format!("({after}) ")) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the title still says {title:?} 30 s after conflict {after} appeared"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        ensure!(
            c.path().await? == "/conflicts",
            "the refresh left /conflicts"
        );
        ensure!(
            c.js("return window.macpoolNotReloaded === true").await? == json!(true),
            "the page reloaded to refresh"
        );
        let text = c.text().await?;
        ensure!(
            text.contains(&mac_at(0xA0)),
            "the refreshed page does not show the new conflict"
        );
        Ok(())
    }
    .await;
    // the later checks see the seeded store again
    inventory(2, json!([])).await;
    result
}

/// A Hyper-V export uploaded on the audit page comes back as its findings.
async fn audit_upload(c: &Ctx) -> Result<()> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../macpool-audit/tests/data/hyperv/export-cluster-CL1.json")
        .canonicalize()?;
    c.web.goto(&c.url("/audit")).await?;
    c.find("form[action='/audit'] input[type=file]#files")
        .await?
        .send_keys(&file.display().to_string())
        .await?;
    let button = c.find("form[action='/audit'] button[type=submit]").await?;
    c.click_and_wait(button).await?;
    let text = c.text().await?;
    ensure!(
        text.contains("export-cluster-CL1.json") && text.contains("2 conflicts"),
        "the report does not show the file and its 2 conflicts: {text}"
    );
    let classes = c
        .js("return [...document.querySelectorAll('article.conflict')].map(a => a.dataset.class)")
        .await?;
    ensure!(
        classes == json!(["invalid", "range-overlap"])
            || classes == json!(["range-overlap", "invalid"]),
        "findings {classes}, want invalid and range-overlap"
    );
    ensure!(
        text.contains("HV3") && text.contains("HV4"),
        "the overlap does not name HV3 and HV4"
    );
    Ok(())
}

async fn search(c: &Ctx) -> Result<()> {
    let (mac, vm_id, vm_name, host) = c.seed.leases[0].clone();
    let b = bare(&mac);
    let lower = b.to_ascii_lowercase();
    let unix = ieee(&mac).replace('-', ":").to_ascii_lowercase();
    let cisco = format!("{}.{}.{}", &lower[0..4], &lower[4..8], &lower[8..12]);
    let partial = unix[9..].to_string(); // the last three octets, "f0:00:10"
    let mut bad = Vec::new();
    for q in [
        ieee(&mac),
        unix,
        b.clone(),
        cisco,
        partial,
        vm_name.clone(),
        vm_id,
    ] {
        match search_once(c, &q).await {
            Ok(found) if found.contains(&bare(&mac)) => {}
            Ok(found) => bad.push(format!("{q:?} found {found:?}, not {mac}")),
            Err(e) => bad.push(format!("{q:?}: {e:#}")),
        }
    }
    // a host matches several MACs: a list with links to them
    let want: BTreeSet<String> = c
        .seed
        .leases
        .iter()
        .filter(|l| l.3 == host)
        .map(|l| bare(&l.0))
        .collect();
    match search_once(c, &host).await {
        Ok(found) if want.is_subset(&found) => {}
        Ok(found) => bad.push(format!("{host:?} found {found:?}, want {want:?}")),
        Err(e) => bad.push(format!("{host:?}: {e:#}")),
    }
    ensure!(bad.is_empty(), "{}", bad.join("; "));
    Ok(())
}

/// Types `q` into the page's search box and presses Enter; returns the MAC whose page it lands
/// on, or the MACs the result list links to.
async fn search_once(c: &Ctx, q: &str) -> Result<BTreeSet<String>> {
    c.web.goto(&c.url("/pools")).await?;
    let input = c.find("form[role=search] input[name=q]").await?;
    input.send_keys(q).await?;
    c.js("window.__mpOld = true; return null").await?;
    let enter = char::from(fantoccini::key::Key::Enter).to_string();
    input.send_keys(&enter).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = c
            .js("return window.__mpOld === true ? 'old' : document.readyState")
            .await
            .ok();
        if v.as_ref().and_then(Value::as_str) == Some("complete") {
            break;
        }
        ensure!(Instant::now() < deadline, "no page after the search");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = c.path().await?;
    if let Some(m) = path.strip_prefix("/mac/") {
        return Ok(BTreeSet::from([bare(m)]));
    }
    let links = c
        .js(
            "return [...document.querySelectorAll('main a[href^=\"/mac/\"], a[href^=\"/mac/\"]')]\
             .map(a => a.getAttribute('href').slice(5))",
        )
        .await?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            l.as_str()
                .map(|s| bare(s.split(['/', '?']).next().unwrap_or(s)))
        })
        .collect())
}

async fn xss(c: &Ctx) -> Result<()> {
    let mut bad = Vec::new();
    let pages = [
        (
            format!("/pools/{POOL}/addresses"),
            vec![XSS_SCRIPT, XSS_IMG],
        ),
        (format!("/mac/{}", c.seed.xss_script_mac), vec![XSS_SCRIPT]),
        (format!("/mac/{}", c.seed.xss_img_mac), vec![XSS_IMG]),
        ("/history".into(), vec![XSS_SCRIPT, XSS_IMG]),
        ("/search?q=alert".into(), vec![]),
    ];
    for (page, names) in pages {
        c.web.goto(&c.url(&page)).await?;
        if let Ok(text) = c.web.get_alert_text().await {
            bad.push(format!("{page}: an alert opened: {text:?}"));
            let _ = c.web.dismiss_alert().await;
            continue;
        }
        let injected = c
            .js(
                "return [...document.querySelectorAll('script')].filter(s => \
                 s.textContent.includes('alert(')).length + \
                 document.querySelectorAll('img[src=\"x\"], [onerror]').length",
            )
            .await?;
        if injected != 0 {
            bad.push(format!("{page}: {injected} injected elements in the DOM"));
        }
        let text = c.text().await?;
        for n in names {
            if !text.contains(n) {
                bad.push(format!("{page}: the name {n:?} is not shown as text"));
            }
        }
    }
    ensure!(bad.is_empty(), "{}", bad.join("; "));
    Ok(())
}

/// An admin allocates two consecutive MACs on the free-runs page: nothing changes at the
/// preview, the store has them after Confirm, and the history names the admin token.
async fn allocate(c: &Ctx) -> Result<()> {
    ensure!(c.sign_in(&c.seed.admin).await?, "admin sign-in failed");
    c.web.goto(&c.url(&format!("/pools/{POOL}/free"))).await?;
    let action = format!("/pools/{POOL}/allocate");
    let form_css = format!("form[method=post][action='{action}']:has(input[name=count])");
    let form = c.find(&form_css).await?;
    for (name, value) in [("vm_id", "vm-ui-1"), ("vm_name", "ui-vm"), ("count", "2")] {
        let input = form
            .find(Locator::Css(&format!("input[name={name}]")))
            .await
            .map_err(|_| anyhow!("{action} form has no input {name}"))?;
        input.clear().await?;
        input.send_keys(value).await?;
    }
    let submit = form
        .find(Locator::Css(
            "button[type=submit], button:not([type]), input[type=submit]",
        ))
        .await
        .map_err(|_| anyhow!("{action} form has no submit button"))?;
    c.click_and_wait(submit).await?;
    let confirm = c.find("button[name=confirm][value='1']").await?;
    ensure!(
        c.leases_of("vm-ui-1").await == 0,
        "the preview already allocated"
    );
    c.click_and_wait(confirm).await?;
    let leases = c.s.api(Method::GET, "/leases?vm=vm-ui-1", None).await;
    let macs: Vec<String> = leases
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["mac"].as_str().map(str::to_string))
        .collect();
    ensure!(
        macs.len() == 2,
        "the store has {} leases for vm-ui-1",
        macs.len()
    );
    let hist = c.s.api(Method::GET, "/history?vm=vm-ui-1", None).await;
    ensure!(
        hist.as_array()
            .into_iter()
            .flatten()
            .all(|h| h["actor"].as_str().unwrap_or_default().contains("ui-admin")),
        "the API's history names another actor: {hist}"
    );
    c.web.goto(&c.url("/history")).await?;
    let rows = c
        .js("return [...document.querySelectorAll('tr')].map(r => r.innerText)")
        .await?;
    let shown = rows.as_array().into_iter().flatten().any(|r| {
        let r = r.as_str().unwrap_or_default();
        r.contains("ui-admin") && (r.contains("vm-ui-1") || macs.iter().any(|m| r.contains(m)))
    });
    ensure!(shown, "/history has no row of ui-admin allocating vm-ui-1");
    Ok(())
}

/// The admin's own session, but the csrf field missing or wrong: refused, nothing changes. A
/// correct one is accepted (the preview), so the refusals are about the csrf token.
async fn no_csrf(c: &Ctx) -> Result<()> {
    ensure!(c.sign_in(&c.seed.admin).await?, "admin sign-in failed");
    c.web.goto(&c.url(&format!("/pools/{POOL}/free"))).await?;
    let cookie = c.session_cookie().await?;
    let csrf = c.csrf().await?;
    let path = format!("/pools/{POOL}/allocate");
    let fields = [("vm_id", "vm-forged"), ("count", "1"), ("confirm", "1")];
    let status = c.post(&path, Some(&cookie), &fields).await?;
    ensure!(status == 403, "no csrf: {status}, want 403");
    let mut wrong = vec![("csrf", "0123456789abcdef")];
    wrong.extend(fields);
    let status = c.post(&path, Some(&cookie), &wrong).await?;
    ensure!(status == 403, "a wrong csrf: {status}, want 403");
    ensure!(
        c.leases_of("vm-forged").await == 0,
        "a refused POST allocated"
    );
    let status = c
        .post(
            &path,
            Some(&cookie),
            &[("csrf", &csrf), ("vm_id", "vm-forged"), ("count", "1")],
        )
        .await?;
    ensure!(
        status == 200,
        "with the csrf the preview answers {status}: the refusals above prove nothing"
    );
    ensure!(c.leases_of("vm-forged").await == 0, "the preview allocated");
    Ok(())
}

async fn reader(c: &Ctx) -> Result<()> {
    ensure!(
        c.sign_in(&c.seed.reader).await?,
        "the reader token was refused"
    );
    let mut bad = Vec::new();
    for page in [
        format!("/pools/{POOL}/free"),
        format!("/pools/{POOL}/map"),
        format!("/mac/{}", c.seed.web_mac),
        "/tokens".into(),
        "/pools".into(),
    ] {
        c.web.goto(&c.url(&page)).await?;
        let actions = c
            .js(
                "return [...document.forms].filter(f => f.method === 'post')\
                 .map(f => f.getAttribute('action')).filter(a => a !== '/logout')",
            )
            .await?;
        if actions.as_array().is_some_and(|a| !a.is_empty()) {
            bad.push(format!("{page} shows the reader actions {actions}"));
        }
        if c.count("button[name=confirm]").await? > 0 {
            bad.push(format!("{page} shows a Confirm button"));
        }
    }
    let cookie = c.session_cookie().await?;
    let csrf = c.csrf().await?;
    let status = c
        .post(
            &format!("/pools/{POOL}/allocate"),
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("vm_id", "vm-reader"),
                ("count", "1"),
                ("confirm", "1"),
            ],
        )
        .await?;
    if status != 403 {
        bad.push(format!("the reader's allocate POST: {status}, want 403"));
    }
    let status = c
        .post(
            &format!("/mac/{}/release", c.seed.web_mac),
            Some(&cookie),
            &[("csrf", &csrf), ("confirm", "1")],
        )
        .await?;
    if status != 403 {
        bad.push(format!("the reader's release POST: {status}, want 403"));
    }
    if c.leases_of("vm-reader").await != 0 {
        bad.push("the reader allocated".into());
    }
    if c.leases_of(&c.seed.leases[0].1).await != 1 {
        bad.push("the reader released".into());
    }
    ensure!(bad.is_empty(), "{}", bad.join("; "));
    Ok(())
}

async fn revoked(c: &Ctx) -> Result<()> {
    ensure!(
        c.sign_in(&c.seed.reader).await?,
        "the reader token was refused"
    );
    c.s.api(
        Method::DELETE,
        &format!("/tokens/{}", c.seed.reader_id),
        None,
    )
    .await;
    c.web.goto(&c.url("/pools")).await?;
    let path = c.path().await?;
    ensure!(
        path.starts_with("/login"),
        "after revocation /pools shows {path}"
    );
    Ok(())
}

async fn sign_out(c: &Ctx) -> Result<()> {
    ensure!(c.sign_in(&c.seed.admin).await?, "admin sign-in failed");
    let cookie = c.session_cookie().await?;
    let button = c
        .find(
            "form[method=post][action='/logout'] button, form[action='/logout'] input[type=submit]",
        )
        .await?;
    c.click_and_wait(button).await?;
    c.web.goto(&c.url("/pools")).await?;
    let path = c.path().await?;
    ensure!(
        path.starts_with("/login"),
        "after sign-out /pools shows {path}"
    );
    let res = c.get("/pools", Some(&cookie)).await?;
    ensure!(
        res.status().is_redirection(),
        "the old session cookie still opens /pools: {}",
        res.status()
    );
    Ok(())
}

/// A campus-like demo store: four hosts reporting their VMs, a few hundred leases, checkpoint
/// and template holds, cooling addresses, a delegated block, a duplicate MAC, an unmanaged MAC
/// and two hosts whose dynamic ranges collide.
async fn seed_demo(s: &Server) -> String {
    let pool = "campus";
    s.api(
        Method::POST,
        "/pools",
        Some(
            json!({"name": pool, "ranges": ["00155DA00000-00155DA00FFF"],
                    "order": "lowest", "cooldown": "24h"}),
        ),
    )
    .await;
    s.api(
        Method::POST,
        "/pools",
        Some(json!({"name": "lab", "ranges": ["00155DB00000-00155DB000FF"]})),
    )
    .await;
    let kinds = ["desk", "desk", "desk", "rds", "sql", "web", "build"];
    let mut vms: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut dup_mac = String::new();
    let mut first_mac = String::new();
    for i in 0..360u32 {
        let host = ["hv01", "hv02", "hv03"][(i % 3) as usize];
        let name = format!("{}-{:03}", kinds[(i % 7) as usize], i);
        let id = format!("5f0e3c1a-0000-4000-8000-{i:012}");
        let mac = lease(s, pool, &id, &name, host).await;
        if i == 300 {
            dup_mac = mac.clone();
        }
        if i == 0 {
            first_mac = mac.clone();
        }
        if i % 17 == 5 {
            // released: cooling for a day
            s.api(Method::POST, "/leases/release", Some(json!({"mac": mac})))
                .await;
            continue;
        }
        let mut adapters = vec![json!({"name": "Network Adapter", "mac": mac, "dynamic": true})];
        if i % 11 == 0 {
            adapters.push(
                json!({"name": "Network Adapter", "mac": mac, "dynamic": true,
                "checkpoint": {"id": format!("cp-{i}"), "name": "RDV_ROLLBACK"}}),
            );
        }
        vms.entry(host).or_default().push(json!({
            "id": id, "name": name, "state": if i % 5 == 0 { "off" } else { "running" },
            "adapters": adapters}));
    }
    for i in 0..12u64 {
        let mac = ieee(&format!("{:012X}", 0x00155DA001C0u64 + i));
        s.api(
            Method::POST,
            "/holds",
            Some(
                json!({"mac": mac, "vm_id": format!("tmpl-{i}"), "reason": "template",
                        "ref": "gold-image-2026"}),
            ),
        )
        .await;
    }
    // hv03 also runs a copy of build-300 (restored from a backup): a duplicate MAC
    vms.entry("hv03").or_default().push(json!({
        "id": "5f0e3c1a-0000-4000-8000-ffffffffffff", "name": "build-300-restored",
        "state": "running",
        "adapters": [{"name": "Network Adapter", "mac": dup_mac, "dynamic": false}]}));
    // and a VM with a static MAC from the pool that nobody leased
    vms.entry("hv02").or_default().push(json!({
        "id": "5f0e3c1a-0000-4000-8000-eeeeeeeeeeee", "name": "appliance-static",
        "state": "running",
        "adapters": [{"name": "Network Adapter", "mac": "00-15-5D-A0-01-E2", "dynamic": false}]}));
    for (host, vms) in vms {
        // hv01 and hv02 kept Hyper-V's IP-derived default range, and it is the same one
        let range = (host != "hv03").then_some(("00-15-5D-3C-0A-00", "00-15-5D-3C-0A-FF"));
        let mut body = json!({"generation": 1, "cluster": "campus-cl1", "vms": vms,
                        "range_min": range.map(|r| r.0), "range_max": range.map(|r| r.1)});
        match host {
            // delegate without a readable registry cursor: the Hosts page says "estimated"
            "hv01" => {
                body["strategy"] = json!("delegate");
                body["cursor_source"] = json!("inventory-bound");
            }
            "hv02" => body["strategy"] = json!("hyperv-default"),
            // hv03's management OS vNIC was given desk-000's MAC by hand: a live duplicate
            _ => {
                body["strategy"] = json!("guard");
                body["management_adapters"] = json!([
                    {"name": "vEthernet (Management)", "mac": first_mac, "dynamic": false}]);
            }
        }
        s.api(Method::PUT, &format!("/hosts/{host}/inventory"), Some(body))
            .await;
    }
    // after the leases, so that the map's first page shows them and the block comes later
    delegate(s, pool, "hv04", 256, 1).await;
    dup_mac
}

/// `scripts/screenshots`: PNGs of the main pages of a seeded demo store into
/// `MACPOOL_SCREENSHOTS` (default docs/screenshots).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes PNGs; run by scripts/screenshots"]
async fn screenshots() {
    let out = std::env::var_os("MACPOOL_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots"));
    std::fs::create_dir_all(&out).unwrap();
    let browser = Browser::start()
        .await
        .expect("screenshots need chromium and chromium-driver (scripts/setup)");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let first = seed_demo(&s).await;
    let (admin, _) = token(&s, "demo-admin", "admin", None).await;
    let ctx = Ctx {
        s,
        web: browser.web.clone(),
        seed: Seed::default(),
        axe: None,
        http: reqwest::Client::new(),
    };
    let shoot = |file: &'static str| {
        let (web, out) = (ctx.web.clone(), out.clone());
        async move {
            std::fs::write(out.join(file), web.screenshot().await.unwrap()).unwrap();
            let _ = writeln!(std::io::stderr(), "screenshots: {file}");
        }
    };
    ctx.web.goto(&ctx.url("/login")).await.unwrap();
    shoot("login.png").await;
    assert!(ctx.sign_in(&admin).await.unwrap(), "demo sign-in failed");
    for (file, path) in [
        ("pools.png", "/pools".to_string()),
        // the page with leases, cooling, holds, free, an unmanaged MAC and a duplicate
        ("map.png", "/pools/campus/map?at=00-15-5D-A0-01-00".into()),
        ("map-zoom.png", "/pools/campus/map?zoom=1".into()),
        ("addresses.png", "/pools/campus/addresses".into()),
        ("free.png", "/pools/campus/free".into()),
        ("conflicts.png", "/conflicts".into()),
        ("hosts.png", "/hosts".into()),
        ("mac.png", format!("/mac/{first}")),
        // desk-000's MAC, which hv03's management OS vNIC also uses
        ("mac-vnic.png", "/mac/00-15-5D-A0-00-00".into()),
        ("history.png", "/history".into()),
        ("tokens.png", "/tokens".into()),
        ("audit.png", "/audit".into()),
        ("search.png", "/search?q=desk".into()),
        ("error.png", "/pools/nope/map".into()),
    ] {
        ctx.web.goto(&ctx.url(&path)).await.unwrap();
        let png = ctx.web.screenshot().await.unwrap();
        std::fs::write(out.join(file), png).unwrap();
        let _ = writeln!(std::io::stderr(), "screenshots: {file} ← {path}");
    }
    // the map's side panel, opened by a click on a leased cell
    ctx.web
        .goto(&ctx.url(&format!("/pools/campus/map?at={first}")))
        .await
        .unwrap();
    ctx.web
        .find(Locator::Css(&format!("a.cell[data-mac='{first}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    shoot("map-panel.png").await;
    // an action's preview: allocate 4 consecutive on the free-runs page
    ctx.web.goto(&ctx.url("/pools/campus/free")).await.unwrap();
    for (css, value) in [("#a-vm", "vm-demo-preview"), ("#a-name", "Desk-Preview")] {
        let input = ctx.web.find(Locator::Css(css)).await.unwrap();
        input.send_keys(value).await.unwrap();
    }
    ctx.web
        .find(Locator::Css("details.action form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for _ in 0..30 {
        if ctx.web.source().await.unwrap().contains("name=\"confirm\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    shoot("preview.png").await;
    drop(ctx);
    browser.close().await;
}
