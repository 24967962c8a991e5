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

/// One A query over DoH at `/dns-query` from source address `from`; its status.
fn ask_from(addr: SocketAddr, from: &str, name: &str) -> String {
    let out = Command::new("kdig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "-b", from, "+https"])
        .args(["+timeout=3", "+retry=0", name])
        .output()
        .expect("run kdig (knot-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("opcode: QUERY; status: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_alphabetic()).next())
        .unwrap_or_else(|| panic!("kdig from {from}: {text}"))
        .to_owned()
}

/// A third named client, known by two source addresses (no ClientID).
const AGENT_3: &str =
    "[[clients]]\nname = \"agent-3\"\naddresses = [\"127.0.0.2/32\", \"127.0.0.3/32\"]\n";

/// The agents' queries of the tests that count clients: agent-1 twice and agent-2
/// once from 127.0.0.1 (proven DoH), an unnamed client once from 127.0.0.1, and
/// agent-3 once from 127.0.0.2 and twice from 127.0.0.3: seven in all.
fn ask_as_four_clients(s: &Server) {
    let (one, two) = (
        path("agent-1", Some(SECRET_1)),
        path("agent-2", Some(SECRET_2)),
    );
    for (p, name) in [
        (one.as_str(), "www.a.test"),
        (one.as_str(), "www.b.test"),
        (two.as_str(), "www.a.test"),
        ("/dns-query", "www.c.test"),
    ] {
        assert_eq!(ask(s.doh, p, name), "NOERROR", "{p} {name}");
    }
    for (from, name) in [
        ("127.0.0.2", "www.a.test"),
        ("127.0.0.3", "www.b.test"),
        ("127.0.0.3", "www.c.test"),
    ] {
        assert_eq!(ask_from(s.doh, from, name), "NOERROR", "{from} {name}");
    }
}

#[test]
fn top_clients_count_a_named_client_once_and_agents_behind_one_address_apart() {
    let s = start(&format!("{AGENT_3}{AGENTS}"));
    ask_as_four_clients(&s);
    let cfg = s.dg.config_path();
    // `dnsguard stats` asks the running server: `/api/v1/stats`, what the
    // dashboard's overview shows. Top lists are saved once a second.
    let stats = wait_for(WAIT, "seven queries among the top clients", || {
        let (ok, out, err) = run_cli(&[
            "stats",
            "--since",
            "1h",
            "--format",
            "json",
            "--verbose",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        assert!(ok, "stats failed: {err}");
        assert!(err.contains("asking it at"), "the server answers: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let counted: u64 = v["top_clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["count"].as_u64().unwrap())
            .sum();
        (counted == 7).then_some(v)
    });
    let mut top: Vec<(&str, u64)> = stats["top_clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["key"].as_str().unwrap(), c["count"].as_u64().unwrap()))
        .collect();
    top.sort();
    assert_eq!(
        top,
        [
            ("127.0.0.1", 1),
            ("agent-1", 2),
            ("agent-2", 1),
            ("agent-3", 3)
        ],
        "{stats:#}"
    );
    // A row's key is a query-log client filter: agent-3's row is its three queries.
    let (ok, out, err) = run_cli(&[
        "query-log",
        "--since",
        "1h",
        "--client",
        "agent-3",
        "--format",
        "json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(ok, "query-log --client agent-3 failed: {err}");
    let mut from: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["client"].to_string())
        .collect();
    from.sort();
    assert_eq!(
        from,
        ["\"127.0.0.2\"", "\"127.0.0.3\"", "\"127.0.0.3\""],
        "{out}"
    );
    // The CSV export names the client too (its last column).
    let (ok, out, err) = run_cli(&[
        "query-log",
        "--since",
        "1h",
        "--client",
        "127.0.0.2",
        "--format",
        "csv",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(ok, "query-log --format csv failed: {err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_else(|| panic!("{out}"))
        .split(',')
        .collect();
    assert_eq!(header.len(), row.len(), "{out}");
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("{name} in {out}"))
    };
    assert_eq!(row[col("client")], "127.0.0.2", "{out}");
    assert_eq!(row[col("client_name")], "agent-3", "{out}");
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

#[test]
fn learning_from_one_named_client_with_client_and_the_table_names_them() {
    let s = start(&format!(
        "{AGENT_3}[[groups]]\nname = \"learners\"\n\
         clients = [\"client:agent-1\", \"client:agent-2\", \"client:agent-3\", \"127.0.0.1\"]\n\
         mode = \"learn\"\n"
    ));
    ask_as_four_clients(&s);
    let cfg = s.dg.config_path();
    let learn = |extra: &[&str]| {
        let mut args = vec![
            "allowlist",
            "learn",
            "--group",
            "learners",
            "--since",
            "1h",
            "--config",
            cfg.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run_cli(&args)
    };
    // All seven queries logged (c.test is the last asked).
    let all = wait_for(WAIT, "the seven queries in the proposal", || {
        let (ok, out, err) = learn(&["--format", "json"]);
        assert!(ok, "allowlist learn failed: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let queries: u64 = v["proposals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["queries"].as_u64().unwrap())
            .sum();
        (queries == 7).then_some(v)
    });
    let a = all["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["domain"] == "a.test")
        .unwrap();
    let mut who: Vec<&str> = a["client_sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    who.sort();
    assert_eq!(who, ["agent-1", "agent-2", "agent-3"], "{all:#}");

    // `--client agent-3`: its names only, however many addresses it asked from
    // (the CLI asks the running server: `/api/v1/allowlist/learn?client=`).
    let (ok, out, err) = learn(&["--client", "agent-3", "--format", "json", "--verbose"]);
    assert!(ok, "allowlist learn --client agent-3 failed: {err}");
    assert!(err.contains("asking it at"), "the server answers: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["client"], "agent-3", "{v:#}");
    let mut got: Vec<(&str, u64, u64)> = v["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["client_sample"], serde_json::json!(["agent-3"]), "{v:#}");
            (
                p["domain"].as_str().unwrap(),
                p["queries"].as_u64().unwrap(),
                p["clients"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [("a.test", 1, 1), ("b.test", 1, 1), ("c.test", 1, 1)],
        "{v:#}"
    );

    // The table names the clients of each proposed entry, and the one learned from.
    let (ok, out, err) = learn(&[]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("||a.test^"))
        .unwrap_or_else(|| panic!("{out}"));
    for name in ["agent-1", "agent-2", "agent-3"] {
        assert!(line.contains(name), "{name} in {line:?}");
    }
    let (ok, out, err) = learn(&["--client", "agent-2"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("group learners, client agent-2:"), "{out}");
    assert!(out.contains("||a.test^"), "{out}");
    assert!(!out.contains("||b.test^"), "{out}");

    // A client that is neither a name, an address nor a CIDR is an error.
    let (ok, _, err) = learn(&["--client", "agent 3"]);
    assert!(!ok && err.contains("invalid client"), "{err}");
}

#[test]
fn the_dashboards_tunnel_alerts_count_agents_behind_one_address_by_name() {
    let s = start(AGENTS);
    let one = path("agent-1", Some(SECRET_1));
    let two = path("agent-2", Some(SECRET_2));
    let refused = tunnel(s.doh, &one, 0) + tunnel(s.doh, &two, 100);
    assert!(refused >= 30, "both tunnels are refused: {refused}/40");
    let base = common::dash::base(&s.dg);
    let auth = format!("Bearer {}", common::dash::token(&s.dg));
    // Every refused query is a flag; more may have been flagged and answered.
    let alerts = wait_for(WAIT, "both agents' flags in /api/v1/alerts", || {
        let r = common::http::request(
            "GET",
            &base,
            "/api/v1/alerts?since=1h",
            &[("Authorization", &auth)],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        (v["total"].as_u64().unwrap() >= refused as u64).then_some(v)
    });
    let mut clients: Vec<&str> = alerts["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    clients.sort();
    assert_eq!(clients, ["agent-1", "agent-2"], "{alerts:#}");
    // Each domain's row names the agents that flagged it.
    for d in alerts["domains"].as_array().unwrap() {
        for c in d["clients_or_domains"].as_array().unwrap() {
            assert!(c == "agent-1" || c == "agent-2", "{d:#}");
        }
    }
    // The latest flags carry the name the page shows.
    assert!(
        alerts["recent"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["client_name"] == "agent-1" || e["client_name"] == "agent-2"),
        "{alerts:#}"
    );
}
