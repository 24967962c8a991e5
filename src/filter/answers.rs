//! Answer rules: IP addresses and CIDRs from block lists and group `deny` entries.
//! An upstream answer containing such an address is blocked for the groups that use
//! the list (e.g. a threat feed of C2 addresses, or a group's "no connections into
//! 203.0.113.0/24").
//!
//! Stored per (family, prefix length, masked address) in one hash map, so a lookup
//! costs one probe per distinct prefix length in use, whatever the number of entries.

use std::net::IpAddr;

use ipnet::IpNet;

use super::hash::FastMap;
use super::matcher::Bits;

/// Where one address entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRule {
    /// The source index (list, or group allow/deny entry set).
    pub source: u32,
    /// 1-based line (entry index + 1 for group entries).
    pub line: u32,
}

/// Every address entry of every source.
#[derive(Debug, Default)]
pub struct AnswerNets {
    map: FastMap<(bool, u8, u128), Vec<AddressRule>>,
    /// Distinct prefix lengths in use, longest first (IPv4, IPv6).
    lens_v4: Vec<u8>,
    lens_v6: Vec<u8>,
}

fn key(ip: IpAddr, len: u8) -> (bool, u8, u128) {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let masked = if len == 0 {
                0
            } else {
                bits & (u32::MAX << (32 - len))
            };
            (false, len, u128::from(masked))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let masked = if len == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - len))
            };
            (true, len, masked)
        }
    }
}

impl AnswerNets {
    /// Adds `net` (already canonical) for `source`, found on `line`.
    pub fn add(&mut self, net: IpNet, source: u32, line: u32) {
        let len = net.prefix_len();
        let v6 = matches!(net, IpNet::V6(_));
        let lens = if v6 {
            &mut self.lens_v6
        } else {
            &mut self.lens_v4
        };
        if !lens.contains(&len) {
            lens.push(len);
            lens.sort_unstable_by(|a, b| b.cmp(a));
        }
        self.map
            .entry(key(net.addr(), len))
            .or_default()
            .push(AddressRule { source, line });
    }

    /// Whether there are no entries (the common case: the check is skipped).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of address entries.
    pub fn len(&self) -> usize {
        self.map.values().map(Vec::len).sum()
    }

    /// The most specific entry containing `ip` whose source is in `member`.
    /// Does not allocate.
    pub fn find(&self, ip: IpAddr, member: &Bits) -> Option<AddressRule> {
        let ip = super::policy::canonical_ip(ip);
        let lens = match ip {
            IpAddr::V4(_) => &self.lens_v4,
            IpAddr::V6(_) => &self.lens_v6,
        };
        lens.iter().find_map(|&len| {
            self.map
                .get(&key(ip, len))?
                .iter()
                .find(|r| member.get(r.source))
                .copied()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_of_a_member_source_wins() {
        let mut n = AnswerNets::default();
        n.add("198.51.100.0/24".parse().unwrap(), 0, 3);
        n.add("198.51.100.7/32".parse().unwrap(), 1, 9);
        n.add("2001:db8::/32".parse().unwrap(), 0, 4);
        let mut both = Bits::new(2);
        both.set(0);
        both.set(1);
        let mut only0 = Bits::new(2);
        only0.set(0);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            n.find(ip("198.51.100.7"), &both),
            Some(AddressRule { source: 1, line: 9 })
        );
        assert_eq!(
            n.find(ip("198.51.100.7"), &only0),
            Some(AddressRule { source: 0, line: 3 })
        );
        assert_eq!(
            n.find(ip("::ffff:198.51.100.9"), &only0),
            Some(AddressRule { source: 0, line: 3 })
        );
        assert_eq!(n.find(ip("2001:db8:1::1"), &only0).map(|r| r.line), Some(4));
        assert_eq!(n.find(ip("198.51.101.1"), &both), None);
        assert_eq!(n.find(ip("2001:db9::1"), &both), None);
        assert_eq!(n.len(), 3);
    }
}
