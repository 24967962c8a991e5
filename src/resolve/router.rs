//! Picks who resolves a name: a conditional-forwarding zone's own upstreams
//! (longest matching zone wins), otherwise the main resolver (forwarder or
//! recursor), and bounds every attempt by the configured timeout so a dead
//! upstream costs SERVFAIL within that time, never a hang.

use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::Query;
use hickory_proto::rr::LowerName;

use super::forward::Forwarder;
use super::recursive::Recursive;
use super::{Answer, DnssecBits, ResolveError};
use super::{Mode, ResolverConfig};

/// The main resolver.
enum Main {
    Forward(Forwarder),
    Recursive(Arc<Recursive>),
}

/// How long past the timeout a forwarder, which keeps to it itself, may take
/// before it is cut off.
const FORWARDER_GRACE: Duration = Duration::from_millis(100);

/// Routes queries to the right upstream.
pub struct Router {
    zones: Vec<(LowerName, Forwarder)>,
    main: Main,
    timeout: Duration,
}

impl Router {
    /// Builds every upstream named in `[resolver]`.
    pub fn new(cfg: &ResolverConfig) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let per_upstream = Duration::from_millis(cfg.upstream_timeout_ms.min(cfg.timeout_ms));
        let tls = super::forward::tls_client_config(cfg)?;
        let forwarder =
            |upstreams| Forwarder::new(upstreams, cfg.strategy, per_upstream, timeout, &tls);
        let main = match cfg.mode {
            Mode::Forward => Main::Forward(forwarder(&cfg.upstreams)),
            Mode::Recursive => Main::Recursive(Arc::new(Recursive::new(cfg)?)),
        };
        let mut zones = Vec::new();
        for z in &cfg.forward_zones {
            let name = crate::name::parse_name(&z.zone).map_err(|e| anyhow::anyhow!(e))?;
            zones.push((LowerName::new(&name), forwarder(&z.upstreams)));
        }
        // Longest zone first, so `a.lan` wins over `lan`.
        zones.sort_by_key(|(z, _)| std::cmp::Reverse(z.num_labels()));
        Ok(Self {
            zones,
            main,
            timeout,
        })
    }

    /// Resolves `query`, returning the answer and a label naming who answered.
    /// Bounded by `resolver.timeout_ms`.
    pub async fn resolve(
        &self,
        query: &Query,
        name: &LowerName,
        dnssec_ok: bool,
        checking_disabled: bool,
    ) -> (Result<Answer, ResolveError>, Arc<str>) {
        let zone = self.zones.iter().find(|(z, _)| z.zone_of(name));
        // A forwarder keeps to the timeout itself, and says which upstream failed
        // and why (its own deadline comes first); this bound is a safety net.
        let forwarded = zone.is_some() || matches!(self.main, Main::Forward(_));
        let bound = if forwarded {
            self.timeout + FORWARDER_GRACE
        } else {
            self.timeout
        };
        let work = async {
            match (zone, &self.main) {
                (Some((_, fwd)), _) | (None, Main::Forward(fwd)) => {
                    let bits = DnssecBits {
                        dnssec_ok,
                        checking_disabled,
                    };
                    fwd.resolve(query, bits).await
                }
                (None, Main::Recursive(rec)) => (
                    rec.resolve(query, dnssec_ok, checking_disabled).await,
                    Arc::from("recursive"),
                ),
            }
        };
        match tokio::time::timeout(bound, work).await {
            Ok(r) => r,
            Err(_) => (
                Err(ResolveError::Timeout(self.timeout.as_millis() as u64)),
                Arc::from("timeout"),
            ),
        }
    }
}
