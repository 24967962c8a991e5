//! DNS over TLS (RFC 7858): the [`super::tcp`] front end with a TLS handshake in
//! front. One connection-bounded loop serves both, so DoT connections get the same
//! idle timeout, the same per-client and total caps (the handshake counts) and the
//! same pipeline (`allow_clients`, filtering, logging) as TCP ones. The server
//! name's ClientID and the client certificate's pin go into
//! [`crate::identity::Presented`].

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::tcp::{self, TcpLimits};
use crate::cert::CertStore;

/// Binds each of `listen` and serves DNS over TLS there with `certs`' certificate.
/// Returns the accept loops and the addresses actually bound.
pub fn spawn(
    listen: &[SocketAddr],
    certs: &Arc<CertStore>,
    limits: TcpLimits,
    handler: Arc<super::handler::Handler>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Vec<tokio::task::JoinHandle<()>>, Vec<SocketAddr>)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config());
    let mut tasks = Vec::new();
    let mut bound = Vec::new();
    for addr in listen {
        let listener = super::server::bind_tcp(*addr)
            .with_context(|| format!("cannot listen for DNS over TLS on {addr}"))?;
        let local = listener.local_addr()?;
        tasks.push(tcp::spawn(
            listener,
            limits,
            handler.clone(),
            Some(acceptor.clone()),
            shutdown.clone(),
        ));
        tracing::info!(addr = %local, "listening (DNS over TLS)");
        bound.push(local);
    }
    Ok((tasks, bound))
}
