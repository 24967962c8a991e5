//! dnstap messages encoded straight from an [`Event`] into the writer's output:
//! protobuf written by hand from `dnstap.proto`'s field numbers (the same as
//! [`super::proto`]'s, which the tests decode with), into buffers the encoder
//! keeps, so a batch of events costs no allocation once warm.

use std::io::Write;
use std::net::IpAddr;

use super::proto::{MessageType, PolicyMatch, SocketFamily, SocketProtocol};
use super::{Event, Kind, Part, Transport, fstrm};

/// Turns events into Frame Streams data frames, two per event.
pub(super) struct Encoder {
    identity: Vec<u8>,
    version: Vec<u8>,
    /// Scratch: the `Policy`, the `extra` text, one `Message`, one `Dnstap`.
    policy: Vec<u8>,
    extra: Vec<u8>,
    message: Vec<u8>,
    payload: Vec<u8>,
}

impl Encoder {
    pub fn new(identity: Vec<u8>, version: Vec<u8>) -> Self {
        Self {
            identity,
            version,
            policy: Vec::new(),
            extra: Vec::new(),
            message: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// Appends the event's query and response messages as data frames to `out`.
    pub fn frames(&mut self, ev: &Event, out: &mut Vec<u8>) {
        let name = std::str::from_utf8(ev.part(Part::Name)).unwrap_or_default();
        self.extra.clear();
        if let Some(s) = &ev.tunnel {
            let _ = write!(
                self.extra,
                "tunnel score={:.2} flagged={} reasons={}",
                s.value,
                s.flagged,
                s.reasons.display_for(name)
            );
        }
        self.policy.clear();
        if let Some(v) = &ev.verdict {
            let p = &mut self.policy;
            bytes(p, 1, v.kind.as_bytes());
            let (list, rule) = (ev.part(Part::List), ev.part(Part::Rule));
            match (list.is_empty(), rule.is_empty()) {
                (true, true) => {}
                (false, true) => bytes(p, 2, list),
                (true, false) => bytes(p, 2, rule),
                (false, false) => {
                    key(p, 2, LEN);
                    varint(p, (list.len() + 1 + rule.len()) as u64);
                    p.extend_from_slice(list);
                    p.push(b' ');
                    p.extend_from_slice(rule);
                }
            }
            uint(p, 3, v.action as u64);
            if let Some(m) = v.matched {
                uint(p, 4, m as u64);
            }
            match (v.matched, v.address) {
                (_, Some(ip)) => address(p, 5, ip),
                (Some(PolicyMatch::Qname), None) => bytes(p, 5, name.as_bytes()),
                _ => {}
            }
        }
        let (asked, answered) = match ev.kind {
            Kind::Client => (MessageType::ClientQuery, MessageType::ClientResponse),
            Kind::Forwarder => (MessageType::ForwarderQuery, MessageType::ForwarderResponse),
        };
        for (kind, response) in [(asked, false), (answered, true)] {
            self.message(ev, kind, response);
            let d = &mut self.payload;
            d.clear();
            bytes(d, 1, &self.identity);
            bytes(d, 2, &self.version);
            if !self.extra.is_empty() {
                bytes(d, 3, &self.extra);
            }
            bytes(d, 14, &self.message);
            uint(d, 15, 1); // Dnstap.Type MESSAGE
            fstrm::push_data(out, d);
        }
    }

    /// One `Message` of the event into `self.message`: the query side, or the
    /// response side.
    fn message(&mut self, ev: &Event, kind: MessageType, response: bool) {
        let m = &mut self.message;
        m.clear();
        uint(m, 1, kind as u64);
        let family = match ev.peer {
            IpAddr::V4(_) => SocketFamily::Inet,
            IpAddr::V6(_) => SocketFamily::Inet6,
        };
        uint(m, 2, family as u64);
        let protocol = match ev.transport {
            Transport::Udp => SocketProtocol::Udp,
            Transport::Tcp => SocketProtocol::Tcp,
            Transport::Tls => SocketProtocol::Dot,
            Transport::Doh => SocketProtocol::Doh,
            Transport::Doq => SocketProtocol::Doq,
        };
        uint(m, 3, protocol as u64);
        // The client asked dnsguard; dnsguard asked the upstream.
        let (addr_field, port_field) = match ev.kind {
            Kind::Client => (4, 6),
            Kind::Forwarder => (5, 7),
        };
        address(m, addr_field, ev.peer);
        if ev.port != 0 {
            uint(m, port_field, u64::from(ev.port));
        }
        let (qs, qn) = split_us(ev.query_us);
        uint(m, 8, qs);
        fixed32(m, 9, qn);
        let (wire_field, wire) = if response {
            let (rs, rn) = split_us(ev.response_us);
            uint(m, 12, rs);
            fixed32(m, 13, rn);
            (14, ev.part(Part::Response))
        } else {
            (10, ev.part(Part::Query))
        };
        if !wire.is_empty() {
            bytes(m, wire_field, wire);
        }
        if !self.policy.is_empty() {
            bytes(m, 15, &self.policy);
        }
    }
}

/// Seconds and nanoseconds of `us` unix microseconds.
fn split_us(us: u64) -> (u64, u32) {
    (us / 1_000_000, (us % 1_000_000) as u32 * 1000)
}

/// Protobuf wire types.
const VARINT: u64 = 0;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, field << 3 | wire);
}

fn uint(out: &mut Vec<u8>, field: u64, v: u64) {
    key(out, field, VARINT);
    varint(out, v);
}

fn fixed32(out: &mut Vec<u8>, field: u64, v: u32) {
    key(out, field, FIXED32);
    out.extend_from_slice(&v.to_le_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    key(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// An address as 4 or 16 octets.
fn address(out: &mut Vec<u8>, field: u64, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => bytes(out, field, &a.octets()),
        IpAddr::V6(a) => bytes(out, field, &a.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::proto::{Dnstap, Message, Policy, PolicyAction};
    use super::super::{Verdict, queue};
    use super::*;
    use crate::detect::{Reasons, Score};

    /// The data frames of `out`, decoded with prost.
    fn decode(out: &[u8]) -> Vec<Dnstap> {
        let mut b = out;
        let mut all = Vec::new();
        while !b.is_empty() {
            let len = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
            all.push(prost::Message::decode(&b[4..4 + len]).unwrap());
            b = &b[4 + len..];
        }
        all
    }

    fn event(kind: Kind) -> Event {
        let (q, _d) = queue::queue(1);
        let mut ev = q.slot().unwrap();
        ev.kind = kind;
        ev
    }

    #[test]
    fn a_client_event_decodes_as_the_two_messages_prost_would_send() {
        let mut ev = event(Kind::Client);
        ev.peer = "192.0.2.7".parse().unwrap();
        ev.port = 5353;
        ev.transport = Transport::Tls;
        ev.query_us = 1_700_000_000_123_456;
        ev.response_us = 1_700_000_001_000_001;
        ev.verdict = Some(Verdict {
            kind: "blocklist",
            action: PolicyAction::Nxdomain,
            matched: Some(PolicyMatch::Qname),
            address: None,
        });
        ev.tunnel = Some(Score {
            value: 1.5,
            flagged: true,
            quarantined: false,
            reasons: Reasons::default(),
            domain: Default::default(),
        });
        ev.fill([b"ads.example", b"mine", b"line 9", b"QUERY", b"RESPONSE"]);
        let mut enc = Encoder::new(b"id".to_vec(), b"v1".to_vec());
        let mut out = Vec::new();
        enc.frames(&ev, &mut out);
        let policy = Some(Policy {
            r#type: Some("blocklist".into()),
            rule: Some(b"mine line 9".to_vec()),
            action: Some(PolicyAction::Nxdomain as i32),
            r#match: Some(PolicyMatch::Qname as i32),
            value: Some(b"ads.example".to_vec()),
        });
        let base = Message {
            r#type: MessageType::ClientQuery as i32,
            socket_family: Some(SocketFamily::Inet as i32),
            socket_protocol: Some(SocketProtocol::Dot as i32),
            query_address: Some(vec![192, 0, 2, 7]),
            query_port: Some(5353),
            query_time_sec: Some(1_700_000_000),
            query_time_nsec: Some(123_456_000),
            policy,
            ..Message::default()
        };
        let query = Message {
            query_message: Some(b"QUERY".to_vec()),
            ..base.clone()
        };
        let response = Message {
            r#type: MessageType::ClientResponse as i32,
            response_time_sec: Some(1_700_000_001),
            response_time_nsec: Some(1_000),
            response_message: Some(b"RESPONSE".to_vec()),
            ..base
        };
        let got = decode(&out);
        assert_eq!(got.len(), 2);
        for (d, want) in got.iter().zip([query, response]) {
            assert_eq!(d.identity.as_deref(), Some(&b"id"[..]));
            assert_eq!(d.version.as_deref(), Some(&b"v1"[..]));
            assert_eq!(d.r#type, 1);
            let extra = String::from_utf8(d.extra.clone().unwrap()).unwrap();
            assert!(
                extra.starts_with("tunnel score=1.50 flagged=true"),
                "{extra}"
            );
            assert_eq!(d.message.as_ref(), Some(&want));
        }
    }

    #[test]
    fn a_forwarder_event_names_the_upstream_as_responder() {
        let mut ev = event(Kind::Forwarder);
        ev.peer = "2001:db8::53".parse().unwrap();
        ev.port = 53;
        ev.transport = Transport::Udp;
        ev.query_us = 2_000_000;
        ev.response_us = 2_500_000;
        ev.fill([b"", b"", b"", b"Q", b"R"]);
        let mut enc = Encoder::new(b"id".to_vec(), b"v1".to_vec());
        let mut out = Vec::new();
        enc.frames(&ev, &mut out);
        let got = decode(&out);
        let types: Vec<i32> = got
            .iter()
            .map(|d| d.message.as_ref().unwrap().r#type)
            .collect();
        assert_eq!(
            types,
            [
                MessageType::ForwarderQuery as i32,
                MessageType::ForwarderResponse as i32
            ]
        );
        let r = got[1].message.as_ref().unwrap();
        assert!(got[0].extra.is_none() && r.policy.is_none());
        assert_eq!(r.socket_family, Some(SocketFamily::Inet6 as i32));
        assert_eq!(r.query_address, None);
        let ip: std::net::Ipv6Addr = "2001:db8::53".parse().unwrap();
        assert_eq!(r.response_address, Some(ip.octets().to_vec()));
        assert_eq!(r.response_port, Some(53));
        assert_eq!(r.response_message.as_deref(), Some(&b"R"[..]));
        assert_eq!(
            (r.response_time_sec, r.response_time_nsec),
            (Some(2), Some(500_000_000))
        );
        assert_eq!(
            got[0].message.as_ref().unwrap().query_message.as_deref(),
            Some(&b"Q"[..])
        );
    }

    #[test]
    fn times_split_into_seconds_and_nanoseconds() {
        assert_eq!(
            split_us(1_700_000_000_123_000),
            (1_700_000_000, 123_000_000)
        );
        assert_eq!(
            split_us(1_700_000_001_500_500),
            (1_700_000_001, 500_500_000)
        );
    }
}
