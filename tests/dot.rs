//! DNS over TLS (RFC 7858) with real clients (kdig, dig) on loopback: resolving and
//! blocking through the usual pipeline, the self-signed certificate and its SPKI
//! pin, `allow_clients`, handshake garbage, clients that never handshake, and a
//! certificate renewed on disk and picked up on SIGHUP.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::Dnsguard;
use common::upstream::FakeUpstream;
use common::wait_for;

const ZONE: &str = "\
www.fwd.test. 300 A 192.0.2.1
mail.fwd.test. 300 A 192.0.2.5
";

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// A server forwarding to `up`, blocking the built-in default list, serving DNS
/// over TLS on a free port; `extra` goes into `[server]`, `tail` after everything.
fn start(up: &FakeUpstream, extra: &str, tail: &str) -> Dot {
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\n{extra}\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [[lists]]\nname = \"dnsguard-default\"\nsource = \"builtin:default\"\n{tail}",
        up.addr()
    ));
    let addr = wait_for(Duration::from_secs(10), "the DoT listener", || {
        dg.log()
            .split("listening (DNS over TLS) addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse::<SocketAddr>().ok())
    });
    Dot { dg, addr }
}

struct Dot {
    dg: Dnsguard,
    addr: SocketAddr,
}

impl Dot {
    fn data(&self) -> PathBuf {
        self.dg.dir.path().join("dnsguard-data")
    }

    /// The `spki_pin` of the `n`-th certificate the server logged (0 = at start).
    fn logged_pin(&self, n: usize) -> Option<String> {
        self.dg
            .log()
            .split("spki_pin=")
            .nth(n + 1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    }
}

/// Runs `kdig` over TLS to `addr` with `opts`; (success, stdout and stderr).
fn kdig(addr: SocketAddr, opts: &[&str], name: &str) -> (bool, String) {
    let out = Command::new("kdig")
        .arg(format!("@{}", addr.ip()))
        .args([
            "-p",
            &addr.port().to_string(),
            "+tls",
            "+timeout=3",
            "+retry=0",
        ])
        .args(opts)
        .arg(name)
        .output()
        .expect("run kdig (knot-dnsutils)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains("status: "), text)
}

/// kdig verifying the server against `ca` for the name `localhost`.
fn kdig_ca(addr: SocketAddr, ca: &Path, name: &str) -> String {
    let ca = format!("+tls-ca={}", ca.display());
    let (ok, text) = kdig(addr, &[&ca, "+tls-hostname=localhost"], name);
    assert!(ok, "kdig {name} failed:\n{text}");
    text
}

#[test]
fn kdig_resolves_and_gets_block_answers_over_tls() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dot = start(&up, "", "");
    let ca = dot.data().join("tls/cert.pem");
    let text = kdig_ca(dot.addr, &ca, "www.fwd.test");
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(text.contains("192.0.2.1"), "{text}");
    assert!(text.contains("TLS"), "kdig reports the TLS session: {text}");
    // The host name is in the self-signed certificate too.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let (ok, text) = kdig(
        dot.addr,
        &[
            &format!("+tls-ca={}", ca.display()),
            &format!("+tls-hostname={}", host.trim()),
        ],
        "www.fwd.test",
    );
    assert!(ok && text.contains("192.0.2.1"), "{text}");
    let text = kdig_ca(dot.addr, &ca, "doubleclick.net");
    assert!(
        text.contains("0.0.0.0"),
        "blocked name gets the null IP: {text}"
    );
    // Blocked names never reach the upstream; the forwarded one did, once.
    assert_eq!(up.queries_for("doubleclick.net."), 0);
    assert_eq!(up.queries_for("www.fwd.test."), 1);
}

#[test]
fn self_signed_certificate_is_private_and_reused_across_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let up = FakeUpstream::start(localhost(), ZONE);
    let dot = start(&up, "", "");
    let pin = dot.logged_pin(0).expect("pin logged at start");
    let key = dot.data().join("tls/key.pem");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key file mode");
    let cert = std::fs::read(dot.data().join("tls/cert.pem")).unwrap();
    let config = std::fs::read_to_string(dot.dg.config_path()).unwrap();
    let (status, dir) = dot.dg.stop_keeping_dir(libc::SIGTERM);
    assert!(status.success());
    let dg = Dnsguard::start_in(&config, dir);
    let again = Dot {
        addr: wait_for(Duration::from_secs(10), "the DoT listener", || {
            dg.log()
                .split("listening (DNS over TLS) addr=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
        }),
        dg,
    };
    assert_eq!(again.logged_pin(0).as_deref(), Some(&pin[..]), "same key");
    assert_eq!(
        std::fs::read(again.data().join("tls/cert.pem")).unwrap(),
        cert
    );
}

#[test]
fn kdig_accepts_the_logged_spki_pin_and_rejects_another() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dot = start(&up, "", "");
    let pin = dot.logged_pin(0).expect("pin logged");
    let (ok, text) = kdig(dot.addr, &[&format!("+tls-pin={pin}")], "www.fwd.test");
    assert!(ok && text.contains("192.0.2.1"), "{text}");
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let (ok, text) = kdig(dot.addr, &[&format!("+tls-pin={wrong}")], "www.fwd.test");
    assert!(!ok, "a wrong pin must fail:\n{text}");
}

#[test]
fn dig_resolves_over_tls() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dot = start(&up, "", "");
    let ca = dot.data().join("tls/cert.pem");
    let out = Command::new("dig")
        .arg(format!("@{}", dot.addr.ip()))
        .args(["-p", &dot.addr.port().to_string(), "+tls"])
        .arg(format!("+tls-ca={}", ca.display()))
        .args(["+tls-hostname=localhost", "+time=3", "+tries=1"])
        .arg("www.fwd.test")
        .output()
        .expect("run dig (bind9-dnsutils)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("Invalid option") || text.contains("not supported") {
        // Only a dig that says it cannot do TLS is skipped, with its words.
        eprintln!("skipped: this dig does not support +tls:\n{text}");
        assert!(!out.status.success(), "{text}");
        return;
    }
    assert!(out.status.success(), "{text}");
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(text.contains("192.0.2.1"), "{text}");
    assert!(text.contains("(TLS)"), "dig used TLS: {text}");
}

#[test]
fn dot_clients_follow_allow_clients() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dot = start(&up, "allow_clients = [\"127.0.0.2/32\"]", "");
    let pin = format!("+tls-pin={}", dot.logged_pin(0).unwrap());
    let (ok, text) = kdig(dot.addr, &[&pin], "www.fwd.test");
    assert!(ok && text.contains("status: REFUSED"), "{text}");
    let (ok, text) = kdig(dot.addr, &[&pin, "-b", "127.0.0.2"], "www.fwd.test");
    assert!(ok && text.contains("192.0.2.1"), "{text}");
}

#[test]
fn handshake_garbage_leaves_the_service_answering() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dot = start(&up, "", "");
    common::client::send_tls_garbage(dot.addr);
    // A plain DNS query over TCP to the TLS port is garbage too.
    let mut s = TcpStream::connect(dot.addr).unwrap();
    let _ = s.write_all(&[0, 12, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    let text = kdig_ca(dot.addr, &dot.data().join("tls/cert.pem"), "www.fwd.test");
    assert!(text.contains("192.0.2.1"), "{text}");
}

fn tcp_from(from: IpAddr, server: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(from, 0).into()).unwrap();
    s.connect(&server.into()).unwrap();
    s.into()
}

#[test]
fn clients_that_never_handshake_are_closed_and_cannot_exhaust_the_cap() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dot = start(
        &up,
        "tcp_idle_timeout_secs = 2\ntcp_max_connections = 20\ntcp_max_connections_per_client = 5",
        "",
    );
    // 60 silent connections from 20 addresses, 20 more from one address.
    let started = Instant::now();
    let mut idle = Vec::new();
    for i in 0..60u8 {
        let from: IpAddr = format!("127.0.2.{}", 1 + i % 20).parse().unwrap();
        idle.push(tcp_from(from, dot.addr));
    }
    for _ in 0..20 {
        idle.push(tcp_from("127.0.0.9".parse().unwrap(), dot.addr));
    }
    // A real client still gets in, over the cap of silent ones.
    let text = kdig_ca(dot.addr, &dot.data().join("tls/cert.pem"), "www.fwd.test");
    assert!(text.contains("192.0.2.1"), "{text}");
    // The caps close all but 20 (5 for the one client) at once ...
    wait_for(
        Duration::from_secs(10),
        "silent connections closed down to the caps",
        || {
            let open: Vec<bool> = idle
                .iter()
                .map(|s| !common::client::closed_by_server(s))
                .collect();
            let total = open.iter().filter(|o| **o).count();
            let one_client = open[60..].iter().filter(|o| **o).count();
            (total <= 20 && one_client <= 5).then_some(())
        },
    );
    // ... and the handshake timeout closes the rest after about 2 s.
    wait_for(
        Duration::from_secs(10),
        "every silent connection closed",
        || {
            idle.iter()
                .all(common::client::closed_by_server)
                .then_some(())
        },
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "closed after {took:?}, before the 2 s idle timeout"
    );
}

/// A self-signed certificate for `localhost` and its key, as PEM files in `dir`.
fn write_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[test]
fn a_certificate_renewed_on_disk_is_served_after_sighup() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(certs.path());
    let old = std::fs::read(&cert).unwrap();
    let dot = start(
        &up,
        "",
        &format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    assert!(
        !dot.data().join("tls").exists(),
        "no self-signed certificate when one is configured"
    );
    let old_pin = format!("+tls-pin={}", dot.logged_pin(0).unwrap());
    assert!(kdig(dot.addr, &[&old_pin], "www.fwd.test").0);
    let saved_old = certs.path().join("old.pem");
    std::fs::write(&saved_old, &old).unwrap();

    write_cert(certs.path());
    dot.dg.signal(libc::SIGHUP);
    // The pin SIGHUP's reload logged (the file watcher would renew the
    // certificate too, a period later, and says so in other words).
    let new_pin = wait_for(Duration::from_secs(10), "the reloaded pin", || {
        dot.dg.pin_logged_with("TLS certificate reloaded")
    });
    assert_ne!(format!("+tls-pin={new_pin}"), old_pin);
    // The new certificate is what the handshake presents: it verifies against
    // the new file as CA, not the old one, and matches the new pin only.
    let text = kdig_ca(dot.addr, &cert, "www.fwd.test");
    assert!(text.contains("192.0.2.1"), "{text}");
    let (ok, text) = kdig(dot.addr, &[&format!("+tls-pin={new_pin}")], "www.fwd.test");
    assert!(ok, "{text}");
    let (ok, text) = kdig(dot.addr, &[&old_pin], "www.fwd.test");
    assert!(!ok, "old pin must fail after renewal:\n{text}");
    let ca_old = format!("+tls-ca={}", saved_old.display());
    let (ok, text) = kdig(
        dot.addr,
        &[&ca_old, "+tls-hostname=localhost"],
        "www.fwd.test",
    );
    assert!(!ok, "old CA must fail after renewal:\n{text}");

    // A broken file on SIGHUP keeps the certificate in force.
    std::fs::write(&cert, "not a certificate").unwrap();
    dot.dg.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), "the failed reload logged", || {
        dot.dg
            .log()
            .contains("TLS certificate reload failed")
            .then_some(())
    });
    let (ok, text) = kdig(dot.addr, &[&format!("+tls-pin={new_pin}")], "www.fwd.test");
    assert!(ok, "{text}");
}

/// With the default log filter (no RUST_LOG), a client that sends an IP address as
/// SNI (kdig does, given none) is not a warning per connection.
#[test]
fn dot_clients_do_not_flood_the_default_log() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let up = FakeUpstream::start(localhost(), ZONE);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dnsguard.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\n\
             [resolver]\nupstreams = [\"{}\"]\n[web]\nlisten = \"127.0.0.1:0\"\n",
            up.addr()
        ),
    )
    .unwrap();
    let mut child = Command::new(common::server::binary())
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("server log ended").unwrap();
        log.push_str(&line);
        log.push('\n');
        if let Some(rest) = line.split("listening (DNS over TLS) addr=").nth(1) {
            break rest.trim().parse().unwrap();
        }
    };
    // +tls-ca without +tls-hostname: kdig sends the server's IP as SNI.
    let ca = format!(
        "+tls-ca={}",
        dir.path().join("dnsguard-data/tls/cert.pem").display()
    );
    for _ in 0..3 {
        let (ok, text) = kdig(addr, &[&ca], "www.fwd.test");
        assert!(ok && text.contains("192.0.2.1"), "{text}");
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for line in lines.map_while(Result::ok) {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(child.wait().unwrap().success(), "{log}");
    assert!(log.contains("shutting down"), "whole log read: {log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && l.contains("rustls")),
        "rustls warnings for normal DoT clients:\n{log}"
    );
}

/// A configured certificate that cannot be used stops the start with the file and
/// the reason, before any listener opens: garbage in the certificate file, or a
/// key that does not belong to the certificate.
#[test]
fn a_broken_certificate_stops_the_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let (cert_a, _) = write_cert(&a);
    let (_, key_b) = write_cert(&b);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    for (cert, key, reason) in [
        (
            &garbage,
            &key_b,
            format!("{}: no PEM certificate found", garbage.display()),
        ),
        (
            &cert_a,
            &key_b,
            format!(
                "{}: the private key does not belong to the certificate {}",
                key_b.display(),
                cert_a.display()
            ),
        ),
    ] {
        let path = dir.path().join("dnsguard.toml");
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\n\
                 [tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
                 [web]\nlisten = \"127.0.0.1:0\"\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let out = Command::new(common::server::binary())
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(&reason), "want {reason:?} in:\n{err}");
        assert!(!err.contains("listening (DNS over TLS)"), "{err}");
    }
}

/// dnstap reports a DNS-over-TLS query as DOT, not TCP.
#[test]
fn dnstap_reports_dot_queries_as_dot() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("tap.sock");
    let file = tmp.path().join("tap.fstrm");
    let capture = common::tap::Capture::unix(&socket, &file);
    let dot = start(
        &up,
        "",
        &format!("[dnstap]\ntarget = \"unix:{}\"\n", socket.display()),
    );
    let pin = format!("+tls-pin={}", dot.logged_pin(0).unwrap());
    let (ok, text) = kdig(dot.addr, &[&pin], "www.fwd.test");
    assert!(ok && text.contains("192.0.2.1"), "{text}");
    // SIGTERM: dnsguard sends what is queued and waits for the collector's FINISH.
    assert!(dot.dg.stop_with(libc::SIGTERM).success());
    let file = capture.finish();
    // dnstap-read (BIND 9.18) prints only UDP or TCP: read the protobuf itself.
    let protocols = common::tap::socket_protocols(&std::fs::read(&file).unwrap());
    assert_eq!(protocols, [3, 3], "dnstap SocketProtocol DOT = 3");
}
