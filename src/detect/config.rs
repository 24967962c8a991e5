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

/// How sure the detector is that a flagged query is a tunnel: every flag
/// carries one, and each group picks an [`TunnelAction`] per level ([`Actions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Over the information budget of a domain other clients use too, or
    /// just over the budget: worth a look, often benign.
    Low = 1,
    /// Encoded-looking names, a domain's accumulated payload or volume, or a
    /// private domain's budget clearly spent.
    Medium = 2,
    /// Twice the threshold or more, a callback service, or a private
    /// domain's budget spent several times over.
    High = 3,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 3] = [Level::Low, Level::Medium, Level::High];

    /// `low`, `medium` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
        }
    }

    /// The level stored as `n` (1-3; anything else is no level).
    pub fn from_u8(n: u8) -> Option<Level> {
        match n {
            1 => Some(Level::Low),
            2 => Some(Level::Medium),
            3 => Some(Level::High),
            _ => None,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The action for each confidence level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions {
    /// For low-confidence flags.
    pub low: TunnelAction,
    /// For medium-confidence flags.
    pub medium: TunnelAction,
    /// For high-confidence flags.
    pub high: TunnelAction,
}

impl Actions {
    /// The same action at every level.
    pub fn all(a: TunnelAction) -> Self {
        Actions {
            low: a,
            medium: a,
            high: a,
        }
    }

    /// The action for flags of level `l`.
    pub fn at(&self, l: Level) -> TunnelAction {
        match l {
            Level::Low => self.low,
            Level::Medium => self.medium,
            Level::High => self.high,
        }
    }

    /// Whether quarantines are enforced: the detector quarantines after
    /// medium- or high-confidence flags, so where either level's action is
    /// `quarantine`.
    pub fn quarantines(&self) -> bool {
        self.medium == TunnelAction::Quarantine || self.high == TunnelAction::Quarantine
    }

    /// Whether every level only logs.
    pub fn logs_only(&self) -> bool {
        *self == Actions::all(TunnelAction::Log)
    }

    /// A group's actions: its own per-level setting, else its `tunnel_action`,
    /// else — for allowlist-only groups (`default_deny`, `mode = "learn"` or
    /// `"enforce"`) at medium and high confidence — at least `block`, else
    /// `[detect]`'s per-level setting, else `[detect] action`.
    pub fn for_group(
        detect: &DetectConfig,
        all: Option<TunnelAction>,
        per_level: [Option<TunnelAction>; 3],
        allowlist_only: bool,
    ) -> Actions {
        let pick = |l: Level| {
            let i = l as usize - 1;
            per_level[i].or(all).unwrap_or_else(|| {
                let base = detect.level_actions()[i].unwrap_or(detect.action);
                if allowlist_only && l >= Level::Medium && base == TunnelAction::Log {
                    TunnelAction::Block
                } else {
                    base
                }
            })
        };
        Actions {
            low: pick(Level::Low),
            medium: pick(Level::Medium),
            high: pick(Level::High),
        }
    }
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
    /// TunnelAction for low-confidence flags; unset = `action`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_low: Option<TunnelAction>,
    /// TunnelAction for medium-confidence flags; unset = `action`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_medium: Option<TunnelAction>,
    /// TunnelAction for high-confidence flags; unset = `action`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_high: Option<TunnelAction>,
    /// Information budget: bytes of new name text one client may send below
    /// one registrable domain per ~10 minutes (twice that per ~2 hours, four
    /// times per day), multiplied by the square of the number of clients that
    /// use the domain. Crossing it flags the query. 0 turns it off. Default 64.
    pub budget_bytes: f32,
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
    /// evicted beyond), and of (client, domain) pairs and domains the
    /// information budget keeps. Memory is under 480 bytes per domain for the
    /// window and 176 for the budget, allocated up front: the default 16384
    /// takes about 10.7 MB.
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
            action_low: None,
            action_medium: None,
            action_high: None,
            budget_bytes: 64.0,
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

impl DetectConfig {
    /// `action_low`, `action_medium`, `action_high`.
    pub fn level_actions(&self) -> [Option<TunnelAction>; 3] {
        [self.action_low, self.action_medium, self.action_high]
    }

    /// The actions of a client that is in no configured group.
    pub fn actions(&self) -> Actions {
        Actions::for_group(self, None, [None; 3], false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_actions_fall_back_in_order() {
        let d = DetectConfig::default();
        // An existing config: one action for every level.
        assert_eq!(d.actions(), Actions::all(TunnelAction::Log));
        let g = Actions::for_group(&d, Some(TunnelAction::Quarantine), [None; 3], true);
        assert_eq!(g, Actions::all(TunnelAction::Quarantine));
        // Allowlist-only groups block at medium and high unless told otherwise.
        let agents = Actions::for_group(&d, None, [None; 3], true);
        assert_eq!(
            (agents.low, agents.medium, agents.high),
            (TunnelAction::Log, TunnelAction::Block, TunnelAction::Block)
        );
        let told = Actions::for_group(&d, Some(TunnelAction::Log), [None; 3], true);
        assert_eq!(told, Actions::all(TunnelAction::Log));
        // Per level beats everything; [detect]'s per level beats its action.
        let d = DetectConfig {
            action_high: Some(TunnelAction::Quarantine),
            ..DetectConfig::default()
        };
        let g = Actions::for_group(
            &d,
            Some(TunnelAction::Log),
            [None, Some(TunnelAction::Block), None],
            false,
        );
        assert_eq!(
            (g.low, g.medium, g.high),
            (TunnelAction::Log, TunnelAction::Block, TunnelAction::Log)
        );
        assert_eq!(d.actions().high, TunnelAction::Quarantine);
        assert!(d.actions().quarantines() && !Actions::all(TunnelAction::Block).quarantines());
        let agents = Actions::for_group(&d, None, [None; 3], true);
        assert_eq!(
            (agents.medium, agents.high),
            (TunnelAction::Block, TunnelAction::Quarantine)
        );
    }
}
