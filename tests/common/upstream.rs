//! An in-process fake upstream DNS server with query counters and switchable faults.
//!
//! It serves a fixed set of records over UDP and TCP on one ephemeral port of a chosen
//! address, answering authoritatively (AA, and RA so forwarders accept it):
//! the records of the asked type, CNAME chains followed inside the record set, NXDOMAIN for
//! unknown names and NODATA for known names, both with an SOA in the authority section
//! (the record set's own SOA for the name if it has one, else a synthesized one whose TTL and
//! minimum are [`FakeUpstream::set_negative_ttl`], 300 by default). UDP answers larger than
//! the client's payload size (512 without EDNS) are truncated with TC=1.
//!
//! The server runs on its own thread with its own tokio runtime, so it works from sync and
//! async tests alike, and is not slowed down by the test's runtime.
//!
//! ```ignore
//! let up = FakeUpstream::start("127.0.0.1".parse()?, "alias.x. 60 CNAME target.x.\ntarget.x. 60 A 192.0.2.1");
//! up.set_mode(Mode::TruncateUdp);
//! ```

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hickory_proto::{
    op::{Edns, Message, MessageType, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::SOA},
    serialize::txt::Parser,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::oneshot,
};

/// How the fake upstream reacts to queries. Switch at run time with [`FakeUpstream::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Answer from the records.
    #[default]
    Normal,
    /// Receive (and count) queries, never answer. TCP connections stay open.
    Dead,
    /// Answer normally after this delay.
    Slow(Duration),
    /// Answer with random bytes (whose first two bytes never equal the query id).
    Garbage,
    /// Answer normally, but with a different message id.
    WrongId,
    /// Over UDP: answer with TC=1 and no records. Over TCP: answer normally.
    TruncateUdp,
    /// Answer SERVFAIL (with the question echoed).
    ServFail,
    /// Over UDP: leave the 1st, 3rd, 5th, … query unanswered (a lost datagram),
    /// answer the others normally.
    LoseEveryOther,
}

/// Records for [`FakeUpstream::start`]: zone-file text, or `(name, type, ttl, rdata)` tuples,
/// or ready-made hickory [`Record`]s.
pub trait IntoRecords {
    /// Converts into records; panics on unparsable input (this is a test fixture).
    fn into_records(self) -> Vec<Record>;
}

/// Zone-file lines with absolute or root-relative names, e.g.
/// `"www.x. 60 IN A 192.0.2.1"`; TTL and class are optional (default TTL 300).
impl IntoRecords for &str {
    fn into_records(self) -> Vec<Record> {
        let text = format!("$TTL 300\n{self}\n");
        let (_, sets) = Parser::new(text, None, Some(Name::root()))
            .parse()
            .unwrap_or_else(|e| panic!("bad fake upstream records: {e}\n{self}"));
        sets.into_values()
            .flat_map(|set| set.records_without_rrsigs().cloned().collect::<Vec<_>>())
            .collect()
    }
}

impl IntoRecords for &[(&str, RecordType, u32, &str)] {
    fn into_records(self) -> Vec<Record> {
        self.iter()
            .map(|(name, rtype, ttl, rdata)| {
                let mut name = Name::from_ascii(name).expect("bad name");
                name.set_fqdn(true);
                let rdata = RData::try_from_str(*rtype, rdata)
                    .unwrap_or_else(|e| panic!("bad rdata {rdata:?} for {rtype}: {e}"));
                Record::from_rdata(name, *ttl, rdata)
            })
            .collect()
    }
}

impl<const N: usize> IntoRecords for [(&str, RecordType, u32, &str); N] {
    fn into_records(self) -> Vec<Record> {
        self[..].into_records()
    }
}

impl IntoRecords for Vec<Record> {
    fn into_records(self) -> Vec<Record> {
        self
    }
}

/// State shared between the handle and the server thread.
#[derive(Debug, Default)]
struct Shared {
    records: RwLock<HashMap<Name, Vec<Record>>>,
    mode: Mutex<Mode>,
    negative_ttl: AtomicU32,
    total: AtomicU64,
    udp: AtomicU64,
    tcp: AtomicU64,
    per_name: Mutex<HashMap<Name, u64>>,
    /// (source port, message id) of every UDP query.
    sources: Mutex<Vec<(u16, u16)>>,
    rng: AtomicU64,
}

impl Shared {
    fn set_records(&self, records: Vec<Record>) {
        let mut map: HashMap<Name, Vec<Record>> = HashMap::new();
        for r in records {
            map.entry(r.name.to_lowercase()).or_default().push(r);
        }
        *self.records.write().expect("poisoned") = map;
    }

    fn mode(&self) -> Mode {
        *self.mode.lock().expect("poisoned")
    }

    /// xorshift64*: good enough for garbage bytes.
    fn random(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A running fake upstream. Dropping it (or [`FakeUpstream::stop`]) closes its sockets.
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeUpstream {
    /// Starts serving `records` on UDP and TCP at `bind_ip` and one free port (the same for
    /// both). Returns once both sockets are bound, so queries can be sent at once.
    pub fn start(bind_ip: IpAddr, records: impl IntoRecords) -> FakeUpstream {
        let shared = Arc::new(Shared {
            negative_ttl: AtomicU32::new(300),
            rng: AtomicU64::new(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1,
            ),
            ..Shared::default()
        });
        shared.set_records(records.into_records());

        let (udp, tcp) = bind_pair(bind_ip);
        let addr = udp.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel();
        let sh = shared.clone();
        let thread = thread::Builder::new()
            .name(format!("fake-upstream-{addr}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let udp = Arc::new(UdpSocket::from_std(udp).expect("tokio udp"));
                    let tcp = TcpListener::from_std(tcp).expect("tokio tcp");
                    tokio::select! {
                        _ = rx => {}
                        _ = serve_udp(udp, sh.clone()) => {}
                        _ = serve_tcp(tcp, sh) => {}
                    }
                });
                // Dropping the runtime drops every task, and with them all sockets.
                drop(rt);
            })
            .expect("spawn fake upstream thread");
        FakeUpstream {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The address (UDP and TCP) the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Total queries received (UDP + TCP, all modes, including unparsable ones).
    pub fn queries(&self) -> u64 {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// Queries received over UDP.
    pub fn udp_queries(&self) -> u64 {
        self.shared.udp.load(Ordering::SeqCst)
    }

    /// Queries received over TCP.
    pub fn tcp_queries(&self) -> u64 {
        self.shared.tcp.load(Ordering::SeqCst)
    }

    /// Queries received for `name` (any type; case-insensitive; trailing dot optional).
    pub fn queries_for(&self, name: &str) -> u64 {
        let mut name = Name::from_ascii(name).expect("bad name");
        name.set_fqdn(true);
        let counts = self.shared.per_name.lock().expect("poisoned");
        counts.get(&name.to_lowercase()).copied().unwrap_or(0)
    }

    /// (source port, message id) of every UDP query received.
    pub fn udp_sources(&self) -> Vec<(u16, u16)> {
        self.shared.sources.lock().expect("poisoned").clone()
    }

    /// Sets all counters back to zero.
    pub fn reset_counters(&self) {
        self.shared.total.store(0, Ordering::SeqCst);
        self.shared.udp.store(0, Ordering::SeqCst);
        self.shared.tcp.store(0, Ordering::SeqCst);
        self.shared.per_name.lock().expect("poisoned").clear();
    }

    /// Switches the fault mode; applies to queries received from now on.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("poisoned") = mode;
    }

    /// Replaces the served records.
    pub fn set_records(&self, records: impl IntoRecords) {
        self.shared.set_records(records.into_records());
    }

    /// TTL and SOA minimum of the synthesized SOA in negative answers (default 300).
    pub fn set_negative_ttl(&self, ttl: u32) {
        self.shared.negative_ttl.store(ttl, Ordering::SeqCst);
    }

    /// Stops the server and closes its sockets; returns once they are closed.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds UDP on an ephemeral port and TCP on the same port, retrying with a new port if
/// the TCP port is taken.
fn bind_pair(ip: IpAddr) -> (std::net::UdpSocket, std::net::TcpListener) {
    let mut last = None;
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind((ip, 0)).expect("bind fake upstream UDP");
        let port = udp.local_addr().expect("local addr").port();
        match std::net::TcpListener::bind((ip, port)) {
            Ok(tcp) => {
                udp.set_nonblocking(true).expect("nonblocking");
                tcp.set_nonblocking(true).expect("nonblocking");
                return (udp, tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    panic!("no port free for both UDP and TCP on {ip}: {last:?}");
}

async fn serve_udp(sock: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let nth = shared.udp.fetch_add(1, Ordering::SeqCst);
        if n >= 2 {
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            shared
                .sources
                .lock()
                .expect("poisoned")
                .push((peer.port(), id));
        }
        if shared.mode() == Mode::LoseEveryOther && nth.is_multiple_of(2) {
            shared.total.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let query = buf[..n].to_vec();
        let (sock, shared) = (sock.clone(), shared.clone());
        tokio::spawn(async move {
            if let Some(resp) = respond(&shared, &query, true).await {
                let _ = sock.send_to(&resp, peer).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_conn(stream, shared.clone()));
    }
}

async fn serve_tcp_conn(mut stream: TcpStream, shared: Arc<Shared>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut query = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        shared.tcp.fetch_add(1, Ordering::SeqCst);
        if let Some(resp) = respond(&shared, &query, false).await {
            let mut out = Vec::with_capacity(resp.len() + 2);
            out.extend_from_slice(&(resp.len() as u16).to_be_bytes());
            out.extend_from_slice(&resp);
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}

/// Counts the query and builds the wire response for the current mode (`None`: no answer).
async fn respond(shared: &Shared, query: &[u8], udp: bool) -> Option<Vec<u8>> {
    shared.total.fetch_add(1, Ordering::SeqCst);
    let req = Message::from_vec(query).ok();
    if let Some(q) = req.as_ref().and_then(|r| r.queries.first()) {
        let mut counts = shared.per_name.lock().expect("poisoned");
        *counts.entry(q.name().to_lowercase()).or_default() += 1;
    }
    let mode = shared.mode();
    if let Mode::Slow(delay) = mode {
        tokio::time::sleep(delay).await;
    }
    let req = req?;
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = match mode {
        Mode::Dead => return None,
        Mode::Garbage => {
            let len = 12 + (shared.random() % 100) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| shared.random() as u8).collect();
            let id = req.metadata.id.to_be_bytes();
            bytes[0] = !id[0];
            bytes[1] = !id[1];
            return Some(bytes);
        }
        Mode::ServFail => {
            let mut m = base_response(&req);
            m.metadata.response_code = ResponseCode::ServFail;
            m
        }
        Mode::TruncateUdp if udp => {
            let mut m = base_response(&req);
            m.metadata.truncation = true;
            m
        }
        Mode::Normal | Mode::Slow(_) | Mode::WrongId | Mode::TruncateUdp | Mode::LoseEveryOther => {
            answer(shared, &req)
        }
    };
    if mode == Mode::WrongId {
        resp.metadata.id = req.metadata.id.wrapping_add(1);
    }
    let bytes = resp.to_vec().ok()?;
    if udp {
        let limit = req.edns.as_ref().map_or(512, |e| e.max_payload().max(512));
        if bytes.len() > usize::from(limit) {
            let mut m = base_response(&req);
            m.metadata.truncation = true;
            return m.to_vec().ok();
        }
    }
    Some(bytes)
}

/// A response with the request's id, flags and question, no records.
fn base_response(req: &Message) -> Message {
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.authoritative = true;
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.checking_disabled = req.metadata.checking_disabled;
    m.add_queries(req.queries.iter().cloned());
    if let Some(e) = &req.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.set_dnssec_ok(e.flags().dnssec_ok);
        m.set_edns(edns);
    }
    m
}

/// The normal answer: records, CNAME chain, NXDOMAIN or NODATA (+ SOA).
fn answer(shared: &Shared, req: &Message) -> Message {
    let mut m = base_response(req);
    let Some(q) = req.queries.first() else {
        m.metadata.response_code = ResponseCode::FormErr;
        return m;
    };
    let qtype = q.query_type();
    let records = shared.records.read().expect("poisoned");
    let mut name = q.name().to_lowercase();
    for _ in 0..16 {
        let Some(rrs) = records.get(&name) else {
            m.metadata.response_code = ResponseCode::NXDomain;
            m.add_authority(soa_for(shared, &records, &name));
            return m;
        };
        let matching: Vec<Record> = rrs
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .cloned()
            .collect();
        if !matching.is_empty() {
            m.add_answers(matching);
            return m;
        }
        match rrs.iter().find(|r| r.record_type() == RecordType::CNAME) {
            Some(cname) => {
                m.add_answer(cname.clone());
                let RData::CNAME(target) = &cname.data else {
                    unreachable!("CNAME record without CNAME data")
                };
                name = target.0.to_lowercase();
            }
            None => {
                m.add_authority(soa_for(shared, &records, &name));
                return m;
            }
        }
    }
    m.metadata.response_code = ResponseCode::ServFail; // CNAME loop
    m
}

/// The closest enclosing SOA in the record set, or a synthesized one at the name's TLD.
fn soa_for(shared: &Shared, records: &HashMap<Name, Vec<Record>>, name: &Name) -> Record {
    let mut zone = name.clone();
    loop {
        if let Some(soa) = records
            .get(&zone)
            .and_then(|rrs| rrs.iter().find(|r| r.record_type() == RecordType::SOA))
        {
            return soa.clone();
        }
        if zone.is_root() {
            break;
        }
        zone = zone.base_name();
    }
    let ttl = shared.negative_ttl.load(Ordering::SeqCst);
    let apex = name.trim_to(1);
    let soa = SOA::new(
        Name::from_ascii("ns.fake-upstream.").expect("name"),
        Name::from_ascii("hostmaster.fake-upstream.").expect("name"),
        1,
        3600,
        600,
        86400,
        ttl,
    );
    Record::from_rdata(apex, ttl, RData::SOA(soa))
}
