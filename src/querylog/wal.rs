//! The write-ahead log (WAL): each batch's puts (see `encoder.rs`) are
//! appended, with plain `write(2)` and no fsync, to a segment file
//! `<dir>/wal.<n>` before they are applied to sled, so a process crash
//! (`kill -9`, panic, OOM kill) never loses a batch that sled has not made
//! durable yet, however long sled's `flush` (fsync) takes: the kernel's page
//! cache outlives the process. (A power loss can still lose what neither sled
//! nor the kernel has written back: at most the unflushed tail, as before.)
//!
//! # Record format
//! `len: u32 LE | crc32(payload): u32 LE | payload`, with
//! `payload = seq: u64 LE | count: u32 LE | count × (klen: u32 LE | key | vlen: u32 LE | value)`:
//! the batch's sled puts, after the privacy level was applied. `seq` numbers
//! records monotonically across segments and restarts. Reading a segment
//! stops at the first record that is short, has a bad checksum or does not
//! decode (a torn tail after a crash); the rest of that segment is ignored.
//!
//! # Sequence numbers and replay
//! Every sled batch that carries a record's puts also stores that record's
//! `seq` under the key `W` (atomically, in the same batch), so sled always
//! knows the newest record it holds. On open, records with `seq <= W` are
//! already in sled (durably, since sled recovers to a batch boundary) and are
//! skipped; newer ones are applied again. Every put is an absolute value, so
//! applying a record twice is harmless anyway.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::encoder::{Encoded, Encoder, MAX_RECORD_ENTRIES};
use super::entry::Entry;
use super::store::StoreError;

/// Messages to the WAL thread and the writer.
pub(crate) enum Msg {
    /// A query to log (DNS path to the WAL thread).
    Entry(Entry),
    /// A batch encoded (and in the WAL, when there is one) as record `seq`.
    Encoded(Encoded, u64),
    Flush(SyncSender<()>),
    Prune(u64, SyncSender<Result<u64, StoreError>>),
    Shutdown(SyncSender<()>),
}

/// Counters shared between the handle and the writer.
#[derive(Default)]
pub(crate) struct Shared {
    /// Rate-limited queries not yet added to a minute's counts (the DNS
    /// path adds, the WAL thread takes).
    pub rate_limited: AtomicU64,
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

/// sled key holding the `seq` of the newest WAL record applied (u64 BE).
pub(crate) const KEY_WAL_SEQ: &[u8] = b"W";

const HEADER: usize = 8;
/// Records larger than this are treated as corrupt (a batch of 1,000
/// entries is ~100 KB).
const MAX_RECORD: usize = 256 * 1024 * 1024;

/// CRC-32 (IEEE 802.3).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// Append one record holding `puts` under `seq` to `out`.
pub(crate) fn encode_record(seq: u64, puts: &[(Vec<u8>, Vec<u8>)], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(puts.len() as u32).to_le_bytes());
    for (k, v) in puts {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    let payload = &out[start + HEADER..];
    let len = payload.len() as u32;
    let crc = crc32(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One decoded record.
#[derive(Debug)]
pub(crate) struct Record {
    pub seq: u64,
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn decode_payload(p: &[u8]) -> Option<Record> {
    let seq = u64::from_le_bytes(p.get(..8)?.try_into().ok()?);
    let count = u32_at(p, 8)? as usize;
    let mut at = 12;
    let mut puts = Vec::with_capacity(count.min(p.len() / 8));
    let field = |at: &mut usize| -> Option<Vec<u8>> {
        let n = u32_at(p, *at)? as usize;
        *at += 4;
        let v = p.get(*at..at.checked_add(n)?)?.to_vec();
        *at += n;
        Some(v)
    };
    for _ in 0..count {
        let k = field(&mut at)?;
        let v = field(&mut at)?;
        puts.push((k, v));
    }
    (at == p.len()).then_some(Record { seq, puts })
}

/// Decode the records of a segment's bytes, stopping at the first bad one.
/// Returns the records and whether bytes were left over (a torn tail).
pub(crate) fn decode_records(mut b: &[u8]) -> (Vec<Record>, bool) {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (Some(len), Some(crc)) = (u32_at(b, 0), u32_at(b, 4)) else {
            return (out, true);
        };
        let len = len as usize;
        if len > MAX_RECORD || b.len() - HEADER < len {
            return (out, true);
        }
        let payload = &b[HEADER..HEADER + len];
        if crc32(payload) != crc {
            return (out, true);
        }
        match decode_payload(payload) {
            Some(r) => out.push(r),
            None => return (out, true),
        }
        b = &b[HEADER + len..];
    }
    (out, false)
}

/// Path of segment `n` in `dir`.
pub(crate) fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal.{n}"))
}

/// Segment numbers present in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix("wal."))
            .and_then(|s| s.parse::<u64>().ok())
        {
            v.push(n);
        }
    }
    v.sort_unstable();
    Ok(v)
}

/// Read every record of segment `n` (see [`decode_records`]).
pub(crate) fn read_segment(dir: &Path, n: u64) -> io::Result<(Vec<Record>, bool)> {
    let mut bytes = Vec::new();
    File::open(segment_path(dir, n))?.read_to_end(&mut bytes)?;
    Ok(decode_records(&bytes))
}

/// Delete every segment numbered `<= upto`. Returns the first error, after
/// trying them all.
pub(crate) fn delete_upto(dir: &Path, upto: u64) -> io::Result<()> {
    let mut first = Ok(());
    for n in list_segments(dir)? {
        if n > upto {
            break;
        }
        if let Err(e) = std::fs::remove_file(segment_path(dir, n))
            && e.kind() != io::ErrorKind::NotFound
            && first.is_ok()
        {
            first = Err(e);
        }
    }
    first
}

/// Closed segments and the newest `seq` each holds: filled by the WAL
/// thread as it closes segments, emptied by the flusher as it deletes them.
pub(crate) type Closed = Arc<Mutex<Vec<(u64, u64)>>>;

/// After a sled flush that made every record `<= durable_seq` durable,
/// delete the closed segments holding only such records. Returns the first
/// error; segments that could not be deleted are kept for the next time.
pub(crate) fn delete_durable(dir: &Path, closed: &Closed, durable_seq: u64) -> io::Result<()> {
    let done: Vec<u64> = match closed.lock() {
        Ok(mut g) => {
            let (done, keep): (Vec<_>, Vec<_>) = g.iter().partition(|(_, max)| *max <= durable_seq);
            *g = keep;
            done.into_iter().map(|(n, _)| n).collect()
        }
        Err(_) => return Ok(()),
    };
    let mut first = Ok(());
    for n in done {
        if let Err(e) = std::fs::remove_file(segment_path(dir, n))
            && e.kind() != io::ErrorKind::NotFound
        {
            if let Ok(mut g) = closed.lock() {
                g.push((n, durable_seq));
            }
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// The WAL thread's segment writer: the current segment.
pub(crate) struct Wal {
    dir: PathBuf,
    cur: u64,
    file: Option<File>,
    touched: bool,
    cur_max: u64,
    opened_at: Instant,
    buf: Vec<u8>,
    closed: Closed,
}

impl Wal {
    /// Append to segments numbered from `first_segment`. Files are created on
    /// the first append.
    pub fn new(dir: PathBuf, first_segment: u64) -> Wal {
        Wal {
            dir,
            cur: first_segment,
            file: None,
            touched: false,
            cur_max: 0,
            opened_at: Instant::now(),
            buf: Vec::new(),
            closed: Closed::default(),
        }
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The list of closed segments (shared with the flusher).
    pub fn closed(&self) -> Closed {
        self.closed.clone()
    }

    /// Write `puts` as record `seq` (one `write` call, no fsync). On error the
    /// segment is closed so the next record starts a fresh one (never appended
    /// after a possibly torn record).
    pub fn append(&mut self, seq: u64, puts: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
        self.buf.clear();
        encode_record(seq, puts, &mut self.buf);
        if !self.touched {
            self.touched = true;
            self.opened_at = Instant::now();
        }
        self.cur_max = seq;
        let r = self.write_buf();
        if r.is_err() {
            self.rotate();
        }
        r
    }

    fn write_buf(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(
                crate::datadir::file_options()
                    .create(true)
                    .append(true)
                    .open(segment_path(&self.dir, self.cur))?,
            );
        }
        match &mut self.file {
            Some(f) => f.write_all(&self.buf),
            None => Ok(()),
        }
    }

    /// Close the current segment (if anything was written to it) and list
    /// it in [`closed`](Self::closed); later records go to the next one.
    pub fn rotate(&mut self) {
        self.file = None;
        if self.touched {
            if let Ok(mut g) = self.closed.lock() {
                g.push((self.cur, self.cur_max));
            }
            self.cur += 1;
            self.touched = false;
        }
    }

    /// Close the current segment if it has been open for `age` or more.
    fn rotate_if_older(&mut self, age: Duration) {
        if self.touched && self.opened_at.elapsed() >= age {
            self.rotate();
        }
    }
}

/// Body of the WAL thread, between [`QueryLog::record`] and the writer:
/// batches entries (`batch_size` / `interval`), encodes each batch once into
/// its sled puts (privacy applied first, see `encoder.rs`), appends them to the
/// WAL (when there is one) and only then passes them on (`Msg::Encoded`).
/// sled can stall the writer (its `apply` waits behind a slow fsync on a busy
/// disk); this thread never writes to sled, so batches keep reaching the WAL
/// meanwhile (until `tx`, bounded, is full; then the DNS-side channel fills
/// and entries are dropped and counted). Control messages are forwarded after
/// the pending batch (encoded with the top lists), with the segment closed
/// first so the writer's flush can delete it. Records are numbered from
/// `next_seq`.
///
/// [`QueryLog::record`]: super::QueryLog::record
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_wal_thread(
    wal: Option<Wal>,
    encoder: Encoder,
    next_seq: u64,
    rx: Receiver<Msg>,
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    batch_size: usize,
    interval: Duration,
) {
    let batch_size = batch_size.clamp(1, MAX_RECORD_ENTRIES);
    let mut out = Output {
        wal,
        encoder,
        next_seq,
        tx,
        shared,
        interval,
    };
    let mut batch: Vec<Entry> = Vec::with_capacity(batch_size);
    let mut deadline: Option<Instant> = None;
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            // Wake up to close an idle segment or to put the last top-list
            // counts; otherwise rarely.
            None => {
                let idle = if out.wal.as_ref().is_some_and(|w| w.touched) {
                    interval
                } else {
                    Duration::from_secs(1)
                };
                out.encoder.tops_due_in().map_or(idle, |d| d.min(idle))
            }
        };
        // Polled, not blocked: see `crate::channel`.
        let ok = match crate::channel::poll_recv(&rx, wait) {
            Ok(Msg::Entry(e)) => {
                if batch.is_empty() {
                    deadline = Some(Instant::now() + interval);
                }
                batch.push(e);
                // Take whatever else is queued without looking at the clock.
                let mut control = None;
                while batch.len() < batch_size && control.is_none() {
                    match rx.try_recv() {
                        Ok(Msg::Entry(e)) => batch.push(e),
                        Ok(m) => control = Some(m),
                        Err(_) => break,
                    }
                }
                if let Some(m) = control {
                    deadline = None;
                    out.control(&mut batch, m)
                } else if batch.len() >= batch_size {
                    deadline = None;
                    out.send(&mut batch, false)
                } else {
                    true
                }
            }
            Ok(m) => {
                deadline = None;
                out.control(&mut batch, m)
            }
            Err(RecvTimeoutError::Timeout) => {
                deadline = None;
                let ok = out.send(&mut batch, false);
                // Idle: close the segment so a later flush can delete it.
                if let Some(wal) = &mut out.wal {
                    wal.rotate_if_older(interval);
                }
                ok
            }
            Err(RecvTimeoutError::Disconnected) => {
                out.send(&mut batch, true);
                if let Some(wal) = &mut out.wal {
                    wal.rotate();
                }
                return;
            }
        };
        if !ok {
            return;
        }
    }
}

/// The WAL thread's output side: encoder, WAL file and the writer's queue.
struct Output {
    wal: Option<Wal>,
    encoder: Encoder,
    next_seq: u64,
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    interval: Duration,
}

impl Output {
    /// Encodes `batch` (with the top lists when `force` or due), logs it and
    /// passes it on. False once the writer is gone.
    fn send(&mut self, batch: &mut Vec<Entry>, force: bool) -> bool {
        let tops_due = self.encoder.tops_due_in().is_some_and(|d| d.is_zero());
        let limited = self.shared.rate_limited.swap(0, Ordering::Relaxed);
        if limited > 0 {
            self.encoder.add_rate_limited(super::now_ms(), limited);
        }
        if batch.is_empty() && !force && !tops_due && limited == 0 {
            return true;
        }
        let seq = self.next_seq;
        let Encoded { puts, entries } = self.encoder.encode(seq, batch, force);
        if puts.is_empty() {
            return true;
        }
        self.next_seq += 1;
        if let Some(wal) = &mut self.wal {
            if let Err(e) = wal.append(seq, &puts) {
                self.shared.error(&StoreError(format!(
                    "query log WAL {}: {e}",
                    wal.dir().display()
                )));
            }
            wal.rotate_if_older(self.interval);
        }
        self.tx
            .send(Msg::Encoded(Encoded { puts, entries }, seq))
            .is_ok()
    }

    /// A control message: the pending batch goes first (with the top lists),
    /// the segment is closed, then the message is forwarded. False when the
    /// thread must end (shutdown, or the writer is gone).
    fn control(&mut self, batch: &mut Vec<Entry>, control: Msg) -> bool {
        let stop = matches!(control, Msg::Shutdown(_));
        let ok = self.send(batch, true);
        if let Some(wal) = &mut self.wal {
            wal.rotate();
        }
        ok && self.tx.send(control).is_ok() && !stop
    }
}

/// Test helpers: records written by hand, read back as entries.
#[cfg(test)]
pub(crate) mod testing {
    use super::super::config::Privacy;
    use super::*;

    /// Appends record `seq` holding `entries` as `encoder` encodes them.
    pub fn encode_entries(encoder: &mut Encoder, seq: u64, entries: &[Entry], out: &mut Vec<u8>) {
        let mut batch = entries.to_vec();
        let e = encoder.encode(seq, &mut batch, true);
        encode_record(seq, &e.puts, out);
    }

    /// The entries of every block a record puts.
    pub fn entries(r: &Record) -> Vec<Entry> {
        r.puts
            .iter()
            .filter(|(k, _)| super::super::codec::decode_key(k).is_ok())
            .flat_map(|(_, v)| super::super::codec::decode_block(v).unwrap())
            .collect()
    }

    /// An encoder starting from nothing, storing everything.
    pub fn encoder() -> Encoder {
        Encoder::new(None, Privacy::Everything)
    }
}
