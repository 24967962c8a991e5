//! Serves a certificate renewed on disk without SIGHUP.
//!
//! certbot, acme.sh and Kubernetes secrets replace `cert_file` and `key_file` by
//! renaming new files (or re-pointing symlinks) into place, often the two a
//! moment apart. Every [`PERIOD`] the watcher looks at both files (following
//! symlinks: device, inode, size, modification time; two `stat` calls, nothing
//! on the query path). A pair that changed is loaded once it has stayed the same
//! for a whole period, so a renewal caught half done is waited out rather than
//! reported. It is then served only if both files parse and the key is the
//! certificate's ([`CertStore::reload`]); a bad pair is logged and the
//! certificate in force stays, until the files change again.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::CertStore;

/// How often the files are looked at; a renewal is served within two periods.
pub const PERIOD: Duration = Duration::from_secs(2);

/// Watches `store`'s files every [`PERIOD`] until the task is dropped.
pub async fn watch(store: Arc<CertStore>) {
    watch_every(store, PERIOD).await;
}

/// [`watch`] with another period (the unit tests' short one).
async fn watch_every(store: Arc<CertStore>, period: Duration) {
    // The first settled look compares the files with what is served, so a
    // renewal between the start's load and this task is not missed.
    let mut served: Option<Stamp> = None;
    let mut seen: Option<Stamp> = None;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = stamp_of(&store).await;
        if seen.as_ref() != Some(&now) {
            // Changed since the last look: the other file may follow.
            seen = Some(now);
            continue;
        }
        if served.as_ref() == Some(&now) {
            continue;
        }
        // Stamped before reading: a change during the read is seen next time.
        served = Some(now);
        let store = store.clone();
        match tokio::task::spawn_blocking(move || renew(&store)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                error = %e,
                "TLS certificate files changed but cannot be used; keeping the one in force"
            ),
            Err(e) => tracing::error!(error = %e, "TLS certificate reload stopped"),
        }
    }
}

/// Serves the pair on disk if it is whole, matching, and not the one in force.
fn renew(store: &CertStore) -> Result<(), super::CertError> {
    let key = super::read_pair(&store.cert_path, &store.key_path)?;
    if key.cert == store.current.load().cert {
        return Ok(());
    }
    store.current.store(Arc::new(key));
    store.log_identity("TLS certificate renewed on disk");
    Ok(())
}

/// What identifies a file's content cheaply: a rename gives a new inode, a
/// rewrite in place a new modification time (or size).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

/// The stamps of the certificate and the key (`None`: cannot be read now).
type Stamp = [Option<FileStamp>; 2];

async fn stamp_of(store: &Arc<CertStore>) -> Stamp {
    let store = store.clone();
    // A stat on a network file system can hang: not on a runtime thread.
    tokio::task::spawn_blocking(move || [file_stamp(&store.cert_path), file_stamp(&store.key_path)])
        .await
        .unwrap_or_default()
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::TlsConfig;
    use std::path::PathBuf;
    use std::time::Instant;

    /// A fresh self-signed pair for `localhost`, written into `dir` under `tag`
    /// (so a renewal can be renamed into place).
    fn pair(dir: &Path, tag: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("cert{tag}.pem")),
            dir.join(format!("key{tag}.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    async fn until(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_pair_renamed_into_place_a_moment_apart_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "");
        let cfg = TlsConfig {
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
        };
        let store = CertStore::load(&cfg, dir.path()).unwrap();
        let first = store.identity();
        let task = tokio::spawn(watch_every(store.clone(), Duration::from_millis(20)));

        // Renewal by rename, the certificate first and the key a moment later.
        let (c2, k2) = pair(dir.path(), "-2");
        let want = crate::pki::identity(
            &rustls_pemfile::certs(&mut &std::fs::read(&c2).unwrap()[..])
                .next()
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        std::fs::rename(&c2, &cert).unwrap();
        std::fs::rename(&k2, &key).unwrap();
        until("the renewed certificate", || store.identity() != first).await;
        assert_eq!(store.identity(), want);
        task.abort();
    }
}
