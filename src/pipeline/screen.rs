//! Steps 1–4, on the question alone: access control, bypass canaries, the filter,
//! tunnel detection. No I/O.

use std::net::IpAddr;

use super::{Pipeline, Policy, Resolve};
use crate::detect::Score;
use crate::filter::{Action, Verdict};

/// Whether screening counts the question as its client's traffic.
#[derive(Debug, Clone, Copy)]
pub(super) enum Count {
    /// A query that arrived at this unix millisecond: the tunnel detector counts it
    /// in its client's and domain's windows.
    At(u64),
    /// `dnsguard check`: the name alone is scored and nothing is counted.
    Nothing,
}

/// A question screening answers itself.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// The client is outside the allowed networks: REFUSED.
    Refused,
    /// A bypass canary: NXDOMAIN.
    Canary,
    /// Blocked by the filter: the group's block answer.
    Blocked(Verdict),
    /// Refused by the group's tunnel action.
    Tunnel(Verdict, Score),
}

impl<R: Resolve> Pipeline<R> {
    /// Steps 1–4 for `client` (who `identity` says it is) asking `name`/`qtype`:
    /// where it stops, or the filter's verdict and the tunnel score it goes on
    /// with. One order for queries and for `dnsguard check` alike.
    pub(super) fn screen(
        &self,
        policy: &Policy,
        client: IpAddr,
        identity: &crate::identity::Identity,
        name: &str,
        qtype: u16,
        count: Count,
    ) -> Result<(Verdict, Score), Stop> {
        // A proven client may query from anywhere when configured (a laptop on
        // hotel Wi-Fi keeps its agent policy).
        let anywhere = self.authenticated_anywhere && identity.proven;
        if !(self.access.allows(client) || anywhere) {
            return Err(Stop::Refused);
        }
        if policy.local.is_canary(name) {
            return Err(Stop::Canary);
        }
        let verdict = policy.filter.check_in(identity.group, client, name, qtype);
        if let Action::Block(_) = verdict.action {
            return Err(Stop::Blocked(verdict));
        }
        let action = policy.tunnel_action(verdict.group);
        let score = match count {
            Count::At(now_ms) => {
                let who = policy.who(client, identity);
                self.detector.observe(now_ms, who, name, qtype)
            }
            Count::Nothing => self.detector.score_name(name, qtype),
        }
        .under(action);
        if score.refused_by(action) && verdict.action != Action::Allow {
            return Err(Stop::Tunnel(verdict, score));
        }
        Ok((verdict, score))
    }
}
