//! Wildcard (`*`) rules: compilation and verification of one pattern.
//!
//! How candidates are found (the matcher decides, see [`super::matcher`]):
//! * end-anchored patterns whose literal tail holds a domain of at least two labels (`||ad*.example.com^` →
//!   `example.com`) are indexed under that domain's fingerprint in the main table, so they cost nothing for
//!   names outside that domain ([`WildRule::suffix_key`]);
//! * the others go into the shared Aho-Corasick index over literal fragments ([`super::literal`]);
//! * a hit is verified against the full pattern here, and modifiers by the caller.

use super::parse::{Anchor, Modifiers};
use crate::name;

/// One compiled wildcard rule.
#[derive(Debug)]
pub struct WildRule {
    /// Source id (list or group entry set).
    pub source: u32,
    /// Kind bits (allow / important).
    pub kind: u8,
    /// 1-based line (or entry index + 1).
    pub line: u32,
    /// `||` anchoring: the pattern may start at any label boundary.
    label_anchored: bool,
    /// The effective glob: `*` prepended when unanchored at the start, appended when unanchored at the end.
    glob: Box<[u8]>,
    /// `$dnstype` / `$client` / `$denyallow`.
    pub modifiers: Option<Box<Modifiers>>,
}

impl WildRule {
    /// Builds a rule from the parsed pattern.
    pub fn new(
        source: u32,
        kind: u8,
        line: u32,
        anchor: Anchor,
        glob: &str,
        end_anchored: bool,
        modifiers: Option<Box<Modifiers>>,
    ) -> Self {
        let mut g = Vec::with_capacity(glob.len() + 2);
        if anchor == Anchor::None {
            g.push(b'*');
        }
        g.extend_from_slice(glob.as_bytes());
        if !end_anchored {
            g.push(b'*');
        }
        WildRule {
            source,
            kind,
            line,
            label_anchored: anchor == Anchor::Label,
            glob: g.into(),
            modifiers,
        }
    }

    /// Whether the pattern matches `name` (modifiers not checked).
    pub fn matches(&self, name: &[u8]) -> bool {
        if glob_match(&self.glob, name) {
            return true;
        }
        if self.label_anchored {
            let mut rest = name;
            while let Some(dot) = rest.iter().position(|&b| b == b'.') {
                rest = &rest[dot + 1..];
                if glob_match(&self.glob, rest) {
                    return true;
                }
            }
        }
        false
    }

    /// The longest literal fragment (empty when the pattern has none, e.g. `*`).
    pub fn fragment(&self) -> &[u8] {
        self.glob
            .split(|&b| b == b'*')
            .max_by_key(|f| f.len())
            .unwrap_or(&[])
    }

    /// For an end-anchored pattern ending in `.x.y` after its last `*` (`||ad*.example.com^`), the domain
    /// `x.y` (at least two labels): every name the rule matches is a strict subdomain of it.
    pub fn suffix_key(&self) -> Option<&str> {
        if self.glob.last() == Some(&b'*') {
            return None;
        }
        let tail = self.glob.rsplit(|&b| b == b'*').next()?;
        // A pattern without `*` keeps its start anchoring in the tail; require a dot inside the tail either way.
        let dot = tail.iter().position(|&b| b == b'.')?;
        let dom = std::str::from_utf8(&tail[dot + 1..]).ok()?;
        (dom.contains('.') && name::validate(dom).is_ok()).then_some(dom)
    }
}

/// Iterative glob match where `*` matches any run of bytes (linear backtracking, no recursion).
pub fn glob_match(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(anchor: Anchor, glob: &str, end: bool) -> WildRule {
        WildRule::new(0, 0, 1, anchor, glob, end, None)
    }

    #[test]
    fn globbing() {
        assert!(glob_match(b"a*c", b"abc"));
        assert!(glob_match(b"a*c", b"ac"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"a*c", b"abd"));
        assert!(glob_match(b"*ads*", b"myads.com"));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
    }

    #[test]
    fn anchors() {
        let r = rule(Anchor::Label, "ad*.example.com", true);
        assert!(r.matches(b"ad1.example.com"));
        assert!(r.matches(b"x.ads.example.com"));
        assert!(!r.matches(b"bad.example.com"));
        assert!(!r.matches(b"ad1.example.com.evil"));
        let r = rule(Anchor::None, "ads", false);
        assert!(r.matches(b"myads.com") && !r.matches(b"example.com"));
        let r = rule(Anchor::Start, "ad*", true);
        assert!(r.matches(b"ad.example.com") && !r.matches(b"x.ad.com"));
        let r = rule(Anchor::Label, "exam", false);
        assert!(r.matches(b"www.example.com") && !r.matches(b"myexample.com"));
    }

    #[test]
    fn suffix_keys() {
        assert_eq!(
            rule(Anchor::Label, "ad*.example.com", true).suffix_key(),
            Some("example.com")
        );
        assert_eq!(
            rule(Anchor::Start, "x-*.cdn.top", true).suffix_key(),
            Some("cdn.top")
        );
        assert_eq!(
            rule(Anchor::Label, "*ads-1.com", true).suffix_key(),
            None,
            "one label is not selective"
        );
        assert_eq!(
            rule(Anchor::Label, "ad*.example.com", false).suffix_key(),
            None,
            "not end-anchored"
        );
        assert_eq!(rule(Anchor::None, "ads", false).suffix_key(), None);
    }
}
