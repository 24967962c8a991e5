//! The HTTP side of a highly available pair (`crate::cluster`): the health check
//! keepalived asks, the primary's replicated state, the secondary's follower
//! that pulls it and applies it through [`crate::live::Live`], and the exchange
//! of the two nodes' seen sets (new-domain alerts once for the pair).

pub mod follow;
pub mod health;
pub mod seen;
pub mod state;

use crate::cluster::REPLICATED;

/// The 409 message for a configuration change on a secondary, or `None` when
/// this node may change its configuration.
pub fn refuse_edit(cfg: &crate::config::Config) -> Option<String> {
    cfg.cluster.primary.as_ref().map(|p| {
        format!(
            "this node is a secondary: {} are replicated from the primary {p}; change them there",
            REPLICATED.join(", ")
        )
    })
}
