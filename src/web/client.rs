//! The CLI's side of the API: finds a running server through the files it wrote
//! in the data directory and asks it what the CLI would otherwise read from disk.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use futures_util::StreamExt;

use super::api::{FollowReply, StatsReply};
use crate::querylog::{LogRequest, StatsRequest};

/// One list as `GET /api/v1/lists` shows it (the fields the CLI prints).
#[derive(Debug, serde::Deserialize)]
pub struct ListSummary {
    /// The list's name.
    pub name: String,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Entries compiled from it.
    pub entries: usize,
    /// Lines that are not rules.
    pub invalid: usize,
    /// Up to a few invalid lines: (line number, why).
    pub invalid_samples: Vec<(u32, String)>,
    /// Enabled but without a text.
    pub missing: bool,
    /// The last update's or read's error.
    pub last_error: Option<String>,
}

/// True when `e` says no server listens at the address (a stale endpoint file).
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_connect)
}

/// A running server's API.
pub struct Remote {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Remote {
    /// Reads the endpoint and token a server left in `data_dir`.
    pub fn find(data_dir: &Path) -> anyhow::Result<Self> {
        let endpoint = super::endpoint_path(data_dir);
        let base = std::fs::read_to_string(&endpoint)
            .with_context(|| format!("cannot read {}", endpoint.display()))?
            .trim()
            .to_owned();
        let token_file = super::token_path(data_dir);
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("cannot read the API token {}", token_file.display()))?
            .trim()
            .to_owned();
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()?;
        Ok(Self { base, token, http })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn get(
        &self,
        path: &str,
        query: &impl serde::Serialize,
    ) -> anyhow::Result<reqwest::Response> {
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .query(query);
        self.send(req).await
    }

    /// Sends `req`; a response that is not a success is an error with the
    /// server's text.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            anyhow::bail!("server answered {status}: {}", text.trim());
        }
        Ok(resp)
    }

    /// Streams matching entries, formatted by the server, to `out`.
    pub async fn copy_log(&self, req: &LogRequest, out: &mut impl Write) -> anyhow::Result<()> {
        let mut body = self.get("/api/v1/querylog", req).await?.bytes_stream();
        while let Some(chunk) = body.next().await {
            out.write_all(&chunk?)?;
        }
        Ok(())
    }

    /// Entries after `after` (or the current end when `None`).
    pub async fn follow(
        &self,
        req: &LogRequest,
        after: Option<&str>,
    ) -> anyhow::Result<FollowReply> {
        #[derive(serde::Serialize)]
        struct Q<'a> {
            #[serde(flatten)]
            req: &'a LogRequest,
            #[serde(skip_serializing_if = "Option::is_none")]
            after: Option<&'a str>,
        }
        Ok(self
            .get("/api/v1/querylog/follow", &Q { req, after })
            .await?
            .json()
            .await?)
    }

    /// Statistics for a period.
    pub async fn stats(&self, req: &StatsRequest) -> anyhow::Result<StatsReply> {
        Ok(self.get("/api/v1/stats", req).await?.json().await?)
    }

    /// The weekly review for a period.
    pub async fn report(&self, req: &StatsRequest) -> anyhow::Result<crate::guard::report::Report> {
        Ok(self.get("/api/v1/report", req).await?.json().await?)
    }

    /// Asks the server to update its lists now (`POST /api/v1/lists/update`):
    /// each list's outcome, by name.
    pub async fn update_lists(&self) -> anyhow::Result<Vec<(String, String)>> {
        let resp = self.post("/api/v1/lists/update", None::<&()>).await?;
        let map: serde_json::Map<String, serde_json::Value> = resp.json().await?;
        Ok(map
            .into_iter()
            .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect())
    }

    /// The lists in force with their counts (`GET /api/v1/lists`).
    pub async fn lists(&self) -> anyhow::Result<Vec<ListSummary>> {
        Ok(self.get("/api/v1/lists", &()).await?.json().await?)
    }

    async fn post(
        &self,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(body);
        }
        self.send(req).await
    }

    /// The allowlist proposal for a group; with `apply`, the server also adds it
    /// to the group and applies the change live.
    pub async fn learn(
        &self,
        req: &crate::guard::learn::LearnRequest,
        apply: bool,
    ) -> anyhow::Result<crate::guard::learn::Learned> {
        if !apply {
            return Ok(self
                .get("/api/v1/allowlist/learn", req)
                .await?
                .json()
                .await?);
        }
        Ok(self
            .post("/api/v1/allowlist/learn", Some(req))
            .await?
            .json()
            .await?)
    }
}
