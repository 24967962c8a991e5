//! Step 8, the checks on an answer that depend on the client: CNAME cloaking (a
//! tracker hidden behind a first-party CNAME is still blocked, unless the query
//! name itself was explicitly allowed), rebinding protection (a public name
//! answered with a private, loopback or metadata address), and answer rules
//! (address/CIDR entries of the group's lists and deny entries).

use std::net::IpAddr;

use super::{Policy, Source};
use crate::filter::{Action, Verdict};
use crate::rebinding::Rebinding;
use crate::resolve::cache::Cached;

/// Which check replaced an answer by the block answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Veto<'a> {
    /// This CNAME target of the answer is blocked (cloaking).
    Cloaked(&'a str),
    /// A public name answered with this private or metadata address.
    Rebinding(IpAddr),
    /// An address of the answer matches an answer rule.
    AnswerRule,
}

impl Veto<'_> {
    /// Where the answer that replaced the vetoed one comes from, for the log.
    pub fn source(self) -> Source {
        match self {
            Veto::Rebinding(ip) => Source::Rebinding(ip),
            Veto::Cloaked(_) | Veto::AnswerRule => Source::Blocked,
        }
    }
}

/// `Some` (which check, and the verdict that decided) when the answer `cached`
/// to `client`'s `name`/`qtype`, which the filter passed with `verdict`, must be
/// replaced by the block answer.
pub fn answer<'a>(
    policy: &Policy,
    rebinding: &Rebinding,
    client: IpAddr,
    verdict: &Verdict,
    name: &str,
    qtype: u16,
    cached: &'a Cached,
) -> Option<(Veto<'a>, Verdict)> {
    if verdict.action != Action::Allow {
        for target in cached.cname_targets.iter() {
            let cloaked = policy.filter.check_in(verdict.group, client, target, qtype);
            if let Action::Block(_) = cloaked.action {
                return Some((Veto::Cloaked(target), cloaked));
            }
        }
    }
    let addrs = || cached.addrs.iter().map(|&(ip, _)| ip);
    if let Some(ip) = rebinding.violation(name, addrs()) {
        return Some((Veto::Rebinding(ip), *verdict));
    }
    let (_, by) = policy.filter.check_answer(verdict.group, addrs())?;
    Some((Veto::AnswerRule, by))
}
