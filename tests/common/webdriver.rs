//! A small W3C WebDriver client for the browser test: starts `chromedriver` on a
//! free loopback port and drives headless Chromium through the WebDriver HTTP
//! API (no client crate, so no extra TLS stack). Fails with a clear message when
//! Chromium or chromedriver is missing; it never skips.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::http::request;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session; the browser and chromedriver stop when dropped.
pub struct Driver {
    child: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

fn find_binary(env: &str, candidates: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    for c in candidates {
        let p = PathBuf::from(c);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{} not found (looked at {candidates:?}; set {env} to override). \
         Install it: apt-get install -y --no-install-recommends chromium chromium-driver",
        candidates[0]
    );
}

impl Driver {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    pub fn start() -> Driver {
        let driver = find_binary("CHROMEDRIVER", &["/usr/bin/chromedriver"]);
        let chromium = find_binary(
            "CHROMIUM",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && request("GET", &base, "/status", &[], None)
                    .body
                    .contains("\"ready\":true");
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not come up on {base}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--hide-scrollbars",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let r = request(
            "POST",
            &base,
            "/session",
            &[("Content-Type", "application/json")],
            Some(&caps.to_string()),
        );
        let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("cannot start Chromium: {}", r.body))
            .to_owned();
        let mut d = Driver {
            child,
            base,
            session,
            _profile: profile,
        };
        d.cmd(
            "POST",
            "/timeouts",
            json!({"implicit": 0, "pageLoad": 30000, "script": 30000}),
        );
        d
    }

    /// Sends one WebDriver command for this session; panics on a WebDriver error.
    pub fn cmd(&mut self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = if method == "GET" {
            None
        } else {
            Some(body.to_string())
        };
        let r = request(
            method,
            &self.base,
            &path,
            &[("Content-Type", "application/json")],
            body.as_deref(),
        );
        let v: Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|_| panic!("bad WebDriver reply to {path}: {}", r.body));
        if r.status != 200 {
            panic!(
                "WebDriver {method} {path} failed ({}): {}",
                r.status, v["value"]
            );
        }
        v["value"].clone()
    }

    /// Opens a URL and waits for the page load.
    pub fn goto(&mut self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    /// The current URL.
    pub fn url(&mut self) -> String {
        self.cmd("GET", "/url", Value::Null)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Sets the window size (CSS pixels).
    pub fn window(&mut self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        );
    }

    /// Elements matching a CSS selector (possibly none).
    pub fn find_all(&mut self, css: &str) -> Vec<String> {
        self.cmd(
            "POST",
            "/elements",
            json!({"using": "css selector", "value": css}),
        )
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
    }

    /// The first element matching `css`, waiting for it up to 15 s.
    pub fn find(&mut self, css: &str) -> String {
        self.wait_for(&format!("element {css}"), |d| {
            d.find_all(css).into_iter().next()
        })
    }

    /// Clicks an element.
    pub fn click(&mut self, el: &str) {
        self.cmd("POST", &format!("/element/{el}/click"), json!({}));
    }

    /// Types into an element.
    pub fn type_text(&mut self, el: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            json!({ "text": text }),
        );
    }

    /// Clears an input.
    pub fn clear(&mut self, el: &str) {
        self.cmd("POST", &format!("/element/{el}/clear"), json!({}));
    }

    /// The rendered text of an element.
    pub fn text(&mut self, el: &str) -> String {
        self.cmd("GET", &format!("/element/{el}/text"), Value::Null)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The rendered text of the first element matching `css`, read in one script
    /// call (no element handle that a re-render could make stale).
    pub fn text_of(&mut self, css: &str) -> Option<String> {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.innerText : null;",
            serde_json::to_string(css).unwrap()
        );
        self.js(&script).as_str().map(str::to_owned)
    }

    /// Runs a script in the page and returns its value.
    pub fn js(&mut self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    /// Polls `f` (every 50 ms, at most 15 s) until it returns a value.
    pub fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(&mut Driver) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if Instant::now() > deadline {
                let url = self.url();
                let body = self.js("return document.body ? document.body.innerText : ''");
                panic!("timed out waiting for {what} at {url}; page text:\n{body}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let b64 = self.cmd("GET", "/screenshot", Value::Null);
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or(""))
            .expect("screenshot is base64")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            request("DELETE", &self.base, &path, &[], None)
        }));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
