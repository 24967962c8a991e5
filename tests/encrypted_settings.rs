//! What a device needs for encrypted DNS, from the dashboard: the settings page
//! in headless Chromium shows the served certificate's SHA-256 fingerprint and
//! SPKI pin (checked against openssl's reading of the certificate file) and the
//! DoT, DoH and DoQ endpoints, and links an Apple `.mobileconfig`; the profile
//! (fetched with a logged-in session, parsed by Python's plistlib) names the DoH
//! URL with the ClientID or the DoT server name, and the URL resolves with kdig.
//! Both routes need a login.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dash::{self, PASSWORD};
use common::http::request;
use common::server::Dnsguard;
use common::upstream::FakeUpstream;
use common::webdriver::Driver;
use serde_json::Value;

const ZONE: &str = "www.fwd.test. 300 A 192.0.2.1\n";

/// A server with DoT, DoH and DoQ on free loopback ports and a password set.
fn start(up: &FakeUpstream) -> (Dnsguard, String) {
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\n\
         https_listen = [\"127.0.0.1:0\"]\nquic_listen = [\"127.0.0.1:0\"]\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n",
        up.addr()
    ));
    dash::set_password(&dg, PASSWORD);
    let base = dash::base(&dg);
    (dg, base)
}

fn listening(dg: &Dnsguard, what: &str) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = dg
            .log()
            .split(&format!("listening ({what}) addr="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
        if let Some(a) = found {
            return a;
        }
        assert!(Instant::now() < deadline, "{what} not listening");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `sh -c script` with `input` on stdin; its trimmed stdout.
fn sh(script: &str, input: &[u8]) -> String {
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// openssl's SHA-256 fingerprint and SPKI pin of a PEM certificate file.
fn openssl_identity(cert: &Path) -> (String, String) {
    let pem = std::fs::read(cert).unwrap();
    let fp = sh("openssl x509 -noout -fingerprint -sha256", &pem);
    let pin = sh(
        "openssl x509 -noout -pubkey | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | base64",
        &pem,
    );
    (fp.split_once('=').unwrap().1.to_owned(), pin)
}

/// A property list parsed by Python's plistlib, as JSON (`<data>` as base64).
fn plist(xml: &str) -> Value {
    let json = sh(
        "python3 -c 'import base64, json, plistlib, sys; \
         print(json.dumps(plistlib.loads(sys.stdin.buffer.read()), \
         default=lambda b: base64.b64encode(b).decode()))'",
        xml.as_bytes(),
    );
    serde_json::from_str(&json).unwrap()
}

#[test]
fn the_settings_page_shows_the_certificate_endpoints_and_a_profile_link() {
    let up = FakeUpstream::start("127.0.0.1".parse::<IpAddr>().unwrap(), ZONE);
    let (dg, base) = start(&up);
    let (dot, doh, doq) = (
        listening(&dg, "DNS over TLS"),
        listening(&dg, "DNS over HTTPS"),
        listening(&dg, "DNS over QUIC"),
    );
    let (fingerprint, pin) = openssl_identity(&dash::data_dir(&dg).join("tls/cert.pem"));

    let mut d = Driver::start();
    d.window(1280, 1000);
    d.goto(&format!("{base}/login"));
    let pw = d.find("#password");
    d.type_text(&pw, PASSWORD);
    let btn = d.find("#login-btn");
    d.click(&btn);
    d.wait_for("logged in", |d| {
        (!d.url().ends_with("/login")).then_some(())
    });
    d.goto(&format!("{base}/#/settings"));
    d.wait_for("the certificate's fingerprint", |d| {
        (d.text_of("#enc-sha256")? == fingerprint).then_some(())
    });
    assert_eq!(d.text_of("#enc-pin").unwrap(), pin);
    assert_eq!(d.text_of("#enc-dot").unwrap(), format!("tls://{dot}"));
    assert_eq!(
        d.text_of("#enc-doh").unwrap(),
        format!("https://{doh}/dns-query")
    );
    assert_eq!(d.text_of("#enc-doq").unwrap(), format!("quic://{doq}"));

    // The profile link follows the form, and downloads with the session.
    let client = d.find("#enc-client");
    d.type_text(&client, "iphone-1");
    let href = d.wait_for("the link with the ClientID", |d| {
        let h = d.js("return document.getElementById('enc-mobileconfig').getAttribute('href')");
        h.as_str()
            .filter(|h| h.contains("client=iphone-1"))
            .map(str::to_owned)
    });
    assert_eq!(href, "/api/v1/mobileconfig?proto=https&client=iphone-1");
    let got = d.js(&format!(
        "const x = new XMLHttpRequest(); x.open('GET', {href:?}, false); x.send(); \
         return [x.status, x.getResponseHeader('content-type'), x.responseText];"
    ));
    assert_eq!(got[0], 200, "{got}");
    assert_eq!(got[1], "application/x-apple-aspen-config");
    let profile = plist(got[2].as_str().unwrap());
    assert_eq!(
        profile["PayloadContent"][0]["DNSSettings"]["ServerURL"],
        format!("https://{doh}/dns-query/iphone-1")
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard-screenshots");
    std::fs::create_dir_all(&shot).unwrap();
    std::fs::write(shot.join("settings-encrypted.png"), d.screenshot()).unwrap();
}

#[test]
fn the_mobileconfig_is_an_apple_dns_settings_profile_behind_the_login() {
    let up = FakeUpstream::start("127.0.0.1".parse::<IpAddr>().unwrap(), ZONE);
    let (dg, base) = start(&up);
    let doh = listening(&dg, "DNS over HTTPS");
    let path = "/api/v1/mobileconfig?proto=https&client=iphone-1";

    // Nobody logged in: nothing, whatever the route.
    for p in [path, "/api/v1/encrypted"] {
        assert_eq!(request("GET", &base, p, &[], None).status, 401, "{p}");
    }

    let s = dash::login(&base, PASSWORD);
    let r = s.call(&base, "GET", path, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("application/x-apple-aspen-config")
    );
    assert!(
        r.header("content-disposition")
            .is_some_and(|v| v.contains("dnsguard-iphone-1.mobileconfig")),
        "{:?}",
        r.headers
    );
    let p = plist(&r.body);
    assert_eq!(p["PayloadType"], "Configuration");
    assert_eq!(p["PayloadVersion"], 1);
    let dns = &p["PayloadContent"][0];
    assert_eq!(dns["PayloadType"], "com.apple.dnsSettings.managed");
    let settings = &dns["DNSSettings"];
    assert_eq!(settings["DNSProtocol"], "HTTPS");
    let url = format!("https://{doh}/dns-query/iphone-1");
    assert_eq!(settings["ServerURL"], url.as_str());
    assert_eq!(
        settings["ServerAddresses"],
        serde_json::json!(["127.0.0.1"])
    );
    for key in ["PayloadUUID", "PayloadIdentifier"] {
        assert!(p[key].as_str().is_some_and(|v| !v.is_empty()), "{key}");
        assert_ne!(p[key], dns[key], "{key} differs between the payloads");
    }
    // The self-signed certificate comes along as a root to trust, byte for byte.
    let root = &p["PayloadContent"][1];
    assert_eq!(root["PayloadType"], "com.apple.security.root");
    let der = sh(
        "openssl x509 -outform DER | base64 -w0",
        &std::fs::read(dash::data_dir(&dg).join("tls/cert.pem")).unwrap(),
    );
    assert_eq!(root["PayloadContent"], der.trim());
    assert_ne!(root["PayloadUUID"], dns["PayloadUUID"]);
    // The same request makes the same profile: reinstalling replaces it.
    assert_eq!(s.call(&base, "GET", path, None).body, r.body);

    // The URL in the profile answers, and the query is logged under the ClientID.
    let ca = dash::data_dir(&dg).join("tls/cert.pem");
    let out = Command::new("kdig")
        .args([&format!("@{}", doh.ip()), "-p", &doh.port().to_string()])
        .arg("+https=/dns-query/iphone-1")
        .arg(format!("+tls-ca={}", ca.display()))
        .args(["+tls-hostname=localhost", "+timeout=3", "+retry=0"])
        .arg("www.fwd.test")
        .output()
        .expect("run kdig");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("192.0.2.1"), "kdig +https:\n{text}");

    // DoT: the ClientID is the first label of the name the certificate carries.
    let r = s.call(
        &base,
        "GET",
        "/api/v1/mobileconfig?proto=tls&client=iphone-1&server_name=dns.example.net",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let settings = &plist(&r.body)["PayloadContent"][0]["DNSSettings"];
    assert_eq!(settings["DNSProtocol"], "TLS");
    assert_eq!(settings["ServerName"], "iphone-1.dns.example.net");
    assert_eq!(
        settings["ServerAddresses"],
        serde_json::json!(["127.0.0.1"])
    );
    assert!(settings.get("ServerURL").is_none());

    // Bad input: a clear 400, never a profile that cannot work.
    for (q, why) in [
        ("proto=tls&client=iphone-1", "server_name"),
        ("proto=https&client=Not%20an%20id", "not a ClientID"),
        ("proto=dnscrypt", "use https or tls"),
        (
            "proto=tls&server_name=%3C%2Fstring%3E.example",
            "not a DNS name",
        ),
    ] {
        let r = s.call(&base, "GET", &format!("/api/v1/mobileconfig?{q}"), None);
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(r.body.contains(why), "{q}: {}", r.body);
    }

    // The endpoints as JSON, for scripts.
    let e = s.call(&base, "GET", "/api/v1/encrypted", None).json();
    assert_eq!(
        e["doh"],
        serde_json::json!([format!("https://{doh}/dns-query")])
    );
    let dot = listening(&dg, "DNS over TLS");
    assert_eq!(e["dot"], serde_json::json!([format!("tls://{dot}")]));
    assert_eq!(e["spki_pin"].as_str().map(str::len), Some(44));
}
