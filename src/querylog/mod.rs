//! dnsguard query log: every query recorded to an embedded database (sled)
//! without the DNS path ever waiting on disk, with per-minute aggregates for
//! statistics, retention, privacy levels, and streaming queries and output
//! for the CLI.
//!
//! # Wiring
//! * The server opens one [`QueryLog`] at start-up ([`QueryLog::open`]) and
//!   shares it (`Arc<QueryLog>`); `open` starts the writer thread, which the
//!   `QueryLog` owns.
//! * The DNS path calls [`QueryLog::record`] (never blocks; when the writer
//!   is behind, the entry is dropped and counted in [`QueryLog::dropped`]).
//! * HTTP handlers call [`QueryLog::query`], [`QueryLog::query_after`]
//!   (follow), [`QueryLog::stats`].
//! * On SIGTERM call [`QueryLog::shutdown`]: it commits and flushes the last
//!   batch and joins the writer. Dropping the `QueryLog` does the same.
//! * The CLI tries [`QueryLog::open`]; on [`QueryLogError::Locked`] the server
//!   is running and the CLI asks it over HTTP instead.
//!
//! # Durability
//! A process crash (`kill -9`, panic, OOM kill) must lose at most about one
//! batch interval, even while the disk is saturated and an fsync takes
//! seconds. Threads of an open log (see `writer.rs` for the invariant):
//! * **WAL thread** (`wal.rs`): batches entries every `flush_interval_ms`
//!   (100 ms) or `batch_size` (1,000), applies the privacy level, encodes the
//!   batch once into the sled puts it makes (`encoder.rs`: entry blocks,
//!   the minute's counters, the hour's top lists, each an absolute value),
//!   appends them to `<dir>/wal.<n>` with a plain `write` (no fsync: the
//!   page cache outlives the process) and passes them to the writer. It
//!   never writes to sled, whose `apply` can wait behind a slow flush.
//! * **writer**: applies the puts to sled together with the batch's WAL `seq`;
//!   with a WAL, the batches of up to 500 ms go to sled as one batch
//!   (`writer::APPLY_EVERY`), each key once.
//! * **flusher**: runs sled's `flush` (write + fsync) at most once per
//!   interval, then deletes the WAL segments that flush made redundant.
//!
//! [`QueryLog::open`] applies the records of leftover segments newer than
//! the `seq` stored in sled, flushes and deletes them; since every put is an
//! absolute value, a record applied twice changes nothing.
//! Measured with `kill -9` under load: the newest entry is ~20–115 ms older
//! than the kill, on a quiet disk and while another process keeps fsync
//! stalled for 0.9–3.6 s (`tests/querylog.rs`, docs/RELIABILITY.md).
//! A power loss can still lose what the kernel had not written back.
//! sled's own background flush (every 500 ms) stays on as a backstop.
//! [`QueryLog::with_store`] has no WAL file: durability is the store's flush.
//!
//! # Storage
//! Layout and encoding: see [`codec`]. Entries are packed into blocks (one
//! minute, ≤ ~6 KiB, strings and clients interned per block); measured
//! ~58 logical and ~99 on-disk bytes per entry over 10 M entries (sled
//! compacts its segments by itself; there is no separate compaction step).
//! Trade-off: the block of the current minute is put again with every batch
//! until it is full, so at low query rates (a batch every 100 ms holding a
//! few entries) up to ~6 KiB are rewritten per batch, i.e. at most ~60 KB/s
//! of writes; space on disk is unaffected after sled's cleaning.
//!
//! sled allows one process per database: [`QueryLog::open`] takes a lock
//! file (`<dir>/lock`, `flock`) first and reports [`QueryLogError::Locked`]
//! (before touching the database or the WAL). The database itself lives in
//! `<dir>/db`, the WAL segments in `<dir>/wal.<n>` (none after a clean
//! shutdown).

pub mod codec;
pub mod config;
mod encoder;
pub mod entry;
pub mod format;
pub mod parse;
pub mod query;
pub mod request;
pub mod stats;
pub mod store;
mod wal;
mod writer;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use codec::{
    BlockKey, DecodeError, decode_block, decode_entry, decode_key, encode_block, encode_entry,
};
pub use config::{Privacy, QueryLogConfig};
pub use entry::{Client, Entry, Origin, Ruling, empty_str, now_ms};
pub use format::{EntryWriter, OutputFormat, write_entries};
pub use parse::{format_time, parse_duration, parse_since, parse_time};
pub use query::{Criteria, Cursor, DomainPattern, EntryIter, Order, RulingFilter};
pub use request::{LogRequest, StatsRequest};
pub use stats::{MAX_SERIES_POINTS, SeriesPoint, Stats, TopItem};
pub use store::{SledStore, Store, StoreError};

use codec::{FORMAT_VERSION, KEY_VERSION, PREFIX_ENTRY};
use wal::{Msg, Shared};
use writer::Writer;

/// Encoded batches that may wait between the WAL thread and the writer (while
/// sled stalls); beyond this the WAL thread waits and `record` starts dropping.
const WRITER_QUEUE_BATCHES: usize = 64;

/// Errors of the query log.
#[derive(Debug, thiserror::Error)]
pub enum QueryLogError {
    /// Another process (the running server) holds the database.
    #[error("query log database {0} is locked by another process")]
    Locked(PathBuf),
    /// The database directory could not be used.
    #[error("cannot open query log at {path}: {message}")]
    Open {
        /// Directory given to `open`.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The storage layer failed.
    #[error("query log storage error: {0}")]
    Store(String),
    /// Stored bytes are malformed.
    #[error("corrupt query log data: {0}")]
    Decode(#[from] DecodeError),
    /// Bad user input (duration, time, client, format, cursor).
    #[error("{0}")]
    Parse(String),
    /// Output failed.
    #[error("output error: {0}")]
    Io(#[from] std::io::Error),
    /// The writer thread is gone (after shutdown).
    #[error("query log writer is not running")]
    Closed,
}

impl From<StoreError> for QueryLogError {
    fn from(e: StoreError) -> Self {
        QueryLogError::Store(e.0)
    }
}

/// Logical size of the stored entries ([`QueryLog::storage_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Entry blocks stored.
    pub blocks: u64,
    /// Bytes of their keys and values.
    pub block_bytes: u64,
}

/// The query log handle. `Send + Sync`; share it with `Arc`.
pub struct QueryLog {
    tx: Mutex<Option<SyncSender<Msg>>>,
    fast_tx: Option<SyncSender<Msg>>,
    shared: Arc<Shared>,
    store: Option<Arc<dyn Store>>,
    writer: Mutex<Vec<JoinHandle<()>>>,
    config: QueryLogConfig,
    _lock: Option<File>,
}

fn lock_dir(dir: &Path) -> Result<File, QueryLogError> {
    let open_err = |e: std::io::Error| QueryLogError::Open {
        path: dir.to_owned(),
        message: e.to_string(),
    };
    crate::datadir::create_dir(dir).map_err(open_err)?;
    let f = crate::datadir::file_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(open_err)?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Err(QueryLogError::Locked(dir.to_owned()));
        }
        return Err(open_err(e));
    }
    Ok(f)
}

impl QueryLog {
    /// Open (creating) the log in `dir` and start the writer thread.
    ///
    /// Errors: [`QueryLogError::Locked`] when another process has it open;
    /// [`QueryLogError::Open`] when the directory is unusable. With
    /// `enabled = false` nothing is opened and every call is a no-op.
    pub fn open(dir: impl AsRef<Path>, config: QueryLogConfig) -> Result<QueryLog, QueryLogError> {
        Self::open_wrapped(dir.as_ref(), config, |s| s)
    }

    /// [`open`](Self::open) with the sled store wrapped by `wrap` (tests
    /// wrap it to stall or fail its operations).
    pub(crate) fn open_wrapped(
        dir: &Path,
        config: QueryLogConfig,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> Result<QueryLog, QueryLogError> {
        if !config.enabled {
            return Ok(QueryLog::disabled(config));
        }
        // The lock comes first: a second process must not touch the
        // database or the WAL.
        let lock = lock_dir(dir)?;
        let store = SledStore::open(&dir.join("db")).map_err(|e| match e {
            store::OpenError::Locked(_) => QueryLogError::Locked(dir.to_owned()),
            store::OpenError::Other(message) => QueryLogError::Open {
                path: dir.to_owned(),
                message,
            },
        })?;
        let store = wrap(store.into_dyn());
        match store.get(KEY_VERSION)? {
            None => store.apply(&[(KEY_VERSION.to_vec(), FORMAT_VERSION.to_vec())], &[])?,
            Some(v) if v == FORMAT_VERSION => {}
            Some(v) => {
                return Err(QueryLogError::Open {
                    path: dir.to_owned(),
                    message: format!("unsupported format {:?}", String::from_utf8_lossy(&v)),
                });
            }
        }
        let shared = Arc::new(Shared::default());
        let mut w = Self::writer(store.clone(), shared.clone(), &config);
        let (wal, next_seq) = w.replay(dir)?;
        let mut log = QueryLog::spawn(w, store, shared, config, Some(wal), next_seq);
        log._lock = Some(lock);
        Ok(log)
    }

    /// A log that records nothing (config `enabled = false`).
    pub fn disabled(config: QueryLogConfig) -> QueryLog {
        QueryLog {
            tx: Mutex::new(None),
            fast_tx: None,
            shared: Arc::default(),
            store: None,
            writer: Mutex::new(Vec::new()),
            config,
            _lock: None,
        }
    }

    /// A log that could not be opened (read-only or full disk, bad permissions):
    /// records nothing, like [`disabled`](Self::disabled), but reports `error`
    /// through [`write_errors`](Self::write_errors) and
    /// [`last_error`](Self::last_error), so `dnsguard stats`, the dashboard and
    /// `/metrics` show why nothing is logged while DNS keeps answering.
    pub fn unavailable(config: QueryLogConfig, error: &str) -> QueryLog {
        let log = QueryLog::disabled(config);
        log.shared
            .error(&StoreError(format!("cannot open the query log: {error}")));
        log
    }

    /// Start a log over any [`Store`] (tests, other backends). It has no
    /// WAL: durability is the store's `flush`, once per interval.
    pub fn with_store(store: Arc<dyn Store>, config: QueryLogConfig) -> QueryLog {
        let shared = Arc::new(Shared::default());
        let w = Self::writer(store.clone(), shared.clone(), &config);
        let next_seq = w.next_seq().unwrap_or(1);
        QueryLog::spawn(w, store, shared, config, None, next_seq)
    }

    fn writer(store: Arc<dyn Store>, shared: Arc<Shared>, config: &QueryLogConfig) -> Writer {
        Writer::new(
            store,
            shared,
            config.retention_days,
            Duration::from_millis(config.flush_interval_ms.max(1)),
        )
    }

    /// Starts record -> WAL thread (encoder, WAL file when `wal`) -> writer.
    fn spawn(
        w: Writer,
        store: Arc<dyn Store>,
        shared: Arc<Shared>,
        config: QueryLogConfig,
        wal: Option<wal::Wal>,
        next_seq: u64,
    ) -> QueryLog {
        let (tx, rx) = sync_channel(config.channel_capacity.max(1));
        let mut handles = Vec::new();
        let (wtx, writer_rx) = sync_channel(WRITER_QUEUE_BATCHES);
        let encoder = encoder::Encoder::new(Some(store.clone()), config.privacy);
        let wal_shared = shared.clone();
        let (size, every) = (
            config.batch_size,
            Duration::from_millis(config.flush_interval_ms.max(1)),
        );
        handles.extend(
            crate::channel::spawn_background("querylog-wal", move || {
                wal::run_wal_thread(wal, encoder, next_seq, rx, wtx, wal_shared, size, every)
            })
            .ok(),
        );
        handles.extend(
            crate::channel::spawn_background("querylog-writer", move || w.run(writer_rx)).ok(),
        );
        QueryLog {
            tx: Mutex::new(Some(tx.clone())),
            fast_tx: Some(tx),
            shared,
            store: Some(store),
            writer: Mutex::new(handles),
            config,
            _lock: None,
        }
    }

    /// Record one query. Never blocks and never fails: when the channel is
    /// full (writer behind) or the log is shut down, the entry is counted in
    /// [`dropped`](Self::dropped).
    #[inline]
    pub fn record(&self, entry: Entry) {
        if let Some(tx) = &self.fast_tx {
            match tx.try_send(Msg::Entry(entry)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Counts one UDP query the rate limiter dropped or slipped: such queries
    /// are not logged one by one (a flood would fill the log), only counted
    /// per minute ([`Stats::rate_limited`]). One relaxed atomic add.
    #[inline]
    pub fn count_rate_limited(&self) {
        self.shared.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Entries dropped because the writer was behind (or pending writes
    /// failed for too long).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Entries written to the store (including entries replayed from the
    /// WAL by [`open`](Self::open)).
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Failed store operations (writes, flushes, pruning) and failed WAL
    /// writes.
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Message of the most recent store error.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().ok().and_then(|g| g.clone())
    }

    /// The configuration in use.
    pub fn config(&self) -> &QueryLogConfig {
        &self.config
    }

    fn control<T>(&self, make: impl FnOnce(SyncSender<T>) -> Msg) -> Result<T, QueryLogError> {
        let tx = self
            .tx
            .lock()
            .map_err(|_| QueryLogError::Closed)?
            .clone()
            .ok_or(QueryLogError::Closed)?;
        let (ack_tx, ack_rx) = sync_channel(1);
        tx.send(make(ack_tx)).map_err(|_| QueryLogError::Closed)?;
        ack_rx.recv().map_err(|_| QueryLogError::Closed)
    }

    /// Commit everything recorded before this call and flush it to disk.
    /// Waits for the writer (not for the DNS path; for tests, CLI, HTTP).
    pub fn flush(&self) -> Result<(), QueryLogError> {
        if self.store.is_none() {
            return Ok(());
        }
        self.control(Msg::Flush)
    }

    /// Prune now as if the time were `now_ms`; returns keys deleted.
    /// (The writer also prunes by itself at start-up and every 10 minutes.)
    pub fn prune_now(&self, now_ms: u64) -> Result<u64, QueryLogError> {
        if self.store.is_none() {
            return Ok(0);
        }
        Ok(self.control(|ack| Msg::Prune(now_ms, ack))??)
    }

    /// Commit and flush the last batch, stop the writer and wait for it.
    /// Later `record` calls are counted as dropped. Idempotent.
    pub fn shutdown(&self) {
        let tx = self.tx.lock().ok().and_then(|mut g| g.take());
        if let Some(tx) = tx {
            let (ack_tx, ack_rx) = sync_channel(1);
            if tx.send(Msg::Shutdown(ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
        }
        let handles = self
            .writer
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default();
        for h in handles {
            let _ = h.join();
        }
    }

    /// Stream entries matching `filter` (see [`EntryIter`]).
    pub fn query(&self, filter: &Criteria) -> EntryIter {
        let Some(store) = &self.store else {
            return EntryIter::empty();
        };
        let (start, end) = filter.key_range();
        let reverse = filter.order == Order::NewestFirst;
        EntryIter::new(store.scan(&start, &end, reverse), filter.clone(), None)
    }

    /// Stream entries stored after `cursor`, oldest first (the filter's
    /// order and `since` key range are ignored; its conditions apply). Drain
    /// it, then poll again with [`EntryIter::cursor`] for `--follow`.
    pub fn query_after(&self, cursor: Cursor, filter: &Criteria) -> EntryIter {
        let Some(store) = &self.store else {
            return EntryIter::empty();
        };
        let mut f = filter.clone();
        f.order = Order::OldestFirst;
        let start = cursor.key.encode();
        let (_, end) = f.key_range();
        EntryIter::new(store.scan(&start, &end, false), f, Some(cursor))
    }

    /// Cursor just after the newest stored entry (start of `--follow`).
    pub fn end_cursor(&self) -> Result<Cursor, QueryLogError> {
        let Some(store) = &self.store else {
            return Ok(Cursor::default());
        };
        let start = [PREFIX_ENTRY];
        let end = [PREFIX_ENTRY + 1];
        match store.scan(&start, &end, true).next() {
            None => Ok(Cursor::default()),
            Some(kv) => {
                let (k, v) = kv?;
                let key = decode_key(&k)?;
                let n = decode_block(&v)?.len() as u32;
                Ok(Cursor { key, index: n })
            }
        }
    }

    /// Statistics for `[since_ms, until_ms)` from the aggregates, with top
    /// lists of at most `top_n` items (see [`stats`] for the approximation).
    pub fn stats(
        &self,
        since_ms: u64,
        until_ms: u64,
        top_n: usize,
    ) -> Result<Stats, QueryLogError> {
        match &self.store {
            Some(s) => stats::compute(&**s, since_ms, until_ms, top_n),
            None => stats::compute(&NullStore, since_ms, until_ms, top_n),
        }
    }

    /// Query counts of `[since_ms, until_ms)` in buckets of `bucket_minutes`,
    /// from the per-minute aggregates (for the dashboard's chart).
    pub fn series(
        &self,
        since_ms: u64,
        until_ms: u64,
        bucket_minutes: u64,
    ) -> Result<Vec<SeriesPoint>, QueryLogError> {
        match &self.store {
            Some(s) => stats::series(&**s, since_ms, until_ms, bucket_minutes),
            None => stats::series(&NullStore, since_ms, until_ms, bucket_minutes),
        }
    }

    /// Scan the entry blocks (not the entries) and report their number and
    /// encoded size: the logical size of the log, before sled's overhead.
    /// Reads every block key and value: for diagnostics, not hot paths.
    pub fn storage_stats(&self) -> Result<StorageStats, QueryLogError> {
        let mut st = StorageStats::default();
        if let Some(store) = &self.store {
            for kv in store.scan(&[PREFIX_ENTRY], &[PREFIX_ENTRY + 1], false) {
                let (k, v) = kv?;
                st.blocks += 1;
                st.block_bytes += (k.len() + v.len()) as u64;
            }
        }
        Ok(st)
    }

    /// Bytes the database uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, QueryLogError> {
        match &self.store {
            Some(s) => Ok(s.size_on_disk()?),
            None => Ok(0),
        }
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct NullStore;

impl Store for NullStore {
    fn apply(&self, _: &[(Vec<u8>, Vec<u8>)], _: &[Vec<u8>]) -> Result<(), StoreError> {
        Ok(())
    }
    fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    fn scan(&self, _: &[u8], _: &[u8], _: bool) -> store::KvIter {
        Box::new(std::iter::empty())
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}
