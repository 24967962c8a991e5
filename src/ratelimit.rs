//! Per-client response-rate limiting (RRL), after BIND's: clients are grouped by
//! network prefix (IPv4 /24 and IPv6 /56 by default), each prefix has a token
//! bucket, and a response over the limit is either dropped or "slipped": sent as an
//! empty truncated (TC=1) answer, so a real client retries over TCP (which cannot be
//! spoofed) while a spoofed victim of a reflection attack gets only small packets.
//!
//! It sits on the per-query hot path, so [`RateLimiter::check`] takes `&self`, never
//! allocates, and locks only one small bucket of a fixed-size table (one
//! `parking_lot` mutex per bucket of [`WAYS`] entries; no global lock). Memory is
//! bounded by `table_size`: when a bucket is full, the prefix seen least recently
//! in it is forgotten (it then starts again with a full burst, which errs on the
//! side of answering).
//!
//! Defaults, and why they differ from BIND's (`responses-per-second` is usually
//! 5–20 on authoritative servers): dnsguard is a recursive resolver for a network's
//! own clients, and a whole home or office behind one NAT or in one /24 shares a
//! bucket. AdGuard Home limits 20 queries/s per /24 and its users hit that limit
//! with ordinary browsing; Pi-hole allows 1,000 queries per minute per client. So
//! the default is 500 responses/s per prefix with a burst of 1,000 — far above what
//! real clients do, far below what a flood or a reflection attack sends. Loopback
//! clients (local processes; their source address cannot be spoofed from outside)
//! are exempt by default.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::time::Instant;

use ipnet::IpNet;
use parking_lot::Mutex;
use serde::Deserialize;

/// Entries per bucket of the table; a bucket is scanned linearly under its lock.
pub const WAYS: usize = 4;

/// `[server.rate_limit]`: per-client response-rate limiting.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Limit at all. Default `true`.
    pub enabled: bool,
    /// Sustained responses per second allowed per client prefix. Default 500.
    pub responses_per_second: u32,
    /// Responses a prefix may send at once after being quiet (bucket size).
    /// Default 1000.
    pub burst: u32,
    /// Of the responses over the limit, every `slip`-th is sent as an empty TC=1
    /// answer and the others are dropped (BIND's `slip`): 0 = always drop,
    /// 1 = always slip. Default 2.
    pub slip: u32,
    /// IPv4 clients in the same prefix of this length share a bucket. Default 24.
    pub ipv4_prefix: u8,
    /// IPv6 clients in the same prefix of this length share a bucket. Default 56.
    pub ipv6_prefix: u8,
    /// Client networks never limited. Default loopback (`127.0.0.0/8`, `::1/128`).
    pub exempt_clients: Vec<IpNet>,
    /// Number of prefixes tracked at once (memory: about 48 bytes each); the least
    /// recently seen prefix of a full bucket is forgotten. Default 65536.
    pub table_size: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            responses_per_second: 500,
            burst: 1000,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt_clients: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            table_size: 65536,
        }
    }
}

impl RateLimitConfig {
    /// Checks the values; returns (key, message) of the first problem, as the
    /// configuration's validation reports it.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((format!("server.rate_limit.{k}"), m));
        if self.ipv4_prefix > 32 {
            return bad("ipv4_prefix", format!("{} is over 32", self.ipv4_prefix));
        }
        if self.ipv6_prefix > 128 {
            return bad("ipv6_prefix", format!("{} is over 128", self.ipv6_prefix));
        }
        if !self.enabled {
            return Ok(());
        }
        if self.responses_per_second == 0 {
            return bad(
                "responses_per_second",
                "must be at least 1 (set enabled = false to turn limiting off)".into(),
            );
        }
        if self.burst == 0 {
            return bad("burst", "must be at least 1".into());
        }
        if self.table_size < WAYS || self.table_size > 1 << 24 {
            return bad(
                "table_size",
                format!("{} is out of range {WAYS}..={}", self.table_size, 1 << 24),
            );
        }
        Ok(())
    }
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within the limit: answer normally.
    Answer,
    /// Over the limit: send an empty response with TC=1 (same ID and question), so
    /// a real client retries over TCP.
    Slip,
    /// Over the limit: send nothing.
    Drop,
}

/// One tracked prefix.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Masked address; IPv4 as an IPv4-mapped IPv6 address.
    key: u128,
    /// `true` once the slot holds a prefix.
    used: bool,
    /// Responses the prefix may still send now (at most the burst).
    tokens: f64,
    /// When the bucket was last refilled (ns since the limiter's epoch).
    last_ns: u64,
    /// Responses over the limit so far (drives the slip ratio).
    limited: u32,
}

/// A per-prefix token-bucket limiter; see the module docs. Share it behind an
/// `Arc`; every method takes `&self`.
pub struct RateLimiter {
    enabled: bool,
    /// Tokens added per nanosecond.
    per_ns: f64,
    burst: f64,
    slip: u32,
    v4_mask: u128,
    v6_mask: u128,
    exempt: crate::netset::NetSet,
    seed: std::hash::RandomState,
    epoch: Instant,
    buckets: Box<[Mutex<[Slot; WAYS]>]>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("enabled", &self.enabled)
            .field("per_ns", &self.per_ns)
            .field("burst", &self.burst)
            .field("slip", &self.slip)
            .field("buckets", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter with all of its table allocated up front. Out-of-range values are
    /// clamped (prefix lengths to 32/128, the table to at least one bucket);
    /// [`RateLimitConfig::validate`] reports them to the operator.
    pub fn new(cfg: &RateLimitConfig) -> Self {
        let n_buckets = (cfg.table_size / WAYS).clamp(1, (1 << 24) / WAYS);
        let v4 = u32::from(cfg.ipv4_prefix.min(32));
        let v6 = u32::from(cfg.ipv6_prefix.min(128));
        Self {
            enabled: cfg.enabled && cfg.responses_per_second > 0,
            per_ns: f64::from(cfg.responses_per_second) / 1e9,
            burst: f64::from(cfg.burst.max(1)),
            slip: cfg.slip,
            // An IPv4 address is stored mapped (96 bits of prefix), so its mask
            // covers the top 96 bits plus the IPv4 prefix.
            v4_mask: prefix_mask(96 + v4),
            v6_mask: prefix_mask(v6),
            exempt: crate::netset::NetSet::new(&cfg.exempt_clients),
            seed: std::hash::RandomState::new(),
            epoch: Instant::now(),
            buckets: (0..n_buckets)
                .map(|_| Mutex::new([Slot::default(); WAYS]))
                .collect(),
        }
    }

    /// Decides what to do with one response to `client` at `now`. Takes one
    /// bucket lock; never allocates.
    pub fn check(&self, client: IpAddr, now: Instant) -> Decision {
        if !self.enabled {
            return Decision::Answer;
        }
        let client = client.to_canonical();
        if self.exempt.contains(client) {
            return Decision::Answer;
        }
        let key = self.key(client);
        let now_ns =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let mut h = self.seed.build_hasher();
        h.write_u128(key);
        let idx = (h.finish() % self.buckets.len() as u64) as usize;
        let mut bucket = self.buckets[idx].lock();

        let slot = match bucket.iter().position(|s| s.used && s.key == key) {
            Some(i) => &mut bucket[i],
            None => {
                // Forget the least recently refilled prefix (unused slots first).
                let victim = bucket
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| (s.used, s.last_ns))
                    .map_or(0, |(i, _)| i);
                bucket[victim] = Slot {
                    key,
                    used: true,
                    tokens: self.burst,
                    last_ns: now_ns,
                    limited: 0,
                };
                &mut bucket[victim]
            }
        };
        let elapsed = now_ns.saturating_sub(slot.last_ns);
        slot.tokens = (slot.tokens + elapsed as f64 * self.per_ns).min(self.burst);
        slot.last_ns = slot.last_ns.max(now_ns);
        if slot.tokens >= 1.0 {
            slot.tokens -= 1.0;
            return Decision::Answer;
        }
        slot.limited = slot.limited.wrapping_add(1);
        match self.slip {
            0 => Decision::Drop,
            n if slot.limited % n == 0 => Decision::Slip,
            _ => Decision::Drop,
        }
    }

    /// Prefixes currently tracked (at most [`RateLimiter::capacity`]). Walks the
    /// whole table: for tests and status pages, not the hot path.
    pub fn tracked(&self) -> usize {
        self.buckets
            .iter()
            .map(|b| b.lock().iter().filter(|s| s.used).count())
            .sum()
    }

    /// The most prefixes the table can hold.
    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    fn key(&self, client: IpAddr) -> u128 {
        match client {
            IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()) & self.v4_mask,
            // Never in ::ffff:0:0/96 (canonicalised to IPv4 above), so an IPv6 key
            // cannot equal an IPv4 one.
            IpAddr::V6(a) => u128::from(a) & self.v6_mask,
        }
    }
}

/// A mask with the top `len` bits set.
fn prefix_mask(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len.min(128))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cfg(rate: u32, burst: u32, slip: u32) -> RateLimitConfig {
        RateLimitConfig {
            responses_per_second: rate,
            burst,
            slip,
            exempt_clients: Vec::new(),
            ..RateLimitConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Counts the decisions for `n` responses to `client` at `at`.
    fn tally(l: &RateLimiter, client: IpAddr, at: Instant, n: usize) -> (usize, usize, usize) {
        let mut t = (0, 0, 0);
        for _ in 0..n {
            match l.check(client, at) {
                Decision::Answer => t.0 += 1,
                Decision::Slip => t.1 += 1,
                Decision::Drop => t.2 += 1,
            }
        }
        t
    }

    #[test]
    fn burst_then_limited() {
        let l = RateLimiter::new(&cfg(10, 25, 0));
        let t0 = Instant::now();
        assert_eq!(tally(&l, ip("192.0.2.1"), t0, 100), (25, 0, 75));
    }

    #[test]
    fn sustained_rate_is_honoured() {
        let l = RateLimiter::new(&cfg(100, 10, 0));
        let t0 = Instant::now();
        let c = ip("198.51.100.7");
        assert_eq!(tally(&l, c, t0, 10).0, 10, "burst");
        // Then 10 seconds of 1,000 queries/s: about 100/s get answers.
        let mut answered = 0;
        for ms in 1..=10_000u64 {
            let (a, _, _) = tally(&l, c, t0 + Duration::from_millis(ms), 1);
            answered += a;
        }
        assert!((990..=1010).contains(&answered), "answered {answered}");
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let l = RateLimiter::new(&cfg(100, 5, 0));
        let t0 = Instant::now();
        let c = ip("192.0.2.1");
        assert_eq!(tally(&l, c, t0, 5).0, 5);
        // An hour of silence refills to the burst, not to 360,000.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(tally(&l, c, later, 20), (5, 0, 15));
    }

    #[test]
    fn slip_ratio_like_bind() {
        let t0 = Instant::now();
        let c = ip("192.0.2.1");
        // slip 2: every other limited response slips.
        let l = RateLimiter::new(&cfg(1, 1, 2));
        assert_eq!(tally(&l, c, t0, 101), (1, 50, 50));
        // slip 1: every one slips.
        let l = RateLimiter::new(&cfg(1, 1, 1));
        assert_eq!(tally(&l, c, t0, 101), (1, 100, 0));
        // slip 0: none slips.
        let l = RateLimiter::new(&cfg(1, 1, 0));
        assert_eq!(tally(&l, c, t0, 101), (1, 0, 100));
        // slip 3: one in three.
        let l = RateLimiter::new(&cfg(1, 1, 3));
        assert_eq!(tally(&l, c, t0, 31), (1, 10, 20));
    }

    #[test]
    fn clients_share_their_prefix_bucket() {
        let l = RateLimiter::new(&cfg(1, 10, 0));
        let t0 = Instant::now();
        // Same /24: one bucket between them.
        assert_eq!(tally(&l, ip("192.0.2.1"), t0, 6).0, 6);
        assert_eq!(tally(&l, ip("192.0.2.200"), t0, 6).0, 4);
        // Next /24: its own bucket.
        assert_eq!(tally(&l, ip("192.0.3.1"), t0, 12).0, 10);
        // IPv6: same /56 shares, the next /56 does not.
        assert_eq!(tally(&l, ip("2001:db8:0:100::1"), t0, 6).0, 6);
        assert_eq!(tally(&l, ip("2001:db8:0:1ff:ffff::9"), t0, 6).0, 4);
        assert_eq!(tally(&l, ip("2001:db8:0:200::1"), t0, 12).0, 10);
        // An IPv4-mapped IPv6 address is the IPv4 client.
        assert_eq!(tally(&l, ip("::ffff:192.0.3.9"), t0, 1).0, 0);
    }

    #[test]
    fn prefix_lengths_are_configurable() {
        let mut c = cfg(1, 2, 0);
        c.ipv4_prefix = 32;
        c.ipv6_prefix = 128;
        let l = RateLimiter::new(&c);
        let t0 = Instant::now();
        assert_eq!(tally(&l, ip("192.0.2.1"), t0, 3).0, 2);
        assert_eq!(tally(&l, ip("192.0.2.2"), t0, 3).0, 2);
        assert_eq!(tally(&l, ip("2001:db8::1"), t0, 3).0, 2);
        assert_eq!(tally(&l, ip("2001:db8::2"), t0, 3).0, 2);
        // Prefix 0: everyone shares one bucket.
        c.ipv4_prefix = 0;
        let l = RateLimiter::new(&c);
        assert_eq!(tally(&l, ip("192.0.2.1"), t0, 1).0, 1);
        assert_eq!(tally(&l, ip("203.0.113.1"), t0, 2).0, 1);
    }

    #[test]
    fn ipv4_and_ipv6_keys_never_collide() {
        let mut c = cfg(1, 1, 0);
        c.ipv6_prefix = 0;
        c.ipv4_prefix = 0;
        let l = RateLimiter::new(&c);
        let t0 = Instant::now();
        assert_eq!(tally(&l, ip("192.0.2.1"), t0, 1).0, 1);
        assert_eq!(tally(&l, ip("2001:db8::1"), t0, 1).0, 1);
        assert_eq!(tally(&l, ip("::"), t0, 1).0, 0);
    }

    #[test]
    fn exempt_and_disabled_always_answer() {
        let mut c = RateLimitConfig {
            responses_per_second: 1,
            burst: 1,
            ..RateLimitConfig::default()
        };
        let l = RateLimiter::new(&c);
        let t0 = Instant::now();
        assert_eq!(tally(&l, ip("127.0.0.1"), t0, 100).0, 100);
        assert_eq!(tally(&l, ip("::1"), t0, 100).0, 100);
        assert_eq!(tally(&l, ip("::ffff:127.0.0.1"), t0, 100).0, 100);
        assert_eq!(tally(&l, ip("10.0.0.1"), t0, 100).0, 1);
        c.enabled = false;
        let l = RateLimiter::new(&c);
        assert_eq!(tally(&l, ip("10.0.0.1"), t0, 100).0, 100);
    }

    #[test]
    fn table_is_bounded_and_forgets_the_least_recent() {
        let mut c = cfg(1, 1, 0);
        c.table_size = 64;
        c.ipv4_prefix = 32;
        let l = RateLimiter::new(&c);
        assert_eq!(l.capacity(), 64);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.check(a, t0 + Duration::from_nanos(u64::from(i)));
            assert!(l.tracked() <= 64 || i % 1000 != 0);
        }
        assert_eq!(l.tracked(), 64);
        // An evicted prefix starts again with a full bucket.
        assert_eq!(
            tally(&l, ip("10.0.0.0"), t0 + Duration::from_secs(1), 1).0,
            1
        );
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let l = RateLimiter::new(&cfg(1000, 1, 0));
        let t0 = Instant::now() + Duration::from_secs(10);
        let c = ip("192.0.2.1");
        assert_eq!(tally(&l, c, t0, 1).0, 1);
        assert_eq!(tally(&l, c, t0 - Duration::from_secs(5), 5).0, 0);
        assert_eq!(tally(&l, c, t0, 5).0, 0);
    }

    #[test]
    fn shared_between_threads() {
        let l = std::sync::Arc::new(RateLimiter::new(&cfg(1, 1000, 0)));
        let t0 = Instant::now();
        let answered: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| tally(&l, ip("192.0.2.1"), t0, 1000).0))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(answered, 1000, "exactly the burst, across threads");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = RateLimitConfig::default();
        assert!(c.validate().is_ok());
        c.ipv4_prefix = 33;
        assert_eq!(c.validate().unwrap_err().0, "server.rate_limit.ipv4_prefix");
        c.ipv4_prefix = 24;
        c.responses_per_second = 0;
        assert_eq!(
            c.validate().unwrap_err().0,
            "server.rate_limit.responses_per_second"
        );
        c.enabled = false;
        assert!(c.validate().is_ok());
    }
}
