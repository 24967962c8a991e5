//! dnsguard's filtering engine: parses block/allow lists (hosts, plain domains, AdGuard/ABP DNS syntax,
//! regexes), compiles them with per-group allow/deny entries into one immutable [`Filter`], and answers "what
//! happens to this query from this client" on the hot path without allocating or locking.
//!
//! Wiring (the caller's job): read/download each enabled list's text (this module does no I/O), call
//! [`Filter::build`] with the config and the texts, keep the result in an `ArcSwap<Filter>` and swap it on
//! reload. Per query, normalise the name (ASCII lower case, no trailing dot) and call [`Filter::check`]; on
//! `Action::Block` answer according to [`Filter::group_block`] for `verdict.group`. [`Filter::explain`]
//! (slow path, needs the texts again) tells which list, line and rule decided.
//!
//! Files: `parse` (line formats), `name` (normalisation), `hash` (fingerprints), `table` (fingerprint table),
//! `wildcard`, `regexes`, `matcher` (compiled rules and precedence), `policy` (client → group), `config`,
//! `explain`, `error`.

#![warn(missing_docs)]

pub mod answers;
pub mod config;
pub mod error;
pub mod explain;
pub mod hash;
pub mod literal;
pub mod matcher;
pub mod parse;
pub mod policy;
pub mod regexes;
pub mod table;
pub mod wildcard;

use std::net::IpAddr;

pub use config::{
    BlockMode, BlockModeKind, DEFAULT_GROUP, DOH_RESOLVERS_SOURCE, GroupConfig, GroupMode,
    ListConfig, ListKind,
};
pub use error::FilterError;
pub use explain::Explanation;
pub use parse::{InvalidReason, Parsed, Rule, parse_list};

use hash::FastMap;
use matcher::{Bits, Builder, Matcher, rank_allows};
use policy::ClientMap;

/// Maximum number of invalid-line samples kept per list.
pub const MAX_INVALID_SAMPLES: usize = 20;

/// Text of one list, supplied by the caller (it reads files, builtin lists, downloaded copies).
#[derive(Clone, Copy, Debug)]
pub struct ListText<'a> {
    /// The list's configured name.
    pub name: &'a str,
    /// Its full text.
    pub text: &'a str,
}

/// Index of a group: 0 is the implicit `default` group, then the configured groups in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupId(pub u16);

/// What to do with a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// No rule matched: resolve normally.
    Pass,
    /// An allow rule matched: resolve normally (and never block).
    Allow,
    /// Block, answering with the group's block mode.
    Block(BlockReason),
}

/// Why a query is blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// A block rule matched.
    Rule,
    /// The group is in default-deny mode and no allow rule matched ("not-allowlisted").
    NotAllowlisted,
}

/// Where a rule comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleSource {
    /// A list, by index in the `lists` config slice.
    List(u32),
    /// A group's `allow` entries.
    GroupAllow(GroupId),
    /// A group's `deny` entries.
    GroupDeny(GroupId),
}

/// Reference to the deciding rule: small and `Copy`, enough for [`Filter::explain`] to re-read the rule from
/// the list text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleRef {
    /// The list or group entry set.
    pub source: RuleSource,
    /// 1-based line in the list (entry index + 1 for group entries). 0 when the name is in several lists and
    /// the line was only recorded for another one; `explain` then finds it by fingerprint.
    pub line: u32,
    fp: u64,
    kind: u8,
}

/// Outcome of [`Filter::check`].
#[derive(Clone, Copy, Debug)]
pub struct Verdict {
    /// The client's group.
    pub group: GroupId,
    /// What to do.
    pub action: Action,
    /// The deciding rule, if a rule decided.
    pub rule: Option<RuleRef>,
}

/// Load statistics of one configured list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListStats {
    /// List name.
    pub name: String,
    /// Block or allow.
    pub kind: ListKind,
    /// Whether the list is enabled.
    pub enabled: bool,
    /// Rules loaded (a hosts line with three names counts three).
    pub entries: usize,
    /// Lines (or hosts names) that could not be used.
    pub invalid: usize,
    /// The first [`MAX_INVALID_SAMPLES`] invalid lines: (line number, reason).
    pub invalid_samples: Vec<(u32, String)>,
    /// Enabled but no text was supplied (e.g. download failed and no cached copy).
    pub missing: bool,
}

/// Memory and size figures of a compiled filter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryStats {
    /// Distinct names in the fingerprint table.
    pub domains: usize,
    /// Bytes allocated by the fingerprint table (including slack).
    pub table_bytes: usize,
    /// `table_bytes / domains`.
    pub bytes_per_domain: f64,
    /// Distinct interned source sets.
    pub source_sets: usize,
    /// Wildcard rules.
    pub wildcard_rules: usize,
    /// Of which indexed in the table under a literal domain suffix (not scanned).
    pub wildcard_indexed: usize,
    /// Regex rules.
    pub regex_rules: usize,
    /// Domain rules with modifiers.
    pub modifier_rules: usize,
}

#[derive(Debug)]
struct GroupInfo {
    name: String,
    mode: BlockMode,
    ttl: u32,
    default_deny: bool,
    member: Bits,
    allow: Vec<String>,
    deny: Vec<String>,
}

/// Compiled, immutable; the caller keeps it in an ArcSwap and swaps on reload.
#[derive(Debug)]
pub struct Filter {
    matcher: Matcher,
    groups: Vec<GroupInfo>,
    clients: ClientMap,
    stats: Vec<ListStats>,
    n_lists: u32,
    answers: answers::AnswerNets,
}

const NULL_MODE: BlockMode = BlockMode::Null;

impl Filter {
    /// Compile lists + groups. `texts` gives the text of each enabled list by name;
    /// a list whose text is missing is reported in stats, not fatal.
    pub fn build(
        lists: &[ListConfig],
        groups: &[GroupConfig],
        texts: &[ListText<'_>],
    ) -> Result<Filter, FilterError> {
        // Lists: unique, non-empty names.
        let mut list_names: FastMap<&str, ()> = FastMap::default();
        for l in lists {
            if l.name.is_empty() {
                return Err(FilterError::EmptyListName(l.source.clone()));
            }
            if list_names.insert(l.name.as_str(), ()).is_some() {
                return Err(FilterError::DuplicateList(l.name.clone()));
            }
        }
        // Groups: default first, then the others in order.
        let default_cfg = GroupConfig {
            name: DEFAULT_GROUP.to_owned(),
            ..GroupConfig::default()
        };
        let mut ordered: Vec<&GroupConfig> = vec![
            groups
                .iter()
                .find(|g| g.name == DEFAULT_GROUP)
                .unwrap_or(&default_cfg),
        ];
        let mut group_index: FastMap<&str, u16> = FastMap::default();
        group_index.insert(DEFAULT_GROUP, 0);
        for g in groups {
            if g.name.is_empty() {
                return Err(FilterError::EmptyGroupName);
            }
            if g.name == DEFAULT_GROUP {
                if groups.iter().filter(|x| x.name == DEFAULT_GROUP).count() > 1 {
                    return Err(FilterError::DuplicateGroup(g.name.clone()));
                }
                continue;
            }
            let id = u16::try_from(ordered.len())
                .map_err(|_| FilterError::TooManyGroups(groups.len() + 1))?;
            if group_index.insert(g.name.as_str(), id).is_some() {
                return Err(FilterError::DuplicateGroup(g.name.clone()));
            }
            ordered.push(g);
        }
        let modes = ordered
            .iter()
            .map(|g| config::resolve_block_mode(g))
            .collect::<Result<Vec<_>, _>>()?;
        let clients = ClientMap::build(
            ordered
                .iter()
                .enumerate()
                .map(|(i, g)| (i as u16, g.name.as_str(), g.clients.as_slice())),
        )?;

        // Sources: lists by index, then (allow, deny) per group.
        let n_lists = u32::try_from(lists.len())
            .unwrap_or(u32::MAX / 4)
            .min(u32::MAX / 4);
        let n_sources = n_lists as usize + 2 * ordered.len();
        let mut members: Vec<Bits> = (0..ordered.len()).map(|_| Bits::new(n_sources)).collect();
        for (li, l) in lists.iter().enumerate() {
            for gname in &l.groups {
                if gname == "*" {
                    continue;
                }
                if !group_index.contains_key(gname.as_str()) {
                    return Err(FilterError::UnknownGroup {
                        list: l.name.clone(),
                        group: gname.clone(),
                    });
                }
            }
            if !l.enabled {
                continue;
            }
            for (gi, g) in ordered.iter().enumerate() {
                if l.applies_to(g) {
                    members[gi].set(li as u32);
                }
            }
        }
        for (gi, m) in members.iter_mut().enumerate() {
            m.set(n_lists + 2 * gi as u32);
            m.set(n_lists + 2 * gi as u32 + 1);
        }

        let text_of: FastMap<&str, &str> = texts.iter().map(|t| (t.name, t.text)).collect();
        let approx: usize = lists
            .iter()
            .filter_map(|l| text_of.get(l.name.as_str()))
            .map(|t| t.len() / 24)
            .sum();
        let mut builder = Builder::with_capacity(approx);
        let mut answers = answers::AnswerNets::default();
        let mut stats = Vec::with_capacity(lists.len());
        for (li, l) in lists.iter().enumerate() {
            let mut st = ListStats {
                name: l.name.clone(),
                kind: l.kind,
                enabled: l.enabled,
                entries: 0,
                invalid: 0,
                invalid_samples: Vec::new(),
                missing: false,
            };
            if l.enabled {
                match text_of.get(l.name.as_str()) {
                    None => st.missing = true,
                    Some(text) => {
                        let allow_list = l.kind == ListKind::Allow;
                        for item in parse_list(text) {
                            match item {
                                Parsed::Rule {
                                    line,
                                    rule:
                                        Rule {
                                            pattern: parse::Pattern::Address(net),
                                            ..
                                        },
                                } if !allow_list => {
                                    st.entries += 1;
                                    answers.add(net, li as u32, line);
                                }
                                Parsed::Rule {
                                    line,
                                    rule:
                                        Rule {
                                            pattern: parse::Pattern::Address(_),
                                            ..
                                        },
                                } => {
                                    st.invalid += 1;
                                    if st.invalid_samples.len() < MAX_INVALID_SAMPLES {
                                        st.invalid_samples
                                            .push((line, "address entries only block".into()));
                                    }
                                }
                                Parsed::Rule { line, rule } => {
                                    st.entries += 1;
                                    builder.add(li as u32, line, rule, allow_list, false);
                                }
                                Parsed::Invalid { line, reason } => {
                                    st.invalid += 1;
                                    if st.invalid_samples.len() < MAX_INVALID_SAMPLES {
                                        st.invalid_samples.push((line, reason.to_string()));
                                    }
                                }
                            }
                        }
                    }
                }
            }
            stats.push(st);
        }
        for (gi, g) in ordered.iter().enumerate() {
            for (field, entries, src) in [
                ("allow", &g.allow, n_lists + 2 * gi as u32),
                ("deny", &g.deny, n_lists + 2 * gi as u32 + 1),
            ] {
                let allow = field == "allow";
                for (ei, entry) in entries.iter().enumerate() {
                    match parse::parse_line(entry) {
                        Ok(Some(Rule {
                            pattern: parse::Pattern::Address(net),
                            ..
                        })) => {
                            if allow {
                                return Err(FilterError::BadEntry {
                                    group: g.name.clone(),
                                    field,
                                    entry: entry.clone(),
                                    reason: "address entries only block (put them in deny)".into(),
                                });
                            }
                            answers.add(net, src, ei as u32 + 1);
                        }
                        Ok(Some(rule)) => builder.add(src, ei as u32 + 1, rule, allow, !allow),
                        Ok(None) => {}
                        Err(e) => {
                            return Err(FilterError::BadEntry {
                                group: g.name.clone(),
                                field,
                                entry: entry.clone(),
                                reason: e.to_string(),
                            });
                        }
                    }
                }
            }
        }
        let matcher = builder.finish(&members, n_lists)?;
        let groups = ordered
            .iter()
            .zip(modes)
            .zip(members)
            .map(|((g, mode), member)| GroupInfo {
                name: g.name.clone(),
                mode,
                ttl: g.block_ttl,
                default_deny: g.denies_by_default(),
                member,
                allow: g.allow.clone(),
                deny: g.deny.clone(),
            })
            .collect();
        Ok(Filter {
            matcher,
            groups,
            clients,
            stats,
            n_lists,
            answers,
        })
    }

    /// Hot path. `name`: ASCII lower-case, no trailing dot (the caller normalises). Must not allocate or lock.
    #[inline]
    pub fn check(&self, client: IpAddr, name: &str, qtype: u16) -> Verdict {
        self.check_in(self.clients.lookup(client), client, name, qtype)
    }

    /// [`Filter::check`] for a client whose group is already known (the identity
    /// step chose it).
    #[inline]
    pub fn check_in(&self, gid: GroupId, client: IpAddr, name: &str, qtype: u16) -> Verdict {
        let Some(g) = self.groups.get(gid.0 as usize) else {
            return Verdict {
                group: gid,
                action: Action::Pass,
                rule: None,
            };
        };
        let best = self
            .matcher
            .best(gid.0 as usize, &g.member, client, name, qtype);
        let (action, rule) = if best.rank == 0 {
            let action = if g.default_deny {
                Action::Block(BlockReason::NotAllowlisted)
            } else {
                Action::Pass
            };
            (action, None)
        } else {
            let action = if rank_allows(best.rank) {
                Action::Allow
            } else {
                Action::Block(BlockReason::Rule)
            };
            let rule = self.matcher.resolve(&best, &g.member).map(|r| RuleRef {
                source: self.source_of(r.source),
                line: r.line,
                fp: r.fp,
                kind: r.kind,
            });
            (action, rule)
        };
        Verdict {
            group: gid,
            action,
            rule,
        }
    }

    /// Answer rules: the first of `addrs` that an address or CIDR entry of a list or
    /// `deny` entry of group `g` covers, with the verdict naming that entry. Hot path
    /// (after resolution): no allocation, and nothing at all when no list has
    /// address entries.
    pub fn check_answer(
        &self,
        g: GroupId,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Option<(IpAddr, Verdict)> {
        if self.answers.is_empty() {
            return None;
        }
        let info = self.groups.get(g.0 as usize)?;
        addrs.into_iter().find_map(|ip| {
            let hit = self.answers.find(ip, &info.member)?;
            let verdict = Verdict {
                group: g,
                action: Action::Block(BlockReason::Rule),
                rule: Some(RuleRef {
                    source: self.source_of(hit.source),
                    line: hit.line,
                    fp: 0,
                    kind: 0,
                }),
            };
            Some((ip, verdict))
        })
    }

    /// The group a client belongs to.
    pub fn group_of(&self, client: IpAddr) -> GroupId {
        self.clients.lookup(client)
    }

    /// Which list and rule decided, with the line number and the rule's text (re-read from the list text the
    /// caller passes again; slow path, used by `dnsguard check` and the dashboard).
    pub fn explain(&self, verdict: &Verdict, texts: &[ListText<'_>]) -> Explanation {
        explain::explain(self, verdict, texts)
    }

    /// Name of group `g` (`default` for an unknown id).
    pub fn group_name(&self, g: GroupId) -> &str {
        self.groups
            .get(g.0 as usize)
            .map_or(DEFAULT_GROUP, |g| g.name.as_str())
    }

    /// Block answer and TTL of group `g`.
    pub fn group_block(&self, g: GroupId) -> (&BlockMode, u32) {
        self.groups
            .get(g.0 as usize)
            .map_or((&NULL_MODE, 60), |g| (&g.mode, g.ttl))
    }

    /// Number of groups (including `default`).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Per-list load statistics, in config order.
    pub fn list_stats(&self) -> &[ListStats] {
        &self.stats
    }

    /// Memory and size figures.
    pub fn memory(&self) -> MemoryStats {
        let domains = self.matcher.domains();
        let table_bytes = self.matcher.table_bytes();
        MemoryStats {
            domains,
            table_bytes,
            bytes_per_domain: if domains == 0 {
                0.0
            } else {
                table_bytes as f64 / domains as f64
            },
            source_sets: self.matcher.set_count(),
            wildcard_rules: self.matcher.wildcard_count(),
            wildcard_indexed: self.matcher.wildcard_indexed_count(),
            regex_rules: self.matcher.regex_count(),
            modifier_rules: self.matcher.complex_count(),
        }
    }

    fn source_of(&self, src: u32) -> RuleSource {
        if src < self.n_lists {
            RuleSource::List(src)
        } else {
            let off = src - self.n_lists;
            let g = GroupId((off / 2) as u16);
            if off.is_multiple_of(2) {
                RuleSource::GroupAllow(g)
            } else {
                RuleSource::GroupDeny(g)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Filter>();
    }
}
