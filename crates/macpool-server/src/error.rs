//! One error type for every handler. Handlers use `?`; this decides status and problem+json
//! body in one place, logs internal causes and never sends them.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use macpool_api::Problem;
use macpool_core::authority::AuthorityError;
use macpool_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub slug: &'static str,
    pub detail: String,
    /// Seconds for a `Retry-After` header (429 answers).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            slug,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// Too many failed sign-ins from this client: try again after `secs`.
    pub fn throttled(secs: u64) -> ApiError {
        ApiError {
            retry_after: Some(secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-failures",
                format!("too many unknown or revoked tokens from this address; retry in {secs} s"),
            )
        }
    }

    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, slug, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", detail)
    }
}

impl From<AuthorityError> for ApiError {
    fn from(e: AuthorityError) -> ApiError {
        let status = match &e {
            AuthorityError::InvalidInput(_) | AuthorityError::MacOutsidePool { .. } => {
                StatusCode::BAD_REQUEST
            }
            AuthorityError::PoolNotFound(_) | AuthorityError::NotFound(_) => StatusCode::NOT_FOUND,
            AuthorityError::Forbidden(_) => StatusCode::FORBIDDEN,
            AuthorityError::RangeOverlap { .. }
            | AuthorityError::PoolExists(_)
            | AuthorityError::PoolInUse { .. }
            | AuthorityError::PoolExhausted { .. }
            | AuthorityError::NoBlock { .. }
            | AuthorityError::MacInUse { .. }
            | AuthorityError::MacCooling { .. }
            | AuthorityError::OwnerConflict { .. }
            | AuthorityError::RangeInUse { .. }
            | AuthorityError::Ambiguous { .. }
            | AuthorityError::StaleGeneration { .. } => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.kind(), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Domain(d) => d.into(),
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Invalid(m) => ApiError::bad_request("invalid-input", m),
            e @ StoreError::LastAdmin => {
                ApiError::new(StatusCode::CONFLICT, "last-admin", e.to_string())
            }
            StoreError::Unavailable(m) => {
                tracing::error!("store unavailable: {m}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "the store cannot take requests right now; retry later (retrying is safe: an allocation for the same VM returns the lease it may already have)",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem::new(self.slug, self.status.as_u16(), self.detail);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // Lets the metrics middleware count errors by type without parsing the body.
        res.extensions_mut().insert(ErrorSlug(self.slug));
        res
    }
}

/// The problem type of an error response, for metrics.
#[derive(Clone, Copy, Debug)]
pub struct ErrorSlug(pub &'static str);

pub type ApiResult<T> = Result<T, ApiError>;
