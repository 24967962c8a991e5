//! Where the text of each block/allow list comes from, and keeping downloaded
//! lists current without ever losing the last good copy.
//!
//! A list's `source` is a file path, an `http(s)://` URL, or `builtin:NAME` (a list
//! compiled into the binary from `blocklists/`). URL lists are downloaded into
//! `DATA_DIR/lists/` (conditional GET with ETag / If-Modified-Since, timeouts, a size
//! cap); a failed, oversized or garbage download (HTML, binary, no rule at all)
//! leaves the previous copy in place and is reported.
//!
//! A file list is read only if it is a regular file no larger than the download cap
//! (opened without blocking, so a FIFO or a device is refused at once), and the last
//! text read from it is kept: a file that goes missing or turns bad keeps blocking
//! with that text, with the error shown in its status. Lists added through the API
//! may name only files under `DATA_DIR/lists` or `[list_updates] allowed_dirs`.
//!
//! The server compiles what it reads; [`Lists::unapplied`] tells it when a saved
//! copy is not the one it compiled (another process downloaded it), so a 304 for
//! that copy still gets it applied.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::datadir::{FILE_MODE, write_atomically};
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
    /// A download or list file larger than this is refused (bytes).
    pub max_bytes: u64,
    /// Whole-download time limit (seconds).
    pub timeout_secs: u64,
    /// Directories, besides `DATA_DIR/lists`, whose files lists added through the
    /// dashboard or API may read (lists in the config file may name any file).
    pub allowed_dirs: Vec<PathBuf>,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            interval_hours: 24,
            max_bytes: 64 << 20,
            timeout_secs: 60,
            allowed_dirs: Vec::new(),
        }
    }
}

/// Where a list's text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListSource<'a> {
    /// A local file.
    File(&'a Path),
    /// A URL, downloaded into the data directory.
    Url(&'a str),
    /// A list compiled into the binary.
    Builtin(&'a str),
}

impl<'a> ListSource<'a> {
    /// Classifies a `source` string from the config.
    pub fn of(source: &'a str) -> Self {
        if let Some(name) = source.strip_prefix("builtin:") {
            ListSource::Builtin(name)
        } else if source.starts_with("http://") || source.starts_with("https://") {
            ListSource::Url(source)
        } else {
            ListSource::File(Path::new(source))
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
    /// A list file that is a FIFO, a device, a directory, ….
    #[error("{0} is not a regular file")]
    NotRegular(PathBuf),
    /// A list file larger than `[list_updates] max_bytes`.
    #[error("{path} is larger than list_updates.max_bytes ({max} bytes)")]
    TooBig {
        /// The file.
        path: PathBuf,
        /// The cap.
        max: u64,
    },
    /// A file the API may not use as a list.
    #[error(
        "{path} is not under an allowed directory ({allowed}); list files added here must be there, others only in the config file"
    )]
    NotAllowed {
        /// The file as given.
        path: PathBuf,
        /// The allowed directories.
        allowed: String,
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
    /// Unix seconds of the last successful download (of a file list: read).
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

/// Which saved copy of a URL list was read: changes whenever the copy is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl CopyStamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// One list's text as read, and which saved copy it came from (URL lists).
#[derive(Debug, Clone)]
pub struct Text {
    /// The list text.
    pub text: Arc<String>,
    /// The saved copy read, for [`Lists::set_compiled`].
    pub copy: Option<CopyStamp>,
}

/// Reads list texts and downloads URL lists into `DATA_DIR/lists/`.
pub struct Lists {
    dir: PathBuf,
    cfg: UpdateConfig,
    client: reqwest::Client,
    status: Mutex<HashMap<String, ListStatus>>,
    /// The file and the last text read from it, of each file list: used while
    /// that file cannot be read.
    last_good: Arc<Mutex<HashMap<String, (PathBuf, LastGood)>>>,
    /// The saved copy of each URL list in the filter in force.
    compiled: Mutex<HashMap<String, CopyStamp>>,
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
            last_good: Arc::new(Mutex::new(HashMap::new())),
            compiled: Mutex::new(HashMap::new()),
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

    /// The current text of `list`: the file (or the last text read from it while
    /// it cannot be read), the builtin, or the last good download.
    pub fn read(&self, list: &ListConfig) -> Result<Text, ListError> {
        match ListSource::of(&list.source) {
            ListSource::File(path) => self.read_file_list(&list.name, path),
            ListSource::Builtin(name) => builtin(name)
                .map(|t| Text {
                    text: Arc::new(t.to_owned()),
                    copy: None,
                })
                .ok_or_else(|| ListError::UnknownBuiltin(name.to_owned())),
            ListSource::Url(_) => match read_regular(&self.copy_path(&list.name), None) {
                Ok((text, meta)) => Ok(Text {
                    text: Arc::new(text),
                    copy: Some(CopyStamp::of(&meta)),
                }),
                Err(ListError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Err(ListError::NotDownloaded)
                }
                Err(e) => Err(e),
            },
        }
    }

    fn read_file_list(&self, name: &str, path: &Path) -> Result<Text, ListError> {
        let now = unix_now();
        let result = read_regular(path, Some(self.cfg.max_bytes));
        let mut status = self.status.lock();
        let st = status.entry(name.to_owned()).or_default();
        st.checked_at = Some(now);
        match result {
            Ok((text, _)) => {
                let text = Arc::new(text);
                let before = self.last_good.lock().insert(
                    name.to_owned(),
                    (path.to_owned(), LastGood::Held(text.clone())),
                );
                self.save_last_good(name, &text, before.map(|(_, kept)| kept));
                st.updated_at = Some(now);
                st.last_error = None;
                Ok(Text { text, copy: None })
            }
            Err(e) => match self
                .last_good
                .lock()
                .get(name)
                .filter(|(p, _)| p == path)
                .cloned()
                .and_then(|(_, kept)| kept.text())
            {
                Some(text) => {
                    tracing::warn!(list = %name, error = %e, "list file unreadable; keeping the last good copy");
                    st.last_error = Some(format!("{e} (kept the last good copy)"));
                    Ok(Text {
                        text: text.clone(),
                        copy: None,
                    })
                }
                None => {
                    st.last_error = Some(e.to_string());
                    Err(e)
                }
            },
        }
    }

    /// Records which texts the filter now in force was compiled from: the saved
    /// copies of URL lists, and only these lists' last good file texts are kept.
    pub fn set_compiled(&self, texts: &[(String, Text)]) {
        *self.compiled.lock() = texts
            .iter()
            .filter_map(|(name, t)| Some((name.clone(), t.copy?)))
            .collect();
        self.last_good.lock().retain(|name, (_, kept)| {
            let keep = texts.iter().any(|(n, _)| n == name);
            if !keep && let LastGood::Saved { copy, .. } = kept {
                let _ = std::fs::remove_file(copy);
            }
            keep
        });
    }

    /// Saves `text`, just read from the file of list `name` and held in memory
    /// as its last good text, under `DATA_DIR/lists/last-good/` (written again
    /// only when it changed since `before`), then holds it there instead. On a
    /// thread of its own: writing tens of megabytes to an SD card would delay
    /// the first answer. It stays in memory when it cannot be saved.
    fn save_last_good(&self, name: &str, text: &Arc<String>, before: Option<LastGood>) {
        let dir = self.dir.join("last-good");
        let copy = dir.join(format!("{}.txt", file_stem(name)));
        let (map, name, text) = (self.last_good.clone(), name.to_owned(), text.clone());
        let save = move || {
            let (len, crc) = (text.len(), crc32fast::hash(text.as_bytes()));
            let unchanged = matches!(
                &before,
                Some(LastGood::Saved { copy: c, len: l, crc: k }) if *c == copy && *l == len && *k == crc
            );
            let written = if unchanged && copy.is_file() {
                Ok(())
            } else {
                crate::datadir::create_dir(&dir)
                    .and_then(|()| write_atomically(&copy, text.as_bytes(), FILE_MODE))
            };
            if let Err(e) = written {
                tracing::warn!(list = %name, path = %copy.display(), error = %e,
                    "cannot save the list file's last good copy; keeping it in memory");
                return;
            }
            // Only if that text is still the one kept (not a newer read's).
            if let Some((_, kept)) = map.lock().get_mut(&name)
                && matches!(kept, LastGood::Held(t) if Arc::ptr_eq(t, &text))
            {
                *kept = LastGood::Saved { copy, len, crc };
            }
        };
        let spawned = std::thread::Builder::new()
            .name("list-copy".into())
            .spawn(save);
        if let Err(e) = spawned {
            tracing::warn!(list = %self.dir.display(), error = %e,
                "cannot start the thread saving a list's last good copy; keeping it in memory");
        }
    }

    /// True when `list` has a saved copy that is not the one compiled into the
    /// filter in force (another process saved it, e.g. `dnsguard lists update`
    /// run while no server could be asked).
    pub fn unapplied(&self, list: &ListConfig) -> bool {
        if !matches!(ListSource::of(&list.source), ListSource::Url(_)) {
            return false;
        }
        let Ok(meta) = std::fs::metadata(self.copy_path(&list.name)) else {
            return false;
        };
        self.compiled.lock().get(&list.name) != Some(&CopyStamp::of(&meta))
    }

    /// Checks a `source` given through the dashboard or API: URLs and builtins
    /// as they are; a file must be a readable regular file within the size cap
    /// under `DATA_DIR/lists` or one of `allowed_dirs`. Returns the source to
    /// store (a file's canonical path; a relative one is taken under
    /// `DATA_DIR/lists`). Blocking: file system calls.
    pub fn check_api_source(
        &self,
        source: &str,
        allowed_dirs: &[PathBuf],
    ) -> Result<String, ListError> {
        let ListSource::File(path) = ListSource::of(source) else {
            return Ok(source.to_owned());
        };
        let path = self.dir.join(path);
        let dirs: Vec<&Path> = std::iter::once(self.dir.as_path())
            .chain(allowed_dirs.iter().map(PathBuf::as_path))
            .collect();
        let not_allowed = || ListError::NotAllowed {
            path: path.clone(),
            allowed: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(not_allowed());
        }
        let real = std::fs::canonicalize(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound && !dirs.iter().any(|d| path.starts_with(d))
            {
                not_allowed()
            } else {
                ListError::Read {
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        let inside = dirs
            .iter()
            .filter_map(|d| std::fs::canonicalize(d).ok())
            .any(|d| real.starts_with(d));
        if !inside {
            return Err(not_allowed());
        }
        read_regular(&real, Some(self.cfg.max_bytes))?;
        Ok(real.display().to_string())
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
        let ListSource::Url(url) = ListSource::of(&list.source) else {
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
            let _ = write_atomically(&self.meta_path(&list.name), &json, FILE_MODE);
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
        write_atomically(&path, &body, FILE_MODE)
            .map_err(|source| ListError::Write { path, source })?;
        meta.etag = etag;
        meta.last_modified = last_modified;
        Ok(Updated::New { bytes: body.len() })
    }
}

/// Reads a regular file whole, refusing anything else without blocking on it:
/// opened with `O_NONBLOCK` (a FIFO without a writer neither hangs the open nor is
/// read), then the opened file's own metadata checked, then at most `max` bytes read.
fn read_regular(path: &Path, max: Option<u64>) -> Result<(String, std::fs::Metadata), ListError> {
    let io = |source| ListError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(ListError::NotRegular(path.to_owned()));
    }
    let too_big = |max| ListError::TooBig {
        path: path.to_owned(),
        max,
    };
    if let Some(max) = max
        && meta.len() > max
    {
        return Err(too_big(max));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte past the cap tells a file that grew while being read.
    file.take(max.map_or(u64::MAX, |m| m + 1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if let Some(max) = max
        && bytes.len() as u64 > max
    {
        return Err(too_big(max));
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Ok((text, meta))
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

/// The last good text of a file list, for while its file cannot be read.
#[derive(Clone, PartialEq, Eq)]
enum LastGood {
    /// Saved to `copy`, with the text's length and CRC-32: a list file can be
    /// tens of megabytes (the 1.6 M-name list is 30 MB, as much as the rest of
    /// the server at ready), read back only when needed, and only if it is
    /// still that text (two list names with one file stem, or a copy changed
    /// on disk, give no text rather than another list's).
    Saved { copy: PathBuf, len: usize, crc: u32 },
    /// In memory, when it could not be saved.
    Held(Arc<String>),
}

impl LastGood {
    /// The text, if it can still be had.
    fn text(&self) -> Option<Arc<String>> {
        match self {
            LastGood::Held(text) => Some(text.clone()),
            LastGood::Saved { copy, len, crc } => {
                let (text, _) = read_regular(copy, None).ok()?;
                (text.len() == *len && crc32fast::hash(text.as_bytes()) == *crc)
                    .then(|| Arc::new(text))
            }
        }
    }
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_list(name: &str, path: &Path) -> ListConfig {
        ListConfig {
            name: name.into(),
            source: path.display().to_string(),
            ..ListConfig::default()
        }
    }

    #[test]
    fn a_file_lists_last_good_text_is_used_only_for_the_same_file() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let lists = Lists::new(dir.path(), &UpdateConfig::default()).unwrap();
        let a = dir.path().join("a.txt");
        std::fs::write(&a, "a.example\n").unwrap();
        let text = lists.read(&file_list("mine", &a)).unwrap();
        lists.set_compiled(&[("mine".into(), text)]);
        std::fs::remove_file(&a).unwrap();
        let kept = lists.read(&file_list("mine", &a)).unwrap();
        assert_eq!(kept.text.as_str(), "a.example\n");
        let err = lists.status("mine").last_error.unwrap();
        assert!(err.contains("kept the last good copy"), "{err}");
        // The list now names another file: the old file's text is not its copy.
        let b = dir.path().join("b.txt");
        assert!(matches!(
            lists.read(&file_list("mine", &b)),
            Err(ListError::Read { .. })
        ));
        // A list no longer compiled loses its last good text.
        lists.set_compiled(&[]);
        assert!(lists.read(&file_list("mine", &a)).is_err());
    }

    #[test]
    fn a_file_lists_last_good_text_is_not_held_in_memory() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let lists = Lists::new(dir.path(), &UpdateConfig::default()).unwrap();
        let a = dir.path().join("a.txt");
        std::fs::write(&a, "a.example\nb.example\n").unwrap();
        let text = lists.read(&file_list("mine", &a)).unwrap();
        let held = Arc::downgrade(&text.text);
        lists.set_compiled(&[("mine".into(), text)]);
        // Once the filter is compiled and the copy saved (in the background)
        // nothing keeps the text in memory.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while held.upgrade().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the list text is still in memory"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // It still blocks with that text while its file is gone.
        std::fs::remove_file(&a).unwrap();
        let kept = lists.read(&file_list("mine", &a)).unwrap();
        assert_eq!(kept.text.as_str(), "a.example\nb.example\n");
        // A saved copy that changed on disk is no longer that text: no copy.
        for e in std::fs::read_dir(dir.path().join("lists/last-good")).unwrap() {
            std::fs::write(e.unwrap().path(), "other.example\n").unwrap();
        }
        assert!(lists.read(&file_list("mine", &a)).is_err());
    }

    #[test]
    fn a_file_lists_last_good_text_stays_in_memory_when_it_cannot_be_saved() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        // DATA_DIR/lists is a file: nothing can be saved under it.
        std::fs::write(dir.path().join("lists"), "").unwrap();
        let lists = Lists::new(dir.path(), &UpdateConfig::default()).unwrap();
        let a = dir.path().join("a.txt");
        std::fs::write(&a, "a.example\n").unwrap();
        let text = lists.read(&file_list("mine", &a)).unwrap();
        lists.set_compiled(&[("mine".into(), text)]);
        std::fs::remove_file(&a).unwrap();
        let kept = lists.read(&file_list("mine", &a)).unwrap();
        assert_eq!(kept.text.as_str(), "a.example\n");
    }
}
