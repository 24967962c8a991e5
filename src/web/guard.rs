//! `/api/v1` handlers of the egress guard: the allowlist proposal (and applying
//! it), the weekly review and the recent alerts. The CLI's `allowlist learn` and
//! `report` call these when a running server holds the query log.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::manage::{ApiError, change_config};
use crate::guard::learn::{self, LearnRequest, Learned};
use crate::querylog::{self, StatsRequest};

async fn compute(st: &AppState, req: LearnRequest) -> Result<Learned, ApiError> {
    let log = st.pipeline().log().clone();
    let allowed = learn::allow_entries(&st.live.config.lock().groups, &req.group);
    tokio::task::spawn_blocking(move || learn::learn(&log, &req, &allowed, querylog::now_ms()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// `GET /api/v1/allowlist/learn?group=agents&since=7d[&client=agent-1]`: the
/// proposal for review (of one client of the group, with `client`).
pub async fn learn_get(
    State(st): State<AppState>,
    Query(req): Query<LearnRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(compute(&st, req).await?).into_response())
}

/// `POST /api/v1/allowlist/learn` (JSON `{group, client, since, until, enforce}`):
/// computes the proposal, adds it to the group's `allow` entries in the config
/// file (and with `enforce` sets `mode = "enforce"`) and applies it live (the
/// dashboard's change path).
pub async fn learn_apply(
    State(st): State<AppState>,
    Json(req): Json<LearnRequest>,
) -> Result<Response, ApiError> {
    let enforce = req.enforce;
    let mut learned = compute(&st, req).await?;
    let groups = st.live.config.lock().groups.clone();
    let mut added = 0;
    change_config(&st, |doc| {
        added = crate::config::edit::apply_learned(doc, &learned, &groups, enforce)
            .map_err(ApiError::BadRequest)?;
        Ok(())
    })
    .await?;
    tracing::info!(group = %learned.group, added, enforce, "learned allowlist applied");
    learned.applied = Some(added);
    learned.enforced = enforce;
    Ok(Json(learned).into_response())
}

/// `GET /api/v1/report?since=7d&top=20`: the weekly review.
pub async fn report(
    State(st): State<AppState>,
    Query(req): Query<StatsRequest>,
) -> Result<Response, ApiError> {
    let (since, until, top) = req.resolve(querylog::now_ms())?;
    let log = st.pipeline().log().clone();
    let cats = st.live.config.lock().guard_categories();
    let r = tokio::task::spawn_blocking(move || {
        crate::guard::report::report(&log, &cats, since, until, top)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(r).into_response())
}

/// `GET /api/v1/alerts/recent`: the latest alerts raised (newest first, at most
/// 200, since start).
pub async fn recent(State(st): State<AppState>) -> Response {
    let alerts = st
        .live
        .guard
        .as_ref()
        .map(|g| g.recent_alerts())
        .unwrap_or_default();
    Json(alerts).into_response()
}
