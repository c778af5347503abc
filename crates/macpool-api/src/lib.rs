//! The wire format of the HTTP API, shared by the server and the client. Only this layer
//! serializes: domain types are converted by hand here, so the core stays free of serde.
//!
//! MACs travel as strings: responses use the IEEE spelling `00-15-5D-0A-0B-0C`, requests accept
//! every spelling the core parses. Times are RFC 3339 UTC strings.

pub mod convert;
pub mod dto;
pub mod problem;

pub use dto::*;
pub use problem::Problem;

/// Every API path starts with this.
pub const API_PREFIX: &str = "/api/v1";

/// Response header of a listing page that is not the last: the value to pass as the next
/// page's cursor (`before` for history, `after` for leases).
pub const NEXT_CURSOR_HEADER: &str = "macpool-next-cursor";
/// Response header set when the requested `limit` was above the most one page returns: the
/// limit that was applied instead.
pub const LIMIT_CAPPED_HEADER: &str = "macpool-limit-capped";
/// Most entries one page of history or leases returns.
pub const MAX_PAGE: u32 = 10_000;
