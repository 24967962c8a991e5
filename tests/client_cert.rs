//! TLS client certificates as proof of a client's identity, with real clients on
//! loopback: `dnsguard clients issue NAME --cert DIR` makes the key pair, kdig
//! (`+tls-certfile`/`+tls-keyfile`) presents it over DoT, curl (`--cert --key`)
//! over DoH, aioquic (`tests/doq_client.py`) over DoQ, and `dnsguard stub --cert
//! --key` on behalf of an agent. A listed certificate proves its client (and may
//! widen); a certificate nobody listed changes nothing, with or without another
//! client's ClientID; `allow_authenticated_anywhere` lets only a proven one past
//! `allow_clients`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::client::{ask, rcode};
use common::server::{Dnsguard, run_cli};
use common::upstream::FakeUpstream;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const ZONE: &str = "\
www.fwd.test. 300 A 192.0.2.1
mail.fwd.test. 300 A 192.0.2.5
ads.fwd.test. 300 A 192.0.2.9
";

/// A client key pair made by `dnsguard clients issue NAME --cert DIR`.
struct ClientCert {
    dir: tempfile::TempDir,
    /// The SPKI pin the command printed.
    pin: String,
}

impl ClientCert {
    fn issue(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("agent");
        let (ok, stdout, stderr) =
            run_cli(&["clients", "issue", name, "--cert", out.to_str().unwrap()]);
        assert!(ok, "clients issue --cert failed: {stderr}");
        let pin = stdout
            .lines()
            .find_map(|l| l.strip_prefix("SPKI pin: "))
            .unwrap_or_else(|| panic!("no pin printed: {stdout}"))
            .trim()
            .to_string();
        assert!(
            stdout.contains(&format!("cert_pins = [\"{pin}\"]")),
            "the entry holds the pin: {stdout}"
        );
        Self { dir, pin }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("agent/cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("agent/key.pem")
    }
}

/// Groups, from the widest to the strictest:
/// - `office` (127.0.0.0/8, every test client's source): resolves all but ads;
/// - `lab` (`client:lab-1`, proven by its certificate): resolves everything;
/// - `agents` (`client:agent-1`, ClientID only): allowlist-only, `www` only.
///
/// `access` goes into `[server]`.
fn config(up: SocketAddr, lab_pin: &str, access: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\n\
         https_listen = [\"127.0.0.1:0\"]\nquic_listen = [\"127.0.0.1:0\"]\n{access}\n\
         [resolver]\nupstreams = [\"{up}\"]\ntimeout_ms = 800\n\
         [[clients]]\nname = \"agent-1\"\nids = [\"agent-1\"]\n\
         [[clients]]\nname = \"lab-1\"\nids = [\"lab-1\"]\ncert_pins = [\"{lab_pin}\"]\n\
         [[groups]]\nname = \"office\"\nclients = [\"127.0.0.0/8\"]\ndeny = [\"||ads.fwd.test^\"]\n\
         block_mode = \"nxdomain\"\n\
         [[groups]]\nname = \"lab\"\nclients = [\"client:lab-1\"]\n\
         [[groups]]\nname = \"agents\"\nclients = [\"client:agent-1\"]\n\
         mode = \"enforce\"\nallow = [\"www.fwd.test\"]\nblock_mode = \"nxdomain\"\n"
    )
}

struct Server {
    dg: Dnsguard,
    plain: SocketAddr,
    dot: SocketAddr,
    doh: SocketAddr,
    doq: SocketAddr,
    _up: FakeUpstream,
}

fn start(lab_pin: &str, access: &str) -> Server {
    let up = FakeUpstream::start("127.0.0.1".parse().unwrap(), ZONE);
    let dg = Dnsguard::start(&config(up.addr(), lab_pin, access));
    let addr = |what: &str| {
        let marker = format!("listening ({what}) addr=");
        common::wait_for(Duration::from_secs(15), &marker, || {
            dg.log()
                .split(marker.as_str())
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next()?.parse::<SocketAddr>().ok())
        })
    };
    let (plain, dot, doh, doq) = (
        dg.addr,
        addr("DNS over TLS"),
        addr("DNS over HTTPS"),
        addr("DNS over QUIC"),
    );
    Server {
        plain,
        dot,
        doh,
        doq,
        dg,
        _up: up,
    }
}

impl Server {
    /// The server's self-signed certificate (for `localhost`).
    fn ca(&self) -> PathBuf {
        self.dg.dir.path().join("dnsguard-data/tls/cert.pem")
    }
}

/// kdig over TLS to `addr`, with the server name `sni` and presenting `cert`;
/// the status and answer it printed.
fn kdig_dot(addr: SocketAddr, sni: Option<&str>, cert: Option<&ClientCert>, name: &str) -> String {
    let mut cmd = Command::new("kdig");
    cmd.arg(format!("@{}", addr.ip())).args([
        "-p",
        &addr.port().to_string(),
        "+tls",
        "+timeout=3",
        "+retry=0",
    ]);
    if let Some(sni) = sni {
        cmd.arg(format!("+tls-sni={sni}"));
    }
    if let Some(c) = cert {
        cmd.arg(format!("+tls-certfile={}", c.cert().display()));
        cmd.arg(format!("+tls-keyfile={}", c.key().display()));
    }
    let out = cmd.arg(name).output().expect("run kdig (knot-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("status: "),
        "kdig {name} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// curl POSTing a query for `name` to the DoH `path`, verifying the server's
/// certificate for localhost and presenting `cert`; the rcode and addresses.
fn curl_doh(
    s: &Server,
    path: &str,
    cert: Option<&ClientCert>,
    name: &str,
) -> (ResponseCode, Vec<String>) {
    let ask = common::client::Ask::default();
    let query = common::client::query_message(name, RecordType::A, &ask)
        .to_vec()
        .unwrap();
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), query).unwrap();
    let port = s.doh.port();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail", "--max-time", "5", "--cacert"])
        .arg(s.ca())
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-H", "content-type: application/dns-message"])
        .arg("--data-binary")
        .arg(format!("@{}", body.path().display()));
    if let Some(c) = cert {
        cmd.arg("--cert").arg(c.cert()).arg("--key").arg(c.key());
    }
    let out = cmd
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {path} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Message::from_vec(&out.stdout).expect("a DNS message");
    (rcode(&m), common::client::addrs(&m))
}

/// aioquic over DoQ presenting `cert`: "answer <rcode> id=0" as
/// `tests/doq_client.py raw` prints it.
fn doq(s: &Server, cert: Option<&ClientCert>, name: &str) -> String {
    let python = std::env::var_os("DNSGUARD_DOQ_PYTHON").unwrap_or_else(|| {
        panic!(
            "DNSGUARD_DOQ_PYTHON is not set: it must name a python3 with dnspython and \
             aioquic (see tests/doq.rs)"
        )
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/doq_client.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg("raw")
        .arg(s.doq.ip().to_string())
        .arg(s.doq.port().to_string())
        .arg(s.ca())
        .arg("localhost")
        .arg(framed_query(name))
        .arg("fin");
    if let Some(c) = cert {
        cmd.arg(c.cert()).arg(c.key());
    }
    let out = cmd.output().expect("run the DoQ client");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A query for `name` (ID 0), length-prefixed, in hex.
fn framed_query(name: &str) -> String {
    let ask = common::client::Ask::default();
    let mut m = common::client::query_message(name, RecordType::A, &ask);
    m.metadata.id = 0;
    let wire = m.to_vec().unwrap();
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend(wire);
    framed.iter().map(|b| format!("{b:02x}")).collect()
}

fn resolved(text: &str, ip: &str) -> bool {
    text.contains("status: NOERROR") && text.contains(ip)
}

fn status(text: &str, rcode: &str) -> bool {
    text.contains(&format!("status: {rcode}"))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The key is owner-only, the printed pin is the certificate's (as openssl
/// computes it), and a second run never overwrites the key.
#[test]
fn issue_writes_a_private_key_and_prints_its_certificates_pin() {
    let c = ClientCert::issue("lab-1");
    assert_eq!(mode(&c.key()), 0o600);
    let openssl = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64",
            c.cert().display()
        ))
        .output()
        .expect("run openssl");
    assert_eq!(String::from_utf8_lossy(&openssl.stdout).trim(), c.pin);
    let key = std::fs::read(c.key()).unwrap();
    let dir = c.dir.path().join("agent");
    let (ok, _, stderr) = run_cli(&["clients", "issue", "lab-1", "--cert", dir.to_str().unwrap()]);
    assert!(!ok && stderr.contains("never overwritten"), "{stderr}");
    assert_eq!(std::fs::read(c.key()).unwrap(), key, "the key is untouched");
    let (ok, _, stderr) = run_cli(&["clients", "issue", "Not A Name", "--cert", "/nonexistent"]);
    assert!(!ok && stderr.contains("ClientID"), "{stderr}");
}

/// lab-1's certificate proves lab-1 on each encrypted transport: ads resolves
/// (the lab group); without a certificate, or with one nobody listed, the
/// source's group (office) answers NXDOMAIN.
#[test]
fn a_listed_certificate_proves_its_client_on_dot_doh_and_doq() {
    let lab = ClientCert::issue("lab-1");
    let stranger = ClientCert::issue("stranger");
    let s = start(&lab.pin, "");

    let text = kdig_dot(s.dot, None, Some(&lab), "ads.fwd.test");
    assert!(
        resolved(&text, "192.0.2.9"),
        "DoT, lab-1's certificate: {text}"
    );
    for cert in [None, Some(&stranger)] {
        let text = kdig_dot(s.dot, None, cert, "ads.fwd.test");
        assert!(status(&text, "NXDOMAIN"), "DoT, the office answer: {text}");
    }

    let (code, addrs) = curl_doh(&s, "/dns-query", Some(&lab), "ads.fwd.test");
    assert_eq!(
        (code, addrs),
        (ResponseCode::NoError, vec!["192.0.2.9".to_string()])
    );
    for cert in [None, Some(&stranger)] {
        let (code, _) = curl_doh(&s, "/dns-query", cert, "ads.fwd.test");
        assert_eq!(code, ResponseCode::NXDomain, "DoH, the office answer");
    }

    let text = doq(&s, Some(&lab), "ads.fwd.test");
    assert!(
        text.contains("answer NOERROR"),
        "DoQ, lab-1's certificate: {text}"
    );
    for cert in [None, Some(&stranger)] {
        let text = doq(&s, cert, "ads.fwd.test");
        assert!(
            text.contains("answer NXDOMAIN"),
            "DoQ, the office answer: {text}"
        );
    }
}

/// Another client's ClientID with a certificate nobody listed is an unproven
/// claim: lab-1's (wider) is refused, agent-1's (stricter) applies. lab-1's own
/// certificate names lab-1 whatever ClientID comes with it.
#[test]
fn a_client_id_with_a_certificate_nobody_listed_never_widens() {
    let lab = ClientCert::issue("lab-1");
    let stranger = ClientCert::issue("stranger");
    let s = start(&lab.pin, "");

    let (code, _) = curl_doh(&s, "/dns-query/lab-1", Some(&stranger), "ads.fwd.test");
    assert_eq!(
        code,
        ResponseCode::NXDomain,
        "lab-1's ClientID, not its certificate"
    );
    let text = kdig_dot(
        s.dot,
        Some("lab-1.dns.test"),
        Some(&stranger),
        "ads.fwd.test",
    );
    assert!(status(&text, "NXDOMAIN"), "{text}");

    let text = kdig_dot(
        s.dot,
        Some("agent-1.dns.test"),
        Some(&stranger),
        "mail.fwd.test",
    );
    assert!(
        status(&text, "NXDOMAIN"),
        "agent-1's stricter group: {text}"
    );
    let text = kdig_dot(s.dot, Some("agent-1.dns.test"), Some(&lab), "ads.fwd.test");
    assert!(
        resolved(&text, "192.0.2.9"),
        "the certificate names lab-1: {text}"
    );
    assert!(
        s.dg.log().contains("may not widen"),
        "the refused claim is logged: {}",
        s.dg.log()
    );
}

/// With `allow_clients` excluding the test's source, only a proven certificate
/// gets an answer, and only with `allow_authenticated_anywhere`.
#[test]
fn a_proven_certificate_passes_allow_clients_only_when_allowed_anywhere() {
    let lab = ClientCert::issue("lab-1");
    let stranger = ClientCert::issue("stranger");
    let anywhere = start(
        &lab.pin,
        "allow_clients = [\"192.0.2.0/24\"]\nallow_authenticated_anywhere = true",
    );
    let text = kdig_dot(anywhere.dot, None, Some(&lab), "ads.fwd.test");
    assert!(
        resolved(&text, "192.0.2.9"),
        "proven, from anywhere: {text}"
    );
    let text = doq(&anywhere, Some(&lab), "ads.fwd.test");
    assert!(text.contains("answer NOERROR"), "DoQ: {text}");
    let text = kdig_dot(anywhere.dot, None, Some(&stranger), "www.fwd.test");
    assert!(status(&text, "REFUSED"), "not proven: {text}");
    assert_eq!(
        rcode(&ask(anywhere.plain, "www.fwd.test", RecordType::A)),
        ResponseCode::Refused
    );

    let not_anywhere = start(&lab.pin, "allow_clients = [\"192.0.2.0/24\"]");
    let text = kdig_dot(not_anywhere.dot, None, Some(&lab), "www.fwd.test");
    assert!(status(&text, "REFUSED"), "not switched on: {text}");
}

/// `dnsguard stub --cert --key` presents the agent's certificate: through the
/// stub, ads resolves (lab-1's group); through a stub without it, it does not.
#[test]
fn the_stub_presents_the_agents_certificate() {
    let lab = ClientCert::issue("lab-1");
    let s = start(&lab.pin, "");
    let server_pin =
        s.dg.log()
            .split("spki_pin=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
            .expect("the server logs its pin");
    let stub = |cert: Option<&ClientCert>| {
        let mut args: Vec<String> = [
            "stub",
            "--listen",
            "127.0.0.1:0",
            "--to",
            &format!("tls://{}", s.dot),
            "--pin",
            &server_pin,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if let Some(c) = cert {
            args.extend(["--cert".into(), c.cert().display().to_string()]);
            args.extend(["--key".into(), c.key().display().to_string()]);
        }
        let dir = tempfile::tempdir().unwrap();
        args.extend(["--data-dir".into(), "stub-data".into()]);
        let dg = Dnsguard::start_args(&args, dir, &[]);
        let addr = dg.addr;
        (dg, addr)
    };
    let (_with, addr) = stub(Some(&lab));
    let m = ask(addr, "ads.fwd.test", RecordType::A);
    assert_eq!(common::client::addrs(&m), vec!["192.0.2.9".to_string()]);
    let (_without, addr) = stub(None);
    assert_eq!(
        rcode(&ask(addr, "ads.fwd.test", RecordType::A)),
        ResponseCode::NXDomain
    );
}
