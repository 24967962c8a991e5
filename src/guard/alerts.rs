//! Alerts and where they go: a webhook (JSON POST, retried with exponential
//! back-off from its own task), syslog (RFC 5424 over UDP), a JSON-lines file and
//! the dashboard's list of recent alerts.
//!
//! Delivery never blocks DNS: the guard thread writes the file and the syslog
//! datagram itself (it is off the DNS path) and hands webhook deliveries to a
//! bounded queue; a full queue drops the alert and counts it
//! (`dnsguard_alerts_dropped_total`).

use std::collections::VecDeque;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// `[alerts]`: where alerts are sent and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// URL that gets every alert as a JSON POST (unset = no webhook).
    pub webhook_url: Option<String>,
    /// Attempts after the first failed POST before the alert is given up.
    pub webhook_retries: u32,
    /// Wait before the first retry; doubled each time, at most 60 s (milliseconds).
    pub webhook_backoff_ms: u64,
    /// Time limit of one POST (milliseconds).
    pub webhook_timeout_ms: u64,
    /// Alerts waiting for the webhook at most; more are dropped and counted.
    pub webhook_queue: usize,
    /// Syslog collector that gets every alert as an RFC 5424 message over UDP.
    pub syslog: Option<SocketAddr>,
    /// File that gets every alert as one JSON object per line (appended).
    pub file: Option<PathBuf>,
    /// The same tunnel, exfil or bypass alert (client and domain) is raised again
    /// only after this long (seconds; 0 = every time). New-domain alerts are once
    /// per client and domain, ever.
    pub repeat_secs: u64,
    /// Most (client, domain) pairs the new-domain tracker stores.
    pub max_seen: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_retries: 5,
            webhook_backoff_ms: 500,
            webhook_timeout_ms: 5000,
            webhook_queue: 1024,
            syslog: None,
            file: None,
            repeat_secs: 600,
            max_seen: 1_000_000,
        }
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// Tunnel detection flagged the query.
    Tunnel,
    /// A client of a watched group used a registrable domain for the first time.
    NewDomain,
    /// A name of the `builtin:exfil` list (out-of-band callback services) was blocked.
    Exfil,
    /// A bypass attempt: a canary name or a DoH/DoT resolver of `builtin:doh-resolvers`.
    Bypass,
}

impl AlertKind {
    /// The name used in every output.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Tunnel => "tunnel",
            AlertKind::NewDomain => "new-domain",
            AlertKind::Exfil => "exfil",
            AlertKind::Bypass => "bypass",
        }
    }
}

/// One alert, as every sink sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    /// When the query arrived (RFC 3339, UTC).
    pub time: String,
    /// The same, unix milliseconds.
    pub time_ms: u64,
    /// What the alert is about.
    #[serde(rename = "type")]
    pub kind: AlertKind,
    /// The client that asked.
    pub client: IpAddr,
    /// Its `[[clients]]` name, if it has one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_name: String,
    /// The query name.
    pub name: String,
    /// Its registrable domain.
    pub domain: String,
    /// The client's group.
    pub group: String,
    /// Why, in words (tunnel reasons, list, …).
    pub reason: String,
    /// Tunnel score of the query (0 when not scored).
    pub score: f32,
    /// Confidence of a tunnel alert (`low`, `medium`, `high`); absent on
    /// other alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<crate::detect::Level>,
}

/// The latest alerts for the dashboard (newest first, at most 200).
#[derive(Clone, Default)]
pub struct Recent(Arc<Mutex<VecDeque<Alert>>>);

const RECENT: usize = 200;

impl Recent {
    fn push(&self, a: Alert) {
        let mut q = self.0.lock();
        if q.len() == RECENT {
            q.pop_back();
        }
        q.push_front(a);
    }

    /// A copy of the list, newest first.
    pub fn list(&self) -> Vec<Alert> {
        self.0.lock().iter().cloned().collect()
    }
}

/// The sinks, owned by the guard thread.
pub struct Dispatch {
    file: Option<(PathBuf, std::fs::File)>,
    syslog: Option<(UdpSocket, SocketAddr)>,
    webhook: Option<tokio::sync::mpsc::Sender<Alert>>,
    recent: Recent,
    hostname: String,
}

impl Dispatch {
    /// Opens the file (0600: alerts name clients and what they asked; an existing
    /// file readable by others is tightened), binds the syslog socket and spawns
    /// the webhook task on the current tokio runtime.
    pub fn start(cfg: &AlertsConfig, recent: Recent) -> anyhow::Result<Dispatch> {
        use anyhow::Context;
        let file = match &cfg.file {
            Some(p) => {
                let f = crate::datadir::file_options()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("cannot open alerts.file {}", p.display()))?;
                match crate::datadir::tighten(p) {
                    Ok(false) => {}
                    Ok(true) => tracing::warn!(
                        file = %p.display(),
                        "alerts.file was readable by other users: made it 0600"
                    ),
                    Err(error) => tracing::warn!(
                        %error, file = %p.display(),
                        "cannot make alerts.file private"
                    ),
                }
                Some((p.clone(), f))
            }
            None => None,
        };
        let syslog = match cfg.syslog {
            Some(to) => {
                let bind: SocketAddr = if to.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let sock = UdpSocket::bind(bind).context("cannot open the syslog socket")?;
                sock.set_nonblocking(true)?;
                Some((sock, to))
            }
            None => None,
        };
        let webhook = match &cfg.webhook_url {
            Some(url) => {
                let (tx, rx) = tokio::sync::mpsc::channel(cfg.webhook_queue.max(1));
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_millis(cfg.webhook_timeout_ms.max(1)))
                    .build()
                    .context("cannot build the webhook client")?;
                let hook = Webhook {
                    url: url.clone(),
                    http,
                    retries: cfg.webhook_retries,
                    backoff: Duration::from_millis(cfg.webhook_backoff_ms.max(1)),
                };
                tokio::spawn(hook.run(rx));
                Some(tx)
            }
            None => None,
        };
        Ok(Dispatch {
            file,
            syslog,
            webhook,
            recent,
            hostname: hostname(),
        })
    }

    /// Sends `a` everywhere configured.
    pub fn send(&mut self, a: Alert) {
        tracing::info!(
            kind = a.kind.as_str(), client = %a.client, client_name = %a.client_name, name = %a.name, group = %a.group,
            reason = %a.reason, score = a.score, "alert"
        );
        metrics::counter!("dnsguard_alerts_total", "type" => a.kind.as_str()).increment(1);
        if let Some((path, f)) = &mut self.file {
            let mut line = serde_json::to_vec(&a).unwrap_or_default();
            line.push(b'\n');
            if let Err(e) = f.write_all(&line) {
                tracing::warn!(file = %path.display(), error = %e, "cannot write alert");
            }
        }
        if let Some((sock, to)) = &self.syslog {
            let msg = rfc5424(&a, &self.hostname);
            if let Err(e) = sock.send_to(msg.as_bytes(), *to) {
                tracing::warn!(to = %to, error = %e, "cannot send alert to syslog");
            }
        }
        if let Some(tx) = &self.webhook
            && tx.try_send(a.clone()).is_err()
        {
            metrics::counter!("dnsguard_alerts_dropped_total").increment(1);
            tracing::warn!("webhook queue full or closed; alert dropped");
        }
        self.recent.push(a);
    }
}

/// The RFC 5424 line for `a`: facility local0, severity warning, app `dnsguard`,
/// msgid the alert type, the fields as structured data, the reason as message.
pub fn rfc5424(a: &Alert, hostname: &str) -> String {
    // PRI = facility 16 (local0) * 8 + severity 4 (warning).
    format!(
        "<132>1 {} {} dnsguard {} {} [alert@32473 type=\"{}\" client=\"{}\" name=\"{}\" group=\"{}\" score=\"{:.3}\"] {}",
        a.time,
        hostname,
        std::process::id(),
        a.kind.as_str(),
        a.kind.as_str(),
        a.client,
        sd_escape(&a.name),
        sd_escape(&a.group),
        a.score,
        a.reason
    )
}

/// Escapes `"`, `\` and `]` in a structured-data value (RFC 5424 §6.3.3).
fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.is_ascii() && !h.contains(' '))
        .unwrap_or_else(|| "-".into())
}

/// The webhook task's settings.
struct Webhook {
    url: String,
    http: reqwest::Client,
    retries: u32,
    backoff: Duration,
}

impl Webhook {
    async fn run(self, mut rx: tokio::sync::mpsc::Receiver<Alert>) {
        while let Some(a) = rx.recv().await {
            self.deliver(&a).await;
        }
    }

    /// POSTs `a` until a 2xx answer, retrying with doubling waits.
    async fn deliver(&self, a: &Alert) {
        let mut wait = self.backoff;
        for attempt in 0..=self.retries {
            let why = match self.http.post(&self.url).json(a).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => e.to_string(),
            };
            metrics::counter!("dnsguard_webhook_failures_total").increment(1);
            if attempt == self.retries {
                tracing::warn!(url = %self.url, error = %why, "webhook failed; alert given up");
                return;
            }
            tracing::debug!(url = %self.url, error = %why, attempt, "webhook failed; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_line_is_rfc5424() {
        let a = Alert {
            time: "2026-01-02T03:04:05.678Z".into(),
            time_ms: 0,
            kind: AlertKind::NewDomain,
            client: "127.0.0.2".parse().unwrap(),
            client_name: String::new(),
            name: "a\"b].example".into(),
            domain: "example".into(),
            group: "agents".into(),
            reason: "first query".into(),
            score: 0.25,
            level: None,
        };
        let line = rfc5424(&a, "host");
        assert!(
            line.starts_with("<132>1 2026-01-02T03:04:05.678Z host dnsguard "),
            "{line}"
        );
        assert!(line.contains(" new-domain [alert@32473 type=\"new-domain\" client=\"127.0.0.2\" name=\"a\\\"b\\].example\" group=\"agents\" score=\"0.250\"] first query"), "{line}");
    }
}
