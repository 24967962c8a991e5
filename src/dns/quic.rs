//! DNS over QUIC (RFC 9250) on `server.quic_listen`.
//!
//! A thin front end over the in-place path every front end shares
//! ([`super::fast`]; what it declines: [`Handler`]): each query comes on its own
//! bidirectional stream as a 2-byte length and the message (ID 0), and its answer
//! goes back on that stream, which is then finished. The TLS server name's first
//! label is the ClientID when the name has three labels or more
//! (`<id>.dns.example.net`), as for DNS over TLS; it goes into [`Presented`]
//! with the pin of the client's certificate, if it sent one.
//!
//! Bounds, from the TCP ones ([`TcpLimits`]): a connection idle for
//! `idle_timeout` is closed (QUIC's idle timeout); a stream that has not
//! delivered its query within it is reset; at most [`MAX_STREAMS`] queries are
//! open at once on one connection (QUIC stream credit); at most
//! `max_connections` connections in total and `max_per_client` from one address,
//! beyond which a new connection is refused (not the longest-idle one closed, as
//! over TCP: an idle QUIC connection holds no descriptor and ends at the idle
//! timeout). Once either count is at half its bound, a new client must first
//! prove its address with a QUIC Retry, so handshakes from spoofed addresses
//! (which never complete, and hold their slot until the idle timeout) cannot
//! fill the table. A protocol error (a message ID other than 0, a length that does not
//! match the stream, more than one message, more than 65535 bytes) closes the
//! connection with `DOQ_PROTOCOL_ERROR`, per RFC 9250 §4.3.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::MessageType;
use hickory_server::server::Request;
use parking_lot::Mutex;
use quinn::VarInt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::fast::{self, Collect, Front, Stream};
use super::handler::Handler;
use super::https::MAX_MESSAGE;
use super::tcp::TcpLimits;
use crate::cert::CertStore;
use crate::identity::Presented;
use crate::pipeline::Arrived;

/// RFC 9250 §4.1.1: the ALPN token of DNS over QUIC.
const ALPN: &[u8] = b"doq";

/// Queries open at once on one connection (the stream credit granted).
pub const MAX_STREAMS: u32 = 100;

/// RFC 9250 §8.4 error codes.
const DOQ_NO_ERROR: VarInt = VarInt::from_u32(0);
const DOQ_INTERNAL_ERROR: VarInt = VarInt::from_u32(1);
const DOQ_PROTOCOL_ERROR: VarInt = VarInt::from_u32(2);
const DOQ_REQUEST_CANCELLED: VarInt = VarInt::from_u32(3);

/// Binds each of `listen` and serves DNS over QUIC there with `certs`'
/// certificate. Returns the endpoint loops and the addresses actually bound.
pub fn spawn(
    listen: &[SocketAddr],
    certs: &Arc<CertStore>,
    limits: TcpLimits,
    handler: Arc<Handler>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Vec<tokio::task::JoinHandle<()>>, Vec<SocketAddr>)> {
    let config = server_config(certs, limits)?;
    let counts = Arc::new(Mutex::new(Counts::default()));
    let mut tasks = Vec::new();
    let mut bound = Vec::new();
    for addr in listen {
        let endpoint = endpoint(config.clone(), *addr)
            .with_context(|| format!("cannot listen for DNS over QUIC on {addr}"))?;
        let local = endpoint.local_addr()?;
        tasks.push(tokio::spawn(accept_loop(
            endpoint,
            limits,
            counts.clone(),
            handler.clone(),
            shutdown.clone(),
        )));
        tracing::info!(addr = %local, "listening (DNS over QUIC)");
        bound.push(local);
    }
    Ok((tasks, bound))
}

/// A QUIC server endpoint on `addr`. An IPv6 address is IPv6 only, like the
/// other listeners', so `[::]:853` and `0.0.0.0:853` can both be listed.
fn endpoint(config: quinn::ServerConfig, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    let socket = super::server::bind_udp_once(addr)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        runtime,
    )
}

/// QUIC's server configuration: the store's certificate (so a renewal is served
/// from the next handshake on), ALPN `doq`, the stream and idle bounds.
fn server_config(certs: &Arc<CertStore>, limits: TcpLimits) -> anyhow::Result<quinn::ServerConfig> {
    let mut tls = (*certs.server_config()).clone();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .context("the TLS configuration cannot serve QUIC")?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(limits.idle_timeout)
                .context("server.tcp_idle_timeout_secs is too large for QUIC")?,
        ));
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config
        .transport_config(Arc::new(transport))
        .max_incoming(limits.max_connections.max(1));
    Ok(config)
}

/// Open connections, in total and per client address (all endpoints together).
#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl Counts {
    /// True when `client`'s connections, or all of them, are at half their bound
    /// or more: from then on a client must prove its address (QUIC Retry) before
    /// it is counted, so spoofed handshakes cannot fill the table.
    fn pressed(&self, client: IpAddr, limits: &TcpLimits) -> bool {
        let mine = self.per_client.get(&client).copied().unwrap_or(0);
        self.total * 2 >= limits.max_connections.max(1) || mine * 2 >= limits.max_per_client.max(1)
    }

    /// Counts a new connection from `client`, unless a bound is reached.
    fn admit(&mut self, client: IpAddr, limits: &TcpLimits) -> bool {
        let mine = self.per_client.get(&client).copied().unwrap_or(0);
        if self.total >= limits.max_connections.max(1) || mine >= limits.max_per_client.max(1) {
            return false;
        }
        self.total += 1;
        *self.per_client.entry(client).or_default() += 1;
        true
    }

    fn release(&mut self, client: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    limits: TcpLimits,
    counts: Arc<Mutex<Counts>>,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
) {
    let mut conns = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let client = incoming.remote_address().ip();
        if !incoming.remote_address_validated()
            && incoming.may_retry()
            && counts.lock().pressed(client, &limits)
        {
            tracing::debug!(%client, "DoQ connections at half a bound: QUIC Retry");
            metrics::counter!("dnsguard_doq_retry_total").increment(1);
            if let Err(error) = incoming.retry() {
                error.into_incoming().ignore();
            }
            continue;
        }
        if !counts.lock().admit(client, &limits) {
            tracing::debug!(%client, "DoQ connection limit: refused");
            metrics::counter!("dnsguard_doq_refused_total").increment(1);
            incoming.refuse();
            continue;
        }
        let (handler, counts) = (handler.clone(), counts.clone());
        conns.spawn(async move {
            // QUIC's idle timeout also ends a handshake that stalls.
            match incoming.await {
                Ok(conn) => serve(conn, handler, limits).await,
                Err(error) => {
                    tracing::debug!(%client, %error, "DoQ handshake failed");
                    metrics::counter!("dnsguard_tls_handshake_failed_total").increment(1);
                }
            }
            counts.lock().release(client);
        });
        while conns.try_join_next().is_some() {}
    }
    endpoint.close(DOQ_NO_ERROR, b"");
    conns.shutdown().await;
    endpoint.wait_idle().await;
}

/// One connection: a task per query stream until the client closes it, it idles
/// out, or a protocol error closes it.
async fn serve(conn: quinn::Connection, handler: Arc<Handler>, limits: TcpLimits) {
    let src = conn.remote_address();
    let server_name = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.server_name);
    let certs = conn.peer_identity().and_then(|c| {
        c.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()
    });
    let pin = crate::pki::client_pin(certs.as_deref().map(Vec::as_slice));
    let presented = Presented::from_tls(server_name.as_deref(), pin).map(Arc::new);
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%src, %error, "DoQ connection ended");
                break;
            }
        };
        // Not tied to the connection: a query the client gives up on is still
        // answered into the cache and the query log, like any other. The stream
        // credit bounds how many one connection starts.
        let (conn, handler, presented) = (conn.clone(), handler.clone(), presented.clone());
        tokio::spawn(async move {
            answer(&conn, send, recv, &handler, presented, limits).await;
        });
    }
}

/// One stream: read the query, answer it, finish the stream.
async fn answer(
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    handler: &Handler,
    presented: Option<Arc<Presented>>,
    limits: TcpLimits,
) {
    let src = conn.remote_address();
    let read = tokio::time::timeout(limits.idle_timeout, recv.read_to_end(MAX_MESSAGE + 2));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(quinn::ReadToEndError::TooLong)) => {
            return protocol_error(conn, "a message longer than 65535 bytes");
        }
        Ok(Err(error)) => {
            tracing::debug!(%src, %error, "DoQ stream failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%src, "DoQ stream sent no whole query in time: reset");
            let _ = recv.stop(DOQ_REQUEST_CANCELLED);
            let _ = send.reset(DOQ_REQUEST_CANCELLED);
            return;
        }
    };
    let message = match frame(&bytes) {
        Ok(message) => message,
        Err(why) => return protocol_error(conn, why),
    };
    let front = Front {
        client: src,
        protocol: Protocol::Quic,
        presented: presented.as_deref(),
    };
    let reply = match fast::stream(handler.pipeline(), message, &front, Arrived::now()) {
        Stream::Reply(reply) => Some(reply),
        Stream::Later(later) => later.reply(handler, message, &front).await,
        Stream::Full => {
            let request = match Request::from_bytes(message.to_vec(), src, Protocol::Quic) {
                Ok(r) if r.metadata.message_type == MessageType::Query => r,
                Ok(_) => return protocol_error(conn, "a response on a query stream"),
                Err(error) => {
                    tracing::debug!(%src, %error, "malformed DoQ query: stream reset");
                    let _ = send.reset(DOQ_PROTOCOL_ERROR);
                    return;
                }
            };
            let out = Collect::default();
            let presented = presented.as_deref().map(|p| Box::new(p.clone()));
            handler
                .answer_presented(&request, out.clone(), presented)
                .await;
            out.take()
        }
    };
    let Some(reply) = reply else {
        let _ = send.reset(DOQ_INTERNAL_ERROR);
        return;
    };
    let Ok(len) = u16::try_from(reply.len()) else {
        let _ = send.reset(DOQ_INTERNAL_ERROR);
        return;
    };
    let mut framed = Vec::with_capacity(reply.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&reply);
    if let Err(error) = send.write_all(&framed).await {
        tracing::debug!(%src, %error, "could not send the DoQ answer");
        return;
    }
    let _ = send.finish();
}

/// The DNS message of a query stream's bytes: a 2-byte length that matches the
/// rest exactly, and a message ID of 0 (RFC 9250 §4.2, §4.2.1).
fn frame(bytes: &[u8]) -> Result<&[u8], &'static str> {
    let (len, message) = bytes
        .split_first_chunk::<2>()
        .ok_or("a stream shorter than its length prefix")?;
    if usize::from(u16::from_be_bytes(*len)) != message.len() {
        return Err("a length prefix that does not match the stream");
    }
    match message.first_chunk::<2>() {
        Some([0, 0]) => Ok(message),
        Some(_) => Err("a message ID other than 0"),
        None => Err("a message shorter than its ID"),
    }
}

/// Closes the connection for a protocol error (RFC 9250 §4.3).
fn protocol_error(conn: &quinn::Connection, why: &str) {
    tracing::debug!(src = %conn.remote_address(), "DoQ protocol error: {why}; connection closed");
    metrics::counter!("dnsguard_doq_protocol_error_total").increment(1);
    conn.close(DOQ_PROTOCOL_ERROR, b"");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_counts_refuse_beyond_either_bound() {
        let limits = TcpLimits {
            idle_timeout: std::time::Duration::from_secs(10),
            max_connections: 3,
            max_per_client: 2,
        };
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let mut counts = Counts::default();
        assert!(!counts.pressed(a, &limits));
        assert!(counts.admit(a, &limits));
        assert!(counts.pressed(a, &limits), "a at half its bound");
        assert!(!counts.pressed(b, &limits), "b not");
        assert!(counts.admit(a, &limits));
        assert!(!counts.admit(a, &limits), "a third from one address");
        assert!(counts.admit(b, &limits));
        assert!(counts.pressed(c, &limits), "3 of 3 in total");
        assert!(!counts.admit(c, &limits), "a fourth in total");
        counts.release(a);
        assert!(counts.admit(c, &limits), "room again after a close");
        counts.release(b);
        assert_eq!(
            counts.per_client.get(&b),
            None,
            "no entry left for a gone client"
        );
        assert_eq!(counts.total, 2);
    }

    #[test]
    fn frame_wants_an_exact_length_and_id_zero() {
        let ok = [0, 4, 0, 0, 1, 2];
        assert_eq!(frame(&ok), Ok(&ok[2..]));
        assert!(frame(&[0, 5, 0, 0, 1, 2]).is_err(), "prefix says more");
        assert!(
            frame(&[0, 3, 0, 0, 1, 2]).is_err(),
            "two messages or trailing bytes"
        );
        assert!(frame(&[0, 4, 0, 7, 1, 2]).is_err(), "ID 7");
        assert!(frame(&[0]).is_err());
        assert!(frame(&[0, 1, 0]).is_err());
    }
}
