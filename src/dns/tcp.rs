//! DNS over TCP with bounded connections (slowloris guard).
//!
//! hickory-server's own TCP listener (`Server::register_listener`) closes a
//! connection that delivers no complete message within its timeout, but it accepts
//! without limit: thousands of idle clients hold thousands of file descriptors, and
//! once the process runs out, `accept` fails in a busy loop and the resolver can
//! no longer open sockets to its upstreams. This module is a per-connection
//! framing loop of its own plus a connection table:
//!
//! * at most `max_connections` connections, and at most `max_per_client` from one
//!   client address;
//! * when a new connection would exceed either bound, the connection that has gone
//!   longest without a complete query (of that client, or overall) is closed to make
//!   room, so idle or trickling clients cannot lock out a real query;
//! * a connection is closed after `idle_timeout` without a complete message, however
//!   slowly its bytes arrive (only a whole message marks it active);
//! * an `accept` error (such as running out of descriptors) backs off briefly
//!   instead of spinning.
//!
//! The loop answers pipelined messages in batches: each read takes whatever the
//! stream has, every whole message in it is answered through the in-place path
//! ([`super::fast`]), as a UDP one is, and the replies are written together (one
//! TLS record for many answers on DoT). A miss, and what the in-place path
//! declines (hickory's parser and the handler), is answered in a task of its own,
//! at most [`IN_FLIGHT`] per connection, so it holds up no answer behind it.
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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Header, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::MessageType;
use hickory_server::server::{Request, ResponseHandler};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use super::fast::{self, Collect, Front, Stream};
use super::handler::Handler;
use crate::identity::Presented;
use crate::pipeline::Arrived;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
            let mut conn = Connection {
                src,
                idle_timeout: limits.idle_timeout,
                slot: &slot,
                handler,
                protocol: Protocol::Tcp,
                presented: None,
            };
            match tls {
                None => conn.serve(stream).await,
                Some(acceptor) => {
                    if let Some(stream) = handshake(&acceptor, stream, src, limits).await {
                        // The ClientID in the server name and the client
                        // certificate (`crate::identity`).
                        let tls = stream.get_ref().1;
                        conn.protocol = Protocol::Tls;
                        conn.presented = Presented::from_tls(
                            tls.server_name(),
                            crate::pki::client_pin(tls.peer_certificates()),
                        )
                        .map(Arc::new);
                        conn.serve(stream).await
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

/// Misses (and messages for the full path) one connection may have in flight at
/// once; past this the loop reads nothing more from it until one is answered, so
/// a client cannot open unbounded work.
const IN_FLIGHT: usize = 100;

/// Free room a read asks for at least: a few dozen pipelined queries.
const READ_ROOM: usize = 4096;

/// A batch of answers larger than this is written out before more messages are
/// answered: a full TLS record's plaintext.
const WRITE_BATCH: usize = 16 * 1024;

/// Where a connection's next message stands in what has been read.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// A whole message of this many bytes follows its 2-byte length.
    Whole(usize),
    /// Not whole yet: the message and its length take this many bytes.
    Partial(usize),
    /// A length of 0: no DNS message is that short, the stream is not DNS.
    Malformed,
}

/// The next message at the start of `buf`, which begins with a length prefix.
fn frame(buf: &[u8]) -> Frame {
    let [hi, lo, rest @ ..] = buf else {
        return Frame::Partial(2);
    };
    match usize::from(u16::from_be_bytes([*hi, *lo])) {
        0 => Frame::Malformed,
        len if rest.len() >= len => Frame::Whole(len),
        len => Frame::Partial(2 + len),
    }
}

/// Appends `reply` to `out` with its 2-byte length (one over 65535 bytes, which
/// no encoder here makes, is dropped).
fn push_framed(out: &mut Vec<u8>, reply: &[u8]) {
    let Ok(len) = u16::try_from(reply.len()) else {
        tracing::debug!(
            len = reply.len(),
            "reply longer than a DNS message: dropped"
        );
        return;
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(reply);
}

/// A connection as its framing loop serves it.
struct Connection<'a> {
    src: SocketAddr,
    idle_timeout: Duration,
    slot: &'a Slot,
    handler: Arc<Handler>,
    protocol: Protocol,
    /// The TLS server name's ClientID and the client certificate's pin.
    presented: Option<Arc<Presented>>,
}

/// Replies of the messages a connection is still answering (misses, the full
/// path), `None` where there is none to send.
type InFlight = JoinSet<Option<Vec<u8>>>;

impl Connection<'_> {
    /// Length-prefixed messages in, replies out, until the client closes, errs,
    /// idles out or sends a length of 0. Each read takes whatever the stream
    /// has; every whole message in it is answered, the replies the in-place path
    /// writes at once appended to one batch, and the batch written with one
    /// `write_all` and `flush` (over TLS: one record for many answers) before
    /// the next read. A miss, or a message for the full path, is answered in a
    /// task of its own (at most [`IN_FLIGHT`]), so the messages behind it are
    /// not held up (RFC 7766, 6.2.1.1); its reply joins the next batch.
    async fn serve<S>(&self, mut stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut input = Vec::with_capacity(READ_ROOM);
        let mut out = Vec::new();
        let mut in_flight = InFlight::new();
        // The idle timeout, checked against the slot when it fires (so a
        // message does not reset a timer): only a whole message keeps the
        // connection open, a trickle of bytes does not.
        let idle = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(idle);
        let mut reading = true;
        loop {
            let mut at = 0;
            let mut need = 2;
            while in_flight.len() < IN_FLIGHT {
                match frame(&input[at..]) {
                    Frame::Whole(len) => {
                        self.slot.touch();
                        self.answer(&input[at + 2..at + 2 + len], &mut out, &mut in_flight);
                        at += 2 + len;
                        if out.len() >= WRITE_BATCH
                            && !self.write(&mut stream, &mut out, idle.as_mut()).await
                        {
                            return;
                        }
                    }
                    Frame::Partial(whole) => {
                        need = whole;
                        break;
                    }
                    Frame::Malformed => {
                        tracing::debug!(src = %self.src, "DNS message of length 0: closing");
                        return;
                    }
                }
            }
            input.drain(..at);
            if !out.is_empty() && !self.write(&mut stream, &mut out, idle.as_mut()).await {
                return;
            }
            if !reading && in_flight.is_empty() {
                return; // the client closed its side and has every reply
            }
            if input.is_empty() && input.capacity() > 4 * READ_ROOM {
                input = Vec::with_capacity(READ_ROOM); // after a large message
            }
            input.reserve(need.saturating_sub(input.len()).max(READ_ROOM / 4));
            tokio::select! {
                biased;
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    self.slot.touch();
                    match done {
                        Ok(Some(reply)) => push_framed(&mut out, &reply),
                        Ok(None) => {}
                        Err(error) => tracing::warn!(src = %self.src, %error, "answering a query failed"),
                    }
                }
                read = stream.read_buf(&mut input), if reading && in_flight.len() < IN_FLIGHT => {
                    match read {
                        Ok(0) => reading = false,
                        Ok(_) => {}
                        Err(error) => {
                            tracing::debug!(src = %self.src, %error, "connection failed");
                            return;
                        }
                    }
                }
                () = idle.as_mut() => {
                    if !self.still_open(idle.as_mut(), !in_flight.is_empty()) {
                        return;
                    }
                }
            }
        }
    }

    /// Answers one message: in place into `out` when it can, else in a task of
    /// `in_flight` (a miss through [`fast::Later::reply`], what the in-place path
    /// declines through hickory's parser and the handler).
    fn answer(&self, message: &[u8], out: &mut Vec<u8>, in_flight: &mut InFlight) {
        let front = Front {
            client: self.src,
            protocol: self.protocol,
            presented: self.presented.as_deref(),
        };
        let keep = |reply: &[u8]| push_framed(out, reply);
        let step = fast::stream_with(
            self.handler.pipeline(),
            message,
            &front,
            Arrived::now(),
            keep,
        );
        if let Stream::Reply(()) = step {
            return;
        }
        let (handler, packet) = (self.handler.clone(), message.to_vec());
        let (src, protocol, presented) = (self.src, self.protocol, self.presented.clone());
        match step {
            Stream::Reply(()) => {}
            Stream::Later(later) => {
                in_flight.spawn(async move {
                    let front = Front {
                        client: src,
                        protocol,
                        presented: presented.as_deref(),
                    };
                    later.reply(&handler, &packet, &front).await
                });
            }
            Stream::Full => {
                in_flight.spawn(full(handler, packet, src, protocol, presented));
            }
        }
    }

    /// Writes the batch `out` and empties it; `false` when the connection is to
    /// close (the write failed, or the client read nothing and sent no whole
    /// message for the idle timeout).
    async fn write<S>(&self, stream: &mut S, out: &mut Vec<u8>, mut idle: Pin<&mut Sleep>) -> bool
    where
        S: AsyncWrite + Unpin,
    {
        let written = {
            let send = async {
                stream.write_all(out).await?;
                stream.flush().await
            };
            tokio::pin!(send);
            loop {
                tokio::select! {
                    biased;
                    sent = &mut send => break sent,
                    () = idle.as_mut() => {
                        if !self.still_open(idle.as_mut(), false) {
                            return false;
                        }
                    }
                }
            }
        };
        if let Err(error) = written {
            tracing::debug!(src = %self.src, %error, "could not send replies");
            return false;
        }
        out.clear();
        if out.capacity() > 2 * WRITE_BATCH {
            *out = Vec::new(); // after a large reply
        }
        true
    }

    /// On the idle timer: whether the connection stays open, re-arming the
    /// timer if so. It does while it is `busy` answering, or when its last whole
    /// message (or answer) came within the idle timeout.
    fn still_open(&self, idle: Pin<&mut Sleep>, busy: bool) -> bool {
        let since = self.slot.idle_for();
        if !busy && since >= self.idle_timeout {
            tracing::debug!(src = %self.src, "idle connection closed");
            return false;
        }
        let left = if busy {
            self.idle_timeout
        } else {
            self.idle_timeout - since
        };
        idle.reset(tokio::time::Instant::now() + left);
        true
    }
}

/// hickory's parser and the handler, for a message the in-place path declines,
/// as hickory's server does it: nothing for less than a header or for a
/// response, FORMERR if the rest does not parse, else the handler. The reply,
/// if any.
async fn full(
    handler: Arc<Handler>,
    bytes: Vec<u8>,
    src: SocketAddr,
    protocol: Protocol,
    presented: Option<Arc<Presented>>,
) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(&bytes)).ok()?;
    let mut out = Collect::default();
    match Request::from_bytes(bytes, src, protocol) {
        Ok(request) if request.metadata.message_type == MessageType::Response => {
            return None; // never answer responses (reflection)
        }
        Ok(request) => {
            let presented = presented.map(|p| Box::new(Presented::clone(&p)));
            handler
                .answer_presented(&request, out.clone(), presented)
                .await;
        }
        Err(error) => {
            tracing::debug!(%src, %error, "malformed TCP query: FORMERR");
            let queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok()?;
            let msg = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            out.send_response(msg).await.ok()?;
        }
    }
    out.take()
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

    /// Messages are cut by their 2-byte length; a partial one says how much it
    /// needs in all (up to 65535 and its length), a length of 0 is malformed.
    #[test]
    fn frames_are_cut_by_their_length_prefix() {
        assert_eq!(frame(&[]), Frame::Partial(2));
        assert_eq!(frame(&[0]), Frame::Partial(2));
        assert_eq!(frame(&[0, 3, 1, 2]), Frame::Partial(5));
        assert_eq!(frame(&[0, 3, 1, 2, 3]), Frame::Whole(3));
        assert_eq!(frame(&[0, 3, 1, 2, 3, 0, 9]), Frame::Whole(3));
        assert_eq!(frame(&[0xff, 0xff, 1]), Frame::Partial(65537));
        assert_eq!(frame(&[0, 0, 1, 2]), Frame::Malformed);
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
