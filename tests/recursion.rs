//! Recursive mode and encrypted forwarding against the fake DNS hierarchy
//! (NSD root → TLD → zones, signed; unbound with DoT/DoH and a test CA).

mod common;

use std::time::{Duration, Instant};

use common::client::{Ask, addrs, answer_types, ask_with, rcode};
use common::lab::{Lab, lab};
use common::server::Dnsguard;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const LAB_BLOCK: u8 = 31;

fn recursive(lab: &Lab, dnssec: bool) -> Dnsguard {
    Dnsguard::start(&lab.recursive_config(dnssec))
}

fn forwarder(lab: &Lab, upstream: &str) -> Dnsguard {
    Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [resolver]\nupstreams = [\"{upstream}\"]\ntls_ca_file = \"{}\"\ntimeout_ms = 1500\n",
        lab.ca_pem.display()
    ))
}

fn dnssec_ok() -> Ask {
    Ask {
        edns: Some(true),
        ..Ask::default()
    }
}

fn q(dg: &Dnsguard, name: &str, t: RecordType) -> Message {
    ask_with(dg.addr, name, t, &dnssec_ok())
}

#[test]
fn recursion_follows_delegations_with_and_without_glue() {
    let lab = lab(LAB_BLOCK);
    let dg = recursive(lab, false);
    // alpha.test is delegated with glue.
    let r = q(&dg, "www.alpha.test.", RecordType::A);
    assert_eq!(rcode(&r), ResponseCode::NoError, "{}", dg.log());
    assert_eq!(addrs(&r), vec!["192.0.2.10"]);
    assert!(!r.metadata.authentic_data, "no validation, no AD");
    // beta.test's name server is out of bailiwick (no glue).
    let r = q(&dg, "www.beta.test.", RecordType::A);
    assert_eq!(addrs(&r), vec!["192.0.2.20"]);
    // A CNAME chain across three zones, served in order from the query name.
    let r = q(&dg, "chain.alpha.test.", RecordType::A);
    assert_eq!(
        answer_types(&r),
        vec![RecordType::CNAME, RecordType::CNAME, RecordType::A]
    );
    assert_eq!(r.answers[0].name.to_ascii(), "chain.alpha.test.");
    assert_eq!(r.answers[1].name.to_ascii(), "www.beta.test.");
    assert_eq!(addrs(&r), vec!["192.0.2.20"]);
    // Negative answers.
    let r = q(&dg, "nope.alpha.test.", RecordType::A);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    assert!(
        r.authorities
            .iter()
            .any(|a| a.record_type() == RecordType::SOA)
    );
    let r = q(&dg, "www.alpha.test.", RecordType::AAAA);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert!(r.answers.is_empty());
}

#[test]
fn recursion_retries_truncated_answers_over_tcp() {
    let lab = lab(LAB_BLOCK);
    let dg = recursive(lab, true);
    let tcp = Ask {
        tcp: true,
        edns: Some(false),
        ..Ask::default()
    };
    let r = ask_with(dg.addr, "big.alpha.test.", RecordType::TXT, &tcp);
    assert_eq!(rcode(&r), ResponseCode::NoError, "{}", dg.log());
    let txt = r
        .answers
        .iter()
        .filter(|a| a.record_type() == RecordType::TXT)
        .count();
    assert_eq!(txt, 20, "all 20 TXT records of ~4 KB arrive");
}

#[test]
fn dnssec_validation_sets_ad_and_rejects_bogus_data() {
    let lab = lab(LAB_BLOCK);
    let dg = recursive(lab, true);
    let r = q(&dg, "www.alpha.test.", RecordType::A);
    assert_eq!(addrs(&r), vec!["192.0.2.10"], "{}", dg.log());
    assert!(r.metadata.authentic_data, "signed zone: AD");
    let r = q(&dg, "chain.alpha.test.", RecordType::A);
    assert!(r.metadata.authentic_data);
    assert_eq!(answer_types(&r)[0], RecordType::CNAME);
    // An unsigned delegation (no DS) answers without AD.
    let r = q(&dg, "www.insecure.test.", RecordType::A);
    assert_eq!(addrs(&r), vec!["192.0.2.30"]);
    assert!(!r.metadata.authentic_data);
    // Data changed after signing: SERVFAIL, fast.
    let t = Instant::now();
    let r = q(&dg, "tampered.alpha.test.", RecordType::A);
    assert_eq!(rcode(&r), ResponseCode::ServFail);
    assert!(r.answers.is_empty());
    assert!(t.elapsed() < Duration::from_secs(4));
    // It says why (RFC 8914 EDE 6, DNSSEC Bogus).
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    let ede = r
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Unknown(15)));
    assert!(
        matches!(ede, Some(EdnsOption::Unknown(15, d)) if d[..2] == [0, 6]),
        "EDE 6: {ede:?}"
    );
    // A client that validates itself (CD bit) gets the data.
    let cd = Ask {
        edns: Some(true),
        checking_disabled: true,
        ..Ask::default()
    };
    let r = ask_with(dg.addr, "tampered.alpha.test.", RecordType::A, &cd);
    assert_eq!(addrs(&r), vec!["192.0.2.99"]);
    assert!(!r.metadata.authentic_data);
    // Secure negative answer.
    let r = q(&dg, "nope.alpha.test.", RecordType::A);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
}

#[test]
fn forwards_over_dot_and_doh_with_the_test_ca() {
    let lab = lab(LAB_BLOCK);
    for upstream in [
        format!("tls://{}#dns.test", lab.resolver),
        format!("https://{}/dns-query#dns.test", lab.resolver),
    ] {
        let dg = forwarder(lab, &upstream);
        let r = q(&dg, "www.alpha.test.", RecordType::A);
        assert_eq!(addrs(&r), vec!["192.0.2.10"], "{upstream}: {}", dg.log());
        // unbound validated it; the AD bit is passed through to a DO client.
        assert!(r.metadata.authentic_data, "{upstream}");
        let r = q(&dg, "chain.alpha.test.", RecordType::A);
        assert_eq!(answer_types(&r).last(), Some(&RecordType::A), "{upstream}");
    }
}

#[test]
fn wrong_certificate_fails_closed() {
    let lab = lab(LAB_BLOCK);
    for upstream in [
        format!("tls://{}#dns.test", lab.wrong_ca_resolver),
        format!("https://{}/dns-query#dns.test", lab.wrong_ca_resolver),
        format!("tls://{}#not-the-name.test", lab.resolver),
    ] {
        let dg = forwarder(lab, &upstream);
        let t = Instant::now();
        let r = q(&dg, "www.alpha.test.", RecordType::A);
        assert_eq!(rcode(&r), ResponseCode::ServFail, "{upstream}");
        assert!(r.answers.is_empty());
        assert!(
            t.elapsed() <= Duration::from_millis(1800),
            "{upstream}: {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn forwards_over_plain_dns_to_a_validating_upstream() {
    let lab = lab(LAB_BLOCK);
    let dg = forwarder(lab, &lab.resolver.to_string());
    let r = q(&dg, "www.beta.test.", RecordType::A);
    assert_eq!(addrs(&r), vec!["192.0.2.20"]);
    let r = q(&dg, "tampered.alpha.test.", RecordType::A);
    assert_eq!(
        rcode(&r),
        ResponseCode::ServFail,
        "the upstream's SERVFAIL passes through"
    );
}
