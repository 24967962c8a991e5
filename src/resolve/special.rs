//! Special-use and locally served names that must never leave the box.
//!
//! - `localhost` and every name below it is the loopback address (RFC 6761 §6.3);
//! - `invalid` and `onion` do not exist on any network (RFC 6761 §6.4, RFC 7686),
//!   and `home.arpa` is the home network's own (RFC 8375); `test` is left to the
//!   resolver, since test labs serve it (unbound users turn its default off too);
//! - reverse look-ups of private, loopback, link-local, shared (CGN) and
//!   documentation ranges (RFC 6303, RFC 7793) are NXDOMAIN, as dnsmasq's
//!   `bogus-priv` and unbound's default local zones answer them: sent upstream,
//!   they tell the world the LAN's layout.
//!
//! `[local]` records (and the reverse names of their addresses) win over these, and
//! a conditional forward zone that covers a name sends it to its forwarder instead:
//! that is how a router's own reverse zone stays reachable.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::Answer;

/// Names answered NXDOMAIN, with everything below them.
const NONEXISTENT: &[&str] = &["invalid", "onion", "home.arpa"];

/// RFC 6303 / RFC 7793 reverse zones, apart from the generated 172.16–31 and
/// 100.64–127 ones.
const PRIVATE_REVERSE: &[&str] = &[
    "0.in-addr.arpa",
    "10.in-addr.arpa",
    "127.in-addr.arpa",
    "254.169.in-addr.arpa",
    "168.192.in-addr.arpa",
    "2.0.192.in-addr.arpa",
    "100.51.198.in-addr.arpa",
    "113.0.203.in-addr.arpa",
    "255.255.255.255.in-addr.arpa",
    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
    "d.f.ip6.arpa",
    "8.e.f.ip6.arpa",
    "9.e.f.ip6.arpa",
    "a.e.f.ip6.arpa",
    "b.e.f.ip6.arpa",
    "8.b.d.0.1.0.0.2.ip6.arpa",
];

/// The reverse names of 127.0.0.1 and ::1, answered `localhost`.
const LOOPBACK_PTR: &[&str] = &[
    "1.0.0.127.in-addr.arpa",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
];

/// Which special-use names dnsguard answers itself, given the zones that are
/// forwarded elsewhere.
#[derive(Debug, Default)]
pub struct SpecialUse {
    /// Names under these go to their conditional forwarder instead.
    forwarded: Vec<String>,
}

impl SpecialUse {
    /// `forwarded`: the conditional forward zones (any spelling; normalised here).
    pub fn new<I, S>(forwarded: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let forwarded = forwarded
            .into_iter()
            .filter_map(|z| crate::name::parse_name(z.as_ref()).ok())
            .map(|n| crate::name::name_text(&n))
            .collect();
        Self { forwarded }
    }

    /// The answer for a special-use `name` (normalised text), `None` for any other
    /// name. Costs a few suffix comparisons for ordinary names; allocates only when
    /// it answers.
    pub fn answer(&self, name: &str, qtype: RecordType, ttl: u32) -> Option<Answer> {
        // Every special zone ends in one of these labels: one compare of the last
        // label for the names of ordinary traffic (this runs on every cache hit).
        // A byte scan from the end (`rsplit` cost ~250 instructions a hit).
        let tld = match name.bytes().rposition(|b| b == b'.') {
            Some(dot) => &name[dot + 1..],
            None => name,
        };
        if !matches!(tld, "localhost" | "invalid" | "onion" | "arpa") {
            return None;
        }
        let under = |zone: &str| crate::name::is_under(name, zone);
        let answer = if under("localhost") {
            localhost(name, qtype, ttl)
        } else if qtype == RecordType::PTR && LOOPBACK_PTR.contains(&name) {
            record(
                name,
                ttl,
                RData::PTR(PTR(Name::from_ascii("localhost.").ok()?)),
            )
        } else if NONEXISTENT.iter().any(|z| under(z)) || is_private_reverse(name) {
            Answer::empty(ResponseCode::NXDomain)
        } else {
            return None;
        };
        if self.forwarded.iter().any(|z| under(z)) {
            return None;
        }
        Some(answer)
    }
}

/// True for a name in one of the RFC 6303 / RFC 7793 reverse zones.
fn is_private_reverse(name: &str) -> bool {
    let Some(v4) = name.strip_suffix(".in-addr.arpa") else {
        return name.ends_with(".ip6.arpa")
            && PRIVATE_REVERSE
                .iter()
                .any(|z| crate::name::is_under(name, z));
    };
    if PRIVATE_REVERSE
        .iter()
        .any(|z| crate::name::is_under(name, z))
    {
        return true;
    }
    // 172.16.0.0/12 and 100.64.0.0/10: the two most significant octets are the last
    // two labels.
    let mut octets = v4.rsplit('.');
    let (Some(first), Some(second)) = (octets.next(), octets.next()) else {
        return false;
    };
    let second: u8 = match second.parse() {
        Ok(n) => n,
        Err(_) => return false,
    };
    matches!((first, second), ("172", 16..=31) | ("100", 64..=127))
}

/// `localhost` and below: the loopback address for A and AAAA, NODATA for the rest.
fn localhost(name: &str, qtype: RecordType, ttl: u32) -> Answer {
    match qtype {
        RecordType::A => record(name, ttl, RData::A(A(Ipv4Addr::LOCALHOST))),
        RecordType::AAAA => record(name, ttl, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
        _ => Answer::empty(ResponseCode::NoError),
    }
}

/// A NOERROR answer with one record owned by `name`.
fn record(name: &str, ttl: u32, data: RData) -> Answer {
    let mut answer = Answer::empty(ResponseCode::NoError);
    if let Ok(mut owner) = Name::from_ascii(name) {
        owner.set_fqdn(true);
        answer.answers.push(Record::from_rdata(owner, ttl, data));
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcode(s: &SpecialUse, name: &str, qtype: RecordType) -> Option<(ResponseCode, usize)> {
        s.answer(name, qtype, 300)
            .map(|a| (a.rcode, a.answers.len()))
    }

    #[test]
    fn localhost_is_loopback_and_never_leaves() {
        let s = SpecialUse::default();
        for name in ["localhost", "agent.localhost", "a.b.localhost"] {
            let a = s.answer(name, RecordType::A, 300).unwrap();
            assert_eq!(
                a.answers[0].data,
                RData::A(A(Ipv4Addr::LOCALHOST)),
                "{name}"
            );
            assert_eq!(a.answers[0].name.to_ascii(), format!("{name}."));
            let aaaa = s.answer(name, RecordType::AAAA, 300).unwrap();
            assert_eq!(aaaa.answers[0].data, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)));
            assert_eq!(
                rcode(&s, name, RecordType::MX),
                Some((ResponseCode::NoError, 0))
            );
        }
        assert_eq!(rcode(&s, "notlocalhost", RecordType::A), None);
        assert_eq!(rcode(&s, "localhost.example.com", RecordType::A), None);
    }

    #[test]
    fn nonexistent_names_are_nxdomain() {
        let s = SpecialUse::default();
        for name in ["invalid", "x.invalid", "hidden.onion", "nas.home.arpa"] {
            assert_eq!(
                rcode(&s, name, RecordType::A),
                Some((ResponseCode::NXDomain, 0)),
                "{name}"
            );
        }
        for name in [
            "invalid.example",
            "a.test",
            "example.com",
            "arpa",
            "in-addr.arpa",
        ] {
            assert_eq!(rcode(&s, name, RecordType::A), None, "{name}");
        }
    }

    #[test]
    fn private_reverse_lookups_stay_local() {
        let s = SpecialUse::default();
        let nx = Some((ResponseCode::NXDomain, 0));
        for name in [
            "5.1.168.192.in-addr.arpa",
            "1.2.3.10.in-addr.arpa",
            "10.in-addr.arpa",
            "9.9.16.172.in-addr.arpa",
            "9.9.31.172.in-addr.arpa",
            "1.1.64.100.in-addr.arpa",
            "3.2.254.169.in-addr.arpa",
            "2.0.0.127.in-addr.arpa",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
            "0.8.e.f.ip6.arpa",
        ] {
            assert_eq!(rcode(&s, name, RecordType::PTR), nx, "{name}");
        }
        for name in [
            "8.8.8.8.in-addr.arpa",
            "9.9.15.172.in-addr.arpa",
            "9.9.32.172.in-addr.arpa",
            "1.1.128.100.in-addr.arpa",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.8.8.4.0.6.8.4.1.0.0.2.ip6.arpa",
        ] {
            assert_eq!(rcode(&s, name, RecordType::PTR), None, "{name}");
        }
        let a = s
            .answer("1.0.0.127.in-addr.arpa", RecordType::PTR, 60)
            .unwrap();
        assert_eq!(
            a.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("localhost.").unwrap()))
        );
    }

    #[test]
    fn a_forward_zone_takes_its_names_back() {
        let s = SpecialUse::new(["168.192.in-addr.arpa.", "home.arpa"]);
        assert_eq!(rcode(&s, "5.1.168.192.in-addr.arpa", RecordType::PTR), None);
        assert_eq!(rcode(&s, "nas.home.arpa", RecordType::A), None);
        assert_eq!(
            rcode(&s, "1.2.3.10.in-addr.arpa", RecordType::PTR),
            Some((ResponseCode::NXDomain, 0))
        );
    }
}
