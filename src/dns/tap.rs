//! What the pipeline recorded, in dnstap's terms: the verdict of a query as a
//! dnstap policy, and the event handed to the dnstap writer. Beside the pipeline
//! whose outcome it reads, so that `dnstap` itself knows nothing of `dns`.

use crate::dns::pipeline::{Outcome, Screen, Screened, Source};
use crate::dnstap::{Dnstap, Event, PolicyAction, PolicyFacts, PolicyMatch};
use crate::filter::{Action, BlockMode, BlockReason};
use crate::querylog::Entry;

impl Dnstap {
    /// Hands one recorded query to the writer; never waits (a full queue drops
    /// the event and counts it).
    pub fn observe(
        &self,
        e: &Entry,
        outcome: &Outcome<'_>,
        screened: &Screened,
        mode: Option<&BlockMode>,
    ) {
        let via = &outcome.via;
        let wire = (!via.query.is_empty()).then(|| {
            let mut b = Vec::with_capacity(via.query.len() + via.response.len());
            b.extend_from_slice(via.query);
            b.extend_from_slice(via.response);
            (b.into_boxed_slice(), via.query.len())
        });
        let event = Event {
            client: e.client,
            port: via.port,
            transport: via.transport,
            now_ms: screened.now_ms,
            latency_us: e.latency_us,
            name: e.name.clone(),
            policy: policy_facts(e, outcome, screened, mode),
            tunnel: outcome
                .score
                .filter(|s| s.flagged || *outcome.source == Source::Tunnel)
                .copied(),
            wire,
        };
        self.send(event);
    }
}

/// The verdict of one query as a dnstap policy, when one applied.
fn policy_facts(
    e: &Entry,
    outcome: &Outcome<'_>,
    screened: &Screened,
    mode: Option<&BlockMode>,
) -> Option<PolicyFacts> {
    let by_mode = match mode {
        Some(BlockMode::NxDomain) => PolicyAction::Nxdomain,
        Some(BlockMode::NoData) => PolicyAction::Nodata,
        Some(BlockMode::Refused) => PolicyAction::Drop,
        _ => PolicyAction::LocalData,
    };
    let facts = |kind, action, matched, address| {
        Some(PolicyFacts {
            kind,
            list: e.list.clone(),
            rule: e.rule.clone(),
            action,
            matched,
            address,
        })
    };
    if *outcome.source == Source::Refused {
        // Outside `allow_clients`: answered REFUSED, which dnstap has no action for.
        return facts(
            "access",
            PolicyAction::Drop,
            Some(PolicyMatch::ClientIp),
            Some(e.client),
        );
    }
    let verdict = outcome.verdict?;
    match outcome.source {
        Source::Tunnel => facts("tunnel", PolicyAction::Drop, Some(PolicyMatch::Qname), None),
        Source::Rebinding(ip) => facts(
            "rebinding",
            by_mode,
            Some(PolicyMatch::ResponseIp),
            Some(*ip),
        ),
        Source::Blocked => {
            let kind = match verdict.action {
                Action::Block(BlockReason::NotAllowlisted) => "allowlist-only",
                _ => "blocklist",
            };
            // Blocked before resolution: the query name matched. After it, a CNAME
            // target or an answer address did, and the verdict does not say which.
            let matched =
                matches!(screened.screen, Screen::Blocked(_)).then_some(PolicyMatch::Qname);
            facts(kind, by_mode, matched, None)
        }
        _ if verdict.action == Action::Allow && verdict.rule.is_some() => facts(
            "allowlist",
            PolicyAction::Pass,
            Some(PolicyMatch::Qname),
            None,
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use super::*;
    use crate::dnstap::Via;

    /// The policy of one recorded query, as `observe` derives it.
    fn policy_of(
        source: Source,
        screen: Screen,
        verdict: Option<crate::filter::Verdict>,
        mode: BlockMode,
    ) -> Option<PolicyFacts> {
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let mut e = Entry::new(1, client, Arc::from("x.test"), 1);
        e.list = Arc::from("mine");
        e.rule = Arc::from("line 9");
        let outcome = Outcome {
            rcode: 0,
            source: &source,
            verdict: verdict.as_ref(),
            score: None,
            summary: None,
            addrs: &[],
            ttl_cap: u32::MAX,
            via: Via::default(),
        };
        let screened = Screened {
            screen,
            started: std::time::Instant::now(),
            now_ms: 1,
        };
        policy_facts(&e, &outcome, &screened, Some(&mode))
    }

    #[test]
    fn verdicts_map_to_dnstap_policies() {
        use crate::filter::{GroupId, Verdict};
        let block = Verdict {
            group: GroupId(0),
            action: Action::Block(BlockReason::Rule),
            rule: None,
        };
        let pass = Verdict {
            action: Action::Pass,
            ..block
        };
        let score = crate::detect::Score {
            value: 2.0,
            flagged: true,
            quarantined: false,
            reasons: Default::default(),
        };
        // Refused client: CLIENT_IP, its address, DROP (REFUSED).
        let p = policy_of(Source::Refused, Screen::Refused, None, BlockMode::Null).unwrap();
        assert_eq!((p.kind, p.action), ("access", PolicyAction::Drop));
        assert_eq!(p.matched, Some(PolicyMatch::ClientIp));
        assert_eq!(p.address, Some("192.0.2.7".parse().unwrap()));
        // Block modes.
        for (mode, action) in [
            (BlockMode::NoData, PolicyAction::Nodata),
            (BlockMode::NxDomain, PolicyAction::Nxdomain),
            (BlockMode::Refused, PolicyAction::Drop),
            (BlockMode::Null, PolicyAction::LocalData),
        ] {
            let p = policy_of(Source::Blocked, Screen::Blocked(block), Some(block), mode).unwrap();
            assert_eq!(
                (p.kind, p.action, p.matched),
                ("blocklist", action, Some(PolicyMatch::Qname))
            );
            assert_eq!((&*p.list, &*p.rule), ("mine", "line 9"));
        }
        // Blocked after resolution (CNAME target or answer rule): which one is not known.
        let p = policy_of(
            Source::Blocked,
            Screen::Pass(pass, score),
            Some(block),
            BlockMode::Null,
        );
        assert_eq!(p.unwrap().matched, None);
        // Rebinding: the private address answered.
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let p = policy_of(
            Source::Rebinding(ip),
            Screen::Pass(pass, score),
            Some(pass),
            BlockMode::NxDomain,
        )
        .unwrap();
        assert_eq!(
            (p.kind, p.action, p.matched),
            (
                "rebinding",
                PolicyAction::Nxdomain,
                Some(PolicyMatch::ResponseIp)
            )
        );
        assert_eq!(p.address, Some(ip));
        // Tunnel refusal.
        let p = policy_of(
            Source::Tunnel,
            Screen::Tunnel(pass, score),
            Some(pass),
            BlockMode::Null,
        )
        .unwrap();
        assert_eq!((p.kind, p.action), ("tunnel", PolicyAction::Drop));
        // Plain answers: no policy.
        assert!(
            policy_of(
                Source::Cache,
                Screen::Pass(pass, score),
                Some(pass),
                BlockMode::Null
            )
            .is_none()
        );
    }
}
