//! `/api/v1` handlers, shared by the CLI and the dashboard.

use std::io::Write;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::{AppState, auth, encrypted, guard, manage, metrics, pages};
use crate::querylog::{self, Cursor, Entry, LogRequest, Order, OutputFormat, Stats, StatsRequest};

/// Every route: pages, `/api/v1` (shared by the dashboard and the CLI) and
/// `/metrics`. One gate ([`auth::require_auth`]) guards them all; only the login
/// page, its assets and `/api/v1/health` are public. Every response gets the
/// security headers.
pub fn router(state: AppState) -> Router {
    use axum::routing::{post, put};
    Router::new()
        .route("/api/v1/health", get(crate::web::cluster::health::health))
        .route("/api/v1/cluster", get(crate::web::cluster::follow::status))
        .route(
            "/api/v1/cluster/state",
            get(crate::web::cluster::state::get_state),
        )
        .route(
            "/api/v1/cluster/seen",
            get(crate::web::cluster::seen::get_seen).post(crate::web::cluster::seen::post_seen),
        )
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/api/v1/logout", post(auth::logout))
        .route("/api/v1/session", get(auth::session))
        .route("/api/v1/querylog", get(query_log))
        .route("/api/v1/querylog/follow", get(follow))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/timeseries", get(manage::timeseries))
        .route("/api/v1/alerts", get(manage::alerts))
        .route("/api/v1/alerts/recent", get(guard::recent))
        .route(
            "/api/v1/allowlist/learn",
            get(guard::learn_get).post(guard::learn_apply),
        )
        .route("/api/v1/report", get(guard::report))
        .route("/api/v1/check", get(manage::check))
        .route("/api/v1/lists", get(manage::lists).post(manage::add_list))
        .route("/api/v1/lists/update", post(manage::update_lists))
        .route(
            "/api/v1/lists/{name}",
            axum::routing::delete(manage::remove_list),
        )
        .route("/api/v1/groups", get(manage::groups))
        .route(
            "/api/v1/groups/{name}",
            put(manage::put_group).delete(manage::remove_group),
        )
        .route(
            "/api/v1/groups/{name}/rules",
            post(manage::add_rule).delete(manage::remove_rule),
        )
        .route(
            "/api/v1/settings",
            get(manage::settings).put(manage::put_settings),
        )
        .route("/api/v1/encrypted", get(encrypted::encrypted))
        .route("/api/v1/mobileconfig", get(encrypted::mobileconfig))
        .route("/metrics", get(metrics::metrics))
        .fallback(get(pages::asset))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_auth,
        ))
        .layer(middleware::from_fn(pages::security_headers))
        .with_state(state)
}

fn bad_request(e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
}

/// Streams matching entries in the requested format; memory stays constant
/// whatever the size of the export.
async fn query_log(State(st): State<AppState>, Query(req): Query<LogRequest>) -> Response {
    let (filter, format) = match (req.filter(querylog::now_ms()), req.format()) {
        (Ok(f), Ok(fmt)) => (f, fmt),
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let log = st.pipeline().log().clone();
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        if let Err(e) = querylog::write_entries(format, log.query(&filter), out) {
            tracing::debug!(error = %e, "query-log export ended early");
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let content_type = match format {
        OutputFormat::Json => "application/x-ndjson",
        OutputFormat::Csv => "text/csv; charset=utf-8",
        OutputFormat::Table => "text/plain; charset=utf-8",
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response()
}

const CHUNK: usize = 64 * 1024;

/// Sends what is written to a response body in 64 KiB chunks; fails (ending the
/// export) when the client has gone away.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Where `/api/v1/querylog/follow` continues; the filters are a [`LogRequest`]
/// in the same query string (two extractors rather than `#[serde(flatten)]`,
/// which breaks typed fields such as `blocked=true` in query strings).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FollowRequest {
    /// Cursor from the previous answer; none = start at the end of the log.
    after: Option<String>,
}

/// Entries newer than a cursor, for `query-log --follow` and the live tail.
#[derive(Debug, Serialize, Deserialize)]
pub struct FollowReply {
    /// Pass this as `after` next time.
    pub cursor: String,
    /// New matching entries, oldest first (each with its `ede`, when it had one).
    #[serde(serialize_with = "entries_with_ede")]
    pub entries: Vec<Entry>,
}

fn entries_with_ede<S: serde::Serializer>(entries: &[Entry], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(entries.iter().map(querylog::format::JsonEntry::new))
}

async fn follow(
    State(st): State<AppState>,
    Query(req): Query<FollowRequest>,
    Query(log_req): Query<LogRequest>,
) -> Response {
    let mut filter = match log_req.filter(querylog::now_ms()) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    filter.order = Order::OldestFirst;
    filter.limit = Some(filter.limit.unwrap_or(1000).min(1000));
    let log = st.pipeline().log().clone();
    let after = match req.after.as_deref().map(str::parse::<Cursor>).transpose() {
        Ok(c) => c,
        Err(e) => return bad_request(e),
    };
    let reply =
        tokio::task::spawn_blocking(move || -> Result<FollowReply, querylog::QueryLogError> {
            let Some(cursor) = after else {
                let end = log.end_cursor()?;
                return Ok(FollowReply {
                    cursor: end.to_string(),
                    entries: Vec::new(),
                });
            };
            let mut it = log.query_after(cursor, &filter);
            let entries = it.by_ref().collect::<Result<Vec<Entry>, _>>()?;
            Ok(FollowReply {
                cursor: it.cursor().to_string(),
                entries,
            })
        })
        .await;
    match reply {
        Ok(Ok(r)) => axum::Json(r).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `dnsguard stats` as JSON: the period's figures plus the log writer's health.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatsReply {
    /// Counts and top lists.
    #[serde(flatten)]
    pub stats: Stats,
    /// Entries the writer dropped because it fell behind (since start).
    pub log_dropped: u64,
    /// Write errors of the log (since start).
    pub log_write_errors: u64,
    /// The last write error, if any.
    pub log_last_error: Option<String>,
}

async fn stats(State(st): State<AppState>, Query(req): Query<StatsRequest>) -> Response {
    let (since, until, top) = match req.resolve(querylog::now_ms()) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let log = st.pipeline().log().clone();
    let result = tokio::task::spawn_blocking(move || {
        log.stats(since, until, top).map(|stats| StatsReply {
            stats,
            log_dropped: log.dropped(),
            log_write_errors: log.write_errors(),
            log_last_error: log.last_error(),
        })
    })
    .await;
    match result {
        Ok(Ok(r)) => axum::Json(r).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
