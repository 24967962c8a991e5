//! Allowlist learning: from what a group's clients resolved in a period (the
//! query log), the registrable domains to allow, with counts, clients and first
//! and last use, for review; `--apply` writes them as `||domain^` allow entries of
//! the group (`config::edit::apply_learned`).
//!
//! Only answered queries count (blocked ones never do: a name a block list or the
//! enforced allowlist refused stays refused). A domain with tunnel-flagged queries
//! is listed apart and never applied: that is what an exfiltrating agent would
//! like to get allowed.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::Write;

use super::Client;
use crate::querylog::{self, Criteria, Order, Origin, QueryLog, QueryLogError, Ruling};

/// What to learn: group, period (`since`/`until` as in the query log) and
/// optionally one client of the group.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LearnRequest {
    /// The group.
    pub group: String,
    /// Only this client's queries: a `[[clients]]` name, an address or a CIDR
    /// (as `query-log --client`). Default: every client of the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Start, e.g. `7d` (default 7 days back).
    pub since: Option<String>,
    /// End (default now).
    pub until: Option<String>,
    /// When applying: also switch the group to `mode = "enforce"`.
    pub enforce: bool,
}

impl LearnRequest {
    /// The query-log entries to learn from: the period's, oldest first, of the
    /// client when one is given (an error names a client that is none).
    pub fn criteria(&self, now_ms: u64) -> Result<Criteria, QueryLogError> {
        if self.group.trim().is_empty() {
            return Err(QueryLogError::Parse("a group is needed (--group)".into()));
        }
        let (since, until, _) = querylog::StatsRequest {
            since: Some(self.since.clone().unwrap_or_else(|| "7d".into())),
            until: self.until.clone(),
            top: None,
        }
        .resolve(now_ms)?;
        let filter = Criteria {
            since_ms: Some(since),
            until_ms: Some(until),
            order: Order::OldestFirst,
            ..Criteria::default()
        };
        match self.client.as_deref().map(str::trim) {
            Some(c) if !c.is_empty() => filter.with_client(c),
            _ => Ok(filter),
        }
    }
}

/// One proposed allow entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The registrable domain.
    pub domain: String,
    /// The allow entry (`||domain^`: the domain and everything below it).
    pub entry: String,
    /// Answered queries for names under it.
    pub queries: u64,
    /// Of which an allow rule already matched.
    pub allowlisted: u64,
    /// Of which tunnel detection flagged.
    pub flagged: u64,
    /// Distinct clients that asked (a configured client by its name, however many
    /// addresses it asked from; others by address).
    pub clients: u64,
    /// Up to five of them (names, or addresses).
    pub client_sample: Vec<String>,
    /// Up to five names asked under it.
    pub name_sample: Vec<String>,
    /// First query (unix ms).
    pub first_ms: u64,
    /// Last query (unix ms).
    pub last_ms: u64,
}

/// The proposal for a group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    /// The group.
    pub group: String,
    /// The one client learned from (absent: every client of the group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Start of the period (unix ms).
    pub since_ms: u64,
    /// End of the period (unix ms, exclusive).
    pub until_ms: u64,
    /// Domains to allow, most queried first.
    pub proposals: Vec<Proposal>,
    /// Domains already allowed by an allow rule for every query (not proposed).
    pub already_allowed: Vec<String>,
    /// Domains with tunnel-flagged queries (never proposed; review by hand).
    pub flagged: Vec<Proposal>,
    /// Entries written by `--apply` (absent when not applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<usize>,
    /// Whether `--apply --enforce` switched the group to `mode = "enforce"`.
    #[serde(default)]
    pub enforced: bool,
}

/// Most distinct clients counted per domain.
const MAX_CLIENTS: usize = 10_000;

/// Reads the group's answered queries in the period and builds the proposal;
/// domains whose entry is in `allowed` (the group's `allow` entries now) or that
/// only ever matched an allow rule are reported as already allowed.
pub fn learn(
    log: &QueryLog,
    req: &LearnRequest,
    allowed: &[String],
    now_ms: u64,
) -> Result<Learned, QueryLogError> {
    let filter = req.criteria(now_ms)?;
    let (since, until) = (
        filter.since_ms.unwrap_or_default(),
        filter.until_ms.unwrap_or_default(),
    );
    let mut by_domain: HashMap<String, (Proposal, HashSet<Client>)> = HashMap::new();
    for e in log.query(&filter) {
        let e = e?;
        if *e.group != *req.group
            || e.verdict == Ruling::Blocked
            || matches!(e.source, Origin::Refused | Origin::Blocked)
            || e.name.is_empty()
            || *e.name == *"hidden"
        {
            continue;
        }
        let domain = super::registrable(&e.name).to_ascii_lowercase();
        let (p, clients) = by_domain.entry(domain.clone()).or_insert_with(|| {
            (
                Proposal {
                    entry: format!("||{domain}^"),
                    domain,
                    first_ms: e.time_ms,
                    ..Proposal::default()
                },
                HashSet::new(),
            )
        });
        p.queries += 1;
        p.allowlisted += u64::from(e.verdict == Ruling::Allowlisted);
        p.flagged += u64::from(e.flagged);
        p.first_ms = p.first_ms.min(e.time_ms);
        p.last_ms = p.last_ms.max(e.time_ms);
        let client = Client::of(&e);
        if clients.len() < MAX_CLIENTS && !clients.contains(&client) {
            if p.client_sample.len() < 5 {
                p.client_sample.push(client.to_string());
            }
            clients.insert(client);
        }
        if p.name_sample.len() < 5 && !p.name_sample.iter().any(|n| **n == *e.name) {
            p.name_sample.push(e.name.to_string());
        }
    }
    let mut out = Learned {
        group: req.group.clone(),
        client: req
            .client
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        since_ms: since,
        until_ms: until,
        ..Learned::default()
    };
    for (_, (mut p, clients)) in by_domain {
        p.clients = clients.len() as u64;
        if p.flagged > 0 {
            out.flagged.push(p);
        } else if p.allowlisted == p.queries || allowed.contains(&p.entry) {
            out.already_allowed.push(p.domain);
        } else {
            out.proposals.push(p);
        }
    }
    let order =
        |a: &Proposal, b: &Proposal| b.queries.cmp(&a.queries).then(a.domain.cmp(&b.domain));
    out.proposals.sort_by(order);
    out.flagged.sort_by(order);
    out.already_allowed.sort();
    Ok(out)
}

/// The `allow` entries of group `name` among `groups` (empty when there is no
/// such group).
pub fn allow_entries(groups: &[crate::filter::GroupConfig], name: &str) -> Vec<String> {
    groups
        .iter()
        .find(|g| g.name == name)
        .map(|g| g.allow.clone())
        .unwrap_or_default()
}

/// The proposal as a table for review.
pub fn print_table(out: &mut impl Write, l: &Learned) -> std::io::Result<()> {
    writeln!(
        out,
        "group {}{}: {} .. {}",
        l.group,
        l.client
            .as_deref()
            .map(|c| format!(", client {c}"))
            .unwrap_or_default(),
        querylog::format_time(l.since_ms),
        querylog::format_time(l.until_ms)
    )?;
    writeln!(
        out,
        "{:<40} {:>8} {:>7}  {:<24} {:<24}  who",
        "proposed allow entry", "queries", "clients", "first seen", "last seen"
    )?;
    for p in &l.proposals {
        writeln!(
            out,
            "{:<40} {:>8} {:>7}  {:<24} {:<24}  {}",
            p.entry,
            p.queries,
            p.clients,
            querylog::format_time(p.first_ms),
            querylog::format_time(p.last_ms),
            who(p)
        )?;
    }
    if l.proposals.is_empty() {
        writeln!(out, "(nothing to add)")?;
    }
    if !l.flagged.is_empty() {
        writeln!(
            out,
            "\nnot proposed: tunnel-flagged queries (review by hand)"
        )?;
        for p in &l.flagged {
            writeln!(
                out,
                "{:<40} {:>8} flagged of {}  {}",
                p.domain,
                p.flagged,
                p.queries,
                who(p)
            )?;
        }
    }
    if !l.already_allowed.is_empty() {
        writeln!(out, "\nalready allowed: {}", l.already_allowed.join(", "))?;
    }
    if let Some(n) = l.applied {
        writeln!(out, "\napplied: {n} new allow entries in group {}", l.group)?;
    }
    if l.enforced {
        writeln!(out, "group {} now enforces its allowlist", l.group)?;
    }
    Ok(())
}

/// The clients of a proposal as the table shows them: names (addresses for
/// unnamed clients), `…` when there are more than the sample.
fn who(p: &Proposal) -> String {
    let mut s = p.client_sample.join(", ");
    if p.clients > p.client_sample.len() as u64 {
        s.push_str(", …");
    }
    s
}
