//! The secondary's side: a long-poll loop on the primary's
//! `GET /api/v1/cluster/state`. Each new fragment is merged into this node's own
//! configuration file ([`super::state::merge`]), loaded as SIGHUP loads it,
//! applied through [`Live::apply`] and only then renamed into place: the file
//! and the running server change together or not at all, and a restart or a
//! SIGHUP keeps the replicated state. A fragment that does not load, an error
//! status or an unreachable primary changes nothing (logged; counted in
//! `dnsguard_cluster_sync_failures_total`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::Serialize;

use super::state::{READY_HEADER, etag, fragment, merge};
use crate::cluster::{ClusterConfig, REPLICATED, set_primary_up};
use crate::live::Live;
use crate::web::AppState;

/// Requests are at least this far apart, whatever the primary answers (a
/// primary that answers 304 at once must not be asked in a tight loop).
const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// After a new state: the next change may follow at once.
const AFTER_CHANGE: Duration = Duration::from_millis(50);
/// The longest pause after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What `GET /api/v1/cluster` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// `secondary` or `standalone`.
    pub role: &'static str,
    /// The primary's URL.
    pub primary: Option<String>,
    /// The sections taken from the primary (and not editable here).
    pub replicated: Vec<&'static str>,
    /// The primary answered the last request and is ready.
    pub primary_up: bool,
    /// The ETag of the state in force.
    pub etag: Option<String>,
    /// When the state in force was applied (RFC 3339).
    pub applied_at: Option<String>,
    /// The last failure, if the last request failed.
    pub last_error: Option<String>,
    /// Pairs of the primary's new-domain alerts taken into this node's seen set.
    pub seen_pulled: u64,
    /// Pairs of this node's new-domain alerts the primary took.
    pub seen_pushed: u64,
}

static STATUS: Mutex<Option<Status>> = Mutex::new(None);

pub(super) fn update(f: impl FnOnce(&mut Status)) {
    if let Some(s) = STATUS.lock().as_mut() {
        f(s);
    }
}

/// `GET /api/v1/cluster`: this node's role and replication status.
pub async fn status(State(_): State<AppState>) -> Response {
    let s = STATUS.lock().clone().unwrap_or_else(|| Status {
        role: "standalone",
        ..Status::default()
    });
    Json(s).into_response()
}

/// Follows the primary until the task is dropped (only when `[cluster] primary` is set).
pub async fn follow(live: Arc<Live>, cfg: ClusterConfig) {
    let Some(primary) = cfg.primary.clone() else {
        return;
    };
    *STATUS.lock() = Some(Status {
        role: "secondary",
        primary: Some(primary.clone()),
        replicated: REPLICATED.to_vec(),
        ..Status::default()
    });
    set_primary_up(false);
    let http = match reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cluster: cannot build the HTTP client; not following the primary");
            return;
        }
    };
    // Dropped (aborting the seen-set exchange) with this task.
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(guard) = &live.guard {
        tasks.spawn(super::seen::sync(
            guard.seen().clone(),
            http.clone(),
            primary.clone(),
            cfg.clone(),
        ));
    }
    let url = format!("{}/api/v1/cluster/state", primary.trim_end_matches('/'));
    // The state in force: what the primary need not send again.
    let mut seen = own_etag(&live);
    // The version in force (`seen` may be a newer one that was refused).
    let mut applied = seen.clone();
    update(|s| s.etag = seen.clone());
    let mut backoff = MIN_INTERVAL;
    // At start and after a failure the first request is not held, so whether
    // the primary is up is known at once (it decides who raises alerts).
    let mut wait = 0;
    loop {
        let started = tokio::time::Instant::now();
        let asked_to_wait = wait > 0;
        // A 304 to a request that was not held is no reason to pause.
        let mut pause = if asked_to_wait {
            MIN_INTERVAL
        } else {
            Duration::ZERO
        };
        let outcome = poll(&http, &url, &cfg, wait, seen.as_deref()).await;
        wait = if outcome.is_ok() { cfg.wait_secs } else { 0 };
        match outcome {
            Ok(Poll::Unchanged { ready }) => {
                set_primary_up(ready);
                // A refused version stays the last error until a good one comes.
                let in_force = seen == applied;
                update(|s| {
                    s.primary_up = ready;
                    if in_force {
                        s.last_error = None;
                    }
                });
                backoff = MIN_INTERVAL;
            }
            Ok(Poll::Changed { body, tag, ready }) => {
                set_primary_up(ready);
                pause = AFTER_CHANGE;
                backoff = MIN_INTERVAL;
                // Whether it loads or not, this version need not come again.
                seen = Some(tag.clone());
                match apply(&live, &body).await {
                    Ok(()) => {
                        tracing::info!(etag = %tag, "cluster: applied the primary's state");
                        applied = Some(tag.clone());
                        metrics::counter!("dnsguard_cluster_syncs_total").increment(1);
                        let now = crate::querylog::format_time(crate::querylog::now_ms());
                        update(|s| {
                            s.primary_up = ready;
                            s.etag = Some(tag);
                            s.applied_at = Some(now);
                            s.last_error = None;
                        });
                    }
                    Err(e) => failed(&format!("the primary's state {tag} was refused: {e:#}")),
                }
            }
            Err(e) => {
                set_primary_up(false);
                failed(&format!("cannot reach the primary: {e:#}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        tokio::time::sleep_until(started + pause).await;
    }
}

fn failed(why: &str) {
    tracing::error!(error = %why, "cluster: keeping the last good state");
    metrics::counter!("dnsguard_cluster_sync_failures_total").increment(1);
    update(|s| {
        s.primary_up = crate::cluster::defers_new_domain_alerts();
        s.last_error = Some(why.to_owned());
    });
}

/// The primary's API token, read from `token_file` at each use (it may be replaced).
pub(super) fn token(cfg: &ClusterConfig) -> anyhow::Result<String> {
    use anyhow::Context;
    let path = cfg.token_file.as_deref().context("no cluster.token_file")?;
    let token =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(token.trim().to_owned())
}

enum Poll {
    Unchanged {
        ready: bool,
    },
    Changed {
        body: String,
        tag: String,
        ready: bool,
    },
}

async fn poll(
    http: &reqwest::Client,
    url: &str,
    cfg: &ClusterConfig,
    wait: u64,
    seen: Option<&str>,
) -> anyhow::Result<Poll> {
    use anyhow::Context;
    let mut req = http
        .get(url)
        .query(&[("wait", wait)])
        .bearer_auth(token(cfg)?)
        .timeout(Duration::from_secs(cfg.wait_secs + 10));
    if let Some(tag) = seen {
        req = req.header(reqwest::header::IF_NONE_MATCH, tag);
    }
    let resp = req.send().await?;
    let ready = resp
        .headers()
        .get(READY_HEADER)
        .is_some_and(|v| v.as_bytes() == b"true");
    match resp.status().as_u16() {
        304 => Ok(Poll::Unchanged { ready }),
        200 => {
            let tag = resp
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .context("the primary sent no ETag")?
                .to_owned();
            let body = resp.text().await?;
            Ok(Poll::Changed { body, tag, ready })
        }
        s => anyhow::bail!(
            "the primary answered {s}: {}",
            resp.text().await.unwrap_or_default().trim()
        ),
    }
}

/// The ETag of this node's own replicated sections (so an unchanged primary
/// answers the first request with 304).
fn own_etag(live: &Live) -> Option<String> {
    let text = std::fs::read_to_string(live.config_path.as_deref()?).ok()?;
    fragment(&text).ok().map(|f| etag(&f))
}

/// Merges `body` into the own file, loads, applies, then renames into place.
async fn apply(live: &Live, body: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let path = live
        .config_path
        .clone()
        .context("a secondary needs a config file (--config) to keep the replicated state in")?;
    let body = body.to_owned();
    let staged = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let own = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let merged = merge(&own, &body)?;
        Ok(crate::config::edit::Staged::write(&path, &merged)?)
    })
    .await??;
    live.apply(staged.config.clone()).await?;
    staged.commit()?;
    Ok(())
}
