//! TLS session resumption on the encrypted listeners, with a real client
//! (`openssl s_client -sess_out` / `-sess_in`): a DoT or DoH client that
//! reconnects skips the certificate and key exchange work of a full handshake
//! (issue #21: handshakes per second, docs/PERFORMANCE.md "Encrypted DNS").

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::Dnsguard;

/// A server with DoT and DoH listeners on free ports that closes idle
/// connections after a second (so `s_client -ign_eof` ends soon after it has
/// read the session ticket); (server, DoT address, DoH address).
fn start() -> (Dnsguard, SocketAddr, SocketAddr) {
    let dg = Dnsguard::start(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\n\
         https_listen = [\"127.0.0.1:0\"]\ntcp_idle_timeout_secs = 1\n\
         [resolver]\nupstreams = [\"127.0.0.1:9\"]\ntimeout_ms = 500\n",
    );
    let listening = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = dg
                .log()
                .split(&format!("listening (DNS over {what}) addr="))
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next()?.parse::<SocketAddr>().ok());
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} listener:\n{}",
                dg.log()
            );
            std::thread::yield_now();
        }
    };
    let (dot, doh) = (listening("TLS"), listening("HTTPS"));
    (dg, dot, doh)
}

/// One `openssl s_client` connection to `addr` with `args`, reading until the
/// server closes the idle connection; its output.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-ign_eof", "-connect"])
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Connects once saving the session to `file`, then again offering it; the
/// second handshake's output.
fn resume(addr: SocketAddr, file: &Path, args: &[&str]) -> (String, String) {
    let file = file.to_str().unwrap();
    let first = s_client(addr, &[args, &["-sess_out", file]].concat());
    assert!(
        first.contains("New, TLS"),
        "first handshake is a full one:\n{first}"
    );
    assert!(
        Path::new(file).exists(),
        "the server offered no resumable session (no ticket, no session ID):\n{first}"
    );
    let second = s_client(addr, &[args, &["-sess_in", file]].concat());
    (first, second)
}

#[test]
fn openssl_s_client_resumes_dot_and_doh_sessions() {
    let (dg, dot, doh) = start();
    let dir = tempfile::tempdir().unwrap();
    for (what, addr, args) in [
        ("DoT, TLS 1.3", dot, &["-tls1_3"][..]),
        ("DoT, TLS 1.2", dot, &["-tls1_2"][..]),
        ("DoH, TLS 1.3, h2", doh, &["-tls1_3", "-alpn", "h2"][..]),
    ] {
        let file = dir.path().join(format!("{what}.pem"));
        let (_, second) = resume(addr, &file, args);
        assert!(
            second.contains("Reused, TLS"),
            "{what}: the second connection resumes the first's session:\n{second}\n\
             server log:\n{}",
            dg.log()
        );
    }
}

#[test]
fn a_session_is_not_resumed_after_a_restart() {
    // The negative side, so the test above cannot pass on a client that merely
    // prints "Reused": a session the server does not know is not resumed.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.pem");
    let (dg, dot, _) = start();
    resume(dot, &file, &["-tls1_2"]);
    drop(dg);
    let (_dg, dot, _) = start();
    let again = s_client(dot, &["-tls1_2", "-sess_in", file.to_str().unwrap()]);
    assert!(
        again.contains("New, TLS"),
        "a restarted server makes a full handshake for an old session:\n{again}"
    );
}
