//! Starting the real `macpool` binary for end-to-end tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const TOKEN: &str = "e2e-bootstrap-token-0123456789abcdef";

pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_macpool"))
}

/// A running `macpool serve` on a free port.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        Server::start_on(&format!("sqlite:{}", data.display()))
    }

    /// A server on any store: `sqlite:DIR` or `postgres://…` (several may share one database).
    pub fn start_on(database: &str) -> Server {
        let macpool_spawn::Listening { child, url, .. } = macpool_spawn::spawn(
            Command::new(exe())
                .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
                .env("MACPOOL_BOOTSTRAP_TOKEN", TOKEN)
                .stderr(Stdio::inherit()),
        )
        .expect("start macpool serve");
        Server { child, url }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// One API call with the admin token (`path` under `/api/v1`); asserts success and
    /// returns the JSON body (`null` when there is none).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut req = self
            .client()
            .request(method.clone(), format!("{}/api/v1{path}", self.url))
            .bearer_auth(TOKEN);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// VM id → MAC of every lease of `pool`, read as a client would: through the typed client,
    /// which follows the listing's pages (however many leases there are).
    pub async fn lease_owners(&self, pool: &str) -> HashMap<String, String> {
        let client = macpool_client::Client::new(&self.url, Some(TOKEN.to_string())).unwrap();
        let q = macpool_api::dto::LeaseQuery {
            pool: Some(pool.to_string()),
            ..Default::default()
        };
        client
            .leases(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.vm_id, l.mac))
            .collect()
    }

    /// The CLI pointed at this server with the admin token.
    pub fn cli(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::new(exe());
        c.env("MACPOOL_SERVER", &self.url)
            .env("MACPOOL_TOKEN", TOKEN);
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
