//! dnsguard as a validating resolver, compared with unbound on the same signed
//! hierarchy (the lab's `127.B.0.5`, itself a validating recursor over the lab's
//! root). Each case asks both the same question with the same DO/CD bits and
//! compares what a client can see: the response code, the AD bit, the answer's
//! data RRsets (TTLs and order aside) and whether RRSIGs come with the answer and
//! authority sections.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::client::{Ask, ask_with};
use common::lab::{Lab, lab};
use common::server::Dnsguard;
use hickory_proto::op::Message;
use hickory_proto::rr::{Record, RecordType};

const LAB_BLOCK: u8 = 18;

/// dnsguard in recursive mode over the lab's root, validating with its anchor.
fn recursive(lab: &Lab) -> Dnsguard {
    recursive_with(lab, true)
}

/// dnsguard in recursive mode over the lab's root, validating or not.
fn recursive_with(lab: &Lab, dnssec: bool) -> Dnsguard {
    Dnsguard::start(&lab.recursive_config(dnssec))
}

/// dnsguard forwarding to the lab's unbound over `upstream`.
fn forwarder(lab: &Lab, upstream: &str) -> Dnsguard {
    Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [resolver]\nupstreams = [\"{upstream}\"]\ntls_ca_file = \"{}\"\ntimeout_ms = 3000\n",
        lab.ca_pem.display()
    ))
}

/// One question and how it is asked.
#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    qtype: RecordType,
    /// The DO bit (EDNS is always sent, as dig does).
    dnssec_ok: bool,
    /// The CD bit.
    cd: bool,
    tcp: bool,
}

impl Case {
    const fn new(name: &'static str, qtype: RecordType) -> Self {
        Case {
            name,
            qtype,
            dnssec_ok: false,
            cd: false,
            tcp: false,
        }
    }
    const fn dnssec(mut self) -> Self {
        self.dnssec_ok = true;
        self
    }
    const fn cd(mut self) -> Self {
        self.cd = true;
        self
    }
    const fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }
    fn ask(&self, from: &str) -> Ask {
        Ask {
            tcp: self.tcp,
            from: from.parse().unwrap(),
            edns: Some(self.dnssec_ok),
            checking_disabled: self.cd,
            ..Ask::default()
        }
    }
}

/// What a client can see of a response, in a form two resolvers can be compared by.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    rcode: String,
    ad: bool,
    /// Data records of the answer section (no RRSIG), as `name type rdata`.
    answer: BTreeSet<String>,
    answer_rrsig: bool,
    /// RRSIGs in the authority section. Compared for negative answers and for
    /// clients without DO only: a positive answer may carry the zone's NS RRset
    /// (signed) or not, as the resolver likes.
    authority_rrsig: bool,
    /// NSEC/NSEC3 in the authority section (compared as RRSIGs there are).
    authority_nsec: bool,
}

fn text(r: &Record) -> String {
    format!("{} {} {}", r.name.to_lowercase(), r.record_type(), r.data)
}

fn seen(m: &Message, dnssec_ok: bool) -> Seen {
    let is = |r: &Record, t: RecordType| r.record_type() == t;
    let mut authority = m
        .authorities
        .iter()
        .filter(|_| !dnssec_ok || !m.answers.iter().any(|r| !is(r, RecordType::RRSIG)));
    Seen {
        rcode: m.metadata.response_code.to_string(),
        ad: m.metadata.authentic_data,
        answer: m
            .answers
            .iter()
            .filter(|r| !is(r, RecordType::RRSIG))
            .map(text)
            .collect(),
        answer_rrsig: m.answers.iter().any(|r| is(r, RecordType::RRSIG)),
        authority_rrsig: authority.clone().any(|r| is(r, RecordType::RRSIG)),
        authority_nsec: authority.any(|r| is(r, RecordType::NSEC) || is(r, RecordType::NSEC3)),
    }
}

/// Asks `server` (from `from`) and unbound the question of `case`; the difference,
/// if any, as text.
fn differs(lab: &Lab, server: SocketAddr, from: &str, case: &Case) -> Option<String> {
    let ours = ask_with(server, case.name, case.qtype, &case.ask(from));
    let unbound = SocketAddr::new(lab.resolver, 53);
    let theirs = ask_with(unbound, case.name, case.qtype, &case.ask("127.0.0.1"));
    let (a, b) = (seen(&ours, case.dnssec_ok), seen(&theirs, case.dnssec_ok));
    (a != b).then(|| {
        format!(
            "{case:?} from {from}:\n  dnsguard: {a:?}\n  unbound:  {b:?}\n\
             --- dnsguard's response:\n{ours}\n--- unbound's response:\n{theirs}"
        )
    })
}

/// Runs `cases` in order against `dg` and unbound; every difference, as text.
fn diffs(lab: &Lab, dg: &Dnsguard, cases: &[(&str, Case)]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|(from, case)| differs(lab, dg.addr, from, case))
        .collect()
}

/// Panics listing `diffs` (out of `asked` answers) if there are any.
fn assert_none(diffs: &[String], asked: usize, log: &str) {
    assert!(
        diffs.is_empty(),
        "{} of {asked} answers differ from unbound's:\n{}\n--- dnsguard log:\n{log}",
        diffs.len(),
        diffs.join("\n"),
    );
}

/// Runs `cases` in order against `dg` and unbound; panics listing every difference.
fn assert_same(lab: &Lab, dg: &Dnsguard, cases: &[(&str, Case)]) {
    assert_none(&diffs(lab, dg, cases), cases.len(), &dg.log());
}

/// Issue #18, item 1: a CD client's unvalidated (bogus) answer must never be
/// served from the cache to a client that relies on validation, nor the other
/// way round; over the UDP fast path and over TCP, with and without DO.
#[test]
fn a_cd_answer_never_reaches_a_validating_client_through_the_cache() {
    let lab = lab(LAB_BLOCK);
    let bogus = Case::new("tampered.alpha.test.", RecordType::A);
    for base in [bogus, bogus.dnssec(), bogus.tcp(), bogus.dnssec().tcp()] {
        for cd_first in [true, false] {
            // A cold cache for every order.
            let dg = recursive(lab);
            let (first, second) = if cd_first {
                (("127.0.0.1", base.cd()), ("127.0.0.2", base))
            } else {
                (("127.0.0.1", base), ("127.0.0.2", base.cd()))
            };
            // Each asked twice: a miss, then what the cache gives.
            assert_same(lab, &dg, &[first, second, first, second]);
        }
    }
}

/// The lab's unbound as every kind of upstream dnsguard forwards to.
fn upstreams(lab: &Lab) -> [String; 4] {
    let r = lab.resolver;
    [
        r.to_string(),
        format!("tcp://{r}"),
        format!("tls://{r}#dns.test"),
        format!("https://{r}/dns-query#dns.test"),
    ]
}

/// Questions whose answers a forwarder must pass on as its upstream gave them.
fn forwarded_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for base in [
        Case::new("www.alpha.test.", RecordType::A),
        Case::new("chain.alpha.test.", RecordType::A),
        Case::new("www.insecure.test.", RecordType::A),
        // Negative answers: NXDOMAIN and NODATA, signed (issue #18, item 8).
        Case::new("nope.alpha.test.", RecordType::A),
        Case::new("www.alpha.test.", RecordType::AAAA),
        // Bogus: SERVFAIL, and the data for a CD client (issue #18, item 9).
        Case::new("tampered.alpha.test.", RecordType::A),
        Case::new("tampered.alpha.test.", RecordType::A).cd(),
    ] {
        cases.push(base.dnssec());
        cases.push(base);
    }
    cases
}

/// Issue #18, items 8 and 9: over plain DNS, TCP, DoT and DoH a forwarder passes
/// the client's DO and CD bits upstream and keeps the upstream's rcode, AD bit and
/// records, negative answers included; the second round comes from the cache.
#[test]
fn forwarding_passes_dnssec_bits_and_keeps_the_upstreams_answer() {
    let lab = lab(LAB_BLOCK);
    let cases: Vec<(&str, Case)> = forwarded_cases()
        .into_iter()
        .map(|c| ("127.0.0.1", c))
        .collect();
    let twice: Vec<_> = cases.iter().chain(cases.iter()).copied().collect();
    let (mut all, mut logs) = (Vec::new(), String::new());
    for upstream in upstreams(lab) {
        let dg = forwarder(lab, &upstream);
        for d in diffs(lab, &dg, &twice) {
            all.push(format!("via {upstream}: {d}"));
        }
        logs.push_str(&dg.log());
    }
    assert_none(&all, twice.len() * 4, &logs);
}

/// Polls `dg`'s log until `pred` holds (bounded).
fn wait_for_log(dg: &Dnsguard, pred: impl Fn(&str) -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if pred(&dg.log()) {
            return true;
        }
        std::thread::park_timeout(std::time::Duration::from_millis(20));
    }
    pred(&dg.log())
}

/// Issue #18, item 10: an encrypted upstream whose certificate fails says why in
/// the log (one warning per upstream, not one per query), and still fails closed.
#[test]
fn a_failing_upstream_certificate_is_logged_with_its_reason_once() {
    let lab = lab(LAB_BLOCK);
    for (upstream, reason) in [
        (
            format!("tls://{}#dns.test", lab.wrong_ca_resolver),
            "UnknownIssuer",
        ),
        (
            format!("https://{}/dns-query#dns.test", lab.wrong_ca_resolver),
            "UnknownIssuer",
        ),
        (
            format!("tls://{}#not-the-name.test", lab.resolver),
            "certificate not valid for name",
        ),
    ] {
        let dg = forwarder(lab, &upstream);
        let case = Case::new("www.alpha.test.", RecordType::A);
        for _ in 0..3 {
            let r = ask_with(dg.addr, case.name, case.qtype, &case.ask("127.0.0.1"));
            assert_eq!(r.metadata.response_code.to_string(), "Server Failure");
        }
        let warned = |log: &str| {
            log.lines()
                .filter(|l| l.contains("WARN") && l.contains(reason))
                .count()
        };
        assert!(
            wait_for_log(&dg, |log| warned(log) >= 1),
            "{upstream}: no warning naming {reason}:\n{}",
            dg.log()
        );
        assert_eq!(
            warned(&dg.log()),
            1,
            "{upstream}: one line, not one per query:\n{}",
            dg.log()
        );
    }
}

/// Questions for a validating recursor, each asked with and without DO.
fn recursive_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for base in [
        Case::new("www.alpha.test.", RecordType::A),
        Case::new("chain.alpha.test.", RecordType::A),
        Case::new("www.beta.test.", RecordType::A),
        Case::new("www.insecure.test.", RecordType::A),
        Case::new("nope.alpha.test.", RecordType::A),
        Case::new("www.alpha.test.", RecordType::AAAA),
        Case::new("tampered.alpha.test.", RecordType::A),
        Case::new("tampered.alpha.test.", RecordType::A).cd(),
    ] {
        cases.push(base.dnssec());
        cases.push(base);
    }
    cases
}

/// `base` asked in every way: with and without DO, with and without CD.
fn every_way(base: Case) -> [Case; 4] {
    [base, base.dnssec(), base.cd(), base.dnssec().cd()]
}

/// Issue #18, item 7: a CNAME loop is SERVFAIL (hickory's recursor answered
/// NOERROR with the loop's records, and AD=1 in a signed zone), with or without
/// DO and CD, fresh and again.
#[test]
fn a_cname_loop_is_servfail_as_from_unbound() {
    let lab = lab(LAB_BLOCK);
    let dg = recursive(lab);
    let cases: Vec<(&str, Case)> = every_way(Case::new("loop1.alpha.test.", RecordType::A))
        .into_iter()
        .map(|c| ("127.0.0.1", c))
        .collect();
    let twice: Vec<_> = cases.iter().chain(cases.iter()).copied().collect();
    assert_same(lab, &dg, &twice);
}

/// Issue #18, item 2: a CNAME chain ending in NODATA or NXDOMAIN keeps its
/// CNAMEs and validates (AD), with or without DO and CD; hickory's recursor
/// dropped the chain and called the target's denial proof bogus.
#[test]
fn a_cname_chain_ending_in_no_data_keeps_its_cnames() {
    let lab = lab(LAB_BLOCK);
    let dg = recursive(lab);
    let cases: Vec<(&str, Case)> = [
        Case::new("chain.alpha.test.", RecordType::AAAA),
        Case::new("dangling.alpha.test.", RecordType::A),
    ]
    .into_iter()
    .flat_map(every_way)
    .map(|c| ("127.0.0.1", c))
    .collect();
    let twice: Vec<_> = cases.iter().chain(cases.iter()).copied().collect();
    assert_same(lab, &dg, &twice);
}

/// Issue #18, item 2 with DNSSEC off: the chain is kept too (the recursor
/// dropped it there as well).
#[test]
fn a_cname_chain_ending_in_no_data_keeps_its_cnames_without_dnssec() {
    let lab = lab(LAB_BLOCK);
    let dg = recursive_with(lab, false);
    for (name, qtype, rcode, cnames) in [
        ("chain.alpha.test.", RecordType::AAAA, "No Error", 2),
        (
            "dangling.alpha.test.",
            RecordType::A,
            "Non-Existent Domain",
            1,
        ),
    ] {
        let r = ask_with(
            dg.addr,
            name,
            qtype,
            &Case::new(name, qtype).ask("127.0.0.1"),
        );
        assert_eq!(r.metadata.response_code.to_string(), rcode, "{name}: {r}");
        let types: Vec<_> = r.answers.iter().map(|a| a.record_type()).collect();
        assert_eq!(types, vec![RecordType::CNAME; cnames], "{name}: {r}");
        assert_eq!(
            r.answers[0].name.to_ascii(),
            name,
            "chain in order from the question"
        );
    }
}

/// Issue #18, item 3: a one-label wildcard answer in an NSEC zone
/// (`x.wild.alpha.test` from `*.wild.alpha.test`), which hickory's validator
/// rejects, answers as from unbound with and without DO and CD: data and AD for
/// validating clients (it was SERVFAIL), the zone's response for CD clients;
/// and its NODATA for a type the wildcard does not have.
#[test]
fn a_wildcard_answer_is_secure_as_from_unbound() {
    let lab = lab(LAB_BLOCK);
    let dg = recursive(lab);
    let cases: Vec<(&str, Case)> = [
        Case::new("x.wild.alpha.test.", RecordType::A),
        // NODATA from the wildcard: it has no AAAA.
        Case::new("y.wild.alpha.test.", RecordType::AAAA),
    ]
    .into_iter()
    .flat_map(every_way)
    .map(|c| ("127.0.0.1", c))
    .collect();
    let twice: Vec<_> = cases.iter().chain(cases.iter()).copied().collect();
    assert_same(lab, &dg, &twice);
}

/// Issue #18, item 11: a zone whose signatures expired is SERVFAIL for clients
/// that rely on validation, and a CD client gets its data and its NXDOMAIN, as
/// from unbound.
#[test]
fn an_expired_zone_is_servfail_unless_the_client_set_cd() {
    let lab = lab(LAB_BLOCK);
    let dg = recursive(lab);
    let cases: Vec<(&str, Case)> = [
        Case::new("www.expired.test.", RecordType::A),
        Case::new("nope.expired.test.", RecordType::A),
    ]
    .into_iter()
    .flat_map(every_way)
    .map(|c| ("127.0.0.1", c))
    .collect();
    let twice: Vec<_> = cases.iter().chain(cases.iter()).copied().collect();
    assert_same(lab, &dg, &twice);
}

/// Issue #18, item 4: a name under a DNAME answers as from unbound (it was
/// SERVFAIL: hickory's validator calls the unsigned synthesized CNAME bogus), with
/// AD, and the DNAME comes first, before the CNAME made from it.
#[test]
fn a_dname_answers_as_from_unbound_with_the_dname_first() {
    let lab = lab(LAB_BLOCK);
    let dg = recursive(lab);
    let cases: Vec<(&str, Case)> = every_way(Case::new("x.dname.alpha.test.", RecordType::A))
        .into_iter()
        .map(|c| ("127.0.0.1", c))
        .collect();
    let twice: Vec<_> = cases.iter().chain(cases.iter()).copied().collect();
    assert_same(lab, &dg, &twice);
    let unbound = SocketAddr::new(lab.resolver, 53);
    for (from, case) in &cases {
        let order = |m: &Message| -> Vec<RecordType> {
            m.answers
                .iter()
                .map(|r| r.record_type())
                .filter(|t| *t != RecordType::RRSIG)
                .collect()
        };
        let ours = ask_with(dg.addr, case.name, case.qtype, &case.ask(from));
        let theirs = ask_with(unbound, case.name, case.qtype, &case.ask(from));
        assert_eq!(order(&ours), order(&theirs), "{case:?}:\n{ours}");
        assert_eq!(order(&ours)[0], RecordType::DNAME, "{case:?}");
    }
}

/// Issue #18, item 5 and the cases that already agreed: recursive mode answers as
/// unbound does (rcode, AD, data, RRSIGs only for DO clients), on a fresh cache
/// and from the cache.
#[test]
fn recursion_answers_as_unbound_does() {
    let lab = lab(LAB_BLOCK);
    let dg = recursive(lab);
    let cases: Vec<(&str, Case)> = recursive_cases()
        .into_iter()
        .map(|c| ("127.0.0.1", c))
        .collect();
    let twice: Vec<_> = cases.iter().chain(cases.iter()).copied().collect();
    assert_same(lab, &dg, &twice);
}
