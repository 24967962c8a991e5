//! The DNS wire format where the in-place path (`fast.rs`) needs it: reading a plain query in
//! place, and writing the answers dnsguard gives without a resolver round trip
//! (refused, blocked, cached) straight into the reply buffer.
//!
//! Anything unusual (compression in the question, odd bytes in names, EDNS versions
//! other than 0, several questions, a class other than IN) is not parsed here: the
//! caller hands the packet to hickory's full parser instead (and `handler.rs`
//! answers an EDNS version other than 0 with BADVERS). Answers written here
//! are the same messages hickory writes for the same [`crate::resolve::Answer`]; tests compare the
//! two.

use crate::pipeline::block::Plan;
use crate::pipeline::ede::Ede;
use crate::resolve::body::Body;

/// Length of the DNS header.
pub const HEADER_LEN: usize = 12;
/// Largest query name in text form (253 characters, no trailing dot).
const MAX_NAME_TEXT: usize = 253;
const TYPE_A: u16 = 1;
const TYPE_SOA: u16 = 6;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// A compression pointer to the question name, which always sits right after the header.
const NAME_PTR: [u8; 2] = [0xC0, 0x0C];

/// The client's EDNS: the UDP size it can take and the DO bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEdns {
    /// Advertised UDP payload size.
    pub payload: u16,
    /// DNSSEC OK: the client wants signatures.
    pub dnssec_ok: bool,
    /// The OPT record carries options (a forwarder's identity options among them,
    /// `crate::identity`).
    pub options: bool,
}

/// A query simple enough for the fast path, read in place: one question of class
/// IN, a plain name of letters, digits, `-` and `_`, at most an EDNS(0) OPT record.
#[derive(Debug, Clone)]
pub struct FastQuery {
    /// Message ID.
    pub id: u16,
    /// Recursion desired.
    pub rd: bool,
    /// Checking disabled.
    pub cd: bool,
    /// Authentic data (the client understands AD without DO, RFC 6840).
    pub ad: bool,
    /// Query type.
    pub qtype: u16,
    /// End of the question section: the reply copies `packet[..question_end]`.
    pub question_end: usize,
    /// The client's EDNS, if it sent an OPT record.
    pub edns: Option<ClientEdns>,
    name: [u8; MAX_NAME_TEXT],
    name_len: u8,
}

impl FastQuery {
    /// Reads `packet`; `None` when it is not a plain query (hickory's parser then
    /// decides what it is, and answers FORMERR or NOTIMP where due).
    pub fn parse(packet: &[u8]) -> Option<FastQuery> {
        let header = packet.get(..HEADER_LEN)?;
        let (flags1, flags2) = (header[2], header[3]);
        // QR, opcode, AA, TC must be clear; so must Z.
        if flags1 & 0xFE != 0 || flags2 & 0x40 != 0 {
            return None;
        }
        let counts = [u16_at(header, 4), u16_at(header, 6), u16_at(header, 8)];
        let arcount = u16_at(header, 10);
        if counts != [1, 0, 0] || arcount > 1 {
            return None;
        }
        let mut q = FastQuery {
            id: u16_at(header, 0),
            rd: flags1 & 0x01 != 0,
            cd: flags2 & 0x10 != 0,
            ad: flags2 & 0x20 != 0,
            qtype: 0,
            question_end: 0,
            edns: None,
            name: [0; MAX_NAME_TEXT],
            name_len: 0,
        };
        let mut pos = HEADER_LEN;
        let mut text = 0usize;
        loop {
            let len = usize::from(*packet.get(pos)?);
            pos += 1;
            if len == 0 {
                break;
            }
            // Pointers (and the obsolete extended label types) are never needed in a
            // question: leave them to the full parser.
            if len > 63 {
                return None;
            }
            let label = packet.get(pos..pos + len)?;
            let dot = usize::from(text > 0);
            if text + dot + len > MAX_NAME_TEXT {
                return None;
            }
            if dot == 1 {
                q.name[text] = b'.';
                text += 1;
            }
            for &b in label {
                q.name[text] = match b {
                    b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => b,
                    b'A'..=b'Z' => b.to_ascii_lowercase(),
                    _ => return None,
                };
                text += 1;
            }
            pos += len;
        }
        if text == 0 {
            return None; // the root: rare, and the full parser's job
        }
        q.name_len = text as u8;
        let fixed = packet.get(pos..pos + 4)?;
        q.qtype = u16_at(fixed, 0);
        if u16_at(fixed, 2) != CLASS_IN {
            return None;
        }
        pos += 4;
        q.question_end = pos;
        if arcount == 1 {
            // Only an OPT record owned by the root, EDNS version 0.
            let opt = packet.get(pos..pos + 11)?;
            if opt[0] != 0 || u16_at(opt, 1) != TYPE_OPT || opt[6] != 0 {
                return None;
            }
            let payload = u16_at(opt, 3);
            let dnssec_ok = opt[7] & 0x80 != 0;
            let rdlen = usize::from(u16_at(opt, 9));
            pos += 11;
            packet.get(pos..pos + rdlen)?;
            pos += rdlen;
            q.edns = Some(ClientEdns {
                payload,
                dnssec_ok,
                options: rdlen > 0,
            });
        }
        (pos == packet.len()).then_some(q)
    }

    /// The query name: lower case, no trailing dot (as [`crate::name::name_text`] gives it).
    pub fn name(&self) -> &str {
        // Only ASCII letters, digits, '-', '_' and '.' were written.
        std::str::from_utf8(&self.name[..usize::from(self.name_len)]).unwrap_or("")
    }

    /// The DO bit.
    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    /// The largest reply the client takes over UDP: its EDNS size, at least 512 and
    /// at most what dnsguard advertises; 512 without EDNS (RFC 1035).
    pub fn max_reply(&self) -> usize {
        match self.edns {
            Some(e) => usize::from(e.payload.clamp(512, super::handler::EDNS_PAYLOAD)),
            None => 512,
        }
    }
}

/// A reply being written over a buffer: header and question copied from the query,
/// then records appended.
pub struct Reply<'a> {
    buf: &'a mut [u8],
    len: usize,
    answers: u16,
    authorities: u16,
}

/// The reply buffer was too small for the records, or the client's UDP size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooBig;

impl<'a> Reply<'a> {
    /// Starts the reply to `q` (read from `packet`) in `buf`, with `rcode` and the
    /// AD bit as given. Fails only when `buf` cannot hold the question.
    pub fn start(
        buf: &'a mut [u8],
        packet: &[u8],
        q: &FastQuery,
        rcode: u8,
        authentic: bool,
    ) -> Result<Self, TooBig> {
        let end = q.question_end;
        let (dst, src) = (buf.get_mut(..end).ok_or(TooBig)?, &packet[..end]);
        dst.copy_from_slice(src);
        buf[2] = 0x80 | u8::from(q.rd);
        buf[3] =
            0x80 | if authentic { 0x20 } else { 0 } | if q.cd { 0x10 } else { 0 } | (rcode & 0x0F);
        buf[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        Ok(Self {
            buf,
            len: end,
            answers: 0,
            authorities: 0,
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), TooBig> {
        let end = self.len + bytes.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(TooBig)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Appends a record owned by the query name (a compression pointer to it).
    fn put_record(&mut self, rtype: u16, ttl: u32, rdata: &[u8]) -> Result<(), TooBig> {
        let rdlen = u16::try_from(rdata.len()).map_err(|_| TooBig)?;
        self.put(&NAME_PTR)?;
        self.put(&rtype.to_be_bytes())?;
        self.put(&CLASS_IN.to_be_bytes())?;
        self.put(&ttl.to_be_bytes())?;
        self.put(&rdlen.to_be_bytes())?;
        self.put(rdata)
    }

    /// Appends the block answer `plan` (the one [`Plan::answer`] gives hickory's
    /// encoder), setting the reply's rcode.
    pub fn blocked(&mut self, plan: &Plan) -> Result<(), TooBig> {
        match *plan {
            Plan::Negative { nxdomain, ttl } => self.negative(if nxdomain { 3 } else { 0 }, ttl),
            Plan::Refused => {
                self.set_rcode(5);
                Ok(())
            }
            Plan::Addresses { v4, v6, ttl } => {
                if let Some(ip) = v4 {
                    self.put_record(TYPE_A, ttl, &ip.octets())?;
                    self.answers += 1;
                }
                if let Some(ip) = v6 {
                    self.put_record(TYPE_AAAA, ttl, &ip.octets())?;
                    self.answers += 1;
                }
                Ok(())
            }
        }
    }

    /// A negative answer with the synthetic SOA of blocked names.
    fn negative(&mut self, rcode: u8, ttl: u32) -> Result<(), TooBig> {
        self.set_rcode(rcode);
        let mut rdata = [0u8; 64];
        let mut n = 0;
        for part in [
            &b"\x07blocked\x08dnsguard\x00"[..],
            &b"\x0ahostmaster\x08dnsguard\x00"[..],
            &1u32.to_be_bytes(),
        ] {
            rdata[n..n + part.len()].copy_from_slice(part);
            n += part.len();
        }
        let signed = i32::try_from(ttl).unwrap_or(i32::MAX).to_be_bytes();
        for part in [signed, signed, signed, ttl.to_be_bytes()] {
            rdata[n..n + 4].copy_from_slice(&part);
            n += 4;
        }
        self.put_record(TYPE_SOA, ttl, &rdata[..n])?;
        self.authorities += 1;
        Ok(())
    }

    /// Appends a cached answer's records, each stored TTL passed through `ttl`
    /// (counted down, or the stale TTL: `Hit::ttl`).
    pub fn body(&mut self, body: &Body, ttl: impl Fn(u32) -> u32) -> Result<(), TooBig> {
        let start = self.len;
        self.put(&body.bytes)?;
        for &(offset, stored) in body.ttls.iter() {
            let at = start + usize::from(offset);
            self.buf[at..at + 4].copy_from_slice(&ttl(stored).to_be_bytes());
        }
        self.answers += body.answers;
        self.authorities += body.authorities;
        Ok(())
    }

    fn set_rcode(&mut self, rcode: u8) {
        self.buf[3] = (self.buf[3] & 0xF0) | (rcode & 0x0F);
    }

    /// Writes the counts (and the OPT record when the client sent EDNS, with `ede`
    /// in it) and returns the reply's length; `TooBig` when it exceeds `limit`
    /// (what the client can take: [`FastQuery::max_reply`] over UDP) or the
    /// buffer. The EDE's text, or the EDE itself, is left out when the reply would
    /// not fit `limit` with it: the answer is never given up for it.
    pub fn finish(
        mut self,
        q: &FastQuery,
        limit: usize,
        ede: Option<&Ede<'_>>,
    ) -> Result<usize, TooBig> {
        let mut additional = 0u16;
        if let Some(edns) = q.edns {
            const OPT_LEN: usize = 11;
            let room = limit.saturating_sub(self.len + OPT_LEN);
            let ede = ede.and_then(|e| {
                [true, false]
                    .into_iter()
                    .find(|&text| e.wire_len(text) <= room)
                    .map(|text| (e, text))
            });
            let rdlen = ede.map_or(0, |(e, text)| e.wire_len(text));
            let mut opt = [0u8; OPT_LEN];
            opt[1..3].copy_from_slice(&TYPE_OPT.to_be_bytes());
            opt[3..5].copy_from_slice(&super::handler::EDNS_PAYLOAD.to_be_bytes());
            opt[7] = if edns.dnssec_ok { 0x80 } else { 0 };
            opt[9..11].copy_from_slice(&(rdlen as u16).to_be_bytes());
            self.put(&opt)?;
            if let Some((e, text)) = ede {
                let end = self.len + rdlen;
                e.write(text, &mut self.buf[self.len..end]);
                self.len = end;
            }
            additional = 1;
        }
        self.buf[6..8].copy_from_slice(&self.answers.to_be_bytes());
        self.buf[8..10].copy_from_slice(&self.authorities.to_be_bytes());
        self.buf[10..12].copy_from_slice(&additional.to_be_bytes());
        if self.len > limit {
            return Err(TooBig);
        }
        Ok(self.len)
    }
}

/// The empty truncated (TC) reply a rate-limited client gets instead of its answer
/// (BIND's "slip"): a real client retries over TCP, a spoofed victim gets a small
/// packet. `None` for packets that are not plain queries (they are dropped).
pub fn slip(packet: &[u8], buf: &mut [u8]) -> Option<usize> {
    let q = FastQuery::parse(packet)?;
    let reply = Reply::start(buf, packet, &q, 0, false).ok()?;
    reply.buf[2] |= 0x02;
    reply.finish(&q, q.max_reply(), None).ok()
}

/// The FORMERR reply to a query whose header can be read but nothing else (what
/// hickory's own listener sends); `None` when not even the header is there or the
/// packet is itself a response.
pub fn format_error(packet: &[u8], buf: &mut [u8]) -> Option<usize> {
    let header = packet.get(..HEADER_LEN)?;
    if header[2] & 0x80 != 0 {
        return None;
    }
    let out = buf.get_mut(..HEADER_LEN)?;
    out.fill(0);
    out[..2].copy_from_slice(&header[..2]);
    // Echo the opcode and RD; RA set; rcode 1.
    out[2] = 0x80 | (header[2] & 0x79);
    out[3] = 0x80 | 1;
    Some(HEADER_LEN)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::BlockMode;
    use crate::pipeline::block;
    use crate::resolve::Answer;
    use hickory_proto::op::{Edns, ResponseCode};
    use hickory_proto::op::{Message, MessageType, Query};
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RecordType};
    use hickory_proto::rr::{RData, Record};
    use std::net::Ipv4Addr;

    fn query(name: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some((size, dnssec_ok)) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            e.set_dnssec_ok(dnssec_ok);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn parses_plain_queries() {
        let p = query("WWW.Example.COM.", RecordType::AAAA, Some((4096, true)));
        let q = FastQuery::parse(&p).unwrap();
        assert_eq!(q.name(), "www.example.com");
        assert_eq!((q.id, q.qtype, q.rd), (0x1234, 28, true));
        assert_eq!(
            q.edns,
            Some(ClientEdns {
                payload: 4096,
                dnssec_ok: true,
                options: false,
            })
        );
        assert_eq!(q.max_reply(), 1232);
        let p = query("a-b_c.example.", RecordType::A, None);
        let q = FastQuery::parse(&p).unwrap();
        assert_eq!(
            (q.name(), q.edns, q.max_reply()),
            ("a-b_c.example", None, 512)
        );
    }

    #[test]
    fn leaves_unusual_packets_to_the_full_parser() {
        let ok = query("example.com.", RecordType::A, None);
        assert!(FastQuery::parse(&ok).is_some());
        let mut bad = Vec::new();
        // truncated everywhere
        for n in 0..ok.len() {
            bad.push(ok[..n].to_vec());
        }
        // trailing garbage
        let mut t = ok.clone();
        t.push(0);
        bad.push(t);
        // a response, an update, two questions
        let mut r = ok.clone();
        r[2] |= 0x80;
        bad.push(r);
        let mut u = ok.clone();
        u[2] |= 5 << 3;
        bad.push(u);
        let mut two = ok.clone();
        two[5] = 2;
        bad.push(two);
        // odd bytes in a label, class CH, EDNS version 1
        let mut odd = query("exXample.com.", RecordType::A, None);
        let at = odd.iter().position(|&b| b == b'X').unwrap();
        odd[at] = b' ';
        bad.push(odd);
        let mut ch = ok.clone();
        let n = ch.len();
        ch[n - 1] = 3;
        bad.push(ch);
        let mut v1 = query("example.com.", RecordType::A, Some((1232, false)));
        let n = v1.len();
        v1[n - 5] = 1;
        bad.push(v1);
        bad.push(query(".", RecordType::NS, None));
        for p in bad {
            assert!(FastQuery::parse(&p).is_none(), "{p:?}");
        }
    }

    fn parse_reply(bytes: &[u8]) -> Message {
        Message::from_vec(bytes).expect("the reply parses")
    }

    #[test]
    fn blocked_replies_equal_hickorys() {
        let modes = [
            BlockMode::Null,
            BlockMode::NxDomain,
            BlockMode::NoData,
            BlockMode::Refused,
            BlockMode::Custom {
                v4: Some(Ipv4Addr::new(192, 0, 2, 7)),
                v6: None,
            },
        ];
        for mode in &modes {
            for qtype in [
                RecordType::A,
                RecordType::AAAA,
                RecordType::HTTPS,
                RecordType::ANY,
            ] {
                for edns in [None, Some((1232, true))] {
                    let p = query("Ads.Example.", qtype, edns);
                    let q = FastQuery::parse(&p).unwrap();
                    let mut buf = [0u8; 512];
                    let mut r = Reply::start(&mut buf, &p, &q, 0, false).unwrap();
                    let plan = block::plan(mode, 42, q.qtype);
                    r.blocked(&plan).unwrap();
                    let n = r.finish(&q, q.max_reply(), None).unwrap();
                    let got = parse_reply(&buf[..n]);
                    let name = Name::from_ascii("Ads.Example.").unwrap();
                    let want = plan.answer(&name);
                    assert_eq!(got.metadata.response_code, want.rcode, "{mode:?} {qtype}");
                    assert_eq!(got.answers, want.answers, "{mode:?} {qtype}");
                    assert_eq!(got.authorities, want.authorities, "{mode:?} {qtype}");
                    let meta = got.metadata;
                    assert!(meta.recursion_available && meta.recursion_desired);
                    assert_eq!(meta.id, 0x1234);
                    assert_eq!(meta.message_type, MessageType::Response);
                    assert_eq!(got.queries[0].name().to_ascii(), "Ads.Example.");
                    assert_eq!(got.edns.is_some(), edns.is_some());
                    if let Some(e) = &got.edns {
                        assert_eq!(e.max_payload(), 1232);
                        assert!(e.flags().dnssec_ok);
                    }
                }
            }
        }
    }

    #[test]
    fn cached_bodies_follow_any_casing_of_the_question() {
        let name = Name::from_ascii("www.example.").unwrap();
        let target = Name::from_ascii("cdn.example.net.").unwrap();
        let mut answer = Answer::empty(ResponseCode::NoError);
        answer.answers.push(Record::from_rdata(
            name.clone(),
            300,
            RData::CNAME(CNAME(target.clone())),
        ));
        answer.answers.push(Record::from_rdata(
            target.clone(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        let body = Body::encode(&answer, &name, RecordType::A).unwrap();
        let p = query("WWW.example.", RecordType::A, Some((1232, false)));
        let q = FastQuery::parse(&p).unwrap();
        let mut buf = [0u8; 512];
        let mut r = Reply::start(&mut buf, &p, &q, 0, false).unwrap();
        r.body(&body, |t| t.min(100)).unwrap();
        let n = r.finish(&q, q.max_reply(), None).unwrap();
        let got = parse_reply(&buf[..n]);
        assert_eq!(got.answers.len(), 2);
        assert_eq!(got.answers[0].data, RData::CNAME(CNAME(target.clone())));
        assert_eq!(got.answers[0].ttl, 100, "counted down to the time left");
        assert_eq!(got.answers[1].name, target);
        assert_eq!(got.answers[1].ttl, 60, "never raised");
        assert_eq!(got.queries[0].name().to_ascii(), "WWW.example.");
    }

    #[test]
    fn replies_respect_the_clients_size() {
        let name = Name::from_ascii("big.example.").unwrap();
        let mut answer = Answer::empty(ResponseCode::NoError);
        for i in 0..40u8 {
            answer.answers.push(Record::from_rdata(
                name.clone(),
                300,
                RData::A(A::new(192, 0, 2, i)),
            ));
        }
        let body = Body::encode(&answer, &name, RecordType::A).unwrap();
        let p = query("big.example.", RecordType::A, None);
        let q = FastQuery::parse(&p).unwrap();
        let mut buf = [0u8; 4096];
        let mut r = Reply::start(&mut buf, &p, &q, 0, false).unwrap();
        r.body(&body, |t| t).unwrap();
        assert_eq!(
            r.finish(&q, q.max_reply(), None),
            Err(TooBig),
            "40 A records exceed 512 bytes"
        );
        let p = query("big.example.", RecordType::A, Some((1232, false)));
        let q = FastQuery::parse(&p).unwrap();
        let mut r = Reply::start(&mut buf, &p, &q, 0, false).unwrap();
        r.body(&body, |t| t).unwrap();
        assert!(r.finish(&q, q.max_reply(), None).is_ok());
        let mut small = [0u8; 40];
        assert!(Reply::start(&mut small, &p, &q, 0, false).is_ok());
        let mut r = Reply::start(&mut small, &p, &q, 0, false).unwrap();
        assert_eq!(r.body(&body, |t| t), Err(TooBig), "never past the buffer");
    }

    /// The EDE of the OPT record of `m`: (INFO-CODE, EXTRA-TEXT).
    fn ede_of(m: &Message) -> Option<(u16, String)> {
        use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
        let opt = m.edns.as_ref()?.options().get(EdnsCode::Unknown(15))?;
        let EdnsOption::Unknown(15, data) = opt else {
            return None;
        };
        let text = String::from_utf8(data[2..].to_vec()).unwrap();
        Some((u16::from_be_bytes([data[0], data[1]]), text))
    }

    #[test]
    fn the_ede_gives_way_to_the_answer() {
        let name = Name::from_ascii("big.example.").unwrap();
        let ede = Ede::bare(15, "list \"ads\" line 8");
        // 28 or 29 A records with the OPT record leave 24 or 8 bytes of 512:
        // room for code and text, for the code alone.
        for (records, want) in [(28u8, Some("list \"ads\" line 8")), (29, Some(""))] {
            let mut answer = Answer::empty(ResponseCode::NoError);
            for i in 0..records {
                let a = RData::A(A::new(192, 0, 2, i));
                answer
                    .answers
                    .push(Record::from_rdata(name.clone(), 300, a));
            }
            let body = Body::encode(&answer, &name, RecordType::A).unwrap();
            let p = query("big.example.", RecordType::A, Some((512, false)));
            let q = FastQuery::parse(&p).unwrap();
            let mut buf = [0u8; 4096];
            let mut r = Reply::start(&mut buf, &p, &q, 0, false).unwrap();
            r.body(&body, |t| t).unwrap();
            let n = r.finish(&q, q.max_reply(), Some(&ede)).unwrap();
            assert!(n <= 512);
            let got = parse_reply(&buf[..n]);
            assert_eq!(got.answers.len(), usize::from(records), "never truncated");
            let want = want.map(|t| (15, t.to_owned()));
            assert_eq!(ede_of(&got), want, "{records} records");
        }
        // A negative block answer has room for all of it.
        let p = query("big.example.", RecordType::A, Some((512, false)));
        let q = FastQuery::parse(&p).unwrap();
        let mut buf = [0u8; 4096];
        let mut r = Reply::start(&mut buf, &p, &q, 0, false).unwrap();
        r.blocked(&block::plan(&BlockMode::NxDomain, 60, TYPE_A))
            .unwrap();
        let n = r.finish(&q, q.max_reply(), Some(&ede)).unwrap();
        let got = parse_reply(&buf[..n]);
        assert_eq!(got.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(ede_of(&got), Some((15, "list \"ads\" line 8".to_owned())));
        // Without EDNS in the query: no OPT record, so no EDE.
        let p = query("big.example.", RecordType::A, None);
        let q = FastQuery::parse(&p).unwrap();
        let r = Reply::start(&mut buf, &p, &q, 0, false).unwrap();
        let n = r.finish(&q, q.max_reply(), Some(&ede)).unwrap();
        assert!(parse_reply(&buf[..n]).edns.is_none());
    }

    #[test]
    fn slipped_replies_are_empty_and_truncated() {
        let p = query("www.example.", RecordType::A, Some((1232, false)));
        let mut buf = [0u8; 512];
        let n = slip(&p, &mut buf).unwrap();
        let m = parse_reply(&buf[..n]);
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        assert_eq!(m.queries[0].name().to_ascii(), "www.example.");
        assert!(slip(&p[..10], &mut buf).is_none());
    }

    #[test]
    fn format_error_echoes_the_id() {
        let mut buf = [0u8; 64];
        let p = [0xAB, 0xCD, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xFF];
        let n = format_error(&p, &mut buf).unwrap();
        let m = parse_reply(&buf[..n]);
        assert_eq!(m.metadata.id, 0xABCD);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(format_error(&p[..5], &mut buf).is_none());
    }
}
