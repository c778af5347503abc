//! RFC 9457 problem details, the one error shape of the API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Base of every problem `type` URI; the suffix is the stable slug (`pool-exhausted`, …).
pub const PROBLEM_BASE: &str = "https://macpool.dev/problems/";

/// An error response (`application/problem+json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI whose last segment is a stable machine-readable slug.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong in this occurrence, for a person.
    pub detail: String,
}

impl Problem {
    pub fn new(slug: &str, status: u16, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title: title_for(slug).to_string(),
            status,
            detail: detail.into(),
        }
    }

    /// The slug part of `type`.
    pub fn slug(&self) -> &str {
        self.kind.rsplit('/').next().unwrap_or(&self.kind)
    }
}

fn title_for(slug: &str) -> &'static str {
    match slug {
        "invalid-mac" => "Invalid MAC address",
        "invalid-range" => "Invalid MAC range",
        "invalid-input" => "Invalid input",
        "invalid-json" => "Malformed request body",
        "range-overlap" => "Ranges overlap",
        "range-in-use" => "Range in use",
        "pool-exists" => "Pool already exists",
        "pool-in-use" => "Pool in use",
        "pool-exhausted" => "Pool exhausted",
        "mac-in-use" => "MAC address in use",
        "mac-cooling" => "MAC address cooling down",
        "mac-outside-pool" => "MAC address outside the pool",
        "owner-conflict" => "Owner already has a lease",
        "ambiguous" => "Ambiguous request",
        "not-found" => "Not found",
        "no-route" => "No such endpoint",
        "method-not-allowed" => "Method not allowed",
        "unauthorized" => "Unauthorized",
        "forbidden" => "Forbidden",
        "payload-too-large" => "Payload too large",
        "unsupported-media-type" => "Unsupported media type",
        "store-unavailable" => "Store unavailable",
        _ => "Internal error",
    }
}
