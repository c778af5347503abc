//! A typed client for the authority's API. Errors keep the server's problem+json so callers
//! can tell "no" (a conflict) from "can't" (unreachable, refused).

use std::time::Duration;

use macpool_api::dto::*;
use macpool_api::{API_PREFIX, Problem};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The exit codes of the command-line tools that talk to the authority (`macpool` and
/// `macpool-bench`), so that both map an error to the same code.
pub mod exit {
    pub const OK: i32 = 0;
    /// The answer is "no" (conflict, not found).
    pub const NO: i32 = 1;
    /// Usage or input error.
    pub const USAGE: i32 = 2;
    /// Server unreachable or refused (auth, unavailable).
    pub const UNREACHABLE: i32 = 3;
}

impl ClientError {
    /// The exit code a command ends with when this error stops it.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Problem(p) => match p.status {
                404 | 409 => exit::NO,
                400 | 413 | 415 | 422 => exit::USAGE,
                _ => exit::UNREACHABLE,
            },
            ClientError::Unreachable { .. } => exit::UNREACHABLE,
            ClientError::Usage(_) => exit::USAGE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{} ({})", .0.detail, .0.slug())]
    Problem(Problem),
    /// The server could not be reached, or answered something that is not our API.
    #[error("cannot reach the macpool server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Problem(p) => Some(p.status),
            _ => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// A page of `GET /history`.
#[derive(Clone, Debug)]
pub struct HistoryPage {
    pub rows: Vec<HistoryInfo>,
    /// Older entries follow: ask with this as `before`.
    pub next_before: Option<u64>,
    /// The asked limit was above the server's most per page: the limit applied.
    pub capped_to: Option<u32>,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Percent-encodes one path segment (pool names are URL-safe, but VM ids and MACs in paths
/// need not be).
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// `server` is the base URL (`http://127.0.0.1:7780`); a missing scheme means `http://`.
    pub fn new(server: &str, token: Option<String>) -> ClientResult<Client> {
        Client::with_ca(server, token, None)
    }

    /// Like [`Client::new`], also trusting the PEM certificate(s) in `ca_pem` (a private CA or a
    /// self-signed authority certificate).
    pub fn with_ca(
        server: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
    ) -> ClientResult<Client> {
        let base = if server.contains("://") {
            server.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", server.trim_end_matches('/'))
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Usage(format!("cannot read the CA certificate: {e}")))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client { http, base, token })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> ClientResult<T> {
        Ok(self.send_for_headers(method, path, query, body).await?.0)
    }

    /// [`Self::send`], also returning the response headers (a listing's next cursor).
    async fn send_for_headers<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> ClientResult<(T, reqwest::header::HeaderMap)> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url).query(query);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: error_chain(&e),
        })?;
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: error_chain(&e),
        })?;
        if status.is_success() {
            let body: &[u8] = if status == StatusCode::NO_CONTENT || bytes.is_empty() {
                b"null"
            } else {
                &bytes
            };
            serde_json::from_slice(body)
                .map(|v| (v, headers))
                .map_err(|e| ClientError::Unreachable {
                    url: self.base.clone(),
                    reason: format!("unexpected response to {path}: {e}"),
                })
        } else {
            match serde_json::from_slice::<Problem>(&bytes) {
                Ok(p) => Err(ClientError::Problem(p)),
                Err(_) => Err(ClientError::Unreachable {
                    url: self.base.clone(),
                    reason: format!(
                        "HTTP {status} without a problem document (is this a macpool server?)"
                    ),
                }),
            }
        }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> ClientResult<T> {
        self.send(
            Method::GET,
            &format!("{API_PREFIX}{path}"),
            query,
            None::<&()>,
        )
        .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> ClientResult<T> {
        self.send(
            Method::POST,
            &format!("{API_PREFIX}{path}"),
            &[],
            Some(body),
        )
        .await
    }

    pub async fn health(&self) -> ClientResult<Health> {
        self.send(Method::GET, "/healthz", &[], None::<&()>).await
    }

    pub async fn pools(&self) -> ClientResult<Vec<PoolInfo>> {
        self.get("/pools", &[]).await
    }

    pub async fn pool(&self, name: &str) -> ClientResult<PoolInfo> {
        self.get(&format!("/pools/{}", segment(name)), &[]).await
    }

    pub async fn create_pool(&self, body: &PoolCreate) -> ClientResult<PoolInfo> {
        self.post("/pools", body).await
    }

    pub async fn edit_pool(&self, name: &str, body: &PoolEditBody) -> ClientResult<PoolInfo> {
        self.send(
            Method::PATCH,
            &format!("{API_PREFIX}/pools/{}", segment(name)),
            &[],
            Some(body),
        )
        .await
    }

    pub async fn delete_pool(&self, name: &str) -> ClientResult<()> {
        self.send(
            Method::DELETE,
            &format!("{API_PREFIX}/pools/{}", segment(name)),
            &[],
            None::<&()>,
        )
        .await
    }

    pub async fn available(&self, name: &str, limit: Option<u64>) -> ClientResult<AvailableInfo> {
        let q: Vec<(&str, String)> = limit
            .map(|l| ("limit", l.to_string()))
            .into_iter()
            .collect();
        self.get(&format!("/pools/{}/available", segment(name)), &q)
            .await
    }

    pub async fn allocate(&self, body: &AllocateBody) -> ClientResult<AllocationResult> {
        self.post("/leases", body).await
    }

    pub async fn release(&self, body: &ReleaseBody) -> ClientResult<Vec<ReleasedInfo>> {
        self.post("/leases/release", body).await
    }

    /// The leases `q` selects: every page, unless `q.limit` asks for one page of that size.
    pub async fn leases(&self, q: &LeaseQuery) -> ClientResult<Vec<LeaseInfo>> {
        let mut query = Vec::new();
        for (k, v) in [("pool", &q.pool), ("host", &q.host), ("vm", &q.vm)] {
            if let Some(v) = v {
                query.push((k, v.clone()));
            }
        }
        query.push((
            "limit",
            q.limit.unwrap_or(macpool_api::MAX_PAGE).to_string(),
        ));
        let mut after = q.after.clone();
        let mut all = Vec::new();
        loop {
            let mut page_query = query.clone();
            if let Some(a) = &after {
                page_query.push(("after", a.clone()));
            }
            let (page, headers): (Vec<LeaseInfo>, _) = self
                .send_for_headers(
                    Method::GET,
                    &format!("{API_PREFIX}/leases"),
                    &page_query,
                    None::<&()>,
                )
                .await?;
            all.extend(page);
            after = headers
                .get(macpool_api::NEXT_CURSOR_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if after.is_none() || q.limit.is_some() {
                return Ok(all);
            }
        }
    }

    pub async fn mac(&self, mac: &str) -> ClientResult<MacInfo> {
        self.get(&format!("/macs/{}", segment(mac)), &[]).await
    }

    pub async fn hold(&self, body: &HoldBody) -> ClientResult<HoldInfo> {
        self.post("/holds", body).await
    }

    pub async fn unhold(&self, body: &UnholdBody) -> ClientResult<Vec<HoldInfo>> {
        self.post("/holds/remove", body).await
    }

    pub async fn holds(&self, vm: Option<&str>) -> ClientResult<Vec<HoldInfo>> {
        let q: Vec<(&str, String)> = vm.map(|v| ("vm", v.to_string())).into_iter().collect();
        self.get("/holds", &q).await
    }

    pub async fn history(&self, q: &HistoryQuery) -> ClientResult<Vec<HistoryInfo>> {
        Ok(self.history_page(q).await?.rows)
    }

    /// One page of history, with the cursor of the next and the limit the server applied if it
    /// cut the asked one.
    pub async fn history_page(&self, q: &HistoryQuery) -> ClientResult<HistoryPage> {
        let mut query = Vec::new();
        if let Some(m) = &q.mac {
            query.push(("mac", m.clone()));
        }
        if let Some(v) = &q.vm {
            query.push(("vm", v.clone()));
        }
        if let Some(l) = q.limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(b) = q.before {
            query.push(("before", b.to_string()));
        }
        let (rows, headers) = self
            .send_for_headers(
                Method::GET,
                &format!("{API_PREFIX}/history"),
                &query,
                None::<&()>,
            )
            .await?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        };
        Ok(HistoryPage {
            rows,
            next_before: header(macpool_api::NEXT_CURSOR_HEADER),
            capped_to: header(macpool_api::LIMIT_CAPPED_HEADER).map(|v: u64| v as u32),
        })
    }

    pub async fn tokens(&self) -> ClientResult<Vec<TokenInfo>> {
        self.get("/tokens", &[]).await
    }

    pub async fn create_token(&self, body: &TokenCreate) -> ClientResult<TokenCreated> {
        self.post("/tokens", body).await
    }

    pub async fn revoke_token(&self, id: &str) -> ClientResult<TokenInfo> {
        self.send(
            Method::DELETE,
            &format!("{API_PREFIX}/tokens/{}", segment(id)),
            &[],
            None::<&()>,
        )
        .await
    }

    /// Sends a host's whole inventory (`PUT /hosts/{host}/inventory`).
    pub async fn put_inventory(
        &self,
        host: &str,
        body: &InventoryBody,
    ) -> ClientResult<InventoryResult> {
        self.send(
            Method::PUT,
            &format!("{API_PREFIX}/hosts/{}/inventory", segment(host)),
            &[],
            Some(body),
        )
        .await
    }

    /// Claims a block for `host`, or gets its pending one back (`existing`).
    pub async fn claim_block(&self, host: &str, body: &ClaimBlockBody) -> ClientResult<BlockInfo> {
        self.send(
            Method::POST,
            &format!("{API_PREFIX}/hosts/{}/blocks", segment(host)),
            &[],
            Some(body),
        )
        .await
    }

    /// The blocks of `host` (every host's with `None`) that are not free yet.
    pub async fn blocks(&self, host: Option<&str>) -> ClientResult<Vec<BlockInfo>> {
        match host {
            Some(h) => {
                self.get(&format!("/hosts/{}/blocks", segment(h)), &[])
                    .await
            }
            None => self.get("/blocks", &[]).await,
        }
    }

    /// Marks `id` active on `host` (its previous active block drains).
    pub async fn activate_block(&self, host: &str, id: u64) -> ClientResult<BlockInfo> {
        self.send(
            Method::POST,
            &format!("{API_PREFIX}/hosts/{}/blocks/{id}/activate", segment(host)),
            &[],
            None::<&()>,
        )
        .await
    }

    /// Stops delegating block `id` of `host`.
    pub async fn drain_block(&self, host: &str, id: u64) -> ClientResult<BlockInfo> {
        self.send(
            Method::POST,
            &format!("{API_PREFIX}/hosts/{}/blocks/{id}/drain", segment(host)),
            &[],
            None::<&()>,
        )
        .await
    }

    /// Every host that reported an inventory, by name.
    pub async fn hosts(&self) -> ClientResult<Vec<HostInfo>> {
        self.get("/hosts", &[]).await
    }

    /// The latest inventory the authority accepted from `host`.
    pub async fn inventory(&self, host: &str) -> ClientResult<InventoryInfo> {
        self.get(&format!("/hosts/{}/inventory", segment(host)), &[])
            .await
    }

    /// Every current conflict.
    pub async fn conflicts(&self) -> ClientResult<Vec<ConflictInfo>> {
        self.get("/conflicts", &[]).await
    }

    /// The raw Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> ClientResult<String> {
        let mut req = self.http.get(format!("{}/metrics", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: error_chain(&e),
        })?;
        res.text().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: error_chain(&e),
        })
    }
}

/// reqwest's top-level messages are vague ("error sending request"); the cause chain says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !parts.contains(&msg) {
            parts.push(msg);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("00-15-5D-00-00-01"), "00-15-5D-00-00-01");
        assert_eq!(segment("00:15:5d:00:00:01"), "00%3A15%3A5d%3A00%3A00%3A01");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn a_base_without_scheme_means_http() {
        assert_eq!(
            Client::new("127.0.0.1:7780", None).unwrap().base(),
            "http://127.0.0.1:7780"
        );
        assert_eq!(
            Client::new("https://x:1/", None).unwrap().base(),
            "https://x:1"
        );
    }
}
