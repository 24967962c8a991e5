//! DNS over HTTPS (RFC 8484) on `server.https_listen`, and the same endpoint over
//! plain HTTP on `server.http_dns_listen` for a reverse proxy in front.
//!
//! A thin front end: it parses the HTTP request (GET `?dns=` base64url or POST
//! `application/dns-message`; HTTP/2 with the `h2` crate directly ([`http2`]),
//! HTTP/1.1 with hyper, by the connection's first bytes), answers the DNS message
//! through the in-place path every front end shares ([`super::fast`]; what it
//! declines through [`Handler`]), and sends the answer with a `Cache-Control`
//! lifetime no longer than the answer's smallest TTL. The path names the client:
//! `/dns-query`, `/dns-query/<id>` (a ClientID) or `/dns-query/<id>/<secret>`;
//! a secret may also come as `Authorization: Bearer <secret>`. Both go into
//! [`Presented`] and never into a log, with the pin of the TLS connection's
//! client certificate, if it sent one.
//!
//! Connections run in [`super::tcp`]'s bounded loop: the TLS handshake and every
//! connection count against the same per-client and total caps, and a connection
//! with no request for `idle_timeout` is closed. Per connection, HTTP/2 streams are
//! capped, and a client that cancels many requests (rapid reset, CVE-2023-44487)
//! is disconnected; the work of a cancelled request is bounded by the same cap.
//!
//! `Forwarded` / `X-Forwarded-For` are read only from a peer in
//! `trusted_proxies`; the client is then the nearest address the headers name
//! that is not itself a trusted proxy.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::MessageType;
use hickory_server::server::Request;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http;
use hyper::server::conn::http1;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::fast::{self, Collect, Front, Later, Stream};
use super::handler::Handler;
use super::tcp::{self, Slot, TcpLimits};
use crate::cert::CertStore;
use crate::identity::Presented;
use crate::netset::NetSet;
use crate::pipeline::Arrived;

/// The largest DNS message (and so the largest POST body) accepted.
pub const MAX_MESSAGE: usize = 65535;

/// HTTP/2 streams open at once on one connection (RFC 9113's recommended floor);
/// also the most requests of one connection being answered at once.
const MAX_STREAMS: u32 = 100;

/// Requests a client may cancel on one connection before it is disconnected: a
/// real client cancels few; a rapid-reset flood cancels all of them.
const MAX_CANCELLED: usize = 100;

/// HTTP/2 streams reset by the client before they were accepted, and streams
/// hyper itself had to reset for errors, before the connection gets a GOAWAY.
const MAX_PENDING_RESETS: usize = 20;
const MAX_ERROR_RESETS: usize = 50;

/// POST bodies read at once on one connection (the others wait in HTTP/2's
/// flow-control window), so a connection holds at most this many bodies of
/// [`MAX_MESSAGE`] bytes plus [`CONN_WINDOW`], not one per stream.
const BODY_READS: usize = 2;

/// HTTP/2 flow-control windows: what a client may send ahead, per stream (the
/// largest DNS message) and per connection.
const STREAM_WINDOW: u32 = MAX_MESSAGE as u32;
const CONN_WINDOW: u32 = 2 * STREAM_WINDOW;

/// The largest HTTP/2 header block a client may send (hyper's default): a GET
/// carrying a DNS message of up to about 12 KB.
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// HTTP/1 read buffer: a GET carrying the largest DNS message in base64url, with
/// room for ordinary headers (hyper's default is 400 KB).
const HTTP1_BUFFER: usize = 96 * 1024;

/// The path of the endpoint (RFC 8484's example, what clients default to).
const PATH: &str = "/dns-query";

/// A ClientID or secret in the path: at most this long.
const MAX_ID: usize = 64;
const MAX_SECRET: usize = 128;

const DNS_MESSAGE: &str = "application/dns-message";

mod http2;

/// Where and how DNS over HTTP(S) is served.
#[derive(Debug, Clone, Default)]
pub struct DohConfig {
    /// DNS over HTTPS addresses.
    pub https_listen: Vec<SocketAddr>,
    /// Plain-HTTP addresses for a reverse proxy.
    pub http_listen: Vec<SocketAddr>,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl DohConfig {
    /// The DoH part of `[server]`.
    pub fn from_server(server: &super::ServerConfig) -> Self {
        Self {
            https_listen: server.https_listen.clone(),
            http_listen: server.http_dns_listen.clone(),
            trusted_proxies: server.trusted_proxies.clone(),
        }
    }
}

/// The accept loops and the addresses actually bound.
pub struct Bound {
    /// One accept loop per address; they end when `shutdown` is cancelled.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The DNS-over-HTTPS addresses (port 0 in the config becomes a real port).
    pub https: Vec<SocketAddr>,
    /// The plain-HTTP addresses.
    pub http: Vec<SocketAddr>,
}

/// Binds `cfg`'s addresses and serves DNS over HTTPS (with `certs`' certificate)
/// and over plain HTTP there.
pub fn spawn(
    cfg: &DohConfig,
    certs: Option<&Arc<CertStore>>,
    limits: TcpLimits,
    handler: Arc<Handler>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Bound> {
    let doh = Arc::new(Doh::new(cfg, limits, handler));
    let mut bound = Bound {
        tasks: Vec::new(),
        https: Vec::new(),
        http: Vec::new(),
    };
    if !cfg.https_listen.is_empty() {
        let certs = certs.context("DNS over HTTPS needs a certificate")?;
        let mut tls = (*certs.server_config()).clone();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        for addr in &cfg.https_listen {
            let listener = super::server::bind_tcp(*addr)
                .with_context(|| format!("cannot listen for DNS over HTTPS on {addr}"))?;
            let local = listener.local_addr()?;
            let (doh, acceptor) = (doh.clone(), acceptor.clone());
            bound.tasks.push(tcp::spawn_bounded(
                listener,
                limits,
                shutdown.clone(),
                move |stream, src, slot| {
                    let (doh, acceptor) = (doh.clone(), acceptor.clone());
                    async move {
                        if let Some(stream) = tcp::handshake(&acceptor, stream, src, limits).await {
                            let pin =
                                crate::pki::client_pin(stream.get_ref().1.peer_certificates());
                            doh.serve(stream, src, slot, pin).await;
                        }
                    }
                },
            ));
            tracing::info!(addr = %local, "listening (DNS over HTTPS)");
            bound.https.push(local);
        }
    }
    if !cfg.http_listen.is_empty() && cfg.trusted_proxies.is_empty() {
        tracing::warn!(
            "server.http_dns_listen without server.trusted_proxies: every client is known \
             only as the proxy's address"
        );
    }
    for addr in &cfg.http_listen {
        let listener = super::server::bind_tcp(*addr)
            .with_context(|| format!("cannot listen for DNS over HTTP on {addr}"))?;
        let local = listener.local_addr()?;
        let doh = doh.clone();
        bound.tasks.push(tcp::spawn_bounded(
            listener,
            limits,
            shutdown.clone(),
            move |stream, src, slot| {
                let doh = doh.clone();
                async move { doh.serve(stream, src, slot, None).await }
            },
        ));
        tracing::info!(addr = %local, "listening (DNS over HTTP, for a reverse proxy)");
        bound.http.push(local);
    }
    Ok(bound)
}

/// What every DoH connection shares.
struct Doh {
    handler: Arc<Handler>,
    trusted: NetSet,
    idle_timeout: Duration,
    http1: http1::Builder,
    http2: h2::server::Builder,
}

/// One connection's state.
struct Conn {
    src: SocketAddr,
    slot: Slot,
    /// The SPKI digest of the client certificate of the TLS connection.
    cert_pin: Option<[u8; 32]>,
    /// Requests being answered.
    busy: AtomicUsize,
    /// Requests the client cancelled (HTTP/2 RST_STREAM) before their answer.
    cancelled: AtomicUsize,
    /// Bounds the pipeline work of one connection, cancelled requests included.
    permits: Arc<Semaphore>,
    /// Bounds the POST bodies one connection holds in memory.
    body_reads: Semaphore,
    /// Woken to close the connection (too many cancelled requests).
    close: Notify,
}

/// What one request gets: a DNS answer or an HTTP error, over either HTTP version.
enum Answer {
    Dns(Vec<u8>),
    Status(StatusCode),
}

/// What the head of a request asks, before any body is read.
struct Ask {
    presented: Presented,
    /// A GET's DNS message; `None` for a POST, whose body holds it.
    message: Option<Vec<u8>>,
}

/// A request decided from its DNS message: answered, or work to wait for.
enum Step {
    Now(Answer),
    Later(Work),
}

/// A DNS message the in-place path did not answer at once: the resolver, or
/// hickory's parser, encoder and handler.
struct Work {
    handler: Arc<Handler>,
    client: SocketAddr,
    presented: Option<Box<Presented>>,
    job: Job,
}

enum Job {
    /// The in-place path's continuation, with the message it needs again.
    Later(Later, Vec<u8>),
    /// hickory's path.
    Full(Box<Request>),
}

impl Doh {
    fn new(cfg: &DohConfig, limits: TcpLimits, handler: Arc<Handler>) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.idle_timeout)
            .max_buf_size(HTTP1_BUFFER)
            .keep_alive(true);
        let mut http2 = h2::server::Builder::new();
        http2
            .max_concurrent_streams(MAX_STREAMS)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
            .max_local_error_reset_streams(Some(MAX_ERROR_RESETS))
            .max_header_list_size(MAX_HEADER_LIST);
        Self {
            handler,
            trusted: NetSet::new(&cfg.trusted_proxies),
            idle_timeout: limits.idle_timeout,
            http1,
            http2,
        }
    }

    /// Serves HTTP/1.1 or HTTP/2 (by the client's first bytes: the HTTP/2
    /// preface or not) on one (decrypted) connection until it closes, idles out,
    /// or abuses cancellation.
    async fn serve<S>(
        self: Arc<Self>,
        io: S,
        src: SocketAddr,
        slot: Slot,
        cert_pin: Option<[u8; 32]>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = Arc::new(Conn {
            src,
            slot,
            cert_pin,
            busy: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            permits: Arc::new(Semaphore::new(MAX_STREAMS as usize)),
            body_reads: Semaphore::new(BODY_READS),
            close: Notify::new(),
        });
        let served = self.clone().speak(&conn, io);
        tokio::select! {
            result = served => {
                if let Err(error) = result {
                    tracing::debug!(%src, %error, "DoH connection ended");
                }
            }
            _ = idle(&conn, self.idle_timeout) => {
                tracing::debug!(%src, "DoH connection idle: closed");
            }
            _ = conn.close.notified() => {
                tracing::debug!(%src, "DoH client cancelled too many requests: closed");
                metrics::counter!("dnsguard_doh_reset_flood_total").increment(1);
            }
        }
    }

    /// HTTP/2 (the client's preface) or HTTP/1.1 (anything else) until the
    /// client closes or a protocol error.
    async fn speak<S>(self: Arc<Self>, conn: &Arc<Conn>, io: S) -> anyhow::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (io, h2) = http2::sniff(io).await?;
        if h2 {
            return http2::serve(&self, conn, io).await;
        }
        let service = {
            let (doh, conn) = (self.clone(), conn.clone());
            hyper::service::service_fn(move |req| {
                let (doh, conn) = (doh.clone(), conn.clone());
                async move { Ok::<_, Infallible>(doh.respond_http1(&conn, req).await) }
            })
        };
        Ok(self
            .http1
            .serve_connection(TokioIo::new(io), service)
            .await?)
    }

    /// One HTTP/1.1 request → one DNS answer (or an HTTP error status).
    async fn respond_http1(&self, conn: &Conn, req: hyper::Request<Incoming>) -> Http1Response {
        let mut pending = Pending::new(conn);
        let answer = self.answer_http1(conn, req).await;
        pending.done = true;
        let (head, body) = response(answer).into_parts();
        hyper::Response::from_parts(head, Full::new(body))
    }

    async fn answer_http1(&self, conn: &Conn, req: hyper::Request<Incoming>) -> Answer {
        let (parts, body) = req.into_parts();
        let ask = match self.ask(conn, &parts) {
            Ok(ask) => ask,
            Err(answer) => return answer,
        };
        let message = match ask.message {
            Some(message) => message,
            None => {
                let read = async {
                    match Limited::new(body, MAX_MESSAGE).collect().await {
                        Ok(body) => Ok(Vec::from(body.to_bytes())),
                        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                            Err(StatusCode::PAYLOAD_TOO_LARGE)
                        }
                        Err(_) => Err(StatusCode::BAD_REQUEST),
                    }
                };
                match self.read_body(conn, &parts.headers, read).await {
                    Ok(message) => message,
                    Err(code) => return Answer::Status(code),
                }
            }
        };
        match self.decide(conn, &parts.headers, message, ask.presented) {
            Step::Now(answer) => answer,
            // Worked out in its own task, so a request the client cancels (by
            // closing the connection) still finishes and is logged like any
            // other; the permit bounds how many such tasks one connection can
            // leave behind.
            Step::Later(work) => {
                let Ok(permit) = conn.permits.clone().acquire_owned().await else {
                    return Answer::Status(StatusCode::SERVICE_UNAVAILABLE);
                };
                let job = tokio::spawn(async move {
                    let answer = work.run().await;
                    drop(permit);
                    answer
                });
                job.await
                    .unwrap_or(Answer::Status(StatusCode::INTERNAL_SERVER_ERROR))
            }
        }
    }

    /// The client's identity claims and, for a GET, its DNS message; an error
    /// answer for a path, method or announced length that is not served.
    fn ask(&self, conn: &Conn, parts: &http::request::Parts) -> Result<Ask, Answer> {
        let Some(mut presented) = parse_path(parts.uri.path()) else {
            return Err(Answer::Status(StatusCode::NOT_FOUND));
        };
        if presented.secret.is_none() {
            presented.secret = bearer(&parts.headers);
        }
        presented.cert_pin = conn.cert_pin;
        let message = match parts.method {
            Method::GET => Some(dns_param(parts.uri.query()).map_err(Answer::Status)?),
            Method::POST => {
                let too_long = parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .is_some_and(|n| n > MAX_MESSAGE as u64);
                if too_long {
                    return Err(Answer::Status(StatusCode::PAYLOAD_TOO_LARGE));
                }
                None
            }
            _ => return Err(Answer::Status(StatusCode::METHOD_NOT_ALLOWED)),
        };
        Ok(Ask { presented, message })
    }

    /// A POST body through `read` (at most [`MAX_MESSAGE`] bytes), complete
    /// within the idle timeout, of type `application/dns-message`.
    async fn read_body(
        &self,
        conn: &Conn,
        headers: &HeaderMap,
        read: impl Future<Output = Result<Vec<u8>, StatusCode>>,
    ) -> Result<Vec<u8>, StatusCode> {
        // A body trickled in slower than a whole query per idle period is a
        // slowloris, not a client (waiting for a turn to read counts too).
        let read = async {
            let _turn = conn.body_reads.acquire().await;
            read.await
        };
        let body = tokio::time::timeout(self.idle_timeout, read)
            .await
            .map_err(|_| StatusCode::REQUEST_TIMEOUT)??;
        // The type is judged after the (bounded) body is read: answering before
        // it leaves an HTTP/2 stream to be reset, which Debian 12's curl (7.88)
        // reports as a framing error instead of the 415.
        let content_type = headers.get(header::CONTENT_TYPE);
        if !content_type.is_some_and(|v| is_dns_message(v.as_bytes())) {
            return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        Ok(body)
    }

    /// Answers `message` in place when that needs no waiting (no task, no
    /// copy but the answer's), else says what work is left.
    fn decide(
        &self,
        conn: &Conn,
        headers: &HeaderMap,
        message: Vec<u8>,
        presented: Presented,
    ) -> Step {
        let client = if self.trusted.contains(conn.src.ip()) {
            forwarded_client(headers, conn.src, &self.trusted)
        } else {
            conn.src
        };
        let presented = (presented != Presented::default()).then(|| Box::new(presented));
        let front = Front {
            client,
            protocol: Protocol::Https,
            presented: presented.as_deref(),
        };
        let job = match fast::stream(self.handler.pipeline(), &message, &front, Arrived::now()) {
            Stream::Reply(reply) => return Step::Now(Answer::Dns(reply)),
            Stream::Later(later) => Job::Later(later, message),
            Stream::Full => {
                let Ok(request) = Request::from_bytes(message, client, Protocol::Https) else {
                    return Step::Now(Answer::Status(StatusCode::BAD_REQUEST));
                };
                if request.metadata.message_type == MessageType::Response {
                    return Step::Now(Answer::Status(StatusCode::BAD_REQUEST));
                }
                Job::Full(Box::new(request))
            }
        };
        Step::Later(Work {
            handler: self.handler.clone(),
            client,
            presented,
            job,
        })
    }
}

impl Work {
    /// The answer, after the resolver (or hickory's path) has worked it out;
    /// logged like any other.
    async fn run(self) -> Answer {
        let reply = match self.job {
            Job::Later(later, message) => {
                let front = Front {
                    client: self.client,
                    protocol: Protocol::Https,
                    presented: self.presented.as_deref(),
                };
                later.reply(&self.handler, &message, &front).await
            }
            Job::Full(request) => {
                let out = Collect::default();
                self.handler
                    .answer_presented(&request, out.clone(), self.presented)
                    .await;
                out.take()
            }
        };
        match reply {
            Some(answer) => Answer::Dns(answer),
            None => Answer::Status(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

/// Marks a request finished; one dropped before its answer was cancelled by the
/// client, and too many of those close the connection.
struct Pending<'a> {
    conn: &'a Conn,
    done: bool,
}

impl<'a> Pending<'a> {
    fn new(conn: &'a Conn) -> Self {
        conn.busy.fetch_add(1, Ordering::Relaxed);
        conn.slot.touch();
        Self { conn, done: false }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.conn.busy.fetch_sub(1, Ordering::Relaxed);
        self.conn.slot.touch();
        if !self.done && self.conn.cancelled.fetch_add(1, Ordering::Relaxed) + 1 > MAX_CANCELLED {
            self.conn.close.notify_one();
        }
    }
}

/// Resolves when the connection has had no request in progress for `timeout`.
async fn idle(conn: &Conn, timeout: Duration) {
    loop {
        if conn.busy.load(Ordering::Relaxed) > 0 {
            conn.slot.touch();
        }
        let idle = conn.slot.idle_for();
        if idle >= timeout {
            return;
        }
        tokio::time::sleep(timeout - idle).await;
    }
}

type Http1Response = hyper::Response<Full<Bytes>>;

/// The response for `answer`: a DNS answer is a 200 of `application/dns-message`
/// with its length, cacheable for its smallest TTL (RFC 8484 §5.1); an error is
/// its status alone (405 with the methods served). Headers from static values
/// but `max-age` and the length.
fn response(answer: Answer) -> http::Response<Bytes> {
    let (code, body) = match answer {
        Answer::Dns(answer) => (StatusCode::OK, answer),
        Answer::Status(code) => (code, Vec::new()),
    };
    let mut r = http::Response::new(Bytes::new());
    *r.status_mut() = code;
    let h = r.headers_mut();
    if code == StatusCode::OK {
        let max_age = min_ttl(&body).unwrap_or(0);
        let mut cache = [0u8; 18];
        let mut digits = itoa::Buffer::new();
        let n = digits.format(max_age).as_bytes();
        cache[..8].copy_from_slice(b"max-age=");
        cache[8..8 + n.len()].copy_from_slice(n);
        h.reserve(4);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(DNS_MESSAGE));
        if let Ok(v) = HeaderValue::from_bytes(&cache[..8 + n.len()]) {
            h.insert(header::CACHE_CONTROL, v);
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    } else if code == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
    }
    *r.body_mut() = Bytes::from(body);
    r
}

/// The smallest TTL of the answer and authority records of a DNS message in
/// wire form; `None` when it has none (or does not parse).
fn min_ttl(msg: &[u8]) -> Option<u32> {
    let count = |at: usize| {
        Some(usize::from(u16::from_be_bytes([
            *msg.get(at)?,
            *msg.get(at + 1)?,
        ])))
    };
    let (questions, records) = (count(4)?, count(6)? + count(8)?);
    let mut pos = 12;
    for _ in 0..questions {
        pos += crate::resolve::body::name_wire_len(msg, pos)? + 4;
    }
    let mut min: Option<u32> = None;
    for _ in 0..records {
        pos += crate::resolve::body::name_wire_len(msg, pos)?;
        let fixed = msg.get(pos..pos + 10)?;
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        pos += 10 + rdlen;
        min = Some(min.map_or(ttl, |m| m.min(ttl)));
    }
    min
}

/// The ClientID and secret of a DoH path: `/dns-query`, `/dns-query/<id>` or
/// `/dns-query/<id>/<secret>`; `None` for any other path.
fn parse_path(path: &str) -> Option<Presented> {
    let rest = path.strip_prefix(PATH)?;
    if rest.is_empty() {
        return Some(Presented::default());
    }
    let mut parts = rest.strip_prefix('/')?.split('/');
    let id = parts.next().filter(|id| valid_token(id, MAX_ID))?;
    let secret = match parts.next() {
        None => None,
        Some(s) => Some(s).filter(|s| valid_token(s, MAX_SECRET))?.into(),
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Presented {
        client_id: Some(id.into()),
        secret: secret.map(Into::into),
        cert_pin: None,
    })
}

/// A ClientID or secret: 1 to `max` of `A-Z a-z 0-9 - _ .`.
fn valid_token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The secret of an `Authorization: Bearer <secret>` header.
fn bearer(headers: &HeaderMap) -> Option<Box<str>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && valid_token(token, MAX_SECRET)).then(|| token.into())
}

/// The DNS message of a GET's `dns=` parameter (base64url; padding tolerated).
fn dns_param(query: Option<&str>) -> Result<Vec<u8>, StatusCode> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const URL: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("dns="))
        .ok_or(StatusCode::BAD_REQUEST)?;
    // Percent-encoded padding ("%3D"), matched by hand: `trim_end_matches` with a
    // string pattern builds a searcher each time (~700 instructions a GET).
    let mut value = value.as_bytes();
    while let Some(rest) = value
        .strip_suffix(b"%3D")
        .or_else(|| value.strip_suffix(b"%3d"))
    {
        value = rest;
    }
    if value.len() > MAX_MESSAGE.div_ceil(3) * 4 {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    URL.decode(value).map_err(|_| StatusCode::BAD_REQUEST)
}

/// `application/dns-message`, parameters and case aside.
fn is_dns_message(value: &[u8]) -> bool {
    let mime = value.split(|b| *b == b';').next().unwrap_or_default();
    mime.trim_ascii()
        .eq_ignore_ascii_case(DNS_MESSAGE.as_bytes())
}

/// The client a trusted proxy (`peer`) forwarded for: walking the `Forwarded`
/// `for=` addresses (or, without that header, `X-Forwarded-For`) from the
/// nearest hop back, the first one that is not a trusted proxy. The port is
/// unknown (0). Unreadable entries (`unknown`, obfuscated names) stop the walk
/// at the last address known.
fn forwarded_client(headers: &HeaderMap, peer: SocketAddr, trusted: &NetSet) -> SocketAddr {
    let hops: Vec<Option<IpAddr>> = if headers.contains_key(header::FORWARDED) {
        headers
            .get_all(header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| forwarded_node(v.trim()))
                })
            })
            .collect()
    } else {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|a| forwarded_node(a.trim()))
            .collect()
    };
    let mut client = peer.ip();
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop else { break };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    SocketAddr::new(client, 0)
}

/// An address from `Forwarded: for=` (RFC 7239: `192.0.2.1`, `192.0.2.1:80`,
/// `"[2001:db8::1]:80"`) or `X-Forwarded-For`; `None` for anything else.
fn forwarded_node(node: &str) -> Option<IpAddr> {
    let node = node.trim_matches('"');
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(v6) = node.strip_prefix('[') {
        return v6.split(']').next()?.parse().ok();
    }
    node.parse::<SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_client_and_nothing_else_matches() {
        assert_eq!(parse_path("/dns-query"), Some(Presented::default()));
        let p = parse_path("/dns-query/agent-1").unwrap();
        assert_eq!(p.client_id.as_deref(), Some("agent-1"));
        assert_eq!(p.secret, None);
        let p = parse_path("/dns-query/agent-1/s3cr3t").unwrap();
        assert_eq!(p.secret.as_deref(), Some("s3cr3t"));
        for bad in [
            "/",
            "/dns-query/",
            "/dns-queryx",
            "/dns-query//x",
            "/dns-query/a/b/c",
            "/dns-query/a b",
            "/dns-query/a%2Fb",
            "/other",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
        assert_eq!(parse_path(&format!("/dns-query/{}", "a".repeat(65))), None);
    }

    #[test]
    fn bearer_secret_only_from_the_bearer_scheme() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok_1"),
        );
        assert_eq!(bearer(&h).as_deref(), Some("tok_1"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwdw=="),
        );
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn get_parameter_is_base64url_with_or_without_padding() {
        assert_eq!(dns_param(Some("dns=AAE")), Ok(vec![0, 1]));
        assert_eq!(dns_param(Some("ct=x&dns=AAE=")), Ok(vec![0, 1]));
        assert_eq!(dns_param(Some("dns=AAE%3D")), Ok(vec![0, 1]));
        assert_eq!(dns_param(Some("dns=AA%3d%3D")), Ok(vec![0]));
        assert_eq!(dns_param(Some("dns=-_8")), Ok(vec![0xfb, 0xff]));
        assert_eq!(dns_param(Some("dns=AA+/")), Err(StatusCode::BAD_REQUEST));
        assert_eq!(dns_param(Some("dns=A")), Err(StatusCode::BAD_REQUEST));
        assert_eq!(dns_param(None), Err(StatusCode::BAD_REQUEST));
        let huge = format!("dns={}", "A".repeat(100_000));
        assert_eq!(dns_param(Some(&huge)), Err(StatusCode::PAYLOAD_TOO_LARGE));
    }

    #[test]
    fn content_type_ignores_case_and_parameters() {
        assert!(is_dns_message(b"application/dns-message"));
        assert!(is_dns_message(b"Application/DNS-Message; charset=x"));
        assert!(!is_dns_message(b"application/json"));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn forwarded_headers_name_the_nearest_untrusted_hop() {
        let trusted = NetSet::new(&["10.0.0.0/8".parse().unwrap()]);
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let ip = |h: &HeaderMap| forwarded_client(h, peer, &trusted).ip().to_string();
        // The client can put anything in front; only the hop the proxy added counts.
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 192.0.2.7, 10.0.0.2")]);
        assert_eq!(ip(&h), "192.0.2.7");
        let h = headers(&[(
            "forwarded",
            r#"for=192.0.2.60;proto=https, for="[2001:db8::7]:4711""#,
        )]);
        assert_eq!(ip(&h), "2001:db8::7");
        // Forwarded wins over X-Forwarded-For.
        let h = headers(&[
            ("forwarded", "for=192.0.2.1:80"),
            ("x-forwarded-for", "192.0.2.2"),
        ]);
        assert_eq!(ip(&h), "192.0.2.1");
        // Unreadable: the proxy itself.
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(ip(&h), "10.0.0.1");
        assert_eq!(ip(&HeaderMap::new()), "10.0.0.1");
    }

    #[test]
    fn max_age_is_the_smallest_ttl() {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};
        let name = Name::from_ascii("a.example.").unwrap();
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            name.clone(),
            300,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        m.add_answer(Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, 2))));
        assert_eq!(min_ttl(&m.to_vec().unwrap()), Some(60));
        assert_eq!(min_ttl(&[0; 12]), None);
        assert_eq!(min_ttl(&[0, 0, 0, 0, 0, 0, 0, 1]), None);
    }
}
