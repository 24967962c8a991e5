//! Step 9's metric handles: the `/metrics` counters and histograms of answered
//! queries, registered once so a query costs a few atomic adds.

use std::sync::Arc;

use super::Source;
use crate::querylog::{self, Entry};

/// The `/metrics` counters of one answered query: a few atomic adds on handles
/// registered once (the upstream's label is looked up on the upstream path only,
/// which already paid for a network round trip).
pub(super) fn record(e: &Entry, source: &Source, elapsed: std::time::Duration) {
    let m = MetricHandles::get();
    let verdict = match e.verdict {
        querylog::Ruling::Allowed => 0,
        querylog::Ruling::Blocked => 1,
        querylog::Ruling::Allowlisted => 2,
    };
    m.queries[verdict][qtype_index(e.qtype)].increment(1);
    super::latency::record(elapsed);
    match source {
        Source::Cache | Source::Stale => m.cache_hits.increment(1),
        Source::Upstream(label) => {
            m.cache_misses.increment(1);
            upstream_histogram(label).record(elapsed.as_secs_f64());
        }
        Source::Failed(..) => {
            m.cache_misses.increment(1);
            m.upstream_errors.increment(1);
        }
        _ => {}
    }
    if e.flagged {
        m.tunnel_flags.increment(1);
    }
}

/// The upstream-duration histogram of `label`, registered once per thread and
/// upstream (a registration hashes and allocates the label).
fn upstream_histogram(label: &Arc<str>) -> metrics::Histogram {
    thread_local! {
        static HANDLES: std::cell::RefCell<Vec<(Arc<str>, metrics::Histogram)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    HANDLES.with(|h| {
        let mut h = h.borrow_mut();
        if let Some((_, handle)) = h.iter().find(|(l, _)| l == label) {
            return handle.clone();
        }
        let handle = metrics::histogram!(
            "dnsguard_upstream_duration_seconds",
            "upstream" => label.to_string()
        );
        // Upstreams are few; a reload with new labels starts the memo afresh.
        if h.len() >= 64 {
            h.clear();
        }
        h.push((label.clone(), handle.clone()));
        handle
    })
}

/// Query types with their own label; everything else is `other`.
const QTYPE_LABELS: [(u16, &str); 13] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (255, "ANY"),
    (0, "other"),
];

fn qtype_index(qtype: u16) -> usize {
    QTYPE_LABELS[..QTYPE_LABELS.len() - 1]
        .iter()
        .position(|(t, _)| *t == qtype)
        .unwrap_or(QTYPE_LABELS.len() - 1)
}

/// Metric handles registered once, the first time a query is recorded (after the
/// web server installed the recorder; without one they are no-ops).
struct MetricHandles {
    queries: [[metrics::Counter; QTYPE_LABELS.len()]; 3],
    cache_hits: metrics::Counter,
    cache_misses: metrics::Counter,
    upstream_errors: metrics::Counter,
    tunnel_flags: metrics::Counter,
}

impl MetricHandles {
    fn get() -> &'static MetricHandles {
        static HANDLES: std::sync::OnceLock<MetricHandles> = std::sync::OnceLock::new();
        HANDLES.get_or_init(|| {
            let verdicts = [
                querylog::Ruling::Allowed,
                querylog::Ruling::Blocked,
                querylog::Ruling::Allowlisted,
            ];
            MetricHandles {
                queries: verdicts.map(|v| {
                    QTYPE_LABELS.map(|(_, t)| {
                        metrics::counter!("dnsguard_queries_total", "verdict" => v.as_str(), "type" => t)
                    })
                }),
                cache_hits: metrics::counter!("dnsguard_cache_hits_total"),
                cache_misses: metrics::counter!("dnsguard_cache_misses_total"),
                upstream_errors: metrics::counter!("dnsguard_upstream_errors_total"),
                tunnel_flags: metrics::counter!("dnsguard_tunnel_flags_total"),
            }
        })
    }
}
