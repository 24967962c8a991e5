//! Binds the UDP and TCP listeners and hands them to hickory-server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use hickory_server::Server;
use socket2::{Domain, Protocol, Socket, Type};

use super::handler::Handler;
use super::pipeline::Pipeline;
use super::tcp::{self, TcpLimits};

/// Socket buffer size asked for on UDP sockets: bursts of queries wait in the
/// kernel rather than being dropped while the server catches up.
const UDP_BUFFER: usize = 4 << 20;

/// A running DNS service.
pub struct DnsServer {
    server: Server<Handler>,
    /// DNS-over-TCP accept loops (`dns::tcp`); they stop with `server`'s shutdown token.
    tcp: Vec<tokio::task::JoinHandle<()>>,
    /// The addresses actually bound (port 0 in the config becomes a real port).
    pub local_addrs: Vec<SocketAddr>,
}

impl DnsServer {
    /// Binds UDP and TCP on every address and starts answering.
    pub fn start(
        listen: &[SocketAddr],
        tcp_limits: TcpLimits,
        pipeline: Arc<Pipeline>,
    ) -> anyhow::Result<Self> {
        let handler = Handler::new(pipeline);
        let tcp_handler = Arc::new(handler.clone());
        let mut server = Server::new(handler);
        let mut local_addrs = Vec::new();
        let mut tcp_tasks = Vec::new();
        for addr in listen {
            let (udp, tcp) = bind_pair(*addr)?;
            let bound = udp.local_addr()?;
            server.register_socket(udp);
            // TCP: our bounded loop (slowloris guard), not `register_listener`.
            let token = server.shutdown_token().clone();
            tcp_tasks.push(tcp::spawn(tcp, tcp_limits, tcp_handler.clone(), token));
            tracing::info!(addr = %bound, "listening (UDP and TCP)");
            local_addrs.push(bound);
        }
        Ok(Self {
            server,
            tcp: tcp_tasks,
            local_addrs,
        })
    }

    /// Stops accepting queries and waits for the listeners to finish.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::warn!(error = %e, "error while shutting down the DNS listeners");
        }
        for task in self.tcp.drain(..) {
            let _ = task.await;
        }
    }
}

/// Binds UDP and TCP on the same address. Port 0 means "any free port": the UDP
/// socket picks one and TCP takes the same; if that TCP port is taken, try again.
fn bind_pair(addr: SocketAddr) -> anyhow::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
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

fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
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
