//! The query pipeline: the one place where the steps a question goes through are
//! put in order. Each step is a type with one job; a front end (hickory's handler
//! now, a lean per-core UDP loop later) builds a [`Question`] and calls
//! [`Pipeline::handle`].
//!
//! Order and why:
//! 1. access control: clients outside the configured networks get REFUSED, before
//!    any work is done for them (no open resolver);
//! 2. local records: names the operator defined win over everything upstream;
//! 3. cache: a fresh answer never touches the upstream;
//! 4. resolver: conditional zones, forwarder or recursor, bounded by the timeout;
//!    on failure a stale cached answer (RFC 8767) beats SERVFAIL.

use std::sync::Arc;

use hickory_proto::op::ResponseCode;

use super::Question;
use crate::access::Access;
use crate::config::Config;
use crate::resolve::cache::{Cache, Key};
use crate::resolve::local::LocalRecords;
use crate::resolve::router::Router;
use crate::resolve::{Answer, ResolveError};

/// Where an answer came from, for logs and the query log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The client is not allowed to use dnsguard.
    Refused,
    /// From `[local]` records or hosts files.
    Local,
    /// A fresh cache entry.
    Cache,
    /// An expired cache entry, served because upstreams failed.
    Stale,
    /// From the named upstream(s).
    Upstream(Arc<str>),
    /// Resolution failed; the reason.
    Failed(String),
}

/// The pipeline's result: the answer and where it came from.
#[derive(Debug, Clone)]
pub struct Reply {
    /// What to send.
    pub answer: Answer,
    /// Where it came from.
    pub source: Source,
}

/// Every step, built once from the configuration and shared by all front ends.
pub struct Pipeline {
    access: Access,
    local: LocalRecords,
    cache: Cache,
    router: Router,
}

impl Pipeline {
    /// Builds every step; fails on unreadable hosts files or unusable upstreams.
    pub fn new(cfg: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            access: Access::new(&cfg.server.allow_clients),
            local: LocalRecords::build(&cfg.local)?,
            cache: Cache::new(&cfg.cache),
            router: Router::new(&cfg.resolver)?,
        })
    }

    /// The cache, for periodic maintenance.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Runs one question through the steps.
    pub async fn handle(&self, q: &Question) -> Reply {
        if !self.access.allows(q.client.ip()) {
            return reply(Answer::empty(ResponseCode::Refused), Source::Refused);
        }
        if let Some(answer) = self.local.answer(&q.name, q.qtype()) {
            return reply(answer, Source::Local);
        }
        let key = Key {
            name: q.name.clone(),
            qtype: q.qtype(),
            dnssec_ok: q.dnssec_ok,
        };
        if let Some(hit) = self.cache.get(&key) {
            return reply(hit.answer, Source::Cache);
        }
        let (result, upstream) = self
            .router
            .resolve(&q.query, &q.name, q.dnssec_ok, q.checking_disabled)
            .await;
        match result {
            Ok(answer) => {
                self.cache.insert(key, &answer);
                reply(answer, Source::Upstream(upstream.into()))
            }
            Err(e) => self.fail(&key, e),
        }
    }

    fn fail(&self, key: &Key, e: ResolveError) -> Reply {
        // Bogus data is an attack or a broken zone, not an outage: no stale answer.
        let stale = match e {
            ResolveError::Bogus => None,
            _ => self.cache.get_stale(key),
        };
        if let Some(hit) = stale {
            tracing::debug!(name = %key.name, error = %e, "serving stale answer");
            return reply(hit.answer, Source::Stale);
        }
        tracing::debug!(name = %key.name, error = %e, "resolution failed");
        reply(
            Answer::empty(ResponseCode::ServFail),
            Source::Failed(e.to_string()),
        )
    }
}

fn reply(answer: Answer, source: Source) -> Reply {
    Reply { answer, source }
}
