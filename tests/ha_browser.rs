//! A secondary's dashboard in a real browser (headless Chromium through
//! chromedriver): the banner names the primary and the replicated sections,
//! and an edit of a replicated section made with the page's own controls is
//! refused with 409, the refusal shown to the user and nothing changed.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`; without them the
//! test fails and says so.

mod common;

use std::time::{Duration, Instant};

use common::client::{addrs, ask};
use common::dash::{self, PASSWORD};
use common::server::Dnsguard;
use common::upstream::FakeUpstream;
use common::webdriver::Driver;
use hickory_proto::rr::RecordType;

const ZONE: &str = "\
www.a.test. 300 A 192.0.2.1
www.b.test. 300 A 192.0.2.2
";

/// The toast's text while it shows as an error.
fn error_toast(d: &mut Driver) -> Option<String> {
    let t = d.js("const t = document.getElementById('toast'); \
         return t && !t.hidden && t.classList.contains('error') ? t.textContent : ''");
    t.as_str().filter(|t| !t.is_empty()).map(str::to_owned)
}

#[test]
fn secondary_dashboard_shows_the_banner_and_refuses_replicated_edits() {
    let up = FakeUpstream::start("127.0.0.1".parse().unwrap(), ZONE);
    let primary = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [[groups]]\nname = \"default\"\ndeny = [\"www.a.test\"]\n",
        up.addr()
    ));
    let primary_url = dash::base(&primary);
    let secondary = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [cluster]\nprimary = \"{primary_url}\"\ntoken_file = \"{}\"\n",
        up.addr(),
        dash::data_dir(&primary).join("api-token").display()
    ));
    // The replicated deny entry is in force on the secondary.
    let deadline = Instant::now() + Duration::from_secs(10);
    while addrs(&ask(secondary.addr, "www.a.test.", RecordType::A)) != ["0.0.0.0"] {
        assert!(Instant::now() < deadline, "the primary's state never came");
        std::thread::sleep(Duration::from_millis(50));
    }
    dash::set_password(&secondary, PASSWORD);
    let base = dash::base(&secondary);
    let file_before = std::fs::read_to_string(secondary.config_path()).unwrap();

    let mut d = Driver::start();
    d.window(1280, 1000);
    d.goto(&format!("{base}/login"));
    let pw = d.find("#password");
    d.type_text(&pw, PASSWORD);
    let btn = d.find("#login-btn");
    d.click(&btn);

    // The banner: whose secondary it is, that the primary is up, and every
    // replicated section.
    let banner = d.wait_for("the cluster banner", |d| {
        // The login page is still showing until the navigation lands.
        let shown =
            d.js("const b = document.getElementById('cluster-banner'); return !!b && !b.hidden");
        (shown == true)
            .then(|| d.text_of("#cluster-banner"))
            .flatten()
            .filter(|t| t.contains("primary up"))
    });
    assert!(
        banner.contains(&format!("Secondary of {primary_url}")),
        "{banner}"
    );
    for section in [
        "lists",
        "groups",
        "local",
        "resolver",
        "query_log",
        "detect",
        "rebinding",
    ] {
        assert!(banner.contains(section), "{section} missing: {banner}");
    }

    // The statuses the page's requests get, to see the 409 itself.
    d.goto(&format!("{base}/#/groups"));
    d.find("[data-group=\"default\"]");
    d.js("window.statuses = []; const f = window.fetch; \
          window.fetch = async (...a) => { const r = await f(...a); window.statuses.push(r.status); return r; };");

    // A deny entry added with the group card's own form.
    let forms = d.find_all("[data-group=\"default\"] form.inline-add input");
    assert_eq!(forms.len(), 2, "an allow and a deny form");
    d.type_text(&forms[1], "www.b.test");
    let add = d.find_all("[data-group=\"default\"] form.inline-add button")[1].clone();
    d.click(&add);
    let shown = d.wait_for("the refusal", error_toast);
    assert!(
        shown.contains("this node is a secondary") && shown.contains("change them there"),
        "{shown}"
    );
    assert_eq!(d.js("return window.statuses"), serde_json::json!([409]));
    std::fs::write(
        env!("CARGO_TARGET_TMPDIR").to_owned() + "/ha-secondary-refusal.png",
        d.screenshot(),
    )
    .unwrap();

    // The group's Save button (clients, block mode): refused too.
    d.js("document.getElementById('toast').hidden = true");
    let save = d.find("[data-group=\"default\"] button.primary");
    d.click(&save);
    let shown = d.wait_for("the second refusal", error_toast);
    assert!(shown.contains("this node is a secondary"), "{shown}");
    assert_eq!(
        d.js("return window.statuses"),
        serde_json::json!([409, 409])
    );

    // Nothing changed: the name resolves and the file is as it was.
    assert_eq!(
        addrs(&ask(secondary.addr, "www.b.test.", RecordType::A)),
        ["192.0.2.2"]
    );
    assert_eq!(
        std::fs::read_to_string(secondary.config_path()).unwrap(),
        file_before
    );
}
