//! The DNS service: listeners, the hickory request handler, and the query
//! [`pipeline`] every front end runs a question through.
//!
//! hickory-server's types stay in this module (and `resolve/`), so the rest of the
//! code works with plain names, addresses and verdicts.

pub mod block;
pub mod cert;
pub mod ede;
pub mod handler;
pub mod https;
pub mod latency;
mod mmsg;
pub mod pipeline;
pub mod quic;
pub mod ratelimit;
pub mod server;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod wire;

use std::net::SocketAddr;

use hickory_proto::op::Query;
use hickory_proto::rr::{LowerName, Name, RecordType};

/// One question from one client, as the pipeline sees it.
#[derive(Debug, Clone)]
pub struct Question {
    /// Who asked.
    pub client: SocketAddr,
    /// The query as received (case preserved, for the answer's question section).
    pub query: Query,
    /// The query name, lower-cased, for lookups.
    pub name: LowerName,
    /// The DO bit: the client wants DNSSEC records.
    pub dnssec_ok: bool,
    /// The CD bit: the client does its own validation; give it bogus data too.
    pub checking_disabled: bool,
    /// UDP, TCP, DNS over TLS, HTTPS or QUIC (for dnstap).
    pub transport: crate::dnstap::Transport,
    /// What the client said about who it is (DoH path, `Authorization`); `None`
    /// where the transport carries nothing of the kind.
    pub presented: Option<Box<Presented>>,
}

/// What a client presented about who it is, before any check: the encrypted front
/// ends fill it, the identity step decides what it is worth.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presented {
    /// The ClientID: the DoH path's `/dns-query/<id>`, or the first label of the TLS
    /// server name (`<id>.dns.example.net`) for DoT and DoQ.
    pub client_id: Option<Box<str>>,
    /// A per-client secret: the DoH path's `/dns-query/<id>/<secret>` or an
    /// `Authorization: Bearer <secret>` header.
    pub secret: Option<Box<str>>,
}

impl Question {
    /// The query type.
    pub fn qtype(&self) -> RecordType {
        self.query.query_type()
    }

    /// The query name as [`name_text`] gives it.
    pub fn name_text(&self) -> String {
        name_text(&self.name)
    }
}

/// A name in the form the filter, detector and query log use: ASCII, lower case,
/// no trailing dot (the root is the empty string), odd bytes escaped as `\DDD`.
pub fn name_text(name: &Name) -> String {
    let mut s = name.to_ascii();
    s.make_ascii_lowercase();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// True when `name` is `zone` or below it (both name text, as [`name_text`] gives).
pub fn is_under(name: &str, zone: &str) -> bool {
    name == zone
        || (name.len() > zone.len()
            && name.ends_with(zone)
            && name.as_bytes()[name.len() - zone.len() - 1] == b'.')
}

/// Parses a domain name from config or a list, making it fully qualified.
pub fn parse_name(s: &str) -> Result<Name, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty name".into());
    }
    let mut name = Name::from_utf8(s).map_err(|e| format!("{s:?} is not a domain name: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

/// Parses a query type name (`A`, `aaaa`, `HTTPS`, `TYPE65`) into its number.
pub fn parse_qtype(s: &str) -> anyhow::Result<u16> {
    let upper = s.to_ascii_uppercase();
    if let Some(n) = upper.strip_prefix("TYPE")
        && let Ok(n) = n.parse::<u16>()
    {
        return Ok(n);
    }
    upper
        .parse::<RecordType>()
        .map(u16::from)
        .map_err(|_| anyhow::anyhow!("unknown query type {s:?}"))
}
