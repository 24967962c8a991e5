//! dnstap output (`[dnstap]`): every answered query as a CLIENT_QUERY and a
//! CLIENT_RESPONSE message, with dnsguard's verdict in dnstap's `Policy` and the
//! tunnel detector's findings in `extra`, sent over Frame Streams to a collector
//! on a Unix socket or TCP.
//!
//! Off the DNS path except `Dnstap::observe` (in `dns/tap.rs`, beside the pipeline
//! it reads): it copies what the query log entry already holds into an `Event`
//! and `try_send`s it into a bounded queue. A
//! writer thread encodes and writes; a collector that is down, slow or speaks
//! garbage only costs events (counted in `dnsguard_dnstap_dropped_total`), never
//! a client's answer. The writer reconnects with back-off.

mod fstrm;
mod proto;
mod writer;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

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
    pub queue: usize,
}

impl Default for DnstapConfig {
    fn default() -> Self {
        Self {
            target: None,
            identity: None,
            version: None,
            queue: 4096,
        }
    }
}

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

/// One answered query, as the writer thread needs it.
pub(crate) struct Event {
    /// The client's address.
    pub client: IpAddr,
    /// The client's port (0: unknown).
    pub port: u16,
    /// How the query came.
    pub transport: Transport,
    /// Arrival, unix milliseconds.
    pub now_ms: u64,
    /// Time to answer.
    pub latency_us: u32,
    /// The query name (name text).
    pub name: Arc<str>,
    /// The policy that applied, if any.
    pub policy: Option<PolicyFacts>,
    /// The tunnel detector's findings, when they matter.
    pub tunnel: Option<Score>,
    /// Query then response wire bytes, `query_len` splitting them.
    pub wire: Option<(Box<[u8]>, usize)>,
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

/// dnsguard's verdict in dnstap's terms.
pub(crate) struct PolicyFacts {
    /// The policy's type (`blocklist`, `rebinding`, …).
    pub kind: &'static str,
    /// The list whose rule matched.
    pub list: Arc<str>,
    /// The rule (e.g. `line 9`).
    pub rule: Arc<str>,
    /// What was done.
    pub action: PolicyAction,
    /// What matched.
    pub matched: Option<PolicyMatch>,
    /// The matched address (a rebinding block's).
    pub address: Option<IpAddr>,
}

/// The running dnstap output.
pub struct Dnstap {
    tx: SyncSender<Event>,
    dropped: metrics::Counter,
    stop: Arc<AtomicBool>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

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
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue.max(1));
        let dropped = metrics::counter!("dnsguard_dnstap_dropped_total");
        dropped.increment(0);
        let stop = Arc::new(AtomicBool::new(false));
        let w = writer::Writer {
            target,
            encoder: Encoder {
                identity: identity.into_bytes(),
                version: version.into_bytes(),
            },
            dropped: dropped.clone(),
            stop: stop.clone(),
        };
        let thread = crate::channel::spawn_background("dnstap", move || w.run(rx))?;
        Ok(Some(Arc::new(Dnstap {
            tx,
            dropped,
            stop,
            thread: parking_lot::Mutex::new(Some(thread)),
        })))
    }

    /// Hands one recorded query to the writer; never waits (a full queue drops
    /// the event and counts it). `why` and the group's block `mode` make its
    /// policy message; `tunnel` a flagged or refused query's score.
    pub fn observe(
        &self,
        e: &Entry,
        now_ms: u64,
        via: &Via<'_>,
        why: Why,
        tunnel: Option<Score>,
        mode: Option<&BlockMode>,
    ) {
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
            now_ms,
            latency_us: e.latency_us,
            name: e.name.clone(),
            policy: policy_facts(e, why, mode),
            tunnel,
            wire,
        };
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.increment(1),
        }
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
fn policy_facts(e: &Entry, why: Why, mode: Option<&BlockMode>) -> Option<PolicyFacts> {
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
    match why {
        // Outside `allow_clients`: answered REFUSED, which dnstap has no action for.
        Why::Refused => facts(
            "access",
            PolicyAction::Drop,
            Some(PolicyMatch::ClientIp),
            Some(e.client),
        ),
        Why::Tunnel => facts("tunnel", PolicyAction::Drop, Some(PolicyMatch::Qname), None),
        Why::Rebinding(ip) => facts(
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
            facts(kind, by_mode, qname.then_some(PolicyMatch::Qname), None)
        }
        Why::Allowlisted => facts(
            "allowlist",
            PolicyAction::Pass,
            Some(PolicyMatch::Qname),
            None,
        ),
        Why::Answered => None,
    }
}

/// Turns events into dnstap messages.
struct Encoder {
    identity: Vec<u8>,
    version: Vec<u8>,
}

impl Encoder {
    /// Appends the event's two messages as data frames to `out`.
    fn frames(&self, ev: &Event, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
        let (query, response) = match &ev.wire {
            Some((b, n)) => (Some(b[..*n].to_vec()), Some(b[*n..].to_vec())),
            None => (None, None),
        };
        let family = match ev.client {
            IpAddr::V4(_) => SocketFamily::Inet,
            IpAddr::V6(_) => SocketFamily::Inet6,
        };
        let address = match ev.client {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let protocol = match ev.transport {
            Transport::Udp => SocketProtocol::Udp,
            Transport::Tcp => SocketProtocol::Tcp,
            Transport::Tls => SocketProtocol::Dot,
            Transport::Doh => SocketProtocol::Doh,
            Transport::Doq => SocketProtocol::Doq,
        };
        let (qs, qn) = split_ms(ev.now_ms, 0);
        let (rs, rn) = split_ms(ev.now_ms, ev.latency_us);
        let policy = ev.policy.as_ref().map(|p| PolicyMessage {
            r#type: Some(p.kind.to_owned()),
            rule: Some(rule_text(&p.list, &p.rule))
                .filter(|r| !r.is_empty())
                .map(String::into_bytes),
            action: Some(p.action as i32),
            r#match: p.matched.map(|m| m as i32),
            value: match (p.matched, p.address) {
                (_, Some(IpAddr::V4(a))) => Some(a.octets().to_vec()),
                (_, Some(IpAddr::V6(a))) => Some(a.octets().to_vec()),
                (Some(PolicyMatch::Qname), None) => Some(ev.name.as_bytes().to_vec()),
                _ => None,
            },
        });
        let extra = ev.tunnel.map(|s| {
            format!(
                "tunnel score={:.2} flagged={} reasons={}",
                s.value,
                s.flagged,
                s.reasons.display_for(&ev.name)
            )
            .into_bytes()
        });
        let base = Message {
            r#type: MessageType::ClientQuery as i32,
            socket_family: Some(family as i32),
            socket_protocol: Some(protocol as i32),
            query_address: Some(address),
            query_port: (ev.port != 0).then_some(u32::from(ev.port)),
            query_time_sec: Some(qs),
            query_time_nsec: Some(qn),
            policy,
            ..Message::default()
        };
        let q = Message {
            query_message: query,
            ..base.clone()
        };
        let r = Message {
            r#type: MessageType::ClientResponse as i32,
            response_time_sec: Some(rs),
            response_time_nsec: Some(rn),
            response_message: response,
            ..base
        };
        for m in [q, r] {
            let d = DnstapMessage {
                identity: Some(self.identity.clone()),
                version: Some(self.version.clone()),
                extra: extra.clone(),
                message: Some(m),
                r#type: proto::DnstapType::Message as i32,
            };
            scratch.clear();
            prost::Message::encode(&d, scratch).expect("a Vec grows");
            fstrm::push_data(out, scratch);
        }
    }
}

/// `list line N`, or whichever of the two is known.
fn rule_text(list: &str, rule: &str) -> String {
    match (list.is_empty(), rule.is_empty()) {
        (false, false) => format!("{list} {rule}"),
        (false, true) => list.to_owned(),
        _ => rule.to_owned(),
    }
}

/// Seconds and nanoseconds of `ms` unix milliseconds plus `us` microseconds.
fn split_ms(ms: u64, us: u32) -> (u64, u32) {
    let total_us = ms.saturating_mul(1000).saturating_add(u64::from(us));
    (total_us / 1_000_000, (total_us % 1_000_000) as u32 * 1000)
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
    fn policy_of(why: Why, mode: BlockMode) -> Option<PolicyFacts> {
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let mut e = Entry::new(1, client, Arc::from("x.test"), 1);
        e.list = Arc::from("mine");
        e.rule = Arc::from("line 9");
        policy_facts(&e, why, Some(&mode))
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
            assert_eq!((&*p.list, &*p.rule), ("mine", "line 9"));
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

    #[test]
    fn times_split_into_seconds_and_nanoseconds() {
        assert_eq!(split_ms(1_700_000_000_123, 0), (1_700_000_000, 123_000_000));
        assert_eq!(split_ms(1_700_000_000_999, 1_500), (1_700_000_001, 500_000));
    }
}
