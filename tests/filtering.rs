//! Filtering end to end: lists and groups in the config, the real binary, clients on
//! 127.0.0.x addresses, a fake upstream, and a local HTTP server for list downloads.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::client::{Ask, addrs, ask, ask_with, rcode};
use common::http::{HttpServer, Response};
use common::server::{Dnsguard, run_cli};
use common::upstream::FakeUpstream;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const ZONE: &str = "\
www.fwd.test. 300 A 192.0.2.1
allowed.fwd.test. 300 A 192.0.2.2
other.fwd.test. 300 A 192.0.2.3
other.fwd.test. 300 AAAA 2001:db8::3
cloak.fwd.test. 300 CNAME collect.tracker.test.
collect.tracker.test. 300 A 192.0.2.66
ads.fwd.test. 300 A 192.0.2.4
";

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn from(ip: &str) -> Ask {
    Ask {
        from: ip.parse().unwrap(),
        ..Ask::default()
    }
}

fn start(up: &FakeUpstream, extra: &str) -> Dnsguard {
    Dnsguard::start(&base_config(up, extra))
}

fn base_config(up: &FakeUpstream, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n{extra}",
        up.addr()
    )
}

#[test]
fn builtin_default_list_blocks_with_null_ip() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(
        &up,
        "[[lists]]\nname = \"dnsguard-default\"\nsource = \"builtin:default\"\n",
    );
    for name in [
        "doubleclick.net.",
        "ad.doubleclick.net.",
        "stats.g.doubleclick.net.",
    ] {
        let r = ask(dg.addr, name, RecordType::A);
        assert_eq!(rcode(&r), ResponseCode::NoError);
        assert_eq!(addrs(&r), vec!["0.0.0.0"], "{name}");
        assert_eq!(r.answers[0].ttl, 60);
        let r = ask(dg.addr, name, RecordType::AAAA);
        assert_eq!(addrs(&r), vec!["::"], "{name}");
        let r = ask(dg.addr, name, RecordType::HTTPS);
        assert!(r.answers.is_empty(), "HTTPS for a blocked name is NODATA");
        assert_eq!(rcode(&r), ResponseCode::NoError);
    }
    assert_eq!(up.queries(), 0, "blocked names never reach the upstream");
    assert_eq!(
        addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        vec!["192.0.2.1"]
    );
}

#[test]
fn groups_by_client_address_and_default_deny() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(
        &up,
        "[[groups]]\nname = \"default\"\ndeny = [\"||ads.fwd.test^\"]\n\
         [[groups]]\nname = \"agents\"\nclients = [\"127.0.0.2\", \"127.0.1.0/24\"]\n\
         default_deny = true\nblock_mode = \"nxdomain\"\nallow = [\"||allowed.fwd.test^\"]\n",
    );
    // Default group: its own deny entry applies, everything else resolves.
    assert_eq!(
        addrs(&ask(dg.addr, "ads.fwd.test.", RecordType::A)),
        vec!["0.0.0.0"]
    );
    assert_eq!(
        addrs(&ask(dg.addr, "other.fwd.test.", RecordType::A)),
        vec!["192.0.2.3"]
    );
    // The agents group (by IP and by CIDR): only allowlisted names resolve.
    for client in ["127.0.0.2", "127.0.1.77"] {
        let r = ask_with(dg.addr, "allowed.fwd.test.", RecordType::A, &from(client));
        assert_eq!(addrs(&r), vec!["192.0.2.2"], "{client}");
        let r = ask_with(dg.addr, "other.fwd.test.", RecordType::A, &from(client));
        assert_eq!(
            rcode(&r),
            ResponseCode::NXDomain,
            "{client}: not allowlisted"
        );
        let r = ask_with(dg.addr, "ads.fwd.test.", RecordType::A, &from(client));
        assert_eq!(rcode(&r), ResponseCode::NXDomain, "{client}");
    }
    // A client in neither selector falls back to default.
    let r = ask_with(
        dg.addr,
        "other.fwd.test.",
        RecordType::A,
        &from("127.0.0.9"),
    );
    assert_eq!(addrs(&r), vec!["192.0.2.3"]);
}

#[test]
fn every_block_mode_over_the_wire() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let mut groups = String::new();
    for (i, mode) in ["nxdomain", "nodata", "refused", "custom", "null"]
        .iter()
        .enumerate()
    {
        groups.push_str(&format!(
            "[[groups]]\nname = \"g{i}\"\nclients = [\"127.0.2.{}\"]\nblock_mode = \"{mode}\"\n\
             block_ttl = 42\ndeny = [\"ads.fwd.test\"]\n",
            i + 1
        ));
        if *mode == "custom" {
            groups.push_str("block_ips = [\"192.0.2.250\", \"2001:db8::250\"]\n");
        }
    }
    let dg = start(&up, &groups);
    let q = |client: &str, t| ask_with(dg.addr, "x.ads.fwd.test.", t, &from(client));
    let r = q("127.0.2.1", RecordType::A);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    assert_eq!(
        r.authorities[0].ttl, 42,
        "negative answers carry an SOA with the block TTL"
    );
    let r = q("127.0.2.2", RecordType::A);
    assert_eq!((rcode(&r), r.answers.len()), (ResponseCode::NoError, 0));
    let r = q("127.0.2.3", RecordType::A);
    assert_eq!(rcode(&r), ResponseCode::Refused);
    assert_eq!(addrs(&q("127.0.2.4", RecordType::A)), vec!["192.0.2.250"]);
    assert_eq!(
        addrs(&q("127.0.2.4", RecordType::AAAA)),
        vec!["2001:db8::250"]
    );
    assert_eq!(addrs(&q("127.0.2.5", RecordType::A)), vec!["0.0.0.0"]);
    let any = q("127.0.2.5", RecordType::ANY);
    assert_eq!(addrs(&any), vec!["0.0.0.0", "::"]);
    assert_eq!(up.queries(), 0);
}

#[test]
fn cname_cloaking_is_blocked() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(
        &up,
        "[[groups]]\nname = \"default\"\ndeny = [\"||tracker.test^\"]\n\
         [[groups]]\nname = \"trusting\"\nclients = [\"127.0.0.3\"]\nallow = [\"cloak.fwd.test\"]\n\
         deny = [\"||tracker.test^\"]\n",
    );
    let r = ask(dg.addr, "cloak.fwd.test.", RecordType::A);
    assert_eq!(
        addrs(&r),
        vec!["0.0.0.0"],
        "the CNAME target is a blocked tracker"
    );
    assert_eq!(
        up.queries_for("cloak.fwd.test."),
        1,
        "it was resolved, then blocked"
    );
    // From the cache too.
    let r = ask(dg.addr, "cloak.fwd.test.", RecordType::A);
    assert_eq!(addrs(&r), vec!["0.0.0.0"]);
    // Explicitly allowing the first-party name lets it through.
    let r = ask_with(
        dg.addr,
        "cloak.fwd.test.",
        RecordType::A,
        &from("127.0.0.3"),
    );
    assert_eq!(addrs(&r), vec!["192.0.2.66"]);
}

#[test]
fn check_command_explains_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("my.txt");
    std::fs::write(
        &list,
        "# my list\n! comment\n0.0.0.0 tracker.example\n||ads.example^\n@@||good.ads.example^\n",
    )
    .unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[[lists]]\nname = \"mine\"\nsource = \"my.txt\"\n\
         [[groups]]\nname = \"agents\"\nclients = [\"10.0.0.0/8\"]\ndefault_deny = true\nallow = [\"github.com\"]\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let (ok, out, err) = run_cli(&["check", "x.ADS.example.", "--config", c]);
    assert!(ok, "{err}");
    assert!(
        out.contains("blocked") && out.contains("mine") && out.contains("line 4"),
        "{out}"
    );
    assert!(out.contains("||ads.example^"), "{out}");
    let (_, out, _) = run_cli(&["check", "good.ads.example", "--config", c]);
    assert!(out.contains("allowed") && out.contains("line 5"), "{out}");
    let (_, out, _) = run_cli(&["check", "tracker.example", "--config", c]);
    assert!(out.contains("blocked") && out.contains("line 3"), "{out}");
    let (_, out, _) = run_cli(&["check", "example.org", "--config", c]);
    assert!(out.contains("pass"), "{out}");
    let (_, out, _) = run_cli(&[
        "check",
        "example.org",
        "--client",
        "10.1.2.3",
        "--config",
        c,
    ]);
    assert!(
        out.contains("not-allowlisted") && out.contains("agents"),
        "{out}"
    );
    let (_, out, _) = run_cli(&[
        "check",
        "api.github.com",
        "--client",
        "10.1.2.3",
        "--config",
        c,
    ]);
    assert!(out.contains("allowed"), "{out}");
}

#[test]
fn reload_under_continuous_queries_loses_none() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let first = base_config(
        &up,
        "[[groups]]\nname = \"default\"\ndeny = [\"ads.fwd.test\"]\n",
    );
    let dg = Dnsguard::start(&first);
    let addr = dg.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, answered, failures) = (stop.clone(), answered.clone(), failures.clone());
            std::thread::spawn(move || {
                let opts = Ask {
                    timeout: Duration::from_secs(2),
                    ..Ask::default()
                };
                while !stop.load(Ordering::Relaxed) {
                    let m = common::client::query_message("www.fwd.test.", RecordType::A, &opts);
                    match common::client::try_exchange(addr, &m, &opts) {
                        Ok(r) if addrs(&r) == ["192.0.2.1"] => {
                            answered.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => failures.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    // Reload five times, alternating which name is denied, while queries flow.
    for round in 0..5 {
        let denied = if round % 2 == 0 {
            "other.fwd.test"
        } else {
            "ads.fwd.test"
        };
        let cfg = base_config(
            &up,
            &format!("[[groups]]\nname = \"default\"\ndeny = [\"{denied}\"]\n"),
        );
        std::fs::write(dg.config_path(), cfg).unwrap();
        dg.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = ask(addr, &format!("{denied}."), RecordType::A);
            if addrs(&r) == ["0.0.0.0"] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "reload {round} not applied:\n{}",
                dg.log()
            );
        }
    }
    // A broken config keeps the running one.
    std::fs::write(dg.config_path(), "[server\nbroken").unwrap();
    dg.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dg.log().contains("reload failed") {
        assert!(Instant::now() < deadline, "no reload error logged");
    }
    // The last good reload (round 4) denied other.fwd.test; it still does.
    assert_eq!(
        addrs(&ask(addr, "other.fwd.test.", RecordType::A)),
        vec!["0.0.0.0"]
    );
    assert_eq!(
        addrs(&ask(addr, "ads.fwd.test.", RecordType::A)),
        vec!["192.0.2.4"]
    );
    // Let traffic run across the reloads for a meaningful number of queries.
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.load(Ordering::Relaxed) < 300 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) >= 300);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "queries lost during reloads"
    );
}

#[test]
fn failed_downloads_keep_the_last_good_list() {
    let http = HttpServer::start(Response {
        etag: Some("\"v1\"".into()),
        ..Response::ok("# remote list\n||remote-ads.test^\nbad line with spaces\n")
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[lists]]\nname = \"remote\"\nsource = \"{}\"\n[list_updates]\nmax_bytes = 100000\ntimeout_secs = 5\n",
            http.url("/list.txt")
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let blocked = || {
        let (_, out, _) = run_cli(&["check", "x.remote-ads.test", "--config", c]);
        out.contains("blocked") && out.contains("remote")
    };
    // Before any download the list is missing: nothing blocked.
    assert!(!blocked());
    let (ok, out, _) = run_cli(&["lists", "update", "--config", c]);
    assert!(ok);
    assert!(out.contains("remote: New"), "{out}");
    assert!(
        out.contains("1 invalid"),
        "invalid lines are reported: {out}"
    );
    assert!(blocked());
    // Unchanged: a conditional request, answered 304.
    let (_, out, _) = run_cli(&["lists", "update", "--config", c]);
    assert!(out.contains("NotModified"), "{out}");
    assert_eq!(http.last_if_none_match().as_deref(), Some("\"v1\""));
    // An HTML page, an error, an oversized body, an empty list: each refused, old copy kept.
    let bad = [
        Response::ok("<!DOCTYPE html><html><body>captive portal</body></html>"),
        Response {
            status: 500,
            ..Response::ok("oops")
        },
        Response::ok(&"||big.test^\n".repeat(20_000)),
        Response {
            claimed_length: Some(2 << 30),
            ..Response::ok("||huge.test^\n")
        },
        Response::ok("# only comments\n\n"),
    ];
    for resp in bad {
        let shown = format!(
            "{} {:?}",
            resp.status,
            String::from_utf8_lossy(&resp.body[..resp.body.len().min(30)])
        );
        http.set(resp);
        let (ok, out, _) = run_cli(&["lists", "update", "--config", c]);
        assert!(ok);
        assert!(out.contains("kept the last good copy"), "{shown}: {out}");
        assert!(blocked(), "{shown}: the last good list still blocks");
    }
    let status =
        std::fs::read_to_string(dir.path().join("dnsguard-data/lists/remote.meta.json")).unwrap();
    assert!(status.contains("last_error"), "{status}");
}

#[test]
fn real_lists_load_with_invalid_counts_reported() {
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/blocklists");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let mut text = String::new();
    for (name, file) in [
        ("small", "small-140k.domains.txt"),
        ("stevenblack-hosts", "raw/hagezi/3p_stevenblack.domains.txt"),
        ("adguard-hosts", "raw/hagezi/3p_adguarddns.hosts.txt"),
        ("hagezi-adblock", "raw/hagezi/adblock_light.txt"),
        ("1hosts-adblock", "raw/1hosts/Pro_adblock.txt"),
    ] {
        text.push_str(&format!(
            "[[lists]]\nname = \"{name}\"\nsource = \"{shared}/{file}\"\n"
        ));
    }
    std::fs::write(&cfg, text).unwrap();
    let (ok, out, err) = run_cli(&["lists", "update", "--config", cfg.to_str().unwrap()]);
    assert!(ok, "{err}");
    println!("{out}");
    for line in out.lines().filter(|l| l.contains("loaded")) {
        let entries: usize = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(entries > 10_000, "{line}");
    }
    assert_eq!(
        out.lines().filter(|l| l.contains("loaded")).count(),
        5,
        "{out}"
    );
}

#[test]
fn bypass_canaries_and_builtin_exfil_lists() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(
        &up,
        "[[lists]]\nname = \"exfil\"\nsource = \"builtin:exfil\"\n\
         [[lists]]\nname = \"doh\"\nsource = \"builtin:doh-resolvers\"\ngroups = [\"agents\"]\n\
         [[groups]]\nname = \"agents\"\nclients = [\"127.0.0.4\"]\nallow = [\"||dns.google^\", \"||www.fwd.test^\"]\n\
         [[groups]]\nname = \"locked\"\nclients = [\"127.0.0.5\"]\ndefault_deny = true\n",
    );
    // Canaries: NXDOMAIN for everyone, even a default-deny group with null blocking.
    for client in ["127.0.0.1", "127.0.0.4", "127.0.0.5"] {
        for name in [
            "use-application-dns.net.",
            "mask.icloud.com.",
            "mask-h2.icloud.com.",
        ] {
            let r = ask_with(dg.addr, name, RecordType::A, &from(client));
            assert_eq!(rcode(&r), ResponseCode::NXDomain, "{client} {name}");
        }
    }
    // Every entry of the built-in exfiltration list blocks, for every group.
    let exfil = include_str!("../blocklists/exfil-endpoints.txt");
    let names: Vec<&str> = exfil
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(names.len() >= 20);
    for name in &names {
        let r = ask(dg.addr, &format!("c7f3a1.{name}."), RecordType::A);
        assert_eq!(addrs(&r), vec!["0.0.0.0"], "{name}");
    }
    // DoH resolver names: blocked for the agents group only; its own allow entry wins.
    let doh = include_str!("../blocklists/doh-resolvers.txt");
    for name in doh
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let r = ask_with(
            dg.addr,
            &format!("{name}."),
            RecordType::A,
            &from("127.0.0.4"),
        );
        let expect_blocked = name != "dns.google";
        assert_eq!(
            addrs(&r) == ["0.0.0.0"],
            expect_blocked,
            "{name}: {:?}",
            addrs(&r)
        );
    }
    assert_eq!(
        up.queries_for("dns.google."),
        1,
        "allowed for agents, resolved upstream"
    );
    assert_eq!(up.queries_for("cloudflare-dns.com."), 0);
}

#[test]
fn rebinding_protection_blocks_private_answers_for_public_names() {
    let zone = "\
rebind.fwd.test. 300 A 192.168.1.1
meta.fwd.test. 300 A 169.254.169.254
loop.fwd.test. 300 AAAA ::1
lan.plex.fwd.test. 300 A 10.0.0.5
www.fwd.test. 300 A 192.0.2.1
";
    let up = FakeUpstream::start(localhost(), zone);
    let dg = start(&up, "[rebinding]\nallow = [\"plex.fwd.test\"]\n");
    for (name, t) in [
        ("rebind.fwd.test.", RecordType::A),
        ("meta.fwd.test.", RecordType::A),
        ("loop.fwd.test.", RecordType::AAAA),
    ] {
        let r = ask(dg.addr, name, t);
        let a = addrs(&r);
        assert!(a == ["0.0.0.0"] || a == ["::"], "{name}: {a:?}");
    }
    // An allowed name keeps its private answer; public answers pass.
    assert_eq!(
        addrs(&ask(dg.addr, "lan.plex.fwd.test.", RecordType::A)),
        vec!["10.0.0.5"]
    );
    assert_eq!(
        addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        vec!["192.0.2.1"]
    );
    // The reason is in the query log.
    let cfg = dg.config_path();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out, _) = run_cli(&[
            "query-log",
            "--since",
            "1h",
            "--blocked",
            "--format",
            "json",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        if out.contains("rebinding: answer 169.254.169.254") {
            break;
        }
        assert!(Instant::now() < deadline, "no rebinding entry: {out}");
    }
}

/// `dnsguard check` runs the server's decision chain: for each name the CLI's
/// verdict and the running server's answer agree (canaries, special-use names,
/// local records, refused clients, lists, and with `--resolve` CNAME cloaking),
/// and without `--resolve` nothing reaches the upstream.
#[test]
fn check_says_what_the_server_answers() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = start(
        &up,
        "[local]\nrecords = [\"nas.lan A 192.168.1.10\"]\n\
         [[groups]]\nname = \"default\"\ndeny = [\"||tracker.test^\", \"||ads.fwd.test^\"]\n",
    );
    let c = dg.config_path();
    let c = c.to_str().unwrap();
    let check = |args: &[&str]| {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", c]);
        let (ok, out, err) = run_cli(&all);
        assert!(ok, "{all:?}: {err}");
        out
    };
    // (name, type, what check says, what the server answers)
    let cases = [
        (
            "use-application-dns.net",
            "A",
            "NXDOMAIN",
            ResponseCode::NXDomain,
            None,
        ),
        (
            "localhost",
            "A",
            "answered locally, NOERROR: 127.0.0.1",
            ResponseCode::NoError,
            Some("127.0.0.1"),
        ),
        (
            "x.invalid",
            "A",
            "answered locally, NXDOMAIN",
            ResponseCode::NXDomain,
            None,
        ),
        (
            "5.1.168.192.in-addr.arpa",
            "PTR",
            "answered locally, NXDOMAIN",
            ResponseCode::NXDomain,
            None,
        ),
        (
            "nas.lan",
            "A",
            "answered locally, NOERROR: 192.168.1.10",
            ResponseCode::NoError,
            Some("192.168.1.10"),
        ),
        (
            "ads.fwd.test",
            "A",
            "blocked",
            ResponseCode::NoError,
            Some("0.0.0.0"),
        ),
    ];
    for (name, qtype, says, rc, addr) in cases {
        let out = check(&[name, "--type", qtype]);
        assert!(out.contains(says), "check {name}: {out}");
        let r = ask(dg.addr, &format!("{name}."), qtype.parse().unwrap());
        assert_eq!(rcode(&r), rc, "server {name}");
        if let Some(a) = addr {
            assert_eq!(addrs(&r), vec![a], "server {name}");
        }
    }
    up.reset_counters();
    // The name alone passes, and check says it looked at the name only.
    let out = check(&["cloak.fwd.test"]);
    assert!(out.contains("pass") && out.contains("--resolve"), "{out}");
    assert_eq!(up.queries(), 0, "check without --resolve sent a query");
    // With --resolve it follows the CNAME to the blocked tracker, as the server does.
    let out = check(&["cloak.fwd.test", "--resolve"]);
    assert!(
        out.contains("blocked through its CNAME target collect.tracker.test")
            && out.contains("||tracker.test^"),
        "{out}"
    );
    assert_eq!(up.queries_for("cloak.fwd.test."), 1);
    let r = ask(dg.addr, "cloak.fwd.test.", RecordType::A);
    assert_eq!(addrs(&r), vec!["0.0.0.0"]);
    let out = check(&["www.fwd.test", "--resolve"]);
    assert!(
        out.contains("resolved") && out.contains("192.0.2.1"),
        "{out}"
    );
    // A client outside allow_clients is refused, by both.
    let out = check(&["www.fwd.test", "--client", "203.0.113.9"]);
    assert!(out.contains("REFUSED"), "{out}");
}
