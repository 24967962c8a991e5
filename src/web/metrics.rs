//! `/metrics` in the Prometheus text format. The counters are recorded by the
//! DNS pipeline (`metrics::counter!` in its log step) and the list gauges on every
//! policy swap; the log writer's figures are read at scrape time.
//!
//! Prometheus scrapes with `[web] metrics_token` (`Authorization: Bearer …`); the
//! API token or a dashboard session work too. With neither token configured
//! nor a session, the endpoint answers 401.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::AppState;
use super::auth::{has_bearer, live_session};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once); `None` if another recorder is set.
///
/// Histogram samples wait in the recorder until `run_upkeep` folds them into
/// buckets; a background thread does that every few seconds so memory stays flat
/// whether or not anything scrapes `/metrics`.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets(&latency)
                .and_then(|b| b.install_recorder())
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()?;
            let upkeep = handle.clone();
            let spawned = crate::channel::spawn_background("metrics-upkeep", move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start metrics upkeep; histograms will grow until scraped");
            }
            Some(handle)
        })
        .clone()
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let allowed = st
        .metrics_token
        .as_deref()
        .is_some_and(|t| has_bearer(&headers, t))
        || has_bearer(&headers, &st.token)
        || live_session(&st, &headers).is_some();
    if !allowed {
        return (
            StatusCode::UNAUTHORIZED,
            "metrics need [web] metrics_token\n",
        )
            .into_response();
    }
    let Some(handle) = &st.metrics else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n",
        )
            .into_response();
    };
    let log = st.pipeline().log();
    metrics::gauge!("dnsguard_querylog_dropped").set(log.dropped() as f64);
    metrics::gauge!("dnsguard_querylog_write_errors").set(log.write_errors() as f64);
    metrics::gauge!("dnsguard_querylog_written").set(log.written() as f64);
    let mut text = handle.render();
    crate::pipeline::latency::render(&mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
