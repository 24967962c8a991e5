//! Configuration types (`[[lists]]` and `[[groups]]` tables of the dnsguard TOML file) and their validation.
//!
//! Every field has a default and unknown keys are rejected (`deny_unknown_fields`), so a typo in the config
//! file is an error rather than a silently ignored setting.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::FilterError;

/// Name of the implicit group that every client not selected by another group belongs to.
pub const DEFAULT_GROUP: &str = "default";

/// The source of the built-in public DoH/DoT resolver list. An enabled list with
/// this source applies to every allowlist-only group as well as to the groups it
/// names: an agent's own encrypted DNS would escape every rule, and a hit there is
/// a bypass attempt (an alert), not just a name missing from the allowlist.
pub const DOH_RESOLVERS_SOURCE: &str = "builtin:doh-resolvers";

/// Whether a list blocks or allows the names it contains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    /// Entries block (except `@@` exception lines, which allow).
    #[default]
    Block,
    /// Every entry allows (an allowlist).
    Allow,
}

/// One `[[lists]]` entry: a block or allow list and the groups it applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListConfig {
    /// Unique name, used in stats, logs and `explain` output.
    pub name: String,
    /// Where the text comes from: a file path, an http(s) URL or `builtin:NAME`. The caller reads or downloads
    /// it and passes the text to [`super::Filter::build`]; this module never does I/O.
    pub source: String,
    /// Disabled lists are kept in the config (and in stats) but not loaded.
    pub enabled: bool,
    /// `block` (default) or `allow`.
    pub kind: ListKind,
    /// Groups the list applies to; `"*"` (the default) means every group, including `default`.
    pub groups: Vec<String>,
}

impl ListConfig {
    /// Whether the list applies to group `g`: named in `groups` (or `"*"`), or
    /// [implicitly](Self::applies_implicitly_to).
    pub fn applies_to(&self, g: &GroupConfig) -> bool {
        self.names(g) || self.applies_implicitly_to(g)
    }

    /// Whether the list applies to `g` without naming it: `builtin:doh-resolvers`
    /// always applies to allowlist-only groups (learning or enforcing), since an
    /// agent resolving through its own DoH/DoT resolver escapes every rule.
    pub fn applies_implicitly_to(&self, g: &GroupConfig) -> bool {
        self.source == DOH_RESOLVERS_SOURCE && g.allowlist_only() && !self.names(g)
    }

    fn names(&self, g: &GroupConfig) -> bool {
        self.groups.iter().any(|x| x == "*" || *x == g.name)
    }
}

impl Default for ListConfig {
    fn default() -> Self {
        ListConfig {
            name: String::new(),
            source: String::new(),
            enabled: true,
            kind: ListKind::Block,
            groups: vec!["*".to_owned()],
        }
    }
}

/// What a blocked query gets as an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockModeKind {
    /// `0.0.0.0` / `::` for A / AAAA, empty answer for other types.
    #[default]
    Null,
    /// NXDOMAIN.
    NxDomain,
    /// NOERROR with no answer.
    NoData,
    /// REFUSED.
    Refused,
    /// The addresses in `block_ips`.
    Custom,
}

/// How an allowlist-only group treats names nobody allowed yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupMode {
    /// Resolve everything (as if `default_deny` were off) while the query log and the
    /// new-domain alerts record what the group's clients use; `dnsguard allowlist learn`
    /// then proposes the allowlist.
    Learn,
    /// Default-deny with the (learned) allowlist: the same as `default_deny = true`.
    Enforce,
}

/// One `[[groups]]` entry: a set of clients with its own lists, allow/deny entries and block answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    /// Unique name; `default` configures the implicit group of all other clients.
    pub name: String,
    /// Client IPs and CIDRs (IPv4 or IPv6) that belong to this group, the longest prefix winning;
    /// and identities: `id:CLIENTID`, `mac:aa:bb:cc:dd:ee:ff`, `client:NAME`.
    pub clients: Vec<String>,
    /// Entries (list-line syntax: `github.com`, `||openai.com^`, `/re/`) that are always allowed for this group.
    pub allow: Vec<String>,
    /// Entries (same syntax) that are always blocked for this group.
    pub deny: Vec<String>,
    /// If true, only names matched by an allow entry or an allow list resolve; all others are blocked.
    pub default_deny: bool,
    /// `learn` or `enforce` for allowlist-only groups (overrides `default_deny`:
    /// `learn` resolves everything, `enforce` denies what is not allowed); unset = `default_deny` decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<GroupMode>,
    /// Raise an alert the first time a client of this group resolves a registrable
    /// domain it never used; unset = on for allowlist-only and learning groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_new_domains: Option<bool>,
    /// Answer given for blocked names.
    pub block_mode: BlockModeKind,
    /// For `block_mode = "custom"`: at most one IPv4 and one IPv6 address.
    pub block_ips: Vec<IpAddr>,
    /// TTL of the blocked answer, in seconds.
    pub block_ttl: u32,
    /// What a DNS-tunnel flag does for this group (`log`, `block`, `quarantine`)
    /// at every confidence level; unset means `[detect]`'s actions, except that
    /// allowlist-only groups block at medium and high confidence.
    pub tunnel_action: Option<crate::detect::TunnelAction>,
    /// The action for low-confidence flags (unset: `tunnel_action`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_action_low: Option<crate::detect::TunnelAction>,
    /// The action for medium-confidence flags (unset: `tunnel_action`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_action_medium: Option<crate::detect::TunnelAction>,
    /// The action for high-confidence flags (unset: `tunnel_action`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_action_high: Option<crate::detect::TunnelAction>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            name: String::new(),
            clients: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            default_deny: false,
            mode: None,
            alert_new_domains: None,
            block_mode: BlockModeKind::Null,
            block_ips: Vec::new(),
            block_ttl: 60,
            tunnel_action: None,
            tunnel_action_low: None,
            tunnel_action_medium: None,
            tunnel_action_high: None,
        }
    }
}

impl GroupConfig {
    /// Whether unlisted names are denied now (`mode` wins over `default_deny`).
    pub fn denies_by_default(&self) -> bool {
        match self.mode {
            Some(GroupMode::Learn) => false,
            Some(GroupMode::Enforce) => true,
            None => self.default_deny,
        }
    }

    /// Whether an allowlist is being learned or enforced for this group.
    pub fn allowlist_only(&self) -> bool {
        self.mode.is_some() || self.default_deny
    }

    /// This group's tunnel actions per confidence level under `detect`.
    pub fn tunnel_actions(&self, detect: &crate::detect::DetectConfig) -> crate::detect::Actions {
        crate::detect::Actions::for_group(
            detect,
            self.tunnel_action,
            [
                self.tunnel_action_low,
                self.tunnel_action_medium,
                self.tunnel_action_high,
            ],
            self.allowlist_only(),
        )
    }

    /// Whether new-domain alerts are on for this group (explicit setting, else
    /// on for allowlist-only and learning groups).
    pub fn watches_new_domains(&self) -> bool {
        self.alert_new_domains.unwrap_or(self.allowlist_only())
    }
}

/// Resolved answer for blocked names, as returned by [`super::Filter::group_block`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockMode {
    /// `0.0.0.0` / `::`.
    Null,
    /// NXDOMAIN.
    NxDomain,
    /// NOERROR, no data.
    NoData,
    /// REFUSED.
    Refused,
    /// These addresses (a missing family answers NODATA for that type).
    Custom {
        /// Answer for A queries.
        v4: Option<Ipv4Addr>,
        /// Answer for AAAA queries.
        v6: Option<Ipv6Addr>,
    },
}

/// Checks a group's block settings and turns them into a [`BlockMode`].
pub fn resolve_block_mode(g: &GroupConfig) -> Result<BlockMode, FilterError> {
    let mode = match g.block_mode {
        BlockModeKind::Null => BlockMode::Null,
        BlockModeKind::NxDomain => BlockMode::NxDomain,
        BlockModeKind::NoData => BlockMode::NoData,
        BlockModeKind::Refused => BlockMode::Refused,
        BlockModeKind::Custom => {
            let mut v4 = None;
            let mut v6 = None;
            for ip in &g.block_ips {
                let dup = match ip {
                    IpAddr::V4(a) => v4.replace(*a).is_some(),
                    IpAddr::V6(a) => v6.replace(*a).is_some(),
                };
                if dup {
                    return Err(FilterError::BadBlockIps {
                        group: g.name.clone(),
                        why: "at most one IPv4 and one IPv6 address".into(),
                    });
                }
            }
            if v4.is_none() && v6.is_none() {
                return Err(FilterError::BadBlockIps {
                    group: g.name.clone(),
                    why: "block_mode \"custom\" needs block_ips".into(),
                });
            }
            BlockMode::Custom { v4, v6 }
        }
    };
    if g.block_mode != BlockModeKind::Custom && !g.block_ips.is_empty() {
        return Err(FilterError::BadBlockIps {
            group: g.name.clone(),
            why: "block_ips is only used with block_mode = \"custom\"".into(),
        });
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        lists: Vec<ListConfig>,
        #[serde(default)]
        groups: Vec<GroupConfig>,
    }

    #[test]
    fn parses_the_documented_example_with_defaults() {
        let text = r#"
            [[lists]]
            name = "dnsguard-default"
            source = "builtin:default"

            [[lists]]
            name = "allow"
            source = "/etc/allow.txt"
            kind = "allow"
            enabled = false
            groups = ["agents"]

            [[groups]]
            name = "agents"
            clients = ["127.0.0.2", "10.0.5.0/24", "fd00::/8"]
            allow = ["api.openai.com", "||github.com^"]
            deny = ["||example.org^"]
            default_deny = true
            block_mode = "custom"
            block_ips = ["10.0.0.1", "::1"]
            block_ttl = 30
        "#;
        let f: File = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.lists[0].kind, ListKind::Block);
        assert!(f.lists[0].enabled);
        assert_eq!(f.lists[0].groups, vec!["*".to_string()]);
        assert_eq!(f.lists[1].kind, ListKind::Allow);
        assert!(!f.lists[1].enabled);
        let g = &f.groups[0];
        assert!(g.default_deny);
        assert_eq!(g.block_ttl, 30);
        assert_eq!(
            resolve_block_mode(g),
            Ok(BlockMode::Custom {
                v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
                v6: Some(Ipv6Addr::LOCALHOST)
            })
        );
        let d: GroupConfig = toml::from_str("name = \"x\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.block_ttl, 60);
        assert_eq!(d.block_mode, BlockModeKind::Null);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_modes() {
        assert!(toml::from_str::<ListConfig>("name = \"a\"\nsoruce = \"x\"").is_err());
        assert!(toml::from_str::<GroupConfig>("name = \"a\"\nblock_mode = \"sinkhole\"").is_err());
        let g: GroupConfig = toml::from_str("name = \"a\"\nblock_mode = \"custom\"")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            resolve_block_mode(&g),
            Err(FilterError::BadBlockIps { .. })
        ));
        let g: GroupConfig = toml::from_str(
            "name = \"a\"\nblock_mode = \"custom\"\nblock_ips = [\"1.1.1.1\", \"2.2.2.2\"]",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            resolve_block_mode(&g),
            Err(FilterError::BadBlockIps { .. })
        ));
    }
}
