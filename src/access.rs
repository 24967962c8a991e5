//! Access control: which client addresses dnsguard answers at all.
//!
//! dnsguard must never be an open resolver, so a client outside the configured
//! networks gets REFUSED before any work is done for it.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::netset::NetSet;

/// The set of client networks allowed to query.
#[derive(Debug, Clone)]
pub struct Access {
    nets: NetSet,
}

impl Access {
    /// Allows exactly these networks.
    pub fn new(nets: &[IpNet]) -> Self {
        Self {
            nets: NetSet::new(nets),
        }
    }

    /// True when `ip` may use dnsguard. IPv4-mapped IPv6 clients are judged by their
    /// IPv4 address, as a dual-stack socket reports them that way.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.nets.contains(ip)
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
