//! The query-log record ([`Entry`]) and its small enums ([`Ruling`], [`Origin`]).
//!
//! String fields are `Arc<str>`: the DNS path allocates the query name once
//! (`Arc::from(name)`) and can clone shared values (rule text, list name,
//! upstream label, client group) without allocating. Decoding shares one
//! `Arc` per distinct string of a stored block.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::config::Privacy;
use crate::detect::Reasons;

/// Who asked, as the query log counts clients (top clients) and the guard
/// keeps them apart (learning, the report): a configured `[[clients]]` entry by
/// its name, however many addresses it asks from, else the source address.
/// Shown as the name, or the address (names never parse as addresses).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// No configured client: the address.
    Address(IpAddr),
    /// A `[[clients]]` name.
    Named(Arc<str>),
}

impl Client {
    /// The client of `e`.
    pub fn of(e: &Entry) -> Self {
        if e.client_name.is_empty() {
            Client::Address(e.client)
        } else {
            Client::Named(e.client_name.clone())
        }
    }

    /// [`Client`]'s text back: an address, else a name.
    pub fn parse(s: &str) -> Self {
        match s.parse() {
            Ok(ip) => Client::Address(ip),
            Err(_) => Client::Named(Arc::from(s)),
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::Address(ip) => write!(f, "{ip}"),
            Client::Named(name) => f.write_str(name),
        }
    }
}

/// The filtering decision taken for a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ruling {
    /// Resolved normally (no rule matched).
    Allowed,
    /// Blocked by a rule.
    Blocked,
    /// Matched a block rule but an allowlist rule won.
    Allowlisted,
}

impl Ruling {
    /// Lower-case name used in every output format.
    pub fn as_str(self) -> &'static str {
        match self {
            Ruling::Allowed => "allowed",
            Ruling::Blocked => "blocked",
            Ruling::Allowlisted => "allowlisted",
        }
    }
}

impl fmt::Display for Ruling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the answer came from.
///
/// Text form (table, CSV, JSON): `cache`, `local`, `stale`, `blocked`,
/// `refused`, `failed`, or `upstream:<label>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Forwarded to the upstream with this label.
    Upstream(Arc<str>),
    /// Answered from the cache.
    Cache,
    /// Answered from local data (hosts, local records).
    Local,
    /// Served stale from the cache (upstream unavailable).
    Stale,
    /// Synthesised block answer.
    Blocked,
    /// Refused (ACL, rate limit).
    Refused,
    /// Resolution failed (SERVFAIL produced locally).
    Failed,
}

impl Origin {
    pub(crate) fn kind(&self) -> u8 {
        match self {
            Origin::Upstream(_) => 0,
            Origin::Cache => 1,
            Origin::Local => 2,
            Origin::Stale => 3,
            Origin::Blocked => 4,
            Origin::Refused => 5,
            Origin::Failed => 6,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Upstream(l) => write!(f, "upstream:{l}"),
            Origin::Cache => f.write_str("cache"),
            Origin::Local => f.write_str("local"),
            Origin::Stale => f.write_str("stale"),
            Origin::Blocked => f.write_str("blocked"),
            Origin::Refused => f.write_str("refused"),
            Origin::Failed => f.write_str("failed"),
        }
    }
}

impl FromStr for Origin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "cache" => Origin::Cache,
            "local" => Origin::Local,
            "stale" => Origin::Stale,
            "blocked" => Origin::Blocked,
            "refused" => Origin::Refused,
            "failed" => Origin::Failed,
            _ => match s.strip_prefix("upstream:") {
                Some(l) => Origin::Upstream(Arc::from(l)),
                None => return Err(format!("unknown source {s:?}")),
            },
        })
    }
}

impl Serialize for Origin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One logged query. Built by the DNS path and handed to
/// [`QueryLog::record`](super::QueryLog::record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When the query arrived, unix milliseconds.
    pub time_ms: u64,
    /// Client address.
    pub client: IpAddr,
    /// Query name (no trailing dot; as received).
    pub name: Arc<str>,
    /// Query type (1 = A, 28 = AAAA, ...).
    pub qtype: u16,
    /// Filtering decision.
    pub verdict: Ruling,
    /// Set when tunnel detection flagged the query (independent of verdict).
    pub flagged: bool,
    /// Text of the matching rule (empty when none).
    pub rule: Arc<str>,
    /// Name of the list the rule came from (empty when none).
    pub list: Arc<str>,
    /// Response code sent (0 = NOERROR, 3 = NXDOMAIN, ...).
    pub rcode: u16,
    /// Short answer summary, e.g. `93.184.216.34,cdn.example.net` (may be empty).
    pub answer: Arc<str>,
    /// Where the answer came from.
    pub source: Origin,
    /// Time to answer, microseconds.
    pub latency_us: u32,
    /// Tunnel-detection score, 0 when not scored.
    pub tunnel_score: f32,
    /// Client group name (empty when none).
    pub group: Arc<str>,
    /// The client's `[[clients]]` name (empty when none): agents sharing an
    /// address are told apart by it.
    #[serde(default = "empty_str", skip_serializing_if = "str_is_empty")]
    pub client_name: Arc<str>,
    /// Why tunnel detection flagged (or blocked) the query. The DNS path
    /// stores these instead of text; an entry read back from the log also has
    /// their text in `rule` (`tunnel: ...`), which is what outputs show.
    /// JSON shows their confidence level as `level` (`low`, `medium`, `high`).
    #[serde(
        rename = "level",
        skip_deserializing,
        serialize_with = "level_of",
        skip_serializing_if = "no_level"
    )]
    pub tunnel: Option<Box<Reasons>>,
}

fn str_is_empty(s: &Arc<str>) -> bool {
    s.is_empty()
}

fn no_level(r: &Option<Box<Reasons>>) -> bool {
    r.as_ref().and_then(|r| r.level).is_none()
}

fn level_of<S: Serializer>(r: &Option<Box<Reasons>>, s: S) -> Result<S::Ok, S::Error> {
    match r.as_ref().and_then(|r| r.level) {
        Some(l) => s.serialize_str(l.as_str()),
        None => s.serialize_none(),
    }
}

/// A shared empty string; cloning it does not allocate.
pub fn empty_str() -> Arc<str> {
    static EMPTY: OnceLock<Arc<str>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

pub(crate) fn hidden_str() -> Arc<str> {
    static HIDDEN: OnceLock<Arc<str>> = OnceLock::new();
    HIDDEN.get_or_init(|| Arc::from("hidden")).clone()
}

/// Current time as unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Entry {
    /// An entry for an allowed query answered from the cache with every
    /// optional field empty; set the remaining fields directly.
    pub fn new(time_ms: u64, client: IpAddr, name: Arc<str>, qtype: u16) -> Entry {
        Entry {
            time_ms,
            client,
            name,
            qtype,
            verdict: Ruling::Allowed,
            flagged: false,
            rule: empty_str(),
            list: empty_str(),
            rcode: 0,
            answer: empty_str(),
            source: Origin::Cache,
            latency_us: 0,
            tunnel_score: 0.0,
            group: empty_str(),
            client_name: empty_str(),
            tunnel: None,
        }
    }
}

impl Default for Entry {
    fn default() -> Self {
        Entry::new(0, IpAddr::V4(Ipv4Addr::UNSPECIFIED), empty_str(), 1)
    }
}

/// Apply the privacy level to an entry before it is stored or written to
/// the WAL (idempotent).
pub(crate) fn privacy_apply(privacy: Privacy, e: &mut Entry) {
    match privacy {
        Privacy::HideNames => {
            e.name = hidden_str();
            e.rule = empty_str();
            e.tunnel = None;
            e.answer = empty_str();
        }
        Privacy::HideClients => {
            e.client_name = empty_str();
            e.client = match e.client {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            }
        }
        // No entry is stored, only anonymous counts: keep nothing
        // else (this is also what reaches the WAL).
        Privacy::Nothing => {
            e.name = hidden_str();
            e.rule = empty_str();
            e.tunnel = None;
            e.answer = empty_str();
            e.list = empty_str();
            e.group = empty_str();
            e.client_name = empty_str();
            e.client = match e.client {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            }
        }
        Privacy::Everything => {}
    }
}
