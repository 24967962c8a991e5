//! Flat open-addressing table of 64-bit name fingerprints (exact and subdomain rules of every list).
//!
//! Layout: one array of 16-byte slots (`key: u64`, `set: u32`, `line: u32`), so a hit touches one cache line. The table is
//! immutable, so it is built in one go from the fingerprints sorted ascending: each key's home slot is
//! `(fp * capacity) >> 64` (monotonic in `fp`) and keys are placed at `max(home, previous + 1)`. Every
//! non-empty slot therefore holds keys in increasing order (the layout Robin Hood hashing converges to), and a
//! lookup scans from the home slot until it finds the key, an empty slot (key 0) or a larger key. At the load
//! factor used (0.8) the expected scan is about three slots, i.e. one cache line, for hits and misses alike.
//!
//! Memory: `capacity = n / 0.8` plus a few overflow slots at the end → ≈ 20 bytes per distinct name, all of it
//! counted by [`FingerprintTable::allocated_bytes`]. No rule text is kept: `set` points at the interned set of
//! (source, kind) pairs the name belongs to, `line` is the line number in the first source of that set.

/// Target load factor, as a fraction `LOAD_NUM / LOAD_DEN`.
const LOAD_NUM: u64 = 4;
const LOAD_DEN: u64 = 5;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    key: u64,
    set: u32,
    line: u32,
}

/// Immutable fingerprint → (set id, line) table.
#[derive(Debug, Default)]
pub struct FingerprintTable {
    slots: Vec<Slot>,
    capacity: u64,
    len: usize,
    /// Blocked Bloom filter over the keys (~10 bits per key, all bits of a key in
    /// one 64-bit word): a suffix that is not in the table is rejected with one read
    /// from a cache-sized array instead of a probe into the large slot array.
    bloom: Vec<u64>,
    bloom_shift: u32,
}

/// Bloom bits per key: ~3% false positives with three bits in one word.
const BLOOM_BITS_PER_KEY: u64 = 10;

#[inline(always)]
fn bloom_mask(fp: u64) -> u64 {
    (1u64 << (fp & 63)) | (1u64 << ((fp >> 6) & 63)) | (1u64 << ((fp >> 12) & 63))
}

impl FingerprintTable {
    /// Builds from `(fingerprint, set id, line)` entries sorted by strictly increasing, non-zero fingerprint.
    pub fn build(entries: &[(u64, u32, u32)]) -> Self {
        let n = entries.len() as u64;
        let capacity = (n * LOAD_DEN).div_ceil(LOAD_NUM).max(1);
        // First pass: final positions, to size the arrays exactly.
        let mut next = 0u64;
        for &(fp, _, _) in entries {
            next = home(fp, capacity).max(next) + 1;
        }
        // One empty sentinel slot after the last key ends every scan.
        let total = capacity.max(next) as usize + 1;
        let mut slots = vec![Slot::default(); total];
        let mut next = 0usize;
        for &(key, set, line) in entries {
            let pos = (home(key, capacity) as usize).max(next);
            if let Some(s) = slots.get_mut(pos) {
                *s = Slot { key, set, line };
            }
            next = pos + 1;
        }
        let words = (n * BLOOM_BITS_PER_KEY)
            .div_ceil(64)
            .next_power_of_two()
            .max(2);
        let bloom_shift = 64 - words.trailing_zeros();
        let mut bloom = vec![0u64; words as usize];
        for &(key, _, _) in entries {
            if let Some(w) = bloom.get_mut((key >> bloom_shift) as usize) {
                *w |= bloom_mask(key);
            }
        }
        FingerprintTable {
            slots,
            capacity,
            len: entries.len(),
            bloom,
            bloom_shift,
        }
    }

    /// False when `fp` is certainly not in the table (no false negatives).
    #[inline(always)]
    pub fn may_contain(&self, fp: u64) -> bool {
        let mask = bloom_mask(fp);
        self.bloom
            .get((fp >> self.bloom_shift) as usize)
            .is_some_and(|w| w & mask == mask)
    }

    /// Slot index and set id of `fp`, if present. `fp` must be non-zero (fingerprints never are).
    #[inline(always)]
    pub fn find(&self, fp: u64) -> Option<(usize, u32)> {
        let mut i = home(fp, self.capacity) as usize;
        while let Some(s) = self.slots.get(i) {
            let k = s.key;
            if k == fp {
                return Some((i, s.set));
            }
            // Stop on an empty slot (0 → wraps to u64::MAX) or on a larger key.
            if k.wrapping_sub(1) >= fp {
                return None;
            }
            i += 1;
        }
        None
    }

    /// Reads the home slot of `fp` (a portable prefetch: issuing these loads for all suffixes of a name before
    /// probing lets their cache misses overlap).
    #[inline(always)]
    pub fn touch(&self, fp: u64) -> u64 {
        self.slots
            .get(home(fp, self.capacity) as usize)
            .map_or(0, |s| s.key)
    }

    /// Interned set id stored in slot `i`.
    #[inline(always)]
    pub fn set(&self, i: usize) -> u32 {
        self.slots.get(i).map_or(0, |s| s.set)
    }

    /// Line number stored in slot `i` (line in the first source of the set).
    #[inline]
    pub fn line(&self, i: usize) -> u32 {
        self.slots.get(i).map_or(0, |s| s.line)
    }

    /// Number of distinct names stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no name is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes allocated by the table's arrays (slack and overflow slots included).
    pub fn allocated_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>() + self.bloom.capacity() * 8
    }
}

#[inline(always)]
fn home(fp: u64, capacity: u64) -> u64 {
    ((u128::from(fp) * u128::from(capacity)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::hash::name_fingerprint;

    #[test]
    fn finds_all_and_only_inserted() {
        let mut e: Vec<(u64, u32, u32)> = (0..50_000u32)
            .map(|i| (name_fingerprint(&format!("n{i}.com")), i, i + 1))
            .collect();
        e.sort_unstable_by_key(|x| x.0);
        let t = FingerprintTable::build(&e);
        assert_eq!(t.len(), 50_000);
        for &(fp, set, line) in &e {
            let (i, _) = t.find(fp).unwrap_or_else(|| panic!("missing {fp}"));
            assert_eq!((t.set(i), t.line(i)), (set, line));
        }
        assert!(
            e.iter().all(|&(fp, _, _)| t.may_contain(fp)),
            "no false negatives"
        );
        let maybe = (0..50_000u32)
            .filter(|i| t.may_contain(name_fingerprint(&format!("m{i}.com"))))
            .count();
        assert!(
            maybe < 50_000 / 20,
            "bloom false positives: {maybe} of 50000"
        );
        for i in 0..50_000u32 {
            assert!(t.find(name_fingerprint(&format!("m{i}.com"))).is_none());
        }
        // 16-byte slots at 80% load plus ~1.3 bytes of Bloom filter (target: <= 24).
        let per = t.allocated_bytes() as f64 / t.len() as f64;
        assert!(per <= 22.0, "{per} bytes per name");
    }

    #[test]
    fn extreme_keys_and_empty_table() {
        let t = FingerprintTable::build(&[]);
        assert!(t.find(1).is_none() && t.find(u64::MAX).is_none());
        let e = [
            (1, 7, 1),
            (2, 8, 2),
            (u64::MAX - 1, 9, 3),
            (u64::MAX, 10, 4),
        ];
        let t = FingerprintTable::build(&e);
        for &(fp, set, _) in &e {
            assert_eq!(t.find(fp).map(|(i, s)| (t.set(i), s)), Some((set, set)));
        }
        assert!(t.find(3).is_none());
        assert!(t.find(u64::MAX - 2).is_none());
    }
}
