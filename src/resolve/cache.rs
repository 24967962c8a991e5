//! The answer cache: positive and negative answers kept for their TTL (clamped to
//! the configured bounds), bounded by entry count, and kept past expiry for
//! serve-stale (RFC 8767) when every upstream fails.
//!
//! Sharded mutexes keep contention low; eviction is CLOCK (FIFO with a second chance
//! for entries read since they were queued), which approximates LRU cheaply. A
//! lookup hashes its key once: the hash picks the shard and is the shard map's key.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use parking_lot::RwLock;

use serde::Deserialize;

use super::Answer;
use super::body::Body;

const SHARDS: usize = 64;
/// `[cache]`: answers kept between queries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Most answers kept; the least recently used beyond this are evicted. 0 disables the cache.
    /// Each entry costs about 1 KB of memory (measured: 100,000 entries ≈ 100 MB resident).
    pub max_entries: usize,
    /// TTLs shorter than this are raised to it (seconds).
    pub min_ttl: u32,
    /// TTLs longer than this are cut to it (seconds).
    pub max_ttl: u32,
    /// Negative answers (NXDOMAIN, NODATA) are kept at most this long (seconds).
    pub max_negative_ttl: u32,
    /// When every upstream fails, answer from expired entries (RFC 8767).
    pub serve_stale: bool,
    /// How long after expiry an entry may still be served stale (seconds).
    pub stale_max_age: u32,
    /// TTL given to a stale answer (RFC 8767 recommends 30 s).
    pub stale_answer_ttl: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            min_ttl: 0,
            max_ttl: 86_400,
            max_negative_ttl: 3_600,
            serve_stale: true,
            stale_max_age: 86_400,
            stale_answer_ttl: 30,
        }
    }
}

/// Longest name text a key holds (253 characters, more with `\DDD` escapes).
const MAX_KEY: usize = 300;

/// What a cached answer is filed under: the query name as text (lower case, no
/// trailing dot), the type, the DO bit (those answers carry RRSIGs) and the CD bit
/// (those answers were not validated: a CD client's bogus data must never reach a
/// client that relies on validation), packed on the stack so a lookup allocates
/// nothing.
pub struct Key {
    buf: [u8; MAX_KEY + 3],
    len: usize,
}

impl Key {
    /// The key for `name`/`qtype` asked with these DO and CD bits; `None` for names
    /// too long to cache.
    pub fn new(name: &str, qtype: u16, dnssec_ok: bool, checking_disabled: bool) -> Option<Key> {
        let n = name.len();
        if n > MAX_KEY {
            return None;
        }
        let mut buf = [0u8; MAX_KEY + 3];
        buf[..n].copy_from_slice(name.as_bytes());
        buf[n..n + 2].copy_from_slice(&qtype.to_be_bytes());
        buf[n + 2] = u8::from(dnssec_ok) | u8::from(checking_disabled) << 1;
        Some(Key { buf, len: n + 3 })
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The name part, for logs.
    pub fn name(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len - 3]).unwrap_or("")
    }
}

/// A cached answer, shared by every hit: its records in wire form (for the UDP
/// fast path, and parsed back into records when the hickory front end needs
/// them), and what the per-client checks after the cache need (CNAME targets for
/// cloaking, addresses for rebinding), worked out once when the answer arrives
/// rather than on every hit. Keeping wire bytes instead of hickory records makes
/// an entry a few hundred bytes instead of a few kilobytes.
#[derive(Debug)]
pub struct Cached {
    /// The response code (NOERROR or NXDOMAIN once cached).
    pub rcode: ResponseCode,
    /// Every record was DNSSEC-validated (the AD bit).
    pub authentic: bool,
    /// The answer section holds records (not a negative answer).
    pub has_answers: bool,
    /// How long the answer may be kept ([`Answer::ttl`]).
    ttl: Option<u32>,
    records: Records,
    /// The query-log summary of the answer.
    pub summary: Arc<str>,
    /// CNAME targets in the answer, as name text.
    pub cname_targets: Box<[Box<str>]>,
    /// A and AAAA addresses in the answer, with their record TTLs.
    pub addrs: Box<[(IpAddr, u32)]>,
}

/// The records of a cached answer.
#[derive(Debug)]
enum Records {
    /// Answer and authority sections as they follow the question.
    Wire(Body),
    /// Records hickory could not encode, kept as they are.
    Parsed(Answer),
}

impl Cached {
    /// Works out everything a hit needs from an upstream `answer` to `qname`/`qtype`.
    pub fn new(answer: &Answer, qname: &Name, qtype: RecordType) -> Cached {
        let records = match Body::encode(answer, qname, qtype) {
            Some(body) => Records::Wire(body),
            None => Records::Parsed(answer.clone()),
        };
        Cached {
            rcode: answer.rcode,
            authentic: answer.authentic,
            has_answers: !answer.answers.is_empty(),
            ttl: answer.ttl(),
            records,
            summary: Arc::from(answer.summary()),
            cname_targets: answer
                .cname_targets()
                .map(|n| crate::name::name_text(n).into_boxed_str())
                .collect(),
            addrs: answer.addresses().collect(),
        }
    }

    /// The wire form, when the records could be encoded.
    pub fn wire(&self) -> Option<&Body> {
        match &self.records {
            Records::Wire(body) => Some(body),
            Records::Parsed(_) => None,
        }
    }

    /// The answer with its stored TTLs, as the reply to `qname`/`qtype` (the
    /// question it was cached for, in any letter case).
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Answer {
        let (answers, authorities) = match &self.records {
            Records::Parsed(a) => (a.answers.clone(), a.authorities.clone()),
            // The bytes were made by `Body::encode`; if they ever failed to parse
            // the answer is served empty with its rcode, never a panic.
            Records::Wire(body) => body.records(qname, qtype).unwrap_or_default(),
        };
        Answer {
            rcode: self.rcode,
            answers,
            authorities,
            authentic: self.authentic,
        }
    }

    /// A copy with every record TTL passed through `f`.
    fn map_ttls(&self, f: impl Fn(u32) -> u32) -> Cached {
        let records = match &self.records {
            Records::Wire(body) => Records::Wire(body.map_ttls(&f)),
            Records::Parsed(a) => {
                let mut a = a.clone();
                for r in a.answers.iter_mut().chain(a.authorities.iter_mut()) {
                    r.ttl = f(r.ttl);
                }
                Records::Parsed(a)
            }
        };
        Cached {
            rcode: self.rcode,
            authentic: self.authentic,
            has_answers: self.has_answers,
            ttl: self.ttl,
            records,
            summary: self.summary.clone(),
            cname_targets: self.cname_targets.clone(),
            addrs: self.addrs.iter().map(|&(ip, t)| (ip, f(t))).collect(),
        }
    }
}

struct Entry {
    /// The key's bytes: two keys with one hash never share an answer.
    key: Box<[u8]>,
    cached: Arc<Cached>,
    stored: Instant,
    ttl: u32,
    generation: u64,
    used: AtomicBool,
}

#[derive(Default)]
struct Shard {
    /// Entries by their key's hash, which the lookup already made to pick the
    /// shard (the map does not hash it again). Of two keys with one hash, the
    /// later insert replaces the other.
    map: HashMap<u64, Entry, BuildHasherDefault<Prehashed>>,
    /// (key hash, generation) in insertion order, for eviction.
    queue: VecDeque<(u64, u64)>,
    generation: u64,
}

/// The map's hasher: its keys are hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are `u64`); anything else still hashes.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, h: u64) {
        self.0 = h;
    }
}

/// A bounded, TTL-honouring DNS answer cache.
pub struct Cache {
    shards: Vec<RwLock<Shard>>,
    hasher: foldhash::fast::FixedState,
    per_shard: usize,
    cfg: CacheConfig,
}

/// A cache hit: the shared entry, the time it has left, and whether it is stale.
pub struct Hit {
    /// The cached answer with its stored TTLs.
    pub cached: Arc<Cached>,
    /// Seconds left (for a stale hit, the TTL stale answers are served with).
    pub ttl_left: u32,
    /// The entry had expired and is served because upstreams failed.
    pub stale: bool,
}

impl Hit {
    /// The TTL a record stored with `stored` is sent with: counted down to the
    /// time left, or for a stale answer the stale TTL on every record (RFC 8767).
    /// Both encoders ask this.
    pub fn ttl(&self, stored: u32) -> u32 {
        if self.stale {
            self.ttl_left
        } else {
            stored.min(self.ttl_left)
        }
    }

    /// The answer to `qname`/`qtype` with its TTLs as [`Hit::ttl`] gives them.
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Answer {
        let mut answer = self.cached.answer(qname, qtype);
        for r in answer
            .answers
            .iter_mut()
            .chain(answer.authorities.iter_mut())
        {
            r.ttl = self.ttl(r.ttl);
        }
        answer
    }
}

impl Cache {
    /// A cache configured by `[cache]`.
    pub fn new(cfg: &CacheConfig) -> Self {
        let per_shard = cfg.max_entries.div_ceil(SHARDS);
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            hasher: foldhash::fast::FixedState::with_seed(rand_seed()),
            per_shard,
            cfg: cfg.clone(),
        }
    }

    /// The key's hash, and the shard it picks.
    fn shard(&self, key: &[u8]) -> (u64, &RwLock<Shard>) {
        let h = self.hasher.hash_one(key);
        (h, &self.shards[(h >> 32) as usize % SHARDS])
    }

    /// A fresh answer for `key` at `now` (the query's arrival: no clock read per
    /// lookup), if one is cached.
    pub fn get(&self, key: &Key, now: Instant) -> Option<Hit> {
        self.lookup(key, now, false)
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
        let (h, shard) = self.shard(key.bytes());
        let shard = shard.read();
        let entry = shard.map.get(&h).filter(|e| *e.key == *key.bytes())?;
        let age = now.saturating_duration_since(entry.stored).as_secs();
        let age = u32::try_from(age).unwrap_or(u32::MAX);
        let (ttl_left, stale) = if age < entry.ttl {
            (entry.ttl - age, false)
        } else if allow_stale && age - entry.ttl <= self.cfg.stale_max_age {
            (self.cfg.stale_answer_ttl, true)
        } else {
            return None;
        };
        if !entry.used.load(Ordering::Relaxed) {
            entry.used.store(true, Ordering::Relaxed);
        }
        Some(Hit {
            cached: entry.cached.clone(),
            ttl_left,
            stale,
        })
    }

    /// Stores an upstream answer (NOERROR or NXDOMAIN only; a negative answer needs
    /// its SOA to be cached, RFC 2308), with TTLs clamped to the configured bounds.
    pub fn insert(&self, key: &Key, resolved: &Cached) {
        if self.per_shard == 0 {
            return;
        }
        let negative = resolved.rcode == ResponseCode::NXDomain || !resolved.has_answers;
        if !matches!(
            resolved.rcode,
            ResponseCode::NoError | ResponseCode::NXDomain
        ) {
            return;
        }
        let Some(ttl) = resolved.ttl else { return };
        let mut ttl = ttl.clamp(self.cfg.min_ttl, self.cfg.max_ttl);
        if negative {
            ttl = ttl.min(self.cfg.max_negative_ttl);
        }
        if ttl == 0 {
            return;
        }
        let min_ttl = self.cfg.min_ttl;
        let stored = Arc::new(resolved.map_ttls(|t| t.clamp(min_ttl, ttl.max(min_ttl))));
        let (h, shard) = self.shard(key.bytes());
        let mut shard = shard.write();
        shard.generation += 1;
        let generation = shard.generation;
        shard.queue.push_back((h, generation));
        shard.map.insert(
            h,
            Entry {
                key: key.bytes().into(),
                cached: stored,
                stored: Instant::now(),
                ttl,
                generation,
                used: AtomicBool::new(false),
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
                Some(e) if e.generation == generation && e.used.load(Ordering::Relaxed) => {
                    e.used.store(false, Ordering::Relaxed);
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
        self.shards.iter().map(|s| s.read().map.len()).sum()
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
            let mut s = shard.write();
            s.map.retain(|_, e| {
                now.saturating_duration_since(e.stored)
                    < Duration::from_secs(u64::from(e.ttl)) + keep_for
            });
        }
    }
}

/// A per-process hash seed, so clients cannot aim queries at one shard.
fn rand_seed() -> u64 {
    use std::hash::RandomState;
    RandomState::new().hash_one(0x5eed_u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{RData, Record};

    fn key(n: &str) -> Key {
        Key::new(n.trim_end_matches('.'), 1, false, false).unwrap()
    }

    fn name(n: &str) -> Name {
        Name::from_ascii(n).unwrap()
    }

    fn insert(c: &Cache, n: &str, answer: Answer) {
        let name = Name::from_ascii(n).unwrap();
        c.insert(&key(n), &Cached::new(&answer, &name, RecordType::A));
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
    fn entries_keep_wire_bytes_and_give_back_the_same_records() {
        use hickory_proto::rr::rdata::CNAME;
        let c = Cache::new(&CacheConfig::default());
        let mut a = Answer::empty(ResponseCode::NoError);
        a.answers.push(Record::from_rdata(
            name("www.example."),
            300,
            RData::CNAME(CNAME(name("edge.cdn.example."))),
        ));
        a.answers.push(Record::from_rdata(
            name("edge.cdn.example."),
            60,
            RData::A(A::new(192, 0, 2, 7)),
        ));
        a.authentic = true;
        let cached = Cached::new(&a, &name("www.example."), RecordType::A);
        assert!(cached.wire().is_some(), "stored as wire bytes");
        assert_eq!(&*cached.cname_targets[0], "edge.cdn.example");
        c.insert(&key("www.example."), &cached);
        // Asked again in another letter case: the same records, names included.
        let back = c
            .get(&key("www.example."), Instant::now())
            .unwrap()
            .answer(&name("WWW.Example."), RecordType::A);
        assert_eq!(back.rcode, ResponseCode::NoError);
        assert!(back.authentic);
        assert_eq!(back.answers.len(), 2);
        assert_eq!(back.answers[0].data, a.answers[0].data);
        assert_eq!(back.answers[1], a.answers[1]);
        assert!(back.answers[0].name.eq_case(&name("WWW.Example.")));
        assert!(back.answers[1].ttl <= 60);
    }

    #[test]
    fn clamps_ttls() {
        let cfg = CacheConfig {
            min_ttl: 60,
            max_ttl: 600,
            ..CacheConfig::default()
        };
        let c = Cache::new(&cfg);
        insert(&c, "short.example.", a_answer("short.example.", 5));
        insert(&c, "long.example.", a_answer("long.example.", 90_000));
        assert_eq!(
            c.get(&key("short.example."), Instant::now())
                .unwrap()
                .answer(&name("short.example."), RecordType::A)
                .answers[0]
                .ttl,
            60
        );
        assert_eq!(
            c.get(&key("long.example."), Instant::now())
                .unwrap()
                .answer(&name("long.example."), RecordType::A)
                .answers[0]
                .ttl,
            600
        );
    }

    #[test]
    fn negative_needs_soa_and_is_capped() {
        let c = Cache::new(&CacheConfig {
            max_negative_ttl: 100,
            ..CacheConfig::default()
        });
        insert(&c, "nosoa.example.", Answer::empty(ResponseCode::NXDomain));
        assert!(c.get(&key("nosoa.example."), Instant::now()).is_none());
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
        insert(&c, "nx.example.", nx);
        let hit = c
            .get(&key("nx.example."), Instant::now())
            .unwrap()
            .answer(&name("nx.example."), RecordType::A);
        assert_eq!(hit.rcode, ResponseCode::NXDomain);
        assert_eq!(hit.authorities[0].ttl, 100);
        insert(&c, "fail.example.", Answer::empty(ResponseCode::ServFail));
        assert!(c.get(&key("fail.example."), Instant::now()).is_none());
    }

    #[test]
    fn bounded_and_keeps_recently_used() {
        let c = Cache::new(&CacheConfig {
            max_entries: SHARDS * 4,
            ..CacheConfig::default()
        });
        insert(&c, "hot.example.", a_answer("hot.example.", 300));
        for i in 0..1000 {
            let n = format!("n{i}.example.");
            insert(&c, &n, a_answer(&n, 300));
            assert!(
                c.get(&key("hot.example."), Instant::now()).is_some(),
                "hot entry evicted at {i}"
            );
        }
        assert!(c.len() <= SHARDS * 4);
    }

    #[test]
    fn an_entry_under_another_keys_hash_is_not_its_answer() {
        let c = Cache::new(&CacheConfig::default());
        insert(&c, "a.example.", a_answer("a.example.", 300));
        // Two keys with one hash: file a.example's entry where b.example's
        // lookup finds it (its shard, its hash).
        let (ha, sa) = c.shard(key("a.example.").bytes());
        let (hb, sb) = c.shard(key("b.example.").bytes());
        let entry = sa.write().map.remove(&ha).unwrap();
        sb.write().map.insert(hb, entry);
        assert!(c.get(&key("b.example."), Instant::now()).is_none());
        // Its own key still finds it where it is filed.
        let entry = sb.write().map.remove(&hb).unwrap();
        sa.write().map.insert(ha, entry);
        assert!(c.get(&key("a.example."), Instant::now()).is_some());
    }

    #[test]
    fn a_lookup_counts_the_ttl_down_from_the_time_it_is_given() {
        let c = Cache::new(&CacheConfig::default());
        insert(&c, "t.example.", a_answer("t.example.", 300));
        let now = Instant::now();
        let later = |s| now + Duration::from_secs(s);
        assert_eq!(c.get(&key("t.example."), later(100)).unwrap().ttl_left, 200);
        assert!(c.get(&key("t.example."), later(301)).is_none());
    }

    #[test]
    fn disabled_cache_stores_nothing() {
        let c = Cache::new(&CacheConfig {
            max_entries: 0,
            ..CacheConfig::default()
        });
        insert(&c, "a.example.", a_answer("a.example.", 300));
        assert!(c.get(&key("a.example."), Instant::now()).is_none());
    }
}
