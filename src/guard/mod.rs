//! The agent egress guard: what dnsguard does with the queries it has answered,
//! beyond logging them.
//!
//! * `seen.rs`: the persistent set of (client, registrable domain) pairs, for
//!   new-domain alerts (once per pair, across restarts, bounded memory);
//! * `alerts.rs`: alert records and their sinks (webhook with retries, syslog
//!   RFC 5424 over UDP, a JSON-lines file, the dashboard's recent list);
//! * `nft.rs`: firewall sync, answered addresses into nftables sets with the TTL
//!   as timeout;
//! * `learn.rs`: the allowlist proposal of `dnsguard allowlist learn`;
//! * `report.rs`: the weekly review of `dnsguard report`.
//!
//! The DNS path only calls [`Guard::observe`] (from `Pipeline::record`): a few
//! comparisons and, for the queries that matter, one `try_send` of a fixed-size
//! [`Observation`] into a bounded channel. Everything else (PSL split, the seen
//! set on disk, alert delivery, `nft`) runs on the guard's own thread and tasks;
//! when the channel is full the observation is dropped and counted.

pub mod alerts;
pub mod learn;
pub mod nft;
pub mod report;
pub mod seen;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use arc_swap::ArcSwap;

use crate::filter::{GroupConfig, ListConfig};
use crate::querylog::{self, Entry};
use alerts::{Alert, AlertKind, Dispatch};

/// Most addresses of one answer passed on to the firewall sync.
pub const MAX_ADDRS: usize = 8;

/// Observations waiting for the guard thread; more are dropped and counted.
const QUEUE: usize = 8192;

/// What the list and canary names mean for alerts and the report: which lists are
/// exfiltration endpoints and which are bypass (DoH resolver) lists, and the
/// bypass canary names. Built from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Categories {
    /// Names of lists whose source is `builtin:exfil`.
    pub exfil_lists: Vec<String>,
    /// Names of lists whose source is `builtin:doh-resolvers`.
    pub bypass_lists: Vec<String>,
    /// The bypass canaries (`use-application-dns.net`, …), when answered NXDOMAIN.
    pub canaries: Vec<String>,
}

impl Categories {
    /// The categories of the configured `lists`; `canaries` when `[local]
    /// bypass_canaries` is on.
    pub fn new(lists: &[ListConfig], canaries: bool) -> Self {
        let by_source = |src: &str| -> Vec<String> {
            lists
                .iter()
                .filter(|l| l.source.trim() == src)
                .map(|l| l.name.clone())
                .collect()
        };
        let canaries = if canaries {
            crate::lists::BYPASS_CANARIES
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.trim_end_matches('.').to_ascii_lowercase())
                .collect()
        } else {
            Vec::new()
        };
        Self {
            exfil_lists: by_source("builtin:exfil"),
            bypass_lists: by_source(crate::filter::DOH_RESOLVERS_SOURCE),
            canaries,
        }
    }

    /// Whether `name` is a canary or below one.
    pub fn is_canary(&self, name: &str) -> bool {
        self.canaries.iter().any(|c| crate::name::is_under(name, c))
    }

    /// The alert kind of a blocked entry's list, if it is an exfil or bypass list.
    pub fn of_list(&self, list: &str) -> Option<AlertKind> {
        if list.is_empty() {
            None
        } else if self.exfil_lists.iter().any(|l| l == list) {
            Some(AlertKind::Exfil)
        } else if self.bypass_lists.iter().any(|l| l == list) {
            Some(AlertKind::Bypass)
        } else {
            None
        }
    }
}

/// The registrable domain (eTLD+1, PSL private section included) of `name`, or
/// the name itself when it has none (a bare TLD, a single label).
pub fn registrable(name: &str) -> &str {
    psl::domain_str(name).unwrap_or(name)
}

/// Whom the guard's per-client state belongs to (the seen set, alert repeats,
/// learning): the configured client the query log names, else the source
/// address. Agents behind one address are told apart by their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Who<'a> {
    /// No configured client: the address.
    Address(IpAddr),
    /// A `[[clients]]` name.
    Client(&'a str),
}

impl<'a> Who<'a> {
    /// The client of a query-log entry's `client` and `client_name`.
    pub fn of(client: IpAddr, client_name: &'a str) -> Self {
        if client_name.is_empty() {
            Who::Address(client)
        } else {
            Who::Client(client_name)
        }
    }

    /// The text of [`Who`]'s `Display` back (`None` when it is neither form).
    pub fn parse(s: &'a str) -> Option<Self> {
        match s.strip_prefix(CLIENT_PREFIX) {
            Some(name) if !name.is_empty() => Some(Who::Client(name)),
            Some(_) => None,
            None => s.parse().ok().map(Who::Address),
        }
    }
}

// [`Who`] of a query-log entry, owning the name: what learning and the report
// count clients by, as the query log's top clients do.
pub(crate) use crate::querylog::Client;

/// What marks a client name in [`Who`]'s text (no address starts with it).
const CLIENT_PREFIX: &str = "client:";

impl std::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Address(ip) => write!(f, "{ip}"),
            Who::Client(name) => write!(f, "{CLIENT_PREFIX}{name}"),
        }
    }
}

/// Per-group settings the DNS path consults.
#[derive(Debug, Clone)]
struct GroupRules {
    name: String,
    new_domains: bool,
    firewall: bool,
}

/// What [`Guard::observe`] checks, swapped as one on reload: per-group watches
/// and firewall sync, and the list categories.
#[derive(Debug, Default)]
pub struct Rules {
    groups: Vec<GroupRules>,
    categories: Categories,
}

impl Rules {
    /// The rules of the configured `groups` under `fw`'s firewall sync, with the
    /// `categories` of the lists.
    pub fn new(groups: &[GroupConfig], fw: &nft::FirewallConfig, categories: Categories) -> Self {
        let mut groups: Vec<GroupRules> = groups
            .iter()
            .map(|g| GroupRules {
                name: g.name.clone(),
                new_domains: g.watches_new_domains(),
                firewall: fw.enabled && (fw.groups.is_empty() || fw.groups.contains(&g.name)),
            })
            .collect();
        if !groups
            .iter()
            .any(|g| g.name == crate::filter::DEFAULT_GROUP)
        {
            groups.push(GroupRules {
                name: crate::filter::DEFAULT_GROUP.into(),
                new_domains: false,
                firewall: fw.enabled
                    && (fw.groups.is_empty()
                        || fw.groups.iter().any(|g| g == crate::filter::DEFAULT_GROUP)),
            });
        }
        Self { groups, categories }
    }
}

/// Why an observation was passed to the guard thread (bit set).
mod why {
    pub const TUNNEL: u8 = 1;
    pub const EXFIL: u8 = 2;
    pub const BYPASS: u8 = 4;
    pub const NEW_DOMAIN: u8 = 8;
    pub const FIREWALL: u8 = 16;
}

/// One answered query the guard thread has to look at. Fixed size: the strings
/// are the log entry's shared `Arc`s (cloning them does not allocate).
#[derive(Debug, Clone)]
pub struct Observation {
    time_ms: u64,
    client: IpAddr,
    client_name: Arc<str>,
    name: Arc<str>,
    group: Arc<str>,
    list: Arc<str>,
    score: f32,
    /// Why detection flagged the name (the alert's text).
    tunnel: crate::detect::Reasons,
    why: u8,
    addrs: [(IpAddr, u32); MAX_ADDRS],
    n_addrs: u8,
}

impl Observation {
    fn who(&self) -> Who<'_> {
        Who::of(self.client, &self.client_name)
    }
}

/// What the guard takes from a configuration.
#[derive(Debug)]
pub struct GuardSettings {
    /// Where the seen set lives (`DATA_DIR/guard`).
    pub dir: std::path::PathBuf,
    /// `[alerts]`.
    pub alerts: alerts::AlertsConfig,
    /// `[firewall]`.
    pub firewall: nft::FirewallConfig,
    /// Per-group rules and list categories.
    pub rules: Rules,
}

/// The guard: observes answered queries, raises alerts, feeds the firewall.
pub struct Guard {
    rules: ArcSwap<Rules>,
    tx: SyncSender<Observation>,
    dropped: AtomicU64,
    dropped_metric: std::sync::OnceLock<metrics::Counter>,
    recent: alerts::Recent,
    seen: Arc<seen::Seen>,
}

impl Guard {
    /// Opens the seen set in `cfg.dir`, starts the alert sinks (the webhook task
    /// on the current tokio runtime), the firewall sync and the guard thread.
    pub fn start(cfg: GuardSettings) -> anyhow::Result<Arc<Guard>> {
        let dir = &cfg.dir;
        let seen = match seen::Seen::open(dir, cfg.alerts.max_seen) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "seen-domain set kept in memory only: new-domain alerts repeat after a restart"
                );
                seen::Seen::memory_only(dir, cfg.alerts.max_seen)
            }
        };
        let seen = Arc::new(seen);
        let recent = alerts::Recent::default();
        let dispatch = Dispatch::start(&cfg.alerts, recent.clone())?;
        let firewall = if cfg.firewall.enabled {
            Some(nft::Firewall::start(&cfg.firewall)?)
        } else {
            None
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let worker = Worker {
            seen: seen.clone(),
            dispatch,
            firewall,
            repeat_ms: cfg.alerts.repeat_secs.saturating_mul(1000),
            last_alert: std::collections::HashMap::new(),
        };
        crate::channel::spawn_background("dnsguard-guard", move || worker.run(rx))?;
        Ok(Arc::new(Guard {
            rules: ArcSwap::from_pointee(cfg.rules),
            tx,
            dropped: AtomicU64::new(0),
            dropped_metric: std::sync::OnceLock::new(),
            recent,
            seen,
        }))
    }

    /// Takes the per-group settings and list categories of a new configuration
    /// (SIGHUP and dashboard changes); sinks and firewall keep their settings
    /// until restart.
    pub fn configure(&self, rules: Rules) {
        self.rules.store(Arc::new(rules));
    }

    /// Hot path, called once per answered query with its log entry and answer
    /// addresses: decides whether the guard thread must see it and hands it over
    /// without blocking. No allocation.
    pub fn observe(&self, e: &Entry, addrs: impl Iterator<Item = (IpAddr, u32)>) {
        let rules = self.rules.load();
        let blocked = e.verdict == querylog::Ruling::Blocked;
        let mut why = 0;
        if e.flagged {
            why |= why::TUNNEL;
        }
        if blocked {
            match rules.categories.of_list(&e.list) {
                Some(AlertKind::Exfil) => why |= why::EXFIL,
                Some(AlertKind::Bypass) => why |= why::BYPASS,
                _ => {}
            }
        }
        if e.source == querylog::Origin::Local && rules.categories.is_canary(&e.name) {
            why |= why::BYPASS;
        }
        let resolved = !blocked
            && matches!(
                e.source,
                querylog::Origin::Upstream(_)
                    | querylog::Origin::Cache
                    | querylog::Origin::Stale
                    | querylog::Origin::Local
            );
        let mut out = [(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0); MAX_ADDRS];
        let mut n = 0;
        if resolved && let Some(g) = rules.groups.iter().find(|g| *g.name == *e.group) {
            if g.new_domains {
                why |= why::NEW_DOMAIN;
            }
            if g.firewall {
                for (slot, a) in out.iter_mut().zip(addrs) {
                    *slot = a;
                    n += 1;
                }
                if n > 0 {
                    why |= why::FIREWALL;
                }
            }
        }
        if why == 0 {
            return;
        }
        let obs = Observation {
            time_ms: e.time_ms,
            client: e.client,
            client_name: e.client_name.clone(),
            name: e.name.clone(),
            group: e.group.clone(),
            list: e.list.clone(),
            score: e.tunnel_score,
            tunnel: e.tunnel.as_deref().copied().unwrap_or_default(),
            why,
            addrs: out,
            n_addrs: n as u8,
        };
        match self.tx.try_send(obs) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                // Registered at the first drop (after the web server installed the
                // recorder), then one atomic add.
                self.dropped_metric
                    .get_or_init(|| metrics::counter!("dnsguard_guard_dropped_total"))
                    .increment(1);
            }
        }
    }

    /// Observations dropped because the guard thread was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The latest alerts, newest first (for the dashboard).
    pub fn recent_alerts(&self) -> Vec<Alert> {
        self.recent.list()
    }

    /// The seen set (a highly available pair merges its nodes' sets).
    pub fn seen(&self) -> &Arc<seen::Seen> {
        &self.seen
    }

    /// Makes the seen set durable (at shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.seen.flush() {
            tracing::warn!(error = %e, "cannot flush the seen-domain set");
        }
    }
}

/// The guard thread's state.
struct Worker {
    seen: Arc<seen::Seen>,
    dispatch: Dispatch,
    firewall: Option<nft::Firewall>,
    repeat_ms: u64,
    /// Last alert time per (kind, client, domain), to hold back repeats.
    last_alert: std::collections::HashMap<u64, u64>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Observation>) {
        // Polled, not blocked: see `crate::channel`.
        loop {
            match crate::channel::poll_recv(&rx, std::time::Duration::from_secs(60)) {
                Ok(o) => self.handle(&o),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn handle(&mut self, o: &Observation) {
        if o.why & why::FIREWALL != 0
            && let Some(fw) = &self.firewall
        {
            fw.add(&o.addrs[..usize::from(o.n_addrs)]);
        }
        let domain = registrable(&o.name);
        if o.why & why::NEW_DOMAIN != 0 {
            match self.seen.first_use(o.who(), domain, o.time_ms) {
                // The pair's primary raises it (see `cluster`); this node just records it.
                Ok(true) if crate::cluster::defers_new_domain_alerts() => {
                    metrics::counter!("dnsguard_cluster_new_domain_deferred_total").increment(1);
                }
                Ok(true) => {
                    // Logged for the pair's other node, which then never raises it.
                    if let Err(e) = self.seen.alerted(o.who(), domain, o.time_ms) {
                        tracing::warn!(error = %e, "cannot log the alerted pair for the peer");
                    }
                    self.raise(o, AlertKind::NewDomain, domain, || {
                        format!("first query for {domain} by this client")
                    })
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "seen-domain set unavailable"),
            }
        }
        if o.why & why::TUNNEL != 0 {
            self.raise(o, AlertKind::Tunnel, domain, || o.tunnel.rule_for(&o.name));
        }
        if o.why & why::EXFIL != 0 {
            self.raise(o, AlertKind::Exfil, domain, || {
                format!("exfiltration endpoint (list {})", o.list)
            });
        }
        if o.why & why::BYPASS != 0 {
            self.raise(o, AlertKind::Bypass, domain, || {
                if o.list.is_empty() {
                    "bypass canary".to_owned()
                } else {
                    format!("encrypted-DNS resolver (list {})", o.list)
                }
            });
        }
    }

    fn raise(
        &mut self,
        o: &Observation,
        kind: AlertKind,
        domain: &str,
        reason: impl FnOnce() -> String,
    ) {
        if kind != AlertKind::NewDomain && self.repeat_ms > 0 {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (kind as u8, o.who(), domain).hash(&mut h);
            let key = h.finish();
            if let Some(last) = self.last_alert.get(&key)
                && o.time_ms.saturating_sub(*last) < self.repeat_ms
            {
                return;
            }
            if self.last_alert.len() >= 10_000 {
                self.last_alert.clear();
            }
            self.last_alert.insert(key, o.time_ms);
        }
        self.dispatch.send(Alert {
            time: querylog::format_time(o.time_ms),
            time_ms: o.time_ms,
            kind,
            client: o.client,
            client_name: o.client_name.to_string(),
            name: o.name.to_string(),
            domain: domain.to_owned(),
            group: o.group.to_string(),
            reason: reason(),
            score: o.score,
            level: (kind == AlertKind::Tunnel)
                .then_some(o.tunnel.level)
                .flatten(),
        });
    }
}
