//! On-disk encoding: keys, entry blocks, per-minute counters and per-hour
//! top lists.
//!
//! # Keys (all big-endian so byte order is time order)
//! * `E` minute_ms:u64 seq:u32 — a block of entries whose timestamps all fall
//!   in that minute; `seq` orders the blocks of one minute.
//! * `M` minute_ms:u64 — [`MinuteCounts`] of that minute.
//! * `H` hour_ms:u64 kind:u8 — top list of that hour (`d` domains,
//!   `b` blocked domains, `c` clients).
//! * `V` — format version.
//!
//! # Block (value of an `E` key)
//! Entries are not stored one per key: sled costs ~100 bytes per key, so the
//! writer groups up to [`BLOCK_MAX_ENTRIES`] entries (or ~[`BLOCK_TARGET_BYTES`])
//! of one minute into a block, interning strings and clients per block:
//!
//! ```text
//! u8 version=4, varint minute_ms
//! varint n_strings, n_strings * (varint len, utf8)   -- string #k is index k+1; 0 = ""
//! varint n_clients, n_clients * (u8 4|6, 4|16 bytes)
//! varint n_entries, n_entries * entry
//! entry: varint ms_in_minute, varint client, varint name, varint qtype,
//!        u8 flags (bits 0-1 verdict, 2 flagged, 3-5 source kind,
//!                  6 has score, 7 has rule/list),
//!        varint rcode, varint latency_us,
//!        [f32 LE score, u8 n, n bytes of tunnel reasons (`Reasons::encode`)],
//!        varint group,
//!        [varint upstream label if source = upstream], [varint rule, varint list],
//!        varint answer, varint client name
//! rule: string << 1, or line << 1 | 1 for the rule `line <line>`
//! ```
//! A list rule's label `line N` is stored as its number: with diverse blocked
//! names nearly every blocked entry has a line of its own, which as text was a
//! new string for the block to hash, keep and store (issue #24).
//! Version 1 blocks (no reasons byte after the score), version 2 blocks (no
//! client name) and version 3 blocks (the rule always a string index) are
//! still read. An entry with reasons reads back with their text as its rule.
//!
//! Every decoder here validates lengths, indices and ranges and returns
//! [`DecodeError`] on any malformed input; none of them panics.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::entry::{Entry, Origin, Ruling, empty_str};
use crate::detect::Reasons;

/// Milliseconds per minute.
pub const MINUTE_MS: u64 = 60_000;
/// Milliseconds per hour.
pub const HOUR_MS: u64 = 3_600_000;
/// A block is closed once it holds this many entries.
pub const BLOCK_MAX_ENTRIES: usize = 2048;
/// A block is closed once its encoding reaches about this many bytes. This
/// also bounds part of the query log's memory: sled 0.34 keeps written leaves
/// resident beyond its `cache_capacity` (256 LRU shards, about a leaf of up to
/// 17 blocks each), about 26 MiB of 6 KiB blocks. 2 KiB blocks held RSS about
/// 21 MB lower at 20k QPS but cost 15-20% of cached capacity per core (more,
/// smaller blocks: more sled inserts, less interning per block), so 6 KiB
/// stays (docs/PERFORMANCE.md, the soak).
pub const BLOCK_TARGET_BYTES: usize = 6 * 1024;

pub(crate) const PREFIX_ENTRY: u8 = b'E';
pub(crate) const PREFIX_MINUTE: u8 = b'M';
pub(crate) const PREFIX_HOUR: u8 = b'H';
pub(crate) const KEY_VERSION: &[u8] = b"V";
pub(crate) const FORMAT_VERSION: &[u8] = b"dnsguard-querylog-1";

const BLOCK_VERSION: u8 = 4;
const AGG_VERSION: u8 = 1;

/// Malformed stored bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Input ended early.
    #[error("truncated input")]
    Truncated,
    /// A varint is longer than 10 bytes or overflows.
    #[error("bad varint")]
    BadVarint,
    /// Unknown version byte.
    #[error("unsupported version {0}")]
    Version(u8),
    /// A field holds an impossible value.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Bytes left after the last element.
    #[error("trailing bytes")]
    Trailing,
}

// ---------------------------------------------------------------- varints

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(DecodeError::BadVarint);
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint)
    }
    fn varint_u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| DecodeError::Invalid(what))
    }
    fn varint_u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        u16::try_from(self.varint()?).map_err(|_| DecodeError::Invalid(what))
    }
    /// A count of elements each at least `min_size` bytes long.
    fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > (self.buf.len() / min_size.max(1)) as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.count(1)?;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| DecodeError::Invalid("utf-8"))
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing)
        }
    }
}

// ---------------------------------------------------------------- keys

/// Key of an entry block: the minute its entries fall in and a sequence
/// number ordering the blocks of that minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BlockKey {
    /// Start of the minute, unix ms (a multiple of 60,000).
    pub minute_ms: u64,
    /// Block number within the minute.
    pub seq: u32,
}

impl BlockKey {
    /// The 13-byte stored key.
    pub fn encode(&self) -> [u8; 13] {
        let mut k = [0u8; 13];
        k[0] = PREFIX_ENTRY;
        k[1..9].copy_from_slice(&self.minute_ms.to_be_bytes());
        k[9..13].copy_from_slice(&self.seq.to_be_bytes());
        k
    }
}

/// Decode an entry-block key.
pub fn decode_key(bytes: &[u8]) -> Result<BlockKey, DecodeError> {
    if bytes.len() != 13 {
        return Err(DecodeError::Truncated);
    }
    if bytes[0] != PREFIX_ENTRY {
        return Err(DecodeError::Invalid("key prefix"));
    }
    let mut m = [0u8; 8];
    m.copy_from_slice(&bytes[1..9]);
    let mut s = [0u8; 4];
    s.copy_from_slice(&bytes[9..13]);
    Ok(BlockKey {
        minute_ms: u64::from_be_bytes(m),
        seq: u32::from_be_bytes(s),
    })
}

pub(crate) fn minute_of(ms: u64) -> u64 {
    ms - ms % MINUTE_MS
}

pub(crate) fn hour_of(ms: u64) -> u64 {
    ms - ms % HOUR_MS
}

pub(crate) fn minute_key(minute_ms: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = PREFIX_MINUTE;
    k[1..9].copy_from_slice(&minute_ms.to_be_bytes());
    k
}

pub(crate) fn hour_key(hour_ms: u64, kind: u8) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = PREFIX_HOUR;
    k[1..9].copy_from_slice(&hour_ms.to_be_bytes());
    k[9] = kind;
    k
}

/// Decode an `M` or `H` key into (prefix, ms, kind).
pub(crate) fn decode_agg_key(bytes: &[u8]) -> Result<(u8, u64, u8), DecodeError> {
    if bytes.len() < 9 {
        return Err(DecodeError::Truncated);
    }
    let mut m = [0u8; 8];
    m.copy_from_slice(&bytes[1..9]);
    let kind = bytes.get(9).copied().unwrap_or(0);
    Ok((bytes[0], u64::from_be_bytes(m), kind))
}

// ---------------------------------------------------------------- blocks

/// Up to this many strings (or clients) a block looks them up by scanning.
const LINEAR_LOOKUP: usize = 8;

/// Recently interned strings remembered by address (see [`BlockBuilder::intern`]).
const RECENT: usize = 8;

/// Builds one block incrementally (writer side). Strings and clients are
/// interned, so a block can be re-encoded cheaply after each batch.
pub struct BlockBuilder {
    /// Key the block is stored under.
    pub key: BlockKey,
    strings: Vec<Arc<str>>,
    /// Index of each string in `strings`, found by hashing the string once
    /// (a new string is looked up and inserted with the same hash).
    string_idx: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// Index of a string interned from this very `Arc` (group, list, rule and
    /// upstream labels are shared by many entries): found without hashing.
    recent: [(usize, u32); RECENT],
    strings_bytes: usize,
    clients: Vec<IpAddr>,
    client_idx: HashMap<IpAddr, u32, foldhash::fast::RandomState>,
    body: Vec<u8>,
    count: usize,
}

impl BlockBuilder {
    /// An empty block stored under `key`.
    pub fn new(key: BlockKey) -> BlockBuilder {
        BlockBuilder {
            key,
            strings: Vec::new(),
            string_idx: hashbrown::HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            recent: [(0, 0); RECENT],
            strings_bytes: 0,
            clients: Vec::new(),
            client_idx: HashMap::default(),
            body: Vec::with_capacity(256),
            count: 0,
        }
    }

    /// Entries in the block.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the block holds no entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Approximate encoded size.
    pub fn encoded_len(&self) -> usize {
        16 + self.strings_bytes + self.clients.len() * 17 + self.body.len()
    }

    /// True once the block should be closed.
    pub fn is_full(&self) -> bool {
        self.count >= BLOCK_MAX_ENTRIES || self.encoded_len() >= BLOCK_TARGET_BYTES
    }

    fn intern(&mut self, s: &Arc<str>) -> u32 {
        if s.is_empty() {
            return 0;
        }
        // The same allocation as a string interned before: no hashing. (The
        // block holds a clone of every interned Arc, so an address it
        // remembers cannot be reused by another string while it lives.)
        let addr = s.as_ptr() as usize;
        let slot = (addr >> 4) % RECENT;
        let (seen, i) = self.recent[slot];
        if seen == addr && Arc::ptr_eq(&self.strings[i as usize - 1], s) {
            return i;
        }
        let i = self.lookup_or_add(s);
        if Arc::ptr_eq(&self.strings[i as usize - 1], s) {
            self.recent[slot] = (addr, i);
        }
        i
    }

    fn lookup_or_add(&mut self, s: &Arc<str>) -> u32 {
        // Few strings (a block's first entries): a scan beats hashing; the
        // index is built once the block grows.
        let i = self.strings.len() as u32 + 1;
        if self.strings.len() < LINEAR_LOOKUP {
            let found = self
                .strings
                .iter()
                .position(|x| Arc::ptr_eq(x, s) || **x == **s);
            if let Some(j) = found {
                return j as u32 + 1;
            }
        } else {
            let (strings, hasher) = (&self.strings, &self.hasher);
            let at = |j: u32| &*strings[j as usize - 1];
            let rehash = |&j: &u32| hasher.hash_one(at(j));
            if self.string_idx.is_empty() {
                // Sized for a typical full block: no rehashing as it fills.
                self.string_idx.reserve(256, rehash);
                for j in 1..i {
                    self.string_idx
                        .insert_unique(hasher.hash_one(at(j)), j, rehash);
                }
            }
            match self
                .string_idx
                .entry(hasher.hash_one(&**s), |&j| at(j) == &**s, rehash)
            {
                hashbrown::hash_table::Entry::Occupied(o) => return *o.get(),
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(i);
                }
            }
        }
        self.strings.push(s.clone());
        self.strings_bytes += s.len() + 2;
        i
    }

    fn client(&mut self, ip: IpAddr) -> u32 {
        if self.clients.len() <= LINEAR_LOOKUP {
            if let Some(i) = self.clients.iter().position(|c| *c == ip) {
                return i as u32;
            }
        } else if let Some(&i) = self.client_idx.get(&ip) {
            return i;
        }
        let i = self.clients.len() as u32;
        self.clients.push(ip);
        if self.clients.len() > LINEAR_LOOKUP {
            if self.client_idx.is_empty() {
                for (j, c) in self.clients.iter().enumerate() {
                    self.client_idx.insert(*c, j as u32);
                }
            } else {
                self.client_idx.insert(ip, i);
            }
        }
        i
    }

    /// Append an entry. Its time must lie in the block's minute (clamped
    /// into it otherwise).
    pub fn push(&mut self, e: &Entry) {
        let off = e
            .time_ms
            .saturating_sub(self.key.minute_ms)
            .min(MINUTE_MS - 1);
        let client = self.client(e.client);
        let name = self.intern(&e.name);
        let group = self.intern(&e.group);
        let label = match &e.source {
            Origin::Upstream(l) => Some(self.intern(l)),
            _ => None,
        };
        let has_extra = !e.rule.is_empty() || !e.list.is_empty();
        let (rule, list) = if has_extra {
            let rule = match line_number(&e.rule) {
                Some(n) => u64::from(n) << 1 | 1,
                None => u64::from(self.intern(&e.rule)) << 1,
            };
            (rule, self.intern(&e.list))
        } else {
            (0, 0)
        };
        let answer = self.intern(&e.answer);
        let client_name = self.intern(&e.client_name);
        let has_score = e.tunnel_score != 0.0 || e.tunnel.is_some();
        let verdict = match e.verdict {
            Ruling::Allowed => 0u8,
            Ruling::Blocked => 1,
            Ruling::Allowlisted => 2,
        };
        let flags = verdict
            | (u8::from(e.flagged) << 2)
            | (e.source.kind() << 3)
            | (u8::from(has_score) << 6)
            | (u8::from(has_extra) << 7);
        let b = &mut self.body;
        put_varint(b, off);
        put_varint(b, u64::from(client));
        put_varint(b, u64::from(name));
        put_varint(b, u64::from(e.qtype));
        b.push(flags);
        put_varint(b, u64::from(e.rcode));
        put_varint(b, u64::from(e.latency_us));
        if has_score {
            b.extend_from_slice(&e.tunnel_score.to_le_bytes());
            match &e.tunnel {
                Some(r) => {
                    b.push(Reasons::ENCODED_LEN as u8);
                    r.encode(b);
                }
                None => b.push(0),
            }
        }
        put_varint(b, u64::from(group));
        if let Some(l) = label {
            put_varint(b, u64::from(l));
        }
        if has_extra {
            put_varint(b, rule);
            put_varint(b, u64::from(list));
        }
        put_varint(b, u64::from(answer));
        put_varint(b, u64::from(client_name));
        self.count += 1;
    }

    /// Encode the whole block into `out` (cleared first).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.encoded_len());
        out.push(BLOCK_VERSION);
        put_varint(out, self.key.minute_ms);
        put_varint(out, self.strings.len() as u64);
        for s in &self.strings {
            put_varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        put_varint(out, self.clients.len() as u64);
        for c in &self.clients {
            match c {
                IpAddr::V4(a) => {
                    out.push(4);
                    out.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    out.push(6);
                    out.extend_from_slice(&a.octets());
                }
            }
        }
        put_varint(out, self.count as u64);
        out.extend_from_slice(&self.body);
    }
}

/// The number `n` of a rule that reads exactly `line n` (decimal, no sign or
/// leading zero, as the filter labels a list's rules), so that it can be
/// stored as the number and read back as the same text.
fn line_number(rule: &str) -> Option<u32> {
    let digits = rule.strip_prefix("line ")?.as_bytes();
    if digits.is_empty() || digits.len() > 10 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    u32::try_from(n).ok()
}

/// The rule `line n` of a stored line number.
fn line_label(n: u64) -> Result<Arc<str>, DecodeError> {
    let n = u32::try_from(n).map_err(|_| DecodeError::Invalid("rule line"))?;
    Ok(Arc::from(format!("line {n}")))
}

/// Encode entries as one block under `key` (entries outside the key's
/// minute are clamped into it). Mainly for tests and fuzzing.
pub fn encode_block(key: BlockKey, entries: &[Entry]) -> Vec<u8> {
    let mut b = BlockBuilder::new(key);
    for e in entries {
        b.push(e);
    }
    let mut out = Vec::new();
    b.encode_into(&mut out);
    out
}

/// Decode a stored block into its entries, in stored (arrival) order.
pub fn decode_block(bytes: &[u8]) -> Result<Vec<Entry>, DecodeError> {
    let mut out = Vec::new();
    decode_block_into(bytes, &mut out)?;
    Ok(out)
}

/// [`decode_block`] into a reused vector (cleared first).
pub fn decode_block_into(bytes: &[u8], out: &mut Vec<Entry>) -> Result<(), DecodeError> {
    out.clear();
    let mut r = Reader { buf: bytes };
    let version = r.u8()?;
    if !(1..=BLOCK_VERSION).contains(&version) {
        return Err(DecodeError::Version(version));
    }
    let minute = r.varint()?;
    let n_strings = r.count(1)?;
    let mut strings: Vec<Arc<str>> = Vec::with_capacity(n_strings + 1);
    strings.push(empty_str());
    for _ in 0..n_strings {
        strings.push(Arc::from(r.str()?));
    }
    let n_clients = r.count(5)?;
    let mut clients = Vec::with_capacity(n_clients);
    for _ in 0..n_clients {
        clients.push(match r.u8()? {
            4 => {
                let mut a = [0u8; 4];
                a.copy_from_slice(r.bytes(4)?);
                IpAddr::V4(Ipv4Addr::from(a))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(r.bytes(16)?);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => return Err(DecodeError::Invalid("client family")),
        });
    }
    let n = r.count(9)?;
    out.reserve(n);
    let s = |i: u64| -> Result<Arc<str>, DecodeError> {
        strings
            .get(usize::try_from(i).map_err(|_| DecodeError::Invalid("string index"))?)
            .cloned()
            .ok_or(DecodeError::Invalid("string index"))
    };
    for _ in 0..n {
        let off = r.varint()?;
        if off >= MINUTE_MS {
            return Err(DecodeError::Invalid("time offset"));
        }
        let time_ms = minute
            .checked_add(off)
            .ok_or(DecodeError::Invalid("time"))?;
        let ci = r.varint()?;
        let client = *clients
            .get(usize::try_from(ci).map_err(|_| DecodeError::Invalid("client index"))?)
            .ok_or(DecodeError::Invalid("client index"))?;
        let name = s(r.varint()?)?;
        let qtype = r.varint_u16("qtype")?;
        let flags = r.u8()?;
        let verdict = match flags & 3 {
            0 => Ruling::Allowed,
            1 => Ruling::Blocked,
            2 => Ruling::Allowlisted,
            _ => return Err(DecodeError::Invalid("verdict")),
        };
        let flagged = flags & 4 != 0;
        let kind = (flags >> 3) & 7;
        let rcode = r.varint_u16("rcode")?;
        let latency_us = r.varint_u32("latency")?;
        let (tunnel_score, tunnel) = if flags & 0x40 != 0 {
            let mut a = [0u8; 4];
            a.copy_from_slice(r.bytes(4)?);
            let n = if version >= 2 {
                usize::from(r.u8()?)
            } else {
                0
            };
            let tunnel = match n {
                0 => None,
                n => Some(Box::new(
                    Reasons::decode(r.bytes(n)?).ok_or(DecodeError::Invalid("tunnel reasons"))?,
                )),
            };
            (f32::from_le_bytes(a), tunnel)
        } else {
            (0.0, None)
        };
        let group = s(r.varint()?)?;
        let source = match kind {
            0 => Origin::Upstream(s(r.varint()?)?),
            1 => Origin::Cache,
            2 => Origin::Local,
            3 => Origin::Stale,
            4 => Origin::Blocked,
            5 => Origin::Refused,
            6 => Origin::Failed,
            _ => return Err(DecodeError::Invalid("source")),
        };
        let (mut rule, list) = if flags & 0x80 != 0 {
            let rule = match r.varint()? {
                v if version < 4 => s(v)?,
                v if v & 1 == 1 => line_label(v >> 1)?,
                v => s(v >> 1)?,
            };
            (rule, s(r.varint()?)?)
        } else {
            (empty_str(), empty_str())
        };
        if let Some(t) = &tunnel {
            rule = Arc::from(t.rule_for(&name));
        }
        let answer = s(r.varint()?)?;
        let client_name = if version >= 3 {
            s(r.varint()?)?
        } else {
            empty_str()
        };
        out.push(Entry {
            time_ms,
            client,
            name,
            qtype,
            verdict,
            flagged,
            rule,
            list,
            rcode,
            answer,
            source,
            latency_us,
            tunnel_score,
            group,
            client_name,
            tunnel,
        });
    }
    r.end()
}

/// Encode a single entry (a one-entry block keyed by its own minute).
pub fn encode_entry(e: &Entry) -> Vec<u8> {
    encode_block(
        BlockKey {
            minute_ms: minute_of(e.time_ms),
            seq: 0,
        },
        std::slice::from_ref(e),
    )
}

/// Decode bytes made by [`encode_entry`]; anything but exactly one entry is
/// an error.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let mut v = decode_block(bytes)?;
    if v.len() != 1 {
        return Err(DecodeError::Invalid("entry count"));
    }
    v.pop().ok_or(DecodeError::Truncated)
}

// ---------------------------------------------------------------- aggregates

/// Counters for one minute (value of an `M` key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteCounts {
    /// All queries.
    pub total: u64,
    /// Ruling allowed.
    pub allowed: u64,
    /// Ruling blocked.
    pub blocked: u64,
    /// Ruling allowlisted.
    pub allowlisted: u64,
    /// Tunnel-flagged queries.
    pub flagged: u64,
    /// Answered from the cache (fresh or stale).
    pub cached: u64,
    /// Sum of latencies, microseconds.
    pub latency_sum_us: u64,
    /// UDP queries the rate limiter dropped or slipped (never logged one by
    /// one; the WAL thread adds the count to the minute it is taken in).
    pub rate_limited: u64,
}

impl MinuteCounts {
    pub(crate) fn add_entry(&mut self, e: &Entry) {
        self.total += 1;
        match e.verdict {
            Ruling::Allowed => self.allowed += 1,
            Ruling::Blocked => self.blocked += 1,
            Ruling::Allowlisted => self.allowlisted += 1,
        }
        self.flagged += u64::from(e.flagged);
        self.cached += u64::from(matches!(e.source, Origin::Cache | Origin::Stale));
        self.latency_sum_us += u64::from(e.latency_us);
    }

    pub(crate) fn merge(&mut self, o: &MinuteCounts) {
        self.total += o.total;
        self.allowed += o.allowed;
        self.blocked += o.blocked;
        self.allowlisted += o.allowlisted;
        self.flagged += o.flagged;
        self.cached += o.cached;
        self.latency_sum_us += o.latency_sum_us;
        self.rate_limited += o.rate_limited;
    }

    /// Stored form. `rate_limited` is a trailing field written only when not
    /// zero, so a minute without limiting is stored as before it existed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![AGG_VERSION];
        for v in [
            self.total,
            self.allowed,
            self.blocked,
            self.allowlisted,
            self.flagged,
            self.cached,
            self.latency_sum_us,
        ] {
            put_varint(&mut out, v);
        }
        if self.rate_limited > 0 {
            put_varint(&mut out, self.rate_limited);
        }
        out
    }

    /// Decode the stored form.
    pub fn decode(bytes: &[u8]) -> Result<MinuteCounts, DecodeError> {
        let mut r = Reader { buf: bytes };
        let v = r.u8()?;
        if v != AGG_VERSION {
            return Err(DecodeError::Version(v));
        }
        let c = MinuteCounts {
            total: r.varint()?,
            allowed: r.varint()?,
            blocked: r.varint()?,
            allowlisted: r.varint()?,
            flagged: r.varint()?,
            cached: r.varint()?,
            latency_sum_us: r.varint()?,
            rate_limited: if r.buf.is_empty() { 0 } else { r.varint()? },
        };
        r.end()?;
        Ok(c)
    }
}

/// Encode a top list (value of an `H` key).
pub fn encode_top(items: &[(&str, u64)]) -> Vec<u8> {
    let mut out = vec![AGG_VERSION];
    put_varint(&mut out, items.len() as u64);
    for (k, c) in items {
        put_varint(&mut out, k.len() as u64);
        out.extend_from_slice(k.as_bytes());
        put_varint(&mut out, *c);
    }
    out
}

/// Decode a top list.
pub fn decode_top(bytes: &[u8]) -> Result<Vec<(String, u64)>, DecodeError> {
    let mut r = Reader { buf: bytes };
    let v = r.u8()?;
    if v != AGG_VERSION {
        return Err(DecodeError::Version(v));
    }
    let n = r.count(2)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.str()?.to_owned();
        out.push((k, r.varint()?));
    }
    r.end()?;
    Ok(out)
}
