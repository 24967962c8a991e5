//! `dnsguard stub`: plain DNS on a host forwarded to a dnsguard over DNS over TLS
//! with the server's SPKI pin. The server's answers and blocks come through; a
//! wrong pin fails closed (SERVFAIL, nothing sent in the clear); the stub keeps
//! answering across a server restart; and a real resolver library (`getent`, glibc)
//! in a network namespace whose resolv.conf names the stub resolves through it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::client::{addrs, ask, rcode};
use common::server::Dnsguard;
use common::upstream::FakeUpstream;
use common::wait_for;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const ZONE: &str = "\
www.fwd.test. 300 A 192.0.2.1
new.fwd.test. 300 A 192.0.2.2
";

/// A free TCP port on 127.0.0.1 (the server restarts on it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server forwarding to `up` and blocking the built-in list, with DoT on `dot`
/// (listening: it binds after the UDP listener the start waits for).
fn server_in(up: &FakeUpstream, dot: u16, dir: tempfile::TempDir) -> Dnsguard {
    let dg = Dnsguard::start_in(
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:{dot}\"]\n\
             [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
             [[lists]]\nname = \"dnsguard-default\"\nsource = \"builtin:default\"\n",
            up.addr()
        ),
        dir,
    );
    wait_for(Duration::from_secs(10), "the DoT listener", || {
        dg.log().contains("listening (DNS over TLS)").then_some(())
    });
    dg
}

/// The SPKI pin the server logged at start.
fn pin_of(dg: &Dnsguard) -> String {
    wait_for(Duration::from_secs(10), "the logged pin", || {
        dg.log()
            .split("spki_pin=")
            .nth(1)?
            .split_whitespace()
            .next()
            .map(str::to_owned)
    })
}

/// `dnsguard stub` on a free loopback port, forwarding to `to` with `pin`.
fn stub(to: &str, pin: &str) -> Dnsguard {
    let args: Vec<String> = [
        "stub",
        "--listen",
        "127.0.0.1:0",
        "--to",
        to,
        "--pin",
        pin,
        "--data-dir",
        "stub-data",
    ]
    .map(str::to_owned)
    .to_vec();
    Dnsguard::start_args(&args, tempfile::tempdir().unwrap(), &[])
}

#[test]
fn the_stub_brings_the_servers_answers_and_blocks_over_dot() {
    let up = FakeUpstream::start("127.0.0.1".parse().unwrap(), ZONE);
    let port = free_port();
    let server = server_in(&up, port, tempfile::tempdir().unwrap());
    let st = stub(
        &format!("tls://127.0.0.1:{port}#agent-1.dns.test"),
        &pin_of(&server),
    );
    let m = ask(st.addr, "www.fwd.test", RecordType::A);
    assert_eq!(addrs(&m), ["192.0.2.1"], "{m}");
    let m = ask(st.addr, "doubleclick.net", RecordType::A);
    assert_eq!(addrs(&m), ["0.0.0.0"], "the server's block answer: {m}");
    assert_eq!(up.queries_for("doubleclick.net."), 0);
    // The server decided and logged it (its only listener the stub can reach
    // is DoT: the stub has no other upstream).
    let shown = wait_for(Duration::from_secs(10), "the server's log entry", || {
        let (ok, out, _) = common::server::run_cli(&[
            "query-log",
            "--config",
            &server.config_path().display().to_string(),
            "--since",
            "1h",
            "--format",
            "jsonl",
        ]);
        (ok && out.contains("doubleclick.net")).then_some(out)
    });
    assert!(shown.contains(r#""verdict":"blocked""#), "{shown}");
}

/// The same over DNS over HTTPS, the ClientID in the path: the server logs the
/// query (it reached it over DoH, the stub's only upstream).
#[test]
fn the_stub_forwards_over_doh_with_the_client_id_path() {
    let up = FakeUpstream::start("127.0.0.1".parse().unwrap(), ZONE);
    let (dot, doh) = (free_port(), free_port());
    let server = Dnsguard::start_in(
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:{dot}\"]\n\
             https_listen = [\"127.0.0.1:{doh}\"]\n\
             [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
             [[lists]]\nname = \"dnsguard-default\"\nsource = \"builtin:default\"\n",
            up.addr()
        ),
        tempfile::tempdir().unwrap(),
    );
    let st = stub(
        &format!("https://127.0.0.1:{doh}/dns-query/agent-1"),
        &pin_of(&server),
    );
    assert_eq!(
        addrs(&ask(st.addr, "www.fwd.test", RecordType::A)),
        ["192.0.2.1"]
    );
    let m = ask(st.addr, "doubleclick.net", RecordType::A);
    assert_eq!(addrs(&m), ["0.0.0.0"], "the server's block answer: {m}");
    assert_eq!(up.queries_for("doubleclick.net."), 0);
}

#[test]
fn a_wrong_pin_fails_closed_with_the_reason() {
    let up = FakeUpstream::start("127.0.0.1".parse().unwrap(), ZONE);
    let port = free_port();
    let server = server_in(&up, port, tempfile::tempdir().unwrap());
    let _ = pin_of(&server);
    // A well-formed pin of another key.
    let other = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let st = stub(&format!("tls://127.0.0.1:{port}#dns.test"), other);
    let m = ask(st.addr, "www.fwd.test", RecordType::A);
    assert_eq!(rcode(&m), ResponseCode::ServFail, "{m}");
    assert_eq!(up.queries(), 0, "nothing reached the server's upstream");
    let log = wait_for(
        Duration::from_secs(10),
        "the reason in the stub's log",
        || {
            let log = st.log();
            log.contains("not one of resolver.tls_pins").then_some(log)
        },
    );
    assert!(log.contains("cannot reach upstream"), "{log}");
}

#[test]
fn the_stub_keeps_answering_across_a_server_restart() {
    let up = FakeUpstream::start("127.0.0.1".parse().unwrap(), ZONE);
    let port = free_port();
    let server = server_in(&up, port, tempfile::tempdir().unwrap());
    let pin = pin_of(&server);
    let st = stub(&format!("tls://127.0.0.1:{port}#dns.test"), &pin);
    assert_eq!(
        addrs(&ask(st.addr, "www.fwd.test", RecordType::A)),
        ["192.0.2.1"]
    );
    // The server goes away: the stub's cache still answers what it has.
    let (_, dir) = server.stop_keeping_dir(libc::SIGTERM);
    assert_eq!(
        addrs(&ask(st.addr, "www.fwd.test", RecordType::A)),
        ["192.0.2.1"]
    );
    // Back on the same port with the same key: a new name is fetched through a
    // new connection.
    let again = server_in(&up, port, dir);
    assert_eq!(pin_of(&again), pin);
    let m = wait_for(
        Duration::from_secs(10),
        "an answer after the restart",
        || {
            let m = ask(st.addr, "new.fwd.test", RecordType::A);
            (rcode(&m) == ResponseCode::NoError).then_some(m)
        },
    );
    assert_eq!(addrs(&m), ["192.0.2.2"], "{m}");
}

/// Deletes the network namespace and its resolv.conf when the test ends.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.0));
    }
}

fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cmd[0]));
    assert!(
        out.status.success(),
        "{} failed: {}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// glibc's resolver (`getent hosts`) in a namespace whose resolv.conf names the
/// stub on 127.0.0.53, as on a host running systemd-resolved's address: the name
/// comes from the server's local records, over DoT, through the stub.
#[test]
fn getent_resolves_through_the_stub_in_a_network_namespace() {
    let ns = format!("dgstub{}", std::process::id());
    run(&["ip", "netns", "add", &ns]);
    let _guard = Netns(ns.clone());
    run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    std::fs::create_dir_all(format!("/etc/netns/{ns}")).unwrap();
    std::fs::write(
        format!("/etc/netns/{ns}/resolv.conf"),
        "nameserver 127.0.0.53\noptions timeout:2 attempts:1\n",
    )
    .unwrap();
    let inside = ["ip", "netns", "exec", ns.as_str()];
    let server = Dnsguard::start_wrapped(
        "[server]\nlisten = [\"127.0.0.1:53\"]\ntls_listen = [\"127.0.0.1:853\"]\n\
         [resolver]\nupstreams = [\"127.0.0.1:9\"]\ntimeout_ms = 500\n\
         [local]\nrecords = [\"agent.lab A 192.0.2.77\"]\n\
         [web]\nenabled = false\n",
        tempfile::tempdir().unwrap(),
        &inside,
    );
    let pin = pin_of(&server);
    let args: Vec<String> = [
        "stub",
        "--listen",
        "127.0.0.53:53",
        "--to",
        "tls://127.0.0.1:853#agent-1.dns.lab",
        "--pin",
        &pin,
        "--data-dir",
        "stub-data",
    ]
    .map(str::to_owned)
    .to_vec();
    let _stub = Dnsguard::start_args(&args, tempfile::tempdir().unwrap(), &inside);
    let out = run(&["ip", "netns", "exec", &ns, "getent", "hosts", "agent.lab"]);
    assert!(out.starts_with("192.0.2.77"), "{out}");
}
