//! The weekly review (`dnsguard report --since 7d`, `GET /api/v1/report`): top
//! clients, new domains per client, blocked attempts by category, flagged names
//! and bypass attempts, all computed from the query log.
//!
//! "New" means a (client, registrable domain) pair answered in the period that the
//! log does not hold before the period (within its retention).

use std::collections::{HashMap, HashSet};
use std::io::Write;

use serde::{Deserialize, Serialize};

use super::{Categories, Client};
use crate::querylog::{self, Criteria, Entry, Order, Origin, QueryLog, QueryLogError, Ruling};

/// Most (client, domain) pairs remembered while computing new domains.
const MAX_PAIRS: usize = 2_000_000;

/// One client's line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientLine {
    /// The client.
    pub client: String,
    /// Its group (of its latest query).
    pub group: String,
    /// Queries.
    pub queries: u64,
    /// Of which blocked.
    pub blocked: u64,
    /// Of which tunnel-flagged.
    pub flagged: u64,
}

/// A client's new domains.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewDomains {
    /// The client.
    pub client: String,
    /// Registrable domains first used in the period, in order of first use.
    pub domains: Vec<String>,
}

/// A count under a key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Count {
    /// What is counted (category, name).
    pub key: String,
    /// How often.
    pub count: u64,
}

/// A flagged name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flagged {
    /// The query name.
    pub name: String,
    /// Queries flagged.
    pub count: u64,
    /// Highest score.
    pub max_score: f32,
    /// Up to five clients.
    pub clients: Vec<String>,
}

/// A bypass attempt (canary or DoH/DoT resolver name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bypass {
    /// The client.
    pub client: String,
    /// The name.
    pub name: String,
    /// How often.
    pub count: u64,
    /// `canary` or the list name.
    pub via: String,
}

/// The review.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Start (unix ms).
    pub since_ms: u64,
    /// End (unix ms, exclusive).
    pub until_ms: u64,
    /// Queries in the period.
    pub queries: u64,
    /// Of which blocked.
    pub blocked: u64,
    /// UDP queries the rate limiter dropped or slipped (not in `queries`;
    /// counted per minute, never logged one by one).
    #[serde(default)]
    pub rate_limited: u64,
    /// Most active clients.
    pub top_clients: Vec<ClientLine>,
    /// New domains per client (clients with the most first).
    pub new_domains: Vec<NewDomains>,
    /// Blocked queries per category: the list name, `not-allowlisted`, `tunnel`,
    /// `rebinding` or `group deny`.
    pub blocked_by_category: Vec<Count>,
    /// Tunnel-flagged names.
    pub flagged: Vec<Flagged>,
    /// Bypass attempts.
    pub bypass: Vec<Bypass>,
}

/// The category of a blocked entry.
fn category(e: &Entry) -> String {
    if !e.list.is_empty() {
        return e.list.to_string();
    }
    let rule = &*e.rule;
    for k in ["not-allowlisted", "tunnel", "rebinding"] {
        if rule.starts_with(k) {
            return k.to_owned();
        }
    }
    "other".to_owned()
}

/// Computes the review of `[since, until)`; lists hold at most `top` items.
pub fn report(
    log: &QueryLog,
    cats: &Categories,
    since: u64,
    until: u64,
    top: usize,
) -> Result<Report, QueryLogError> {
    let answered = |e: &Entry| {
        e.verdict != Ruling::Blocked && !matches!(e.source, Origin::Refused | Origin::Blocked)
    };
    // Pairs known before the period.
    let mut known: HashSet<(Client, String)> = HashSet::new();
    let before = Criteria {
        until_ms: Some(since),
        order: Order::OldestFirst,
        ..Criteria::default()
    };
    for e in log.query(&before) {
        let e = e?;
        if known.len() < MAX_PAIRS && answered(&e) {
            known.insert((Client::of(&e), super::registrable(&e.name).to_owned()));
        }
    }
    let period = Criteria {
        since_ms: Some(since),
        until_ms: Some(until),
        order: Order::OldestFirst,
        ..Criteria::default()
    };
    let mut r = Report {
        since_ms: since,
        until_ms: until,
        rate_limited: log.stats(since, until, 0)?.rate_limited,
        ..Report::default()
    };
    let mut clients: HashMap<Client, ClientLine> = HashMap::new();
    let mut new: HashMap<Client, Vec<String>> = HashMap::new();
    let mut cats_count: HashMap<String, u64> = HashMap::new();
    let mut flagged: HashMap<String, Flagged> = HashMap::new();
    let mut bypass: HashMap<(Client, String), Bypass> = HashMap::new();
    for e in log.query(&period) {
        let e = e?;
        r.queries += 1;
        let blocked = e.verdict == Ruling::Blocked;
        let who = Client::of(&e);
        let c = clients.entry(who.clone()).or_insert_with(|| ClientLine {
            client: who.to_string(),
            ..ClientLine::default()
        });
        c.queries += 1;
        c.blocked += u64::from(blocked);
        c.flagged += u64::from(e.flagged);
        if !e.group.is_empty() {
            c.group = e.group.to_string();
        }
        if blocked {
            r.blocked += 1;
            *cats_count.entry(category(&e)).or_default() += 1;
        }
        if answered(&e) && known.len() < MAX_PAIRS {
            let domain = super::registrable(&e.name).to_owned();
            if known.insert((who.clone(), domain.clone())) {
                new.entry(who.clone()).or_default().push(domain);
            }
        }
        if e.flagged {
            let f = flagged
                .entry(e.name.to_string())
                .or_insert_with(|| Flagged {
                    name: e.name.to_string(),
                    ..Flagged::default()
                });
            f.count += 1;
            f.max_score = f.max_score.max(e.tunnel_score);
            let client = who.to_string();
            if f.clients.len() < 5 && !f.clients.contains(&client) {
                f.clients.push(client);
            }
        }
        let via = if cats.is_canary(&e.name) {
            Some("canary".to_owned())
        } else if blocked && cats.bypass_lists.iter().any(|l| **l == *e.list) {
            Some(e.list.to_string())
        } else {
            None
        };
        if let Some(via) = via {
            let b = bypass
                .entry((who.clone(), e.name.to_string()))
                .or_insert_with(|| Bypass {
                    client: who.to_string(),
                    name: e.name.to_string(),
                    via,
                    count: 0,
                });
            b.count += 1;
        }
    }
    r.top_clients = clients.into_values().collect();
    r.top_clients
        .sort_by(|a, b| b.queries.cmp(&a.queries).then(a.client.cmp(&b.client)));
    r.top_clients.truncate(top);
    r.new_domains = new
        .into_iter()
        .map(|(c, domains)| NewDomains {
            client: c.to_string(),
            domains,
        })
        .collect();
    r.new_domains.sort_by(|a, b| {
        b.domains
            .len()
            .cmp(&a.domains.len())
            .then(a.client.cmp(&b.client))
    });
    r.new_domains.truncate(top);
    r.blocked_by_category = cats_count
        .into_iter()
        .map(|(key, count)| Count { key, count })
        .collect();
    r.blocked_by_category
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
    r.flagged = flagged.into_values().collect();
    r.flagged
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    r.flagged.truncate(top);
    r.bypass = bypass.into_values().collect();
    r.bypass
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    r.bypass.truncate(top);
    Ok(r)
}

/// The review as text.
pub fn print_table(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    writeln!(
        out,
        "period        {} .. {}",
        querylog::format_time(r.since_ms),
        querylog::format_time(r.until_ms)
    )?;
    writeln!(out, "queries       {}", r.queries)?;
    writeln!(out, "blocked       {}", r.blocked)?;
    writeln!(out, "rate-limited  {}", r.rate_limited)?;
    writeln!(out, "\ntop clients")?;
    for c in &r.top_clients {
        writeln!(
            out,
            "  {:<40} {:<12} {:>8} queries {:>6} blocked {:>5} flagged",
            c.client, c.group, c.queries, c.blocked, c.flagged
        )?;
    }
    writeln!(out, "\nnew domains")?;
    for n in &r.new_domains {
        writeln!(
            out,
            "  {} ({}): {}",
            n.client,
            n.domains.len(),
            n.domains.join(", ")
        )?;
    }
    writeln!(out, "\nblocked by category")?;
    for c in &r.blocked_by_category {
        writeln!(out, "  {:>8}  {}", c.count, c.key)?;
    }
    writeln!(out, "\nflagged names")?;
    for f in &r.flagged {
        writeln!(
            out,
            "  {:>8}  {}  (max score {:.2}; {})",
            f.count,
            f.name,
            f.max_score,
            f.clients.join(", ")
        )?;
    }
    writeln!(out, "\nbypass attempts")?;
    for b in &r.bypass {
        writeln!(
            out,
            "  {:>8}  {}  {}  via {}",
            b.count, b.client, b.name, b.via
        )?;
    }
    Ok(())
}
