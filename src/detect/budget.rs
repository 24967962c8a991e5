//! The information budget: how much new name text one client sends below one
//! registrable domain, over minutes, hours and a day.
//!
//! Exfiltration that looks like words (syllables, user and host names, tokens
//! as labels) has nothing a per-name feature sees; what gives it away is that
//! one client keeps putting new text below one domain nobody else uses. So
//! each (client, registrable domain) pair keeps a 512-bit sketch of what it
//! already sent there (label hashes and label trigrams, seeded) and three
//! leaky accumulators of *novelty*: the bytes of a name's labels whose
//! trigrams were not in the sketch (a repeated label is 0, a new label
//! recombined from pieces already sent is half its length, fresh text is its
//! length). The
//! accumulators decay with half-lives of [`PERIODS`] (10 minutes, 2 hours,
//! a day); each has a budget (`budget_bytes` times 1, 2, 4). A query that
//! leaves any accumulator above its budget is over budget.
//!
//! Popularity discounts the budget: a second table keeps, per registrable
//! domain, a 64-bit sketch of the clients that used it today and yesterday;
//! with `n` distinct clients the budget is multiplied by `n²` (a domain many
//! clients use is not one client's private channel). Exempt names (the
//! detector's exemption list) and names without a known public suffix (they
//! never reach the internet by public delegation) are never metered.
//!
//! Memory is fixed when the detector is built and never grows: the pair table
//! holds `max_domains` pairs of 144 bytes in sets of [`WAYS`], the popularity
//! table `max_domains` domains of 32 bytes. Clients share the pair table
//! fairly: an approximate count of the pairs each client holds is kept, a
//! full set gives up a pair of the client holding the most pairs, and a
//! client holding more than 1/16 of the table (at least 64 pairs) may only
//! replace its own pairs or free ones, so one client's flood of domains cannot
//! evict everyone else's budgets.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::count::LinearCount;
use super::hash::{hash_bytes, mix};

/// Half-lives of the accumulators, seconds, and their budget multipliers.
pub(crate) const PERIODS: [(u32, f32); 3] = [(600, 1.0), (7200, 2.0), (86_400, 4.0)];
/// Ways per set of both tables.
pub(crate) const WAYS: usize = 8;
const SHARDS: usize = 64;
const SKETCH_WORDS: usize = 8;
const SKETCH_BITS: u64 = (SKETCH_WORDS * 64) as u64;
/// Labels remembered exactly per pair.
const LABELS: usize = 12;
/// Counters of pairs held per client (indexed by a hash of the client).
const OWNER_SLOTS: usize = 4096;
/// Popularity generations last a day: a domain's clients are those of today
/// and yesterday.
const DAY_MS: u64 = 86_400_000;

/// One (client, registrable domain) pair.
#[derive(Clone, Copy, Default)]
struct Pair {
    /// Seeded hash of (client, domain); 0 = free.
    key: u64,
    last_ms: u64,
    /// Owner counter index.
    owner: u16,
    acc: [f32; 3],
    /// Trigrams sent (one seeded hash bit each).
    sketch: [u64; SKETCH_WORDS],
    /// Fingerprints of the last labels sent (0 = none), replaced in turn.
    labels: [u32; LABELS],
    next_label: u8,
}

impl Pair {
    fn decay(&mut self, now_ms: u64) {
        let dt = now_ms.saturating_sub(self.last_ms) as f32 / 1000.0;
        if dt > 0.0 {
            for (a, (hl, _)) in self.acc.iter_mut().zip(PERIODS) {
                *a *= (-dt / hl as f32).exp2();
            }
        }
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Sets bit `h`; returns whether it was already set.
    #[inline]
    fn mark(&mut self, h: u64) -> bool {
        let bit = h % SKETCH_BITS;
        let (w, m) = ((bit / 64) as usize, 1u64 << (bit % 64));
        let had = self.sketch[w] & m != 0;
        self.sketch[w] |= m;
        had
    }

    /// Remembers label fingerprint `fp`; returns whether it was known.
    fn label(&mut self, fp: u32) -> bool {
        if self.labels.contains(&fp) {
            return true;
        }
        self.labels[usize::from(self.next_label) % LABELS] = fp;
        self.next_label = (self.next_label + 1) % LABELS as u8;
        false
    }

    /// Bits set in the sketch.
    fn bits(&self) -> u32 {
        self.sketch.iter().map(|w| w.count_ones()).sum()
    }

    /// Whether nothing would be lost by giving the slot away.
    fn spent(&self, now_ms: u64) -> bool {
        self.key == 0 || now_ms.saturating_sub(self.last_ms) >= DAY_MS
    }
}

/// One registrable domain's clients.
#[derive(Clone, Copy, Default)]
struct Domain {
    key: u64,
    gen_ms: u64,
    cur: u64,
    old: u64,
}

impl Domain {
    /// Distinct clients of today and yesterday (linear counting).
    fn clients(&self, count: &LinearCount) -> f32 {
        count.of((self.cur | self.old).count_zeros())
    }
}

struct Shard {
    pairs: Box<[Pair]>,
    domains: Box<[Domain]>,
}

/// What the budget says about one query.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Spent {
    /// Novelty of this query's name, bytes.
    pub(crate) novelty: f32,
    /// The accumulator furthest over (or nearest to) its budget: its bytes,
    /// its (popularity-discounted) budget and its index in [`PERIODS`].
    pub(crate) bytes: f32,
    pub(crate) limit: f32,
    pub(crate) period: u8,
    /// Distinct clients of the domain (today and yesterday).
    pub(crate) clients: f32,
}

impl Spent {
    /// `bytes / limit`: 1.0 or more is over budget.
    pub(crate) fn ratio(&self) -> f32 {
        if self.limit > 0.0 {
            self.bytes / self.limit
        } else {
            0.0
        }
    }
}

/// The information-budget tables.
pub(crate) struct Budget {
    shards: Box<[Mutex<Shard>]>,
    owners: Box<[AtomicU32]>,
    seed: u64,
    base: f32,
    quota: u32,
    /// Distinct clients from a domain's 64-bit sketch.
    clients: LinearCount,
}

impl Budget {
    /// Tables for `pairs` pairs and as many domains; `base` bytes is the budget
    /// of the shortest period (0 turns the budget off).
    pub(crate) fn new(seed: u64, pairs: usize, base: f32) -> Self {
        let per_shard = pairs.div_ceil(SHARDS).next_multiple_of(WAYS).max(WAYS);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    pairs: vec![Pair::default(); per_shard].into_boxed_slice(),
                    domains: vec![Domain::default(); per_shard].into_boxed_slice(),
                })
            })
            .collect();
        Budget {
            shards,
            owners: (0..OWNER_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            seed,
            base,
            quota: ((per_shard * SHARDS) / 16).max(64) as u32,
            clients: LinearCount::new(64),
        }
    }

    /// Meters `below` (the lower-case name text below the registrable domain
    /// `domain`, a seeded hash) sent by `client` (a seeded hash) at `now_ms`.
    /// `identity`: the name carries a user and a host name (`identity.rs`),
    /// which spends a whole short-period budget the first time it is sent.
    pub(crate) fn spend(
        &self,
        now_ms: u64,
        client: u64,
        domain: u64,
        below: &[u8],
        identity: bool,
    ) -> Spent {
        if self.base <= 0.0 {
            return Spent::default();
        }
        let clients = self.popularity(now_ms, client, domain);
        let pair_key = mix(domain ^ client.rotate_left(29) ^ self.seed) | 1;
        let owner = (mix(client) % OWNER_SLOTS as u64) as u16;
        let mut shard = self.shards[(pair_key >> 58) as usize % SHARDS].lock();
        let Some(p) = self.slot(&mut shard.pairs, pair_key, owner, now_ms) else {
            return Spent {
                clients,
                ..Spent::default()
            };
        };
        p.decay(now_ms);
        // The sketch is counted once: what `novelty` marks is added to it.
        let bits = p.bits();
        let (mut novelty, marked) = novelty(p, pair_key, below, bits);
        if identity && novelty > 0.0 {
            novelty += self.base;
        }
        if u64::from(bits + marked) > SKETCH_BITS / 2 {
            // Saturated: start over (what was sent counts as new again, which
            // errs towards flagging, never towards missing).
            p.sketch = [0; SKETCH_WORDS];
        }
        let discount = (clients * clients).clamp(1.0, 256.0);
        let mut best = Spent {
            novelty,
            clients,
            ..Spent::default()
        };
        for (i, (a, (_, mult))) in p.acc.iter_mut().zip(PERIODS).enumerate() {
            *a += novelty;
            let limit = self.base * mult * discount;
            if i == 0 || *a / limit > best.ratio() {
                (best.bytes, best.limit, best.period) = (*a, limit, i as u8);
            }
        }
        best
    }

    /// Counts `client` among `domain`'s clients; returns how many it has.
    fn popularity(&self, now_ms: u64, client: u64, domain: u64) -> f32 {
        let mut shard = self.shards[(domain >> 58) as usize % SHARDS].lock();
        let sets = shard.domains.len() / WAYS;
        let set = (domain >> 20) as usize % sets * WAYS;
        let ways = &mut shard.domains[set..set + WAYS];
        let w = match ways.iter().position(|d| d.key == domain) {
            Some(w) => w,
            None => {
                // The way used least recently.
                let w = (0..WAYS).min_by_key(|&w| ways[w].gen_ms).unwrap_or(0);
                ways[w] = Domain {
                    key: domain,
                    gen_ms: now_ms,
                    ..Domain::default()
                };
                w
            }
        };
        let d = &mut ways[w];
        if now_ms >= d.gen_ms + DAY_MS {
            d.old = if now_ms < d.gen_ms + 2 * DAY_MS {
                d.cur
            } else {
                0
            };
            d.cur = 0;
            d.gen_ms = now_ms;
        }
        d.cur |= 1 << (mix(client ^ 0xC11E) % 64);
        d.clients(&self.clients)
    }

    /// The slot of `key`, claiming one if it has none; `None` when the client
    /// is over its share and the set has nothing it may take.
    fn slot<'a>(
        &self,
        pairs: &'a mut [Pair],
        key: u64,
        owner: u16,
        now_ms: u64,
    ) -> Option<&'a mut Pair> {
        let sets = pairs.len() / WAYS;
        let set = (key >> 20) as usize % sets * WAYS;
        let ways = &mut pairs[set..set + WAYS];
        if let Some(w) = ways.iter().position(|p| p.key == key) {
            return Some(&mut ways[w]);
        }
        let held = |o: u16| self.owners[usize::from(o)].load(Ordering::Relaxed);
        let mine = held(owner);
        let over = mine >= self.quota;
        // A free or day-old slot; else (over its share) the client's own
        // oldest; else the oldest of the client holding the most pairs if it
        // holds more than this one, else this client's own oldest, else the
        // oldest.
        let own = |ways: &[Pair]| {
            (0..WAYS)
                .filter(|&w| ways[w].owner == owner)
                .min_by_key(|&w| ways[w].last_ms)
        };
        let w = match (0..WAYS)
            .filter(|&w| ways[w].spent(now_ms))
            .min_by_key(|&w| ways[w].last_ms)
        {
            Some(w) => w,
            None if over => own(ways)?,
            None => (0..WAYS)
                .filter(|&w| held(ways[w].owner) > mine)
                .max_by_key(|&w| (held(ways[w].owner), u64::MAX - ways[w].last_ms))
                .or_else(|| own(ways))
                .or_else(|| (0..WAYS).min_by_key(|&w| ways[w].last_ms))?,
        };
        let old = &ways[w];
        if old.key != 0 {
            self.owners[usize::from(old.owner)].fetch_sub(1, Ordering::Relaxed);
        }
        self.owners[usize::from(owner)].fetch_add(1, Ordering::Relaxed);
        ways[w] = Pair {
            key,
            last_ms: now_ms,
            owner,
            ..Pair::default()
        };
        Some(&mut ways[w])
    }
}

/// Bytes of `below` the pair had not seen, remembering them: per label, 0 if
/// it is one of the last labels sent, else its length scaled by the share of
/// its trigrams that are new (corrected for the sketch's fill: `bits` set
/// before), at least half. Also returns the bits it set.
fn novelty(p: &mut Pair, seed: u64, below: &[u8], bits: u32) -> (f32, u32) {
    let fill = (bits as f32 / SKETCH_BITS as f32).min(0.9);
    let mut total = 0.0;
    let mut marked = 0;
    for label in below.split(|&c| c == b'.') {
        if label.is_empty() || p.label((hash_bytes(seed, label) as u32).max(1)) {
            continue;
        }
        if label.len() < 3 {
            total += label.len() as f32;
            continue;
        }
        let grams = label.len() - 2;
        let fresh = label
            .windows(3)
            .filter(|g| {
                let h = u64::from(g[0]) | u64::from(g[1]) << 8 | u64::from(g[2]) << 16;
                !p.mark(mix(h ^ seed))
            })
            .count();
        // A label never sent is at least half new: an encoder with a small
        // alphabet (syllables) recombines the same trigrams by design.
        let share = (fresh as f32 / grams as f32 / (1.0 - fill)).clamp(0.5, 1.0);
        total += label.len() as f32 * share;
        marked += fresh as u32;
    }
    (total, marked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn table_sizes_are_bounded() {
        assert!(
            std::mem::size_of::<Pair>() <= 144,
            "{}",
            std::mem::size_of::<Pair>()
        );
        assert!(std::mem::size_of::<Domain>() <= 32);
    }

    #[test]
    fn repeats_cost_nothing_and_fresh_text_its_length() {
        let b = Budget::new(7, 1024, 64.0);
        let s = b.spend(0, 1, 2, b"alpha.cdn", false);
        assert_eq!(s.novelty, 8.0);
        assert_eq!(b.spend(1000, 1, 2, b"alpha.cdn", false).novelty, 0.0);
        // Only the new label counts.
        let s = b.spend(2000, 1, 2, b"zqxjkv.cdn", false);
        assert_eq!(s.novelty, 6.0);
        // Another client, or another domain, starts from nothing.
        assert_eq!(b.spend(3000, 3, 2, b"alpha.cdn", false).novelty, 8.0);
        assert_eq!(b.spend(3000, 1, 4, b"alpha.cdn", false).novelty, 8.0);
        assert_eq!(b.spend(3000, 1, 4, b"", false).novelty, 0.0);
    }

    #[test]
    fn steady_new_text_to_a_private_domain_crosses_the_budget() {
        let b = Budget::new(7, 1024, 64.0);
        let mut over = None;
        for i in 0..20u64 {
            let label = format!("w{:016x}", mix(i));
            let s = b.spend(i * MIN, 1, 9, label.as_bytes(), false);
            if s.ratio() >= 1.0 {
                over = Some((i, s));
                break;
            }
        }
        let (i, s) = over.expect("over budget");
        assert!(i <= 5, "{i} {s:?}");
        // One client: no discount (linear counting says ~1.01 clients).
        assert!((64.0..66.0).contains(&s.limit) && s.period == 0, "{s:?}");
    }

    #[test]
    fn budgets_decay_and_the_day_remembers_slow_senders() {
        let b = Budget::new(7, 1024, 64.0);
        let s = b.spend(0, 1, 9, b"abcdefghijklmnopqrstuvwxyz0123456789", false);
        assert!(s.ratio() < 1.0);
        // An hour later the 10-minute accumulator has forgotten it...
        let s = b.spend(60 * MIN, 1, 9, b"zyxwvutsrq", false);
        assert!(s.period != 0, "{s:?}");
        // ... one new 40-byte name an hour still adds up within the day.
        let mut last = s;
        for h in 2..20u64 {
            let label = format!("{:016x}{:016x}zzzzzzzz", mix(h), mix(h + 99));
            last = b.spend(h * 60 * MIN, 1, 9, label.as_bytes(), false);
            if last.ratio() >= 1.0 {
                break;
            }
        }
        assert!(last.ratio() >= 1.0 && last.period == 2, "{last:?}");
    }

    #[test]
    fn popular_domains_get_a_larger_budget() {
        let b = Budget::new(7, 1024, 64.0);
        for c in 0..6u64 {
            b.spend(c, mix(c + 100), 5, b"www", false);
        }
        let s = b.spend(
            10,
            mix(100),
            5,
            b"abcdefghijklmnopqrstuvwxyz0123456789",
            false,
        );
        assert!(s.clients > 4.0, "{s:?}");
        assert!(s.limit >= 64.0 * 16.0, "{s:?}");
        assert!(s.ratio() < 0.1);
    }

    #[test]
    fn one_client_cannot_evict_the_others() {
        // 64 shards * 8 ways: one set per shard.
        let b = Budget::new(7, 512, 64.0);
        // A victim's pair, with some history.
        for i in 0..3u64 {
            b.spend(i, 42, 77, format!("v{i}abcdef").as_bytes(), false);
        }
        // A flood of domains from one client.
        for d in 0..20_000u64 {
            b.spend(1000 + d, 1, mix(d), b"flood", false);
        }
        // The victim's pair survived: its labels are still known.
        assert_eq!(b.spend(30_000, 42, 77, b"v1abcdef", false).novelty, 0.0);
        // A newcomer still gets pairs (from the flooding client's share).
        for d in 0..50u64 {
            b.spend(40_000 + d, 43, 1_000_000 + d, b"first", false);
            assert_eq!(
                b.spend(40_000 + d, 43, 1_000_000 + d, b"first", false)
                    .novelty,
                0.0
            );
        }
    }
}
