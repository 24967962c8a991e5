//! Configuration ([`QueryLogConfig`]) and privacy levels ([`Privacy`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How much of each query is stored (like Pi-hole's privacy levels).
///
/// | level | entries stored | per-minute counts | top domains | top clients |
/// |---|---|---|---|---|
/// | `everything` | as received | yes | yes | yes |
/// | `hide-names` | name = `hidden`, rule and answer emptied (they reveal the name) | yes | no | yes |
/// | `hide-clients` | client = `0.0.0.0` / `::` | yes | yes | no |
/// | `nothing` | none | yes (counts only, no names or clients) | no | no |
///
/// `nothing` keeps the anonymous per-minute totals (total / blocked /
/// flagged, ...) so `stats` still shows volumes, like Pi-hole's level 3
/// which keeps only anonymous counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Privacy {
    /// Store everything.
    #[default]
    Everything,
    /// Replace names with `hidden`.
    HideNames,
    /// Replace clients with the unspecified address.
    HideClients,
    /// Store no entries at all; only anonymous counters.
    Nothing,
}

impl Privacy {
    /// The config / CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Privacy::Everything => "everything",
            Privacy::HideNames => "hide-names",
            Privacy::HideClients => "hide-clients",
            Privacy::Nothing => "nothing",
        }
    }
}

impl fmt::Display for Privacy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Privacy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "everything" => Privacy::Everything,
            "hide-names" => Privacy::HideNames,
            "hide-clients" => Privacy::HideClients,
            "nothing" => Privacy::Nothing,
            _ => {
                return Err(format!(
                    "unknown privacy level {s:?} (expected everything, hide-names, hide-clients or nothing)"
                ));
            }
        })
    }
}

/// `[querylog]` section of the server configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryLogConfig {
    /// Record queries at all. When false, `record` is a no-op and nothing is
    /// opened on disk. Default: true.
    pub enabled: bool,
    /// Keep entries and aggregates this many days; 0 keeps them forever.
    /// Default: 30.
    pub retention_days: u32,
    /// Privacy level. Default: `everything`.
    pub privacy: Privacy,
    /// Entries that may wait for the writer; beyond this they are dropped
    /// (and counted). Default: 16384 (a third of a second at 50k queries/s;
    /// the writer drains over 400k/s). (With the WAL, up to 64 batches that
    /// are already in the WAL may also wait while sled is stalled.)
    pub channel_capacity: usize,
    /// Commit a batch once it holds this many entries. Default: 1000.
    pub batch_size: usize,
    /// Commit a batch at the latest this long after its first entry, and
    /// flush to disk at most this often; this bounds what a crash can lose.
    /// Default: 100.
    pub flush_interval_ms: u64,
}

impl Default for QueryLogConfig {
    fn default() -> Self {
        QueryLogConfig {
            enabled: true,
            retention_days: 30,
            privacy: Privacy::Everything,
            channel_capacity: 16384,
            batch_size: 1000,
            flush_interval_ms: 100,
        }
    }
}
