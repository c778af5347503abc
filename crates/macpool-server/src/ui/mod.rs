//! The dashboard: server-rendered HTML at `/`, every asset compiled into the binary, a little
//! progressive JavaScript (pages work read-only without it). **Invariant:** no rules and no SQL
//! here: pages read through the same store use cases as the API, and actions call the very
//! functions the API handlers call (`routes::*::*_in`), so the same checks apply to both.

mod actions;
mod audit;
pub mod html;
mod pages;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use macpool_store::{Role, Store};

use crate::AppState;
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::w;
use html::{Esc, Html, Section, Viewer};

/// Scripts only from this origin, no inline script or style, never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Every dashboard route. Mounted beside the API; `/api/v1` is not touched.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/pools") }))
        .route("/login", get(pages::login_form).post(login))
        .route("/logout", post(logout))
        .route("/assets/{file}", get(asset))
        .route("/pools", get(pages::pools).post(actions::create_pool))
        .route("/pools/{pool}", get(pages::pool_home))
        .route("/pools/{pool}/map", get(pages::map))
        .route("/pools/{pool}/addresses", get(pages::addresses))
        .route("/pools/{pool}/free", get(pages::free_runs))
        .route("/pools/{pool}/allocate", post(actions::allocate))
        .route("/pools/{pool}/edit", post(actions::edit_pool))
        .route("/conflicts", get(pages::conflicts))
        .route("/conflicts/count", get(pages::conflict_count))
        .route("/hosts", get(pages::hosts))
        .route(
            "/hosts/{host}/blocks/{id}/drain",
            post(actions::drain_block),
        )
        .route("/mac/{mac}", get(pages::mac_page))
        .route("/mac/{mac}/panel", get(pages::mac_panel))
        .route("/mac/{mac}/release", post(actions::release))
        .route("/mac/{mac}/hold", post(actions::hold))
        .route("/mac/{mac}/unhold", post(actions::unhold))
        .route("/search", get(pages::search))
        .route("/history", get(pages::history))
        .route(
            "/audit",
            get(audit::form)
                .post(audit::upload)
                .layer(axum::extract::DefaultBodyLimit::max(
                    audit::MAX_AUDIT_BYTES + 64 * 1024,
                )),
        )
        .route("/tokens", get(pages::tokens).post(actions::create_token))
        .route("/tokens/{id}/revoke", post(actions::revoke_token))
        .layer(middleware::from_fn(headers))
        // pages are text with much repetition (a map page is ~50 KB, ~5 KB gzipped)
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
}

/// Security headers on every dashboard response.
async fn headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

/// The signed-in admin or reader of a dashboard request.
pub struct User {
    pub caller: Caller,
    pub session: session::Session,
    session_id: String,
}

impl User {
    pub fn viewer(&self) -> Viewer<'_> {
        Viewer {
            name: &self.caller.token.name,
            role: self.caller.token.role.name(),
            csrf: &self.session.csrf,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.caller.token.role == Role::Admin
    }

    /// A whole page for this user.
    pub fn page(&self, title: &str, section: Section, body: Html) -> Response {
        html_response(
            StatusCode::OK,
            html::page(title, section, Some(&self.viewer()), body),
        )
    }
}

/// Not signed in (or the session ended): to the sign-in page.
pub struct SignIn;

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        Redirect::to("/login").into_response()
    }
}

impl FromRequestParts<Arc<AppState>> for User {
    type Rejection = SignIn;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Self, SignIn> {
        let id = session::cookie(&parts.headers, session::COOKIE_NAME).ok_or(SignIn)?;
        let session = st.sessions.get(&id).ok_or(SignIn)?;
        st.tokens.refresh_if_stale(|| st.store.tokens()).await;
        match st.tokens.active(&session.token_id) {
            Some(token) if token.role != Role::Agent => Ok(User {
                caller: Caller { token },
                session,
                session_id: id,
            }),
            _ => {
                st.sessions.remove(&id);
                Err(SignIn)
            }
        }
    }
}

pub fn html_response(status: StatusCode, body: String) -> Response {
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}

/// A refusal or failure as a page: the same status and words the API would give.
pub fn error_page(user: Option<&User>, e: ApiError) -> Response {
    let mut h = Html::default();
    w!(
        h,
        "<h1>{} {}</h1><p class=\"problem\" role=\"alert\"><strong>{}</strong> {}</p>\
         <p>Go back with the browser, or to the <a href=\"/pools\">pools</a>.</p>",
        e.status.as_u16(),
        e.status.canonical_reason().unwrap_or(""),
        Esc(e.slug),
        Esc(&e.detail)
    );
    let viewer = user.map(User::viewer);
    html_response(
        e.status,
        html::page("Error", Section::None, viewer.as_ref(), h),
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    csrf: String,
}

/// Signs in with a macpool token (admin or reader). The form carries a pre-session CSRF value
/// bound to a cookie, so a cross-site page cannot sign a browser into an attacker's session.
async fn login(
    State(st): State<Arc<AppState>>,
    req_headers: axum::http::HeaderMap,
    extensions: axum::http::Extensions,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let client = auth::client_address(&extensions);
    if !pages::login_csrf_ok(&req_headers, &form.csrf) {
        return pages::login_page(
            StatusCode::FORBIDDEN,
            "The sign-in form expired; please try again.",
        );
    }
    st.tokens.refresh_if_stale(|| st.store.tokens()).await;
    let token = match st.tokens.verify_from(form.token.trim(), client) {
        Ok(token) => token,
        Err(refusal) => {
            let e = auth::refused(&st, refusal);
            st.metrics.count_error(e.slug);
            return pages::login_page(e.status, &e.detail);
        }
    };
    if token.role == Role::Agent {
        return pages::login_page(
            StatusCode::FORBIDDEN,
            "Agent tokens cannot sign in to the dashboard; use an admin or reader token.",
        );
    }
    let (id, _csrf) = st.sessions.create(&token.id);
    tracing::info!(token = %token.name, "dashboard sign-in");
    let mut res = Redirect::to("/pools").into_response();
    set_cookie(&mut res, &session::set_cookie(&id, st.config.tls));
    set_cookie(&mut res, &pages::clear_login_cookie(st.config.tls));
    res
}

#[derive(serde::Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(st): State<Arc<AppState>>,
    user: User,
    axum::Form(form): axum::Form<CsrfOnly>,
) -> Response {
    if !session::csrf_matches(&user.session, Some(&form.csrf)) {
        return error_page(Some(&user), csrf_refused());
    }
    st.sessions.remove(&user.session_id);
    let mut res = Redirect::to("/login").into_response();
    set_cookie(&mut res, &session::set_cookie("", st.config.tls));
    res
}

/// A store failure as a page, for `map_err`.
pub fn fail(user: &User) -> impl Fn(macpool_store::StoreError) -> Response + '_ {
    move |e| error_page(Some(user), e.into())
}

/// Bad input named precisely, as a 400 page.
pub fn bad(user: &User, detail: String) -> Response {
    error_page(Some(user), ApiError::bad_request("invalid-input", detail))
}

pub fn csrf_refused() -> ApiError {
    ApiError::forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
}

fn set_cookie(res: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The compiled-in assets.
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static str, &'static str) = match file.as_str() {
        "style.css" => (include_str!("assets/style.css"), "text/css; charset=utf-8"),
        "app.js" => (
            include_str!("assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "favicon.svg" => (include_str!("assets/favicon.svg"), "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}
