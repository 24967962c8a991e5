//! The query pipeline: the one place where the steps a question goes through are
//! put in order. Each step is a type with one job. hickory's handler (TCP, and UDP
//! queries out of the ordinary) builds a [`Question`] and calls
//! [`Pipeline::handle`]; the per-core UDP loop (`udp.rs`) calls the steps itself
//! ([`Pipeline::screen`], [`Pipeline::cached_answer`], [`Pipeline::fetch`],
//! [`Pipeline::screen_answer`], [`Pipeline::record`]) to answer in place.
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
//!    action may refuse it (`block`: a flagged query; `quarantine`: that, and
//!    every query of a domain its client is quarantined for; never another
//!    client's);
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

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

mod check;

pub use check::{Checked, Decision};

use super::Question;
use super::block::blocked_answer;
use crate::access::Access;
use crate::config::Config;
use crate::detect::{self, Detector, Score};
use crate::filter::{Action, BlockReason, Filter, GroupId, RuleSource, Verdict};
use crate::querylog::{self, Entry, QueryLog};
use crate::rebinding::Rebinding;
use crate::resolve::cache::{Cache, Cached, Hit, Key};
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
    /// Refused because tunnel detection flagged it or its client is quarantined
    /// for its domain.
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
    /// Resolution failed: what kind of failure (for the reply's EDE), and the reason.
    Failed(super::ede::Failure, String),
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
    /// Addresses and CNAME targets of a real answer, for the query log.
    pub summary: Option<Arc<str>>,
}

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
}

impl Policy {
    /// Pairs `filter` with the per-group settings of `cfg`.
    pub fn new(filter: Filter, cfg: &Config) -> Self {
        let groups = filter.group_count();
        let mut tunnel_actions = Vec::with_capacity(groups);
        let mut group_labels = Vec::with_capacity(groups);
        let mut group_rule_labels = Vec::with_capacity(groups);
        for g in 0..groups {
            let name = filter.group_name(GroupId(g as u16));
            let configured = cfg.groups.iter().find(|c| c.name == name);
            tunnel_actions.push(
                configured.map_or_else(|| cfg.detect.actions(), |c| c.tunnel_actions(&cfg.detect)),
            );
            group_labels.push(Arc::from(name));
            group_rule_labels.push([
                Arc::from(format!("group {name} allow")),
                Arc::from(format!("group {name} deny")),
            ]);
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
            group_rule_labels,
            list_labels,
        }
    }

    fn group_label(&self, g: GroupId) -> Arc<str> {
        self.group_labels
            .get(usize::from(g.0))
            .cloned()
            .unwrap_or_else(querylog::empty_str)
    }

    /// The name of group `g`, for the reply's EDE.
    pub(super) fn group_name(&self, g: GroupId) -> &str {
        self.group_labels.get(usize::from(g.0)).map_or("", |l| l)
    }

    /// The name of a rule's list (or group), for the reply's EDE.
    pub(super) fn rule_source_name(&self, source: RuleSource) -> &str {
        match source {
            RuleSource::List(i) => self.list_labels.get(i as usize).map_or("", |l| l),
            RuleSource::GroupAllow(g) | RuleSource::GroupDeny(g) => self.group_name(g),
        }
    }

    fn tunnel_action(&self, g: GroupId) -> detect::Actions {
        self.tunnel_actions
            .get(usize::from(g.0))
            .copied()
            .unwrap_or_default()
    }

    /// The list (or group entry set) name and rule text for the log.
    fn rule_labels(&self, verdict: &Verdict) -> (Arc<str>, Arc<str>) {
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

/// What the steps before resolution decided (access, canaries, filter, tunnel
/// detection). Both front ends run them through [`Pipeline::screen`]; the UDP fast
/// path answers the final ones itself and hands `Pass` on when the cache cannot
/// answer.
#[derive(Debug, Clone, Copy)]
pub enum Screen {
    /// The client is outside the allowed networks: REFUSED.
    Refused,
    /// A bypass canary: NXDOMAIN.
    Canary,
    /// Blocked by the filter: the group's block answer.
    Blocked(Verdict),
    /// Refused by the group's tunnel action.
    Tunnel(Verdict, Score),
    /// On to local records, the cache and the resolver.
    Pass(Verdict, Score),
}

/// A question already screened by a front end, with when it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Screened {
    /// The decision.
    pub screen: Screen,
    /// When the query arrived (for the logged latency).
    pub started: Instant,
    /// The same moment in unix milliseconds (for the log and the detector).
    pub now_ms: u64,
}

/// What the cache holds for a screened question, as the UDP fast path sees it.
pub enum Lookup {
    /// A fresh answer the client may have as it is.
    Hit(Hit),
    /// Nothing fresh: ask the resolver ([`Pipeline::fetch`]), then answer alike.
    Miss,
    /// The full path decides: a local name, ANY, a name too long to cache, or a
    /// cached answer that must be replaced or cannot be written in place.
    Full,
}

/// An answer [`Pipeline::fetch`] got (or a stale one it fell back to).
pub struct Fetched {
    /// The answer as the cache holds it.
    pub hit: Hit,
    /// The upstream that answered, or [`Source::Stale`].
    pub source: Source,
    /// The resolver's answer itself (`None` for a stale one).
    pub answer: Option<Answer>,
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
                // Without `format!` (about 1k instructions): a run of distinct
                // blocked names misses this memo on every query.
                let mut text = String::with_capacity(16);
                text.push_str("line ");
                text.push_str(itoa::Buffer::new().format(line));
                let label: Arc<str> = Arc::from(text);
                *slot = Some((line, label.clone()));
                label
            }
        }
    })
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
    dnstap: std::sync::OnceLock<Arc<crate::dnstap::Dnstap>>,
}

impl Pipeline {
    /// Builds every step around a compiled policy; fails on unreadable hosts files,
    /// bad exemption lines or unusable upstreams.
    pub fn new(cfg: &Config, policy: Policy, log: Arc<QueryLog>) -> anyhow::Result<Self> {
        Ok(Self {
            access: Access::new(&cfg.server.allow_clients),
            policy: ArcSwap::from_pointee(policy),
            detector: Arc::new(Detector::new(&cfg.detect)?),
            local: LocalRecords::build(
                &cfg.local,
                cfg.resolver.forward_zones.iter().map(|z| z.zone.as_str()),
            )?,
            cache: Cache::new(&cfg.cache),
            router: Router::new(&cfg.resolver)?,
            rebinding: Rebinding::new(
                &cfg.rebinding,
                cfg.resolver.forward_zones.iter().map(|z| z.zone.clone()),
            ),
            log,
            guard: arc_swap::ArcSwapOption::empty(),
            dnstap: std::sync::OnceLock::new(),
        })
    }

    /// Attaches the egress guard (alerts, new-domain tracking, firewall sync), which
    /// then sees every recorded query.
    pub fn set_guard(&self, guard: Arc<crate::guard::Guard>) {
        self.guard.store(Some(guard));
    }

    /// Attaches the dnstap output (once), which then gets every recorded query.
    pub fn set_dnstap(&self, dnstap: Arc<crate::dnstap::Dnstap>) {
        let _ = self.dnstap.set(dnstap);
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

    /// The policy in use now, without touching its reference count (for the fast
    /// path; hold it only for one query).
    pub fn policy_guard(&self) -> arc_swap::Guard<Arc<Policy>> {
        self.policy.load()
    }

    /// Swaps in a newly compiled policy; queries in flight finish with the old one,
    /// none waits and none is dropped.
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// Runs one question through the steps and records it in the query log.
    pub async fn handle(&self, q: &Question) -> Reply {
        self.handle_screened(q, None).await
    }

    /// [`Pipeline::handle`] for a question a front end may already have screened
    /// (the steps before resolution must run once per query: the tunnel detector
    /// counts every query).
    pub async fn handle_screened(&self, q: &Question, screened: Option<Screened>) -> Reply {
        let name = q.name_text();
        let policy = self.policy.load_full();
        let qtype = u16::from(q.qtype());
        let screened = screened.unwrap_or_else(|| {
            let now_ms = querylog::now_ms();
            Screened {
                screen: self.screen(q.client.ip(), &name, qtype, &policy, now_ms),
                started: Instant::now(),
                now_ms,
            }
        });
        let reply = match screened.screen {
            Screen::Pass(verdict, score) => self.complete(q, &name, &policy, verdict, score).await,
            early => {
                let (mode, ttl) = policy.filter.group_block(early_group(&early));
                let block = |_: ()| blocked_answer(mode, ttl, q.query.name(), q.qtype());
                early_reply(early, block)
            }
        };
        let addrs: Vec<_> = reply.answer.addresses().collect();
        let outcome = Outcome {
            rcode: u16::from(reply.answer.rcode),
            source: &reply.source,
            verdict: reply.verdict.as_ref(),
            score: reply.score.as_ref(),
            summary: reply.summary.clone(),
            addrs: &addrs,
            ttl_cap: u32::MAX,
            via: crate::dnstap::Via {
                transport: q.transport,
                port: q.client.port(),
                ..Default::default()
            },
        };
        let logged_name = Arc::from(name);
        self.record(
            q.client.ip(),
            logged_name,
            qtype,
            &policy,
            &outcome,
            &screened,
        );
        reply
    }

    /// Steps 1–3: access, bypass canaries, the filter, tunnel detection. No I/O.
    pub fn screen(
        &self,
        client: IpAddr,
        name: &str,
        qtype: u16,
        policy: &Policy,
        now_ms: u64,
    ) -> Screen {
        if !self.access.allows(client) {
            return Screen::Refused;
        }
        if self.local.is_canary(name) {
            return Screen::Canary;
        }
        let verdict = policy.filter.check(client, name, qtype);
        if let Action::Block(_) = verdict.action {
            return Screen::Blocked(verdict);
        }
        let action = policy.tunnel_action(verdict.group);
        let score = self
            .detector
            .observe(now_ms, client, name, qtype)
            .under(action);
        if score.refused_by(action) && verdict.action != Action::Allow {
            return Screen::Tunnel(verdict, score);
        }
        Screen::Pass(verdict, score)
    }

    /// For the fast path: what the cache holds for a screened question that
    /// `client` may have as it is (not a local name, not ANY, passing CNAME
    /// cloaking and rebinding checks).
    pub fn cached_answer(
        &self,
        client: IpAddr,
        name: &str,
        qtype: u16,
        (dnssec_ok, checking_disabled): (bool, bool),
        policy: &Policy,
        verdict: &Verdict,
    ) -> Lookup {
        if qtype == u16::from(RecordType::ANY) || self.local.answer(name, qtype.into()).is_some() {
            return Lookup::Full;
        }
        let Some(key) = Key::new(name, qtype, dnssec_ok, checking_disabled) else {
            return Lookup::Full;
        };
        let Some(hit) = self.cache.get(&key) else {
            return Lookup::Miss;
        };
        if hit.cached.wire().is_none()
            || self
                .screen_answer(policy, client, verdict, name, qtype, &hit.cached)
                .is_some()
        {
            return Lookup::Full;
        }
        Lookup::Hit(hit)
    }

    /// Step 6 for a question the cache cannot answer: asks the resolver and caches
    /// its answer (under `key`, when the name can be a key). On failure, a stale
    /// answer (RFC 8767) if there is one, else why there is none. Both front ends
    /// call it; the resolver's own `Answer` comes back too, so the hickory front
    /// end need not rebuild it from the cache's wire form.
    pub async fn fetch(
        &self,
        query: &Query,
        name: &LowerName,
        key: Option<&Key>,
        dnssec_ok: bool,
        checking_disabled: bool,
    ) -> Result<Fetched, Source> {
        let (result, upstream) = self
            .router
            .resolve(query, name, dnssec_ok, checking_disabled)
            .await;
        match result {
            Ok(mut answer) => {
                if !dnssec_ok {
                    // The recursor keeps signatures whatever the client asked.
                    answer.strip_dnssec(query.query_type());
                }
                let qname = name.to_string();
                let now = querylog::now_ms();
                if self.detector.watches(now, &qname) {
                    // Answers of a watched domain: a command channel comes back here.
                    self.detector
                        .record_answer(now, &qname, |f| answer.carried(f));
                }
                let resolved = Cached::new(&answer, query.name(), query.query_type());
                if let Some(k) = key {
                    self.cache.insert(k, &resolved);
                }
                Ok(Fetched {
                    hit: Hit {
                        cached: Arc::new(resolved),
                        ttl_left: u32::MAX,
                        stale: false,
                    },
                    source: Source::Upstream(upstream),
                    answer: Some(answer),
                })
            }
            Err(e) => self.fail(key, query.name(), e).map(|hit| Fetched {
                hit,
                source: Source::Stale,
                answer: None,
            }),
        }
    }

    /// Steps 4–7 for a question that passed screening.
    async fn complete(
        &self,
        q: &Question,
        name: &str,
        policy: &Policy,
        verdict: Verdict,
        score: Score,
    ) -> Reply {
        let (v, s) = (Some(verdict), Some(score));
        if let Some(answer) = self.local.answer(name, q.qtype()) {
            return reply(answer, Source::Local, v, s);
        }
        if q.qtype() == RecordType::ANY {
            // RFC 8482: a minimal answer, so dnsguard is no amplifier.
            return reply(minimal_any(q.query.name()), Source::Local, v, s);
        }
        let qtype = u16::from(q.qtype());
        let key = Key::new(name, qtype, q.dnssec_ok, q.checking_disabled);
        let cached = key.as_ref().and_then(|k| self.cache.get(k));
        // A fresh upstream answer is also the reply (no round trip through the
        // cache's wire form).
        let mut fresh = None;
        let (hit, source) = match cached {
            Some(hit) => (hit, Source::Cache),
            None => {
                let fetched = self
                    .fetch(
                        &q.query,
                        &q.name,
                        key.as_ref(),
                        q.dnssec_ok,
                        q.checking_disabled,
                    )
                    .await;
                match fetched {
                    Ok(f) => {
                        fresh = f.answer;
                        (f.hit, f.source)
                    }
                    Err(failed) => {
                        let answer = Answer::empty(ResponseCode::ServFail);
                        return reply(answer, failed, v, s);
                    }
                }
            }
        };
        if let Some((source, verdict)) =
            self.screen_answer(policy, q.client.ip(), &verdict, name, qtype, &hit.cached)
        {
            let (mode, ttl) = policy.filter.group_block(verdict.group);
            let blocked = blocked_answer(mode, ttl, q.query.name(), q.qtype());
            return reply(blocked, source, Some(verdict), s);
        }
        let answer = fresh.unwrap_or_else(|| hit.answer(q.query.name(), q.qtype()));
        let mut r = reply(answer, source, v, s);
        if hit.cached.has_answers {
            r.summary = Some(hit.cached.summary.clone());
        }
        r
    }

    /// The checks on an answer that depend on the client: CNAME cloaking (a tracker
    /// hidden behind a first-party CNAME is still blocked, unless the query name
    /// itself was explicitly allowed) and rebinding protection. `Some` when the
    /// answer must be replaced by the block answer.
    pub fn screen_answer(
        &self,
        policy: &Policy,
        client: IpAddr,
        verdict: &Verdict,
        name: &str,
        qtype: u16,
        cached: &Cached,
    ) -> Option<(Source, Verdict)> {
        if verdict.action != Action::Allow {
            for target in cached.cname_targets.iter() {
                let cloaked = policy.filter.check(client, target, qtype);
                if let Action::Block(_) = cloaked.action {
                    return Some((Source::Blocked, cloaked));
                }
            }
        }
        let addrs = || cached.addrs.iter().map(|&(ip, _)| ip);
        if let Some(ip) = self.rebinding.violation(name, addrs()) {
            return Some((Source::Rebinding(ip), *verdict));
        }
        // Answer rules: address/CIDR entries of the group's lists and deny entries.
        let (_, by) = policy.filter.check_answer(verdict.group, addrs())?;
        Some((Source::Blocked, by))
    }

    fn fail(&self, key: Option<&Key>, name: &Name, e: ResolveError) -> Result<Hit, Source> {
        // Bogus data is an attack or a broken zone, not an outage: no stale answer.
        let stale = match e {
            ResolveError::Bogus => None,
            _ => key.and_then(|k| self.cache.get_stale(k)),
        };
        if let Some(hit) = stale {
            tracing::debug!(%name, error = %e, "serving stale answer");
            return Ok(hit);
        }
        tracing::debug!(%name, error = %e, "resolution failed");
        Err(Source::Failed((&e).into(), e.to_string()))
    }

    /// Records an answered question in the query log and the metrics; feeds the
    /// answer's rcode back to the tunnel detector. Never waits on disk.
    pub fn record(
        &self,
        client: IpAddr,
        name: Arc<str>,
        qtype: u16,
        policy: &Policy,
        outcome: &Outcome<'_>,
        screened: &Screened,
    ) {
        if outcome.score.is_some() {
            self.detector
                .record_rcode(screened.now_ms, &name, outcome.rcode);
        }
        let mut e = Entry::new(screened.now_ms, client, name, qtype);
        e.rcode = outcome.rcode;
        let elapsed = screened.started.elapsed();
        e.latency_us = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
        let source = outcome.source;
        e.source = match source {
            Source::Refused => querylog::Source::Refused,
            Source::Blocked | Source::Tunnel | Source::Rebinding(_) => querylog::Source::Blocked,
            Source::Local => querylog::Source::Local,
            Source::Cache => querylog::Source::Cache,
            Source::Stale => querylog::Source::Stale,
            Source::Upstream(label) => querylog::Source::Upstream(label.clone()),
            Source::Failed(..) => querylog::Source::Failed,
        };
        if let Some(v) = outcome.verdict {
            e.group = policy.group_label(v.group);
            e.verdict = match (*source == Source::Blocked, v.action) {
                (true, _) => querylog::Verdict::Blocked,
                (false, Action::Allow) => querylog::Verdict::Allowlisted,
                _ => querylog::Verdict::Allowed,
            };
            if *source == Source::Blocked || v.action == Action::Allow {
                (e.list, e.rule) = policy.rule_labels(v);
            }
        } else {
            // Refused before filtering, or a canary: still the client's group by
            // name (`default` included), never an empty one.
            e.group = policy.group_label(policy.filter.group_of(client));
        }
        if let Some(score) = outcome.score {
            e.tunnel_score = score.value;
            e.flagged = score.flagged;
            if score.flagged || *source == Source::Tunnel {
                // Stored as they are; the log renders the text when read, as
                // the entry's rule (in place of a list rule).
                e.tunnel = Some(Box::new(score.reasons));
                e.rule = querylog::entry::empty_str();
                if *source == Source::Tunnel {
                    e.verdict = querylog::Verdict::Blocked;
                }
            }
        }
        if *source == Source::Refused {
            // A client outside `allow_clients` got nothing: never an "allowed" query.
            e.verdict = querylog::Verdict::Blocked;
        }
        if let Source::Rebinding(ip) = source {
            e.verdict = querylog::Verdict::Blocked;
            e.rule = Arc::from(format!("rebinding: answer {ip} is private"));
        }
        if let Some(summary) = &outcome.summary {
            e.answer = summary.clone();
        }
        record_metrics(&e, source, elapsed);
        if let Some(guard) = &*self.guard.load() {
            let cap = outcome.ttl_cap;
            guard.observe(&e, outcome.addrs.iter().map(|&(ip, t)| (ip, t.min(cap))));
        }
        if let Some(tap) = self.dnstap.get() {
            let mode = outcome
                .verdict
                .map(|v| policy.filter.group_block(v.group).0);
            tap.observe(&e, outcome, screened, mode);
        }
        self.log.record(e);
    }
}

/// What the query log needs to know about an answer, from either front end.
pub struct Outcome<'a> {
    /// The response code sent.
    pub rcode: u16,
    /// Where the answer came from.
    pub source: &'a Source,
    /// The filter's verdict, if the filter ran.
    pub verdict: Option<&'a Verdict>,
    /// The tunnel score, if the query was scored.
    pub score: Option<&'a Score>,
    /// Addresses and CNAME targets of a real answer, for the log.
    pub summary: Option<Arc<str>>,
    /// The answer's addresses with their record TTLs (for the egress guard).
    pub addrs: &'a [(IpAddr, u32)],
    /// The TTLs sent are at most this (a cache hit's time left).
    pub ttl_cap: u32,
    /// Transport, client port and wire forms at hand (for dnstap).
    pub via: crate::dnstap::Via<'a>,
}

impl Screen {
    /// The source and rcode of a final screen decision, for the log.
    pub fn outcome_parts(&self) -> (Source, Option<&Verdict>, Option<&Score>) {
        match self {
            Screen::Refused => (Source::Refused, None, None),
            Screen::Canary => (Source::Local, None, None),
            Screen::Blocked(v) => (Source::Blocked, Some(v), None),
            Screen::Tunnel(v, s) => (Source::Tunnel, Some(v), Some(s)),
            Screen::Pass(v, s) => (Source::Cache, Some(v), Some(s)),
        }
    }

    /// The response code of a final screen decision (a block answer may set its
    /// own; `Pass` is not final).
    pub fn rcode(&self) -> ResponseCode {
        match self {
            Screen::Refused | Screen::Tunnel(..) => ResponseCode::Refused,
            Screen::Canary => ResponseCode::NXDomain,
            Screen::Blocked(_) => ResponseCode::NoError,
            Screen::Pass(..) => ResponseCode::ServFail,
        }
    }
}

/// The group whose block answer a final screen decision uses.
fn early_group(screen: &Screen) -> GroupId {
    match screen {
        Screen::Blocked(v) | Screen::Tunnel(v, _) | Screen::Pass(v, _) => v.group,
        Screen::Refused | Screen::Canary => GroupId(0),
    }
}

/// The reply for a final screen decision; `block` builds the block answer.
fn early_reply(screen: Screen, block: impl FnOnce(()) -> Answer) -> Reply {
    let (source, verdict, score) = screen.outcome_parts();
    let (verdict, score) = (verdict.copied(), score.copied());
    let answer = match screen {
        Screen::Blocked(_) => block(()),
        other => Answer::empty(other.rcode()),
    };
    reply(answer, source, verdict, score)
}

/// The `/metrics` counters of one answered query: a few atomic adds on handles
/// registered once (the upstream's label is looked up on the upstream path only,
/// which already paid for a network round trip).
fn record_metrics(e: &Entry, source: &Source, elapsed: std::time::Duration) {
    let m = MetricHandles::get();
    let verdict = match e.verdict {
        querylog::Verdict::Allowed => 0,
        querylog::Verdict::Blocked => 1,
        querylog::Verdict::Allowlisted => 2,
    };
    m.queries[verdict][qtype_index(e.qtype)].increment(1);
    super::latency::record(elapsed);
    match source {
        Source::Cache | Source::Stale => m.cache_hits.increment(1),
        Source::Upstream(label) => {
            m.cache_misses.increment(1);
            upstream_histogram(label).record(elapsed.as_secs_f64());
        }
        Source::Failed(..) => {
            m.cache_misses.increment(1);
            m.upstream_errors.increment(1);
        }
        _ => {}
    }
    if e.flagged {
        m.tunnel_flags.increment(1);
    }
}

/// The upstream-duration histogram of `label`, registered once per thread and
/// upstream (a registration hashes and allocates the label).
fn upstream_histogram(label: &Arc<str>) -> metrics::Histogram {
    thread_local! {
        static HANDLES: std::cell::RefCell<Vec<(Arc<str>, metrics::Histogram)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    HANDLES.with(|h| {
        let mut h = h.borrow_mut();
        if let Some((_, handle)) = h.iter().find(|(l, _)| l == label) {
            return handle.clone();
        }
        let handle = metrics::histogram!(
            "dnsguard_upstream_duration_seconds",
            "upstream" => label.to_string()
        );
        // Upstreams are few; a reload with new labels starts the memo afresh.
        if h.len() >= 64 {
            h.clear();
        }
        h.push((label.clone(), handle.clone()));
        handle
    })
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
                cache_hits: metrics::counter!("dnsguard_cache_hits_total"),
                cache_misses: metrics::counter!("dnsguard_cache_misses_total"),
                upstream_errors: metrics::counter!("dnsguard_upstream_errors_total"),
                tunnel_flags: metrics::counter!("dnsguard_tunnel_flags_total"),
            }
        })
    }
}

/// The RFC 8482 answer to ANY: one synthesized HINFO record instead of everything.
fn minimal_any(name: &Name) -> Answer {
    let mut answer = Answer::empty(ResponseCode::NoError);
    let hinfo = HINFO::new("RFC8482".to_owned(), String::new());
    answer
        .answers
        .push(Record::from_rdata(name.clone(), 3600, RData::HINFO(hinfo)));
    answer
}

fn reply(answer: Answer, source: Source, verdict: Option<Verdict>, score: Option<Score>) -> Reply {
    let summary = matches!(source, Source::Local)
        .then(|| answer.summary())
        .filter(|s| !s.is_empty())
        .map(Arc::from);
    Reply {
        answer,
        source,
        verdict,
        score,
        summary,
    }
}
