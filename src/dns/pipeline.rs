//! The query pipeline: the one place where the steps a question goes through are
//! put in order. Each step is a type with one job; a front end (hickory's handler
//! now, a lean per-core UDP loop later) builds a [`Question`] and calls
//! [`Pipeline::handle`].
//!
//! Order and why:
//! 1. access control: clients outside the configured networks get REFUSED, before
//!    any work is done for them (no open resolver);
//! 2. bypass canaries (`use-application-dns.net`, iCloud Private Relay) get NXDOMAIN
//!    for everyone, before any group's block mode could turn it into an address;
//!    then the filter: the client's group and its lists decide block / allow /
//!    pass; a block is answered here, so blocked names never reach an upstream;
//! 3. detect: every query that is not blocked is scored for DNS tunnelling (the
//!    per-domain window must see all of a domain's traffic); the group's tunnel
//!    action may refuse it;
//! 4. local records: names the operator defined win over everything upstream;
//!    other ANY queries get the minimal RFC 8482 answer (no amplification);
//! 5. cache: a fresh answer never touches the upstream;
//! 6. resolver: conditional zones, forwarder or recursor, bounded by the timeout;
//!    on failure a stale cached answer (RFC 8767) beats SERVFAIL;
//! 7. CNAME cloaking: names in the answer's CNAME chain go through the filter too
//!    (after the cache, because groups differ while the cached answer is shared);
//!    then rebinding protection: a public name answered with a private, loopback
//!    or cloud-metadata address is blocked; then answer rules (address/CIDR
//!    entries of the group's lists and deny entries);
//! 8. query log: every answered question is recorded without waiting on disk,
//!    and handed to the egress guard (`crate::guard`) without waiting either.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{RData, Record, RecordType};

use super::Question;
use super::block::blocked_answer;
use crate::access::Access;
use crate::config::Config;
use crate::detect::{self, Detector, Score};
use crate::filter::{Action, BlockReason, Filter, GroupId, RuleSource, Verdict};
use crate::querylog::{self, Entry, QueryLog};
use crate::rebinding::Rebinding;
use crate::resolve::cache::{Cache, Key};
use crate::resolve::local::LocalRecords;
use crate::resolve::router::Router;
use crate::resolve::{Answer, ResolveError};

/// Where an answer came from, for logs and the query log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The client is not allowed to use dnsguard.
    Refused,
    /// Blocked by the filter (the verdict says which rule; a CNAME target's rule for cloaking).
    Blocked,
    /// Refused because tunnel detection flagged it or its domain is quarantined.
    Tunnel,
    /// Blocked because a public name was answered with this private address.
    Rebinding(std::net::IpAddr),
    /// From `[local]` records or hosts files.
    Local,
    /// A fresh cache entry.
    Cache,
    /// An expired cache entry, served because upstreams failed.
    Stale,
    /// From the named upstream(s).
    Upstream(Arc<str>),
    /// Resolution failed; the reason.
    Failed(String),
}

/// The pipeline's result: the answer, where it came from, and why.
#[derive(Debug, Clone)]
pub struct Reply {
    /// What to send.
    pub answer: Answer,
    /// Where it came from.
    pub source: Source,
    /// The filter's verdict (`None` when the client was refused before filtering).
    pub verdict: Option<Verdict>,
    /// The tunnel detector's score (`None` when the query was not scored).
    pub score: Option<Score>,
}

/// The compiled filter plus what the pipeline derives from the configuration per
/// group and list; swapped as one on reload.
pub struct Policy {
    /// The compiled lists and groups.
    pub filter: Filter,
    tunnel_actions: Vec<detect::Action>,
    group_labels: Vec<Arc<str>>,
    list_labels: Vec<Arc<str>>,
}

impl Policy {
    /// Pairs `filter` with the per-group settings of `cfg`.
    pub fn new(filter: Filter, cfg: &Config) -> Self {
        let groups = filter.group_count();
        let mut tunnel_actions = Vec::with_capacity(groups);
        let mut group_labels = Vec::with_capacity(groups);
        for g in 0..groups {
            let name = filter.group_name(GroupId(g as u16));
            let configured = cfg.groups.iter().find(|c| c.name == name);
            let action = configured.and_then(|c| c.tunnel_action);
            tunnel_actions.push(action.unwrap_or(cfg.detect.action));
            group_labels.push(Arc::from(name));
        }
        let list_labels = cfg
            .lists
            .iter()
            .map(|l| Arc::from(l.name.as_str()))
            .collect();
        Self {
            filter,
            tunnel_actions,
            group_labels,
            list_labels,
        }
    }

    fn group_label(&self, g: GroupId) -> Arc<str> {
        self.group_labels
            .get(usize::from(g.0))
            .cloned()
            .unwrap_or_else(querylog::empty_str)
    }

    fn tunnel_action(&self, g: GroupId) -> detect::Action {
        self.tunnel_actions
            .get(usize::from(g.0))
            .copied()
            .unwrap_or_default()
    }

    /// The list (or group entry set) name and rule text for the log.
    fn rule_labels(&self, verdict: &Verdict) -> (Arc<str>, Arc<str>) {
        if verdict.action == Action::Block(BlockReason::NotAllowlisted) {
            return (querylog::empty_str(), Arc::from("not-allowlisted"));
        }
        let Some(rule) = verdict.rule else {
            return (querylog::empty_str(), querylog::empty_str());
        };
        let list = match rule.source {
            RuleSource::List(i) => self.list_labels.get(i as usize).cloned(),
            RuleSource::GroupAllow(g) => {
                Some(Arc::from(format!("group {} allow", self.group_label(g))))
            }
            RuleSource::GroupDeny(g) => {
                Some(Arc::from(format!("group {} deny", self.group_label(g))))
            }
        };
        let line = if rule.line > 0 {
            Arc::from(format!("line {}", rule.line))
        } else {
            querylog::empty_str()
        };
        (list.unwrap_or_else(querylog::empty_str), line)
    }
}

/// Every step, built once from the configuration and shared by all front ends.
pub struct Pipeline {
    access: Access,
    policy: ArcSwap<Policy>,
    detector: Arc<Detector>,
    local: LocalRecords,
    cache: Cache,
    router: Router,
    rebinding: Rebinding,
    log: Arc<QueryLog>,
    guard: arc_swap::ArcSwapOption<crate::guard::Guard>,
}

impl Pipeline {
    /// Builds every step around a compiled policy; fails on unreadable hosts files,
    /// bad exemption lines or unusable upstreams.
    pub fn new(cfg: &Config, policy: Policy, log: Arc<QueryLog>) -> anyhow::Result<Self> {
        Ok(Self {
            access: Access::new(&cfg.server.allow_clients),
            policy: ArcSwap::from_pointee(policy),
            detector: Arc::new(Detector::new(&cfg.detect)?),
            local: LocalRecords::build(&cfg.local)?,
            cache: Cache::new(&cfg.cache),
            router: Router::new(&cfg.resolver)?,
            rebinding: Rebinding::new(
                &cfg.rebinding,
                cfg.resolver.forward_zones.iter().map(|z| z.zone.clone()),
            ),
            log,
            guard: arc_swap::ArcSwapOption::empty(),
        })
    }

    /// Attaches the egress guard (alerts, new-domain tracking, firewall sync), which
    /// then sees every recorded query.
    pub fn set_guard(&self, guard: Arc<crate::guard::Guard>) {
        self.guard.store(Some(guard));
    }

    /// The cache, for periodic maintenance.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The query log.
    pub fn log(&self) -> &Arc<QueryLog> {
        &self.log
    }

    /// The policy in use now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Swaps in a newly compiled policy; queries in flight finish with the old one,
    /// none waits and none is dropped.
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// Runs one question through the steps and records it in the query log.
    pub async fn handle(&self, q: &Question) -> Reply {
        let started = Instant::now();
        let now_ms = querylog::now_ms();
        let name = q.name_text();
        let policy = self.policy.load_full();
        let reply = self.decide(q, &name, &policy, now_ms).await;
        if reply.score.is_some() {
            self.detector
                .record_rcode(now_ms, &name, u16::from(reply.answer.rcode));
        }
        self.record(q, name, &policy, &reply, now_ms, started);
        reply
    }

    async fn decide(&self, q: &Question, name: &str, policy: &Policy, now_ms: u64) -> Reply {
        if !self.access.allows(q.client.ip()) {
            return reply(
                Answer::empty(ResponseCode::Refused),
                Source::Refused,
                None,
                None,
            );
        }
        if let Some(answer) = self.local.canary(&q.name) {
            return reply(answer, Source::Local, None, None);
        }
        let filter = &policy.filter;
        let client = q.client.ip();
        let qtype = u16::from(q.qtype());
        let verdict = filter.check(client, name, qtype);
        if let Action::Block(_) = verdict.action {
            let (mode, ttl) = filter.group_block(verdict.group);
            let answer = blocked_answer(mode, ttl, q.query.name(), q.qtype());
            return reply(answer, Source::Blocked, Some(verdict), None);
        }
        let score = self.detector.observe(now_ms, client, name, qtype);
        let refuse = match policy.tunnel_action(verdict.group) {
            detect::Action::Log => false,
            detect::Action::Block => score.flagged,
            detect::Action::Quarantine => score.quarantined,
        };
        if refuse && verdict.action != Action::Allow {
            let answer = Answer::empty(ResponseCode::Refused);
            return reply(answer, Source::Tunnel, Some(verdict), Some(score));
        }
        if let Some(answer) = self.local.answer(&q.name, q.qtype()) {
            return reply(answer, Source::Local, Some(verdict), Some(score));
        }
        if q.qtype() == RecordType::ANY {
            // RFC 8482: a minimal answer, so dnsguard is no amplifier.
            return reply(minimal_any(q), Source::Local, Some(verdict), Some(score));
        }
        let key = Key {
            name: q.name.clone(),
            qtype: q.qtype(),
            dnssec_ok: q.dnssec_ok,
        };
        let (answer, source) = match self.cache.get(&key) {
            Some(hit) => (hit.answer, Source::Cache),
            None => {
                let (result, upstream) = self
                    .router
                    .resolve(&q.query, &q.name, q.dnssec_ok, q.checking_disabled)
                    .await;
                match result {
                    Ok(answer) => {
                        self.cache.insert(key, &answer);
                        (answer, Source::Upstream(upstream))
                    }
                    Err(e) => match self.fail(&key, e) {
                        (answer, Source::Stale) => (answer, Source::Stale),
                        (answer, failed) => {
                            return reply(answer, failed, Some(verdict), Some(score));
                        }
                    },
                }
            }
        };
        // CNAME cloaking: a tracker hidden behind a first-party CNAME is still blocked,
        // unless the query name itself was explicitly allowed.
        if verdict.action != Action::Allow {
            for target in answer.cname_targets() {
                let cloaked = filter.check(client, &super::name_text(target), qtype);
                if let Action::Block(_) = cloaked.action {
                    let (mode, ttl) = filter.group_block(cloaked.group);
                    let blocked = blocked_answer(mode, ttl, q.query.name(), q.qtype());
                    return reply(blocked, Source::Blocked, Some(cloaked), Some(score));
                }
            }
        }
        let addrs = || answer_addrs(&answer).map(|(ip, _)| ip);
        if let Some(ip) = self.rebinding.violation(name, addrs()) {
            let (mode, ttl) = filter.group_block(verdict.group);
            let blocked = blocked_answer(mode, ttl, q.query.name(), q.qtype());
            return reply(blocked, Source::Rebinding(ip), Some(verdict), Some(score));
        }
        // Answer rules: address/CIDR entries of the group's lists and deny entries.
        if let Some((_, by)) = filter.check_answer(verdict.group, addrs()) {
            let (mode, ttl) = filter.group_block(verdict.group);
            let blocked = blocked_answer(mode, ttl, q.query.name(), q.qtype());
            return reply(blocked, Source::Blocked, Some(by), Some(score));
        }
        reply(answer, source, Some(verdict), Some(score))
    }

    fn fail(&self, key: &Key, e: ResolveError) -> (Answer, Source) {
        // Bogus data is an attack or a broken zone, not an outage: no stale answer.
        let stale = match e {
            ResolveError::Bogus => None,
            _ => self.cache.get_stale(key),
        };
        if let Some(hit) = stale {
            tracing::debug!(name = %key.name, error = %e, "serving stale answer");
            return (hit.answer, Source::Stale);
        }
        tracing::debug!(name = %key.name, error = %e, "resolution failed");
        let failed = Source::Failed(e.to_string());
        (Answer::empty(ResponseCode::ServFail), failed)
    }

    fn record(
        &self,
        q: &Question,
        name: String,
        policy: &Policy,
        reply: &Reply,
        now_ms: u64,
        started: Instant,
    ) {
        let mut e = Entry::new(now_ms, q.client.ip(), Arc::from(name), u16::from(q.qtype()));
        e.rcode = u16::from(reply.answer.rcode);
        e.latency_us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        e.source = match &reply.source {
            Source::Refused => querylog::Source::Refused,
            Source::Blocked | Source::Tunnel | Source::Rebinding(_) => querylog::Source::Blocked,
            Source::Local => querylog::Source::Local,
            Source::Cache => querylog::Source::Cache,
            Source::Stale => querylog::Source::Stale,
            Source::Upstream(label) => querylog::Source::Upstream(label.clone()),
            Source::Failed(_) => querylog::Source::Failed,
        };
        if let Some(v) = &reply.verdict {
            e.group = policy.group_label(v.group);
            e.verdict = match (reply.source == Source::Blocked, v.action) {
                (true, _) => querylog::Verdict::Blocked,
                (false, Action::Allow) => querylog::Verdict::Allowlisted,
                _ => querylog::Verdict::Allowed,
            };
            if reply.source == Source::Blocked || v.action == Action::Allow {
                (e.list, e.rule) = policy.rule_labels(v);
            }
        }
        if let Some(score) = &reply.score {
            e.tunnel_score = score.value;
            e.flagged = score.flagged;
            if score.flagged || reply.source == Source::Tunnel {
                e.rule = Arc::from(format!("tunnel: {}", score.reasons.display_for(&e.name)));
                if reply.source == Source::Tunnel {
                    e.verdict = querylog::Verdict::Blocked;
                }
            }
        }
        if let Source::Rebinding(ip) = reply.source {
            e.verdict = querylog::Verdict::Blocked;
            e.rule = Arc::from(format!("rebinding: answer {ip} is private"));
        }
        let real_answer = matches!(
            reply.source,
            Source::Upstream(_) | Source::Cache | Source::Stale | Source::Local
        );
        if real_answer && !reply.answer.answers.is_empty() {
            e.answer = Arc::from(summarize(&reply.answer));
        }
        record_metrics(&e, &reply.source, started);
        if let Some(guard) = &*self.guard.load() {
            guard.observe(&e, answer_addrs(&reply.answer));
        }
        self.log.record(e);
    }
}

/// The `/metrics` counters of one answered query: a few atomic adds on handles
/// registered once (the upstream's label is looked up on the upstream path only,
/// which already paid for a network round trip).
fn record_metrics(e: &Entry, source: &Source, started: Instant) {
    let m = MetricHandles::get();
    let verdict = match e.verdict {
        querylog::Verdict::Allowed => 0,
        querylog::Verdict::Blocked => 1,
        querylog::Verdict::Allowlisted => 2,
    };
    m.queries[verdict][qtype_index(e.qtype)].increment(1);
    let secs = started.elapsed().as_secs_f64();
    m.duration.record(secs);
    match source {
        Source::Cache | Source::Stale => m.cache_hits.increment(1),
        Source::Upstream(label) => {
            m.cache_misses.increment(1);
            metrics::histogram!("dnsguard_upstream_duration_seconds", "upstream" => label.to_string())
                .record(secs);
        }
        Source::Failed(_) => {
            m.cache_misses.increment(1);
            m.upstream_errors.increment(1);
        }
        _ => {}
    }
    if e.flagged {
        m.tunnel_flags.increment(1);
    }
}

/// Query types with their own label; everything else is `other`.
const QTYPE_LABELS: [(u16, &str); 13] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (255, "ANY"),
    (0, "other"),
];

fn qtype_index(qtype: u16) -> usize {
    QTYPE_LABELS[..QTYPE_LABELS.len() - 1]
        .iter()
        .position(|(t, _)| *t == qtype)
        .unwrap_or(QTYPE_LABELS.len() - 1)
}

/// Metric handles registered once, the first time a query is recorded (after the
/// web server installed the recorder; without one they are no-ops).
struct MetricHandles {
    queries: [[metrics::Counter; QTYPE_LABELS.len()]; 3],
    duration: metrics::Histogram,
    cache_hits: metrics::Counter,
    cache_misses: metrics::Counter,
    upstream_errors: metrics::Counter,
    tunnel_flags: metrics::Counter,
}

impl MetricHandles {
    fn get() -> &'static MetricHandles {
        static HANDLES: std::sync::OnceLock<MetricHandles> = std::sync::OnceLock::new();
        HANDLES.get_or_init(|| {
            let verdicts = [
                querylog::Verdict::Allowed,
                querylog::Verdict::Blocked,
                querylog::Verdict::Allowlisted,
            ];
            MetricHandles {
                queries: verdicts.map(|v| {
                    QTYPE_LABELS.map(|(_, t)| {
                        metrics::counter!("dnsguard_queries_total", "verdict" => v.as_str(), "type" => t)
                    })
                }),
                duration: metrics::histogram!("dnsguard_query_duration_seconds"),
                cache_hits: metrics::counter!("dnsguard_cache_hits_total"),
                cache_misses: metrics::counter!("dnsguard_cache_misses_total"),
                upstream_errors: metrics::counter!("dnsguard_upstream_errors_total"),
                tunnel_flags: metrics::counter!("dnsguard_tunnel_flags_total"),
            }
        })
    }
}

/// The RFC 8482 answer to ANY: one synthesized HINFO record instead of everything.
fn minimal_any(q: &Question) -> Answer {
    let mut answer = Answer::empty(ResponseCode::NoError);
    let hinfo = HINFO::new("RFC8482".to_owned(), String::new());
    answer.answers.push(Record::from_rdata(
        q.query.name().clone(),
        3600,
        RData::HINFO(hinfo),
    ));
    answer
}

/// The A/AAAA addresses of an answer with their TTLs.
fn answer_addrs(answer: &Answer) -> impl Iterator<Item = (std::net::IpAddr, u32)> + '_ {
    answer.answers.iter().filter_map(|r| match &r.data {
        RData::A(a) => Some((std::net::IpAddr::V4(a.0), r.ttl)),
        RData::AAAA(a) => Some((std::net::IpAddr::V6(a.0), r.ttl)),
        _ => None,
    })
}

/// Addresses and CNAME targets of an answer, for the log (at most four items).
fn summarize(answer: &Answer) -> String {
    let mut out = String::new();
    for r in answer.answers.iter().take(4) {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = match &r.data {
            RData::A(a) => write!(out, "{}", a.0),
            RData::AAAA(a) => write!(out, "{}", a.0),
            RData::CNAME(c) => write!(out, "{}", c.0),
            other => write!(out, "{}", other.record_type()),
        };
    }
    if answer.answers.len() > 4 {
        out.push_str(",…");
    }
    out
}

fn reply(answer: Answer, source: Source, verdict: Option<Verdict>, score: Option<Score>) -> Reply {
    Reply {
        answer,
        source,
        verdict,
        score,
    }
}
