//! `[resolver]`: forwarding or recursion, the upstreams and conditional forwarding.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use super::UpstreamSpec;

/// How dnsguard resolves names it does not answer itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Send queries to `upstreams` (plain DNS, DoT or DoH).
    Forward,
    /// Resolve from the root servers (`root_hints`) without any upstream.
    Recursive,
}

/// How the forwarder picks among several upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Ask them in the configured order, the next one only when one fails.
    Failover,
    /// Ask the two with the lowest smoothed round-trip time at once; first answer wins.
    Race,
}

/// `[resolver]`: forwarding or recursion, and conditional forwarding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResolverConfig {
    /// `forward` (default) or `recursive`.
    pub mode: Mode,
    /// Upstreams for `forward` mode: `IP[:port]` or `udp://`, `tcp://`, `tls://IP[:port]#NAME`,
    /// `https://IP[:port][/path]#NAME` (NAME is the certificate's server name).
    pub upstreams: Vec<UpstreamSpec>,
    /// `failover` (in order) or `race` (the two fastest at once).
    pub strategy: Strategy,
    /// A query that has no answer after this long is answered SERVFAIL (or stale data).
    pub timeout_ms: u64,
    /// In `failover`, how long one upstream gets before the next is asked.
    pub upstream_timeout_ms: u64,
    /// PEM file of CA certificates trusted for DoT/DoH upstreams instead of the system store.
    pub tls_ca_file: Option<PathBuf>,
    /// SPKI pins (base64 SHA-256 of the key, RFC 7858 §4.2, as dnsguard logs its own)
    /// trusted for DoT/DoH upstreams instead of any CA: a self-signed dnsguard upstream.
    pub tls_pins: Vec<String>,
    /// PEM certificate and key presented to DoT/DoH upstreams: an identity for a
    /// dnsguard upstream that lists its pin in `[[clients]] cert_pins`
    /// (`dnsguard stub --cert --key`).
    pub tls_client_cert_file: Option<PathBuf>,
    /// The private key of `tls_client_cert_file`.
    pub tls_client_key_file: Option<PathBuf>,
    /// Root server addresses for `recursive` mode (default: the IANA root servers).
    pub root_hints: Vec<IpAddr>,
    /// Validate DNSSEC in `recursive` mode: bogus answers become SERVFAIL, secure ones get AD.
    pub dnssec: bool,
    /// Trust anchor file (DNSKEY or DS lines) for validation; default: the built-in root keys.
    pub trust_anchor_file: Option<PathBuf>,
    /// Networks the recursor may send queries to even though they are private or loopback
    /// (it refuses them by default; tests and lab setups with their own root need this).
    pub recursor_allow_servers: Vec<IpNet>,
    /// Zones sent to their own upstreams, e.g. `lan` to the router (`[[resolver.forward_zones]]`).
    pub forward_zones: Vec<ForwardZone>,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Forward,
            upstreams: [
                "tls://9.9.9.9#dns.quad9.net",
                "tls://149.112.112.112#dns.quad9.net",
            ]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
            strategy: Strategy::Failover,
            timeout_ms: 2000,
            upstream_timeout_ms: 1000,
            tls_ca_file: None,
            tls_pins: Vec::new(),
            tls_client_cert_file: None,
            tls_client_key_file: None,
            root_hints: IANA_ROOTS.iter().filter_map(|s| s.parse().ok()).collect(),
            dnssec: true,
            trust_anchor_file: None,
            recursor_allow_servers: Vec::new(),
            forward_zones: Vec::new(),
        }
    }
}

/// IPv4 addresses of a.root-servers.net … m.root-servers.net.
const IANA_ROOTS: [&str; 13] = [
    "198.41.0.4",
    "170.247.170.2",
    "192.33.4.12",
    "199.7.91.13",
    "192.203.230.10",
    "192.5.5.241",
    "192.112.36.4",
    "198.97.190.53",
    "192.36.148.17",
    "192.58.128.30",
    "193.0.14.129",
    "199.7.83.42",
    "202.12.27.33",
];

/// One conditional-forwarding rule: names in `zone` go to `upstreams`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardZone {
    /// The zone, e.g. `lan` or `168.192.in-addr.arpa`; it and every name below it match.
    pub zone: String,
    /// Upstreams for this zone, same syntax as `resolver.upstreams`.
    pub upstreams: Vec<UpstreamSpec>,
}
