//! The DNS front ends and the wire code: listeners, the per-core UDP path, TCP,
//! TLS, HTTPS and QUIC, the in-place answer path they share (`fast.rs`), the
//! hickory request handler, and the encoders of what [`crate::pipeline`] decides
//! (in place in `wire.rs`, hickory's in `handler.rs`).
//!
//! hickory-server's types stay in this module (and `pipeline/`, `resolve/`), so
//! the rest of the code works with plain names, addresses and verdicts.

mod config;
pub mod fast;
pub mod handler;
pub mod https;
mod mmsg;
pub mod quic;
pub mod server;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod wire;

use std::net::SocketAddr;

use hickory_proto::op::Query;
use hickory_proto::rr::{LowerName, RecordType};

use crate::name::name_text;

pub use config::{DEFAULT_LOG, ServerConfig};

/// One question from one client, as hickory's front end parsed it
/// ([`Question::asked`] is the pipeline's view of it).
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
    /// What the client presented about who it is: the DoH path or `Authorization`,
    /// the DoT server name; `None` where the transport carries nothing of the kind.
    pub presented: Option<Box<crate::identity::Presented>>,
}

impl Question {
    /// The query type.
    pub fn qtype(&self) -> RecordType {
        self.query.query_type()
    }

    /// The query name as [`crate::name::name_text`] gives it.
    pub fn name_text(&self) -> String {
        name_text(&self.name)
    }
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
