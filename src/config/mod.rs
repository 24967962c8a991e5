//! The configuration file: TOML, every field defaulted, unknown keys rejected.
//!
//! `dnsguard serve` with no `--config` uses [`EMBEDDED_DEFAULT`], a commented file
//! compiled into the binary, so a newcomer runs dnsguard without writing one.
//! Parsing goes raw TOML → typed [`Config`] (serde reports the key and line of a
//! bad value) → [`Config::validate`] (cross-field checks that serde cannot express).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

pub mod edit;
mod web;

pub use web::WebConfig;

use crate::detect::DetectConfig;
use crate::dns::ServerConfig;
use crate::filter::{GroupConfig, ListConfig};
use crate::lists::{ListSource, UpdateConfig};
use crate::querylog::QueryLogConfig;
use crate::resolve::cache::CacheConfig;
use crate::resolve::local::LocalConfig;
use crate::resolve::{Mode, ResolverConfig};

/// The configuration compiled into the binary and used when no file is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../dnsguard.toml");

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners and who may use them.
    pub server: ServerConfig,
    /// How names that are not blocked or local get answered.
    pub resolver: ResolverConfig,
    /// The answer cache in front of the resolver.
    pub cache: CacheConfig,
    /// Names answered from configuration and hosts files.
    pub local: LocalConfig,
    /// Block and allow lists (`[[lists]]`).
    pub lists: Vec<ListConfig>,
    /// How URL lists are downloaded and how often.
    pub list_updates: UpdateConfig,
    /// Client groups with their own lists, entries and block mode (`[[groups]]`).
    pub groups: Vec<GroupConfig>,
    /// Named clients and how they are recognised (`[[clients]]`, `crate::identity`).
    pub clients: Vec<crate::identity::ClientConfig>,
    /// DNS-tunnel detection.
    pub detect: DetectConfig,
    /// The query log (stored under `server.data_dir/querylog`).
    pub query_log: QueryLogConfig,
    /// The HTTP API.
    pub web: WebConfig,
    /// The certificate of the encrypted listeners (`[tls]`).
    pub tls: crate::cert::TlsConfig,
    /// DNS-rebinding protection: private and metadata addresses in public answers.
    pub rebinding: crate::rebinding::RebindingConfig,
    /// Where egress-guard alerts go (webhook, syslog, JSON-lines file).
    pub alerts: crate::guard::alerts::AlertsConfig,
    /// nftables set sync of answered addresses.
    pub firewall: crate::guard::nft::FirewallConfig,
    /// dnstap output of every answered query (`[dnstap]`, off without a target).
    pub dnstap: crate::dnstap::DnstapConfig,
    /// This node's place in a highly available pair (`[cluster]`).
    pub cluster: crate::cluster::ClusterConfig,
}

/// A configuration that could not be used; the message names the key and, where known, the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or a value of the wrong shape (the message carries line and key).
    #[error("{origin}: {message}")]
    Parse {
        /// The file name, or "embedded default".
        origin: String,
        /// toml's message, with line, column and key.
        message: String,
    },
    /// A value that parses but does not make sense.
    #[error("{origin}: {}{key}: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Invalid {
        /// The file name, or "embedded default".
        origin: String,
        /// The 1-based line of the key, when it is in the text.
        line: Option<usize>,
        /// The key, e.g. `resolver.upstreams`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::parse(EMBEDDED_DEFAULT, "embedded default")
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Self::parse(&text, &path.display().to_string())?;
        cfg.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    /// The first problem in file order is the one reported.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: earliest_parse_error(text, e)
                .to_string()
                .trim_end()
                .to_owned(),
        })?;
        let problems = cfg.validate();
        let located = problems.into_iter().map(|(key, message)| {
            let line = line_of(text, &key);
            (line, key, message)
        });
        // Unlocated problems (keys not in the text: defaults) sort last.
        if let Some((line, key, message)) = located.min_by_key(|(l, ..)| l.unwrap_or(usize::MAX)) {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                line,
                key,
                message,
            });
        }
        Ok(cfg)
    }

    /// What the DNS pipeline takes from this configuration at start.
    pub fn pipeline(&self) -> crate::pipeline::Settings {
        crate::pipeline::Settings {
            allow_clients: self.server.allow_clients.clone(),
            trusted_forwarders: self.server.trusted_forwarders.clone(),
            allow_authenticated_anywhere: self.server.allow_authenticated_anywhere,
            detect: self.detect.clone(),
            cache: self.cache.clone(),
            rebinding: self.rebinding.clone(),
            resolver: self.resolver.clone(),
        }
    }

    /// What the pipeline's policy takes from this configuration besides the filter
    /// compiled from it (at start and on every reload).
    pub fn policy(&self) -> crate::pipeline::PolicySettings {
        crate::pipeline::PolicySettings {
            groups: self.groups.clone(),
            tunnel_actions: (self.groups.iter())
                .map(|g| (g.name.clone(), g.tunnel_actions(&self.detect)))
                .collect(),
            default_tunnel_actions: self.detect.actions(),
            clients: self.clients.clone(),
            list_names: self.lists.iter().map(|l| l.name.clone()).collect(),
            local: self.local.clone(),
            forward_zones: (self.resolver.forward_zones.iter())
                .map(|z| z.zone.clone())
                .collect(),
        }
    }

    /// What the egress guard takes from this configuration.
    pub fn guard(&self) -> crate::guard::GuardSettings {
        crate::guard::GuardSettings {
            dir: self.server.data_dir.join("guard"),
            alerts: self.alerts.clone(),
            firewall: self.firewall.clone(),
            rules: self.guard_rules(),
        }
    }

    /// The egress guard's per-group rules and list categories (what a reload changes).
    pub fn guard_rules(&self) -> crate::guard::Rules {
        crate::guard::Rules::new(&self.groups, &self.firewall, self.guard_categories())
    }

    /// Which lists are exfiltration and bypass lists, and the canary names, for
    /// alerts and the weekly report.
    pub fn guard_categories(&self) -> crate::guard::Categories {
        crate::guard::Categories::new(&self.lists, self.local.bypass_canaries)
    }

    /// Relative paths in a file are relative to the file's directory, not to wherever
    /// dnsguard was started.
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.server.data_dir);
        self.alerts.file.as_mut().map(fix);
        self.resolver.tls_ca_file.as_mut().map(fix);
        self.resolver.tls_client_cert_file.as_mut().map(fix);
        self.resolver.tls_client_key_file.as_mut().map(fix);
        self.resolver.trust_anchor_file.as_mut().map(fix);
        self.tls.cert_file.as_mut().map(fix);
        self.tls.key_file.as_mut().map(fix);
        self.cluster.token_file.as_mut().map(fix);
        self.local.hosts_files.iter_mut().for_each(fix);
        self.list_updates.allowed_dirs.iter_mut().for_each(fix);
        for list in &mut self.lists {
            if let ListSource::File(p) = ListSource::of(&list.source)
                && p.is_relative()
            {
                list.source = base.join(p).display().to_string();
            }
        }
    }

    /// Cross-field checks: (key, message) of every problem found.
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = self.cluster.validate();
        let mut bad = |k: &str, m: String| problems.push((k.to_owned(), m));
        if self.server.listen.is_empty() {
            bad("server.listen", "at least one address is needed".into());
        }
        if self.server.allow_clients.is_empty() {
            bad(
                "server.allow_clients",
                "no client could use dnsguard; list at least one network".into(),
            );
        }
        if self.server.tcp_idle_timeout_secs == 0 {
            bad("server.tcp_idle_timeout_secs", "must be at least 1".into());
        }
        if self.server.tcp_max_connections == 0 {
            bad("server.tcp_max_connections", "must be at least 1".into());
        }
        if self.server.tcp_max_connections_per_client == 0 {
            bad(
                "server.tcp_max_connections_per_client",
                "must be at least 1".into(),
            );
        }
        if let Err((k, m)) = self.server.rate_limit.validate() {
            bad(&k, m);
        }
        let r = &self.resolver;
        for pin in &r.tls_pins {
            if !crate::pki::is_pin(pin) {
                bad(
                    "resolver.tls_pins",
                    format!(
                        "{pin:?} is not a base64 SHA-256 SPKI pin (44 characters, as dnsguard logs spki_pin)"
                    ),
                );
            }
        }
        if r.tls_client_cert_file.is_some() != r.tls_client_key_file.is_some() {
            bad(
                "resolver.tls_client_cert_file",
                "needs tls_client_key_file too (and the other way round)".into(),
            );
        }
        if r.mode == Mode::Forward && r.upstreams.is_empty() {
            bad(
                "resolver.upstreams",
                "forward mode needs at least one upstream".into(),
            );
        }
        if r.mode == Mode::Recursive && r.root_hints.is_empty() {
            bad(
                "resolver.root_hints",
                "recursive mode needs at least one root server".into(),
            );
        }
        if r.timeout_ms == 0 || r.timeout_ms > 60_000 {
            bad(
                "resolver.timeout_ms",
                format!("{} is out of range 1..=60000", r.timeout_ms),
            );
        }
        if r.upstream_timeout_ms == 0 {
            bad("resolver.upstream_timeout_ms", "must be at least 1".into());
        }
        for (i, z) in r.forward_zones.iter().enumerate() {
            let key = format!("resolver.forward_zones[{i}]");
            if crate::name::parse_name(&z.zone).is_err() {
                bad(&key, format!("zone {:?} is not a domain name", z.zone));
            }
            if z.upstreams.is_empty() {
                bad(&key, format!("zone {:?} has no upstreams", z.zone));
            }
        }
        if self.cache.min_ttl > self.cache.max_ttl {
            bad(
                "cache.min_ttl",
                format!(
                    "{} is larger than cache.max_ttl {}",
                    self.cache.min_ttl, self.cache.max_ttl
                ),
            );
        }
        for (i, line) in self.local.records.iter().enumerate() {
            if let Err(e) = crate::resolve::local::LocalRecord::from_str(line) {
                bad(&format!("local.records[{i}]"), e.to_string());
            }
        }
        for (i, list) in self.lists.iter().enumerate() {
            let key = format!("lists[{i}] ({:?})", list.name);
            match ListSource::of(&list.source) {
                _ if list.source.is_empty() => bad(&key, "source is empty".into()),
                ListSource::Builtin(name) if crate::lists::builtin(name).is_none() => {
                    let known: Vec<_> = crate::lists::BUILTIN.iter().map(|(n, _)| *n).collect();
                    bad(&key, format!("unknown builtin:{name}; known: {known:?}"));
                }
                _ => {}
            }
        }
        if let Some(url) = &self.alerts.webhook_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bad(
                "alerts.webhook_url",
                format!("{url:?} is not an http(s) URL"),
            );
        }
        if self.firewall.enabled && self.firewall.command.is_empty() {
            bad("firewall.command", "needs at least the program".into());
        }
        for g in &self.firewall.groups {
            if g != crate::filter::DEFAULT_GROUP && !self.groups.iter().any(|x| x.name == *g) {
                bad("firewall.groups", format!("unknown group {g:?}"));
            }
        }
        if let Err(e) = crate::detect::Detector::new(&self.detect) {
            bad("detect", e.to_string());
        }
        // Compiling with no list text checks names, groups, selectors and block modes.
        match crate::filter::Filter::build(&self.lists, &self.groups, &[]) {
            Err(e) => bad(&self.filter_error_key(&e), e.to_string()),
            Ok(filter) => {
                let ids = crate::identity::Identities::build(&self.clients, &self.groups, &filter);
                if let Err(e) = ids {
                    bad(&e.key, e.why);
                }
            }
        }
        problems
    }

    /// The key a filter error is about, e.g. `groups[2].clients[0]`, so that its
    /// line can be found.
    fn filter_error_key(&self, e: &crate::filter::FilterError) -> String {
        use crate::filter::FilterError as E;
        let list = |name: &str| self.lists.iter().rposition(|l| l.name == name);
        let group = |name: &str| self.groups.iter().rposition(|g| g.name == name);
        let at = |what: &str, i: Option<usize>, rest: &str| match i {
            Some(i) => format!("{what}[{i}]{rest}"),
            None => what.to_owned(),
        };
        match e {
            E::DuplicateList(n) => at("lists", list(n), ""),
            E::EmptyListName(_) => at("lists", list(""), ""),
            E::UnknownGroup { list: l, .. } => at("lists", list(l), ".groups"),
            E::DuplicateGroup(n) => at("groups", group(n), ""),
            E::EmptyGroupName => at("groups", group(""), ""),
            E::BadClient { group: g, value } => {
                let i = group(g);
                let j = i.and_then(|i| self.groups[i].clients.iter().position(|c| c == value));
                at(
                    "groups",
                    i,
                    &j.map_or(".clients".into(), |j| format!(".clients[{j}]")),
                )
            }
            E::ClientInTwoGroups { second, .. } => at("groups", group(second), ".clients"),
            E::BadBlockIps { group: g, .. } => at("groups", group(g), ".block_ips"),
            E::BadEntry {
                group: g,
                field,
                entry,
                ..
            } => {
                let i = group(g);
                let entries = i.map(|i| match *field {
                    "allow" => &self.groups[i].allow,
                    _ => &self.groups[i].deny,
                });
                let j = entries.and_then(|e| e.iter().position(|x| x == entry));
                let rest = j.map_or(format!(".{field}"), |j| format!(".{field}[{j}]"));
                at("groups", i, &rest)
            }
            E::TooManyGroups(_) | E::Compile { .. } => "groups".into(),
        }
    }
}

/// The first error in file order of a file that does not deserialize. serde meets
/// a file's tables and keys in its own order, not the file's; the shortest
/// complete prefix of the text that fails holds the first problem, at the same
/// line. Prefixes that fail only for a field the rest of the file supplies do not
/// count.
fn earliest_parse_error(text: &str, whole: toml::de::Error) -> toml::de::Error {
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        end += line.len();
        let prefix = &text[..end];
        if end == text.len() || toml_edit::Document::parse(prefix).is_err() {
            continue; // the whole text, or inside a multi-line value
        }
        match toml::from_str::<Config>(prefix) {
            Err(e) if !e.message().starts_with("missing field") => return e,
            _ => {}
        }
    }
    whole
}

/// The 1-based line of `key` (`a.b[2].c`, anything after a space ignored) in
/// `text`, or of the deepest part of it that is there.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let path = key.split(' ').next().unwrap_or(key);
    let mut span = None;
    let mut item: Option<&toml_edit::Item> = None;
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let next = match item {
            None => doc.get(name),
            Some(it) => it.get(name),
        };
        let Some(mut next) = next else { break };
        span = next.span().or(span);
        if let Some(i) = index {
            match next.get(i) {
                Some(el) => {
                    span = el.span().or(span);
                    next = el;
                }
                None => break,
            }
        }
        item = Some(next);
    }
    let start = span?.start;
    Some(text[..start.min(text.len())].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::DEFAULT_LOG;

    fn err(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn embedded_default_parses_and_is_safe() {
        let cfg = Config::embedded().unwrap();
        assert_eq!(cfg.server.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(cfg.resolver.mode, Mode::Forward);
        assert!(matches!(
            cfg.resolver.upstreams[0].transport,
            crate::resolve::spec::Transport::Tls { .. }
        ));
        assert_eq!(cfg.resolver.timeout_ms, 2000);
        // Not an open resolver: a public address is not in the allowed networks.
        let public: std::net::IpAddr = "8.8.8.8".parse().unwrap();
        assert!(!cfg.server.allow_clients.iter().any(|n| n.contains(&public)));
        // An empty file means every default.
        let empty = Config::parse("", "empty").unwrap();
        assert_eq!(empty.server.listen, cfg.server.listen);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err("[server]\nlisten = [\"127.0.0.1:53\"]\nlissten = 1\n");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("lissten"), "{e}");
        let e = err("[serverr]\n");
        assert!(e.contains("serverr") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let e = err("[server]\nlisten = [\"127.0.0.1\"]\n");
        assert!(e.contains("line 2") && e.contains("listen"), "{e}");
        let e = err("[server]\nallow_clients = [\"10.0.0.0/33\"]\n");
        assert!(e.contains("line 2"), "{e}");
        let e = err("[resolver]\nupstreams = [\"tls://9.9.9.9\"]\n");
        assert!(e.contains("line 2") && e.contains("server-name"), "{e}");
        let e = err("[resolver]\nmode = \"sideways\"\n");
        assert!(e.contains("line 2") && e.contains("mode"), "{e}");
        let e = err("[cache]\nmax_entries = -1\n");
        assert!(e.contains("line 2") && e.contains("max_entries"), "{e}");
        let e = err("[server\n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn tcp_bounds_and_rate_limit_parse_and_validate() {
        let cfg = Config::embedded().unwrap();
        assert_eq!(
            cfg.server.log, DEFAULT_LOG,
            "dnsguard.toml spells out the default filter"
        );
        // The embedded file spells out the defaults.
        let d = ServerConfig::default();
        assert_eq!(cfg.server.rate_limit, d.rate_limit);
        assert_eq!(cfg.server.tcp_max_connections, d.tcp_max_connections);
        assert_eq!(
            cfg.server.tcp_max_connections_per_client,
            d.tcp_max_connections_per_client
        );
        let c = Config::parse(
            "[server]\ntcp_max_connections = 7\n[server.rate_limit]\nslip = 0\nipv6_prefix = 64\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.server.tcp_max_connections, 7);
        assert_eq!(
            (c.server.rate_limit.slip, c.server.rate_limit.ipv6_prefix),
            (0, 64)
        );
        for (text, key) in [
            (
                "[server]\ntcp_max_connections = 0\n",
                "server.tcp_max_connections",
            ),
            (
                "[server]\ntcp_max_connections_per_client = 0\n",
                "server.tcp_max_connections_per_client",
            ),
            (
                "[server]\ntcp_idle_timeout_secs = 0\n",
                "server.tcp_idle_timeout_secs",
            ),
            (
                "[server.rate_limit]\nipv4_prefix = 40\n",
                "server.rate_limit.ipv4_prefix",
            ),
            (
                "[server.rate_limit]\nburst = 0\n",
                "server.rate_limit.burst",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(key), "{text}: {e}");
        }
        assert!(err("[server.rate_limit]\nrate = 5\n").contains("rate"));
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let e = err("[resolver]\nupstreams = []\n");
        assert!(e.contains("resolver.upstreams"), "{e}");
        let e = err("[resolver]\ntimeout_ms = 0\n");
        assert!(e.contains("resolver.timeout_ms"), "{e}");
        let e = err("[cache]\nmin_ttl = 10\nmax_ttl = 5\n");
        assert!(e.contains("cache.min_ttl"), "{e}");
        let e = err("[local]\nrecords = [\"nas.lan A 300.1.1.1\"]\n");
        assert!(e.contains("local.records[0]"), "{e}");
        let e = err("[[resolver.forward_zones]]\nzone = \"lan\"\nupstreams = []\n");
        assert!(e.contains("resolver.forward_zones[0]"), "{e}");
        let e = err("[server]\nallow_clients = []\n");
        assert!(e.contains("server.allow_clients"), "{e}");
    }

    #[test]
    fn the_first_problem_in_file_order_is_reported() {
        // serde meets `cache` before `server`: the type error on line 5 came first.
        let e = err(
            "[server]\nlisten = [\"127.0.0.1:5300\"]\nlissten = 1\n[cache]\nmax_entries = \"x\"\n",
        );
        assert!(e.contains("line 3") && e.contains("lissten"), "{e}");
        let e = err("[server]\ntcp_idle_timeout_secs = \"x\"\nallow_clientz = 1\n");
        assert!(
            e.contains("line 2") && e.contains("tcp_idle_timeout_secs"),
            "{e}"
        );
        // A multi-line array before the problem is no false alarm.
        let e = err("[local]\nrecords = [\n  \"nas.lan A 10.0.0.1\",\n]\nttl = \"long\"\n");
        assert!(e.contains("line 5") && e.contains("ttl"), "{e}");
        // [[groups]] need a name: a prefix cut before it is not the problem.
        let e = err("[[groups]]\nclients = [\"10.0.0.1\"]\nname = \"a\"\nbogus = 1\n");
        assert!(e.contains("line 4") && e.contains("bogus"), "{e}");
    }

    #[test]
    fn semantic_errors_give_key_and_line_in_file_order() {
        let e = err("[cache]\nmin_ttl = 10\nmax_ttl = 5\n[server]\nallow_clients = []\n");
        assert!(e.contains("line 2: cache.min_ttl"), "{e}");
        let e = err("[server]\nallow_clients = []\n[cache]\nmin_ttl = 10\nmax_ttl = 5\n");
        assert!(e.contains("line 2: server.allow_clients"), "{e}");
        let e = err("[[groups]]\nname = \"a\"\n\nclients = [\"10.0.0.1\", \"10.0.0.300/8\"]\n");
        assert!(e.contains("line 4: groups[0].clients[1]"), "{e}");
        assert!(e.contains("10.0.0.300/8"), "{e}");
        let e = err(
            "[[groups]]\nname = \"x\"\n[[groups]]\nname = \"y\"\ndeny = [\"a.com\",\n  \"||b^$bogus\"]\n",
        );
        assert!(e.contains("line 6: groups[1].deny[1]"), "{e}");
        let e = err("[[lists]]\nname = \"l\"\nsource = \"builtin:nope\"\n");
        assert!(e.contains("line 1: lists[0]"), "{e}");
        let e =
            err("[[lists]]\nname = \"l\"\nsource = \"builtin:default\"\ngroups = [\"ghost\"]\n");
        assert!(e.contains("line 4: lists[0].groups"), "{e}");
    }

    #[test]
    fn egress_guard_keys() {
        let cfg = Config::parse(
            "[[groups]]\nname = \"agents\"\nclients = [\"10.0.5.0/24\"]\nmode = \"learn\"\ndefault_deny = true\n\
             [[groups]]\nname = \"lab\"\nmode = \"enforce\"\nalert_new_domains = false\n\
             [[groups]]\nname = \"office\"\n\
             [alerts]\nwebhook_url = \"https://hooks.example/x\"\nsyslog = \"127.0.0.1:514\"\n\
             [firewall]\nenabled = true\ngroups = [\"agents\"]\n",
            "t",
        )
        .unwrap();
        let g = |n: &str| cfg.groups.iter().find(|g| g.name == n).unwrap();
        // learn resolves everything (even with default_deny) and watches new domains.
        assert!(!g("agents").denies_by_default() && g("agents").watches_new_domains());
        assert!(g("lab").denies_by_default() && !g("lab").watches_new_domains());
        assert!(!g("office").denies_by_default() && !g("office").watches_new_domains());
        assert_eq!(cfg.alerts.webhook_retries, 5);
        assert_eq!(cfg.firewall.set_v4, "dnsguard_allowed");
        assert_eq!(cfg.rebinding.always_block.len(), 2);
        let e = err("[alerts]\nwebhook_url = \"ftp://x\"\n");
        assert!(e.contains("alerts.webhook_url"), "{e}");
        let e = err("[firewall]\nenabled = true\ngroups = [\"nope\"]\n");
        assert!(e.contains("firewall.groups") && e.contains("nope"), "{e}");
        let e = err("[[groups]]\nname = \"a\"\nmode = \"observe\"\n");
        assert!(e.contains("mode"), "{e}");
        let e = err("[[groups]]\nname = \"a\"\nallow = [\"10.0.0.0/8\"]\n");
        assert!(e.contains("only block"), "{e}");
    }

    #[test]
    fn the_pipeline_and_its_policy_get_their_sections_and_no_more() {
        use crate::detect::{Actions, TunnelAction};
        let cfg = Config::parse(
            "[server]\nallow_clients = [\"10.0.0.0/8\"]\ntrusted_forwarders = [\"10.0.0.1/32\"]\n\
             allow_authenticated_anywhere = true\n\
             [detect]\naction = \"quarantine\"\nwatch = [\"tunnel.example\"]\n\
             [cache]\nmax_entries = 77\n\
             [rebinding]\nallow = [\"corp.example\"]\n\
             [[resolver.forward_zones]]\nzone = \"lan\"\nupstreams = [\"10.0.0.1\"]\n\
             [local]\nrecords = [\"nas.home.arpa A 10.0.0.5\"]\n\
             [[lists]]\nname = \"second\"\nsource = \"builtin:exfil\"\n\
             [[lists]]\nname = \"first\"\nsource = \"builtin:default\"\n\
             [[groups]]\nname = \"kids\"\nclients = [\"10.0.0.9\"]\ntunnel_action = \"block\"\n\
             [[groups]]\nname = \"office\"\nclients = [\"10.0.1.0/24\"]\n\
             [[clients]]\nname = \"laptop\"\nids = [\"laptop\"]\n",
            "t",
        )
        .unwrap();
        let s = cfg.pipeline();
        assert_eq!(s.allow_clients, ["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(s.trusted_forwarders, ["10.0.0.1/32".parse().unwrap()]);
        assert!(s.allow_authenticated_anywhere);
        assert_eq!(s.detect, cfg.detect);
        assert_eq!(s.cache.max_entries, 77);
        assert_eq!(s.rebinding.allow, ["corp.example"]);
        assert_eq!(s.resolver.forward_zones[0].zone, "lan");

        let p = cfg.policy();
        // Each group's own actions; a group without an entry takes [detect]'s.
        let quarantine = Actions::all(TunnelAction::Quarantine);
        assert_eq!(
            p.tunnel_actions,
            [
                ("kids".to_owned(), Actions::all(TunnelAction::Block)),
                ("office".to_owned(), quarantine),
            ]
        );
        assert_eq!(p.default_tunnel_actions, quarantine);
        assert_eq!(p.groups, cfg.groups);
        assert_eq!(p.clients, cfg.clients);
        // In file order: the filter numbers its lists so.
        assert_eq!(p.list_names, ["second", "first"]);
        assert_eq!(p.local.records, cfg.local.records);
        assert_eq!(p.forward_zones, ["lan"]);
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.toml");
        std::fs::write(&path, "[server]\ndata_dir = \"state\"\n").unwrap();
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.server.data_dir, dir.path().join("state"));
        let e = Config::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }
}
