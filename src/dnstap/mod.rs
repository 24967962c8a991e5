//! dnstap output (`[dnstap]`): every answered query as a CLIENT_QUERY and a
//! CLIENT_RESPONSE message, with dnsguard's verdict in dnstap's `Policy` and the
//! tunnel detector's findings in `extra`, sent over Frame Streams to a collector
//! on a Unix socket or TCP.
//!
//! With `log_upstream = true`, each query forwarded to an upstream and its answer
//! go out too, as FORWARDER_QUERY and FORWARDER_RESPONSE.
//!
//! Off the DNS path except `Dnstap::observe` (called by the pipeline's record
//! step): it claims a free slot of a bounded ring, copies the query's and the
//! reply's wire bytes into the slot's own buffer (no allocation once warm) with
//! the verdict's few fixed fields and the query log's shared texts, and publishes it — one atomic operation
//! each ([`queue`]). A writer thread encodes batches straight from the slots
//! into one reused buffer ([`encode`]) and writes each batch at once; a collector that is down, slow or speaks garbage
//! only costs events (counted in `dnsguard_dnstap_dropped_total`), never a
//! client's answer. The writer reconnects with back-off.

mod encode;
mod fstrm;
mod proto;
mod queue;
mod writer;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use serde::Deserialize;

pub use fstrm::{CONTENT_TYPE, FstrmError};
pub use proto::{
    Dnstap as DnstapMessage, Message, MessageType, Policy as PolicyMessage, PolicyAction,
    PolicyMatch, SocketFamily, SocketProtocol,
};

use crate::detect::Score;
use crate::filter::BlockMode;
use crate::querylog::Entry;

/// `[dnstap]`: off unless `target` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnstapConfig {
    /// `"unix:PATH"` or `"tcp:HOST:PORT"`.
    pub target: Option<Target>,
    /// The identity in every message (default: the host name).
    pub identity: Option<String>,
    /// The version in every message (default: `dnsguard <version>`).
    pub version: Option<String>,
    /// Queries waiting for the writer at most; more are dropped (and counted).
    /// At most [`MAX_QUEUE`] (the slots are made at start).
    pub queue: usize,
    /// Also each query sent to a forwarding upstream and its answer
    /// (FORWARDER_QUERY, FORWARDER_RESPONSE).
    pub log_upstream: bool,
}

impl Default for DnstapConfig {
    fn default() -> Self {
        Self {
            target: None,
            identity: None,
            version: None,
            queue: 4096,
            log_upstream: false,
        }
    }
}

/// The largest `queue`: at 5 ms between the writer's looks, room for 13 M
/// queries a second, in about 10 MB of slots.
pub const MAX_QUEUE: usize = 65_536;

/// Where the collector listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Target {
    /// A Unix stream socket.
    Unix(PathBuf),
    /// `host:port` over TCP.
    Tcp(String),
}

impl TryFrom<String> for Target {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:").filter(|p| !p.is_empty()) {
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            let port = addr.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
            if let Some((host, Ok(port))) = port
                && !host.is_empty()
                && port != 0
            {
                return Ok(Target::Tcp(addr.to_owned()));
            }
        }
        Err(format!(
            "dnstap target {s:?}: expected \"unix:PATH\" or \"tcp:HOST:PORT\""
        ))
    }
}

/// How a query reached dnsguard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// Plain UDP.
    #[default]
    Udp,
    /// Plain TCP.
    Tcp,
    /// DNS over TLS.
    Tls,
    /// DNS over HTTPS (or plain HTTP behind a reverse proxy).
    Doh,
    /// DNS over QUIC.
    Doq,
}

/// What a front end knows about the exchange besides the query log's view: the
/// transport, the client's port and, where they are at hand, the messages'
/// wire forms (empty when not).
#[derive(Debug, Clone, Copy, Default)]
pub struct Via<'a> {
    /// UDP, TCP, DoT, DoH or DoQ.
    pub transport: Transport,
    /// The client's port.
    pub port: u16,
    /// The query as received.
    pub query: &'a [u8],
    /// The reply as sent.
    pub response: &'a [u8],
}

/// Whose exchange an [`Event`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A client's query and dnsguard's answer (CLIENT_QUERY, CLIENT_RESPONSE).
    #[default]
    Client,
    /// dnsguard's query to an upstream and its answer (FORWARDER_QUERY,
    /// FORWARDER_RESPONSE).
    Forwarder,
}

/// One exchange, as the writer thread needs it: fixed fields, the texts as
/// the query log's shared strings, and the wire forms back to back in `wire`.
/// Events are the slots of the [`queue`]'s ring: filled and written in place,
/// their buffer keeps its capacity, so filling one allocates nothing.
pub(crate) struct Event {
    /// Client or upstream exchange.
    pub kind: Kind,
    /// The client's address (client events), or the upstream's.
    pub peer: IpAddr,
    /// The peer's port (0: unknown).
    pub port: u16,
    /// How the messages travelled.
    pub transport: Transport,
    /// When the query arrived (or was sent), unix microseconds.
    pub query_us: u64,
    /// When the answer was sent (or arrived), unix microseconds.
    pub response_us: u64,
    /// The policy that applied, if any.
    pub verdict: Option<Verdict>,
    /// The tunnel detector's findings, when they matter.
    pub tunnel: Option<Score>,
    /// The query name (only when a policy or the detector's reasons show it),
    /// the list and the rule of the policy: the query log entry's own strings,
    /// shared rather than copied (the writer lets go of them).
    pub texts: Option<Texts>,
    /// The query's wire form, then the response's; `query_len` says where the
    /// first ends.
    wire: Vec<u8>,
    query_len: usize,
}

/// The texts of a client event's policy and `extra`.
#[derive(Clone)]
pub(crate) struct Texts {
    /// The query name.
    pub name: Arc<str>,
    /// The list of the rule that matched (empty: none).
    pub list: Arc<str>,
    /// The rule (e.g. `line 9`; empty: none).
    pub rule: Arc<str>,
}

impl Default for Event {
    fn default() -> Self {
        Self {
            kind: Kind::Client,
            peer: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            port: 0,
            transport: Transport::Udp,
            query_us: 0,
            response_us: 0,
            verdict: None,
            tunnel: None,
            texts: None,
            wire: Vec::new(),
            query_len: 0,
        }
    }
}

impl Event {
    /// Replaces the wire forms with `query` and `response`: one capacity
    /// check and a copy of each.
    fn fill(&mut self, query: &[u8], response: &[u8]) {
        self.wire.clear();
        self.wire.reserve(query.len() + response.len());
        self.wire.extend_from_slice(query);
        self.wire.extend_from_slice(response);
        self.query_len = query.len();
    }

    /// The query, wire format (empty when not at hand).
    pub fn query(&self) -> &[u8] {
        &self.wire[..self.query_len]
    }

    /// The response, wire format (empty when not at hand).
    pub fn response(&self) -> &[u8] {
        &self.wire[self.query_len..]
    }

    /// The query name as text, when the event carries it.
    pub fn name(&self) -> &str {
        self.texts.as_ref().map_or("", |t| &t.name)
    }
}

/// Why dnsguard answered a query as it did, as far as dnstap's policy message
/// says: the pipeline's record step gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The client is outside `allow_clients`.
    Refused,
    /// Refused by the group's tunnel action.
    Tunnel,
    /// Blocked: a public name answered with this private address.
    Rebinding(IpAddr),
    /// Blocked by a list or group entry.
    Blocked {
        /// The query name matched (before resolution); else a CNAME target or an
        /// answer address did.
        qname: bool,
        /// The block of a default-deny group (nothing allowed the name).
        allowlist_only: bool,
    },
    /// Resolved because an allow entry matched the name.
    Allowlisted,
    /// Nothing a policy message reports.
    Answered,
}

/// dnsguard's verdict in dnstap's terms (the rule's list and line travel in the
/// event's buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The policy's type (`blocklist`, `rebinding`, …).
    pub kind: &'static str,
    /// What was done.
    pub action: PolicyAction,
    /// What matched.
    pub matched: Option<PolicyMatch>,
    /// The matched address (a rebinding block's, a refused client's).
    pub address: Option<IpAddr>,
}

/// The running dnstap output.
pub struct Dnstap {
    queue: queue::Queue,
    dropped: metrics::Counter,
    stop: Arc<AtomicBool>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The output that also gets upstream exchanges (`log_upstream = true`): the
/// forwarder reaches it here rather than through every resolver's constructor.
static UPSTREAM: OnceLock<Arc<Dnstap>> = OnceLock::new();

impl Dnstap {
    /// Starts the writer thread when `[dnstap] target` is set.
    pub fn start(cfg: &DnstapConfig) -> std::io::Result<Option<Arc<Dnstap>>> {
        let Some(target) = cfg.target.clone() else {
            return Ok(None);
        };
        let identity = cfg.identity.clone().unwrap_or_else(hostname);
        let version = cfg
            .version
            .clone()
            .unwrap_or_else(|| format!("dnsguard {}", env!("CARGO_PKG_VERSION")));
        if cfg.queue > MAX_QUEUE {
            tracing::warn!(
                queue = cfg.queue,
                max = MAX_QUEUE,
                "dnstap: queue larger than the most it can be; using the most"
            );
        }
        let (queue, drain) = queue::queue(cfg.queue.min(MAX_QUEUE));
        let dropped = metrics::counter!("dnsguard_dnstap_dropped_total");
        dropped.increment(0);
        let stop = Arc::new(AtomicBool::new(false));
        let w = writer::Writer {
            target,
            encoder: encode::Encoder::new(identity.as_bytes(), version.as_bytes()),
            dropped: dropped.clone(),
            stop: stop.clone(),
        };
        let thread = crate::channel::spawn_background("dnstap", move || w.run(drain))?;
        let tap = Arc::new(Dnstap {
            queue,
            dropped,
            stop,
            thread: parking_lot::Mutex::new(Some(thread)),
        });
        if cfg.log_upstream && UPSTREAM.set(tap.clone()).is_err() {
            tracing::warn!("dnstap: upstream exchanges already go to another output");
        }
        Ok(Some(tap))
    }

    /// The output that records upstream exchanges, when `log_upstream` is on.
    pub fn upstream() -> Option<&'static Dnstap> {
        UPSTREAM.get().map(|t| &**t)
    }

    /// Hands one recorded query to the writer; never waits, never allocates once
    /// the queue's slots exist (a full queue drops the event and counts it).
    /// `why` and the group's block `mode` make its policy message; `tunnel` a
    /// flagged or refused query's score.
    pub fn observe(
        &self,
        e: &Entry,
        now_ms: u64,
        via: &Via<'_>,
        why: Why,
        tunnel: Option<Score>,
        mode: Option<&BlockMode>,
    ) {
        let Some(mut ev) = self.queue.slot() else {
            self.dropped.increment(1);
            return;
        };
        let verdict = verdict(e, why, mode);
        let query_us = now_ms.saturating_mul(1000);
        ev.kind = Kind::Client;
        ev.peer = e.client;
        ev.port = via.port;
        ev.transport = via.transport;
        ev.query_us = query_us;
        ev.response_us = query_us.saturating_add(u64::from(e.latency_us));
        ev.verdict = verdict;
        ev.tunnel = tunnel;
        // The texts only when a policy (name, list, rule) or the detector's
        // reasons (name) show them: three reference counts, no copy.
        ev.texts = (verdict.is_some() || tunnel.is_some()).then(|| Texts {
            name: e.name.clone(),
            list: e.list.clone(),
            rule: e.rule.clone(),
        });
        ev.fill(via.query, via.response);
    }

    /// Hands one exchange with a forwarding upstream at `server` to the writer
    /// (FORWARDER_QUERY and FORWARDER_RESPONSE); never waits. `sent` is when
    /// the query left; the answer is taken to have arrived now.
    pub fn forwarded(
        &self,
        server: SocketAddr,
        transport: Transport,
        sent: Instant,
        query: &[u8],
        response: &[u8],
    ) {
        let Some(mut ev) = self.queue.slot() else {
            self.dropped.increment(1);
            return;
        };
        ev.kind = Kind::Forwarder;
        ev.peer = server.ip();
        ev.port = server.port();
        ev.transport = transport;
        let now = SystemTime::now();
        ev.query_us = unix_us(now.checked_sub(sent.elapsed()).unwrap_or(now));
        ev.response_us = unix_us(now);
        ev.verdict = None;
        ev.tunnel = None;
        ev.texts = None;
        ev.fill(query, response);
    }

    /// Sends what is queued, ends the stream (STOP, FINISH) and stops the writer.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// The verdict of one query as a dnstap policy, when one applied.
fn verdict(e: &Entry, why: Why, mode: Option<&BlockMode>) -> Option<Verdict> {
    let by_mode = match mode {
        Some(BlockMode::NxDomain) => PolicyAction::Nxdomain,
        Some(BlockMode::NoData) => PolicyAction::Nodata,
        Some(BlockMode::Refused) => PolicyAction::Drop,
        _ => PolicyAction::LocalData,
    };
    let v = |kind, action, matched, address| {
        Some(Verdict {
            kind,
            action,
            matched,
            address,
        })
    };
    match why {
        // Outside `allow_clients`: answered REFUSED, which dnstap has no action for.
        Why::Refused => v(
            "access",
            PolicyAction::Drop,
            Some(PolicyMatch::ClientIp),
            Some(e.client),
        ),
        Why::Tunnel => v("tunnel", PolicyAction::Drop, Some(PolicyMatch::Qname), None),
        Why::Rebinding(ip) => v(
            "rebinding",
            by_mode,
            Some(PolicyMatch::ResponseIp),
            Some(ip),
        ),
        Why::Blocked {
            qname,
            allowlist_only,
        } => {
            let kind = if allowlist_only {
                "allowlist-only"
            } else {
                "blocklist"
            };
            // After resolution a CNAME target or an answer address matched, and
            // the verdict does not say which.
            v(kind, by_mode, qname.then_some(PolicyMatch::Qname), None)
        }
        Why::Allowlisted => v(
            "allowlist",
            PolicyAction::Pass,
            Some(PolicyMatch::Qname),
            None,
        ),
        Why::Answered => None,
    }
}

/// `t` in microseconds since the epoch (0 before it).
fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "dnsguard".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_or_say_why_not() {
        let t = |s: &str| Target::try_from(s.to_owned());
        assert_eq!(
            t("unix:/run/tap.sock"),
            Ok(Target::Unix("/run/tap.sock".into()))
        );
        assert_eq!(
            t("tcp:127.0.0.1:6000"),
            Ok(Target::Tcp("127.0.0.1:6000".into()))
        );
        assert_eq!(t("tcp:[::1]:6000"), Ok(Target::Tcp("[::1]:6000".into())));
        for bad in [
            "", "unix:", "tcp:host", "tcp::53", "tcp:h:0", "udp:h:1", "/run/x",
        ] {
            let err = t(bad).unwrap_err();
            assert!(err.contains("unix:PATH"), "{bad}: {err}");
        }
    }

    /// The policy of one recorded query, as `observe` derives it.
    fn policy_of(why: Why, mode: BlockMode) -> Option<Verdict> {
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let mut e = Entry::new(1, client, Arc::from("x.test"), 1);
        e.list = Arc::from("mine");
        e.rule = Arc::from("line 9");
        verdict(&e, why, Some(&mode))
    }

    #[test]
    fn verdicts_map_to_dnstap_policies() {
        // Refused client: CLIENT_IP, its address, DROP (REFUSED).
        let p = policy_of(Why::Refused, BlockMode::Null).unwrap();
        assert_eq!((p.kind, p.action), ("access", PolicyAction::Drop));
        assert_eq!(p.matched, Some(PolicyMatch::ClientIp));
        assert_eq!(p.address, Some("192.0.2.7".parse().unwrap()));
        // Block modes.
        let by_name = Why::Blocked {
            qname: true,
            allowlist_only: false,
        };
        for (mode, action) in [
            (BlockMode::NoData, PolicyAction::Nodata),
            (BlockMode::NxDomain, PolicyAction::Nxdomain),
            (BlockMode::Refused, PolicyAction::Drop),
            (BlockMode::Null, PolicyAction::LocalData),
        ] {
            let p = policy_of(by_name, mode).unwrap();
            assert_eq!(
                (p.kind, p.action, p.matched),
                ("blocklist", action, Some(PolicyMatch::Qname))
            );
        }
        let p = policy_of(
            Why::Blocked {
                qname: true,
                allowlist_only: true,
            },
            BlockMode::Null,
        );
        assert_eq!(p.unwrap().kind, "allowlist-only");
        // Blocked after resolution (CNAME target or answer rule): which one is not known.
        let by_answer = Why::Blocked {
            qname: false,
            allowlist_only: false,
        };
        assert_eq!(policy_of(by_answer, BlockMode::Null).unwrap().matched, None);
        // Rebinding: the private address answered.
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let p = policy_of(Why::Rebinding(ip), BlockMode::NxDomain).unwrap();
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
        let p = policy_of(Why::Tunnel, BlockMode::Null).unwrap();
        assert_eq!((p.kind, p.action), ("tunnel", PolicyAction::Drop));
        let p = policy_of(Why::Allowlisted, BlockMode::Null).unwrap();
        assert_eq!((p.kind, p.action), ("allowlist", PolicyAction::Pass));
        // Plain answers: no policy.
        assert!(policy_of(Why::Answered, BlockMode::Null).is_none());
    }
}
