//! Per-registrable-domain state over a sliding window, bounded in memory.
//!
//! State lives in [`SHARDS`] independently locked shards (picked by the
//! domain key), each a capped LRU of domains: a hash map from the 64-bit
//! seeded hash of the registrable domain to a slot in a preallocated vector,
//! plus an intrusive doubly linked recency list. When a shard is full its
//! least recently used domain is evicted.
//!
//! Each domain keeps two fixed-size buckets (the current window and the one
//! before it); the sliding window is the current bucket plus the previous one
//! weighted by how much of it still overlaps. A bucket holds a 1024-bit bitmap
//! sketch of name fingerprints (linear counting gives the number of distinct
//! names; a set bit also answers "seen this name recently?") and counters:
//! queries, new names, bytes of new names, rare-type queries, responses,
//! NXDOMAIN answers, payload evidence, and a majority vote of the clients
//! sending new names. A long-term payload-evidence accumulator with
//! exponential decay, following one client at a time, catches low-and-slow
//! exfiltration that never shows in one window.
//!
//! The domain's evidence is charged to the client that produced it: the
//! window's to the majority client of its new names, the long-term evidence
//! to the client it follows. Another client asking a name of the same domain
//! is scored on its own name only, so one client's tunnel never gets a
//! domain's other users flagged.
//!
//! Flags and quarantines are per client and domain ([`Mark`]), in a small
//! set-associative table per shard: a flagged query counts a flag for its
//! client under its domain; `quarantine_after` flags within the window
//! quarantine that client for that domain. A full set gives up its stalest
//! mark, a live quarantine only when all its ways are live quarantines (then
//! the one ending first).
//!
//! Memory bound: one `Entry` is at most 400 bytes (asserted by a test); the
//! per-shard index map is sized for twice the shard's entries (16-byte slots
//! plus a control byte, power-of-two buckets), about 68 bytes per domain; one
//! 32-byte mark per two domains. So under 490 bytes per tracked domain,
//! allocated up front and never grown: 16384 domains (the default
//! `max_domains`) ≈ 8 MB.

use parking_lot::Mutex;
use std::collections::HashMap;

use super::count::LinearCount;
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
    payload: f32,
    /// Encoded-data evidence in the domain's answers (TXT/NULL data,
    /// CNAME/MX/SRV targets), bits.
    answer: f32,
    /// Boyer-Moore majority vote over the clients that sent new names.
    top_client: u64,
    top_votes: u32,
}

impl Bucket {
    /// Distinct names seen (linear counting over the bitmap).
    fn distinct(&self, count: &LinearCount) -> f32 {
        let set: u32 = self.seen.iter().map(|w| w.count_ones()).sum();
        count.of(BITMAP_BITS as u32 - set)
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
    /// Encoded-data evidence in the window's answers, bits.
    pub answer_bits: f32,
    /// Share of the window's new names that came from its busiest client
    /// (majority-vote estimate; 1.0 for a single client).
    pub concentration: f32,
}

impl DomainView {
    /// Domain score components `(window payload, long-term payload, volume)`,
    /// 1.0 = flag.
    fn scores(&self) -> (f32, f32, f32) {
        let boost = 1.0 + 2.0 * self.rare_share + 2.0 * self.nx_share;
        // A tunnel is one client talking to one domain; hash-named services
        // (ad frames, CDNs) get their many names from many clients.
        let spread = self.concentration.max(MIN_CONCENTRATION);
        let rare = 1.0 + self.rare_share;
        let window = self.window_payload * spread / DOMAIN_PAYLOAD_BITS * rare;
        // The long-term evidence is already per client (see `observe`).
        let long = self.long_payload / DOMAIN_PAYLOAD_BITS * rare;
        let volume = self.distinct * boost / DISTINCT_REF * spread;
        (window, long, volume)
    }
}

/// What [`Window::observe`] found for one query.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Observed {
    /// The domain as a whole.
    pub view: DomainView,
    /// The domain's payload score charged to the query's client (0 unless
    /// the evidence is its own).
    pub payload: f32,
    /// The domain's volume score charged to the query's client.
    pub volume: f32,
    /// The domain's answer-data score charged to the query's client (the
    /// majority client of its names: the one a command channel answers).
    pub answers: f32,
    /// The client is quarantined for the domain (after this query).
    pub quarantined: bool,
}

/// One query's contribution to its domain.
pub(crate) struct Update {
    pub key: u64,
    pub client: u64,
    /// Another key a flag also counts against (the address a proven client
    /// asked from; 0: none). Only `client`'s own quarantine applies to it.
    pub also: u64,
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

/// Ways of a set of the mark table.
const MARK_WAYS: usize = 4;

/// One client's flags under one domain, and its quarantine there.
#[derive(Clone, Copy, Default)]
struct Mark {
    /// Hash of (domain, client), never 0; 0 = free.
    key: u64,
    /// When the first of `flags` was counted.
    since_ms: u64,
    /// Quarantined until then.
    until_ms: u64,
    flags: u32,
}

impl Mark {
    /// Whether the mark still means anything at `now_ms`.
    fn live(&self, now_ms: u64, window_ms: u64) -> bool {
        self.key != 0 && (self.until_ms > now_ms || self.since_ms + window_ms > now_ms)
    }
}

struct Shard {
    map: HashMap<u64, u32, BuildKeyHasher>,
    entries: Vec<Entry>,
    cap: usize,
    head: u32,
    tail: u32,
    /// Set-associative, [`MARK_WAYS`] per set; never grows.
    marks: Box<[Mark]>,
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
            // Evict the least recently used.
            let victim = self.tail;
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

    /// The ways of the set `mark` belongs to.
    fn mark_set(&mut self, mark: u64) -> &mut [Mark] {
        let sets = self.marks.len() / MARK_WAYS;
        let set = (mark >> 32) as usize % sets * MARK_WAYS;
        &mut self.marks[set..set + MARK_WAYS]
    }

    /// Whether the client of `mark` is quarantined at `now_ms`.
    fn quarantined(&mut self, mark: u64, now_ms: u64) -> bool {
        self.mark_set(mark)
            .iter()
            .any(|m| m.key == mark && m.until_ms > now_ms)
    }

    /// Counts a flag for `mark`; returns whether its client is now quarantined.
    fn flag(&mut self, mark: u64, now_ms: u64, window_ms: u64, policy: &FlagPolicy) -> bool {
        let set = self.mark_set(mark);
        let way = match set.iter().position(|m| m.key == mark) {
            Some(w) => w,
            None => {
                // A free or spent way, else the stalest mark that is not a
                // quarantine, else the quarantine ending first.
                let w = (0..MARK_WAYS)
                    .min_by_key(|&w| {
                        let m = &set[w];
                        match (m.live(now_ms, window_ms), m.until_ms > now_ms) {
                            (false, _) => (0, 0),
                            (true, false) => (1, m.since_ms),
                            (true, true) => (2, m.until_ms),
                        }
                    })
                    .unwrap_or(0);
                set[w] = Mark {
                    key: mark,
                    since_ms: now_ms,
                    ..Mark::default()
                };
                w
            }
        };
        let m = &mut set[way];
        if m.since_ms + window_ms <= now_ms {
            (m.since_ms, m.flags) = (now_ms, 0);
        }
        m.flags += 1;
        if policy.quarantine_after > 0 && m.flags >= policy.quarantine_after {
            m.until_ms = now_ms + policy.quarantine_ms;
        }
        m.until_ms > now_ms
    }
}

/// The mark key of `client` (already a seeded hash) under domain `key`.
#[inline]
fn mark_key(key: u64, client: u64) -> u64 {
    super::hash::mix(key ^ client.rotate_left(32)) | 1
}

/// All per-domain state.
pub(crate) struct Window {
    shards: Box<[Mutex<Shard>]>,
    window_ms: u64,
    half_life_ms: f32,
    /// Distinct names from a bucket's bitmap.
    distinct: LinearCount,
}

impl Window {
    pub(crate) fn new(max_domains: usize, window_secs: u64, half_life_secs: u64) -> Self {
        let cap = max_domains.div_ceil(SHARDS).max(1);
        // One mark per two domains: flagged (client, domain) pairs are few.
        let marks = cap.div_ceil(2).next_multiple_of(MARK_WAYS);
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
                    marks: vec![Mark::default(); marks].into_boxed_slice(),
                })
            })
            .collect();
        Window {
            shards,
            window_ms: window_secs.max(1) * 1000,
            half_life_ms: (half_life_secs.max(1) * 1000) as f32,
            distinct: LinearCount::new(BITMAP_BITS as u32),
        }
    }

    #[inline]
    fn shard(&self, key: u64) -> &Mutex<Shard> {
        &self.shards[(key >> 58) as usize % SHARDS]
    }

    /// Record one query and return the domain's view, the part of the domain's
    /// scores charged to the query's client, and whether that client is (now)
    /// quarantined for the domain. `lex_score` is the query's own score; if it
    /// or the client's share of the domain's scores reaches the threshold, a
    /// flag is counted for the client under the domain.
    pub(crate) fn observe(
        &self,
        now_ms: u64,
        u: &Update,
        lex_score: f32,
        policy: &FlagPolicy,
    ) -> Observed {
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

        let view = self.view(e, w_old);
        let (window, long, volume) = view.scores();
        // The window's evidence is its majority client's, the long-term
        // evidence the client it follows.
        let (c, o) = (&e.cur, &e.old);
        let top = if c.top_votes as f32 >= w_old * o.top_votes as f32 {
            (c.top_votes > 0).then_some(c.top_client)
        } else {
            Some(o.top_client)
        };
        let is_top = top == Some(u.client);
        let own_long = if e.evidence_client == u.client && e.evidence > 0.0 {
            long
        } else {
            0.0
        };
        let payload = if is_top { window } else { 0.0 }.max(own_long);
        let volume = if is_top { volume } else { 0.0 };
        let answers = if is_top {
            view.answer_bits * (1.0 + view.rare_share) / DOMAIN_PAYLOAD_BITS
        } else {
            0.0
        };
        let mark = mark_key(u.key, u.client);
        let quarantined = if lex_score.max(payload).max(volume).max(answers) >= policy.threshold {
            if u.also != 0 {
                shard.flag(mark_key(u.key, u.also), now_ms, self.window_ms, policy);
            }
            shard.flag(mark, now_ms, self.window_ms, policy)
        } else {
            shard.quarantined(mark, now_ms)
        };
        Observed {
            view,
            payload,
            volume,
            answers,
            quarantined,
        }
    }

    fn view(&self, e: &Entry, w_old: f32) -> DomainView {
        let window_ms = self.window_ms;
        let (c, o) = (&e.cur, &e.old);
        let wsum = |a: u32, b: u32| a as f32 + w_old * b as f32;
        let queries = wsum(c.queries, o.queries).max(1.0);
        let responses = wsum(c.responses, o.responses);
        let minutes = window_ms as f32 / 60_000.0;
        DomainView {
            distinct: c.distinct(&self.distinct) + w_old * o.distinct(&self.distinct),
            bytes_per_min: wsum(c.bytes, o.bytes) / minutes,
            rare_share: wsum(c.rare_types, o.rare_types) / queries,
            // Only meaningful once a few answers were reported.
            nx_share: if responses >= 4.0 {
                wsum(c.nx, o.nx) / responses
            } else {
                0.0
            },
            window_payload: c.payload + w_old * o.payload,
            answer_bits: c.answer + w_old * o.answer,
            concentration: {
                let names = wsum(c.new_names, o.new_names);
                if names < 1.0 {
                    1.0
                } else {
                    (wsum(c.top_votes, o.top_votes) / names).clamp(0.0, 1.0)
                }
            },
            long_payload: e.evidence,
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

    /// Adds `bits` of encoded-data evidence found in an answer of the domain
    /// `key`, if the domain is already watched: tracked, with payload evidence
    /// or mostly TXT/NULL/CNAME/MX/SRV/private-type queries. Returns whether
    /// it was.
    pub(crate) fn record_answer(&self, now_ms: u64, key: u64, bits: f32) -> bool {
        let mut shard = self.shard(key).lock();
        let Some(&i) = shard.map.get(&key) else {
            return false;
        };
        let e = &mut shard.entries[i as usize];
        let w_old = e.rotate(now_ms, self.window_ms);
        if !Self::watched(e, w_old) {
            return false;
        }
        e.cur.answer += bits.max(0.0);
        true
    }

    /// Whether answers of the domain are worth scoring.
    fn watched(e: &Entry, w_old: f32) -> bool {
        let (c, o) = (&e.cur, &e.old);
        let queries = c.queries as f32 + w_old * o.queries as f32;
        let rare = c.rare_types as f32 + w_old * o.rare_types as f32;
        c.payload + o.payload + e.evidence > 0.0 || (queries >= 4.0 && rare >= 0.5 * queries)
    }

    /// Whether the domain `key` is watched (see [`Window::record_answer`]).
    pub(crate) fn watches(&self, now_ms: u64, key: u64) -> bool {
        let mut shard = self.shard(key).lock();
        let Some(&i) = shard.map.get(&key) else {
            return false;
        };
        let e = &mut shard.entries[i as usize];
        let w_old = e.rotate(now_ms, self.window_ms);
        Self::watched(e, w_old)
    }

    /// Whether `client` is quarantined for the domain `key` at `now_ms`.
    pub(crate) fn is_quarantined(&self, now_ms: u64, key: u64, client: u64) -> bool {
        self.shard(key)
            .lock()
            .quarantined(mark_key(key, client), now_ms)
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
            also: 0,
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
                .view;
        }
        assert!((120.0..180.0).contains(&v.distinct), "{}", v.distinct);
        // Repeats do not add names.
        let again = w
            .observe(2000, &upd(1, super::super::hash::mix(3)), 0.0, &P)
            .view;
        assert!((again.distinct - v.distinct).abs() < 1.0);
        // Ten minutes later the window is empty again.
        let later = w.observe(1000 + 600_000, &upd(1, 42), 0.0, &P).view;
        assert!(later.distinct < 2.0, "{}", later.distinct);
    }

    #[test]
    fn entry_size_is_bounded() {
        assert!(
            std::mem::size_of::<Entry>() <= 400,
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
    fn quarantine_after_flags_is_per_client() {
        let w = Window::new(64, 300, 1800);
        for t in 0..2 {
            assert!(!w.observe(t, &upd(9, t), 2.0, &P).quarantined);
        }
        assert!(w.observe(2, &upd(9, 2), 2.0, &P).quarantined);
        assert!(w.is_quarantined(59_000, 9, 0));
        assert!(!w.is_quarantined(61_000, 9, 0));
        // Another client of the domain is not quarantined, nor is the client
        // for another domain.
        assert!(!w.is_quarantined(59_000, 9, 7));
        assert!(!w.is_quarantined(59_000, 10, 0));
        let other = Update {
            client: 7,
            ..upd(9, 3)
        };
        assert!(!w.observe(3, &other, 0.0, &P).quarantined);
    }

    #[test]
    fn flags_older_than_the_window_do_not_add_up() {
        let w = Window::new(64, 300, 1800);
        for t in [0, 200_000, 400_000, 600_000] {
            assert!(!w.observe(t, &upd(9, t), 2.0, &P).quarantined, "{t}");
        }
    }

    #[test]
    fn domain_evidence_is_charged_to_the_client_that_made_it() {
        let w = Window::new(64, 300, 1800);
        let mut last = Observed::default();
        for i in 0..400u64 {
            let u = Update {
                payload_bits: 60.0,
                rare_type: true,
                ..upd(5, super::super::hash::mix(i))
            };
            last = w.observe(i * 10, &u, 0.0, &P);
        }
        assert!(last.payload >= 1.0 && last.volume >= 1.0, "{last:?}");
        assert!(last.quarantined, "the tunnelling client");
        // Another client's plain name of the same domain is charged nothing.
        let other = Update {
            client: 7,
            ..upd(5, 12345)
        };
        let o = w.observe(4_100, &other, 0.0, &P);
        assert!(o.view.distinct > 100.0, "{o:?}");
        assert_eq!((o.payload, o.volume, o.quarantined), (0.0, 0.0, false));
    }

    #[test]
    fn a_full_mark_set_keeps_live_quarantines() {
        // One shard's worth of marks: every (domain, client) pair lands in
        // one of few sets, so sets overflow.
        let w = Window::new(SHARDS, 300, 1800);
        assert!(!w.observe(0, &upd(3, 0), 2.0, &P).quarantined);
        w.observe(1, &upd(3, 1), 2.0, &P);
        assert!(w.observe(2, &upd(3, 2), 2.0, &P).quarantined);
        // Many single flags from other clients of the same domain.
        for c in 1..200u64 {
            let u = Update {
                client: c,
                ..upd(3, 10 + c)
            };
            w.observe(10 + c, &u, 2.0, &P);
        }
        assert!(w.is_quarantined(1_000, 3, 0));
    }
}
