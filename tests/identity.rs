//! Per-agent identity with real clients on loopback: the ClientID in the DoT server
//! name (kdig), a spoofed ClientID that must not widen the source's group, the MAC
//! and client-subnet options a trusted forwarder adds (dig's raw EDNS options and a
//! real dnsmasq with `--add-subnet`), the same options from an untrusted address
//! ignored, client names in the query log and in `dnsguard check --client NAME`.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::client::dig;
use common::server::{Dnsguard, run_cli};
use common::upstream::FakeUpstream;
use common::wait_for;

const ZONE: &str = "\
www.fwd.test. 300 A 192.0.2.1
mail.fwd.test. 300 A 192.0.2.5
ads.fwd.test. 300 A 192.0.2.9
";

/// lab-1's secret (the config holds its SHA-256).
const LAB_SECRET: &str = "lab-1-secret-7f3a";

/// The trusted forwarder's address (dnsmasq, or dig bound to it).
const FORWARDER: &str = "127.0.0.3";
/// An address that is no forwarder.
const STRANGER: &str = "127.0.0.4";

/// Groups, from the widest to the strictest:
/// - `office` (127.0.0.0/8, every test client's source): resolves all but ads;
/// - `lab` (`client:lab-1`, which has a secret): resolves everything, ads too;
/// - `agents` (`client:agent-1` by ClientID or MAC, `mac:…:09`) and `kids`
///   (127.0.0.5, what a forwarder reports as the client subnet): allowlist-only,
///   `www` and nothing else (NXDOMAIN).
fn config(up: SocketAddr) -> String {
    let digest: String = ring::digest::digest(&ring::digest::SHA256, LAB_SECRET.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\n\
         https_listen = [\"127.0.0.1:0\"]\n\
         trusted_forwarders = [\"{FORWARDER}/32\"]\n\
         [resolver]\nupstreams = [\"{up}\"]\ntimeout_ms = 800\n\
         [[clients]]\nname = \"agent-1\"\nids = [\"agent-1\"]\nmacs = [\"02:00:00:00:00:01\"]\n\
         [[clients]]\nname = \"lab-1\"\nids = [\"lab-1\"]\nsecret_sha256 = \"{digest}\"\n\
         [[groups]]\nname = \"office\"\nclients = [\"127.0.0.0/8\"]\ndeny = [\"||ads.fwd.test^\"]\n\
         block_mode = \"nxdomain\"\n\
         [[groups]]\nname = \"lab\"\nclients = [\"client:lab-1\"]\n\
         [[groups]]\nname = \"agents\"\nclients = [\"client:agent-1\", \"mac:02:00:00:00:00:09\"]\n\
         mode = \"enforce\"\nallow = [\"www.fwd.test\"]\nblock_mode = \"nxdomain\"\n\
         [[groups]]\nname = \"kids\"\nclients = [\"127.0.0.5\"]\n\
         mode = \"enforce\"\nallow = [\"www.fwd.test\"]\nblock_mode = \"nxdomain\"\n"
    )
}

struct Server {
    dg: Dnsguard,
    dot: SocketAddr,
    doh: SocketAddr,
    _up: FakeUpstream,
}

fn start() -> Server {
    let up = FakeUpstream::start("127.0.0.1".parse().unwrap(), ZONE);
    let dg = Dnsguard::start(&config(up.addr()));
    let dot = wait_for(Duration::from_secs(15), "the DoT listener", || {
        dg.log()
            .split("listening (DNS over TLS) addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse::<SocketAddr>().ok())
    });
    let doh = wait_for(Duration::from_secs(15), "the DoH listener", || {
        dg.log()
            .split("listening (DNS over HTTPS) addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse::<SocketAddr>().ok())
    });
    Server {
        dg,
        dot,
        doh,
        _up: up,
    }
}

/// kdig over TLS to `addr` with the server name `sni` (no certificate check: the
/// self-signed one is for localhost); the status and answer it printed.
fn kdig_sni(addr: SocketAddr, sni: Option<&str>, name: &str) -> String {
    let mut cmd = Command::new("kdig");
    cmd.arg(format!("@{}", addr.ip())).args([
        "-p",
        &addr.port().to_string(),
        "+tls",
        "+timeout=3",
        "+retry=0",
    ]);
    if let Some(sni) = sni {
        cmd.arg(format!("+tls-sni={sni}"));
    }
    let out = cmd.arg(name).output().expect("run kdig (knot-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("status: "), "kdig {name} failed: {text}");
    text
}

/// kdig over DoH to `addr` at `path` (no certificate check); what it printed.
fn kdig_doh(addr: SocketAddr, path: &str, name: &str) -> String {
    let out = Command::new("kdig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), &format!("+https={path}")])
        .args(["+timeout=3", "+retry=0", name])
        .output()
        .expect("run kdig (knot-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("status: "), "kdig {name} failed: {text}");
    text
}

/// Over DoH, a ClientID with its secret in the path is proven and may select a
/// wider group (lab resolves ads); the same ClientID with a wrong secret or none
/// gets the source's group (office: ads is NXDOMAIN); a stricter group needs no
/// proof (agent-1: allowlist-only).
#[test]
fn a_doh_secret_proves_the_client_and_only_then_widens() {
    let s = start();
    let proven = kdig_doh(
        s.doh,
        &format!("/dns-query/lab-1/{LAB_SECRET}"),
        "ads.fwd.test",
    );
    assert!(resolved(&proven, "192.0.2.9"), "proven lab-1: {proven}");
    for path in [
        "/dns-query/lab-1/wrong-secret",
        "/dns-query/lab-1",
        "/dns-query",
    ] {
        let text = kdig_doh(s.doh, path, "ads.fwd.test");
        assert!(nxdomain(&text), "{path}: the office answer: {text}");
    }
    let text = kdig_doh(s.doh, "/dns-query/agent-1", "mail.fwd.test");
    assert!(nxdomain(&text), "agent-1 narrows without proof: {text}");
    // The secret is in no log line.
    assert!(!s.dg.log().contains(LAB_SECRET));
}

fn resolved(text: &str, ip: &str) -> bool {
    text.contains("status: NOERROR") && text.contains(ip)
}

fn nxdomain(text: &str) -> bool {
    text.contains("status: NXDOMAIN")
}

/// Query-log entries (JSON) of the last hour, through the CLI.
fn log_entries(dg: &Dnsguard) -> Vec<serde_json::Value> {
    let cfg = dg.config_path();
    let (ok, out, err) = run_cli(&[
        "query-log",
        "--since",
        "1h",
        "--format",
        "json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(ok, "query-log failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn dot_server_name_selects_the_agent_group_and_spoofing_never_widens() {
    let s = start();
    // Without a ClientID: the source address's group (office) resolves mail.
    let text = kdig_sni(s.dot, None, "mail.fwd.test");
    assert!(resolved(&text, "192.0.2.5"), "{text}");
    // agent-1.dns.test: the agent group, allowlist-only: mail is not on it.
    let text = kdig_sni(s.dot, Some("agent-1.dns.test"), "mail.fwd.test");
    assert!(nxdomain(&text), "agent-1 gets the agent group: {text}");
    let text = kdig_sni(s.dot, Some("agent-1.dns.test"), "www.fwd.test");
    assert!(resolved(&text, "192.0.2.1"), "{text}");
    // Two labels name no client (the server's own name).
    let text = kdig_sni(s.dot, Some("dns.test"), "mail.fwd.test");
    assert!(resolved(&text, "192.0.2.5"), "{text}");

    // Spoofing: lab-1's ClientID without lab-1's secret. The lab group would
    // resolve ads; unproven, it may not widen office, whose answer it gets.
    let text = kdig_sni(s.dot, Some("lab-1.dns.test"), "ads.fwd.test");
    assert!(
        nxdomain(&text),
        "a spoofed ClientID gets the stricter answer: {text}"
    );
    wait_for(Duration::from_secs(15), "the log to say why", || {
        let log = s.dg.log();
        log.contains("identity not applied: ClientID \"lab-1\"")
            .then_some(())
    });

    // The query log names the agent; the spoofer stays its address.
    // The log writes in batches: wait for the last query asked (the spoofed one).
    let entries = wait_for(
        Duration::from_secs(15),
        "the agent's and the spoofer's queries in the log",
        || {
            let e = log_entries(&s.dg);
            let agent = e
                .iter()
                .any(|e| e["name"] == "www.fwd.test" && e["client_name"] == "agent-1");
            let spoof = e.iter().any(|e| e["name"] == "ads.fwd.test");
            (agent && spoof).then_some(e)
        },
    );
    let agent = entries
        .iter()
        .find(|e| e["name"] == "mail.fwd.test" && e["client_name"] == "agent-1")
        .expect("agent-1's blocked mail query is logged under its name");
    assert_eq!(agent["group"], "agents");
    let spoof = entries
        .iter()
        .find(|e| e["name"] == "ads.fwd.test")
        .expect("the spoofed query is logged");
    assert_eq!(spoof["group"], "office");
    assert!(spoof.get("client_name").is_none(), "{spoof}");

    // `query-log --client NAME` keeps that client's queries only.
    let cfg = s.dg.config_path();
    let (ok, out, err) = run_cli(&[
        "query-log",
        "--since",
        "1h",
        "--client",
        "agent-1",
        "--format",
        "json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(ok, "query-log --client agent-1 failed: {err}");
    let names: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{out}");
    assert!(names.iter().all(|e| e["client_name"] == "agent-1"), "{out}");

    // `dnsguard check --client NAME` takes the name.
    let (ok, out, err) = run_cli(&[
        "check",
        "mail.fwd.test",
        "--client",
        "agent-1",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(ok, "check --client agent-1 failed: {err}");
    assert!(out.contains("agents"), "{out}");
    let (ok, _, err) = run_cli(&[
        "check",
        "mail.fwd.test",
        "--client",
        "nobody",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("nobody"), "{err}");
}

#[test]
fn forwarder_options_count_only_from_a_trusted_forwarder() {
    let s = start();
    let ask = |from: &str, mac: &str, name: &str| {
        dig(
            s.dg.addr,
            &["-b", from, &format!("+ednsopt=65001:{mac}"), name],
        )
    };
    // From the forwarder: agent-1's MAC and the `mac:` selector pick the agent group.
    let text = ask(FORWARDER, "020000000001", "mail.fwd.test");
    assert!(nxdomain(&text), "agent-1's MAC via the forwarder: {text}");
    let text = ask(FORWARDER, "020000000009", "mail.fwd.test");
    assert!(nxdomain(&text), "mac:…:09 via the forwarder: {text}");
    let text = ask(FORWARDER, "020000000001", "www.fwd.test");
    assert!(resolved(&text, "192.0.2.1"), "{text}");
    // The CPE-ID (dnsmasq add-cpe-id, option 65074) "agent-1" is matched like a ClientID.
    let text = dig(
        s.dg.addr,
        &[
            "-b",
            FORWARDER,
            "+ednsopt=65074:6167656e742d31",
            "mail.fwd.test",
        ],
    );
    assert!(
        nxdomain(&text),
        "agent-1's CPE-ID via the forwarder: {text}"
    );
    // An unknown MAC: the source's group.
    let text = ask(FORWARDER, "02000000ffff", "mail.fwd.test");
    assert!(resolved(&text, "192.0.2.5"), "{text}");
    // The same options from an address that is no forwarder: ignored (the UDP
    // fast path answers it by its source, as before), also over TCP.
    let text = ask(STRANGER, "020000000001", "mail.fwd.test");
    assert!(resolved(&text, "192.0.2.5"), "{text}");
    let text = dig(
        s.dg.addr,
        &[
            "-b",
            STRANGER,
            "+tcp",
            "+ednsopt=65001:020000000001",
            "mail.fwd.test",
        ],
    );
    assert!(resolved(&text, "192.0.2.5"), "{text}");
    // Client subnet from the forwarder vs. from a stranger.
    let text = dig(
        s.dg.addr,
        &["-b", FORWARDER, "+subnet=127.0.0.5/32", "mail.fwd.test"],
    );
    assert!(
        nxdomain(&text),
        "the subnet's address is the client: {text}"
    );
    let text = dig(
        s.dg.addr,
        &["-b", STRANGER, "+subnet=127.0.0.5/32", "mail.fwd.test"],
    );
    assert!(
        resolved(&text, "192.0.2.5"),
        "a stranger's subnet is ignored: {text}"
    );
}

/// dnsmasq forwarding to dnsguard from `source`, adding the client subnet
/// (`--add-subnet=32,128`) and MAC (`--add-mac`, none on loopback); killed on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    fn start(listen: &str, source: &str, upstream: SocketAddr) -> Dnsmasq {
        let port = UdpSocket::bind((listen, 0))
            .and_then(|s| s.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--cache-size=0",
                "--bind-interfaces",
                "--user=root",
                "--pid-file=",
                &format!("--listen-address={listen}"),
                &format!("--port={port}"),
                "--add-mac",
                "--add-subnet=32,128",
                &format!("--server={}#{}@{source}", upstream.ip(), upstream.port()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run dnsmasq");
        let addr = SocketAddr::new(listen.parse().unwrap(), port);
        let d = Dnsmasq { child, addr };
        wait_for(Duration::from_secs(15), "dnsmasq to answer", || {
            dig(d.addr, &["www.fwd.test"])
                .contains("192.0.2.1")
                .then_some(())
        });
        d
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dnsmasq_add_subnet_selects_the_clients_group_only_when_trusted() {
    let s = start();
    let trusted = Dnsmasq::start("127.0.0.3", FORWARDER, s.dg.addr);
    let untrusted = Dnsmasq::start("127.0.0.4", STRANGER, s.dg.addr);
    let via = |d: &Dnsmasq, from: &str| dig(d.addr, &["-b", from, "mail.fwd.test"]);
    // 127.0.0.5 is a kid: the trusted dnsmasq says so, and the kids' allowlist applies.
    let text = via(&trusted, "127.0.0.5");
    assert!(nxdomain(&text), "kid via the trusted dnsmasq: {text}");
    let text = via(&trusted, "127.0.0.6");
    assert!(resolved(&text, "192.0.2.5"), "another client: {text}");
    // The same through a dnsmasq dnsguard does not trust: its source's group.
    let text = via(&untrusted, "127.0.0.5");
    assert!(
        resolved(&text, "192.0.2.5"),
        "kid via an untrusted dnsmasq: {text}"
    );
}
