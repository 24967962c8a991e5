//! dnstap messages encoded straight from an [`Event`] into the writer's output:
//! protobuf written by hand from `dnstap.proto`'s field numbers (the same as
//! [`super::proto`]'s, which the tests decode with).
//!
//! Every length is counted first, the output grown once by the event's two
//! frames, and each byte then stored where it belongs (no per-byte `push`).
//! The fields are in the order that copies least (protobuf takes them in any
//! order): each frame is its length, the `Message` — the fields both messages
//! share first (socket, peer, query time, policy), written once and copied
//! for the response, then its own type, response time and wire form — and a
//! trailer of what every frame of the event ends with (identity, version,
//! `extra`, `type`). The trailer is encoded once and kept while the events'
//! `extra` stays the same (a tunnel flood's findings seldom change between
//! two queries; rendering them is most of a flagged event's cost). A batch
//! costs no allocation and no `fmt` once warm.

use std::net::IpAddr;

use super::proto::{MessageType, PolicyMatch, SocketFamily, SocketProtocol};
use super::{Event, Kind, Transport, Verdict};
use crate::detect::Score;

/// `Dnstap.type = MESSAGE` (field 15, varint 1), the last field of every frame.
const TYPE_MESSAGE: [u8; 2] = [15 << 3, 1];

/// Turns events into Frame Streams data frames, two per event.
pub(super) struct Encoder {
    /// `Dnstap.identity`, `Dnstap.version`, the `extra` of `shown` (if any)
    /// and `Dnstap.type`, encoded: the end of every frame.
    trailer: Vec<u8>,
    /// Where identity and version end in `trailer`.
    head_len: usize,
    /// The findings whose `extra` `trailer` holds, and their domain.
    shown: Option<Score>,
    shown_domain: String,
    /// Scratch: the `extra` text.
    extra: String,
}

impl Encoder {
    pub fn new(identity: &[u8], version: &[u8]) -> Self {
        let mut trailer = Vec::new();
        bytes(&mut trailer, 1, identity);
        bytes(&mut trailer, 2, version);
        let head_len = trailer.len();
        trailer.extend_from_slice(&TYPE_MESSAGE);
        Self {
            trailer,
            head_len,
            shown: None,
            shown_domain: String::new(),
            extra: String::new(),
        }
    }

    /// Appends the event's query and response messages as data frames to `out`.
    pub fn frames(&mut self, ev: &Event, out: &mut Vec<u8>) {
        let name = ev.name();
        self.trailer_for(ev.tunnel.as_ref(), name);
        let (asked, answered) = match ev.kind {
            Kind::Client => (MessageType::ClientQuery, MessageType::ClientResponse),
            Kind::Forwarder => (MessageType::ForwarderQuery, MessageType::ForwarderResponse),
        };
        // The client asked dnsguard; dnsguard asked the upstream.
        let (addr_field, port_field) = match ev.kind {
            Kind::Client => (4, 6),
            Kind::Forwarder => (5, 7),
        };
        let (wire_q, wire_r) = (ev.query(), ev.response());
        let policy = ev.verdict.as_ref().map(|v| Policy::of(v, ev, name));

        // Lengths.
        let addr_len = match ev.peer {
            IpAddr::V4(_) => 6,
            IpAddr::V6(_) => 18,
        };
        let port_len = if ev.port == 0 {
            0
        } else {
            1 + varint_len(u64::from(ev.port))
        };
        let shared_len = 4
            + addr_len
            + port_len
            + time_len(ev.query_us)
            + policy.as_ref().map_or(0, |p| field_len(p.len));
        let wire_len = |w: &[u8]| if w.is_empty() { 0 } else { field_len(w.len()) };
        let query_len = shared_len + 2 + wire_len(wire_q);
        let response_len = shared_len + 2 + time_len(ev.response_us) + wire_len(wire_r);
        let frame_len = |message_len: usize| field_len(message_len) + self.trailer.len();
        let (query_frame, response_frame) = (frame_len(query_len), frame_len(response_len));

        let start = out.len();
        out.resize(start + 8 + query_frame + response_frame, 0);
        let mut w = Cursor {
            b: &mut out[start..],
            at: 0,
        };
        // The query's frame.
        w.put(&frame_len_bytes(query_frame));
        w.byte(14 << 3 | LEN);
        w.varint(query_len as u64);
        let shared = w.at;
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
        w.put(&[2 << 3, family as u8, 3 << 3, protocol as u8]);
        w.address(addr_field, ev.peer);
        if ev.port != 0 {
            w.byte(port_field << 3);
            w.varint(u64::from(ev.port));
        }
        w.time(8, ev.query_us);
        if let (Some(p), Some(v)) = (&policy, &ev.verdict) {
            p.write(&mut w, v);
        }
        let shared = shared..w.at;
        w.put(&[1 << 3, asked as u8]);
        w.wire(10, wire_q);
        w.put(&self.trailer);
        // The response's: the shared fields copied from the query's.
        w.put(&frame_len_bytes(response_frame));
        w.byte(14 << 3 | LEN);
        w.varint(response_len as u64);
        w.copy_within(shared);
        w.put(&[1 << 3, answered as u8]);
        w.time(12, ev.response_us);
        w.wire(14, wire_r);
        w.put(&self.trailer);
        debug_assert_eq!(w.at, w.b.len(), "lengths counted ahead");
    }

    /// Makes `trailer` end the frames of an event with `tunnel`'s findings
    /// (in `extra`) or without; the text is rendered only when the findings
    /// or their domain differ from the last event's.
    fn trailer_for(&mut self, tunnel: Option<&Score>, name: &str) {
        let Some(s) = tunnel else {
            if self.shown.take().is_some() {
                self.trailer.truncate(self.head_len);
                self.trailer.extend_from_slice(&TYPE_MESSAGE);
            }
            return;
        };
        let domain = s.reasons.domain_in(name);
        if self.shown.as_ref().is_some_and(|t| reads_as(t, s)) && self.shown_domain == domain {
            return;
        }
        let x = &mut self.extra;
        x.clear();
        x.push_str("tunnel score=");
        push_hundredths(x, s.value);
        x.push_str(if s.flagged {
            " flagged=true reasons="
        } else {
            " flagged=false reasons="
        });
        s.reasons.write_for(name, x);
        self.trailer.truncate(self.head_len);
        bytes(&mut self.trailer, 3, self.extra.as_bytes());
        self.trailer.extend_from_slice(&TYPE_MESSAGE);
        self.shown = Some(*s);
        self.shown_domain.clear();
        self.shown_domain.push_str(domain);
    }
}

/// Whether findings `a` show as `b` in `extra` (for the same domain).
fn reads_as(a: &Score, b: &Score) -> bool {
    a.flagged == b.flagged
        && hundredths(a.value).is_some_and(|h| Some(h) == hundredths(b.value))
        && a.reasons.reads_as(&b.reasons)
}

/// What [`push_hundredths`] shows of `v`, in hundredths; `None` where it
/// hands over to the float formatter.
fn hundredths(v: f32) -> Option<i64> {
    (v.is_finite() && v.abs() < 1e15).then(|| (f64::from(v) * 100.0).round() as i64)
}

/// A frame's 4-byte length.
fn frame_len_bytes(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

/// The verdict as a `Policy` message (field 15 of `Message`): its parts and
/// their lengths, counted before anything is written.
struct Policy<'a> {
    /// The `Policy` message's length.
    len: usize,
    list: &'a [u8],
    rule: &'a [u8],
    /// `rule`'s length: the list and the rule, either alone, or both with a
    /// space.
    rule_len: usize,
    /// An address's octets, or the name (`value`).
    ip: [u8; 16],
    ip_len: usize,
    name: &'a [u8],
}

impl<'a> Policy<'a> {
    fn of(v: &Verdict, ev: &'a Event, name: &'a str) -> Self {
        let (list, rule) = match &ev.texts {
            Some(t) => (t.list.as_bytes(), t.rule.as_bytes()),
            None => (&[][..], &[][..]),
        };
        let rule_len = match (list.is_empty(), rule.is_empty()) {
            (true, true) => 0,
            (false, false) => list.len() + 1 + rule.len(),
            _ => list.len() + rule.len(),
        };
        let mut ip = [0; 16];
        let (ip_len, name) = match (v.matched, v.address) {
            (_, Some(IpAddr::V4(a))) => {
                ip[..4].copy_from_slice(&a.octets());
                (4, &[][..])
            }
            (_, Some(IpAddr::V6(a))) => {
                ip = a.octets();
                (16, &[][..])
            }
            (Some(PolicyMatch::Qname), None) => (0, name.as_bytes()),
            _ => (0, &[][..]),
        };
        let value_len = ip_len + name.len();
        let len = field_len(v.kind.len())
            + if rule_len > 0 { field_len(rule_len) } else { 0 }
            + 2
            + if v.matched.is_some() { 2 } else { 0 }
            + if value_len > 0 {
                field_len(value_len)
            } else {
                0
            };
        Self {
            len,
            list,
            rule,
            rule_len,
            ip,
            ip_len,
            name,
        }
    }

    fn write(&self, w: &mut Cursor<'_>, v: &Verdict) {
        w.byte(15 << 3 | LEN);
        w.varint(self.len as u64);
        w.put(&[1 << 3 | LEN, v.kind.len() as u8]);
        w.put(v.kind.as_bytes());
        if self.rule_len > 0 {
            w.byte(2 << 3 | LEN);
            w.varint(self.rule_len as u64);
            w.put(self.list);
            if !self.list.is_empty() && !self.rule.is_empty() {
                w.byte(b' ');
            }
            w.put(self.rule);
        }
        w.put(&[3 << 3, v.action as u8]);
        if let Some(matched) = v.matched {
            w.put(&[4 << 3, matched as u8]);
        }
        if self.ip_len > 0 {
            w.put(&[5 << 3 | LEN, self.ip_len as u8]);
            w.put(&self.ip[..self.ip_len]);
        } else if !self.name.is_empty() {
            w.byte(5 << 3 | LEN);
            w.varint(self.name.len() as u64);
            w.put(self.name);
        }
    }
}

/// Writes into a slice sized by the lengths counted ahead.
struct Cursor<'a> {
    b: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    #[inline]
    fn byte(&mut self, v: u8) {
        self.b[self.at] = v;
        self.at += 1;
    }

    #[inline]
    fn put(&mut self, s: &[u8]) {
        self.b[self.at..self.at + s.len()].copy_from_slice(s);
        self.at += s.len();
    }

    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    /// Bytes written before, again.
    fn copy_within(&mut self, from: std::ops::Range<usize>) {
        let n = from.len();
        self.b.copy_within(from, self.at);
        self.at += n;
    }

    /// A wire form as field `field`, unless it is empty.
    fn wire(&mut self, field: u8, wire: &[u8]) {
        if !wire.is_empty() {
            self.byte(field << 3 | LEN);
            self.varint(wire.len() as u64);
            self.put(wire);
        }
    }

    /// An address as 4 or 16 octets.
    fn address(&mut self, field: u8, ip: IpAddr) {
        let key = field << 3 | LEN;
        match ip {
            IpAddr::V4(a) => {
                let o = a.octets();
                self.put(&[key, 4, o[0], o[1], o[2], o[3]]);
            }
            IpAddr::V6(a) => {
                self.put(&[key, 16]);
                self.put(&a.octets());
            }
        }
    }

    /// A time as its seconds (varint, field `field`) and nanoseconds (fixed32,
    /// the next field), as `Message` carries query and response times.
    fn time(&mut self, field: u8, us: u64) {
        let (s, n) = split_us(us);
        let n = n.to_le_bytes();
        let nanos_key = (field + 1) << 3 | FIXED32;
        // Seconds of these decades (2^28 s is 1978, 2^35 s beyond 3000) take
        // five varint bytes: both fields in one fixed-size store, no loop.
        if (1 << 28..1 << 35).contains(&s) {
            let b = |shift: u32| (s >> shift) as u8 | 0x80;
            self.put(&[
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
        self.byte(field << 3);
        self.varint(s);
        self.put(&[nanos_key, n[0], n[1], n[2], n[3]]);
    }
}

/// `v` with two decimals, as `{v:.2}` shows it (ties may round the other way),
/// through integer formatting: Rust's float formatting costs about a thousand
/// instructions, and under a tunnel flood every event carries a score.
fn push_hundredths(out: &mut String, v: f32) {
    let Some(hundredths) = hundredths(v) else {
        use std::fmt::Write;
        let _ = write!(out, "{v:.2}");
        return;
    };
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

/// How many bytes [`Cursor::time`] writes.
fn time_len(us: u64) -> usize {
    let s = us / 1_000_000;
    if (1 << 28..1 << 35).contains(&s) {
        11
    } else {
        1 + varint_len(s) + 5
    }
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

/// How many bytes `v` takes as a varint (the lengths here are mostly one
/// or two bytes: those without a division).
fn varint_len(v: u64) -> usize {
    if v < 1 << 7 {
        1
    } else if v < 1 << 14 {
        2
    } else {
        (64 - v.leading_zeros() as usize).div_ceil(7)
    }
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

#[cfg(test)]
mod tests {
    use super::super::Verdict;
    use super::super::proto::{Dnstap, Message, Policy, PolicyAction};
    use super::*;
    use crate::detect::{ReasonCode, Reasons, Score};

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

    /// The texts and wire forms of a client event, as `observe` puts them.
    fn fill(ev: &mut Event, [name, list, rule]: [&str; 3], query: &[u8], response: &[u8]) {
        ev.texts = Some(super::super::Texts {
            name: name.into(),
            list: list.into(),
            rule: rule.into(),
        });
        ev.fill(query, response);
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
        fill(
            &mut ev,
            ["ads.example", "mine", "line 9"],
            b"QUERY",
            b"RESPONSE",
        );
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
        ev.fill(b"Q", b"R");
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
            fill(&mut ev, [&long_name, list, rule], &big, &big[..200]);
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

    /// The `extra` text is rendered again whenever the findings or their
    /// domain change, and dropped for an event without them: each frame
    /// carries its own event's, whatever came before.
    #[test]
    fn each_frame_carries_its_own_events_extra() {
        let score = |value: f32, distinct: u32| {
            let mut reasons = Reasons::default();
            reasons.distinct = distinct;
            reasons.reg_len = 9; // "x.example"
            reasons.set(ReasonCode::DistinctSubdomains);
            Score {
                value,
                flagged: true,
                quarantined: false,
                reasons,
                domain: Default::default(),
            }
        };
        let (a, b) = (score(1.5, 10), score(2.25, 20));
        let seq: [(Option<Score>, &str); 7] = [
            (Some(a), "q1.x.example"),
            (Some(a), "q2.x.example"),
            (None, "q3.x.example"),
            (Some(a), "q4.x.example"),
            (Some(b), "q5.x.example"),
            (Some(b), "q6.y.example"),
            (None, "q7.y.example"),
        ];
        let mut enc = Encoder::new(b"id", b"v1");
        let mut out = Vec::new();
        for (tunnel, name) in seq {
            let mut ev = event(Kind::Client);
            ev.tunnel = tunnel;
            fill(&mut ev, [name, "", ""], b"Q", b"R");
            enc.frames(&ev, &mut out);
        }
        let got = decode(&out);
        assert_eq!(got.len(), 2 * seq.len());
        for (pair, (tunnel, name)) in got.chunks(2).zip(seq) {
            let want = tunnel.map(|s| {
                let mut x = String::new();
                push_hundredths(&mut x, s.value);
                format!(
                    "tunnel score={x} flagged=true reasons={}",
                    s.reasons.display_for(name)
                )
            });
            for d in pair {
                let extra = d.extra.clone().map(|e| String::from_utf8(e).unwrap());
                assert_eq!(extra, want, "{name}");
                if let Some(x) = &extra {
                    assert!(x.contains(&format!("names under {}", &name[3..])), "{x}");
                }
                assert_eq!(d.identity.as_deref(), Some(&b"id"[..]));
            }
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
            let mut b = [0; 32];
            let mut w = Cursor { b: &mut b, at: 0 };
            w.time(8, us);
            let n = w.at;
            assert_eq!(n, time_len(us), "{us}");
            let m: Message = prost::Message::decode(&b[..n]).unwrap();
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
