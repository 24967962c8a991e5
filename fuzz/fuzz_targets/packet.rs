//! The raw-packet path: any bytes a client can send, through the UDP fast path
//! (`dns::udp::answer`: parse in place, screen, answer blocked/refused/cached in
//! place) over a pipeline built from the embedded default config, with a cached
//! answer present. Replies written in place must parse as DNS messages; packets
//! the fast path declines go through hickory's parser and the FORMERR writer, as
//! the UDP worker does.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use dnsguard::config::Config;
use dnsguard::dns::pipeline::{Pipeline, Policy};
use dnsguard::dns::udp::{Arrived, Fast, answer};
use dnsguard::dns::wire;
use dnsguard::querylog::QueryLog;
use dnsguard::resolve::Answer;
use dnsguard::resolve::cache::{Cached, Key};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use libfuzzer_sys::fuzz_target;

fn pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("dnsguard-fuzz-{}", std::process::id()));
        let mut cfg = Config::embedded().expect("embedded config");
        cfg.server.data_dir = dir;
        let lists = dnsguard::lists::Lists::new(&cfg.server.data_dir, &cfg.list_updates)
            .expect("data dir");
        let filter = dnsguard::app::compile_filter_blocking(&cfg, &lists).expect("filter");
        let log = Arc::new(QueryLog::disabled(cfg.query_log.clone()));
        let p = Pipeline::new(&cfg, Policy::new(filter, &cfg).expect("policy"), log)
            .expect("pipeline");
        // A cached CNAME chain, so hits exercise the wire body and the after-cache checks.
        let name = Name::from_ascii("www.example.org.").unwrap();
        let target = Name::from_ascii("edge.cdn.example.net.").unwrap();
        let mut a = Answer::empty(ResponseCode::NoError);
        a.answers.push(Record::from_rdata(name.clone(), 300, RData::CNAME(CNAME(target.clone()))));
        a.answers.push(Record::from_rdata(target, 60, RData::A(A::new(192, 0, 2, 80))));
        let key = Key::new("www.example.org", 1, false, false).unwrap();
        p.cache().insert(&key, &Cached::new(&a, &name, RecordType::A));
        p
    })
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
        Fast::Miss(..) => {}
        Fast::Full(_) => {
            let _ = hickory_server::server::Request::from_bytes(
                data.to_vec(),
                client,
                hickory_server::net::xfer::Protocol::Udp,
            );
            if let Some(n) = wire::format_error(data, &mut out) {
                Message::from_vec(&out[..n]).expect("FORMERR replies parse");
            }
            if let Some(n) = wire::slip(data, &mut out) {
                Message::from_vec(&out[..n]).expect("slipped replies parse");
            }
        }
    }
});
