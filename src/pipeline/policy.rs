//! Step 3's settings: the compiled filter plus what the pipeline derives from the
//! configuration per group and list (tunnel actions, block answers, the log's
//! labels); swapped as one on reload.

use std::sync::Arc;

use super::PolicySettings;
use super::block::{self, Plan};
use crate::detect;
use crate::filter::{Action, BlockReason, Filter, GroupId, RuleSource, Verdict};
use crate::querylog;

/// The compiled filter plus what the pipeline derives from the configuration per
/// group and list; swapped as one on reload.
pub struct Policy {
    /// The compiled lists and groups.
    pub filter: Filter,
    tunnel_actions: Vec<detect::Actions>,
    group_labels: Vec<Arc<str>>,
    /// Per group, the log's list labels of its own allow and deny entries.
    group_rule_labels: Vec<[Arc<str>; 2]>,
    list_labels: Vec<Arc<str>>,
    /// `[[clients]]` and the groups' identity selectors.
    identities: crate::identity::Identities,
    /// Per configured client, the detector's tag of its name (computed once).
    client_tags: Vec<detect::ClientTag>,
    /// Local records and hosts files: swapped with the filter, so a reload (or a
    /// secondary's replicated state) changes them too.
    pub(super) local: crate::resolve::local::LocalRecords,
}

impl Policy {
    /// Pairs `filter` (compiled from the same configuration) with the per-group
    /// settings and local records of `cfg`; fails on unreadable hosts files.
    pub fn new(filter: Filter, cfg: &PolicySettings) -> anyhow::Result<Self> {
        let local = crate::resolve::local::LocalRecords::build(&cfg.local, &cfg.forward_zones)?;
        let groups = filter.group_count();
        let mut tunnel_actions = Vec::with_capacity(groups);
        let mut group_labels = Vec::with_capacity(groups);
        let mut group_rule_labels = Vec::with_capacity(groups);
        for g in 0..groups {
            let name = filter.group_name(GroupId(g as u16));
            let configured = cfg.tunnel_actions.iter().find(|(n, _)| n == name);
            tunnel_actions.push(configured.map_or(cfg.default_tunnel_actions, |&(_, a)| a));
            group_labels.push(Arc::from(name));
            group_rule_labels.push([
                Arc::from(format!("group {name} allow")),
                Arc::from(format!("group {name} deny")),
            ]);
        }
        let list_labels = cfg
            .list_names
            .iter()
            .map(|n| Arc::from(n.as_str()))
            .collect();
        let identities = crate::identity::Identities::build(&cfg.clients, &cfg.groups, &filter)
            .unwrap_or_else(|error| {
                // Config::validate rejects this before a policy is built.
                tracing::error!(%error, "[[clients]] ignored");
                crate::identity::Identities::default()
            });
        let client_tags = (0..=crate::identity::ClientIndex::MAX)
            .map_while(|c| identities.name(c))
            .map(|name| detect::ClientTag::of(name))
            .collect();
        Ok(Self {
            local,
            identities,
            client_tags,
            filter,
            tunnel_actions,
            group_labels,
            group_rule_labels,
            list_labels,
        })
    }

    /// Who the client at `client` is (`crate::identity`): its group, and its
    /// `[[clients]]` entry if one is recognised. Without `[[clients]]` or identity
    /// selectors, just the source address's group.
    #[inline]
    pub fn identify(
        &self,
        client: std::net::IpAddr,
        presented: Option<&crate::identity::Presented>,
        forwarded: Option<&crate::identity::Forwarded>,
    ) -> crate::identity::Identity {
        if self.identities.is_empty() {
            return crate::identity::Identity {
                group: self.filter.group_of(client),
                client: None,
                proven: false,
            };
        }
        self.identities
            .resolve(&self.filter, client, presented, forwarded)
    }

    /// Whose detection state a query of `identity` from `ip` is: a proven
    /// client's own, else its source address's (an unproven identity is anyone's
    /// claim: rotating it must not give a client fresh state or escape a
    /// quarantine).
    #[inline]
    pub(super) fn who(
        &self,
        ip: std::net::IpAddr,
        identity: &crate::identity::Identity,
    ) -> detect::Who {
        match identity.client {
            Some(c) if identity.proven => {
                self.client_tags
                    .get(usize::from(c))
                    .map_or(detect::Who::Address(ip), |&tag| detect::Who::Client {
                        tag,
                        from: ip,
                    })
            }
            _ => detect::Who::Address(ip),
        }
    }

    /// The configured clients.
    pub fn identities(&self) -> &crate::identity::Identities {
        &self.identities
    }

    /// The block answer group `g` gives to a query of `qtype`.
    pub fn block_plan(&self, g: GroupId, qtype: u16) -> Plan {
        let (mode, ttl) = self.filter.group_block(g);
        block::plan(mode, ttl, qtype)
    }

    pub(super) fn group_label(&self, g: GroupId) -> Arc<str> {
        self.group_labels
            .get(usize::from(g.0))
            .cloned()
            .unwrap_or_else(querylog::empty_str)
    }

    /// The name of group `g`, for the reply's EDE.
    pub fn group_name(&self, g: GroupId) -> &str {
        self.group_labels.get(usize::from(g.0)).map_or("", |l| l)
    }

    /// The name of a rule's list (or group), for the reply's EDE.
    pub fn rule_source_name(&self, source: RuleSource) -> &str {
        match source {
            RuleSource::List(i) => self.list_labels.get(i as usize).map_or("", |l| l),
            RuleSource::GroupAllow(g) | RuleSource::GroupDeny(g) => self.group_name(g),
        }
    }

    pub(super) fn tunnel_action(&self, g: GroupId) -> detect::Actions {
        self.tunnel_actions
            .get(usize::from(g.0))
            .copied()
            .unwrap_or_default()
    }

    /// The list (or group entry set) name and rule text for the log.
    pub(super) fn rule_labels(&self, verdict: &Verdict) -> (Arc<str>, Arc<str>) {
        if verdict.action == Action::Block(BlockReason::NotAllowlisted) {
            static NOT_ALLOWLISTED: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
            let rule = NOT_ALLOWLISTED.get_or_init(|| Arc::from("not-allowlisted"));
            return (querylog::empty_str(), rule.clone());
        }
        let Some(rule) = verdict.rule else {
            return (querylog::empty_str(), querylog::empty_str());
        };
        let list = match rule.source {
            RuleSource::List(i) => self.list_labels.get(i as usize).cloned(),
            RuleSource::GroupAllow(g) => self
                .group_rule_labels
                .get(usize::from(g.0))
                .map(|l| l[0].clone()),
            RuleSource::GroupDeny(g) => self
                .group_rule_labels
                .get(usize::from(g.0))
                .map(|l| l[1].clone()),
        };
        let line = if rule.line > 0 {
            line_label(rule.line)
        } else {
            querylog::empty_str()
        };
        (list.unwrap_or_else(querylog::empty_str), line)
    }
}

/// `"line N"` for the log, memoised per thread: a blocked name's rule is logged on
/// every query, and the same few list lines block most of them.
fn line_label(line: u32) -> Arc<str> {
    const SLOTS: usize = 1024;
    type Slots = Vec<Option<(u32, Arc<str>)>>;
    thread_local! {
        static LABELS: std::cell::RefCell<Slots> = const { std::cell::RefCell::new(Vec::new()) };
    }
    LABELS.with(|t| {
        let mut t = t.borrow_mut();
        if t.is_empty() {
            t.resize(SLOTS, None);
        }
        let slot = &mut t[line as usize % SLOTS];
        match slot {
            Some((l, label)) if *l == line => label.clone(),
            _ => {
                // Written on the stack, then one allocation (the `Arc`): a run
                // of distinct blocked names misses this memo on every query, and
                // `format!` (about 1k instructions) or a `String` on the way
                // (a second allocation and a free, about 170) showed per query.
                const PREFIX: &[u8] = b"line ";
                let mut text = [0u8; PREFIX.len() + 10];
                let mut digits = itoa::Buffer::new();
                let digits = digits.format(line).as_bytes();
                let len = PREFIX.len() + digits.len();
                text[..PREFIX.len()].copy_from_slice(PREFIX);
                text[PREFIX.len()..len].copy_from_slice(digits);
                let label: Arc<str> = std::str::from_utf8(&text[..len])
                    .map_or_else(|_| querylog::empty_str(), Arc::from);
                *slot = Some((line, label.clone()));
                label
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::line_label;

    #[test]
    fn line_labels_read_as_written_for_every_width_and_repeat_from_the_memo() {
        for line in [1, 9, 10, 1_023, 1_024, 65_536, 4_000_000_000, u32::MAX] {
            let label = line_label(line);
            assert_eq!(&*label, format!("line {line}"));
            // A repeat is the memo's label, not a new allocation.
            assert!(std::sync::Arc::ptr_eq(&label, &line_label(line)));
        }
        // Two lines in one memo slot (1 and 1,025) each get their own text.
        assert_eq!(&*line_label(1), "line 1");
        assert_eq!(&*line_label(1_025), "line 1025");
        assert_eq!(&*line_label(1), "line 1");
    }
}
