//! A certificate replaced on disk is served without a restart and without
//! SIGHUP: `[tls] cert_file`/`key_file` laid out as certbot does (symlinks in
//! `live/` to numbered files in `archive/`, re-pointed by rename at renewal), the
//! served certificate read with `openssl s_client` on the DoT and DoH ports. A
//! renewal whose key comes late, and a broken one, keep the old certificate
//! serving.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::server::Dnsguard;
use common::upstream::FakeUpstream;

const ZONE: &str = "www.fwd.test. 300 A 192.0.2.1\n";

/// certbot's layout: `archive/{cert,key}N.pem`, and `live/{cert,key}.pem`
/// symlinks to the pair in force.
struct Certbot {
    dir: tempfile::TempDir,
}

impl Certbot {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("archive")).unwrap();
        std::fs::create_dir(dir.path().join("live")).unwrap();
        Self { dir }
    }

    fn live(&self, file: &str) -> PathBuf {
        self.dir.path().join("live").join(file)
    }

    /// Writes the `n`-th pair into `archive/`; its certificate's SHA-256
    /// fingerprint as openssl prints it.
    fn issue(&self, n: u32) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let archive = self.dir.path().join("archive");
        std::fs::write(archive.join(format!("cert{n}.pem")), cert.pem()).unwrap();
        std::fs::write(archive.join(format!("key{n}.pem")), key.serialize_pem()).unwrap();
        fingerprint(cert.pem().as_bytes())
    }

    /// Points `live/<what>.pem` at `archive/<what>N.pem` atomically, as certbot
    /// does (a new symlink renamed over the old one).
    fn point(&self, what: &str, n: u32) {
        let link = self.live(&format!("{what}.pem"));
        let tmp = self.live(&format!(".{what}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("../archive/{what}{n}.pem"), &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
    }
}

/// `openssl x509 -fingerprint -sha256` of the PEM certificate in `pem`.
fn fingerprint(pem: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().unwrap().write_all(pem).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "openssl x509: {text}");
    text.trim()
        .split_once('=')
        .expect("Fingerprint=…")
        .1
        .to_owned()
}

/// The fingerprint of the certificate `openssl s_client` is shown at `addr`.
fn served(addr: SocketAddr) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(["-servername", "localhost"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("-----BEGIN CERTIFICATE-----"),
        "no certificate from {addr}:\n{text}"
    );
    fingerprint(text.as_bytes())
}

/// The address the server logged for `what` (`DNS over TLS`, `DNS over HTTPS`).
fn listening(dg: &Dnsguard, what: &str) -> SocketAddr {
    common::wait_for(Duration::from_secs(10), what, || {
        dg.log()
            .split(&format!("listening ({what}) addr="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    })
}

#[test]
fn a_certificate_replaced_on_disk_is_served_without_a_restart() {
    let localhost: IpAddr = "127.0.0.1".parse().unwrap();
    let up = FakeUpstream::start(localhost, ZONE);
    let certbot = Certbot::new();
    let first = certbot.issue(1);
    certbot.point("cert", 1);
    certbot.point("key", 1);
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\n\
         https_listen = [\"127.0.0.1:0\"]\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        up.addr(),
        certbot.live("cert.pem").display(),
        certbot.live("key.pem").display(),
    ));
    let dot = listening(&dg, "DNS over TLS");
    let doh = listening(&dg, "DNS over HTTPS");
    assert_eq!(served(dot), first);
    let limit = Duration::from_secs(15);

    // A renewal: new files in archive/, the symlinks re-pointed, the key a
    // moment after the certificate. No SIGHUP.
    let second = certbot.issue(2);
    certbot.point("cert", 2);
    certbot.point("key", 2);
    common::wait_for(limit, "the renewed certificate on DoT", || {
        (served(dot) == second).then_some(())
    });
    assert_eq!(served(doh), second, "DoH serves the same store");
    let ca = format!("+tls-ca={}", certbot.live("cert.pem").display());
    let out = Command::new("kdig")
        .args([&format!("@{}", dot.ip()), "-p", &dot.port().to_string()])
        .args([
            "+tls",
            &ca,
            "+tls-hostname=localhost",
            "+timeout=3",
            "+retry=0",
        ])
        .arg("www.fwd.test")
        .output()
        .expect("run kdig");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("192.0.2.1"),
        "kdig over the renewed DoT:\n{text}"
    );

    // The certificate renewed but its key not (yet): refused and logged, the
    // old pair keeps serving; once the key follows, the new pair is served.
    let third = certbot.issue(3);
    certbot.point("cert", 3);
    common::wait_for(limit, "the refused pair logged", || {
        dg.log()
            .contains("TLS certificate files changed but cannot be used")
            .then_some(())
    });
    assert!(
        dg.log().contains("does not belong to the certificate"),
        "the reason is logged:\n{}",
        dg.log()
    );
    assert_eq!(served(dot), second, "a mismatched pair is never served");
    certbot.point("key", 3);
    common::wait_for(limit, "the completed renewal", || {
        (served(dot) == third).then_some(())
    });

    // A broken file in place: logged again, the certificate in force stays.
    let refusals = |dg: &Dnsguard| dg.log().matches("cannot be used; keeping").count();
    let before = refusals(&dg);
    std::fs::write(
        certbot.dir.path().join("archive/cert4.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    certbot.point("cert", 4);
    common::wait_for(limit, "the broken file logged", || {
        (refusals(&dg) > before).then_some(())
    });
    assert_eq!(served(dot), third);
    assert_eq!(served(doh), third);
    assert_eq!(
        dg.log().matches("TLS certificate renewed on disk").count(),
        2,
        "exactly the two good renewals were loaded:\n{}",
        dg.log()
    );
}
