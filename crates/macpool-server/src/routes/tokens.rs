//! Token administration (admin only).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use macpool_api::dto::{TokenCreate, TokenCreated, TokenInfo};
use macpool_api::{Problem, convert};
use macpool_core::lease::validate_field;
use macpool_store::{Role, Store, TokenRecord};

use crate::AppState;
use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};

pub fn info(t: &TokenRecord) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role.name().into(),
        host: t.host.clone(),
        created: convert::time(t.created),
        revoked: t.revoked.map(convert::time),
    }
}

/// List tokens (never their secrets).
#[utoipa::path(get, path = "/tokens", tag = "tokens", responses((status = 200, body = [TokenInfo]), (status = 403, description = "forbidden: not an admin token", body = Problem)))]
pub async fn list_tokens(
    State(st): State<Arc<AppState>>,
    c: Caller,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    c.require_admin()?;
    Ok(Json(st.store.tokens().await?.iter().map(info).collect()))
}

/// Create a token; the secret is in the response this once.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = TokenCreate,
    responses((status = 201, body = TokenCreated), (status = 400, description = "invalid-input", body = Problem),
        (status = 403, description = "forbidden: not an admin token", body = Problem)))]
pub async fn create_token(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Json(body): Json<TokenCreate>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let created = create_token_in(&st, &c, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Creates a token: the API's and the dashboard's one way to.
pub(crate) async fn create_token_in(
    st: &AppState,
    c: &Caller,
    body: TokenCreate,
) -> ApiResult<TokenCreated> {
    c.require_admin()?;
    let bad = |m: String| ApiError::bad_request("invalid-input", m);
    let role = Role::parse(&body.role).map_err(bad)?;
    if body.name.trim().is_empty() {
        return Err(bad("token name must not be empty".into()));
    }
    validate_field("name", &body.name).map_err(bad)?;
    if let Some(h) = body.host.as_deref().filter(|h| !h.trim().is_empty()) {
        validate_field("host", h).map_err(bad)?;
    }
    let (id, token, secret_hash) = auth::generate();
    // Which roles are bound to a host is the store's rule (`TokenRecord::check_new`).
    let record = TokenRecord {
        id,
        name: body.name,
        role,
        host: body.host,
        secret_hash,
        created: macpool_store::now(),
        revoked: None,
    };
    st.store.save_token(c.actor(), record.clone()).await?;
    st.tokens.replace(st.store.tokens().await?);
    Ok(TokenCreated {
        info: info(&record),
        token,
    })
}

/// Revoke a token; refused for the last active admin token.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", params(("id" = String, Path)),
    responses((status = 200, body = TokenInfo), (status = 403, description = "forbidden: not an admin token", body = Problem),
        (status = 404, description = "not-found: no such token", body = Problem), (status = 409, description = "last-admin", body = Problem)))]
pub async fn revoke_token(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenInfo>> {
    Ok(Json(info(&revoke_token_in(&st, &c, id).await?)))
}

/// Revokes a token and ends its dashboard sessions; the store refuses the last active admin
/// (`macpool_store::revocable`), atomically across replicas.
pub(crate) async fn revoke_token_in(
    st: &AppState,
    c: &Caller,
    id: String,
) -> ApiResult<TokenRecord> {
    c.require_admin()?;
    let revoked = st.store.revoke_token(c.actor(), id).await?;
    st.tokens.replace(st.store.tokens().await?);
    st.sessions.remove_token(&revoked.id);
    Ok(revoked)
}
