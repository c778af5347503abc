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
