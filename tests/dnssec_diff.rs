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
    Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [resolver]\nmode = \"recursive\"\nroot_hints = [\"{}\"]\n\
         trust_anchor_file = \"{}\"\ndnssec = true\n\
         recursor_allow_servers = [\"127.0.0.0/8\"]\ntimeout_ms = 4000\n",
        lab.root,
        lab.anchor.display()
    ))
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

/// Runs `cases` in order against `dg` and unbound; panics listing every difference.
fn assert_same(lab: &Lab, dg: &Dnsguard, cases: &[(&str, Case)]) {
    let diffs: Vec<String> = cases
        .iter()
        .filter_map(|(from, case)| differs(lab, dg.addr, from, case))
        .collect();
    assert!(
        diffs.is_empty(),
        "{} of {} answers differ from unbound's:\n{}\n--- dnsguard log:\n{}",
        diffs.len(),
        cases.len(),
        diffs.join("\n"),
        dg.log()
    );
}

/// Issue #18, item 1: a CD client's unvalidated (bogus) answer must never be
/// served from the cache to a client that relies on validation, nor the other
/// way round; over the UDP fast path and over TCP.
#[test]
fn a_cd_answer_never_reaches_a_validating_client_through_the_cache() {
    let lab = lab(LAB_BLOCK);
    let bogus = Case::new("tampered.alpha.test.", RecordType::A).dnssec();
    for base in [bogus, bogus.tcp()] {
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
