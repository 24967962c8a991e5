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

use std::collections::HashSet;
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

/// The persistent seen set.
pub struct Seen {
    /// The database, unless the set lives in memory only.
    disk: Option<(sled::Db, sled::Tree)>,
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
                && let Some((client, domain)) = std::str::from_utf8(&k)
                    .ok()
                    .and_then(|s| s.rsplit_once(' '))
                && let Some(client) = Who::parse(client)
            {
                memory.insert(fingerprint(client, domain));
            }
        }
        tracing::debug!(pairs = count, "seen-domain set loaded");
        Ok(Seen {
            disk: Some((db, tree)),
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
        let fp = fingerprint(client, domain);
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
        let k = key(client, domain);
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
