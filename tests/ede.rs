//! Extended DNS Errors (RFC 8914) end to end: the real binary asked by the real
//! `dig`, over UDP (the in-place fast path and hickory's path) and TCP; `dig`
//! prints the option as `; EDE: CODE (Name): (text)`.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::server::Dnsguard;
use common::upstream::{FakeUpstream, Mode};

const ZONE: &str = "\
www.fwd.test. 300 A 192.0.2.1
short.fwd.test. 1 A 192.0.2.2
cloak.fwd.test. 300 CNAME collect.tracker.test.
collect.tracker.test. 300 A 192.0.2.66
";

const LIST: &str = "# ads\n||ads.fwd.test^\n||tracker.test^\n";

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// A server forwarding to `up`, with the list `LIST` as "ads" and `extra` config.
fn start(up: &FakeUpstream, extra: &str) -> Dnsguard {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ads.txt"), LIST).unwrap();
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n{extra}\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 500\n\
         [[lists]]\nname = \"ads\"\nsource = \"ads.txt\"\n",
        up.addr()
    );
    Dnsguard::start_in(&config, dir)
}

/// Runs the real `dig` against the server with `args`; its output.
fn dig(dg: &Dnsguard, args: &[&str]) -> String {
    common::client::dig(dg.addr, args)
}

/// Polls the query log (JSON, through the running server's API) until it has an
/// entry for `name` with an `ede`; that EDE.
fn logged_ede(dg: &Dnsguard, name: &str) -> serde_json::Value {
    let auth = format!("Bearer {}", common::dash::token(dg));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = common::http::request(
            "GET",
            &common::dash::base(dg),
            "/api/v1/querylog?since=1h&format=json",
            &[("Authorization", &auth)],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let found = r.body.lines().find_map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            (e["name"] == name && e.get("ede").is_some()).then(|| e["ede"].clone())
        });
        if let Some(ede) = found {
            return ede;
        }
        assert!(Instant::now() < deadline, "{name} never logged: {}", r.body);
        std::thread::yield_now();
    }
}

/// `GET /api/v1/querylog/follow` (the dashboard's live tail) with `query`.
fn follow(dg: &Dnsguard, query: &str) -> serde_json::Value {
    let auth = format!("Bearer {}", common::dash::token(dg));
    let path = format!("/api/v1/querylog/follow?{query}");
    let r = common::http::request(
        "GET",
        &common::dash::base(dg),
        &path,
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn status(out: &str, want: &str) {
    assert!(out.contains(&format!("status: {want}")), "{want}: {out}");
}

#[test]
fn blocked_names_say_which_list_and_line() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    let cursor = follow(&dg, "")["cursor"].as_str().unwrap().to_owned();
    let want = "; EDE: 15 (Blocked): (list \"ads\" line 2)";
    // UDP twice (the fast path answers both), then TCP (hickory's path).
    for transport in ["+notcp", "+notcp", "+tcp"] {
        let out = dig(&dg, &[transport, "ads.fwd.test", "A"]);
        status(&out, "NOERROR");
        assert!(out.contains("0.0.0.0"), "{out}");
        assert!(out.contains(want), "{transport}: {out}");
    }
    // A subdomain, NODATA type: the same rule.
    let out = dig(&dg, &["x.ads.fwd.test", "HTTPS"]);
    assert!(out.contains(want), "{out}");
    // A query without EDNS gets no OPT record at all.
    for transport in ["+notcp", "+tcp"] {
        let out = dig(&dg, &[transport, "+noedns", "ads.fwd.test", "A"]);
        status(&out, "NOERROR");
        assert!(!out.contains("OPT PSEUDOSECTION"), "{transport}: {out}");
        assert!(!out.contains("EDE"), "{transport}: {out}");
    }
    // A resolved answer says nothing extra.
    let out = dig(&dg, &["www.fwd.test", "A"]);
    assert!(out.contains("192.0.2.1") && !out.contains("EDE"), "{out}");
    assert_eq!(up.queries_for("ads.fwd.test."), 0);
    // The dashboard's query log shows it, derived from the stored entry.
    let ede = logged_ede(&dg, "ads.fwd.test");
    assert_eq!(ede["code"], 15);
    assert_eq!(ede["name"], "Blocked");
    assert_eq!(ede["text"], "list \"ads\" line 2");
    // The live tail too.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f = follow(&dg, &format!("blocked=true&after={cursor}"));
        if let Some(e) = f["entries"].as_array().and_then(|a| a.first()) {
            assert_eq!(e["ede"]["code"], 15, "{e}");
            assert_eq!(e["ede"]["text"], "list \"ads\" line 2", "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "never followed: {f}");
        std::thread::yield_now();
    }
}

#[test]
fn cname_cloaking_is_filtered_with_the_target_rule() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    let want = "; EDE: 17 (Filtered): (answer: list \"ads\" line 3)";
    // A miss (resolved, then blocked on its answer), then the cached entry.
    for transport in ["+notcp", "+notcp", "+tcp"] {
        let out = dig(&dg, &[transport, "cloak.fwd.test", "A"]);
        assert!(out.contains(want), "{transport}: {out}");
    }
}

#[test]
fn default_deny_and_refused_clients_are_prohibited() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(
        &up,
        "allow_clients = [\"127.0.0.0/24\"]\n\
         [[groups]]\nname = \"locked\"\nclients = [\"127.0.0.5\"]\ndefault_deny = true\n",
    );
    for transport in ["+notcp", "+tcp"] {
        let out = dig(&dg, &[transport, "-b", "127.0.0.5", "www.fwd.test", "A"]);
        assert!(
            out.contains("; EDE: 18 (Prohibited): (not-allowlisted (group locked))"),
            "{transport}: {out}"
        );
        let out = dig(&dg, &[transport, "-b", "127.0.1.9", "www.fwd.test", "A"]);
        status(&out, "REFUSED");
        assert!(
            out.contains("; EDE: 18 (Prohibited): (client not allowed)"),
            "{transport}: {out}"
        );
    }
    let ede = logged_ede(&dg, "www.fwd.test");
    assert_eq!(ede["code"], 18, "{ede}");
}

#[test]
fn failing_upstreams_say_how_they_failed() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    up.set_mode(Mode::ServFail);
    for transport in ["+notcp", "+tcp"] {
        let out = dig(&dg, &[transport, "www.fwd.test", "A"]);
        status(&out, "SERVFAIL");
        assert!(
            out.contains(
                "; EDE: 23 (Network Error): (upstream failed: upstream said Server Failure)"
            ),
            "{transport}: {out}"
        );
    }
    up.set_mode(Mode::Dead);
    for transport in ["+notcp", "+tcp"] {
        let out = dig(&dg, &[transport, "www.fwd.test", "A"]);
        status(&out, "SERVFAIL");
        assert!(
            out.contains("; EDE: 22 (No Reachable Authority): (timed out after"),
            "{transport}: {out}"
        );
    }
}

#[test]
fn stale_answers_say_so() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(&up, "");
    let out = dig(&dg, &["short.fwd.test", "A"]);
    assert!(out.contains("192.0.2.2") && !out.contains("EDE"), "{out}");
    up.set_mode(Mode::Dead);
    // Fresh for one second, then stale: poll until the entry expired.
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = dig(&dg, &["short.fwd.test", "A"]);
        if !out.contains("IN\tA\t192.0.2.2") || out.contains("EDE") {
            break out;
        }
        assert!(Instant::now() < deadline, "never stale: {out}");
    };
    status(&out, "NOERROR");
    assert!(out.contains("192.0.2.2"), "{out}");
    assert!(out.contains("; EDE: 3 (Stale Answer)"), "{out}");
    let out = dig(&dg, &["+tcp", "short.fwd.test", "A"]);
    assert!(out.contains("; EDE: 3 (Stale Answer)"), "{out}");
}

#[test]
fn tunnel_refusals_are_prohibited() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(
        &up,
        "[[groups]]\nname = \"strict\"\nclients = [\"127.0.0.3\"]\ntunnel_action = \"block\"\n",
    );
    let tunnel =
        "mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpjqwe.gezdgnbvgy3tqojqgezdgnbvgy3tqojq.t.fwd.test";
    for transport in ["+notcp", "+tcp"] {
        let out = dig(&dg, &[transport, "-b", "127.0.0.3", tunnel, "TXT"]);
        status(&out, "REFUSED");
        assert!(
            out.contains("; EDE: 18 (Prohibited): (tunnel)"),
            "{transport}: {out}"
        );
    }
    let ede = logged_ede(&dg, tunnel);
    assert_eq!((&ede["code"], &ede["text"]), (&18.into(), &"tunnel".into()));
}
