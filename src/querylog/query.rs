//! Reading entries back: [`Criteria`], the streaming [`EntryIter`] and the
//! [`Cursor`] used by `--follow`.
//!
//! The iterator walks the sled key range of the requested time span block by
//! block (a block holds at most one minute and ~6 KiB), so memory stays
//! constant and the first rows come out at once whatever the span.
//!
//! Order: blocks are ordered by minute, then by write order; entries within
//! a block by arrival at the writer. Timestamps come from the DNS path, so
//! within one minute two entries may be a few ms out of order.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use super::QueryLogError;
use super::codec::{BlockKey, MINUTE_MS, decode_block_into, decode_key, minute_of};
use super::entry::{Entry, Ruling};
use super::store::KvIter;

/// Iteration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Newest entries first (the CLI default).
    #[default]
    NewestFirst,
    /// Oldest entries first (exports, `--follow`).
    OldestFirst,
}

/// Which verdicts to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RulingFilter {
    /// Every verdict.
    #[default]
    Any,
    /// Only blocked queries.
    Blocked,
    /// Allowed and allowlisted queries.
    Allowed,
    /// Only allowlisted queries.
    Allowlisted,
}

/// Domain pattern, case-insensitive (ASCII); a trailing `.` is ignored.
///
/// * `.example.com` — whole-label suffix: matches `example.com` and
///   `a.example.com`, not `badexample.com`.
/// * `example.com` (no leading dot) — substring: matches `example.com`,
///   `a.example.com`, `badexample.com`, `example.com.evil.net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPattern {
    pattern: String,
    suffix: bool,
}

impl DomainPattern {
    /// Parse a CLI `--domain` value.
    pub fn new(s: &str) -> DomainPattern {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        match s.strip_prefix('.') {
            Some(rest) => DomainPattern {
                pattern: rest.to_owned(),
                suffix: true,
            },
            None => DomainPattern {
                pattern: s,
                suffix: false,
            },
        }
    }

    /// Does `name` match?
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name).as_bytes();
        let p = self.pattern.as_bytes();
        if self.suffix {
            if name.len() == p.len() {
                return name.eq_ignore_ascii_case(p);
            }
            name.len() > p.len()
                && name[name.len() - p.len()..].eq_ignore_ascii_case(p)
                && name[name.len() - p.len() - 1] == b'.'
        } else {
            p.is_empty() || name.windows(p.len()).any(|w| w.eq_ignore_ascii_case(p))
        }
    }
}

fn is_client_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What to read. All conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct Criteria {
    /// Entries at or after this time (unix ms).
    pub since_ms: Option<u64>,
    /// Entries strictly before this time (unix ms).
    pub until_ms: Option<u64>,
    /// Client address or network (a single address is a /32 or /128).
    pub client: Option<IpNet>,
    /// Client name (`[[clients]]`).
    pub client_name: Option<Box<str>>,
    /// Query-name pattern.
    pub domain: Option<DomainPattern>,
    /// Verdicts to keep.
    pub verdict: RulingFilter,
    /// Only tunnel-flagged entries.
    pub flagged_only: bool,
    /// Stop after this many matching entries.
    pub limit: Option<usize>,
    /// Iteration order.
    pub order: Order,
}

impl Criteria {
    /// Set the client filter from an address (`10.0.0.1`), a CIDR
    /// (`10.0.0.0/24`) or a `[[clients]]` name (`agent-1`: letters, digits, `-`, `_`).
    pub fn with_client(mut self, s: &str) -> Result<Criteria, QueryLogError> {
        let net = match s.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => match s.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) if is_client_name(s) => {
                    self.client_name = Some(s.into());
                    return Ok(self);
                }
                Err(_) => {
                    return Err(QueryLogError::Parse(format!(
                        "invalid client {s:?}: expected an IP address, a CIDR like 192.168.1.0/24 or a client name"
                    )));
                }
            },
        };
        self.client = Some(net);
        Ok(self)
    }

    /// Does the entry satisfy every condition except the limit?
    pub fn matches(&self, e: &Entry) -> bool {
        if self.since_ms.is_some_and(|s| e.time_ms < s) {
            return false;
        }
        if self.until_ms.is_some_and(|u| e.time_ms >= u) {
            return false;
        }
        let ok = match self.verdict {
            RulingFilter::Any => true,
            RulingFilter::Blocked => e.verdict == Ruling::Blocked,
            RulingFilter::Allowed => e.verdict != Ruling::Blocked,
            RulingFilter::Allowlisted => e.verdict == Ruling::Allowlisted,
        };
        if !ok || (self.flagged_only && !e.flagged) {
            return false;
        }
        if self.client.as_ref().is_some_and(|n| !n.contains(&e.client)) {
            return false;
        }
        if self
            .client_name
            .as_deref()
            .is_some_and(|n| n != &*e.client_name)
        {
            return false;
        }
        if self.domain.as_ref().is_some_and(|d| !d.matches(&e.name)) {
            return false;
        }
        true
    }

    pub(crate) fn key_range(&self) -> ([u8; 13], [u8; 13]) {
        let start = BlockKey {
            minute_ms: self.since_ms.map(minute_of).unwrap_or(0),
            seq: 0,
        };
        let end = match self.until_ms {
            Some(u) => BlockKey {
                minute_ms: minute_of(u.saturating_sub(1)).saturating_add(MINUTE_MS),
                seq: 0,
            },
            None => BlockKey {
                minute_ms: u64::MAX,
                seq: u32::MAX,
            },
        };
        (start.encode(), end.encode())
    }
}

/// A position in the log: the next entry to read is entry `index` of block
/// `key`. Blocks only ever grow at the end, so a cursor stays valid.
/// Text form `minute_ms.seq.index`, e.g. `1764064800000.0.17`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor {
    /// Block the next entry is in.
    pub key: BlockKey,
    /// Index of the next entry in that block.
    pub index: u32,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.key.minute_ms, self.key.seq, self.index)
    }
}

impl FromStr for Cursor {
    type Err = QueryLogError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || QueryLogError::Parse(format!("invalid cursor {s:?}: expected MINUTE.SEQ.INDEX"));
        let mut it = s.split('.');
        let (Some(a), Some(b), Some(c), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        Ok(Cursor {
            key: BlockKey {
                minute_ms: a.parse().map_err(|_| bad())?,
                seq: b.parse().map_err(|_| bad())?,
            },
            index: c.parse().map_err(|_| bad())?,
        })
    }
}

/// Streaming iterator over matching entries. Items are `Err` for a block
/// that cannot be read or decoded; iteration continues after it.
pub struct EntryIter {
    blocks: KvIter,
    filter: Criteria,
    buf: Vec<Entry>,
    /// Next position in `buf` (forward) or count left (reverse).
    pos: usize,
    key: BlockKey,
    remaining: Option<usize>,
    skip_first: Option<(BlockKey, u32)>,
    cursor: Cursor,
}

impl EntryIter {
    pub(crate) fn new(blocks: KvIter, filter: Criteria, after: Option<Cursor>) -> EntryIter {
        EntryIter {
            blocks,
            remaining: filter.limit,
            filter,
            buf: Vec::new(),
            pos: 0,
            key: BlockKey::default(),
            skip_first: after.map(|c| (c.key, c.index)),
            cursor: after.unwrap_or_default(),
        }
    }

    pub(crate) fn empty() -> EntryIter {
        EntryIter::new(Box::new(std::iter::empty()), Criteria::default(), None)
    }

    /// Position after the last entry examined (matching or not); pass it
    /// to [`QueryLog::query_after`](super::QueryLog::query_after) to resume.
    /// Meaningful for oldest-first iteration.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    fn reverse(&self) -> bool {
        self.filter.order == Order::NewestFirst
    }
}

impl Iterator for EntryIter {
    type Item = Result<Entry, QueryLogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == Some(0) {
            return None;
        }
        loop {
            // Drain the current block.
            while self.pos < self.buf.len() {
                let i = if self.reverse() {
                    self.buf.len() - 1 - self.pos
                } else {
                    self.pos
                };
                self.pos += 1;
                if !self.reverse() {
                    self.cursor = Cursor {
                        key: self.key,
                        index: self.pos as u32,
                    };
                }
                if self.filter.matches(&self.buf[i]) {
                    if let Some(r) = self.remaining.as_mut() {
                        *r -= 1;
                    }
                    return Some(Ok(self.buf[i].clone()));
                }
            }
            let (k, v) = match self.blocks.next()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(QueryLogError::Store(e.0))),
            };
            let key = match decode_key(&k) {
                Ok(key) => key,
                Err(e) => return Some(Err(QueryLogError::Decode(e))),
            };
            self.key = key;
            self.pos = 0;
            if let Err(e) = decode_block_into(&v, &mut self.buf) {
                self.buf.clear();
                return Some(Err(QueryLogError::Decode(e)));
            }
            if let Some((sk, si)) = self.skip_first.take()
                && sk == key
            {
                self.pos = (si as usize).min(self.buf.len());
            }
            if !self.reverse() {
                self.cursor = Cursor {
                    key,
                    index: self.pos as u32,
                };
            }
        }
    }
}
