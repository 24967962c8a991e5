//! Statistics from the aggregates, never from raw entries.
//!
//! * Counters come from the per-minute records: exact, at minute
//!   granularity (the minutes overlapping `[since, until)` are summed whole).
//! * Top lists come from the per-hour lists: each hour stores its
//!   100 most frequent keys; the lists
//!   of the hours overlapping the period are summed. This is approximate: a
//!   key's count in an hour where it was not in that hour's top 100 is
//!   missing (counts are lower bounds), partial hours at the edges count
//!   whole, and within an hour the writer keeps at most
//!   20,000 distinct keys per list
//!   (halving to the largest when full), so keys seen rarely early in an
//!   hour may be under-counted. "Top domains" counts permitted queries
//!   (allowed + allowlisted); "top blocked" counts blocked ones.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::QueryLogError;
use super::codec::{
    DecodeError, HOUR_MS, MINUTE_MS, MinuteCounts, decode_agg_key, decode_top, hour_key, hour_of,
    minute_key, minute_of,
};
use super::store::Store;
use super::writer::{TOP_BLOCKED, TOP_CLIENTS, TOP_DOMAINS};

/// One line of a top list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopItem {
    /// Domain name; for clients, a `[[clients]]` name or the address.
    pub key: String,
    /// Queries counted.
    pub count: u64,
}

/// Summary for `dnsguard stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Start of the period (unix ms, inclusive).
    pub since_ms: u64,
    /// End of the period (unix ms, exclusive).
    pub until_ms: u64,
    /// All queries.
    pub total: u64,
    /// Allowed queries.
    pub allowed: u64,
    /// Blocked queries.
    pub blocked: u64,
    /// Allowlisted queries.
    pub allowlisted: u64,
    /// Tunnel-flagged queries.
    pub flagged: u64,
    /// Answered from the cache (fresh or stale).
    pub cached: u64,
    /// UDP queries not answered (dropped) or answered with an empty TC=1
    /// reply (slipped) by the rate limiter; not in `total`, never logged one
    /// by one. `dnsguard_rate_limited_total` counts the same.
    #[serde(default)]
    pub rate_limited: u64,
    /// blocked / total (0 when total is 0).
    pub blocked_share: f64,
    /// Mean latency, microseconds.
    pub avg_latency_us: f64,
    /// Most queried permitted domains.
    pub top_domains: Vec<TopItem>,
    /// Most blocked domains.
    pub top_blocked: Vec<TopItem>,
    /// Most active clients (a configured client by its name, however many
    /// addresses it asked from; others by address).
    pub top_clients: Vec<TopItem>,
}

fn top(map: HashMap<String, u64>, n: usize) -> Vec<TopItem> {
    let mut v: Vec<TopItem> = map
        .into_iter()
        .map(|(key, count)| TopItem { key, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    v.truncate(n);
    v
}

/// Compute [`Stats`] for `[since_ms, until_ms)` with top lists of `top_n`.
pub(crate) fn compute(
    store: &dyn Store,
    since_ms: u64,
    until_ms: u64,
    top_n: usize,
) -> Result<Stats, QueryLogError> {
    let mut c = MinuteCounts::default();
    if until_ms > since_ms {
        let start = minute_key(minute_of(since_ms));
        let end = minute_key(minute_of(until_ms - 1).saturating_add(MINUTE_MS));
        for kv in store.scan(&start, &end, false) {
            let (_, v) = kv.map_err(|e| QueryLogError::Store(e.0))?;
            c.merge(&MinuteCounts::decode(&v)?);
        }
    }
    let mut maps: [HashMap<String, u64>; 3] = Default::default();
    if until_ms > since_ms && top_n > 0 {
        let start = hour_key(hour_of(since_ms), 0);
        let end = hour_key(hour_of(until_ms - 1).saturating_add(HOUR_MS), 0);
        for kv in store.scan(&start, &end, false) {
            let (k, v) = kv.map_err(|e| QueryLogError::Store(e.0))?;
            let (_, _, kind) = decode_agg_key(&k)?;
            let i = match kind {
                TOP_DOMAINS => 0,
                TOP_BLOCKED => 1,
                TOP_CLIENTS => 2,
                _ => return Err(DecodeError::Invalid("top kind").into()),
            };
            for (key, n) in decode_top(&v)? {
                *maps[i].entry(key).or_default() += n;
            }
        }
    }
    let [d, b, cl] = maps;
    Ok(Stats {
        since_ms,
        until_ms,
        total: c.total,
        allowed: c.allowed,
        blocked: c.blocked,
        allowlisted: c.allowlisted,
        flagged: c.flagged,
        cached: c.cached,
        rate_limited: c.rate_limited,
        blocked_share: if c.total == 0 {
            0.0
        } else {
            c.blocked as f64 / c.total as f64
        },
        avg_latency_us: if c.total == 0 {
            0.0
        } else {
            c.latency_sum_us as f64 / c.total as f64
        },
        top_domains: top(d, top_n),
        top_blocked: top(b, top_n),
        top_clients: top(cl, top_n),
    })
}

/// One bucket of a [`series`](crate::querylog::QueryLog::series): the summed
/// per-minute counters of `[start_ms, start_ms + bucket)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Start of the bucket (unix ms, a multiple of the bucket length).
    pub start_ms: u64,
    /// All queries.
    pub total: u64,
    /// Blocked queries.
    pub blocked: u64,
    /// Allowed queries.
    pub allowed: u64,
    /// Allowlisted queries.
    pub allowlisted: u64,
    /// Tunnel-flagged queries.
    pub flagged: u64,
    /// Answered from the cache.
    pub cached: u64,
}

/// Counts of `[since_ms, until_ms)` in buckets of `bucket_minutes` minutes (at
/// least 1), every bucket present (zeros where nothing was logged), from the
/// per-minute aggregates only: a day in 5-minute buckets reads 1,440 small
/// records, never an entry. At most `MAX_SERIES_POINTS` buckets.
pub(crate) fn series(
    store: &dyn Store,
    since_ms: u64,
    until_ms: u64,
    bucket_minutes: u64,
) -> Result<Vec<SeriesPoint>, QueryLogError> {
    let bucket = bucket_minutes.max(1) * MINUTE_MS;
    if until_ms <= since_ms {
        return Ok(Vec::new());
    }
    let first = since_ms / bucket * bucket;
    let n = (until_ms - first).div_ceil(bucket) as usize;
    if n > MAX_SERIES_POINTS {
        return Err(QueryLogError::Parse(format!(
            "{n} buckets is too many (at most {MAX_SERIES_POINTS}); use longer buckets"
        )));
    }
    let mut out: Vec<SeriesPoint> = (0..n as u64)
        .map(|i| SeriesPoint {
            start_ms: first + i * bucket,
            ..SeriesPoint::default()
        })
        .collect();
    let start = minute_key(minute_of(since_ms));
    let end = minute_key(minute_of(until_ms - 1).saturating_add(MINUTE_MS));
    for kv in store.scan(&start, &end, false) {
        let (k, v) = kv.map_err(|e| QueryLogError::Store(e.0))?;
        let (_, minute, _) = decode_agg_key(&k)?;
        let c = MinuteCounts::decode(&v)?;
        let Some(p) = minute
            .checked_sub(first)
            .and_then(|d| out.get_mut((d / bucket) as usize))
        else {
            continue;
        };
        p.total += c.total;
        p.blocked += c.blocked;
        p.allowed += c.allowed;
        p.allowlisted += c.allowlisted;
        p.flagged += c.flagged;
        p.cached += c.cached;
    }
    Ok(out)
}

/// Upper bound on the buckets of one [`series`] call.
pub const MAX_SERIES_POINTS: usize = 2000;
