//! The answer given for a blocked name, per the client group's block mode.
//!
//! Null mode answers A with 0.0.0.0 and AAAA with `::` (what Pi-hole and AdGuard
//! Home do by default: the client fails fast without retrying elsewhere); every other
//! type, HTTPS/SVCB included, gets NODATA so browsers fall back to the (null) address
//! records. Negative answers carry a synthetic SOA whose minimum is the block TTL, so
//! clients cache them for that long (RFC 2308).

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::filter::BlockMode;
use crate::resolve::Answer;

/// The block answer for one query type, before it is encoded: the one table both
/// encoders (hickory's, via [`Plan::answer`], and the in-place writer in
/// `wire.rs`) read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// No records, the synthetic SOA in the authority section; NXDOMAIN or NODATA.
    Negative {
        /// NXDOMAIN rather than NOERROR.
        nxdomain: bool,
        /// TTL and SOA minimum.
        ttl: u32,
    },
    /// REFUSED, nothing else.
    Refused,
    /// These addresses (at least one), owned by the query name.
    Addresses {
        /// The A record, if any.
        v4: Option<Ipv4Addr>,
        /// The AAAA record, if any.
        v6: Option<Ipv6Addr>,
        /// Their TTL.
        ttl: u32,
    },
}

/// What a group blocking in `mode` with `ttl` answers to a query of `qtype`.
pub fn plan(mode: &BlockMode, ttl: u32, qtype: u16) -> Plan {
    let (v4, v6) = match mode {
        BlockMode::NxDomain => {
            return Plan::Negative {
                nxdomain: true,
                ttl,
            };
        }
        BlockMode::NoData => {
            return Plan::Negative {
                nxdomain: false,
                ttl,
            };
        }
        BlockMode::Refused => return Plan::Refused,
        BlockMode::Null => (Some(Ipv4Addr::UNSPECIFIED), Some(Ipv6Addr::UNSPECIFIED)),
        BlockMode::Custom { v4, v6 } => (*v4, *v6),
    };
    let (v4, v6) = match RecordType::from(qtype) {
        RecordType::A => (v4, None),
        RecordType::AAAA => (None, v6),
        RecordType::ANY => (v4, v6),
        _ => (None, None),
    };
    if v4.is_none() && v6.is_none() {
        return Plan::Negative {
            nxdomain: false,
            ttl,
        };
    }
    Plan::Addresses { v4, v6, ttl }
}

impl Plan {
    /// The response code.
    pub fn rcode(&self) -> ResponseCode {
        match self {
            Plan::Negative { nxdomain: true, .. } => ResponseCode::NXDomain,
            Plan::Refused => ResponseCode::Refused,
            _ => ResponseCode::NoError,
        }
    }

    /// The answer as hickory records, owned by `qname`.
    pub fn answer(&self, qname: &Name) -> Answer {
        let mut answer = Answer::empty(self.rcode());
        match *self {
            Plan::Negative { ttl, .. } => answer.authorities.push(synthetic_soa(qname, ttl)),
            Plan::Refused => {}
            Plan::Addresses { v4, v6, ttl } => {
                let a = v4.map(|ip| Record::from_rdata(qname.clone(), ttl, RData::A(A(ip))));
                let aaaa =
                    v6.map(|ip| Record::from_rdata(qname.clone(), ttl, RData::AAAA(AAAA(ip))));
                answer.answers.extend(a.into_iter().chain(aaaa));
            }
        }
        answer
    }
}

/// An SOA for negative block answers; its owner is the blocked name so no real zone
/// is claimed.
fn synthetic_soa(qname: &Name, ttl: u32) -> Record {
    let mname = Name::from_ascii("blocked.dnsguard.").unwrap_or_else(|_| Name::root());
    let rname = Name::from_ascii("hostmaster.dnsguard.").unwrap_or_else(|_| Name::root());
    let ttl_i32 = i32::try_from(ttl).unwrap_or(i32::MAX);
    let soa = SOA::new(mname, rname, 1, ttl_i32, ttl_i32, ttl_i32, ttl);
    Record::from_rdata(qname.clone(), ttl, RData::SOA(soa))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked_answer(mode: &BlockMode, ttl: u32, qname: &Name, qtype: RecordType) -> Answer {
        plan(mode, ttl, u16::from(qtype)).answer(qname)
    }

    fn name() -> Name {
        Name::from_ascii("ads.example.").unwrap()
    }

    #[test]
    fn null_mode_answers_per_type() {
        let a = blocked_answer(&BlockMode::Null, 60, &name(), RecordType::A);
        assert_eq!(a.answers[0].data, RData::A(A(Ipv4Addr::UNSPECIFIED)));
        assert_eq!(a.answers[0].ttl, 60);
        let a = blocked_answer(&BlockMode::Null, 60, &name(), RecordType::AAAA);
        assert_eq!(a.answers[0].data, RData::AAAA(AAAA(Ipv6Addr::UNSPECIFIED)));
        let a = blocked_answer(&BlockMode::Null, 60, &name(), RecordType::ANY);
        assert_eq!(a.answers.len(), 2);
        for t in [
            RecordType::HTTPS,
            RecordType::SVCB,
            RecordType::MX,
            RecordType::TXT,
        ] {
            let a = blocked_answer(&BlockMode::Null, 60, &name(), t);
            assert_eq!(a.rcode, ResponseCode::NoError);
            assert!(a.answers.is_empty(), "{t}");
            assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
            assert_eq!(a.ttl(), Some(60));
        }
    }

    #[test]
    fn other_modes() {
        let a = blocked_answer(&BlockMode::NxDomain, 30, &name(), RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        assert_eq!(a.ttl(), Some(30));
        let a = blocked_answer(&BlockMode::NoData, 30, &name(), RecordType::A);
        assert_eq!((a.rcode, a.answers.len()), (ResponseCode::NoError, 0));
        let a = blocked_answer(&BlockMode::Refused, 30, &name(), RecordType::A);
        assert_eq!(a.rcode, ResponseCode::Refused);
        let custom = BlockMode::Custom {
            v4: Some(Ipv4Addr::new(192, 0, 2, 53)),
            v6: None,
        };
        let a = blocked_answer(&custom, 30, &name(), RecordType::A);
        assert_eq!(a.answers[0].data, RData::A(A(Ipv4Addr::new(192, 0, 2, 53))));
        let a = blocked_answer(&custom, 30, &name(), RecordType::AAAA);
        assert!(a.answers.is_empty(), "no IPv6 configured: NODATA");
    }
}
