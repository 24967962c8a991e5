//! The write-ahead log (WAL): each committed batch is appended, with plain
//! `write(2)` and no fsync, to a segment file `<dir>/wal.<n>` before it is
//! applied to sled, so a process crash (`kill -9`, panic, OOM kill) never
//! loses a batch that sled has not made durable yet, however long sled's
//! `flush` (fsync) takes: the kernel's page cache outlives the process.
//! (A power loss can still lose what neither sled nor the kernel has written
//! back: at most the unflushed tail, as before.)
//!
//! # Record format
//! `len: u32 LE | crc32(payload): u32 LE | payload`, with
//! `payload = seq: u64 LE | count: u32 LE | count × (len: u32 LE | entry)`
//! where `entry` is [`encode_entry`] of the entry *after* the privacy level
//! was applied. `seq` numbers records monotonically across segments and
//! restarts. Reading a segment stops at the first record that is short, has
//! a bad checksum or does not decode (a torn tail after a crash); the rest
//! of that segment is ignored.
//!
//! # Sequence numbers and replay
//! Every sled batch that carries a record's entries also stores that
//! record's `seq` under the key `W` (atomically, in the same batch), so sled
//! always knows the newest record it holds. On open, records with
//! `seq <= W` are already in sled (durably, since sled recovers to a batch
//! boundary) and are skipped; newer ones are replayed. Replay therefore
//! never duplicates entries, whatever was or was not deleted before a crash.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::codec::{decode_entry, encode_entry};
use super::config::Privacy;
use super::entry::Entry;
use super::store::StoreError;
use super::writer::{Msg, Shared, privacy_apply};

/// sled key holding the `seq` of the newest WAL record applied (u64 BE).
pub(crate) const KEY_WAL_SEQ: &[u8] = b"W";

const HEADER: usize = 8;
/// Records larger than this are treated as corrupt (a batch of 1,000
/// entries is ~100 KB).
const MAX_RECORD: usize = 256 * 1024 * 1024;

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Append one record holding `entries` under `seq` to `out`.
pub(crate) fn encode_record(seq: u64, entries: &[Entry], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        let b = encode_entry(e);
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(&b);
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
    pub entries: Vec<Entry>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn decode_payload(p: &[u8]) -> Option<Record> {
    let seq = u64::from_le_bytes(p.get(..8)?.try_into().ok()?);
    let count = u32_at(p, 8)? as usize;
    let mut at = 12;
    let mut entries = Vec::with_capacity(count.min(p.len() / 4));
    for _ in 0..count {
        let n = u32_at(p, at)? as usize;
        at += 4;
        entries.push(decode_entry(p.get(at..at.checked_add(n)?)?).ok()?);
        at += n;
    }
    (at == p.len()).then_some(Record { seq, entries })
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

/// The WAL thread's segment writer: the current segment and the next `seq`.
pub(crate) struct Wal {
    dir: PathBuf,
    cur: u64,
    file: Option<File>,
    touched: bool,
    cur_max: u64,
    opened_at: Instant,
    next_seq: u64,
    buf: Vec<u8>,
    closed: Closed,
}

impl Wal {
    /// Append to segments numbered from `first_segment`, records from
    /// `next_seq`. Files are created on the first append.
    pub fn new(dir: PathBuf, first_segment: u64, next_seq: u64) -> Wal {
        Wal {
            dir,
            cur: first_segment,
            file: None,
            touched: false,
            cur_max: 0,
            opened_at: Instant::now(),
            next_seq,
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

    /// Write `entries` as one record (one `write` call, no fsync) and return
    /// its `seq`. On error the seq is still used up, and the segment is
    /// closed so the next record starts a fresh one (never appended after a
    /// possibly torn record).
    pub fn append(&mut self, entries: &[Entry]) -> (u64, io::Result<()>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.buf.clear();
        encode_record(seq, entries, &mut self.buf);
        if !self.touched {
            self.touched = true;
            self.opened_at = Instant::now();
        }
        self.cur_max = seq;
        let r = self.write_buf();
        if r.is_err() {
            self.rotate();
        }
        (seq, r)
    }

    fn write_buf(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
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
/// batches entries (`batch_size` / `interval`, like the writer), applies the
/// privacy level, appends each batch to the WAL and only then passes it on
/// (`Msg::Batch`). sled can stall the writer (its `apply` waits behind a
/// slow fsync on a busy disk); this thread never touches sled, so batches
/// keep reaching the WAL meanwhile (until `tx`, bounded, is full; then the
/// DNS-side channel fills and entries are dropped and counted, as before).
/// Control messages are forwarded after the pending batch, with the segment
/// closed first so the writer's flush can delete it.
///
/// [`QueryLog::record`]: super::QueryLog::record
pub(crate) fn run_wal_thread(
    mut wal: Wal,
    rx: Receiver<Msg>,
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    privacy: Privacy,
    batch_size: usize,
    interval: Duration,
) {
    let batch_size = batch_size.max(1);
    let mut batch: Vec<Entry> = Vec::with_capacity(batch_size);
    let mut deadline: Option<Instant> = None;
    let send = |wal: &mut Wal, batch: &mut Vec<Entry>| -> bool {
        if batch.is_empty() {
            return true;
        }
        for e in batch.iter_mut() {
            privacy_apply(privacy, e);
        }
        let (seq, r) = wal.append(batch);
        if let Err(e) = r {
            shared.error(&StoreError(format!(
                "query log WAL {}: {e}",
                wal.dir().display()
            )));
        }
        wal.rotate_if_older(interval);
        let b = std::mem::replace(batch, Vec::with_capacity(batch_size));
        tx.send(Msg::Batch(b, seq)).is_ok()
    };
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            // Wake up to close an idle segment; otherwise rarely.
            None if wal.touched => interval,
            None => Duration::from_secs(1),
        };
        // Polled, not blocked: see `crate::channel`.
        let ok = match crate::channel::poll_recv(&rx, wait) {
            Ok(Msg::Entry(e)) => {
                if batch.is_empty() {
                    deadline = Some(Instant::now() + interval);
                }
                batch.push(e);
                if batch.len() >= batch_size {
                    deadline = None;
                    send(&mut wal, &mut batch)
                } else {
                    true
                }
            }
            Ok(control) => {
                deadline = None;
                let stop = matches!(control, Msg::Shutdown(_));
                let ok = send(&mut wal, &mut batch);
                wal.rotate();
                if !ok || tx.send(control).is_err() || stop {
                    return;
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => {
                deadline = None;
                let ok = send(&mut wal, &mut batch);
                // Idle: close the segment so a later flush can delete it.
                wal.rotate_if_older(interval);
                ok
            }
            Err(RecvTimeoutError::Disconnected) => {
                send(&mut wal, &mut batch);
                wal.rotate();
                return;
            }
        };
        if !ok {
            return;
        }
    }
}
