//! Per-client policies: maps a client address to its group.
//!
//! Lookup: an exact-address hash map first (single IPs and /32, /128 networks), then longest-prefix match over
//! the configured CIDRs, kept as one hash map per distinct prefix length, probed from the longest length down
//! (so the cost is O(number of distinct prefix lengths), at most 33 for IPv4 and 129 for IPv6, in practice a
//! handful). Clients that match nothing belong to the implicit `default` group ([`GroupId`] 0). IPv4-mapped
//! IPv6 addresses (`::ffff:a.b.c.d`) are treated as the IPv4 address. No allocation or lock on lookup.

use std::net::IpAddr;

use ipnet::IpNet;

use super::hash::FastMap;
use super::{FilterError, GroupId};

/// Returns the IPv4 address for an IPv4-mapped IPv6 address, else the address unchanged.
#[inline]
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Parses a client selector (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`) into a canonical (truncated) network.
pub fn parse_selector(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(IpNet::from(canonical_ip(ip)));
    }
    let net = s.parse::<IpNet>().ok()?.trunc();
    // `::ffff:10.0.0.0/104` → `10.0.0.0/8`.
    if let IpNet::V6(v6) = net
        && let (Some(v4), true) = (v6.network().to_ipv4_mapped(), v6.prefix_len() >= 96)
    {
        return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
            .ok()
            .map(IpNet::V4);
    }
    Some(net)
}

/// Client → group map (immutable once built).
#[derive(Debug, Default)]
pub struct ClientMap {
    exact: FastMap<IpAddr, u16>,
    /// (prefix length, masked network → group), longest prefix first.
    v4: Vec<(u8, FastMap<u32, u16>)>,
    v6: Vec<(u8, FastMap<u128, u16>)>,
}

fn mask4(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask6(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(len)))
    }
}

impl ClientMap {
    /// Builds the map from `(group id, group name, selectors)`; errors on a bad selector or a selector claimed
    /// by two groups.
    pub fn build<'a>(
        groups: impl IntoIterator<Item = (u16, &'a str, &'a [String])>,
    ) -> Result<Self, FilterError> {
        let mut owner: FastMap<IpNet, (u16, &'a str)> = FastMap::default();
        let mut map = ClientMap::default();
        for (gid, gname, selectors) in groups {
            for sel in selectors {
                if Selector::parse(sel).is_some() {
                    continue; // `id:`, `mac:`, `client:`: the identity step's
                }
                let net = parse_selector(sel).ok_or_else(|| FilterError::BadClient {
                    group: gname.to_owned(),
                    value: sel.clone(),
                })?;
                if let Some(&(other, oname)) = owner.get(&net) {
                    if other != gid {
                        return Err(FilterError::ClientInTwoGroups {
                            client: sel.clone(),
                            first: oname.to_owned(),
                            second: gname.to_owned(),
                        });
                    }
                    continue;
                }
                owner.insert(net, (gid, gname));
                match net {
                    IpNet::V4(n) if n.prefix_len() == 32 => {
                        map.exact.insert(IpAddr::V4(n.addr()), gid);
                    }
                    IpNet::V6(n) if n.prefix_len() == 128 => {
                        map.exact.insert(IpAddr::V6(n.addr()), gid);
                    }
                    IpNet::V4(n) => {
                        let len = n.prefix_len();
                        let slot = match map.v4.iter().position(|(l, _)| *l == len) {
                            Some(i) => i,
                            None => {
                                map.v4.push((len, FastMap::default()));
                                map.v4.len() - 1
                            }
                        };
                        map.v4[slot]
                            .1
                            .insert(mask4(u32::from(n.network()), len), gid);
                    }
                    IpNet::V6(n) => {
                        let len = n.prefix_len();
                        let slot = match map.v6.iter().position(|(l, _)| *l == len) {
                            Some(i) => i,
                            None => {
                                map.v6.push((len, FastMap::default()));
                                map.v6.len() - 1
                            }
                        };
                        map.v6[slot]
                            .1
                            .insert(mask6(u128::from(n.network()), len), gid);
                    }
                }
            }
        }
        map.v4.sort_by_key(|e| std::cmp::Reverse(e.0));
        map.v6.sort_by_key(|e| std::cmp::Reverse(e.0));
        Ok(map)
    }

    /// The group of `client` (0 = default).
    #[inline]
    pub fn lookup(&self, client: IpAddr) -> GroupId {
        let client = canonical_ip(client);
        if let Some(&g) = self.exact.get(&client) {
            return GroupId(g);
        }
        match client {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                for (len, m) in &self.v4 {
                    if let Some(&g) = m.get(&mask4(a, *len)) {
                        return GroupId(g);
                    }
                }
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                for (len, m) in &self.v6 {
                    if let Some(&g) = m.get(&mask6(a, *len)) {
                        return GroupId(g);
                    }
                }
            }
        }
        GroupId(0)
    }
}

/// A group selector naming an identity rather than an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    /// `id:NAME`: a ClientID.
    Id(&'a str),
    /// `mac:aa:bb:cc:dd:ee:ff`.
    Mac(&'a str),
    /// `client:NAME`: a `[[clients]]` entry, by any of its identities.
    Client(&'a str),
}

impl<'a> Selector<'a> {
    /// The identity selector `s` is, or `None` for an IP or CIDR.
    pub fn parse(s: &'a str) -> Option<Self> {
        let s = s.trim();
        if let Some(v) = s.strip_prefix("id:") {
            Some(Selector::Id(v))
        } else if let Some(v) = s.strip_prefix("mac:") {
            Some(Selector::Mac(v))
        } else {
            s.strip_prefix("client:").map(Selector::Client)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn sel(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_cidr_longest_prefix_and_default() {
        let a = sel(&["127.0.0.2", "10.0.0.0/8", "fd00::/8"]);
        let b = sel(&["10.0.5.0/24", "2001:db8::1", "0.0.0.0/0"]);
        let c = sel(&["10.0.5.7", "fd00:1::/32"]);
        let m = ClientMap::build([
            (1, "a", a.as_slice()),
            (2, "b", b.as_slice()),
            (3, "c", c.as_slice()),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.lookup(ip("127.0.0.2")), GroupId(1));
        assert_eq!(m.lookup(ip("10.200.0.1")), GroupId(1));
        assert_eq!(m.lookup(ip("10.0.5.1")), GroupId(2));
        assert_eq!(m.lookup(ip("10.0.5.7")), GroupId(3));
        assert_eq!(m.lookup(ip("::ffff:10.0.5.7")), GroupId(3));
        assert_eq!(
            m.lookup(ip("192.168.1.1")),
            GroupId(2),
            "0.0.0.0/0 catches all v4"
        );
        assert_eq!(m.lookup(ip("fd00::5")), GroupId(1));
        assert_eq!(m.lookup(ip("fd00:1::5")), GroupId(3));
        assert_eq!(m.lookup(ip("2001:db8::1")), GroupId(2));
        assert_eq!(m.lookup(ip("2001:db8::2")), GroupId(0));
    }

    #[test]
    fn errors_name_the_item() {
        let a = sel(&["10.0.0.0/8"]);
        let b = sel(&["10.0.0.0/8"]);
        match ClientMap::build([(1, "a", a.as_slice()), (2, "b", b.as_slice())]) {
            Err(FilterError::ClientInTwoGroups {
                client,
                first,
                second,
            }) => {
                assert_eq!(
                    (client.as_str(), first.as_str(), second.as_str()),
                    ("10.0.0.0/8", "a", "b")
                );
            }
            other => panic!("{other:?}"),
        }
        let bad = sel(&["10.0.0.0/33"]);
        assert!(
            matches!(ClientMap::build([(1, "x", bad.as_slice())]), Err(FilterError::BadClient { group, .. }) if group == "x")
        );
        // 10.1.2.3/8 is the same network as 10.0.0.0/8.
        let c = sel(&["10.1.2.3/8"]);
        assert!(ClientMap::build([(1, "a", a.as_slice()), (2, "c", c.as_slice())]).is_err());
    }
}
