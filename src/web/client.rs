//! The CLI's side of the API: finds a running server through the files it wrote
//! in the data directory and asks it what the CLI would otherwise read from disk.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use futures_util::StreamExt;

use super::api::{FollowReply, StatsReply};
use crate::querylog::{LogRequest, StatsRequest};

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
        let http = reqwest::Client::builder().no_proxy().build()?;
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
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .query(query)
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
        let resp = self
            .http
            .post(format!("{}/api/v1/allowlist/learn", self.base))
            .bearer_auth(&self.token)
            .json(req)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            anyhow::bail!("server answered {status}: {}", text.trim());
        }
        Ok(resp.json().await?)
    }
}
