//! The dashboard in a real browser: headless Chromium through chromedriver.
//! Set a password, send real DNS queries, log in through the form, read the
//! overview's counts and chart, filter the query log, allow a blocked name from
//! the UI and see the next DNS query answered; the alerts page keeps reason
//! texts behind a toggle, the groups page shows the lists a group gets without
//! naming it; a `[[clients]]` name is one top client whose click filters the log,
//! and the alerts page shows it. Screenshots (light, dark, phone)
//! go to `<target>/dashboard-screenshots/`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run`
//! installs them); without them the test fails and says so.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::client::{addrs, ask};
use common::dash::{self, PASSWORD};
use common::http::request;
use common::server::Dnsguard;
use common::upstream::FakeUpstream;
use common::webdriver::Driver;
use hickory_proto::rr::RecordType;

const ZONE: &str = "\
www.fwd.test. 300 A 192.0.2.1
api.fwd.test. 300 A 192.0.2.2
x.ads.fwd.test. 300 A 192.0.2.9
";

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn save(d: &mut Driver, name: &str) {
    let path = screenshot_dir().join(name);
    std::fs::write(&path, d.screenshot()).unwrap();
    println!("screenshot: {}", path.display());
}

/// Text of the element `css` once it equals `want`.
fn wait_text(d: &mut Driver, css: &str, want: &str) {
    d.wait_for(&format!("{css} = {want:?}"), |d| {
        (d.text_of(css)?.trim() == want).then_some(())
    });
}

#[test]
fn log_in_read_the_overview_filter_the_log_and_allow_a_name() {
    let localhost: IpAddr = "127.0.0.1".parse().unwrap();
    let up = FakeUpstream::start(localhost, ZONE);
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [[groups]]\nname = \"default\"\ndeny = [\"||ads.fwd.test^\"]\n\
         [[lists]]\nname = \"doh\"\nsource = \"builtin:doh-resolvers\"\ngroups = []\n\
         [[groups]]\nname = \"agents\"\nclients = [\"127.0.0.9\"]\nmode = \"enforce\"\n",
        up.addr()
    ));
    dash::set_password(&dg, PASSWORD);
    let base = dash::base(&dg);

    // 5 permitted, 2 blocked.
    for _ in 0..3 {
        assert_eq!(
            addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
            ["192.0.2.1"]
        );
    }
    for _ in 0..2 {
        assert_eq!(
            addrs(&ask(dg.addr, "api.fwd.test.", RecordType::A)),
            ["192.0.2.2"]
        );
        assert_eq!(
            addrs(&ask(dg.addr, "x.ads.fwd.test.", RecordType::A)),
            ["0.0.0.0"]
        );
    }
    let auth = format!("Bearer {}", dash::token(&dg));
    let deadline = Instant::now() + Duration::from_secs(10);
    while request(
        "GET",
        &base,
        "/api/v1/stats?since=1h",
        &[("Authorization", &auth)],
        None,
    )
    .json()["total"]
        != 7
    {
        assert!(Instant::now() < deadline, "queries not logged");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut d = Driver::start();
    d.window(1280, 1000);

    // Any page sends us to the login form; log in through it.
    d.goto(&format!("{base}/"));
    d.wait_for("redirect to /login", |d| {
        d.url().ends_with("/login").then_some(())
    });
    save(&mut d, "login.png");
    let pw = d.find("#password");
    d.type_text(&pw, PASSWORD);
    let btn = d.find("#login-btn");
    d.click(&btn);

    // The overview: counts and the chart from those queries.
    wait_text(&mut d, "#stat-total", "7");
    wait_text(&mut d, "#stat-blocked", "2");
    wait_text(&mut d, "#stat-share", "28.6%");
    wait_text(&mut d, "#stat-limited", "0");
    let chart = d.js(
        "const s = document.getElementById('chart'); \
         return [s.dataset.total, s.dataset.blocked, s.querySelectorAll('rect.bar-blocked').length, \
                 s.querySelectorAll('rect.bar-allowed').length];",
    );
    assert_eq!(chart[0], "7", "{chart}");
    assert_eq!(chart[1], "2", "{chart}");
    assert!(
        chart[2].as_u64() >= Some(1) && chart[3].as_u64() >= Some(1),
        "{chart}"
    );
    save(&mut d, "overview.png");
    // The top lists (hourly aggregates, persisted within about a second).
    d.wait_for("top blocked", |d| {
        d.js("document.querySelector('#period button.on').click()");
        d.text_of("#top-blocked li")?
            .contains("x.ads.fwd.test")
            .then_some(())
    });
    save(&mut d, "overview.png");

    // Dark mode by the toggle.
    let toggle = d.find("#theme-toggle");
    d.click(&toggle);
    d.wait_for("dark theme", |d| {
        (d.js("return document.documentElement.dataset.theme") == "dark").then_some(())
    });
    wait_text(&mut d, "#stat-total", "7");
    save(&mut d, "overview-dark.png");

    // Readable on a phone.
    d.window(390, 844);
    d.wait_for("narrow layout", |d| {
        (d.js("return document.documentElement.clientWidth").as_u64() <= Some(400)).then_some(())
    });
    d.wait_for("chart redrawn to the phone's width", |d| {
        let w = d.js("return Number(document.getElementById('chart').dataset.width)");
        (w.as_f64().is_some_and(|w| w > 200.0 && w < 400.0)).then_some(())
    });
    let overflow =
        d.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth");
    assert!(
        overflow.as_i64() <= Some(0),
        "page scrolls sideways on a phone: {overflow}"
    );
    save(&mut d, "overview-phone.png");
    d.window(1280, 1000);

    // The query log, filtered like `query-log --domain ads --blocked`.
    d.goto(&format!("{base}/#/log"));
    d.wait_for("log rows", |d| {
        (d.find_all("#log-table tbody tr").len() == 7).then_some(())
    });
    let domain = d.find("#log-domain");
    d.type_text(&domain, "ads");
    d.js("document.getElementById('log-verdict').value = 'blocked'");
    let apply = d.find("#log-apply");
    d.click(&apply);
    d.wait_for("filtered rows", |d| {
        (d.find_all("#log-table tbody tr").len() == 2).then_some(())
    });
    let names = d.js("return [...document.querySelectorAll('#log-table tbody button.qname')].map(b => b.dataset.name)");
    assert_eq!(
        names,
        serde_json::json!(["x.ads.fwd.test", "x.ads.fwd.test"])
    );
    save(&mut d, "querylog.png");

    // Click the name, allow it for the default group.
    let name = d.find("#log-table tbody button.qname");
    d.click(&name);
    d.wait_for("popover", |d| {
        (d.js("return !document.getElementById('rule-pop').hidden") == true).then_some(())
    });
    let group = d.js("return document.getElementById('rule-group').value");
    assert_eq!(group, "default");
    let allow = d.find("#rule-allow");
    d.click(&allow);
    d.wait_for("confirmation", |d| {
        let t = d
            .js("const t = document.getElementById('toast'); return t.hidden ? '' : t.textContent");
        t.as_str()
            .is_some_and(|t| t.contains("Allowed x.ads.fwd.test"))
            .then_some(())
    });

    // The next DNS query for it is answered.
    assert_eq!(
        addrs(&ask(dg.addr, "x.ads.fwd.test.", RecordType::A)),
        ["192.0.2.9"]
    );
    let text = std::fs::read_to_string(dg.config_path()).unwrap();
    assert!(text.contains("allow = [\"x.ads.fwd.test\"]"), "{text}");

    // A tunnel-shaped query shows on the alerts page with its reasons.
    let _ = ask(
        dg.addr,
        "mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpjqwe.gezdgnbvgy3tqojqgezdgnbvgy3tqojq.t.fwd.test.",
        RecordType::TXT,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while request(
        "GET",
        &base,
        "/api/v1/stats?since=1h",
        &[("Authorization", &auth)],
        None,
    )
    .json()["flagged"]
        != 1
    {
        assert!(Instant::now() < deadline, "flag not logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.goto(&format!("{base}/#/alerts"));
    wait_text(&mut d, "#alerts-total", "1");
    d.wait_for("alert row", |d| {
        d.text_of("#alerts-domains .alert-row")?
            .contains("fwd.test")
            .then_some(())
    });
    // The review card (from /api/v1/report) and the egress alert for the flag.
    d.wait_for("review card", |d| {
        d.text_of("#alerts-review")?
            .contains("127.0.0.1")
            .then_some(())
    });
    d.wait_for("egress alert", |d| {
        d.text_of("#alerts-egress")?
            .contains("tunnel")
            .then_some(())
    });
    // The long reason text is behind a toggle, its kinds of evidence in view.
    let row = d.text_of("#alerts-recent tr").unwrap_or_default();
    assert!(
        row.contains("encoded label") && !row.contains("bits of payload evidence"),
        "{row}"
    );
    // The flag's confidence level is shown as a badge (issue #23).
    assert!(
        !d.find_all("#alerts-recent .badge.level-high, #alerts-recent .badge.level-medium")
            .is_empty(),
        "{row}"
    );
    let toggle = d.find("#alerts-recent td.rule details.reason summary");
    d.click(&toggle);
    d.wait_for("the reason text opened", |d| {
        d.text_of("#alerts-recent tr")?
            .contains("bits of payload evidence")
            .then_some(())
    });
    save(&mut d, "alerts.png");

    // Other pages render with data.
    d.goto(&format!("{base}/#/groups"));
    d.wait_for("group card", |d| {
        d.find_all("[data-group=default] .chip.allow")
            .into_iter()
            .next()
    });
    let implicit = d.text_of("[data-group=agents] .implicit-list");
    assert_eq!(
        implicit.as_deref(),
        Some("doh (allowlist-only groups)"),
        "the DoH list applies to the allowlist-only group without naming it"
    );
    assert!(
        d.find_all("[data-group=default] .implicit-list").is_empty(),
        "not to other groups"
    );
    save(&mut d, "groups.png");
    d.goto(&format!("{base}/#/check"));
    let n = d.find("#check-name");
    d.type_text(&n, "y.ads.fwd.test\n");
    wait_text(&mut d, "#check-verdict", "Blocked");
    let verdict = d.text_of("#check-result").unwrap_or_default();
    assert!(
        verdict.contains("||ads.fwd.test^") && !verdict.contains("null"),
        "{verdict}"
    );
    save(&mut d, "check.png");
    d.goto(&format!("{base}/#/settings"));
    d.wait_for("settings", |d| {
        (d.js("return document.getElementById('set-upstreams').value") != "").then_some(())
    });
    save(&mut d, "settings.png");
    d.goto(&format!("{base}/#/lists"));
    d.find("[data-list=doh]");
    save(&mut d, "lists.png");
}

/// Logs in through the form; the overview is shown after.
fn log_in(d: &mut Driver, base: &str) {
    d.goto(&format!("{base}/"));
    d.wait_for("redirect to /login", |d| {
        d.url().ends_with("/login").then_some(())
    });
    let pw = d.find("#password");
    d.type_text(&pw, PASSWORD);
    let btn = d.find("#login-btn");
    d.click(&btn);
}

#[test]
fn a_named_client_is_one_top_client_its_log_filter_and_named_in_alerts() {
    let up = FakeUpstream::start("127.0.0.1".parse().unwrap(), ZONE);
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [[clients]]\nname = \"agent-3\"\naddresses = [\"127.0.0.2/32\", \"127.0.0.3/32\"]\n",
        up.addr()
    ));
    dash::set_password(&dg, PASSWORD);
    let base = dash::base(&dg);
    // agent-3 from two addresses (the last a tunnel-shaped name, flagged), and
    // an unnamed client once.
    let tunnel =
        "mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpjqwe.gezdgnbvgy3tqojqgezdgnbvgy3tqojq.t.fwd.test";
    for (from, name, qtype) in [
        ("127.0.0.2", "www.fwd.test", "A"),
        ("127.0.0.3", "api.fwd.test", "A"),
        ("127.0.0.1", "www.fwd.test", "A"),
        ("127.0.0.3", tunnel, "TXT"),
    ] {
        let out = common::client::dig(dg.addr, &["-b", from, "-t", qtype, name]);
        assert!(out.contains("status: "), "{from} {name}: {out}");
    }
    let auth = format!("Bearer {}", dash::token(&dg));
    let deadline = Instant::now() + Duration::from_secs(10);
    while request(
        "GET",
        &base,
        "/api/v1/stats?since=1h",
        &[("Authorization", &auth)],
        None,
    )
    .json()["flagged"]
        != 1
    {
        assert!(Instant::now() < deadline, "queries not logged");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut d = Driver::start();
    d.window(1280, 1000);
    log_in(&mut d, &base);
    // The overview's top clients: agent-3 once, with its three queries.
    let top = d.wait_for("agent-3 among the top clients", |d| {
        d.js("document.querySelector('#period button.on').click()");
        let top = d.js(
            "return [...document.querySelectorAll('#top-clients li')].map(li => \
             [li.querySelector('.k')?.textContent, li.querySelector('.n')?.textContent])",
        );
        top.to_string().contains("agent-3").then_some(top)
    });
    assert_eq!(
        top,
        serde_json::json!([["agent-3", "3"], ["127.0.0.1", "1"]]),
        "{top}"
    );
    // Clicking it filters the query log by the name: its queries from both addresses.
    let agent = d.find("#top-clients button.qname[title='agent-3']");
    d.click(&agent);
    let rows = d.wait_for("agent-3's rows in the log", |d| {
        let rows = d.js(
            "return [...document.querySelectorAll('#log-table tbody tr')].map(tr => \
             [tr.cells[1].textContent, tr.cells[1].title])",
        );
        (rows.as_array()?.len() == 3).then_some(rows)
    });
    assert_eq!(
        d.js("return document.getElementById('log-client').value"),
        "agent-3"
    );
    assert_eq!(
        rows,
        serde_json::json!([
            ["agent-3", "127.0.0.3"],
            ["agent-3", "127.0.0.3"],
            ["agent-3", "127.0.0.2"]
        ]),
        "{rows}"
    );
    save(&mut d, "querylog-client-name.png");

    // The alerts page names it: tunnel flags per client, the latest flags and the
    // egress alert raised for the flag (the address in the cell's tooltip).
    d.goto(&format!("{base}/#/alerts"));
    wait_text(&mut d, "#alerts-total", "1");
    d.wait_for("the flag per client", |d| {
        d.text_of("#alerts-clients .alert-row b")?
            .starts_with("agent-3")
            .then_some(())
    });
    let recent = d.js(
        "const c = document.querySelector('#alerts-recent tr').cells[1]; return [c.textContent, c.title]",
    );
    assert_eq!(recent, serde_json::json!(["agent-3", "127.0.0.3"]));
    let egress = d.wait_for("the egress alert", |d| {
        let cells = d.js("const r = document.querySelector('#alerts-egress tr'); \
             return r ? [r.cells[1].textContent, r.cells[3].textContent, r.cells[3].title] : null");
        (!cells.is_null()).then_some(cells)
    });
    assert_eq!(
        egress,
        serde_json::json!(["tunnel", "agent-3", "127.0.0.3"]),
        "{egress}"
    );
    save(&mut d, "alerts-client-name.png");
}
