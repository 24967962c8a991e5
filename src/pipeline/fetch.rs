//! Step 7: the resolver for a question the cache could not answer, with the
//! stale fallback (RFC 8767) when it fails. [`Resolve`] is the seam: the
//! configured [`Router`] in the server, a scripted resolver in the unit tests.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use hickory_proto::op::Query;
use hickory_proto::rr::{LowerName, Name};

use super::{Pending, Pipeline, Source};
use crate::resolve::cache::{Cached, Hit, Key};
use crate::resolve::router::Router;
use crate::resolve::{Answer, ResolveError};

/// Something that answers questions the cache cannot: the upstream label comes
/// back with the result, for the log.
pub trait Resolve: Send + Sync + 'static {
    /// Resolves `query` (its lower-cased `name` for zone matching), passing the
    /// client's DO and CD bits on.
    fn resolve(
        &self,
        query: &Query,
        name: &LowerName,
        dnssec_ok: bool,
        checking_disabled: bool,
    ) -> impl Future<Output = (Result<Answer, ResolveError>, Arc<str>)> + Send;
}

impl Resolve for Router {
    fn resolve(
        &self,
        query: &Query,
        name: &LowerName,
        dnssec_ok: bool,
        checking_disabled: bool,
    ) -> impl Future<Output = (Result<Answer, ResolveError>, Arc<str>)> + Send {
        Router::resolve(self, query, name, dnssec_ok, checking_disabled)
    }
}

/// An answer [`Pipeline::fetch`] got (or a stale one it fell back to).
pub struct Fetched {
    /// The answer as the cache holds it.
    pub hit: Hit,
    /// The upstream that answered, [`Source::Stale`] or [`Source::Cache`].
    pub source: Source,
    /// The resolver's answer itself (`None` for a cached or stale one).
    pub answer: Option<Answer>,
}

impl<R: Resolve> Pipeline<R> {
    /// Step 7 for `pending`: asks the resolver and caches its answer (when the
    /// name can be a key). On failure, a stale answer if there is one, else why
    /// there is none (for [`Pipeline::finish`]).
    pub async fn fetch(&self, pending: &Pending) -> Result<Fetched, Source> {
        let (dnssec_ok, cd) = (pending.dnssec_ok, pending.checking_disabled);
        let query = &pending.query;
        let (result, upstream) = self
            .resolver
            .resolve(query, &pending.name, dnssec_ok, cd)
            .await;
        match result {
            Ok(mut answer) => {
                if !dnssec_ok {
                    // The recursor keeps signatures whatever the client asked.
                    answer.strip_dnssec(query.query_type());
                }
                // The name text the detector saw in `decide`: the key holds it
                // (made again only for a name too long to be a key).
                let qname = match &pending.key {
                    Some(k) => Cow::Borrowed(k.name()),
                    None => Cow::Owned(crate::name::name_text(query.name())),
                };
                let now = crate::querylog::now_ms();
                if self.detector.watches(now, &qname) {
                    // Answers of a watched domain: a command channel comes back here.
                    self.detector
                        .record_answer(now, &qname, |f| answer.carried(f));
                }
                let resolved = Cached::new(&answer, query.name(), query.query_type());
                if let Some(k) = &pending.key {
                    self.cache.insert(k, &resolved);
                }
                Ok(Fetched {
                    hit: Hit {
                        cached: Arc::new(resolved),
                        ttl_left: u32::MAX,
                        stale: false,
                    },
                    source: Source::Upstream(upstream),
                    answer: Some(answer),
                })
            }
            Err(e) => self
                .fail(pending.key.as_ref(), query.name(), e)
                .map(|hit| Fetched {
                    hit,
                    source: Source::Stale,
                    answer: None,
                }),
        }
    }

    fn fail(&self, key: Option<&Key>, name: &Name, e: ResolveError) -> Result<Hit, Source> {
        // Bogus data is an attack or a broken zone, not an outage: no stale answer.
        let stale = match e {
            ResolveError::Bogus => None,
            _ => key.and_then(|k| self.cache.get_stale(k)),
        };
        if let Some(hit) = stale {
            tracing::debug!(%name, error = %e, "serving stale answer");
            return Ok(hit);
        }
        tracing::debug!(%name, error = %e, "resolution failed");
        Err(Source::Failed((&e).into(), e.to_string()))
    }
}
