//! The storage abstraction ([`Store`]) and its sled implementation
//! ([`SledStore`]). Nothing outside this file names sled.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// A storage-layer failure (I/O error, corruption, ...), as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// An ordered key/value scan.
pub type KvIter = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + Send>;

/// Ordered key/value storage with atomic batches.
pub trait Store: Send + Sync {
    /// Apply all puts and deletes atomically.
    fn apply(&self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) -> Result<(), StoreError>;
    /// Read one key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Keys in `[start, end)`, ascending, or descending when `reverse`.
    fn scan(&self, start: &[u8], end: &[u8], reverse: bool) -> KvIter;
    /// Make every applied batch durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Bytes used on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
    /// Try to recover after an error (close and reopen). The writer calls
    /// this, with back-off, while writes keep failing. Default: nothing.
    fn reopen(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// sled 0.34 backed [`Store`] (one tree, the default one).
///
/// After an I/O error sled 0.34 fails every later operation, so recovery
/// means reopening: [`Store::reopen`] drops the handle and opens the
/// directory again (it succeeds once no reader still holds the old handle
/// and the cause, e.g. a full disk, is gone). What was applied but not yet
/// flushed when the error struck is lost.
pub struct SledStore {
    path: PathBuf,
    db: RwLock<Option<sled::Db>>,
}

/// Why [`SledStore::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the database.
    #[error("{0}")]
    Locked(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl SledStore {
    /// Open (creating) a database in `dir`.
    pub fn open(dir: &Path) -> Result<SledStore, OpenError> {
        let db = Self::open_db(dir)?;
        Ok(SledStore {
            path: dir.to_owned(),
            db: RwLock::new(Some(db)),
        })
    }

    fn open_db(dir: &Path) -> Result<sled::Db, OpenError> {
        // HighThroughput: less segment cleaning than LowSpace, i.e. fewer rewrites
        // (SD-card wear) and less background work competing with the DNS path
        // after a burst (p99 at 10k QPS right after a saturating run, one pinned
        // core: 0.17/0.22 -> 0.08/0.14 ms blocked/cached), for some disk space.
        let config = sled::Config::new()
            .cache_capacity(4 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput);
        open_sled("querylog-open", dir, config)
    }

    fn db(&self) -> Result<sled::Db, StoreError> {
        self.db
            .read()
            .map_err(|_| StoreError("store lock poisoned".into()))?
            .clone()
            .ok_or_else(|| StoreError("database closed after an error; reopening".into()))
    }

    /// As an `Arc<dyn Store>`.
    pub fn into_dyn(self) -> Arc<dyn Store> {
        Arc::new(self)
    }
}

/// Opens a sled database in `dir` as every dnsguard database is opened: in a
/// private directory (0700, made here; see `datadir.rs`); from a
/// background-priority thread, whose priority sled's I/O and flusher threads
/// inherit; and waiting up to a second while sled's file lock is still held by
/// a handle this process dropped just before (sled lets go of it only when its
/// own threads finish: a reload, a reopen after an error, tests).
pub(crate) fn open_sled(
    thread: &str,
    dir: &Path,
    config: sled::Config,
) -> Result<sled::Db, OpenError> {
    crate::datadir::create_dir(dir)
        .map_err(|e| OpenError::Other(format!("{}: {e}", dir.display())))?;
    let config = config.path(dir);
    let mut tries = 0;
    loop {
        let config = config.clone();
        let opened = crate::channel::in_background(thread, move || config.open())
            .map_err(|e| OpenError::Other(e.to_string()))?;
        match opened {
            Ok(db) => return Ok(db),
            Err(e) => {
                let msg = e.to_string();
                if !msg.contains("could not acquire lock") {
                    return Err(OpenError::Other(msg));
                }
                if tries == 50 {
                    return Err(OpenError::Locked(msg));
                }
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// Hands what sled deferred on this thread (replaced pages, and each sealed
/// 512 KiB I/O buffer) to its epoch collector at once, and collects. Without
/// it they wait in this thread's bag of 64 deferred items: at 20k log writes/s
/// heaptrack found 31.6 MB of sealed I/O buffers waiting so (1.2 MB with this),
/// RSS 151-169 MB against 145-147 MB.
fn release_deferred() {
    sled::crossbeam_pin().flush();
}

fn err(e: sled::Error) -> StoreError {
    StoreError(e.to_string())
}

impl Store for SledStore {
    fn apply(&self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in puts {
            b.insert(k.as_slice(), v.as_slice());
        }
        for k in deletes {
            b.remove(k.as_slice());
        }
        let applied = self.db()?.apply_batch(b).map_err(err);
        release_deferred();
        applied
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db()?
            .get(key)
            .map(|o| o.map(|v| v.to_vec()))
            .map_err(err)
    }

    fn scan(&self, start: &[u8], end: &[u8], reverse: bool) -> KvIter {
        if start >= end {
            return Box::new(std::iter::empty());
        }
        let db = match self.db() {
            Ok(db) => db,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let it = db.range(start.to_vec()..end.to_vec());
        let map = |r: sled::Result<(sled::IVec, sled::IVec)>| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(err)
        };
        if reverse {
            Box::new(it.rev().map(map))
        } else {
            Box::new(it.map(map))
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        let flushed = self.db()?.flush().map(|_| ()).map_err(err);
        release_deferred();
        flushed
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db()?.size_on_disk().map_err(err)
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let mut g = self
            .db
            .write()
            .map_err(|_| StoreError("store lock poisoned".into()))?;
        *g = None; // drop our handle so the file lock can be released
        let db = Self::open_db(&self.path).map_err(|e| StoreError(e.to_string()))?;
        *g = Some(db);
        Ok(())
    }
}
