//! dnstap messages encoded straight from an [`Event`] into the writer's output:
//! protobuf written by hand from `dnstap.proto`'s field numbers (the same as
//! [`super::proto`]'s, which the tests decode with). What every message shares
//! (identity, version) is encoded once at start; what an event's two messages
//! share (the `extra` field after them, the socket, peer, query time and policy)
//! once per event; each frame is then its length (known before it is written,
//! nothing patched), that prefix, its own few fields, the shared ones and the
//! wire form, copied once from the event into the output. A batch costs no
//! allocation and no `fmt` once warm.

use std::net::IpAddr;

use super::proto::{MessageType, PolicyMatch, SocketFamily, SocketProtocol};
use super::{Event, Kind, Part, Transport};

/// `Dnstap.type = MESSAGE` (field 15, varint 1), the last field of every frame.
const TYPE_MESSAGE: [u8; 2] = [15 << 3, 1];

/// Turns events into Frame Streams data frames, two per event.
pub(super) struct Encoder {
    /// `Dnstap.identity` and `Dnstap.version`, encoded; per event followed by
    /// its `extra` field, if any (cut back to `head_len` first).
    prefix: Vec<u8>,
    head_len: usize,
    /// Scratch: the `extra` text.
    extra: String,
    /// The `Message` fields both messages of an event carry.
    shared: Vec<u8>,
}

impl Encoder {
    pub fn new(identity: &[u8], version: &[u8]) -> Self {
        let mut prefix = Vec::new();
        bytes(&mut prefix, 1, identity);
        bytes(&mut prefix, 2, version);
        Self {
            head_len: prefix.len(),
            prefix,
            extra: String::new(),
            shared: Vec::new(),
        }
    }

    /// Appends the event's query and response messages as data frames to `out`.
    pub fn frames(&mut self, ev: &Event, out: &mut Vec<u8>) {
        let name = ev.part(Part::Name);
        self.prefix.truncate(self.head_len);
        if let Some(s) = &ev.tunnel {
            let x = &mut self.extra;
            x.clear();
            x.push_str("tunnel score=");
            push_hundredths(x, s.value);
            x.push_str(if s.flagged {
                " flagged=true reasons="
            } else {
                " flagged=false reasons="
            });
            s.reasons
                .write_for(std::str::from_utf8(name).unwrap_or_default(), x);
            bytes(&mut self.prefix, 3, self.extra.as_bytes());
        }
        self.shared(ev, name);
        let (asked, answered) = match ev.kind {
            Kind::Client => (MessageType::ClientQuery, MessageType::ClientResponse),
            Kind::Forwarder => (MessageType::ForwarderQuery, MessageType::ForwarderResponse),
        };
        let (wire_q, wire_r) = (ev.part(Part::Query), ev.part(Part::Response));
        out.reserve(2 * (24 + self.prefix.len() + self.shared.len()) + wire_q.len() + wire_r.len());
        self.frame(asked, None, (10, wire_q), out);
        self.frame(answered, Some(ev.response_us), (14, wire_r), out);
    }

    /// The `Message` fields of both messages into `self.shared`: socket family
    /// and protocol, the peer, the query time and the policy (protobuf allows
    /// fields in any order, so these follow each message's own).
    fn shared(&mut self, ev: &Event, name: &[u8]) {
        let m = &mut self.shared;
        m.clear();
        let family = match ev.peer {
            IpAddr::V4(_) => SocketFamily::Inet,
            IpAddr::V6(_) => SocketFamily::Inet6,
        };
        let protocol = match ev.transport {
            Transport::Udp => SocketProtocol::Udp,
            Transport::Tcp => SocketProtocol::Tcp,
            Transport::Tls => SocketProtocol::Dot,
            Transport::Doh => SocketProtocol::Doh,
            Transport::Doq => SocketProtocol::Doq,
        };
        m.extend_from_slice(&[2 << 3, family as u8, 3 << 3, protocol as u8]);
        // The client asked dnsguard; dnsguard asked the upstream.
        let (addr_field, port_field) = match ev.kind {
            Kind::Client => (4, 6),
            Kind::Forwarder => (5, 7),
        };
        address(m, addr_field, ev.peer);
        if ev.port != 0 {
            m.push(port_field << 3);
            varint(m, u64::from(ev.port));
        }
        time(m, 8, ev.query_us);
        if let Some(v) = &ev.verdict {
            policy(m, v, ev, name);
        }
    }

    /// One data frame: the `Dnstap` of the query side (`response_us` `None`)
    /// or the response side, written straight into `out`.
    fn frame(
        &self,
        kind: MessageType,
        response_us: Option<u64>,
        (wire_field, wire): (u8, &[u8]),
        out: &mut Vec<u8>,
    ) {
        // The message's own fields: its type, the response time, the wire form.
        let time_len = response_us.map_or(0, time_len);
        let wire_len = if wire.is_empty() {
            0
        } else {
            field_len(wire.len())
        };
        let message_len = 2 + time_len + self.shared.len() + wire_len;
        let frame_len = self.prefix.len() + field_len(message_len) + TYPE_MESSAGE.len();
        out.extend_from_slice(&u32::try_from(frame_len).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&self.prefix);
        out.push(14 << 3 | LEN);
        varint(out, message_len as u64);
        out.extend_from_slice(&[1 << 3, kind as u8]);
        if let Some(us) = response_us {
            time(out, 12, us);
        }
        out.extend_from_slice(&self.shared);
        if !wire.is_empty() {
            bytes(out, wire_field, wire);
        }
        out.extend_from_slice(&TYPE_MESSAGE);
    }
}

/// The verdict as a `Policy` message (field 15 of `Message`), its length
/// counted first so that it is written in place.
fn policy(m: &mut Vec<u8>, v: &super::Verdict, ev: &Event, name: &[u8]) {
    let (list, rule) = (ev.part(Part::List), ev.part(Part::Rule));
    // `rule`: the list and the rule, either alone, or both with a space.
    let rule_len = match (list.is_empty(), rule.is_empty()) {
        (true, true) => 0,
        (false, false) => list.len() + 1 + rule.len(),
        _ => list.len() + rule.len(),
    };
    let mut ip = [0; 16];
    let value: &[u8] = match (v.matched, v.address) {
        (_, Some(IpAddr::V4(a))) => {
            ip[..4].copy_from_slice(&a.octets());
            &ip[..4]
        }
        (_, Some(IpAddr::V6(a))) => {
            ip = a.octets();
            &ip
        }
        (Some(PolicyMatch::Qname), None) => name,
        _ => &[],
    };
    let len = field_len(v.kind.len())
        + if rule_len > 0 { field_len(rule_len) } else { 0 }
        + 2
        + if v.matched.is_some() { 2 } else { 0 }
        + if value.is_empty() {
            0
        } else {
            field_len(value.len())
        };
    m.push(15 << 3 | LEN);
    varint(m, len as u64);
    bytes(m, 1, v.kind.as_bytes());
    if rule_len > 0 {
        m.push(2 << 3 | LEN);
        varint(m, rule_len as u64);
        m.extend_from_slice(list);
        if !list.is_empty() && !rule.is_empty() {
            m.push(b' ');
        }
        m.extend_from_slice(rule);
    }
    m.extend_from_slice(&[3 << 3, v.action as u8]);
    if let Some(matched) = v.matched {
        m.extend_from_slice(&[4 << 3, matched as u8]);
    }
    if !value.is_empty() {
        bytes(m, 5, value);
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

/// A time as its seconds (varint, field `field`) and nanoseconds (fixed32,
/// the next field), as `Message` carries query and response times.
fn time(out: &mut Vec<u8>, field: u8, us: u64) {
    let (s, n) = split_us(us);
    let n = n.to_le_bytes();
    let nanos_key = (field + 1) << 3 | FIXED32;
    // Seconds of these decades (2^28 s is 1978, 2^35 s beyond 3000) take five
    // varint bytes: both fields in one fixed-size copy, no loop.
    if (1 << 28..1 << 35).contains(&s) {
        let b = |shift: u32| (s >> shift) as u8 | 0x80;
        out.extend_from_slice(&[
            field << 3,
            b(0),
            b(7),
            b(14),
            b(21),
            (s >> 28) as u8,
            nanos_key,
            n[0],
            n[1],
            n[2],
            n[3],
        ]);
        return;
    }
    out.push(field << 3);
    varint(out, s);
    out.extend_from_slice(&[nanos_key, n[0], n[1], n[2], n[3]]);
}

/// How many bytes [`time`] writes.
fn time_len(us: u64) -> usize {
    1 + varint_len(us / 1_000_000) + 5
}

/// Protobuf wire types.
const LEN: u8 = 2;
const FIXED32: u8 = 5;

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

/// How many bytes a length-delimited field (of a number below 16) of `n`
/// bytes takes.
fn field_len(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

/// A length-delimited field; `field` is below 16 (one byte of key).
fn bytes(out: &mut Vec<u8>, field: u8, b: &[u8]) {
    out.push(field << 3 | LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// An address as 4 or 16 octets.
fn address(out: &mut Vec<u8>, field: u8, ip: IpAddr) {
    let key = field << 3 | LEN;
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            out.extend_from_slice(&[key, 4, o[0], o[1], o[2], o[3]]);
        }
        IpAddr::V6(a) => {
            out.extend_from_slice(&[key, 16]);
            out.extend_from_slice(&a.octets());
        }
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

    /// Every length is counted before it is written: policies of each shape,
    /// an IPv6 peer, no port, and an `extra`, wire forms and messages past 127
    /// bytes (two-byte lengths) all decode as what was put in.
    #[test]
    fn lengths_counted_ahead_match_what_is_written() {
        let flagged = Score {
            value: 3.25,
            flagged: true,
            quarantined: false,
            reasons: Reasons::default(),
            domain: Default::default(),
        };
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let long_name = "a".repeat(150);
        let big = vec![0xab; 300];
        // A verdict, the list and rule in the event, the policy rule expected.
        type Case = (Option<Verdict>, &'static str, &'static str, Option<Vec<u8>>);
        let cases: [Case; 5] = [
            // Rebinding, IPv6 address, rule only.
            (
                Some(Verdict {
                    kind: "rebinding",
                    action: PolicyAction::LocalData,
                    matched: Some(PolicyMatch::ResponseIp),
                    address: Some(v6),
                }),
                "",
                "line 3",
                Some(b"line 3".to_vec()),
            ),
            // IPv4 address, list only.
            (
                Some(Verdict {
                    kind: "access",
                    action: PolicyAction::Drop,
                    matched: Some(PolicyMatch::ClientIp),
                    address: Some(v4),
                }),
                "mine",
                "",
                Some(b"mine".to_vec()),
            ),
            // A name past 127 bytes as the value, neither list nor rule.
            (
                Some(Verdict {
                    kind: "tunnel",
                    action: PolicyAction::Drop,
                    matched: Some(PolicyMatch::Qname),
                    address: None,
                }),
                "",
                "",
                None,
            ),
            // No match known: no value.
            (
                Some(Verdict {
                    kind: "blocklist",
                    action: PolicyAction::Nodata,
                    matched: None,
                    address: None,
                }),
                "big list",
                "line 70000",
                Some(b"big list line 70000".to_vec()),
            ),
            (None, "", "", None),
        ];
        for (verdict, list, rule, want_rule) in cases {
            let mut ev = event(Kind::Client);
            ev.peer = v6;
            ev.port = 0;
            ev.transport = Transport::Doq;
            ev.query_us = 1_800_000_000_000_001;
            ev.response_us = 1_800_000_000_000_002;
            ev.verdict = verdict;
            ev.tunnel = Some(flagged);
            ev.fill([
                long_name.as_bytes(),
                list.as_bytes(),
                rule.as_bytes(),
                &big,
                &big[..200],
            ]);
            // The same event twice: the second pair of frames, after the
            // first in the output, comes from the encoder's reused scratch.
            let mut enc = Encoder::new(b"identity", b"version");
            let mut out = Vec::new();
            enc.frames(&ev, &mut out);
            enc.frames(&ev, &mut out);
            let got = decode(&out);
            assert_eq!(got.len(), 4);
            assert_eq!(got[..2], got[2..]);
            for (d, wire) in got.iter().zip([&big[..], &big[..200]]) {
                let extra = String::from_utf8(d.extra.clone().unwrap()).unwrap();
                assert!(extra.starts_with("tunnel score=3.25 flagged=true reasons="));
                let m = d.message.as_ref().unwrap();
                assert_eq!(m.socket_family, Some(SocketFamily::Inet6 as i32));
                assert_eq!(m.socket_protocol, Some(SocketProtocol::Doq as i32));
                assert_eq!(m.query_address.as_deref(), Some(&v6_octets(v6)[..]));
                assert_eq!(m.query_port, None);
                assert_eq!(
                    (m.query_time_sec, m.query_time_nsec),
                    (Some(1_800_000_000), Some(1_000))
                );
                let sent = m.query_message.as_ref().or(m.response_message.as_ref());
                assert_eq!(sent.map(|w| &w[..]), Some(wire));
                let Some(v) = verdict else {
                    assert!(m.policy.is_none());
                    continue;
                };
                let p = m.policy.as_ref().unwrap();
                assert_eq!(p.r#type.as_deref(), Some(v.kind));
                assert_eq!(p.rule, want_rule);
                assert_eq!(p.action, Some(v.action as i32));
                assert_eq!(p.r#match, v.matched.map(|m| m as i32));
                let value = match (v.matched, v.address) {
                    (_, Some(IpAddr::V4(a))) => Some(a.octets().to_vec()),
                    (_, Some(ip)) => Some(v6_octets(ip).to_vec()),
                    (Some(PolicyMatch::Qname), None) => Some(long_name.clone().into_bytes()),
                    _ => None,
                };
                assert_eq!(p.value, value);
            }
            let r = got[1].message.as_ref().unwrap();
            assert_eq!(
                (r.response_time_sec, r.response_time_nsec),
                (Some(1_800_000_000), Some(2_000))
            );
        }
    }

    fn v6_octets(ip: IpAddr) -> [u8; 16] {
        match ip {
            IpAddr::V6(a) => a.octets(),
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        }
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
    fn times_of_every_varint_length_decode_as_written() {
        for us in [
            0,
            2_500_000,
            (1 << 28) * 1_000_000 - 1,
            (1 << 28) * 1_000_000,
            1_765_000_000_123_456,
            (1 << 35) * 1_000_000 - 1,
            (1 << 35) * 1_000_000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            time(&mut out, 8, us);
            assert_eq!(out.len(), time_len(us), "{us}");
            let m: Message = prost::Message::decode(&out[..]).unwrap();
            let (s, n) = split_us(us);
            assert_eq!((m.query_time_sec, m.query_time_nsec), (Some(s), Some(n)));
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
