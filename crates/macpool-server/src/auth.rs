//! Bearer tokens with roles. A token is `mp_<id>_<secret>`: the id finds the record, the
//! secret's SHA-256 is compared in constant time. Secrets are 256 random bits, so a fast hash is
//! enough at rest (no password stretching needed); only the hash is ever stored.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use macpool_core::authority::{Actor, Read, Scope};
use macpool_store::{Role, Store, StoreResult, TokenRecord};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

/// The id under which a bootstrap token that is not in `mp_<id>_<secret>` form is stored.
pub const BOOTSTRAP_ID: &str = "bootstrap";
/// How long another replica's token changes may take to be seen here.
const REFRESH: Duration = Duration::from_secs(5);
/// Shortest bootstrap token accepted from `MACPOOL_BOOTSTRAP_TOKEN`.
pub const MIN_BOOTSTRAP_LEN: usize = 24;

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A fresh token: `(id, full token string, hash of its secret)`.
pub fn generate() -> (String, String, [u8; 32]) {
    let id = hex::encode(rand::random::<[u8; 6]>());
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let token = format!("mp_{id}_{secret}");
    (id, token, hash_secret(&secret))
}

/// Splits a presented token into the record id to look up and the secret to hash.
fn split(token: &str) -> (&str, &str) {
    if let Some(rest) = token.strip_prefix("mp_")
        && let Some((id, secret)) = rest.split_once('_')
        && !id.is_empty()
        && !secret.is_empty()
    {
        return (id, secret);
    }
    (BOOTSTRAP_ID, token)
}

/// Failed presentations a client address may make in a burst before it is slowed down.
const THROTTLE_BURST: f64 = 10.0;
/// How fast the allowance comes back: one failure forgiven per second.
const THROTTLE_DRAIN_PER_SEC: f64 = 1.0;
/// Client addresses remembered at most (an address whose allowance is full is forgotten first).
const THROTTLE_TRACKED: usize = 10_000;

/// Unknown or revoked tokens per client address, as a leaky bucket: each failure fills one unit,
/// units drain at [`THROTTLE_DRAIN_PER_SEC`]; a full bucket refuses every token from that
/// address (429 with `Retry-After`) until it drains. Secrets are 256 random bits, so guessing is
/// hopeless anyway: this keeps a scanner or a misconfigured script from hammering the server, and
/// makes it visible (`macpool_auth_failures_total`). Behind a proxy every client shares the
/// proxy's address (docs: SECURITY.md).
#[derive(Default)]
pub struct Throttle {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Throttle {
    fn level(entry: (f64, Instant), now: Instant) -> f64 {
        let drained = now.saturating_duration_since(entry.1).as_secs_f64() * THROTTLE_DRAIN_PER_SEC;
        (entry.0 - drained).max(0.0)
    }

    /// `Err(seconds to wait)` while `client` has no allowance left: [`THROTTLE_BURST`] failures
    /// in quick succession use it up, and each second gives one back.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        let buckets = self.buckets.lock().unwrap();
        let level = buckets
            .get(&client)
            .map_or(0.0, |&e| Throttle::level(e, now));
        let over = level - (THROTTLE_BURST - 1.0);
        if over > 0.0 {
            Err((over / THROTTLE_DRAIN_PER_SEC).ceil().max(1.0) as u64)
        } else {
            Ok(())
        }
    }

    /// One more failure from `client`.
    pub fn fail(&self, client: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= THROTTLE_TRACKED && !buckets.contains_key(&client) {
            buckets.retain(|_, e| Throttle::level(*e, now) > 0.0);
            if buckets.len() >= THROTTLE_TRACKED {
                return; // a flood of addresses: remember none rather than grow without bound
            }
        }
        let e = buckets.entry(client).or_insert((0.0, now));
        *e = (Throttle::level(*e, now) + 1.0, now);
    }
}

/// Why a presented token was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown, wrong secret, or revoked.
    Unknown,
    /// Too many failures from this address: retry after this many seconds.
    Throttled(u64),
}

/// The tokens, cached in memory so a request does not wait for the store.
pub struct TokenCache {
    inner: RwLock<(HashMap<String, TokenRecord>, Instant)>,
    /// Held while one caller reloads a stale cache; the others wait for that load.
    reloading: tokio::sync::Mutex<()>,
    throttle: Throttle,
}

impl TokenCache {
    pub fn new(tokens: Vec<TokenRecord>) -> TokenCache {
        TokenCache {
            inner: RwLock::new((index(tokens), Instant::now())),
            reloading: tokio::sync::Mutex::new(()),
            throttle: Throttle::default(),
        }
    }

    pub fn replace(&self, tokens: Vec<TokenRecord>) {
        *self.inner.write().unwrap() = (index(tokens), Instant::now());
    }

    fn is_stale(&self) -> bool {
        self.inner.read().unwrap().1.elapsed() > REFRESH
    }

    /// Reloads the tokens from `load` when the cache is older than [`REFRESH`]. Concurrent
    /// callers wait for one load rather than each querying the store: 64 requests arriving on a
    /// stale cache opened 8 new database connections at once (~90 ms with TLS). A failed load
    /// keeps the tokens and waits another [`REFRESH`] (the store is down: no token can change).
    pub async fn refresh_if_stale<F>(&self, load: impl FnOnce() -> F)
    where
        F: Future<Output = StoreResult<Vec<TokenRecord>>>,
    {
        if !self.is_stale() {
            return;
        }
        let _one = self.reloading.lock().await;
        if !self.is_stale() {
            return;
        }
        match load().await {
            Ok(all) => self.replace(all),
            Err(e) => {
                tracing::warn!("cannot reload tokens, keeping the cached ones: {e}");
                self.inner.write().unwrap().1 = Instant::now();
            }
        }
    }

    /// The record with this id, unless revoked (a dashboard session re-checks its token so).
    pub fn active(&self, id: &str) -> Option<TokenRecord> {
        let guard = self.inner.read().unwrap();
        guard.0.get(id).filter(|r| r.revoked.is_none()).cloned()
    }

    /// [`TokenCache::verify`] for a request from `client`, slowed down after repeated failures
    /// from that address: the API's and the dashboard sign-in's one way to check a token.
    pub fn verify_from(&self, presented: &str, client: IpAddr) -> Result<TokenRecord, Refusal> {
        let now = Instant::now();
        self.throttle
            .check(client, now)
            .map_err(Refusal::Throttled)?;
        self.verify(presented).ok_or_else(|| {
            self.throttle.fail(client, now);
            Refusal::Unknown
        })
    }

    /// The record of a presented token, if it is valid and not revoked.
    pub fn verify(&self, presented: &str) -> Option<TokenRecord> {
        let (id, secret) = split(presented);
        let hash = hash_secret(secret);
        let guard = self.inner.read().unwrap();
        let record = guard.0.get(id)?;
        let equal: bool = record.secret_hash.ct_eq(&hash).into();
        (equal && record.revoked.is_none()).then(|| record.clone())
    }
}

fn index(tokens: Vec<TokenRecord>) -> HashMap<String, TokenRecord> {
    tokens.into_iter().map(|t| (t.id.clone(), t)).collect()
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub token: TokenRecord,
}

impl Caller {
    /// The actor the core sees: admins act on everything, agents on their host.
    pub fn actor(&self) -> Actor {
        match (self.token.role, &self.token.host) {
            (Role::Agent, Some(h)) => Actor {
                name: format!("{} (agent {h})", self.token.name),
                scope: Scope::Host(h.clone()),
            },
            _ => Actor {
                name: self.token.name.clone(),
                scope: Scope::All,
            },
        }
    }

    /// Refuses what this caller's scope may not read (the rule is the core's [`Actor::may_read`]).
    pub fn may_read(&self, what: Read<'_>) -> Result<(), ApiError> {
        Ok(self.actor().may_read(what)?)
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.token.role {
            Role::Admin => Ok(()),
            r => Err(ApiError::forbidden(format!(
                "this needs an admin token; '{}' is a {} token",
                self.token.name,
                r.name()
            ))),
        }
    }

    /// Admins and agents may change leases and holds; readers may not.
    pub fn require_writer(&self) -> Result<(), ApiError> {
        match self.token.role {
            Role::Admin | Role::Agent => Ok(()),
            Role::Reader => Err(ApiError::forbidden(format!(
                "'{}' is a reader token and cannot change anything",
                self.token.name
            ))),
        }
    }
}

impl FromRequestParts<std::sync::Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &std::sync::Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing 'Authorization: Bearer <token>' header")
        })?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be 'Bearer <token>'")
            })?;
        state.tokens.refresh_if_stale(|| state.store.tokens()).await;
        match state
            .tokens
            .verify_from(token, client_address(&parts.extensions))
        {
            Ok(token) => Ok(Caller { token }),
            Err(refusal) => Err(refused(state, refusal)),
        }
    }
}

/// The address a request came from; requests built in-process (tests) have none and share one.
pub fn client_address(extensions: &axum::http::Extensions) -> IpAddr {
    // Plain HTTP serves through `head::Listener` (its `Peer`), TLS through axum-server.
    let plain = extensions
        .get::<ConnectInfo<crate::head::Peer>>()
        .map(|c| c.0.0);
    plain
        .or_else(|| extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0))
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The answer to a refused token, counted in `/metrics`.
pub fn refused(state: &AppState, refusal: Refusal) -> ApiError {
    state.metrics.count_auth_failure();
    match refusal {
        Refusal::Unknown => ApiError::unauthorized("unknown or revoked token"),
        Refusal::Throttled(secs) => ApiError::throttled(secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use macpool_core::Timestamp;

    fn record(id: &str, secret: &str, revoked: bool) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            name: "t".into(),
            role: Role::Admin,
            host: None,
            secret_hash: hash_secret(secret),
            created: Timestamp(0),
            revoked: revoked.then_some(Timestamp(1)),
        }
    }

    #[test]
    fn generated_tokens_verify_and_wrong_ones_do_not() {
        let (id, token, hash) = generate();
        let mut r = record(&id, "x", false);
        r.secret_hash = hash;
        let cache = TokenCache::new(vec![r]);
        assert!(cache.verify(&token).is_some());
        let mut wrong = token.clone();
        wrong.pop();
        wrong.push('0');
        if wrong == token {
            wrong.pop();
            wrong.push('1');
        }
        assert!(cache.verify(&wrong).is_none());
        assert!(cache.verify("mp_nothere_abc").is_none());
    }

    #[test]
    fn ten_quick_failures_throttle_an_address_until_its_allowance_drains() {
        let t = Throttle::default();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..9 {
            t.fail(a, t0);
        }
        assert_eq!(t.check(a, t0), Ok(()), "nine failures leave one try");
        t.fail(a, t0);
        assert_eq!(t.check(a, t0), Err(1));
        assert_eq!(t.check(b, t0), Ok(()), "another address is not slowed down");
        t.fail(a, t0);
        assert_eq!(
            t.check(a, t0),
            Err(2),
            "a failure while throttled waits longer"
        );
        assert_eq!(t.check(a, t0 + Duration::from_millis(1500)), Err(1));
        assert_eq!(t.check(a, t0 + Duration::from_secs(2)), Ok(()));
    }

    #[test]
    fn the_throttle_remembers_a_bounded_number_of_addresses() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..(THROTTLE_TRACKED as u32 + 50) {
            t.fail(IpAddr::V4(std::net::Ipv4Addr::from(i)), now);
        }
        assert_eq!(t.buckets.lock().unwrap().len(), THROTTLE_TRACKED);
        let later = now + Duration::from_secs(5);
        t.fail("192.0.2.1".parse().unwrap(), later);
        assert_eq!(
            t.buckets.lock().unwrap().len(),
            1,
            "drained addresses are forgotten"
        );
    }

    #[test]
    fn revoked_tokens_are_refused() {
        let cache = TokenCache::new(vec![record("a1", "s", true)]);
        assert!(cache.verify("mp_a1_s").is_none());
    }

    #[test]
    fn a_free_form_bootstrap_token_is_found_under_its_id() {
        let cache = TokenCache::new(vec![record(
            BOOTSTRAP_ID,
            "my-long-bootstrap-secret-value",
            false,
        )]);
        assert!(cache.verify("my-long-bootstrap-secret-value").is_some());
        assert!(cache.verify("my-long-bootstrap-secret-valuX").is_none());
    }

    /// A cache last loaded `REFRESH` and a bit ago.
    fn stale_cache(tokens: Vec<TokenRecord>) -> TokenCache {
        let cache = TokenCache::new(tokens);
        let long_ago = Instant::now().checked_sub(REFRESH * 2).unwrap();
        cache.inner.write().unwrap().1 = long_ago;
        cache
    }

    #[tokio::test]
    async fn concurrent_requests_on_a_stale_cache_load_the_tokens_once() {
        let cache = std::sync::Arc::new(stale_cache(vec![]));
        let loads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, loads) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .refresh_if_stale(|| async {
                        loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(vec![record("new", "s", false)])
                    })
                    .await;
                // Nobody goes on before the load it waited for is in.
                cache.verify("mp_new_s").is_some()
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap(), "a caller saw the stale tokens");
        }
        assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_load_keeps_the_tokens_and_waits_before_trying_again() {
        let cache = stale_cache(vec![record("a1", "s", false)]);
        cache
            .refresh_if_stale(|| async {
                Err(macpool_store::StoreError::Unavailable("down".into()))
            })
            .await;
        assert!(cache.verify("mp_a1_s").is_some());
        assert!(
            !cache.is_stale(),
            "a failed load should not be retried at once"
        );
    }
}
