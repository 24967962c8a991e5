//! DNS over QUIC (RFC 9250) with a real client on loopback: dnspython with aioquic
//! (`tests/doq_client.py`, run by the Python that `DNSGUARD_DOQ_PYTHON` names;
//! `.ci/run` makes that virtualenv). Resolution, block answers, `allow_clients`,
//! dnstap's transport, and protocol errors and silent streams leaving the service
//! answering. (kdig speaks DoQ only from Knot 3.3; Debian 12 has 3.2.)

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::server::Dnsguard;
use common::upstream::FakeUpstream;
use common::wait_for;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

const ZONE: &str = "\
www.fwd.test. 300 A 192.0.2.1
";

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

struct Doq {
    dg: Dnsguard,
    /// The DNS-over-QUIC address.
    addr: SocketAddr,
}

/// A server forwarding to `up`, blocking the built-in default list, serving DNS
/// over QUIC on a free port; `extra` goes into `[server]`, `tail` at the end.
fn start(up: &FakeUpstream, extra: &str, tail: &str) -> Doq {
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nquic_listen = [\"127.0.0.1:0\"]\n{extra}\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [[lists]]\nname = \"dnsguard-default\"\nsource = \"builtin:default\"\n{tail}",
        up.addr()
    ));
    let marker = "listening (DNS over QUIC) addr=";
    let addr = wait_for(Duration::from_secs(10), marker, || {
        dg.log()
            .split(marker)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    });
    Doq { dg, addr }
}

/// Runs `tests/doq_client.py` against `doq` (verifying the self-signed
/// certificate for `localhost`); all it printed.
fn client(doq: &Doq, args: &[&str]) -> String {
    let ca = doq.dg.dir.path().join("dnsguard-data/tls/cert.pem");
    client_trusting(doq, &ca, args)
}

/// [`client`] with `ca` as the only trusted certificate.
fn client_trusting(doq: &Doq, ca: &Path, args: &[&str]) -> String {
    let out = client_command(doq, ca, args)
        .output()
        .unwrap_or_else(|e| panic!("run the DoQ client: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The command line of `tests/doq_client.py` against `doq`, trusting `ca`.
fn client_command(doq: &Doq, ca: &Path, args: &[&str]) -> Command {
    let python = std::env::var_os("DNSGUARD_DOQ_PYTHON").unwrap_or_else(|| {
        panic!(
            "DNSGUARD_DOQ_PYTHON is not set: it must name a python3 with dnspython and \
             aioquic (`python3 -m venv /opt/dnsguard-ci-venv && \
             /opt/dnsguard-ci-venv/bin/pip install dnspython aioquic`, as .ci/run does; \
             then DNSGUARD_DOQ_PYTHON=/opt/dnsguard-ci-venv/bin/python)"
        )
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/doq_client.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg(args[0])
        .arg(doq.addr.ip().to_string())
        .arg(doq.addr.port().to_string())
        .arg(ca)
        .arg("localhost")
        .args(&args[1..]);
    cmd
}

/// A query for `name` with message ID `id`, length-prefixed, in hex.
fn framed_query(name: &str, id: u16) -> String {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let wire = m.to_vec().unwrap();
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend(wire);
    hex(&framed)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn dnspython_resolves_and_gets_block_answers_over_quic() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doq = start(&up, "", "");
    let text = client(&doq, &["query", "www.fwd.test", "A"]);
    assert!(text.contains("rcode NOERROR"), "{text}");
    assert!(text.contains("192.0.2.1"), "{text}");
    let text = client(&doq, &["query", "doubleclick.net", "A"]);
    assert!(text.contains("0.0.0.0"), "blocked: {text}");
    // The answer keeps the query's ID 0 and ends the stream.
    let text = client(&doq, &["raw", &framed_query("www.fwd.test.", 0)]);
    assert_eq!(text.trim(), "answer NOERROR id=0");
}

/// `[::]:P` and `0.0.0.0:P` both listed (the Pi image's DoT/DoQ pair): the IPv6
/// endpoint is IPv6 only, so both bind and the IPv4 one answers. Before, the
/// dual-stack `[::]` socket took IPv4 too and the server would not start.
#[test]
fn ipv4_and_ipv6_wildcards_on_one_port_both_listen() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         quic_listen = [\"127.0.0.1:{port}\", \"[::]:{port}\"]\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n",
        up.addr()
    ));
    let marker = "listening (DNS over QUIC) addr=";
    wait_for(Duration::from_secs(10), "both DoQ listeners", || {
        (dg.log().matches(marker).count() == 2).then_some(())
    });
    let doq = Doq {
        dg,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let text = client(&doq, &["query", "www.fwd.test", "A"]);
    assert!(text.contains("192.0.2.1"), "{text}");
}

#[test]
fn doq_clients_follow_allow_clients() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doq = start(&up, "allow_clients = [\"127.0.0.2/32\"]", "");
    let text = client(&doq, &["query", "www.fwd.test", "A"]);
    assert!(text.contains("rcode REFUSED"), "{text}");
    assert!(!text.contains("192.0.2.1"), "{text}");
}

/// RFC 9250 §4.2.1 and §4.3: a message ID other than 0, a length prefix that does
/// not match the stream, or a message over 65535 bytes closes the connection with
/// DOQ_PROTOCOL_ERROR (2); a stream that never completes its query is reset with
/// DOQ_REQUEST_CANCELLED (3) after the idle timeout. The service keeps answering.
#[test]
fn protocol_errors_and_silent_streams_leave_the_service_answering() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doq = start(&up, "tcp_idle_timeout_secs = 1", "");
    let good = framed_query("www.fwd.test.", 0);
    let too_long = "ffff+70000".to_string();
    let cases = [
        (
            "message ID 7",
            framed_query("www.fwd.test.", 7),
            "fin",
            "closed 2",
        ),
        (
            "prefix longer than the stream",
            format!("00ff{}", &good[4..]),
            "fin",
            "closed 2",
        ),
        (
            "two messages on one stream",
            format!("{good}{good}"),
            "fin",
            "closed 2",
        ),
        ("garbage", "01".into(), "fin", "closed 2"),
        ("over 65535 bytes", too_long, "fin", "closed 2"),
        (
            "half a query, never finished",
            good[..10].into(),
            "open",
            "reset 3",
        ),
    ];
    for (what, bytes, fin, expected) in cases {
        let text = client(&doq, &["raw", &bytes, fin]);
        assert_eq!(text.trim(), expected, "{what}");
        let text = client(&doq, &["query", "www.fwd.test", "A"]);
        assert!(text.contains("192.0.2.1"), "answering after {what}: {text}");
    }
}

/// dnstap reports a DNS-over-QUIC query as DOQ (7).
#[test]
fn dnstap_reports_doq_queries_as_doq() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("tap.sock");
    let file = tmp.path().join("tap.fstrm");
    let capture = common::tap::Capture::unix(&socket, &file);
    let doq = start(
        &up,
        "",
        &format!("[dnstap]\ntarget = \"unix:{}\"\n", socket.display()),
    );
    let text = client(&doq, &["query", "www.fwd.test", "A"]);
    assert!(text.contains("192.0.2.1"), "{text}");
    assert!(doq.dg.stop_with(libc::SIGTERM).success());
    let file = capture.finish();
    let protocols = common::tap::socket_protocols(&std::fs::read(&file).unwrap());
    assert_eq!(protocols, [7, 7], "dnstap SocketProtocol DOQ = 7");
}

/// The quick start (no `--config`) serves DNS over QUIC on 127.0.0.1:8853/udp,
/// beside DNS over TLS on the same port number over TCP.
#[test]
fn the_embedded_default_serves_doq_on_8853_udp() {
    let dg = Dnsguard::start_embedded(tempfile::tempdir().unwrap());
    let addr: SocketAddr = "127.0.0.1:8853".parse().unwrap();
    let marker = format!("listening (DNS over QUIC) addr={addr}");
    wait_for(Duration::from_secs(10), &marker, || {
        dg.log().contains(&marker).then_some(())
    });
    let doq = Doq { dg, addr };
    let text = client(&doq, &["query", "doubleclick.net", "A"]);
    assert!(text.contains("0.0.0.0"), "blocked: {text}");
}

/// The DoQ listener presents the certificate in force: one renewed on disk is
/// served after SIGHUP (the QUIC TLS configuration resolves through the
/// `CertStore`, like DoT's and DoH's).
#[test]
fn a_certificate_renewed_on_disk_is_served_after_sighup() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let certs = tempfile::tempdir().unwrap();
    let (cert, old) = (certs.path().join("cert.pem"), certs.path().join("old.pem"));
    let write_cert = || {
        let key = rcgen::KeyPair::generate().unwrap();
        let made = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&cert, made.pem()).unwrap();
        std::fs::write(certs.path().join("key.pem"), key.serialize_pem()).unwrap();
    };
    write_cert();
    let doq = start(
        &up,
        "",
        &format!(
            "[tls]\ncert_file = \"{0}/cert.pem\"\nkey_file = \"{0}/key.pem\"\n",
            certs.path().display()
        ),
    );
    let query = ["query", "www.fwd.test", "A"];
    let text = client_trusting(&doq, &cert, &query);
    assert!(text.contains("192.0.2.1"), "{text}");
    std::fs::copy(&cert, &old).unwrap();
    write_cert();
    doq.dg.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload", || {
        doq.dg
            .log()
            .contains("TLS certificate reloaded")
            .then_some(())
    });
    let text = client_trusting(&doq, &cert, &query);
    assert!(text.contains("192.0.2.1"), "renewed certificate: {text}");
    let text = client_trusting(&doq, &old, &query);
    eprintln!("OLDCERT {text}");
    assert!(
        !text.contains("192.0.2.1"),
        "old certificate still served: {text}"
    );
}

/// `tcp_max_connections_per_client` bounds DoQ connections too: with two allowed,
/// a third connection from the same address is refused while two are open, and
/// answered once they have closed (here: idled out after their client vanished).
/// From half the bound on, a new connection first proves its address (QUIC Retry),
/// which a real client passes.
#[test]
fn connections_beyond_the_per_client_bound_are_refused() {
    use std::io::BufRead;
    let up = FakeUpstream::start(localhost(), ZONE);
    let doq = start(
        &up,
        "tcp_idle_timeout_secs = 1\ntcp_max_connections_per_client = 2\n\
         log = \"info,dnsguard=debug\"",
        "",
    );
    let ca = doq.dg.dir.path().join("dnsguard-data/tls/cert.pem");
    let hold = || {
        let mut holder = Killed(
            client_command(&doq, &ca, &["hold"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start the DoQ client"),
        );
        let mut line = String::new();
        std::io::BufReader::new(holder.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "held",
            "a connection within the bound is answered"
        );
        holder
    };
    let first = hold();
    assert!(!doq.dg.log().contains("QUIC Retry"), "{}", doq.dg.log());
    let second = hold();
    assert!(
        doq.dg.log().contains("QUIC Retry"),
        "the second one was retried"
    );
    let text = client(&doq, &["query", "www.fwd.test", "A"]);
    // Refused at once: dnspython sees the connection end before its stream opens.
    assert!(
        !text.contains("192.0.2.1") && text.contains("UnexpectedEOF"),
        "third connection not refused: {text}"
    );
    drop((first, second));
    wait_for(
        Duration::from_secs(15),
        "an answer once they are gone",
        || {
            client(&doq, &["query", "www.fwd.test", "A"])
                .contains("192.0.2.1")
                .then_some(())
        },
    );
}

/// A child process killed (and reaped) when dropped, a failed assertion included.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
