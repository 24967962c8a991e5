//! hickory-server's front end: turns a `Request` into a [`Question`], runs the
//! pipeline, and writes the reply with the right flags, EDNS and truncation.

use std::sync::Arc;

use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_proto::rr::{DNSClass, Record};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::Question;
use super::ede::Ede;
use super::pipeline::{Pipeline, Screened};

/// The UDP payload size dnsguard advertises (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Answers requests from hickory-server's UDP and TCP listeners.
#[derive(Clone)]
pub struct Handler {
    pipeline: Arc<Pipeline>,
}

impl Handler {
    /// A handler running every question through `pipeline`.
    pub fn new(pipeline: Arc<Pipeline>) -> Self {
        Self { pipeline }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        self.answer(request, response, None).await
    }
}

impl Handler {
    /// Answers `request`; `screened` carries the decision of a front end that
    /// already ran the screening steps (the UDP fast path handing a query on).
    pub async fn answer<R: ResponseHandler>(
        &self,
        request: &Request,
        response: R,
        screened: Option<Screened>,
    ) -> ResponseInfo {
        self.answer_presented(request, response, screened, None)
            .await
    }

    /// [`Handler::answer`] for a front end that also knows what the client
    /// presented about who it is (the DoH path and `Authorization` header).
    pub async fn answer_presented<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
        screened: Option<Screened>,
        presented: Option<Box<super::Presented>>,
    ) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(EDNS_PAYLOAD);
            e.set_dnssec_ok(req.flags().dnssec_ok);
            e
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let none: [&Record; 0] = [];

        // RFC 6891 §6.1.3: a version we do not speak gets BADVERS (the OPT record
        // of the reply says version 0 and carries the upper rcode bits), no data,
        // and is not logged: it is a protocol error, like FORMERR.
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            meta.response_code = ResponseCode::BADVERS;
            let msg = builder.build(meta, none, none, none, none);
            return send(&mut response, msg, meta).await;
        }

        let info = request.request_info().ok();
        let error = match &info {
            None => Some(ResponseCode::FormErr),
            Some(_) if request.metadata.op_code != OpCode::Query => Some(ResponseCode::NotImp),
            Some(i) if i.query.query_class() != DNSClass::IN => Some(ResponseCode::Refused),
            Some(_) => None,
        };
        let (Some(info), None) = (info, error) else {
            meta.response_code = error.unwrap_or(ResponseCode::FormErr);
            let msg = builder.build(meta, none, none, none, none);
            return send(&mut response, msg, meta).await;
        };

        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let question = Question {
            client: request.src(),
            query: info.query.original().clone(),
            name: info.query.name().clone(),
            dnssec_ok,
            checking_disabled: request.metadata.checking_disabled,
            transport: match request.protocol() {
                Protocol::Udp => crate::dnstap::Transport::Udp,
                Protocol::Tls => crate::dnstap::Transport::Tls,
                Protocol::Https => crate::dnstap::Transport::Doh,
                Protocol::Quic => crate::dnstap::Transport::Doq,
                _ => crate::dnstap::Transport::Tcp,
            },
            presented,
        };
        let reply = self.pipeline.handle_screened(&question, screened).await;
        let answer = &reply.answer;
        meta.response_code = answer.rcode;
        meta.authentic_data = answer.authentic && (dnssec_ok || request.metadata.authentic_data);
        let mut edns = edns;
        if let Some(e) = &mut edns {
            let policy = self.pipeline.policy();
            let screened_out = reply.score.is_none();
            if let Some(ede) = Ede::of(&policy, &reply.source, reply.verdict.as_ref(), screened_out)
            {
                add_ede(e, &ede, request, &question.query, answer);
            }
        }
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
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

/// Puts `ede` into the reply's EDNS: over UDP without its text, or not at all,
/// when the reply to the client's size would not fit with it (the answer is never
/// truncated for it).
fn add_ede(
    edns: &mut Edns,
    ede: &Ede<'_>,
    request: &Request,
    query: &hickory_proto::op::Query,
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
