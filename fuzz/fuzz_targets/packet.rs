//! The raw-packet path: any bytes a client can send, through the UDP fast path
//! (`dns::udp::answer`: parse in place, the pipeline's decision, the answer
//! written in place) and through hickory's parser and `dns::handler::Handler` (the
//! UDP slow path and TCP: the same decision, hickory's encoder), over a pipeline
//! built from the embedded default config with a cached answer present. Every
//! reply either path writes must parse as a DNS message; packets the fast path
//! declines also go through the FORMERR and slip writers, as the UDP worker does.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use dnsguard::config::Config;
use dnsguard::dns::handler::Handler;
use dnsguard::dns::udp::{Arrived, Fast, answer};
use dnsguard::dns::wire;
use dnsguard::pipeline::{Pipeline, Policy};
use dnsguard::querylog::QueryLog;
use dnsguard::resolve::Answer;
use dnsguard::resolve::cache::{Cached, Key};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use libfuzzer_sys::fuzz_target;

fn pipeline() -> &'static Arc<Pipeline> {
    static PIPELINE: OnceLock<Arc<Pipeline>> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("dnsguard-fuzz-{}", std::process::id()));
        let mut cfg = Config::embedded().expect("embedded config");
        cfg.server.data_dir = dir;
        // Nothing leaves the machine: the only upstream is the discard port on loopback.
        cfg.resolver.upstreams = vec!["127.0.0.1:9".parse().expect("upstream")];
        let lists = dnsguard::lists::Lists::new(&cfg.server.data_dir, &cfg.list_updates)
            .expect("data dir");
        let filter = dnsguard::live::compile_filter_blocking(&cfg, &lists).expect("filter");
        let log = Arc::new(QueryLog::disabled(cfg.query_log.clone()));
        let policy = Policy::new(filter, &cfg.policy()).expect("policy");
        let p = Pipeline::new(&cfg.pipeline(), policy, log).expect("pipeline");
        // A cached CNAME chain, so hits exercise the wire body and the after-cache checks.
        let name = Name::from_ascii("www.example.org.").unwrap();
        let target = Name::from_ascii("edge.cdn.example.net.").unwrap();
        let mut a = Answer::empty(ResponseCode::NoError);
        a.answers.push(Record::from_rdata(name.clone(), 300, RData::CNAME(CNAME(target.clone()))));
        a.answers.push(Record::from_rdata(target, 60, RData::A(A::new(192, 0, 2, 80))));
        let key = Key::new("www.example.org", 1, false, false).unwrap();
        p.cache().insert(&key, &Cached::new(&a, &name, RecordType::A));
        Arc::new(p)
    })
}

/// Keeps hickory's encoding of a reply and checks that it parses.
#[derive(Clone)]
struct Parses;

#[async_trait::async_trait]
impl ResponseHandler for Parses {
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
        encoder.set_max_size(1232);
        let info = response.destructive_emit(&mut encoder)?;
        Message::from_vec(&bytes).expect("a hickory-encoded reply must parse");
        Ok(info)
    }
}

/// The slow path and TCP: hickory's parser, then the handler (which never needs
/// the network for what it decides without the resolver; a question that needs
/// the resolver is left out, as the fast path's misses are).
fn slow_path(data: &[u8], client: SocketAddr, protocol: Protocol) {
    let Ok(request) = Request::from_bytes(data.to_vec(), client, protocol) else {
        return;
    };
    if request.metadata.message_type != MessageType::Query {
        return;
    }
    let handler = Handler::new(pipeline().clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Bounded: a question sent to the (absent) upstream must not stall the fuzzer.
    rt.block_on(async {
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            handler.answer(&request, Parses),
        )
        .await;
    });
}

fuzz_target!(|data: &[u8]| {
    let p = pipeline();
    let mut out = [0u8; 4096];
    let client: SocketAddr = "192.168.1.10:5353".parse().unwrap();
    match answer(p, data, client, &mut out, Arrived::now()) {
        Fast::Reply(n) => {
            Message::from_vec(&out[..n]).expect("a fast-path reply must parse");
        }
        // A miss goes to the resolver (no network here); what it writes is the
        // same `respond` a cache hit's reply goes through, fuzzed above.
        Fast::Fetch(_) => {}
        Fast::Encode(_) => slow_path(data, client, Protocol::Udp),
        Fast::Full => {
            slow_path(data, client, Protocol::Tcp);
            if let Some(n) = wire::format_error(data, &mut out) {
                Message::from_vec(&out[..n]).expect("FORMERR replies parse");
            }
            if let Some(n) = wire::slip(data, &mut out) {
                Message::from_vec(&out[..n]).expect("slipped replies parse");
            }
        }
    }
});
