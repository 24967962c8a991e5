//! The text form of an upstream server, as written in the config file.
//!
//! `IP[:port]`, `udp://IP[:port]`, `tcp://IP[:port]`, `tls://IP[:port]#NAME` and
//! `https://IP[:port][/path]#NAME`; IPv6 addresses in brackets. NAME is the name the
//! server's certificate must carry (the same `#name` convention as unbound's
//! `forward-addr`). An address rather than a host name means no bootstrap resolver.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::Deserialize;

/// Transport used to reach one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// UDP, with TCP when an answer is truncated.
    Udp,
    /// TCP only.
    Tcp,
    /// DNS over TLS (RFC 7858).
    Tls {
        /// Name checked against the server certificate.
        server_name: String,
    },
    /// DNS over HTTPS (RFC 8484), HTTP/2.
    Https {
        /// Name checked against the server certificate.
        server_name: String,
        /// Request path, `/dns-query` unless given.
        path: String,
    },
}

/// One upstream server: where it is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct UpstreamSpec {
    /// Address and port.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
}

/// Why an upstream string could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("invalid upstream {input:?}: {reason}")]
pub struct SpecError {
    input: String,
    reason: &'static str,
}

impl FromStr for UpstreamSpec {
    type Err = SpecError;

    fn from_str(input: &str) -> Result<Self, SpecError> {
        let err = |reason| SpecError {
            input: input.to_owned(),
            reason,
        };
        let (scheme, rest) = match input.split_once("://") {
            Some((s, r)) => (s, r),
            None => ("udp", input),
        };
        let (rest, server_name) = match rest.split_once('#') {
            Some((r, n)) if !n.is_empty() => (r, Some(n.to_owned())),
            Some(_) => return Err(err("empty server name after '#'")),
            None => (rest, None),
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_owned())),
            None => (rest, None),
        };
        let default_port = match scheme {
            "udp" | "tcp" => 53,
            "tls" => 853,
            "https" => 443,
            _ => return Err(err("scheme must be udp, tcp, tls or https")),
        };
        let addr = parse_addr(hostport, default_port)
            .ok_or_else(|| err("expected an IP address, optionally with :port"))?;
        if path.is_some() && scheme != "https" {
            return Err(err("only https:// upstreams take a path"));
        }
        let needs_name = || {
            server_name
                .clone()
                .ok_or_else(|| err("tls:// and https:// need #server-name"))
        };
        let transport = match scheme {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls {
                server_name: needs_name()?,
            },
            _ => Transport::Https {
                server_name: needs_name()?,
                path: path.unwrap_or_else(|| "/dns-query".to_owned()),
            },
        };
        if server_name.is_some() && matches!(transport, Transport::Udp | Transport::Tcp) {
            return Err(err("#server-name only applies to tls:// and https://"));
        }
        Ok(Self { addr, transport })
    }
}

impl TryFrom<String> for UpstreamSpec {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        s.parse()
    }
}

fn parse_addr(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa);
    }
    let ip = s.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, default_port))
}

impl fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.transport {
            Transport::Udp => write!(f, "{}", self.addr),
            Transport::Tcp => write!(f, "tcp://{}", self.addr),
            Transport::Tls { server_name } => write!(f, "tls://{}#{server_name}", self.addr),
            Transport::Https { server_name, path } => {
                write!(f, "https://{}{path}#{server_name}", self.addr)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let u: UpstreamSpec = "9.9.9.9".parse().unwrap();
        assert_eq!(u.addr, "9.9.9.9:53".parse().unwrap());
        assert_eq!(u.transport, Transport::Udp);
        let u: UpstreamSpec = "tcp://[::1]:5300".parse().unwrap();
        assert_eq!(u.addr, "[::1]:5300".parse().unwrap());
        assert_eq!(u.transport, Transport::Tcp);
        let u: UpstreamSpec = "tls://9.9.9.9#dns.quad9.net".parse().unwrap();
        assert_eq!(u.addr.port(), 853);
        assert_eq!(
            u.transport,
            Transport::Tls {
                server_name: "dns.quad9.net".into()
            }
        );
        let u: UpstreamSpec = "https://[2620:fe::fe]/dns-query#dns.quad9.net"
            .parse()
            .unwrap();
        assert_eq!(u.addr.port(), 443);
        assert!(matches!(u.transport, Transport::Https { ref path, .. } if path == "/dns-query"));
        assert_eq!(
            u.to_string(),
            "https://[2620:fe::fe]:443/dns-query#dns.quad9.net"
        );
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "dns.quad9.net",
            "tls://9.9.9.9",
            "quic://9.9.9.9#x",
            "9.9.9.9#name",
            "udp://9.9.9.9/path",
            "tls://9.9.9.9#",
            "1.2.3.4:99999",
        ] {
            assert!(
                bad.parse::<UpstreamSpec>().is_err(),
                "{bad} should be rejected"
            );
        }
    }
}
