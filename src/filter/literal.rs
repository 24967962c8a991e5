//! The shared literal index: one Aho-Corasick automaton over the literal fragments of wildcard rules and the
//! required literals of regex rules. A fragment found in the query name makes its rules *candidates*, which
//! are then verified (glob / regex, then modifiers). Rules without any usable literal are candidates for every
//! name (handled by the matcher).
//!
//! Prefilter: when every fragment is at least 3 bytes long, one 3-byte window of each fragment (the one
//! rarest in a sample of the loaded list names, see [`GramCounts`]) is hashed into a 64 Kbit (8 KiB,
//! L1-resident) bitset. A fragment can only occur in a name if one of the name's 3-byte windows has its bit
//! set, so most names skip the automaton after one independent bit test per byte, six windows per 8-byte load
//! (a DFA walk is a chain of dependent loads, and was measured ~2x slower). The automaton then confirms real
//! occurrences. Choosing the *rarest* window matters: with the first window, every name containing `sta`
//! became a candidate for the fragment `statx12`. Fragments shorter than 3 bytes disable the prefilter.

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
}

const GRAM_BITS: u32 = 16;

#[inline(always)]
fn gram_hash(w: u32) -> usize {
    (w.wrapping_mul(0x9E37_79B1) >> (32 - GRAM_BITS)) as usize
}

/// Counts of 4-byte windows (by [`gram_hash`] bucket) in a sample of real domain names, used to pick for
/// each fragment the window least likely to occur in names.
#[derive(Clone, Debug)]
pub struct GramCounts(Vec<u16>);

impl Default for GramCounts {
    fn default() -> Self {
        GramCounts(vec![0; 1 << GRAM_BITS])
    }
}

impl GramCounts {
    /// Adds every 3-byte window of `name`.
    pub fn add(&mut self, name: &[u8]) {
        let mut i = 0;
        while let Some(w) = window3(name, i) {
            if let Some(c) = self.0.get_mut(gram_hash(w)) {
                *c = c.saturating_add(1);
            }
            i += 1;
        }
    }

    fn count(&self, w: u32) -> u16 {
        self.0.get(gram_hash(w)).copied().unwrap_or(0)
    }
}

/// The 4-byte window of a fragment that is rarest in the sampled names (the last one on ties). Taking the
/// first window instead made e.g. every name containing `stat` a candidate for the fragment `statx12`.
fn rarest_window(p: &[u8], counts: &GramCounts) -> Option<u32> {
    let mut best: Option<(u16, u32)> = None;
    let mut i = 0;
    while let Some(w) = window3(p, i) {
        let c = counts.count(w);
        if best.is_none_or(|(b, _)| c <= b) {
            best = Some((c, w));
        }
        i += 1;
    }
    best.map(|(_, w)| w)
}

#[inline(always)]
fn read8(b: &[u8], i: usize) -> Option<u64> {
    match b.get(i..i + 8) {
        Some(&[a, b, c, d, e, f, g, h]) => Some(u64::from_le_bytes([a, b, c, d, e, f, g, h])),
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
    /// Builds the automaton over `(fragment, candidate)` pairs (fragments must be non-empty); `counts` guides
    /// the choice of each fragment's prefilter window.
    pub fn build<'a>(
        items: impl IntoIterator<Item = (&'a [u8], Cand)>,
        counts: &GramCounts,
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
        let grams = if !patterns.is_empty() && patterns.iter().all(|p| p.len() >= 3) {
            let mut bits = vec![0u64; (1usize << GRAM_BITS) / 64].into_boxed_slice();
            for p in &patterns {
                if let Some(w) = rarest_window(p, counts) {
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
        })
    }

    /// False if no fragment can occur in `name` (see the module doc); true if it may.
    #[inline]
    fn may_contain(&self, name: &[u8]) -> bool {
        let Some(bits) = &self.grams else { return true };
        // Eight bytes per load hold six 3-byte windows; test them without branching.
        let mut i = 0;
        while let Some(w) = read8(name, i) {
            let mut hit = false;
            for k in 0..6 {
                hit |= test(bits, ((w >> (8 * k)) as u32 & 0x00ff_ffff) | 0xff00_0000);
            }
            if hit {
                return true;
            }
            i += 6;
        }
        while let Some(w) = window3(name, i) {
            if test(bits, w) {
                return true;
            }
            i += 1;
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
        let idx = LiteralIndex::build(
            [
                (&b"ads"[..], Cand::Wild(0)),
                (&b"track"[..], Cand::Regex(3)),
                (&b"ads"[..], Cand::Regex(1)),
                (&b"adserver"[..], Cand::Wild(2)),
            ],
            &GramCounts::default(),
        )
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
        assert!(idx.grams.is_some());
        let short = LiteralIndex::build([(&b"ab"[..], Cand::Wild(0))], &GramCounts::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(short.grams.is_none());
        let mut got = 0;
        short.candidates(b"xaby", |_| got += 1);
        assert_eq!(got, 1);
    }

    #[test]
    fn gram_prefilter_never_hides_a_fragment() {
        let frags: Vec<String> = (0..500).map(|i| format!("frag{i}xyz")).collect();
        let mut counts = GramCounts::default();
        for i in 0..50 {
            counts.add(format!("frag{i}.example.com").as_bytes());
        }
        let idx = LiteralIndex::build(
            frags
                .iter()
                .enumerate()
                .map(|(i, f)| (f.as_bytes(), Cand::Wild(i as u32))),
            &counts,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(idx.grams.is_some());
        for (i, f) in frags.iter().enumerate() {
            // Every alignment of the fragment inside the name.
            let name = format!("{}.{f}.example.com", "a".repeat(i % 9));
            let mut got = Vec::new();
            idx.candidates(name.as_bytes(), |c| got.push(c));
            assert!(got.contains(&Cand::Wild(i as u32)), "{name}");
        }
        // Names of 3..=20 bytes at every length exercise both the 8-byte blocks and the tail loop.
        for len in 3..=20 {
            let name = format!("{}frag7xyz", "b".repeat(len));
            let mut got = Vec::new();
            idx.candidates(name.as_bytes(), |c| got.push(c));
            assert!(got.contains(&Cand::Wild(7)), "{name}");
        }
        // The rarest window was chosen: `fra`/`rag` are common in the sample, so plain names containing only
        // them do not pass the prefilter.
        assert!(!idx.may_contain(b"fragile.example.org"));
    }
}
