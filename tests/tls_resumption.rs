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

#[test]
fn many_more_clients_than_the_session_cache_holds_all_resume() {
    // The server-side session cache keeps 256 sessions (two TLS 1.3 tickets per
    // connection); stateless tickets let every client resume. 600 DoT clients
    // (Python's ssl, each asking one query so the tickets arrive), then the first
    // 20 come back with their sessions.
    let (_dg, dot, _) = start();
    let script = r#"
import socket, ssl, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
query = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x09localhost\x00" + struct.pack(">HH", 1, 1)
def ask(session=None):
    with socket.create_connection((host, port)) as raw:
        with ctx.wrap_socket(raw, session=session) as s:
            s.sendall(struct.pack(">H", len(query)) + query)
            n = struct.unpack(">H", s.recv(2))[0]
            while n > 0:
                n -= len(s.recv(n))
            return s.session, s.session_reused
sessions = [ask()[0] for _ in range(600)]
print(sum(ask(sessions[i])[1] for i in range(20)))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &dot.ip().to_string(), &dot.port().to_string()])
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.trim(),
        "20",
        "of the first 20 clients, this many resumed"
    );
}
