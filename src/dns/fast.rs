//! The in-place answer path every front end shares (UDP, TCP, DoT, DoH, DoQ): a
//! plain query is read in place ([`FastQuery`]), decided by the pipeline, and its
//! answer written straight into a buffer ([`Reply`]), with no hickory `Request`,
//! no `Record`s and no hickory encoder. Only what the in-place reader declines
//! (odd names, EDNS ≠ 0, a trusted forwarder's identity options, not a query) goes
//! to hickory's parser and [`Handler`], and only an answer that cannot be written
//! in place (larger than the transport allows, records kept parsed) to hickory's
//! encoder. The front ends parse their transport, call this, and write the bytes.
//!
//! What differs between transports is carried by [`Front`]: the client, the
//! protocol (the reply's size limit — the client's UDP size, or 65535 on a stream
//! — and dnstap's transport), and what the client presented about who it is (the
//! ClientID of a DoH path or TLS server name, a secret, a certificate pin).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::rr::{Name, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

use super::handler::{self, Handler};
use super::wire::{FastQuery, Reply, TooBig};
use crate::identity::Presented;
use crate::pipeline::{Arrived, Asked, Content, Pending, Pipeline, Policy, Says, Step};
use crate::resolve::body::Body;

/// The largest DNS message over a stream (the 2-byte length prefix of TCP, DoT
/// and DoQ; DoH takes no more either).
pub const STREAM_MAX: usize = 65535;

thread_local! {
    /// Where a stream answer is written, a whole DNS message's worth per thread,
    /// zeroed once: the answer is copied out at its length (zeroing a buffer per
    /// query was 14% of a cached DoT answer's instructions).
    static STREAM_BUFFER: RefCell<Box<[u8]>> =
        RefCell::new(vec![0u8; STREAM_MAX].into_boxed_slice());
}

/// Runs `f` on this thread's stream buffer (on a fresh one if it is in use).
fn with_buffer<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    STREAM_BUFFER.with(|b| match b.try_borrow_mut() {
        Ok(mut buffer) => f(&mut buffer),
        Err(_) => f(&mut vec![0u8; STREAM_MAX]),
    })
}

/// Who asked, over what, and what they presented about who they are.
#[derive(Debug, Clone, Copy)]
pub struct Front<'a> {
    /// The client (for DoH behind a trusted proxy, the one its headers name).
    pub client: SocketAddr,
    /// UDP, TCP, TLS, HTTPS or QUIC.
    pub protocol: Protocol,
    /// The DoH path's or TLS server name's ClientID, secret, certificate pin.
    pub presented: Option<&'a Presented>,
}

impl Front<'_> {
    /// A UDP client: it presents nothing.
    pub fn udp(client: SocketAddr) -> Front<'static> {
        Front {
            client,
            protocol: Protocol::Udp,
            presented: None,
        }
    }

    /// The largest reply this client takes for `q`: its UDP size over UDP
    /// ([`FastQuery::max_reply`]), a whole DNS message over a stream.
    fn limit(&self, q: &FastQuery) -> usize {
        match self.protocol {
            Protocol::Udp => q.max_reply(),
            _ => STREAM_MAX,
        }
    }

    /// The pipeline's view of `q` from this client.
    pub fn asked<'q>(&'q self, q: &'q FastQuery, arrived: Arrived) -> Asked<'q> {
        Asked {
            client: self.client,
            name: q.name(),
            qtype: q.qtype,
            dnssec_ok: q.dnssec_ok(),
            checking_disabled: q.cd,
            query: None,
            arrived,
            presented: self.presented,
            forwarded: None,
        }
    }
}

/// What the in-place path did with a message.
pub enum Fast {
    /// The reply is in the buffer, this long.
    Reply(usize),
    /// The pipeline asks the resolver: fetch, finish, then answer like a hit.
    Fetch(Box<Miss>),
    /// Decided, but the reply does not fit in the buffer or the transport's limit
    /// (or holds records kept parsed).
    Encode(Box<Decided>),
    /// Not a plain query: hickory's parser and the handler (the full path).
    Full,
}

/// A query the pipeline sent on to the resolver, with what was worked out for it.
pub struct Miss {
    pub(super) q: FastQuery,
    pub(super) arrived: Arrived,
    pub(super) policy: Arc<Policy>,
    pub(super) pending: Box<Pending>,
}

/// A decided query whose reply was not written in place.
pub struct Decided {
    pub(super) q: FastQuery,
    pub(super) arrived: Arrived,
    pub(super) policy: Arc<Policy>,
    pub(super) says: Says,
}

/// Decides `packet` from `front`, which arrived at `now`, and writes the answer
/// into `out` when that needs no network, else says how to continue. Never
/// panics on any input (the `packet` fuzz target drives it).
pub fn answer(
    pipeline: &Pipeline,
    packet: &[u8],
    front: &Front<'_>,
    out: &mut [u8],
    now: Arrived,
) -> Fast {
    let Some(q) = FastQuery::parse(packet) else {
        return Fast::Full;
    };
    if q.edns.is_some_and(|e| e.options) && pipeline.trusts_forwarder(front.client.ip()) {
        return Fast::Full; // a forwarder's identity options: the full path reads them
    }
    let policy = pipeline.policy_guard();
    let asked = front.asked(&q, now);
    let step = pipeline.decide(&policy, &asked);
    // Answered in place from where `decide` left it: a `Says` is large, and only
    // the rarer paths below move it.
    if let Step::Final(says) = &step
        && let Some(len) = respond(pipeline, &policy, packet, &q, front, &asked, says, out)
    {
        return Fast::Reply(len);
    }
    let policy = arc_swap::Guard::into_inner(policy);
    match step {
        Step::Final(says) => Fast::Encode(Box::new(Decided {
            q,
            arrived: now,
            policy,
            says,
        })),
        Step::Fetch(pending) => Fast::Fetch(Box::new(Miss {
            q,
            arrived: now,
            policy,
            pending,
        })),
    }
}

/// Writes the reply that `says` into `out` and records the query. `None`
/// (nothing recorded) when it cannot be written in place.
#[allow(clippy::too_many_arguments)]
pub fn respond(
    pipeline: &Pipeline,
    policy: &Policy,
    packet: &[u8],
    q: &FastQuery,
    front: &Front<'_>,
    asked: &Asked<'_>,
    says: &Says,
    out: &mut [u8],
) -> Option<usize> {
    let ede = q.edns.and_then(|_| says.ede(policy));
    let len = write(packet, q, says, ede.as_ref(), front.limit(q), out).ok()?;
    let via = crate::dnstap::Via {
        transport: handler::transport_of(front.protocol),
        port: asked.client.port(),
        query: packet,
        response: &out[..len],
    };
    pipeline.record(policy, asked, says, u16::from(out[3] & 0x0F), via);
    Some(len)
}

/// The wire form of what the pipeline `says`, written over `out`, at most
/// `limit` bytes.
fn write(
    packet: &[u8],
    q: &FastQuery,
    says: &Says,
    ede: Option<&crate::pipeline::ede::Ede<'_>>,
    limit: usize,
    out: &mut [u8],
) -> Result<usize, TooBig> {
    let rcode = u16::from(says.rcode());
    let rcode = u8::try_from(rcode).ok().filter(|r| *r < 16).ok_or(TooBig)?;
    let ad = says.authentic(q.dnssec_ok(), q.ad);
    let mut reply = Reply::start(out, packet, q, rcode, ad)?;
    match &says.content {
        Content::Rcode(_) => {}
        Content::Blocked(plan) => reply.blocked(plan)?,
        Content::Hit(hit, _) => reply.body(hit.cached.wire().ok_or(TooBig)?, |t| hit.ttl(t))?,
        Content::Records(answer) => {
            let mut owner = Name::from_ascii(q.name()).map_err(|_| TooBig)?;
            owner.set_fqdn(true);
            let body = Body::encode(answer, &owner, RecordType::from(q.qtype)).ok_or(TooBig)?;
            reply.body(&body, |t| t)?;
        }
    }
    reply.finish(q, limit, ede)
}

/// What a stream front end (TCP, DoT, DoH, DoQ) does next with a message.
pub enum Stream<R = Vec<u8>> {
    /// The whole reply, recorded (as [`stream_with`]'s `keep` made it).
    Reply(R),
    /// Decided without the reply, or sent to the resolver: [`Later::reply`].
    Later(Later),
    /// Not a plain query: the front end's hickory path.
    Full,
}

/// A stream query that needs more than the in-place write: the resolver, or
/// hickory's encoder.
pub enum Later {
    /// The pipeline asks the resolver.
    Fetch(Box<Miss>),
    /// Decided; the reply could not be written in place (larger than a DNS
    /// message, or records kept parsed).
    Encode(Box<Decided>),
}

/// The in-place path for one message from a stream front end: no size limit but
/// the DNS message's own, no truncation.
pub fn stream(pipeline: &Pipeline, packet: &[u8], front: &Front<'_>, now: Arrived) -> Stream {
    stream_with(pipeline, packet, front, now, <[u8]>::to_vec)
}

/// [`stream`], handing a reply written in place to `keep` while it is still in
/// this thread's buffer: a front end that frames its replies itself (TCP, DoT)
/// appends it to the batch it writes, with no copy of its own.
pub fn stream_with<R>(
    pipeline: &Pipeline,
    packet: &[u8],
    front: &Front<'_>,
    now: Arrived,
    keep: impl FnOnce(&[u8]) -> R,
) -> Stream<R> {
    with_buffer(|out| match answer(pipeline, packet, front, out, now) {
        Fast::Reply(len) => Stream::Reply(keep(&out[..len])),
        Fast::Fetch(miss) => Stream::Later(Later::Fetch(miss)),
        Fast::Encode(decided) => Stream::Later(Later::Encode(decided)),
        Fast::Full => Stream::Full,
    })
}

impl Later {
    /// Fetches and finishes a miss, then writes the reply like a hit's (hickory's
    /// encoder only for what cannot be written in place), recorded once. `None`
    /// when no reply could be encoded.
    pub async fn reply(
        self,
        handler: &Handler,
        packet: &[u8],
        front: &Front<'_>,
    ) -> Option<Vec<u8>> {
        let pipeline = handler.pipeline();
        let (q, arrived, policy, says) = match self {
            Later::Fetch(miss) => {
                let Miss {
                    q,
                    arrived,
                    policy,
                    pending,
                } = *miss;
                let asked = front.asked(&q, arrived);
                let got = pipeline.fetch(&pending).await;
                let says = pipeline.finish(&policy, &asked, pending, got);
                (q, arrived, policy, says)
            }
            Later::Encode(decided) => {
                let Decided {
                    q,
                    arrived,
                    policy,
                    says,
                } = *decided;
                (q, arrived, policy, says)
            }
        };
        let asked = front.asked(&q, arrived);
        if let Some(reply) = written(pipeline, &policy, packet, &q, front, &asked, &says) {
            return Some(reply);
        }
        encoded(handler, packet, front, &policy, &asked, &says).await
    }
}

/// The reply written in place, recorded; `None` (nothing recorded) when it
/// cannot be.
fn written(
    pipeline: &Pipeline,
    policy: &Policy,
    packet: &[u8],
    q: &FastQuery,
    front: &Front<'_>,
    asked: &Asked<'_>,
    says: &Says,
) -> Option<Vec<u8>> {
    with_buffer(|out| {
        let len = respond(pipeline, policy, packet, q, front, asked, says, out)?;
        Some(out[..len].to_vec())
    })
}

/// What the pipeline `says`, with hickory's encoder, recorded.
async fn encoded(
    handler: &Handler,
    packet: &[u8],
    front: &Front<'_>,
    policy: &Policy,
    asked: &Asked<'_>,
    says: &Says,
) -> Option<Vec<u8>> {
    let request = Request::from_bytes(packet.to_vec(), front.client, front.protocol).ok()?;
    let out = Collect::default();
    handler
        .respond(&request, out.clone(), policy, asked, says)
        .await;
    out.take()
}

/// Keeps hickory's encoding of a reply (up to a whole DNS message) for a front
/// end that frames it itself.
#[derive(Clone, Default)]
pub(super) struct Collect(Arc<parking_lot::Mutex<Option<Vec<u8>>>>);

impl Collect {
    /// The reply, once sent.
    pub(super) fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Collect {
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
        let (bytes, info) = encode(response, u16::MAX)?;
        *self.0.lock() = Some(bytes);
        Ok(info)
    }
}

/// A hickory response in wire form, at most `max_size` bytes (truncated, with
/// TC, beyond): what every hickory-path reply is written as.
pub(super) fn encode<'a, A, N, S, D>(
    response: MessageResponse<'_, 'a, A, N, S, D>,
    max_size: u16,
) -> Result<(Vec<u8>, ResponseInfo), NetError>
where
    A: Iterator<Item = &'a Record> + Send + 'a,
    N: Iterator<Item = &'a Record> + Send + 'a,
    S: Iterator<Item = &'a Record> + Send + 'a,
    D: Iterator<Item = &'a Record> + Send + 'a,
{
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max_size);
    let info = response.destructive_emit(&mut encoder)?;
    Ok((bytes, info))
}
