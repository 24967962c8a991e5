//! Forwarding to upstream servers over UDP/TCP, DoT or DoH.
//!
//! Plain-DNS upstreams (`IP[:port]`) go through [`super::plain::PlainUpstream`]: a
//! pool of long-lived sockets with random IDs and rotating source ports,
//! answers matched to their question, retransmission after an adaptive timeout
//! and TCP for truncated answers. `tcp://`, `tls://` and `https://` upstreams use
//! one multiplexed hickory connection each ([`Stream`]), which also checks answers
//! against questions. A TLS failure fails closed: nothing falls back to plain DNS.
//!
//! The client's DO and CD bits go upstream as they came, and the upstream's
//! message comes back whole (rcode, AD, every section), negative answers too.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use hickory_resolver::config::{ConnectionConfig, ProtocolConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::DnsExchange;
use hickory_resolver::net::{DnsHandle, NetError};
use hickory_resolver::proto::op::{
    DnsRequest, DnsRequestOptions, DnsResponse, Message, Query, ResponseCode,
};
use hickory_resolver::{ConnectionProvider, PoolContext, TlsConfig};
use parking_lot::Mutex;

use super::Strategy;
use super::plain::PlainUpstream;
use super::spec::{Transport, UpstreamSpec};
use super::{Answer, DnssecBits, ResolveError};

/// How one upstream is reached.
enum Link {
    /// Plain DNS over UDP (and TCP for truncated answers).
    Plain(PlainUpstream),
    /// TCP, DoT or DoH through one hickory connection.
    Stream(Box<Stream>),
}

/// One upstream, its label in logs and its smoothed answer time.
struct Upstream {
    link: Link,
    label: Arc<str>,
    /// Smoothed answer time, and when a failure to reach it was last logged (one
    /// lock for both: a success updates the one and clears the other).
    health: Mutex<Health>,
}

/// What [`Upstream`] keeps about how it has been answering.
#[derive(Default)]
struct Health {
    srtt: Option<Duration>,
    failure_logged: Option<Instant>,
}

/// An upstream that keeps failing is logged once in this long.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

impl Upstream {
    async fn resolve(
        &self,
        query: &Query,
        bits: DnssecBits,
        budget: Duration,
    ) -> Result<Answer, ResolveError> {
        let started = Instant::now();
        let asked = match &self.link {
            Link::Plain(u) => u.ask(query, bits, budget).await,
            Link::Stream(s) => match tokio::time::timeout(budget, s.ask(query, bits)).await {
                Ok(r) => r,
                Err(_) => Err(ResolveError::Timeout(budget.as_millis() as u64)),
            },
        };
        if let Err(e) = &asked {
            self.note_failure(e);
        }
        let result = asked.and_then(|msg| answer_of(msg, query));
        if result.is_ok() {
            let took = started.elapsed();
            let mut h = self.health.lock();
            h.srtt = Some(h.srtt.map_or(took, |s| (s * 7 + took) / 8));
            h.failure_logged = None;
        }
        result
    }

    /// One warning with the reason (timed out, refused, unknown issuer, name
    /// mismatch …) per upstream and minute while it cannot be reached: offline,
    /// every query would say it again. Answers it gives (SERVFAIL for a broken
    /// zone, say) are not its failures.
    fn note_failure(&self, e: &ResolveError) {
        tracing::debug!(upstream = %self.label, error = %e, "upstream failed");
        let mut h = self.health.lock();
        if h.failure_logged
            .is_some_and(|t| t.elapsed() < FAILURE_LOG_EVERY)
        {
            return;
        }
        h.failure_logged = Some(Instant::now());
        tracing::warn!(
            upstream = %self.label, error = %e,
            "cannot reach upstream (said once a minute while it lasts)"
        );
    }
}

/// A TCP, DoT or DoH upstream: one hickory connection (queries multiplexed on
/// it), opened on first use and again after it fails. hickory's
/// `NameServerPool` is not used: it turns every negative answer into an error
/// that drops the header (the AD bit), and a failed connection into "no
/// connections available" without the reason (a certificate's, say).
struct Stream {
    ip: IpAddr,
    config: ConnectionConfig,
    cx: PoolContext,
    /// Owns the connection's background task (dropping it ends the task).
    provider: TokioRuntimeProvider,
    /// The open connection, if any (read without a lock on every query).
    open: ArcSwapOption<DnsExchange<TokioRuntimeProvider>>,
    /// Held while connecting, so concurrent queries wait for one handshake.
    connecting: tokio::sync::Mutex<()>,
}

impl Stream {
    fn new(u: &UpstreamSpec, timeout: Duration, tls: &rustls::ClientConfig) -> Self {
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.edns_payload_len = 1232;
        let tls = TlsConfig {
            config: tls.clone(),
        };
        let mut config = ConnectionConfig::new(protocol(&u.transport));
        config.port = u.addr.port();
        Self {
            ip: u.addr.ip(),
            config,
            cx: PoolContext::new(opts, tls),
            provider: TokioRuntimeProvider::default(),
            open: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Asks `query` with the client's DO and CD bits; any rcode is an answer.
    async fn ask(&self, query: &Query, bits: DnssecBits) -> Result<Message, ResolveError> {
        let mut options = DnsRequestOptions::default();
        options.recursion_desired = true;
        options.use_edns = true;
        options.edns_payload_len = 1232;
        options.edns_set_dnssec_ok = bits.dnssec_ok;
        let mut request = DnsRequest::from_query(query.clone(), options);
        request.metadata.checking_disabled = bits.checking_disabled;
        // A connection the upstream closed while idle is found out on use: one
        // retry on a fresh connection (not after a timeout: that is the upstream).
        for retry in [true, false] {
            let (conn, reused) = self.connection().await?;
            let sent = Instant::now();
            let error = match conn.send(request.clone()).next().await {
                Some(Ok(response)) => {
                    self.tap(&request, &response, sent);
                    return Ok(response.into_message());
                }
                Some(Err(e)) => e,
                None => NetError::from("no response"),
            };
            self.forget(&conn);
            if !(retry && reused && !matches!(error, NetError::Timeout)) {
                return Err(ResolveError::Upstream(error.to_string()));
            }
        }
        Err(ResolveError::Upstream("connection closed".into()))
    }

    /// The exchange to dnstap, when it records upstream traffic. The query is
    /// encoded again for it: its ID is the one hickory's connection assigns
    /// on the wire, which the response carries.
    fn tap(&self, request: &DnsRequest, response: &DnsResponse, sent: Instant) {
        let Some(tap) = crate::dnstap::Dnstap::upstream() else {
            return;
        };
        let Ok(mut query) = request.to_vec() else {
            return;
        };
        if let (Some(id), Some(ours)) = (response.as_buffer().get(..2), query.get_mut(..2)) {
            ours.copy_from_slice(id);
        }
        let transport = match self.config.protocol {
            ProtocolConfig::Tls { .. } => crate::dnstap::Transport::Tls,
            ProtocolConfig::Https { .. } => crate::dnstap::Transport::Doh,
            _ => crate::dnstap::Transport::Tcp,
        };
        let server = std::net::SocketAddr::new(self.ip, self.config.port);
        tap.forwarded(server, transport, sent, &query, response.as_buffer());
    }

    /// The open connection (and `true`), or a new one.
    async fn connection(
        &self,
    ) -> Result<(Arc<DnsExchange<TokioRuntimeProvider>>, bool), ResolveError> {
        if let Some(conn) = self.open.load_full() {
            return Ok((conn, true));
        }
        let _one = self.connecting.lock().await;
        if let Some(conn) = self.open.load_full() {
            return Ok((conn, true));
        }
        let connected = match self
            .provider
            .new_connection(self.ip, &self.config, &self.cx)
        {
            Ok(f) => f.await,
            Err(e) => Err(e),
        };
        match connected {
            Ok(conn) => {
                let conn = Arc::new(conn);
                self.open.store(Some(conn.clone()));
                Ok((conn, false))
            }
            Err(e) => Err(ResolveError::Upstream(format!("cannot connect: {e}"))),
        }
    }

    /// Drops `conn` if it is still the open one: the next query reconnects.
    fn forget(&self, conn: &Arc<DnsExchange<TokioRuntimeProvider>>) {
        self.open
            .compare_and_swap(&Some(conn.clone()), None::<Arc<_>>);
    }
}

/// hickory's protocol for a stream transport (plain DNS never gets here: it is
/// [`PlainUpstream`]'s, and its TCP fallback too).
fn protocol(t: &Transport) -> ProtocolConfig {
    match t {
        Transport::Udp | Transport::Tcp => ProtocolConfig::Tcp,
        Transport::Tls { server_name } => ProtocolConfig::Tls {
            server_name: server_name.as_str().into(),
        },
        Transport::Https { server_name, path } => ProtocolConfig::Https {
            server_name: server_name.as_str().into(),
            path: path.as_str().into(),
        },
    }
}

/// A set of upstreams asked as one, with a strategy and timeouts.
#[derive(Clone)]
pub struct Forwarder {
    upstreams: Arc<[Upstream]>,
    strategy: Strategy,
    per_upstream: Duration,
    total: Duration,
}

impl Forwarder {
    /// Builds the upstreams. `per_upstream` bounds one upstream's attempt in
    /// `failover` (the last one gets what is left of `total`); `total` bounds a
    /// `race`. `tls` is the client configuration for DoT/DoH.
    pub fn new(
        upstreams: &[UpstreamSpec],
        strategy: Strategy,
        per_upstream: Duration,
        total: Duration,
        tls: &rustls::ClientConfig,
    ) -> Self {
        let upstreams = upstreams
            .iter()
            .map(|u| {
                let label: Arc<str> = u.to_string().into();
                let link = match u.transport {
                    Transport::Udp => Link::Plain(PlainUpstream::new(u.addr)),
                    _ => Link::Stream(Box::new(Stream::new(u, per_upstream.max(total), tls))),
                };
                Upstream {
                    link,
                    label,
                    health: Mutex::default(),
                }
            })
            .collect();
        Self {
            upstreams,
            strategy,
            per_upstream,
            total,
        }
    }

    /// Asks the upstreams; a negative answer is an `Ok` with its rcode and SOA. Also
    /// returns the label of the upstream that answered (or failed last).
    pub async fn resolve(
        &self,
        query: &Query,
        bits: DnssecBits,
    ) -> (Result<Answer, ResolveError>, Arc<str>) {
        match self.strategy {
            Strategy::Failover => self.failover(query, bits).await,
            Strategy::Race => self.race(query, bits).await,
        }
    }

    /// In order, each upstream with its own budget; the first answer wins.
    async fn failover(
        &self,
        query: &Query,
        bits: DnssecBits,
    ) -> (Result<Answer, ResolveError>, Arc<str>) {
        let deadline = Instant::now() + self.total;
        let mut last = (
            Err(ResolveError::Upstream("no upstreams".into())),
            Arc::from(""),
        );
        for (i, u) in self.upstreams.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            let budget = if i + 1 == self.upstreams.len() {
                left
            } else {
                self.per_upstream.min(left)
            };
            last = (u.resolve(query, bits, budget).await, u.label.clone());
            if last.0.is_ok() {
                break;
            }
        }
        last
    }

    /// The two fastest upstreams (by smoothed answer time; untried ones first)
    /// at once; the first answer wins.
    async fn race(
        &self,
        query: &Query,
        bits: DnssecBits,
    ) -> (Result<Answer, ResolveError>, Arc<str>) {
        let mut order: Vec<&Upstream> = self.upstreams.iter().collect();
        order.sort_by_key(|u| u.health.lock().srtt);
        let runners = order.into_iter().take(2).map(|u| {
            Box::pin(async move {
                match u.resolve(query, bits, self.total).await {
                    Ok(a) => Ok((a, u.label.clone())),
                    Err(e) => Err((e, u.label.clone())),
                }
            })
        });
        match futures_util::future::select_ok(runners).await {
            Ok(((answer, label), _)) => (Ok(answer), label),
            Err((e, label)) => (Err(e), label),
        }
    }
}

/// An upstream's message as an [`Answer`]; SERVFAIL, REFUSED and other failures
/// are errors (the next upstream may do better).
fn answer_of(msg: Message, query: &Query) -> Result<Answer, ResolveError> {
    match msg.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        other => return Err(ResolveError::Upstream(format!("upstream said {other}"))),
    }
    let mut answer = Answer {
        rcode: msg.metadata.response_code,
        answers: msg.answers,
        authorities: msg.authorities,
        authentic: msg.metadata.authentic_data,
    };
    answer.sort_chain(query.name());
    Ok(answer)
}

/// The rustls client configuration for DoT/DoH upstreams: certificates with one of
/// `tls_pins` (SPKI pins) when any is configured, else the CA file's certificates when one
/// is configured, otherwise the operating system's trust store; presenting the
/// client certificate `tls_client_cert_file` when one is configured.
pub fn tls_client_config(
    cfg: &super::config::ResolverConfig,
) -> anyhow::Result<rustls::ClientConfig> {
    use anyhow::Context;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let (pins, ca_file) = (&cfg.tls_pins, cfg.tls_ca_file.as_deref());
    let builder = match ca_file {
        _ if !pins.is_empty() => {
            let verifier = crate::pki::PinVerifier::new(pins.to_vec(), provider);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read resolver.tls_ca_file {}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                roots
                    .add(cert.with_context(|| format!("bad certificate in {}", path.display()))?)?;
            }
            anyhow::ensure!(!roots.is_empty(), "no certificates in {}", path.display());
            builder.with_root_certificates(roots)
        }
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)
                .context("cannot load the system's certificate store")?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
    };
    let (Some(cert), Some(key)) = (&cfg.tls_client_cert_file, &cfg.tls_client_key_file) else {
        return Ok(builder.with_no_client_auth());
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let chain = rustls_pemfile::certs(&mut &read(cert)?[..])
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad certificate in {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "no PEM certificate in {}",
        cert.display()
    );
    let key_der = rustls_pemfile::private_key(&mut &read(key)?[..])
        .with_context(|| format!("bad private key in {}", key.display()))?
        .ok_or_else(|| anyhow::anyhow!("no PEM private key in {}", key.display()))?;
    builder
        .with_client_auth_cert(chain, key_der)
        .with_context(|| {
            format!(
                "{} and {} do not make a client certificate",
                cert.display(),
                key.display()
            )
        })
}
