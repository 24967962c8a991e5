//! A set of IP networks with a membership test cheap enough for every query
//! (client access, rebinding ranges): each network is a masked integer compare.

use std::net::IpAddr;

use ipnet::IpNet;

/// Compiled networks. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
/// dual-stack socket reports for IPv4 clients) is judged as its IPv4 address.
#[derive(Debug, Clone, Default)]
pub struct NetSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl NetSet {
    /// The set of `nets` (host bits are ignored).
    pub fn new<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let mut set = NetSet::default();
        for net in nets {
            match net {
                IpNet::V4(n) => {
                    let mask = u32::from(n.netmask());
                    set.v4.push((u32::from(n.network()) & mask, mask));
                }
                IpNet::V6(n) => {
                    let mask = u128::from(n.netmask());
                    set.v6.push((u128::from(n.network()) & mask, mask));
                }
            }
        }
        set
    }

    /// Whether `ip` lies in one of the networks.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(net, mask)| a & mask == net)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|&(net, mask)| a & mask == net)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_ipnet_contains() {
        let nets: Vec<IpNet> = [
            "10.0.0.0/8",
            "192.168.1.7/24",
            "0.0.0.0/0",
            "fd00::/8",
            "::1/128",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let probes = [
            "10.1.2.3",
            "11.0.0.1",
            "192.168.1.200",
            "192.168.2.1",
            "8.8.8.8",
            "fd12::1",
            "fe80::1",
            "::1",
            "::2",
            "::ffff:10.0.0.1",
            "::ffff:192.168.2.1",
        ];
        // Each network alone, and all together, agree with ipnet.
        for k in 0..=nets.len() {
            let chosen: Vec<&IpNet> = if k == nets.len() {
                nets.iter().collect()
            } else {
                vec![&nets[k]]
            };
            let set = NetSet::new(chosen.iter().copied());
            for p in probes {
                let ip: IpAddr = p.parse().unwrap();
                let judged = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                    v4 => v4,
                };
                let want = chosen.iter().any(|n| n.contains(&judged));
                assert_eq!(set.contains(ip), want, "{p} in {chosen:?}");
            }
        }
        assert!(!NetSet::default().contains("1.2.3.4".parse().unwrap()));
    }
}
