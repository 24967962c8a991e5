//! Per-query lexical features of the part of a name below its registrable
//! domain, and the payload-evidence statistic built from them.
//!
//! The core statistic is a log-likelihood ratio, per label, between two code
//! lengths: the label's cost under the benign bigram model ([`super::bigram`])
//! and its cost as uniformly random symbols of the smallest encoding alphabet
//! that contains it (digits, hex, base32, base36, base64 with case, raw
//! bytes). Encoded payload (what tunnels put in names) is cheap to describe as
//! random data and expensive as human text; words, product names and short
//! identifiers are the opposite. Positive label ratios are summed into
//! `payload_bits`, "bits of evidence this name carries encoded data", which
//! grows with the amount of payload, as exfiltration volume does.

use super::bigram;

/// Alphabet shape of a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Shape {
    /// Empty or no label.
    #[default]
    None,
    /// Only digits.
    Digits,
    /// Hex digits (`0-9a-f`) with at least one letter.
    Hex,
    /// RFC 4648 base32 alphabet (`a-z2-7`) with at least one digit.
    Base32,
    /// Lower-case letters, digits and hyphens.
    Alnum,
    /// Mixed-case letters (base64 / base62 style), maybe with `-`/`_`.
    Base64,
    /// Bytes outside the host-name alphabet (8-bit encodings).
    Binary,
}

impl Shape {
    /// Short name used in reason text.
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::None => "none",
            Shape::Digits => "digits",
            Shape::Hex => "hex",
            Shape::Base32 => "base32",
            Shape::Alnum => "alnum",
            Shape::Base64 => "base64",
            Shape::Binary => "binary",
        }
    }

    /// The shape stored as byte `b` (its discriminant), if any.
    pub fn from_u8(b: u8) -> Option<Shape> {
        [
            Shape::None,
            Shape::Digits,
            Shape::Hex,
            Shape::Base32,
            Shape::Alnum,
            Shape::Base64,
            Shape::Binary,
        ]
        .get(usize::from(b))
        .copied()
    }
}

/// Lexical features of one query name (the part below its registrable domain).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lexical {
    /// Length in bytes of the scored part, dots included.
    pub total_len: u16,
    /// Longest label, in bytes.
    pub longest_label: u8,
    /// Number of labels in the scored part.
    pub labels: u8,
    /// Shannon entropy of the scored part's characters, in bits per char.
    pub entropy: f32,
    /// Share of digits among the characters.
    pub digit_ratio: f32,
    /// Number of distinct character classes used (lower, upper, digit, `-_`, other).
    pub char_classes: u8,
    /// Shape of the longest label.
    pub shape: Shape,
    /// Mean benign-model cost of the longest label, bits per character.
    pub bigram_bits: f32,
    /// Bytes outside the host-name alphabet `[A-Za-z0-9_-]`.
    pub odd_bytes: u8,
    /// Sum over labels of max(0, benign cost - random cost), plus a fixed
    /// charge per byte outside the host-name alphabet, in bits.
    pub payload_bits: f32,
}

/// Evidence charged per 8-bit or control byte (max 3 per label): such bytes
/// have (almost) no benign prior in names sent to a resolver.
const ODD_BYTE_BITS: f32 = 40.0;
/// Evidence charged per printable byte outside `[A-Za-z0-9_-]` (max 3 per label).
const ODD_PRINTABLE_BITS: f32 = 16.0;
/// Labels longer than this get extra evidence per character.
const LONG_LABEL: usize = 40;
/// Evidence per character beyond [`LONG_LABEL`].
const LONG_LABEL_BITS: f32 = 1.0;
/// Cap on the evidence of a name whose only random-looking label is a UUID
/// or a browser probe label.
const ID_CAP_BITS: f32 = 30.0;
/// Scored parts longer than this get extra evidence per character.
const LONG_NAME: usize = 80;
/// Evidence per character beyond [`LONG_NAME`].
const LONG_NAME_BITS: f32 = 0.25;

#[inline]
fn log2_alphabet(shape: Shape) -> f32 {
    match shape {
        Shape::None => 0.0,
        Shape::Digits => std::f32::consts::LOG2_10,
        Shape::Hex => 4.0,
        Shape::Base32 => 5.0,
        Shape::Alnum => 5.21,
        Shape::Base64 => 6.0,
        Shape::Binary => 7.0,
    }
}

/// Compute the features of `sub_raw` / `sub_lower` (same bytes, original and
/// lower case). No allocation.
pub(crate) fn lexical(sub_raw: &[u8], sub_lower: &[u8]) -> Lexical {
    let mut lx = Lexical {
        total_len: sub_raw.len().min(u16::MAX as usize) as u16,
        ..Lexical::default()
    };
    if sub_raw.is_empty() {
        return lx;
    }
    let mut hist = [0u16; 256];
    let (mut chars, mut digits) = (0u32, 0u32);
    let mut classes = 0u8;
    let (mut evidence_labels, mut extra, mut uuid, mut probe_like) = (0u32, 0.0f32, false, false);
    let mut start = 0usize;
    let n = sub_raw.len();
    let mut i = 0usize;
    while i <= n {
        if i == n || sub_raw[i] == b'.' {
            let (mut raw, mut low) = (&sub_raw[start..i], &sub_lower[start..i]);
            // RFC 8552 attribute leaves (`_tcp`, `_dmarc`, ...): the leading
            // underscore is syntax, not data.
            if raw.len() > 1 && raw[0] == b'_' {
                raw = &raw[1..];
                low = &low[1..];
            }
            if !raw.is_empty() {
                lx.labels = lx.labels.saturating_add(1);
                let (shape, upper, odd) = label_shape(raw, &mut classes);
                let odd8 = raw.iter().filter(|&&c| !(0x20..0x7f).contains(&c)).count() as u32;
                lx.odd_bytes = lx.odd_bytes.saturating_add(odd.min(255) as u8);
                let mut benign = bigram::label_bits(low);
                if upper > 0 && shape == Shape::Base64 {
                    // Benign names are written in one case: pay one bit per
                    // letter for the case pattern.
                    benign += letters(raw) as f32;
                }
                let random = if shape == Shape::Hex && is_hex_text(raw) {
                    // Hex-encoded printable text (files, command output):
                    // every high nibble is 2-7, so a byte costs 2.58 + 4 bits.
                    raw.len() as f32 * HEX_TEXT_BITS_PER_CHAR
                } else {
                    raw.len() as f32 * log2_alphabet(shape)
                };
                let llr = benign - random;
                if llr > 0.0 {
                    lx.payload_bits += llr;
                }
                if llr > 8.0 {
                    evidence_labels += 1;
                }
                if is_uuid(raw) {
                    uuid = true;
                }
                if start == 0
                    && (7..=15).contains(&raw.len())
                    && raw.iter().all(u8::is_ascii_lowercase)
                {
                    probe_like = llr > 8.0;
                }
                let extra_before = lx.payload_bits;
                // Bytes outside `[a-z0-9_-]`: DNS-SD instance names, the one
                // benign family using them, are exempted by `_tcp`/`_udp`.
                lx.payload_bits += ODD_BYTE_BITS * odd8.min(3) as f32
                    + ODD_PRINTABLE_BITS * (odd - odd8).min(3) as f32;
                // Very long labels are what tunnels use to maximise payload;
                // human-made labels rarely exceed 40 characters.
                if raw.len() > LONG_LABEL {
                    lx.payload_bits += LONG_LABEL_BITS * (raw.len() - LONG_LABEL) as f32;
                }
                extra += lx.payload_bits - extra_before;
                if raw.len() > usize::from(lx.longest_label) {
                    lx.longest_label = raw.len().min(255) as u8;
                    lx.shape = shape;
                    lx.bigram_bits = benign / (raw.len() + 1) as f32;
                }
                for &c in raw {
                    hist[usize::from(c)] += 1;
                    chars += 1;
                    digits += u32::from(c.is_ascii_digit());
                }
            }
            start = i + 1;
        }
        i += 1;
    }
    if chars > 0 {
        let total = chars as f32;
        let mut h = 0.0f32;
        for &c in hist.iter().filter(|&&c| c > 0) {
            let p = f32::from(c) / total;
            h -= p * p.log2();
        }
        lx.entropy = h;
        lx.digit_ratio = digits as f32 / total;
    }
    lx.char_classes = classes.count_ones() as u8;
    // A lone UUID is an identifier format (RFC 9562) that SaaS and tracker
    // hosts use widely, not a payload channel: cap its evidence.
    if uuid && extra == 0.0 && evidence_labels == 1 {
        lx.payload_bits = lx.payload_bits.min(ID_CAP_BITS);
    }
    // Chromium's intranet-redirect probes are 7-15 random lower-case letters
    // (alone or with the search domain appended); tunnels' encodings carry
    // digits. Cap a name whose only random-looking label is such a leftmost
    // letters-only label.
    if probe_like && extra == 0.0 && evidence_labels == 1 {
        lx.payload_bits = lx.payload_bits.min(ID_CAP_BITS);
    }
    // Long names carry more payload per query; human-made names below a
    // registrable domain rarely exceed 80 characters.
    if n > LONG_NAME {
        lx.payload_bits += LONG_NAME_BITS * (n - LONG_NAME) as f32;
    }
    lx
}

/// Code length per character of hex-encoded printable ASCII.
const HEX_TEXT_BITS_PER_CHAR: f32 = (2.585 + 4.0) / 2.0;

/// Whether a hex label looks like hex-encoded printable ASCII: even length,
/// at least 12 characters, and every byte's high nibble in `2..=7`.
fn is_hex_text(raw: &[u8]) -> bool {
    raw.len() >= 12
        && raw.len().is_multiple_of(2)
        && raw.iter().step_by(2).all(|c| (b'2'..=b'7').contains(c))
}

/// RFC 9562 UUID text form: 8-4-4-4-12 hex digits.
fn is_uuid(raw: &[u8]) -> bool {
    raw.len() == 36
        && raw.iter().enumerate().all(|(i, &c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

#[inline]
fn letters(raw: &[u8]) -> u32 {
    raw.iter().filter(|c| c.is_ascii_alphabetic()).count() as u32
}

/// Classify a label; returns the shape, the number of upper-case letters and
/// the number of bytes outside the host-name alphabet, and ORs the character classes seen into `classes`.
#[inline]
fn label_shape(raw: &[u8], classes: &mut u8) -> (Shape, u32, u32) {
    let (mut lower, mut upper, mut digit, mut punct, mut odd) = (0u32, 0u32, 0u32, 0u32, 0u32);
    let mut b64sym = 0u32;
    let (mut non_hex, mut non_b32_digit) = (false, false);
    for &c in raw {
        match c {
            b'a'..=b'z' => {
                lower += 1;
                non_hex |= c > b'f';
            }
            b'A'..=b'Z' => {
                upper += 1;
                non_hex |= c > b'F';
            }
            b'0'..=b'9' => {
                digit += 1;
                non_b32_digit |= !(b'2'..=b'7').contains(&c);
            }
            b'-' | b'_' => punct += 1,
            // Standard base64 symbols: not host-name characters, but a base64
            // alphabet rather than 8-bit data.
            b'+' | b'/' | b'=' => {
                punct += 1;
                b64sym += 1;
            }
            _ => odd += 1,
        }
    }
    *classes |= u8::from(lower > 0)
        | u8::from(upper > 0) << 1
        | u8::from(digit > 0) << 2
        | u8::from(punct > 0) << 3
        | u8::from(odd + b64sym > 0) << 4;
    let letters = lower + upper;
    let shape = if odd > 0 {
        Shape::Binary
    } else if (lower > 0 && upper > 0) || b64sym > 0 {
        Shape::Base64
    } else if letters == 0 && punct == 0 {
        Shape::Digits
    } else if punct == 0 && !non_hex && digit > 0 {
        Shape::Hex
    } else if punct == 0 && digit > 0 && !non_b32_digit {
        Shape::Base32
    } else if punct > 0 && raw.iter().filter(|&&c| c == b'_').count() > 0 && letters > 0 {
        Shape::Base64
    } else {
        Shape::Alnum
    };
    (shape, upper, odd + b64sym)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lx(s: &str) -> Lexical {
        lexical(s.as_bytes(), s.to_ascii_lowercase().as_bytes())
    }

    #[test]
    fn shapes() {
        assert_eq!(lx("deadbeef0123").shape, Shape::Hex);
        assert_eq!(lx("mzxw6ytboi2a").shape, Shape::Base32);
        assert_eq!(lx("aGVsbG8gd29ybGQ").shape, Shape::Base64);
        assert_eq!(lx("www").shape, Shape::Alnum);
        assert_eq!(lx("12345").shape, Shape::Digits);
        assert_eq!(lx("a\u{7f}b").shape, Shape::Binary);
    }

    #[test]
    fn hex_encoded_text_is_recognised() {
        assert!(is_hex_text(b"6170703a53336372"));
        assert!(!is_hex_text(b"9f86d081884c7d65"));
        let text = lx("77334572355479395569314f7032417334446636");
        let hash = lx("9f86d081884c7d659a2f8a2a0f4e3b1c4f3e2a1d");
        assert!(text.payload_bits > 40.0, "{text:?}");
        assert!(hash.payload_bits > 40.0, "{hash:?}");
    }

    #[test]
    fn payload_evidence_separates_words_from_encodings() {
        let words = lx("static.images.download");
        let hex = lx("3a3e393e3b3b343b3d3c35343a3b393f313e3b3b");
        assert!(words.payload_bits < 5.0, "{words:?}");
        assert!(hex.payload_bits > 40.0, "{hex:?}");
        assert_eq!(hex.longest_label, 40);
        assert_eq!(words.labels, 3);
        assert!(hex.entropy > 2.5 && hex.entropy < 4.1);
    }
}
