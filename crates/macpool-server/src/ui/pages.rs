//! The dashboard's pages: read-only views, each a bookmarkable URL. They read through the store's
//! use cases and render; nothing here decides anything.
// A page's error is itself a page (a `Response`), as axum handlers return it.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use macpool_core::authority::{
    AddressOrder, AddressRow, AddressSortKey, AddressState, Claimant, MAX_ALLOCATION_COUNT,
    MapCells,
};
use macpool_core::conflict::{Conflict, RangeClaim, Seen, Subject};
use macpool_core::history::HistoryAction;
use macpool_core::mac::MacFormat;
use macpool_core::{Mac, Timestamp};
use macpool_store::{HistoryFilter, HistoryRecord, Store};
use serde::Deserialize;

use super::html::{self, Esc, Html, Section, Url, count, csrf_field, ieee};
use super::{User, bad, error_page, fail, html_response};
use crate::AppState;
use crate::w;

/// Rows per page of the address table and the history.
const PAGE_ROWS: usize = 200;
/// Name of the cookie that carries the sign-in form's CSRF value.
const LOGIN_COOKIE: &str = "macpool_login";

type Page = Result<Response, Response>;

// ----- sign-in ---------------------------------------------------------------------------------

pub async fn login_form() -> Response {
    login_page(StatusCode::OK, "")
}

/// The sign-in page with a fresh form CSRF value (also set as a cookie).
pub fn login_page(status: StatusCode, message: &str) -> Response {
    let csrf = hex::encode(rand::random::<[u8; 16]>());
    let mut h = Html::default();
    w!(
        h,
        "<section class=\"login\"><h1>Sign in</h1>\
         <p>Paste a macpool <strong>admin</strong> or <strong>reader</strong> token \
         (<code>macpool token create --role reader --name you</code>). The browser keeps only a \
         session cookie; the token is never stored in it.</p>"
    );
    if !message.is_empty() {
        w!(
            h,
            "<p class=\"problem\" role=\"alert\">{}</p>",
            Esc(message)
        );
    }
    w!(
        h,
        "<form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"token\">Token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required>\
         <button type=\"submit\">Sign in</button></form></section>"
    );
    let mut res = html_response(status, html::page("Sign in", Section::None, None, h));
    let cookie = format!("{LOGIN_COOKIE}={csrf}; Path=/login; HttpOnly; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// The sign-in form's CSRF value equals its cookie's.
pub fn login_csrf_ok(headers: &HeaderMap, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    super::session::cookie(headers, LOGIN_COOKIE)
        .is_some_and(|c| !c.is_empty() && bool::from(c.as_bytes().ct_eq(presented.as_bytes())))
}

pub fn clear_login_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{LOGIN_COOKIE}=; Path=/login; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

// ----- shared bits -----------------------------------------------------------------------------

fn mac_link(h: &mut Html, m: Mac) {
    let s = ieee(m);
    w!(h, "<a class=\"mac\" href=\"/mac/{s}\"><code>{s}</code></a>");
}

/// The MAC in every spelling, each ready to copy (a button with JavaScript, selectable without).
fn spelling_list(h: &mut Html, m: Mac) {
    w!(h, "<ul>");
    for f in MacFormat::ALL {
        let s = m.display(f).to_string();
        w!(
            h,
            "<li>{}: <code>{s}</code> <button type=\"button\" class=\"copy\" data-copy=\"{s}\">copy</button></li>",
            f.name()
        );
    }
    w!(h, "</ul>");
}

/// [`spelling_list`] folded away, for table rows.
fn mac_spellings(h: &mut Html, m: Mac) {
    w!(h, "<details class=\"spell\"><summary>spellings</summary>");
    spelling_list(h, m);
    w!(h, "</details>");
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

/// "in 3h 12m" / "2m ago", for times near now.
fn relative(t: Timestamp, now: Timestamp) -> String {
    let (d, future) = if t.0 >= now.0 {
        (t.0 - now.0, true)
    } else {
        (now.0 - t.0, false)
    };
    let secs = d / 1000;
    let words = if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m", secs / 60)
    } else if secs < 86_400 {
        format!("{}h {}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600)
    };
    if future {
        format!("in {words}")
    } else {
        format!("{words} ago")
    }
}

fn time(h: &mut Html, t: Timestamp, now: Timestamp) {
    w!(
        h,
        "<time datetime=\"{t}\" title=\"{t}\">{}</time>",
        relative(t, now)
    );
}

/// A stable colour index for a host's delegated blocks.
fn host_colour(host: &str) -> u32 {
    host.bytes().fold(2166136261u32, |a, b| {
        (a ^ u32::from(b)).wrapping_mul(16777619)
    }) % 8
}

fn state_label(s: &AddressState, now: Timestamp) -> String {
    match s {
        AddressState::Held(r) => format!("held ({})", r.name()),
        AddressState::Cooling(t) => format!("cooling, free {}", relative(*t, now)),
        AddressState::Delegated { block, host } => format!("delegated to {host} (block {block})"),
        other => other.key().to_string(),
    }
}

/// The tabs of a pool's pages.
fn pool_tabs(h: &mut Html, pool: &str, current: &str) {
    w!(
        h,
        "<h1>Pool <span class=\"name\">{}</span></h1><nav class=\"tabs\" aria-label=\"Pool views\"><ul>",
        Esc(pool)
    );
    for (slug, label) in [
        ("map", "Map"),
        ("addresses", "Addresses"),
        ("free", "Free runs"),
    ] {
        let cur = if slug == current {
            " aria-current=\"page\""
        } else {
            ""
        };
        w!(
            h,
            "<li><a href=\"/pools/{}/{slug}\"{cur}>{label}</a></li>",
            Url(pool)
        );
    }
    w!(h, "</ul></nav>");
}

/// The usage bar: leased / held / cooling / delegated / free, as SVG (no inline style needed).
fn usage_bar(h: &mut Html, u: &macpool_core::pool::PoolUsage) {
    let parts = [
        ("leased", u.leased),
        ("held", u.held),
        ("cooling", u.cooling),
        ("delegated", u.delegated),
        ("free", u.free),
    ];
    let size = u.size.max(1) as f64;
    let label: Vec<String> = parts
        .iter()
        .map(|(k, n)| format!("{} {k}", count(*n)))
        .collect();
    w!(
        h,
        "<svg class=\"bar\" viewBox=\"0 0 200 12\" width=\"200\" height=\"12\" role=\"img\" aria-label=\"{}\"><title>{}</title>",
        Esc(&label.join(", ")),
        Esc(&label.join(", "))
    );
    let mut x = 0.0;
    for (k, n) in parts {
        let wdt = n as f64 / size * 200.0;
        if wdt > 0.0 {
            w!(
                h,
                "<rect class=\"s-{k}\" x=\"{x:.2}\" y=\"0\" width=\"{:.2}\" height=\"12\"></rect>",
                wdt.max(0.5)
            );
        }
        x += wdt;
    }
    w!(h, "</svg>");
}

// ----- pools -----------------------------------------------------------------------------------

pub async fn pools(State(st): State<Arc<AppState>>, user: User) -> Page {
    let pools = st.store.pool_summaries().await.map_err(fail(&user))?;
    let now = macpool_store::now();
    let mut h = Html::default();
    let mut total = macpool_core::pool::PoolUsage::default();
    let mut conflicts = 0;
    for p in &pools {
        let u = &p.view.usage;
        total.size += u.size;
        total.leased += u.leased;
        total.held += u.held;
        total.cooling += u.cooling;
        total.delegated += u.delegated;
        total.free += u.free;
        conflicts += p.conflicts;
    }
    w!(
        h,
        "<h1>Pools</h1><section class=\"totals\" aria-label=\"Totals\"><dl>"
    );
    for (k, n) in [
        ("addresses", total.size),
        ("free", total.free),
        ("leased", total.leased),
        ("held", total.held),
        ("cooling", total.cooling),
        ("delegated", total.delegated),
        ("conflicts", conflicts),
    ] {
        w!(
            h,
            "<div class=\"t-{k}\"><dt>{k}</dt><dd>{}</dd></div>",
            count(n)
        );
    }
    w!(h, "</dl>");
    usage_bar(&mut h, &total);
    w!(h, "</section>");
    if pools.is_empty() {
        w!(
            h,
            "<p>No pools yet. Create one below or with <code>macpool pool create</code>.</p>"
        );
    } else {
        w!(
            h,
            "<table class=\"pools\"><caption class=\"sr\">Pools</caption><thead><tr><th scope=\"col\">Pool</th><th scope=\"col\">Ranges</th>\
             <th scope=\"col\">Usage</th><th scope=\"col\">Free</th><th scope=\"col\">Largest free run</th><th scope=\"col\">Low water</th>\
             <th scope=\"col\">Conflicts</th><th scope=\"col\">Last inventory</th></tr></thead><tbody>"
        );
        for p in &pools {
            let name = p.view.spec.name.as_str();
            let u = &p.view.usage;
            w!(
                h,
                "<tr data-pool=\"{}\"><th scope=\"row\"><a href=\"/pools/{}/map\">{}</a></th><td>",
                Esc(name),
                Url(name),
                Esc(name)
            );
            for r in &p.view.spec.ranges {
                w!(h, "<div><code>{}</code></div>", Esc(&r.to_string()));
            }
            w!(h, "</td><td>");
            usage_bar(&mut h, u);
            w!(
                h,
                "</td><td class=\"num\">{} <small>of {}</small></td><td class=\"num\">{}</td>",
                count(u.free),
                count(u.size),
                count(p.longest_free_run)
            );
            if p.view.low {
                w!(h, "<td><span class=\"badge warn\">low</span></td>");
            } else {
                w!(h, "<td><span class=\"badge ok\">ok</span></td>");
            }
            if p.conflicts > 0 {
                w!(
                    h,
                    "<td><a class=\"badge bad\" href=\"/conflicts\">{}</a></td>",
                    count(p.conflicts)
                );
            } else {
                w!(h, "<td><span class=\"badge ok\">0</span></td>");
            }
            w!(h, "<td>");
            match p.last_report {
                Some(t) => time(&mut h, t, now),
                None => w!(h, "—"),
            }
            w!(h, "</td></tr>");
        }
        w!(h, "</tbody></table>");
    }
    if user.is_admin() {
        w!(
            h,
            "<details class=\"action\"><summary>Create a pool</summary>\
             <form method=\"post\" action=\"/pools\">"
        );
        csrf_field(&mut h, &user.session.csrf);
        w!(
            h,
            "<label for=\"np-name\">Name</label><input id=\"np-name\" name=\"name\" required>\
             <label for=\"np-range\">Range</label><input id=\"np-range\" name=\"range\" placeholder=\"00-15-5D-F0-00-00-00-15-5D-F0-00-FF\" required>\
             <label for=\"np-cool\">Cooldown</label><input id=\"np-cool\" name=\"cooldown\" value=\"24h\">\
             <button type=\"submit\">Preview</button></form></details>"
        );
    }
    Ok(user.page("Pools", Section::Pools, h))
}

pub async fn pool_home(Path(pool): Path<String>) -> Redirect {
    Redirect::to(&format!("/pools/{}/map", Url(&pool)))
}

// ----- map -------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct MapQuery {
    at: Option<String>,
    zoom: Option<u8>,
}

/// Addresses per cell at each zoom level: one, 256, 65,536.
const CELL_SIZES: [u64; 3] = [1, 256, 65_536];
/// Cells per page (16 × 16).
const CELLS: u64 = 256;

pub async fn map(
    State(st): State<Arc<AppState>>,
    user: User,
    Path(pool): Path<String>,
    Query(q): Query<MapQuery>,
) -> Page {
    let view = st.store.pool(pool.clone()).await.map_err(fail(&user))?;
    let (span_lo, span_hi) = view.spec.span();
    let zoom = usize::from(q.zoom.unwrap_or(0).min(2));
    let at = match q.at.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => Mac::parse(s).map_err(|e| bad(&user, format!("go to '{s}': {e}")))?,
        None => span_lo,
    };
    let cell = CELL_SIZES[zoom];
    let page = cell * CELLS;
    let first = Mac::from_u64(at.to_u64() / page * page).unwrap_or(Mac::ZERO);
    let m = st
        .store
        .address_map(pool.clone(), first, cell, CELLS)
        .await
        .map_err(fail(&user))?;
    let now = macpool_store::now();
    let mut h = Html::default();
    pool_tabs(&mut h, &pool, "map");
    let purl = Url(&pool).to_string();
    // navigation: go to, zoom, previous / next page
    w!(
        h,
        "<div class=\"mapnav\"><form method=\"get\" action=\"/pools/{purl}/map\">\
         <label for=\"at\">Go to MAC</label><input id=\"at\" name=\"at\" value=\"{}\" placeholder=\"any spelling\">\
         <input type=\"hidden\" name=\"zoom\" value=\"{zoom}\"><button type=\"submit\">Go</button></form><span class=\"zoom\">",
        Esc(&ieee(at))
    );
    let span = span_hi.to_u64() - span_lo.to_u64() + 1;
    for (z, label) in ["256 per page", "65,536 per page", "16,777,216 per page"]
        .iter()
        .enumerate()
        // a level is offered when the pool is larger than one page of the level below
        .filter(|(z, _)| *z == 0 || *z == zoom || span > CELL_SIZES[*z - 1] * CELLS)
    {
        if z == zoom {
            w!(h, "<strong aria-current=\"true\">{label}</strong> ");
        } else {
            w!(
                h,
                "<a href=\"/pools/{purl}/map?at={}&amp;zoom={z}\">{label}</a> ",
                ieee(first)
            );
        }
    }
    w!(h, "</span><span class=\"pager\">");
    let prev = first
        .to_u64()
        .checked_sub(page)
        .filter(|p| p + page > span_lo.to_u64());
    let next = Some(first.to_u64() + page).filter(|n| *n <= span_hi.to_u64());
    match prev.and_then(Mac::from_u64) {
        Some(p) => w!(
            h,
            "<a rel=\"prev\" href=\"/pools/{purl}/map?at={}&amp;zoom={zoom}\">← previous</a> ",
            ieee(p)
        ),
        None => w!(h, "<span class=\"off\">← previous</span> "),
    }
    match next.and_then(Mac::from_u64) {
        Some(n) => w!(
            h,
            "<a rel=\"next\" href=\"/pools/{purl}/map?at={}&amp;zoom={zoom}\">next →</a>",
            ieee(n)
        ),
        None => w!(h, "<span class=\"off\">next →</span>"),
    }
    w!(h, "</span></div>");
    let last =
        Mac::from_u64((first.to_u64() + page - 1).min(macpool_core::mac::MAC_MAX)).unwrap_or(first);
    w!(
        h,
        "<p class=\"span\">{} – {} · each cell {} address{}</p><div class=\"mapwrap\">",
        ieee(first),
        ieee(last),
        count(cell),
        if cell == 1 { "" } else { "es" }
    );
    match &m.cells {
        MapCells::Addresses(cells) => {
            let mut legend: BTreeMap<&str, u64> = BTreeMap::new();
            let mut hosts: BTreeMap<String, u64> = BTreeMap::new();
            let mut conflicts = 0;
            w!(
                h,
                "<div class=\"grid\" role=\"grid\" aria-label=\"Addresses {} to {}\">",
                ieee(first),
                ieee(last)
            );
            for row in cells.chunks(16) {
                w!(h, "<div role=\"row\">");
                for c in row {
                    let key = c.state.key();
                    *legend.entry(key).or_default() += 1;
                    let mut class = format!("cell s-{key}");
                    if let AddressState::Delegated { host, .. } = &c.state {
                        class += &format!(" h{}", host_colour(host));
                        *hosts.entry(host.clone()).or_default() += 1;
                    }
                    let mut extra = String::new();
                    if c.conflict {
                        class += " conflict";
                        extra += " data-conflict=\"1\"";
                        conflicts += 1;
                    }
                    let mac = ieee(c.mac);
                    let label = format!(
                        "{mac}: {}{}",
                        state_label(&c.state, now),
                        if c.conflict { ", in conflict" } else { "" }
                    );
                    w!(
                        h,
                        "<a role=\"gridcell\" class=\"{class}\" href=\"/mac/{mac}\" data-mac=\"{mac}\" data-state=\"{key}\"{extra} title=\"{}\" aria-label=\"{}\"></a>",
                        Esc(&label),
                        Esc(&label)
                    );
                }
                w!(h, "</div>");
            }
            w!(
                h,
                "</div><aside id=\"panel\" class=\"panel\" aria-live=\"polite\"><p>Select an address to see who has it.</p></aside></div>\
                 <ul class=\"legend\" aria-label=\"Legend\">"
            );
            for key in AddressState::KEYS.iter().chain(["outside"].iter()) {
                let n = legend.get(key).copied().unwrap_or(0);
                w!(
                    h,
                    "<li data-legend=\"{key}\"><span class=\"swatch s-{key}\"></span>{key} <span class=\"count\">{n}</span></li>"
                );
            }
            w!(
                h,
                "<li data-legend=\"conflict\"><span class=\"swatch conflict\"></span>in conflict <span class=\"count\">{conflicts}</span></li></ul>"
            );
            if !hosts.is_empty() {
                w!(
                    h,
                    "<ul class=\"legend hosts\" aria-label=\"Delegated hosts\">"
                );
                for (host, n) in &hosts {
                    w!(
                        h,
                        "<li><span class=\"swatch s-delegated h{}\"></span>{} <span class=\"count\">{n}</span></li>",
                        host_colour(host),
                        Esc(host)
                    );
                }
                w!(h, "</ul>");
            }
        }
        MapCells::Summaries(cells) => {
            let (mut used, mut in_pool, mut conflicts) = (0, 0, 0);
            w!(
                h,
                "<div class=\"grid heat\" role=\"grid\" aria-label=\"Use from {} to {}\">",
                ieee(first),
                ieee(last)
            );
            for row in cells.chunks(16) {
                w!(h, "<div role=\"row\">");
                for c in row {
                    used += c.used;
                    in_pool += c.in_pool;
                    conflicts += c.conflicts;
                    let (class, label) = if let Some(pct) = (c.used * 100).checked_div(c.in_pool) {
                        let level = (c.used * 10).div_ceil(c.in_pool).min(10);
                        (
                            format!(
                                "cell heat{level}{}",
                                if c.conflicts > 0 { " conflict" } else { "" }
                            ),
                            format!(
                                "{} used of {} ({pct} %){}",
                                count(c.used),
                                count(c.in_pool),
                                if c.conflicts > 0 {
                                    format!(", {} in conflict", c.conflicts)
                                } else {
                                    String::new()
                                }
                            ),
                        )
                    } else {
                        ("cell s-outside".to_string(), "outside the pool".to_string())
                    };
                    let mac = ieee(c.first);
                    w!(
                        h,
                        "<a role=\"gridcell\" class=\"{class}\" href=\"/pools/{purl}/map?at={mac}&amp;zoom={}\" data-first=\"{mac}\" data-used=\"{}\" data-in-pool=\"{}\" title=\"{mac}: {}\" aria-label=\"{mac}: {}\"></a>",
                        zoom - 1,
                        c.used,
                        c.in_pool,
                        Esc(&label),
                        Esc(&label)
                    );
                }
                w!(h, "</div>");
            }
            w!(
                h,
                "</div></div><ul class=\"legend\" aria-label=\"Legend\">\
                 <li><span class=\"swatch heat0\"></span>unused</li><li><span class=\"swatch heat5\"></span>half used</li>\
                 <li><span class=\"swatch heat10\"></span>all used</li><li data-legend=\"used\">used <span class=\"count\">{}</span> of <span class=\"count\">{}</span></li>\
                 <li data-legend=\"conflict\"><span class=\"swatch conflict\"></span>in conflict <span class=\"count\">{}</span></li></ul>",
                count(used),
                count(in_pool),
                count(conflicts)
            );
        }
    }
    if user.is_admin() {
        w!(
            h,
            "<details class=\"action\"><summary>Change this pool</summary><form method=\"post\" action=\"/pools/{purl}/edit\">"
        );
        csrf_field(&mut h, &user.session.csrf);
        w!(
            h,
            "<label for=\"e-cool\">Cooldown</label><input id=\"e-cool\" name=\"cooldown\" placeholder=\"{}\">\
             <label for=\"e-low\">Low water</label><input id=\"e-low\" name=\"low_water\" placeholder=\"{}\">\
             <label for=\"e-range\">Add range</label><input id=\"e-range\" name=\"add_range\">\
             <button type=\"submit\">Preview</button></form></details>",
            Esc(&humantime::format_duration(view.spec.policy.cooldown).to_string()),
            Esc(&view.spec.policy.low_water.to_string())
        );
    }
    Ok(user.page(&format!("{pool} · map"), Section::Pools, h))
}

// ----- addresses -------------------------------------------------------------------------------

#[derive(Deserialize, Default, Clone)]
pub struct AddressQuery {
    state: Option<String>,
    host: Option<String>,
    vm: Option<String>,
    from: Option<String>,
    format: Option<String>,
    /// A column to sort by ([`AddressSortKey::KEYS`]); with `order=desc`, descending.
    sort: Option<String>,
    order: Option<String>,
    /// Sorted by another column than MAC ascending, pages start at a row number.
    skip: Option<String>,
}

impl AddressQuery {
    fn order(&self) -> Result<AddressOrder, String> {
        let key = match self.sort.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => AddressSortKey::parse(s)?,
            None => AddressSortKey::default(),
        };
        let descending = match self.order.as_deref().unwrap_or("") {
            "" | "asc" => false,
            "desc" => true,
            other => return Err(format!("unknown order '{other}': expected asc or desc")),
        };
        Ok(AddressOrder { key, descending })
    }

    fn keeps(&self, row: &AddressRow) -> bool {
        let nonempty =
            |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
        let (state, host, vm) = (
            nonempty(&self.state),
            nonempty(&self.host),
            nonempty(&self.vm),
        );
        match row {
            // free rows stay in place whatever the filter (they say where the gaps are)
            AddressRow::Free { .. } => true,
            AddressRow::Block(b) => {
                state.as_deref().is_none_or(|s| s == "delegated")
                    && host.as_deref().is_none_or(|h| h == b.host)
                    && vm.is_none()
            }
            AddressRow::Used {
                status, state: st, ..
            } => {
                state.as_deref().is_none_or(|s| s == st.key())
                    && host.as_deref().is_none_or(|h| {
                        status
                            .leases
                            .iter()
                            .any(|l| l.owner.host.as_deref() == Some(h))
                            || status.seen.iter().any(|s| s.host == h)
                    })
                    && vm.as_deref().is_none_or(|v| {
                        let v = v.to_lowercase();
                        let hit = |s: &str| s.to_lowercase().contains(&v);
                        status.leases.iter().any(|l| {
                            hit(&l.owner.vm_id) || l.owner.vm_name.as_deref().is_some_and(hit)
                        }) || status.holds.iter().any(|x| hit(&x.vm_id))
                            || status.seen.iter().any(|s| hit(&s.vm_id) || hit(&s.vm_name))
                    })
            }
        }
    }
}

/// One address-table row as flat fields (the table, CSV and JSON all use these).
struct Flat {
    kind: &'static str,
    mac: String,
    last: String,
    state: String,
    vm_name: String,
    vm_id: String,
    adapter: String,
    host: String,
    cluster: String,
    since: String,
    cooldown_until: String,
    source: String,
    conflict: bool,
    free: u64,
}

fn flatten(row: &AddressRow) -> Flat {
    let mut f = Flat {
        kind: "used",
        mac: String::new(),
        last: String::new(),
        state: String::new(),
        vm_name: String::new(),
        vm_id: String::new(),
        adapter: String::new(),
        host: String::new(),
        cluster: String::new(),
        since: String::new(),
        cooldown_until: String::new(),
        source: String::new(),
        conflict: false,
        free: 0,
    };
    match row {
        AddressRow::Free { first, last } => {
            f.kind = "free";
            f.mac = ieee(*first);
            f.last = ieee(*last);
            f.state = "free".into();
            f.free = last.to_u64() - first.to_u64() + 1;
        }
        AddressRow::Block(b) => {
            f.kind = "block";
            f.mac = ieee(b.range.first());
            f.last = ieee(b.range.last());
            f.state = format!("delegated ({})", b.state.name());
            f.source = format!("block {}", b.id);
        }
        AddressRow::Used {
            status,
            state,
            conflict,
        } => {
            f.mac = ieee(status.mac);
            f.state = state.key().into();
            f.conflict = *conflict;
            if let Some(l) = status.leases.first() {
                f.vm_id = l.owner.vm_id.clone();
                f.adapter = l.owner.adapter_id.clone();
                f.cluster = opt(&l.owner.cluster).into();
                f.source = format!("lease ({})", l.state.name());
            } else if let Some(x) = status.holds.first() {
                f.vm_id = x.vm_id.clone();
                f.source = if x.reason == macpool_core::lease::HoldReason::Checkpoint {
                    format!("checkpoint hold {}", x.reference)
                } else {
                    format!("{} hold {}", x.reason.name(), x.reference)
                };
            } else if status.cooling_until.is_some() {
                f.source = "released".into();
            }
            if let Some(s) = status.seen.first() {
                if f.vm_id.is_empty() {
                    f.vm_id = s.vm_id.clone();
                }
                if f.source.is_empty() {
                    f.source = match &s.checkpoint {
                        Some(c) => format!("inventory (checkpoint {c})"),
                        None if s.management_os => "inventory (management OS vNIC)".into(),
                        None => "inventory".into(),
                    };
                }
            }
            if let Some(t) = status.cooling_until {
                f.cooldown_until = t.to_string();
            }
        }
    }
    f.vm_name = row.vm_name().unwrap_or_default().into();
    f.host = row.host().unwrap_or_default().into();
    f.since = row.since().map(|t| t.to_string()).unwrap_or_default();
    f
}

fn csv_field(s: &str) -> String {
    // a leading = + - @ would be a formula in a spreadsheet: quote it as text
    let needs = s.contains([',', '"', '\n', '\r']) || s.starts_with(['=', '+', '-', '@']);
    if needs {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub async fn addresses(
    State(st): State<Arc<AppState>>,
    user: User,
    Path(pool): Path<String>,
    Query(q): Query<AddressQuery>,
) -> Page {
    if let Some(s) = q.state.as_deref().filter(|s| !s.is_empty())
        && !AddressState::KEYS.contains(&s)
    {
        return Err(bad(
            &user,
            format!(
                "unknown state '{s}': expected one of {}",
                AddressState::KEYS.join(", ")
            ),
        ));
    }
    let view = st.store.pool(pool.clone()).await.map_err(fail(&user))?;
    let (lo, _) = view.spec.span();
    let from = match q.from.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Mac::parse(s).map_err(|e| bad(&user, format!("from '{s}': {e}")))?,
        None => lo,
    };
    let order = q.order().map_err(|e| bad(&user, e))?;
    let skip = match q.skip.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => s
            .parse::<usize>()
            .map_err(|e| bad(&user, format!("skip '{s}': {e}")))?,
        None => 0,
    };
    if let Some(fmt) = q.format.as_deref() {
        return export(&st, &user, pool, order, &q, fmt).await;
    }
    let filter = q.clone();
    // MAC ascending pages from an address; another order from a row number
    let (rows, next) = if order.is_mac_ascending() {
        let (rows, next) = st
            .store
            .address_rows(pool.clone(), from, PAGE_ROWS, move |r| filter.keeps(r))
            .await
            .map_err(fail(&user))?;
        (rows, next.map(|n| (format!("from={}", ieee(n)), ieee(n))))
    } else {
        let (rows, next) = st
            .store
            .address_rows_in_order(pool.clone(), order, skip, PAGE_ROWS, move |r| {
                filter.keeps(r)
            })
            .await
            .map_err(fail(&user))?;
        (
            rows,
            next.map(|n| (format!("skip={n}"), format!("row {}", n + 1))),
        )
    };
    let now = macpool_store::now();
    let mut h = Html::default();
    pool_tabs(&mut h, &pool, "addresses");
    let purl = Url(&pool).to_string();
    w!(
        h,
        "<form class=\"filters\" method=\"get\" action=\"/pools/{purl}/addresses\">\
         <label for=\"f-state\">State</label><select id=\"f-state\" name=\"state\"><option value=\"\">any</option>"
    );
    for k in AddressState::KEYS {
        let sel = if q.state.as_deref() == Some(k) {
            " selected"
        } else {
            ""
        };
        w!(h, "<option{sel}>{k}</option>");
    }
    w!(
        h,
        "</select><label for=\"f-host\">Host</label><input id=\"f-host\" name=\"host\" value=\"{}\">\
         <label for=\"f-vm\">VM</label><input id=\"f-vm\" name=\"vm\" value=\"{}\" placeholder=\"name or id\">\
         <button type=\"submit\">Filter</button></form>",
        Esc(opt(&q.host)),
        Esc(opt(&q.vm))
    );
    let filter_qs = format!(
        "state={}&amp;host={}&amp;vm={}",
        Url(opt(&q.state)),
        Url(opt(&q.host)),
        Url(opt(&q.vm))
    );
    let order_qs = format!(
        "sort={}&amp;order={}",
        order.key.name(),
        if order.descending { "desc" } else { "asc" }
    );
    // a sortable column's header: a link to this column ascending, or descending when it is
    // the ascending one now
    let header = |h: &mut Html, key: AddressSortKey, label: &str| {
        let current = order.key == key;
        let (aria, next, mark) = match (current, order.descending) {
            (true, false) => (" aria-sort=\"ascending\"", "desc", " ▲"),
            (true, true) => (" aria-sort=\"descending\"", "asc", " ▼"),
            (false, _) => ("", "asc", ""),
        };
        w!(
            h,
            "<th scope=\"col\"{aria}><a href=\"/pools/{purl}/addresses?{filter_qs}&amp;sort={}&amp;order={next}\" data-sort=\"{}\">{label}{mark}</a></th>",
            key.name(),
            key.name()
        );
    };
    w!(
        h,
        "<p class=\"export\">Export the whole filtered set: \
         <a href=\"/pools/{purl}/addresses?{filter_qs}&amp;{order_qs}&amp;format=csv\" download>CSV</a> · \
         <a href=\"/pools/{purl}/addresses?{filter_qs}&amp;{order_qs}&amp;format=json\" download>JSON</a></p>\
         <table class=\"addresses\"><caption class=\"sr\">Addresses</caption><thead><tr>"
    );
    header(&mut h, AddressSortKey::Mac, "MAC");
    header(&mut h, AddressSortKey::State, "State");
    header(&mut h, AddressSortKey::VmName, "VM name");
    w!(
        h,
        "<th scope=\"col\">VM id</th><th scope=\"col\">Adapter</th>"
    );
    header(&mut h, AddressSortKey::Host, "Host");
    w!(h, "<th scope=\"col\">Cluster</th>");
    header(&mut h, AddressSortKey::Since, "Since");
    w!(
        h,
        "<th scope=\"col\">Cooldown until</th><th scope=\"col\">Source</th></tr></thead><tbody>"
    );
    for r in &rows {
        let f = flatten(r);
        match r {
            AddressRow::Free { .. } => {
                w!(
                    h,
                    "<tr data-row=\"free\" class=\"free\"><td colspan=\"10\"><a href=\"/pools/{purl}/free\">{} free</a> ({} … {})</td></tr>",
                    count(f.free),
                    f.mac,
                    f.last
                );
            }
            _ => {
                let conflict = if f.conflict {
                    " <span class=\"badge bad\">conflict</span>"
                } else {
                    ""
                };
                w!(
                    h,
                    "<tr data-row=\"{}\" data-state=\"{}\"><td>",
                    f.kind,
                    Esc(&f.state)
                );
                if let AddressRow::Used { status, .. } = r {
                    mac_link(&mut h, status.mac);
                    mac_spellings(&mut h, status.mac);
                } else {
                    w!(h, "<code>{}</code> … <code>{}</code>", f.mac, f.last);
                }
                w!(
                    h,
                    "</td><td><span class=\"st s-{}\">{}</span>{conflict}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>",
                    Esc(f.state.split(' ').next().unwrap_or("")),
                    Esc(&f.state),
                    Esc(&f.vm_name),
                    Esc(&f.vm_id),
                    Esc(&f.adapter),
                    Esc(&f.host),
                    Esc(&f.cluster)
                );
                if let Ok(t) = parse_time(&f.since) {
                    time(&mut h, t, now);
                }
                w!(h, "</td><td>");
                if let Ok(t) = parse_time(&f.cooldown_until) {
                    time(&mut h, t, now);
                }
                w!(h, "</td><td>{}</td></tr>", Esc(&f.source));
            }
        }
    }
    w!(h, "</tbody></table>");
    if rows.is_empty() {
        w!(h, "<p>Nothing matches.</p>");
    }
    if let Some((at, label)) = next {
        w!(
            h,
            "<p class=\"pager\"><a rel=\"next\" href=\"/pools/{purl}/addresses?{filter_qs}&amp;{order_qs}&amp;{at}\">next page from {label}</a></p>"
        );
    }
    Ok(user.page(&format!("{pool} · addresses"), Section::Pools, h))
}

fn parse_time(s: &str) -> Result<Timestamp, ()> {
    if s.is_empty() {
        return Err(());
    }
    humantime::parse_rfc3339(s).map_err(|_| ()).and_then(|t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| Timestamp(d.as_millis() as u64))
            .map_err(|_| ())
    })
}

/// The whole filtered address table as CSV or JSON (no page limit), in the page's order.
async fn export(
    st: &AppState,
    user: &User,
    pool: String,
    order: AddressOrder,
    q: &AddressQuery,
    fmt: &str,
) -> Page {
    let filter = q.clone();
    let (rows, _) = st
        .store
        .address_rows_in_order(pool.clone(), order, 0, usize::MAX, move |r| filter.keeps(r))
        .await
        .map_err(fail(user))?;
    let kept = rows.iter().map(flatten);
    let (body, kind, ext) = match fmt {
        "csv" => {
            let mut out = String::from(
                "row,mac,last,state,vm_name,vm_id,adapter,host,cluster,since,cooldown_until,source,conflict,free\r\n",
            );
            for f in kept {
                let fields = [
                    f.kind.to_string(),
                    f.mac,
                    f.last,
                    f.state,
                    f.vm_name,
                    f.vm_id,
                    f.adapter,
                    f.host,
                    f.cluster,
                    f.since,
                    f.cooldown_until,
                    f.source,
                    f.conflict.to_string(),
                    f.free.to_string(),
                ];
                let line: Vec<String> = fields.iter().map(|s| csv_field(s)).collect();
                out += &line.join(",");
                out += "\r\n";
            }
            (out, "text/csv; charset=utf-8", "csv")
        }
        "json" => {
            let items: Vec<serde_json::Value> = kept
                .map(|f| {
                    serde_json::json!({
                        "row": f.kind, "mac": f.mac, "last": f.last, "state": f.state,
                        "vm_name": f.vm_name, "vm_id": f.vm_id, "adapter": f.adapter,
                        "host": f.host, "cluster": f.cluster, "since": f.since,
                        "cooldown_until": f.cooldown_until, "source": f.source,
                        "conflict": f.conflict, "free": f.free,
                    })
                })
                .collect();
            (
                serde_json::to_string(&items).unwrap_or_default(),
                "application/json",
                "json",
            )
        }
        other => {
            return Err(bad(
                user,
                format!("unknown export format '{other}': expected csv or json"),
            ));
        }
    };
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    let name: String = pool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"macpool-{name}-addresses.{ext}\""
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

// ----- free runs -------------------------------------------------------------------------------

pub async fn free_runs(
    State(st): State<Arc<AppState>>,
    user: User,
    Path(pool): Path<String>,
) -> Page {
    let avail = st
        .store
        .available(pool.clone(), u64::MAX)
        .await
        .map_err(fail(&user))?;
    let mut runs = avail.runs.clone();
    runs.sort_by_key(|(a, b)| (std::cmp::Reverse(b.to_u64() - a.to_u64()), *a));
    let shown = runs.len().min(500);
    let mut h = Html::default();
    pool_tabs(&mut h, &pool, "free");
    let purl = Url(&pool).to_string();
    w!(
        h,
        "<p>{} free of {} in {} runs{}.</p>",
        count(avail.free),
        count(avail.size),
        count(runs.len() as u64),
        if shown < runs.len() {
            format!("; the {shown} largest are listed")
        } else {
            String::new()
        }
    );
    if user.is_admin() {
        w!(
            h,
            "<details class=\"action\" open><summary>Allocate</summary>\
             <form method=\"post\" action=\"/pools/{purl}/allocate\">"
        );
        csrf_field(&mut h, &user.session.csrf);
        w!(
            h,
            "<label for=\"a-vm\">VM id</label><input id=\"a-vm\" name=\"vm_id\" required>\
             <label for=\"a-name\">VM name</label><input id=\"a-name\" name=\"vm_name\">\
             <label for=\"a-count\">Count</label><input id=\"a-count\" name=\"count\" type=\"number\" min=\"1\" max=\"{MAX_ALLOCATION_COUNT}\" value=\"1\">\
             <label for=\"a-cons\"><input id=\"a-cons\" name=\"consecutive\" type=\"checkbox\" value=\"1\"> consecutive</label>\
             <label for=\"a-mac\">Specific first MAC</label><input id=\"a-mac\" name=\"mac\" placeholder=\"next free\">\
             <button type=\"submit\">Preview</button></form></details>"
        );
    }
    w!(
        h,
        "<table class=\"runs\"><caption class=\"sr\">Free runs</caption><thead><tr><th scope=\"col\">First</th><th scope=\"col\">Last</th><th scope=\"col\">Size</th><th scope=\"col\">Actions</th></tr></thead><tbody>"
    );
    for (a, b) in runs.iter().take(shown) {
        let n = b.to_u64() - a.to_u64() + 1;
        w!(
            h,
            "<tr data-run=\"{}\"><td><code>{}</code></td><td><code>{}</code></td><td class=\"num\">{}</td><td>",
            ieee(*a),
            ieee(*a),
            ieee(*b),
            count(n)
        );
        if user.is_admin() {
            w!(
                h,
                "<form method=\"post\" action=\"/pools/{purl}/allocate\" class=\"inline\">"
            );
            csrf_field(&mut h, &user.session.csrf);
            w!(
                h,
                "<input type=\"hidden\" name=\"mac\" value=\"{}\"><input type=\"hidden\" name=\"count\" value=\"{}\">\
                 <input type=\"hidden\" name=\"consecutive\" value=\"1\">\
                 <label class=\"sr\" for=\"r-{}\">VM id for this run</label><input id=\"r-{}\" name=\"vm_id\" placeholder=\"VM id\" required>\
                 <button type=\"submit\">Reserve this run</button></form>",
                ieee(*a),
                n.min(u64::from(MAX_ALLOCATION_COUNT)),
                ieee(*a),
                ieee(*a)
            );
        }
        w!(h, "</td></tr>");
    }
    w!(h, "</tbody></table>");
    Ok(user.page(&format!("{pool} · free runs"), Section::Pools, h))
}

// ----- conflicts -------------------------------------------------------------------------------

/// Escaped text in which `backticked` words (the engine's commands) become code.
fn prose(s: &str) -> String {
    let escaped = Esc(s).to_string();
    let mut out = String::with_capacity(escaped.len());
    for (i, part) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            out += "<code>";
            out += part;
            out += "</code>";
        } else {
            out += part;
        }
    }
    out
}

fn claim(c: &RangeClaim) -> String {
    match c {
        RangeClaim::Host(hr) => format!("host {} ({})", hr.host, hr.range),
        RangeClaim::Pool(p) => format!("pool {} ({})", p.pool, p.range),
    }
}

/// One conflict, every claimant: the Conflicts page and the audit page both use it.
pub fn conflict_card(h: &mut Html, c: &Conflict) {
    conflict_card_claimed(h, c, None, Timestamp(0));
}

/// [`conflict_card`] with what the authority knows of each claimant (the Conflicts page): its
/// power state and what guard did about it.
fn conflict_card_claimed(
    h: &mut Html,
    c: &Conflict,
    claimants: Option<&[Claimant]>,
    now: Timestamp,
) {
    w!(
        h,
        "<article class=\"conflict\" data-class=\"{}\"><h2><span class=\"badge bad\">{}</span> ",
        c.class.slug(),
        c.class.slug()
    );
    match &c.subject {
        Subject::Mac { mac, sightings } => {
            mac_link(h, *mac);
            w!(
                h,
                "</h2><p>{}</p><p class=\"fix\"><strong>Fix:</strong> {}</p>\
                 <table><thead><tr><th scope=\"col\">Host</th><th scope=\"col\">VM</th><th scope=\"col\">VM id</th><th scope=\"col\">Where</th><th scope=\"col\">Adapter</th><th scope=\"col\">Evidence</th>{}</tr></thead><tbody>",
                prose(&c.explanation),
                prose(&c.fix),
                if claimants.is_some() {
                    "<th scope=\"col\">Power</th><th scope=\"col\">Guard</th>"
                } else {
                    ""
                }
            );
            for (i, s) in sightings.iter().enumerate() {
                let o = &s.owner;
                let place = match &s.seen {
                    Seen::Live => "live".to_string(),
                    Seen::ManagementOs => "management OS vNIC".to_string(),
                    Seen::Checkpoint { name, .. } => format!("checkpoint '{name}'"),
                    Seen::Listed { label } => format!("listed {}", label.as_deref().unwrap_or("")),
                    Seen::DhcpLease { ip, .. } => {
                        format!("DHCP lease {}", ip.as_deref().unwrap_or(""))
                    }
                };
                w!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}{}</td>",
                    Esc(opt(&o.host)),
                    Esc(opt(&o.vm_name)),
                    Esc(opt(&o.vm_id)),
                    Esc(&place),
                    Esc(opt(&o.adapter)),
                    Esc(&o.source),
                    Esc(&o
                        .location
                        .as_deref()
                        .map(|l| format!(" ({l})"))
                        .unwrap_or_default())
                );
                if let Some(claimants) = claimants {
                    let cl = claimants.get(i);
                    let power = cl.and_then(|c| c.state.as_ref()).map_or("—", |v| v.name());
                    w!(
                        h,
                        "<td class=\"power\">{}</td><td class=\"guard\">",
                        Esc(power)
                    );
                    match cl.and_then(|c| c.guard.as_ref()) {
                        Some((_, e)) => {
                            w!(h, "replaced by ");
                            if let Some(m) = e.mac {
                                mac_link(h, m);
                            }
                            w!(h, " ");
                            time(h, e.at, now);
                        }
                        None if o.vm_id.is_some() => w!(h, "nothing yet"),
                        None => w!(h, "—"),
                    }
                    w!(h, "</td>");
                }
                w!(h, "</tr>");
            }
            w!(h, "</tbody></table>");
        }
        Subject::Ranges { a, b, overlap } => {
            w!(
                h,
                "<code>{}</code></h2><p>{}</p><p class=\"fix\"><strong>Fix:</strong> {}</p><ul><li>{}</li><li>{}</li></ul>",
                Esc(&overlap.to_string()),
                prose(&c.explanation),
                prose(&c.fix),
                Esc(&claim(a)),
                Esc(&claim(b))
            );
        }
    }
    w!(h, "</article>");
}

pub async fn conflicts(State(st): State<Arc<AppState>>, user: User) -> Page {
    let all = st.store.conflicts_claimed().await.map_err(fail(&user))?;
    let now = macpool_store::now();
    let mut h = Html::default();
    w!(
        h,
        "<h1>Conflicts <span class=\"badge {}\" id=\"conflict-count\" data-count=\"{}\">{}</span></h1>\
         <p class=\"live\" data-poll=\"/conflicts/count\">This page checks for changes every 10 s.</p>",
        if all.is_empty() { "ok" } else { "bad" },
        all.len(),
        all.len()
    );
    if all.is_empty() {
        w!(
            h,
            "<p class=\"clean\">No conflicts: no MAC is live twice, no checkpoint MAC is live elsewhere, no host ranges overlap.</p>"
        );
    }
    let mut by_class: BTreeMap<&str, u64> = BTreeMap::new();
    for (c, _) in &all {
        *by_class.entry(c.class.slug()).or_default() += 1;
    }
    if !by_class.is_empty() {
        w!(h, "<ul class=\"classes\">");
        for (k, n) in &by_class {
            w!(h, "<li>{k}: {n}</li>");
        }
        w!(h, "</ul>");
    }
    for (c, claimants) in all.iter().take(1000) {
        conflict_card_claimed(&mut h, c, Some(claimants), now);
    }
    if all.len() > 1000 {
        w!(
            h,
            "<p>{} more; <code>macpool conflicts --json</code> lists them all.</p>",
            all.len() - 1000
        );
    }
    let title = format!("({}) Conflicts", all.len());
    Ok(user.page(&title, Section::Conflicts, h))
}

/// How many conflicts there are now, for the page's polling.
pub async fn conflict_count(State(st): State<Arc<AppState>>, user: User) -> Page {
    let n = st.store.conflicts().await.map_err(fail(&user))?.len();
    let mut res = axum::Json(serde_json::json!({ "count": n })).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

// ----- hosts -----------------------------------------------------------------------------------

pub async fn hosts(State(st): State<Arc<AppState>>, user: User) -> Page {
    let hosts = st.store.hosts().await.map_err(fail(&user))?;
    let now = macpool_store::now();
    let mut h = Html::default();
    w!(h, "<h1>Hosts</h1>");
    if hosts.is_empty() {
        w!(
            h,
            "<p>No host has reported an inventory yet (the agent reports at start and every minute; \
             <code>macpool inventory push</code> sends an export).</p>"
        );
    }
    w!(
        h,
        "<table class=\"hosts\"><caption class=\"sr\">Hosts</caption><thead><tr><th scope=\"col\">Host</th><th scope=\"col\">Cluster</th><th scope=\"col\">Dynamic range</th>\
         <th scope=\"col\">Cursor</th><th scope=\"col\">Blocks</th><th scope=\"col\">VMs</th><th scope=\"col\">Adapters (live / checkpoint / management OS)</th><th scope=\"col\">Last report</th><th scope=\"col\">Generation</th><th scope=\"col\">Agent strategy</th></tr></thead><tbody>"
    );
    for x in &hosts {
        w!(
            h,
            "<tr data-host=\"{}\"><th scope=\"row\"><a href=\"/search?q={}\">{}</a></th><td>{}</td><td>",
            Esc(&x.host),
            Url(&x.host),
            Esc(&x.host),
            Esc(opt(&x.cluster))
        );
        match x.dynamic_range {
            Some(r) => w!(h, "<code>{}</code>", Esc(&r.to_string())),
            None => w!(h, "—"),
        }
        if !x.overlaps.is_empty() {
            w!(
                h,
                " <span class=\"badge bad\" title=\"overlaps {}\">overlap</span>",
                Esc(&x.overlaps.join(", "))
            );
        }
        w!(h, "</td><td>");
        // An estimated cursor is not "unknown": delegate has a bound, just not the registry's.
        let estimated = x.cursor_estimated();
        match x.cursor {
            Some(c) => w!(h, "<code>{}</code>", ieee(c)),
            None if estimated => w!(h, "from the inventory"),
            None => w!(h, "unknown"),
        }
        if estimated {
            w!(
                h,
                " <span class=\"badge warn\" title=\"no readable cursor: delegate rotates on the highest dynamic MAC the inventory shows\">estimated</span>"
            );
        }
        w!(h, "</td><td>");
        for b in &x.blocks {
            w!(
                h,
                "<div><span class=\"st s-delegated h{}\">{}</span> <code>{}</code>",
                host_colour(&b.host),
                b.state.name(),
                Esc(&b.range.to_string())
            );
            if user.is_admin() && b.state != macpool_core::block::BlockState::Draining {
                w!(
                    h,
                    " <form method=\"post\" class=\"inline\" action=\"/hosts/{}/blocks/{}/drain\">",
                    Url(&b.host),
                    b.id
                );
                csrf_field(&mut h, &user.session.csrf);
                w!(h, "<button type=\"submit\">Drain…</button></form>");
            }
            w!(h, "</div>");
        }
        w!(
            h,
            "</td><td class=\"num\">{}</td><td class=\"num\">{} / {} / {}</td><td>",
            count(x.vms as u64),
            count(x.live_adapters as u64),
            count(x.checkpoint_adapters as u64),
            count(x.management_adapters as u64)
        );
        time(&mut h, x.received, now);
        w!(
            h,
            "</td><td class=\"num\">{}</td><td class=\"strategy\">{}</td></tr>",
            x.generation,
            Esc(x.strategy.as_deref().unwrap_or("unknown"))
        );
    }
    w!(h, "</tbody></table>");
    Ok(user.page("Hosts", Section::Hosts, h))
}

// ----- MAC page, panel and search --------------------------------------------------------------

/// History rows; `one_mac` leaves out the MAC and pool columns (the map's narrow side panel,
/// where every row is of the MAC it shows).
fn history_table(h: &mut Html, rows: &[HistoryRecord], now: Timestamp, one_mac: bool) {
    let mac_cols = if one_mac {
        ""
    } else {
        "<th scope=\"col\">MAC</th><th scope=\"col\">Pool</th>"
    };
    w!(
        h,
        "<table class=\"history\"><caption class=\"sr\">History</caption><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Action</th>{mac_cols}\
         <th scope=\"col\">VM</th><th scope=\"col\">Host</th><th scope=\"col\">Actor</th><th scope=\"col\">Why</th></tr></thead><tbody>"
    );
    for r in rows {
        let e = &r.entry;
        w!(h, "<tr data-id=\"{}\"><td>", r.id);
        time(h, e.at, now);
        w!(h, "</td><td>{}</td>", e.action.name());
        if !one_mac {
            w!(h, "<td>");
            if let Some(m) = e.mac {
                mac_link(h, m);
            }
            w!(
                h,
                "</td><td>{}</td>",
                Esc(e.pool.as_ref().map(|p| p.as_str()).unwrap_or(""))
            );
        }
        let vm = match (&e.vm_name, &e.vm_id) {
            (Some(n), Some(id)) => format!("{n} ({id})"),
            (None, Some(id)) => id.clone(),
            (Some(n), None) => n.clone(),
            (None, None) => String::new(),
        };
        w!(
            h,
            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            Esc(&vm),
            Esc(opt(&e.host)),
            Esc(&e.actor),
            Esc(opt(&e.reason))
        );
    }
    w!(h, "</tbody></table>");
}

/// Who has a MAC now, for the page and the map's side panel.
async fn mac_summary(
    st: &AppState,
    user: &User,
    mac: Mac,
    h: &mut Html,
    full: bool,
) -> Result<(), Response> {
    let status = st.store.mac_status(mac).await.map_err(fail(user))?;
    // the address's cell of its pool's map; a MAC outside every pool has none
    let state = match &status.pool {
        Some(pool) => match st
            .store
            .address_map(pool.to_string(), mac, 1, 1)
            .await
            .map_err(fail(user))?
            .cells
        {
            MapCells::Addresses(c) => c.into_iter().next(),
            MapCells::Summaries(_) => None,
        },
        None => None,
    };
    let now = macpool_store::now();
    let (key, label, conflict) = match &state {
        Some(c) => (c.state.key(), state_label(&c.state, now), c.conflict),
        None => ("outside", status.state().to_string(), false),
    };
    w!(h, "<h2>");
    mac_link(h, mac);
    w!(
        h,
        " <span class=\"st s-{key}\" data-state=\"{key}\">{}</span>{}</h2>",
        Esc(&label),
        if conflict {
            " <a class=\"badge bad\" href=\"/conflicts\">in conflict</a>"
        } else {
            ""
        }
    );
    if let Some(reason) = mac.invalid_reason() {
        w!(
            h,
            "<p class=\"problem\">Not a valid adapter address: {}</p>",
            Esc(reason)
        );
    }
    w!(h, "<dl class=\"facts\"><dt>Pool</dt><dd>");
    match &status.pool {
        Some(p) => w!(
            h,
            "<a href=\"/pools/{}/map?at={}\">{}</a>",
            Url(p.as_str()),
            ieee(mac),
            Esc(p.as_str())
        ),
        None => w!(h, "none (unmanaged by any pool)"),
    }
    w!(h, "</dd>");
    for l in &status.leases {
        w!(
            h,
            "<dt>Leased to</dt><dd>{} <code>{}</code> adapter {} on {} ({}, since ",
            Esc(opt(&l.owner.vm_name)),
            Esc(&l.owner.vm_id),
            Esc(&l.owner.adapter_id),
            Esc(l.owner.host.as_deref().unwrap_or("no host yet")),
            l.state.name()
        );
        time(h, l.created, now);
        w!(
            h,
            "){}</dd>",
            if l.duplicate {
                " — flagged duplicate"
            } else {
                ""
            }
        );
    }
    for x in &status.holds {
        w!(
            h,
            "<dt>Held</dt><dd>{} for <code>{}</code>: {}</dd>",
            x.reason.name(),
            Esc(&x.vm_id),
            Esc(&x.reference)
        );
    }
    if let Some(t) = status.cooling_until {
        w!(h, "<dt>Cooling</dt><dd>free ");
        time(h, t, now);
        w!(h, "</dd>");
    }
    for s in &status.seen {
        if s.management_os {
            w!(
                h,
                "<dt>Seen</dt><dd>vNIC '{}' of the management OS of {} — live</dd>",
                Esc(&s.vm_name),
                Esc(&s.host)
            );
            continue;
        }
        w!(
            h,
            "<dt>Seen</dt><dd>{} <code>{}</code> on {} — {}</dd>",
            Esc(&s.vm_name),
            Esc(&s.vm_id),
            Esc(&s.host),
            Esc(&s
                .checkpoint
                .as_deref()
                .map(|c| format!("checkpoint '{c}'"))
                .unwrap_or_else(|| "live adapter".into()))
        );
    }
    w!(h, "</dl>");
    let rows = st
        .store
        .history(HistoryFilter {
            mac: Some(mac),
            limit: if full { 500 } else { 5 },
            ..HistoryFilter::default()
        })
        .await
        .map_err(fail(user))?;
    w!(h, "<h3>History</h3>");
    if rows.is_empty() {
        w!(h, "<p>No history for this MAC.</p>");
    } else {
        history_table(h, &rows, now, !full);
    }
    if user.is_admin() {
        actions_for(h, user, &status);
    }
    if !full {
        w!(
            h,
            "<p><a href=\"/mac/{}\">Open the MAC's page</a></p>",
            ieee(mac)
        );
    }
    Ok(())
}

/// The actions an admin may start on a MAC; each shows a preview before it acts.
fn actions_for(h: &mut Html, user: &User, status: &macpool_core::authority::MacStatus) {
    let mac = ieee(status.mac);
    w!(h, "<div class=\"actions\">");
    for l in &status.leases {
        w!(h, "<form method=\"post\" action=\"/mac/{mac}/release\">");
        csrf_field(h, &user.session.csrf);
        w!(
            h,
            "<input type=\"hidden\" name=\"vm_id\" value=\"{}\"><button type=\"submit\">Release from {}…</button></form>",
            Esc(&l.owner.vm_id),
            Esc(l.owner.vm_name.as_deref().unwrap_or(&l.owner.vm_id))
        );
    }
    for x in &status.holds {
        w!(h, "<form method=\"post\" action=\"/mac/{mac}/unhold\">");
        csrf_field(h, &user.session.csrf);
        w!(
            h,
            "<input type=\"hidden\" name=\"vm_id\" value=\"{}\"><input type=\"hidden\" name=\"reason\" value=\"{}\">\
             <input type=\"hidden\" name=\"ref\" value=\"{}\"><button type=\"submit\">Unhold ({})…</button></form>",
            Esc(&x.vm_id),
            x.reason.name(),
            Esc(&x.reference),
            x.reason.name()
        );
    }
    if status.pool.is_some() {
        w!(
            h,
            "<details class=\"action\"><summary>Hold this MAC</summary><form method=\"post\" action=\"/mac/{mac}/hold\">"
        );
        csrf_field(h, &user.session.csrf);
        w!(
            h,
            "<label for=\"h-vm\">VM id</label><input id=\"h-vm\" name=\"vm_id\" required>\
             <label for=\"h-reason\">Reason</label><select id=\"h-reason\" name=\"reason\">\
             <option>checkpoint</option><option>template</option><option>backup</option><option>departed</option></select>\
             <label for=\"h-ref\">Reference</label><input id=\"h-ref\" name=\"ref\" placeholder=\"checkpoint or template name\">\
             <button type=\"submit\">Preview</button></form></details>"
        );
    }
    w!(h, "</div>");
}

pub async fn mac_page(
    State(st): State<Arc<AppState>>,
    user: User,
    Path(mac): Path<String>,
) -> Page {
    let m = Mac::parse(&mac).map_err(|e| bad(&user, format!("'{mac}': {e}")))?;
    let mut h = Html::default();
    w!(h, "<h1>MAC {}</h1>", ieee(m));
    mac_summary(&st, &user, m, &mut h, true).await?;
    w!(h, "<section class=\"spellings\"><h3>Every spelling</h3>");
    spelling_list(&mut h, m);
    w!(h, "</section>");
    Ok(user.page(&ieee(m), Section::None, h))
}

/// The map's side panel: the same summary, as a fragment.
pub async fn mac_panel(
    State(st): State<Arc<AppState>>,
    user: User,
    Path(mac): Path<String>,
) -> Page {
    let m = Mac::parse(&mac).map_err(|e| bad(&user, format!("'{mac}': {e}")))?;
    let mut h = Html::default();
    mac_summary(&st, &user, m, &mut h, false).await?;
    Ok(html_response(StatusCode::OK, h.0))
}

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// Reads hex digits of a partial MAC in any spelling ("5D-F0-00-7", "00155df0").
fn hex_digits(s: &str) -> Option<String> {
    let digits: String = s
        .chars()
        .filter(|c| !matches!(c, '-' | ':' | '.' | ' '))
        .collect();
    (digits.len() >= 4 && digits.len() <= 12 && digits.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| digits.to_ascii_uppercase())
}

pub async fn search(
    State(st): State<Arc<AppState>>,
    user: User,
    Query(q): Query<SearchQuery>,
) -> Page {
    let term = q.q.trim().to_string();
    if term.is_empty() {
        return Err(bad(&user, "type a MAC, a VM name or id, or a host".into()));
    }
    if term.len() > 256 {
        return Err(bad(&user, "a search is at most 256 bytes".into()));
    }
    if let Ok(m) = Mac::parse(&term) {
        return Ok(Redirect::to(&format!("/mac/{}", ieee(m))).into_response());
    }
    let leases = st
        .store
        .leases(Default::default())
        .await
        .map_err(fail(&user))?;
    let lower = term.to_lowercase();
    let partial = hex_digits(&term);
    let mut hits: BTreeMap<Mac, String> = BTreeMap::new();
    for l in &leases {
        let o = &l.owner;
        let hex = l.mac.display(MacFormat::Hyperv).to_string();
        let why = if partial.as_deref().is_some_and(|p| hex.contains(p)) {
            Some("MAC".to_string())
        } else if o.vm_id.to_lowercase() == lower {
            Some(format!("VM id {}", o.vm_id))
        } else if o
            .vm_name
            .as_deref()
            .is_some_and(|n| n.to_lowercase().contains(&lower))
        {
            Some(format!("VM {}", opt(&o.vm_name)))
        } else if o.host.as_deref().is_some_and(|h| h.to_lowercase() == lower) {
            Some(format!("host {}", opt(&o.host)))
        } else {
            None
        };
        if let Some(w) = why {
            hits.entry(l.mac).or_insert(w);
        }
        if hits.len() >= 500 {
            break;
        }
    }
    let hosts = st.store.hosts().await.map_err(fail(&user))?;
    let host_hit: Vec<_> = hosts
        .iter()
        .filter(|x| x.host.to_lowercase() == lower)
        .collect();
    if hits.len() == 1 && host_hit.is_empty() {
        let m = *hits.keys().next().unwrap();
        return Ok(Redirect::to(&format!("/mac/{}", ieee(m))).into_response());
    }
    let mut h = Html::default();
    w!(h, "<h1>Search: {}</h1>", Esc(&term));
    for x in host_hit {
        w!(
            h,
            "<p>Host <strong>{}</strong>: {} VMs, last report generation {} — <a href=\"/hosts\">hosts</a>, \
             <a href=\"/history?host={}\">its history</a></p>",
            Esc(&x.host),
            x.vms,
            x.generation,
            Url(&x.host)
        );
    }
    if hits.is_empty() {
        w!(
            h,
            "<p>No lease matches. MACs only seen in inventories are found by their full address.</p>"
        );
    } else {
        let says = match hits.len() {
            1 => "1 MAC matches".to_string(),
            n if n >= 500 => format!("{n} MACs match (the first {n})"),
            n => format!("{n} MACs match"),
        };
        w!(h, "<p>{says}.</p><ul class=\"hits\">");
        for (m, why) in &hits {
            w!(h, "<li>");
            mac_link(&mut h, *m);
            w!(h, " — {}</li>", Esc(why));
        }
        w!(h, "</ul>");
    }
    Ok(user.page("Search", Section::None, h))
}

// ----- history ---------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct HistoryQuery {
    actor: Option<String>,
    action: Option<String>,
    pool: Option<String>,
    vm: Option<String>,
    host: Option<String>,
    mac: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<u64>,
}

pub async fn history(
    State(st): State<Arc<AppState>>,
    user: User,
    Query(q): Query<HistoryQuery>,
) -> Page {
    let some = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let action = match some(&q.action) {
        Some(a) => Some(
            HistoryAction::parse(&a).ok_or_else(|| bad(&user, format!("unknown action '{a}'")))?,
        ),
        None => None,
    };
    let when = |s: Option<String>, what: &str| -> Result<Option<Timestamp>, Response> {
        s.map(|s| {
            parse_time(&s)
                .or_else(|_| parse_time(&format!("{s}T00:00:00Z")))
                .map_err(|_| {
                    bad(
                        &user,
                        format!("{what} '{s}': expected a date (2026-12-06) or an RFC 3339 time"),
                    )
                })
        })
        .transpose()
    };
    let filter = HistoryFilter {
        mac: some(&q.mac)
            .map(|m| Mac::parse(&m).map_err(|e| bad(&user, format!("mac '{m}': {e}"))))
            .transpose()?,
        vm_id: some(&q.vm),
        actor: some(&q.actor),
        action,
        pool: some(&q.pool),
        host: some(&q.host),
        since: when(some(&q.since), "since")?,
        until: when(some(&q.until), "until")?,
        limit: PAGE_ROWS as u32,
        before: q.before,
    };
    let rows = st.store.history(filter).await.map_err(fail(&user))?;
    let mut h = Html::default();
    w!(
        h,
        "<h1>History</h1><form class=\"filters\" method=\"get\" action=\"/history\">"
    );
    for (name, label, value) in [
        ("actor", "Actor", &q.actor),
        ("pool", "Pool", &q.pool),
        ("vm", "VM id", &q.vm),
        ("host", "Host", &q.host),
        ("mac", "MAC", &q.mac),
        ("since", "Since", &q.since),
        ("until", "Until", &q.until),
    ] {
        w!(
            h,
            "<label for=\"h-{name}\">{label}</label><input id=\"h-{name}\" name=\"{name}\" value=\"{}\">",
            Esc(opt(value))
        );
    }
    w!(
        h,
        "<label for=\"h-action\">Action</label><select id=\"h-action\" name=\"action\"><option value=\"\">any</option>"
    );
    for a in HistoryAction::ALL {
        let sel = if action == Some(a) { " selected" } else { "" };
        w!(h, "<option{sel}>{}</option>", a.name());
    }
    w!(h, "</select><button type=\"submit\">Filter</button></form>");
    let now = macpool_store::now();
    if rows.is_empty() {
        w!(h, "<p>No history matches.</p>");
    } else {
        history_table(&mut h, &rows, now, false);
    }
    if rows.len() == PAGE_ROWS
        && let Some(last) = rows.last()
    {
        let keep: Vec<String> = [
            ("actor", &q.actor),
            ("action", &q.action),
            ("pool", &q.pool),
            ("vm", &q.vm),
            ("host", &q.host),
            ("mac", &q.mac),
            ("since", &q.since),
            ("until", &q.until),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| format!("{k}={}", Url(v))))
        .collect();
        w!(
            h,
            "<p class=\"pager\"><a rel=\"next\" href=\"/history?{}&amp;before={}\">older</a></p>",
            keep.join("&amp;"),
            last.id
        );
    }
    Ok(user.page("History", Section::History, h))
}

// ----- tokens ----------------------------------------------------------------------------------

pub async fn tokens(State(st): State<Arc<AppState>>, user: User) -> Page {
    user.caller
        .require_admin()
        .map_err(|e| error_page(Some(&user), e))?;
    let all = st.store.tokens().await.map_err(fail(&user))?;
    let now = macpool_store::now();
    let mut h = Html::default();
    w!(
        h,
        "<h1>Tokens</h1><table class=\"tokens\"><caption class=\"sr\">Tokens</caption><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Id</th><th scope=\"col\">Role</th><th scope=\"col\">Host</th>\
         <th scope=\"col\">Created</th><th scope=\"col\">Revoked</th><th scope=\"col\">Actions</th></tr></thead><tbody>"
    );
    for t in &all {
        w!(
            h,
            "<tr data-token=\"{}\"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>",
            Esc(&t.id),
            Esc(&t.name),
            Esc(&t.id),
            t.role.name(),
            Esc(opt(&t.host))
        );
        time(&mut h, t.created, now);
        w!(h, "</td><td>");
        match t.revoked {
            Some(r) => time(&mut h, r, now),
            None => w!(h, "—"),
        }
        w!(h, "</td><td>");
        if t.revoked.is_none() {
            w!(
                h,
                "<form method=\"post\" class=\"inline\" action=\"/tokens/{}/revoke\">",
                Url(&t.id)
            );
            csrf_field(&mut h, &user.session.csrf);
            w!(h, "<button type=\"submit\">Revoke…</button></form>");
        }
        w!(h, "</td></tr>");
    }
    w!(
        h,
        "</tbody></table><details class=\"action\"><summary>Create a token</summary><form method=\"post\" action=\"/tokens\">"
    );
    csrf_field(&mut h, &user.session.csrf);
    w!(
        h,
        "<label for=\"t-name\">Name</label><input id=\"t-name\" name=\"name\" required>\
         <label for=\"t-role\">Role</label><select id=\"t-role\" name=\"role\"><option>reader</option><option>agent</option><option>admin</option></select>\
         <label for=\"t-host\">Host (agent tokens)</label><input id=\"t-host\" name=\"host\">\
         <button type=\"submit\">Preview</button></form></details>"
    );
    Ok(user.page("Tokens", Section::Tokens, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_escapes_first_then_marks_backticked_commands_as_code() {
        assert_eq!(
            prose("run `macpool hyperv ranges` <now>"),
            "run <code>macpool hyperv ranges</code> &lt;now&gt;"
        );
        assert_eq!(prose("`<b>`"), "<code>&lt;b&gt;</code>");
        assert_eq!(prose("no code"), "no code");
    }

    #[test]
    fn partial_macs_are_hex_digits_in_any_spelling() {
        assert_eq!(hex_digits("5D-F0-00-7").as_deref(), Some("5DF0007"));
        assert_eq!(hex_digits("00:15:5d"), Some("00155D".into()));
        assert_eq!(hex_digits("abc"), None, "too short to mean a MAC");
        assert_eq!(hex_digits("desk-01"), None);
    }
}
