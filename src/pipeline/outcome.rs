//! Step 9: what the pipeline decided ([`Says`]) and its record — the query-log
//! entry, the metrics, the egress guard's and dnstap's view — built in one place
//! for every front end.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};

use super::block::Plan;
use super::ede::{Ede, Failure};
use super::{Asked, Pipeline, Policy, Resolve, Stop};
use crate::detect::Score;
use crate::dnstap::Why;
use crate::filter::{Action, BlockReason, Verdict};
use crate::querylog::{self, Entry};
use crate::resolve::Answer;
use crate::resolve::cache::Hit;

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
    Rebinding(IpAddr),
    /// From `[local]` records or hosts files.
    Local,
    /// A fresh cache entry.
    Cache,
    /// An expired cache entry, served because upstreams failed.
    Stale,
    /// From the named upstream(s).
    Upstream(Arc<str>),
    /// Resolution failed: what kind of failure (for the reply's EDE), and the reason.
    Failed(Failure, String),
}

/// What goes into the reply.
pub enum Content {
    /// A bare response code.
    Rcode(ResponseCode),
    /// The group's block answer.
    Blocked(Plan),
    /// Synthesized records (local names, the RFC 8482 ANY answer).
    Records(Answer),
    /// A cached or fetched answer; for a fresh upstream answer also the
    /// resolver's records (so hickory's encoder need not parse the wire form back).
    Hit(Hit, Option<Answer>),
}

/// The pipeline's decision for one question: the reply's content, where it came
/// from, and why.
pub struct Says {
    /// What to answer.
    pub content: Content,
    /// Where it came from.
    pub source: Source,
    /// The deciding verdict: the filter's for the name, or a CNAME target's or
    /// answer rule's that blocked the answer (`None` before filtering).
    pub verdict: Option<Verdict>,
    /// The tunnel detector's score (`None` when the query was not scored).
    pub score: Option<Score>,
    /// Decided from the question alone, before resolution (a block is the name's
    /// own, not its answer's).
    pub early: bool,
    /// The `[[clients]]` entry the question came from, if one was recognised.
    pub client: Option<crate::identity::ClientIndex>,
}

impl Says {
    /// The answer to a question screening stopped (steps 1–4), from the
    /// `[[clients]]` entry `client`.
    pub(super) fn early(
        policy: &Policy,
        stop: Stop,
        qtype: u16,
        client: Option<crate::identity::ClientIndex>,
    ) -> Says {
        let (content, source, verdict, score) = match stop {
            Stop::Refused => (
                Content::Rcode(ResponseCode::Refused),
                Source::Refused,
                None,
                None,
            ),
            Stop::Canary => (
                Content::Rcode(ResponseCode::NXDomain),
                Source::Local,
                None,
                None,
            ),
            Stop::Blocked(v) => (
                Content::Blocked(policy.block_plan(v.group, qtype)),
                Source::Blocked,
                Some(v),
                None,
            ),
            Stop::Tunnel(v, s) => (
                Content::Rcode(ResponseCode::Refused),
                Source::Tunnel,
                Some(v),
                Some(s),
            ),
        };
        Says {
            content,
            source,
            verdict,
            score,
            early: true,
            client,
        }
    }

    /// An answer decided after screening, from the `[[clients]]` entry `client`
    /// (built where it is returned: a `Says` is large, and every move copies it).
    pub(super) fn later(
        content: Content,
        source: Source,
        verdict: Option<Verdict>,
        score: Option<Score>,
        client: Option<crate::identity::ClientIndex>,
    ) -> Says {
        Says {
            content,
            source,
            verdict,
            score,
            early: false,
            client,
        }
    }

    /// The response code.
    pub fn rcode(&self) -> ResponseCode {
        match &self.content {
            Content::Rcode(rcode) => *rcode,
            Content::Blocked(plan) => plan.rcode(),
            Content::Records(answer) => answer.rcode,
            Content::Hit(hit, _) => hit.cached.rcode,
        }
    }

    /// The AD bit of the reply: every record validated, and the client asked for
    /// it (DO, or AD in the query, RFC 6840 §5.7).
    pub fn authentic(&self, dnssec_ok: bool, asked_ad: bool) -> bool {
        let validated = match &self.content {
            Content::Records(answer) => answer.authentic,
            Content::Hit(hit, _) => hit.cached.authentic,
            Content::Rcode(_) | Content::Blocked(_) => false,
        };
        validated && (dnssec_ok || asked_ad)
    }

    /// The reply's Extended DNS Error (RFC 8914), if dnsguard decided the answer.
    pub fn ede<'a>(&'a self, policy: &'a Policy) -> Option<Ede<'a>> {
        Ede::of(policy, &self.source, self.verdict.as_ref(), self.early)
    }

    /// Why, in dnstap's terms.
    fn why(&self) -> Why {
        let Some(v) = self.verdict else {
            return match self.source {
                Source::Refused => Why::Refused,
                _ => Why::Answered,
            };
        };
        match &self.source {
            Source::Refused => Why::Refused,
            Source::Tunnel => Why::Tunnel,
            Source::Rebinding(ip) => Why::Rebinding(*ip),
            Source::Blocked => Why::Blocked {
                qname: self.early,
                allowlist_only: v.action == Action::Block(BlockReason::NotAllowlisted),
            },
            _ if v.action == Action::Allow && v.rule.is_some() => Why::Allowlisted,
            _ => Why::Answered,
        }
    }

    /// The records for hickory's encoder, owned by `qname` (the question as the
    /// client spelled it).
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Cow<'_, Answer> {
        match &self.content {
            Content::Rcode(rcode) => Cow::Owned(Answer::empty(*rcode)),
            Content::Blocked(plan) => Cow::Owned(plan.answer(qname)),
            Content::Records(answer) | Content::Hit(_, Some(answer)) => Cow::Borrowed(answer),
            Content::Hit(hit, None) => Cow::Owned(hit.answer(qname, qtype)),
        }
    }
}

impl<R: Resolve> Pipeline<R> {
    /// Records an answered question — in the query log, the metrics, the egress
    /// guard and dnstap — and feeds its rcode back to the tunnel detector. `rcode`
    /// is what was sent; `via` the transport and wire forms for dnstap. Never
    /// waits on disk.
    pub fn record(
        &self,
        policy: &Policy,
        asked: &Asked<'_>,
        says: &Says,
        rcode: u16,
        via: crate::dnstap::Via<'_>,
    ) {
        // The health check's own query (`cluster::health`) is no client's: not
        // logged, counted or observed. Only loopback can send it.
        if asked.client.ip().is_loopback() && asked.name == crate::cluster::PROBE_NAME {
            return;
        }
        let now_ms = asked.arrived.unix_ms;
        if let Some(score) = &says.score {
            self.detector.record_rcode(now_ms, score, rcode);
        }
        let elapsed = asked.arrived.at.elapsed();
        let e = entry(policy, asked, says, rcode, elapsed);
        super::metrics::record(&e, &says.source, elapsed);
        if let Some(guard) = self.guard.get() {
            match &says.content {
                Content::Hit(hit, _) => {
                    let cap = hit.ttl_left;
                    let addrs = hit.cached.addrs.iter().map(|&(ip, t)| (ip, t.min(cap)));
                    guard.observe(&e, addrs);
                }
                Content::Records(answer) => guard.observe(&e, answer.addresses()),
                _ => guard.observe(&e, std::iter::empty()),
            }
        }
        if let Some(tap) = self.dnstap.get() {
            let mode = says.verdict.map(|v| policy.filter.group_block(v.group).0);
            let tunnel = says
                .score
                .filter(|s| s.flagged || says.source == Source::Tunnel);
            tap.observe(&e, now_ms, &via, says.why(), tunnel, mode);
        }
        self.log.record(e);
    }
}

/// The query-log entry of one answered question, each field written once with
/// its final value (an entry started empty and overwritten cloned and dropped a
/// shared empty text per replaced field: an atomic pair each, per query).
fn entry(
    policy: &Policy,
    asked: &Asked<'_>,
    says: &Says,
    rcode: u16,
    elapsed: std::time::Duration,
) -> Entry {
    let client = asked.client.ip();
    let source = &says.source;
    let (group, mut verdict, (list, mut rule)) = match &says.verdict {
        Some(v) => {
            let blocked = *source == Source::Blocked;
            let ruling = match (blocked, v.action) {
                (true, _) => querylog::Ruling::Blocked,
                (false, Action::Allow) => querylog::Ruling::Allowlisted,
                _ => querylog::Ruling::Allowed,
            };
            let labels = if blocked || v.action == Action::Allow {
                policy.rule_labels(v)
            } else {
                (querylog::empty_str(), querylog::empty_str())
            };
            (policy.group_label(v.group), ruling, labels)
        }
        // Refused before filtering, or a canary: still the client's group by
        // name (`default` included), never an empty one.
        None => (
            policy.group_label(policy.identify(client, None, None).group),
            querylog::Ruling::Allowed,
            (querylog::empty_str(), querylog::empty_str()),
        ),
    };
    let mut tunnel = None;
    if let Some(score) = &says.score
        && (score.flagged || *source == Source::Tunnel)
    {
        // Stored as they are; the log renders the text when read, as the
        // entry's rule (in place of a list rule).
        tunnel = Some(Box::new(score.reasons));
        rule = querylog::empty_str();
        if *source == Source::Tunnel {
            verdict = querylog::Ruling::Blocked;
        }
    }
    match source {
        // A client outside `allow_clients` got nothing: never an "allowed" query.
        Source::Refused => verdict = querylog::Ruling::Blocked,
        Source::Rebinding(ip) => {
            verdict = querylog::Ruling::Blocked;
            rule = Arc::from(format!("rebinding: answer {ip} is private"));
        }
        _ => {}
    }
    let answer = match &says.content {
        Content::Hit(hit, _) if hit.cached.has_answers => Some(hit.cached.summary.clone()),
        Content::Records(answer) if *source == Source::Local => Some(answer.summary())
            .filter(|s| !s.is_empty())
            .map(Arc::from),
        _ => None,
    };
    Entry {
        time_ms: asked.arrived.unix_ms,
        client,
        name: Arc::from(asked.name),
        qtype: asked.qtype,
        verdict,
        flagged: says.score.as_ref().is_some_and(|s| s.flagged),
        rule,
        list,
        rcode,
        answer: answer.unwrap_or_else(querylog::empty_str),
        source: match source {
            Source::Refused => querylog::Origin::Refused,
            Source::Blocked | Source::Tunnel | Source::Rebinding(_) => querylog::Origin::Blocked,
            Source::Local => querylog::Origin::Local,
            Source::Cache => querylog::Origin::Cache,
            Source::Stale => querylog::Origin::Stale,
            Source::Upstream(label) => querylog::Origin::Upstream(label.clone()),
            Source::Failed(..) => querylog::Origin::Failed,
        },
        latency_us: u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX),
        tunnel_score: says.score.as_ref().map_or(0.0, |s| s.value),
        group,
        client_name: says
            .client
            .and_then(|c| policy.identities().name(c))
            .map_or_else(querylog::empty_str, Arc::clone),
        tunnel,
    }
}
