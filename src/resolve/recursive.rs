//! Recursive resolution from the root servers, with optional DNSSEC validation.
//!
//! Wraps hickory's recursor and does the DNS mapping it leaves to its caller:
//! bogus data (returned as NOERROR) becomes SERVFAIL unless the client set CD, AD
//! is set only when every record is secure, and CNAME chains are put in order.
//! It also answers, as a validating resolver must, where hickory 0.26 does not
//! (docs/RELIABILITY.md): a CNAME loop is SERVFAIL, a CNAME chain ending in
//! NODATA/NXDOMAIN keeps its CNAMEs, a CNAME synthesized from a secure DNAME is
//! secure, negative answers keep their NSEC proof, and a one-label wildcard answer
//! with a complete NSEC proof is secure.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::rdata::DNSSECRData;
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::{Message, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::proto::serialize::binary::BinDecodable;
use hickory_resolver::recursor::{
    DnssecConfig, DnssecPolicy, Recursor, RecursorError, RecursorOptions,
};

use super::ResolverConfig;
use super::{Answer, ResolveError};

/// A recursive resolver starting from configured root hints.
pub struct Recursive {
    recursor: Recursor<TokioRuntimeProvider>,
    validating: bool,
}

impl Recursive {
    /// Builds the recursor from `[resolver]` (root hints, DNSSEC, allowed servers).
    pub fn new(cfg: &ResolverConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        let opts = RecursorOptions {
            allow_server: cfg.recursor_allow_servers.clone(),
            ..RecursorOptions::default()
        };
        let policy = if cfg.dnssec {
            let mut dnssec = DnssecConfig::default();
            if let Some(path) = &cfg.trust_anchor_file {
                let anchors = TrustAnchors::from_file(path)
                    .with_context(|| format!("cannot read trust anchor {}", path.display()))?;
                dnssec.trust_anchor = Some(Arc::new(anchors));
            }
            DnssecPolicy::ValidateWithStaticKey(dnssec)
        } else {
            DnssecPolicy::SecurityUnaware
        };
        let roots: Vec<IpAddr> = cfg.root_hints.clone();
        let recursor =
            Recursor::new(&roots, policy, None, opts, TokioRuntimeProvider::default())
                .map_err(|e: RecursorError| anyhow::anyhow!("cannot build the recursor: {e}"))?;
        Ok(Self {
            recursor,
            validating: cfg.dnssec,
        })
    }

    /// Resolves `query`; `checking_disabled` is the client's CD bit (return bogus data
    /// instead of SERVFAIL).
    pub async fn resolve(
        &self,
        query: &Query,
        dnssec_ok: bool,
        checking_disabled: bool,
    ) -> Result<Answer, ResolveError> {
        let result = self
            .recursor
            .resolve(query.clone(), Instant::now(), dnssec_ok)
            .await;
        if let Err(e) = &result
            && negative_for_another_name(e, query.name())
        {
            // A CNAME chain ending in NODATA or NXDOMAIN. hickory's recursor drops
            // the chain and (validating) checks the target's denial proof against
            // the query name, so calls it bogus: follow the chain here instead.
            if let Some(answer) = self.chain(query, dnssec_ok, checking_disabled).await {
                return answer;
            }
        }
        self.map(result, query, checking_disabled)
    }

    /// The DNS mapping of one recursor result for `query`.
    fn map(
        &self,
        result: Result<Message, RecursorError>,
        query: &Query,
        checking_disabled: bool,
    ) -> Result<Answer, ResolveError> {
        match result {
            Ok(msg) => {
                let data = || {
                    msg.answers
                        .iter()
                        .filter(|r| r.record_type() != RecordType::RRSIG)
                        .map(|r| proof_of(r, &msg.answers))
                };
                if self.validating && !checking_disabled && data().any(|p| p == Proof::Bogus) {
                    return Err(ResolveError::Bogus);
                }
                let authentic = self.validating
                    && data().next().is_some()
                    && data().all(|p| p == Proof::Secure);
                let mut answer = Answer {
                    rcode: msg.metadata.response_code,
                    answers: msg.answers.clone(),
                    authorities: msg.authorities.clone(),
                    authentic,
                };
                // hickory returns a CNAME loop as a NOERROR answer (Secure when
                // signed): no client can use it, and unbound says SERVFAIL.
                if answer.has_cname_loop(query.name()) {
                    return Err(ResolveError::Upstream("CNAME loop".into()));
                }
                answer.sort_chain(query.name());
                Ok(answer)
            }
            Err(RecursorError::Net(NetError::Dns(DnsError::Nsec { response, .. })))
                if checking_disabled
                    || (self.validating && one_label_wildcard_proven(&response, query)) =>
            {
                // hickory found the answer's denial-of-existence proof not Secure
                // and kept the response. Where it misjudges a one-label wildcard
                // answer, the proof is complete and the answer is Secure; otherwise
                // only a CD client gets it, as the zone gave it: it validates itself.
                let authentic = self.validating && one_label_wildcard_proven(&response, query);
                let msg = response.into_message();
                let mut answer = Answer {
                    rcode: msg.metadata.response_code,
                    answers: msg.answers,
                    authorities: msg.authorities,
                    authentic,
                };
                answer.sort_chain(query.name());
                Ok(answer)
            }
            Err(e) => negative(e, self.validating, checking_disabled),
        }
    }

    /// `query` answered by following its CNAME chain one name at a time (each
    /// link asked as a CNAME question, so validated as one), then asking the last
    /// name: the chain, then that answer. `None` when `query`'s name has no CNAME.
    async fn chain(
        &self,
        query: &Query,
        dnssec_ok: bool,
        checking_disabled: bool,
    ) -> Option<Result<Answer, ResolveError>> {
        /// Longest chain followed (unbound's limit is 8 too).
        const MAX_LINKS: usize = 8;
        let mut links = Vec::new();
        let mut name = query.name().clone();
        for _ in 0..MAX_LINKS {
            let link = Query::query(name.clone(), RecordType::CNAME);
            let Ok(msg) = self.recursor.resolve(link, Instant::now(), dnssec_ok).await else {
                break;
            };
            let target = msg.answers.iter().find_map(|r| match &r.data {
                RData::CNAME(c) if r.name == name => Some(c.0.clone()),
                _ => None,
            });
            let Some(target) = target else { break };
            links.extend(msg.answers.into_iter().filter(|r| r.name == name));
            name = target;
        }
        if links.is_empty() {
            return None;
        }
        let data = || {
            links
                .iter()
                .filter(|r| r.record_type() != RecordType::RRSIG)
        };
        if self.validating && !checking_disabled && data().any(|r| r.proof == Proof::Bogus) {
            return Some(Err(ResolveError::Bogus));
        }
        let secure = self.validating && data().all(|r| r.proof == Proof::Secure);
        let last = Query::query(name, query.query_type());
        let result = self
            .recursor
            .resolve(last.clone(), Instant::now(), dnssec_ok)
            .await;
        Some(self.map(result, &last, checking_disabled).map(|end| {
            let mut answer = Answer {
                rcode: end.rcode,
                authentic: secure && end.authentic,
                answers: links,
                authorities: end.authorities,
            };
            answer.answers.extend(end.answers);
            answer
        }))
    }
}

/// The proof `r` counts with in `answers`. A CNAME synthesized from a Secure
/// DNAME of the same answer counts as Secure: it carries no signature of its own
/// (RFC 6672 §5.3.1: the validator checks the DNAME and the synthesis), and
/// hickory's validator marks it Bogus.
fn proof_of(r: &Record, answers: &[Record]) -> Proof {
    let RData::CNAME(cname) = &r.data else {
        return r.proof;
    };
    if r.proof == Proof::Secure {
        return r.proof;
    }
    let synthesized = answers.iter().any(|d| {
        d.proof == Proof::Secure
            && dname_target(d).is_some_and(|to| synthesizes(&d.name, &to, &r.name, &cname.0))
    });
    if synthesized { Proof::Secure } else { r.proof }
}

/// True when `msg` answers `query` from a wildcard one label above the name
/// (`x.wild.example` from `*.wild.example`) with a complete proof: every answer
/// record validated, the signature's label count says the wildcard is the name's
/// parent's, and a validated NSEC covers the name, so neither the name nor any
/// closer one exists (RFC 4035 §5.3.4). hickory 0.26 looks for an NSEC covering the
/// wildcard's own name instead, which for a one-label expansion is the wildcard's
/// NSEC itself, and calls such answers bogus.
fn one_label_wildcard_proven(msg: &Message, query: &Query) -> bool {
    let qname = query.name();
    if msg.metadata.response_code != ResponseCode::NoError {
        return false;
    }
    let mut data = msg
        .answers
        .iter()
        .filter(|r| r.record_type() != RecordType::RRSIG)
        .peekable();
    if data.peek().is_none() || !data.all(|r| r.proof == Proof::Secure) {
        return false;
    }
    let expanded_once = msg.answers.iter().any(|r| {
        r.name == *qname
            && r.proof == Proof::Secure
            && matches!(&r.data, RData::DNSSEC(DNSSECRData::RRSIG(sig))
                if usize::from(sig.input().num_labels) + 1 == usize::from(qname.num_labels()))
    });
    expanded_once
        && msg.authorities.iter().any(|r| {
            r.proof == Proof::Secure
                && matches!(&r.data, RData::DNSSEC(DNSSECRData::NSEC(nsec))
                    if covers(&r.name, nsec.next_domain_name(), qname))
        })
}

/// True when the NSEC `owner` → `next` covers `name`: it lies strictly between them
/// in canonical order (RFC 4034 §6.1; hickory's `Name` order), or after the zone's
/// last name, whose NSEC points back to the apex.
fn covers(owner: &Name, next: &Name, name: &Name) -> bool {
    if owner < next {
        owner < name && name < next
    } else {
        owner < name && next.zone_of(name)
    }
}

/// The target of a DNAME record: hickory keeps DNAME as unknown data, which is
/// the target name uncompressed (RFC 6672 §2.5).
fn dname_target(r: &Record) -> Option<Name> {
    match &r.data {
        RData::Unknown {
            code: RecordType::DNAME,
            rdata,
        } => Name::from_bytes(&rdata.anything).ok(),
        _ => None,
    }
}

/// True when the DNAME `from` → `to` maps `owner` to `target` (the owner's
/// labels below `from`, then `to`).
fn synthesizes(from: &Name, to: &Name, owner: &Name, target: &Name) -> bool {
    if owner.num_labels() <= from.num_labels() || !from.zone_of(owner) {
        return false;
    }
    let below = usize::from(owner.num_labels() - from.num_labels());
    let want = owner.iter().take(below).chain(to.iter());
    want.map(<[u8]>::to_ascii_lowercase)
        .eq(target.iter().map(<[u8]>::to_ascii_lowercase))
}

/// True when `e` is a negative answer (or a rejected one) for a name other than
/// `qname`: the recursor followed a CNAME to it.
fn negative_for_another_name(e: &RecursorError, qname: &Name) -> bool {
    let name = match e {
        RecursorError::Negative(data) => data.query.name(),
        RecursorError::Net(NetError::Dns(DnsError::NoRecordsFound(nr))) => nr.query.name(),
        RecursorError::Net(NetError::Dns(DnsError::Nsec { response, .. })) => {
            match response.queries.first() {
                Some(q) => q.name(),
                None => return false,
            }
        }
        _ => return false,
    };
    name != qname
}

/// A negative recursor result as an answer: AD when its SOA validated Secure,
/// SERVFAIL when Bogus (unless the client set CD).
fn negative(
    e: RecursorError,
    validating: bool,
    checking_disabled: bool,
) -> Result<Answer, ResolveError> {
    // NXDOMAIN is also "no records found": check it first.
    let rcode = if e.is_nx_domain() {
        ResponseCode::NXDomain
    } else if e.is_no_records_found() {
        ResponseCode::NoError
    } else {
        return Err(ResolveError::Upstream(e.to_string()));
    };
    // The authority section as the zone gave it: the SOA, and for a signed zone
    // the NSEC/NSEC3 proof and the RRSIGs a DO client gets (stripped for others).
    let authorities = match &e {
        RecursorError::Negative(data) => data.authorities.clone(),
        RecursorError::Net(NetError::Dns(DnsError::NoRecordsFound(nr))) => nr.authorities.clone(),
        _ => None,
    };
    let mut answer = Answer::empty(rcode);
    if let Some(soa) = e.into_soa() {
        if validating && !checking_disabled && soa.proof == Proof::Bogus {
            return Err(ResolveError::Bogus);
        }
        answer.authentic = validating && soa.proof == Proof::Secure;
        answer.authorities.push(soa.into_record_of_rdata());
        let proof = authorities.iter().flat_map(|a| a.iter());
        answer.authorities.extend(
            proof
                .filter(|r| r.record_type() != RecordType::SOA)
                .cloned(),
        );
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn an_nsec_covers_the_names_strictly_between_its_owner_and_next() {
        let (wild, z) = (n("*.wild.alpha.test."), n("z.wild.alpha.test."));
        assert!(covers(&wild, &z, &n("x.wild.alpha.test.")));
        assert!(!covers(&wild, &z, &wild), "its own owner is not covered");
        assert!(!covers(&wild, &z, &z));
        assert!(!covers(&wild, &z, &n("x.other.alpha.test.")));
        // The zone's last NSEC points back to the apex.
        let apex = n("alpha.test.");
        assert!(covers(&z, &apex, &n("zz.wild.alpha.test.")));
        assert!(!covers(&z, &apex, &n("a.alpha.test.")));
        assert!(!covers(&z, &apex, &n("zz.beta.test.")));
    }

    #[test]
    fn a_cname_counts_as_synthesized_only_when_it_follows_the_dname() {
        let (from, to) = (n("dname.alpha.test."), n("beta.test."));
        assert!(synthesizes(
            &from,
            &to,
            &n("x.dname.alpha.test."),
            &n("x.beta.test.")
        ));
        assert!(synthesizes(
            &from,
            &to,
            &n("A.b.DNAME.alpha.test."),
            &n("a.B.beta.test.")
        ));
        // Another target, the DNAME's own name, a name outside it.
        assert!(!synthesizes(
            &from,
            &to,
            &n("x.dname.alpha.test."),
            &n("y.beta.test.")
        ));
        assert!(!synthesizes(
            &from,
            &to,
            &n("x.dname.alpha.test."),
            &n("x.evil.test.")
        ));
        assert!(!synthesizes(&from, &to, &from, &to));
        assert!(!synthesizes(
            &from,
            &to,
            &n("x.other.alpha.test."),
            &n("x.beta.test.")
        ));
    }
}
