//! `dnsguard check` and `/api/v1/check`: what the server would answer one question,
//! and why. The same steps as a query, from the same code (screening, local and
//! special-use names, then — only when asked — the resolver and the checks on its
//! answer), without logging the question, counting it as the client's traffic, or
//! caching what it fetched.

use std::net::IpAddr;

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{LowerName, RecordType};

use super::screen::{Count, Stop};
use super::vet::{self, Veto};
use super::{Pipeline, Resolve};
use crate::filter::Verdict;
use crate::resolve::cache::Cached;

/// The step that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The client is outside `server.allow_clients`.
    Refused,
    /// A bypass canary, NXDOMAIN for everyone.
    Canary,
    /// The filter blocks the name (or the group denies everything not allowlisted).
    Blocked,
    /// The group's tunnel action refuses it (the name alone scores as a tunnel).
    Tunnel,
    /// A local record, hosts file entry, special-use name or the RFC 8482 ANY answer.
    Local,
    /// Nothing stops it; the resolver was not asked.
    Pass,
    /// Resolved, and the answer passed the checks.
    Resolved,
    /// Resolved, and a CNAME target in the answer is blocked (cloaking).
    CnameBlocked,
    /// Resolved to a private or metadata address for a public name.
    Rebinding,
    /// Resolved to an address an answer rule blocks.
    AnswerBlocked,
    /// The resolver failed: the server answers SERVFAIL (or a stale answer).
    Failed,
}

impl Decision {
    /// A short word for the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Refused => "refused",
            Decision::Canary => "canary",
            Decision::Blocked => "blocked",
            Decision::Tunnel => "tunnel",
            Decision::Local => "local",
            Decision::Pass => "pass",
            Decision::Resolved => "resolved",
            Decision::CnameBlocked => "cname-blocked",
            Decision::Rebinding => "rebinding",
            Decision::AnswerBlocked => "answer-blocked",
            Decision::Failed => "failed",
        }
    }
}

/// The outcome of [`Pipeline::check`].
#[derive(Debug, Clone)]
pub struct Checked {
    /// The step that decided.
    pub decision: Decision,
    /// The response code the client would get (a block answer's own, for blocks).
    pub rcode: ResponseCode,
    /// The filter's verdict for the name, or for the CNAME target or address that
    /// blocked the answer.
    pub verdict: Option<Verdict>,
    /// What was answered: the local or resolved records, in the query log's words.
    pub answer: Option<String>,
    /// Why, in words, where the verdict does not say it all.
    pub note: Option<String>,
}

impl<R: Resolve> Pipeline<R> {
    /// What the server would answer `client` for `name` (normalised text) and
    /// `qtype`. With `resolve`, the question is also sent to the resolver and its
    /// answer put through CNAME cloaking, rebinding and answer rules, as a query's
    /// would be; without it, nothing leaves the process.
    pub async fn check(
        &self,
        client: IpAddr,
        name: &str,
        qtype: RecordType,
        resolve: bool,
    ) -> Checked {
        self.check_as(client, None, name, qtype, resolve).await
    }

    /// [`Pipeline::check`] for a named `[[clients]]` entry asking from `client`:
    /// `identity` (from `Identities::as_client`) decides the group.
    pub async fn check_as(
        &self,
        client: IpAddr,
        identity: Option<crate::identity::Identity>,
        name: &str,
        qtype: RecordType,
        resolve: bool,
    ) -> Checked {
        let done = |decision, rcode, verdict, note: Option<String>| Checked {
            decision,
            rcode,
            verdict,
            answer: None,
            note,
        };
        let policy = self.policy();
        let identity = identity.unwrap_or_else(|| policy.identify(client, None, None));
        let stop = self.screen(
            &policy,
            client,
            &identity,
            name,
            u16::from(qtype),
            Count::Nothing,
        );
        let verdict = match stop {
            Ok((verdict, _)) => verdict,
            Err(Stop::Refused) => {
                return done(Decision::Refused, ResponseCode::Refused, None, None);
            }
            Err(Stop::Canary) => {
                let note = "bypass canary ([local] bypass_canaries)".to_owned();
                return done(Decision::Canary, ResponseCode::NXDomain, None, Some(note));
            }
            Err(Stop::Blocked(verdict)) => {
                return blocked(verdict, &policy, name, qtype, Decision::Blocked, None);
            }
            Err(Stop::Tunnel(verdict, score)) => {
                let note = format!("tunnel: {}", score.reasons);
                return done(
                    Decision::Tunnel,
                    ResponseCode::Refused,
                    Some(verdict),
                    Some(note),
                );
            }
        };
        if let Some(answer) =
            super::local_answer(&policy, name, u16::from(qtype), || super::name_of(name))
        {
            return Checked {
                decision: Decision::Local,
                rcode: answer.rcode,
                verdict: Some(verdict),
                answer: Some(answer.summary()).filter(|s| !s.is_empty()),
                note: None,
            };
        }
        let only_name = "the name only; --resolve also follows the answer's CNAME chain \
                         and checks its addresses, as the server does";
        if !resolve {
            let note = Some(only_name.to_owned());
            return done(Decision::Pass, ResponseCode::NoError, Some(verdict), note);
        }
        let qname = super::name_of(name);
        let query = Query::query(qname.clone(), qtype);
        let (result, upstream) = self
            .resolver
            .resolve(&query, &LowerName::new(&qname), false, false)
            .await;
        let answer = match result {
            Ok(answer) => answer,
            Err(e) => {
                let note = Some(format!("{upstream}: {e}"));
                return done(
                    Decision::Failed,
                    ResponseCode::ServFail,
                    Some(verdict),
                    note,
                );
            }
        };
        let cached = Cached::new(&answer, &qname, qtype);
        let summary = Some(cached.summary.to_string()).filter(|s| !s.is_empty());
        let screened = vet::answer(
            &policy,
            &self.rebinding,
            client,
            &verdict,
            name,
            u16::from(qtype),
            &cached,
        );
        let Some((veto, by)) = screened else {
            return Checked {
                decision: Decision::Resolved,
                rcode: answer.rcode,
                verdict: Some(verdict),
                answer: summary,
                note: Some(format!("from {upstream}")),
            };
        };
        let (decision, note) = match veto {
            Veto::Rebinding(ip) => (Decision::Rebinding, Some(format!("answer {ip} is private"))),
            Veto::Cloaked(target) => (
                Decision::CnameBlocked,
                Some(format!("CNAME target {target}")),
            ),
            Veto::AnswerRule => (Decision::AnswerBlocked, None),
        };
        blocked(by, &policy, name, qtype, decision, note)
    }
}

/// What `verdict`'s group answers when it blocks `name`/`qtype`.
fn blocked(
    verdict: Verdict,
    policy: &super::Policy,
    name: &str,
    qtype: RecordType,
    decision: Decision,
    note: Option<String>,
) -> Checked {
    let plan = policy.block_plan(verdict.group, u16::from(qtype));
    let answer = plan.answer(&super::name_of(name));
    Checked {
        decision,
        rcode: answer.rcode,
        verdict: Some(verdict),
        answer: Some(answer.summary()).filter(|s| !s.is_empty()),
        note,
    }
}

impl Checked {
    /// One line for the CLI and the dashboard; `x` explains [`Checked::verdict`]
    /// (group, list, line, rule text).
    pub fn describe(&self, x: Option<&crate::filter::Explanation>) -> String {
        let rcode = rcode_text(self.rcode);
        let group = x.map_or("default", |x| x.group.as_str()).to_owned();
        let x = x.map(|x| x.to_string());
        let x = x.as_deref().unwrap_or("");
        let note = self.note.as_deref().unwrap_or("");
        let answer = self.answer.as_deref().unwrap_or("no records");
        match self.decision {
            Decision::Refused => format!("{rcode}: the client is outside server.allow_clients"),
            Decision::Canary => format!("{rcode}: {note}"),
            Decision::Blocked => format!("{x}; answered {rcode}: {answer}"),
            Decision::Tunnel => format!("{rcode}: {note}; {x}"),
            Decision::Local => format!("answered locally, {rcode}: {answer} (group {group})"),
            Decision::Pass => format!("{x}; {note}"),
            Decision::Resolved => format!("{x}; resolved {note}, {rcode}: {answer}"),
            Decision::CnameBlocked => format!("blocked through its {note}: {x}"),
            Decision::Rebinding => format!("blocked (rebinding: {note}); group {group}"),
            Decision::AnswerBlocked => format!("blocked by an answer rule: {x}"),
            Decision::Failed => format!("{rcode}: {note}"),
        }
    }
}

/// The response code as `dig` prints it.
fn rcode_text(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        other => format!("rcode {}", u16::from(other)),
    }
}
