//! The encoder: turns batches of entries into the exact puts sled will hold
//! (entry blocks, per-minute counters, hourly top lists), once per entry.
//!
//! It runs in the WAL thread (`wal.rs`), which appends each batch's puts to the
//! WAL before the writer applies them. Every put carries an absolute value (the
//! whole block, the minute's full counts, the hour's top list), never a delta,
//! so applying a put twice, or re-applying the WAL after a crash or a store
//! reopen, gives the same result.
//!
//! Blocks are keyed `(minute, seq)` with `seq = record seq << 8 | block number`:
//! unique without asking the store (record seqs grow across restarts) and in
//! arrival order within a minute. The block of the current minute stays open
//! and is put again with each batch until it is full.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codec::{
    BlockBuilder, BlockKey, HOUR_MS, MINUTE_MS, MinuteCounts, decode_top, encode_top, hour_key,
    hour_of, minute_key, minute_of,
};
use super::config::Privacy;
use super::entry::privacy_apply;
use super::entry::{Client, Entry, Ruling};
use super::store::Store;

/// Distinct keys kept per in-memory hourly top map before it is trimmed to
/// half (keeping the largest counts).
pub const TOP_MEMORY_CAP: usize = 20_000;
/// Keys persisted per hourly top list.
pub const TOP_STORED: usize = 100;
/// Kinds of hourly top lists.
pub(crate) const TOP_DOMAINS: u8 = b'd';
pub(crate) const TOP_BLOCKED: u8 = b'b';
pub(crate) const TOP_CLIENTS: u8 = b'c';

/// Blocks of different minutes open at once (late entries of the previous
/// minute still find theirs).
const OPEN_BLOCKS: usize = 4;
/// Blocks one record may open (the low byte of a block key's seq).
const BLOCKS_PER_RECORD: usize = 256;
/// Most entries in one record: even with 253-character names a block holds
/// more than 20 entries, so this many open fewer than [`BLOCKS_PER_RECORD`].
pub(crate) const MAX_RECORD_ENTRIES: usize = 4096;
/// Top lists are put at most this often (and when a batch is forced).
const TOP_PERSIST_EVERY: Duration = Duration::from_secs(1);

/// One batch, encoded: the puts to apply (and to write to the WAL first).
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    /// Key/value puts, each an absolute value.
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// Entries the batch added.
    pub entries: u64,
}

struct OpenBlock {
    b: BlockBuilder,
    modified: bool,
}

#[derive(Default)]
struct HourTops {
    domains: TopMap<Arc<str>>,
    blocked: TopMap<Arc<str>>,
    /// By name when the client is a `[[clients]]` entry, else by address.
    clients: TopMap<Client>,
    dirty: bool,
}

/// Counts per name or client (foldhash with a random seed: fast, and clients
/// cannot choose names that collide).
type TopMap<K> = HashMap<K, u64, foldhash::fast::RandomState>;

fn bump<K: std::hash::Hash + Eq + Clone>(m: &mut TopMap<K>, k: &K) {
    if let Some(c) = m.get_mut(k) {
        *c += 1;
        return;
    }
    if m.len() >= TOP_MEMORY_CAP {
        keep_largest(m, TOP_MEMORY_CAP / 2);
    }
    m.insert(k.clone(), 1);
}

/// Trims `m` to its `n` largest counts in place (ties broken arbitrarily), so
/// the keys that stay are neither cloned nor hashed again.
fn keep_largest<K: std::hash::Hash + Eq>(m: &mut TopMap<K>, n: usize) {
    if m.len() <= n {
        return;
    }
    let mut counts: Vec<u64> = m.values().copied().collect();
    let (_, &mut least, _) = counts.select_nth_unstable_by(n - 1, |a, b| b.cmp(a));
    // Keys above the n-th count stay; of those equal to it, as many as fit.
    let mut ties = n - counts[..n - 1].iter().filter(|&&c| c > least).count();
    m.retain(|_, c| match (*c).cmp(&least) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal if ties > 0 => {
            ties -= 1;
            true
        }
        _ => false,
    });
    // Erased slots would lengthen every later probe for a new name (most of
    // them, with diverse names): rebuild the table at its new size.
    m.shrink_to_fit();
}

/// The `n` largest counts of `m`, largest first; only those keys are cloned.
fn top_n<K: Clone>(m: &TopMap<K>, n: usize) -> Vec<(K, u64)> {
    let mut v: Vec<(&K, u64)> = m.iter().map(|(k, c)| (k, *c)).collect();
    if v.len() > n {
        v.select_nth_unstable_by(n, |a, b| b.1.cmp(&a.1));
        v.truncate(n);
    }
    v.sort_by_key(|b| std::cmp::Reverse(b.1));
    v.into_iter().map(|(k, c)| (k.clone(), c)).collect()
}

/// Encoder state: the open blocks and the running aggregates of recent minutes
/// and hours (loaded from the store the first time one is touched, so a
/// restart within a minute continues its counts).
pub(crate) struct Encoder {
    store: Option<Arc<dyn Store>>,
    privacy: Privacy,
    open: Vec<OpenBlock>,
    minutes: HashMap<u64, (MinuteCounts, bool), foldhash::fast::RandomState>,
    hours: HashMap<u64, HourTops, foldhash::fast::RandomState>,
    last_top_persist: Instant,
}

impl Encoder {
    /// An encoder whose aggregates continue those in `store` (`None`: start from
    /// zero, for tests and tools that write records by hand).
    pub fn new(store: Option<Arc<dyn Store>>, privacy: Privacy) -> Encoder {
        Encoder {
            store,
            privacy,
            open: Vec::new(),
            minutes: HashMap::default(),
            hours: HashMap::default(),
            last_top_persist: Instant::now(),
        }
    }

    /// Encodes `batch` (privacy applied here, before anything is written) as
    /// record `seq`; `force` also puts the top lists. Entries are consumed.
    pub fn encode(&mut self, seq: u64, batch: &mut Vec<Entry>, force: bool) -> Encoded {
        let mut out = Encoded {
            puts: Vec::new(),
            entries: batch.len() as u64,
        };
        let mut opened = 0usize;
        for e in batch.iter_mut() {
            privacy_apply(self.privacy, e);
            self.count(e);
            if self.privacy != Privacy::Nothing {
                self.push(e, seq, &mut opened, &mut out);
            }
        }
        batch.clear();
        // Blocks still open: put as they are now (again next batch).
        for o in self.open.iter_mut().filter(|o| o.modified) {
            out.puts.push(put_block(&o.b));
            o.modified = false;
        }
        for (&m, (c, dirty)) in self.minutes.iter_mut().filter(|(_, (_, d))| *d) {
            out.puts.push((minute_key(m).to_vec(), c.encode()));
            *dirty = false;
        }
        if force || self.last_top_persist.elapsed() >= TOP_PERSIST_EVERY {
            self.put_tops(&mut out);
        }
        self.trim();
        out
    }

    /// How long until unsaved top-list counts are due to be put (`None`:
    /// nothing unsaved). When traffic stops, the WAL thread wakes up for them.
    pub fn tops_due_in(&self) -> Option<Duration> {
        self.hours
            .values()
            .any(|t| t.dirty)
            .then(|| TOP_PERSIST_EVERY.saturating_sub(self.last_top_persist.elapsed()))
    }

    /// Adds `n` rate-limited queries to the counts of the minute of `now_ms`.
    pub fn add_rate_limited(&mut self, now_ms: u64, n: u64) {
        let store = &self.store;
        let minute = minute_of(now_ms);
        let (c, dirty) = self
            .minutes
            .entry(minute)
            .or_insert_with(|| (load_minute(store.as_deref(), minute), false));
        c.rate_limited += n;
        *dirty = true;
    }

    fn count(&mut self, e: &Entry) {
        let store = &self.store;
        let minute = minute_of(e.time_ms);
        let (c, dirty) = self
            .minutes
            .entry(minute)
            .or_insert_with(|| (load_minute(store.as_deref(), minute), false));
        c.add_entry(e);
        *dirty = true;
        if self.privacy == Privacy::Nothing {
            return;
        }
        let hour = hour_of(e.time_ms);
        let t = self
            .hours
            .entry(hour)
            .or_insert_with(|| load_hour(store.as_deref(), hour));
        t.dirty = true;
        if self.privacy != Privacy::HideNames {
            if e.verdict == Ruling::Blocked {
                bump(&mut t.blocked, &e.name);
            } else {
                bump(&mut t.domains, &e.name);
            }
        }
        if self.privacy != Privacy::HideClients {
            bump(&mut t.clients, &Client::of(e));
        }
    }

    fn push(&mut self, e: &Entry, seq: u64, opened: &mut usize, out: &mut Encoded) {
        let minute = minute_of(e.time_ms);
        let idx = match self.open.iter().position(|o| o.b.key.minute_ms == minute) {
            Some(i) => i,
            None => {
                if self.open.len() >= OPEN_BLOCKS {
                    // Close the block of the oldest minute.
                    let oldest = (0..self.open.len())
                        .min_by_key(|&i| self.open[i].b.key.minute_ms)
                        .unwrap_or(0);
                    let o = self.open.swap_remove(oldest);
                    if o.modified {
                        out.puts.push(put_block(&o.b));
                    }
                }
                self.open.push(OpenBlock {
                    b: BlockBuilder::new(block_key(minute, seq, opened)),
                    modified: false,
                });
                self.open.len() - 1
            }
        };
        let o = &mut self.open[idx];
        o.b.push(e);
        o.modified = true;
        if o.b.is_full() {
            let o = self.open.swap_remove(idx);
            out.puts.push(put_block(&o.b));
        }
    }

    fn put_tops(&mut self, out: &mut Encoded) {
        for (&hour, t) in self.hours.iter_mut().filter(|(_, t)| t.dirty) {
            let d = top_n(&t.domains, TOP_STORED);
            let d: Vec<(&str, u64)> = d.iter().map(|(k, c)| (&**k, *c)).collect();
            out.puts
                .push((hour_key(hour, TOP_DOMAINS).to_vec(), encode_top(&d)));
            let b = top_n(&t.blocked, TOP_STORED);
            let b: Vec<(&str, u64)> = b.iter().map(|(k, c)| (&**k, *c)).collect();
            out.puts
                .push((hour_key(hour, TOP_BLOCKED).to_vec(), encode_top(&b)));
            let c: Vec<(String, u64)> = top_n(&t.clients, TOP_STORED)
                .into_iter()
                .map(|(who, c)| (who.to_string(), c))
                .collect();
            let c: Vec<(&str, u64)> = c.iter().map(|(k, n)| (k.as_str(), *n)).collect();
            out.puts
                .push((hour_key(hour, TOP_CLIENTS).to_vec(), encode_top(&c)));
            t.dirty = false;
        }
        self.last_top_persist = Instant::now();
    }

    /// Forgets minutes and hours that no entry will touch any more (their
    /// last values are in the store).
    fn trim(&mut self) {
        if self.minutes.len() > 8
            && let Some(&newest) = self.minutes.keys().max()
        {
            let keep = newest.saturating_sub(5 * MINUTE_MS);
            self.minutes.retain(|&m, (_, d)| *d || m >= keep);
        }
        if self.hours.len() > 2
            && let Some(&newest) = self.hours.keys().max()
        {
            let keep = newest.saturating_sub(HOUR_MS);
            self.hours.retain(|&h, t| t.dirty || h >= keep);
        }
    }
}

/// The stored counts of `minute` (zero without a store or a value).
fn load_minute(store: Option<&dyn Store>, minute: u64) -> MinuteCounts {
    store
        .and_then(|s| s.get(&minute_key(minute)).ok().flatten())
        .and_then(|v| MinuteCounts::decode(&v).ok())
        .unwrap_or_default()
}

/// The stored top lists of `hour`.
fn load_hour(store: Option<&dyn Store>, hour: u64) -> HourTops {
    let mut t = HourTops::default();
    let Some(store) = store else {
        return t;
    };
    let load = |kind: u8| -> Vec<(String, u64)> {
        store
            .get(&hour_key(hour, kind))
            .ok()
            .flatten()
            .and_then(|v| decode_top(&v).ok())
            .unwrap_or_default()
    };
    for (k, c) in load(TOP_DOMAINS) {
        t.domains.insert(Arc::from(k), c);
    }
    for (k, c) in load(TOP_BLOCKED) {
        t.blocked.insert(Arc::from(k), c);
    }
    for (k, c) in load(TOP_CLIENTS) {
        t.clients.insert(Client::parse(&k), c);
    }
    t
}

/// The key of the next block a record opens.
fn block_key(minute_ms: u64, seq: u64, opened: &mut usize) -> BlockKey {
    let n = (*opened % BLOCKS_PER_RECORD) as u32;
    *opened += 1;
    BlockKey {
        minute_ms,
        seq: ((seq as u32) << 8) | n,
    }
}

/// The put of a block: encoded straight into its own value.
fn put_block(b: &BlockBuilder) -> (Vec<u8>, Vec<u8>) {
    let mut v = Vec::new();
    b.encode_into(&mut v);
    (b.key.encode().to_vec(), v)
}
