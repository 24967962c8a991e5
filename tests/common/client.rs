//! A real DNS client for tests: builds a query with hickory-proto and sends it over
//! a real UDP or TCP socket, optionally from a chosen source address.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// How to ask.
#[derive(Clone, Debug)]
pub struct Ask {
    /// Use TCP instead of UDP.
    pub tcp: bool,
    /// Send from this address (e.g. 127.0.0.2) instead of 127.0.0.1.
    pub from: IpAddr,
    /// Add an EDNS OPT record with this DO bit.
    pub edns: Option<bool>,
    /// Give up after this long.
    pub timeout: Duration,
    /// The CD bit.
    pub checking_disabled: bool,
}

impl Default for Ask {
    fn default() -> Self {
        Self {
            tcp: false,
            from: "127.0.0.1".parse().unwrap(),
            edns: Some(false),
            timeout: Duration::from_secs(10),
            checking_disabled: false,
        }
    }
}

/// The query message for `name`/`qtype`.
pub fn query_message(name: &str, qtype: RecordType, ask: &Ask) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.checking_disabled = ask.checking_disabled;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(dnssec_ok) = ask.edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m
}

fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() as u16
}

/// Sends raw bytes over UDP and returns the raw reply, or `None` on timeout.
pub fn send_raw_udp(
    server: SocketAddr,
    from: IpAddr,
    bytes: &[u8],
    timeout: Duration,
) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind(SocketAddr::new(from, 0)).expect("bind client socket");
    sock.set_read_timeout(Some(timeout)).unwrap();
    sock.send_to(bytes, server).expect("send");
    let mut buf = vec![0u8; 65535];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Sends `msg` and waits for the matching reply. Panics on timeout.
pub fn exchange(server: SocketAddr, msg: &Message, ask: &Ask) -> Message {
    try_exchange(server, msg, ask).unwrap_or_else(|e| panic!("no answer from {server}: {e}"))
}

/// Sends `msg` and waits for the matching reply.
pub fn try_exchange(server: SocketAddr, msg: &Message, ask: &Ask) -> Result<Message, String> {
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    let reply = if ask.tcp {
        let mut s = TcpStream::connect_timeout(&server, ask.timeout).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(ask.timeout)).unwrap();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        s.write_all(&framed).map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        buf
    } else {
        send_raw_udp(server, ask.from, &bytes, ask.timeout).ok_or("timed out")?
    };
    let reply = Message::from_vec(&reply).map_err(|e| e.to_string())?;
    if reply.metadata.id != msg.metadata.id {
        return Err("reply id does not match".into());
    }
    Ok(reply)
}

/// Asks `name`/`qtype` with default options (UDP from 127.0.0.1, EDNS).
pub fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    ask_with(server, name, qtype, &Ask::default())
}

/// Asks `name`/`qtype` with the given options.
pub fn ask_with(server: SocketAddr, name: &str, qtype: RecordType, opts: &Ask) -> Message {
    exchange(server, &query_message(name, qtype, opts), opts)
}

/// The addresses (A and AAAA) in the answer section, as text.
pub fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// The record types of the answer section, in order.
pub fn answer_types(m: &Message) -> Vec<RecordType> {
    m.answers.iter().map(|r| r.record_type()).collect()
}

/// The response code.
pub fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

/// Polls `server` with a query until it answers (any rcode) or `limit` passes.
pub fn wait_until_answering(server: SocketAddr, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    let opts = Ask {
        timeout: Duration::from_millis(200),
        ..Ask::default()
    };
    while start.elapsed() < limit {
        let msg = query_message("ready.invalid.", RecordType::A, &opts);
        if try_exchange(server, &msg, &opts).is_ok() {
            return Ok(());
        }
    }
    Err(format!("{server} did not answer within {limit:?}"))
}

/// Runs the real `dig` (bind9-dnsutils) against `server` with `args`, one try of
/// at most 3 s; what it printed.
pub fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+tries=1", "+time=3"])
        .args(args)
        .output()
        .expect("run dig (bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the server has closed `s` (EOF or reset); never blocks.
pub fn closed_by_server(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let closed = match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// Twenty connections to `server` that each send random bytes of growing length,
/// every other one starting like a TLS handshake record, then close: what a TLS
/// listener must survive.
pub fn send_tls_garbage(server: SocketAddr) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..20 {
        let mut s = TcpStream::connect(server).unwrap();
        let mut junk = vec![0u8; 64 + i * 37];
        for b in &mut junk {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        if i % 2 == 0 {
            junk[0] = 0x16; // looks like a TLS handshake record
            junk[1] = 0x03;
        }
        let _ = s.write_all(&junk);
    }
}
