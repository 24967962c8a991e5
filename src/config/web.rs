//! `[web]`, the section of the dashboard and API. It stays beside the aggregate,
//! not in `web/`: `web` edits and reloads the whole configuration (it imports
//! `config`), so `config` importing `web` would close a circle.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[web]`: the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Serve the API at all.
    pub enabled: bool,
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
    /// Bearer token Prometheus sends to scrape `/metrics` without the admin
    /// password; unset = only the API token or a session may read it.
    pub metrics_token: Option<String>,
    /// Mark the session cookie `Secure` (set when a TLS proxy fronts the dashboard).
    pub secure_cookie: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_token: None,
            secure_cookie: false,
        }
    }
}
