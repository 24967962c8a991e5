//! `dnsguard stub`: a host's or container's plain DNS, forwarded to a dnsguard
//! over DoH or DoT with the agent's ClientID, so the agent gets its own policy and
//! encryption with no change to itself (like `cloudflared proxy-dns` or AdGuard's
//! dnsproxy).
//!
//! It is the same server as `dnsguard serve`, configured for one job: one
//! encrypted upstream and nothing else (no fallback to plain DNS or another
//! resolver), a small cache that also serves stale answers while the upstream
//! restarts, and no lists, query log or dashboard of its own: the dnsguard it
//! forwards to decides and records.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use crate::resolve::spec::UpstreamSpec;

/// What the stub was asked to do.
#[derive(Debug, Clone)]
pub struct StubArgs {
    /// Where plain DNS is answered (UDP and TCP).
    pub listen: Vec<SocketAddr>,
    /// The dnsguard to forward to (see [`target`]).
    pub to: String,
    /// SPKI pins of its certificate; empty: CAs decide.
    pub pins: Vec<String>,
    /// CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// The client certificate and key presented to the dnsguard (`dnsguard
    /// clients issue NAME --cert DIR` made them): a proven identity there.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Private state (the server's data directory).
    pub data_dir: PathBuf,
}

/// Why the stub cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StubError {
    /// `--to` is not a DoH or DoT URL.
    #[error("--to {0:?}: {1}")]
    Target(String, &'static str),
    /// The host name of `--to` has no address.
    #[error(
        "--to: cannot resolve {host:?} ({reason}); give its address instead, with the name \
         after '#': https://192.0.2.1:8443/dns-query/agent-1#{host}"
    )]
    Resolve {
        /// The name.
        host: String,
        /// What the system resolver said.
        reason: String,
    },
    /// The configuration the stub made does not validate (a bad pin, say).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The upstream `to` names, in the config file's upstream syntax.
///
/// Accepted: `https://HOST[:port]/path` (the path carries the ClientID,
/// `/dns-query/agent-1`) and `tls://HOST[:port]` (the ClientID is the first label
/// of HOST, `agent-1.dns.example`), where HOST is an address or a name looked up
/// once, now; or the upstream syntax itself (`https://IP[:port]/path#NAME`,
/// `tls://IP[:port]#NAME`). Plain DNS is refused: the stub exists to encrypt.
pub fn target(to: &str) -> Result<UpstreamSpec, StubError> {
    let bad = |why| StubError::Target(to.to_owned(), why);
    let (scheme, rest) = to
        .split_once("://")
        .ok_or_else(|| bad("expected https://… or tls://…"))?;
    let default_port = match scheme {
        "https" => 443,
        "tls" => 853,
        _ => {
            return Err(bad(
                "the stub forwards over DoH (https://) or DoT (tls://) only",
            ));
        }
    };
    if rest.contains('#') {
        return to.parse().map_err(|_| {
            bad("not an upstream (https://IP[:port]/path#NAME or tls://IP[:port]#NAME)")
        });
    }
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if scheme == "tls" && !path.is_empty() {
        return Err(bad(
            "tls:// takes no path: put the ClientID in the host name",
        ));
    }
    let (host, port) =
        split_host_port(hostport, default_port).ok_or_else(|| bad("bad host or port"))?;
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => (host, port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut a| a.next().ok_or_else(|| "no address".to_owned()))
            .map_err(|reason| StubError::Resolve {
                host: host.to_owned(),
                reason,
            })?,
    };
    let spec = format!("{scheme}://{addr}{path}#{host}");
    spec.parse().map_err(|_| bad("not a valid upstream"))
}

/// `host` and port of `HOST[:port]` / `[v6][:port]`.
fn split_host_port(s: &str, default_port: u16) -> Option<(&str, u16)> {
    if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host, port));
    }
    match s.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => Some((host, p.parse().ok()?)),
        Some(_) => None,
        None if !s.is_empty() => Some((s, default_port)),
        None => None,
    }
}

/// The server configuration of a stub.
pub fn config(args: &StubArgs) -> Result<Config, StubError> {
    let upstream = target(&args.to)?;
    let mut t = toml::Table::new();
    let list =
        |v: Vec<String>| toml::Value::Array(v.into_iter().map(toml::Value::String).collect());
    let table = |pairs: Vec<(&str, toml::Value)>| {
        toml::Value::Table(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    };
    t.insert(
        "server".into(),
        table(vec![
            (
                "listen",
                list(args.listen.iter().map(ToString::to_string).collect()),
            ),
            ("data_dir", path_value(&args.data_dir)),
            ("log", toml::Value::String(crate::dns::DEFAULT_LOG.into())),
        ]),
    );
    let mut resolver = vec![
        ("mode", toml::Value::String("forward".into())),
        ("upstreams", list(vec![upstream.to_string()])),
        ("tls_pins", list(args.pins.clone())),
    ];
    if let Some(ca) = &args.ca_file {
        resolver.push(("tls_ca_file", path_value(ca)));
    }
    if let Some((cert, key)) = &args.client_cert {
        resolver.push(("tls_client_cert_file", path_value(cert)));
        resolver.push(("tls_client_key_file", path_value(key)));
    }
    t.insert("resolver".into(), table(resolver));
    // A few thousand answers: an agent's working set. Stale ones bridge an
    // upstream restart.
    t.insert(
        "cache".into(),
        table(vec![
            ("max_entries", toml::Value::Integer(4096)),
            ("serve_stale", toml::Value::Boolean(true)),
        ]),
    );
    let off = || table(vec![("enabled", toml::Value::Boolean(false))]);
    t.insert("query_log".into(), off());
    t.insert("web".into(), off());
    // The dnsguard upstream applies rebinding protection with its own exceptions
    // (local names); the stub passes its answers on as they are.
    t.insert("rebinding".into(), off());
    let text = toml::to_string(&t).expect("a TOML table serialises");
    Ok(Config::parse(&text, "dnsguard stub")?)
}

fn path_value(p: &Path) -> toml::Value {
    toml::Value::String(p.to_string_lossy().into_owned())
}

/// The stub's default data directory: systemd's `STATE_DIRECTORY`, else
/// `$XDG_STATE_HOME/dnsguard-stub`, `~/.local/state/dnsguard-stub`, or
/// `/var/lib/dnsguard-stub`.
pub fn default_data_dir() -> PathBuf {
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env("STATE_DIRECTORY") {
        return d;
    }
    if let Some(d) = env("XDG_STATE_HOME") {
        return d.join("dnsguard-stub");
    }
    if let Some(h) = env("HOME") {
        return h.join(".local/state/dnsguard-stub");
    }
    PathBuf::from("/var/lib/dnsguard-stub")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::spec::Transport;

    #[test]
    fn a_doh_url_keeps_its_client_id_path_and_names_the_host() {
        let u = target("https://127.0.0.1:8443/dns-query/agent-1").unwrap();
        assert_eq!(u.addr, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(
            u.transport,
            Transport::Https {
                server_name: "127.0.0.1".into(),
                path: "/dns-query/agent-1".into()
            }
        );
        let u = target("https://localhost/dns-query/a").unwrap();
        assert_eq!(u.addr.port(), 443);
        assert!(u.addr.ip().is_loopback());
        assert!(
            matches!(u.transport, Transport::Https { ref server_name, .. } if server_name == "localhost")
        );
    }

    #[test]
    fn a_dot_url_carries_the_client_id_in_its_server_name() {
        let u = target("tls://192.0.2.1#agent-1.dns.example").unwrap();
        assert_eq!(u.addr, "192.0.2.1:853".parse().unwrap());
        assert_eq!(
            u.transport,
            Transport::Tls {
                server_name: "agent-1.dns.example".into()
            }
        );
        let u = target("tls://[::1]:8853").unwrap();
        assert_eq!(u.addr, "[::1]:8853".parse().unwrap());
    }

    #[test]
    fn plain_dns_and_garbage_are_refused_with_the_reason() {
        for (to, why) in [
            ("127.0.0.1", "https://"),
            ("udp://127.0.0.1", "only"),
            ("tcp://127.0.0.1", "only"),
            ("tls://127.0.0.1/dns-query", "no path"),
            ("https://127.0.0.1:99999/dns-query", "port"),
            ("https://no-such-host.invalid/dns-query", "cannot resolve"),
        ] {
            let e = target(to).unwrap_err().to_string();
            assert!(e.contains(why), "{to}: {e}");
        }
    }

    #[test]
    fn the_config_has_one_encrypted_upstream_and_nothing_of_its_own() {
        let cfg = config(&StubArgs {
            listen: vec!["127.0.0.1:5399".parse().unwrap()],
            to: "https://127.0.0.1:8443/dns-query/agent-1".into(),
            pins: vec![],
            ca_file: None,
            client_cert: None,
            data_dir: "/tmp/x".into(),
        })
        .unwrap();
        assert_eq!(cfg.resolver.upstreams.len(), 1);
        assert!(cfg.lists.is_empty());
        assert!(!cfg.query_log.enabled && !cfg.web.enabled && !cfg.rebinding.enabled);
        assert!(cfg.server.tls_listen.is_empty());
        let bad_pin = config(&StubArgs {
            listen: vec!["127.0.0.1:5399".parse().unwrap()],
            to: "https://127.0.0.1:8443/dns-query".into(),
            pins: vec!["not-a-pin".into()],
            ca_file: None,
            client_cert: None,
            data_dir: "/tmp/x".into(),
        });
        assert!(bad_pin.unwrap_err().to_string().contains("tls_pins"));
    }

    #[test]
    fn a_client_certificate_goes_to_the_resolver_and_needs_its_key() {
        let cfg = config(&StubArgs {
            listen: vec!["127.0.0.1:5399".parse().unwrap()],
            to: "tls://127.0.0.1:8853".into(),
            pins: vec![],
            ca_file: None,
            client_cert: Some(("/agent/cert.pem".into(), "/agent/key.pem".into())),
            data_dir: "/tmp/x".into(),
        })
        .unwrap();
        assert_eq!(
            cfg.resolver.tls_client_cert_file.as_deref(),
            Some(Path::new("/agent/cert.pem"))
        );
        assert_eq!(
            cfg.resolver.tls_client_key_file.as_deref(),
            Some(Path::new("/agent/key.pem"))
        );
        let half = Config::parse(
            "[resolver]\nupstreams = [\"127.0.0.1\"]\ntls_client_cert_file = \"/agent/cert.pem\"\n",
            "test",
        );
        let e = half.unwrap_err().to_string();
        assert!(e.contains("resolver.tls_client_cert_file"), "{e}");
    }
}
