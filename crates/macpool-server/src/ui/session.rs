//! Browser sessions. The browser holds only an opaque random id in an `HttpOnly`,
//! `SameSite=Strict` cookie (`Secure` under TLS); the server keeps which token signed in, the
//! session's CSRF token and when it was last used. The token's secret is never kept: each request
//! re-checks the token record, so revoking a token ends its sessions at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "macpool_session";
/// A session unused this long is gone.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// Most sessions kept at once; the least recently used goes first.
const MAX_SESSIONS: usize = 10_000;

#[derive(Clone, Debug)]
pub struct Session {
    /// The id of the token that signed in.
    pub token_id: String,
    pub csrf: String,
    last_used: Instant,
}

#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    /// A new session for `token_id`: `(session id, csrf token)`.
    pub fn create(&self, token_id: &str) -> (String, String) {
        let (id, csrf) = (random_hex(), random_hex());
        let mut m = self.inner.lock().unwrap();
        m.retain(|_, s| s.last_used.elapsed() < IDLE);
        if m.len() >= MAX_SESSIONS
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(
            id.clone(),
            Session {
                token_id: token_id.to_string(),
                csrf: csrf.clone(),
                last_used: Instant::now(),
            },
        );
        (id, csrf)
    }

    /// The live session with this id, touched; an idle one is removed.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut m = self.inner.lock().unwrap();
        let s = m.get_mut(id)?;
        if s.last_used.elapsed() >= IDLE {
            m.remove(id);
            return None;
        }
        s.last_used = Instant::now();
        Some(s.clone())
    }

    pub fn remove(&self, id: &str) {
        self.inner.lock().unwrap().remove(id);
    }

    /// Ends every session of a token (revoked, or no longer valid).
    pub fn remove_token(&self, token_id: &str) {
        self.inner
            .lock()
            .unwrap()
            .retain(|_, s| s.token_id != token_id);
    }
}

/// The value of the request's cookie `name` (the session id is [`COOKIE_NAME`]).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The `Set-Cookie` value for a session (an empty id with `Max-Age=0` deletes it).
pub fn set_cookie(id: &str, secure: bool) -> String {
    let age = if id.is_empty() {
        "; Max-Age=0".to_string()
    } else {
        format!("; Max-Age={}", IDLE.as_secs() * 16)
    };
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE_NAME}={id}; Path=/; HttpOnly; SameSite=Strict{secure}{age}")
}

/// Whether a presented CSRF token is the session's, compared in constant time.
pub fn csrf_matches(session: &Session, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| p.as_bytes().ct_eq(session.csrf.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_with_its_token() {
        let s = Sessions::default();
        let (id, csrf) = s.create("tok1");
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE_NAME}={id}")).unwrap(),
        );
        let found = s.get(&cookie(&h, COOKIE_NAME).unwrap()).unwrap();
        assert_eq!(found.token_id, "tok1");
        assert!(csrf_matches(&found, Some(&csrf)));
        assert!(!csrf_matches(&found, Some("nope")));
        assert!(!csrf_matches(&found, None));
        s.remove_token("tok1");
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_under_tls() {
        let c = set_cookie("abc", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie("abc", false).contains("Secure"));
        assert!(set_cookie("", false).contains("Max-Age=0"));
    }
}
