//! A highly available pair (issue #22): the health check keepalived tracks,
//! config replication from a primary to a secondary (long-poll with an ETag,
//! applied atomically, edits refused on the secondary, a broken primary leaving
//! the secondary on its last good state), new-domain alerts once for the pair,
//! and failover of a virtual address between two real keepalived daemons in
//! network namespaces the test makes.
//!
//! Real binary, real sockets; the loopback tests use 127.0.0.x only.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::client::{Ask, addrs, ask_with, query_message, rcode, try_exchange};
use common::dash::{base, data_dir, token};
use common::http::{HttpServer, Reply, Response, request};
use common::server::Dnsguard;
use common::upstream::FakeUpstream;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const ZONE: &str = "\
www.a.test. 300 A 192.0.2.1
www.b.test. 300 A 192.0.2.2
www.c.test. 300 A 192.0.2.3
";

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// Polls `f` until it returns `Some`, for at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn quick() -> Ask {
    Ask {
        timeout: Duration::from_millis(500),
        ..Ask::default()
    }
}

/// The addresses answered for `name`, or `None` when it is blocked (NXDOMAIN or
/// the null address) or there was no answer.
fn resolved(server: SocketAddr, name: &str, ask: &Ask) -> Option<Vec<String>> {
    let m = try_exchange(server, &query_message(name, RecordType::A, ask), ask).ok()?;
    let a = addrs(&m);
    (rcode(&m) == ResponseCode::NoError && a != ["0.0.0.0"]).then_some(a)
}

fn blocked(server: SocketAddr, name: &str) -> bool {
    let Ok(m) = try_exchange(
        server,
        &query_message(name, RecordType::A, &quick()),
        &quick(),
    ) else {
        return false;
    };
    rcode(&m) == ResponseCode::NXDomain || addrs(&m) == ["0.0.0.0"]
}

fn api(dg: &Dnsguard, method: &str, path: &str, body: Option<&str>) -> Reply {
    let auth = format!("Bearer {}", token(dg));
    let mut headers = vec![("Authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    request(method, &base(dg), path, &headers, body)
}

/// A value of `/metrics` (0 when absent).
fn metric(dg: &Dnsguard, name: &str) -> f64 {
    let r = api(dg, "GET", "/metrics", None);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn primary_config(up: &FakeUpstream, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [local]\nrecords = [\"nas.ha.test A 10.0.0.5\"]\n{extra}",
        up.addr()
    )
}

/// A secondary of the server at `primary` (its base URL) with the token in
/// `token_file`; its own file has no local records and no groups.
fn secondary_config(up: &FakeUpstream, primary: &str, token_file: &Path, extra: &str) -> String {
    format!(
        "# the secondary's own comment\n[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [cluster]\nprimary = \"{primary}\"\ntoken_file = \"{}\"\nwait_secs = 20\n{extra}",
        up.addr(),
        token_file.display()
    )
}

#[test]
fn health_is_ready_only_when_the_dns_listener_answers() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = Dnsguard::start(&primary_config(&up, ""));
    // Public: no token, and nothing but ready or not (a node whose listeners
    // are not up yet is not ready).
    let r = wait_for("ready", Duration::from_secs(10), || {
        let r = request("GET", &base(&dg), "/api/v1/health", &[], None);
        (r.status == 200).then_some(r)
    });
    assert_eq!(r.body, "ok\n");
    // A node whose listener answers loopback with REFUSED cannot serve the
    // virtual address's clients as configured: not ready.
    let refusing = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"10.0.0.0/8\"]\n\
         [resolver]\nupstreams = [\"{}\"]\n",
        up.addr()
    ));
    let r = wait_for("the probe's REFUSED", Duration::from_secs(10), || {
        let r = request("GET", &base(&refusing), "/api/v1/health", &[], None);
        (r.status != 200 && refusing.log().contains("rcode 5")).then_some(r)
    });
    assert_eq!((r.status, r.body.as_str()), (503, "not ready\n"));
}

#[test]
fn secondary_follows_the_primary_and_refuses_local_edits() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let primary = Dnsguard::start(&primary_config(&up, ""));
    let token_file = data_dir(&primary).join("api-token");
    let secondary = Dnsguard::start(&secondary_config(&up, &base(&primary), &token_file, ""));
    // The first pull brings the primary's local record.
    wait_for("the initial state", Duration::from_secs(10), || {
        resolved(secondary.addr, "nas.ha.test.", &quick()).filter(|a| a == &["10.0.0.5"])
    });
    assert!(resolved(secondary.addr, "www.a.test.", &quick()).is_some());

    // A deny entry added on the primary is enforced by the secondary within 5 s.
    let r = api(
        &primary,
        "POST",
        "/api/v1/groups/default/rules",
        Some(r#"{"action":"deny","entry":"www.a.test"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let changed = Instant::now();
    assert!(blocked(primary.addr, "www.a.test."));
    wait_for(
        "the deny entry on the secondary",
        Duration::from_secs(5),
        || blocked(secondary.addr, "www.a.test.").then_some(()),
    );
    println!("replication delay: {:?}", changed.elapsed());

    // The secondary's file has the replicated state and still its own sections.
    let file = std::fs::read_to_string(secondary.config_path()).unwrap();
    assert!(file.starts_with("# the secondary's own comment"), "{file}");
    assert!(
        file.contains("www.a.test") && file.contains("[cluster]"),
        "{file}"
    );

    // Its dashboard says what is replicated and refuses to edit it.
    let status = api(&secondary, "GET", "/api/v1/cluster", None).json();
    assert_eq!(status["role"], "secondary", "{status}");
    assert_eq!(status["primary_up"], true, "{status}");
    assert!(
        status["replicated"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "groups")
    );
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/groups/default/rules",
            r#"{"action":"deny","entry":"www.b.test"}"#,
        ),
        ("PUT", "/api/v1/settings", r#"{"retention_days":3}"#),
    ] {
        let r = api(&secondary, method, path, Some(body));
        assert_eq!(r.status, 409, "{method} {path}: {}", r.body);
        assert!(
            r.body.contains("secondary") && r.body.contains("groups"),
            "{}",
            r.body
        );
    }
    assert!(!blocked(secondary.addr, "www.b.test."));

    // The state route needs the token.
    let r = request("GET", &base(&primary), "/api/v1/cluster/state", &[], None);
    assert_eq!(r.status, 401);
    // A SIGHUP on the secondary keeps the replicated state (it is in its file).
    secondary.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(10), || {
        secondary
            .log()
            .contains("reloaded lists and groups")
            .then_some(())
    });
    assert!(blocked(secondary.addr, "www.a.test."));
}

#[test]
fn broken_or_unreachable_primary_leaves_the_last_good_state() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let good = "[[groups]]\nname = \"default\"\ndeny = [\"www.a.test\"]\n";
    let fake = HttpServer::start(Response {
        etag: Some("\"v1\"".into()),
        ..Response::ok(good)
    });
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("primary-token");
    std::fs::write(&token_file, "t".repeat(64)).unwrap();
    let secondary = Dnsguard::start_in(&secondary_config(&up, &fake.url(""), &token_file, ""), dir);
    wait_for("the good state", Duration::from_secs(10), || {
        blocked(secondary.addr, "www.a.test.").then_some(())
    });
    let file_before = std::fs::read_to_string(secondary.config_path()).unwrap();
    let mut failures = 0.0;
    for (i, garbage) in [
        "[[groups]\nname = ",                          // not TOML
        "[resolver]\nmode = \"sideways\"\n",           // not a configuration
        "[server]\nlisten = [\"0.0.0.0:53\"]\n",       // not the primary's to set
        "[[groups]]\nname = \"default\"\nbogus = 1\n", // unknown key
    ]
    .into_iter()
    .enumerate()
    {
        let tag = format!("\"bad{i}\"");
        fake.set(Response {
            etag: Some(tag.clone()),
            ..Response::ok(garbage)
        });
        // Fetched once (then asked for with its tag), refused, counted.
        wait_for("the garbage to be fetched", Duration::from_secs(10), || {
            (fake.last_if_none_match().as_deref() == Some(tag.as_str())).then_some(())
        });
        failures = wait_for("the refusal", Duration::from_secs(10), || {
            let n = metric(&secondary, "dnsguard_cluster_sync_failures_total");
            (n > failures).then_some(n)
        });
        assert!(blocked(secondary.addr, "www.a.test."), "{garbage}");
        assert!(!blocked(secondary.addr, "www.b.test."), "{garbage}");
        assert_eq!(
            std::fs::read_to_string(secondary.config_path()).unwrap(),
            file_before
        );
    }
    let status = api(&secondary, "GET", "/api/v1/cluster", None).json();
    assert!(
        status["last_error"].as_str().unwrap().contains("refused"),
        "{status}"
    );
    assert_eq!(status["etag"], "\"v1\"", "{status}");

    // An error status, then no primary at all: still the last good state.
    fake.set(Response {
        status: 500,
        ..Response::ok("boom")
    });
    wait_for("the error to be counted", Duration::from_secs(10), || {
        let n = metric(&secondary, "dnsguard_cluster_sync_failures_total");
        (n > failures).then_some(())
    });
    assert!(blocked(secondary.addr, "www.a.test."));
    assert_eq!(
        std::fs::read_to_string(secondary.config_path()).unwrap(),
        file_before
    );
}

#[test]
fn new_domain_alert_fires_once_for_the_pair() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let watch =
        "[[groups]]\nname = \"agents\"\nclients = [\"127.0.0.2\"]\nalert_new_domains = true\n";
    let mut primary = Some(Dnsguard::start(&primary_config(
        &up,
        &format!("{watch}[alerts]\nfile = \"alerts.jsonl\"\n"),
    )));
    let p = primary.as_ref().unwrap();
    let token_file = data_dir(p).join("api-token");
    let secondary = Dnsguard::start(&secondary_config(
        &up,
        &base(p),
        &token_file,
        "[alerts]\nfile = \"alerts.jsonl\"\n",
    ));
    let p_alerts = p.dir.path().join("alerts.jsonl");
    let s_alerts = secondary.dir.path().join("alerts.jsonl");
    wait_for(
        "the secondary to see its primary",
        Duration::from_secs(10),
        || {
            (api(&secondary, "GET", "/api/v1/cluster", None).json()["primary_up"] == true)
                .then_some(())
        },
    );
    let agent = Ask {
        from: "127.0.0.2".parse().unwrap(),
        ..Ask::default()
    };
    // The same first query reaches both nodes (a client with both as servers).
    ask_with(secondary.addr, "www.b.test.", RecordType::A, &agent);
    ask_with(p.addr, "www.b.test.", RecordType::A, &agent);
    wait_for("the primary's alert", Duration::from_secs(10), || {
        new_domain_alerts(&p_alerts)
            .contains(&"www.b.test".to_owned())
            .then_some(())
    });
    wait_for(
        "the secondary to record and defer it",
        Duration::from_secs(10),
        || (metric(&secondary, "dnsguard_cluster_new_domain_deferred_total") >= 1.0).then_some(()),
    );
    assert!(new_domain_alerts(&s_alerts).is_empty());

    // The primary is gone: the secondary raises the pair's alerts itself, and
    // not again for what it already recorded.
    drop(primary.take());
    wait_for("the secondary to notice", Duration::from_secs(15), || {
        (api(&secondary, "GET", "/api/v1/cluster", None).json()["primary_up"] == false)
            .then_some(())
    });
    ask_with(secondary.addr, "www.b.test.", RecordType::A, &agent);
    ask_with(secondary.addr, "www.c.test.", RecordType::A, &agent);
    wait_for("the secondary's alert", Duration::from_secs(10), || {
        new_domain_alerts(&s_alerts)
            .contains(&"www.c.test".to_owned())
            .then_some(())
    });
    assert_eq!(new_domain_alerts(&s_alerts), ["www.c.test"]);
}

fn new_domain_alerts(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| a["type"] == "new-domain")
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}
