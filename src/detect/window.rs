//! Per-registrable-domain state over a sliding window, bounded in memory.
//!
//! State lives in [`SHARDS`] independently locked shards (picked by the
//! domain key), each a capped LRU of domains: a hash map from the 64-bit
//! seeded hash of the registrable domain to a slot in a preallocated vector,
//! plus an intrusive doubly linked recency list. When a shard is full its
//! least recently used domain is evicted (a quarantined domain is skipped
//! over a few times so an attacker cannot flush it cheaply).
//!
//! Each domain keeps two fixed-size buckets (the current window and the one
//! before it); the sliding window is the current bucket plus the previous one
//! weighted by how much of it still overlaps. A bucket holds a 1024-bit bitmap
//! sketch of name fingerprints (linear counting gives the number of distinct
//! names; a set bit also answers "seen this name recently?") and counters:
//! queries, new names, bytes of new names, rare-type queries, responses,
//! NXDOMAIN answers, payload evidence, flags, and a majority vote of the
//! clients sending new names. A long-term payload-evidence accumulator with
//! exponential decay, following one client at a time, catches low-and-slow
//! exfiltration that never shows in one window.
//!
//! Memory bound: one `Entry` is at most 408 bytes (asserted by a test); the
//! per-shard index map is sized for twice the shard's entries (16-byte slots
//! plus a control byte, power-of-two buckets), about 68 bytes per domain. So
//! under 480 bytes per tracked domain, allocated up front and never grown:
//! 16384 domains (the default `max_domains`) ≈ 7.8 MB.

use parking_lot::Mutex;
use std::collections::HashMap;

use super::hash::BuildKeyHasher;

/// Number of independently locked shards.
pub(crate) const SHARDS: usize = 64;
const BITMAP_WORDS: usize = 16;
const BITMAP_BITS: f32 = (BITMAP_WORDS * 64) as f32;
const NIL: u32 = u32::MAX;

/// Payload bits below this per name are not accumulated (noise floor of
/// human-made names).
pub(crate) const PAYLOAD_FLOOR_BITS: f32 = 12.0;
/// Accumulated payload evidence (window or long-term) that scores 1.0.
pub(crate) const DOMAIN_PAYLOAD_BITS: f32 = 400.0;
/// Distinct names in the window that score 1.0 when all queries are A/AAAA
/// and answered; rare query types and NXDOMAIN answers lower the bar.
pub(crate) const DISTINCT_REF: f32 = 200.0;
/// Floor of the client-concentration factor applied to the domain scores.
pub(crate) const MIN_CONCENTRATION: f32 = 0.05;

#[derive(Clone, Copy, Default)]
struct Bucket {
    seen: [u64; BITMAP_WORDS],
    queries: u32,
    new_names: u32,
    bytes: u32,
    rare_types: u32,
    responses: u32,
    nx: u32,
    flags: u32,
    payload: f32,
    /// Boyer-Moore majority vote over the clients that sent new names.
    top_client: u64,
    top_votes: u32,
}

impl Bucket {
    fn distinct(&self) -> f32 {
        let set: u32 = self.seen.iter().map(|w| w.count_ones()).sum();
        let zeros = BITMAP_BITS - set as f32;
        if zeros < 1.0 {
            // Saturated: report the linear-counting ceiling.
            BITMAP_BITS * BITMAP_BITS.ln()
        } else {
            -BITMAP_BITS * (zeros / BITMAP_BITS).ln()
        }
    }
    #[inline]
    fn has(&self, bit: usize) -> bool {
        self.seen[bit / 64] & (1 << (bit % 64)) != 0
    }
}

struct Entry {
    key: u64,
    prev: u32,
    next: u32,
    start_ms: u64,
    cur: Bucket,
    old: Bucket,
    /// Long-term payload evidence of `evidence_client` (decayed).
    evidence: f32,
    evidence_ms: u64,
    /// Client whose evidence is being accumulated (majority-vote style).
    evidence_client: u64,
    quarantine_until_ms: u64,
}

impl Entry {
    fn new(key: u64, now_ms: u64) -> Self {
        Entry {
            key,
            prev: NIL,
            next: NIL,
            start_ms: now_ms,
            cur: Bucket::default(),
            old: Bucket::default(),
            evidence: 0.0,
            evidence_ms: now_ms,
            evidence_client: 0,
            quarantine_until_ms: 0,
        }
    }

    /// Advance the buckets to `now_ms`; returns the weight of the old bucket.
    fn rotate(&mut self, now_ms: u64, window_ms: u64) -> f32 {
        if now_ms >= self.start_ms + window_ms {
            if now_ms < self.start_ms + 2 * window_ms {
                self.old = self.cur;
                self.start_ms += window_ms;
            } else {
                self.old = Bucket::default();
                self.start_ms = now_ms;
            }
            self.cur = Bucket::default();
        }
        let elapsed = now_ms.saturating_sub(self.start_ms) as f32;
        (1.0 - elapsed / window_ms as f32).clamp(0.0, 1.0)
    }
}

/// The window view of a domain after an update.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DomainView {
    pub distinct: f32,
    pub bytes_per_min: f32,
    pub rare_share: f32,
    pub nx_share: f32,
    pub window_payload: f32,
    pub long_payload: f32,
    /// Share of the window's new names that came from its busiest client
    /// (majority-vote estimate; 1.0 for a single client).
    pub concentration: f32,
    pub quarantined: bool,
}

impl DomainView {
    /// Domain score components `(payload, volume)`, 1.0 = flag.
    pub(crate) fn scores(&self) -> (f32, f32) {
        let boost = 1.0 + 2.0 * self.rare_share + 2.0 * self.nx_share;
        // A tunnel is one client talking to one domain; hash-named services
        // (ad frames, CDNs) get their many names from many clients.
        let spread = self.concentration.max(MIN_CONCENTRATION);
        // The long-term evidence is already per client (see `observe`).
        let payload = (self.window_payload * spread).max(self.long_payload) / DOMAIN_PAYLOAD_BITS
            * (1.0 + self.rare_share);
        let volume = self.distinct * boost / DISTINCT_REF * spread;
        (payload, volume)
    }
}

/// One query's contribution to its domain.
pub(crate) struct Update {
    pub key: u64,
    pub client: u64,
    pub name_fp: u64,
    pub bytes: u32,
    pub rare_type: bool,
    pub payload_bits: f32,
}

/// Flagging parameters.
pub(crate) struct FlagPolicy {
    pub threshold: f32,
    pub quarantine_after: u32,
    pub quarantine_ms: u64,
}

struct Shard {
    map: HashMap<u64, u32, BuildKeyHasher>,
    entries: Vec<Entry>,
    cap: usize,
    head: u32,
    tail: u32,
}

impl Shard {
    fn unlink(&mut self, i: u32) {
        let (p, n) = {
            let e = &self.entries[i as usize];
            (e.prev, e.next)
        };
        if p == NIL {
            self.head = n;
        } else {
            self.entries[p as usize].next = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.entries[n as usize].prev = p;
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let e = &mut self.entries[i as usize];
            e.prev = NIL;
            e.next = old;
        }
        if old != NIL {
            self.entries[old as usize].prev = i;
        } else {
            self.tail = i;
        }
        self.head = i;
    }

    fn touch(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    /// Find or create the entry for `key`; returns its slot.
    fn get_or_insert(&mut self, key: u64, now_ms: u64) -> u32 {
        if let Some(&i) = self.map.get(&key) {
            self.touch(i);
            return i;
        }
        let i = if self.entries.len() < self.cap {
            self.entries.push(Entry::new(key, now_ms));
            (self.entries.len() - 1) as u32
        } else {
            // Evict the least recently used, sparing live quarantines a few times.
            let mut victim = self.tail;
            for _ in 0..4 {
                if self.entries[victim as usize].quarantine_until_ms <= now_ms {
                    break;
                }
                self.touch(victim);
                victim = self.tail;
            }
            self.unlink(victim);
            let old_key = self.entries[victim as usize].key;
            self.map.remove(&old_key);
            self.entries[victim as usize] = Entry::new(key, now_ms);
            victim
        };
        self.map.insert(key, i);
        self.push_front(i);
        i
    }
}

/// All per-domain state.
pub(crate) struct Window {
    shards: Box<[Mutex<Shard>]>,
    window_ms: u64,
    half_life_ms: f32,
}

impl Window {
    pub(crate) fn new(max_domains: usize, window_secs: u64, half_life_secs: u64) -> Self {
        let cap = max_domains.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    // Twice the entries: with at most half the table in use,
                    // evictions (tombstones) are always cleaned by an
                    // in-place rehash, never by a growing reallocation.
                    map: HashMap::with_capacity_and_hasher(cap * 2, BuildKeyHasher),
                    entries: Vec::with_capacity(cap),
                    cap,
                    head: NIL,
                    tail: NIL,
                })
            })
            .collect();
        Window {
            shards,
            window_ms: window_secs.max(1) * 1000,
            half_life_ms: (half_life_secs.max(1) * 1000) as f32,
        }
    }

    #[inline]
    fn shard(&self, key: u64) -> &Mutex<Shard> {
        &self.shards[(key >> 58) as usize % SHARDS]
    }

    /// Record one query and return the domain's view plus whether the domain
    /// is (now) quarantined. `lex_score` is the query's own score; if the
    /// combined score reaches the threshold, a flag is counted.
    pub(crate) fn observe(
        &self,
        now_ms: u64,
        u: &Update,
        lex_score: f32,
        policy: &FlagPolicy,
    ) -> (DomainView, bool) {
        let mut shard = self.shard(u.key).lock();
        let i = shard.get_or_insert(u.key, now_ms);
        let e = &mut shard.entries[i as usize];
        let w_old = e.rotate(now_ms, self.window_ms);

        let bit = (u.name_fp % (BITMAP_BITS as u64)) as usize;
        let is_new = !e.cur.has(bit) && !e.old.has(bit);
        e.cur.seen[bit / 64] |= 1 << (bit % 64);
        e.cur.queries += 1;
        e.cur.rare_types += u32::from(u.rare_type);
        let dt = now_ms.saturating_sub(e.evidence_ms) as f32;
        if dt > 0.0 {
            e.evidence *= (-dt / self.half_life_ms).exp2();
            e.evidence_ms = now_ms;
        }
        if is_new {
            let b = &mut e.cur;
            if b.top_votes == 0 {
                b.top_client = u.client;
                b.top_votes = 1;
            } else if b.top_client == u.client {
                b.top_votes += 1;
            } else {
                b.top_votes -= 1;
            }
            e.cur.new_names += 1;
            e.cur.bytes = e.cur.bytes.saturating_add(u.bytes);
            let contrib = (u.payload_bits - PAYLOAD_FLOOR_BITS).max(0.0);
            e.cur.payload += contrib;
            // Evidence follows one client: another client's payload first
            // cancels it (like a majority vote), so names spread over many
            // clients never build up, while one exfiltrating client does.
            if e.evidence_client == u.client {
                e.evidence += contrib;
            } else if e.evidence >= contrib {
                e.evidence -= contrib;
            } else {
                e.evidence_client = u.client;
                e.evidence = contrib - e.evidence;
            }
        }

        let view = Self::view(e, w_old, self.window_ms, now_ms);
        let (p, v) = view.scores();
        let score = lex_score.max(p).max(v);
        let mut quarantined = view.quarantined;
        if score >= policy.threshold {
            e.cur.flags += 1;
            let flags = e.cur.flags as f32 + w_old * e.old.flags as f32;
            if policy.quarantine_after > 0 && flags >= policy.quarantine_after as f32 {
                e.quarantine_until_ms = now_ms + policy.quarantine_ms;
                quarantined = true;
            }
        }
        (view, quarantined)
    }

    fn view(e: &Entry, w_old: f32, window_ms: u64, now_ms: u64) -> DomainView {
        let (c, o) = (&e.cur, &e.old);
        let wsum = |a: u32, b: u32| a as f32 + w_old * b as f32;
        let queries = wsum(c.queries, o.queries).max(1.0);
        let responses = wsum(c.responses, o.responses);
        let minutes = window_ms as f32 / 60_000.0;
        DomainView {
            distinct: c.distinct() + w_old * o.distinct(),
            bytes_per_min: wsum(c.bytes, o.bytes) / minutes,
            rare_share: wsum(c.rare_types, o.rare_types) / queries,
            // Only meaningful once a few answers were reported.
            nx_share: if responses >= 4.0 {
                wsum(c.nx, o.nx) / responses
            } else {
                0.0
            },
            window_payload: c.payload + w_old * o.payload,
            concentration: {
                let names = wsum(c.new_names, o.new_names);
                if names < 1.0 {
                    1.0
                } else {
                    (wsum(c.top_votes, o.top_votes) / names).clamp(0.0, 1.0)
                }
            },
            long_payload: e.evidence,
            quarantined: e.quarantine_until_ms > now_ms,
        }
    }

    /// Record a response code for a domain already tracked.
    pub(crate) fn record_rcode(&self, now_ms: u64, key: u64, nxdomain: bool) {
        let mut shard = self.shard(key).lock();
        if let Some(&i) = shard.map.get(&key) {
            let e = &mut shard.entries[i as usize];
            e.rotate(now_ms, self.window_ms);
            e.cur.responses += 1;
            e.cur.nx += u32::from(nxdomain);
        }
    }

    /// Whether the domain is quarantined at `now_ms`.
    pub(crate) fn is_quarantined(&self, now_ms: u64, key: u64) -> bool {
        let shard = self.shard(key).lock();
        shard
            .map
            .get(&key)
            .is_some_and(|&i| shard.entries[i as usize].quarantine_until_ms > now_ms)
    }

    /// Number of domains currently tracked.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(key: u64, fp: u64) -> Update {
        Update {
            key,
            client: 0,
            name_fp: fp,
            bytes: 20,
            rare_type: false,
            payload_bits: 0.0,
        }
    }

    const P: FlagPolicy = FlagPolicy {
        threshold: 1.0,
        quarantine_after: 3,
        quarantine_ms: 60_000,
    };

    #[test]
    fn distinct_count_and_window_expiry() {
        let w = Window::new(1024, 300, 1800);
        let mut v = DomainView::default();
        for i in 0..150u64 {
            v = w
                .observe(1000 + i, &upd(1, super::super::hash::mix(i)), 0.0, &P)
                .0;
        }
        assert!((120.0..180.0).contains(&v.distinct), "{}", v.distinct);
        // Repeats do not add names.
        let again = w
            .observe(2000, &upd(1, super::super::hash::mix(3)), 0.0, &P)
            .0;
        assert!((again.distinct - v.distinct).abs() < 1.0);
        // Ten minutes later the window is empty again.
        let later = w.observe(1000 + 600_000, &upd(1, 42), 0.0, &P).0;
        assert!(later.distinct < 2.0, "{}", later.distinct);
    }

    #[test]
    fn entry_size_is_bounded() {
        assert!(
            std::mem::size_of::<Entry>() <= 408,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn lru_is_capped() {
        let w = Window::new(SHARDS * 2, 300, 1800);
        for k in 0..10_000u64 {
            w.observe(k, &upd(super::super::hash::mix(k), 1), 0.0, &P);
        }
        assert_eq!(w.len(), SHARDS * 2);
    }

    #[test]
    fn quarantine_after_flags() {
        let w = Window::new(64, 300, 1800);
        for t in 0..2 {
            assert!(!w.observe(t, &upd(9, t), 2.0, &P).1);
        }
        assert!(w.observe(2, &upd(9, 2), 2.0, &P).1);
        assert!(w.is_quarantined(59_000, 9));
        assert!(!w.is_quarantined(61_000, 9));
    }
}
