//! dnstap messages encoded straight from an [`Event`] into the writer's output:
//! protobuf written by hand from `dnstap.proto`'s field numbers (the same as
//! [`super::proto`]'s, which the tests decode with). What every message shares
//! (identity, version) is encoded once at start, what an event's two messages
//! share (extra, addresses, times, policy) once per event, and the query and
//! response bytes are copied once, from the event into the output: a batch
//! costs no allocation and no text formatting once warm.

use std::net::IpAddr;

use super::proto::{MessageType, PolicyMatch, SocketFamily, SocketProtocol};
use super::{Event, Kind, Part, Transport};

/// `Dnstap.type = MESSAGE` (field 15, varint 1), the last field of every frame.
const TYPE_MESSAGE: [u8; 2] = [15 << 3, 1];

/// Turns events into Frame Streams data frames, two per event.
pub(super) struct Encoder {
    /// `Dnstap.identity` and `Dnstap.version`, encoded.
    head: Vec<u8>,
    /// Scratch: the `extra` text, the `Policy`, the `Message` fields both
    /// messages of an event carry, and those of one message alone.
    extra: String,
    policy: Vec<u8>,
    shared: Vec<u8>,
    own: Vec<u8>,
}

impl Encoder {
    pub fn new(identity: &[u8], version: &[u8]) -> Self {
        let mut head = Vec::new();
        bytes(&mut head, 1, identity);
        bytes(&mut head, 2, version);
        Self {
            head,
            extra: String::new(),
            policy: Vec::new(),
            shared: Vec::new(),
            own: Vec::new(),
        }
    }

    /// Appends the event's query and response messages as data frames to `out`.
    pub fn frames(&mut self, ev: &Event, out: &mut Vec<u8>) {
        let name = std::str::from_utf8(ev.part(Part::Name)).unwrap_or_default();
        self.extra.clear();
        if let Some(s) = &ev.tunnel {
            let x = &mut self.extra;
            x.push_str("tunnel score=");
            push_hundredths(x, s.value);
            x.push_str(if s.flagged {
                " flagged=true reasons="
            } else {
                " flagged=false reasons="
            });
            s.reasons.write_for(name, x);
        }
        self.policy(ev, name);
        self.shared(ev);
        let (asked, answered) = match ev.kind {
            Kind::Client => (MessageType::ClientQuery, MessageType::ClientResponse),
            Kind::Forwarder => (MessageType::ForwarderQuery, MessageType::ForwarderResponse),
        };
        self.frame(ev, asked, false, out);
        self.frame(ev, answered, true, out);
    }

    /// The event's verdict as a `Policy` into `self.policy` (empty: none).
    fn policy(&mut self, ev: &Event, name: &str) {
        let p = &mut self.policy;
        p.clear();
        let Some(v) = &ev.verdict else { return };
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

    /// The `Message` fields of both messages into `self.shared`: socket family
    /// and protocol, the peer, the query time and the policy (protobuf allows
    /// fields in any order, so these follow each message's own).
    fn shared(&mut self, ev: &Event) {
        let m = &mut self.shared;
        m.clear();
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
        if !self.policy.is_empty() {
            bytes(m, 15, &self.policy);
        }
    }

    /// One data frame: the `Dnstap` of the query side or the response side,
    /// written straight into `out`.
    fn frame(&mut self, ev: &Event, kind: MessageType, response: bool, out: &mut Vec<u8>) {
        // The message's own fields: its type, the response time, the wire form.
        let own = &mut self.own;
        own.clear();
        uint(own, 1, kind as u64);
        let (wire_field, wire) = if response {
            let (rs, rn) = split_us(ev.response_us);
            uint(own, 12, rs);
            fixed32(own, 13, rn);
            (14, ev.part(Part::Response))
        } else {
            (10, ev.part(Part::Query))
        };
        let wire_len = if wire.is_empty() {
            0
        } else {
            1 + varint_len(wire.len() as u64) + wire.len()
        };
        let message_len = own.len() + self.shared.len() + wire_len;

        let start = out.len();
        out.extend_from_slice(&[0; 4]); // the frame's length, set below
        out.extend_from_slice(&self.head);
        if !self.extra.is_empty() {
            bytes(out, 3, self.extra.as_bytes());
        }
        key(out, 14, LEN);
        varint(out, message_len as u64);
        out.extend_from_slice(own);
        out.extend_from_slice(&self.shared);
        if !wire.is_empty() {
            bytes(out, wire_field, wire);
        }
        out.extend_from_slice(&TYPE_MESSAGE);
        let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// `v` with two decimals, as `{v:.2}` shows it (ties may round the other way),
/// through integer formatting: Rust's float formatting costs about a thousand
/// instructions, and under a tunnel flood every event carries a score.
fn push_hundredths(out: &mut String, v: f32) {
    if !v.is_finite() || v.abs() >= 1e15 {
        use std::fmt::Write;
        let _ = write!(out, "{v:.2}");
        return;
    }
    let hundredths = (f64::from(v) * 100.0).round() as i64;
    if hundredths < 0 {
        out.push('-');
    }
    let h = hundredths.unsigned_abs();
    let mut digits = itoa::Buffer::new();
    out.push_str(digits.format(h / 100));
    out.push_str(if h % 100 < 10 { ".0" } else { "." });
    out.push_str(digits.format(h % 100));
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

/// How many bytes `v` takes as a varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
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
    use super::super::Verdict;
    use super::super::proto::{Dnstap, Message, Policy, PolicyAction};
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
        Event {
            kind,
            ..Event::default()
        }
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
        let mut enc = Encoder::new(b"id", b"v1");
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
        let mut enc = Encoder::new(b"id", b"v1");
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
    fn scores_show_as_the_float_formatter_would() {
        for v in [
            0.0f32, 0.004, 0.5, 0.996, 1.0, 1.234, 1.5, 2.999, 9.87, 12.345_6, 100.0,
        ] {
            let mut s = String::new();
            push_hundredths(&mut s, v);
            assert_eq!(s, format!("{v:.2}"), "{v}");
        }
        let mut s = String::new();
        push_hundredths(&mut s, f32::INFINITY);
        assert_eq!(s, "inf");
    }

    #[test]
    fn varint_lengths_match_what_is_written() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(varint_len(v), out.len(), "{v}");
        }
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
