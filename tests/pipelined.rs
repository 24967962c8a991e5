//! Queries pipelined on one TCP or DNS-over-TLS connection (RFC 7766 6.2.1.1,
//! RFC 7858 3.3): a miss does not hold up the answers behind it, answers come in
//! batches (over TLS, a record carries many), every reply has its query's ID, and
//! one connection cannot have more than 100 queries in flight at once. Real
//! sockets, a blocking rustls client, the fake upstream switched dead and back.

mod common;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use common::client::{self, Ask};
use common::server::Dnsguard;
use common::upstream::{FakeUpstream, Mode};
use common::wait_for;

/// Names warmed into the cache before the test pipelines them.
const CACHED: [&str; 4] = [
    "c0.fwd.test.",
    "c1.fwd.test.",
    "c2.fwd.test.",
    "c3.fwd.test.",
];

/// The address of `cached.fwd.test.`-like name `c<i>` / `m<i>`: 192.0.2.<i+1>.
fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 1 + i as u8)
}

/// The upstream's records: the cached names, and 101 names only ever missed
/// (`m0` … `m100`) whose address is 198.51.100.<i+1> (m100: .101).
fn zone() -> String {
    let mut z = String::new();
    for (i, name) in CACHED.iter().enumerate() {
        z.push_str(&format!("{name} 300 A {}\n", address(i)));
    }
    for i in 0..=100 {
        z.push_str(&format!("m{i}.fwd.test. 300 A 198.51.100.{}\n", 1 + i));
    }
    z
}

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// The server: plain DNS, TCP and DNS over TLS on free ports, forwarding to
/// `up` with the cached names warmed (then looked up once each upstream).
struct Server {
    dg: Dnsguard,
    dot: SocketAddr,
}

fn start(up: &FakeUpstream) -> Server {
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\n\
         tcp_idle_timeout_secs = 30\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 20000\n",
        up.addr()
    ));
    let dot = wait_for(Duration::from_secs(10), "the DoT listener", || {
        dg.log()
            .split("listening (DNS over TLS) addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    });
    for (i, name) in CACHED.iter().enumerate() {
        let m = client::ask(dg.addr, name, RecordType::A);
        assert_eq!(client::addrs(&m), [address(i).to_string()], "{name}");
    }
    Server { dg, dot }
}

/// A query for `name` with the ID `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = client::query_message(name, RecordType::A, &Ask::default());
    m.metadata.id = id;
    let bytes = m.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    framed
}

/// The next length-prefixed reply on `s`.
fn reply(s: &mut impl Read) -> Message {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("a reply's length");
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).expect("a reply");
    Message::from_vec(&buf).expect("a DNS message")
}

/// The one A address of `m`.
fn a(m: &Message) -> Option<Ipv4Addr> {
    m.answers.iter().find_map(|r| match r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    })
}

fn tcp(server: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// A TLS client for `server`, trusting the certificate `dg` made, over a socket
/// that counts the TLS records it receives.
fn dot(
    dg: &Dnsguard,
    server: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, Records> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(dg.dir.path().join("dnsguard-data/tls/cert.pem")).unwrap();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, Records::new(tcp(server)));
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    stream
}

/// A TCP socket that counts the TLS records it reads (their 5-byte headers).
struct Records {
    inner: TcpStream,
    /// Bytes of the current record's header read so far.
    header: Vec<u8>,
    /// Bytes of the current record's body still to come.
    body_left: usize,
    /// Records whose header has been read.
    count: usize,
}

impl Records {
    fn new(inner: TcpStream) -> Self {
        Records {
            inner,
            header: Vec::with_capacity(5),
            body_left: 0,
            count: 0,
        }
    }
}

impl Read for Records {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(rest.len());
                self.body_left -= skip;
                rest = &rest[skip..];
                continue;
            }
            let take = (5 - self.header.len()).min(rest.len());
            self.header.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.header.len() == 5 {
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.header.clear();
                self.count += 1;
            }
        }
        Ok(n)
    }
}

impl Write for Records {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// On `s`: a miss (the upstream dead) then the cached names, in one write. The
/// cached answers must come first, each with its query's ID and address; the
/// miss's reply follows once the upstream answers again.
fn cached_answers_overtake_a_miss(s: &mut (impl Read + Write), up: &FakeUpstream) {
    up.set_mode(Mode::Dead);
    let mut batch = query(1000, "m100.fwd.test.");
    for (i, name) in CACHED.iter().enumerate() {
        batch.extend(query(i as u16, name));
    }
    s.write_all(&batch).unwrap();
    s.flush().unwrap();
    let mut got = HashMap::new();
    for _ in CACHED {
        let m = reply(s);
        let id = m.metadata.id;
        assert_ne!(
            id, 1000,
            "the miss was answered before the cached names behind it"
        );
        assert_eq!(a(&m), Some(address(usize::from(id))), "reply {id}");
        got.insert(id, ());
    }
    assert_eq!(got.len(), CACHED.len(), "each cached name answered once");
    wait_for(
        Duration::from_secs(10),
        "the miss to reach the upstream",
        || (up.queries_for("m100.fwd.test.") > 0).then_some(()),
    );
    up.set_mode(Mode::Normal);
    let miss = reply(s);
    assert_eq!(miss.metadata.id, 1000);
    assert_eq!(miss.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a(&miss), Some(Ipv4Addr::new(198, 51, 100, 101)));
}

#[test]
fn over_tcp_cached_answers_overtake_a_miss_pipelined_before_them() {
    let up = FakeUpstream::start(localhost(), zone().as_str());
    let server = start(&up);
    cached_answers_overtake_a_miss(&mut tcp(server.dg.addr), &up);
}

#[test]
fn over_tls_cached_answers_overtake_a_miss_pipelined_before_them() {
    let up = FakeUpstream::start(localhost(), zone().as_str());
    let server = start(&up);
    cached_answers_overtake_a_miss(&mut dot(&server.dg, server.dot), &up);
}

/// 300 cached queries written at once on one DoT connection: every one is
/// answered, each reply with its query's ID and name's address, and the answers
/// come many to a TLS record (one record per answer before).
#[test]
fn pipelined_dot_queries_are_all_answered_in_few_tls_records() {
    let up = FakeUpstream::start(localhost(), zone().as_str());
    let server = start(&up);
    let mut s = dot(&server.dg, server.dot);
    let records_before = s.sock.count;
    const N: u16 = 300;
    let mut batch = Vec::new();
    for id in 0..N {
        batch.extend(query(id, CACHED[usize::from(id) % CACHED.len()]));
    }
    s.write_all(&batch).unwrap();
    s.flush().unwrap();
    let mut answered = vec![false; usize::from(N)];
    for _ in 0..N {
        let m = reply(&mut s);
        let id = usize::from(m.metadata.id);
        assert!(!answered[id], "reply {id} came twice");
        answered[id] = true;
        assert_eq!(a(&m), Some(address(id % CACHED.len())), "reply {id}");
    }
    let records = s.sock.count - records_before;
    // Session tickets may come among them; one record per answer would be 300.
    assert!(
        records <= 30,
        "{N} answers took {records} TLS records: not batched"
    );
    assert_eq!(up.queries(), CACHED.len() as u64, "all from the cache");
}

/// One connection has at most 100 queries in flight: with the upstream dead, 100
/// misses all reach it, and a cached query behind them is read only once one of
/// them is answered, so its reply comes after a miss's. Every query is answered.
#[test]
fn a_connection_has_at_most_100_misses_in_flight() {
    let up = FakeUpstream::start(localhost(), zone().as_str());
    let server = start(&up);
    let mut s = tcp(server.dg.addr);
    up.set_mode(Mode::Dead);
    let mut batch = Vec::new();
    for i in 0..100u16 {
        batch.extend(query(1000 + i, &format!("m{i}.fwd.test.")));
    }
    batch.extend(query(0, CACHED[0]));
    s.write_all(&batch).unwrap();
    wait_for(
        Duration::from_secs(10),
        "100 misses in flight at once",
        || {
            (0..100)
                .all(|i| up.queries_for(&format!("m{i}.fwd.test.")) > 0)
                .then_some(())
        },
    );
    up.set_mode(Mode::Normal);
    let first = reply(&mut s);
    assert_ne!(
        first.metadata.id, 0,
        "the cached query behind 100 misses in flight was read before one was answered"
    );
    let mut ids = vec![first.metadata.id];
    for _ in 0..100 {
        ids.push(reply(&mut s).metadata.id);
    }
    ids.sort_unstable();
    let expected: Vec<u16> = std::iter::once(0).chain(1000..1100).collect();
    assert_eq!(ids, expected, "every query answered once");
}
