//! The writer thread: drains the channel, applies the privacy level, packs
//! entries into blocks, keeps the per-minute counters and per-hour top lists,
//! commits in batches, flushes, retries after write errors, and prunes old
//! data (retention).
//!
//! Write errors never stop the thread: the failed puts stay pending and are
//! retried with the next commit; if more than [`MAX_PENDING_ENTRIES`] entries
//! are pending, the pending entries are counted as dropped and discarded.
//!
//! # Durability without waiting for the disk
//! With a WAL (logs opened by [`QueryLog::open`](super::QueryLog::open)),
//! entries pass through the WAL thread ([`super::wal::run_wal_thread`]),
//! which appends each batch to the WAL (plain `write`, no fsync) and then
//! hands it to this writer as `Msg::Batch(entries, seq)`. sled's `flush`
//! (fsync, which can stall for seconds on a busy disk) runs in a separate
//! flusher thread; and since sled's `apply` can itself wait behind a slow
//! flush, the WAL thread never calls sled at all. Invariant: every entry
//! recorded is in a WAL segment that still exists, or durable in sled, or
//! not yet in the WAL (the channel from `record` and the WAL thread's
//! current batch: what a crash loses, about one batch interval; batches
//! queued behind a stalled sled are already in the WAL). It holds because
//! * a batch reaches the WAL before this writer sees it;
//! * a flush is requested only when everything staged has been applied
//!   (`dirty` is empty); it reports `applied_seq`, the newest record
//!   applied (records are applied in `seq` order), and starts after those
//!   applies, so when it returns every record `<= applied_seq` is durable;
//! * only then does the flusher delete the *closed* segments whose newest
//!   record is `<= applied_seq`; a failed flush deletes nothing; at most one
//!   flush is in flight.
//!
//! sled stores `applied_seq` under the key `W` in the same atomic batch as
//! the entries. On open, [`Writer::replay`] applies the records newer than
//! `W` through the usual commit path (blocks, minute counters, top lists),
//! flushes, and deletes the segments: no record is applied twice. (The
//! hourly top lists are persisted once a second, not with every batch, so
//! after a crash they can miss up to a second of counts, as before.)

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::codec::{
    BlockBuilder, BlockKey, HOUR_MS, MINUTE_MS, MinuteCounts, PREFIX_ENTRY, PREFIX_HOUR,
    PREFIX_MINUTE, decode_key, decode_top, encode_top, hour_key, hour_of, minute_key, minute_of,
};
use super::config::Privacy;
use super::entry::{Entry, Verdict, empty_str, hidden_str};
use super::store::{Store, StoreError};
use super::wal::{self, Closed, KEY_WAL_SEQ, Wal};

/// Entries waiting for a successful write before they are dropped.
pub const MAX_PENDING_ENTRIES: u64 = 200_000;
/// Distinct keys kept per in-memory hourly top map before it is trimmed to
/// half (keeping the largest counts).
pub const TOP_MEMORY_CAP: usize = 20_000;
/// Keys persisted per hourly top list.
pub const TOP_STORED: usize = 100;
/// Kinds of hourly top lists.
pub(crate) const TOP_DOMAINS: u8 = b'd';
pub(crate) const TOP_BLOCKED: u8 = b'b';
pub(crate) const TOP_CLIENTS: u8 = b'c';

const OPEN_BLOCKS: usize = 4;
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const PRUNE_CHUNK: usize = 5000;
const TOP_PERSIST_EVERY: Duration = Duration::from_secs(1);
const IDLE_TICK: Duration = Duration::from_secs(1);
const REOPEN_MIN_BACKOFF: Duration = Duration::from_millis(500);
const REOPEN_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the writer checks for the end of a flush in flight once the
/// next flush is due.
const FLUSH_POLL: Duration = Duration::from_millis(10);

/// Messages to the writer.
pub(crate) enum Msg {
    Entry(Entry),
    /// A batch already in the WAL as record `seq` (from the WAL thread).
    Batch(Vec<Entry>, u64),
    Flush(SyncSender<()>),
    Prune(u64, SyncSender<Result<u64, StoreError>>),
    Shutdown(SyncSender<()>),
}

/// Counters shared between the handle and the writer.
#[derive(Default)]
pub(crate) struct Shared {
    pub dropped: AtomicU64,
    pub written: AtomicU64,
    pub write_errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn error(&self, e: &StoreError) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.0.clone());
        }
    }
}

struct OpenBlock {
    b: BlockBuilder,
    modified: bool,
}

#[derive(Default)]
struct HourTops {
    domains: TopMap<Arc<str>>,
    blocked: TopMap<Arc<str>>,
    clients: TopMap<IpAddr>,
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
        let keep = top_n(m, TOP_MEMORY_CAP / 2);
        m.clear();
        m.extend(keep);
    }
    m.insert(k.clone(), 1);
}

fn top_n<K: Clone>(m: &TopMap<K>, n: usize) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = m.iter().map(|(k, c)| (k.clone(), *c)).collect();
    if v.len() > n {
        v.select_nth_unstable_by(n, |a, b| b.1.cmp(&a.1));
        v.truncate(n);
    }
    v.sort_by_key(|b| std::cmp::Reverse(b.1));
    v
}

/// Apply the privacy level to an entry before it is stored or written to
/// the WAL (idempotent).
pub(crate) fn privacy_apply(privacy: Privacy, e: &mut Entry) {
    match privacy {
        Privacy::HideNames => {
            e.name = hidden_str();
            e.rule = empty_str();
            e.answer = empty_str();
        }
        Privacy::HideClients => {
            e.client = match e.client {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            }
        }
        // No entry is stored, only anonymous counts: keep nothing
        // else (this is also what reaches the WAL).
        Privacy::Nothing => {
            e.name = hidden_str();
            e.rule = empty_str();
            e.answer = empty_str();
            e.list = empty_str();
            e.group = empty_str();
            e.client = match e.client {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            }
        }
        Privacy::Everything => {}
    }
}

pub(crate) struct Writer {
    pub store: Arc<dyn Store>,
    pub shared: Arc<Shared>,
    pub privacy: Privacy,
    pub retention_days: u32,
    pub batch_size: usize,
    pub interval: Duration,
    open: Vec<OpenBlock>,
    last_seq: HashMap<u64, u32>,
    minutes: HashMap<u64, (MinuteCounts, bool)>,
    hours: HashMap<u64, HourTops>,
    dirty: BTreeMap<Vec<u8>, Vec<u8>>,
    pending_entries: u64,
    last_flush: Instant,
    last_top_persist: Instant,
    next_prune: Instant,
    pruning: bool,
    unflushed: bool,
    failing_since: Option<Instant>,
    next_reopen: Instant,
    reopen_backoff: Duration,
    wal: Option<(std::path::PathBuf, Closed)>,
    pending_seq: Option<u64>,
    staged_seq: Option<u64>,
    applied_seq: Option<u64>,
    flush_tx: Option<Sender<Option<u64>>>,
    flush_done: Option<Receiver<Result<(), StoreError>>>,
    flusher: Option<JoinHandle<()>>,
    flush_in_flight: bool,
}

/// Flush the store (fsync) and then delete the closed WAL segments whose
/// records are all `<= upto` (applied before the flush started). Runs in
/// the flusher thread (or inline if it could not start).
fn flush_and_trim(
    store: &dyn Store,
    wal: Option<&(std::path::PathBuf, Closed)>,
    upto: Option<u64>,
) -> Result<(), StoreError> {
    let started = Instant::now();
    let flushed = store.flush();
    let took = started.elapsed();
    if took > Duration::from_secs(1) {
        tracing::warn!(
            took_ms = took.as_millis() as u64,
            "query log: slow disk flush (the writer keeps going; the WAL covers it)"
        );
    }
    flushed?;
    if let (Some((dir, closed)), Some(n)) = (wal, upto)
        && let Err(e) = wal::delete_durable(dir, closed, n)
    {
        // Harmless: leftover records are skipped on replay (their seq is
        // at most the one stored in sled) and deleted by the next flush.
        tracing::warn!(error = %e, "query log: cannot delete old WAL segments");
    }
    Ok(())
}

impl Writer {
    pub fn new(
        store: Arc<dyn Store>,
        shared: Arc<Shared>,
        privacy: Privacy,
        retention_days: u32,
        batch_size: usize,
        interval: Duration,
    ) -> Writer {
        let now = Instant::now();
        Writer {
            store,
            shared,
            privacy,
            retention_days,
            batch_size: batch_size.max(1),
            interval,
            open: Vec::new(),
            last_seq: HashMap::new(),
            minutes: HashMap::new(),
            hours: HashMap::new(),
            dirty: BTreeMap::new(),
            pending_entries: 0,
            last_flush: now,
            last_top_persist: now,
            next_prune: now,
            pruning: true,
            unflushed: false,
            failing_since: None,
            next_reopen: now,
            reopen_backoff: REOPEN_MIN_BACKOFF,
            wal: None,
            pending_seq: None,
            staged_seq: None,
            applied_seq: None,
            flush_tx: None,
            flush_done: None,
            flusher: None,
            flush_in_flight: false,
        }
    }

    /// Replay the WAL segments in `dir` (left by a crash) into the store,
    /// skipping records already in it, flush, delete the segments, and
    /// return the [`Wal`] for the WAL thread to log to `dir` from then on.
    /// Call before [`run`](Self::run), after the directory lock is taken.
    pub fn replay(&mut self, dir: &Path) -> Result<Wal, StoreError> {
        let io = |e: std::io::Error| StoreError(format!("query log WAL {}: {e}", dir.display()));
        let applied = match self.store.get(KEY_WAL_SEQ)? {
            Some(v) => decode_seq(&v)
                .ok_or_else(|| StoreError("corrupt WAL position in the store".into()))?,
            None => 0,
        };
        let segments = wal::list_segments(dir).map_err(io)?;
        let mut max_seq = applied;
        let mut replayed = 0u64;
        for &n in &segments {
            let (records, torn) = wal::read_segment(dir, n).map_err(io)?;
            if torn {
                tracing::warn!(
                    segment = n,
                    "query log: ignoring the torn tail of a WAL segment (crash while writing)"
                );
            }
            for r in records {
                max_seq = max_seq.max(r.seq);
                if r.seq <= applied {
                    continue;
                }
                let mut batch = r.entries;
                for e in &mut batch {
                    self.privacy_apply(e);
                }
                replayed += batch.len() as u64;
                self.dirty
                    .insert(KEY_WAL_SEQ.to_vec(), r.seq.to_be_bytes().to_vec());
                self.apply_staged(&mut batch, false)?;
            }
        }
        if let Some(&last) = segments.last() {
            let mut none = Vec::new();
            self.apply_staged(&mut none, true)?;
            self.store.flush()?;
            self.unflushed = false;
            wal::delete_upto(dir, last).map_err(io)?;
            if replayed > 0 {
                tracing::info!(
                    entries = replayed,
                    "query log: replayed entries from the WAL after a crash"
                );
            }
        }
        let first = segments.last().map_or(0, |n| n + 1);
        let wal = Wal::new(dir.to_owned(), first, max_seq + 1);
        self.wal = Some((dir.to_owned(), wal.closed()));
        Ok(wal)
    }

    fn start_flusher(&mut self) {
        let (req_tx, req_rx) = channel::<Option<u64>>();
        let (done_tx, done_rx) = channel();
        let store = self.store.clone();
        let wal = self.wal.clone();
        let spawned = std::thread::Builder::new()
            .name("querylog-flusher".into())
            .spawn(move || {
                for upto in req_rx {
                    if done_tx
                        .send(flush_and_trim(&*store, wal.as_ref(), upto))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        // Without the thread, flushes run inline (as a fallback).
        if let Ok(h) = spawned {
            self.flush_tx = Some(req_tx);
            self.flush_done = Some(done_rx);
            self.flusher = Some(h);
        }
    }

    fn stop_flusher(&mut self) {
        self.poll_flush(true);
        self.flush_tx = None;
        self.flush_done = None;
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
    }

    /// Collect the result of the flush in flight, waiting for it if `block`.
    fn poll_flush(&mut self, block: bool) {
        if !self.flush_in_flight {
            return;
        }
        let r = match &self.flush_done {
            Some(rx) if block => rx.recv().map_err(|_| TryRecvError::Disconnected),
            Some(rx) => rx.try_recv(),
            None => Err(TryRecvError::Disconnected),
        };
        match r {
            Ok(r) => {
                self.flush_in_flight = false;
                self.flush_result(r);
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => {
                // The flusher is gone: flush inline from now on.
                self.flush_in_flight = false;
                self.unflushed = true;
                self.flush_tx = None;
                self.flush_done = None;
            }
        }
    }

    fn flush_result(&mut self, r: Result<(), StoreError>) {
        match r {
            Ok(()) => {
                self.failing_since = None;
                self.reopen_backoff = REOPEN_MIN_BACKOFF;
            }
            Err(e) => {
                self.unflushed = true;
                self.failed(&e);
            }
        }
    }

    /// Start a flush in the flusher thread (inline when there is none, and
    /// wait for it when `wait`). Only call with nothing staged (`dirty`
    /// empty) and no flush in flight.
    fn start_flush(&mut self, wait: bool) {
        let upto = self.applied_seq;
        self.last_flush = Instant::now();
        self.unflushed = false;
        if let Some(tx) = &self.flush_tx
            && tx.send(upto).is_ok()
        {
            self.flush_in_flight = true;
            if wait {
                self.poll_flush(true);
            }
            return;
        }
        let r = flush_and_trim(&*self.store, self.wal.as_ref(), upto);
        self.flush_result(r);
    }

    /// The thread body.
    pub fn run(mut self, rx: Receiver<Msg>) {
        self.start_flusher();
        let mut batch: Vec<Entry> = Vec::with_capacity(self.batch_size);
        let mut deadline: Option<Instant> = None;
        let mut last_housekeeping = Instant::now();
        loop {
            self.poll_flush(false);
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                // Applied but not yet flushed: flush one interval after
                // the previous flush even if no more entries arrive (and
                // while a flush is in flight, poll for its end).
                None if self.unflushed || self.flush_in_flight => {
                    let due =
                        (self.last_flush + self.interval).saturating_duration_since(Instant::now());
                    if self.flush_in_flight {
                        due.max(FLUSH_POLL)
                    } else {
                        due
                    }
                }
                None => IDLE_TICK,
            };
            match rx.recv_timeout(wait) {
                Ok(Msg::Entry(e)) => {
                    if batch.is_empty() {
                        deadline = Some(Instant::now() + self.interval);
                    }
                    batch.push(e);
                    if batch.len() >= self.batch_size {
                        self.commit(&mut batch, false);
                        deadline = None;
                        self.housekeeping();
                    }
                }
                Ok(Msg::Batch(entries, seq)) => {
                    // Already batched (and in the WAL): commit at once.
                    batch.extend(entries);
                    self.pending_seq = Some(seq);
                    self.commit(&mut batch, false);
                    deadline = None;
                    // As with single entries: at most about once per
                    // interval (batches pushed out by a flush do not prune).
                    if last_housekeeping.elapsed() >= self.interval {
                        last_housekeeping = Instant::now();
                        self.housekeeping();
                    }
                }
                Ok(Msg::Flush(ack)) => {
                    self.commit(&mut batch, true);
                    deadline = None;
                    let _ = ack.send(());
                }
                Ok(Msg::Prune(now_ms, ack)) => {
                    self.commit(&mut batch, true);
                    deadline = None;
                    let _ = ack.send(self.prune_all(now_ms));
                }
                Ok(Msg::Shutdown(ack)) => {
                    self.commit(&mut batch, true);
                    self.stop_flusher();
                    let _ = ack.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    // Top lists persist at most every TOP_PERSIST_EVERY; when traffic
                    // stops, the idle tick writes the last changes.
                    let tops_due = self.last_top_persist.elapsed() >= TOP_PERSIST_EVERY
                        && self.hours.values().any(|t| t.dirty);
                    if deadline.is_some() || !self.dirty.is_empty() || self.unflushed || tops_due {
                        self.commit(&mut batch, false);
                    }
                    deadline = None;
                    self.housekeeping();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit(&mut batch, true);
                    self.stop_flusher();
                    return;
                }
            }
        }
    }

    fn privacy_apply(&self, e: &mut Entry) {
        privacy_apply(self.privacy, e);
    }

    fn minute_counts(&mut self, minute: u64) -> &mut (MinuteCounts, bool) {
        let store = &self.store;
        self.minutes.entry(minute).or_insert_with(|| {
            let c = store
                .get(&minute_key(minute))
                .ok()
                .flatten()
                .and_then(|v| MinuteCounts::decode(&v).ok())
                .unwrap_or_default();
            (c, false)
        })
    }

    fn hour_tops(&mut self, hour: u64) -> &mut HourTops {
        let store = &self.store;
        self.hours.entry(hour).or_insert_with(|| {
            let mut t = HourTops::default();
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
                if let Ok(ip) = k.parse::<IpAddr>() {
                    t.clients.insert(ip, c);
                }
            }
            t
        })
    }

    fn next_seq(&mut self, minute: u64) -> u32 {
        let seq = match self.last_seq.get(&minute) {
            Some(s) => s.saturating_add(1),
            None => {
                let start = BlockKey {
                    minute_ms: minute,
                    seq: 0,
                }
                .encode();
                let end = BlockKey {
                    minute_ms: minute + 1,
                    seq: 0,
                }
                .encode();
                match self.store.scan(&start, &end, true).next() {
                    Some(Ok((k, _))) => {
                        decode_key(&k).map(|k| k.seq.saturating_add(1)).unwrap_or(0)
                    }
                    None => 0,
                    // Unknown state: pick a number far from the ones in use.
                    Some(Err(_)) => 0x8000_0000 | (minute as u32 & 0xffff),
                }
            }
        };
        self.last_seq.insert(minute, seq);
        seq
    }

    /// Add one entry (privacy already applied) to the blocks and aggregates.
    fn add(&mut self, e: Entry) {
        let minute = minute_of(e.time_ms);
        let m = self.minute_counts(minute);
        m.0.add_entry(&e);
        m.1 = true;
        if self.privacy == Privacy::Nothing {
            return;
        }
        let (names, clients) = (
            self.privacy != Privacy::HideNames,
            self.privacy != Privacy::HideClients,
        );
        let t = self.hour_tops(hour_of(e.time_ms));
        t.dirty = true;
        if names {
            if e.verdict == Verdict::Blocked {
                bump(&mut t.blocked, &e.name);
            } else {
                bump(&mut t.domains, &e.name);
            }
        }
        if clients {
            bump(&mut t.clients, &e.client);
        }
        let idx = match self.open.iter().position(|o| o.b.key.minute_ms == minute) {
            Some(i) => i,
            None => {
                if self.open.len() >= OPEN_BLOCKS {
                    // Close the block of the oldest minute.
                    let (i, _) = self
                        .open
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, o)| o.b.key.minute_ms)
                        .unwrap_or((0, &self.open[0]));
                    let o = self.open.swap_remove(i);
                    if o.modified {
                        self.stage_block(&o.b);
                    }
                }
                let seq = self.next_seq(minute);
                self.open.push(OpenBlock {
                    b: BlockBuilder::new(BlockKey {
                        minute_ms: minute,
                        seq,
                    }),
                    modified: false,
                });
                self.open.len() - 1
            }
        };
        let o = &mut self.open[idx];
        o.b.push(&e);
        o.modified = true;
        self.pending_entries += 1;
        if o.b.is_full() {
            let o = self.open.swap_remove(idx);
            self.stage_block(&o.b);
        }
    }

    fn stage_block(&mut self, b: &BlockBuilder) {
        let mut v = Vec::new();
        b.encode_into(&mut v);
        self.dirty.insert(b.key.encode().to_vec(), v);
    }

    fn stage_tops(&mut self) {
        let mut puts = Vec::new();
        for (&hour, t) in self.hours.iter_mut().filter(|(_, t)| t.dirty) {
            let d = top_n(&t.domains, TOP_STORED);
            let d: Vec<(&str, u64)> = d.iter().map(|(k, c)| (&**k, *c)).collect();
            puts.push((hour_key(hour, TOP_DOMAINS).to_vec(), encode_top(&d)));
            let b = top_n(&t.blocked, TOP_STORED);
            let b: Vec<(&str, u64)> = b.iter().map(|(k, c)| (&**k, *c)).collect();
            puts.push((hour_key(hour, TOP_BLOCKED).to_vec(), encode_top(&b)));
            let c: Vec<(String, u64)> = top_n(&t.clients, TOP_STORED)
                .into_iter()
                .map(|(ip, c)| (ip.to_string(), c))
                .collect();
            let c: Vec<(&str, u64)> = c.iter().map(|(k, n)| (k.as_str(), *n)).collect();
            puts.push((hour_key(hour, TOP_CLIENTS).to_vec(), encode_top(&c)));
            t.dirty = false;
        }
        self.dirty.extend(puts);
        self.last_top_persist = Instant::now();
    }

    /// Apply the privacy level, stage everything and write it (with the
    /// WAL `seq` of the batch, if any); `force` also persists the top lists and
    /// flushes to disk (waiting for it) regardless of timers.
    fn commit(&mut self, batch: &mut Vec<Entry>, force: bool) {
        if !batch.is_empty() {
            for e in batch.iter_mut() {
                self.privacy_apply(e);
            }
        }
        if let Some(seq) = self.pending_seq.take() {
            self.dirty
                .insert(KEY_WAL_SEQ.to_vec(), seq.to_be_bytes().to_vec());
            self.staged_seq = Some(seq);
        }
        if self.apply_staged(batch, force).is_err() {
            return;
        }
        if force {
            self.poll_flush(true);
            self.start_flush(true);
        } else if self.unflushed && self.last_flush.elapsed() >= self.interval {
            self.poll_flush(false);
            if !self.flush_in_flight {
                self.start_flush(false);
            }
        }
        self.trim_caches();
    }

    /// Add `batch` to the blocks and aggregates, stage what changed (top
    /// lists once a second, or when `force`) and apply it to the store. On
    /// error the staged puts stay pending (see [`MAX_PENDING_ENTRIES`]).
    fn apply_staged(&mut self, batch: &mut Vec<Entry>, force: bool) -> Result<(), StoreError> {
        for e in batch.drain(..) {
            self.add(e);
        }
        let mut staged = Vec::new();
        for o in self.open.iter_mut().filter(|o| o.modified) {
            let mut v = Vec::new();
            o.b.encode_into(&mut v);
            staged.push((o.b.key.encode().to_vec(), v));
            o.modified = false;
        }
        self.dirty.extend(staged);
        for (&m, (c, d)) in self.minutes.iter_mut().filter(|(_, (_, d))| *d) {
            self.dirty.insert(minute_key(m).to_vec(), c.encode());
            *d = false;
        }
        if force || self.last_top_persist.elapsed() >= TOP_PERSIST_EVERY {
            self.stage_tops();
        }
        if !self.dirty.is_empty() {
            let puts: Vec<(Vec<u8>, Vec<u8>)> =
                std::mem::take(&mut self.dirty).into_iter().collect();
            match self.store.apply(&puts, &[]) {
                Ok(()) => {
                    self.unflushed = true;
                    if let Some(seq) = self.staged_seq.take() {
                        self.applied_seq = Some(seq);
                    }
                    self.shared
                        .written
                        .fetch_add(self.pending_entries, Ordering::Relaxed);
                    self.pending_entries = 0;
                }
                Err(e) => {
                    self.failed(&e);
                    self.dirty = puts.into_iter().collect();
                    if self.pending_entries > MAX_PENDING_ENTRIES {
                        self.shared
                            .dropped
                            .fetch_add(self.pending_entries, Ordering::Relaxed);
                        self.pending_entries = 0;
                        self.dirty.retain(|k, _| k.first() != Some(&PREFIX_ENTRY));
                        self.open.clear();
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Count a store error and, with back-off, try to reopen the store.
    /// After a successful reopen everything held in memory is staged again
    /// (open blocks, counters, top lists), since the store may have lost
    /// what was applied but not flushed.
    fn failed(&mut self, e: &StoreError) {
        self.shared.error(e);
        let now = Instant::now();
        if self.failing_since.is_none() {
            self.failing_since = Some(now);
            self.next_reopen = now + self.reopen_backoff;
            return;
        }
        // Not while the flusher holds the database: the reopen would fail
        // on sled's file lock.
        if now < self.next_reopen || self.flush_in_flight {
            return;
        }
        self.reopen_backoff = (self.reopen_backoff * 2).min(REOPEN_MAX_BACKOFF);
        self.next_reopen = now + self.reopen_backoff;
        match self.store.reopen() {
            Ok(()) => {
                for o in &mut self.open {
                    o.modified = true;
                }
                for (_, d) in self.minutes.values_mut() {
                    *d = true;
                }
                for t in self.hours.values_mut() {
                    t.dirty = true;
                }
            }
            Err(e) => self.shared.error(&e),
        }
    }

    fn trim_caches(&mut self) {
        if let Some(&newest) = self.minutes.keys().max() {
            let keep = newest.saturating_sub(5 * MINUTE_MS);
            self.minutes.retain(|&m, (_, d)| *d || m >= keep);
        }
        if let Some(&newest) = self.hours.keys().max() {
            let keep = newest.saturating_sub(HOUR_MS);
            self.hours.retain(|&h, t| t.dirty || h >= keep);
        }
        if self.last_seq.len() > 64 {
            let open: Vec<u64> = self.open.iter().map(|o| o.b.key.minute_ms).collect();
            if let Some(&newest) = self.last_seq.keys().max() {
                let keep = newest.saturating_sub(5 * MINUTE_MS);
                self.last_seq.retain(|m, _| *m >= keep || open.contains(m));
            }
        }
    }

    fn housekeeping(&mut self) {
        if self.retention_days == 0 {
            return;
        }
        let now = Instant::now();
        if !self.pruning && now >= self.next_prune {
            self.pruning = true;
        }
        if self.pruning {
            let cutoff = self.cutoff(super::entry::now_ms());
            for _ in 0..20 {
                match self.prune_chunk(cutoff) {
                    Ok(n) if n < PRUNE_CHUNK => {
                        self.pruning = false;
                        self.next_prune = now + PRUNE_EVERY;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.failed(&e);
                        self.pruning = false;
                        self.next_prune = now + PRUNE_EVERY;
                        break;
                    }
                }
            }
        }
    }

    fn cutoff(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(u64::from(self.retention_days) * 86_400_000)
    }

    fn prune_all(&mut self, now_ms: u64) -> Result<u64, StoreError> {
        if self.retention_days == 0 {
            return Ok(0);
        }
        let cutoff = self.cutoff(now_ms);
        let mut total = 0u64;
        loop {
            let n = self.prune_chunk(cutoff)?;
            total += n as u64;
            if n < PRUNE_CHUNK {
                return Ok(total);
            }
        }
    }

    /// Delete up to [`PRUNE_CHUNK`] keys older than `cutoff_ms`. Data is
    /// pruned a whole minute (blocks, counters) or hour (top lists) at a
    /// time, once all of it is older than the cutoff.
    fn prune_chunk(&mut self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let cm = minute_of(cutoff_ms);
        let ch = hour_of(cutoff_ms);
        let ranges: [(Vec<u8>, Vec<u8>); 3] = [
            (
                vec![PREFIX_ENTRY],
                BlockKey {
                    minute_ms: cm,
                    seq: 0,
                }
                .encode()
                .to_vec(),
            ),
            (vec![PREFIX_MINUTE], minute_key(cm).to_vec()),
            (vec![PREFIX_HOUR], hour_key(ch, 0).to_vec()),
        ];
        let mut dels = Vec::new();
        for (s, e) in &ranges {
            for kv in self.store.scan(s, e, false) {
                let (k, _) = kv?;
                dels.push(k);
                if dels.len() >= PRUNE_CHUNK {
                    break;
                }
            }
            if dels.len() >= PRUNE_CHUNK {
                break;
            }
        }
        if dels.is_empty() {
            return Ok(0);
        }
        self.store.apply(&[], &dels)?;
        self.minutes.retain(|&m, _| m >= cm);
        self.hours.retain(|&h, _| h >= ch);
        Ok(dels.len())
    }
}

fn decode_seq(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}
