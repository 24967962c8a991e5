//! Forwarding mode end to end: the real binary, a real client on real sockets, and
//! an in-process upstream whose counters show what reached it.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::client::{self, Ask, addrs, answer_types, ask, ask_with, rcode};
use common::server::{Dnsguard, run_cli};
use common::upstream::{FakeUpstream, Mode};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

const ZONE: &str = "\
www.fwd.test. 300 A 192.0.2.1
www.fwd.test. 300 AAAA 2001:db8::1
short.fwd.test. 1 A 192.0.2.2
v1.fwd.test. 300 A 192.0.2.9
alias.fwd.test. 300 CNAME mid.fwd.test.
mid.fwd.test. 300 CNAME www.fwd.test.
";

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn config(upstream: &FakeUpstream, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 500\n{extra}",
        upstream.addr()
    )
}

fn start(upstream: &FakeUpstream, extra: &str) -> Dnsguard {
    Dnsguard::start(&config(upstream, extra))
}

#[test]
fn forwards_and_answers_from_cache() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    let r = ask(dg.addr, "www.fwd.test.", RecordType::A);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(addrs(&r), vec!["192.0.2.1"]);
    assert!(r.metadata.recursion_available);
    assert_eq!(up.queries_for("www.fwd.test."), 1);

    // A second identical query is a cache hit: the upstream's counter does not move,
    // over UDP or TCP, whatever the case of the name.
    let r = ask(dg.addr, "WWW.fwd.TEST.", RecordType::A);
    assert_eq!(addrs(&r), vec!["192.0.2.1"]);
    assert!(r.answers[0].ttl <= 300 && r.answers[0].ttl >= 298);
    let tcp = Ask {
        tcp: true,
        ..Ask::default()
    };
    let r = ask_with(dg.addr, "www.fwd.test.", RecordType::A, &tcp);
    assert_eq!(addrs(&r), vec!["192.0.2.1"]);
    assert_eq!(up.queries_for("www.fwd.test."), 1);

    // Another type is another cache entry.
    let r = ask(dg.addr, "www.fwd.test.", RecordType::AAAA);
    assert_eq!(addrs(&r), vec!["2001:db8::1"]);
    assert_eq!(up.queries_for("www.fwd.test."), 2);
}

/// A miss is answered in place after the upstream's answer is cached, the way the
/// hit after it is: both replies must say the same thing, with the client's own
/// spelling of the question, RA, the EDNS record, and full TTLs on the miss.
#[test]
fn a_miss_and_the_hit_after_it_get_the_same_reply() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    for (name, qtype, edns) in [
        ("Alias.FWD.test.", RecordType::A, Some(true)),
        ("alias.fwd.test.", RecordType::AAAA, None),
        ("NoPe.fwd.test.", RecordType::A, Some(false)),
        ("www.fwd.test.", RecordType::MX, Some(false)),
    ] {
        let opts = Ask {
            edns,
            ..Ask::default()
        };
        let asked = || up.queries_for(&name.to_ascii_lowercase());
        let before = asked();
        let miss = ask_with(dg.addr, name, qtype, &opts);
        let hit = ask_with(dg.addr, name, qtype, &opts);
        let case = format!("{name} {qtype} edns {edns:?}");
        assert_eq!(
            asked(),
            before + 1,
            "{case}: one upstream query, then the cache"
        );
        for r in [&miss, &hit] {
            assert_eq!(
                r.queries[0].name().to_ascii(),
                name,
                "{case}: question as sent"
            );
            assert!(r.metadata.recursion_available, "{case}");
            assert!(r.metadata.recursion_desired, "{case}");
            assert!(!r.metadata.truncation, "{case}");
            assert_eq!(r.edns.is_some(), edns.is_some(), "{case}");
        }
        assert_eq!(rcode(&miss), rcode(&hit), "{case}");
        let records = |m: &hickory_proto::op::Message| {
            let section = |rs: &[hickory_proto::rr::Record]| {
                rs.iter()
                    .map(|r| (r.name.to_ascii().to_ascii_lowercase(), r.data.clone()))
                    .collect::<Vec<_>>()
            };
            (section(&m.answers), section(&m.authorities))
        };
        assert_eq!(records(&miss), records(&hit), "{case}");
        assert!(
            !miss.answers.is_empty() || !miss.authorities.is_empty(),
            "{case}: an answer or the SOA"
        );
        // The upstream's TTLs on the miss (300, the SOA's own on negative answers).
        for r in miss.answers.iter() {
            assert_eq!(r.ttl, 300, "{case}");
        }
    }
}

#[test]
fn negative_answers_pass_through_with_soa_and_are_cached() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    let r = ask(dg.addr, "nope.fwd.test.", RecordType::A);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    assert!(
        r.authorities
            .iter()
            .any(|a| a.record_type() == RecordType::SOA)
    );
    let r = ask(dg.addr, "www.fwd.test.", RecordType::MX);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert!(r.answers.is_empty());
    let before = up.queries();
    assert_eq!(
        rcode(&ask(dg.addr, "nope.fwd.test.", RecordType::A)),
        ResponseCode::NXDomain
    );
    assert_eq!(up.queries(), before, "NXDOMAIN should come from the cache");
}

#[test]
fn cname_chain_comes_back_in_order() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    let r = ask(dg.addr, "alias.fwd.test.", RecordType::A);
    assert_eq!(
        answer_types(&r),
        vec![RecordType::CNAME, RecordType::CNAME, RecordType::A]
    );
    assert_eq!(r.answers[0].name.to_ascii(), "alias.fwd.test.");
    assert_eq!(r.answers[1].name.to_ascii(), "mid.fwd.test.");
}

#[test]
fn ttl_expiry_refetches() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    let t0 = Instant::now();
    assert_eq!(
        addrs(&ask(dg.addr, "short.fwd.test.", RecordType::A)),
        vec!["192.0.2.2"]
    );
    assert_eq!(
        addrs(&ask(dg.addr, "short.fwd.test.", RecordType::A)),
        vec!["192.0.2.2"]
    );
    if t0.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            up.queries_for("short.fwd.test."),
            1,
            "within the TTL: cached"
        );
    }
    // The record's TTL is 1 s: let it run out (the passing of time is what is tested).
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(t0.elapsed()));
    assert_eq!(
        addrs(&ask(dg.addr, "short.fwd.test.", RecordType::A)),
        vec!["192.0.2.2"]
    );
    assert_eq!(
        up.queries_for("short.fwd.test."),
        2,
        "after the TTL: fetched again"
    );
}

fn assert_servfail_within_timeout(mode: Mode) {
    let up = FakeUpstream::start(localhost(), ZONE);
    up.set_mode(mode);
    let dg = start(&up, "");
    let t = Instant::now();
    let r = ask(dg.addr, "www.fwd.test.", RecordType::A);
    let took = t.elapsed();
    assert_eq!(rcode(&r), ResponseCode::ServFail, "{mode:?}");
    // timeout_ms = 500: SERVFAIL within the timeout + 20%.
    assert!(took <= Duration::from_millis(600), "{mode:?} took {took:?}");
    // The server still answers afterwards.
    up.set_mode(Mode::Normal);
    assert_eq!(
        addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        vec!["192.0.2.1"]
    );
}

/// An upstream that cannot be reached is said once, by dnsguard, with the reason
/// (offline, every query would say it again), and said again once it failed anew
/// after answering.
#[test]
fn an_unreachable_upstream_is_logged_once_with_its_reason() {
    let up = FakeUpstream::start(localhost(), ZONE);
    up.set_mode(Mode::Dead);
    let dg = start(&up, "");
    for name in ["a.fwd.test.", "b.fwd.test.", "c.fwd.test."] {
        assert_eq!(
            rcode(&ask(dg.addr, name, RecordType::A)),
            ResponseCode::ServFail
        );
    }
    let count = |log: &str, what: &str| log.lines().filter(|l| l.contains(what)).count();
    let warned = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("cannot reach upstream"))
            .map(str::to_owned)
            .collect()
    };
    // Each failure is a debug line (the harness logs dnsguard at debug): once all
    // three are there, so is any warning before them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&dg.log(), "upstream failed") < 3 {
        assert!(Instant::now() < deadline, "{}", dg.log());
        std::thread::yield_now();
    }
    let log = dg.log();
    let lines = warned(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains(&up.addr().to_string()) && lines[0].contains("timed out"),
        "{}",
        lines[0]
    );
    // Back, then gone again: said again at once.
    up.set_mode(Mode::Normal);
    assert_eq!(
        addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        vec!["192.0.2.1"]
    );
    up.set_mode(Mode::Dead);
    assert_eq!(
        rcode(&ask(dg.addr, "d.fwd.test.", RecordType::A)),
        ResponseCode::ServFail
    );
    while count(&dg.log(), "upstream failed") < 4 {
        assert!(Instant::now() < deadline, "{}", dg.log());
        std::thread::yield_now();
    }
    assert_eq!(warned(&dg.log()).len(), 2, "{}", dg.log());
}

#[test]
fn dead_upstream_gives_servfail_within_timeout() {
    assert_servfail_within_timeout(Mode::Dead);
}

#[test]
fn slow_upstream_gives_servfail_within_timeout() {
    assert_servfail_within_timeout(Mode::Slow(Duration::from_secs(3)));
}

#[test]
fn garbage_and_mismatched_ids_give_servfail_within_timeout() {
    assert_servfail_within_timeout(Mode::Garbage);
    assert_servfail_within_timeout(Mode::WrongId);
}

#[test]
fn upstream_servfail_is_servfail() {
    let up = FakeUpstream::start(localhost(), ZONE);
    up.set_mode(Mode::ServFail);
    let dg = start(&up, "");
    assert_eq!(
        rcode(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        ResponseCode::ServFail
    );
}

#[test]
fn serves_stale_after_the_upstream_dies() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    let t0 = Instant::now();
    assert_eq!(
        addrs(&ask(dg.addr, "short.fwd.test.", RecordType::A)),
        vec!["192.0.2.2"]
    );
    up.set_mode(Mode::Dead);
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(t0.elapsed()));
    let t = Instant::now();
    let r = ask(dg.addr, "short.fwd.test.", RecordType::A);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(addrs(&r), vec!["192.0.2.2"]);
    assert_eq!(r.answers[0].ttl, 30, "stale answers carry stale_answer_ttl");
    assert!(t.elapsed() <= Duration::from_millis(600));
    // A name never cached still fails.
    assert_eq!(
        rcode(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        ResponseCode::ServFail
    );
}

#[test]
fn serve_stale_can_be_turned_off() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "[cache]\nserve_stale = false\n");
    let t0 = Instant::now();
    assert_eq!(
        addrs(&ask(dg.addr, "short.fwd.test.", RecordType::A)),
        vec!["192.0.2.2"]
    );
    up.set_mode(Mode::Dead);
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(t0.elapsed()));
    assert_eq!(
        rcode(&ask(dg.addr, "short.fwd.test.", RecordType::A)),
        ResponseCode::ServFail
    );
}

#[test]
fn truncated_udp_answer_is_retried_over_tcp() {
    let up = FakeUpstream::start(localhost(), ZONE);
    up.set_mode(Mode::TruncateUdp);
    let dg = start(&up, "");
    let r = ask(dg.addr, "www.fwd.test.", RecordType::A);
    assert_eq!(addrs(&r), vec!["192.0.2.1"]);
    assert!(up.udp_queries() >= 1);
    assert!(
        up.tcp_queries() >= 1,
        "the retry over TCP reached the upstream"
    );
}

#[test]
fn large_answer_sets_tc_over_udp_and_is_complete_over_tcp() {
    let mut zone = String::new();
    for i in 0..60 {
        zone.push_str(&format!("big.fwd.test. 300 A 192.0.2.{i}\n"));
    }
    let up = FakeUpstream::start(localhost(), zone.as_str());
    let dg = start(&up, "");
    let tcp = Ask {
        tcp: true,
        ..Ask::default()
    };
    let full = ask_with(dg.addr, "big.fwd.test.", RecordType::A, &tcp);
    assert_eq!(full.answers.len(), 60);
    let no_edns = Ask {
        edns: None,
        ..Ask::default()
    };
    let r = ask_with(dg.addr, "big.fwd.test.", RecordType::A, &no_edns);
    assert!(
        r.metadata.truncation,
        "60 A records do not fit in 512 bytes"
    );
    assert!(r.answers.len() < 60);
    // EDNS: the reply carries an OPT record advertising our payload size.
    let r = ask(dg.addr, "www.fwd.test.", RecordType::A);
    assert_eq!(r.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    let r = ask_with(dg.addr, "www.fwd.test.", RecordType::A, &no_edns);
    assert!(r.edns.is_none());
}

#[test]
fn refuses_clients_outside_allowed_networks() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    drop(dg);
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.1/32\"]\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 500\n",
        up.addr()
    ));
    let outsider = Ask {
        from: "127.0.0.2".parse().unwrap(),
        ..Ask::default()
    };
    let r = ask_with(dg.addr, "www.fwd.test.", RecordType::A, &outsider);
    assert_eq!(rcode(&r), ResponseCode::Refused);
    assert!(r.answers.is_empty());
    assert_eq!(
        up.queries(),
        0,
        "a refused client causes no upstream traffic"
    );
    let r = ask(dg.addr, "www.fwd.test.", RecordType::A);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    // Logged as what it was: refused, never "allowed".
    let refused = wait_for_log(&dg, "the refused query", |e| {
        e.iter().find(|x| x["client"] == "127.0.0.2").cloned()
    });
    assert_eq!(refused["source"], "refused", "{refused}");
    assert_eq!(refused["verdict"], "blocked", "{refused}");
    // Its group has a name, like every other entry's: never an empty one.
    assert_eq!(refused["group"], "default", "{refused}");
    let r = ask(dg.addr, "use-application-dns.net.", RecordType::A);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    let canary = wait_for_log(&dg, "the canary query", |e| {
        e.iter()
            .find(|x| x["name"] == "use-application-dns.net")
            .cloned()
    });
    assert_eq!(canary["group"], "default", "{canary}");
}

#[test]
fn conditional_forwarding_and_local_records() {
    let main = FakeUpstream::start(localhost(), ZONE);
    let router = FakeUpstream::start(localhost(), "printer.lan. 60 A 192.168.1.20\n");
    let dg = start(
        &main,
        &format!(
            "[[resolver.forward_zones]]\nzone = \"lan\"\nupstreams = [\"{}\"]\n\
             [local]\nrecords = [\"nas.lan A 192.168.1.10\", \"files.lan CNAME nas.lan\", \
             \"v6.lan AAAA fd00::10\"]\n",
            router.addr()
        ),
    );
    // Conditional zone: goes to the router, not the main upstream.
    let r = ask(dg.addr, "printer.lan.", RecordType::A);
    assert_eq!(addrs(&r), vec!["192.168.1.20"]);
    assert_eq!(router.queries_for("printer.lan."), 1);
    assert_eq!(main.queries(), 0);
    // Local records win over the conditional zone and reach no upstream.
    let r = ask(dg.addr, "nas.lan.", RecordType::A);
    assert_eq!(addrs(&r), vec!["192.168.1.10"]);
    let r = ask(dg.addr, "files.lan.", RecordType::A);
    assert_eq!(answer_types(&r), vec![RecordType::CNAME, RecordType::A]);
    let r = ask(dg.addr, "10.1.168.192.in-addr.arpa.", RecordType::PTR);
    assert!(matches!(&r.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "nas.lan."));
    let r = ask(dg.addr, "nas.lan.", RecordType::AAAA);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert!(
        r.answers.is_empty(),
        "a local name without that type is NODATA"
    );
    assert_eq!(router.queries(), 1);
    assert_eq!(main.queries(), 0);
    // Everything else goes to the main upstream.
    assert_eq!(
        addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        vec!["192.0.2.1"]
    );
    assert_eq!(main.queries(), 1);
}

#[test]
fn malformed_packets_never_stop_the_server() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    let from = localhost();
    let t = Duration::from_millis(300);
    // A valid header claiming one question, then garbage: FORMERR (or silence).
    let mut bad = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    bad.extend_from_slice(&[0xff; 30]);
    if let Some(reply) = client::send_raw_udp(dg.addr, from, &bad, t) {
        let m = hickory_proto::op::Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(m.metadata.id, 0x1234);
    }
    // No question at all: FORMERR.
    let empty = [0x43, 0x21, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    let reply =
        client::send_raw_udp(dg.addr, from, &empty, t).expect("an answer to an empty query");
    let m = hickory_proto::op::Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Shorter than a header, a response packet, random bytes: at most an error reply.
    for junk in [
        vec![1u8, 2, 3],
        vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0],
        (0..=255u8).collect(),
    ] {
        let _ = client::send_raw_udp(dg.addr, from, &junk, Duration::from_millis(100));
    }
    // Every packet length from 0 to 64 bytes of a real query, truncated.
    let good = client::query_message("www.fwd.test.", RecordType::A, &Ask::default())
        .to_vec()
        .unwrap();
    for n in 0..good.len() {
        let _ = client::send_raw_udp(dg.addr, from, &good[..n], Duration::from_millis(20));
    }
    assert_eq!(
        addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        vec!["192.0.2.1"]
    );
    assert!(!dg.log().contains("panicked"));
}

/// Runs the real `dig` against the server with `args`; its output.
fn dig(dg: &Dnsguard, args: &[&str]) -> String {
    common::client::dig(dg.addr, args)
}

/// The query log's entries, through the running server's API.
fn logged(dg: &Dnsguard) -> Vec<serde_json::Value> {
    let auth = format!("Bearer {}", common::dash::token(dg));
    let r = common::http::request(
        "GET",
        &common::dash::base(dg),
        "/api/v1/querylog?since=1h&format=json",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls the query log until `f` finds what it wants in it.
fn wait_for_log<T>(
    dg: &Dnsguard,
    what: &str,
    mut f: impl FnMut(&[serde_json::Value]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entries = logged(dg);
        if let Some(v) = f(&entries) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never logged: {entries:#?}"
        );
        std::thread::yield_now();
    }
}

/// RFC 6891 §6.1.3: an EDNS version dnsguard does not speak gets BADVERS with an
/// OPT record of version 0 and no data, over UDP (which the fast path hands to
/// hickory's parser) and TCP, and is neither resolved nor logged; version 0 keeps
/// being answered (in place on UDP).
#[test]
fn edns_version_1_gets_badvers() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    for transport in ["+notcp", "+tcp"] {
        let out = dig(
            &dg,
            &[transport, "+edns=1", "+noednsneg", "v1.fwd.test", "A"],
        );
        assert!(out.contains("status: BADVERS"), "{transport}: {out}");
        assert!(out.contains("EDNS: version: 0"), "{transport}: {out}");
        assert!(out.contains("ANSWER: 0,"), "{transport}: {out}");
        assert!(!out.contains("192.0.2.9"), "{transport}: {out}");
    }
    assert_eq!(up.queries_for("v1.fwd.test."), 0, "never resolved");
    // Version 0: answered, the second time from the cache in place.
    for _ in 0..2 {
        let out = dig(&dg, &["+edns=0", "www.fwd.test", "A"]);
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(out.contains("EDNS: version: 0"), "{out}");
        assert!(out.contains("192.0.2.1"), "{out}");
    }
    assert_eq!(up.queries_for("www.fwd.test."), 1);
    let entries = wait_for_log(&dg, "both version-0 queries", |e| {
        (e.iter().filter(|x| x["name"] == "www.fwd.test").count() == 2).then(|| e.to_vec())
    });
    assert!(
        !entries.iter().any(|x| x["name"] == "v1.fwd.test"),
        "BADVERS queries are not logged: {entries:#?}"
    );
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    assert_eq!(
        addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        vec!["192.0.2.1"]
    );
    let status = dg.stop_with(libc::SIGTERM);
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn config_check_reports_errors_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[server]\nlisten = [\"127.0.0.1:5300\", \"[::1]:5300\"]\n",
    )
    .unwrap();
    let (ok, out, _) = run_cli(&["config", "check", good.to_str().unwrap()]);
    assert!(ok);
    assert!(out.contains("ok"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = [\"127.0.0.1:5300\"]\nallow_clients = [\"nonsense\"]\n",
    )
    .unwrap();
    let (ok, _, err) = run_cli(&["config", "check", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("line 3") && err.contains("allow_clients"),
        "{err}"
    );
    let (ok, out, _) = run_cli(&["config", "default"]);
    assert!(ok && out.contains("[resolver]"));
}

#[test]
fn listens_on_ipv6_too() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"[::1]:0\"]\n[resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 500\n",
        up.addr()
    ));
    assert!(dg.addr.is_ipv6());
    let v6 = Ask {
        from: "::1".parse().unwrap(),
        ..Ask::default()
    };
    let r = ask_with(dg.addr, "www.fwd.test.", RecordType::A, &v6);
    assert_eq!(addrs(&r), vec!["192.0.2.1"]);
}

#[test]
fn failover_skips_a_dead_first_upstream() {
    let dead = FakeUpstream::start(localhost(), ZONE);
    dead.set_mode(Mode::Dead);
    let live = FakeUpstream::start(localhost(), ZONE);
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nupstreams = [\"{}\", \"{}\"]\n\
         strategy = \"failover\"\ntimeout_ms = 1000\nupstream_timeout_ms = 300\n",
        dead.addr(),
        live.addr()
    ));
    let t = Instant::now();
    let r = ask(dg.addr, "www.fwd.test.", RecordType::A);
    assert_eq!(addrs(&r), vec!["192.0.2.1"], "took {:?}", t.elapsed());
    // The dead one costs its 300 ms, then the live one answers.
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(
        t.elapsed() <= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(dead.queries(), 1, "the first upstream was tried first");
    assert_eq!(live.queries(), 1);
}

#[test]
fn race_answers_from_the_live_upstream() {
    let dead = FakeUpstream::start(localhost(), ZONE);
    dead.set_mode(Mode::Dead);
    let live = FakeUpstream::start(localhost(), ZONE);
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nupstreams = [\"{}\", \"{}\"]\n\
         strategy = \"race\"\ntimeout_ms = 1000\n",
        dead.addr(),
        live.addr()
    ));
    let t = Instant::now();
    let r = ask(dg.addr, "www.fwd.test.", RecordType::A);
    assert_eq!(addrs(&r), vec!["192.0.2.1"]);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "racing does not wait for the dead one: {:?}",
        t.elapsed()
    );
    // The dead upstream's listener counts the query on its own thread: give it a
    // moment under load, bounded.
    let deadline = Instant::now() + Duration::from_secs(2);
    while dead.queries() + live.queries() < 2 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(
        dead.queries() + live.queries(),
        2,
        "both were asked at once"
    );
}

#[test]
fn any_queries_get_a_minimal_answer() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    let r = ask(dg.addr, "www.fwd.test.", RecordType::ANY);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(answer_types(&r), vec![RecordType::HINFO], "RFC 8482");
    assert_eq!(up.queries(), 0, "ANY is not forwarded");
}

#[test]
fn a_lost_datagram_is_sent_again_well_before_the_upstream_timeout() {
    let up = FakeUpstream::start(localhost(), ZONE);
    up.set_mode(Mode::LoseEveryOther);
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nupstreams = [\"{}\"]\n\
         timeout_ms = 3000\nupstream_timeout_ms = 3000\n[cache]\nmax_entries = 0\n",
        up.addr()
    ));
    for i in 0..4 {
        let t = Instant::now();
        let r = ask(dg.addr, "www.fwd.test.", RecordType::A);
        assert_eq!(addrs(&r), vec!["192.0.2.1"], "query {i}");
        // Retransmitted after the retransmission timeout (at most 400 ms before the
        // first answer is measured), not after the 3 s upstream timeout.
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "query {i}: {:?}",
            t.elapsed()
        );
    }
    assert_eq!(up.udp_queries(), 8, "each query lost once, then answered");
}

#[test]
fn upstream_queries_use_random_ids_and_changing_source_ports() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    let n = 300;
    for i in 0..n {
        let r = ask(dg.addr, &format!("n{i}.fwd.test."), RecordType::A);
        assert_eq!(rcode(&r), ResponseCode::NXDomain);
    }
    let sources = up.udp_sources();
    assert_eq!(sources.len(), n);
    let ids: std::collections::HashSet<u16> = sources.iter().map(|s| s.1).collect();
    let ports: std::collections::HashSet<u16> = sources.iter().map(|s| s.0).collect();
    // 300 random 16-bit IDs: a handful of repeats at most; never counting up.
    assert!(ids.len() >= n - 10, "{} distinct IDs", ids.len());
    let sequential = sources
        .windows(2)
        .filter(|w| w[1].1 == w[0].1.wrapping_add(1))
        .count();
    assert!(sequential < 5, "{sequential} sequential IDs");
    // A pool of sockets, each on its own random port, chosen per query.
    assert!(ports.len() >= 16, "{} distinct source ports", ports.len());
}

/// Special-use and locally served names (RFC 6761, RFC 6303) are answered by
/// dnsguard and never reach the upstream; a forward zone takes its reverse zone back.
#[test]
fn special_use_names_are_answered_locally_and_never_forwarded() {
    let up = FakeUpstream::start(
        localhost(),
        "4.3.2.10.in-addr.arpa. 300 PTR router.lan.\nwww.fwd.test. 300 A 192.0.2.1\n",
    );
    let zones = format!(
        "[[resolver.forward_zones]]\nzone = \"10.in-addr.arpa\"\nupstreams = [\"{}\"]\n\
         [local]\nrecords = [\"nas.lan A 192.168.1.10\"]\n",
        up.addr()
    );
    let dg = start(&up, &zones);
    let tcp = Ask {
        tcp: true,
        ..Ask::default()
    };
    for opts in [Ask::default(), tcp] {
        let r = ask_with(dg.addr, "localhost.", RecordType::A, &opts);
        assert_eq!(addrs(&r), vec!["127.0.0.1"]);
        let r = ask_with(dg.addr, "agent.LOCALHOST.", RecordType::AAAA, &opts);
        assert_eq!(addrs(&r), vec!["::1"]);
        let r = ask_with(dg.addr, "x.localhost.", RecordType::MX, &opts);
        assert_eq!((rcode(&r), r.answers.len()), (ResponseCode::NoError, 0));
        for (name, qtype) in [
            ("invalid.", RecordType::A),
            ("a.b.invalid.", RecordType::AAAA),
            ("11.1.168.192.in-addr.arpa.", RecordType::PTR),
            ("9.9.20.172.in-addr.arpa.", RecordType::PTR),
            (
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
                RecordType::PTR,
            ),
        ] {
            let r = ask_with(dg.addr, name, qtype, &opts);
            assert_eq!(rcode(&r), ResponseCode::NXDomain, "{name}");
        }
        // A local record's reverse name is answered; 127.0.0.1's reverse is localhost.
        for (name, target) in [
            ("10.1.168.192.in-addr.arpa.", "nas.lan."),
            ("1.0.0.127.in-addr.arpa.", "localhost."),
        ] {
            let r = ask_with(dg.addr, name, RecordType::PTR, &opts);
            let ptr: Vec<String> = r
                .answers
                .iter()
                .filter_map(|a| match &a.data {
                    RData::PTR(p) => Some(p.0.to_ascii()),
                    _ => None,
                })
                .collect();
            assert_eq!(ptr, vec![target.to_owned()], "{name}");
        }
    }
    assert_eq!(up.queries(), 0, "a special-use name reached the upstream");
    // The forward zone for 10.in-addr.arpa sends its names to its forwarder.
    let r = ask(dg.addr, "4.3.2.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(up.queries_for("4.3.2.10.in-addr.arpa."), 1);
}

/// A TCP upstream that answers one query per connection and then closes it (as
/// upstreams do with idle connections): every query is answered, the closed
/// connection replaced by a new one, no SERVFAIL in between.
#[test]
fn a_tcp_upstream_closing_its_connection_is_reconnected() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, connections) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if s.read_exact(&mut q).is_err() {
                continue;
            }
            let query = hickory_proto::op::Message::from_vec(&q).unwrap();
            let mut reply = query.clone();
            reply.metadata.message_type = hickory_proto::op::MessageType::Response;
            reply.metadata.recursion_available = true;
            let question = query.queries[0].clone();
            reply.add_answer(hickory_proto::rr::Record::from_rdata(
                question.name().clone(),
                300,
                RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, 9)),
            ));
            let bytes = reply.to_vec().unwrap();
            let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&bytes);
            let _ = s.write_all(&out);
            let _ = tx.send(());
            // Dropped: the connection closes after one answer.
        }
    });
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [resolver]\nupstreams = [\"tcp://{addr}\"]\ntimeout_ms = 2000\n"
    ));
    for i in 0..4 {
        let name = format!("n{i}.fwd.test.");
        let r = ask(dg.addr, &name, RecordType::A);
        assert_eq!(rcode(&r), ResponseCode::NoError, "{name}: {}", dg.log());
        assert_eq!(addrs(&r), vec!["192.0.2.9"]);
    }
    assert_eq!(
        connections.try_iter().count(),
        4,
        "one connection per query"
    );
}
