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

/// Every problem type the API answers with, and its title: the one place titles are chosen.
pub const PROBLEM_TYPES: &[(&str, &str)] = &[
    ("invalid-mac", "Invalid MAC address"),
    ("too-many-failures", "Too many failed sign-ins"),
    ("invalid-range", "Invalid MAC range"),
    ("invalid-input", "Invalid input"),
    ("invalid-json", "Malformed request body"),
    ("range-overlap", "Ranges overlap"),
    ("range-in-use", "Range in use"),
    ("pool-exists", "Pool already exists"),
    ("pool-in-use", "Pool in use"),
    ("pool-exhausted", "Pool exhausted"),
    ("mac-in-use", "MAC address in use"),
    ("mac-cooling", "MAC address cooling down"),
    ("mac-outside-pool", "MAC address outside the pool"),
    ("owner-conflict", "Owner already has a lease"),
    ("ambiguous", "Ambiguous request"),
    ("stale-generation", "Stale inventory generation"),
    ("last-admin", "Last admin token"),
    ("not-found", "Not found"),
    ("no-route", "No such endpoint"),
    ("method-not-allowed", "Method not allowed"),
    ("unauthorized", "Unauthorized"),
    ("forbidden", "Forbidden"),
    ("payload-too-large", "Payload too large"),
    ("uri-too-long", "URI too long"),
    ("headers-too-large", "Request headers too large"),
    ("unsupported-media-type", "Unsupported media type"),
    ("store-unavailable", "Store unavailable"),
];

/// The title of a problem type; "Internal error" only for a slug missing from [`PROBLEM_TYPES`].
pub fn title_for(slug: &str) -> &'static str {
    PROBLEM_TYPES
        .iter()
        .find(|(s, _)| *s == slug)
        .map_or("Internal error", |(_, title)| title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_generation_and_last_admin_have_their_own_titles() {
        assert_eq!(
            Problem::new("stale-generation", 409, "x").title,
            "Stale inventory generation"
        );
        assert_eq!(
            Problem::new("last-admin", 409, "x").title,
            "Last admin token"
        );
        assert_eq!(
            Problem::new("no-such-slug", 500, "x").title,
            "Internal error"
        );
    }
}
