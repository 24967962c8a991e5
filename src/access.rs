//! Access control: which client addresses dnsguard answers at all.
//!
//! dnsguard must never be an open resolver, so a client outside the configured
//! networks gets REFUSED before any work is done for it.

use std::net::IpAddr;

use ipnet::IpNet;

/// The set of client networks allowed to query.
#[derive(Debug, Clone)]
pub struct Access {
    nets: Vec<IpNet>,
}

impl Access {
    /// Allows exactly these networks.
    pub fn new(nets: &[IpNet]) -> Self {
        Self {
            nets: nets.iter().map(IpNet::trunc).collect(),
        }
    }

    /// True when `ip` may use dnsguard. IPv4-mapped IPv6 clients are judged by their
    /// IPv4 address, as a dual-stack socket reports them that way.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_only_listed_networks() {
        let a = Access::new(&["127.0.0.1/32".parse().unwrap(), "fd00::/8".parse().unwrap()]);
        assert!(a.allows("127.0.0.1".parse().unwrap()));
        assert!(!a.allows("127.0.0.2".parse().unwrap()));
        assert!(a.allows("fd00::1".parse().unwrap()));
        assert!(!a.allows("fe80::1".parse().unwrap()));
        assert!(a.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!a.allows("8.8.8.8".parse().unwrap()));
    }
}
