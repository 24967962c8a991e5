//! Small, fast 64-bit hashing written for this module: label-wise fingerprints of domain names.
//!
//! A name is hashed label by label from the **right** (the TLD first), so one pass over a query name yields the
//! fingerprint of every label-boundary suffix (`com`, `example.com`, `ads.example.com`, ...). The table in
//! [`super::table`] stores only these 64-bit fingerprints, never the names. The mixer is a wyhash-style
//! "multiply and fold" (128-bit product, high ^ low), written from scratch.
//!
//! Collisions: with `n` stored names and a query probing `k` suffixes, the chance of a false positive is about
//! `k * n / 2^64` (≈ 4e-13 for 1.6 M names and 5 labels), i.e. negligible; the real-list tests also check that
//! the loaded lists produce no fingerprint collision at all. A map keyed by these hashes for the std
//! `HashMap` is provided as [`FastBuildHasher`].

use std::hash::{BuildHasher, Hasher};

const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;
const P3: u64 = 0x5899_65cc_7537_4cc3;
const SEED: u64 = 0x2d35_8dcc_aa6c_78a5;

/// Multiply-fold: the 128-bit product of `a` and `b`, high half xor low half.
#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Reads 4 bytes little-endian at `i` (0 if out of range; callers stay in range).
#[inline(always)]
fn r4(b: &[u8], i: usize) -> u64 {
    match b.get(i..i + 4) {
        Some(&[x0, x1, x2, x3]) => u64::from(u32::from_le_bytes([x0, x1, x2, x3])),
        _ => 0,
    }
}

/// Reads 8 bytes little-endian at `i` (0 if out of range; callers stay in range).
#[inline(always)]
fn r8(b: &[u8], i: usize) -> u64 {
    (r4(b, i + 4) << 32) | r4(b, i)
}

/// Reads up to 8 bytes little-endian, zero padded (for the std `Hasher`).
#[inline(always)]
fn word(chunk: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = chunk.len().min(8);
    buf[..n].copy_from_slice(&chunk[..n]);
    u64::from_le_bytes(buf)
}

/// Running state of a right-to-left suffix hash. Start with [`SuffixHasher::new`], feed labels from the TLD
/// towards the leftmost label with [`SuffixHasher::push_label`], read the fingerprint of the suffix fed so far
/// with [`SuffixHasher::fingerprint`].
#[derive(Clone, Copy, Debug)]
pub struct SuffixHasher {
    state: u64,
}

impl Default for SuffixHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl SuffixHasher {
    /// A hasher for the empty suffix.
    #[inline(always)]
    pub fn new() -> Self {
        SuffixHasher { state: SEED }
    }

    /// Extends the suffix by one label on the left (the label bytes without dots). Labels of up to 16 bytes
    /// (nearly all) cost a single 64×64→128 multiplication, wyhash style; the label length is mixed in so that
    /// label boundaries are part of the hash (`ab.c` ≠ `a.bc`).
    #[inline(always)]
    pub fn push_label(&mut self, l: &[u8]) {
        let len = l.len();
        let h = self.state;
        let (a, b) = if len <= 16 {
            if len >= 4 {
                let q = (len >> 3) << 2;
                (
                    (r4(l, 0) << 32) | r4(l, q),
                    (r4(l, len - 4) << 32) | r4(l, len - 4 - q),
                )
            } else if len > 0 {
                let b0 = u64::from(l[0]);
                let b1 = u64::from(l[len >> 1]);
                let b2 = u64::from(l[len - 1]);
                ((b0 << 16) | (b1 << 8) | b2, 0)
            } else {
                (0, 0)
            }
        } else {
            let mut acc = h;
            let mut i = 0;
            while i + 16 < len {
                acc = mum(r8(l, i) ^ P2 ^ acc, r8(l, i + 8) ^ P3);
                i += 16;
            }
            (r8(l, len - 16) ^ acc, r8(l, len - 8))
        };
        // The length goes into the *other* operand than the tail word `b`, through a multiplication: XOR-ing it
        // into `b` let `nobm`/14 and `oobm`/15 cancel out (a real collision found on the 1.6 M list).
        // Feed-forward of the previous state keeps the chain from collapsing if one product happens to be 0.
        let x = a ^ P0 ^ h.wrapping_add((len as u64).wrapping_mul(P3));
        self.state = mum(x, b ^ P1) ^ h.rotate_left(29);
    }

    /// Fingerprint of the suffix fed so far; never 0 (0 marks an empty table slot).
    #[inline(always)]
    pub fn fingerprint(&self) -> u64 {
        if self.state == 0 { 1 } else { self.state }
    }
}

/// Fingerprint of a whole name (labels separated by `.`), equal to the last suffix fingerprint produced by
/// [`for_each_suffix`] for the same name.
pub fn name_fingerprint(name: &str) -> u64 {
    let mut fp = SuffixHasher::new().fingerprint();
    for_each_suffix(name.as_bytes(), |f, _, _| {
        fp = f;
        true
    });
    fp
}

/// Calls `f(fingerprint, suffix_start, is_full_name)` for every label-boundary suffix of `name`, shortest
/// first. Stops early when `f` returns `false`. Works on any bytes (no panics on odd input).
#[inline(always)]
pub fn for_each_suffix(name: &[u8], mut f: impl FnMut(u64, usize, bool) -> bool) {
    let mut h = SuffixHasher::new();
    let mut end = name.len();
    loop {
        let start = match name[..end].iter().rposition(|&b| b == b'.') {
            Some(dot) => dot + 1,
            None => 0,
        };
        h.push_label(&name[start..end]);
        if !f(h.fingerprint(), start, start == 0) || start == 0 {
            return;
        }
        end = start - 1;
    }
}

/// A small FxHash-like streaming hasher for std `HashMap`s keyed by integers, IPs and short strings.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher {
    state: u64,
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            self.state = mum(self.state ^ word(chunk) ^ P0, P1);
        }
        self.state ^= bytes.len() as u64;
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.state = mum(self.state ^ i ^ P0, P1);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        mum(self.state, P2)
    }
}

/// `BuildHasher` for [`FastHasher`], used by every `HashMap` in this module (not DoS-resistant, but the keys
/// come from the operator's configuration and lists, never from query traffic).
#[derive(Clone, Copy, Debug, Default)]
pub struct FastBuildHasher;

impl BuildHasher for FastBuildHasher {
    type Hasher = FastHasher;
    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher::default()
    }
}

/// A `HashMap` using [`FastBuildHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn suffixes_are_consistent_with_whole_names() {
        let mut seen = Vec::new();
        for_each_suffix(b"ads.example.com", |fp, start, full| {
            seen.push((fp, start, full));
            true
        });
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].0, name_fingerprint("com"));
        assert_eq!(seen[1].0, name_fingerprint("example.com"));
        assert_eq!(seen[2].0, name_fingerprint("ads.example.com"));
        assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), vec![12, 4, 0]);
        assert_eq!(
            seen.iter().map(|s| s.2).collect::<Vec<_>>(),
            vec![false, false, true]
        );
    }

    #[test]
    fn length_does_not_cancel_with_data() {
        // These collided with an earlier mixer that XOR-ed the length into the last word.
        assert_ne!(
            name_fingerprint("socialnobmenik.net.ru"),
            name_fingerprint("socialnoobmenik.net.ru")
        );
        for len in 1..40 {
            let a = "x".repeat(len);
            let b = "x".repeat(len + 1);
            assert_ne!(name_fingerprint(&a), name_fingerprint(&b));
        }
    }

    #[test]
    fn label_boundaries_matter() {
        assert_ne!(name_fingerprint("ab.c"), name_fingerprint("a.bc"));
        assert_ne!(name_fingerprint("abc"), name_fingerprint("ab.c"));
        assert_ne!(name_fingerprint("a"), name_fingerprint("a\0"));
        assert_ne!(name_fingerprint(""), name_fingerprint("."));
    }

    #[test]
    fn no_collisions_on_many_similar_names() {
        let mut set = HashSet::new();
        for i in 0..200_000u32 {
            assert!(set.insert(name_fingerprint(&format!("host{i}.example{}.com", i % 97))));
        }
    }

    #[test]
    fn odd_input_does_not_panic() {
        for s in ["", ".", "..", "a..b", ".a", "a.", "\u{ff}"] {
            let mut n = 0;
            for_each_suffix(s.as_bytes(), |_, _, _| {
                n += 1;
                true
            });
            assert!(n >= 1);
        }
    }
}
