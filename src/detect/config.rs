//! Configuration of the tunnel detector (`[detect]` section of dnsguard's
//! config).

use serde::{Deserialize, Serialize};

/// What the caller should do with flagged queries and quarantined clients.
/// The detector only keeps state; the caller picks the action per client group.
/// No action ever affects a client other than the one flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelAction {
    /// Log the flag and answer normally.
    #[default]
    Log,
    /// Refuse each flagged query (REFUSED), only that query of that client.
    Block,
    /// Refuse each flagged query, and once a client has been flagged
    /// `quarantine_after` times under a registrable domain within the window,
    /// every query of that client for that domain for `quarantine_secs`.
    /// Other clients keep using the domain.
    Quarantine,
}

/// Detector settings. Every field has a default, so an empty section works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Run the detector at all. Default `true`.
    pub enabled: bool,
    /// Score at or above which a query is flagged. `1.0` is the calibrated
    /// operating point; raise it for fewer alarms, lower it for more.
    pub threshold: f32,
    /// Default action for flagged queries (`log`, `block`, `quarantine`).
    /// Default `log`.
    pub action: TunnelAction,
    /// Number of flags of one client under a registrable domain within the
    /// window after which that client is quarantined for the domain. Default 3.
    pub quarantine_after: u32,
    /// How long a client's quarantine for a domain lasts, in seconds. Default 3600.
    pub quarantine_secs: u64,
    /// Length of the per-domain sliding window, in seconds. Default 300.
    pub window_secs: u64,
    /// Half-life, in seconds, of the long-term per-domain payload evidence
    /// that catches low-and-slow exfiltration. Default 1800.
    pub evidence_half_life_secs: u64,
    /// Maximum number of registrable domains tracked (least recently used
    /// evicted beyond). Memory is under 480 bytes per domain, allocated up
    /// front: the default 16384 takes about 7.8 MB.
    pub max_domains: usize,
    /// Use the built-in exemption list (`data/exemptions.txt`). Default `true`.
    pub builtin_exemptions: bool,
    /// Extra exemption lines, same syntax as the built-in list
    /// (`example.com`, `_label`, `_prefix*`). Default empty.
    pub exemptions: Vec<String>,
    /// Use the built-in watch list of out-of-band callback services
    /// (`data/callbacks.txt`). Default `true`.
    pub builtin_watchlist: bool,
    /// Extra watch-list domains: any name below them is flagged. Default empty.
    pub watch: Vec<String>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            threshold: 1.0,
            action: TunnelAction::Log,
            quarantine_after: 3,
            quarantine_secs: 3600,
            window_secs: 300,
            evidence_half_life_secs: 1800,
            max_domains: 16384,
            builtin_exemptions: true,
            exemptions: Vec::new(),
            builtin_watchlist: true,
            watch: Vec::new(),
        }
    }
}
