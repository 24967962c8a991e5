//! The (client, registrable domain) pairs already seen, for new-domain alerts:
//! one alert per pair, ever, across restarts.
//!
//! The pairs live in a sled database (`DATA_DIR/guard`, tree `seen`, key
//! `"<client> <domain>"`, the client an address or `client:NAME` ([`Who`]), value
//! the first-use time); the guard thread keeps a
//! bounded in-memory set of their fingerprints in front of it, loaded at start.
//! When the memory set is full it is cleared and refilled from use (sled stays
//! the authority). When the database holds `max_seen` pairs no new pair is
//! recorded and no new-domain alert is raised (a warning says so once): an alert
//! storm of repeats would be worse than silence.
//!
//! When the database cannot be opened (a read-only or full disk),
//! [`Seen::memory_only`] keeps the pairs in memory alone: alerts work, but a
//! restart forgets what was seen.
//!
//! For a highly available pair (`web::cluster::seen`) the set also keeps the
//! log of the pairs this node alerted on (tree `alerted`, key a rising sequence
//! number), which its peer reads from a cursor, and takes the peer's pairs with
//! [`Seen::merge`] (recorded as seen, not logged, no alert).

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::Who;

/// Fingerprints kept in memory at most.
const MEMORY_ENTRIES: usize = 200_000;

/// A failure of the seen-set database.
#[derive(Debug, thiserror::Error)]
pub enum SeenError {
    /// sled could not open, read or write.
    #[error("seen-domain database {path}: {message}")]
    Db {
        /// The database directory.
        path: String,
        /// sled's message.
        message: String,
    },
}

/// One entry of the log of alerted pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alerted {
    /// Its place in the log (rising).
    pub seq: u64,
    /// When the pair was first used.
    pub time_ms: u64,
    /// The pair as the database keys it (`"<client> <domain>"`).
    pub key: String,
}

/// The persistent seen set.
pub struct Seen {
    /// The database, unless the set lives in memory only.
    disk: Option<(sled::Db, sled::Tree)>,
    /// The log of alerted pairs: sled, or memory for a memory-only set.
    log: Log,
    /// The sequence number of the newest log entry (waited on by the peer's pull).
    logged: tokio::sync::watch::Sender<u64>,
    path: String,
    memory: Mutex<HashSet<u64>>,
    count: AtomicU64,
    max: u64,
    full_warned: AtomicBool,
}

fn fingerprint(client: Who<'_>, domain: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    client.hash(&mut h);
    domain.hash(&mut h);
    h.finish()
}

fn key(client: Who<'_>, domain: &str) -> Vec<u8> {
    format!("{client} {domain}").into_bytes()
}

/// The client and domain of a database key, if it is a well-formed one.
pub fn parse_key(key: &str) -> Option<(Who<'_>, &str)> {
    let (client, domain) = key.rsplit_once(' ')?;
    let client = Who::parse(client)?;
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain.bytes().all(|b| b.is_ascii_graphic() || b >= 0x80);
    valid.then_some((client, domain))
}

/// Where the log of alerted pairs lives.
enum Log {
    /// The database and its `alerted` tree.
    Disk(sled::Db, sled::Tree),
    /// Sequence numbers and entries, oldest first, bounded like the memory set.
    Memory(Mutex<(u64, VecDeque<Alerted>)>),
}

/// A log value: the first-use time, then the key.
fn log_value(time_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + key.len());
    v.extend_from_slice(&time_ms.to_be_bytes());
    v.extend_from_slice(key);
    v
}

impl Seen {
    /// Opens (creating) the database in `dir` and loads up to the memory bound of
    /// fingerprints. `max` bounds the pairs stored on disk.
    pub fn open(dir: &Path, max: u64) -> Result<Seen, SeenError> {
        let path = dir.display().to_string();
        let err = |e: sled::Error| SeenError::Db {
            path: path.clone(),
            message: e.to_string(),
        };
        // A small cache: the guard thread touches the tree only on memory-set misses.
        let config = sled::Config::new().cache_capacity(16 * 1024 * 1024);
        let db = crate::querylog::store::open_sled("guard-open", dir, config).map_err(|e| {
            SeenError::Db {
                path: path.clone(),
                message: e.to_string(),
            }
        })?;
        let tree = db.open_tree("seen").map_err(err)?;
        let mut memory = HashSet::new();
        let mut count = 0u64;
        for kv in tree.iter() {
            let (k, _) = kv.map_err(err)?;
            count += 1;
            if memory.len() < MEMORY_ENTRIES
                && let Some((client, domain)) = std::str::from_utf8(&k).ok().and_then(parse_key)
            {
                memory.insert(fingerprint(client, domain));
            }
        }
        tracing::debug!(pairs = count, "seen-domain set loaded");
        let log = db.open_tree("alerted").map_err(err)?;
        let last = match log.last().map_err(err)? {
            Some((k, _)) => k.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0),
            None => 0,
        };
        Ok(Seen {
            disk: Some((db.clone(), tree)),
            log: Log::Disk(db, log),
            logged: tokio::sync::watch::Sender::new(last),
            path,
            memory: Mutex::new(memory),
            count: AtomicU64::new(count),
            max,
            full_warned: AtomicBool::new(false),
        })
    }

    /// A set kept in memory only (at most `max` pairs, and no more than the
    /// memory bound), for when the database in `dir` cannot be used.
    pub fn memory_only(dir: &Path, max: u64) -> Seen {
        Seen {
            disk: None,
            log: Log::Memory(Mutex::new((0, VecDeque::new()))),
            logged: tokio::sync::watch::Sender::new(0),
            path: dir.display().to_string(),
            memory: Mutex::new(HashSet::new()),
            count: AtomicU64::new(0),
            max: max.min(MEMORY_ENTRIES as u64),
            full_warned: AtomicBool::new(false),
        }
    }

    /// Records that `client` used `domain` at `time_ms`; true when that is the
    /// first use ever (the caller raises the alert).
    pub fn first_use(
        &self,
        client: Who<'_>,
        domain: &str,
        time_ms: u64,
    ) -> Result<bool, SeenError> {
        self.record(fingerprint(client, domain), key(client, domain), time_ms)
    }

    /// Records a pair the peer node has seen (a database key, see [`parse_key`]);
    /// true when it was new here. A merged pair raises no alert and is not
    /// logged: it never goes back to the peer.
    pub fn merge(&self, key: &str, time_ms: u64) -> Result<bool, SeenError> {
        let Some((client, domain)) = parse_key(key) else {
            return Ok(false);
        };
        self.record(
            fingerprint(client, domain),
            key.as_bytes().to_vec(),
            time_ms,
        )
    }

    /// Adds `fp`/`k` unless it is known or the set is full; true when added.
    fn record(&self, fp: u64, k: Vec<u8>, time_ms: u64) -> Result<bool, SeenError> {
        let mut memory = self.memory.lock();
        if memory.contains(&fp) {
            return Ok(false);
        }
        let err = |e: sled::Error| SeenError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        };
        if memory.len() >= MEMORY_ENTRIES && self.disk.is_some() {
            memory.clear();
        }
        if let Some((_, tree)) = &self.disk
            && tree.contains_key(&k).map_err(err)?
        {
            memory.insert(fp);
            return Ok(false);
        }
        if self.count.load(Ordering::Relaxed) >= self.max {
            if !self.full_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max = self.max,
                    "the seen-domain set is full (alerts.max_seen); no more new-domain alerts"
                );
            }
            return Ok(false);
        }
        if let Some((_, tree)) = &self.disk {
            tree.insert(k, &time_ms.to_be_bytes()[..]).map_err(err)?;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        memory.insert(fp);
        Ok(true)
    }

    /// Logs that this node raised the new-domain alert of `client` and `domain`
    /// (first used at `time_ms`), for its peer to take.
    pub fn alerted(&self, client: Who<'_>, domain: &str, time_ms: u64) -> Result<(), SeenError> {
        let k = key(client, domain);
        let seq = match &self.log {
            Log::Disk(db, log) => {
                let err = |e: sled::Error| SeenError::Db {
                    path: self.path.clone(),
                    message: e.to_string(),
                };
                // generate_id is unique and rising across restarts; +1 keeps 0 as "before all".
                let seq = db.generate_id().map_err(err)? + 1;
                log.insert(seq.to_be_bytes(), log_value(time_ms, &k))
                    .map_err(err)?;
                seq
            }
            Log::Memory(m) => {
                let mut m = m.lock();
                m.0 += 1;
                let seq = m.0;
                if m.1.len() >= MEMORY_ENTRIES {
                    m.1.pop_front();
                }
                m.1.push_back(Alerted {
                    seq,
                    time_ms,
                    key: String::from_utf8_lossy(&k).into_owned(),
                });
                seq
            }
        };
        self.logged.send_replace(seq);
        Ok(())
    }

    /// Up to `limit` entries of the log of alerted pairs after sequence number
    /// `after` (0: from the start), oldest first.
    pub fn alerted_since(&self, after: u64, limit: usize) -> Result<Vec<Alerted>, SeenError> {
        match &self.log {
            Log::Disk(_, log) => {
                let err = |e: sled::Error| SeenError::Db {
                    path: self.path.clone(),
                    message: e.to_string(),
                };
                let mut out = Vec::new();
                for kv in log
                    .range(after.saturating_add(1).to_be_bytes()..)
                    .take(limit)
                {
                    let (k, v) = kv.map_err(err)?;
                    let (Ok(seq), Some((time, key))) =
                        (<[u8; 8]>::try_from(k.as_ref()), v.split_first_chunk::<8>())
                    else {
                        continue;
                    };
                    out.push(Alerted {
                        seq: u64::from_be_bytes(seq),
                        time_ms: u64::from_be_bytes(*time),
                        key: String::from_utf8_lossy(key).into_owned(),
                    });
                }
                Ok(out)
            }
            Log::Memory(m) => Ok(m
                .lock()
                .1
                .iter()
                .filter(|a| a.seq > after)
                .take(limit)
                .cloned()
                .collect()),
        }
    }

    /// The sequence number of the newest log entry, changed at each new one.
    pub fn logged(&self) -> tokio::sync::watch::Receiver<u64> {
        self.logged.subscribe()
    }

    /// Pairs stored.
    pub fn len(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether no pair is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes everything to disk.
    pub fn flush(&self) -> Result<(), SeenError> {
        let Some((db, _)) = &self.disk else {
            return Ok(());
        };
        db.flush().map(|_| ()).map_err(|e| SeenError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_use_once_per_pair_across_reopen_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Who::Address("127.0.0.2".parse().unwrap());
        let b = Who::Address("127.0.0.3".parse().unwrap());
        {
            let s = Seen::open(dir.path(), 3).unwrap();
            assert!(s.first_use(a, "example.com", 1).unwrap());
            assert!(!s.first_use(a, "example.com", 2).unwrap());
            assert!(s.first_use(b, "example.com", 3).unwrap());
            assert!(s.first_use(a, "example.org", 4).unwrap());
            // Full: nothing new is recorded, nothing alerts.
            assert!(!s.first_use(a, "example.net", 5).unwrap());
            assert_eq!(s.len(), 3);
            s.flush().unwrap();
        }
        let s = Seen::open(dir.path(), 10).unwrap();
        assert_eq!(s.len(), 3);
        assert!(!s.first_use(a, "example.com", 6).unwrap());
        assert!(!s.first_use(b, "example.com", 6).unwrap());
        assert!(s.first_use(b, "example.org", 7).unwrap());
    }

    #[test]
    fn memory_only_set_alerts_once_per_pair_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Seen::memory_only(&dir.path().join("unusable"), 2);
        let a = Who::Address("127.0.0.2".parse().unwrap());
        assert!(s.first_use(a, "example.com", 1).unwrap());
        assert!(!s.first_use(a, "example.com", 2).unwrap());
        assert!(s.first_use(a, "example.org", 3).unwrap());
        assert!(!s.first_use(a, "example.net", 4).unwrap(), "full");
        s.flush().unwrap();
        assert!(!dir.path().join("unusable").exists(), "nothing written");
    }

    #[test]
    fn alerted_pairs_are_logged_and_merged_pairs_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = Who::Address("127.0.0.2".parse().unwrap());
        for reopen in [false, true] {
            let disk = Seen::open(&dir.path().join(format!("d{reopen}")), 10).unwrap();
            let mem = Seen::memory_only(dir.path(), 10);
            for s in [&disk, &mem] {
                let changes = s.logged();
                assert!(s.first_use(a, "example.com", 1).unwrap());
                s.alerted(a, "example.com", 1).unwrap();
                assert!(changes.has_changed().unwrap());
                // The peer's pair: recorded (no alert later), not logged.
                assert!(s.merge("127.0.0.3 example.org", 2).unwrap());
                assert!(!s.merge("127.0.0.3 example.org", 3).unwrap());
                assert!(
                    !s.first_use(Who::Address("127.0.0.3".parse().unwrap()), "example.org", 4)
                        .unwrap()
                );
                assert!(!s.merge("not-an-address example.org", 5).unwrap());
                assert!(!s.merge("127.0.0.3 ", 5).unwrap());
                s.alerted(a, "example.net", 6).unwrap();
                let log = s.alerted_since(0, 10).unwrap();
                let keys: Vec<_> = log.iter().map(|e| (e.time_ms, e.key.as_str())).collect();
                assert_eq!(
                    keys,
                    [(1, "127.0.0.2 example.com"), (6, "127.0.0.2 example.net")]
                );
                assert!(log[0].seq < log[1].seq);
                assert_eq!(s.alerted_since(log[0].seq, 10).unwrap(), log[1..]);
                assert_eq!(s.alerted_since(log[0].seq, 0).unwrap(), []);
                assert_eq!(*s.logged().borrow(), log[1].seq);
            }
            if reopen {
                let before = disk.alerted_since(0, 10).unwrap();
                disk.flush().unwrap();
                drop(disk);
                let again = Seen::open(&dir.path().join("dtrue"), 10).unwrap();
                assert_eq!(again.alerted_since(0, 10).unwrap(), before);
                assert_eq!(*again.logged().borrow(), before[1].seq);
                assert!(
                    !again
                        .first_use(Who::Address("127.0.0.3".parse().unwrap()), "example.org", 7)
                        .unwrap()
                );
                again.alerted(a, "example.io", 8).unwrap();
                assert!(again.alerted_since(0, 10).unwrap()[2].seq > before[1].seq);
            }
        }
    }

    #[test]
    fn clients_behind_one_address_are_pairs_of_their_own_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let nat = Who::Address("127.0.0.2".parse().unwrap());
        let (one, two) = (Who::Client("agent-1"), Who::Client("agent 2"));
        {
            let s = Seen::open(dir.path(), 10).unwrap();
            assert!(s.first_use(one, "example.com", 1).unwrap());
            assert!(s.first_use(two, "example.com", 2).unwrap());
            assert!(s.first_use(nat, "example.com", 3).unwrap());
            assert!(!s.first_use(one, "example.com", 4).unwrap());
            s.flush().unwrap();
        }
        let s = Seen::open(dir.path(), 10).unwrap();
        assert_eq!(s.len(), 3);
        for who in [one, two, nat] {
            assert!(!s.first_use(who, "example.com", 5).unwrap(), "{who}");
        }
        assert!(
            s.first_use(Who::Client("agent-3"), "example.com", 6)
                .unwrap()
        );
        // The texts read back as they were written.
        for who in [one, two, nat] {
            assert_eq!(Who::parse(&who.to_string()), Some(who));
        }
        assert_eq!(Who::parse("client:"), None);
        assert_eq!(Who::parse("agent-1"), None);
    }
}
