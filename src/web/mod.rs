//! The HTTP side: a JSON API under `/api/v1` that the CLI (and the dashboard) use,
//! on `[web] listen` (127.0.0.1:8080 by default).
//!
//! Every route but `/api/v1/health` needs the API token (`Authorization: Bearer …`),
//! kept in `DATA_DIR/api-token` (mode 0600, made at first start) so only the
//! service's user and root can use the API. The server also writes the address it
//! bound to `DATA_DIR/api-endpoint`, which is how the CLI finds it.

pub mod api;
pub mod client;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;

use crate::dns::pipeline::Pipeline;

/// `[web]`: the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Serve the API at all.
    pub enabled: bool,
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The DNS pipeline (policy, query log, cache).
    pub pipeline: Arc<Pipeline>,
    /// The bearer token the API requires.
    pub token: Arc<str>,
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
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = token_path(data_dir);
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if t.len() >= 32 {
            return Ok(t);
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .context("cannot read /dev/urandom")?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    Ok(token)
}

/// Binds the listener and serves the API until the task is dropped. Returns the
/// bound address once listening.
pub async fn start(
    cfg: &WebConfig,
    data_dir: &Path,
    pipeline: Arc<Pipeline>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let token = load_or_create_token(data_dir)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {} (web.listen)", cfg.listen))?;
    let addr = listener.local_addr()?;
    std::fs::write(endpoint_path(data_dir), format!("http://{addr}\n"))
        .with_context(|| format!("cannot write {}", endpoint_path(data_dir).display()))?;
    let state = AppState {
        pipeline,
        token: token.into(),
    };
    let app = api::router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(%addr, "API listening");
    Ok((addr, task))
}
