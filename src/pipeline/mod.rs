//! The query pipeline: the one place where the steps a question goes through are
//! put in order, as a decision without I/O that every front end shares.
//!
//! A front end (the UDP fast path and slow path, TCP, DoT) does only this: parse,
//! call [`Pipeline::decide`], run [`Pipeline::fetch`] when asked to, call
//! [`Pipeline::finish`], encode the [`Says`] (in place, or with hickory's
//! encoder), and [`Pipeline::record`] it.
//!
//! The steps, in order, and why:
//! 1. access control (`screen.rs`): clients outside the configured networks get
//!    REFUSED, before any work is done for them (no open resolver);
//! 2. bypass canaries (`use-application-dns.net`, iCloud Private Relay) get
//!    NXDOMAIN for everyone, before any group's block mode could turn it into an
//!    address;
//! 3. the filter: the client's group and its lists decide block / allow / pass; a
//!    block is answered here, so blocked names never reach an upstream;
//! 4. tunnel detection: every query that is not blocked is scored (the per-domain
//!    window must see all of a domain's traffic); the group's tunnel action may
//!    refuse it (`block`: a flagged query; `quarantine`: that, and every query of
//!    a domain its client is quarantined for; never another client's);
//! 5. local records and special-use names: names the operator defined win over
//!    everything upstream; other ANY queries get the minimal RFC 8482 answer (no
//!    amplification);
//! 6. cache: a fresh answer never touches the upstream;
//! 7. resolver (`fetch.rs`): conditional zones, forwarder or recursor, bounded by
//!    the timeout; on failure a stale cached answer (RFC 8767) beats SERVFAIL,
//!    except for bogus DNSSEC data;
//! 8. checks on the answer (`vet.rs`), cached or fetched: CNAME cloaking (after
//!    the cache, because groups differ while the cached answer is shared), then
//!    rebinding protection, then answer rules;
//! 9. record (`outcome.rs`): the query log, the metrics (`metrics.rs`), the egress
//!    guard and dnstap, none of them waiting on disk or network.
//!
//! Steps 1–6 and 8 for a cached answer run in [`Pipeline::decide`]; step 7 is
//! [`Pipeline::fetch`], step 8 for a fetched answer [`Pipeline::finish`]. The
//! resolver is a type parameter ([`Resolve`], [`Router`] by default): the hot path
//! has no dynamic dispatch, and the unit tests use a scripted resolver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

pub mod block;
mod check;
pub mod ede;
mod fetch;
pub mod latency;
mod metrics;
mod outcome;
mod policy;
mod screen;
mod settings;
#[cfg(test)]
mod tests;
mod vet;

pub use check::{Checked, Decision};
pub use fetch::{Fetched, Resolve};
pub use outcome::{Content, Says, Source};
pub use policy::Policy;
pub use screen::Stop;
pub use settings::{PolicySettings, Settings};

use crate::access::Access;
use crate::detect::{Detector, Score};
use crate::filter::Verdict;
use crate::querylog::{self, QueryLog};
use crate::rebinding::Rebinding;
use crate::resolve::Answer;
use crate::resolve::cache::{Cache, Key};
use crate::resolve::router::Router;

/// When a query arrived: read once per batch of datagrams (two clock reads per
/// query were 2% of a UDP worker's instructions).
#[derive(Debug, Clone, Copy)]
pub struct Arrived {
    /// For the logged latency and the rate limiter.
    pub at: Instant,
    /// The same moment in unix milliseconds, for the log and the detector.
    pub unix_ms: u64,
}

impl Arrived {
    /// Now.
    pub fn now() -> Self {
        Self {
            at: Instant::now(),
            unix_ms: querylog::now_ms(),
        }
    }
}

/// One question as the pipeline needs it, borrowed from whatever the front end
/// parsed (in place, or hickory's message).
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// Who asked.
    pub client: SocketAddr,
    /// The query name: ASCII, lower case, no trailing dot (the form the filter,
    /// detector, cache key and query log use).
    pub name: &'a str,
    /// The query type.
    pub qtype: u16,
    /// The DO bit: the client wants DNSSEC records.
    pub dnssec_ok: bool,
    /// The CD bit: the client does its own validation.
    pub checking_disabled: bool,
    /// hickory's parse of the question, when the front end has one (it keeps the
    /// client's letter case for the upstream and the answer's owner names).
    pub query: Option<&'a Query>,
    /// When it arrived.
    pub arrived: Arrived,
    /// What the client presented about who it is (the encrypted front ends).
    pub presented: Option<&'a crate::identity::Presented>,
    /// What a trusted forwarder said about the client behind it (EDNS options;
    /// the front end checked [`Pipeline::trusts_forwarder`]).
    pub forwarded: Option<&'a crate::identity::Forwarded>,
}

/// What [`Pipeline::decide`] made of a question.
pub enum Step {
    /// The answer is known: encode it and record it.
    Final(Says),
    /// Ask the resolver ([`Pipeline::fetch`]), then [`Pipeline::finish`] (boxed:
    /// the key is large, and a final answer is the common case).
    Fetch(Box<Pending>),
}

/// A question that passed screening and the cache, on its way to the resolver:
/// what was worked out for it travels along, so nothing is parsed or keyed twice.
pub struct Pending {
    query: Query,
    name: LowerName,
    key: Option<Key>,
    dnssec_ok: bool,
    checking_disabled: bool,
    verdict: Verdict,
    score: Score,
    client: Option<crate::identity::ClientIndex>,
}

/// Every step, built once from the configuration and shared by all front ends.
pub struct Pipeline<R = Router> {
    access: Access,
    /// `[server] trusted_forwarders`: whose EDNS identity options count.
    trusted_forwarders: crate::netset::NetSet,
    /// `[server] allow_authenticated_anywhere`.
    authenticated_anywhere: bool,
    policy: ArcSwap<Policy>,
    detector: Arc<Detector>,
    cache: Cache,
    resolver: R,
    rebinding: Rebinding,
    log: Arc<QueryLog>,
    /// Set once at start, like dnstap: a `get` per query is a load and a branch,
    /// where an `ArcSwapOption` load was about 50 instructions.
    guard: std::sync::OnceLock<Arc<crate::guard::Guard>>,
    dnstap: std::sync::OnceLock<Arc<crate::dnstap::Dnstap>>,
}

impl Pipeline {
    /// Builds every step from `settings` around a compiled policy; fails on bad
    /// exemption lines or unusable upstreams.
    pub fn new(settings: &Settings, policy: Policy, log: Arc<QueryLog>) -> anyhow::Result<Self> {
        let router = Router::new(&settings.resolver)?;
        Self::with_resolver(settings, policy, log, router)
    }
}

impl<R: Resolve> Pipeline<R> {
    /// [`Pipeline::new`] with another resolver in place of the configured router.
    pub fn with_resolver(
        settings: &Settings,
        policy: Policy,
        log: Arc<QueryLog>,
        resolver: R,
    ) -> anyhow::Result<Self> {
        let s = settings;
        Ok(Self {
            access: Access::new(&s.allow_clients),
            trusted_forwarders: crate::netset::NetSet::new(&s.trusted_forwarders),
            authenticated_anywhere: s.allow_authenticated_anywhere,
            policy: ArcSwap::from_pointee(policy),
            detector: Arc::new(Detector::new(&s.detect)?),
            cache: Cache::new(&s.cache),
            resolver,
            rebinding: Rebinding::new(
                &s.rebinding,
                s.resolver.forward_zones.iter().map(|z| z.zone.clone()),
            ),
            log,
            guard: std::sync::OnceLock::new(),
            dnstap: std::sync::OnceLock::new(),
        })
    }

    /// Attaches the egress guard (alerts, new-domain tracking, firewall sync)
    /// once, which then sees every recorded query; its settings change through
    /// `Guard::configure`, never by attaching another.
    pub fn set_guard(&self, guard: Arc<crate::guard::Guard>) {
        let _ = self.guard.set(guard);
    }

    /// Attaches the dnstap output (once), which then gets every recorded query.
    pub fn set_dnstap(&self, dnstap: Arc<crate::dnstap::Dnstap>) {
        let _ = self.dnstap.set(dnstap);
    }

    /// Whether `ip` is a `[server] trusted_forwarders` address, whose EDNS options
    /// about the client behind it are read.
    #[inline]
    pub fn trusts_forwarder(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_forwarders.contains(ip)
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

    /// Steps 1–6 (and 8 for a cached answer) for `asked` under `policy`: the final
    /// answer, or what to ask the resolver. No I/O; the tunnel detector counts the
    /// query, so call it once per query.
    pub fn decide(&self, policy: &Policy, asked: &Asked<'_>) -> Step {
        let (name, qtype) = (asked.name, asked.qtype);
        let now_ms = asked.arrived.unix_ms;
        let ip = asked.client.ip();
        let identity = policy.identify(ip, asked.presented, asked.forwarded);
        let client = identity.client;
        let (verdict, score) = match self.screen(
            policy,
            ip,
            &identity,
            name,
            qtype,
            screen::Count::At(now_ms),
        ) {
            Ok(passed) => passed,
            Err(stop) => return Step::Final(Says::early(policy, stop, qtype, client)),
        };
        let (v, s) = (Some(verdict), Some(score));
        if let Some(answer) = local_answer(policy, name, qtype, || owner(asked)) {
            return Step::Final(Says::later(
                Content::Records(answer),
                Source::Local,
                v,
                s,
                client,
            ));
        }
        let key = Key::new(name, qtype, asked.dnssec_ok, asked.checking_disabled);
        if let Some(hit) = key
            .as_ref()
            .and_then(|k| self.cache.get(k, asked.arrived.at))
        {
            let fetched = Fetched {
                hit,
                source: Source::Cache,
                answer: None,
            };
            return Step::Final(self.vetted(policy, asked, verdict, score, client, fetched));
        }
        let query = match asked.query {
            Some(q) => q.clone(),
            None => Query::query(owner(asked), RecordType::from(qtype)),
        };
        Step::Fetch(Box::new(Pending {
            name: LowerName::new(query.name()),
            query,
            key,
            dnssec_ok: asked.dnssec_ok,
            checking_disabled: asked.checking_disabled,
            verdict,
            score,
            client,
        }))
    }

    /// Step 8 for what [`Pipeline::fetch`] got for `pending`: the answer as it
    /// passed the checks, its replacement by the block answer, or SERVFAIL.
    pub fn finish(
        &self,
        policy: &Policy,
        asked: &Asked<'_>,
        pending: Box<Pending>,
        got: Result<Fetched, Source>,
    ) -> Says {
        let Pending {
            verdict,
            score,
            client,
            ..
        } = *pending;
        match got {
            Ok(fetched) => self.vetted(policy, asked, verdict, score, client, fetched),
            Err(failed) => Says::later(
                Content::Rcode(ResponseCode::ServFail),
                failed,
                Some(verdict),
                Some(score),
                client,
            ),
        }
    }

    /// A cached or fetched answer after the checks on it (step 8).
    fn vetted(
        &self,
        policy: &Policy,
        asked: &Asked<'_>,
        verdict: Verdict,
        score: Score,
        client: Option<crate::identity::ClientIndex>,
        f: Fetched,
    ) -> Says {
        let checked = vet::answer(
            policy,
            &self.rebinding,
            asked.client.ip(),
            &verdict,
            asked.name,
            asked.qtype,
            &f.hit.cached,
        );
        if let Some((veto, by)) = checked {
            let plan = policy.block_plan(by.group, asked.qtype);
            return Says::later(
                Content::Blocked(plan),
                veto.source(),
                Some(by),
                Some(score),
                client,
            );
        }
        Says::later(
            Content::Hit(f.hit, f.answer),
            f.source,
            Some(verdict),
            Some(score),
            client,
        )
    }
}

/// Step 5: a local record, hosts file entry or special-use name, else for ANY the
/// minimal RFC 8482 answer (so dnsguard is no amplifier); `owner` names that one.
fn local_answer(
    policy: &Policy,
    name: &str,
    qtype: u16,
    owner: impl FnOnce() -> Name,
) -> Option<Answer> {
    let qtype = RecordType::from(qtype);
    policy
        .local
        .answer(name, qtype)
        .or_else(|| (qtype == RecordType::ANY).then(|| minimal_any(&owner())))
}

/// The owner name of synthesized answers: the client's own spelling when there is
/// one, else the name text.
fn owner(asked: &Asked<'_>) -> Name {
    match asked.query {
        Some(q) => q.name().clone(),
        None => name_of(asked.name),
    }
}

/// `name` (normalised text) as a fully qualified hickory name (the root for text
/// that is not one, which normalised names always are).
fn name_of(name: &str) -> Name {
    let mut n = Name::from_ascii(name).unwrap_or_else(|_| Name::root());
    n.set_fqdn(true);
    n
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
