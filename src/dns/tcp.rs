//! DNS over TCP with bounded connections (slowloris guard).
//!
//! hickory-server's own TCP listener (`Server::register_listener`) closes a
//! connection that delivers no complete message within its timeout, but it accepts
//! without limit: thousands of idle clients hold thousands of file descriptors, and
//! once the process runs out, `accept` fails in a busy loop and the resolver can
//! no longer open sockets to its upstreams. This module is the same per-connection
//! loop built from hickory's public pieces (`TcpStream`, `TimeoutStream`,
//! `ResponseHandle`, the same [`RequestHandler`]) plus a connection table:
//!
//! * at most `max_connections` connections, and at most `max_per_client` from one
//!   client address;
//! * when a new connection would exceed either bound, the connection that has gone
//!   longest without a complete query (of that client, or overall) is closed to make
//!   room, so idle or trickling clients cannot lock out a real query;
//! * a connection is closed after `idle_timeout` without a complete message, however
//!   slowly its bytes arrive (hickory's `TimeoutStream` restarts only on a whole
//!   message);
//! * an `accept` error (such as running out of descriptors) backs off briefly
//!   instead of spinning.
//!
//! Each message is answered through the in-place path ([`super::fast`]), as a UDP
//! one is; only what it declines goes to hickory's parser and the handler.
//!
//! DNS over TLS ([`super::tls`]) is this same loop with a TLS acceptor: the
//! handshake runs inside the connection's slot (it counts against both bounds and
//! is cut off after `idle_timeout`), then the same framing loop reads the
//! decrypted stream.
//!
//! DNS over HTTPS ([`super::https`]) shares the accept loop and table
//! (`spawn_bounded`) with its own per-connection service in place of the framing
//! loop, marking the connection's `Slot` active on every request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hickory_proto::op::{Header, ResponseCode, SerialMessage};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_server::net::tcp::TcpStream;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::{BufDnsStreamHandle, DnsStreamHandle};
use hickory_server::proto::op::MessageType;
use hickory_server::server::{Request, ResponseHandle, ResponseHandler, TimeoutStream};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use parking_lot::Mutex;

use super::fast::{self, Front, Stream};
use super::handler::Handler;
use crate::identity::Presented;
use crate::pipeline::Arrived;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Responses queued per connection before the writer pushes back (hickory's value).
const RESPONSE_BUFFER: usize = 64 * 1024;

/// Pause after a failed `accept` (descriptors exhausted and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Bounds on DNS-over-TCP clients.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Close a connection that sends no complete message for this long.
    pub idle_timeout: Duration,
    /// Connections open at once, all clients together.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_per_client: usize,
}

impl TcpLimits {
    /// The bounds `[server]` sets.
    pub fn of(server: &super::ServerConfig) -> Self {
        Self {
            idle_timeout: Duration::from_secs(server.tcp_idle_timeout_secs),
            max_connections: server.tcp_max_connections,
            max_per_client: server.tcp_max_connections_per_client,
        }
    }
}

/// One open connection, as the table sees it.
struct Conn {
    client: IpAddr,
    /// Last complete message (or the accept), ms since the table's epoch.
    last_active_ms: Arc<AtomicU64>,
    close: Arc<Notify>,
}

/// The open connections; locked once per accept and once per close (never per
/// message: activity is an atomic).
struct Table {
    limits: TcpLimits,
    epoch: Instant,
    next_id: u64,
    conns: HashMap<u64, Conn>,
}

impl Table {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Registers a new connection from `client`, first closing the longest-idle
    /// connection of that client, or overall, if a bound would be exceeded.
    fn admit(&mut self, client: IpAddr) -> (u64, Arc<AtomicU64>, Arc<Notify>) {
        let per_client = self.conns.values().filter(|c| c.client == client).count();
        if per_client >= self.limits.max_per_client.max(1) {
            self.evict(Some(client));
        } else if self.conns.len() >= self.limits.max_connections.max(1) {
            self.evict(None);
        }
        let id = self.next_id;
        self.next_id += 1;
        let last = Arc::new(AtomicU64::new(self.now_ms()));
        let close = Arc::new(Notify::new());
        self.conns.insert(
            id,
            Conn {
                client,
                last_active_ms: last.clone(),
                close: close.clone(),
            },
        );
        (id, last, close)
    }

    fn evict(&mut self, client: Option<IpAddr>) {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| client.is_none_or(|ip| c.client == ip))
            .min_by_key(|(id, c)| (c.last_active_ms.load(Ordering::Relaxed), **id))
            .map(|(id, _)| *id);
        if let Some(conn) = victim.and_then(|id| self.conns.remove(&id)) {
            tracing::debug!(client = %conn.client, "TCP connection limit: closing the longest-idle connection");
            metrics::counter!("dnsguard_tcp_evicted_total").increment(1);
            // notify_one keeps the wake-up if the task is not waiting yet.
            conn.close.notify_one();
        }
    }
}

/// Serves DNS over TCP on `listener` with `handler` until `shutdown` is cancelled;
/// with `tls`, every connection first completes a TLS handshake (DNS over TLS).
/// Returns the accept loop's task; connection tasks end with it.
pub fn spawn(
    listener: tokio::net::TcpListener,
    limits: TcpLimits,
    handler: Arc<Handler>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    spawn_bounded(listener, limits, shutdown, move |stream, src, slot| {
        let (handler, tls) = (handler.clone(), tls.clone());
        async move {
            let conn = Connection {
                src,
                idle_timeout: limits.idle_timeout,
                slot: &slot,
            };
            match tls {
                None => serve(stream, &conn, &handler, Protocol::Tcp, None).await,
                Some(acceptor) => {
                    if let Some(stream) = handshake(&acceptor, stream, src, limits).await {
                        // The ClientID in the server name and the client
                        // certificate (`crate::identity`).
                        let tls = stream.get_ref().1;
                        let presented = Presented::from_tls(
                            tls.server_name(),
                            crate::pki::client_pin(tls.peer_certificates()),
                        );
                        let p = presented.as_ref();
                        serve(stream, &conn, &handler, Protocol::Tls, p).await
                    }
                }
            }
        }
    })
}

/// The TLS handshake of a new connection, cut off after the idle timeout (a
/// client that never finishes it is idle); `None` when it failed.
pub(super) async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    src: SocketAddr,
    limits: TcpLimits,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(limits.idle_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(error)) => tracing::debug!(%src, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%src, "TLS handshake timed out"),
    }
    metrics::counter!("dnsguard_tls_handshake_failed_total").increment(1);
    None
}

/// A connection's place in the connection table: the front end marks it active
/// on every complete message, so eviction picks the longest-idle one.
pub(super) struct Slot {
    last_active: Arc<AtomicU64>,
    epoch: Instant,
}

impl Slot {
    /// Records a complete message (or a request still being answered) now.
    pub(super) fn touch(&self) {
        self.last_active
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the last [`Slot::touch`] (or the accept).
    pub(super) fn idle_for(&self) -> Duration {
        let last = self.last_active.load(Ordering::Relaxed);
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }
}

/// The bounded accept loop every stream front end shares (TCP, DNS over TLS, DNS
/// over HTTPS): admits each connection into the table (closing the longest-idle
/// one when a bound is reached) and runs `serve` for it until it ends, is evicted,
/// or `shutdown` is cancelled.
pub(super) fn spawn_bounded<F, Fut>(
    listener: tokio::net::TcpListener,
    limits: TcpLimits,
    shutdown: CancellationToken,
    serve: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(tokio::net::TcpStream, SocketAddr, Slot) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(accept_loop(listener, limits, shutdown, serve))
}

async fn accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    limits: TcpLimits,
    shutdown: CancellationToken,
    serve: F,
) where
    F: Fn(tokio::net::TcpStream, SocketAddr, Slot) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let epoch = Instant::now();
    let table = Arc::new(Mutex::new(Table {
        limits,
        epoch,
        next_id: 0,
        conns: HashMap::new(),
    }));
    let mut tasks = JoinSet::new();
    loop {
        let (stream, src) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a TCP connection");
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Answers are small and each is written as soon as it is known: without
        // this, Nagle's algorithm holds a second small write (an HTTP/2 DATA frame
        // after its HEADERS, the next pipelined answer) until the client's delayed
        // ACK, up to 40 ms.
        let _ = stream.set_nodelay(true);
        let (id, last_active, close) = table.lock().admit(src.ip());
        let connection = serve(stream, src, Slot { last_active, epoch });
        let shutdown = shutdown.clone();
        // Held by the task: the slot is freed however the connection ends,
        // a panic in its handling included.
        let seat = Seat {
            table: table.clone(),
            id,
        };
        tasks.spawn(async move {
            let _seat = seat;
            tokio::select! {
                _ = connection => {}
                _ = close.notified() => {}
                _ = shutdown.cancelled() => {}
            }
        });
        while tasks.try_join_next().is_some() {}
    }
}

/// A connection's place in the table, given back when dropped.
struct Seat {
    table: Arc<Mutex<Table>>,
    id: u64,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.table.lock().conns.remove(&self.id);
    }
}

/// What the framing loop needs to know about its connection.
struct Connection<'a> {
    src: SocketAddr,
    idle_timeout: Duration,
    slot: &'a Slot,
}

/// One connection (plain TCP or decrypted TLS): length-prefixed messages in,
/// responses out, until the client closes, errs or idles out.
async fn serve<S>(
    stream: S,
    conn: &Connection<'_>,
    handler: &Handler,
    protocol: Protocol,
    presented: Option<&Presented>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync + 'static,
{
    let (stream, out) = TcpStream::from_stream_with_buffer_size(
        AsyncIoTokioAsStd(stream),
        conn.src,
        RESPONSE_BUFFER,
    );
    let mut messages = TimeoutStream::new(stream, conn.idle_timeout);
    while let Some(message) = messages.next().await {
        let Ok(message) = message else {
            return; // idle timeout, reset, malformed length
        };
        conn.slot.touch();
        let (bytes, src) = message.into_parts();
        answer(handler, bytes, src, &out, protocol, presented).await;
    }
}

/// One message: a plain query through the in-place path ([`fast::stream`]);
/// else what hickory's server does: nothing for less than a header, FORMERR if
/// the rest does not parse, nothing for responses, else the handler.
async fn answer(
    handler: &Handler,
    bytes: Vec<u8>,
    src: SocketAddr,
    out: &BufDnsStreamHandle,
    protocol: Protocol,
    presented: Option<&Presented>,
) {
    let front = Front {
        client: src,
        protocol,
        presented,
    };
    let reply = match fast::stream(handler.pipeline(), &bytes, &front, Arrived::now()) {
        Stream::Reply(reply) => Some(reply),
        Stream::Later(later) => later.reply(handler, &bytes, &front).await,
        Stream::Full => return full(handler, bytes, src, out, protocol, presented).await,
    };
    if let Some(reply) = reply
        && let Err(error) = out.clone().send(SerialMessage::new(reply, src))
    {
        tracing::debug!(%src, %error, "could not send response");
    }
}

/// hickory's parser and the handler, for a message the in-place path declines.
async fn full(
    handler: &Handler,
    bytes: Vec<u8>,
    src: SocketAddr,
    out: &BufDnsStreamHandle,
    protocol: Protocol,
    presented: Option<&Presented>,
) {
    let mut response = ResponseHandle::new(src, out.clone(), protocol);
    let Ok(header) = Header::read(&mut BinDecoder::new(&bytes)) else {
        return;
    };
    let request = match Request::from_bytes(bytes, src, protocol) {
        Ok(r) => r,
        Err(error) => {
            tracing::debug!(%src, %error, "malformed TCP query: FORMERR");
            let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return;
            };
            let msg = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            if let Err(error) = response.send_response(msg).await {
                tracing::debug!(%src, %error, "could not send FORMERR");
            }
            return;
        }
    };
    if request.metadata.message_type == MessageType::Response {
        return; // never answer responses (reflection)
    }
    handler
        .answer_presented(&request, response, presented.map(|p| Box::new(p.clone())))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize, per_client: usize) -> Table {
        Table {
            limits: TcpLimits {
                idle_timeout: Duration::from_secs(10),
                max_connections: max,
                max_per_client: per_client,
            },
            epoch: Instant::now(),
            next_id: 0,
            conns: HashMap::new(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Every bounded listener (TCP, DoT, DoH) hands its connections on with
    /// Nagle's algorithm off: an answer written in two parts (HTTP/2 HEADERS then
    /// DATA) must not wait for the client's delayed ACK.
    #[tokio::test]
    async fn connections_are_served_with_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let limits = TcpLimits {
            idle_timeout: Duration::from_secs(10),
            max_connections: 4,
            max_per_client: 4,
        };
        let shutdown = CancellationToken::new();
        let task = spawn_bounded(listener, limits, shutdown.clone(), move |stream, _, _| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(stream.nodelay().unwrap());
            }
        });
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(rx.recv().await, Some(true));
        shutdown.cancel();
        task.await.unwrap();
    }

    /// A connection whose handling panics gives its slot back. With two slots
    /// per client: A is served and stays open, B's handling panics, C comes.
    /// Were B's slot kept, C would be over the bound and evict the longest idle,
    /// A, a live connection.
    #[tokio::test]
    async fn a_panicking_connection_frees_its_slot() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let limits = TcpLimits {
            idle_timeout: Duration::from_secs(10),
            max_connections: 8,
            max_per_client: 2,
        };
        let shutdown = CancellationToken::new();
        let accepted = Arc::new(AtomicU64::new(0));
        let task = spawn_bounded(
            listener,
            limits,
            shutdown.clone(),
            move |mut stream, _, _| {
                let (tx, n) = (tx.clone(), accepted.fetch_add(1, Ordering::Relaxed));
                async move {
                    if n == 1 {
                        panic!("B's handling fails");
                    }
                    let _ = tx.send(n);
                    // An echo until the client closes.
                    let mut byte = [0u8; 1];
                    while stream.read_exact(&mut byte).await.is_ok() {
                        if stream.write_all(&byte).await.is_err() {
                            break;
                        }
                    }
                }
            },
        );
        let mut a = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(rx.recv().await, Some(0));
        let b = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut closed = [0u8; 1];
        let mut b = b;
        assert_eq!(b.read(&mut closed).await.unwrap_or(0), 0, "B's task ended");
        let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(rx.recv().await, Some(2));
        a.write_all(b"x").await.unwrap();
        let mut echo = [0u8; 1];
        a.read_exact(&mut echo)
            .await
            .expect("A is still served: C took B's freed slot, not A's");
        assert_eq!(&echo, b"x");
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn global_bound_evicts_the_longest_idle() {
        let mut t = table(3, 10);
        let (a, a_last, _) = t.admit(ip("10.0.0.1"));
        let (b, b_last, _) = t.admit(ip("10.0.0.2"));
        let (c, c_last, _) = t.admit(ip("10.0.0.3"));
        // a and c were active recently; b has been idle longest.
        a_last.store(100, Ordering::Relaxed);
        b_last.store(5, Ordering::Relaxed);
        c_last.store(50, Ordering::Relaxed);
        let (d, _, _) = t.admit(ip("10.0.0.4"));
        assert_eq!(t.conns.len(), 3);
        assert!(!t.conns.contains_key(&b), "b evicted");
        assert!(t.conns.contains_key(&a) && t.conns.contains_key(&c) && t.conns.contains_key(&d));
    }

    #[tokio::test]
    async fn eviction_wakes_the_connection() {
        let mut t = table(1, 1);
        let (_, _, close) = t.admit(ip("10.0.0.1"));
        t.admit(ip("10.0.0.2"));
        tokio::time::timeout(Duration::from_secs(5), close.notified())
            .await
            .expect("evicted connection is woken");
    }

    #[test]
    fn per_client_bound_evicts_only_that_clients_connections() {
        let mut t = table(100, 2);
        let (other, other_last, _) = t.admit(ip("10.0.0.9"));
        other_last.store(0, Ordering::Relaxed); // the idlest of all
        let (x1, x1_last, _) = t.admit(ip("10.0.0.1"));
        let (x2, x2_last, _) = t.admit(ip("10.0.0.1"));
        x1_last.store(10, Ordering::Relaxed);
        x2_last.store(20, Ordering::Relaxed);
        let (x3, _, _) = t.admit(ip("10.0.0.1"));
        assert!(t.conns.contains_key(&other), "other client untouched");
        assert!(!t.conns.contains_key(&x1), "that client's idlest closed");
        assert!(t.conns.contains_key(&x2) && t.conns.contains_key(&x3));
        assert_eq!(
            t.conns
                .values()
                .filter(|c| c.client == ip("10.0.0.1"))
                .count(),
            2
        );
    }
}
