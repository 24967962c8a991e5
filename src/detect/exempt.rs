//! Exemptions for benign services that put high-entropy data in names, and
//! the watch list of out-of-band callback services.
//!
//! The built-in list is `data/exemptions.txt` (documented there, one entry
//! per line with the service and why it is benign); users add lines in the
//! same syntax through `DetectConfig::exemptions`. Suffix entries exempt a
//! name entirely; underscore-label entries (`_domainkey`, `_acme-challenge`,
//! `_github-challenge-*`) only skip the lexical score, so the per-domain window
//! still sees a tunnel that hides its payload next to such a label.
//!
//! Matching allocates nothing: suffixes are hashed right to left at label
//! boundaries (at most [`MAX_SUFFIX_LABELS`] labels deep) and looked up in a
//! hash set; labels starting with `_` are looked up in a second set and in a
//! short prefix list.

use std::collections::HashSet;

use super::error::DetectError;
use super::hash::{BuildKeyHasher, hash_bytes};

/// The built-in exemption list.
pub const BUILTIN_EXEMPTIONS: &str = include_str!("data/exemptions.txt");

/// The built-in watch list of out-of-band callback services.
pub const BUILTIN_CALLBACKS: &str = include_str!("data/callbacks.txt");

/// Deepest suffix pattern supported, in labels.
pub const MAX_SUFFIX_LABELS: usize = 8;

/// How a name is exempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exemption {
    /// Not exempt.
    #[default]
    None,
    /// Contains an exempt underscore label: no lexical score, state kept.
    Label,
    /// Under an exempt suffix: not scored, no state.
    Suffix,
}

/// Compiled exemption patterns.
#[derive(Debug, Clone)]
pub(crate) struct Exemptions {
    seed: u64,
    suffixes: HashSet<u64, BuildKeyHasher>,
    labels: HashSet<u64, BuildKeyHasher>,
    label_prefixes: Vec<Box<[u8]>>,
}

impl Exemptions {
    /// Compile the built-in list (if `builtin`) plus `extra` lines.
    pub(crate) fn new(seed: u64, builtin: bool, extra: &[String]) -> Result<Self, DetectError> {
        let mut ex = Exemptions {
            seed,
            suffixes: HashSet::default(),
            labels: HashSet::default(),
            label_prefixes: Vec::new(),
        };
        if builtin {
            for (i, line) in BUILTIN_EXEMPTIONS.lines().enumerate() {
                ex.add_line(line).map_err(|e| DetectError::Exemption {
                    line: i + 1,
                    msg: e,
                })?;
            }
        }
        for (i, line) in extra.iter().enumerate() {
            ex.add_line(line).map_err(|e| DetectError::Exemption {
                line: i + 1,
                msg: e,
            })?;
        }
        Ok(ex)
    }

    fn add_line(&mut self, line: &str) -> Result<(), String> {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            return Ok(());
        }
        let entry = entry.to_ascii_lowercase();
        let entry = entry.trim_end_matches('.');
        let entry = entry.strip_prefix("*.").unwrap_or(entry);
        if entry.contains(char::is_whitespace) {
            return Err(format!("unexpected whitespace in {entry:?}"));
        }
        if entry.starts_with('_') && !entry.contains('.') {
            if let Some(prefix) = entry.strip_suffix('*') {
                if prefix.len() < 2 {
                    return Err("label prefix too short".into());
                }
                self.label_prefixes.push(prefix.as_bytes().into());
            } else {
                self.labels.insert(hash_bytes(self.seed, entry.as_bytes()));
            }
            return Ok(());
        }
        self.suffixes.insert(suffix_hash(self.seed, entry)?);
        Ok(())
    }

    /// Check a lower-case name.
    pub(crate) fn check(&self, name: &[u8]) -> Exemption {
        if suffix_match(self.seed, &self.suffixes, name).is_some() {
            return Exemption::Suffix;
        }
        // Underscore labels anywhere.
        for label in name.split(|&c| c == b'.') {
            if label.first() != Some(&b'_') {
                continue;
            }
            if self.labels.contains(&hash_bytes(self.seed, label))
                || self.label_prefixes.iter().any(|p| label.starts_with(p))
            {
                return Exemption::Label;
            }
        }
        Exemption::None
    }
}

/// Validate a suffix entry and hash it.
fn suffix_hash(seed: u64, entry: &str) -> Result<u64, String> {
    if entry.contains('*') {
        return Err(format!(
            "wildcard only allowed as `*.` prefix or `_label*`: {entry:?}"
        ));
    }
    if entry.split('.').count() > MAX_SUFFIX_LABELS {
        return Err(format!("suffix deeper than {MAX_SUFFIX_LABELS} labels"));
    }
    if entry.split('.').any(str::is_empty) {
        return Err(format!("empty label in {entry:?}"));
    }
    Ok(hash_bytes(seed, entry.as_bytes()))
}

/// If a suffix of `name` (at a label boundary, at most
/// [`MAX_SUFFIX_LABELS`] deep) is in `set`, the offset where it starts.
fn suffix_match(seed: u64, set: &HashSet<u64, BuildKeyHasher>, name: &[u8]) -> Option<usize> {
    if set.is_empty() || name.is_empty() {
        return None;
    }
    let mut depth = 0;
    let mut end = name.len();
    loop {
        let start = name[..end]
            .iter()
            .rposition(|&c| c == b'.')
            .map_or(0, |p| p + 1);
        if set.contains(&hash_bytes(seed, &name[start..])) {
            return Some(start);
        }
        depth += 1;
        if start == 0 || depth >= MAX_SUFFIX_LABELS {
            return None;
        }
        end = start - 1;
    }
}

/// Watch list of out-of-band callback domains (`data/callbacks.txt` plus
/// config lines): names below them are flagged whatever their shape.
#[derive(Debug, Clone)]
pub(crate) struct Watchlist {
    seed: u64,
    suffixes: HashSet<u64, BuildKeyHasher>,
}

impl Watchlist {
    /// Compile the built-in list (if `builtin`) plus `extra` lines.
    pub(crate) fn new(seed: u64, builtin: bool, extra: &[String]) -> Result<Self, DetectError> {
        let mut w = Watchlist {
            seed,
            suffixes: HashSet::default(),
        };
        let builtin_lines = if builtin { BUILTIN_CALLBACKS } else { "" }.lines();
        let lines = builtin_lines
            .map(str::to_string)
            .chain(extra.iter().cloned());
        for (i, line) in lines.enumerate() {
            let entry = line
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let entry = entry.trim_end_matches('.');
            if entry.is_empty() {
                continue;
            }
            let h = suffix_hash(seed, entry)
                .map_err(|msg| DetectError::Exemption { line: i + 1, msg })?;
            w.suffixes.insert(h);
        }
        Ok(w)
    }

    /// Whether `name` lies strictly below a watched domain (and is not just
    /// its `www.` host).
    pub(crate) fn hit(&self, name: &[u8]) -> bool {
        match suffix_match(self.seed, &self.suffixes, name) {
            Some(start) if start > 0 => &name[..start] != b"www.",
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex() -> Exemptions {
        Exemptions::new(7, true, &["corp.example # internal".into()]).unwrap()
    }

    #[test]
    fn builtin_list_parses_and_matches() {
        let e = ex();
        assert_eq!(
            e.check(b"3b174fe909ce67ddbf9e4832f00751b8.hash.cymru.com"),
            Exemption::Suffix
        );
        assert_eq!(e.check(b"hash.cymru.com"), Exemption::Suffix);
        assert_eq!(e.check(b"xhash.cymru.com"), Exemption::None);
        assert_eq!(e.check(b"s1._domainkey.example.com"), Exemption::Label);
        assert_eq!(
            e.check(b"_github-challenge-acme-org.acme.com"),
            Exemption::Label
        );
        assert_eq!(e.check(b"a.b.corp.example"), Exemption::Suffix);
        assert_eq!(e.check(b"www.example.com"), Exemption::None);
        assert_eq!(e.check(b"_unknown.example.com"), Exemption::None);
    }

    #[test]
    fn watchlist() {
        let w = Watchlist::new(3, true, &["callbacks.example".into()]).unwrap();
        assert!(w.hit(b"alice.laptop.c2abc.oast.pro"));
        assert!(w.hit(b"x.callbacks.example"));
        assert!(!w.hit(b"oast.pro"));
        assert!(!w.hit(b"www.interact.sh"));
        assert!(!w.hit(b"example.com"));
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(Exemptions::new(1, false, &["foo.*.com".into()]).is_err());
        assert!(Exemptions::new(1, false, &["a b".into()]).is_err());
        assert!(Exemptions::new(1, false, &["# only a comment".into(), "".into()]).is_ok());
    }
}
