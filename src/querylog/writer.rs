//! The writer thread: applies the encoded batches (sled puts, see
//! `encoder.rs`) with their WAL `seq`, flushes, retries after write errors,
//! and prunes old data (retention).
//!
//! Write errors never stop the thread: the failed puts stay pending and are
//! retried with the next commit; if more than [`MAX_PENDING_ENTRIES`] entries
//! are pending, the pending entry blocks are counted as dropped and discarded.
//!
//! # Durability without waiting for the disk
//! With a WAL (logs opened by [`QueryLog::open`](super::QueryLog::open)),
//! the WAL thread ([`super::wal::run_wal_thread`]) encodes each batch, appends
//! its puts to the WAL (plain `write`, no fsync) and then hands them to this
//! writer as `Msg::Encoded(puts, seq)`. sled's `flush` (fsync, which can stall
//! for seconds on a busy disk) runs in a separate flusher thread; and since
//! sled's `apply` can itself wait behind a slow flush, the WAL thread never
//! calls sled's write path. Invariant: every entry recorded is in a WAL
//! segment that still exists, or durable in sled, or not yet in the WAL (the
//! channel from `record` and the WAL thread's current batch: what a crash
//! loses, about one batch interval; batches queued behind a stalled sled are
//! already in the WAL). It holds because
//! * a batch reaches the WAL before this writer sees it; staged, it may
//!   wait up to [`APPLY_EVERY`] for the apply that takes it together with
//!   the batches after it;
//! * a flush is requested only when everything staged has been applied
//!   (`dirty` is empty); it reports `applied_seq`, the newest record
//!   applied (records are applied in `seq` order), and starts after those
//!   applies, so when it returns every record `<= applied_seq` is durable;
//! * only then does the flusher delete the *closed* segments whose newest
//!   record is `<= applied_seq`; a failed flush deletes nothing; at most one
//!   flush is in flight.
//!
//! sled stores `applied_seq` under the key `W` in the same atomic batch as
//! the puts. On open, [`Writer::replay`] applies the records newer than `W`
//! again, flushes, and deletes the segments. Puts are absolute values, so a
//! record applied twice (after a store reopen, or a crash between a flush and
//! the deletion of its segments) changes nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::codec::{
    BlockKey, PREFIX_ENTRY, PREFIX_HOUR, PREFIX_MINUTE, hour_key, hour_of, minute_key, minute_of,
};
use super::encoder::Encoded;
pub(crate) use super::encoder::{TOP_BLOCKED, TOP_CLIENTS, TOP_DOMAINS};
use super::store::{Store, StoreError};
use super::wal::{self, Closed, KEY_WAL_SEQ, Msg, Shared, Wal};

/// Entries waiting for a successful write before they are dropped.
pub const MAX_PENDING_ENTRIES: u64 = 200_000;

const PRUNE_EVERY: Duration = Duration::from_secs(600);
const PRUNE_CHUNK: usize = 5000;
const IDLE_TICK: Duration = Duration::from_secs(1);
const REOPEN_MIN_BACKOFF: Duration = Duration::from_millis(500);
const REOPEN_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the writer checks for the end of a flush in flight once the
/// next flush is due.
const FLUSH_POLL: Duration = Duration::from_millis(10);
/// With a WAL, the batches staged in this long go to sled in one apply (at
/// least one flush interval): sled's cost is per put and per batch, and the
/// open block of a minute, put again by every batch, is applied once.
/// Entries reach queries this much later; a crash loses nothing more (the
/// WAL holds every staged batch, and its segments are deleted only after
/// the flush of an apply that covered them).
pub(crate) const APPLY_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct Writer {
    pub store: Arc<dyn Store>,
    pub shared: Arc<Shared>,
    pub retention_days: u32,
    pub interval: Duration,
    dirty: BTreeMap<Vec<u8>, Vec<u8>>,
    pending_entries: u64,
    /// When staged puts were last applied (or first staged after an apply).
    last_apply: Instant,
    last_flush: Instant,
    next_prune: Instant,
    pruning: bool,
    unflushed: bool,
    failing_since: Option<Instant>,
    next_reopen: Instant,
    reopen_backoff: Duration,
    wal: Option<(std::path::PathBuf, Closed)>,
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
        retention_days: u32,
        interval: Duration,
    ) -> Writer {
        let now = Instant::now();
        Writer {
            store,
            shared,
            retention_days,
            interval,
            dirty: BTreeMap::new(),
            pending_entries: 0,
            last_apply: now,
            last_flush: now,
            next_prune: now,
            pruning: true,
            unflushed: false,
            failing_since: None,
            next_reopen: now,
            reopen_backoff: REOPEN_MIN_BACKOFF,
            wal: None,
            staged_seq: None,
            applied_seq: None,
            flush_tx: None,
            flush_done: None,
            flusher: None,
            flush_in_flight: false,
        }
    }

    /// The `seq` of the newest record the store holds (0: none).
    fn stored_seq(&self) -> Result<u64, StoreError> {
        match self.store.get(KEY_WAL_SEQ)? {
            Some(v) => {
                decode_seq(&v).ok_or_else(|| StoreError("corrupt WAL position in the store".into()))
            }
            None => Ok(0),
        }
    }

    /// The `seq` the next record gets, for a log without a WAL.
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.stored_seq()? + 1)
    }

    /// Replay the WAL segments in `dir` (left by a crash) into the store,
    /// skipping records already in it, flush, delete the segments, and
    /// return the [`Wal`] for the WAL thread to log to `dir` from then on,
    /// with the `seq` of the next record. Call before [`run`](Self::run),
    /// after the directory lock is taken.
    pub fn replay(&mut self, dir: &Path) -> Result<(Wal, u64), StoreError> {
        let io = |e: std::io::Error| StoreError(format!("query log WAL {}: {e}", dir.display()));
        let applied = self.stored_seq()?;
        let segments = wal::list_segments(dir).map_err(io)?;
        let max_seq = self.apply_wal(dir, applied, u64::MAX, true)?;
        if let Some(&last) = segments.last() {
            self.store.flush()?;
            self.unflushed = false;
            wal::delete_upto(dir, last).map_err(io)?;
        }
        let first = segments.last().map_or(0, |n| n + 1);
        let wal = Wal::new(dir.to_owned(), first);
        self.wal = Some((dir.to_owned(), wal.closed()));
        Ok((wal, max_seq.max(applied) + 1))
    }

    /// Stages the records of the WAL segments in `dir` whose seq is in
    /// `(after, upto]`, in order, applying each one when `apply`. Returns the
    /// highest seq seen.
    fn apply_wal(
        &mut self,
        dir: &Path,
        after: u64,
        upto: u64,
        apply: bool,
    ) -> Result<u64, StoreError> {
        let io = |e: std::io::Error| StoreError(format!("query log WAL {}: {e}", dir.display()));
        let mut max_seq = 0;
        let mut again = 0u64;
        for n in wal::list_segments(dir).map_err(io)? {
            let (records, torn) = wal::read_segment(dir, n).map_err(io)?;
            if torn && apply {
                tracing::warn!(
                    segment = n,
                    "query log: ignoring the torn tail of a WAL segment (crash while writing)"
                );
            }
            for r in records {
                max_seq = max_seq.max(r.seq);
                if r.seq <= after || r.seq > upto {
                    continue;
                }
                again += 1;
                let puts = Encoded {
                    puts: r.puts,
                    entries: 0,
                };
                self.stage(puts, r.seq);
                if apply {
                    self.apply_staged()?;
                }
            }
        }
        if again > 0 {
            tracing::info!(
                records = again,
                "query log: WAL records applied again (after a crash or a store reopen)"
            );
        }
        Ok(max_seq)
    }

    fn start_flusher(&mut self) {
        let (req_tx, req_rx) = channel::<Option<u64>>();
        let (done_tx, done_rx) = channel();
        let store = self.store.clone();
        let wal = self.wal.clone();
        let spawned = crate::channel::spawn_background("querylog-flusher", move || {
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
        let mut last_housekeeping = Instant::now();
        loop {
            self.poll_flush(false);
            // Applied but not yet flushed: flush one interval after the
            // previous flush even if nothing more arrives (and while a flush
            // is in flight, poll for its end).
            let wait = if self.unflushed || self.flush_in_flight {
                let due =
                    (self.last_flush + self.interval).saturating_duration_since(Instant::now());
                if self.flush_in_flight {
                    due.max(FLUSH_POLL)
                } else {
                    due
                }
            } else {
                IDLE_TICK
            };
            // Staged puts wait for their apply (a flush only follows one).
            let wait = if self.dirty.is_empty() {
                wait
            } else {
                let apply = (self.last_apply + self.apply_every())
                    .saturating_duration_since(Instant::now());
                if self.flush_in_flight {
                    apply.min(wait)
                } else {
                    apply
                }
            };
            match rx.recv_timeout(wait) {
                Ok(Msg::Encoded(encoded, seq)) => {
                    self.stage(encoded, seq);
                    self.commit(false);
                    // Pruning at most about once per interval.
                    if last_housekeeping.elapsed() >= self.interval {
                        last_housekeeping = Instant::now();
                        self.housekeeping();
                    }
                }
                // Entries go to the WAL thread; one here is a wiring bug.
                Ok(Msg::Entry(_)) => {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Msg::Flush(ack)) => {
                    self.commit(true);
                    let _ = ack.send(());
                }
                Ok(Msg::Prune(now_ms, ack)) => {
                    self.commit(true);
                    let _ = ack.send(self.prune_all(now_ms));
                }
                Ok(Msg::Shutdown(ack)) => {
                    self.commit(true);
                    self.stop_flusher();
                    let _ = ack.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    if !self.dirty.is_empty() || self.unflushed {
                        self.commit(false);
                    }
                    self.housekeeping();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit(true);
                    self.stop_flusher();
                    return;
                }
            }
        }
    }

    /// Adds a record's puts (and its `seq`, stored with them) to what the next
    /// apply writes; later puts of a key replace earlier ones.
    fn stage(&mut self, encoded: Encoded, seq: u64) {
        self.dirty.extend(encoded.puts);
        self.dirty
            .insert(KEY_WAL_SEQ.to_vec(), seq.to_be_bytes().to_vec());
        self.staged_seq = Some(seq);
        self.pending_entries += encoded.entries;
    }

    /// How long staged puts may wait for their apply: [`APPLY_EVERY`] with a
    /// WAL; without one, none (sled's flush is all the durability there is).
    fn apply_every(&self) -> Duration {
        if self.wal.is_some() {
            APPLY_EVERY.max(self.interval)
        } else {
            Duration::ZERO
        }
    }

    /// Apply what is staged when due, then flush when due (`force`: both now,
    /// waiting for the flush).
    fn commit(&mut self, force: bool) {
        if !force && !self.dirty.is_empty() && self.last_apply.elapsed() < self.apply_every() {
            // Applied with the batches that follow, in one sled batch.
            return;
        }
        if self.apply_staged().is_err() {
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
    }

    /// Write everything staged to the store. On error the staged puts stay
    /// pending (see [`MAX_PENDING_ENTRIES`]).
    fn apply_staged(&mut self) -> Result<(), StoreError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        self.last_apply = Instant::now();
        let puts: Vec<(Vec<u8>, Vec<u8>)> = std::mem::take(&mut self.dirty).into_iter().collect();
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
                Ok(())
            }
            Err(e) => {
                let seq = self.staged_seq;
                self.failed(&e);
                // Records staged again by a reopen are older than these puts.
                self.dirty.extend(puts);
                self.staged_seq = seq;
                if self.pending_entries > MAX_PENDING_ENTRIES {
                    self.shared
                        .dropped
                        .fetch_add(self.pending_entries, Ordering::Relaxed);
                    self.pending_entries = 0;
                    self.dirty.retain(|k, _| k.first() != Some(&PREFIX_ENTRY));
                }
                Err(e)
            }
        }
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
            // What was applied but not flushed may be gone: apply the WAL's
            // records since the last durable one again (up to the last record
            // applied; later ones are still on their way here).
            Ok(()) => {
                let dir = self.wal.as_ref().map(|(d, _)| d.clone());
                let upto = self.applied_seq.unwrap_or(0);
                let again = match (dir, self.stored_seq()) {
                    (Some(dir), Ok(after)) => self.apply_wal(&dir, after, upto, false).map(drop),
                    (_, Err(e)) => Err(e),
                    (None, Ok(_)) => Ok(()),
                };
                if let Err(e) = again {
                    self.shared.error(&e);
                }
            }
            Err(e) => self.shared.error(&e),
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
        Ok(dels.len())
    }
}

fn decode_seq(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}
