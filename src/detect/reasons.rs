//! Structured, `Copy` reasons for a score. The hot path only stores codes and
//! numbers; text is produced by `Display` when someone looks at it.

use std::fmt;

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
    /// The registrable domain is quarantined.
    Quarantined = 1 << 7,
    /// The name matched an exemption (suffix, or underscore label).
    Exempt = 1 << 8,
    /// The name is below a known out-of-band callback service.
    Callback = 1 << 9,
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
}

impl Reasons {
    /// Whether `code` contributed to the score.
    pub fn has(&self, code: ReasonCode) -> bool {
        self.codes & code as u16 != 0
    }

    pub(crate) fn set(&mut self, code: ReasonCode) {
        self.codes |= code as u16;
    }

    /// Whether no reason was recorded.
    pub fn is_empty(&self) -> bool {
        self.codes == 0
    }

    /// Display with the registrable domain taken from `qname` (the name the
    /// score was computed for), e.g. "412 distinct names under x.example".
    pub fn display_for<'a>(&'a self, qname: &'a str) -> impl fmt::Display + 'a {
        let q = qname.trim_end_matches('.');
        let n = usize::from(self.reg_len);
        let domain = if n > 0 && n <= q.len() && q.is_char_boundary(q.len() - n) {
            &q[q.len() - n..]
        } else {
            "the domain"
        };
        Shown {
            reasons: self,
            domain,
        }
    }
}

/// A number shown with 0 or 1 decimals through integer formatting: Rust's
/// float formatting costs thousands of instructions, and a flagged query's
/// reasons are formatted for the log on the DNS path.
struct Dec(f32, u8);

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Dec(v, decimals) = *self;
        if !v.is_finite() || v.abs() >= 1e15 {
            return write!(f, "{v:.*}", usize::from(decimals));
        }
        if decimals == 0 {
            return write!(f, "{}", v.round() as i64);
        }
        let tenths = (v * 10.0).round() as i64;
        let sign = if tenths < 0 { "-" } else { "" };
        write!(f, "{sign}{}.{}", tenths.abs() / 10, tenths.abs() % 10)
    }
}

struct Shown<'a> {
    reasons: &'a Reasons,
    domain: &'a str,
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.reasons;
        let mut parts = 0;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            parts += 1;
            if parts > 1 { f.write_str(", ") } else { Ok(()) }
        };
        if r.has(ReasonCode::Exempt) {
            sep(f)?;
            write!(f, "exempt")?;
        }
        if r.has(ReasonCode::Quarantined) {
            sep(f)?;
            write!(f, "{} quarantined", self.domain)?;
        }
        if r.has(ReasonCode::Callback) {
            sep(f)?;
            write!(f, "{} is an out-of-band callback service", self.domain)?;
        }
        if r.has(ReasonCode::Payload) || r.has(ReasonCode::LongLabel) {
            sep(f)?;
            write!(
                f,
                "label {} chars ({}), entropy {} bits, {} bits of payload evidence",
                r.longest_label,
                r.shape.as_str(),
                Dec(r.entropy, 1),
                Dec(r.payload_bits, 0)
            )?;
        }
        if r.has(ReasonCode::OddBytes) {
            sep(f)?;
            write!(f, "{} bytes outside the host-name alphabet", r.odd_bytes)?;
        }
        if r.has(ReasonCode::DistinctSubdomains) {
            sep(f)?;
            write!(
                f,
                "{} distinct names under {} in {} s, {} B/min",
                r.distinct,
                self.domain,
                r.window_secs,
                Dec(r.bytes_per_min, 0)
            )?;
        }
        if r.has(ReasonCode::DomainPayload) {
            sep(f)?;
            write!(
                f,
                "{} bits of encoded payload sent to {} ({} distinct names, {} B/min)",
                Dec(r.domain_bits, 0),
                self.domain,
                r.distinct,
                Dec(r.bytes_per_min, 0)
            )?;
        }
        if r.has(ReasonCode::RareTypes) {
            sep(f)?;
            write!(f, "{}% TXT/NULL/CNAME/MX/SRV queries", r.rare_type_pct)?;
        }
        if r.has(ReasonCode::Nxdomain) {
            sep(f)?;
            write!(f, "{}% NXDOMAIN", r.nx_pct)?;
        }
        if parts == 0 {
            write!(f, "no signal")?;
        }
        Ok(())
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
    use super::Dec;

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
