//! `[server]`: the DNS listeners, who may use them, and the process around them
//! (data directory, log filter).

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

/// The default log filter: dnsguard's own lines, and third-party crates' warnings
/// only. hickory and rustls report an unreachable or untrusted upstream once per
/// query and connection attempt (half a dozen long lines per query offline);
/// dnsguard says it once per upstream instead, with the reason. rustls's server
/// side and message parser say nothing below errors: what a DNS-over-TLS client
/// sends (an IP address as SNI, as kdig does) would be a warning per connection.
/// hickory's recursor warns about every name below a zone cut (its NS query for
/// the name itself finds none: that is how it finds the cut), so only its errors.
pub const DEFAULT_LOG: &str = "info,hickory_server=warn,hickory_resolver=warn,\
hickory_resolver::recursor=error,hickory_net=warn,hickory_proto=warn,rustls=warn,rustls::server=error,rustls::msgs=error,rustls_platform_verifier=off";

/// `[server]`: where dnsguard listens and which clients it answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses to listen on, UDP and TCP each (IPv4 and IPv6 alike).
    pub listen: Vec<SocketAddr>,
    /// Addresses to serve DNS over TLS on (RFC 7858; port 853 in production).
    /// Empty: no DNS over TLS.
    pub tls_listen: Vec<SocketAddr>,
    /// Addresses to serve DNS over HTTPS on (RFC 8484, `https://ADDR/dns-query`;
    /// port 443 in production). Empty: no DNS over HTTPS.
    pub https_listen: Vec<SocketAddr>,
    /// Addresses to serve DNS over QUIC on (RFC 9250, UDP; port 853 in
    /// production). Empty: no DNS over QUIC.
    pub quic_listen: Vec<SocketAddr>,
    /// Addresses to serve the same DNS-over-HTTP endpoint on without TLS, for a
    /// reverse proxy that terminates TLS in front of dnsguard. Empty: none.
    pub http_dns_listen: Vec<SocketAddr>,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` headers name the real client
    /// on the DNS-over-HTTP(S) listeners; from anyone else the headers are ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// Client networks that get answers; everyone else gets REFUSED, so dnsguard is
    /// never an open resolver. Default: loopback, RFC 1918, link-local and ULA.
    pub allow_clients: Vec<IpNet>,
    /// Forwarders (e.g. a travel router's dnsmasq) whose EDNS options about the
    /// client behind them (MAC, client subnet, CPE-ID) are read; nobody else's are.
    pub trusted_forwarders: Vec<IpNet>,
    /// A client that proved its identity (its secret) may query the encrypted
    /// listeners from outside `allow_clients`: a laptop on hotel Wi-Fi.
    pub allow_authenticated_anywhere: bool,
    /// A TCP connection that sends no complete query for this long is closed
    /// (slowloris guard; trickling one byte at a time does not keep it open).
    pub tcp_idle_timeout_secs: u64,
    /// TCP connections open at once; beyond it the longest-idle one is closed.
    pub tcp_max_connections: usize,
    /// TCP connections open at once from one client address; beyond it that
    /// client's longest-idle connection is closed.
    pub tcp_max_connections_per_client: usize,
    /// Per-client response-rate limiting (`[server.rate_limit]`).
    pub rate_limit: crate::ratelimit::RateLimitConfig,
    /// Where dnsguard keeps its state (downloaded lists, query log).
    pub data_dir: PathBuf,
    /// Default log filter (`RUST_LOG` syntax) when `RUST_LOG` is not set.
    pub log: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
            tls_listen: Vec::new(),
            https_listen: Vec::new(),
            quic_listen: Vec::new(),
            http_dns_listen: Vec::new(),
            trusted_proxies: Vec::new(),
            allow_clients: [
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "169.254.0.0/16",
                "fc00::/7",
                "fe80::/10",
            ]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect(),
            trusted_forwarders: Vec::new(),
            allow_authenticated_anywhere: false,
            tcp_idle_timeout_secs: 10,
            tcp_max_connections: 512,
            tcp_max_connections_per_client: 32,
            rate_limit: crate::ratelimit::RateLimitConfig::default(),
            data_dir: PathBuf::from("dnsguard-data"),
            log: DEFAULT_LOG.into(),
        }
    }
}
