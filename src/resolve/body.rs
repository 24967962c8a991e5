//! A cached answer's records in wire form: what the cache keeps per entry and
//! the UDP fast path copies into a reply after the question (`dns::wire`).

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use super::Answer;

/// The DNS header's length.
const HEADER_LEN: usize = 12;

/// A cached answer's answer and authority sections in wire form, as they follow a
/// question for the same name, with where each record's TTL sits.
#[derive(Debug, Clone, Default)]
pub struct Body {
    /// The records, as they follow the question.
    pub(crate) bytes: Box<[u8]>,
    /// (offset in `bytes`, the record's stored TTL).
    pub(crate) ttls: Box<[(u16, u32)]>,
    /// Records in the answer section.
    pub(crate) answers: u16,
    /// Records in the authority section.
    pub(crate) authorities: u16,
}

impl Body {
    /// Encodes `answer` as the reply to `qname`/`qtype` would carry it. Names that
    /// equal the question are compressed to point at it, so the bytes fit after any
    /// question for the same name (same length, whatever its letter case). `None`
    /// when hickory cannot encode the records.
    pub fn encode(answer: &Answer, qname: &Name, qtype: RecordType) -> Option<Body> {
        let mut msg = Message::new(0, MessageType::Response, OpCode::Query);
        msg.add_query(Query::query(qname.clone(), qtype));
        msg.add_answers(answer.answers.iter().cloned());
        msg.add_authorities(answer.authorities.iter().cloned());
        let wire = msg.to_vec().ok()?;
        let question_end = HEADER_LEN + name_wire_len(&wire, HEADER_LEN)? + 4;
        let records = usize::from(u16_at(&wire, 6)) + usize::from(u16_at(&wire, 8));
        let body = wire.get(question_end..)?;
        let mut ttls = Vec::with_capacity(records);
        let mut pos = 0;
        for _ in 0..records {
            pos += name_wire_len(body, pos)?;
            let fixed = body.get(pos..pos + 10)?;
            let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
            ttls.push((u16::try_from(pos + 4).ok()?, ttl));
            pos += 10 + usize::from(u16_at(fixed, 8));
        }
        (pos == body.len()).then(|| Body {
            bytes: body.into(),
            ttls: ttls.into(),
            answers: u16_at(&wire, 6),
            authorities: u16_at(&wire, 8),
        })
    }
}

impl Body {
    /// The answer and authority records, parsed back from the wire form as the
    /// reply to `qname`/`qtype` carries them, with the stored TTLs. `None` if the
    /// bytes do not parse (they are made by [`Body::encode`], so never in practice).
    pub fn records(
        &self,
        qname: &Name,
        qtype: RecordType,
    ) -> Option<(
        Vec<hickory_proto::rr::Record>,
        Vec<hickory_proto::rr::Record>,
    )> {
        let mut head = Message::new(0, MessageType::Response, OpCode::Query);
        head.add_query(Query::query(qname.clone(), qtype));
        let mut wire = head.to_vec().ok()?;
        wire.get_mut(6..10)?.copy_from_slice(
            &[self.answers.to_be_bytes(), self.authorities.to_be_bytes()].concat(),
        );
        wire.extend_from_slice(&self.bytes);
        let msg = Message::from_vec(&wire).ok()?;
        let (mut answers, mut authorities) = (msg.answers, msg.authorities);
        for (r, &(_, ttl)) in answers
            .iter_mut()
            .chain(authorities.iter_mut())
            .zip(self.ttls.iter())
        {
            r.ttl = ttl;
        }
        Some((answers, authorities))
    }

    /// A copy with every stored TTL passed through `f`.
    pub fn map_ttls(&self, f: impl Fn(u32) -> u32) -> Body {
        Body {
            ttls: self.ttls.iter().map(|&(at, ttl)| (at, f(ttl))).collect(),
            ..self.clone()
        }
    }
}

/// Length of the (possibly compressed) name at `pos`.
pub(crate) fn name_wire_len(buf: &[u8], pos: usize) -> Option<usize> {
    let mut p = pos;
    loop {
        let len = *buf.get(p)?;
        match len {
            0 => return Some(p + 1 - pos),
            l if l & 0xC0 == 0xC0 => return Some(p + 2 - pos),
            l if l > 63 => return None,
            l => p += 1 + usize::from(l),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
