//! The dashboard's actions. Each one: checks the form's CSRF token, checks the role (the same
//! check the API makes, so a hand-made POST by a reader is refused), shows a preview of exactly
//! what it will do (like PowerShell's -WhatIf) and acts only when that preview is confirmed —
//! through the very function the API handler calls, so it lands in the history with the
//! signed-in token's name as actor.
// A page's error is itself a page (a `Response`), as axum handlers return it.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use macpool_api::dto::{
    AllocateBody, HoldBody, PoolCreate, PoolEditBody, ReleaseBody, TokenCreate, UnholdBody,
};
use macpool_core::Mac;
use macpool_store::Store;

use super::html::{Esc, Html, Section, Url, csrf_field, ieee};
use super::{User, bad, csrf_refused, error_page};
use crate::AppState;
use crate::error::ApiError;
use crate::routes::{leases, pools, tokens};
use crate::w;

type Form = axum::Form<BTreeMap<String, String>>;

fn field<'a>(f: &'a BTreeMap<String, String>, k: &str) -> Option<&'a str> {
    f.get(k).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// CSRF first (a forged cross-site POST learns nothing), then the role.
fn admit(user: &User, f: &BTreeMap<String, String>, admin: bool) -> Result<(), Response> {
    if !super::session::csrf_matches(&user.session, f.get("csrf").map(String::as_str)) {
        return Err(error_page(Some(user), csrf_refused()));
    }
    let allowed = if admin {
        user.caller.require_admin()
    } else {
        user.caller.require_writer()
    };
    allowed.map_err(|e| error_page(Some(user), e))
}

fn confirmed(f: &BTreeMap<String, String>) -> bool {
    f.get("confirm").is_some_and(|v| v == "1")
}

/// The preview: what will happen, and a form that repeats every field with `confirm=1`;
/// Cancel leads to `back`, the page the action was started from.
fn preview(
    user: &User,
    action: &str,
    back: &str,
    f: &BTreeMap<String, String>,
    what: Html,
) -> Response {
    let mut h = Html::default();
    w!(h, "<h1>Preview</h1><section class=\"preview\">");
    h.0.push_str(&what.0);
    w!(
        h,
        "</section><form method=\"post\" action=\"{}\">",
        Esc(action)
    );
    csrf_field(&mut h, &user.session.csrf);
    for (k, v) in f {
        if k == "csrf" || k == "confirm" {
            continue;
        }
        w!(
            h,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            Esc(k),
            Esc(v)
        );
    }
    w!(
        h,
        "<button type=\"submit\" name=\"confirm\" value=\"1\">Confirm</button> \
         <a href=\"{}\">Cancel</a></form>",
        Esc(back)
    );
    user.page("Preview", Section::None, h)
}

fn done(user: &User, title: &str, body: Html) -> Response {
    let mut h = Html::default();
    w!(h, "<h1>{}</h1>", Esc(title));
    h.0.push_str(&body.0);
    w!(h, "<p><a href=\"/history\">See it in the history</a></p>");
    user.page(title, Section::None, h)
}

fn refused(user: &User, e: ApiError) -> Response {
    error_page(Some(user), e)
}

/// Allocate next / N (consecutive) / a specific MAC in a pool.
pub async fn allocate(
    State(st): State<Arc<AppState>>,
    user: User,
    Path(pool): Path<String>,
    axum::Form(f): Form,
) -> Result<Response, Response> {
    admit(&user, &f, false)?;
    let vm_id = field(&f, "vm_id")
        .ok_or_else(|| bad(&user, "a VM id is required".into()))?
        .to_string();
    let count: u32 = match field(&f, "count") {
        Some(c) => c
            .parse()
            .map_err(|_| bad(&user, format!("count '{c}' is not a number")))?,
        None => 1,
    };
    let consecutive = field(&f, "consecutive").is_some();
    let mut mac = field(&f, "mac").map(str::to_string);
    if consecutive && mac.is_none() && count > 1 {
        // the first free run long enough: a read here, re-checked by the allocation itself
        let avail = st
            .store
            .available(pool.clone(), u64::MAX)
            .await
            .map_err(|e| refused(&user, e.into()))?;
        let run = avail
            .runs
            .iter()
            .find(|(a, b)| b.to_u64() - a.to_u64() + 1 >= u64::from(count))
            .ok_or_else(|| {
                refused(
                    &user,
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "pool-exhausted",
                        format!("pool '{pool}' has no run of {count} consecutive free addresses"),
                    ),
                )
            })?;
        mac = Some(ieee(run.0));
    }
    if !confirmed(&f) {
        let mut h = Html::default();
        let which = match &mac {
            Some(m) if count > 1 => format!("{count} consecutive addresses from {m}"),
            Some(m) => format!("the address {m}"),
            None if count > 1 => format!("the next {count} free addresses"),
            None => "the next free address".to_string(),
        };
        w!(
            h,
            "<p>Allocate <strong>{}</strong> of pool <strong>{}</strong> to VM <code>{}</code>{}.</p>\
             <p>The VM keeps {} until released; asking again for the same VM returns the same lease.</p>",
            Esc(&which),
            Esc(&pool),
            Esc(&vm_id),
            Esc(&field(&f, "vm_name")
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()),
            if count > 1 { "them" } else { "it" }
        );
        let mut shown = f.clone();
        if let Some(m) = &mac {
            shown.insert("mac".into(), m.clone());
        }
        return Ok(preview(
            &user,
            &format!("/pools/{}/allocate", Url(&pool)),
            &format!("/pools/{}/free", Url(&pool)),
            &shown,
            h,
        ));
    }
    let body = AllocateBody {
        pool: None,
        vm_id,
        adapter_id: None,
        vm_name: field(&f, "vm_name").map(str::to_string),
        host: None,
        cluster: None,
        mac,
        count: Some(count),
        reason: Some("dashboard".into()),
    };
    let (_, crate::extract::Json(result)) =
        leases::allocate_in(&st, &user.caller, pool.clone(), body)
            .await
            .map_err(|e| refused(&user, e))?;
    let mut h = Html::default();
    w!(h, "<ul>");
    for a in &result.allocations {
        w!(
            h,
            "<li><a href=\"/mac/{}\"><code>{}</code></a>{}</li>",
            Esc(&a.lease.mac),
            Esc(&a.lease.mac),
            if a.existing {
                " (already leased to this VM)"
            } else {
                ""
            }
        );
    }
    w!(h, "</ul>");
    Ok(done(&user, "Allocated", h))
}

pub async fn release(
    State(st): State<Arc<AppState>>,
    user: User,
    Path(mac): Path<String>,
    axum::Form(f): Form,
) -> Result<Response, Response> {
    admit(&user, &f, false)?;
    let vm_id = field(&f, "vm_id").map(str::to_string);
    if !confirmed(&f) {
        let status = Mac::parse(&mac).ok().map(|m| st.store.mac_status(m));
        let mut cooldown = String::new();
        if let Some(fut) = status
            && let Ok(s) = fut.await
            && let Some(p) = s.pool
            && let Ok(v) = st.store.pool(p.to_string()).await
        {
            cooldown = humantime::format_duration(v.spec.policy.cooldown).to_string();
        }
        let mut h = Html::default();
        w!(
            h,
            "<p>Release <code>{}</code>{}. It then cools down{} before anyone can be given it again.</p>",
            Esc(&mac),
            Esc(&vm_id
                .as_deref()
                .map(|v| format!(" from VM {v}"))
                .unwrap_or_default()),
            Esc(&if cooldown.is_empty() {
                String::new()
            } else {
                format!(" for {cooldown}")
            })
        );
        return Ok(preview(
            &user,
            &format!("/mac/{}/release", Url(&mac)),
            &format!("/mac/{}", Url(&mac)),
            &f,
            h,
        ));
    }
    let released = leases::release_in(
        &st,
        &user.caller,
        ReleaseBody {
            mac: Some(mac.clone()),
            vm_id,
            adapter_id: None,
        },
    )
    .await
    .map_err(|e| refused(&user, e))?;
    let mut h = Html::default();
    for r in &released {
        w!(
            h,
            "<p><code>{}</code> released from VM <code>{}</code>; {}</p>",
            ieee(r.lease.mac),
            Esc(&r.lease.owner.vm_id),
            Esc(&match r.cooling_until {
                Some(t) => format!("free again at {t}"),
                None => "something else still keeps it".into(),
            })
        );
    }
    Ok(done(&user, "Released", h))
}

pub async fn hold(
    State(st): State<Arc<AppState>>,
    user: User,
    Path(mac): Path<String>,
    axum::Form(f): Form,
) -> Result<Response, Response> {
    admit(&user, &f, false)?;
    let vm_id = field(&f, "vm_id")
        .ok_or_else(|| bad(&user, "a VM id is required".into()))?
        .to_string();
    let reason = field(&f, "reason").unwrap_or("checkpoint").to_string();
    let reference = field(&f, "ref").map(str::to_string);
    if !confirmed(&f) {
        let mut h = Html::default();
        w!(
            h,
            "<p>Hold <code>{}</code> for VM <code>{}</code> ({}{}): nobody else is given it until the hold is removed.</p>",
            Esc(&mac),
            Esc(&vm_id),
            Esc(&reason),
            Esc(&reference
                .as_deref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default())
        );
        return Ok(preview(
            &user,
            &format!("/mac/{}/hold", Url(&mac)),
            &format!("/mac/{}", Url(&mac)),
            &f,
            h,
        ));
    }
    let held = leases::hold_in(
        &st,
        &user.caller,
        HoldBody {
            mac: mac.clone(),
            vm_id,
            reason,
            reference,
        },
    )
    .await
    .map_err(|e| refused(&user, e))?;
    let mut h = Html::default();
    w!(
        h,
        "<p><a href=\"/mac/{}\"><code>{}</code></a> is held ({}).</p>",
        ieee(held.mac),
        ieee(held.mac),
        held.reason.name()
    );
    Ok(done(&user, "Held", h))
}

pub async fn unhold(
    State(st): State<Arc<AppState>>,
    user: User,
    Path(mac): Path<String>,
    axum::Form(f): Form,
) -> Result<Response, Response> {
    admit(&user, &f, false)?;
    let vm_id = field(&f, "vm_id")
        .ok_or_else(|| bad(&user, "a VM id is required".into()))?
        .to_string();
    let reason = field(&f, "reason").map(str::to_string);
    let reference = field(&f, "ref").map(str::to_string);
    if !confirmed(&f) {
        let mut h = Html::default();
        w!(
            h,
            "<p>Remove VM <code>{}</code>'s {} hold on <code>{}</code>. If nothing else keeps it, the MAC cools down and then returns to the pool.</p>",
            Esc(&vm_id),
            Esc(reason.as_deref().unwrap_or("every")),
            Esc(&mac)
        );
        return Ok(preview(
            &user,
            &format!("/mac/{}/unhold", Url(&mac)),
            &format!("/mac/{}", Url(&mac)),
            &f,
            h,
        ));
    }
    let removed = leases::unhold_in(
        &st,
        &user.caller,
        UnholdBody {
            mac: mac.clone(),
            vm_id,
            reason,
            reference,
        },
    )
    .await
    .map_err(|e| refused(&user, e))?;
    let mut h = Html::default();
    w!(h, "<p>{} hold(s) removed.</p>", removed.len());
    Ok(done(&user, "Unheld", h))
}

pub async fn drain_block(
    State(st): State<Arc<AppState>>,
    user: User,
    Path((host, id)): Path<(String, u64)>,
    axum::Form(f): Form,
) -> Result<Response, Response> {
    admit(&user, &f, true)?;
    if !confirmed(&f) {
        let mut h = Html::default();
        w!(
            h,
            "<p>Drain block {id} of host <strong>{}</strong>: the host's agent moves on to a new block, \
             and this one returns to the pool once no VM, checkpoint or host range uses its addresses \
             and the pool's cooldown has passed.</p>",
            Esc(&host)
        );
        return Ok(preview(
            &user,
            &format!("/hosts/{}/blocks/{id}/drain", Url(&host)),
            "/hosts",
            &f,
            h,
        ));
    }
    let b = st
        .store
        .drain_block(user.caller.actor(), host, id)
        .await
        .map_err(|e| refused(&user, e.into()))?;
    let mut h = Html::default();
    w!(
        h,
        "<p>Block {} (<code>{}</code>) of {} is {}.</p>",
        b.id,
        Esc(&b.range.to_string()),
        Esc(&b.host),
        b.state.name()
    );
    Ok(done(&user, "Draining", h))
}

pub async fn create_pool(
    State(st): State<Arc<AppState>>,
    user: User,
    axum::Form(f): Form,
) -> Result<Response, Response> {
    admit(&user, &f, true)?;
    let name = field(&f, "name").unwrap_or("").to_string();
    let range = field(&f, "range").unwrap_or("").to_string();
    let cooldown = field(&f, "cooldown").map(str::to_string);
    let body = PoolCreate {
        name: name.clone(),
        ranges: vec![range.clone()],
        order: None,
        cooldown: cooldown.clone(),
        duplicates: None,
        low_water: None,
    };
    // the same validation as the API, before the preview
    let spec = crate::input::pool_spec(body.clone()).map_err(|e| refused(&user, e))?;
    if !confirmed(&f) {
        let mut h = Html::default();
        w!(
            h,
            "<p>Create pool <strong>{}</strong> with {} addresses (<code>{}</code>), cooldown {}.</p>",
            Esc(&name),
            spec.size(),
            Esc(&range),
            Esc(cooldown.as_deref().unwrap_or("24h"))
        );
        return Ok(preview(&user, "/pools", "/pools", &f, h));
    }
    let view = pools::create_pool_in(&st, &user.caller, body)
        .await
        .map_err(|e| refused(&user, e))?;
    let mut h = Html::default();
    w!(
        h,
        "<p><a href=\"/pools/{}/map\">{}</a>: {} addresses.</p>",
        Url(view.spec.name.as_str()),
        Esc(view.spec.name.as_str()),
        view.usage.size
    );
    Ok(done(&user, "Pool created", h))
}

pub async fn create_token(
    State(st): State<Arc<AppState>>,
    user: User,
    axum::Form(f): Form,
) -> Result<Response, Response> {
    admit(&user, &f, true)?;
    let body = TokenCreate {
        name: field(&f, "name").unwrap_or("").to_string(),
        role: field(&f, "role").unwrap_or("reader").to_string(),
        host: field(&f, "host").map(str::to_string),
    };
    if !confirmed(&f) {
        let mut h = Html::default();
        w!(
            h,
            "<p>Create a <strong>{}</strong> token named <strong>{}</strong>{}. Its secret is shown once, on the next page.</p>",
            Esc(&body.role),
            Esc(&body.name),
            Esc(&body
                .host
                .as_deref()
                .map(|x| format!(" for host {x}"))
                .unwrap_or_default())
        );
        return Ok(preview(&user, "/tokens", "/tokens", &f, h));
    }
    let created = tokens::create_token_in(&st, &user.caller, body)
        .await
        .map_err(|e| refused(&user, e))?;
    let mut h = Html::default();
    w!(
        h,
        "<p>Token <strong>{}</strong> ({}). Copy it now; it is not shown again:</p>\
         <p><code class=\"secret\">{}</code> <button type=\"button\" class=\"copy\" data-copy=\"{}\">copy</button></p>",
        Esc(&created.info.name),
        Esc(&created.info.role),
        Esc(&created.token),
        Esc(&created.token)
    );
    Ok(done(&user, "Token created", h))
}

pub async fn revoke_token(
    State(st): State<Arc<AppState>>,
    user: User,
    Path(id): Path<String>,
    axum::Form(f): Form,
) -> Result<Response, Response> {
    admit(&user, &f, true)?;
    if !confirmed(&f) {
        let mut h = Html::default();
        w!(
            h,
            "<p>Revoke token <code>{}</code>. Whatever uses it (an agent, a script, a dashboard session) is refused from then on.</p>",
            Esc(&id)
        );
        return Ok(preview(
            &user,
            &format!("/tokens/{}/revoke", Url(&id)),
            "/tokens",
            &f,
            h,
        ));
    }
    let t = tokens::revoke_token_in(&st, &user.caller, id)
        .await
        .map_err(|e| refused(&user, e))?;
    let mut h = Html::default();
    w!(
        h,
        "<p>Token {} ({}) is revoked.</p>",
        Esc(&t.name),
        t.role.name()
    );
    Ok(done(&user, "Revoked", h))
}

/// Edit a pool's policy or add a range.
pub async fn edit_pool(
    State(st): State<Arc<AppState>>,
    user: User,
    Path(pool): Path<String>,
    axum::Form(f): Form,
) -> Result<Response, Response> {
    admit(&user, &f, true)?;
    let body = PoolEditBody {
        add_ranges: field(&f, "add_range")
            .map(str::to_string)
            .into_iter()
            .collect(),
        cooldown: field(&f, "cooldown").map(str::to_string),
        low_water: field(&f, "low_water").map(str::to_string),
        ..PoolEditBody::default()
    };
    // the same validation as the API, before the preview
    crate::input::pool_edit(body.clone()).map_err(|e| refused(&user, e))?;
    if !confirmed(&f) {
        let mut changes = Vec::new();
        if let Some(r) = body.add_ranges.first() {
            changes.push(format!("add the range {r}"));
        }
        if let Some(c) = &body.cooldown {
            changes.push(format!("set the cooldown to {c}"));
        }
        if let Some(l) = &body.low_water {
            changes.push(format!("set the low-water mark to {l}"));
        }
        if changes.is_empty() {
            return Err(bad(&user, "nothing to change".into()));
        }
        let mut h = Html::default();
        w!(
            h,
            "<p>In pool <strong>{}</strong>: {}.</p>",
            Esc(&pool),
            Esc(&changes.join("; "))
        );
        return Ok(preview(
            &user,
            &format!("/pools/{}/edit", Url(&pool)),
            &format!("/pools/{}/map", Url(&pool)),
            &f,
            h,
        ));
    }
    let view = pools::edit_pool_in(&st, &user.caller, pool, body)
        .await
        .map_err(|e| refused(&user, e))?;
    let mut h = Html::default();
    w!(
        h,
        "<p><a href=\"/pools/{}/map\">{}</a>: {} addresses, cooldown {}.</p>",
        Url(view.spec.name.as_str()),
        Esc(view.spec.name.as_str()),
        view.usage.size,
        humantime::format_duration(view.spec.policy.cooldown)
    );
    Ok(done(&user, "Pool changed", h))
}
