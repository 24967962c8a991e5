//! Runs the real `dnsguard` binary with a test configuration and finds the port it bound.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A running dnsguard process; killed when dropped.
pub struct Dnsguard {
    child: Child,
    /// The first listening address (UDP and TCP).
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    /// Holds the config file and data directory.
    pub dir: tempfile::TempDir,
}

/// The path of the binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dnsguard"))
}

impl Dnsguard {
    /// Starts `dnsguard serve` with `config` (TOML). Listen on port 0 to get a free
    /// port; the HTTP API also gets a free port unless the config has a `[web]` table.
    pub fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(config, dir)
    }

    /// Starts with `config` in an existing directory (e.g. to restart on the same data).
    pub fn start_in(config: &str, dir: tempfile::TempDir) -> Self {
        let path = dir.path().join("dnsguard.toml");
        let mut config = config.to_owned();
        if !config.contains("[web]") {
            config.push_str("\n[web]\nlisten = \"127.0.0.1:0\"\n");
        }
        std::fs::write(&path, config).unwrap();
        Self::start_file(Some(&path), dir, &[])
    }

    /// Starts `dnsguard serve` with no `--config` (the embedded default, as the
    /// README's quick start runs it), in `dir`.
    pub fn start_embedded(dir: tempfile::TempDir) -> Self {
        Self::start_file(None, dir, &[])
    }

    /// Like [`Dnsguard::start_in`], but runs the binary through `wrapper`: a program
    /// and its arguments that end by exec'ing the command line appended to them
    /// (e.g. `unshare -m sh -c 'mount … && exec "$@"' sh`), so the server keeps the
    /// wrapper's pid.
    pub fn start_wrapped(config: &str, dir: tempfile::TempDir, wrapper: &[&str]) -> Self {
        let path = dir.path().join("dnsguard.toml");
        let mut config = config.to_owned();
        if !config.contains("[web]") {
            config.push_str("\n[web]\nlisten = \"127.0.0.1:0\"\n");
        }
        std::fs::write(&path, config).unwrap();
        Self::start_file(Some(&path), dir, wrapper)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn start_file(path: Option<&Path>, dir: tempfile::TempDir, wrapper: &[&str]) -> Self {
        let mut args = vec!["serve".to_owned()];
        if let Some(path) = path {
            args.extend(["--config".to_owned(), path.display().to_string()]);
        }
        Self::start_args(&args, dir, wrapper)
    }

    /// Runs `dnsguard ARGS` (any subcommand that serves DNS, e.g. `stub`) in `dir`,
    /// through `wrapper` as [`Dnsguard::start_wrapped`] does, and waits until it
    /// listens.
    pub fn start_args(args: &[String], dir: tempfile::TempDir, wrapper: &[&str]) -> Self {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        cmd.args(args).current_dir(dir.path());
        let mut child = cmd
            .env("RUST_LOG", "info,dnsguard=debug,hickory_server=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dnsguard");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = line.split("listening (UDP and TCP) addr=").nth(1) {
                        let _ = tx.send(addr.trim().parse::<SocketAddr>());
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => addr,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "dnsguard did not start ({other:?}); log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Self {
            child,
            addr,
            log,
            dir,
        }
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The `spki_pin` on the last log line that says `message` (e.g. "TLS
    /// certificate reloaded", which only SIGHUP logs: the file watcher says
    /// "renewed on disk").
    pub fn pin_logged_with(&self, message: &str) -> Option<String> {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains(message))?;
        let pin = line.split("spki_pin=").nth(1)?.split_whitespace().next()?;
        Some(pin.trim_matches('"').to_owned())
    }

    /// A handle on the log that outlives the server (to read it after a kill).
    pub fn log_handle(&self) -> Arc<Mutex<String>> {
        self.log.clone()
    }

    /// The config file the server was started with (rewrite it, then send SIGHUP).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("dnsguard.toml")
    }

    /// Sends a signal (e.g. SIGHUP) without waiting.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Sends a signal (e.g. SIGTERM) and waits for the exit status.
    pub fn stop_with(self, signal: i32) -> std::process::ExitStatus {
        self.stop_keeping_dir(signal).0
    }

    /// Sends a signal, waits for the exit, and hands back the directory (config and
    /// data) so a test can inspect it or restart on it.
    pub fn stop_keeping_dir(
        mut self,
        signal: i32,
    ) -> (std::process::ExitStatus, tempfile::TempDir) {
        self.signal(signal);
        let status = self.child.wait().unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, dir)
    }
}

impl Drop for Dnsguard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `dnsguard` with arguments and returns (success, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run dnsguard");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
