//! Per-agent state keyed by the client, not the address, with a real server and a
//! real DoH client (kdig) on loopback: two agents behind one address (both
//! 127.0.0.1) that prove who they are keep their own tunnel quarantine, their own
//! new-domain alerts and their own learned allowlist; a client that proves
//! nothing cannot escape a quarantine by rotating ClientIDs or dropping its proof.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::server::{Dnsguard, run_cli};
use common::upstream::FakeUpstream;
use common::{tunnel_name, wait_for};

/// How long a condition may take.
const WAIT: Duration = Duration::from_secs(15);

const ZONE: &str = "\
a2.learn.example. 300 A 192.0.2.42
www.a.test. 300 A 192.0.2.1
www.b.test. 300 A 192.0.2.2
www.c.test. 300 A 192.0.2.3
";

const SECRET_1: &str = "agent-1-secret-5d1e";
const SECRET_2: &str = "agent-2-secret-93ab";

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// DoH on loopback, quarantines after three flags, agents 1 and 2 with secrets;
/// `groups`: the `[[groups]]` tables.
fn config(up: SocketAddr, groups: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nhttps_listen = [\"127.0.0.1:0\"]\n\
         [resolver]\nupstreams = [\"{up}\"]\ntimeout_ms = 800\n\
         [detect]\naction = \"quarantine\"\nquarantine_after = 3\n\
         [alerts]\nfile = \"alerts.jsonl\"\n\
         [[clients]]\nname = \"agent-1\"\nids = [\"agent-1\"]\nsecret_sha256 = \"{}\"\n\
         [[clients]]\nname = \"agent-2\"\nids = [\"agent-2\"]\nsecret_sha256 = \"{}\"\n\
         {groups}",
        sha256_hex(SECRET_1),
        sha256_hex(SECRET_2),
    )
}

/// Both agents in one group that alerts on new domains.
const AGENTS: &str = "[[groups]]\nname = \"agents\"\nclients = [\"client:agent-1\", \"client:agent-2\"]\n\
                      alert_new_domains = true\n";

struct Server {
    dg: Dnsguard,
    doh: SocketAddr,
    _up: FakeUpstream,
}

fn start(groups: &str) -> Server {
    let up = FakeUpstream::start("127.0.0.1".parse().unwrap(), ZONE);
    let dg = Dnsguard::start(&config(up.addr(), groups));
    let doh = wait_for(WAIT, "the DoH listener", || {
        dg.log()
            .split("listening (DNS over HTTPS) addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse::<SocketAddr>().ok())
    });
    Server { dg, doh, _up: up }
}

/// The DoH path of agent `n` with its secret (proven), or without (`None`).
fn path(id: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) => format!("/dns-query/{id}/{s}"),
        None => format!("/dns-query/{id}"),
    }
}

/// kdig over DoH to `addr` at `path`, one query of `qtype` per name, from
/// 127.0.0.1; the status of each, in order.
fn doh(addr: SocketAddr, path: &str, qtype: &str, names: &[String]) -> Vec<String> {
    let out = Command::new("kdig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), &format!("+https={path}")])
        .args(["+timeout=3", "+retry=0", "-t", qtype])
        .args(names)
        .output()
        .expect("run kdig (knot-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let statuses: Vec<String> = text
        .split("opcode: QUERY; status: ")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| !c.is_ascii_alphabetic())
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(
        statuses.len(),
        names.len(),
        "kdig {names:?} at {path}: {text}"
    );
    statuses
}

/// One A query; its status.
fn ask(addr: SocketAddr, path: &str, name: &str) -> String {
    doh(addr, path, "A", &[name.to_owned()]).remove(0)
}

/// 20 tunnel-like TXT queries at `path` (names `from..from + 20`); how many
/// were REFUSED.
fn tunnel(addr: SocketAddr, path: &str, from: u64) -> usize {
    let names: Vec<String> = (from..from + 20).map(tunnel_name).collect();
    doh(addr, path, "TXT", &names)
        .iter()
        .filter(|s| *s == "REFUSED")
        .count()
}

#[test]
fn a_tunnel_quarantines_the_proven_agent_not_its_neighbour_on_the_same_address() {
    let s = start(AGENTS);
    let one = path("agent-1", Some(SECRET_1));
    let two = path("agent-2", Some(SECRET_2));
    let refused = tunnel(s.doh, &one, 0);
    assert!(refused >= 15, "agent-1's tunnel is refused: {refused}/20");
    // agent-1 is quarantined for the domain, even for its real host...
    assert_eq!(ask(s.doh, &one, "a2.learn.example"), "REFUSED");
    // ...agent-2, asking from the same address, is not.
    assert_eq!(ask(s.doh, &two, "a2.learn.example"), "NOERROR");
    assert_eq!(ask(s.doh, &one, "a2.learn.example"), "REFUSED");
}

#[test]
fn rotating_unproven_client_ids_or_dropping_the_proof_does_not_escape_a_quarantine() {
    let s = start(AGENTS);
    // A client claiming agent-1 without its secret tunnels and is quarantined.
    let refused = tunnel(s.doh, &path("agent-1", None), 0);
    assert!(refused >= 15, "{refused}/20");
    // Every other claim from that address is the same client to the detector.
    for p in [
        path("agent-1", None),
        path("agent-2", None),
        path("agent-2", Some("not-the-secret")),
        path("nobody-configured", None),
        "/dns-query".to_owned(),
    ] {
        assert_eq!(ask(s.doh, &p, "a2.learn.example"), "REFUSED", "{p}");
    }
    // A proven agent is not that client.
    assert_eq!(
        ask(s.doh, &path("agent-2", Some(SECRET_2)), "a2.learn.example"),
        "NOERROR"
    );

    // A proven agent that tunnels cannot shed its quarantine by dropping its proof.
    let s = start(AGENTS);
    let refused = tunnel(s.doh, &path("agent-1", Some(SECRET_1)), 100);
    assert!(refused >= 15, "{refused}/20");
    for p in [path("agent-1", None), "/dns-query".to_owned()] {
        assert_eq!(ask(s.doh, &p, "a2.learn.example"), "REFUSED", "{p}");
    }
    assert_eq!(
        ask(s.doh, &path("agent-2", Some(SECRET_2)), "a2.learn.example"),
        "NOERROR"
    );
}

/// The alert file's records.
fn alerts(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn new_domain_alerts_are_per_agent_and_name_it() {
    let s = start(AGENTS);
    let (one, two) = (
        path("agent-1", Some(SECRET_1)),
        path("agent-2", Some(SECRET_2)),
    );
    for (p, name) in [
        (&one, "www.a.test"),
        (&one, "www.a.test"),
        (&two, "www.a.test"), // the same domain, another agent: its own alert
        (&two, "www.b.test"),
    ] {
        assert_eq!(ask(s.doh, p, name), "NOERROR", "{p} {name}");
    }
    // The guard handles observations in order: once b.test's alert is there,
    // the others have been handled too.
    let all = wait_for(WAIT, "agent-2's alert for b.test", || {
        let all = alerts(s.dg.dir.path());
        all.iter()
            .any(|a| a["type"] == "new-domain" && a["domain"] == "b.test")
            .then_some(all)
    });
    let new: Vec<(&str, &str, &str)> = all
        .iter()
        .filter(|a| a["type"] == "new-domain")
        .map(|a| {
            (
                a["client_name"].as_str().unwrap(),
                a["client"].as_str().unwrap(),
                a["domain"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        new,
        [
            ("agent-1", "127.0.0.1", "a.test"),
            ("agent-2", "127.0.0.1", "a.test"),
            ("agent-2", "127.0.0.1", "b.test"),
        ]
    );
}

#[test]
fn learning_for_one_agent_learns_only_its_names() {
    let s = start(
        "[[groups]]\nname = \"learners\"\nclients = [\"client:agent-1\"]\nmode = \"learn\"\n\
         [[groups]]\nname = \"agents\"\nclients = [\"client:agent-2\"]\n",
    );
    let (one, two) = (
        path("agent-1", Some(SECRET_1)),
        path("agent-2", Some(SECRET_2)),
    );
    assert_eq!(ask(s.doh, &one, "www.a.test"), "NOERROR");
    assert_eq!(ask(s.doh, &two, "www.b.test"), "NOERROR");
    assert_eq!(ask(s.doh, "/dns-query", "www.c.test"), "NOERROR");
    assert_eq!(ask(s.doh, &one, "www.a.test"), "NOERROR");
    let cfg = s.dg.config_path();
    let learned = wait_for(WAIT, "agent-1's queries in the log", || {
        let (ok, out, err) = run_cli(&[
            "allowlist",
            "learn",
            "--group",
            "learners",
            "--since",
            "1h",
            "--format",
            "json",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        assert!(ok, "allowlist learn failed: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (v["proposals"][0]["queries"] == 2).then_some(v)
    });
    let proposals = learned["proposals"].as_array().unwrap();
    assert_eq!(proposals.len(), 1, "{learned:#}");
    let p = &proposals[0];
    assert_eq!(p["domain"], "a.test", "{learned:#}");
    assert_eq!(p["clients"], 1, "{learned:#}");
    assert_eq!(
        p["client_sample"],
        serde_json::json!(["agent-1"]),
        "{learned:#}"
    );
}

#[test]
fn the_report_lists_agents_behind_one_address_by_name() {
    let s = start(AGENTS);
    let (one, two) = (
        path("agent-1", Some(SECRET_1)),
        path("agent-2", Some(SECRET_2)),
    );
    for (p, name) in [
        (one.as_str(), "www.a.test"),
        (one.as_str(), "www.a.test"),
        (two.as_str(), "www.a.test"),
        (two.as_str(), "www.b.test"),
        ("/dns-query", "www.c.test"),
    ] {
        assert_eq!(ask(s.doh, p, name), "NOERROR", "{p} {name}");
    }
    let cfg = s.dg.config_path();
    let report = wait_for(WAIT, "five queries in the report", || {
        let (ok, out, err) = run_cli(&[
            "report",
            "--since",
            "1h",
            "--format",
            "json",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        assert!(ok, "report failed: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (v["queries"] == 5).then_some(v)
    });
    let mut top: Vec<(&str, u64)> = report["top_clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["client"].as_str().unwrap(),
                c["queries"].as_u64().unwrap(),
            )
        })
        .collect();
    top.sort();
    assert_eq!(
        top,
        [("127.0.0.1", 1), ("agent-1", 2), ("agent-2", 2)],
        "{report:#}"
    );
    let mut new: Vec<(&str, Vec<&str>)> = report["new_domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let domains = n["domains"].as_array().unwrap();
            (
                n["client"].as_str().unwrap(),
                domains.iter().map(|d| d.as_str().unwrap()).collect(),
            )
        })
        .collect();
    new.sort();
    assert_eq!(
        new,
        [
            ("127.0.0.1", vec!["c.test"]),
            ("agent-1", vec!["a.test"]),
            ("agent-2", vec!["a.test", "b.test"]),
        ],
        "{report:#}"
    );
}
