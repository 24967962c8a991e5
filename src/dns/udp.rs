//! The UDP front end: one socket per core (`SO_REUSEPORT`, the kernel spreads
//! clients over them), each read by a thread of its own.
//!
//! A worker reads a query in place, runs the pipeline's screening steps, and when
//! the answer needs no network (refused, blocked, a canary, a fresh cache hit) writes
//! it over its reply buffer and sends it: no task, no allocation beyond the query
//! log's entry. Everything else (cache misses, local records, unusual packets,
//! answers too big for the client) goes to hickory's full parser and the async
//! pipeline on the tokio runtime, answered from the same socket. Every query is
//! logged exactly once either way.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

use super::handler::{EDNS_PAYLOAD, Handler};
use super::pipeline::{Outcome, Pipeline, Screen, Screened};
use super::wire::{self, FastQuery, Reply};
use crate::querylog;

/// Receive and reply buffer size: larger queries are not DNS over UDP.
const BUFFER: usize = 4096;
/// How often an idle worker checks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(200);

/// The running UDP workers.
pub struct UdpService {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl UdpService {
    /// Starts one worker per socket; slow-path queries run on `runtime`.
    pub fn start(
        sockets: Vec<UdpSocket>,
        pipeline: Arc<Pipeline>,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Handler::new(pipeline.clone());
        let mut workers = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            socket.set_read_timeout(Some(STOP_POLL))?;
            let worker = Worker {
                socket: Arc::new(socket),
                pipeline: pipeline.clone(),
                handler: handler.clone(),
                runtime: runtime.clone(),
                stop: stop.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || worker.run())?;
            workers.push(thread);
        }
        Ok(Self { stop, workers })
    }

    /// Stops the workers (each notices within [`STOP_POLL`]) and waits for them.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.join();
        }
    }
}

struct Worker {
    socket: Arc<UdpSocket>,
    pipeline: Arc<Pipeline>,
    handler: Handler,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(self) {
        let mut packet = vec![0u8; BUFFER];
        let mut out = vec![0u8; BUFFER];
        while !self.stop.load(Ordering::Relaxed) {
            let (n, client) = match self.socket.recv_from(&mut packet) {
                Ok(received) => received,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // ICMP errors from earlier sends surface here; keep serving.
                    tracing::debug!(error = %e, "UDP receive error");
                    continue;
                }
            };
            // Port 0 cannot be answered (and is a reflection trick): drop.
            if client.port() == 0 {
                continue;
            }
            match answer(&self.pipeline, &packet[..n], client, &mut out) {
                Fast::Reply(len) => send(&self.socket, &out[..len], client),
                Fast::Full(screened) => self.full(&packet[..n], client, screened, &mut out),
                Fast::Ignore => {}
            }
        }
    }

    /// Hands a query to hickory's parser and the async pipeline.
    fn full(&self, packet: &[u8], client: SocketAddr, screened: Option<Screened>, out: &mut [u8]) {
        let request = match Request::from_bytes(packet.to_vec(), client, Protocol::Udp) {
            Ok(r) if r.metadata.message_type == hickory_proto::op::MessageType::Query => r,
            Ok(_) => return, // a response: never answered (no reflection)
            Err(_) => {
                if let Some(len) = wire::format_error(packet, out) {
                    send(&self.socket, &out[..len], client);
                }
                return;
            }
        };
        let max_size = request
            .edns
            .as_ref()
            .map_or(512, |e| e.max_payload().clamp(512, EDNS_PAYLOAD));
        let reply = UdpReply {
            socket: self.socket.clone(),
            client,
            max_size,
        };
        let handler = self.handler.clone();
        self.runtime.spawn(async move {
            handler.answer(&request, reply, screened).await;
        });
    }
}

/// What the fast path did with a packet.
#[derive(Debug)]
pub enum Fast {
    /// The reply is in the buffer, this long.
    Reply(usize),
    /// Take the full path; `Some` when the screening steps already ran.
    Full(Option<Screened>),
    /// Nothing to send (never used for queries; kept for rate limiting).
    Ignore,
}

/// The fast path for one packet from `client`: answers it into `out` when that
/// needs no network, else says how to continue. Never panics on any input (the
/// `packet` fuzz target drives it).
pub fn answer(pipeline: &Pipeline, packet: &[u8], client: SocketAddr, out: &mut [u8]) -> Fast {
    let started = Instant::now();
    let Some(q) = FastQuery::parse(packet) else {
        return Fast::Full(None);
    };
    let now_ms = querylog::now_ms();
    let policy = pipeline.policy_guard();
    let ip = client.ip();
    let name = q.name();
    let screen = pipeline.screen(ip, name, q.qtype, &policy, now_ms);
    let screened = Screened {
        screen,
        started,
        now_ms,
    };
    let full = Fast::Full(Some(screened));
    let written = match screen {
        Screen::Pass(verdict, _) => {
            let Some(hit) =
                pipeline.cached_answer(ip, name, q.qtype, q.dnssec_ok(), &policy, &verdict)
            else {
                return full;
            };
            let Some(body) = &hit.cached.wire else {
                return full;
            };
            let cached = &hit.cached.answer;
            let ad = cached.authentic && (q.dnssec_ok() || q.ad);
            let rcode = u16::from(cached.rcode) as u8;
            let Ok(mut reply) = Reply::start(out, packet, &q, rcode, ad) else {
                return full;
            };
            if reply.body(body, hit.ttl_left).is_err() {
                return full;
            }
            let summary = (!cached.answers.is_empty()).then(|| hit.cached.summary.clone());
            reply
                .finish(&q)
                .map(|len| (len, summary, Some((hit.cached.clone(), hit.ttl_left))))
        }
        Screen::Refused | Screen::Canary | Screen::Blocked(_) | Screen::Tunnel(..) => {
            let rcode = match screen {
                Screen::Refused | Screen::Tunnel(..) => 5,
                Screen::Canary => 3,
                _ => 0,
            };
            let Ok(mut reply) = Reply::start(out, packet, &q, rcode, false) else {
                return full;
            };
            if let Screen::Blocked(v) = screen {
                let (mode, ttl) = policy.filter.group_block(v.group);
                if reply.blocked(mode, ttl, q.qtype).is_err() {
                    return full;
                }
            }
            reply.finish(&q).map(|len| (len, None, None))
        }
    };
    let Ok((len, summary, cached)) = written else {
        return full; // too big for the client: hickory truncates properly
    };
    let (source, verdict, score) = screen.outcome_parts();
    let outcome = Outcome {
        rcode: u16::from(out[3] & 0x0F),
        source: &source,
        verdict,
        score,
        summary,
        addrs: cached.as_ref().map_or(&[], |(c, _)| &c.addrs[..]),
        ttl_cap: cached.as_ref().map_or(u32::MAX, |(_, ttl)| *ttl),
    };
    pipeline.record(ip, Arc::from(name), q.qtype, &policy, &outcome, &screened);
    Fast::Reply(len)
}

fn send(socket: &UdpSocket, reply: &[u8], client: SocketAddr) {
    if let Err(e) = socket.send_to(reply, client) {
        tracing::debug!(%client, error = %e, "UDP send failed");
    }
}

/// Sends hickory's encoding of a full-path answer from the worker's socket,
/// truncated (TC) to what the client can take.
#[derive(Clone)]
struct UdpReply {
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    max_size: u16,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(self.max_size);
        let info = response.destructive_emit(&mut encoder)?;
        send(&self.socket, &bytes, self.client);
        Ok(info)
    }
}
