//! The README's quick start: `dnsguard serve` with the embedded default, no config
//! file, on a desktop that runs avahi-daemon (mDNS owns UDP port 5353 on the
//! wildcard address; dnsguard's default listens on 127.0.0.1:5353).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::{addrs, ask, rcode};
use common::server::Dnsguard;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// True while some process holds UDP 0.0.0.0:5353 without sharing it with us.
fn wildcard_5353_taken() -> bool {
    UdpSocket::bind("0.0.0.0:5353").is_err()
}

#[test]
fn the_quick_start_answers_beside_a_running_avahi_daemon() {
    let dir = tempfile::tempdir().unwrap();
    // avahi-daemon as a desktop runs it, minus D-Bus (none in a test); one already
    // running (a developer's desktop) serves as well.
    let conf = dir.path().join("avahi-daemon.conf");
    std::fs::write(
        &conf,
        "[server]\nuse-ipv4=yes\nuse-ipv6=yes\nenable-dbus=no\n[publish]\npublish-workstation=no\n",
    )
    .unwrap();
    let already = Command::new("avahi-daemon")
        .arg("--check")
        .status()
        .expect("avahi-daemon is installed (Debian package avahi-daemon)")
        .success();
    let _avahi = (!already).then(|| {
        Killed(
            Command::new("avahi-daemon")
                .arg("-f")
                .arg(&conf)
                .args(["--no-drop-root", "--no-chroot", "--no-rlimits"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start avahi-daemon"),
        )
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !wildcard_5353_taken() {
        assert!(Instant::now() < deadline, "avahi-daemon never bound 5353");
        std::thread::sleep(Duration::from_millis(20)); // polling, bounded by the deadline
    }

    // The quick start: no --config, in a fresh directory (its data directory is
    // relative to it).
    let dg = Dnsguard::start_embedded(dir);
    assert_eq!(
        dg.addr,
        "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
        "{}",
        dg.log()
    );
    let addr = dg.addr;
    let r = ask(addr, "localhost.", RecordType::A);
    assert_eq!(addrs(&r), vec!["127.0.0.1"]);
    // The bundled blocklist is on.
    let r = ask(addr, "doubleclick.net.", RecordType::A);
    assert_eq!(addrs(&r), vec!["0.0.0.0"]);
    let r = ask(addr, "use-application-dns.net.", RecordType::A);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    // DNS over HTTPS at https://127.0.0.1:8443/dns-query, with the certificate
    // made on first start.
    let ca = dg.dir.path().join("dnsguard-data/tls/cert.pem");
    let out = std::process::Command::new("kdig")
        .args([
            "@127.0.0.1",
            "-p",
            "8443",
            "+https",
            "+tls-hostname=localhost",
        ])
        .arg(format!("+tls-ca={}", ca.display()))
        .args(["+timeout=3", "+retry=0", "+short", "doubleclick.net"])
        .output()
        .expect("run kdig (knot-dnsutils)");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0.0.0.0");
    // mDNS keeps its port: avahi still holds the wildcard socket.
    assert!(wildcard_5353_taken(), "avahi lost UDP 5353");
}
