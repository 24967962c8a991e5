//! What a device needs to use the encrypted listeners, for the settings page:
//! the served certificate's SHA-256 fingerprint and SPKI pin and the DoT, DoH
//! and DoQ endpoints (`GET /api/v1/encrypted`), and an Apple DNS Settings
//! profile (`GET /api/v1/mobileconfig?proto=https|tls&client=ID`) that an
//! iPhone or a Mac installs to send all its DNS there, with its ClientID.
//!
//! A listener bound to a wildcard address (`0.0.0.0:853`) is shown with the host
//! the dashboard was reached by: the name or LAN address a device can use.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::cert::CertStore;

/// The encrypted listeners as they were bound, and their certificate.
#[derive(Debug)]
pub struct Serving {
    /// The certificate every encrypted listener presents (renewals included).
    pub certs: Arc<CertStore>,
    /// DNS over TLS addresses.
    pub dot: Vec<SocketAddr>,
    /// DNS over HTTPS addresses.
    pub doh: Vec<SocketAddr>,
    /// DNS over QUIC addresses.
    pub doq: Vec<SocketAddr>,
}

/// Set once the listeners are up (the dashboard starts before them).
pub type ServingCell = Arc<OnceLock<Serving>>;

/// `GET /api/v1/encrypted`'s reply.
#[derive(Debug, Serialize)]
pub struct Encrypted {
    /// SHA-256 of the certificate, colon-separated hex.
    pub sha256: String,
    /// base64 SHA-256 of its public key (`kdig +tls-pin`, `dnsguard stub --pin`).
    pub spki_pin: String,
    /// `tls://HOST:PORT` per DoT listener.
    pub dot: Vec<String>,
    /// `https://HOST[:PORT]/dns-query` per DoH listener.
    pub doh: Vec<String>,
    /// `quic://HOST:PORT` per DoQ listener.
    pub doq: Vec<String>,
}

/// `GET /api/v1/encrypted`: the certificate and endpoints, or `null` without an
/// encrypted listener.
pub async fn encrypted(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let Some(serving) = st.serving.get() else {
        return Json(serde_json::Value::Null).into_response();
    };
    let host = request_host(&headers);
    let id = serving.certs.identity();
    let hosts = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(|a| (host_of(a.ip(), host.as_deref()), a.port()))
            .collect::<Vec<_>>()
    };
    Json(Encrypted {
        sha256: id.fingerprint,
        spki_pin: id.spki_pin,
        dot: hosts(&serving.dot)
            .into_iter()
            .map(|(h, p)| format!("tls://{h}:{p}"))
            .collect(),
        doh: hosts(&serving.doh)
            .into_iter()
            .map(|(h, p)| doh_url(&h, p, None))
            .collect(),
        doq: hosts(&serving.doq)
            .into_iter()
            .map(|(h, p)| format!("quic://{h}:{p}"))
            .collect(),
    })
    .into_response()
}

/// Query of `GET /api/v1/mobileconfig`.
#[derive(Debug, Deserialize)]
pub struct ProfileQuery {
    /// `https` (DNS over HTTPS, the default) or `tls` (DNS over TLS, port 853).
    #[serde(default)]
    proto: Option<String>,
    /// The ClientID the device presents (`[a-z0-9-]{1,64}`).
    #[serde(default)]
    client: Option<String>,
    /// DoT: the name the certificate carries (`dns.example.net`); the device
    /// asks for `CLIENT.dns.example.net`. Default: the host the dashboard was
    /// reached by, when it is a name.
    #[serde(default)]
    server_name: Option<String>,
}

/// `GET /api/v1/mobileconfig`: an Apple configuration profile with one
/// `com.apple.dnsSettings.managed` payload for this server's DoH or DoT
/// listener, as an `application/x-apple-aspen-config` download.
pub async fn mobileconfig(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ProfileQuery>,
) -> Response {
    let bad = |status: StatusCode, why: String| (status, format!("{why}\n")).into_response();
    let Some(serving) = st.serving.get() else {
        return bad(
            StatusCode::NOT_FOUND,
            "no encrypted listener: set server.https_listen or server.tls_listen".into(),
        );
    };
    let client = match q.client.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match crate::identity::client_id(c) {
            Some(id) => Some(id),
            None => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    format!("{c:?} is not a ClientID ([a-z0-9-], 1 to 64)"),
                );
            }
        },
    };
    let host = request_host(&headers);
    let (proto, listeners) = match q.proto.as_deref().unwrap_or("https") {
        "https" => (Proto::Https, &serving.doh),
        "tls" => (Proto::Tls, &serving.dot),
        other => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("proto {other:?}: use https or tls"),
            );
        }
    };
    let Some(listener) = listeners.first() else {
        let setting = match proto {
            Proto::Https => "server.https_listen",
            Proto::Tls => "server.tls_listen",
        };
        return bad(
            StatusCode::NOT_FOUND,
            format!("no listener for this protocol: set {setting}"),
        );
    };
    let shown = host_of(listener.ip(), host.as_deref());
    // The address the device connects to, when it is known as one.
    let address = match listener.ip() {
        ip if !ip.is_unspecified() => Some(ip),
        _ => host.as_deref().and_then(|h| h.parse::<IpAddr>().ok()),
    };
    let dns = match proto {
        Proto::Https => Dns::Https {
            url: doh_url(&shown, listener.port(), client.as_deref()),
        },
        Proto::Tls => {
            let name = q
                .server_name
                .clone()
                .filter(|n| !n.is_empty())
                .or_else(|| host.clone().filter(|h| h.parse::<IpAddr>().is_err()));
            match tls_server_name(name.as_deref(), client.as_deref(), address) {
                Ok(n) => Dns::Tls { server_name: n },
                Err(why) => return bad(StatusCode::BAD_REQUEST, why),
            }
        }
    };
    // A device trusts a self-signed certificate only as an installed root: the
    // profile carries it (a certificate from a CA the device trusts needs nothing).
    let leaf = serving.certs.leaf();
    let profile = Profile {
        dns,
        address,
        client: client.as_deref(),
        scope: &shown,
        root: crate::pki::is_self_issued(&leaf).then_some(leaf),
    };
    let file = format!(
        "dnsguard-{}.mobileconfig",
        client.as_deref().unwrap_or(match proto {
            Proto::Https => "doh",
            Proto::Tls => "dot",
        })
    );
    (
        [
            (
                header::CONTENT_TYPE,
                "application/x-apple-aspen-config".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        profile.to_plist(),
    )
        .into_response()
}

#[derive(Clone, Copy)]
enum Proto {
    Https,
    Tls,
}

/// The DNS settings of a profile.
enum Dns {
    Https { url: String },
    Tls { server_name: String },
}

/// The DoT server name a device asks for: `CLIENT.NAME` with a ClientID (the
/// name must then have two labels or more, so the client's has three: how
/// dnsguard reads a ClientID), else the name, else the bare address.
fn tls_server_name(
    name: Option<&str>,
    client: Option<&str>,
    address: Option<IpAddr>,
) -> Result<String, String> {
    let valid = |n: &str| {
        !n.is_empty()
            && n.len() <= 253
            && n.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    match (name, client) {
        (Some(n), _) if !valid(n) || n.parse::<IpAddr>().is_ok() => Err(format!(
            "server_name {n:?} is not a DNS name (the one the certificate carries, e.g. dns.example.net)"
        )),
        (Some(n), Some(c)) if n.split('.').count() >= 2 => Ok(format!("{c}.{n}")),
        (_, Some(_)) => Err(
            "a DoT ClientID is the first label of the server name: give \
             server_name=NAME of two labels or more (dns.example.net, covered by the \
             certificate as *.dns.example.net), or use proto=https"
                .into(),
        ),
        (Some(n), None) => Ok(n.to_owned()),
        (None, None) => address
            .map(|a| a.to_string())
            .ok_or_else(|| "give server_name=NAME (the name the certificate carries)".into()),
    }
}

/// One DNS Settings payload in one configuration profile.
struct Profile<'a> {
    dns: Dns,
    address: Option<IpAddr>,
    client: Option<&'a str>,
    /// The server as shown, part of the profile's identity.
    scope: &'a str,
    /// The self-signed certificate served (DER), as a root to install.
    root: Option<Vec<u8>>,
}

impl Profile<'_> {
    /// The profile as an XML property list. The identifiers are derived from
    /// the server, protocol and client, so installing a newer profile for the
    /// same replaces the old one.
    fn to_plist(&self) -> String {
        let (proto, target) = match &self.dns {
            Dns::Https { url } => ("HTTPS", url.as_str()),
            Dns::Tls { server_name } => ("TLS", server_name.as_str()),
        };
        let who = self.client.unwrap_or("this device");
        let identifier = format!(
            "dnsguard.{}.{}.{}",
            self.scope.replace([':', '[', ']'], "-"),
            proto.to_ascii_lowercase(),
            self.client.unwrap_or("any")
        );
        let mut dns = format!("<key>DNSProtocol</key><string>{proto}</string>\n");
        match &self.dns {
            Dns::Https { url } => {
                let _ = writeln!(dns, "<key>ServerURL</key><string>{}</string>", xml(url));
            }
            Dns::Tls { server_name } => {
                let _ = writeln!(
                    dns,
                    "<key>ServerName</key><string>{}</string>",
                    xml(server_name)
                );
            }
        }
        if let Some(a) = self.address {
            let _ = writeln!(
                dns,
                "<key>ServerAddresses</key><array><string>{a}</string></array>"
            );
        }
        let root = self.root.as_ref().map_or_else(String::new, |der| {
            use base64::Engine as _;
            format!(
                "<dict>
<key>PayloadCertificateFileName</key><string>dnsguard.cer</string>
<key>PayloadContent</key><data>{}</data>
<key>PayloadDescription</key><string>The self-signed certificate dnsguard serves.</string>
<key>PayloadDisplayName</key><string>dnsguard certificate</string>
<key>PayloadIdentifier</key><string>{}.root</string>
<key>PayloadType</key><string>com.apple.security.root</string>
<key>PayloadUUID</key><string>{}</string>
<key>PayloadVersion</key><integer>1</integer>
</dict>
",
                base64::engine::general_purpose::STANDARD.encode(der),
                xml(&identifier),
                uuid(&format!("{identifier}.root")),
            )
        });
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
<key>PayloadContent</key>
<array>
<dict>
<key>DNSSettings</key>
<dict>
{dns}</dict>
<key>PayloadDescription</key><string>Sends every DNS query of {who_xml} to dnsguard over {proto}.</string>
<key>PayloadDisplayName</key><string>dnsguard ({who_xml})</string>
<key>PayloadIdentifier</key><string>{id_xml}.dns</string>
<key>PayloadType</key><string>com.apple.dnsSettings.managed</string>
<key>PayloadUUID</key><string>{dns_uuid}</string>
<key>PayloadVersion</key><integer>1</integer>
</dict>
{root}</array>
<key>PayloadDescription</key><string>Encrypted DNS through dnsguard: {target_xml}</string>
<key>PayloadDisplayName</key><string>dnsguard encrypted DNS ({who_xml})</string>
<key>PayloadIdentifier</key><string>{id_xml}</string>
<key>PayloadRemovalDisallowed</key><false/>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadUUID</key><string>{uuid}</string>
<key>PayloadVersion</key><integer>1</integer>
</dict>
</plist>
"#,
            who_xml = xml(who),
            id_xml = xml(&identifier),
            target_xml = xml(target),
            dns_uuid = uuid(&format!("{identifier}.dns")),
            uuid = uuid(&identifier),
        )
    }
}

/// A name-based UUID (version 5 layout, SHA-256 of `name`).
fn uuid(name: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `s` with XML's special characters escaped.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `https://HOST[:PORT]/dns-query[/CLIENT]`.
fn doh_url(host: &str, port: u16, client: Option<&str>) -> String {
    let port = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    match client {
        Some(c) => format!("https://{host}{port}/dns-query/{c}"),
        None => format!("https://{host}{port}/dns-query"),
    }
}

/// How a listener on `ip` is reached: its address, or for a wildcard address
/// the host the dashboard was reached by (else the wildcard itself). IPv6
/// addresses in brackets, as URLs write them.
fn host_of(ip: IpAddr, request_host: Option<&str>) -> String {
    let text = match (ip.is_unspecified(), request_host) {
        (true, Some(h)) => return bracket(h),
        _ => ip.to_string(),
    };
    bracket(&text)
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The host (without port or brackets) of the request's `Host` header, if it
/// is a plain name or address.
fn request_host(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::HOST)?.to_str().ok()?;
    let host = match value.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.0,
        None => value.rsplit_once(':').map_or(value, |(h, _)| h),
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    ok.then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        h
    }

    #[test]
    fn a_wildcard_listener_is_shown_with_the_host_the_dashboard_was_reached_by() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let lan: IpAddr = "192.168.1.2".parse().unwrap();
        let host = request_host(&headers("pi.lan:8080"));
        assert_eq!(host.as_deref(), Some("pi.lan"));
        assert_eq!(host_of(any, host.as_deref()), "pi.lan");
        assert_eq!(host_of(lan, host.as_deref()), "192.168.1.2");
        let v6 = request_host(&headers("[fd00::2]:80"));
        assert_eq!(host_of("::".parse().unwrap(), v6.as_deref()), "[fd00::2]");
        assert_eq!(request_host(&headers("bad<host>")), None);
        assert_eq!(
            doh_url("pi.lan", 443, Some("a-1")),
            "https://pi.lan/dns-query/a-1"
        );
        assert_eq!(
            doh_url("[fd00::2]", 8443, None),
            "https://[fd00::2]:8443/dns-query"
        );
    }

    #[test]
    fn a_dot_client_id_needs_a_name_of_two_labels() {
        assert_eq!(
            tls_server_name(Some("dns.example.net"), Some("a-1"), None).unwrap(),
            "a-1.dns.example.net"
        );
        assert!(tls_server_name(Some("pi"), Some("a-1"), None).is_err());
        assert!(tls_server_name(None, Some("a-1"), None).is_err());
        assert!(tls_server_name(Some("10.0.0.1"), None, None).is_err());
        assert!(tls_server_name(Some("a</string>"), None, None).is_err());
        let ip = "192.168.1.2".parse().ok();
        assert_eq!(tls_server_name(None, None, ip).unwrap(), "192.168.1.2");
    }

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let a = uuid("dnsguard.pi.lan.https.a-1");
        assert_eq!(a, uuid("dnsguard.pi.lan.https.a-1"));
        assert_ne!(a, uuid("dnsguard.pi.lan.https.a-2"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5");
    }
}
