//! Query-name decoding and splitting at the registrable domain.
//!
//! Names arrive in presentation format (`\DDD` and `\X` escapes possible).
//! They are decoded into fixed stack buffers (no allocation): one keeping the
//! original case (case mix is a feature of base64-style payloads) and one
//! lower-cased for the Public Suffix List and the bigram model. The part
//! *below* the registrable domain (eTLD+1, private PSL section included) is
//! what gets scored.

/// Longest decoded name handled; longer input is truncated (a DNS name is at
/// most 255 octets on the wire).
pub(crate) const MAX_NAME: usize = 256;

/// A decoded query name.
pub(crate) struct Name {
    raw: [u8; MAX_NAME],
    lower: [u8; MAX_NAME],
    len: usize,
    /// Number of bytes that are not `[A-Za-z0-9_-.]`.
    pub(crate) odd_bytes: u16,
    /// Start of the registrable domain in `lower` (== len when none).
    reg_start: usize,
    /// End of the scored part (exclusive), i.e. the dot before the
    /// registrable domain, or `len` when the whole name is scored.
    sub_end: usize,
    /// The name ends in a known public suffix.
    public: bool,
}

impl Name {
    /// Decode `qname` (presentation format, trailing dot optional).
    pub(crate) fn parse(qname: &str) -> Name {
        let mut n = Name {
            raw: [0; MAX_NAME],
            lower: [0; MAX_NAME],
            len: 0,
            odd_bytes: 0,
            reg_start: 0,
            sub_end: 0,
            public: false,
        };
        let b = qname.as_bytes();
        let mut i = 0;
        while i < b.len() && n.len < MAX_NAME {
            let mut c = b[i];
            i += 1;
            if c == b'\\' && i < b.len() {
                if i + 3 <= b.len() && b[i..i + 3].iter().all(u8::is_ascii_digit) {
                    let v = u16::from(b[i] - b'0') * 100
                        + u16::from(b[i + 1] - b'0') * 10
                        + u16::from(b[i + 2] - b'0');
                    c = v.min(255) as u8;
                    i += 3;
                } else {
                    c = b[i];
                    i += 1;
                }
                // An escaped dot is data, not a separator: map it to an odd byte.
                if c == b'.' {
                    c = 0x7f;
                }
            }
            if !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.') {
                n.odd_bytes = n.odd_bytes.saturating_add(1);
            }
            n.raw[n.len] = c;
            n.lower[n.len] = c.to_ascii_lowercase();
            n.len += 1;
        }
        while n.len > 0 && n.lower[n.len - 1] == b'.' {
            n.len -= 1;
        }
        n.split();
        n
    }

    fn split(&mut self) {
        let len = self.len;
        let lower = &self.lower[..len];
        match psl::domain(lower) {
            Some(d) if d.suffix().is_known() => {
                let reg_len = d.as_bytes().len();
                self.reg_start = len - reg_len;
                self.sub_end = self.reg_start.saturating_sub(1);
                self.public = true;
            }
            other => {
                // Unknown TLD or a single label: key the state by the last
                // two labels (the PSL's implicit `*` rule) but score the
                // whole name (dnscat2 without a domain puts payload in
                // every label).
                self.reg_start = other.map_or(0, |d| len - d.as_bytes().len());
                self.sub_end = len;
            }
        }
    }

    /// The whole lower-cased name.
    pub(crate) fn lower(&self) -> &[u8] {
        &self.lower[..self.len]
    }

    /// The registrable domain (lower case), used as the state key.
    pub(crate) fn registrable(&self) -> &[u8] {
        &self.lower[self.reg_start..self.len]
    }

    /// The text below the registrable domain (lower case, without the dot
    /// before it; empty when the name is its registrable domain, and when
    /// it has no known public suffix: such a name never reaches a server on
    /// the internet through public delegation — `cluster.local`, `corp`,
    /// `lan` — so it carries nothing out).
    pub(crate) fn below(&self) -> &[u8] {
        if self.public {
            &self.lower[..self.reg_start.saturating_sub(1)]
        } else {
            &[]
        }
    }

    /// The scored part, original case.
    pub(crate) fn sub_raw(&self) -> &[u8] {
        &self.raw[..self.sub_end]
    }

    /// The scored part, lower case.
    pub(crate) fn sub_lower(&self) -> &[u8] {
        &self.lower[..self.sub_end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_registrable_domain() {
        let n = Name::parse("abc.def.example.co.uk");
        assert_eq!(n.registrable(), b"example.co.uk");
        assert_eq!(n.sub_lower(), b"abc.def");
        let n = Name::parse("x.dma7tiosqmzbx.cloudfront.net.");
        assert_eq!(n.registrable(), b"dma7tiosqmzbx.cloudfront.net");
        assert_eq!(n.sub_lower(), b"x");
        let n = Name::parse("example.com");
        assert_eq!(n.sub_lower(), b"");
    }

    #[test]
    fn decodes_escapes_and_keeps_case() {
        let n = Name::parse(r"a\200B\.c.Example.COM");
        assert_eq!(n.sub_raw(), b"a\xc8B\x7fc");
        assert_eq!(n.sub_lower(), b"a\xc8b\x7fc");
        assert_eq!(n.odd_bytes, 2);
        assert_eq!(n.registrable(), b"example.com");
    }

    #[test]
    fn unknown_tld_scores_whole_name() {
        let n = Name::parse("dnscat.99ec0101deded5b5d3eb2b1ed8da9268fc");
        assert_eq!(n.registrable(), n.lower());
        let n = Name::parse("a.b.evil.invalidtld");
        assert_eq!(n.registrable(), b"evil.invalidtld");
        assert_eq!(n.sub_lower(), n.lower());
        // Nothing below it leaves through public delegation.
        assert_eq!(n.below(), b"");
        assert_eq!(Name::parse("svc-a.ns.svc.cluster.local").below(), b"");
        assert_eq!(Name::parse("abc.def.example.co.uk").below(), b"abc.def");
    }
}
