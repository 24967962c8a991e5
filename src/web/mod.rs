//! The HTTP side on `[web] listen` (127.0.0.1:8080 by default): the dashboard's
//! pages (embedded from `web/`), a JSON API under `/api/v1` that the pages and the
//! CLI both use, and `/metrics` for Prometheus.
//!
//! * `auth.rs`: password, sessions, CSRF, login rate limit, the gate on every route;
//! * `api.rs`: the router and the query-log/stats handlers;
//! * `manage.rs`: lists, groups, rules, settings, check, alerts, time series;
//! * `guard.rs`: allowlist learning, the weekly report, recent egress alerts;
//! * `encrypted.rs`: certificate and endpoints for the settings page, `.mobileconfig`;
//! * `pages.rs`: embedded assets, login page, security headers;
//! * `metrics.rs`: the Prometheus endpoint;
//! * `client.rs`: the CLI's side.
//!
//! Every route but the login page (and its assets) and `/api/v1/health` needs the
//! API token (`Authorization: Bearer …`, kept in `DATA_DIR/api-token`, mode 0600,
//! made at first start) or a dashboard session. The server also writes the
//! address it bound to `DATA_DIR/api-endpoint`, which is how the CLI finds it.

pub mod api;
pub mod auth;
pub mod client;
pub mod cluster;
pub mod encrypted;
pub mod guard;
pub mod manage;
pub mod metrics;
pub mod pages;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::live::Live;
use crate::pipeline::Pipeline;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Configuration, lists and pipeline of the running server.
    pub live: Arc<Live>,
    /// The bearer token the API requires.
    pub token: Arc<str>,
    /// Dashboard sessions and login rate limits.
    pub auth: Arc<auth::AuthState>,
    /// The data directory (password file).
    pub data_dir: Arc<Path>,
    /// Whether session cookies are `Secure`.
    pub secure_cookie: bool,
    /// Serialises configuration changes (read, edit, apply, write).
    pub edit_lock: Arc<tokio::sync::Mutex<()>>,
    /// The Prometheus recorder's handle.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// `[web] metrics_token`.
    pub metrics_token: Option<Arc<str>>,
    /// The encrypted listeners and their certificate, once they are up.
    pub serving: encrypted::ServingCell,
}

impl AppState {
    /// The DNS pipeline (policy, query log, cache).
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.live.pipeline
    }
}

/// The API token file under the data directory.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("api-token")
}

/// The file naming the address the running server's API is bound to.
pub fn endpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join("api-endpoint")
}

/// Reads the API token, making a new random one (mode 0600) if there is none.
pub fn load_or_create_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = token_path(data_dir);
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if t.len() >= 32 {
            return Ok(t);
        }
    }
    crate::datadir::create_dir(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let token = auth::random_hex();
    crate::datadir::write_atomically(&path, token.as_bytes(), crate::datadir::FILE_MODE)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

/// Binds the listener and serves the dashboard, API and metrics until the task is
/// dropped. Returns the bound address once listening. `serving` is filled in
/// when the encrypted DNS listeners are up.
pub async fn start(
    cfg: &crate::config::WebConfig,
    data_dir: &Path,
    live: Arc<Live>,
    serving: encrypted::ServingCell,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    // An unwritable data directory (read-only or full disk) must not stop DNS:
    // the token then lives in memory, and the CLI cannot find the server.
    let token = load_or_create_token(data_dir).unwrap_or_else(|e| {
        tracing::error!(
            error = format!("{e:#}"),
            "API token not saved: the CLI cannot ask this server"
        );
        auth::random_hex()
    });
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {} (web.listen)", cfg.listen))?;
    let addr = listener.local_addr()?;
    if let Err(e) = std::fs::write(endpoint_path(data_dir), format!("http://{addr}\n")) {
        tracing::error!(
            error = %e, path = %endpoint_path(data_dir).display(),
            "API address not saved: the CLI cannot find this server"
        );
    }
    let state = AppState {
        live,
        token: token.into(),
        auth: Arc::default(),
        data_dir: data_dir.into(),
        secure_cookie: cfg.secure_cookie,
        edit_lock: Arc::default(),
        metrics: metrics::install(),
        metrics_token: cfg.metrics_token.as_deref().map(Arc::from),
        serving,
    };
    if !auth::password_is_set(data_dir) {
        let command = pages::set_password_command(state.live.config_path.as_deref());
        tracing::warn!("no dashboard password set; run `{command}` to use the dashboard");
    }
    let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(%addr, "API listening");
    Ok((addr, task))
}
