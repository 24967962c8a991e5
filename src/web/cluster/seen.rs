//! New-domain alerts once for the pair, across failovers: the two nodes' seen
//! sets ([`crate::guard::seen`]) are merged over the cluster channel.
//!
//! Each node logs the pairs it raised a new-domain alert for. The secondary,
//! with the primary's token, pushes its log to the primary
//! (`POST /api/v1/cluster/seen`) and pulls the primary's
//! (`GET /api/v1/cluster/seen?after=SEQ&wait=S`, held until the primary alerts
//! again); each node records the other's pairs as seen, so a pair alerted by
//! either node never alerts again. After a failover the secondary's outage
//! alerts reach the primary as soon as it answers again (the secondary retries
//! every 2 s at most), before keepalived hands the address back.
//!
//! All of it runs on tasks of its own: the DNS path never waits for it, and a
//! peer that is down or sends garbage changes nothing but this exchange.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::cluster::ClusterConfig;
use crate::guard::seen::{Seen, parse_key};
use crate::web::AppState;

/// The header that gives the cursor for the next pull.
pub const NEXT_HEADER: &str = "dnsguard-seen-next";
/// Pairs per request, both ways.
const PAGE: usize = 2000;
/// The first pause after a failed exchange, doubled up to [`MAX_RETRY`].
const MIN_RETRY: Duration = Duration::from_millis(250);
/// The longest pause after a failed exchange: a primary that comes back gets
/// the secondary's pairs within this, before keepalived's `rise` hands it the
/// address.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// Why a pushed batch is refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// A line is not `<time_ms> <client> <domain>`.
    #[error("line {line}: expected `<time_ms> <client> <domain>`")]
    Malformed {
        /// 1-based.
        line: usize,
    },
}

/// One `<time_ms> <client> <domain>` line.
fn parse_line(l: &str) -> Option<(u64, &str)> {
    let (time, key) = l.split_once(' ')?;
    Some((time.parse().ok()?, parse_key(key).map(|_| key)?))
}

/// Parses a pushed body: one `<time_ms> <client> <domain>` per line.
pub fn parse_push(body: &str) -> Result<Vec<(u64, &str)>, PushError> {
    body.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(l).ok_or(PushError::Malformed { line: i + 1 }))
        .collect()
}

/// This node's seen set, or the answer saying it has none.
fn seen_of(st: &AppState) -> Result<Arc<Seen>, Box<Response>> {
    st.live
        .guard
        .as_ref()
        .map(|g| g.seen().clone())
        .ok_or_else(|| {
            Box::new(
                (
                    StatusCode::CONFLICT,
                    "this node has no new-domain tracker\n",
                )
                    .into_response(),
            )
        })
}

fn internal(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
}

/// Query of `GET /api/v1/cluster/seen`.
#[derive(Debug, Deserialize)]
pub struct Since {
    /// The cursor: the last sequence number the peer has.
    #[serde(default)]
    after: u64,
    /// Seconds to wait for a new alert when there is none (at most 300).
    #[serde(default)]
    wait: u64,
}

/// `GET /api/v1/cluster/seen?after=SEQ[&wait=S]`: the pairs this node alerted
/// on after `SEQ`, one `<seq> <time_ms> <client> <domain>` per line, oldest
/// first, with the next cursor in [`NEXT_HEADER`]. With nothing new it waits up
/// to S s for an alert. A cursor beyond the log (this node lost its data)
/// starts again from the beginning.
pub async fn get_seen(State(st): State<AppState>, Query(q): Query<Since>) -> Response {
    let seen = match seen_of(&st) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(300));
    let mut logged = seen.logged();
    loop {
        // Marked seen before reading: an alert during the read wakes the wait.
        let newest = *logged.borrow_and_update();
        let after = if q.after > newest { 0 } else { q.after };
        let s = seen.clone();
        let page = match tokio::task::spawn_blocking(move || s.alerted_since(after, PAGE)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return internal(e),
            Err(e) => return internal(e),
        };
        if !page.is_empty()
            || tokio::time::timeout_at(deadline, logged.changed())
                .await
                .is_err()
        {
            let next = page.last().map_or(after, |a| a.seq).to_string();
            let mut body = String::new();
            for a in &page {
                body.push_str(&format!("{} {} {}\n", a.seq, a.time_ms, a.key));
            }
            return (
                [
                    (NEXT_HEADER, next.as_str()),
                    (header::CONTENT_TYPE.as_str(), "text/plain"),
                ],
                body,
            )
                .into_response();
        }
    }
}

/// `POST /api/v1/cluster/seen`: the peer's alerted pairs, one
/// `<time_ms> <client> <domain>` per line, recorded here as seen (no alert, now
/// or later). A malformed line refuses the whole batch (400).
pub async fn post_seen(State(st): State<AppState>, body: String) -> Response {
    let seen = match seen_of(&st) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Err(e) = parse_push(&body) {
        return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
    }
    let merged = tokio::task::spawn_blocking(move || -> Result<usize, String> {
        let mut new = 0;
        for (time, key) in parse_push(&body).map_err(|e| e.to_string())? {
            new += usize::from(seen.merge(key, time).map_err(|e| e.to_string())?);
        }
        Ok(new)
    })
    .await;
    match merged {
        Ok(Ok(n)) => {
            metrics::counter!("dnsguard_cluster_seen_merged_total").increment(n as u64);
            format!("{n} new\n").into_response()
        }
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// The secondary's side, until the task is dropped: pushes this node's alerted
/// pairs to the primary at `base` and pulls the primary's.
pub async fn sync(seen: Arc<Seen>, http: reqwest::Client, base: String, cfg: ClusterConfig) {
    let url = format!("{}/api/v1/cluster/seen", base.trim_end_matches('/'));
    let mut local = seen.logged();
    let mut cursors = Cursors::default();
    let mut retry = MIN_RETRY;
    loop {
        match round(&seen, &http, &url, &cfg, &mut cursors, &mut local).await {
            Ok(()) => retry = MIN_RETRY,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cluster: cannot exchange seen domains with the primary");
                metrics::counter!("dnsguard_cluster_seen_sync_failures_total").increment(1);
                // The primary may come back without its data: push everything again.
                cursors.pushed = 0;
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

/// How far each log has been exchanged.
#[derive(Debug, Default)]
struct Cursors {
    /// The last sequence number of this node's log the primary has.
    pushed: u64,
    /// The primary's cursor for the next pull.
    pulled: u64,
}

/// Pushes what is new here, then pulls what is new there (held until the
/// primary alerts, or cut short when this node does).
async fn round(
    seen: &Arc<Seen>,
    http: &reqwest::Client,
    url: &str,
    cfg: &ClusterConfig,
    cursors: &mut Cursors,
    local: &mut tokio::sync::watch::Receiver<u64>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let token = super::follow::token(cfg)?;
    local.borrow_and_update();
    loop {
        let s = seen.clone();
        let after = cursors.pushed;
        let page = tokio::task::spawn_blocking(move || s.alerted_since(after, PAGE)).await??;
        let Some(last) = page.last().map(|a| a.seq) else {
            break;
        };
        let body: String = page
            .iter()
            .map(|a| format!("{} {}\n", a.time_ms, a.key))
            .collect();
        let resp = http
            .post(url)
            .bearer_auth(&token)
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        let status = resp.status();
        anyhow::ensure!(
            status.is_success(),
            "the primary refused our pairs ({status}): {}",
            resp.text().await.unwrap_or_default().trim()
        );
        cursors.pushed = last;
        super::follow::update(|s| s.seen_pushed += page.len() as u64);
    }
    let pull = async {
        let resp = http
            .get(url)
            .query(&[("after", cursors.pulled), ("wait", cfg.wait_secs)])
            .bearer_auth(&token)
            .timeout(Duration::from_secs(cfg.wait_secs + 10))
            .send()
            .await?;
        let status = resp.status();
        anyhow::ensure!(status.is_success(), "the primary answered {status}");
        let next: u64 = resp
            .headers()
            .get(NEXT_HEADER)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .context("the primary sent no cursor")?;
        Ok((next, resp.text().await?))
    };
    let (next, body) = tokio::select! {
        r = pull => r?,
        // An alert here: push it now.
        _ = local.changed() => return Ok(()),
    };
    let s = seen.clone();
    let merged = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        // All checked before any is taken.
        let mut pairs = Vec::new();
        for line in body.lines().filter(|l| !l.is_empty()) {
            let pair = line
                .split_once(' ')
                .and_then(|(_seq, rest)| parse_line(rest));
            pairs
                .push(pair.with_context(|| format!("the primary sent a malformed line {line:?}"))?);
        }
        // Counted when new here: a primary that sends its log again from the
        // start (it lost our cursor) adds nothing.
        let mut new = 0;
        for (time, key) in &pairs {
            new += u64::from(s.merge(key, *time)?);
        }
        Ok(new)
    })
    .await??;
    cursors.pulled = next;
    super::follow::update(|s| s.seen_pulled += merged);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_bodies_are_checked_line_by_line() {
        let ok = parse_push("1 127.0.0.2 example.com\n\n2 ::1 example.org\n").unwrap();
        assert_eq!(ok, [(1, "127.0.0.2 example.com"), (2, "::1 example.org")]);
        for (bad, line) in [
            ("1 127.0.0.2 example.com\nx 127.0.0.2 a.com\n", 2),
            ("1 127.0.0.2\n", 1),
            ("1 nobody example.com\n", 1),
            ("1\n", 1),
            ("1 127.0.0.2 a\u{7}b.com\n", 1),
        ] {
            assert!(
                matches!(parse_push(bad), Err(PushError::Malformed { line: l }) if l == line),
                "{bad:?}"
            );
        }
    }
}
