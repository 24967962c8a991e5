//! Binds the listeners: UDP sockets (one per core) for the [`super::udp`] front
//! end, and TCP for the bounded [`super::tcp`] loop (DNS over TLS and HTTPS
//! too); all run the same pipeline.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

use super::handler::Handler;
use super::https::DohConfig;
use super::tcp::{self, TcpLimits};
use super::udp::UdpService;
use crate::cert::CertStore;
use crate::pipeline::Pipeline;
use crate::ratelimit::{RateLimitConfig, RateLimiter};

/// Socket buffer size asked for on UDP sockets: bursts of queries wait in the
/// kernel rather than being dropped while the server catches up.
const UDP_BUFFER: usize = 4 << 20;

/// A running DNS service.
pub struct DnsServer {
    udp: UdpService,
    /// DNS-over-TCP (TLS, HTTPS) accept loops and DNS-over-QUIC endpoint loops;
    /// they stop when `shutdown` is cancelled.
    tcp: Vec<tokio::task::JoinHandle<()>>,
    shutdown: CancellationToken,
    /// The addresses actually bound (port 0 in the config becomes a real port).
    pub local_addrs: Vec<SocketAddr>,
    /// The DNS-over-TLS addresses actually bound.
    pub tls_addrs: Vec<SocketAddr>,
    /// The DNS-over-HTTPS addresses actually bound.
    pub https_addrs: Vec<SocketAddr>,
    /// The DNS-over-QUIC addresses actually bound.
    pub quic_addrs: Vec<SocketAddr>,
}

impl DnsServer {
    /// Binds UDP and TCP on every address (and DNS over TLS on `tls`' addresses,
    /// with its certificate, DNS over QUIC on `quic_listen` with the same one, and
    /// DNS over HTTP(S) as `doh` says) and starts answering.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        listen: &[SocketAddr],
        tls: Option<(&[SocketAddr], &Arc<CertStore>)>,
        quic_listen: &[SocketAddr],
        doh: &DohConfig,
        tcp_limits: TcpLimits,
        rate_limit: &RateLimitConfig,
        pipeline: Arc<Pipeline>,
    ) -> anyhow::Result<Self> {
        let handler = Arc::new(Handler::new(pipeline.clone()));
        let shutdown = CancellationToken::new();
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut local_addrs = Vec::new();
        let mut udp_sockets = Vec::new();
        let mut tcp_tasks = Vec::new();
        for addr in listen {
            let (udp, tcp) = bind_pair(*addr)?;
            let bound = udp.local_addr()?;
            udp_sockets.push(udp);
            for _ in 1..workers {
                udp_sockets.push(
                    bind_udp(bound).with_context(|| format!("cannot listen on UDP {bound}"))?,
                );
            }
            tcp_tasks.push(tcp::spawn(
                tcp,
                tcp_limits,
                handler.clone(),
                None,
                shutdown.clone(),
            ));
            tracing::info!(addr = %bound, "listening (UDP and TCP)");
            local_addrs.push(bound);
        }
        let mut tls_addrs = Vec::new();
        if let Some((tls_listen, certs)) = tls {
            let (tasks, bound) =
                super::tls::spawn(tls_listen, certs, tcp_limits, handler.clone(), &shutdown)?;
            tcp_tasks.extend(tasks);
            tls_addrs = bound;
        }
        let mut quic_addrs = Vec::new();
        if !quic_listen.is_empty() {
            let (_, certs) = tls.context("DNS over QUIC needs a certificate")?;
            let (tasks, bound) =
                super::quic::spawn(quic_listen, certs, tcp_limits, handler.clone(), &shutdown)?;
            tcp_tasks.extend(tasks);
            quic_addrs = bound;
        }
        let doh = super::https::spawn(
            doh,
            tls.map(|(_, certs)| certs),
            tcp_limits,
            handler.clone(),
            &shutdown,
        )?;
        tcp_tasks.extend(doh.tasks);
        let limiter = Arc::new(RateLimiter::new(rate_limit));
        let udp = UdpService::start(udp_sockets, pipeline, limiter)?;
        Ok(Self {
            udp,
            tcp: tcp_tasks,
            shutdown,
            local_addrs,
            tls_addrs,
            https_addrs: doh.https,
            quic_addrs,
        })
    }

    /// Stops accepting queries and waits for the listeners to finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tcp {
            let _ = task.await;
        }
        let udp = self.udp;
        let _ = tokio::task::spawn_blocking(move || udp.shutdown()).await;
    }
}

/// Binds UDP and TCP on the same address. Port 0 means "any free port": a port no
/// socket holds is picked for UDP and TCP takes the same; if that TCP port is
/// taken, try again.
fn bind_pair(addr: SocketAddr) -> anyhow::Result<(std::net::UdpSocket, tokio::net::TcpListener)> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let addr = if addr.port() == 0 {
            free_udp_port(addr)?
        } else {
            addr
        };
        let udp = bind_udp(addr).with_context(|| format!("cannot listen on UDP {addr}"))?;
        let tcp_addr = SocketAddr::new(addr.ip(), udp.local_addr()?.port());
        match bind_tcp(tcp_addr) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => {
                last_error =
                    Some(anyhow::Error::new(e).context(format!("cannot listen on TCP {tcp_addr}")))
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("cannot listen on {addr}")))
}

/// `addr` with a UDP port that no socket holds. The workers' sockets share their
/// port through `SO_REUSEPORT` and `SO_REUSEADDR`, and with those set the kernel
/// may give "port 0" a port that other such sockets of the same user already hold
/// (another dnsguard's, say), which would then split the queries between them. A
/// socket without either option only gets a port nobody holds.
fn free_udp_port(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let probe = std::net::UdpSocket::bind(addr)
        .with_context(|| format!("cannot find a free UDP port on {}", addr.ip()))?;
    Ok(probe.local_addr()?)
}

/// A blocking UDP socket with `SO_REUSEPORT`, so each worker gets its own socket
/// on the same address (the kernel spreads clients over them).
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A UDP socket of one listener only (no `SO_REUSEPORT`: a second process on
/// the same address is an error, not a silent share), for QUIC.
pub(super) fn bind_udp_once(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

pub(super) fn bind_tcp(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}
