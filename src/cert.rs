//! The certificate DNS over TLS presents (`[tls]`).
//!
//! Either the PEM files `cert_file` / `key_file`, or, when none is configured, a
//! self-signed certificate made on first start into `DATA_DIR/tls/` (SAN
//! `localhost`, `127.0.0.1`, `::1` and the host name) and reused afterwards. The
//! served certificate sits in an [`ArcSwap`]: every handshake reads it without a
//! lock, and [`CertStore::reload`] (SIGHUP, and [`watch`] when the files
//! change) swaps in a renewed one without a restart. Its SHA-256 fingerprint and SPKI pin (what `kdig +tls-pin` takes) are
//! logged whenever it is loaded.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use crate::pki::{Identity, identity};
use serde::Deserialize;

pub mod watch;

/// `[tls]`: the certificate served by the encrypted listeners.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first). Absent: a self-signed certificate in
    /// the data directory.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// Why a certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// `cert_file` without `key_file` or the other way round.
    #[error("[tls] needs both cert_file and key_file, or neither (self-signed)")]
    Incomplete,
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error("{0}: no PEM private key found")]
    NoKey(PathBuf),
    /// The certificate's DER could not be read (for its public key).
    #[error("{0}: the certificate is not valid DER X.509")]
    BadCertificate(PathBuf),
    /// rustls cannot sign with the key (an unsupported type).
    #[error("{path}: unusable private key: {error}")]
    Key { path: PathBuf, error: rustls::Error },
    /// The key is not the certificate's.
    #[error("{key}: the private key does not belong to the certificate {cert}")]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    /// The self-signed certificate could not be generated.
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The certificate in force and where it is read from.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    /// Loads the configured certificate, or makes (once) and loads the
    /// self-signed one under `data_dir/tls/`.
    pub fn load(cfg: &TlsConfig, data_dir: &Path) -> Result<Arc<Self>, CertError> {
        let (cert_path, key_path) = match (&cfg.cert_file, &cfg.key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            (None, None) => ensure_self_signed(&data_dir.join("tls"))?,
            _ => return Err(CertError::Incomplete),
        };
        let key = read_pair(&cert_path, &key_path)?;
        let store = Self {
            cert_path,
            key_path,
            current: ArcSwap::from_pointee(key),
        };
        store.log_identity("TLS certificate loaded");
        Ok(Arc::new(store))
    }

    /// Reads the certificate files again and serves them from the next
    /// handshake on; on error the certificate in force stays.
    pub fn reload(&self) -> Result<(), CertError> {
        let key = read_pair(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(key));
        self.log_identity("TLS certificate reloaded");
        Ok(())
    }

    /// The fingerprint and pin of the certificate in force.
    pub fn identity(&self) -> Identity {
        let key = self.current.load();
        // read_pair checked that the leaf parses.
        identity(&key.cert[0]).unwrap_or_else(|| Identity {
            fingerprint: String::new(),
            spki_pin: String::new(),
        })
    }

    /// The certificate in force (DER), for a device to install as trusted.
    pub fn leaf(&self) -> Vec<u8> {
        self.current.load().cert[0].as_ref().to_vec()
    }

    /// A rustls server configuration that presents this store's certificate and
    /// asks for (never requires) a client certificate, an identity by its SPKI
    /// pin ([`crate::pki::AnyClientCert`]).
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let clients = Arc::new(crate::pki::AnyClientCert::new(provider.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_client_cert_verifier(clients)
            .with_cert_resolver(self.clone());
        // Stateless tickets (a key rotated every six hours, in memory only): any
        // number of clients can resume, where the server-side cache alone holds 256
        // sessions. Without one the cache still serves.
        match rustls::crypto::ring::Ticketer::new() {
            Ok(ticketer) => config.ticketer = ticketer,
            Err(error) => tracing::warn!(%error, "TLS session tickets off"),
        }
        Arc::new(config)
    }

    fn log_identity(&self, what: &str) {
        let id = self.identity();
        tracing::info!(
            cert = %self.cert_path.display(),
            sha256 = %id.fingerprint,
            spki_pin = %id.spki_pin,
            "{what}"
        );
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Reads a PEM chain and its key and checks that they belong together.
fn read_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, CertError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| CertError::Io { path, error }
    };
    let cert_pem = std::fs::read(cert_path).map_err(io(cert_path))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(io(cert_path))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate(cert_path.into()));
    }
    if identity(&chain[0]).is_none() {
        return Err(CertError::BadCertificate(cert_path.into()));
    }
    let key_pem = std::fs::read(key_path).map_err(io(key_path))?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(io(key_path))?
        .ok_or_else(|| CertError::NoKey(key_path.into()))?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|error| CertError::Key {
            path: key_path.into(),
            error,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| CertError::KeyMismatch {
        key: key_path.into(),
        cert: cert_path.into(),
    })?;
    Ok(certified)
}

/// The self-signed pair under `dir`, made if either file is missing.
fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), CertError> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = hostname().filter(|h| h != "localhost") {
        names.push(host);
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dnsguard");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| CertError::Io { path, error }
    };
    crate::datadir::create_dir(dir).map_err(io(dir))?;
    // The key first, so a half-written pair never looks complete.
    write_private(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
    write_private(&cert_path, cert.pem().as_bytes()).map_err(io(&cert_path))?;
    tracing::info!(dir = %dir.display(), "made a self-signed TLS certificate");
    Ok((cert_path, key_path))
}

/// Writes `bytes` to `path` as an owner-only file (via a temporary file and a
/// rename, so a reader never sees half of it).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = crate::datadir::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    crate::datadir::tighten(&tmp)?;
    std::fs::rename(&tmp, path)
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_made_once_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = CertStore::load(&TlsConfig::default(), dir.path()).unwrap();
        let key = dir.path().join("tls/key.pem");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = CertStore::load(&TlsConfig::default(), dir.path()).unwrap();
        assert_eq!(first.identity(), second.identity());
    }

    #[test]
    fn half_a_configuration_is_an_error() {
        let cfg = TlsConfig {
            cert_file: Some("/nonexistent.pem".into()),
            key_file: None,
        };
        assert!(matches!(
            CertStore::load(&cfg, Path::new("/nonexistent")),
            Err(CertError::Incomplete)
        ));
    }
}
