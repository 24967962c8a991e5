//! `/api/v1` handlers that read and change the configuration (lists, groups,
//! allow/deny entries, settings), check a name, and summarise alerts and the
//! time series for the overview chart.
//!
//! Every change goes the same way ([`change_config`]): edit the TOML document and
//! validate it ([`edit::edit`], the CLI's errors), stage the new file and load it
//! as SIGHUP would ([`edit::Staged`]), compile and swap the policy through
//! [`crate::live::Live::apply`] (the SIGHUP path), then rename the new file into
//! place. A change that fails any step
//! leaves both the file and the running server as they were.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use toml_edit::DocumentMut;

use super::AppState;
use crate::config::edit::{self, EditError, RuleKind};
use crate::filter::{Action, BlockReason, GroupConfig, ListConfig, ListKind};
use crate::querylog::{self, Entry, LogRequest, Order};

/// An API failure: status and a message shown to the user.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input, including a configuration the change would make invalid.
    #[error("{0}")]
    BadRequest(String),
    /// No such list or group.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state (exists, no config file).
    #[error("{0}")]
    Conflict(String),
    /// Something failed on the server.
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::NotFound(m) => ApiError::NotFound(m),
            EditError::Exists(m) => ApiError::Conflict(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<edit::CommitError> for ApiError {
    fn from(e: edit::CommitError) -> Self {
        match e {
            edit::CommitError::Edit(e) => e.into(),
            edit::CommitError::Invalid(e) => ApiError::BadRequest(e.to_string()),
            edit::CommitError::Io(m) => ApiError::Internal(m),
        }
    }
}

impl From<querylog::QueryLogError> for ApiError {
    fn from(e: querylog::QueryLogError) -> Self {
        match e {
            querylog::QueryLogError::Parse(m) => ApiError::BadRequest(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

fn join_err(e: tokio::task::JoinError) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Applies `change` to the config file, validates, applies live, persists.
pub(crate) async fn change_config(
    st: &AppState,
    change: impl FnOnce(&mut DocumentMut) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let _one_at_a_time = st.edit_lock.lock().await;
    if let Some(why) = crate::web::cluster::refuse_edit(&st.live.config.lock()) {
        return Err(ApiError::Conflict(why));
    }
    let path: PathBuf = st.live.config_path.clone().ok_or_else(|| {
        ApiError::Conflict(
            "the server runs on the embedded default configuration; start it with --config FILE to change settings".into(),
        )
    })?;
    let (new_text, ()) = edit::edit(&path, change)?;
    // Load it as SIGHUP would, apply, and only then rename it into place.
    let staged = tokio::task::spawn_blocking(move || edit::Staged::write(&path, &new_text))
        .await
        .map_err(join_err)??;
    st.live
        .apply(staged.config.clone())
        .await
        .map_err(|e| ApiError::BadRequest(format!("{e:#}")))?;
    staged.commit()?;
    // The file now says what is in force: a secondary may fetch it.
    st.live.announce_change();
    Ok(())
}

fn ok() -> Response {
    Json(serde_json::json!({ "ok": true })).into_response()
}

// ------------------------------------------------------------------ lists

/// One list for the lists page.
#[derive(Debug, Serialize)]
struct ListView {
    #[serde(flatten)]
    config: ListConfig,
    entries: usize,
    invalid: usize,
    invalid_samples: Vec<(u32, String)>,
    missing: bool,
    #[serde(flatten)]
    status: crate::lists::ListStatus,
}

/// `GET /api/v1/lists`: configured lists with their counts and update status.
pub async fn lists(State(st): State<AppState>) -> Response {
    let cfg = st.live.config.lock().clone();
    let policy = st.live.pipeline.policy();
    let stats: HashMap<&str, &crate::filter::ListStats> = policy
        .filter
        .list_stats()
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let out: Vec<ListView> = cfg
        .lists
        .iter()
        .map(|l| {
            let s = stats.get(l.name.as_str());
            ListView {
                config: l.clone(),
                entries: s.map_or(0, |s| s.entries),
                invalid: s.map_or(0, |s| s.invalid),
                invalid_samples: s.map(|s| s.invalid_samples.clone()).unwrap_or_default(),
                missing: s.is_none_or(|s| s.missing),
                status: st.live.lists.status(&l.name),
            }
        })
        .collect();
    Json(out).into_response()
}

/// Body of `POST /api/v1/lists`.
#[derive(Debug, Deserialize)]
pub struct NewList {
    name: String,
    source: String,
    #[serde(default)]
    kind: Option<ListKind>,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// `POST /api/v1/lists`: adds a list (a URL list is downloaded first; a file
/// must be under `DATA_DIR/lists` or `[list_updates] allowed_dirs`).
pub async fn add_list(
    State(st): State<AppState>,
    Json(req): Json<NewList>,
) -> Result<Response, ApiError> {
    let d = ListConfig::default();
    let list = ListConfig {
        name: req.name.trim().to_owned(),
        source: req.source.trim().to_owned(),
        enabled: req.enabled.unwrap_or(true),
        kind: req.kind.unwrap_or(d.kind),
        groups: req.groups.filter(|g| !g.is_empty()).unwrap_or(d.groups),
    };
    if list.name.is_empty() {
        return Err(ApiError::BadRequest("the list needs a name".into()));
    }
    // A list file only from an allowed directory, and only a regular file within
    // the size cap: the dashboard must not become a way to read any file.
    let list = {
        let lists = st.live.lists.clone();
        let allowed = st.live.config.lock().list_updates.allowed_dirs.clone();
        tokio::task::spawn_blocking(move || {
            lists
                .check_api_source(&list.source, &allowed)
                .map(|source| ListConfig { source, ..list })
        })
        .await
        .map_err(join_err)?
        .map_err(|e| ApiError::BadRequest(e.to_string()))?
    };
    let mut warning = None;
    if list.enabled
        && let Err(e) = st.live.lists.update(&list).await
    {
        warning = Some(format!("download failed: {e}"));
    }
    change_config(&st, |doc| Ok(edit::add_list(doc, &list)?)).await?;
    Ok(Json(serde_json::json!({ "ok": true, "warning": warning })).into_response())
}

/// `DELETE /api/v1/lists/{name}`.
pub async fn remove_list(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    change_config(&st, |doc| Ok(edit::remove_list(doc, &name)?)).await?;
    Ok(ok())
}

/// Query of `POST /api/v1/lists/update`.
#[derive(Debug, Default, Deserialize)]
pub struct UpdateQuery {
    name: Option<String>,
}

/// `POST /api/v1/lists/update[?name=N]`: downloads URL lists now and applies them
/// ([`crate::live::Live::update_lists`]); the reply has each list's outcome.
pub async fn update_lists(
    State(st): State<AppState>,
    Query(q): Query<UpdateQuery>,
) -> Result<Response, ApiError> {
    let results = st
        .live
        .update_lists(q.name.as_deref())
        .await
        .map_err(|e| ApiError::Internal(format!("{e:#}")))?;
    if let Some(n) = &q.name
        && results.is_empty()
    {
        return Err(ApiError::NotFound(format!("no enabled list named {n:?}")));
    }
    let results: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .map(|(name, r)| {
            let r = match r {
                Ok(u) => format!("{u:?}"),
                Err(e) => format!("failed: {e} (kept the last good copy)"),
            };
            (name, r.into())
        })
        .collect();
    Ok(Json(results).into_response())
}

// ----------------------------------------------------------------- groups

/// One group for the groups page (`implicit` = `default` without a table).
#[derive(Debug, Serialize)]
struct GroupView {
    #[serde(flatten)]
    config: GroupConfig,
    implicit: bool,
    /// Every list that applies to the group, as the filter applies them.
    lists: Vec<String>,
    /// Those of `lists` that apply without naming the group (`doh-resolvers`
    /// on allowlist-only groups).
    implicit_lists: Vec<String>,
}

/// `GET /api/v1/groups`: every group, `default` first, with the lists applying to it.
pub async fn groups(State(st): State<AppState>) -> Response {
    let cfg = st.live.config.lock().clone();
    let mut out = Vec::new();
    if !cfg
        .groups
        .iter()
        .any(|g| g.name == crate::filter::DEFAULT_GROUP)
    {
        out.push(GroupView {
            config: GroupConfig {
                name: crate::filter::DEFAULT_GROUP.into(),
                ..GroupConfig::default()
            },
            implicit: true,
            lists: Vec::new(),
            implicit_lists: Vec::new(),
        });
    }
    out.extend(cfg.groups.iter().map(|g| GroupView {
        config: g.clone(),
        implicit: false,
        lists: Vec::new(),
        implicit_lists: Vec::new(),
    }));
    let names = |f: &dyn Fn(&crate::filter::ListConfig) -> bool| -> Vec<String> {
        cfg.lists
            .iter()
            .filter(|l| f(l))
            .map(|l| l.name.clone())
            .collect()
    };
    for g in &mut out {
        g.lists = names(&|l| l.applies_to(&g.config));
        g.implicit_lists = names(&|l| l.applies_implicitly_to(&g.config));
    }
    out.sort_by_key(|g| g.config.name != crate::filter::DEFAULT_GROUP);
    Json(out).into_response()
}

/// `PUT /api/v1/groups/{name}`: creates or replaces a group's settings.
pub async fn put_group(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Json(mut g): Json<GroupConfig>,
) -> Result<Response, ApiError> {
    g.name = name.trim().to_owned();
    if g.name.is_empty() {
        return Err(ApiError::BadRequest("the group needs a name".into()));
    }
    change_config(&st, |doc| Ok(edit::put_group(doc, &g)?)).await?;
    Ok(ok())
}

/// `DELETE /api/v1/groups/{name}`.
pub async fn remove_group(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    change_config(&st, |doc| Ok(edit::remove_group(doc, &name)?)).await?;
    Ok(ok())
}

/// Body of the rule endpoints: allow or deny `entry` (list-line syntax) for a group.
#[derive(Debug, Deserialize)]
pub struct RuleChange {
    action: RuleKind,
    entry: String,
}

/// `POST /api/v1/groups/{name}/rules`: adds an allow or deny entry (e.g. from a
/// name clicked in the query log); the opposite entry is removed.
pub async fn add_rule(
    State(st): State<AppState>,
    Path(group): Path<String>,
    Json(r): Json<RuleChange>,
) -> Result<Response, ApiError> {
    let entry = r.entry.trim().to_owned();
    if entry.is_empty() {
        return Err(ApiError::BadRequest("the entry is empty".into()));
    }
    change_config(&st, |doc| {
        Ok(edit::add_rule(doc, &group, r.action, &entry)?)
    })
    .await?;
    Ok(ok())
}

/// `DELETE /api/v1/groups/{name}/rules`: removes an allow or deny entry.
pub async fn remove_rule(
    State(st): State<AppState>,
    Path(group): Path<String>,
    Json(r): Json<RuleChange>,
) -> Result<Response, ApiError> {
    change_config(&st, |doc| {
        Ok(edit::remove_rule(doc, &group, r.action, r.entry.trim())?)
    })
    .await?;
    Ok(ok())
}

// --------------------------------------------------------------- settings

/// The settings page's fields.
#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Settings {
    /// `resolver.mode` (read only here).
    pub mode: Option<String>,
    /// `resolver.upstreams`.
    pub upstreams: Option<Vec<String>>,
    /// `resolver.strategy`.
    pub strategy: Option<String>,
    /// The `default` group's `block_mode`.
    pub block_mode: Option<String>,
    /// `query_log.retention_days`.
    pub retention_days: Option<u32>,
    /// `query_log.privacy`.
    pub privacy: Option<String>,
    /// `server.listen` (read only here).
    pub listen: Option<Vec<String>>,
    /// The config file, if any (read only).
    pub config_path: Option<String>,
}

fn current_settings(st: &AppState) -> Settings {
    let cfg = st.live.config.lock().clone();
    let default = cfg
        .groups
        .iter()
        .find(|g| g.name == crate::filter::DEFAULT_GROUP)
        .cloned()
        .unwrap_or_default();
    let s = |v: serde_json::Value| v.as_str().map(str::to_owned);
    Settings {
        mode: Some(format!("{:?}", cfg.resolver.mode).to_lowercase()),
        upstreams: Some(
            cfg.resolver
                .upstreams
                .iter()
                .map(|u| u.to_string())
                .collect(),
        ),
        strategy: Some(format!("{:?}", cfg.resolver.strategy).to_lowercase()),
        block_mode: s(serde_json::to_value(default.block_mode).unwrap_or_default()),
        retention_days: Some(cfg.query_log.retention_days),
        privacy: Some(cfg.query_log.privacy.to_string()),
        listen: Some(cfg.server.listen.iter().map(ToString::to_string).collect()),
        config_path: st
            .live
            .config_path
            .as_ref()
            .map(|p| p.display().to_string()),
    }
}

/// `GET /api/v1/settings`.
pub async fn settings(State(st): State<AppState>) -> Response {
    Json(current_settings(&st)).into_response()
}

/// `PUT /api/v1/settings`: changes the given fields. The block mode applies at
/// once; upstreams, strategy, retention and privacy are saved and apply after a
/// restart (the reply lists them).
pub async fn put_settings(
    State(st): State<AppState>,
    Json(s): Json<Settings>,
) -> Result<Response, ApiError> {
    let before = current_settings(&st);
    let mut restart = Vec::new();
    if s.upstreams.is_some() && s.upstreams != before.upstreams {
        restart.push("resolver.upstreams");
    }
    if s.strategy.is_some() && s.strategy != before.strategy {
        restart.push("resolver.strategy");
    }
    if s.retention_days.is_some() && s.retention_days != before.retention_days {
        restart.push("query_log.retention_days");
    }
    if s.privacy.is_some() && s.privacy != before.privacy {
        restart.push("query_log.privacy");
    }
    change_config(&st, |doc| {
        if let Some(u) = &s.upstreams {
            edit::set(doc, "resolver", "upstreams", edit::string_array(u))?;
        }
        if let Some(v) = &s.strategy {
            edit::set(doc, "resolver", "strategy", v.as_str().into())?;
        }
        if let Some(v) = s.retention_days {
            edit::set(doc, "query_log", "retention_days", i64::from(v).into())?;
        }
        if let Some(v) = &s.privacy {
            edit::set(doc, "query_log", "privacy", v.as_str().into())?;
        }
        if let Some(mode) = &s.block_mode {
            let mut g = st
                .live
                .config
                .lock()
                .groups
                .iter()
                .find(|g| g.name == crate::filter::DEFAULT_GROUP)
                .cloned()
                .unwrap_or_else(|| GroupConfig {
                    name: crate::filter::DEFAULT_GROUP.into(),
                    ..GroupConfig::default()
                });
            g.block_mode = serde_json::from_value(serde_json::Value::String(mode.clone()))
                .map_err(|_| ApiError::BadRequest(format!("unknown block mode {mode:?}")))?;
            edit::put_group(doc, &g)?;
        }
        Ok(())
    })
    .await?;
    Ok(Json(serde_json::json!({ "ok": true, "restart_required": restart })).into_response())
}

// ------------------------------------------------------------------ check

/// Query of `GET /api/v1/check`.
#[derive(Debug, Deserialize)]
pub struct CheckQuery {
    name: String,
    #[serde(default)]
    client: Option<String>,
    #[serde(default, rename = "type")]
    qtype: Option<String>,
    /// Also resolve and check the answer (CNAME cloaking, rebinding, answer rules).
    #[serde(default)]
    resolve: Option<bool>,
}

/// `GET /api/v1/check?name=N[&client=IP][&type=T][&resolve=true]`: what the server
/// would answer, and why (the `dnsguard check` verdict).
pub async fn check(
    State(st): State<AppState>,
    Query(q): Query<CheckQuery>,
) -> Result<Response, ApiError> {
    let asker = q.client.as_deref().filter(|c| !c.is_empty());
    let (client, identity) = st
        .live
        .pipeline
        .policy()
        .identities()
        .asker(asker.unwrap_or("127.0.0.1"))
        .ok_or_else(|| {
            ApiError::BadRequest("client is neither an IP address nor a client name".into())
        })?;
    let qtype = crate::dns::parse_qtype(q.qtype.as_deref().unwrap_or("A"))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let name = crate::name::normalize(q.name.trim())
        .map_err(|e| ApiError::BadRequest(format!("{:?} is not a valid name: {e}", q.name)))?
        .into_owned();
    let cfg = st.live.config.lock().clone();
    let lists = st.live.lists.clone();
    let pipeline = st.live.pipeline.clone();
    let checked = pipeline
        .check_as(
            client,
            identity,
            &name,
            qtype.into(),
            q.resolve.unwrap_or(false),
        )
        .await;
    let policy = pipeline.policy();
    let reply = tokio::task::spawn_blocking(move || {
        let texts = crate::live::read_texts(&cfg, &lists);
        let refs: Vec<_> = texts
            .iter()
            .map(|(name, t)| crate::filter::ListText {
                name,
                text: &t.text,
            })
            .collect();
        let x = checked.verdict.map(|v| policy.filter.explain(&v, &refs));
        let action = match x.as_ref().map(|x| x.action) {
            None => checked.decision.as_str(),
            Some(Action::Pass) => "pass",
            Some(Action::Allow) => "allowed",
            Some(Action::Block(BlockReason::Rule)) => "blocked",
            Some(Action::Block(BlockReason::NotAllowlisted)) => "not-allowlisted",
        };
        serde_json::json!({
            "name": name,
            "client": client,
            "decision": checked.decision.as_str(),
            "rcode": u16::from(checked.rcode),
            "answer": checked.answer,
            "action": action,
            "group": x.as_ref().map(|x| x.group.clone()),
            "source": x.as_ref().and_then(|x| x.source_name.clone()),
            "line": x.as_ref().and_then(|x| x.line),
            "rule": x.as_ref().and_then(|x| x.rule_text.clone()),
            "note": checked.note.clone().or_else(|| x.as_ref().and_then(|x| x.note.clone())),
            "text": format!("{name}: {}", checked.describe(x.as_ref())),
        })
    })
    .await
    .map_err(join_err)?;
    Ok(Json(reply).into_response())
}

// ---------------------------------------------------------------- alerts

/// Flags of one domain or client.
#[derive(Debug, Default, Serialize)]
struct AlertGroup {
    key: String,
    count: u64,
    max_score: f32,
    last_ms: u64,
    /// The newest reason text of each kind of evidence (a tunnel's queries
    /// differ only in their figures: one text, not one per query).
    reasons: Vec<String>,
    /// Every kind of evidence seen ([`crate::detect::Reasons::labels`]).
    kinds: Vec<&'static str>,
    /// The highest confidence level of the flags (none for flags logged
    /// before levels).
    max_level: Option<crate::detect::Level>,
    clients_or_domains: Vec<String>,
    /// The label sets `reasons` has a text for.
    #[serde(skip)]
    shown: Vec<Vec<&'static str>>,
}

fn bump(
    map: &mut HashMap<String, AlertGroup>,
    key: &str,
    other: &str,
    e: &Entry,
    reason: &str,
    labels: &[&'static str],
) {
    let g = map.entry(key.to_owned()).or_insert_with(|| AlertGroup {
        key: key.to_owned(),
        ..AlertGroup::default()
    });
    g.count += 1;
    g.max_score = g.max_score.max(e.tunnel_score);
    g.max_level = g.max_level.max(e.tunnel.as_ref().and_then(|r| r.level));
    g.last_ms = g.last_ms.max(e.time_ms);
    for l in labels {
        if !g.kinds.contains(l) {
            g.kinds.push(l);
        }
    }
    // Entries of an old format have no labels: their texts count as distinct.
    let new_kind = labels.is_empty() || !g.shown.iter().any(|s| s == labels);
    if !reason.is_empty()
        && new_kind
        && g.reasons.len() < 5
        && !g.reasons.iter().any(|r| r == reason)
    {
        g.reasons.push(reason.to_owned());
        g.shown.push(labels.to_vec());
    }
    if g.clients_or_domains.len() < 5 && !g.clients_or_domains.iter().any(|c| c == other) {
        g.clients_or_domains.push(other.to_owned());
    }
}

fn sorted(map: HashMap<String, AlertGroup>) -> Vec<AlertGroup> {
    let mut v: Vec<_> = map.into_values().collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    v.truncate(100);
    v
}

/// `GET /api/v1/alerts?since=24h`: tunnel-flagged queries per registrable domain
/// and per client (a configured client by its name, else its address; with the
/// kinds of evidence, one reason text per kind and the
/// top score) plus the latest 100 flags, each with its kinds of evidence.
pub async fn alerts(
    State(st): State<AppState>,
    Query(req): Query<LogRequest>,
) -> Result<Response, ApiError> {
    let mut filter = LogRequest {
        flagged: true,
        limit: Some(10_000),
        ..req
    }
    .filter(querylog::now_ms())?;
    filter.order = Order::NewestFirst;
    let log = st.pipeline().log().clone();
    let reply = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, ApiError> {
        let mut domains = HashMap::new();
        let mut clients = HashMap::new();
        let mut recent = Vec::new();
        let mut total = 0u64;
        for e in log.query(&filter) {
            let e = e?;
            total += 1;
            let reason = e
                .rule
                .strip_prefix("tunnel: ")
                .unwrap_or(&e.rule)
                .to_owned();
            let domain = psl::domain_str(&e.name).unwrap_or(&e.name).to_owned();
            // A configured client by its name, as the query log's top clients.
            let client = crate::querylog::Client::of(&e).to_string();
            let labels = e.tunnel.as_ref().map(|r| r.labels()).unwrap_or_default();
            bump(&mut domains, &domain, &client, &e, &reason, &labels);
            bump(&mut clients, &client, &domain, &e, &reason, &labels);
            if recent.len() < 100 {
                let mut row = serde_json::to_value(&e).unwrap_or_default();
                row["kinds"] = serde_json::json!(labels);
                recent.push(row);
            }
        }
        Ok(serde_json::json!({
            "total": total,
            "domains": sorted(domains),
            "clients": sorted(clients),
            "recent": recent,
        }))
    })
    .await
    .map_err(join_err)??;
    Ok(Json(reply).into_response())
}

// ------------------------------------------------------------ time series

/// Query of `GET /api/v1/timeseries`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SeriesQuery {
    since: Option<String>,
    until: Option<String>,
    /// Bucket length in minutes; default: the period in about 96 buckets.
    bucket: Option<u64>,
}

/// `GET /api/v1/timeseries?since=24h[&bucket=15]`: counts per bucket, from the
/// query log's per-minute aggregates.
pub async fn timeseries(
    State(st): State<AppState>,
    Query(q): Query<SeriesQuery>,
) -> Result<Response, ApiError> {
    let now = querylog::now_ms();
    let (since, until, _) = querylog::StatsRequest {
        since: q.since.or(Some("24h".into())),
        until: q.until,
        top: None,
    }
    .resolve(now)?;
    let span_min = (until - since).div_ceil(60_000);
    let bucket = q.bucket.unwrap_or_else(|| span_min.div_ceil(96)).max(1);
    let log = st.pipeline().log().clone();
    let points = tokio::task::spawn_blocking(move || log.series(since, until, bucket))
        .await
        .map_err(join_err)??;
    Ok(Json(serde_json::json!({
        "since_ms": since,
        "until_ms": until,
        "bucket_ms": bucket * 60_000,
        "points": points,
    }))
    .into_response())
}
