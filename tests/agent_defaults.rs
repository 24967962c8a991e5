//! Safer defaults for agent groups (issue #23): an allowlist-only group blocks
//! medium-confidence tunnel flags without being told to, so a flagged query
//! never reaches an upstream; and a name an `enforce` group may not resolve
//! never reaches an upstream on its behalf — not when asked (UDP, TCP, any
//! type), not through the cache or its stale entries, not chased as the target
//! of an allowed name's CNAME.
//! Real binary, real sockets, a fake upstream that counts what it is asked.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::client::{Ask, addrs, ask_with, dig, rcode};
use common::server::Dnsguard;
use common::upstream::{FakeUpstream, Mode};
use common::wait_for;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const ZONE: &str = "\
www.a.test. 300 A 192.0.2.1
alias.a.test. 300 CNAME target.b.test.
target.b.test. 300 A 192.0.2.2
secret.b.test. 1 A 192.0.2.3
";

fn from(ip: &str) -> Ask {
    Ask {
        from: ip.parse().unwrap(),
        ..Ask::default()
    }
}

fn config(up: &FakeUpstream, groups: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         {groups}",
        up.addr()
    )
}

/// A hijacked agent's `$(whoami).$(hostname).x` look-up below a domain no
/// other client uses (a medium-confidence flag: the information budget).
const WHOAMI: &str = "ci.k8s-node-7.hooks.agent-telemetry.net.";

#[test]
fn allowlist_only_groups_block_medium_flags_by_default() {
    let up = FakeUpstream::start("127.0.0.1".parse::<IpAddr>().unwrap(), ZONE);
    let dg = Dnsguard::start(&config(
        &up,
        "[[groups]]\nname = \"agents\"\nclients = [\"127.0.0.2\"]\nmode = \"learn\"\n\
         [[groups]]\nname = \"told\"\nclients = [\"127.0.0.3\"]\nmode = \"learn\"\n\
         tunnel_action = \"log\"\n",
    ));
    // A learning agent group: no tunnel action set, so medium blocks.
    let r = ask_with(dg.addr, WHOAMI, RecordType::A, &from("127.0.0.2"));
    assert_eq!(rcode(&r), ResponseCode::Refused, "{r:?}");
    assert_eq!(up.queries_for(WHOAMI), 0, "the flagged look-up left");
    // A group told to log does what it is told: flagged, forwarded.
    let told = "claude.mbp-bob.hooks.other-telemetry.net.";
    let r = ask_with(dg.addr, told, RecordType::A, &from("127.0.0.3"));
    assert_eq!(rcode(&r), ResponseCode::NXDomain, "{r:?}");
    assert_eq!(up.queries_for(told), 1);
    // So does the default group (`[detect] action = "log"`).
    let office = "jenkins.ws-0412.hooks.third-telemetry.net.";
    let r = ask_with(dg.addr, office, RecordType::A, &from("127.0.0.1"));
    assert_eq!(rcode(&r), ResponseCode::NXDomain, "{r:?}");
    assert_eq!(up.queries_for(office), 1);
    // Each was flagged at medium confidence: the query log says so (it is
    // written off the DNS path: poll).
    let cfg = dg.config_path();
    let rows = wait_for(
        Duration::from_secs(15),
        "the three flags in the query log",
        || {
            let (ok, out, err) = common::server::run_cli(&[
                "query-log",
                "--since",
                "1h",
                "--flagged",
                "--format",
                "jsonl",
                "--config",
                cfg.to_str().unwrap(),
            ]);
            assert!(ok, "{err}");
            let rows: Vec<serde_json::Value> = out
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let all = [WHOAMI, told, office]
                .iter()
                .all(|n| rows.iter().any(|v| v["name"] == n.trim_end_matches('.')));
            all.then_some(rows)
        },
    );
    for name in [WHOAMI, told, office] {
        let row = rows
            .iter()
            .find(|v| v["name"] == name.trim_end_matches('.'))
            .unwrap();
        assert_eq!(row["level"], "medium", "{row}");
    }
    // Ordinary names of the agents still resolve.
    let r = ask_with(dg.addr, "www.a.test.", RecordType::A, &from("127.0.0.2"));
    assert_eq!(addrs(&r), ["192.0.2.1"]);
}

#[test]
fn an_enforce_group_never_sends_a_denied_name_upstream() {
    let up = FakeUpstream::start("127.0.0.1".parse::<IpAddr>().unwrap(), ZONE);
    let dg = Dnsguard::start(&config(
        &up,
        "[[groups]]\nname = \"agents\"\nclients = [\"127.0.0.2\"]\nmode = \"enforce\"\n\
         allow = [\"a.test\"]\n",
    ));
    let agent = from("127.0.0.2");
    let office = from("127.0.0.1");

    // Asked directly: blocked, never forwarded.
    let r = ask_with(dg.addr, "secret.b.test.", RecordType::A, &agent);
    assert_eq!(addrs(&r), ["0.0.0.0"], "{r:?}");
    assert_eq!(up.queries_for("secret.b.test."), 0);

    // Another group resolves it, so the cache holds it: still blocked for
    // the agent, and not fetched again for it.
    let r = ask_with(dg.addr, "secret.b.test.", RecordType::A, &office);
    assert_eq!(addrs(&r), ["192.0.2.3"]);
    assert_eq!(up.queries_for("secret.b.test."), 1);
    let r = ask_with(dg.addr, "secret.b.test.", RecordType::A, &agent);
    assert_eq!(addrs(&r), ["0.0.0.0"], "{r:?}");

    // The upstream fails and the entry (TTL 1 s) expires: the office gets it
    // stale, the agent gets nothing of it, and its query goes nowhere.
    up.set_mode(Mode::ServFail);
    wait_for(
        Duration::from_secs(15),
        "a stale answer for the office",
        || {
            let r = ask_with(dg.addr, "secret.b.test.", RecordType::A, &office);
            (addrs(&r) == ["192.0.2.3"] && r.answers[0].ttl > 1).then_some(())
        },
    );
    up.reset_counters();
    for qtype in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::TXT,
        RecordType::ANY,
    ] {
        let r = ask_with(dg.addr, "secret.b.test.", qtype, &agent);
        assert!(
            !addrs(&r).contains(&"192.0.2.3".to_string()),
            "{qtype}: {r:?}"
        );
        // Over TCP too (dig binds the agent's address).
        let out = dig(
            dg.addr,
            &[
                "-b",
                "127.0.0.2",
                "+tcp",
                "+short",
                "secret.b.test",
                &qtype.to_string(),
            ],
        );
        assert!(!out.contains("192.0.2.3"), "{qtype}: {out}");
    }
    assert_eq!(up.queries_for("secret.b.test."), 0);
    up.set_mode(Mode::Normal);

    // An allowed name whose CNAME leads to a name outside the allowlist: the
    // upstream is asked the allowed name only (it follows its own chain;
    // CNAME targets of an allowed name are not default-denied, or no CDN-hosted
    // allowed site would resolve), never the target on its own.
    let r = ask_with(dg.addr, "alias.a.test.", RecordType::A, &agent);
    assert_eq!(rcode(&r), ResponseCode::NoError, "{r:?}");
    assert_eq!(up.queries_for("alias.a.test."), 1);
    assert_eq!(up.queries_for("target.b.test."), 0);
    let r = ask_with(dg.addr, "www.a.test.", RecordType::A, &agent);
    assert_eq!(addrs(&r), ["192.0.2.1"]);
}
