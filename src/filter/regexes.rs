//! Regex rules (`/…/`). Each regex's *required literal* (a run of literal characters outside any group or
//! alternation, e.g. `track-` in `(^|\.)track-[0-9]+\.`) goes into the shared Aho-Corasick index
//! ([`super::literal`]), so a regex runs only for names containing its literal. Regexes with no such literal
//! are gathered in one `regex::RegexSet` that answers "does any of them match" in a single pass; only then are
//! the individual regexes run to find which rule decided (no allocation, unlike `RegexSet::matches`).
//! Note: the `regex` crate keeps its per-thread search caches in an internal pool; after warm-up this costs no
//! allocation, and only filters that contain regex rules touch it.

use regex::{Regex, RegexSet};

use super::parse::Modifiers;

/// One compiled regex rule's metadata.
#[derive(Debug)]
pub struct RegexRule {
    /// Source id.
    pub source: u32,
    /// Kind bits (allow / important).
    pub kind: u8,
    /// 1-based line (or entry index + 1).
    pub line: u32,
    /// `$dnstype` / `$client` / `$denyallow`.
    pub modifiers: Option<Box<Modifiers>>,
}

/// All regex rules of a filter.
#[derive(Debug)]
pub struct RegexRules {
    /// Set over the rules without a required literal (`None` if there are none).
    set: Option<RegexSet>,
    /// Indices of those rules.
    pub always: Vec<u32>,
    /// Required literal of each rule (`None` → in `set`).
    pub literals: Vec<Option<String>>,
    each: Vec<Regex>,
    /// Per-rule metadata.
    pub rules: Vec<RegexRule>,
}

impl RegexRules {
    /// Compiles the patterns (already validated by the parser, so an error here means a size limit).
    pub fn build(patterns: &[String], rules: Vec<RegexRule>) -> Result<Self, regex::Error> {
        let each = patterns
            .iter()
            .map(|p| Regex::new(p))
            .collect::<Result<Vec<_>, _>>()?;
        let literals: Vec<Option<String>> = patterns.iter().map(|p| required_literal(p)).collect();
        let always: Vec<u32> = literals
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_none())
            .map(|(i, _)| i as u32)
            .collect();
        let set = if always.is_empty() {
            None
        } else {
            Some(RegexSet::new(
                always.iter().filter_map(|&i| patterns.get(i as usize)),
            )?)
        };
        Ok(RegexRules {
            set,
            always,
            literals,
            each,
            rules,
        })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True if there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any of the regexes without a required literal matches `name` (one pass).
    #[inline]
    pub fn any_always(&self, name: &str) -> bool {
        self.set.as_ref().is_some_and(|s| s.is_match(name))
    }

    /// Whether rule `i` matches `name`.
    #[inline]
    pub fn matches(&self, i: usize, name: &str) -> bool {
        self.each.get(i).is_some_and(|r| r.is_match(name))
    }
}

/// A literal substring every match of `pattern` must contain, if one can be found conservatively: the longest
/// run of literal characters at nesting depth 0, in a pattern without top-level alternation or inline flags.
/// Characters followed by a quantifier are not part of a run. `None` when unsure.
pub fn required_literal(pattern: &str) -> Option<String> {
    if pattern.contains("(?") {
        return None;
    }
    let b = pattern.as_bytes();
    let mut best: Vec<u8> = Vec::new();
    let mut run: Vec<u8> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    // A run that looks like a TLD (`.com`) occurs in a large share of names and would make the regex a
    // candidate almost always; it ranks below any other run.
    let score = |r: &[u8]| -> usize {
        let tld_like =
            r.len() <= 7 && r.first() == Some(&b'.') && r[1..].iter().all(u8::is_ascii_alphabetic);
        if tld_like { r.len() } else { r.len() + 8 }
    };
    let flush = |run: &mut Vec<u8>, best: &mut Vec<u8>| {
        if !run.is_empty() && (best.is_empty() || score(run) > score(best)) {
            *best = std::mem::take(run);
        }
        run.clear();
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'\\' => {
                let next = *b.get(i + 1)?;
                if depth == 0 && b".-_/".contains(&next) {
                    run.push(next);
                } else if depth == 0 && next.is_ascii_alphanumeric() {
                    // \d, \w, \b, ...: a class or assertion, ends the run.
                    flush(&mut run, &mut best);
                } else if depth == 0 {
                    run.push(next);
                }
                i += 2;
                continue;
            }
            b'[' => {
                flush(&mut run, &mut best);
                // Skip the class: `]` right after `[` or `[^` is literal.
                let mut j = i + 1;
                if b.get(j) == Some(&b'^') {
                    j += 1;
                }
                if b.get(j) == Some(&b']') {
                    j += 1;
                }
                while j < b.len() && b[j] != b']' {
                    if b[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                if j >= b.len() {
                    return None;
                }
                i = j + 1;
                continue;
            }
            b'(' => {
                flush(&mut run, &mut best);
                depth += 1;
            }
            b')' => {
                depth = depth.checked_sub(1)?;
            }
            b'|' if depth == 0 => return None,
            b'?' | b'*' | b'{' => {
                // The previous character is optional or repeated: drop it from the run.
                run.pop();
                flush(&mut run, &mut best);
                if c == b'{' {
                    while i < b.len() && b[i] != b'}' {
                        i += 1;
                    }
                }
            }
            b'+' => flush(&mut run, &mut best),
            b'.' | b'^' | b'$' => flush(&mut run, &mut best),
            _ if depth == 0 => run.push(c),
            _ => {}
        }
        i += 1;
    }
    flush(&mut run, &mut best);
    if best.is_empty() || !best.is_ascii() {
        return None;
    }
    String::from_utf8(best).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(
            required_literal(r"^ad[0-9]+\.example\.com$").as_deref(),
            Some(".example.com")
        );
        assert_eq!(
            required_literal(r"(^|\.)track-z1-[a-z0-9]+\.").as_deref(),
            Some("track-z1-")
        );
        assert_eq!(
            required_literal(r"^[a-z]+33adserv\d+\.").as_deref(),
            Some("33adserv")
        );
        assert_eq!(
            required_literal(r"^adserv[0-9]{2,4}q0\.[a-z]+\.com$").as_deref(),
            Some("adserv")
        );
        assert_eq!(required_literal(r"abcd?e").as_deref(), Some("abc"));
        assert_eq!(required_literal(r"ab|cd"), None);
        assert_eq!(required_literal(r"(?i)abc"), None);
        assert_eq!(required_literal(r"^.*$"), None);
        assert_eq!(required_literal(r"(ads|trk)\d"), None);
    }

    #[test]
    fn literal_is_really_required() {
        // Every name matching the regex contains the literal.
        let cases = [
            (r"^ad[0-9]+\.example\.com$", "ad12.example.com"),
            (r"(^|\.)track-z1-[a-z0-9]+\.", "x.track-z1-abc.net"),
            (r"abcd?e", "abce"),
            (r"x{2}yz", "xxyz"),
        ];
        for (re, name) in cases {
            let r = Regex::new(re).unwrap_or_else(|e| panic!("{e}"));
            assert!(r.is_match(name));
            let lit = required_literal(re).unwrap_or_default();
            assert!(name.contains(&lit), "{re}: {lit:?} not in {name}");
        }
    }
}
