//! Answers over the stream transports (TCP, DNS over TLS, HTTPS and QUIC) come
//! through the in-place answer path the UDP workers use (`dns::fast`); a stream
//! has no UDP size limit, so an answer larger than 512 bytes, and one larger
//! than 4 KB, must come whole (no TC, every record), both when
//! it is fetched (a miss) and when it comes from the cache (a hit), with real
//! clients: hickory over TCP, kdig over TLS, curl over HTTPS, dnspython over QUIC.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::client::{Ask, exchange, query_message};
use common::server::Dnsguard;
use common::upstream::FakeUpstream;
use common::wait_for;
use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};

/// A name with this many A records: about 700 bytes, past UDP's 512.
const MID: (&str, u8) = ("mid.fwd.test", 40);
/// About 4.8 KB: past any UDP size.
const BIG: (&str, u8) = ("big.fwd.test", 250);

/// The addresses of a set's records: documentation addresses (a private one
/// would be a rebinding answer, blocked).
fn addresses((_, n): (&str, u8)) -> Vec<Ipv4Addr> {
    let net = if n == MID.1 {
        [192, 0, 2]
    } else {
        [198, 51, 100]
    };
    (0..n)
        .map(|i| Ipv4Addr::new(net[0], net[1], net[2], i))
        .collect()
}

/// The zone of `set` under `name`.
fn zone(set: (&str, u8), name: &str) -> String {
    addresses(set)
        .iter()
        .map(|ip| format!("{name}. 300 A {ip}\n"))
        .collect()
}

struct Server {
    dg: Dnsguard,
    dot: SocketAddr,
    doh: SocketAddr,
    doq: SocketAddr,
}

fn start(up: &FakeUpstream) -> Server {
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\n\
         https_listen = [\"127.0.0.1:0\"]\nquic_listen = [\"127.0.0.1:0\"]\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 2000\n",
        up.addr()
    ));
    let logged = |what: &str| {
        let marker = format!("listening ({what}) addr=");
        wait_for(Duration::from_secs(10), &marker, || {
            dg.log()
                .split(marker.as_str())
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
    };
    let (dot, doh, doq) = (
        logged("DNS over TLS"),
        logged("DNS over HTTPS"),
        logged("DNS over QUIC"),
    );
    Server { dg, dot, doh, doq }
}

impl Server {
    fn ca(&self) -> PathBuf {
        self.dg.dir.path().join("dnsguard-data/tls/cert.pem")
    }
}

/// The A records of `m`, sorted, after checking the reply is whole (no TC).
fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    assert!(!m.metadata.truncation, "a stream answer is never truncated");
    let mut ips: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

/// The A addresses in a text answer (kdig's or dnspython's), sorted.
fn text_addresses(text: &str) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with(';'))
        .filter_map(|l| {
            let mut words = l.split_whitespace().rev();
            let ip = words.next()?.parse().ok()?;
            (words.next()? == "A").then_some(ip)
        })
        .collect();
    ips.sort();
    ips
}

fn tcp(s: &Server, name: &str) -> Vec<Ipv4Addr> {
    let ask = Ask {
        tcp: true,
        edns: None,
        ..Ask::default()
    };
    let m = exchange(s.dg.addr, &query_message(name, RecordType::A, &ask), &ask);
    a_records(&m)
}

fn dot(s: &Server, name: &str) -> Vec<Ipv4Addr> {
    let out = Command::new("kdig")
        .arg(format!("@{}", s.dot.ip()))
        .args([
            "-p",
            &s.dot.port().to_string(),
            "+tls",
            "+timeout=5",
            "+retry=0",
        ])
        .arg(format!("+tls-ca={}", s.ca().display()))
        .args(["+tls-hostname=localhost", name, "A"])
        .output()
        .expect("run kdig (knot-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("status: NOERROR"), "kdig: {text}");
    let flags = text.lines().find(|l| l.contains("Flags:")).unwrap_or("");
    assert!(
        !flags.contains(" tc"),
        "a DoT answer is never truncated: {text}"
    );
    text_addresses(&text)
}

fn doh(s: &Server, name: &str) -> Vec<Ipv4Addr> {
    let query = query_message(name, RecordType::A, &Ask::default())
        .to_vec()
        .unwrap();
    let body = std::env::temp_dir().join(format!("stream-answers-{}-{name}", std::process::id()));
    std::fs::write(&body, query).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", "--http2", "--cacert"])
        .arg(s.ca())
        .args([
            "-H",
            "content-type: application/dns-message",
            "--data-binary",
        ])
        .arg(format!("@{}", body.display()))
        .arg(format!("https://localhost:{}/dns-query", s.doh.port()))
        .output()
        .expect("run curl");
    let _ = std::fs::remove_file(&body);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    a_records(&Message::from_vec(&out.stdout).expect("a DNS message"))
}

fn doq(s: &Server, name: &str) -> Vec<Ipv4Addr> {
    let python = std::env::var_os("DNSGUARD_DOQ_PYTHON")
        .expect("DNSGUARD_DOQ_PYTHON: a python3 with dnspython and aioquic (see tests/doq.rs)");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/doq_client.py");
    let out = Command::new(python)
        .arg(script)
        .args(["query", &s.doq.ip().to_string(), &s.doq.port().to_string()])
        .arg(s.ca())
        .args(["localhost", name, "A"])
        .output()
        .expect("run the DoQ client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("rcode NOERROR"),
        "DoQ client: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flags = text.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    assert!(
        !flags.contains("TC"),
        "a DoQ answer is never truncated: {text}"
    );
    text_addresses(&text)
}

/// Every transport, a miss then a hit, for answers past 512 bytes and past 4 KB.
#[test]
fn large_answers_come_whole_over_every_stream_transport() {
    let localhost: IpAddr = "127.0.0.1".parse().unwrap();
    let up = FakeUpstream::start(localhost, zone(MID, MID.0).as_str());
    let s = start(&up);
    type Client = fn(&Server, &str) -> Vec<Ipv4Addr>;
    let clients: [(&str, Client); 4] = [("TCP", tcp), ("DoT", dot), ("DoH", doh), ("DoQ", doq)];
    for (transport, client) in clients {
        for set in [MID, BIG] {
            // A name of this transport's own, so the first query is a miss.
            let name = format!("{}.{}", transport.to_ascii_lowercase(), set.0);
            up.set_records(zone(set, &name).as_str());
            let want = addresses(set);
            let got = client(&s, &name);
            assert_eq!(got.len(), want.len(), "{transport} {name} (miss): records");
            assert_eq!(got, want, "{transport} {name} (miss)");
            let asked = up.queries_for(&name);
            assert!(asked > 0, "{transport} {name}: the miss went upstream");
            let got = client(&s, &name);
            assert_eq!(got.len(), want.len(), "{transport} {name} (hit): records");
            assert_eq!(got, want, "{transport} {name} (hit)");
            assert_eq!(
                up.queries_for(&name),
                asked,
                "{transport} {name}: a cache hit"
            );
        }
    }
}
