//! A highly available pair: two dnsguards behind one virtual address that
//! keepalived (VRRP) moves between them. dnsguard adds what keepalived cannot do:
//!
//! The settings and the node's shared state live here, low in the crate (the
//! configuration, the guard and the pipeline read them); the HTTP side and the
//! secondary's follower are in `web::cluster`:
//!
//! * `health.rs`: `GET /api/v1/health`, whether this node is ready to hold the
//!   virtual address (its own UDP listener answers a real query through the
//!   pipeline), for keepalived's `track_script`;
//! * `state.rs`: the replicated sections of the configuration file (the
//!   primary's `GET /api/v1/cluster/state`, with an ETag and a long-poll), and
//!   how a secondary puts them into its own file;
//! * `follow.rs`: the secondary's side (`[cluster] primary`): pulls the state
//!   whenever it changes, validates it and applies it as SIGHUP does; a broken
//!   or unreachable primary leaves it on its last good state.
//!
//! New-domain alerts fire once for the pair: a secondary records the pairs it
//! sees but raises no new-domain alert while its primary answers the long-poll
//! and reports itself ready ([`defers_new_domain_alerts`]); and the two nodes
//! merge the pairs they alerted on (`web::cluster::seen`), so a pair alerted by
//! either is not alerted again after a failover.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Deserialize;

/// `[cluster]`: this node's place in a pair. Without `primary` the node stands
/// alone (or is the primary: any node serves its state to an authenticated peer).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The primary's API base URL (`https://10.0.0.2:8080`, or `http://` on a
    /// trusted link); set = this node is a secondary.
    pub primary: Option<String>,
    /// A file holding the primary's API token (its `DATA_DIR/api-token`).
    pub token_file: Option<PathBuf>,
    /// How long the primary holds a request open waiting for a change (seconds).
    pub wait_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            primary: None,
            token_file: None,
            wait_secs: 25,
        }
    }
}

impl ClusterConfig {
    /// Problems as (key, message), for the configuration's validation.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(p) = &self.primary {
            if !(p.starts_with("https://") || p.starts_with("http://")) {
                problems.push((
                    "cluster.primary".into(),
                    format!("{p:?} is not an http:// or https:// URL"),
                ));
            }
            if self.token_file.is_none() {
                problems.push((
                    "cluster.token_file".into(),
                    "a secondary needs the primary's API token (a file holding it)".into(),
                ));
            }
        }
        if !(1..=300).contains(&self.wait_secs) {
            problems.push(("cluster.wait_secs".into(), "must be 1 to 300".into()));
        }
        problems
    }
}

/// The top-level sections a secondary takes from its primary: groups (with their
/// allow/deny entries, learned allowlists included), lists, local records and
/// the dashboard's settings (resolver, query log), plus detection and rebinding.
/// Everything else (`server`: listen addresses and data directory; `web`, `tls`,
/// `alerts`, `firewall`, `dnstap`, `cluster`, `list_updates`, `cache`) stays the
/// node's own.
pub const REPLICATED: [&str; 7] = [
    "lists",
    "groups",
    "local",
    "resolver",
    "query_log",
    "detect",
    "rebinding",
];

/// Whether the primary answered the last request and said it was ready.
static PRIMARY_UP: AtomicBool = AtomicBool::new(false);

/// True on a secondary whose primary is up and ready: the primary raises the
/// pair's new-domain alerts, this node only records what it sees.
pub fn defers_new_domain_alerts() -> bool {
    PRIMARY_UP.load(Ordering::Relaxed)
}

pub fn set_primary_up(up: bool) {
    PRIMARY_UP.store(up, Ordering::Relaxed);
    metrics::gauge!("dnsguard_cluster_primary_up").set(if up { 1.0 } else { 0.0 });
}

/// The name the probe asks (normalised, as the query log writes it).
pub const PROBE_NAME: &str = "health.dnsguard.localhost";

/// How long the listener gets to answer.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

/// The DNS addresses actually bound (port 0 in the file becomes a real port);
/// unset until the listeners are up, so a starting node is not ready.
pub(crate) static LISTENING: std::sync::OnceLock<Vec<std::net::SocketAddr>> =
    std::sync::OnceLock::new();

/// Records the bound DNS addresses (once, when the listeners are up).
pub fn listening_on(addrs: &[std::net::SocketAddr]) {
    let _ = LISTENING.set(addrs.to_vec());
}
