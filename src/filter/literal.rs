//! The shared literal index: one Aho-Corasick automaton over the literal fragments of wildcard rules and the
//! required literals of regex rules. A fragment found in the query name makes its rules *candidates*, which
//! are then verified (glob / regex, then modifiers). Rules without any usable literal are candidates for every
//! name (handled by the matcher).
//!
//! Prefilter: when every fragment is at least 3 bytes long, the first 4-byte window of each fragment (its 3
//! bytes for 3-byte fragments) is hashed into a 64 Kbit (8 KiB, L1-resident) bitset. A fragment can only occur
//! in a name if one of the name's windows has its bit set, so most names skip the automaton after one
//! independent bit test per byte (a DFA walk is a chain of dependent loads). The automaton then confirms real
//! occurrences. Fragments shorter than 3 bytes disable the prefilter.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use super::hash::FastMap;

/// A candidate rule: a wildcard rule or a regex rule, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cand {
    /// Index into the wildcard rules.
    Wild(u32),
    /// Index into the regex rules.
    Regex(u32),
}

/// Literal fragments → candidate rules.
#[derive(Debug, Default)]
pub struct LiteralIndex {
    ac: Option<AhoCorasick>,
    by_pattern: Vec<Vec<Cand>>,
    grams: Option<Box<[u64]>>,
    /// Whether some fragment is exactly 3 bytes (then 3-byte windows are checked too).
    grams3: bool,
}

const GRAM_BITS: u32 = 16;

#[inline(always)]
fn gram_hash(w: u32) -> usize {
    (w.wrapping_mul(0x9E37_79B1) >> (32 - GRAM_BITS)) as usize
}

#[inline(always)]
fn window(b: &[u8], i: usize) -> Option<u32> {
    match b.get(i..i + 4) {
        Some(&[a, b, c, d]) => Some(u32::from_le_bytes([a, b, c, d])),
        _ => None,
    }
}

/// 3-byte window, tagged in the top byte so it never equals a 4-byte window.
#[inline(always)]
fn window3(b: &[u8], i: usize) -> Option<u32> {
    match b.get(i..i + 3) {
        Some(&[a, b, c]) => Some(u32::from_le_bytes([a, b, c, 0xff])),
        _ => None,
    }
}

#[inline(always)]
fn test(bits: &[u64], w: u32) -> bool {
    let h = gram_hash(w);
    bits.get(h / 64).is_some_and(|x| x & (1 << (h % 64)) != 0)
}

impl LiteralIndex {
    /// Builds the automaton over `(fragment, candidate)` pairs (fragments must be non-empty).
    pub fn build<'a>(
        items: impl IntoIterator<Item = (&'a [u8], Cand)>,
    ) -> Result<Self, aho_corasick::BuildError> {
        let mut ids: FastMap<&'a [u8], usize> = FastMap::default();
        let mut patterns: Vec<&'a [u8]> = Vec::new();
        let mut by_pattern: Vec<Vec<Cand>> = Vec::new();
        for (frag, cand) in items {
            let id = *ids.entry(frag).or_insert_with(|| {
                patterns.push(frag);
                by_pattern.push(Vec::new());
                patterns.len() - 1
            });
            if let Some(v) = by_pattern.get_mut(id) {
                v.push(cand);
            }
        }
        let ac = if patterns.is_empty() {
            None
        } else {
            // A DFA without prefilter measured fastest for short haystacks like domain names; very large
            // fragment sets fall back to the automatic choice to bound memory.
            let kind = if patterns.len() <= 20_000 {
                Some(AhoCorasickKind::DFA)
            } else {
                None
            };
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .kind(kind)
                    .prefilter(false)
                    .build(&patterns)?,
            )
        };
        let grams3 = patterns.iter().any(|p| p.len() == 3);
        let grams = if !patterns.is_empty() && patterns.iter().all(|p| p.len() >= 3) {
            let mut bits = vec![0u64; (1usize << GRAM_BITS) / 64].into_boxed_slice();
            for p in &patterns {
                if let Some(w) = window(p, 0).or_else(|| window3(p, 0)) {
                    let h = gram_hash(w);
                    if let Some(x) = bits.get_mut(h / 64) {
                        *x |= 1 << (h % 64);
                    }
                }
            }
            Some(bits)
        } else {
            None
        };
        Ok(LiteralIndex {
            ac,
            by_pattern,
            grams,
            grams3,
        })
    }

    /// False if no fragment can occur in `name` (see the module doc); true if it may.
    #[inline]
    fn may_contain(&self, name: &[u8]) -> bool {
        let Some(bits) = &self.grams else { return true };
        let mut i = 0;
        while let Some(w) = window(name, i) {
            if test(bits, w) {
                return true;
            }
            i += 1;
        }
        if self.grams3 {
            let mut i = 0;
            while let Some(w) = window3(name, i) {
                if test(bits, w) {
                    return true;
                }
                i += 1;
            }
        }
        false
    }

    /// True if there is no fragment.
    pub fn is_empty(&self) -> bool {
        self.ac.is_none()
    }

    /// Calls `f` for each candidate whose fragment occurs in `name` (possibly more than once per rule).
    #[inline]
    pub fn candidates(&self, name: &[u8], mut f: impl FnMut(Cand)) {
        let Some(ac) = &self.ac else { return };
        if !self.may_contain(name) || !ac.is_match(name) {
            return;
        }
        for m in ac.find_overlapping_iter(name) {
            if let Some(cands) = self.by_pattern.get(m.pattern().as_usize()) {
                for &c in cands {
                    f(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_overlapping_candidates() {
        let idx = LiteralIndex::build([
            (&b"ads"[..], Cand::Wild(0)),
            (&b"track"[..], Cand::Regex(3)),
            (&b"ads"[..], Cand::Regex(1)),
            (&b"adserver"[..], Cand::Wild(2)),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        idx.candidates(b"adserver.tracker.io", |c| got.push(c));
        assert_eq!(got.len(), 4);
        for c in [Cand::Wild(0), Cand::Regex(1), Cand::Wild(2), Cand::Regex(3)] {
            assert!(got.contains(&c), "{c:?}");
        }
        let mut none = 0;
        idx.candidates(b"example.com", |_| none += 1);
        assert_eq!(none, 0);
        assert!(idx.grams.is_some() && idx.grams3);
        let short =
            LiteralIndex::build([(&b"ab"[..], Cand::Wild(0))]).unwrap_or_else(|e| panic!("{e}"));
        assert!(short.grams.is_none());
        let mut got = 0;
        short.candidates(b"xaby", |_| got += 1);
        assert_eq!(got, 1);
    }

    #[test]
    fn gram_prefilter_never_hides_a_fragment() {
        let frags: Vec<String> = (0..500).map(|i| format!("frag{i}xyz")).collect();
        let idx = LiteralIndex::build(
            frags
                .iter()
                .enumerate()
                .map(|(i, f)| (f.as_bytes(), Cand::Wild(i as u32))),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(idx.grams.is_some() && !idx.grams3);
        for (i, f) in frags.iter().enumerate() {
            // Every alignment of the fragment inside the name.
            let name = format!("{}.{f}.example.com", "a".repeat(i % 9));
            let mut got = Vec::new();
            idx.candidates(name.as_bytes(), |c| got.push(c));
            assert!(got.contains(&Cand::Wild(i as u32)), "{name}");
        }
        assert!(
            !idx.may_contain(b"www.example.com")
                || idx
                    .ac
                    .as_ref()
                    .is_some_and(|a| !a.is_match("www.example.com"))
        );
    }
}
