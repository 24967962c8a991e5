//! hickory's front end (what the in-place path, `fast.rs`, leaves on any transport):
//! turns a `Request` into the pipeline's [`Asked`], runs the pipeline's decision,
//! and writes the [`Says`] with hickory's encoder — flags, EDNS with its Extended
//! DNS Error, truncation. Protocol errors (FORMERR, NOTIMP, BADVERS) are answered
//! here and never reach the pipeline.

use std::sync::Arc;

use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::{DNSClass, Record};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::Question;
use crate::pipeline::ede::Ede;
use crate::pipeline::{Arrived, Asked, Pipeline, Policy, Says, Step};

/// The UDP payload size dnsguard advertises (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Answers the requests every front end's in-place path declines.
#[derive(Clone)]
pub struct Handler {
    pipeline: Arc<Pipeline>,
}

impl Handler {
    /// A handler running every question through `pipeline`.
    pub fn new(pipeline: Arc<Pipeline>) -> Self {
        Self { pipeline }
    }

    /// The pipeline it runs questions through.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        self.answer(request, response).await
    }
}

impl Handler {
    /// Answers `request` through `response`: protocol errors here, every query
    /// through the pipeline's decide / fetch / finish, then [`Handler::respond`].
    pub async fn answer<R: ResponseHandler>(&self, request: &Request, response: R) -> ResponseInfo {
        self.answer_presented(request, response, None).await
    }

    /// [`Handler::answer`] for a front end that also knows what the client
    /// presented about who it is (the DoH path and `Authorization` header, the
    /// DoT server name's ClientID).
    pub async fn answer_presented<R: ResponseHandler>(
        &self,
        request: &Request,
        response: R,
        presented: Option<Box<crate::identity::Presented>>,
    ) -> ResponseInfo {
        let arrived = Arrived::now();
        let info = match checked(request) {
            Ok(info) => info,
            Err(rcode) => return refuse(request, response, rcode).await,
        };
        let question = Question {
            client: request.src(),
            query: info.query.original().clone(),
            name: info.query.name().clone(),
            dnssec_ok: request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
            checking_disabled: request.metadata.checking_disabled,
            transport: transport(request),
            presented,
        };
        // Only a trusted forwarder's EDNS options say who is behind it.
        let forwarded = request
            .edns
            .as_ref()
            .filter(|_| self.pipeline.trusts_forwarder(request.src().ip()))
            .and_then(forwarded);
        let name = question.name_text();
        let mut asked = question.asked(&name, arrived);
        asked.forwarded = forwarded.as_ref();
        let pipeline = &self.pipeline;
        let policy = pipeline.policy();
        let says = match pipeline.decide(&policy, &asked) {
            Step::Final(says) => says,
            Step::Fetch(pending) => {
                let got = pipeline.fetch(&pending).await;
                pipeline.finish(&policy, &asked, pending, got)
            }
        };
        self.respond(request, response, &policy, &asked, &says)
            .await
    }

    /// Writes what the pipeline `says` to `asked` (the question of `request`,
    /// decided under `policy`) with hickory's encoder, truncated to what the
    /// client takes, and records it.
    pub async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
        policy: &Policy,
        asked: &Asked<'_>,
        says: &Says,
    ) -> ResponseInfo {
        let Ok(info) = request.request_info() else {
            return refuse(request, response, ResponseCode::FormErr).await;
        };
        let query = info.query.original();
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        let answer = says.answer(query.name(), query.query_type());
        meta.response_code = answer.rcode;
        meta.authentic_data = says.authentic(asked.dnssec_ok, request.metadata.authentic_data);
        let mut edns = reply_edns(request);
        if let Some(e) = &mut edns
            && let Some(ede) = says.ede(policy)
        {
            add_ede(e, &ede, request, query, &answer);
        }
        let via = crate::dnstap::Via {
            transport: transport(request),
            port: asked.client.port(),
            ..Default::default()
        };
        let rcode = u16::from(meta.response_code);
        self.pipeline.record(policy, asked, says, rcode, via);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let none: [&Record; 0] = [];
        let msg = builder.build(
            meta,
            answer.answers.iter(),
            answer.authorities.iter(),
            none,
            none,
        );
        send(&mut response, msg, meta).await
    }
}

impl Question {
    /// The question as the pipeline takes it; `name` is [`Question::name_text`].
    pub fn asked<'a>(&'a self, name: &'a str, arrived: Arrived) -> Asked<'a> {
        Asked {
            client: self.client,
            name,
            qtype: u16::from(self.qtype()),
            dnssec_ok: self.dnssec_ok,
            checking_disabled: self.checking_disabled,
            query: Some(&self.query),
            arrived,
            presented: self.presented.as_deref(),
            forwarded: None,
        }
    }
}

/// The request's question, or the rcode of a request the pipeline never sees:
/// BADVERS for an EDNS version we do not speak (RFC 6891 §6.1.3), FORMERR,
/// NOTIMP for other opcodes, REFUSED for classes other than IN.
fn checked(request: &Request) -> Result<hickory_server::server::RequestInfo<'_>, ResponseCode> {
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return Err(ResponseCode::BADVERS);
    }
    let info = request.request_info().map_err(|_| ResponseCode::FormErr)?;
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    if info.query.query_class() != DNSClass::IN {
        return Err(ResponseCode::Refused);
    }
    Ok(info)
}

/// A reply without data and not logged, for a protocol error (like FORMERR); a
/// BADVERS reply's OPT record says version 0 and carries the upper rcode bits.
async fn refuse<R: ResponseHandler>(
    request: &Request,
    mut response: R,
    rcode: ResponseCode,
) -> ResponseInfo {
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.recursion_available = true;
    meta.response_code = rcode;
    let edns = reply_edns(request);
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(e) = &edns {
        builder.edns(e);
    }
    let none: [&Record; 0] = [];
    let msg = builder.build(meta, none, none, none, none);
    send(&mut response, msg, meta).await
}

/// The reply's EDNS, when the client sent EDNS: dnsguard's payload size, the
/// client's DO bit.
fn reply_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        e.set_dnssec_ok(req.flags().dnssec_ok);
        e
    })
}

/// The transport a request came over, for dnstap.
fn transport(request: &Request) -> crate::dnstap::Transport {
    transport_of(request.protocol())
}

/// dnstap's name for a front end's protocol.
pub(super) fn transport_of(protocol: Protocol) -> crate::dnstap::Transport {
    match protocol {
        Protocol::Udp => crate::dnstap::Transport::Udp,
        Protocol::Tls => crate::dnstap::Transport::Tls,
        Protocol::Https => crate::dnstap::Transport::Doh,
        Protocol::Quic => crate::dnstap::Transport::Doq,
        _ => crate::dnstap::Transport::Tcp,
    }
}

/// What a trusted forwarder put into `edns` about the client behind it: MAC,
/// client subnet, CPE-ID (`crate::identity`).
fn forwarded(edns: &Edns) -> Option<crate::identity::Forwarded> {
    use hickory_proto::rr::rdata::opt::EdnsOption;
    let options = &edns.options().options;
    let mut f =
        crate::identity::Forwarded::from_options(options.iter().filter_map(|(_, o)| match o {
            EdnsOption::Unknown(code, data) => Some((*code, data.as_slice())),
            _ => None,
        }))
        .unwrap_or_default();
    f.subnet = options.iter().find_map(|(_, o)| match o {
        EdnsOption::Subnet(s) => Some(s.addr()),
        _ => None,
    });
    (f != crate::identity::Forwarded::default()).then_some(f)
}

/// Puts `ede` into the reply's EDNS: over UDP without its text, or not at all,
/// when the reply to the client's size would not fit with it (the answer is never
/// truncated for it).
fn add_ede(
    edns: &mut Edns,
    ede: &Ede<'_>,
    request: &Request,
    query: &Query,
    answer: &crate::resolve::Answer,
) {
    let mut with_text = Some(true);
    if request.protocol() == Protocol::Udp {
        let max = request
            .edns
            .as_ref()
            .map_or(512, |e| e.max_payload().clamp(512, EDNS_PAYLOAD));
        let mut msg = Message::new(0, MessageType::Response, OpCode::Query);
        msg.add_query(query.clone());
        msg.add_answers(answer.answers.iter().cloned());
        msg.add_authorities(answer.authorities.iter().cloned());
        msg.set_edns(edns.clone());
        let room = msg
            .to_vec()
            .map_or(0, |w| usize::from(max).saturating_sub(w.len()));
        with_text = [true, false]
            .into_iter()
            .find(|&text| ede.wire_len(text) <= room);
    }
    if let Some(text) = with_text {
        edns.options_mut().insert(ede.option(text));
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    meta: Metadata,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, "could not send response");
            let mut meta = meta;
            meta.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata: meta,
                counts: HeaderCounts::default(),
            })
        }
    }
}
