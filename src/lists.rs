//! Where the text of each block/allow list comes from, and keeping downloaded
//! lists current without ever losing the last good copy.
//!
//! A list's `source` is a file path, an `http(s)://` URL, or `builtin:NAME` (a list
//! compiled into the binary from `blocklists/`). URL lists are downloaded into
//! `DATA_DIR/lists/` (conditional GET with ETag / If-Modified-Since, timeouts, a size
//! cap); a failed, oversized or garbage download (HTML, binary, no rule at all)
//! leaves the previous copy in place and is reported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::filter::ListConfig;

/// Lists compiled into the binary, by `builtin:` name (their sources are in `blocklists/`).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "default",
        include_str!("../blocklists/dnsguard-default.txt"),
    ),
    ("exfil", include_str!("../blocklists/exfil-endpoints.txt")),
    (
        "doh-resolvers",
        include_str!("../blocklists/doh-resolvers.txt"),
    ),
];

/// Names answered NXDOMAIN for every client whatever its group: the NXDOMAIN itself
/// tells browsers and OSes not to route around local DNS (Firefox's DoH canary,
/// iCloud Private Relay).
pub const BYPASS_CANARIES: &str = include_str!("../blocklists/bypass-canaries.txt");

/// `[list_updates]`: how URL lists are fetched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// Hours between scheduled updates inside `serve` (0 = only at start and on demand).
    pub interval_hours: u64,
    /// A download larger than this is refused (bytes).
    pub max_bytes: u64,
    /// Whole-download time limit (seconds).
    pub timeout_secs: u64,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            interval_hours: 24,
            max_bytes: 64 << 20,
            timeout_secs: 60,
        }
    }
}

/// Where a list's text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A local file.
    File(&'a Path),
    /// A URL, downloaded into the data directory.
    Url(&'a str),
    /// A list compiled into the binary.
    Builtin(&'a str),
}

impl<'a> Source<'a> {
    /// Classifies a `source` string from the config.
    pub fn of(source: &'a str) -> Self {
        if let Some(name) = source.strip_prefix("builtin:") {
            Source::Builtin(name)
        } else if source.starts_with("http://") || source.starts_with("https://") {
            Source::Url(source)
        } else {
            Source::File(Path::new(source))
        }
    }
}

/// A list that could not be read or updated.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The file (or the downloaded copy) could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A URL list that has never been downloaded.
    #[error("not downloaded yet (run `dnsguard lists update`)")]
    NotDownloaded,
    /// `builtin:NAME` with an unknown NAME.
    #[error("unknown builtin list {0:?}")]
    UnknownBuiltin(String),
    /// The download failed; the previous copy was kept.
    #[error("download failed: {0}")]
    Download(String),
    /// The download was refused as not a list; the previous copy was kept.
    #[error("download rejected: {0}")]
    Rejected(String),
    /// The downloaded copy could not be saved; the previous copy was kept.
    #[error("cannot save {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Result of one update attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// A new copy was saved.
    New {
        /// Its size in bytes.
        bytes: usize,
    },
    /// The server said it has not changed (HTTP 304).
    NotModified,
    /// Not a URL list: nothing to download.
    Local,
}

/// What is known about one list's last update, for `lists update` and the dashboard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListStatus {
    /// Unix seconds of the last successful download.
    pub updated_at: Option<u64>,
    /// Unix seconds of the last attempt.
    pub checked_at: Option<u64>,
    /// The error of the last attempt, if it failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    etag: Option<String>,
    last_modified: Option<String>,
    status: ListStatus,
}

/// Reads list texts and downloads URL lists into `DATA_DIR/lists/`.
pub struct Lists {
    dir: PathBuf,
    cfg: UpdateConfig,
    client: reqwest::Client,
    status: Mutex<HashMap<String, ListStatus>>,
}

impl Lists {
    /// Lists stored under `data_dir/lists`.
    pub fn new(data_dir: &Path, cfg: &UpdateConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .user_agent(concat!("dnsguard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            dir: data_dir.join("lists"),
            cfg: cfg.clone(),
            client,
            status: Mutex::new(HashMap::new()),
        })
    }

    fn copy_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.txt", file_stem(name)))
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.meta.json", file_stem(name)))
    }

    fn meta(&self, name: &str) -> Meta {
        std::fs::read(self.meta_path(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The current text of `list`: the file, the builtin, or the last good download.
    pub fn read(&self, list: &ListConfig) -> Result<String, ListError> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|source| ListError::Read {
                    path: path.to_owned(),
                    source,
                })
        };
        match Source::of(&list.source) {
            Source::File(path) => read(path),
            Source::Builtin(name) => builtin(name)
                .map(str::to_owned)
                .ok_or_else(|| ListError::UnknownBuiltin(name.to_owned())),
            Source::Url(_) => {
                let path = self.copy_path(&list.name);
                match read(&path) {
                    Err(ListError::Read { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        Err(ListError::NotDownloaded)
                    }
                    other => other,
                }
            }
        }
    }

    /// The status of every list updated or checked so far (from disk and this run).
    pub fn status(&self, name: &str) -> ListStatus {
        self.status
            .lock()
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.meta(name).status)
    }

    /// Downloads `list` if it is a URL list. On any failure the previous copy stays.
    pub async fn update(&self, list: &ListConfig) -> Result<Updated, ListError> {
        let Source::Url(url) = Source::of(&list.source) else {
            return Ok(Updated::Local);
        };
        let mut meta = self.meta(&list.name);
        let result = self.download(url, &list.name, &mut meta).await;
        let now = unix_now();
        meta.status.checked_at = Some(now);
        match &result {
            Ok(Updated::New { .. }) | Ok(Updated::NotModified) => {
                meta.status.updated_at = Some(now);
                meta.status.last_error = None;
            }
            Ok(Updated::Local) => {}
            Err(e) => meta.status.last_error = Some(e.to_string()),
        }
        self.status
            .lock()
            .insert(list.name.clone(), meta.status.clone());
        if let Ok(json) = serde_json::to_vec_pretty(&meta) {
            let _ = write_atomically(&self.meta_path(&list.name), &json);
        }
        match &result {
            Ok(u) => tracing::info!(list = %list.name, outcome = ?u, "list update"),
            Err(e) => {
                tracing::warn!(list = %list.name, error = %e, "list update failed; keeping the last good copy")
            }
        }
        result
    }

    async fn download(&self, url: &str, name: &str, meta: &mut Meta) -> Result<Updated, ListError> {
        let dl = |e: reqwest::Error| ListError::Download(e.to_string());
        let have_copy = self.copy_path(name).exists();
        let mut req = self.client.get(url);
        if have_copy {
            if let Some(etag) = &meta.etag {
                req = req.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &meta.last_modified {
                req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm);
            }
        }
        let mut resp = req.send().await.map_err(dl)?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED && have_copy {
            return Ok(Updated::NotModified);
        }
        if !resp.status().is_success() {
            return Err(ListError::Download(format!("HTTP {}", resp.status())));
        }
        let too_big = || ListError::Rejected(format!("larger than {} bytes", self.cfg.max_bytes));
        if resp
            .content_length()
            .is_some_and(|n| n > self.cfg.max_bytes)
        {
            return Err(too_big());
        }
        let header = |h| {
            resp.headers()
                .get(h)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header(reqwest::header::ETAG);
        let last_modified = header(reqwest::header::LAST_MODIFIED);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(dl)? {
            if body.len() as u64 + chunk.len() as u64 > self.cfg.max_bytes {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        check_list_body(&body).map_err(ListError::Rejected)?;
        std::fs::create_dir_all(&self.dir).map_err(|source| ListError::Write {
            path: self.dir.clone(),
            source,
        })?;
        let path = self.copy_path(name);
        write_atomically(&path, &body).map_err(|source| ListError::Write { path, source })?;
        meta.etag = etag;
        meta.last_modified = last_modified;
        Ok(Updated::New { bytes: body.len() })
    }
}

/// The text of `builtin:NAME`.
pub fn builtin(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Refuses bodies that are not lists: HTML pages (captive portals, error pages),
/// binary data, and text without a single rule line.
fn check_list_body(body: &[u8]) -> Result<(), String> {
    if body.contains(&0) {
        return Err("binary data, not a text list".into());
    }
    let text = String::from_utf8_lossy(body);
    let start = text
        .trim_start()
        .get(..64)
        .unwrap_or(text.trim_start())
        .to_ascii_lowercase();
    if start.starts_with("<!doctype") || start.starts_with("<html") || start.starts_with("<?xml") {
        return Err("an HTML/XML page, not a list".into());
    }
    let has_rule =
        crate::filter::parse_list(&text).any(|p| matches!(p, crate::filter::Parsed::Rule { .. }));
    if !has_rule {
        return Err("no valid rule in the download".into());
    }
    Ok(())
}

fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
