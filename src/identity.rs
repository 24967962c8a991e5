//! Who a client is, beyond its source address. Agents share addresses (containers
//! on one host, a travel router's NAT), so a client may also be known by:
//! 1. a ClientID an encrypted front end saw (the DoH path, the first label of the
//!    TLS server name), with a secret when it proves it;
//! 2. what a forwarder in `[server] trusted_forwarders` added as EDNS options, and
//!    only such a forwarder: the MAC (option 65001, dnsmasq `add-mac`), the client
//!    subnet (option 8, RFC 7871, dnsmasq `add-subnet`), the CPE-ID (option 65074,
//!    dnsmasq `add-cpe-id`);
//! 3. its source address.
//!
//! `[[clients]]` names them; `[[groups]] clients` selects them with `id:NAME`,
//! `mac:aa:bb:cc:dd:ee:ff` and `client:NAME` besides IPs and CIDRs.
//!
//! Never widen: an identity nobody proved may only select a group at least as
//! strict as the group of its source address ([`Identities::at_least_as_strict`]),
//! otherwise the source's group applies and the log says why. A proven identity
//! may select any group: its secret's SHA-256 is the client's `secret_sha256`, or
//! the TLS client certificate it presented has an SPKI pin in the client's
//! `cert_pins` (the handshake proved it holds that key). A proven certificate
//! names its client whatever ClientID comes with it; a certificate nobody listed
//! changes nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;
use serde::Deserialize;

use crate::filter::policy::{ClientMap, Selector};
use crate::filter::{Filter, GroupConfig, GroupId};

/// What a client presented about who it is, before any check: the encrypted front
/// ends fill it, the identity step decides what it is worth.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presented {
    /// The ClientID: the DoH path's `/dns-query/<id>`, or the first label of the TLS
    /// server name (`<id>.dns.example.net`) for DoT and DoQ.
    pub client_id: Option<Box<str>>,
    /// A per-client secret: the DoH path's `/dns-query/<id>/<secret>` or an
    /// `Authorization: Bearer <secret>` header.
    pub secret: Option<Box<str>>,
    /// The SPKI digest of the TLS client certificate of the connection (DoT, DoH,
    /// DoQ), whose key the handshake proved the client holds.
    pub cert_pin: Option<[u8; 32]>,
}

impl Presented {
    /// What a TLS connection presented: the ClientID of its server name and the
    /// pin of its client certificate; `None` when neither.
    pub fn from_tls(server_name: Option<&str>, cert_pin: Option<[u8; 32]>) -> Option<Self> {
        let mut p = server_name.and_then(from_server_name).unwrap_or_default();
        p.cert_pin = cert_pin;
        (p != Presented::default()).then_some(p)
    }
}

/// EDNS option: client subnet (RFC 7871).
pub const OPTION_SUBNET: u16 = 8;
/// EDNS option: the client's MAC address, 6 raw bytes (dnsmasq `add-mac`).
pub const OPTION_MAC: u16 = 65001;
/// EDNS option: the CPE-ID (dnsmasq `add-cpe-id`).
pub const OPTION_CPE_ID: u16 = 65074;

/// Longest ClientID (a DNS label's limit is 63; AdGuard's ClientIDs allow 64).
const MAX_ID: usize = 64;

/// One `[[clients]]` entry: a named client and how it is recognised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Shown in the query log, stats and alerts; `client:NAME` in a group selects it.
    pub name: String,
    /// ClientIDs (`[a-z0-9-]{1,64}`): the DoH path's `/dns-query/<id>`, the TLS
    /// server name's first label, or a forwarder's CPE-ID.
    pub ids: Vec<String>,
    /// MAC addresses a trusted forwarder reports (`aa:bb:cc:dd:ee:ff`).
    pub macs: Vec<String>,
    /// Source addresses or networks (or the address in a trusted forwarder's
    /// client-subnet option).
    pub addresses: Vec<IpNet>,
    /// SHA-256 (hex) of the client's secret (`dnsguard clients issue NAME` makes
    /// one); a client presenting it is proven. Never the secret itself.
    pub secret_sha256: Option<String>,
    /// SPKI pins (base64 SHA-256, as `dnsguard clients issue NAME --cert DIR`
    /// prints) of the client's TLS certificates; a client presenting one of them
    /// on DoT, DoH or DoQ is proven. More than one: a key rollover.
    pub cert_pins: Vec<String>,
}

/// A MAC address.
pub type Mac = [u8; 6];

/// What a trusted forwarder said about the client behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// Option 65001.
    pub mac: Option<Mac>,
    /// The address in option 8.
    pub subnet: Option<IpAddr>,
    /// Option 65074, as a ClientID.
    pub cpe_id: Option<Box<str>>,
}

impl Forwarded {
    /// Reads the identity options among a query's EDNS options (code, data);
    /// malformed ones are ignored. `None` when there is none.
    pub fn from_options<'a>(options: impl IntoIterator<Item = (u16, &'a [u8])>) -> Option<Self> {
        let mut f = Forwarded::default();
        for (code, data) in options {
            match code {
                OPTION_MAC => f.mac = data.try_into().ok(),
                OPTION_CPE_ID => {
                    f.cpe_id = std::str::from_utf8(data)
                        .ok()
                        .and_then(client_id)
                        .map(Box::from)
                }
                _ => {}
            }
        }
        (f != Forwarded::default()).then_some(f)
    }
}

/// A valid ClientID in canonical (lower-case) form, or `None`.
pub fn client_id(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then(|| s.to_ascii_lowercase())
}

/// The ClientID in a TLS server name: its first label, when the name has at least
/// three labels (`agent-1.dns.example.net`; `dns.example.net` itself names no
/// client) and that label is a valid ClientID.
pub fn from_server_name(server_name: &str) -> Option<Presented> {
    let name = server_name.strip_suffix('.').unwrap_or(server_name);
    // kdig sends an IP address as the server name: that names no client.
    if name.parse::<std::net::IpAddr>().is_ok() || name.split('.').count() < 3 {
        return None;
    }
    let first = name.split('.').next()?;
    Some(Presented {
        client_id: Some(client_id(first)?.into_boxed_str()),
        ..Presented::default()
    })
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`), any case.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split([':', '-']);
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: &Mac) -> String {
    let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}

/// The index of a `[[clients]]` entry in [`Identities`].
pub type ClientIndex = u16;

/// What the identity step decided for one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The group whose policy applies.
    pub group: GroupId,
    /// The configured client recognised (and accepted), if any.
    pub client: Option<ClientIndex>,
    /// The client proved who it is (its secret or its certificate matched).
    pub proven: bool,
}

/// A bad `[[clients]]` entry or identity selector: the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct IdentityError {
    /// E.g. `clients[1].macs[0]`, `groups[2].clients[0]`.
    pub key: String,
    /// What is wrong.
    pub why: String,
}

/// What a query claims to be, for the log.
enum Subject<'a> {
    Certificate,
    ClientId(&'a str),
    Mac(Mac),
    Subnet(IpAddr),
    CpeId(&'a str),
}

impl std::fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Certificate => write!(f, "client certificate"),
            Subject::ClientId(id) => write!(f, "ClientID {id:?}"),
            Subject::Mac(m) => write!(f, "MAC {}", mac_text(m)),
            Subject::Subnet(ip) => write!(f, "client subnet {ip}"),
            Subject::CpeId(id) => write!(f, "CPE-ID {id:?}"),
        }
    }
}

/// One identity claimed by the query, before the never-widen check.
struct Claim<'a> {
    what: Subject<'a>,
    client: Option<ClientIndex>,
    group: Option<GroupId>,
    proven: bool,
}

/// `[[clients]]` and the identity selectors of `[[groups]]`, compiled; part of the
/// pipeline's policy, swapped with it on reload.
#[derive(Debug, Default)]
pub struct Identities {
    names: Vec<Arc<str>>,
    secrets: Vec<Option<[u8; 32]>>,
    by_id: HashMap<Box<str>, ClientIndex>,
    /// SPKI digest of a client certificate → its client.
    by_pin: HashMap<[u8; 32], ClientIndex>,
    by_mac: HashMap<Mac, ClientIndex>,
    /// Address → client (stored as `GroupId(index + 1)`; 0: none).
    by_address: ClientMap,
    has_addresses: bool,
    group_of_client: Vec<Option<GroupId>>,
    group_of_id: HashMap<Box<str>, GroupId>,
    group_of_mac: HashMap<Mac, GroupId>,
    /// Per client: [`Identities::selecting_group`], worked out once.
    proven_group: Vec<Option<GroupId>>,
    /// Per group: denies what is not allowlisted (`default_deny`, `mode = "enforce"`).
    strict: Vec<bool>,
}

impl Identities {
    /// Compiles `clients` and the identity selectors of `groups` against the
    /// groups of `filter`.
    pub fn build(
        clients: &[ClientConfig],
        groups: &[GroupConfig],
        filter: &Filter,
    ) -> Result<Self, IdentityError> {
        let err = |key: String, why: String| IdentityError { key, why };
        let mut ids = Identities::default();
        let mut addr_sel: Vec<Vec<String>> = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let at = |k: &str| format!("clients[{i}]{k}");
            if c.name.is_empty() {
                return Err(err(at(".name"), "a client needs a name".into()));
            }
            if ids.names.iter().any(|n| **n == *c.name) {
                return Err(err(at(".name"), format!("client {:?} twice", c.name)));
            }
            let index = ClientIndex::try_from(i)
                .map_err(|_| err("clients".into(), "too many clients".into()))?;
            for (j, id) in c.ids.iter().enumerate() {
                let Some(id) = client_id(id) else {
                    return Err(err(
                        at(&format!(".ids[{j}]")),
                        format!("{id:?} is not a ClientID ([a-z0-9-], 1 to 64)"),
                    ));
                };
                if ids.by_id.insert(id.clone().into(), index).is_some() {
                    return Err(err(
                        at(&format!(".ids[{j}]")),
                        format!("ClientID {id:?} belongs to two clients"),
                    ));
                }
            }
            for (j, m) in c.macs.iter().enumerate() {
                let key = at(&format!(".macs[{j}]"));
                let mac = parse_mac(m)
                    .ok_or_else(|| err(key.clone(), format!("{m:?} is not a MAC address")))?;
                if ids.by_mac.insert(mac, index).is_some() {
                    return Err(err(key, format!("MAC {m} belongs to two clients")));
                }
            }
            let secret = match &c.secret_sha256 {
                None => None,
                Some(hex) => Some(parse_sha256(hex).ok_or_else(|| {
                    err(
                        at(".secret_sha256"),
                        "expected 64 hex digits (the SHA-256 that `dnsguard clients issue` prints)"
                            .into(),
                    )
                })?),
            };
            for (j, pin) in c.cert_pins.iter().enumerate() {
                let key = at(&format!(".cert_pins[{j}]"));
                let digest = crate::pki::parse_pin(pin).ok_or_else(|| {
                    err(
                        key.clone(),
                        format!(
                            "{pin:?} is not an SPKI pin (base64 of a SHA-256, 44 characters, \
                             as `dnsguard clients issue NAME --cert DIR` prints)"
                        ),
                    )
                })?;
                if ids.by_pin.insert(digest, index).is_some() {
                    return Err(err(key, format!("pin {pin} belongs to two clients")));
                }
            }
            ids.names.push(Arc::from(c.name.as_str()));
            ids.secrets.push(secret);
            ids.group_of_client.push(None);
            addr_sel.push(c.addresses.iter().map(|n| n.to_string()).collect());
        }
        ids.has_addresses = addr_sel.iter().any(|a| !a.is_empty());
        ids.by_address = ClientMap::build(
            clients
                .iter()
                .zip(&addr_sel)
                .enumerate()
                .map(|(i, (c, a))| (i as u16 + 1, c.name.as_str(), a.as_slice())),
        )
        .map_err(|e| err("clients".into(), e.to_string().replace("group", "client")))?;

        let mut strict = vec![false; filter.group_count()];
        for (g, s) in strict.iter_mut().enumerate() {
            let name = filter.group_name(GroupId(g as u16));
            *s = groups
                .iter()
                .find(|c| c.name == name)
                .is_some_and(GroupConfig::denies_by_default);
        }
        ids.strict = strict;
        for (gi, g) in groups.iter().enumerate() {
            let Some(gid) = (0..filter.group_count())
                .map(|i| GroupId(i as u16))
                .find(|&id| filter.group_name(id) == g.name)
            else {
                continue;
            };
            for (j, sel) in g.clients.iter().enumerate() {
                let key = format!("groups[{gi}].clients[{j}]");
                let taken = |other: GroupId| {
                    err(
                        key.clone(),
                        format!(
                            "{sel:?} is in two groups: {:?} and {:?}",
                            filter.group_name(other),
                            g.name
                        ),
                    )
                };
                match Selector::parse(sel) {
                    None => {}
                    Some(Selector::Id(id)) => {
                        let id = client_id(id)
                            .ok_or_else(|| err(key.clone(), format!("{sel:?}: not a ClientID")))?;
                        if let Some(&other) = ids.group_of_id.get(id.as_str())
                            && other != gid
                        {
                            return Err(taken(other));
                        }
                        ids.group_of_id.insert(id.into(), gid);
                    }
                    Some(Selector::Mac(m)) => {
                        let mac = parse_mac(m).ok_or_else(|| {
                            err(key.clone(), format!("{sel:?}: not a MAC address"))
                        })?;
                        if let Some(&other) = ids.group_of_mac.get(&mac)
                            && other != gid
                        {
                            return Err(taken(other));
                        }
                        ids.group_of_mac.insert(mac, gid);
                    }
                    Some(Selector::Client(name)) => {
                        let c = ids.index(name).ok_or_else(|| {
                            err(
                                key.clone(),
                                format!("{sel:?}: no [[clients]] named {name:?}"),
                            )
                        })?;
                        let slot = &mut ids.group_of_client[usize::from(c)];
                        if let Some(other) = *slot
                            && other != gid
                        {
                            return Err(taken(other));
                        }
                        *slot = Some(gid);
                    }
                }
            }
        }
        ids.proven_group = (0..ids.names.len())
            .map(|c| ids.selecting_group(c as ClientIndex))
            .collect();
        Ok(ids)
    }

    /// No clients and no identity selectors: every query is its source address.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.group_of_id.is_empty() && self.group_of_mac.is_empty()
    }

    /// The index of the client named `name`.
    pub fn index(&self, name: &str) -> Option<ClientIndex> {
        self.names
            .iter()
            .position(|n| **n == *name)
            .map(|i| i as ClientIndex)
    }

    /// Who `--client` (CLI) or `client` (`/api/v1/check`) means: an address, or a
    /// client name (asking from loopback, as that client). `None`: neither.
    pub fn asker(&self, s: &str) -> Option<(IpAddr, Option<Identity>)> {
        match s.trim().parse::<IpAddr>() {
            Ok(ip) => Some((ip, None)),
            Err(_) => Some((
                IpAddr::from([127, 0, 0, 1]),
                Some(self.as_client(s.trim())?),
            )),
        }
    }

    /// What client `name` gets when it proves who it is (for `dnsguard check
    /// --client NAME`): the group that selects it by name, ClientID, MAC or address.
    pub fn as_client(&self, name: &str) -> Option<Identity> {
        let c = self.index(name)?;
        Some(Identity {
            group: self.proven_group[usize::from(c)].unwrap_or(GroupId(0)),
            client: Some(c),
            proven: true,
        })
    }

    /// The group that selects client `c` by name, or else by one of its ClientIDs
    /// or MACs: what it gets when it proves who it is.
    fn selecting_group(&self, c: ClientIndex) -> Option<GroupId> {
        let mine = |v: &ClientIndex| *v == c;
        self.group_of_client[usize::from(c)]
            .or_else(|| {
                self.by_id
                    .iter()
                    .filter(|(_, v)| mine(v))
                    .find_map(|(id, _)| self.group_of_id.get(id).copied())
            })
            .or_else(|| {
                self.by_mac
                    .iter()
                    .filter(|(_, v)| mine(v))
                    .find_map(|(m, _)| self.group_of_mac.get(m).copied())
            })
    }

    /// The name of client `c`.
    pub fn name(&self, c: ClientIndex) -> Option<&Arc<str>> {
        self.names.get(usize::from(c))
    }

    /// The client whose `addresses` hold `ip` (nothing to look up without any).
    #[inline]
    pub fn client_at(&self, ip: IpAddr) -> Option<ClientIndex> {
        if !self.has_addresses {
            return None;
        }
        match self.by_address.lookup(ip) {
            GroupId(0) => None,
            GroupId(i) => Some(i - 1),
        }
    }

    /// Whether group `a` is at least as strict as group `b`: the same group, or `a`
    /// denies what is not allowlisted (`default_deny`, `mode = "enforce"`) and `b`
    /// does not. Two different allowlist groups are not comparable (each allows
    /// names the other does not), nor are two ordinary ones.
    pub fn at_least_as_strict(&self, a: GroupId, b: GroupId) -> bool {
        let strict = |g: GroupId| self.strict.get(usize::from(g.0)).copied().unwrap_or(false);
        a == b || (strict(a) && !strict(b))
    }

    /// Who the client at `source` is, given what it presented and what a trusted
    /// forwarder said (pass `None` for an untrusted source's options).
    pub fn resolve(
        &self,
        filter: &Filter,
        source: IpAddr,
        presented: Option<&Presented>,
        forwarded: Option<&Forwarded>,
    ) -> Identity {
        let source_client = self.client_at(source);
        let source_group = source_client
            .and_then(|c| self.group_of_client[usize::from(c)])
            .unwrap_or_else(|| filter.group_of(source));
        let base = Identity {
            group: source_group,
            client: source_client,
            proven: false,
        };
        let Some(claim) = self.claim(filter, presented, forwarded) else {
            return base;
        };
        let group = claim.group.unwrap_or(source_group);
        if claim.proven || self.at_least_as_strict(group, source_group) {
            return Identity {
                group,
                client: claim.client.or(source_client),
                proven: claim.proven,
            };
        }
        note_refused(|| {
            format!(
                "{} from {source} may not widen group {:?} to {:?} (not proven): the source address's group applies",
                claim.what,
                filter.group_name(source_group),
                filter.group_name(group),
            )
        });
        base
    }

    /// The most trusted identity the query claims that names a client or selects
    /// a group: a listed client certificate, ClientID, MAC, client subnet, CPE-ID.
    fn claim<'a>(
        &self,
        filter: &Filter,
        presented: Option<&'a Presented>,
        forwarded: Option<&'a Forwarded>,
    ) -> Option<Claim<'a>> {
        let of_client =
            |c: Option<ClientIndex>| c.and_then(|c| self.group_of_client[usize::from(c)]);
        let by_id = |id: &'a str, what: Subject<'a>, secret: Option<&str>| {
            let client = self.by_id.get(id).copied();
            let group = self.group_of_id.get(id).copied().or(of_client(client));
            let proven = client.is_some_and(|c| self.proves(c, secret));
            (client.is_some() || group.is_some()).then_some(Claim {
                what,
                client,
                group,
                proven,
            })
        };
        if let Some(p) = presented
            && let Some(pin) = &p.cert_pin
            && let Some(&c) = self.by_pin.get(pin)
        {
            return Some(Claim {
                what: Subject::Certificate,
                client: Some(c),
                group: self.proven_group[usize::from(c)],
                proven: true,
            });
        }
        if let Some(p) = presented
            && let Some(id) = p.client_id.as_deref()
            && let Some(c) = by_id(id, Subject::ClientId(id), p.secret.as_deref())
        {
            return Some(c);
        }
        let f = forwarded?;
        if let Some(mac) = f.mac {
            let client = self.by_mac.get(&mac).copied();
            let group = self.group_of_mac.get(&mac).copied().or(of_client(client));
            if client.is_some() || group.is_some() {
                return Some(Claim {
                    what: Subject::Mac(mac),
                    client,
                    group,
                    proven: false,
                });
            }
        }
        if let Some(ip) = f.subnet {
            let client = self.client_at(ip);
            let group = of_client(client).or(match filter.group_of(ip) {
                GroupId(0) => None,
                g => Some(g),
            });
            if client.is_some() || group.is_some() {
                return Some(Claim {
                    what: Subject::Subnet(ip),
                    client,
                    group,
                    proven: false,
                });
            }
        }
        let id = f.cpe_id.as_deref()?;
        by_id(id, Subject::CpeId(id), None)
    }

    /// Whether `secret` is client `c`'s (constant time in the digest compare).
    fn proves(&self, c: ClientIndex, secret: Option<&str>) -> bool {
        let (Some(Some(want)), Some(secret)) = (self.secrets.get(usize::from(c)), secret) else {
            return false;
        };
        let got = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
        let diff = got
            .as_ref()
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

/// Logs why a claimed identity did not apply, at most once a second (a spoofing
/// client must not flood the log).
fn note_refused(why: impl FnOnce() -> String) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::querylog::now_ms() / 1000;
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!("identity not applied: {}", why());
    }
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A fresh secret for client `name`, and the `[[clients]]` entry that recognises
/// it: `(secret, toml)`. The secret is 32 random bytes, base64url; only its
/// SHA-256 goes into the entry.
pub fn issue(name: &str) -> anyhow::Result<(String, String)> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let id = client_id(name).ok_or_else(|| {
        anyhow::anyhow!(
            "{name:?}: a client name to issue a secret for must be a ClientID ([a-z0-9-], 1 to 64)"
        )
    })?;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no random numbers from the system"))?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let toml =
        format!("[[clients]]\nname = \"{id}\"\nids = [\"{id}\"]\nsecret_sha256 = \"{hex}\"\n");
    Ok((secret, toml))
}

/// A fresh TLS client key and self-signed certificate for client `name`, written
/// into `dir` (made if missing) as `key.pem` (owner-only) and `cert.pem`, and the
/// `[[clients]]` entry that recognises it by its SPKI pin: `(pin, toml)`. Run on
/// the machine that will present it, so the private key never travels; an
/// existing `key.pem` or `cert.pem` is never overwritten.
pub fn issue_cert(name: &str, dir: &std::path::Path) -> anyhow::Result<(String, String)> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let id = client_id(name).ok_or_else(|| {
        anyhow::anyhow!(
            "{name:?}: a client name to issue a certificate for must be a ClientID ([a-z0-9-], 1 to 64)"
        )
    })?;
    let (key_pem, cert_pem, pin) = crate::pki::client_keypair(&id)?;
    if !dir.exists() {
        crate::datadir::create_dir(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let (key_path, cert_path) = (dir.join("key.pem"), dir.join("cert.pem"));
    for path in [&key_path, &cert_path] {
        anyhow::ensure!(
            !path.exists(),
            "{} exists: a key is never overwritten (move it away, or pick another directory)",
            path.display()
        );
    }
    let write = |path: &std::path::Path, mut options: std::fs::OpenOptions, bytes: &str| {
        let mut f = options
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        f.write_all(bytes.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))
    };
    write(&key_path, crate::datadir::file_options(), &key_pem)?;
    write(&cert_path, std::fs::OpenOptions::new(), &cert_pem)?;
    let toml = format!("[[clients]]\nname = \"{id}\"\nids = [\"{id}\"]\ncert_pins = [\"{pin}\"]\n");
    Ok((pin, toml))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::config::GroupMode;

    fn group(name: &str, clients: &[&str], strict: bool) -> GroupConfig {
        GroupConfig {
            name: name.into(),
            clients: clients.iter().map(|s| s.to_string()).collect(),
            mode: strict.then_some(GroupMode::Enforce),
            ..GroupConfig::default()
        }
    }

    fn setup(clients: &[ClientConfig], groups: &[GroupConfig]) -> (Filter, Identities) {
        let filter = Filter::build(&[], groups, &[]).unwrap_or_else(|e| panic!("{e}"));
        let ids = Identities::build(clients, groups, &filter).unwrap_or_else(|e| panic!("{e}"));
        (filter, ids)
    }

    fn gid(f: &Filter, name: &str) -> GroupId {
        (0..f.group_count())
            .map(|i| GroupId(i as u16))
            .find(|&g| f.group_name(g) == name)
            .unwrap_or_else(|| panic!("no group {name}"))
    }

    fn presented(id: &str, secret: Option<&str>) -> Presented {
        Presented {
            client_id: Some(id.into()),
            secret: secret.map(Box::from),
            ..Presented::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// agent-1 (enforce, strict), lab (ordinary, wide), office (ordinary, the
    /// source network's group).
    fn three_groups() -> (Vec<ClientConfig>, Vec<GroupConfig>, String) {
        let (secret, _) = issue("lab-1").unwrap_or_else(|e| panic!("{e}"));
        let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let clients = vec![
            ClientConfig {
                name: "agent-1".into(),
                ids: vec!["agent-1".into()],
                macs: vec!["02:00:00:00:00:01".into()],
                ..ClientConfig::default()
            },
            ClientConfig {
                name: "lab-1".into(),
                ids: vec!["lab-1".into()],
                secret_sha256: Some(hex),
                ..ClientConfig::default()
            },
        ];
        let groups = vec![
            group("agents", &["client:agent-1"], true),
            group("lab", &["client:lab-1", "mac:02:00:00:00:00:02"], false),
            group("office", &["10.0.0.0/8"], false),
        ];
        (clients, groups, secret)
    }

    #[test]
    fn unproven_identity_may_narrow_but_never_widen() {
        let (clients, groups, _) = three_groups();
        let (f, ids) = setup(&clients, &groups);
        let office = ip("10.0.0.7");
        // Narrowing: the ordinary office source may become the strict agent group.
        let id = ids.resolve(&f, office, Some(&presented("agent-1", None)), None);
        assert_eq!(id.group, gid(&f, "agents"));
        assert_eq!(
            id.client.and_then(|c| ids.name(c)).map(|n| &**n),
            Some("agent-1")
        );
        assert!(!id.proven);
        // Widening from office (ordinary) to lab (ordinary, other): refused.
        let id = ids.resolve(&f, office, Some(&presented("lab-1", None)), None);
        assert_eq!(id.group, gid(&f, "office"));
        assert_eq!(id.client, None);
        // A MAC from the forwarder selects lab: wider than office, refused.
        let fw = Forwarded {
            mac: parse_mac("02:00:00:00:00:02"),
            ..Forwarded::default()
        };
        assert_eq!(
            ids.resolve(&f, office, None, Some(&fw)).group,
            gid(&f, "office")
        );
        // agent-1's MAC: narrowing, applies.
        let fw = Forwarded {
            mac: parse_mac("02:00:00:00:00:01"),
            ..Forwarded::default()
        };
        assert_eq!(
            ids.resolve(&f, office, None, Some(&fw)).group,
            gid(&f, "agents")
        );
    }

    #[test]
    fn strict_groups_are_not_comparable_with_each_other() {
        let groups = vec![
            group("a", &["id:a1"], true),
            group("b", &["10.1.0.0/16"], true),
        ];
        let (f, ids) = setup(&[], &groups);
        assert!(!ids.at_least_as_strict(gid(&f, "a"), gid(&f, "b")));
        assert!(ids.at_least_as_strict(gid(&f, "a"), gid(&f, "default")));
        assert!(!ids.at_least_as_strict(gid(&f, "default"), gid(&f, "a")));
        assert!(ids.at_least_as_strict(gid(&f, "b"), gid(&f, "b")));
        let id = ids.resolve(&f, ip("10.1.2.3"), Some(&presented("a1", None)), None);
        assert_eq!(
            id.group,
            gid(&f, "b"),
            "one allowlist never swaps for another"
        );
    }

    #[test]
    fn a_proven_identity_selects_any_group() {
        let (clients, groups, secret) = three_groups();
        let (f, ids) = setup(&clients, &groups);
        let office = ip("10.0.0.7");
        let id = ids.resolve(&f, office, Some(&presented("lab-1", Some(&secret))), None);
        assert_eq!((id.group, id.proven), (gid(&f, "lab"), true));
        // A wrong secret proves nothing.
        let wrong = format!("{secret}x");
        let id = ids.resolve(&f, office, Some(&presented("lab-1", Some(&wrong))), None);
        assert_eq!((id.group, id.proven), (gid(&f, "office"), false));
        // A client without secret_sha256 is never proven, whatever it sends.
        let id = ids.resolve(&f, office, Some(&presented("agent-1", Some(&secret))), None);
        assert!(!id.proven);
    }

    #[test]
    fn a_listed_client_certificate_proves_its_client_an_unknown_one_nothing() {
        let (mut clients, groups, _) = three_groups();
        let (_, _, lab_pin) = crate::pki::client_keypair("lab-1").unwrap_or_else(|e| panic!("{e}"));
        let (_, _, other_pin) = crate::pki::client_keypair("x").unwrap_or_else(|e| panic!("{e}"));
        clients[1].cert_pins = vec![lab_pin.clone()];
        let (f, ids) = setup(&clients, &groups);
        let office = ip("10.0.0.7");
        let cert = |pin: &str, id: Option<&str>| Presented {
            client_id: id.map(Box::from),
            cert_pin: crate::pki::parse_pin(pin),
            ..Presented::default()
        };
        let lab_1 = ids.index("lab-1");
        // The certificate alone proves lab-1, which may widen office to lab.
        let id = ids.resolve(&f, office, Some(&cert(&lab_pin, None)), None);
        assert_eq!(
            (id.group, id.client, id.proven),
            (gid(&f, "lab"), lab_1, true)
        );
        // A proven certificate names its client whatever ClientID comes with it.
        let id = ids.resolve(&f, office, Some(&cert(&lab_pin, Some("agent-1"))), None);
        assert_eq!(
            (id.group, id.client, id.proven),
            (gid(&f, "lab"), lab_1, true)
        );
        // A certificate nobody listed proves nothing: lab-1's ClientID with it
        // is an unproven claim, refused as a widening.
        let id = ids.resolve(&f, office, Some(&cert(&other_pin, Some("lab-1"))), None);
        assert_eq!(
            (id.group, id.client, id.proven),
            (gid(&f, "office"), None, false)
        );
        let id = ids.resolve(&f, office, Some(&cert(&other_pin, None)), None);
        assert_eq!((id.group, id.proven), (gid(&f, "office"), false));
        // `dnsguard check --client lab-1` sees what the certificate gets.
        assert_eq!(
            ids.as_client("lab-1").map(|i| i.group),
            Some(gid(&f, "lab"))
        );
    }

    #[test]
    fn subnet_address_selects_like_a_source_address() {
        let groups = vec![
            group("kids", &["192.168.8.0/24"], true),
            group("router", &["127.0.0.5"], false),
        ];
        let (f, ids) = setup(&[], &groups);
        let fw = Forwarded {
            subnet: Some(ip("192.168.8.20")),
            ..Forwarded::default()
        };
        assert_eq!(
            ids.resolve(&f, ip("127.0.0.5"), None, Some(&fw)).group,
            gid(&f, "kids")
        );
        assert_eq!(
            ids.resolve(&f, ip("127.0.0.5"), None, None).group,
            gid(&f, "router")
        );
    }

    #[test]
    fn server_names_options_and_selectors_parse() {
        let p = from_server_name("Agent-1.dns.test").unwrap_or_default();
        assert_eq!(p.client_id.as_deref(), Some("agent-1"));
        assert!(from_server_name("dns.test").is_none());
        assert!(from_server_name("a_b.dns.test").is_none());
        assert!(
            from_server_name("127.0.0.1").is_none(),
            "an address names no client"
        );
        let mac = [2, 0, 0, 0, 0, 1];
        let f = Forwarded::from_options([(OPTION_MAC, &mac[..]), (10, &[1u8, 2][..])]);
        assert_eq!(f.and_then(|f| f.mac), Some(mac));
        assert!(Forwarded::from_options([(OPTION_MAC, &[1u8, 2, 3][..])]).is_none());
        assert_eq!(
            Selector::parse("mac:aa:bb:cc:dd:ee:ff"),
            Some(Selector::Mac("aa:bb:cc:dd:ee:ff"))
        );
        assert_eq!(Selector::parse("fd00::1"), None);
        assert_eq!(
            parse_mac("AA-bb-cc-dd-ee-ff"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
        );
        assert_eq!(parse_mac("aa:bb:cc:dd:ee"), None);
    }

    #[test]
    fn bad_entries_name_their_key() {
        let groups = vec![group("g", &["client:nobody"], false)];
        let f = Filter::build(&[], &groups, &[]).unwrap_or_else(|e| panic!("{e}"));
        let e = Identities::build(&[], &groups, &f).err();
        assert_eq!(e.map(|e| e.key), Some("groups[0].clients[0]".into()));
        let c = ClientConfig {
            name: "x".into(),
            secret_sha256: Some("plain-secret".into()),
            ..ClientConfig::default()
        };
        let e = Identities::build(&[c], &[], &f).err();
        assert_eq!(e.map(|e| e.key), Some("clients[0].secret_sha256".into()));
        let c = ClientConfig {
            name: "x".into(),
            cert_pins: vec!["sha256/not-base64".into()],
            ..ClientConfig::default()
        };
        let e = Identities::build(&[c], &[], &f).err();
        assert_eq!(e.map(|e| e.key), Some("clients[0].cert_pins[0]".into()));
    }

    /// `allow_authenticated_anywhere`, through the real pipeline: only a proven
    /// client gets past `allow_clients` (plain DNS presents nothing: only the
    /// encrypted front ends fill `Asked::presented`).
    #[test]
    fn proven_clients_query_from_anywhere_only_when_allowed() {
        use crate::pipeline::{Arrived, Asked, Pipeline, Policy, Source, Step};
        let (secret, entry) = issue("lab-1").unwrap_or_else(|e| panic!("{e}"));
        let config = |anywhere: bool| {
            let text = format!(
                "[server]\nallow_clients = [\"10.0.0.0/8\"]\nallow_authenticated_anywhere = {anywhere}\n\
                 [local]\nrecords = [\"www.fwd.test A 192.0.2.1\"]\n{entry}\
                 [[groups]]\nname = \"lab\"\nclients = [\"client:lab-1\"]\n"
            );
            crate::config::Config::parse(&text, "test").unwrap_or_else(|e| panic!("{e}"))
        };
        let ask = |anywhere: bool, secret: Option<&str>| {
            let cfg = config(anywhere);
            let filter =
                Filter::build(&cfg.lists, &cfg.groups, &[]).unwrap_or_else(|e| panic!("{e}"));
            let log = Arc::new(crate::querylog::QueryLog::disabled(cfg.query_log.clone()));
            let policy = Policy::new(filter, &cfg.policy()).unwrap_or_else(|e| panic!("{e}"));
            let pipeline =
                Pipeline::new(&cfg.pipeline(), policy, log).unwrap_or_else(|e| panic!("{e}"));
            let shown = presented("lab-1", secret);
            let asked = Asked {
                client: "203.0.113.5:40000"
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
                name: "www.fwd.test",
                qtype: 1,
                dnssec_ok: false,
                checking_disabled: false,
                query: None,
                arrived: Arrived::now(),
                presented: Some(&shown),
                forwarded: None,
            };
            match pipeline.decide(&pipeline.policy(), &asked) {
                Step::Final(says) => says.source,
                Step::Fetch(_) => panic!("a local name is never fetched"),
            }
        };
        let s = Some(secret.as_str());
        assert_eq!(ask(true, s), Source::Local, "proven");
        assert_eq!(ask(true, None), Source::Refused, "not proven");
        let wrong = format!("{secret}x");
        assert_eq!(ask(true, Some(&wrong)), Source::Refused);
        assert_eq!(ask(false, s), Source::Refused, "not switched on");
    }
}
