//! Structured, `Copy` reasons for a score. The hot path only stores codes and
//! numbers; text is produced by `Display` when someone looks at it.

use std::fmt;

use super::Level;
use super::budget::PERIODS;
use super::features::Shape;

/// Why a query scored what it did. Each variant is a bit in [`Reasons`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ReasonCode {
    /// The labels look like encoded data (bigram likelihood vs random).
    Payload = 1,
    /// Bytes outside the host-name alphabet (8-bit encodings, base64 `+/=`).
    OddBytes = 1 << 1,
    /// A label longer than 40 characters.
    LongLabel = 1 << 2,
    /// Many distinct names under one registrable domain in the window.
    DistinctSubdomains = 1 << 3,
    /// Encoded-payload evidence accumulated under one registrable domain.
    DomainPayload = 1 << 4,
    /// The domain's queries are mostly TXT/NULL/CNAME/MX/SRV/private types.
    RareTypes = 1 << 5,
    /// The domain's answers are mostly NXDOMAIN.
    Nxdomain = 1 << 6,
    /// The client is quarantined for the registrable domain.
    Quarantined = 1 << 7,
    /// The name matched an exemption (suffix, or underscore label).
    Exempt = 1 << 8,
    /// The name is below a known out-of-band callback service.
    Callback = 1 << 9,
    /// The client spent its information budget for the registrable domain.
    Budget = 1 << 10,
    /// The name carries a user and a host name (`<user>.<host>.`).
    Identity = 1 << 11,
    /// The domain's answers carry encoded data (TXT/NULL data, CNAME/MX/SRV
    /// targets): a command channel coming back.
    AnswerPayload = 1 << 12,
}

/// Compact record of the evidence behind a [`super::Score`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reasons {
    codes: u16,
    /// Length of the registrable domain at the end of the name (for display).
    pub(crate) reg_len: u8,
    /// Longest label of the scored part, in bytes.
    pub longest_label: u8,
    /// Shape of the longest label.
    pub shape: Shape,
    /// Bytes outside the host-name alphabet.
    pub odd_bytes: u8,
    /// Length of the scored part.
    pub total_len: u16,
    /// Shannon entropy of the scored part, bits per character.
    pub entropy: f32,
    /// Payload evidence of this name, bits.
    pub payload_bits: f32,
    /// Estimated distinct names under the domain in the window.
    pub distinct: u32,
    /// Window length, seconds.
    pub window_secs: u32,
    /// Bytes of new names under the domain per minute (window average).
    pub bytes_per_min: f32,
    /// Payload evidence accumulated under the domain, bits.
    pub domain_bits: f32,
    /// Share of TXT/NULL/CNAME/MX/SRV/private-type queries, percent.
    pub rare_type_pct: u8,
    /// Share of NXDOMAIN answers, percent.
    pub nx_pct: u8,
    /// Confidence of the flag (`None`: not flagged, or logged before levels).
    pub level: Option<Level>,
    /// New name text the client sent below the domain within the budget's
    /// period, bytes.
    pub budget_bytes: f32,
    /// The budget of that period (after the popularity discount), bytes.
    pub budget_limit: f32,
    /// The period: its index in the budget's periods (10 min, 2 h, a day).
    pub budget_period: u8,
    /// Encoded-data evidence in the domain's answers in the window, bits.
    pub answer_bits: f32,
}

impl Reasons {
    /// Whether `code` contributed to the score.
    pub fn has(&self, code: ReasonCode) -> bool {
        self.codes & code as u16 != 0
    }

    pub(crate) fn set(&mut self, code: ReasonCode) {
        self.codes |= code as u16;
    }

    pub(crate) fn unset(&mut self, code: ReasonCode) {
        self.codes &= !(code as u16);
    }

    /// Whether no reason was recorded.
    pub fn is_empty(&self) -> bool {
        self.codes == 0
    }

    /// A short label per reason, in the order the text gives them (for
    /// lists that show the kinds of evidence, not the figures of each query).
    pub fn labels(&self) -> Vec<&'static str> {
        use ReasonCode::*;
        [
            (Exempt, "exempt"),
            (Quarantined, "quarantined"),
            (Callback, "callback service"),
            (Budget, "over budget"),
            (Identity, "user/host name"),
            (AnswerPayload, "answer payload"),
            (Payload, "encoded label"),
            (LongLabel, "long label"),
            (OddBytes, "odd bytes"),
            (DistinctSubdomains, "many names"),
            (DomainPayload, "domain payload"),
            (RareTypes, "rare types"),
            (Nxdomain, "NXDOMAIN"),
        ]
        .into_iter()
        .filter(|&(code, _)| self.has(code))
        .map(|(_, label)| label)
        .collect()
    }

    /// Display with the registrable domain taken from `qname` (the name the
    /// score was computed for), e.g. "412 distinct names under x.example".
    pub fn display_for<'a>(&'a self, qname: &'a str) -> impl fmt::Display + 'a {
        Shown {
            reasons: self,
            domain: self.domain_in(qname),
        }
    }

    /// The registrable domain at the end of `qname`, or "the domain".
    pub(crate) fn domain_in<'a>(&self, qname: &'a str) -> &'a str {
        let q = qname.trim_end_matches('.');
        let n = usize::from(self.reg_len);
        if n > 0 && n <= q.len() && q.is_char_boundary(q.len() - n) {
            &q[q.len() - n..]
        } else {
            "the domain"
        }
    }

    /// Appends what [`Reasons::display_for`] shows to `out`, without `fmt`'s
    /// machinery (`write!` cost about 1k instructions per text, callgrind): the
    /// query log renders the reasons of every flagged entry it reads, and under
    /// a tunnel flood every entry is flagged.
    pub fn write_for(&self, qname: &str, out: &mut String) {
        render(self, self.domain_in(qname), out);
    }

    /// Whether `self` reads as `other` in [`Reasons::write_for`] for the same
    /// domain: the same reasons, with the same figures as the text rounds
    /// them. Lets a writer keep the text of the last findings (dnstap's
    /// `extra`) instead of writing it again; what this compares follows
    /// `render` reason by reason.
    pub fn reads_as(&self, other: &Reasons) -> bool {
        use ReasonCode::*;
        let (a, b) = (self, other);
        if a.codes != b.codes || a.level != b.level {
            return false;
        }
        // A figure the text shows: equal once rounded, and rounded the
        // integer way (the float formatter's figures are not compared).
        let dec = |x: f32, y: f32, decimals: u8| {
            shown(x, decimals).is_some_and(|v| Some(v) == shown(y, decimals))
        };
        (!(a.has(Payload) || a.has(LongLabel))
            || a.longest_label == b.longest_label
                && a.shape == b.shape
                && dec(a.entropy, b.entropy, 1)
                && dec(a.payload_bits, b.payload_bits, 0))
            && (!a.has(OddBytes) || a.odd_bytes == b.odd_bytes)
            && (!(a.has(DistinctSubdomains) || a.has(DomainPayload))
                || a.distinct == b.distinct && dec(a.bytes_per_min, b.bytes_per_min, 0))
            && (!a.has(DistinctSubdomains) || a.window_secs == b.window_secs)
            && (!a.has(DomainPayload) || dec(a.domain_bits, b.domain_bits, 0))
            && (!a.has(Budget)
                || a.budget_period_text() == b.budget_period_text()
                    && dec(a.budget_bytes, b.budget_bytes, 0)
                    && dec(a.budget_limit, b.budget_limit, 0))
            && (!a.has(AnswerPayload) || dec(a.answer_bits, b.answer_bits, 0))
            && (!a.has(RareTypes) || a.rare_type_pct == b.rare_type_pct)
            && (!a.has(Nxdomain) || a.nx_pct == b.nx_pct)
    }

    /// The query log's rule text of a flagged query: `tunnel: ` and the reasons.
    pub fn rule_for(&self, qname: &str) -> String {
        let mut rule = String::with_capacity(192);
        rule.push_str("tunnel: ");
        self.write_for(qname, &mut rule);
        rule
    }

    /// Appends the reasons as [`Reasons::ENCODED_LEN`] bytes: the query log
    /// stores them so, and renders the text only when the entry is read (the
    /// text is about four times longer and costs ~1k instructions to write).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.codes.to_le_bytes());
        out.extend_from_slice(&[
            self.reg_len,
            self.longest_label,
            self.shape as u8,
            self.odd_bytes,
        ]);
        out.extend_from_slice(&self.total_len.to_le_bytes());
        for v in [self.entropy, self.payload_bits] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.distinct, self.window_secs] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.bytes_per_min, self.domain_bits] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&[self.rare_type_pct, self.nx_pct]);
        // Level (bits 0-1) and budget period (bits 2-3) in one byte; the
        // budget and answer figures as whole bytes and bits (what the text
        // shows).
        out.push(self.level.map_or(0, |l| l as u8) | (self.budget_period.min(3) << 2));
        for v in [self.budget_bytes, self.budget_limit, self.answer_bits] {
            out.extend_from_slice(&whole(v).to_le_bytes());
        }
    }

    /// Length of [`Reasons::encode`]'s output.
    pub const ENCODED_LEN: usize = 41;

    /// Length of what entries logged before confidence levels and the
    /// information budget hold (still read: no level, no budget).
    pub const OLD_ENCODED_LEN: usize = 34;

    /// The period of the budget figures, for text: "10 min", "2 h", "day".
    pub fn budget_period_text(&self) -> &'static str {
        match self.budget_period {
            0 => "10 min",
            1 => "2 h",
            _ => "day",
        }
    }

    /// Reads what [`Reasons::encode`] wrote (or its older, shorter form);
    /// `None` unless `b` is exactly that long and every field is valid.
    pub fn decode(b: &[u8]) -> Option<Reasons> {
        let mut r = Self::decode_old(b.get(..Self::OLD_ENCODED_LEN)?)?;
        match b.len() {
            Self::OLD_ENCODED_LEN => {}
            Self::ENCODED_LEN => {
                let u16_at = |i: usize| f32::from(u16::from_le_bytes([b[i], b[i + 1]]));
                let (level, period) = (b[34] & 3, b[34] >> 2);
                if usize::from(period) >= PERIODS.len() {
                    return None;
                }
                r.level = Level::from_u8(level);
                r.budget_period = period;
                r.budget_bytes = u16_at(35);
                r.budget_limit = u16_at(37);
                r.answer_bits = u16_at(39);
            }
            _ => return None,
        }
        Some(r)
    }

    fn decode_old(b: &[u8]) -> Option<Reasons> {
        let b: &[u8; Self::OLD_ENCODED_LEN] = b.try_into().ok()?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let f32_at = |i: usize| f32::from_bits(u32_at(i));
        Some(Reasons {
            codes: u16_at(0),
            reg_len: b[2],
            longest_label: b[3],
            shape: Shape::from_u8(b[4])?,
            odd_bytes: b[5],
            total_len: u16_at(6),
            entropy: f32_at(8),
            payload_bits: f32_at(12),
            distinct: u32_at(16),
            window_secs: u32_at(20),
            bytes_per_min: f32_at(24),
            domain_bits: f32_at(28),
            rare_type_pct: b[32],
            nx_pct: b[33],
            ..Reasons::default()
        })
    }
}

/// `v` rounded to a whole number in `u16` (saturating; NaN is 0).
fn whole(v: f32) -> u16 {
    v.round().clamp(0.0, f32::from(u16::MAX)) as u16
}

/// The text of `r`, with `domain` as the registrable domain: each reason that
/// is set, in a fixed order, written straight into `out` (no table of pieces
/// built for the reasons that are not set).
fn render(r: &Reasons, domain: &str, out: &mut String) {
    use ReasonCode::*;
    let d = domain;
    let start = out.len();
    if let Some(level) = r.level {
        out.push_str(level.as_str());
        out.push_str(" confidence");
    }
    // Starts the next reason: a separator unless it is the first text.
    let next = |out: &mut String| {
        if out.len() > start {
            out.push_str(", ");
        }
    };
    let int = |out: &mut String, n: u64| out.push_str(itoa::Buffer::new().format(n));
    if r.has(Exempt) {
        next(out);
        out.push_str("exempt");
    }
    if r.has(Quarantined) {
        next(out);
        out.push_str(d);
        out.push_str(" quarantined");
    }
    if r.has(Callback) {
        next(out);
        out.push_str(d);
        out.push_str(" is an out-of-band callback service");
    }
    if r.has(Payload) || r.has(LongLabel) {
        next(out);
        out.push_str("label ");
        int(out, u64::from(r.longest_label));
        out.push_str(" chars (");
        out.push_str(r.shape.as_str());
        out.push_str("), entropy ");
        push_dec(out, r.entropy, 1);
        out.push_str(" bits, ");
        push_dec(out, r.payload_bits, 0);
        out.push_str(" bits of payload evidence");
    }
    if r.has(OddBytes) {
        next(out);
        int(out, u64::from(r.odd_bytes));
        out.push_str(" bytes outside the host-name alphabet");
    }
    if r.has(DistinctSubdomains) {
        next(out);
        int(out, u64::from(r.distinct));
        out.push_str(" distinct names under ");
        out.push_str(d);
        out.push_str(" in ");
        int(out, u64::from(r.window_secs));
        out.push_str(" s, ");
        push_dec(out, r.bytes_per_min, 0);
        out.push_str(" B/min");
    }
    if r.has(DomainPayload) {
        next(out);
        push_dec(out, r.domain_bits, 0);
        out.push_str(" bits of encoded payload sent to ");
        out.push_str(d);
        out.push_str(" (");
        int(out, u64::from(r.distinct));
        out.push_str(" distinct names, ");
        push_dec(out, r.bytes_per_min, 0);
        out.push_str(" B/min)");
    }
    if r.has(Budget) {
        next(out);
        push_dec(out, r.budget_bytes, 0);
        out.push_str(" bytes of new name text sent to ");
        out.push_str(d);
        out.push_str(" in ~");
        out.push_str(r.budget_period_text());
        out.push_str(" (budget ");
        push_dec(out, r.budget_limit, 0);
        out.push_str(" B)");
    }
    if r.has(AnswerPayload) {
        next(out);
        push_dec(out, r.answer_bits, 0);
        out.push_str(" bits of encoded data in answers from ");
        out.push_str(d);
    }
    if r.has(Identity) {
        next(out);
        out.push_str("labels name a user and a host");
    }
    if r.has(RareTypes) {
        next(out);
        int(out, u64::from(r.rare_type_pct));
        out.push_str("% TXT/NULL/CNAME/MX/SRV queries");
    }
    if r.has(Nxdomain) {
        next(out);
        int(out, u64::from(r.nx_pct));
        out.push_str("% NXDOMAIN");
    }
    if out.len() == start {
        out.push_str("no signal");
    }
}

/// What [`push_dec`] shows of `v`, as a whole number of tenths (1 decimal)
/// or units (0); `None` where it hands over to the float formatter.
fn shown(v: f32, decimals: u8) -> Option<i64> {
    if !v.is_finite() || v.abs() >= 1e15 {
        return None;
    }
    Some(if decimals == 0 {
        v.round() as i64
    } else {
        (v * 10.0).round() as i64
    })
}

/// `v` with 0 or 1 decimals through integer formatting (Rust's float formatting
/// costs thousands of instructions); what `{v:.0}` / `{v:.1}` show, except that
/// ties may round the other way.
fn push_dec(out: &mut String, v: f32, decimals: u8) {
    if !v.is_finite() || v.abs() >= 1e15 {
        use std::fmt::Write;
        let _ = write!(out, "{v:.*}", usize::from(decimals));
        return;
    }
    let mut digits = itoa::Buffer::new();
    if decimals == 0 {
        out.push_str(digits.format(v.round() as i64));
        return;
    }
    let tenths = (v * 10.0).round() as i64;
    if tenths < 0 {
        out.push('-');
    }
    out.push_str(digits.format(tenths.abs() / 10));
    out.push('.');
    out.push_str(digits.format(tenths.abs() % 10));
}

/// [`push_dec`] as a `Display`, for the test against the float formatter.
#[cfg(test)]
struct Dec(f32, u8);

#[cfg(test)]
impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        push_dec(&mut s, self.0, self.1);
        f.write_str(&s)
    }
}

struct Shown<'a> {
    reasons: &'a Reasons,
    domain: &'a str,
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(160);
        render(self.reasons, self.domain, &mut s);
        f.write_str(&s)
    }
}

impl fmt::Display for Reasons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Shown {
            reasons: self,
            domain: "the domain",
        }
        .fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::{Dec, ReasonCode, Reasons, Shape};

    /// Reasons with every number set, and no code.
    fn sample() -> Reasons {
        Reasons {
            reg_len: 9,
            longest_label: 52,
            shape: Shape::Base32,
            odd_bytes: 3,
            entropy: 4.27,
            payload_bits: 118.6,
            distinct: 412,
            window_secs: 300,
            bytes_per_min: 2048.4,
            domain_bits: 5120.2,
            rare_type_pct: 87,
            nx_pct: 12,
            ..Reasons::default()
        }
    }

    /// `reads_as` says two reasons read the same only when their texts are
    /// the same, and always does for the same reasons with the same text: reasons drawn from a few values each (so that many
    /// pairs match), every pair compared both ways.
    #[test]
    fn reads_as_only_when_the_texts_match() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let codes = [
            ReasonCode::Payload,
            ReasonCode::LongLabel,
            ReasonCode::OddBytes,
            ReasonCode::DistinctSubdomains,
            ReasonCode::DomainPayload,
            ReasonCode::Budget,
            ReasonCode::AnswerPayload,
            ReasonCode::RareTypes,
            ReasonCode::Nxdomain,
            ReasonCode::Identity,
        ];
        let floats = [0.0, 0.04, 0.06, 1.0, 1.44, 1.46, 2048.4, 2048.6, 1e14];
        let mut all = Vec::new();
        for _ in 0..1000 {
            let mut r = sample();
            for &c in &codes {
                if next(3) == 0 {
                    r.set(c);
                }
            }
            let mut f = || floats[next(floats.len() as u64) as usize];
            r.entropy = f();
            r.payload_bits = f();
            r.bytes_per_min = f();
            r.domain_bits = f();
            r.budget_bytes = f();
            r.budget_limit = f();
            r.answer_bits = f();
            r.budget_period = next(4) as u8;
            r.level = [None, Some(super::Level::High)][next(2) as usize];
            r.distinct = 400 + next(2) as u32;
            r.longest_label = 50 + next(2) as u8;
            r.odd_bytes = next(2) as u8;
            r.window_secs = 300 + next(2) as u32;
            r.rare_type_pct = next(2) as u8;
            r.nx_pct = next(2) as u8;
            let mut text = String::new();
            r.write_for("abc.x.example", &mut text);
            all.push((r, text));
        }
        let mut same = 0;
        for (a, ta) in &all {
            for (b, tb) in &all {
                if a.reads_as(b) {
                    assert_eq!(ta, tb);
                    same += 1;
                } else if a.codes == b.codes {
                    // (Payload and LongLabel show the same text: other code
                    // sets may read alike, and are told apart.)
                    assert_ne!(ta, tb);
                }
            }
        }
        assert!(same > all.len() + 100, "pairs that read the same: {same}");
        // A figure the float formatter shows is never taken as the same.
        let mut odd = sample();
        odd.set(ReasonCode::Payload);
        odd.payload_bits = f32::NAN;
        assert!(!odd.reads_as(&odd));
        odd.payload_bits = 1e16;
        assert!(!odd.reads_as(&odd));
    }

    #[test]
    fn every_reason_reads_as_before() {
        let mut r = sample();
        let mut text = String::from("tunnel: ");
        r.write_for("abc.x.example.", &mut text);
        assert_eq!(text, "tunnel: no signal");
        for code in [
            ReasonCode::Payload,
            ReasonCode::OddBytes,
            ReasonCode::DistinctSubdomains,
            ReasonCode::DomainPayload,
            ReasonCode::RareTypes,
            ReasonCode::Nxdomain,
            ReasonCode::Quarantined,
            ReasonCode::Callback,
            ReasonCode::Exempt,
        ] {
            r.set(code);
        }
        let mut text = String::new();
        r.write_for("abc.x.example.", &mut text);
        assert_eq!(
            text,
            "exempt, x.example quarantined, x.example is an out-of-band callback service, \
             label 52 chars (base32), entropy 4.3 bits, 119 bits of payload evidence, \
             3 bytes outside the host-name alphabet, \
             412 distinct names under x.example in 300 s, 2048 B/min, \
             5120 bits of encoded payload sent to x.example (412 distinct names, 2048 B/min), \
             87% TXT/NULL/CNAME/MX/SRV queries, 12% NXDOMAIN"
        );
        assert_eq!(
            r.labels(),
            [
                "exempt",
                "quarantined",
                "callback service",
                "encoded label",
                "odd bytes",
                "many names",
                "domain payload",
                "rare types",
                "NXDOMAIN"
            ]
        );
        // `Display` shows the same text; without a name, "the domain".
        assert_eq!(r.display_for("abc.x.example").to_string(), text);
        assert!(
            r.to_string()
                .contains("412 distinct names under the domain in 300 s")
        );
        // The confidence level first; the budget, answer and identity reasons.
        let mut leveled = Reasons {
            level: Some(super::Level::High),
            budget_bytes: 97.4,
            budget_limit: 64.0,
            budget_period: 2,
            answer_bits: 900.0,
            ..sample()
        };
        for code in [
            ReasonCode::OddBytes,
            ReasonCode::Budget,
            ReasonCode::AnswerPayload,
            ReasonCode::Identity,
        ] {
            leveled.set(code);
        }
        assert_eq!(
            leveled.display_for("abc.x.example").to_string(),
            "high confidence, 3 bytes outside the host-name alphabet, \
             97 bytes of new name text sent to x.example in ~day (budget 64 B), \
             900 bits of encoded data in answers from x.example, \
             labels name a user and a host"
        );
    }

    #[test]
    fn reasons_read_back_as_written() {
        let mut r = Reasons {
            shape: Shape::Base64,
            total_len: 300,
            distinct: 70_000,
            ..sample()
        };
        r.set(ReasonCode::DistinctSubdomains);
        r.set(ReasonCode::Callback);
        let mut bytes = Vec::new();
        r.encode(&mut bytes);
        assert_eq!(bytes.len(), Reasons::ENCODED_LEN);
        assert_eq!(Reasons::decode(&bytes), Some(r));
        assert_eq!(
            Reasons::decode(&bytes).unwrap().rule_for("a.x.example"),
            r.rule_for("a.x.example")
        );
        // Level and budget figures (whole bytes and bits, as shown).
        let mut leveled = Reasons {
            level: Some(super::Level::High),
            budget_bytes: 97.4,
            budget_limit: 64.0,
            budget_period: 2,
            answer_bits: 1e9,
            ..r
        };
        leveled.set(ReasonCode::Budget);
        let mut b2 = Vec::new();
        leveled.encode(&mut b2);
        let back = Reasons::decode(&b2).unwrap();
        assert_eq!(
            (
                back.level,
                back.budget_bytes,
                back.budget_limit,
                back.budget_period,
                back.answer_bits
            ),
            (Some(super::Level::High), 97.0, 64.0, 2, 65535.0)
        );
        assert_eq!(
            back.rule_for("a.x.example"),
            leveled.rule_for("a.x.example")
        );
        b2[34] = 3 << 2; // no such period
        assert_eq!(Reasons::decode(&b2), None);
        // Wrong length or an unknown shape: refused, not misread.
        assert_eq!(Reasons::decode(&bytes[1..]), None);
        bytes[4] = 200;
        assert_eq!(Reasons::decode(&bytes), None);
    }

    #[test]
    fn decimals_match_the_float_formatter_away_from_ties() {
        let near_tie = |x: f32| (x - x.trunc()).abs() - 0.5 < 0.01 && (x - x.trunc()).abs() > 0.49;
        for i in 0..4000 {
            let v = i as f32 * 0.173 + 0.011;
            // Near ties (x.x5) the two may round differently: both are fine.
            if !near_tie(v * 10.0) {
                assert_eq!(Dec(v, 1).to_string(), format!("{v:.1}"), "{v}");
            }
            if !near_tie(v) {
                assert_eq!(Dec(v, 0).to_string(), format!("{v:.0}"), "{v}");
            }
        }
        assert_eq!(Dec(f32::NAN, 0).to_string(), "NaN");
    }
}
