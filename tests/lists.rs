//! List sources against the real binary: `dnsguard lists update` reaching a running
//! server, a list file that disappears keeping its last good text, and what a list
//! file may be (where, what kind, how large) through the dashboard API and the
//! config file.

mod common;

use std::ffi::CString;
use std::path::Path;
use std::time::{Duration, Instant};

use common::client::{addrs, ask};
use common::dash::{self, PASSWORD};
use common::http::{HttpServer, Reply, Response, request};
use common::server::{Dnsguard, run_cli};
use common::upstream::FakeUpstream;
use common::webdriver::Driver;
use hickory_proto::rr::RecordType;

const ZONE: &str = "\
urlold.example. 300 A 192.0.2.1
urlnew.example. 300 A 192.0.2.2
urlthird.example. 300 A 192.0.2.3
filelisted.example. 300 A 192.0.2.4
filenew.example. 300 A 192.0.2.5
";

fn upstream() -> FakeUpstream {
    FakeUpstream::start("127.0.0.1".parse().unwrap(), ZONE)
}

fn config(up: &FakeUpstream, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n{extra}",
        up.addr()
    )
}

fn blocked(dg: &Dnsguard, name: &str) -> bool {
    addrs(&ask(dg.addr, name, RecordType::A)) == ["0.0.0.0"]
}

/// Polls `f` until it is true; panics after `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    common::wait_for(limit, what, || f().then_some(()))
}

/// An API call with the server's bearer token (as the CLI makes them).
fn api(dg: &Dnsguard, base: &str, method: &str, path: &str) -> Reply {
    let auth = format!("Bearer {}", dash::token(dg));
    request(method, base, path, &[("Authorization", &auth)], None)
}

/// The `GET /api/v1/lists` entry of `name`.
fn list_view(dg: &Dnsguard, base: &str, name: &str) -> serde_json::Value {
    let r = api(dg, base, "GET", "/api/v1/lists");
    assert_eq!(r.status, 200, "{}", r.body);
    let lists = r.json();
    lists
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no list {name}: {lists}"))
        .clone()
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Waits for the server to finish the SIGHUP reload it is sent.
fn sighup(dg: &Dnsguard) {
    let reloads = || {
        let log = dg.log();
        log.matches("reloaded lists and groups").count() + log.matches("reload failed").count()
    };
    let before = reloads();
    dg.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(20), || reloads() > before);
}

#[test]
fn cli_list_update_reaches_the_running_server() {
    let up = upstream();
    let http = HttpServer::start(Response {
        etag: Some("\"v1\"".into()),
        ..Response::ok("||urlold.example^\n")
    });
    let dg = Dnsguard::start(&config(
        &up,
        &format!(
            "[[lists]]\nname = \"remote\"\nsource = \"{}\"\n[list_updates]\ntimeout_secs = 5\n",
            http.url("/list.txt")
        ),
    ));
    wait_for("the first download", Duration::from_secs(20), || {
        blocked(&dg, "urlold.example.")
    });
    let cfg = dg.config_path();
    let cfg = cfg.to_str().unwrap();

    // The CLI asks the server, which downloads, compiles and applies.
    http.set(Response {
        etag: Some("\"v2\"".into()),
        ..Response::ok("||urlold.example^\n||urlnew.example^\n")
    });
    let (ok, out, err) = run_cli(&["lists", "update", "--config", cfg]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("asked the running server"), "{out}");
    assert!(out.contains("remote: New"), "{out}");
    assert!(
        out.contains("loaded"),
        "the lists in force are shown: {out}"
    );
    assert!(
        blocked(&dg, "urlnew.example."),
        "the new entry is enforced at once"
    );

    // A copy saved by another process (a CLI that found no server to ask) is
    // not "NotModified" to the server: its next update applies it.
    let base = dash::base(&dg);
    std::fs::remove_file(dash::data_dir(&dg).join("api-endpoint")).unwrap();
    http.set(Response {
        etag: Some("\"v3\"".into()),
        ..Response::ok("||urlold.example^\n||urlnew.example^\n||urlthird.example^\n")
    });
    let (ok, out, err) = run_cli(&["lists", "update", "--config", cfg]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("remote: New"), "{out}");
    assert!(out.contains("no running server found"), "{out}");
    assert!(!blocked(&dg, "urlthird.example."), "not applied yet");
    let r = api(&dg, &base, "POST", "/api/v1/lists/update");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["remote"], "NotModified", "the server got a 304");
    assert!(
        blocked(&dg, "urlthird.example."),
        "the saved copy it had not compiled is applied"
    );
}

#[test]
fn missing_list_file_at_sighup_keeps_its_last_good_text() {
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.txt");
    std::fs::write(&file, "filelisted.example\n").unwrap();
    let dg = Dnsguard::start_in(
        &config(
            &up,
            &format!("[[lists]]\nname = \"mine\"\nsource = {:?}\n", file),
        ),
        dir,
    );
    let base = dash::base(&dg);
    assert!(blocked(&dg, "filelisted.example."));
    assert!(list_view(&dg, &base, "mine")["last_error"].is_null());

    std::fs::remove_file(&file).unwrap();
    sighup(&dg);
    assert!(
        blocked(&dg, "filelisted.example."),
        "the last good text still blocks"
    );
    let view = list_view(&dg, &base, "mine");
    let err = view["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("mine.txt") && err.contains("kept the last good copy"),
        "the error is shown on the list: {view}"
    );
    assert_eq!(view["entries"], 1, "{view}");
    assert_eq!(view["missing"], false, "{view}");

    // The dashboard's list card shows it (headless Chromium, logged in by the form).
    dash::set_password(&dg, PASSWORD);
    let mut d = Driver::start();
    d.goto(&format!("{base}/"));
    d.wait_for("the login form", |d| {
        d.url().ends_with("/login").then_some(())
    });
    let pw = d.find("#password");
    d.type_text(&pw, PASSWORD);
    let btn = d.find("#login-btn");
    d.click(&btn);
    d.wait_for("the overview", |d| {
        (!d.url().ends_with("/login")).then_some(())
    });
    d.goto(&format!("{base}/#/lists"));
    let shown = d.wait_for("the error on the list card", |d| {
        d.text_of("#lists-cards [data-list=\"mine\"] .err")
            .filter(|t| t.contains("kept the last good copy"))
    });
    assert!(shown.contains("mine.txt"), "{shown}");
    drop(d);

    // Back again: read, applied, the error gone.
    std::fs::write(&file, "filelisted.example\nfilenew.example\n").unwrap();
    sighup(&dg);
    assert!(blocked(&dg, "filenew.example."));
    assert!(list_view(&dg, &base, "mine")["last_error"].is_null());
}

#[test]
fn api_list_files_only_from_allowed_dirs_and_regular() {
    let up = upstream();
    let dg = Dnsguard::start(&config(&up, "[list_updates]\nmax_bytes = 1000\n"));
    dash::set_password(&dg, PASSWORD);
    let base = dash::base(&dg);
    let s = dash::login(&base, PASSWORD);
    let lists_dir = dash::data_dir(&dg).join("lists");
    std::fs::create_dir_all(&lists_dir).unwrap();
    let add = |name: &str, source: &Path| {
        let body = serde_json::json!({ "name": name, "source": source }).to_string();
        let started = Instant::now();
        let r = s.call(&base, "POST", "/api/v1/lists", Some(&body));
        (r, started.elapsed())
    };
    let refused = |name: &str, source: &Path, why: &str| {
        let (r, took) = add(name, source);
        assert_eq!(r.status, 400, "{name}: {}", r.body);
        let msg = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(msg.contains(why), "{name}: {msg}");
        assert!(took < Duration::from_secs(5), "{name}: took {took:?}");
    };
    let outside = "not under an allowed directory";
    refused("shadow", Path::new("/etc/shadow"), outside);
    refused("zero", Path::new("/dev/zero"), outside);
    refused("dotdot", &lists_dir.join("../api-token"), outside);
    std::os::unix::fs::symlink("/etc/passwd", lists_dir.join("link.txt")).unwrap();
    refused("symlink", &lists_dir.join("link.txt"), outside);
    mkfifo(&lists_dir.join("pipe.txt"));
    refused("fifo", &lists_dir.join("pipe.txt"), "is not a regular file");
    std::fs::write(lists_dir.join("big.txt"), "||a.example^\n".repeat(100)).unwrap();
    refused("big", &lists_dir.join("big.txt"), "max_bytes (1000 bytes)");
    let r = s.call(&base, "GET", "/api/v1/lists", None).json();
    assert_eq!(r.as_array().map(Vec::len), Some(0), "nothing added: {r}");

    // A regular file there is fine, by path or by a name relative to it.
    std::fs::write(lists_dir.join("ok.txt"), "filelisted.example\n").unwrap();
    let (r, _) = add("ok", &lists_dir.join("ok.txt"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(blocked(&dg, "filelisted.example."));
    std::fs::write(lists_dir.join("rel.txt"), "filenew.example\n").unwrap();
    let (r, _) = add("rel", Path::new("rel.txt"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(blocked(&dg, "filenew.example."));
}

#[test]
fn config_list_files_refuse_fifos_devices_and_oversized_files() {
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let pipe = dir.path().join("pipe.txt");
    mkfifo(&pipe);
    let big = dir.path().join("big.txt");
    std::fs::write(&big, "filelisted.example\n").unwrap();
    // The FIFO first: read in order, it would stop the server from starting.
    let dg = Dnsguard::start_in(
        &config(
            &up,
            &format!(
                "[[lists]]\nname = \"pipe\"\nsource = {pipe:?}\n\
                 [[lists]]\nname = \"zero\"\nsource = \"/dev/zero\"\n\
                 [[lists]]\nname = \"big\"\nsource = {big:?}\n\
                 [list_updates]\nmax_bytes = 1000\n"
            ),
        ),
        dir,
    );
    let base = dash::base(&dg);
    for name in ["pipe", "zero"] {
        let view = list_view(&dg, &base, name);
        let err = view["last_error"].as_str().unwrap_or_default();
        assert!(err.contains("is not a regular file"), "{view}");
        assert_eq!(view["missing"], true, "{view}");
    }
    assert!(blocked(&dg, "filelisted.example."));

    // Grown past the cap: refused with the cap's error, the last good text kept.
    std::fs::write(
        &big,
        "filelisted.example\n".to_owned() + &"||a.example^\n".repeat(100),
    )
    .unwrap();
    let r = api(&dg, &base, "POST", "/api/v1/lists/update");
    assert_eq!(r.status, 200, "{}", r.body);
    let view = list_view(&dg, &base, "big");
    let err = view["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("larger than list_updates.max_bytes (1000 bytes)")
            && err.contains("kept the last good copy"),
        "{view}"
    );
    assert_eq!(view["entries"], 1, "{view}");
    assert!(blocked(&dg, "filelisted.example."));
}
