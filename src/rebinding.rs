//! DNS-rebinding and answer-side protection: an upstream answer for a public name
//! must not point into the local network, loopback or a cloud metadata service.
//!
//! A web page (or a prompt-injected agent) can make a name the attacker controls
//! resolve to 192.168.1.1 or 169.254.169.254 and then talk to the router or steal
//! cloud credentials from the agent's own machine. Names under a conditional
//! forwarding zone (e.g. `lan`) and names the operator allows keep their private
//! answers; local records never pass through here.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::netset::NetSet;

/// `[rebinding]`: which answer addresses are refused for which names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RebindingConfig {
    /// Check upstream answers at all.
    pub enabled: bool,
    /// Address ranges an upstream answer must not contain (default: loopback,
    /// RFC 1918, link-local with the cloud metadata address, CGNAT, ULA, the
    /// unspecified and "this network" ranges, and AWS's IPv6 metadata address).
    pub ranges: Vec<IpNet>,
    /// Names (and everything below them) whose answers may contain such addresses,
    /// e.g. `plex.direct`. Conditional-forwarding zones are allowed automatically.
    pub allow: Vec<String>,
    /// Ranges refused in every upstream answer for every group and name, `allow` and
    /// forwarding zones included (default: the cloud metadata addresses
    /// 169.254.169.254 and fd00:ec2::254, which no name legitimately points to).
    pub always_block: Vec<IpNet>,
}

impl Default for RebindingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ranges: [
                "0.0.0.0/8",
                "10.0.0.0/8",
                "100.64.0.0/10",
                "127.0.0.0/8",
                "169.254.0.0/16",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "::/128",
                "::1/128",
                "fc00::/7",
                "fe80::/10",
                "fd00:ec2::254/128",
            ]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect(),
            allow: Vec::new(),
            always_block: ["169.254.169.254/32", "fd00:ec2::254/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
        }
    }
}

/// The compiled check.
#[derive(Debug, Clone)]
pub struct Rebinding {
    enabled: bool,
    ranges: NetSet,
    always: NetSet,
    /// Allowed name suffixes, lower case, without trailing dots.
    allow: Vec<String>,
}

impl Rebinding {
    /// Builds the check; `zones` are the conditional-forwarding zones (always allowed).
    pub fn new(cfg: &RebindingConfig, zones: impl IntoIterator<Item = String>) -> Self {
        let norm = |s: &str| s.trim().trim_end_matches('.').to_ascii_lowercase();
        let mut allow: Vec<String> = cfg.allow.iter().map(|s| norm(s)).collect();
        allow.extend(zones.into_iter().map(|z| norm(&z)));
        Self {
            enabled: cfg.enabled,
            ranges: NetSet::new(&cfg.ranges),
            always: NetSet::new(&cfg.always_block),
            allow,
        }
    }

    /// The first forbidden address among `addrs` for `name` (lower case, no
    /// trailing dot), or `None` when the answer may pass.
    /// `always_block` ranges apply to every name, even allowed ones.
    pub fn violation(&self, name: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Option<IpAddr> {
        if !self.enabled {
            return None;
        }
        let mut allowed = None;
        addrs.into_iter().find(|&ip| {
            self.always.contains(ip)
                || (self.ranges.contains(ip)
                    && !*allowed.get_or_insert_with(|| {
                        self.allow.iter().any(|a| crate::name::is_under(name, a))
                    }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_metadata_answers_are_caught() {
        let cfg = RebindingConfig {
            allow: vec!["plex.direct".into()],
            ..RebindingConfig::default()
        };
        let r = Rebinding::new(&cfg, ["lan".to_owned()]);
        for bad in [
            "192.168.1.1",
            "10.1.2.3",
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "fd00:ec2::254",
            "::ffff:10.0.0.1",
            "fe80::1",
        ] {
            assert_eq!(
                r.violation("evil.example", [ip("93.184.216.34"), ip(bad)]),
                Some(ip(bad)),
                "{bad}"
            );
        }
        assert_eq!(
            r.violation("www.example", [ip("93.184.216.34"), ip("2001:db8::1")]),
            None
        );
        assert_eq!(
            r.violation("nas.lan", [ip("192.168.1.10")]),
            None,
            "conditional zone"
        );
        assert_eq!(
            r.violation("x.plex.direct", [ip("192.168.1.10")]),
            None,
            "allowed name"
        );
        assert!(r.violation("plex.directx", [ip("192.168.1.10")]).is_some());
        for metadata in ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"] {
            assert_eq!(
                r.violation("nas.lan", [ip(metadata)]),
                Some(ip(metadata)),
                "metadata is refused even in an allowed zone"
            );
        }
        let off = Rebinding::new(
            &RebindingConfig {
                enabled: false,
                ..RebindingConfig::default()
            },
            [],
        );
        assert_eq!(off.violation("evil.example", [ip("127.0.0.1")]), None);
    }
}
