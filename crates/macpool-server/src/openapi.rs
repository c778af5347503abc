//! The OpenAPI document: its frame, and [`finish`], which makes the document the router built
//! tell the truth about what every operation answers and accepts.
//!
//! Route annotations (`routes/`) declare what is particular to a route (201, 403, 404, 409 and
//! the 400s of its own validation). What every route shares is added here, from the operation's
//! shape, so no route can forget it: 401 (every operation needs a token), 414 and 431 (the
//! request-head limits in `lib.rs`), 503 (every handler goes to the store); with a body also
//! 400 (`invalid-json`), 413 and 415; with path or query parameters 400 (`invalid-input`). Every
//! error is `application/problem+json`. The constraints of the request schemas are set here
//! from the constants the validation itself uses (`macpool_core`), so they cannot drift apart.
//! `tests/openapi_truth.rs` exercises every declared status of every route.

use macpool_core::authority::{MAX_ALLOCATION_COUNT, MAX_RANGES_PER_POOL};
use macpool_core::block::{MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};
use macpool_core::lease::MAX_FIELD_LEN;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(title = "macpool", description = "Cluster-wide MAC address authority. Every request needs `Authorization: Bearer <token>`; errors are RFC 9457 problem+json."),
    modifiers(&BearerAuth),
    components(schemas(macpool_api::Problem)),
    security(("bearer" = [])),
    tags((name = "pools"), (name = "leases"), (name = "holds"), (name = "history"), (name = "tokens"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One MAC in any spelling `Mac::parse` reads: `001122334455`, `00:11:22:33:44:55`,
/// `00-11-22-33-44-55`, `0011.2233.4455` (any case). Without anchors, for [`RANGE_PATTERN`].
const MAC: &str = r"(?:[0-9A-Fa-f]{12}|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{4}(?:\.[0-9A-Fa-f]{4}){2})";

/// A whole MAC value (the parser ignores surrounding whitespace).
pub fn mac_pattern() -> String {
    format!(r"^\s*{MAC}\s*$")
}

/// A range as `MacRange::parse` reads it: `FIRST-LAST`, `FIRST..LAST`, `FIRST - LAST`,
/// `FIRST,LAST`.
pub fn range_pattern() -> String {
    format!(r"^\s*{MAC}\s*(?:\.\.|-|,)\s*{MAC}\s*$")
}

/// `PoolName::new`: 1 to 64 of letters, digits, `.`, `_`, `-`, starting with a letter or digit.
pub const POOL_NAME_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

/// `validate_field`: no control characters (Unicode `Cc`).
const TEXT_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";
/// As [`TEXT_PATTERN`], and not only whitespace (ids, names that must be given).
const NONBLANK_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$";

/// What a request field or parameter must satisfy.
#[derive(Clone, Copy)]
enum Rule {
    Mac,
    Range,
    PoolName,
    /// Free text: at most `MAX_FIELD_LEN` bytes, no control characters.
    Text,
    /// Free text that must not be blank.
    NonBlank,
    OneOf(&'static [&'static str]),
    Int(u64, u64),
    /// An array whose items follow the rule, with at most this many items.
    Items(&'static Rule, Option<usize>),
}

impl Rule {
    fn apply(self, schema: &mut Value) {
        let Some(s) = schema.as_object_mut() else {
            return;
        };
        let text = |s: &mut Map<String, Value>, pattern: &str, min: usize| {
            s.insert("maxLength".into(), json!(MAX_FIELD_LEN));
            s.insert("minLength".into(), json!(min));
            s.insert("pattern".into(), json!(pattern));
        };
        match self {
            // No maxLength: the parser takes a MAC or range with surrounding whitespace (any
            // amount), which the pattern allows; a length cap the server does not enforce is one
            // schemathesis rightly reported as "schema-violating request accepted".
            Rule::Mac => {
                s.insert("pattern".into(), json!(mac_pattern()));
            }
            Rule::Range => {
                s.insert("pattern".into(), json!(range_pattern()));
            }
            Rule::PoolName => {
                s.insert("pattern".into(), json!(POOL_NAME_PATTERN));
                s.insert("minLength".into(), json!(1));
                s.insert("maxLength".into(), json!(64));
            }
            Rule::Text => text(s, TEXT_PATTERN, 0),
            Rule::NonBlank => text(s, NONBLANK_PATTERN, 1),
            Rule::OneOf(words) => {
                // An optional field's schema also allows null; keep that.
                let mut values: Vec<Value> = words.iter().map(|w| json!(w)).collect();
                if is_nullable(s) {
                    values.push(Value::Null);
                }
                s.insert("enum".into(), Value::Array(values));
            }
            Rule::Int(min, max) => {
                s.insert("minimum".into(), json!(min));
                s.insert("maximum".into(), json!(max));
            }
            Rule::Items(item, max) => {
                if let Some(max) = max {
                    s.insert("maxItems".into(), json!(max));
                }
                if let Some(items) = s.get_mut("items") {
                    item.apply(items);
                }
            }
        }
    }
}

fn is_nullable(s: &Map<String, Value>) -> bool {
    s.get("type")
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(|v| v == "null"))
}

const ORDERS: &[&str] = &["next-fit", "lowest"];
const DUPLICATES: &[&str] = &["deny", "allow-and-flag"];
const ROLES: &[&str] = &["admin", "agent", "reader"];
/// `HoldReason::ALL` by name (the test below keeps the two equal).
const HOLD_REASONS: &[&str] = &["checkpoint", "template", "backup", "departed"];
const RANGE_LIST: Rule = Rule::Items(&Rule::Range, Some(MAX_RANGES_PER_POOL));

/// Request schema fields and what they must satisfy (checked where the request is read: the
/// core's `validate_field`, `PoolName`, `Mac::parse`, `MacRange::parse`, the policies' parsers).
const FIELDS: &[(&str, &str, Rule)] = &[
    ("PoolCreate", "name", Rule::PoolName),
    ("PoolCreate", "ranges", RANGE_LIST),
    ("PoolCreate", "order", Rule::OneOf(ORDERS)),
    ("PoolCreate", "duplicates", Rule::OneOf(DUPLICATES)),
    ("PoolCreate", "cooldown", Rule::Text),
    ("PoolCreate", "low_water", Rule::Text),
    ("PoolEditBody", "ranges", RANGE_LIST),
    ("PoolEditBody", "add_ranges", RANGE_LIST),
    ("PoolEditBody", "remove_ranges", RANGE_LIST),
    ("PoolEditBody", "order", Rule::OneOf(ORDERS)),
    ("PoolEditBody", "duplicates", Rule::OneOf(DUPLICATES)),
    ("PoolEditBody", "cooldown", Rule::Text),
    ("PoolEditBody", "low_water", Rule::Text),
    ("AllocateBody", "pool", Rule::PoolName),
    ("AllocateBody", "vm_id", Rule::NonBlank),
    ("AllocateBody", "adapter_id", Rule::Text),
    ("AllocateBody", "vm_name", Rule::Text),
    ("AllocateBody", "host", Rule::Text),
    ("AllocateBody", "cluster", Rule::Text),
    ("AllocateBody", "mac", Rule::Mac),
    (
        "AllocateBody",
        "count",
        Rule::Int(1, MAX_ALLOCATION_COUNT as u64),
    ),
    ("AllocateBody", "reason", Rule::Text),
    ("ReleaseBody", "mac", Rule::Mac),
    ("ReleaseBody", "vm_id", Rule::Text),
    ("ReleaseBody", "adapter_id", Rule::Text),
    ("HoldBody", "mac", Rule::Mac),
    ("HoldBody", "vm_id", Rule::NonBlank),
    ("HoldBody", "reason", Rule::OneOf(HOLD_REASONS)),
    ("HoldBody", "ref", Rule::Text),
    ("UnholdBody", "mac", Rule::Mac),
    ("UnholdBody", "vm_id", Rule::Text),
    ("UnholdBody", "reason", Rule::OneOf(HOLD_REASONS)),
    ("UnholdBody", "ref", Rule::Text),
    ("TokenCreate", "name", Rule::NonBlank),
    ("TokenCreate", "role", Rule::OneOf(ROLES)),
    ("TokenCreate", "host", Rule::Text),
    ("ClaimBlockBody", "pool", Rule::PoolName),
    (
        "ClaimBlockBody",
        "size",
        Rule::Int(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE),
    ),
    ("InventoryBody", "cluster", Rule::Text),
    ("InventoryBody", "range_min", Rule::Mac),
    ("InventoryBody", "range_max", Rule::Mac),
    ("InventoryBody", "cursor", Rule::Mac),
    ("InventoryVm", "id", Rule::NonBlank),
    ("InventoryVm", "name", Rule::Text),
    ("InventoryVm", "state", Rule::Text),
    ("InventoryAdapter", "name", Rule::Text),
    ("InventoryAdapter", "mac", Rule::Mac),
    ("InventoryCheckpoint", "id", Rule::NonBlank),
    ("InventoryCheckpoint", "name", Rule::Text),
    ("InventoryCheckpoint", "type", Rule::Text),
];

/// Path and query parameters by name, where the server checks them (a query's `pool`, `host`
/// or `vm` only filters: any text is taken). `id` is a block's number or a token's id, told
/// apart by its type.
fn parameter_rule(name: &str, location: &str, schema: &Value) -> Option<Rule> {
    Some(match (name, location) {
        ("mac", _) => Rule::Mac,
        ("name", "path") => Rule::PoolName,
        ("host", "path") => Rule::NonBlank,
        ("id", "path") if schema["type"] == "string" => Rule::NonBlank,
        _ => return None,
    })
}

/// Adds the shared responses and constraints to the document the router built, and returns
/// it as served at `/api/v1/openapi.json`.
pub fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serializes");
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            for op in item
                .as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
            {
                finish_operation(op);
            }
        }
    }
    unsigned_bounds(&mut doc);
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        for (schema, field, rule) in FIELDS {
            if let Some(s) = schemas
                .get_mut(*schema)
                .and_then(|s| s["properties"].get_mut(*field))
            {
                rule.apply(s);
            }
        }
    }
    doc
}

/// utoipa declares `u32` as `int32` and `u64` as `int64`, whose ranges stop at 2^31 - 1 and
/// 2^63 - 1, while the server takes every value of the unsigned type: schemathesis then sends
/// 2^31 as "invalid" and sees it accepted. Every unsigned integer (utoipa gives it `minimum: 0`)
/// is declared with its real upper bound instead.
fn unsigned_bounds(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let unsigned = m.get("type").is_some_and(|t| {
                t == "integer"
                    || t.as_array()
                        .is_some_and(|a| a.iter().any(|x| x == "integer"))
            }) && m.get("minimum").and_then(Value::as_u64) == Some(0);
            if unsigned {
                let max: u64 = match m.get("format").and_then(Value::as_str) {
                    Some("int32") => u32::MAX.into(),
                    _ => u64::MAX,
                };
                m.remove("format");
                m.entry("maximum").or_insert(json!(max));
            }
            m.values_mut().for_each(unsigned_bounds);
        }
        Value::Array(a) => a.iter_mut().for_each(unsigned_bounds),
        _ => {}
    }
}

fn finish_operation(op: &mut Value) {
    let has_body = op.get("requestBody").is_some();
    let has_params = op["parameters"].as_array().is_some_and(|p| !p.is_empty());
    // `get_mut`, not `op["parameters"]`: indexing a missing key mutably inserts `null`, which
    // is not a valid parameter list (schemathesis refused the whole document for it).
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            let location = p["in"].as_str().unwrap_or_default().to_string();
            if let Some(rule) = parameter_rule(&name, &location, &p["schema"]) {
                rule.apply(&mut p["schema"]);
            }
        }
    }
    let Some(responses) = op["responses"].as_object_mut() else {
        return;
    };
    let mut shared = vec![
        (
            "401",
            "unauthorized: no token, or an unknown or revoked one",
        ),
        (
            "414",
            "uri-too-long: the request URI is longer than the server reads",
        ),
        (
            "431",
            "headers-too-large: the request's headers are larger than the server reads",
        ),
        (
            "429",
            "too-many-failures: too many unknown or revoked tokens from this address; see Retry-After",
        ),
        (
            "503",
            "store-unavailable: the store cannot take requests right now; retrying is safe",
        ),
    ];
    if has_body {
        shared.push((
            "400",
            "invalid-json or invalid input: the body does not parse, or a field is invalid",
        ));
        shared.push(("413", "payload-too-large"));
        shared.push((
            "415",
            "unsupported-media-type: send the body with 'Content-Type: application/json'",
        ));
    }
    if has_params {
        shared.push(("400", "invalid-input: a path or query parameter is invalid"));
    }
    for (status, description) in shared {
        responses
            .entry(status)
            .or_insert_with(|| json!({"description": description}));
    }
    for (status, response) in responses.iter_mut() {
        if !status.starts_with('4') && !status.starts_with('5') {
            continue;
        }
        if response["description"].as_str().is_none_or(str::is_empty) {
            response["description"] = json!("a problem (RFC 9457)");
        }
        response["content"] = json!({
            PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
        });
        if status == "401" {
            response["headers"] = json!({
                "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use macpool_core::lease::HoldReason;
    use macpool_core::{Mac, MacRange};

    use super::*;

    fn matches(pattern: &str, s: &str) -> bool {
        // The document's patterns are ECMA-262; these use only what Rust's regex syntax shares.
        regex::Regex::new(pattern).unwrap().is_match(s)
    }

    #[test]
    fn hold_reasons_are_the_cores() {
        let names: Vec<&str> = HoldReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names, HOLD_REASONS);
    }

    #[test]
    fn the_mac_and_range_patterns_accept_what_the_parsers_accept() {
        let cases = [
            "001122334455",
            "00:11:22:33:44:55",
            "00-11-22-33-44-55",
            "0011.2233.4455",
            " 00-15-5d-00-00-01 ",
            "00:11:22:33:44",
            "00:11-22:33:44:55",
            "0011.2233.445",
            "00112233445g",
            "00:11:22:33:44:55:66",
            "",
            "0:11:22:33:44:55",
        ];
        for c in cases {
            assert_eq!(
                matches(&mac_pattern(), c),
                Mac::parse(c).is_ok(),
                "MAC {c:?}"
            );
        }
        let ranges = [
            "00155D000000-00155D0000FF",
            "00-15-5D-00-00-00-00-15-5D-00-00-FF",
            "00155D000000..00155D0000FF",
            "00155D000000 - 00155D0000FF",
            "00155D000000,00155D0000FF",
            "00155D000000",
            "00155D000000-",
            "x-y",
        ];
        for r in ranges {
            let parses = MacRange::parse(r).is_ok()
                || matches!(
                    MacRange::parse(r),
                    Err(macpool_core::range::RangeError::Inverted { .. })
                );
            assert_eq!(matches(&range_pattern(), r), parses, "range {r:?}");
        }
    }
}
