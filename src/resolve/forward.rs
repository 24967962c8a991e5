//! Forwarding to upstream servers over UDP/TCP, DoT or DoH.
//!
//! Plain-DNS upstreams (`IP[:port]`) go through [`super::udp::UdpUpstream`]: a
//! pool of long-lived sockets with random IDs and rotating source ports,
//! answers matched to their question, retransmission after an adaptive timeout
//! and TCP for truncated answers. `tcp://`, `tls://` and `https://` upstreams use
//! hickory's `NameServerPool` (one per upstream), which also checks answers
//! against questions. A TLS failure fails closed: nothing falls back to plain DNS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverOpts, ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, DnsHandle, NetError};
use hickory_resolver::proto::op::{DnsRequest, DnsRequestOptions, Message, Query, ResponseCode};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};
use parking_lot::Mutex;

use super::spec::{Transport, UpstreamSpec};
use super::udp::UdpUpstream;
use super::{Answer, ResolveError};
use crate::config::Strategy;

/// How one upstream is reached.
enum Link {
    /// Plain DNS over UDP (and TCP for truncated answers).
    Udp(UdpUpstream),
    /// TCP, DoT or DoH through hickory.
    Pool(NameServerPool<TokioRuntimeProvider>),
}

/// One upstream, its label in logs and its smoothed answer time.
struct Upstream {
    link: Link,
    label: Arc<str>,
    srtt: Mutex<Option<Duration>>,
}

impl Upstream {
    async fn resolve(
        &self,
        query: &Query,
        dnssec_ok: bool,
        budget: Duration,
    ) -> Result<Answer, ResolveError> {
        let started = Instant::now();
        let result = match &self.link {
            Link::Udp(u) => match u.ask(query, dnssec_ok, budget).await {
                Ok(msg) => answer_of(msg, query),
                Err(e) => Err(e),
            },
            Link::Pool(pool) => {
                match tokio::time::timeout(budget, ask_pool(pool, query, dnssec_ok)).await {
                    Ok(r) => r,
                    Err(_) => Err(ResolveError::Timeout(budget.as_millis() as u64)),
                }
            }
        };
        if result.is_ok() {
            let took = started.elapsed();
            let mut s = self.srtt.lock();
            *s = Some(s.map_or(took, |s| (s * 7 + took) / 8));
        }
        if let Err(e) = &result {
            tracing::debug!(upstream = %self.label, error = %e, "upstream failed");
        }
        result
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
                let link = match u.transport {
                    Transport::Udp => Link::Udp(UdpUpstream::new(u.addr)),
                    _ => Link::Pool(pool(u, per_upstream.max(total), tls)),
                };
                Upstream {
                    link,
                    label: u.to_string().into(),
                    srtt: Mutex::new(None),
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
        dnssec_ok: bool,
    ) -> (Result<Answer, ResolveError>, Arc<str>) {
        match self.strategy {
            Strategy::Failover => self.failover(query, dnssec_ok).await,
            Strategy::Race => self.race(query, dnssec_ok).await,
        }
    }

    /// In order, each upstream with its own budget; the first answer wins.
    async fn failover(
        &self,
        query: &Query,
        dnssec_ok: bool,
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
            last = (u.resolve(query, dnssec_ok, budget).await, u.label.clone());
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
        dnssec_ok: bool,
    ) -> (Result<Answer, ResolveError>, Arc<str>) {
        let mut order: Vec<&Upstream> = self.upstreams.iter().collect();
        order.sort_by_key(|u| *u.srtt.lock());
        let runners = order.into_iter().take(2).map(|u| {
            Box::pin(async move {
                match u.resolve(query, dnssec_ok, self.total).await {
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

/// hickory's pool for one TCP, DoT or DoH upstream.
fn pool(
    u: &UpstreamSpec,
    timeout: Duration,
    tls: &rustls::ClientConfig,
) -> NameServerPool<TokioRuntimeProvider> {
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.edns_payload_len = 1232;
    opts.cache_size = 0;
    opts.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
    opts.num_concurrent_reqs = 1;
    let tls = TlsConfig {
        config: tls.clone(),
    };
    let cx = Arc::new(PoolContext::new(opts, tls));
    NameServerPool::from_config([name_server_config(u)], cx, TokioRuntimeProvider::default())
}

async fn ask_pool(
    pool: &NameServerPool<TokioRuntimeProvider>,
    query: &Query,
    dnssec_ok: bool,
) -> Result<Answer, ResolveError> {
    let mut options = DnsRequestOptions::default();
    options.recursion_desired = true;
    options.use_edns = true;
    options.edns_payload_len = 1232;
    options.edns_set_dnssec_ok = dnssec_ok;
    let request = DnsRequest::from_query(query.clone(), options);
    let Some(result) = pool.send(request).next().await else {
        return Err(ResolveError::Upstream("no response".into()));
    };
    match result {
        Ok(response) => answer_of(response.into_message(), query),
        Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => {
            let mut answer = Answer::empty(nr.response_code);
            match (nr.authorities, nr.soa) {
                (Some(auth), _) => answer.authorities.extend(auth.iter().cloned()),
                (None, Some(soa)) => answer.authorities.push(soa.into_record_of_rdata()),
                (None, None) => {}
            }
            Ok(answer)
        }
        Err(NetError::Dns(DnsError::Nsec { response, .. })) => {
            let msg = response.into_message();
            Ok(Answer {
                rcode: msg.metadata.response_code,
                answers: msg.answers,
                authorities: msg.authorities,
                authentic: msg.metadata.authentic_data,
            })
        }
        Err(NetError::Timeout) => Err(ResolveError::Upstream("timed out".into())),
        Err(e) => Err(ResolveError::Upstream(e.to_string())),
    }
}

fn name_server_config(u: &UpstreamSpec) -> NameServerConfig {
    let conn = |protocol| {
        let mut c = ConnectionConfig::new(protocol);
        c.port = u.addr.port();
        c
    };
    let connections = match &u.transport {
        Transport::Udp => vec![conn(ProtocolConfig::Udp), conn(ProtocolConfig::Tcp)],
        Transport::Tcp => vec![conn(ProtocolConfig::Tcp)],
        Transport::Tls { server_name } => vec![conn(ProtocolConfig::Tls {
            server_name: server_name.as_str().into(),
        })],
        Transport::Https { server_name, path } => vec![conn(ProtocolConfig::Https {
            server_name: server_name.as_str().into(),
            path: path.as_str().into(),
        })],
    };
    NameServerConfig::new(u.addr.ip(), true, connections)
}

/// The rustls client configuration for DoT/DoH upstreams: the CA file's certificates
/// when one is configured, otherwise the operating system's trust store.
pub fn tls_client_config(
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<rustls::ClientConfig> {
    use anyhow::Context;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read resolver.tls_ca_file {}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                roots
                    .add(cert.with_context(|| format!("bad certificate in {}", path.display()))?)?;
            }
            anyhow::ensure!(!roots.is_empty(), "no certificates in {}", path.display());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)
                .context("cannot load the system's certificate store")?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    Ok(config)
}
