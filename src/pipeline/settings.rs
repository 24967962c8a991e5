//! What the pipeline takes from the configuration: [`Settings`] once at start
//! (`Pipeline::new`), [`PolicySettings`] on every reload (`Policy::new`). Both
//! are plain values that `config` builds from a validated file
//! (`Config::pipeline`, `Config::policy`), so the pipeline sits below `config`
//! and never sees the whole file.

use ipnet::IpNet;

use crate::detect::{self, DetectConfig};
use crate::filter::GroupConfig;
use crate::identity::ClientConfig;
use crate::rebinding::RebindingConfig;
use crate::resolve::ResolverConfig;
use crate::resolve::cache::CacheConfig;
use crate::resolve::local::LocalConfig;

/// What the pipeline's steps are built from, once.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `[server] allow_clients`: who gets answers (step 1).
    pub allow_clients: Vec<IpNet>,
    /// `[server] trusted_forwarders`: whose EDNS identity options count.
    pub trusted_forwarders: Vec<IpNet>,
    /// `[server] allow_authenticated_anywhere`: a proven client passes step 1
    /// from any network.
    pub allow_authenticated_anywhere: bool,
    /// `[detect]`: the tunnel detector (step 4).
    pub detect: DetectConfig,
    /// `[cache]` (step 6).
    pub cache: CacheConfig,
    /// `[rebinding]` (step 8).
    pub rebinding: RebindingConfig,
    /// `[resolver]`: the router `Pipeline::new` builds (step 7); names under its
    /// conditional zones may be answered with private addresses (step 8).
    pub resolver: ResolverConfig,
}

/// What a [`super::Policy`] derives per group, list and client besides the
/// compiled filter.
#[derive(Debug, Clone, Default)]
pub struct PolicySettings {
    /// `[[groups]]`, for the identity selectors.
    pub groups: Vec<GroupConfig>,
    /// Per `[[groups]]` name, its tunnel actions under `[detect]`.
    pub tunnel_actions: Vec<(String, detect::Actions)>,
    /// The tunnel actions of a group without a `[[groups]]` entry (the default one).
    pub default_tunnel_actions: detect::Actions,
    /// `[[clients]]`.
    pub clients: Vec<ClientConfig>,
    /// The `[[lists]]` names in file order (the filter's list ids), for the log.
    pub list_names: Vec<String>,
    /// `[local]`: records, hosts files, canaries.
    pub local: LocalConfig,
    /// The `[resolver] forward_zones` names: a special-use name under one goes to
    /// its conditional forwarder.
    pub forward_zones: Vec<String>,
}
