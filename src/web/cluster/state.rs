//! The replicated state: the [`REPLICATED`] sections of the primary's
//! configuration file as a TOML fragment, with an ETag; the primary's
//! `GET /api/v1/cluster/state` (token-authenticated like every API route); and
//! [`merge`], which puts a fragment into a secondary's own file.
//!
//! The primary serves what its file says, so comments and layout travel too. A
//! file that no longer loads (edited by hand and not yet reloaded) is not served:
//! the last good fragment is.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::Deserialize;
use toml_edit::DocumentMut;

use crate::cluster::REPLICATED;
use crate::web::AppState;

/// A fragment that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not TOML.
    #[error("not TOML: {0}")]
    Syntax(String),
    /// A section this node does not take from a primary.
    #[error("section `{0}` is not replicated; the primary may not set it")]
    NotReplicated(String),
}

/// The replicated sections of the configuration text `text`, as TOML.
pub fn fragment(text: &str) -> Result<String, StateError> {
    let doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| StateError::Syntax(e.to_string()))?;
    let mut out = DocumentMut::new();
    for key in REPLICATED {
        if let Some(item) = doc.get(key) {
            out.insert(key, item.clone());
        }
    }
    Ok(out.to_string())
}

/// `own` (a secondary's file) with its replicated sections replaced by those of
/// `fragment`; every other section, comment and layout of `own` is kept. A
/// fragment with any other section is refused.
pub fn merge(own: &str, fragment: &str) -> Result<String, StateError> {
    let mut doc: DocumentMut = own
        .parse()
        .map_err(|e: toml_edit::TomlError| StateError::Syntax(format!("own file: {e}")))?;
    let theirs: DocumentMut = fragment
        .parse()
        .map_err(|e: toml_edit::TomlError| StateError::Syntax(e.to_string()))?;
    if let Some((key, _)) = theirs.iter().find(|(k, _)| !REPLICATED.contains(k)) {
        return Err(StateError::NotReplicated(key.to_owned()));
    }
    for key in REPLICATED {
        doc.remove(key);
        if let Some(item) = theirs.get(key) {
            doc.insert(key, item.clone());
        }
    }
    Ok(doc.to_string())
}

/// The fragment's ETag (quoted, as HTTP writes it).
pub fn etag(fragment: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, fragment.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
}

/// The last fragment the primary served from a file that loaded.
static LAST_GOOD: Mutex<Option<(String, String)>> = Mutex::new(None);

/// The fragment and ETag in force on this node: its file's, if the file loads.
async fn current(st: &AppState) -> Result<(String, String), String> {
    let Some(path) = st.live.config_path.clone() else {
        return Err("this node runs on the embedded default configuration".into());
    };
    let read = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        crate::config::Config::parse(&text, &path.display().to_string())
            .map_err(|e| e.to_string())?;
        fragment(&text).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut last = LAST_GOOD.lock();
    match read {
        Ok(f) => {
            let tag = etag(&f);
            *last = Some((f.clone(), tag.clone()));
            Ok((f, tag))
        }
        Err(e) => {
            tracing::warn!(error = %e, "config file does not load; serving the last good replicated state");
            last.clone().ok_or(e)
        }
    }
}

/// Query of `GET /api/v1/cluster/state`.
#[derive(Debug, Deserialize)]
pub struct Wait {
    /// With `If-None-Match`: seconds to wait for a change before 304 (at most 300).
    #[serde(default)]
    wait: u64,
}

/// The header that says whether the primary is ready (its DNS answers).
pub const READY_HEADER: &str = "dnsguard-ready";

/// `GET /api/v1/cluster/state[?wait=N]`: the replicated sections (TOML) with an
/// ETag. With a matching `If-None-Match` it waits up to N s for a change of the
/// configuration in force, then answers 304.
pub async fn get_state(
    State(st): State<AppState>,
    Query(q): Query<Wait>,
    headers: HeaderMap,
) -> Response {
    let theirs = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(300));
    let mut changes = st.live.changes.subscribe();
    loop {
        // Marked seen before reading: a change during the read wakes the wait.
        changes.borrow_and_update();
        let (body, tag) = match current(&st).await {
            Ok(c) => c,
            Err(e) => return (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
        };
        let unchanged = theirs.as_deref() == Some(tag.as_str());
        if !unchanged
            || tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
        {
            let ready = super::health::ready().await;
            let ready = if ready { "true" } else { "false" };
            let status = if unchanged {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::OK
            };
            let body = if unchanged { String::new() } else { body };
            return (
                status,
                [
                    (header::ETAG.as_str(), tag.as_str()),
                    (READY_HEADER, ready),
                    (header::CONTENT_TYPE.as_str(), "application/toml"),
                ],
                body,
            )
                .into_response();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "# my node\n[server]\nlisten = [\"127.0.0.1:5300\"]\ndata_dir = \"mine\"\n\n\
        [[groups]]\nname = \"old\"\nclients = [\"10.0.0.9\"]\n\n[web]\nlisten = \"127.0.0.1:9000\"\n";
    const PRIMARY: &str = "[server]\nlisten = [\"0.0.0.0:53\"]\ndata_dir = \"theirs\"\n\n\
        [local]\nrecords = [\"nas.lan A 10.0.0.5\"]\n\n[[groups]]\nname = \"default\"\ndeny = [\"ads.test\"]\n\n\
        [web]\nlisten = \"0.0.0.0:80\"\n";

    #[test]
    fn fragment_keeps_only_replicated_sections() {
        let f = fragment(PRIMARY).unwrap();
        assert!(f.contains("nas.lan") && f.contains("ads.test"), "{f}");
        assert!(!f.contains("theirs") && !f.contains("0.0.0.0:80"), "{f}");
    }

    #[test]
    fn merge_replaces_replicated_sections_and_keeps_the_rest() {
        let merged = merge(OWN, &fragment(PRIMARY).unwrap()).unwrap();
        let cfg = crate::config::Config::parse(&merged, "merged").unwrap();
        assert_eq!(cfg.server.data_dir, std::path::PathBuf::from("mine"));
        assert_eq!(cfg.server.listen[0].port(), 5300);
        assert_eq!(cfg.web.listen.port(), 9000);
        assert_eq!(cfg.local.records, ["nas.lan A 10.0.0.5"]);
        let groups: Vec<_> = cfg.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(groups, ["default"], "{merged}");
        assert!(merged.starts_with("# my node"), "{merged}");
        // An empty fragment clears the replicated sections.
        let cleared = crate::config::Config::parse(&merge(OWN, "").unwrap(), "m").unwrap();
        assert!(cleared.groups.iter().all(|g| g.name != "old"));
    }

    #[test]
    fn merge_refuses_garbage_and_foreign_sections() {
        assert!(matches!(
            merge(OWN, "[[groups]\nname ="),
            Err(StateError::Syntax(_))
        ));
        assert!(matches!(
            merge(OWN, "[server]\ndata_dir = \"/\"\n"),
            Err(StateError::NotReplicated(k)) if k == "server"
        ));
    }

    #[test]
    fn etag_follows_the_content() {
        assert_eq!(etag("a"), etag("a"));
        assert_ne!(etag("a"), etag("b"));
    }
}
