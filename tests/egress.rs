//! The agent egress guard end to end: learning then enforcing an allowlist,
//! new-domain alerts (once per client and domain, across a restart), the alert
//! sinks (webhook with a retry, syslog RFC 5424 over UDP, JSON-lines file),
//! answer-IP rules, nftables set sync inside a network namespace, and the report.
//! Real binary, real sockets, loopback only; clients on 127.0.0.x.

mod common;

use std::net::{IpAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::client::{Ask, addrs, ask_with, rcode};
use common::http::{HttpServer, Response};
use common::server::{Dnsguard, run_cli};
use common::tunnel_name;
use common::upstream::FakeUpstream;
use common::wait_for;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const ZONE: &str = "\
www.a.test. 300 A 192.0.2.1
api.a.test. 300 A 192.0.2.2
www.b.test. 300 A 192.0.2.3
www.c.test. 300 A 192.0.2.4
www.d.test. 300 A 192.0.2.5
www.e.test. 60 A 192.0.2.6
www.e.test. 60 AAAA 2001:db8::6
other.f.test. 300 A 192.0.2.7
meta.g.test. 300 A 169.254.169.254
lan.g.test. 300 A 10.1.2.3
c2.h.test. 300 A 198.51.100.7
c2six.h.test. 300 AAAA 2001:db8:bad::1
fine.h.test. 300 A 192.0.2.8
deny.h.test. 300 A 203.0.113.9
";

/// A name the tunnel detector flags (base32 payload labels).
const TUNNEL: &str =
    "mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpjqwe.gezdgnbvgy3tqojqgezdgnbvgy3tqojq.t.a.test.";

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn from(ip: &str) -> Ask {
    Ask {
        from: ip.parse().unwrap(),
        ..Ask::default()
    }
}

fn config(up: &FakeUpstream, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [[lists]]\nname = \"exfil-endpoints\"\nsource = \"builtin:exfil\"\n{extra}",
        up.addr()
    )
}

/// Runs `dnsguard ARGS --config CFG` and returns (ok, stdout, stderr).
fn cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let cfg = dir.join("dnsguard.toml");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", cfg.to_str().unwrap()]);
    run_cli(&all)
}

/// The alerts in the JSON-lines file.
fn alerts(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until the file holds an alert of `kind` for `name`; returns every alert.
fn wait_alert(path: &Path, kind: &str, name: &str) -> Vec<serde_json::Value> {
    wait_for(
        Duration::from_secs(15),
        &format!("{kind} alert for {name}"),
        || {
            let all = alerts(path);
            all.iter()
                .any(|a| a["type"] == kind && a["name"] == name)
                .then_some(all)
        },
    )
}

/// Query-log entries (JSON) of the last hour, through the CLI.
fn log_entries(dir: &Path) -> Vec<serde_json::Value> {
    let (ok, out, err) = cli(dir, &["query-log", "--since", "1h", "--format", "json"]);
    assert!(ok, "query-log failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn learning_then_enforcing() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = Dnsguard::start(&config(
        &up,
        "[[groups]]\nname = \"agents\"\nclients = [\"127.0.0.2\"]\nmode = \"learn\"\n\
         allow = [\"||c.test^\"]\n",
    ));
    let agent = from("127.0.0.2");
    // Learning: everything resolves.
    for name in [
        "www.a.test.",
        "api.a.test.",
        "www.a.test.",
        "www.b.test.",
        "www.c.test.",
    ] {
        let r = ask_with(dg.addr, name, RecordType::A, &agent);
        assert_eq!(rcode(&r), ResponseCode::NoError, "{name}");
        assert!(!addrs(&r).is_empty(), "{name}");
    }
    // Blocked names are never proposed.
    let r = ask_with(dg.addr, "x.oast.pro.", RecordType::A, &agent);
    assert_eq!(addrs(&r), vec!["0.0.0.0"]);
    wait_for(Duration::from_secs(15), "6 log entries", || {
        (log_entries(dg.dir.path()).len() >= 6).then_some(())
    });
    let dir = dg.dir.path();
    // Review through the running server's API.
    let (ok, out, err) = cli(
        dir,
        &[
            "allowlist",
            "learn",
            "--group",
            "agents",
            "--since",
            "1h",
            "--format",
            "json",
            "-v",
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("asking it"), "{err}");
    let learned: serde_json::Value = serde_json::from_str(&out).unwrap();
    let proposals = learned["proposals"].as_array().unwrap();
    let entries: Vec<&str> = proposals
        .iter()
        .map(|p| p["entry"].as_str().unwrap())
        .collect();
    assert_eq!(entries, ["||a.test^", "||b.test^"], "{learned:#}");
    assert_eq!(proposals[0]["queries"], 3);
    assert_eq!(proposals[0]["clients"], 1);
    assert_eq!(proposals[0]["client_sample"][0], "127.0.0.2");
    assert!(proposals[0]["first_ms"].as_u64() <= proposals[0]["last_ms"].as_u64());
    assert_eq!(learned["already_allowed"][0], "c.test");
    // The table for humans.
    let (ok, table, _) = cli(
        dir,
        &["allowlist", "learn", "--group", "agents", "--since", "1h"],
    );
    assert!(ok);
    assert!(
        table.contains("||a.test^") && table.contains("first seen"),
        "{table}"
    );
    // Apply: written into the file (comments kept) and live.
    let (ok, out, err) = cli(
        dir,
        &[
            "allowlist",
            "learn",
            "--group",
            "agents",
            "--since",
            "1h",
            "--apply",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("applied: 2 new allow entries"), "{out}");
    let text = std::fs::read_to_string(dg.config_path()).unwrap();
    assert!(
        text.contains("||a.test^") && text.contains("||b.test^"),
        "{text}"
    );
    // Enforce: switch the mode and reload with SIGHUP.
    std::fs::write(
        dg.config_path(),
        text.replace("mode = \"learn\"", "mode = \"enforce\""),
    )
    .unwrap();
    dg.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(15), "enforcement after SIGHUP", || {
        let r = ask_with(dg.addr, "www.d.test.", RecordType::A, &agent);
        (addrs(&r) == ["0.0.0.0"]).then_some(())
    });
    for (name, ip) in [
        ("www.a.test.", "192.0.2.1"),
        ("www.b.test.", "192.0.2.3"),
        ("www.c.test.", "192.0.2.4"),
    ] {
        assert_eq!(addrs(&ask_with(dg.addr, name, RecordType::A, &agent)), [ip]);
    }
    // Other clients are not in the group.
    assert_eq!(
        addrs(&ask_with(
            dg.addr,
            "www.d.test.",
            RecordType::A,
            &Ask::default()
        )),
        ["192.0.2.5"]
    );
    let denied = wait_for(Duration::from_secs(15), "not-allowlisted entry", || {
        log_entries(dir)
            .into_iter()
            .find(|e| e["name"] == "www.d.test" && e["verdict"] == "blocked")
    });
    assert_eq!(denied["rule"], "not-allowlisted");
    assert_eq!(denied["group"], "agents");
    // Offline (server stopped): the CLI reads the database itself.
    let (_, dir) = dg.stop_keeping_dir(libc::SIGTERM);
    let (ok, out, err) = cli(
        dir.path(),
        &[
            "allowlist",
            "learn",
            "--group",
            "agents",
            "--since",
            "1h",
            "--format",
            "json",
            "-v",
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("directly"), "{err}");
    let learned: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        learned["already_allowed"],
        serde_json::json!(["a.test", "b.test", "c.test"]),
        "{learned:#}"
    );
    // Only d.test can be left to propose (if a poll before the reload resolved it).
    for p in learned["proposals"].as_array().unwrap() {
        assert_eq!(p["domain"], "d.test", "{learned:#}");
    }
    let (ok, _, err) = cli(dir.path(), &["allowlist", "learn", "--since", "1h"]);
    assert!(!ok && err.contains("--group"), "{err}");
}

#[test]
fn new_domain_alerts_once_per_client_and_domain_across_restart() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let syslog = UdpSocket::bind("127.0.0.1:0").unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let cfg = config(
        &up,
        &format!(
            "[[groups]]\nname = \"agents\"\nclients = [\"127.0.0.2\", \"127.0.0.3\"]\n\
             alert_new_domains = true\n\
             [alerts]\nfile = \"alerts.jsonl\"\nsyslog = \"{}\"\n",
            syslog.local_addr().unwrap()
        ),
    );
    let dg = Dnsguard::start(&cfg);
    let file = dg.dir.path().join("alerts.jsonl");
    let (a, b) = (from("127.0.0.2"), from("127.0.0.3"));
    for (name, who) in [
        ("www.a.test.", &a),
        ("api.a.test.", &a), // same registrable domain: no second alert
        ("www.a.test.", &a),
        ("www.a.test.", &b), // another client: its own alert
        ("www.b.test.", &a),
    ] {
        ask_with(dg.addr, name, RecordType::A, who);
    }
    // Clients outside watched groups never alert.
    ask_with(dg.addr, "www.c.test.", RecordType::A, &Ask::default());
    // The guard handles observations in order: once b.test's alert is there, the
    // others have been handled too.
    let all = wait_alert(&file, "new-domain", "www.b.test");
    let new: Vec<(String, String)> = all
        .iter()
        .filter(|x| x["type"] == "new-domain")
        .map(|x| {
            (
                x["client"].as_str().unwrap().into(),
                x["domain"].as_str().unwrap().into(),
            )
        })
        .collect();
    let pair = |c: &str, d: &str| (c.to_owned(), d.to_owned());
    assert_eq!(
        new,
        [
            pair("127.0.0.2", "a.test"),
            pair("127.0.0.3", "a.test"),
            pair("127.0.0.2", "b.test")
        ]
    );
    let first = &all[0];
    assert_eq!(first["name"], "www.a.test");
    assert_eq!(first["group"], "agents");
    assert!(first["score"].is_number() && first["time"].is_string());
    assert!(first["reason"].as_str().unwrap().contains("a.test"));
    // Syslog got the same alert as an RFC 5424 line.
    let mut buf = [0u8; 2048];
    let n = syslog.recv(&mut buf).unwrap();
    let line = std::str::from_utf8(&buf[..n]).unwrap();
    let parts: Vec<&str> = line.splitn(7, ' ').collect();
    assert_eq!(parts[0], "<132>1", "{line}");
    assert!(parts[1].ends_with('Z') && parts[1].contains('T'), "{line}");
    assert_eq!(parts[3], "dnsguard");
    assert_eq!(parts[5], "new-domain");
    assert!(
        parts[6].starts_with("[alert@32473 type=\"new-domain\" client=\"127.0.0.2\" name=\"www.a.test\" group=\"agents\" score=\""),
        "{line}"
    );
    // Restart on the same data: the seen set survived.
    let (_, dir) = dg.stop_keeping_dir(libc::SIGTERM);
    let dg = Dnsguard::start_in(&cfg, dir);
    ask_with(dg.addr, "www.a.test.", RecordType::A, &a);
    ask_with(dg.addr, "www.a.test.", RecordType::A, &b);
    ask_with(dg.addr, "www.d.test.", RecordType::A, &a);
    let all = wait_alert(&file, "new-domain", "www.d.test");
    let count = all.iter().filter(|x| x["type"] == "new-domain").count();
    assert_eq!(count, 4, "only d.test is new after the restart: {all:#?}");
}

#[test]
fn exfil_bypass_and_tunnel_alerts() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = Dnsguard::start(&config(
        &up,
        "[[lists]]\nname = \"doh\"\nsource = \"builtin:doh-resolvers\"\ngroups = []\n\
         [[groups]]\nname = \"agents\"\nclients = [\"127.0.0.2\"]\nmode = \"enforce\"\n\
         [alerts]\nfile = \"alerts.jsonl\"\nrepeat_secs = 3600\n",
    ));
    let file = dg.dir.path().join("alerts.jsonl");
    let me = Ask::default();
    let agent = from("127.0.0.2");
    // The DoH resolver list names no group: it applies to allowlist-only groups only.
    ask_with(dg.addr, "dns.google.", RecordType::A, &me);
    assert_eq!(
        up.queries_for("dns.google."),
        1,
        "default group: not on the list"
    );
    assert_eq!(
        addrs(&ask_with(dg.addr, "abc.oast.pro.", RecordType::A, &me)),
        ["0.0.0.0"]
    );
    assert_eq!(
        addrs(&ask_with(dg.addr, "abd.oast.pro.", RecordType::A, &me)),
        ["0.0.0.0"]
    );
    let r = ask_with(dg.addr, "use-application-dns.net.", RecordType::A, &me);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    assert_eq!(
        addrs(&ask_with(dg.addr, "dns.google.", RecordType::A, &agent)),
        ["0.0.0.0"]
    );
    ask_with(dg.addr, TUNNEL, RecordType::TXT, &me);
    let all = wait_alert(&file, "tunnel", TUNNEL.trim_end_matches('.'));
    let kinds: Vec<(&str, &str)> = all
        .iter()
        .map(|a| (a["type"].as_str().unwrap(), a["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("exfil", "abc.oast.pro"), // abd.oast.pro: the same domain within repeat_secs
            ("bypass", "use-application-dns.net"),
            ("bypass", "dns.google"),
            ("tunnel", TUNNEL.trim_end_matches('.')),
        ]
    );
    assert!(
        all[0]["reason"]
            .as_str()
            .unwrap()
            .contains("exfil-endpoints")
    );
    assert_eq!(all[1]["reason"], "bypass canary");
    assert!(
        all[2]["reason"].as_str().unwrap().contains("doh"),
        "{}",
        all[2]
    );
    assert_eq!(all[2]["client"], "127.0.0.2");
    assert!(all[3]["score"].as_f64().unwrap() >= 1.0);
    assert!(all[3]["reason"].as_str().unwrap().starts_with("tunnel: "));
    // The dashboard's recent alerts (newest first).
    let token = std::fs::read_to_string(dg.dir.path().join("dnsguard-data/api-token")).unwrap();
    let base = std::fs::read_to_string(dg.dir.path().join("dnsguard-data/api-endpoint")).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let r = common::http::request(
        "GET",
        &base,
        "/api/v1/alerts/recent",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["type"], "tunnel");
    assert_eq!(r.json().as_array().unwrap().len(), 4);
}

#[test]
fn webhook_is_retried_after_a_failure() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let hook = HttpServer::start(Response::ok("ok"));
    hook.answer_next(vec![Response {
        status: 500,
        ..Response::ok("down")
    }]);
    let dg = Dnsguard::start(&config(
        &up,
        &format!(
            "[[groups]]\nname = \"agents\"\nclients = [\"127.0.0.2\"]\ndefault_deny = true\n\
             allow = [\"||a.test^\"]\n\
             [alerts]\nwebhook_url = \"{}\"\nwebhook_backoff_ms = 20\n",
            hook.url("/hook")
        ),
    ));
    let r = ask_with(dg.addr, "www.a.test.", RecordType::A, &from("127.0.0.2"));
    assert_eq!(
        addrs(&r),
        ["192.0.2.1"],
        "DNS does not wait for the webhook"
    );
    wait_for(Duration::from_secs(15), "the retried POST", || {
        (hook.requests() >= 2).then_some(())
    });
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 2, "one failure, one success, no more");
    assert_eq!(bodies[0], bodies[1], "the same alert again");
    let a: serde_json::Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(a["type"], "new-domain");
    assert_eq!(a["client"], "127.0.0.2");
    assert_eq!(a["name"], "www.a.test");
    assert_eq!(a["group"], "agents");
    for key in ["time", "reason", "score"] {
        assert!(!a[key].is_null(), "{key} in {a}");
    }
}

#[test]
fn answer_ip_rules_block_answers() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c2.txt"),
        "# C2 addresses\n198.51.100.0/24\n2001:db8:bad::/48\n||blocked-name.test^\n",
    )
    .unwrap();
    let dg = Dnsguard::start_in(
        &config(
            &up,
            "[[lists]]\nname = \"c2\"\nsource = \"c2.txt\"\n\
             [[groups]]\nname = \"agents\"\nclients = [\"127.0.0.2\"]\ndeny = [\"203.0.113.0/24\"]\n\
             [rebinding]\nallow = [\"g.test\"]\n",
        ),
        dir,
    );
    let (me, agent) = (Ask::default(), from("127.0.0.2"));
    // Cloud metadata: refused even for a name whose private answers are allowed.
    assert_eq!(
        addrs(&ask_with(dg.addr, "lan.g.test.", RecordType::A, &me)),
        ["10.1.2.3"]
    );
    assert_eq!(
        addrs(&ask_with(dg.addr, "meta.g.test.", RecordType::A, &me)),
        ["0.0.0.0"]
    );
    // CIDR lines of a block list.
    assert_eq!(
        addrs(&ask_with(dg.addr, "c2.h.test.", RecordType::A, &me)),
        ["0.0.0.0"]
    );
    assert_eq!(
        addrs(&ask_with(dg.addr, "c2six.h.test.", RecordType::AAAA, &me)),
        ["::"]
    );
    assert_eq!(
        addrs(&ask_with(dg.addr, "fine.h.test.", RecordType::A, &me)),
        ["192.0.2.8"]
    );
    // A group's deny CIDR: only for that group.
    assert_eq!(
        addrs(&ask_with(dg.addr, "deny.h.test.", RecordType::A, &me)),
        ["203.0.113.9"]
    );
    assert_eq!(
        addrs(&ask_with(dg.addr, "deny.h.test.", RecordType::A, &agent)),
        ["0.0.0.0"]
    );
    let entries = wait_for(
        Duration::from_secs(15),
        "blocked answers in the log",
        || {
            let e = log_entries(dg.dir.path());
            (e.iter().filter(|x| x["verdict"] == "blocked").count() >= 4).then_some(e)
        },
    );
    let blocked = |name: &str| {
        entries
            .iter()
            .find(|e| e["name"] == name && e["verdict"] == "blocked")
            .unwrap_or_else(|| panic!("{name} not blocked: {entries:#?}"))
            .clone()
    };
    assert_eq!(blocked("c2.h.test")["list"], "c2");
    assert_eq!(blocked("c2.h.test")["rule"], "line 2");
    assert_eq!(blocked("c2six.h.test")["rule"], "line 3");
    assert_eq!(blocked("deny.h.test")["list"], "group agents deny");
    assert!(
        blocked("meta.g.test")["rule"]
            .as_str()
            .unwrap()
            .contains("169.254.169.254")
    );
    // The list counts address lines as entries.
    let (ok, out, err) = cli(dg.dir.path(), &["lists", "update"]);
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.starts_with("c2 ")).unwrap();
    assert!(
        line.contains(" 3 entries") && line.contains(" 0 invalid"),
        "{line}"
    );
}

#[test]
fn report_summarises_the_period() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = Dnsguard::start(&config(
        &up,
        "[[lists]]\nname = \"doh\"\nsource = \"builtin:doh-resolvers\"\n\
         [[groups]]\nname = \"agents\"\nclients = [\"127.0.0.2\"]\n",
    ));
    let agent = from("127.0.0.2");
    for name in [
        "www.a.test.",
        "api.a.test.",
        "www.b.test.",
        "x.oast.pro.",
        "use-application-dns.net.",
        "dns.google.",
    ] {
        ask_with(dg.addr, name, RecordType::A, &agent);
    }
    ask_with(dg.addr, TUNNEL, RecordType::TXT, &agent);
    ask_with(dg.addr, "www.c.test.", RecordType::A, &Ask::default());
    wait_for(Duration::from_secs(15), "8 log entries", || {
        (log_entries(dg.dir.path()).len() >= 8).then_some(())
    });
    let check = |r: &serde_json::Value| {
        assert_eq!(r["queries"], 8, "{r:#}");
        assert_eq!(r["top_clients"][0]["client"], "127.0.0.2");
        assert_eq!(r["top_clients"][0]["queries"], 7);
        assert_eq!(r["top_clients"][0]["group"], "agents");
        let new = r["new_domains"].as_array().unwrap();
        let agent_new = new.iter().find(|n| n["client"] == "127.0.0.2").unwrap();
        let domains: Vec<&str> = agent_new["domains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        assert!(domains.starts_with(&["a.test", "b.test"]), "{domains:?}");
        let cats: Vec<(&str, u64)> = r["blocked_by_category"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["key"].as_str().unwrap(), c["count"].as_u64().unwrap()))
            .collect();
        assert!(
            cats.contains(&("exfil-endpoints", 1)) && cats.contains(&("doh", 1)),
            "{cats:?}"
        );
        assert_eq!(r["flagged"][0]["name"], TUNNEL.trim_end_matches('.'));
        let bypass: Vec<(&str, &str)> = r["bypass"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["name"].as_str().unwrap(), b["via"].as_str().unwrap()))
            .collect();
        assert!(
            bypass.contains(&("use-application-dns.net", "canary")),
            "{bypass:?}"
        );
        assert!(bypass.contains(&("dns.google", "doh")), "{bypass:?}");
    };
    // Through the running server's API, then from the database after a stop.
    let (ok, out, err) = cli(
        dg.dir.path(),
        &["report", "--since", "1h", "--format", "json"],
    );
    assert!(ok, "{err}");
    check(&serde_json::from_str(&out).unwrap());
    let (_, dir) = dg.stop_keeping_dir(libc::SIGTERM);
    let (ok, out, err) = cli(
        dir.path(),
        &["report", "--since", "1h", "--format", "json", "-v"],
    );
    assert!(ok, "{err}");
    assert!(err.contains("directly"), "{err}");
    check(&serde_json::from_str(&out).unwrap());
    let (ok, table, _) = cli(dir.path(), &["report", "--since", "1h"]);
    assert!(ok);
    for part in [
        "top clients",
        "new domains",
        "blocked by category",
        "flagged names",
        "bypass attempts",
        "exfil-endpoints",
    ] {
        assert!(table.contains(part), "{part} in\n{table}");
    }
}

/// Deletes the network namespace when the test ends.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn run(cmd: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cmd[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} failed: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The elements of a set as (address, timeout seconds).
fn set_elements(ns: &str, set: &str) -> Vec<(String, u64)> {
    let Ok(out) = run(&[
        "ip", "netns", "exec", ns, "nft", "-j", "list", "set", "inet", "dnsguard", set,
    ]) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut found = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for e in item["set"]["elem"].as_array().into_iter().flatten() {
            let (addr, timeout) = match &e["elem"] {
                serde_json::Value::Object(o) => (
                    o["val"].as_str().unwrap_or_default().to_owned(),
                    o["timeout"].as_u64().unwrap_or(0),
                ),
                other => (other.as_str().unwrap_or_default().to_owned(), 0),
            };
            found.push((addr, timeout));
        }
    }
    found
}

/// TCP from network namespace `ns` to `ip`: `true` when the far end answered
/// (connection refused: nothing listens there), `false` when the firewall dropped it.
fn tcp_reaches(ns: &str, ip: &str) -> bool {
    let probe = format!("exec 3<>/dev/tcp/{ip}/9");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "2", "bash", "-c", &probe])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(124) => false,
        _ if err.contains("refused") => true,
        other => panic!("unexpected probe result {other:?}: {err}"),
    }
}

/// Routes an agent namespace (10.0.5.2, in docs/egress.nft's `agents` set) and a
/// server namespace (192.0.2.1 and 192.0.2.99) through the router namespace `ns`.
fn agent_and_server_behind(ns: &str) -> Result<(Netns, Netns), String> {
    let (a, s) = (format!("{ns}-a"), format!("{ns}-s"));
    run(&["ip", "netns", "add", &a])?;
    let agent = Netns(a.clone());
    run(&["ip", "netns", "add", &s])?;
    let server = Netns(s.clone());
    let steps: &[&[&str]] = &[
        &[
            "ip", "link", "add", "ra", "netns", ns, "type", "veth", "peer", "name", "aa", "netns",
            &a,
        ],
        &[
            "ip", "link", "add", "rs", "netns", ns, "type", "veth", "peer", "name", "ss", "netns",
            &s,
        ],
        &["ip", "-n", ns, "addr", "add", "10.0.5.1/24", "dev", "ra"],
        &["ip", "-n", ns, "addr", "add", "192.0.2.254/24", "dev", "rs"],
        &["ip", "-n", ns, "link", "set", "ra", "up"],
        &["ip", "-n", ns, "link", "set", "rs", "up"],
        &[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
        &["ip", "-n", &a, "addr", "add", "10.0.5.2/24", "dev", "aa"],
        &["ip", "-n", &a, "link", "set", "aa", "up"],
        &["ip", "-n", &a, "route", "add", "default", "via", "10.0.5.1"],
        &["ip", "-n", &s, "addr", "add", "192.0.2.1/24", "dev", "ss"],
        &["ip", "-n", &s, "addr", "add", "192.0.2.99/24", "dev", "ss"],
        &["ip", "-n", &s, "link", "set", "ss", "up"],
        &[
            "ip",
            "-n",
            &s,
            "route",
            "add",
            "default",
            "via",
            "192.0.2.254",
        ],
    ];
    for step in steps {
        run(step)?;
    }
    Ok((agent, server))
}

/// dnsguard fills the sets of the documented ruleset (docs/egress.nft, loaded as it
/// is), and that ruleset then holds an agent to the addresses dnsguard answered it.
#[test]
fn firewall_sync_into_nftables_sets_in_a_netns() {
    let ns = format!("dnsguard-test-{}", std::process::id());
    let skip = run(&["nft", "--version"])
        .and_then(|_| run(&["ip", "netns", "add", &ns]))
        .and_then(|_| run(&["ip", "netns", "exec", &ns, "nft", "list", "ruleset"]));
    if let Err(why) = skip {
        let _ = run(&["ip", "netns", "del", &ns]);
        println!(
            "SKIPPED firewall_sync_into_nftables_sets_in_a_netns: {why} (needs root, nftables and iproute2)"
        );
        return;
    }
    let _ns = Netns(ns.clone());
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/egress.nft");
    run(&["ip", "netns", "exec", &ns, "nft", "-f", rules]).expect("docs/egress.nft loads");
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = Dnsguard::start(&config(
        &up,
        &format!(
            "[[groups]]\nname = \"agents\"\nclients = [\"127.0.0.2\"]\n\
             [firewall]\nenabled = true\ngroups = [\"agents\"]\nbatch_ms = 10\n\
             command = [\"ip\", \"netns\", \"exec\", \"{ns}\", \"nft\"]\n"
        ),
    ));
    let agent = from("127.0.0.2");
    // Another group's answers and blocked names stay out of the set.
    ask_with(dg.addr, "www.b.test.", RecordType::A, &Ask::default());
    ask_with(dg.addr, "x.oast.pro.", RecordType::A, &agent);
    ask_with(dg.addr, "www.a.test.", RecordType::A, &agent);
    ask_with(dg.addr, "www.e.test.", RecordType::A, &agent);
    ask_with(dg.addr, "www.e.test.", RecordType::AAAA, &agent);
    let v4 = wait_for(Duration::from_secs(15), "both IPv4 elements", || {
        let e = set_elements(&ns, "dnsguard_allowed");
        (e.len() >= 2).then_some(e)
    });
    let v6 = wait_for(Duration::from_secs(15), "the IPv6 element", || {
        let e = set_elements(&ns, "dnsguard_allowed6");
        (!e.is_empty()).then_some(e)
    });
    let mut addrs4: Vec<&str> = v4.iter().map(|(a, _)| a.as_str()).collect();
    addrs4.sort();
    assert_eq!(addrs4, ["192.0.2.1", "192.0.2.6"], "{v4:?}");
    assert_eq!(v6[0].0, "2001:db8::6");
    let timeout = |a: &str| v4.iter().find(|(x, _)| x == a).unwrap().1;
    assert_eq!(timeout("192.0.2.1"), 300, "timeout = TTL");
    assert_eq!(timeout("192.0.2.6"), 60);
    assert_eq!(v6[0].1, 60);

    // The documented forward chain: the agent reaches the answered address only.
    let (_agent, _server) = agent_and_server_behind(&ns).expect("namespaces and veths");
    let agent_ns = format!("{ns}-a");
    assert!(
        tcp_reaches(&agent_ns, "192.0.2.1"),
        "answered address reachable"
    );
    assert!(
        !tcp_reaches(&agent_ns, "192.0.2.99"),
        "unanswered address dropped"
    );
}

#[test]
fn learned_allowlist_applied_offline() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let cfg = config(
        &up,
        "# the agents\n[[groups]]\nname = \"agents\" # learning\nclients = [\"127.0.0.2\"]\nmode = \"learn\"\n",
    );
    let dg = Dnsguard::start(&cfg);
    let agent = from("127.0.0.2");
    for name in ["www.a.test.", "www.b.test."] {
        ask_with(dg.addr, name, RecordType::A, &agent);
    }
    wait_for(Duration::from_secs(15), "2 log entries", || {
        (log_entries(dg.dir.path()).len() >= 2).then_some(())
    });
    let (_, dir) = dg.stop_keeping_dir(libc::SIGTERM);
    let (ok, out, err) = cli(
        dir.path(),
        &[
            "allowlist",
            "learn",
            "--group",
            "agents",
            "--since",
            "1h",
            "--apply",
            "--enforce",
            "-v",
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("directly"), "{err}");
    assert!(out.contains("applied: 2 new allow entries"), "{out}");
    let text = std::fs::read_to_string(dir.path().join("dnsguard.toml")).unwrap();
    assert!(
        text.contains("# the agents") && text.contains("# learning"),
        "comments kept: {text}"
    );
    assert!(
        text.contains("\"||a.test^\"") && text.contains("\"||b.test^\""),
        "{text}"
    );
    assert!(
        text.contains("mode = \"enforce\"") && !text.contains("\"learn\""),
        "{text}"
    );
    assert!(out.contains("now enforces"), "{out}");
    // Restarted on the edited file: the learned names resolve, nothing else does.
    let dg = Dnsguard::start_in(&text, dir);
    assert_eq!(
        addrs(&ask_with(dg.addr, "www.a.test.", RecordType::A, &agent)),
        ["192.0.2.1"]
    );
    assert_eq!(
        addrs(&ask_with(dg.addr, "www.c.test.", RecordType::A, &agent)),
        ["0.0.0.0"]
    );
    let (_, dir) = dg.stop_keeping_dir(libc::SIGTERM);
    // Applying again adds nothing; an unknown group is an error.
    let (ok, out, _) = cli(
        dir.path(),
        &[
            "allowlist",
            "learn",
            "--group",
            "agents",
            "--since",
            "1h",
            "--apply",
        ],
    );
    assert!(ok && out.contains("applied: 0 new"), "{out}");
    let (ok, _, err) = cli(
        dir.path(),
        &[
            "allowlist",
            "learn",
            "--group",
            "nobody",
            "--since",
            "1h",
            "--apply",
        ],
    );
    assert!(!ok && err.contains("nobody"), "{err}");
    let (ok, _, err) = cli(
        dir.path(),
        &["allowlist", "learn", "--group", "agents", "--enforce"],
    );
    assert!(!ok && err.contains("--enforce needs --apply"), "{err}");
}

/// Zone of the tunnel-action tests: `learn.example` has one real host.
const LEARN_ZONE: &str = "a2.learn.example. 300 A 192.0.2.42\n";

/// Sends 40 tunnel-like TXT queries below `x.learn.example` from `flooder`;
/// returns how many were REFUSED.
fn tunnel_from(dg: &Dnsguard, flooder: &Ask) -> usize {
    (0..40)
        .filter(|&i| {
            let r = ask_with(dg.addr, &tunnel_name(i), RecordType::TXT, flooder);
            rcode(&r) == ResponseCode::Refused
        })
        .count()
}

/// The query-log entries of `client` for `name`.
fn logged(dir: &Path, client: &str, name: &str) -> Vec<serde_json::Value> {
    log_entries(dir)
        .into_iter()
        .filter(|e| e["client"] == client && e["name"] == name)
        .collect()
}

#[test]
fn tunnel_block_refuses_only_the_flagged_client_never_the_domain() {
    let up = FakeUpstream::start(localhost(), LEARN_ZONE);
    let dg = Dnsguard::start(&config(&up, "[detect]\naction = \"block\"\n"));
    let flooder = from("127.0.0.2");
    let refused = tunnel_from(&dg, &flooder);
    assert!(
        refused >= 30,
        "the tunnel's queries are refused: {refused}/40"
    );
    // Other clients still resolve the domain's real host, and nothing of the
    // domain is quarantined for them.
    for other in ["127.0.0.3", "127.0.0.4"] {
        let r = ask_with(dg.addr, "a2.learn.example.", RecordType::A, &from(other));
        assert_eq!(rcode(&r), ResponseCode::NoError, "{other}");
        assert_eq!(addrs(&r), ["192.0.2.42"], "{other}");
    }
    let dir = dg.dir.path();
    for other in ["127.0.0.3", "127.0.0.4"] {
        let e = wait_for(
            Duration::from_secs(15),
            "the other clients' entries",
            || logged(dir, other, "a2.learn.example").pop(),
        );
        assert_eq!(e["flagged"], false, "{e}");
        assert!(
            !e["rule"].as_str().unwrap_or("").contains("quarantined"),
            "{e}"
        );
    }
    // `block` never quarantines: the flooder's refused queries say why, and
    // the reason is the tunnel, not a quarantine.
    let flagged = log_entries(dir)
        .into_iter()
        .filter(|e| e["client"] == "127.0.0.2" && e["flagged"] == true)
        .collect::<Vec<_>>();
    assert!(flagged.len() >= 30, "{flagged:#?}");
    for e in &flagged {
        let rule = e["rule"].as_str().unwrap();
        assert!(
            rule.starts_with("tunnel: ") && !rule.contains("quarantined"),
            "{rule}"
        );
    }
}

#[test]
fn tunnel_quarantine_is_per_client_and_domain() {
    let up = FakeUpstream::start(localhost(), LEARN_ZONE);
    let dg = Dnsguard::start(&config(
        &up,
        "[detect]\naction = \"quarantine\"\nquarantine_after = 3\n",
    ));
    let flooder = from("127.0.0.2");
    let refused = tunnel_from(&dg, &flooder);
    assert!(refused >= 30, "{refused}/40");
    // The flooder's quarantine covers every name of the domain, even a plain one…
    let r = ask_with(dg.addr, "a2.learn.example.", RecordType::A, &flooder);
    assert_eq!(rcode(&r), ResponseCode::Refused);
    // …for the flooder only.
    for other in ["127.0.0.3", "127.0.0.4"] {
        let r = ask_with(dg.addr, "a2.learn.example.", RecordType::A, &from(other));
        assert_eq!(addrs(&r), ["192.0.2.42"], "{other}");
    }
    let dir = dg.dir.path();
    let e = wait_for(Duration::from_secs(15), "the flooder's entry", || {
        logged(dir, "127.0.0.2", "a2.learn.example").pop()
    });
    assert_eq!(e["rcode_name"], "REFUSED", "{e}");
    assert!(
        e["rule"]
            .as_str()
            .unwrap()
            .contains("learn.example quarantined"),
        "{e}"
    );
    for other in ["127.0.0.3", "127.0.0.4"] {
        let e = wait_for(
            Duration::from_secs(15),
            "the other clients' entries",
            || logged(dir, other, "a2.learn.example").pop(),
        );
        assert_eq!(e["rcode_name"], "NOERROR", "{e}");
        assert_eq!(e["flagged"], false, "{e}");
    }
}

/// `GET path` on the running server's API with its token, as JSON.
fn api_json(dg: &Dnsguard, path: &str) -> serde_json::Value {
    let auth = format!("Bearer {}", common::dash::token(dg));
    let r = common::http::request(
        "GET",
        &common::dash::base(dg),
        path,
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json()
}

#[test]
fn groups_api_shows_the_doh_list_on_allowlist_only_groups() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = Dnsguard::start(&config(
        &up,
        "[[lists]]\nname = \"doh\"\nsource = \"builtin:doh-resolvers\"\ngroups = []\n\
         [[groups]]\nname = \"agents\"\nclients = [\"127.0.0.2\"]\nmode = \"enforce\"\n\
         [[groups]]\nname = \"learners\"\nclients = [\"127.0.0.3\"]\nmode = \"learn\"\n\
         [[groups]]\nname = \"strict\"\nclients = [\"127.0.0.4\"]\ndefault_deny = true\n\
         [[groups]]\nname = \"office\"\nclients = [\"127.0.0.5\"]\n",
    ));
    let groups = api_json(&dg, "/api/v1/groups");
    let group = |name: &str| -> (Vec<String>, Vec<String>) {
        let g = groups
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {groups:#}"));
        let names = |k: &str| -> Vec<String> {
            g[k].as_array()
                .unwrap_or_else(|| panic!("{k} of {g}"))
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        (names("lists"), names("implicit_lists"))
    };
    for name in ["agents", "learners", "strict"] {
        let (lists, implicit) = group(name);
        assert_eq!(lists, ["exfil-endpoints", "doh"], "{name}");
        assert_eq!(implicit, ["doh"], "{name}");
    }
    for name in ["office", "default"] {
        let (lists, implicit) = group(name);
        assert_eq!(lists, ["exfil-endpoints"], "{name}");
        assert!(implicit.is_empty(), "{name}");
    }
    // What the page shows is what the filter does.
    for (client, blocked) in [
        ("127.0.0.2", true),
        ("127.0.0.3", true),
        ("127.0.0.5", false),
    ] {
        let r = ask_with(dg.addr, "dns.google.", RecordType::A, &from(client));
        assert_eq!(addrs(&r) == ["0.0.0.0"], blocked, "{client}");
    }
}

#[test]
fn alerts_api_gives_each_kind_of_reason_once() {
    let up = FakeUpstream::start(localhost(), LEARN_ZONE);
    let dg = Dnsguard::start(&config(&up, ""));
    tunnel_from(&dg, &from("127.0.0.2"));
    let alerts = wait_for(Duration::from_secs(15), "40 flags", || {
        let a = api_json(&dg, "/api/v1/alerts?since=1h");
        (a["total"] == 40).then_some(a)
    });
    let recent = alerts["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 40);
    // Each flag carries its kinds of evidence (short labels) next to the text.
    let kinds: Vec<Vec<String>> = recent
        .iter()
        .map(|e| {
            e["kinds"]
                .as_array()
                .unwrap_or_else(|| panic!("kinds of {e}"))
                .iter()
                .map(|k| k.as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    assert!(
        kinds
            .iter()
            .all(|k| k.contains(&"encoded label".to_owned())),
        "{kinds:?}"
    );
    let mut distinct = kinds.clone();
    distinct.sort();
    distinct.dedup();
    // The domain's card: one reason text per kind of evidence, not one per
    // query (their figures differ, the evidence does not).
    let d = &alerts["domains"][0];
    assert_eq!(d["key"], "learn.example");
    assert_eq!(d["count"], 40);
    let reasons = d["reasons"].as_array().unwrap();
    assert_eq!(
        reasons.len(),
        distinct.len(),
        "{reasons:#?} for {distinct:?}"
    );
    assert!(reasons.len() < 5, "{reasons:#?}");
    let all: Vec<&str> = d["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    for k in distinct.iter().flatten() {
        assert!(all.contains(&k.as_str()), "{k} in {all:?}");
    }
}
