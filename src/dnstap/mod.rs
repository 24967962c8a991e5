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
//! the verdict's few fixed fields, and publishes it — one atomic operation
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

/// One exchange, as the writer thread needs it: fixed fields, and the texts and
/// wire forms back to back in `buf`. Events are the slots of the [`queue`]'s
/// ring: filled and written in place, their buffer keeps its capacity, so
/// filling one allocates nothing.
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
    /// The policy that applied, if any (its list and rule are in `buf`).
    pub verdict: Option<Verdict>,
    /// The tunnel detector's findings, when they matter.
    pub tunnel: Option<Score>,
    /// Query name, list, rule, query wire, response wire; `ends` says where
    /// each ends.
    buf: Vec<u8>,
    ends: [usize; Part::COUNT],
}

/// The pieces of an [`Event`]'s buffer.
#[derive(Clone, Copy)]
pub(crate) enum Part {
    /// The query name as text (only when a policy or the detector needs it).
    Name,
    /// The list of the rule that matched.
    List,
    /// The rule (e.g. `line 9`).
    Rule,
    /// The query, wire format.
    Query,
    /// The response, wire format.
    Response,
}

impl Part {
    const COUNT: usize = 5;
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
            buf: Vec::new(),
            ends: [0; Part::COUNT],
        }
    }
}

impl Event {
    /// Replaces the buffer's contents with `parts`, in [`Part`] order: one
    /// capacity check, and a copy for each part that is not empty.
    fn fill(&mut self, parts: [&[u8]; Part::COUNT]) {
        self.buf.clear();
        self.buf.reserve(parts.iter().map(|p| p.len()).sum());
        let mut end = 0;
        for (e, part) in self.ends.iter_mut().zip(parts) {
            if !part.is_empty() {
                self.buf.extend_from_slice(part);
            }
            end += part.len();
            *e = end;
        }
    }

    /// One piece of the buffer.
    pub fn part(&self, part: Part) -> &[u8] {
        let i = part as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
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
        // reasons (name) show them.
        let (name, list, rule): (&[u8], &[u8], &[u8]) = match (verdict, tunnel) {
            (None, None) => (b"", b"", b""),
            (None, Some(_)) => (e.name.as_bytes(), b"", b""),
            _ => (e.name.as_bytes(), e.list.as_bytes(), e.rule.as_bytes()),
        };
        ev.fill([name, list, rule, via.query, via.response]);
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
        ev.fill([b"", b"", b"", query, response]);
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
