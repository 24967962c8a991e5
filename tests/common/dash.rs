//! Dashboard fixtures: the running server's HTTP address and API token, setting
//! the password with the real CLI, logging in with the real login form.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use super::http::{Reply, request};
use super::server::{Dnsguard, binary};

/// The password the tests set.
pub const PASSWORD: &str = "correct horse battery";

/// The server's HTTP base URL (from `DATA_DIR/api-endpoint`).
pub fn base(dg: &Dnsguard) -> String {
    let data = data_dir(dg);
    std::fs::read_to_string(data.join("api-endpoint"))
        .expect("api-endpoint written")
        .trim()
        .to_owned()
}

/// The data directory the test configs use (the default, next to the config).
pub fn data_dir(dg: &Dnsguard) -> std::path::PathBuf {
    dg.dir.path().join("dnsguard-data")
}

/// The API token.
pub fn token(dg: &Dnsguard) -> String {
    std::fs::read_to_string(data_dir(dg).join("api-token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Runs `dnsguard set-password --config CFG` with the password on stdin.
pub fn set_password(dg: &Dnsguard, password: &str) {
    let mut child = Command::new(binary())
        .args(["set-password", "--config"])
        .arg(dg.config_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "set-password failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A logged-in browser session: cookie header and CSRF token.
#[derive(Clone, Debug)]
pub struct Session {
    /// `Cookie:` value.
    pub cookie: String,
    /// `X-CSRF-Token:` value.
    pub csrf: String,
}

/// Posts the login form; returns the reply.
pub fn post_login(base: &str, password: &str) -> Reply {
    let body = format!("password={}", password.replace(' ', "+"));
    request(
        "POST",
        base,
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(&body),
    )
}

/// Logs in and fetches the CSRF token.
pub fn login(base: &str, password: &str) -> Session {
    let r = post_login(base, password);
    assert_eq!(r.status, 303, "login failed: {}", r.body);
    let set = r.header("set-cookie").expect("session cookie").to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    let s = request("GET", base, "/api/v1/session", &[("Cookie", &cookie)], None);
    assert_eq!(s.status, 200);
    let csrf = s.json()["csrf"].as_str().unwrap().to_owned();
    Session { cookie, csrf }
}

impl Session {
    /// A request with the cookie and the CSRF token (JSON body).
    pub fn call(&self, base: &str, method: &str, path: &str, body: Option<&str>) -> Reply {
        request(
            method,
            base,
            path,
            &[
                ("Cookie", &self.cookie),
                ("X-CSRF-Token", &self.csrf),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    }
}
