//! DNS over HTTPS (RFC 8484) with real clients on loopback: kdig and dig (GET and
//! POST, HTTP/2), curl resolving through `--doh-url`, HTTP errors, ClientID paths,
//! `allow_clients`, plain HTTP behind a trusted proxy, dnstap's transport, and the
//! abuse cases (handshake garbage, silent connections, oversized bodies, bad
//! base64url, HTTP/2 stream floods and rapid reset).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::Dnsguard;
use common::upstream::FakeUpstream;
use common::wait_for;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const ZONE: &str = "\
www.fwd.test. 300 A 192.0.2.1
short.fwd.test. 42 A 192.0.2.2
web.test. 300 A 127.0.0.1
";

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

struct Doh {
    dg: Dnsguard,
    /// The DNS-over-HTTPS address.
    addr: SocketAddr,
}

impl Doh {
    fn ca(&self) -> PathBuf {
        self.dg.dir.path().join("dnsguard-data/tls/cert.pem")
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
}

/// A server forwarding to `up`, blocking the built-in default list, serving DNS
/// over HTTPS on a free port; `extra` goes into `[server]`, `tail` at the end.
fn start(up: &FakeUpstream, extra: &str, tail: &str) -> Doh {
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nhttps_listen = [\"127.0.0.1:0\"]\n{extra}\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [[lists]]\nname = \"dnsguard-default\"\nsource = \"builtin:default\"\n{tail}",
        up.addr()
    ));
    let addr = logged_addr(&dg, "listening (DNS over HTTPS) addr=");
    Doh { dg, addr }
}

fn logged_addr(dg: &Dnsguard, marker: &str) -> SocketAddr {
    wait_for(Duration::from_secs(10), marker, || {
        dg.log()
            .split(marker)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    })
}

/// Runs a DNS tool (`kdig` or `dig`) with `args`; all it printed.
fn run(tool: &str, args: &[String]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// kdig over HTTPS to `doh`, verifying its certificate for `localhost`; `mode` is
/// `+https` (POST) or `+https-get`, optionally with a path (`+https=/dns-query/x`).
fn kdig(doh: &Doh, mode: &str, extra: &[&str], name: &str) -> String {
    let mut args = vec![
        format!("@{}", doh.addr.ip()),
        "-p".into(),
        doh.addr.port().to_string(),
        mode.into(),
        format!("+tls-ca={}", doh.ca().display()),
        "+tls-hostname=localhost".into(),
        "+timeout=3".into(),
        "+retry=0".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(name.into());
    run("kdig", &args)
}

#[test]
fn kdig_and_dig_resolve_and_get_block_answers_over_https() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doh = start(&up, "", "");
    for mode in ["+https", "+https-get"] {
        let text = kdig(&doh, mode, &[], "www.fwd.test");
        assert!(text.contains("status: NOERROR"), "{mode}: {text}");
        assert!(text.contains("192.0.2.1"), "{mode}: {text}");
        assert!(text.contains("HTTP/2"), "{mode}: kdig used HTTP/2: {text}");
        assert!(text.contains("status: 200"), "{mode}: {text}");
        let text = kdig(&doh, mode, &[], "doubleclick.net");
        assert!(text.contains("0.0.0.0"), "{mode}: blocked: {text}");
    }
    // BIND 9.18's dig: POST and GET.
    for mode in ["+https", "+https-get"] {
        let text = run(
            "dig",
            &[
                format!("@{}", doh.addr.ip()),
                "-p".into(),
                doh.addr.port().to_string(),
                mode.into(),
                format!("+tls-ca={}", doh.ca().display()),
                "+tls-hostname=localhost".into(),
                "+time=3".into(),
                "+tries=1".into(),
                "short.fwd.test".into(),
            ],
        );
        assert!(text.contains("status: NOERROR"), "dig {mode}: {text}");
        assert!(text.contains("192.0.2.2"), "dig {mode}: {text}");
        assert!(text.contains("(HTTPS"), "dig {mode} used HTTPS: {text}");
    }
    // The blocked name never reached the upstream; the cached one did once.
    assert_eq!(up.queries_for("doubleclick.net."), 0);
    assert_eq!(up.queries_for("www.fwd.test."), 1);
}

/// curl with `--doh-url` resolves a name through dnsguard and then fetches a
/// local web server by that name; a blocked name resolves to the null address.
#[test]
fn curl_resolves_names_through_doh() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doh = start(&up, "", "[rebinding]\nallow = [\"web.test\"]\n");
    let web = common::http::HttpServer::start(common::http::Response::ok("hello via doh"));
    let curl = |url: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-v", "--max-time", "5", "--doh-url"])
            .arg(doh.url("/dns-query"))
            .arg("--cacert")
            .arg(doh.ca())
            .arg(url)
            .output()
            .expect("run curl");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (body, log) = curl(&format!("http://web.test:{}/", web.addr.port()));
    assert_eq!(body, "hello via doh", "{log}");
    assert!(log.contains("DoH A: 127.0.0.1"), "{log}");
    assert!(up.queries_for("web.test.") >= 1, "resolved by dnsguard");
    let (_, log) = curl(&format!("http://doubleclick.net:{}/", web.addr.port()));
    assert!(log.contains("DoH A: 0.0.0.0"), "{log}");
}

/// An HTTPS request with curl: (status, headers, body).
fn curl_https(doh: &Doh, args: &[&str], path: &str) -> (u16, String, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-D", "/dev/stderr", "--cacert"])
        .arg(doh.ca())
        .args(args)
        .arg(doh.url(path))
        .output()
        .expect("run curl");
    let headers = String::from_utf8_lossy(&out.stderr).into_owned();
    let status = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("HTTP/")?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no status: {headers}"));
    (status, headers, out.stdout)
}

fn query_bytes(name: &str) -> Vec<u8> {
    let ask = common::client::Ask::default();
    common::client::query_message(name, RecordType::A, &ask)
        .to_vec()
        .unwrap()
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn http_errors_and_cache_lifetime_follow_rfc_8484() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doh = start(&up, "", "");
    let q = b64url(&query_bytes("short.fwd.test"));
    // GET: 200, the DNS answer, cacheable for its TTL (42 s).
    let (status, headers, body) = curl_https(&doh, &[], &format!("/dns-query?dns={q}"));
    assert_eq!(status, 200, "{headers}");
    assert!(
        headers.contains("content-type: application/dns-message"),
        "{headers}"
    );
    assert!(headers.contains("cache-control: max-age=42"), "{headers}");
    let answer = Message::from_vec(&body).unwrap();
    assert_eq!(common::client::addrs(&answer), ["192.0.2.2"]);
    // Over HTTP/1.1 too.
    let (status, headers, _) = curl_https(&doh, &["--http1.1"], &format!("/dns-query?dns={q}"));
    assert_eq!(status, 200, "{headers}");
    assert!(headers.starts_with("HTTP/1.1"), "{headers}");

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), query_bytes("www.fwd.test")).unwrap();
    let data = format!("@{}", file.path().display());
    let post = ["-X", "POST", "--data-binary", &data];
    let dns_ct = ["-H", "content-type: application/dns-message"];
    let (status, _, body) = curl_https(&doh, &[&post[..], &dns_ct[..]].concat(), "/dns-query");
    assert_eq!(status, 200);
    assert_eq!(
        common::client::addrs(&Message::from_vec(&body).unwrap()),
        ["192.0.2.1"]
    );
    let cases: Vec<(Vec<&str>, String, u16)> = vec![
        (vec![], "/elsewhere".into(), 404),
        (vec![], "/dns-query/a/b/c".into(), 404),
        (vec!["-X", "PUT"], "/dns-query".into(), 405),
        (
            [&post[..], &["-H", "content-type: text/plain"][..]].concat(),
            "/dns-query".into(),
            415,
        ),
        (vec![], "/dns-query".into(), 400),
        (vec![], "/dns-query?dns=***".into(), 400),
        (
            vec![],
            format!("/dns-query?dns={}", b64url(b"garbage")),
            400,
        ),
    ];
    for (args, path, want) in cases {
        let (status, headers, _) = curl_https(&doh, &args, &path);
        assert_eq!(status, want, "{args:?} {path}: {headers}");
        if want == 405 {
            assert!(headers.contains("allow: GET, POST"), "{headers}");
        }
    }
    // Still answering after all that.
    let (status, _, _) = curl_https(&doh, &[], &format!("/dns-query?dns={q}"));
    assert_eq!(status, 200);
}

#[test]
fn oversized_bodies_get_413_and_the_service_keeps_answering() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doh = start(&up, "", "");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), vec![0u8; 70_000]).unwrap();
    let data = format!("@{}", file.path().display());
    let base = [
        "--http1.1",
        "-X",
        "POST",
        "-H",
        "content-type: application/dns-message",
        "--data-binary",
        &data,
    ];
    // Announced length over the cap, and a chunked body with no length.
    let (status, h, _) = curl_https(&doh, &base, "/dns-query");
    assert_eq!(status, 413, "{h}");
    let chunked = [&base[..], &["-H", "transfer-encoding: chunked"][..]].concat();
    let (status, h, _) = curl_https(&doh, &chunked, "/dns-query");
    assert_eq!(status, 413, "{h}");
    // A GET parameter too long for any DNS message.
    let long = format!("/dns-query?dns={}", "A".repeat(90_000));
    let (status, h, _) = curl_https(&doh, &["--http1.1"], &long);
    assert!(status == 413 || status == 414, "{h}");
    let text = kdig(&doh, "+https", &[], "www.fwd.test");
    assert!(text.contains("192.0.2.1"), "{text}");
}

/// The ClientID path forms are answered like `/dns-query`, and the secret (in the
/// path or an `Authorization` header) never appears in the server's log.
#[test]
fn client_id_paths_are_answered_and_secrets_not_logged() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doh = start(&up, "", "");
    for path in ["/dns-query/agent-1", "/dns-query/agent-1/S3cretPathToken"] {
        let text = kdig(&doh, &format!("+https={path}"), &[], "www.fwd.test");
        assert!(text.contains("192.0.2.1"), "{path}: {text}");
        assert!(text.contains("status: 200"), "{path}: {text}");
    }
    let q = b64url(&query_bytes("short.fwd.test"));
    let (status, _, body) = curl_https(
        &doh,
        &["-H", "authorization: Bearer S3cretHeaderToken"],
        &format!("/dns-query/agent-2?dns={q}"),
    );
    assert_eq!(status, 200);
    assert_eq!(
        common::client::addrs(&Message::from_vec(&body).unwrap()),
        ["192.0.2.2"]
    );
    // An id with a character outside the token set is not a ClientID path.
    let (status, _, _) = curl_https(&doh, &[], &format!("/dns-query/a%20b?dns={q}"));
    assert_eq!(status, 404);
    let log = doh.dg.log();
    assert!(log.contains("DEBUG"), "the debug log is on: {log}");
    assert!(!log.contains("S3cret"), "a secret in the log:\n{log}");
}

#[test]
fn doh_clients_follow_allow_clients() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doh = start(&up, "allow_clients = [\"127.0.0.2/32\"]", "");
    let text = kdig(&doh, "+https", &[], "www.fwd.test");
    assert!(text.contains("status: REFUSED"), "{text}");
    let text = kdig(&doh, "+https", &["-b", "127.0.0.2"], "www.fwd.test");
    assert!(text.contains("192.0.2.1"), "{text}");
}

/// One HTTP/1.1 POST over plain TCP from `from` with extra header lines; the
/// DNS answer's rcode.
fn http_post(server: SocketAddr, from: IpAddr, headers: &str, name: &str) -> ResponseCode {
    let mut s = tcp_from(from, server);
    let body = query_bytes(name);
    let head = format!(
        "POST /dns-query HTTP/1.1\r\nhost: dns.example\r\n\
         content-type: application/dns-message\r\ncontent-length: {}\r\n{headers}\
         connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response");
    let head = String::from_utf8_lossy(&reply[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Message::from_vec(&reply[split + 4..])
        .unwrap()
        .metadata
        .response_code
}

fn tcp_from(from: IpAddr, server: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(from, 0).into()).unwrap();
    s.connect(&server.into()).unwrap();
    s.into()
}

/// Behind a reverse proxy on plain HTTP: `X-Forwarded-For` and `Forwarded` name
/// the client only when the proxy is in `trusted_proxies`; from anyone else the
/// headers are ignored (a client cannot claim an allowed address).
#[test]
fn forwarding_headers_count_only_from_trusted_proxies() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nhttp_dns_listen = [\"127.0.0.1:0\"]\n\
         trusted_proxies = [\"127.0.3.1/32\"]\nallow_clients = [\"127.0.5.0/24\"]\n\
         [resolver]\nupstreams = [\"{}\"]\n",
        up.addr()
    ));
    let http = logged_addr(&dg, "listening (DNS over HTTP, for a reverse proxy) addr=");
    let proxy: IpAddr = "127.0.3.1".parse().unwrap();
    let stranger: IpAddr = "127.0.4.1".parse().unwrap();
    let allowed = "127.0.5.9";
    for header in [
        format!("x-forwarded-for: {allowed}\r\n"),
        format!("forwarded: for={allowed};proto=https\r\n"),
        // The client's own claim comes first; the proxy appends what it saw.
        format!("x-forwarded-for: 127.0.9.9, {allowed}\r\n"),
    ] {
        assert_eq!(
            http_post(http, proxy, &header, "www.fwd.test"),
            ResponseCode::NoError,
            "trusted proxy, {header}"
        );
        assert_eq!(
            http_post(http, stranger, &header, "www.fwd.test"),
            ResponseCode::Refused,
            "untrusted peer, {header}"
        );
    }
    // The proxy itself is not an allowed client, and a forwarded address outside
    // allow_clients is refused.
    assert_eq!(
        http_post(http, proxy, "", "www.fwd.test"),
        ResponseCode::Refused
    );
    assert_eq!(
        http_post(
            http,
            proxy,
            "x-forwarded-for: 127.0.9.9\r\n",
            "www.fwd.test"
        ),
        ResponseCode::Refused
    );
}

#[test]
fn handshake_garbage_leaves_the_service_answering() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doh = start(&up, "", "");
    common::client::send_tls_garbage(doh.addr);
    // Plain HTTP to the TLS port is garbage too.
    let mut s = TcpStream::connect(doh.addr).unwrap();
    let _ = s.write_all(b"GET /dns-query?dns=AAAB HTTP/1.1\r\nhost: x\r\n\r\n");
    let text = kdig(&doh, "+https", &[], "www.fwd.test");
    assert!(text.contains("192.0.2.1"), "{text}");
}

/// Silent connections (no handshake, or a handshake and then half a request)
/// are bounded per client and in total, and closed after the idle timeout.
#[test]
fn silent_and_slow_connections_are_bounded_and_closed() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doh = start(
        &up,
        "tcp_idle_timeout_secs = 2\ntcp_max_connections = 20\ntcp_max_connections_per_client = 5",
        "",
    );
    let started = Instant::now();
    let mut idle = Vec::new();
    for i in 0..40u8 {
        let from: IpAddr = format!("127.0.2.{}", 1 + i % 20).parse().unwrap();
        idle.push(tcp_from(from, doh.addr));
    }
    for _ in 0..20 {
        idle.push(tcp_from("127.0.0.9".parse().unwrap(), doh.addr));
    }
    // After a completed handshake: half a request's headers, never finished.
    let mut slow = tls(
        doh.addr,
        &doh.ca(),
        "127.0.0.7".parse().unwrap(),
        b"http/1.1",
    );
    slow.write_all(b"GET /dns-query?dns=AAAB HTTP/1.1\r\nhost: local")
        .unwrap();
    slow.flush().unwrap();
    let text = kdig(&doh, "+https", &[], "www.fwd.test");
    assert!(text.contains("192.0.2.1"), "over the cap: {text}");
    wait_for(
        Duration::from_secs(10),
        "silent connections closed down to the caps",
        || {
            let open: Vec<bool> = idle
                .iter()
                .map(|s| !common::client::closed_by_server(s))
                .collect();
            let total = open.iter().filter(|o| **o).count();
            let one_client = open[40..].iter().filter(|o| **o).count();
            (total <= 20 && one_client <= 5).then_some(())
        },
    );
    wait_for(
        Duration::from_secs(10),
        "every silent connection closed",
        || {
            idle.iter()
                .all(common::client::closed_by_server)
                .then_some(())
        },
    );
    // The half request: the server ends the TLS session (its session tickets
    // may still be unread, so read through them to the end).
    slow.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let end = slow.read_to_end(&mut rest);
    assert!(
        !matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "half request still open: {end:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "closed after {took:?}, before the 2 s idle timeout"
    );
}

/// A blocking TLS client for `server` from `from`, trusting `ca`, offering `alpn`.
fn tls(
    server: SocketAddr,
    ca: &std::path::Path,
    from: IpAddr,
    alpn: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp_from(from, server));
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    assert_eq!(stream.conn.alpn_protocol(), Some(alpn));
    stream
}

/// A minimal HTTP/2 client speaking raw frames, for what real clients never do.
struct H2 {
    s: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    out: Vec<u8>,
}

const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const GOAWAY: u8 = 7;

impl H2 {
    fn connect(doh: &Doh) -> Self {
        let mut h = H2 {
            s: tls(doh.addr, &doh.ca(), localhost(), b"h2"),
            out: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        };
        h.frame(4, 0, 0, &[]); // SETTINGS, none changed
        h
    }

    fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        self.out.extend_from_slice(&len.to_be_bytes()[1..]);
        self.out.extend_from_slice(&[kind, flags]);
        self.out.extend_from_slice(&stream.to_be_bytes());
        self.out.extend_from_slice(payload);
    }

    /// HEADERS for a GET of `path` (END_STREAM) or the start of a POST whose
    /// body never comes.
    fn request(&mut self, stream: u32, get_path: Option<&str>) {
        let mut block = Vec::new();
        let literal = |block: &mut Vec<u8>, index: u8, value: &str| {
            // Literal without indexing, indexed name (RFC 7541 §6.2.2).
            if index < 15 {
                block.push(index);
            } else {
                block.extend_from_slice(&[0x0f, index - 15]);
            }
            hpack_int(block, 0, 7, value.len());
            block.extend_from_slice(value.as_bytes());
        };
        block.push(0x87); // :scheme https
        literal(&mut block, 1, "localhost"); // :authority
        match get_path {
            Some(path) => {
                block.push(0x82); // :method GET
                literal(&mut block, 4, path); // :path
                self.frame(HEADERS, 0x5, stream, &block);
            }
            None => {
                block.push(0x83); // :method POST
                literal(&mut block, 4, "/dns-query");
                literal(&mut block, 31, "application/dns-message"); // content-type
                self.frame(HEADERS, 0x4, stream, &block);
            }
        }
    }

    fn reset(&mut self, stream: u32) {
        self.frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()); // CANCEL
    }

    /// Sends what is queued; false once the server has closed.
    fn flush(&mut self) -> bool {
        let out = std::mem::take(&mut self.out);
        self.s.write_all(&out).and_then(|_| self.s.flush()).is_ok()
    }

    /// Reads frames until the server closes or goes quiet for `quiet`: (type,
    /// stream, error code) of each, and whether the server closed.
    fn read_frames(&mut self, quiet: Duration) -> (Vec<(u8, u32, u32)>, bool) {
        self.s.sock.set_read_timeout(Some(quiet)).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        let closed = loop {
            match self.s.read(&mut chunk) {
                Ok(0) => break true,
                Err(e) => {
                    use std::io::ErrorKind::{TimedOut, WouldBlock};
                    break !matches!(e.kind(), WouldBlock | TimedOut);
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut frames = Vec::new();
        let mut rest = &buf[..];
        while rest.len() >= 9 {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let stream = u32::from_be_bytes(rest[5..9].try_into().unwrap()) & 0x7fff_ffff;
            let Some(payload) = rest.get(9..9 + len) else {
                break;
            };
            let code = match rest[3] {
                RST_STREAM => u32::from_be_bytes(payload[..4].try_into().unwrap()),
                GOAWAY => u32::from_be_bytes(payload[4..8].try_into().unwrap()),
                _ => 0,
            };
            frames.push((rest[3], stream, code));
            rest = &rest[9 + len..];
        }
        (frames, closed)
    }
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// CVE-2023-44487: a client opening streams and cancelling each at once. The
/// connection is closed long before the flood is through, the work it caused is
/// bounded, and other clients are answered throughout.
#[test]
fn http2_rapid_reset_is_cut_off_and_the_service_keeps_answering() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doh = start(&up, "", "");
    let mut h2 = H2::connect(&doh);
    let flood = 3000u32;
    let mut sent = 0;
    let mut cut_off = false;
    for i in 0..flood {
        let stream = 1 + 2 * i;
        let q = b64url(&query_bytes(&format!("rr{i}.fwd.test")));
        h2.request(stream, Some(&format!("/dns-query?dns={q}")));
        h2.reset(stream);
        if i % 50 == 49 {
            if !h2.flush() {
                cut_off = true;
                break;
            }
            sent = i + 1;
        }
    }
    let (frames, closed) = h2.read_frames(Duration::from_secs(3));
    let goaway = frames.iter().find(|f| f.0 == GOAWAY);
    assert!(
        cut_off || closed || goaway.is_some(),
        "the flooding connection is still open after {sent} resets: {frames:?}"
    );
    assert!(sent < flood, "the whole flood of {flood} was taken");
    if let Some(&(_, _, code)) = goaway {
        assert_eq!(code, 11, "GOAWAY ENHANCE_YOUR_CALM");
    }
    let text = kdig(&doh, "+https", &[], "www.fwd.test");
    assert!(text.contains("192.0.2.1"), "{text}");
    // Each cancelled stream could have cost an upstream query; far fewer reached it.
    let reached = (0..flood)
        .map(|i| up.queries_for(&format!("rr{i}.fwd.test.")))
        .sum::<u64>();
    assert!(
        reached <= 250,
        "{reached} upstream queries from a rapid-reset flood"
    );
}

/// Rapid reset of requests the server has already accepted and is answering
/// (h2's own limit counts only streams reset before they are accepted): the
/// connection is closed after about 100 cancelled requests, and other clients
/// are answered.
#[test]
fn http2_cancelling_accepted_requests_closes_the_connection() {
    let up = FakeUpstream::start(localhost(), ZONE);
    up.set_mode(common::upstream::Mode::Dead); // every request stays in flight
    let doh = start(&up, "", "");
    let mut h2 = H2::connect(&doh);
    let mut cancelled = 0;
    let mut closed = false;
    'flood: for batch in 0..10u32 {
        let names: Vec<String> = (0..50).map(|i| format!("ca{batch}-{i}.fwd.test")).collect();
        let streams: Vec<u32> = (0..50).map(|i| 1 + 2 * (batch * 50 + i)).collect();
        for (name, &stream) in names.iter().zip(&streams) {
            let q = b64url(&query_bytes(name));
            h2.request(stream, Some(&format!("/dns-query?dns={q}")));
        }
        if !h2.flush() {
            closed = true;
            break;
        }
        // Every request of the batch is being worked on: its query reached the
        // upstream. (A closed connection's never do.)
        let deadline = Instant::now() + Duration::from_secs(5);
        while !names.iter().all(|n| up.queries_for(&format!("{n}.")) > 0) {
            if Instant::now() > deadline {
                break 'flood;
            }
            std::thread::yield_now();
        }
        for &stream in &streams {
            h2.reset(stream);
        }
        if !h2.flush() {
            closed = true;
            break;
        }
        cancelled += 50;
    }
    if !closed {
        closed = h2.read_frames(Duration::from_secs(3)).1;
    }
    assert!(closed, "still open after {cancelled} cancelled requests");
    // The server closes on the 101st cancellation (in the third batch); the
    // next batch may already be read and at work by then, never a later one.
    // (Without the budget: open after all 500.)
    assert!(
        cancelled <= 200,
        "closed only after {cancelled} cancelled requests"
    );
    up.set_mode(common::upstream::Mode::Normal);
    let text = kdig(&doh, "+https", &[], "www.fwd.test");
    assert!(text.contains("192.0.2.1"), "{text}");
}

/// More streams at once than the server allows: the excess is refused (or the
/// connection told to calm down), and other clients are answered.
#[test]
fn http2_stream_flood_is_capped() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doh = start(&up, "", "");
    let mut h2 = H2::connect(&doh);
    for i in 0..300u32 {
        h2.request(1 + 2 * i, None); // a POST whose body never comes
    }
    assert!(h2.flush());
    let (frames, _) = h2.read_frames(Duration::from_secs(2));
    let refused = frames
        .iter()
        .filter(|f| f.0 == RST_STREAM && f.2 == 7) // REFUSED_STREAM
        .count();
    let calm = frames.iter().any(|f| f.0 == GOAWAY && f.2 == 11);
    assert!(
        refused > 0 || calm,
        "300 concurrent streams all accepted: {frames:?}"
    );
    // No stream past the 100th got an answer (HEADERS) or stayed open silently.
    assert!(
        !frames.iter().any(|f| f.0 == HEADERS && f.1 > 2 * 100),
        "{frames:?}"
    );
    let text = kdig(&doh, "+https", &[], "www.fwd.test");
    assert!(text.contains("192.0.2.1"), "{text}");
}

#[test]
fn malformed_base64url_gets_400_and_the_service_keeps_answering() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doh = start(&up, "", "");
    let good = b64url(&query_bytes("www.fwd.test"));
    for bad in [
        "A",                                        // impossible length
        "AAAA+/==",                                 // standard alphabet, not url-safe
        "%00%ff",                                   // not base64 at all
        &good[..good.len() - 3],                    // truncated: not a DNS message
        "________________________________________", // decodes, not DNS
    ] {
        let (status, h, _) = curl_https(&doh, &[], &format!("/dns-query?dns={bad}"));
        assert_eq!(status, 400, "dns={bad}: {h}");
    }
    let (status, _, body) = curl_https(&doh, &[], &format!("/dns-query?dns={good}"));
    assert_eq!(status, 200);
    assert_eq!(
        common::client::addrs(&Message::from_vec(&body).unwrap()),
        ["192.0.2.1"]
    );
}

/// dnstap reports a DNS-over-HTTPS query as DOH.
#[test]
fn dnstap_reports_doh_queries_as_doh() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("tap.sock");
    let file = tmp.path().join("tap.fstrm");
    let capture = common::tap::Capture::unix(&socket, &file);
    let doh = start(
        &up,
        "",
        &format!("[dnstap]\ntarget = \"unix:{}\"\n", socket.display()),
    );
    let text = kdig(&doh, "+https", &[], "www.fwd.test");
    assert!(text.contains("192.0.2.1"), "{text}");
    assert!(doh.dg.stop_with(libc::SIGTERM).success());
    let file = capture.finish();
    let protocols = common::tap::socket_protocols(&std::fs::read(&file).unwrap());
    assert_eq!(protocols, [4, 4], "dnstap SocketProtocol DOH = 4");
}

/// The DoH listener presents the certificate in force: one renewed on disk is
/// served after SIGHUP, like DoT's.
#[test]
fn a_certificate_renewed_on_disk_is_served_after_sighup() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let certs = tempfile::tempdir().unwrap();
    let write_cert = || {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(certs.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(certs.path().join("key.pem"), key.serialize_pem()).unwrap();
    };
    write_cert();
    let doh = start(
        &up,
        "",
        &format!(
            "[tls]\ncert_file = \"{0}/cert.pem\"\nkey_file = \"{0}/key.pem\"\n",
            certs.path().display()
        ),
    );
    let pin = |n: usize| {
        let log = doh.dg.log();
        let pin = log
            .split("spki_pin=")
            .nth(n + 1)?
            .split_whitespace()
            .next()?;
        Some(format!("+tls-pin={pin}"))
    };
    let by_pin = |pin: &str| {
        let args: Vec<String> = [
            format!("@{}", doh.addr.ip()),
            "-p".into(),
            doh.addr.port().to_string(),
            "+https".into(),
            pin.into(),
            "+timeout=3".into(),
            "+retry=0".into(),
            "www.fwd.test".into(),
        ]
        .into();
        run("kdig", &args)
    };
    let old = pin(0).expect("pin logged at start");
    assert!(by_pin(&old).contains("192.0.2.1"));
    write_cert();
    doh.dg.signal(libc::SIGHUP);
    // The pin SIGHUP's reload logged (the file watcher would renew the
    // certificate too, a period later, and says so in other words).
    let new = wait_for(Duration::from_secs(10), "the reloaded pin", || {
        doh.dg
            .pin_logged_with("TLS certificate reloaded")
            .map(|p| format!("+tls-pin={p}"))
    });
    assert_ne!(new, old);
    let text = by_pin(&new);
    assert!(text.contains("192.0.2.1"), "{text}");
    let text = by_pin(&old);
    assert!(!text.contains("192.0.2.1"), "old pin accepted: {text}");
}

/// HTTP/2 POST bodies held back: a client opening 100 streams and sending body
/// bytes on all of them as fast as flow control lets it, never finishing one,
/// gets to send only a couple of bodies' worth per connection (two bodies read at
/// once, a small connection window), not 100 × 64 KB. The service keeps
/// answering.
#[test]
fn http2_unfinished_bodies_are_bounded_per_connection() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doh = start(&up, "tcp_idle_timeout_secs = 5", "");
    let mut h2 = H2::connect(&doh);
    let streams: Vec<u32> = (0..100).map(|i| 1 + 2 * i).collect();
    for &s in &streams {
        h2.request(s, None);
    }
    assert!(h2.flush());
    // Flow control: 65535 per stream and for the connection until the server
    // says otherwise (SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_UPDATE).
    let mut conn_window: i64 = 65535;
    let mut initial: i64 = 65535;
    let mut window: std::collections::HashMap<u32, i64> = streams.iter().map(|&s| (s, 0)).collect();
    let mut sent_on: std::collections::HashMap<u32, i64> = window.clone();
    let mut total = 0i64;
    let mut inbuf = Vec::new();
    h2.s.sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut last_progress = Instant::now();
    while Instant::now() < deadline && last_progress.elapsed() < Duration::from_secs(1) {
        let mut chunk = [0u8; 16384];
        match h2.s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => inbuf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        while inbuf.len() >= 9 {
            let len = u32::from_be_bytes([0, inbuf[0], inbuf[1], inbuf[2]]) as usize;
            if inbuf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (inbuf[3], inbuf[4]);
            let stream = u32::from_be_bytes(inbuf[5..9].try_into().unwrap()) & 0x7fff_ffff;
            let payload = inbuf[9..9 + len].to_vec();
            inbuf.drain(..9 + len);
            match kind {
                4 if flags & 1 == 0 => {
                    for setting in payload.chunks(6) {
                        if u16::from_be_bytes([setting[0], setting[1]]) == 4 {
                            initial =
                                i64::from(u32::from_be_bytes(setting[2..6].try_into().unwrap()));
                        }
                    }
                    h2.frame(4, 1, 0, &[]); // SETTINGS ACK
                }
                8 => {
                    let inc = i64::from(
                        u32::from_be_bytes(payload[..4].try_into().unwrap()) & 0x7fff_ffff,
                    );
                    if stream == 0 {
                        conn_window += inc;
                    } else if let Some(w) = window.get_mut(&stream) {
                        *w += inc;
                    }
                }
                _ => {}
            }
        }
        // Send what the windows allow, never more than 60000 bytes a stream (so
        // no body goes over the size cap) and never the end of a body.
        for &s in &streams {
            let room = (initial + window[&s] - sent_on[&s])
                .min(conn_window)
                .min(60_000 - sent_on[&s])
                .min(16_384);
            if room > 0 {
                h2.frame(0, 0, s, &vec![0u8; room as usize]);
                *sent_on.get_mut(&s).unwrap() += room;
                conn_window -= room;
                total += room;
                last_progress = Instant::now();
            }
        }
        if !h2.flush() {
            break;
        }
    }
    assert!(
        total <= 2 * 65_535 + 2 * 65_535 + 16_384,
        "the server let one connection send {total} bytes of unfinished bodies"
    );
    let text = kdig(&doh, "+https", &[], "www.fwd.test");
    assert!(text.contains("192.0.2.1"), "{text}");
}

/// Frames of a plaintext HTTP/2 byte stream: (type, flags, stream) of each
/// whole frame taken off the front of `buf`.
fn take_frames(buf: &mut Vec<u8>) -> Vec<(u8, u8, u32)> {
    let mut frames = Vec::new();
    while buf.len() >= 9 {
        let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
        if buf.len() < 9 + len {
            break;
        }
        let stream = u32::from_be_bytes(buf[5..9].try_into().unwrap()) & 0x7fff_ffff;
        frames.push((buf[3], buf[4], stream));
        buf.drain(..9 + len);
    }
    frames
}

const DATA: u8 = 0;
const END_STREAM: u8 = 1;

/// Requests that arrive together are answered together: the answers to a batch
/// of HTTP/2 GETs (answered at once: blocked names) leave in one TLS record,
/// one write, not a record and a write per stream.
#[test]
fn http2_answers_to_a_batch_of_requests_leave_in_one_tls_record() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let doh = start(&up, "", "");
    let mut h2 = H2::connect(&doh);
    let path = format!("/dns-query?dns={}", b64url(&query_bytes("doubleclick.net")));
    // First one request, and everything the server sends before its answer
    // (SETTINGS, WINDOW_UPDATE, session tickets).
    h2.request(1, Some(&path));
    assert!(h2.flush());
    h2.s.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut plain = Vec::new();
    let mut chunk = [0u8; 16384];
    'first: loop {
        let n = h2.s.read(&mut chunk).expect("the first answer");
        assert!(n > 0, "closed before the first answer");
        plain.extend_from_slice(&chunk[..n]);
        for (kind, flags, stream) in take_frames(&mut plain) {
            if (kind, stream) == (DATA, 1) && flags & END_STREAM != 0 {
                break 'first;
            }
        }
    }
    assert!(plain.is_empty());
    // Then ten at once (one write, one TLS record from the client).
    h2.frame(4, 1, 0, &[]); // SETTINGS ACK
    let batch: Vec<u32> = (1..=10).map(|i| 1 + 2 * i).collect();
    for &stream in &batch {
        h2.request(stream, Some(&path));
    }
    assert!(h2.flush());
    // Every answer, counting the TLS records they came in.
    let mut raw: Vec<u8> = Vec::new();
    let mut records = 0;
    let mut answered = Vec::new();
    while answered.len() < batch.len() {
        let n = h2.s.sock.read(&mut chunk).expect("the batch's answers");
        assert!(n > 0, "closed after {answered:?}");
        raw.extend_from_slice(&chunk[..n]);
        while raw.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([raw[3], raw[4]]));
            if raw.len() < 5 + len {
                break;
            }
            records += 1;
            let record: Vec<u8> = raw.drain(..5 + len).collect();
            h2.s.conn.read_tls(&mut &record[..]).unwrap();
            h2.s.conn.process_new_packets().unwrap();
            let mut reader = h2.s.conn.reader();
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => plain.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        for (kind, flags, stream) in take_frames(&mut plain) {
            if kind == DATA && flags & END_STREAM != 0 {
                answered.push(stream);
            }
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, batch);
    assert_eq!(records, 1, "ten answers in {records} TLS records");
}

/// HTTP/2 without TLS and without ALPN (prior knowledge, as a reverse proxy may
/// speak it to its backend) on the plain-HTTP listener: the connection's first
/// bytes pick the protocol. A blocked name (answered at once) and a forwarded
/// one (answered from a task of its own).
#[test]
fn http2_with_prior_knowledge_is_served_on_plain_http() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nhttp_dns_listen = [\"127.0.0.1:0\"]\n\
         trusted_proxies = [\"127.0.0.1/32\"]\n\
         [resolver]\nupstreams = [\"{}\"]\n\
         [[lists]]\nname = \"dnsguard-default\"\nsource = \"builtin:default\"\n",
        up.addr()
    ));
    let http = logged_addr(&dg, "listening (DNS over HTTP, for a reverse proxy) addr=");
    for (name, want) in [
        ("doubleclick.net", "0.0.0.0"),
        ("www.fwd.test", "192.0.2.1"),
    ] {
        let url = format!("http://{http}/dns-query?dns={}", b64url(&query_bytes(name)));
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "--http2-prior-knowledge",
                "-D",
                "-",
            ])
            .args(["-o", "/dev/null", "-w", "%{http_version}"])
            .arg(&url)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("HTTP/2 200"), "{name}: {text}");
        assert!(text.ends_with('2'), "{name}: {text}");
        let body = Command::new("curl")
            .args(["-sS", "--max-time", "5", "--http2-prior-knowledge"])
            .arg(&url)
            .output()
            .expect("run curl")
            .stdout;
        let answer = Message::from_vec(&body).unwrap();
        assert_eq!(common::client::addrs(&answer), [want], "{name}");
    }
}
