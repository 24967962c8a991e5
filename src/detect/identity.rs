//! Labels that name a user or a host (`data/identity.txt`): the shape of
//! `$(whoami).$(hostname).x` look-ups a hijacked agent makes.

use std::collections::HashSet;

use super::hash::{BuildKeyHasher, hash_bytes};

/// The built-in list.
pub const BUILTIN_IDENTITY: &str = include_str!("data/identity.txt");

/// Account names and host-name prefixes.
pub(crate) struct Identity {
    seed: u64,
    accounts: HashSet<u64, BuildKeyHasher>,
    /// Host-name prefixes and whether a digit must follow.
    hosts: Vec<(Box<[u8]>, bool)>,
}

impl Identity {
    /// The built-in list.
    pub(crate) fn builtin(seed: u64) -> Self {
        let mut id = Identity {
            seed,
            accounts: HashSet::default(),
            hosts: Vec::new(),
        };
        for line in BUILTIN_IDENTITY.lines() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if let Some(prefix) = entry.strip_suffix("*9") {
                id.hosts.push((prefix.as_bytes().into(), true));
            } else if let Some(prefix) = entry.strip_suffix('*') {
                id.hosts.push((prefix.as_bytes().into(), false));
            } else if !entry.is_empty() {
                id.accounts.insert(hash_bytes(seed, entry.as_bytes()));
            }
        }
        id
    }

    fn host(&self, label: &[u8]) -> bool {
        self.hosts.iter().any(|(p, digit)| {
            label.len() > p.len()
                && label.starts_with(p)
                && (!digit || label[p.len()..].iter().any(u8::is_ascii_digit))
        })
    }

    /// Whether `below` (lower-case text below the registrable domain) holds
    /// `<account>.<label>.` or `<label>.<host>.`, with at least one more label
    /// below the registrable domain after them.
    pub(crate) fn hit(&self, below: &[u8]) -> bool {
        let mut labels = below.split(|&c| c == b'.');
        let Some(mut prev) = labels.next() else {
            return false;
        };
        let mut next = labels.next();
        while let Some(cur) = next {
            next = labels.next();
            if next.is_none() {
                // `cur` is the last label below the domain: the `x` of
                // `user.host.x` must follow.
                return false;
            }
            let account = !prev.is_empty() && self.accounts.contains(&hash_bytes(self.seed, prev));
            if (account && cur.len() >= 2) || (!prev.is_empty() && self.host(cur)) {
                return true;
            }
            prev = cur;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_then_host_then_more() {
        let id = Identity::builtin(5);
        for yes in [
            "ci.k8s-node-7.hooks",
            "claude.mbp-bob.hooks",
            "bob.ws-0412.hooks",
            "bob.devcontainer-91ab.hooks.x",
            "ubuntu.ip-10-0-3-7.c2",
        ] {
            assert!(id.hit(yes.as_bytes()), "{yes}");
        }
        for no in [
            // No label after the pair, a lone host or account label, or
            // ordinary labels.
            "ci.k8s-node-7",
            "k8s-node-7.hooks",
            "jenkins.corp",
            "www",
            "",
            "api.eu-1.cdn",
            "chat.ws-eu.edge",
            "images.marketing",
        ] {
            assert!(!id.hit(no.as_bytes()), "{no}");
        }
    }
}
