//! The answer cache: positive and negative answers kept for their TTL (clamped to
//! the configured bounds), bounded by entry count, and kept past expiry for
//! serve-stale (RFC 8767) when every upstream fails.
//!
//! Sharded mutexes keep contention low; eviction is CLOCK (FIFO with a second chance
//! for entries read since they were queued), which approximates LRU cheaply.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, RecordType};
use parking_lot::Mutex;

use super::Answer;
use crate::config::CacheConfig;

const SHARDS: usize = 16;

/// What a cached answer is filed under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Query name, lower-cased.
    pub name: LowerName,
    /// Query type.
    pub qtype: RecordType,
    /// The client asked for DNSSEC records (DO bit): those answers carry RRSIGs.
    pub dnssec_ok: bool,
}

struct Entry {
    answer: Answer,
    stored: Instant,
    ttl: u32,
    generation: u64,
    used: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Key, Entry>,
    queue: VecDeque<(Key, u64)>,
    generation: u64,
}

/// A bounded, TTL-honouring DNS answer cache.
pub struct Cache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    cfg: CacheConfig,
}

/// A cache hit: the answer with TTLs counted down, and whether it is stale.
pub struct Hit {
    /// The answer, TTLs adjusted to the time left.
    pub answer: Answer,
    /// The entry had expired and is served because upstreams failed.
    pub stale: bool,
}

impl Cache {
    /// A cache configured by `[cache]`.
    pub fn new(cfg: &CacheConfig) -> Self {
        let per_shard = cfg.max_entries.div_ceil(SHARDS);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            cfg: cfg.clone(),
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// A fresh answer for `key`, if one is cached.
    pub fn get(&self, key: &Key) -> Option<Hit> {
        self.lookup(key, Instant::now(), false)
    }

    /// An expired answer for `key` within `stale_max_age`, for when upstreams fail.
    pub fn get_stale(&self, key: &Key) -> Option<Hit> {
        if !self.cfg.serve_stale {
            return None;
        }
        self.lookup(key, Instant::now(), true)
    }

    fn lookup(&self, key: &Key, now: Instant, allow_stale: bool) -> Option<Hit> {
        if self.per_shard == 0 {
            return None;
        }
        let mut shard = self.shard(key).lock();
        let entry = shard.map.get_mut(key)?;
        let age = now.saturating_duration_since(entry.stored).as_secs();
        let age = u32::try_from(age).unwrap_or(u32::MAX);
        let (ttl, stale) = if age < entry.ttl {
            (entry.ttl - age, false)
        } else if allow_stale && age - entry.ttl <= self.cfg.stale_max_age {
            (self.cfg.stale_answer_ttl, true)
        } else {
            return None;
        };
        entry.used = true;
        let mut answer = entry.answer.clone();
        for r in answer
            .answers
            .iter_mut()
            .chain(answer.authorities.iter_mut())
        {
            r.ttl = r.ttl.min(ttl).max(if stale { ttl } else { 0 });
        }
        Some(Hit { answer, stale })
    }

    /// Stores an upstream answer (NOERROR or NXDOMAIN only; a negative answer needs
    /// its SOA to be cached, RFC 2308).
    pub fn insert(&self, key: Key, answer: &Answer) {
        if self.per_shard == 0 {
            return;
        }
        let negative = answer.rcode == ResponseCode::NXDomain || answer.answers.is_empty();
        if !matches!(answer.rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
            return;
        }
        let Some(ttl) = answer.ttl() else { return };
        let mut ttl = ttl.clamp(self.cfg.min_ttl, self.cfg.max_ttl);
        if negative {
            ttl = ttl.min(self.cfg.max_negative_ttl);
        }
        if ttl == 0 {
            return;
        }
        let mut stored = answer.clone();
        for r in stored
            .answers
            .iter_mut()
            .chain(stored.authorities.iter_mut())
        {
            r.ttl = r.ttl.clamp(self.cfg.min_ttl, ttl);
        }
        let mut shard = self.shard(&key).lock();
        shard.generation += 1;
        let generation = shard.generation;
        shard.queue.push_back((key.clone(), generation));
        shard.map.insert(
            key,
            Entry {
                answer: stored,
                stored: Instant::now(),
                ttl,
                generation,
                used: false,
            },
        );
        self.evict(&mut shard);
    }

    fn evict(&self, shard: &mut Shard) {
        let mut budget = shard.queue.len() * 2;
        while shard.map.len() > self.per_shard && budget > 0 {
            budget -= 1;
            let Some((key, generation)) = shard.queue.pop_front() else {
                break;
            };
            match shard.map.get_mut(&key) {
                Some(e) if e.generation == generation && e.used => {
                    e.used = false;
                    shard.queue.push_back((key, generation));
                }
                Some(e) if e.generation == generation => {
                    shard.map.remove(&key);
                }
                _ => {} // superseded by a newer insert of the same key
            }
        }
        if shard.queue.len() > 2 * self.per_shard + 16 {
            let Shard { map, queue, .. } = shard;
            queue.retain(|(k, g)| map.get(k).is_some_and(|e| e.generation == *g));
        }
    }

    /// Number of entries held (fresh and stale).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops entries more than `stale_max_age` past expiry; run periodically.
    pub fn purge_expired(&self) {
        let now = Instant::now();
        let keep_for = Duration::from_secs(u64::from(self.cfg.stale_max_age));
        for shard in &self.shards {
            let mut s = shard.lock();
            s.map.retain(|_, e| {
                now.saturating_duration_since(e.stored)
                    < Duration::from_secs(u64::from(e.ttl)) + keep_for
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record};

    fn key(n: &str) -> Key {
        Key {
            name: LowerName::new(&Name::from_ascii(n).unwrap()),
            qtype: RecordType::A,
            dnssec_ok: false,
        }
    }

    fn a_answer(n: &str, ttl: u32) -> Answer {
        let mut a = Answer::empty(ResponseCode::NoError);
        a.answers.push(Record::from_rdata(
            Name::from_ascii(n).unwrap(),
            ttl,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        a
    }

    #[test]
    fn clamps_ttls() {
        let cfg = CacheConfig {
            min_ttl: 60,
            max_ttl: 600,
            ..CacheConfig::default()
        };
        let c = Cache::new(&cfg);
        c.insert(key("short.example."), &a_answer("short.example.", 5));
        c.insert(key("long.example."), &a_answer("long.example.", 90_000));
        assert_eq!(
            c.get(&key("short.example.")).unwrap().answer.answers[0].ttl,
            60
        );
        assert_eq!(
            c.get(&key("long.example.")).unwrap().answer.answers[0].ttl,
            600
        );
    }

    #[test]
    fn negative_needs_soa_and_is_capped() {
        let c = Cache::new(&CacheConfig {
            max_negative_ttl: 100,
            ..CacheConfig::default()
        });
        c.insert(
            key("nosoa.example."),
            &Answer::empty(ResponseCode::NXDomain),
        );
        assert!(c.get(&key("nosoa.example.")).is_none());
        let mut nx = Answer::empty(ResponseCode::NXDomain);
        let soa = SOA::new(
            Name::from_ascii("example.").unwrap(),
            Name::from_ascii("h.example.").unwrap(),
            1,
            1,
            1,
            1,
            3000,
        );
        nx.authorities.push(Record::from_rdata(
            Name::from_ascii("example.").unwrap(),
            3000,
            RData::SOA(soa),
        ));
        c.insert(key("nx.example."), &nx);
        let hit = c.get(&key("nx.example.")).unwrap();
        assert_eq!(hit.answer.rcode, ResponseCode::NXDomain);
        assert_eq!(hit.answer.authorities[0].ttl, 100);
        c.insert(key("fail.example."), &Answer::empty(ResponseCode::ServFail));
        assert!(c.get(&key("fail.example.")).is_none());
    }

    #[test]
    fn bounded_and_keeps_recently_used() {
        let c = Cache::new(&CacheConfig {
            max_entries: SHARDS * 4,
            ..CacheConfig::default()
        });
        c.insert(key("hot.example."), &a_answer("hot.example.", 300));
        for i in 0..1000 {
            let n = format!("n{i}.example.");
            c.insert(key(&n), &a_answer(&n, 300));
            assert!(
                c.get(&key("hot.example.")).is_some(),
                "hot entry evicted at {i}"
            );
        }
        assert!(c.len() <= SHARDS * 4);
    }

    #[test]
    fn disabled_cache_stores_nothing() {
        let c = Cache::new(&CacheConfig {
            max_entries: 0,
            ..CacheConfig::default()
        });
        c.insert(key("a.example."), &a_answer("a.example.", 300));
        assert!(c.get(&key("a.example.")).is_none());
    }
}
