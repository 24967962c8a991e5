//! Everything that produces an answer for a name dnsguard does not block:
//! local records, the cache, and the upstream resolvers (forwarder, recursor,
//! conditional forwarding), all behind [`Answer`].
//!
//! hickory's resolver types stay inside this module and `dns/`, so a new hickory
//! release touches two modules.

pub mod body;
pub mod cache;
mod config;
pub mod forward;
pub mod local;
pub mod plain;
pub mod recursive;
pub mod router;
pub mod spec;
pub mod special;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Record, RecordType};

pub use config::{ForwardZone, Mode, ResolverConfig, Strategy};
pub use spec::UpstreamSpec;

/// The substance of a DNS response, independent of the request it answers.
#[derive(Debug, Clone)]
pub struct Answer {
    /// NOERROR, NXDOMAIN, SERVFAIL, …
    pub rcode: ResponseCode,
    /// Answer section (CNAME chain first, in order from the query name).
    pub answers: Vec<Record>,
    /// Authority section (the SOA of a negative answer).
    pub authorities: Vec<Record>,
    /// Every record was DNSSEC-validated (the AD bit).
    pub authentic: bool,
}

impl Answer {
    /// An answer with this code and no records.
    pub fn empty(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            answers: Vec::new(),
            authorities: Vec::new(),
            authentic: false,
        }
    }

    /// The TTL a cache may keep this answer for: the smallest record TTL, or for a
    /// negative answer the SOA's minimum (RFC 2308).
    pub fn ttl(&self) -> Option<u32> {
        if !self.answers.is_empty() {
            return self.answers.iter().map(|r| r.ttl).min();
        }
        self.authorities.iter().find_map(|r| match &r.data {
            hickory_proto::rr::RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
    }

    /// Puts a CNAME chain in order from `qname` (a DNAME before the CNAME made
    /// from it): validating resolvers return it in any order and glibc needs it in
    /// order.
    pub fn sort_chain(&mut self, qname: &hickory_proto::rr::Name) {
        if self.answers.len() < 2 {
            return;
        }
        let mut rest = std::mem::take(&mut self.answers);
        let mut next = qname.clone();
        loop {
            let before = self.answers.len();
            // A DNAME above the name comes before the CNAME synthesized from it.
            let mut i = 0;
            while i < rest.len() {
                let r = &rest[i];
                if r.record_type() == RecordType::DNAME && r.name != next && r.name.zone_of(&next) {
                    self.answers.push(rest.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            let mut i = 0;
            let mut cname_target = None;
            while i < rest.len() {
                if rest[i].name == next {
                    let r = rest.swap_remove(i);
                    if let hickory_proto::rr::RData::CNAME(c) = &r.data {
                        cname_target = Some(c.0.clone());
                    }
                    self.answers.push(r);
                } else {
                    i += 1;
                }
            }
            match cname_target {
                Some(t) if self.answers.len() > before => next = t,
                _ => break,
            }
        }
        self.answers.extend(rest);
    }

    /// True when the CNAME chain from `qname` comes back to a name it already
    /// passed (a loop: no answer can ever come out of it).
    pub fn has_cname_loop(&self, qname: &hickory_proto::rr::Name) -> bool {
        let mut seen = vec![qname];
        let mut next = qname;
        // Each step follows one CNAME record; a chain has at most as many steps.
        for _ in 0..self.answers.len() {
            let target = self.answers.iter().find_map(|r| match &r.data {
                hickory_proto::rr::RData::CNAME(c) if r.name == *next => Some(&c.0),
                _ => None,
            });
            let Some(target) = target else { return false };
            if seen.contains(&target) {
                return true;
            }
            seen.push(target);
            next = target;
        }
        false
    }

    /// Names in the answer's CNAME chain (targets of CNAME records), for CNAME-cloaking checks.
    pub fn cname_targets(&self) -> impl Iterator<Item = &hickory_proto::rr::Name> {
        self.answers.iter().filter_map(|r| match &r.data {
            hickory_proto::rr::RData::CNAME(c) => Some(&c.0),
            _ => None,
        })
    }

    /// The A and AAAA addresses in the answer section, with their TTLs.
    pub fn addresses(&self) -> impl Iterator<Item = (std::net::IpAddr, u32)> + '_ {
        self.answers.iter().filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some((std::net::IpAddr::V4(a.0), r.ttl)),
            hickory_proto::rr::RData::AAAA(a) => Some((std::net::IpAddr::V6(a.0), r.ttl)),
            _ => None,
        })
    }

    /// Hands the tunnel detector what the answer section could carry for a
    /// command channel: TXT strings, NULL and unknown-type rdata, CNAME, MX
    /// and SRV targets (at most 16 records). Called only for watched domains.
    pub fn carried(&self, mut f: impl FnMut(crate::detect::AnswerData<'_>)) {
        use crate::detect::AnswerData;
        use hickory_proto::rr::RData;
        for r in self.answers.iter().take(16) {
            let target = match &r.data {
                RData::TXT(t) => {
                    t.txt_data.iter().for_each(|s| f(AnswerData::Text(s)));
                    continue;
                }
                RData::NULL(n) => {
                    f(AnswerData::Text(&n.anything));
                    continue;
                }
                RData::Unknown { rdata, .. } => {
                    f(AnswerData::Text(&rdata.anything));
                    continue;
                }
                RData::CNAME(c) => &c.0,
                RData::MX(mx) => &mx.exchange,
                RData::SRV(srv) => &srv.target,
                _ => continue,
            };
            f(AnswerData::Target(&target.to_ascii()));
        }
    }

    /// The answer for the query log, at most four records: addresses, CNAME
    /// and PTR targets, TXT strings (see [`push_txt`]); other records by type.
    /// Made once per upstream answer (the cache keeps it), not per query.
    pub fn summary(&self) -> String {
        use hickory_proto::rr::RData;
        use std::fmt::Write as _;
        let mut out = String::new();
        for r in self.answers.iter().take(4) {
            if !out.is_empty() {
                out.push(',');
            }
            let _ = match &r.data {
                RData::A(a) => write!(out, "{}", a.0),
                RData::AAAA(a) => write!(out, "{}", a.0),
                RData::CNAME(c) => write!(out, "{}", c.0),
                RData::PTR(p) => write!(out, "{}", p.0),
                RData::TXT(t) => {
                    push_txt(&mut out, &t.txt_data);
                    Ok(())
                }
                other => write!(out, "{}", other.record_type()),
            };
        }
        if self.answers.len() > 4 {
            out.push_str(",…");
        }
        out
    }

    /// Removes the DNSSEC records a client without DO must not get (RFC 4035
    /// §3.2.1): RRSIG, NSEC and NSEC3, unless the question asked for that type.
    pub fn strip_dnssec(&mut self, qtype: RecordType) {
        let keep = |r: &Record| {
            let t = r.record_type();
            t == qtype || !matches!(t, RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3)
        };
        self.answers.retain(keep);
        self.authorities.retain(keep);
    }

    /// True when the answer holds records of `qtype` (not just a CNAME chain).
    pub fn has_type(&self, qtype: RecordType) -> bool {
        self.answers.iter().any(|r| r.record_type() == qtype)
    }
}

/// Bytes of one TXT string the query log keeps.
const TXT_SHOWN_BYTES: usize = 64;
/// Strings of one TXT record the query log keeps.
const TXT_SHOWN_STRINGS: usize = 4;

/// Appends a TXT record's strings as zone files write them: each in double
/// quotes, separated by spaces, `"` and `\` escaped with a backslash, bytes
/// outside printable ASCII as `\DDD` (RFC 1035 §5.1). So a string shows
/// nothing a terminal or page could take for anything but text. Each string is
/// cut after [`TXT_SHOWN_BYTES`] bytes and the record after
/// [`TXT_SHOWN_STRINGS`] strings, marked with `…`.
fn push_txt(out: &mut String, strings: &[Box<[u8]>]) {
    for (i, s) in strings.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if i == TXT_SHOWN_STRINGS {
            out.push('…');
            break;
        }
        out.push('"');
        for &b in s.iter().take(TXT_SHOWN_BYTES) {
            match b {
                b'"' | b'\\' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                0x20..=0x7e => out.push(char::from(b)),
                _ => {
                    // Always three digits, so a digit after it stays text.
                    out.push('\\');
                    for d in [b / 100, b / 10 % 10, b % 10] {
                        out.push(char::from(b'0' + d));
                    }
                }
            }
        }
        if s.len() > TXT_SHOWN_BYTES {
            out.push('…');
        }
        out.push('"');
    }
}

/// The client's DNSSEC bits, passed to a forwarder's upstream as they came: DO
/// (send signatures) and CD (do not validate, the client does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnssecBits {
    /// The EDNS DO bit.
    pub dnssec_ok: bool,
    /// The CD bit.
    pub checking_disabled: bool,
}

/// Why no answer could be had from upstream.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Nothing answered within the configured time (the resolver's, or one
    /// upstream's budget).
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// Every upstream failed (unreachable, refused, garbage, bad certificate …).
    #[error("upstream failed: {0}")]
    Upstream(String),
    /// DNSSEC validation failed.
    #[error("DNSSEC validation failed (bogus)")]
    Bogus,
}
