//! Forwarding to upstream servers over UDP/TCP, DoT or DoH.
//!
//! Built on hickory's `NameServerPool`, which gives the upstream's whole message
//! (rcode, CNAME chain, SOA), retries truncated UDP answers over TCP, coalesces
//! identical in-flight queries, randomises source ports and IDs and checks that an
//! answer matches its question. A TLS failure fails closed: nothing falls back to
//! plain DNS.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverOpts, ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, DnsHandle, NetError};
use hickory_resolver::proto::op::{DnsRequest, DnsRequestOptions, Query, ResponseCode};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};

use super::spec::{Transport, UpstreamSpec};
use super::{Answer, ResolveError};
use crate::config::Strategy;

/// A set of upstreams asked as one, with a strategy and a timeout.
#[derive(Clone)]
pub struct Forwarder {
    pool: NameServerPool<TokioRuntimeProvider>,
    label: Arc<str>,
}

impl Forwarder {
    /// Builds the pool. `tls` is the client configuration for DoT/DoH (trust roots).
    pub fn new(
        upstreams: &[UpstreamSpec],
        strategy: Strategy,
        timeout: Duration,
        tls: &rustls::ClientConfig,
    ) -> Self {
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 1;
        opts.edns_payload_len = 1232;
        opts.cache_size = 0;
        match strategy {
            Strategy::Failover => {
                opts.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
                opts.num_concurrent_reqs = 1;
            }
            Strategy::Race => {
                opts.server_ordering_strategy = ServerOrderingStrategy::QueryStatistics;
                opts.num_concurrent_reqs = 2;
            }
        }
        let servers = upstreams.iter().map(name_server_config);
        let tls = TlsConfig {
            config: tls.clone(),
        };
        let cx = Arc::new(PoolContext::new(opts, tls));
        let pool = NameServerPool::from_config(servers, cx, TokioRuntimeProvider::default());
        let label = upstreams
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
            .join(",");
        Self {
            pool,
            label: label.into(),
        }
    }

    /// The upstreams this forwarder asks, for logs and the query log.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Asks the upstreams; a negative answer is an `Ok` with its rcode and SOA.
    pub async fn resolve(&self, query: &Query, dnssec_ok: bool) -> Result<Answer, ResolveError> {
        let mut options = DnsRequestOptions::default();
        options.recursion_desired = true;
        options.use_edns = true;
        options.edns_payload_len = 1232;
        options.edns_set_dnssec_ok = dnssec_ok;
        let request = DnsRequest::from_query(query.clone(), options);
        let Some(result) = self.pool.send(request).next().await else {
            return Err(ResolveError::Upstream("no response".into()));
        };
        match result {
            Ok(response) => {
                let msg = response.into_message();
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
