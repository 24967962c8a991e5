//! The dashboard's HTTP API against the real binary over real sockets: auth on
//! every route but login/health, CSRF on state changes, login rate limit, each
//! endpoint's happy path and bad input, and changes applied to DNS answers live.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::client::{addrs, ask, rcode};
use common::dash::{self, PASSWORD};
use common::http::request;
use common::server::Dnsguard;
use common::upstream::FakeUpstream;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const ZONE: &str = "\
www.fwd.test. 300 A 192.0.2.1
x.ads.fwd.test. 300 A 192.0.2.9
y.ads.fwd.test. 300 A 192.0.2.10
listed.fwd.test. 300 A 192.0.2.11
";

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn config(up: &FakeUpstream, web: &str) -> String {
    format!(
        "# operator comment: keep me\n[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [[groups]]\n# the default group\nname = \"default\"\ndeny = [\"||ads.fwd.test^\"]\n{web}",
        up.addr()
    )
}

fn start(up: &FakeUpstream) -> (Dnsguard, String) {
    let dg = Dnsguard::start(&config(
        up,
        "[web]\nlisten = \"127.0.0.1:0\"\nmetrics_token = \"scrape-me-please\"\n",
    ));
    let base = dash::base(&dg);
    (dg, base)
}

/// Polls the stats API until `n` queries are logged (the writer commits every 100 ms).
fn wait_logged(base: &str, token: &str, n: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let auth = format!("Bearer {token}");
        let s = request(
            "GET",
            base,
            "/api/v1/stats?since=1h",
            &[("Authorization", &auth)],
            None,
        )
        .json();
        if s["total"].as_u64() >= Some(n) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const PROTECTED_GETS: &[&str] = &[
    "/",
    "/index.html",
    "/assets/app.js",
    "/api/v1/querylog?since=1h",
    "/api/v1/querylog/follow",
    "/api/v1/stats",
    "/api/v1/timeseries",
    "/api/v1/alerts",
    "/api/v1/alerts/recent",
    "/api/v1/allowlist/learn?group=default&since=1h",
    "/api/v1/report?since=1h",
    "/api/v1/check?name=www.fwd.test",
    "/api/v1/lists",
    "/api/v1/groups",
    "/api/v1/settings",
    "/api/v1/session",
    "/metrics",
];

#[test]
fn auth_is_required_everywhere_but_login_and_health() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let (dg, base) = start(&up);
    let token = dash::token(&dg);

    // Public: health, the login page and its assets.
    for path in [
        "/api/v1/health",
        "/login",
        "/assets/style.css",
        "/assets/login.js",
    ] {
        let r = request("GET", &base, path, &[], None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    // No password yet: the login page says how to set one and has no usable form.
    let login = request("GET", &base, "/login", &[], None);
    // The exact command for this server: its own config file.
    let command = format!(
        "dnsguard set-password --config {}",
        dg.config_path().display()
    );
    assert!(login.body.contains(&command), "{}", login.body);
    assert!(
        login
            .body
            .contains("<form id=\"login-form\" method=\"post\" action=\"/login\" hidden>")
    );
    assert_eq!(dash::post_login(&base, "anything at all").status, 401);

    // Everything else: pages redirect to the login page, the API answers 401.
    for path in PROTECTED_GETS {
        let r = request("GET", &base, path, &[], None);
        if path.starts_with("/api/") || *path == "/metrics" {
            assert_eq!(r.status, 401, "{path} without auth: {}", r.body);
        } else {
            assert_eq!(r.status, 303, "{path} without auth");
            assert_eq!(r.header("location"), Some("/login"));
        }
        let wrong = request(
            "GET",
            &base,
            path,
            &[("Authorization", "Bearer nope")],
            None,
        );
        assert!(
            matches!(wrong.status, 303 | 401),
            "{path} with a wrong token"
        );
        let bad_cookie = request(
            "GET",
            &base,
            path,
            &[("Cookie", "dnsguard_session=forged")],
            None,
        );
        assert!(
            matches!(bad_cookie.status, 303 | 401),
            "{path} with a forged session"
        );
    }
    for (method, path) in [
        ("POST", "/api/v1/groups/default/rules"),
        ("PUT", "/api/v1/groups/x"),
        ("DELETE", "/api/v1/lists/x"),
        ("POST", "/api/v1/lists/update"),
        ("PUT", "/api/v1/settings"),
    ] {
        assert_eq!(
            request(method, &base, path, &[], Some("{}")).status,
            401,
            "{method} {path}"
        );
    }

    // The API token opens every route (the CLI's way in).
    let auth = format!("Bearer {token}");
    for path in PROTECTED_GETS {
        let r = request("GET", &base, path, &[("Authorization", &auth)], None);
        assert_eq!(r.status, 200, "{path} with the token: {}", r.body);
    }

    // Security headers on pages, API replies and errors alike.
    for path in ["/login", "/api/v1/health", "/api/v1/stats", "/"] {
        let r = request("GET", &base, path, &[], None);
        let csp = r.header("content-security-policy").unwrap_or("");
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
    }
    // No inline script in the pages (CSP forbids it anyway).
    let index = request("GET", &base, "/", &[("Authorization", &auth)], None).body;
    assert!(!index.contains("<script>") && index.contains("src=\"/assets/app.js\""));

    // /metrics with its own token, with the DNS counters.
    assert_eq!(
        addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        ["192.0.2.1"]
    );
    assert_eq!(
        addrs(&ask(dg.addr, "x.ads.fwd.test.", RecordType::A)),
        ["0.0.0.0"]
    );
    let m = request(
        "GET",
        &base,
        "/metrics",
        &[("Authorization", "Bearer scrape-me-please")],
        None,
    );
    assert_eq!(m.status, 200);
    for needle in [
        "dnsguard_queries_total{verdict=\"blocked\",type=\"A\"} 1",
        "dnsguard_queries_total{verdict=\"allowed\",type=\"A\"} 1",
        "dnsguard_query_duration_seconds_bucket",
        "dnsguard_cache_misses_total",
        "dnsguard_upstream_duration_seconds_bucket",
        "dnsguard_querylog_dropped",
    ] {
        assert!(
            m.body.contains(needle),
            "{needle} missing from:\n{}",
            m.body
        );
    }
}

#[test]
fn login_sessions_csrf_and_rate_limit() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let (dg, base) = start(&up);
    dash::set_password(&dg, PASSWORD);
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dash::data_dir(&dg).join("web-password"))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(mode & 0o777, 0o600);
    let stored = std::fs::read_to_string(dash::data_dir(&dg).join("web-password")).unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains(PASSWORD));

    assert_eq!(dash::post_login(&base, "wrong password").status, 401);
    let ok = dash::post_login(&base, PASSWORD);
    assert_eq!(ok.status, 303);
    let cookie = ok.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP by default: {cookie}"
    );

    let s = dash::login(&base, PASSWORD);
    assert_eq!(
        request("GET", &base, "/", &[("Cookie", &s.cookie)], None).status,
        200
    );
    assert_eq!(
        request(
            "GET",
            &base,
            "/api/v1/groups",
            &[("Cookie", &s.cookie)],
            None
        )
        .status,
        200
    );

    // A state change with the session but without (or with a wrong) CSRF token: 403.
    let body = r#"{"action":"allow","entry":"www.fwd.test"}"#;
    let json = ("Content-Type", "application/json");
    for headers in [
        vec![("Cookie", s.cookie.as_str()), json],
        vec![
            ("Cookie", s.cookie.as_str()),
            ("X-CSRF-Token", "0000"),
            json,
        ],
    ] {
        let r = request(
            "POST",
            &base,
            "/api/v1/groups/default/rules",
            &headers,
            Some(body),
        );
        assert_eq!(r.status, 403, "{}", r.body);
    }
    let r = request(
        "DELETE",
        &base,
        "/api/v1/lists/none",
        &[("Cookie", &s.cookie)],
        None,
    );
    assert_eq!(r.status, 403);
    // Another session's token does not work either.
    let other = dash::login(&base, PASSWORD);
    let r = request(
        "POST",
        &base,
        "/api/v1/groups/default/rules",
        &[("Cookie", &s.cookie), ("X-CSRF-Token", &other.csrf), json],
        Some(body),
    );
    assert_eq!(r.status, 403);
    // With the token: accepted.
    let r = s.call(&base, "POST", "/api/v1/groups/default/rules", Some(body));
    assert_eq!(r.status, 200, "{}", r.body);
    // The API token needs no CSRF token.
    let auth = format!("Bearer {}", dash::token(&dg));
    let r = request(
        "DELETE",
        &base,
        "/api/v1/groups/default/rules",
        &[("Authorization", &auth), json],
        Some(body),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Logout ends the session.
    assert_eq!(s.call(&base, "POST", "/api/v1/logout", None).status, 204);
    assert_eq!(
        request(
            "GET",
            &base,
            "/api/v1/groups",
            &[("Cookie", &s.cookie)],
            None
        )
        .status,
        401
    );

    // A login posted from another origin is refused.
    let r = request(
        "POST",
        &base,
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", "http://evil.example"),
        ],
        Some("password=x"),
    );
    assert_eq!(r.status, 403);

    // Guessing is rate limited per address: the bucket (5) is spent by now or soon.
    let statuses: Vec<u16> = (0..8)
        .map(|_| dash::post_login(&base, "guess guess").status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        dash::post_login(&base, PASSWORD).status,
        429,
        "the right password waits too"
    );
}

/// `dnsguard set-password` on a running server ends every session logged in
/// with the old password at once; the new password logs in.
#[test]
fn a_new_password_ends_existing_sessions() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let (dg, base) = start(&up);
    dash::set_password(&dg, PASSWORD);
    let old = dash::login(&base, PASSWORD);
    let get = |path: &str, cookie: &str| request("GET", &base, path, &[("Cookie", cookie)], None);
    assert_eq!(get("/api/v1/groups", &old.cookie).status, 200);

    dash::set_password(&dg, "a brand new password");
    assert_eq!(get("/api/v1/groups", &old.cookie).status, 401);
    let page = get("/", &old.cookie);
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/login"));
    assert_eq!(get("/api/v1/session", &old.cookie).status, 401);
    let r = old.call(&base, "POST", "/api/v1/lists/update", None);
    assert_eq!(r.status, 401, "{}", r.body);

    assert_eq!(dash::post_login(&base, PASSWORD).status, 401);
    let new = dash::login(&base, "a brand new password");
    assert_eq!(get("/api/v1/groups", &new.cookie).status, 200);
    assert_eq!(
        get("/api/v1/groups", &old.cookie).status,
        401,
        "still ended"
    );
}

#[test]
fn changes_are_validated_applied_live_and_persisted() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let (dg, base) = start(&up);
    dash::set_password(&dg, PASSWORD);
    let s = dash::login(&base, PASSWORD);
    let cfg_path = dg.config_path();

    // Blocked now; allowed for the default group through the API; answered next time.
    assert_eq!(
        addrs(&ask(dg.addr, "x.ads.fwd.test.", RecordType::A)),
        ["0.0.0.0"]
    );
    let r = s.call(
        &base,
        "POST",
        "/api/v1/groups/default/rules",
        Some(r#"{"action":"allow","entry":"x.ads.fwd.test"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        addrs(&ask(dg.addr, "x.ads.fwd.test.", RecordType::A)),
        ["192.0.2.9"]
    );
    assert_eq!(
        addrs(&ask(dg.addr, "y.ads.fwd.test.", RecordType::A)),
        ["0.0.0.0"]
    );
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(
        text.contains("# operator comment: keep me") && text.contains("# the default group"),
        "{text}"
    );
    assert!(text.contains("x.ads.fwd.test"), "{text}");
    let leftovers: Vec<_> = std::fs::read_dir(dg.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    // Bad input: 400 with the config error; nothing changes.
    let before = std::fs::read_to_string(&cfg_path).unwrap();
    let r = s.call(
        &base,
        "PUT",
        "/api/v1/groups/lab",
        Some(r#"{"clients":["10.0.0.0/33"]}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("bad client \"10.0.0.0/33\""),
        "{}",
        r.body
    );
    let r = s.call(
        &base,
        "PUT",
        "/api/v1/groups/lab",
        Some(r#"{"block_mode":"sometimes"}"#),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    let r = s.call(
        &base,
        "POST",
        "/api/v1/groups/default/rules",
        Some(r#"{"action":"allow","entry":"/[/"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = s.call(
        &base,
        "PUT",
        "/api/v1/settings",
        Some(r#"{"upstreams":["not an upstream"]}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(std::fs::read_to_string(&cfg_path).unwrap(), before);
    assert_eq!(
        s.call(&base, "DELETE", "/api/v1/lists/nope", None).status,
        404
    );
    assert_eq!(
        s.call(&base, "DELETE", "/api/v1/groups/nope", None).status,
        404
    );

    // A good group: created, listed, and its clients get its policy.
    let r = s.call(
        &base,
        "PUT",
        "/api/v1/groups/lab",
        Some(r#"{"clients":["10.9.0.0/16"],"default_deny":true,"block_mode":"nxdomain"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let groups = s.call(&base, "GET", "/api/v1/groups", None).json();
    let lab = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "lab")
        .unwrap();
    assert_eq!(lab["default_deny"], true);
    assert_eq!(lab["clients"][0], "10.9.0.0/16");
    let check = s
        .call(
            &base,
            "GET",
            "/api/v1/check?name=www.fwd.test&client=10.9.1.1",
            None,
        )
        .json();
    assert_eq!(check["action"], "not-allowlisted", "{check}");
    assert_eq!(check["group"], "lab");
    assert_eq!(
        s.call(&base, "GET", "/api/v1/check?name=bad..name", None)
            .status,
        400
    );
    assert_eq!(
        s.call(&base, "GET", "/api/v1/check?name=a.test&client=nope", None)
            .status,
        400
    );
    assert_eq!(
        s.call(&base, "DELETE", "/api/v1/groups/lab", None).status,
        200
    );

    // Lists: add a file list (from DATA_DIR/lists), see its counts, it blocks, remove it.
    let list_file = dash::data_dir(&dg).join("lists/mine.txt");
    std::fs::create_dir_all(list_file.parent().unwrap()).unwrap();
    std::fs::write(&list_file, "listed.fwd.test\nnot a domain!\n").unwrap();
    let body = serde_json::json!({"name": "mine", "source": list_file}).to_string();
    let r = s.call(&base, "POST", "/api/v1/lists", Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.call(&base, "POST", "/api/v1/lists", Some(&body)).status,
        409
    );
    let lists = s.call(&base, "GET", "/api/v1/lists", None).json();
    let mine = &lists[0];
    assert_eq!(
        (
            mine["name"].as_str(),
            mine["entries"].as_u64(),
            mine["invalid"].as_u64()
        ),
        (Some("mine"), Some(1), Some(1)),
        "{lists}"
    );
    assert_eq!(
        addrs(&ask(dg.addr, "listed.fwd.test.", RecordType::A)),
        ["0.0.0.0"]
    );
    let r = s.call(&base, "POST", "/api/v1/lists/update", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["mine"], "Local");
    // A list file edited on disk is read again by "update now".
    std::fs::write(&list_file, "listed.fwd.test\nsecond.fwd.test\n").unwrap();
    let r = s.call(&base, "POST", "/api/v1/lists/update", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        addrs(&ask(dg.addr, "second.fwd.test.", RecordType::A)),
        ["0.0.0.0"]
    );
    assert_eq!(
        s.call(&base, "POST", "/api/v1/lists/update?name=nope", None)
            .status,
        404
    );
    let r = s.call(
        &base,
        "POST",
        "/api/v1/lists",
        Some(r#"{"name":"b","source":"builtin:nope"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        s.call(&base, "DELETE", "/api/v1/lists/mine", None).status,
        200
    );
    assert_eq!(
        addrs(&ask(dg.addr, "listed.fwd.test.", RecordType::A)),
        ["192.0.2.11"]
    );
    // Nothing that can have changed (no URL or file list): "update now" does not
    // compile the filter again (seconds of CPU and a memory peak on a Pi).
    let compiles = || dg.log().matches("filter compiled").count();
    let before = compiles();
    assert!(before >= 1, "the server logs its compilations");
    let r = s.call(&base, "POST", "/api/v1/lists/update", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(compiles(), before);

    // Settings: block mode applies now; upstreams are saved for the next start.
    let r = s.call(
        &base,
        "PUT",
        "/api/v1/settings",
        Some(r#"{"block_mode":"nxdomain","retention_days":7}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["restart_required"],
        serde_json::json!(["query_log.retention_days"])
    );
    assert_eq!(
        rcode(&ask(dg.addr, "y.ads.fwd.test.", RecordType::A)),
        ResponseCode::NXDomain
    );
    let set = s.call(&base, "GET", "/api/v1/settings", None).json();
    assert_eq!(
        (set["block_mode"].as_str(), set["retention_days"].as_u64()),
        (Some("nxdomain"), Some(7))
    );
    let up2 = format!("[\"{}\", \"tls://9.9.9.9#dns.quad9.net\"]", up.addr());
    let r = s.call(
        &base,
        "PUT",
        "/api/v1/settings",
        Some(&format!("{{\"upstreams\":{up2}}}")),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["restart_required"],
        serde_json::json!(["resolver.upstreams"])
    );
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(
        text.contains("dns.quad9.net") && text.contains("# operator comment: keep me"),
        "{text}"
    );
    assert_eq!(
        addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        ["192.0.2.1"],
        "still running"
    );

    // A tunnel-shaped name (base32 payload labels) for the alerts.
    let _ = ask(
        dg.addr,
        "mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpjqwe.gezdgnbvgy3tqojqgezdgnbvgy3tqojq.t.fwd.test.",
        RecordType::TXT,
    );

    // SIGHUP reloads the same file the dashboard wrote.
    dg.signal(libc::SIGHUP);

    // Query log, time series and alerts agree with the queries sent.
    let token = dash::token(&dg);
    let stats = wait_logged(&base, &token, 9);
    assert_eq!(stats["flagged"], 1, "{stats}");
    let series = s
        .call(&base, "GET", "/api/v1/timeseries?since=1h&bucket=5", None)
        .json();
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 12 + usize::from(points.len() == 13));
    let sum = |k: &str| points.iter().map(|p| p[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("total"), stats["total"].as_u64().unwrap());
    assert_eq!(sum("blocked"), stats["blocked"].as_u64().unwrap());
    assert_eq!(
        s.call(&base, "GET", "/api/v1/timeseries?since=30d&bucket=1", None)
            .status,
        400
    );
    assert_eq!(
        s.call(&base, "GET", "/api/v1/timeseries?since=never", None)
            .status,
        400
    );
    let log = s.call(
        &base,
        "GET",
        "/api/v1/querylog?since=1h&blocked=true&format=json",
        None,
    );
    assert_eq!(log.status, 200);
    assert!(
        log.body
            .lines()
            .all(|l| l.contains("\"verdict\":\"blocked\"")),
        "{}",
        log.body
    );
    // The live tail takes the same filters (typed ones included).
    let f = s.call(
        &base,
        "GET",
        "/api/v1/querylog/follow?blocked=true&domain=ads",
        None,
    );
    assert_eq!(f.status, 200, "{}", f.body);
    let cursor = f.json()["cursor"].as_str().unwrap().to_owned();
    assert_eq!(
        rcode(&ask(dg.addr, "y.ads.fwd.test.", RecordType::A)),
        ResponseCode::NXDomain
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let path = format!("/api/v1/querylog/follow?blocked=true&domain=ads&after={cursor}");
        let f = s.call(&base, "GET", &path, None).json();
        if let Some(e) = f["entries"].as_array().and_then(|a| a.first()) {
            assert_eq!(e["name"], "y.ads.fwd.test");
            break;
        }
        assert!(Instant::now() < deadline, "followed entry never came");
        std::thread::sleep(Duration::from_millis(50));
    }
    let alerts = s.call(&base, "GET", "/api/v1/alerts?since=1h", None).json();
    assert_eq!(alerts["total"], 1, "{alerts}");
    assert_eq!(alerts["domains"][0]["key"], "fwd.test", "{alerts}");
    assert_eq!(alerts["clients"][0]["key"], "127.0.0.1", "{alerts}");
    assert!(
        !alerts["domains"][0]["reasons"][0]
            .as_str()
            .unwrap()
            .is_empty(),
        "{alerts}"
    );
    assert!(
        alerts["recent"][0]["tunnel_score"].as_f64().unwrap() > 0.0,
        "{alerts}"
    );
    assert_eq!(
        s.call(&base, "GET", "/api/v1/alerts?since=soon", None)
            .status,
        400
    );
}
