//! The composition point: builds the pipeline from a [`Config`], starts the
//! listeners and background tasks, and shuts everything down on SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::dns::pipeline::Pipeline;
use crate::dns::server::DnsServer;

/// Runs the service until a termination signal arrives.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let pipeline = Arc::new(Pipeline::new(&cfg)?);
    let server = DnsServer::start(
        &cfg.server.listen,
        Duration::from_secs(cfg.server.tcp_idle_timeout_secs),
        pipeline.clone(),
    )?;
    tracing::info!(mode = ?cfg.resolver.mode, "dnsguard ready");

    let maintenance = {
        let pipeline = pipeline.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                pipeline.cache().purge_expired();
            }
        })
    };

    shutdown_signal().await;
    tracing::info!("shutting down");
    maintenance.abort();
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
