//! Plain DNS to one upstream over UDP (TCP when the answer is truncated), built
//! for many queries in flight: a pool of long-lived sockets instead of one socket
//! per query, and retransmission after an adaptive timeout, so a datagram lost
//! on a busy machine costs a round trip rather than the whole upstream timeout.
//!
//! Spoofing resistance: each query gets a random 16-bit ID and one of
//! [`POOL`] sockets at random; every socket has its own kernel-chosen random
//! source port and is replaced after [`MAX_USES`] queries or [`MAX_AGE`], so the
//! ports keep changing. Sockets are connected to the upstream (the kernel drops
//! datagrams from anyone else), and an answer is accepted only when its ID and
//! its question (name case-insensitively, type, class) match an outstanding
//! query; anything else is ignored.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query};
use parking_lot::Mutex;
use rand::RngExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;

use super::{DnssecBits, ResolveError};

/// Sockets in use at once per upstream.
pub const POOL: usize = 32;
/// Queries a socket sends before it is replaced by one on a new port.
pub const MAX_USES: u32 = 512;
/// Longest a socket is used before it is replaced.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Bounds of the retransmission timeout (before doubling per attempt).
const MIN_RTO: Duration = Duration::from_millis(100);
const INITIAL_RTO: Duration = Duration::from_millis(400);
/// EDNS payload size offered to upstreams (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;
/// Largest datagram read.
const RECV_BUFFER: usize = 65_535;
/// How often a socket's receiver checks, while nothing arrives, whether it has
/// been retired.
const RETIRE_POLL: Duration = Duration::from_millis(500);

/// One upstream server spoken to in plain DNS.
pub struct PlainUpstream {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    pool: Mutex<Vec<Arc<Sock>>>,
    /// Outstanding queries by `(socket id << 16) | query id`.
    pending: Mutex<HashMap<u64, Pending>>,
    rtt: Mutex<Rtt>,
    next_sock: AtomicU32,
}

struct Sock {
    id: u32,
    socket: UdpSocket,
    uses: AtomicU32,
    born: Instant,
    /// Queries sent on this socket still waiting for their answer.
    waiting: AtomicU32,
}

struct Pending {
    question: Question,
    tx: oneshot::Sender<Vec<u8>>,
}

/// A question section as sent: the name in lower case, then type and class.
#[derive(Clone)]
struct Question {
    bytes: Box<[u8]>,
    name_len: usize,
}

impl Question {
    /// Whether `answer` (a message after its header) starts with this question:
    /// the name compared case-insensitively, type and class exactly.
    fn answered_by(&self, answer: &[u8]) -> bool {
        let Some(theirs) = answer.get(..self.bytes.len()) else {
            return false;
        };
        let (name, rest) = self.bytes.split_at(self.name_len);
        name.iter()
            .zip(theirs)
            .all(|(q, a)| *q == a.to_ascii_lowercase())
            && rest == &theirs[self.name_len..]
    }
}

/// Smoothed round-trip time and its variation (RFC 6298).
#[derive(Clone, Copy)]
struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl Rtt {
    fn rto(&self) -> Duration {
        match self.srtt {
            None => INITIAL_RTO,
            Some(s) => (s + 4 * self.rttvar).max(MIN_RTO),
        }
    }

    fn sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + r) / 8);
            }
        }
    }
}

impl PlainUpstream {
    /// An upstream at `addr`; sockets are opened on first use (inside the
    /// runtime).
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            inner: Arc::new(Inner {
                addr,
                pool: Mutex::new(Vec::new()),
                pending: Mutex::new(HashMap::new()),
                rtt: Mutex::new(Rtt {
                    srtt: None,
                    rttvar: Duration::ZERO,
                }),
                next_sock: AtomicU32::new(0),
            }),
        }
    }

    /// The smoothed round-trip time measured so far (for the race strategy).
    pub fn srtt(&self) -> Option<Duration> {
        self.inner.rtt.lock().srtt
    }

    /// Asks `query` within `budget`: over UDP, sent again on a fresh ID and
    /// socket each time the retransmission timeout passes, then over TCP when the
    /// answer came back truncated. Any rcode is returned as an answer.
    pub async fn ask(
        &self,
        query: &Query,
        bits: DnssecBits,
        budget: Duration,
    ) -> Result<Message, ResolveError> {
        let deadline = Instant::now() + budget;
        let mut packet = build_query(query, bits)?;
        let question = question_of(&packet)?;
        let mut rto = self.inner.rtt.lock().rto();
        for attempt in 0.. {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = rto.min(left);
            let sent = Instant::now();
            match self.attempt(&mut packet, &question, wait).await {
                Ok(Some(bytes)) => {
                    if let Some(tap) = crate::dnstap::Dnstap::upstream() {
                        let udp = crate::dnstap::Transport::Udp;
                        tap.forwarded(self.inner.addr, udp, sent, &packet, &bytes);
                    }
                    // Karn: only unambiguous round trips feed the estimate.
                    if attempt == 0 {
                        self.inner.rtt.lock().sample(sent.elapsed());
                    }
                    let msg = Message::from_vec(&bytes)
                        .map_err(|e| ResolveError::Upstream(format!("bad answer: {e}")))?;
                    if msg.metadata.truncation {
                        let left = deadline.saturating_duration_since(Instant::now());
                        return tcp_exchange(self.inner.addr, &mut packet, &question, left).await;
                    }
                    return Ok(msg);
                }
                Ok(None) => rto = (rto * 2).min(budget),
                Err(e) => return Err(e),
            }
        }
        // Nothing answered at all (the client's EDE says so: No Reachable Authority).
        Err(ResolveError::Timeout(budget.as_millis() as u64))
    }

    /// One send and the wait for its answer (`None`: none within `wait`).
    async fn attempt(
        &self,
        packet: &mut [u8],
        question: &Question,
        wait: Duration,
    ) -> Result<Option<Vec<u8>>, ResolveError> {
        let sock = self.socket().await?;
        let (tx, rx) = oneshot::channel();
        let key = {
            let mut pending = self.inner.pending.lock();
            let mut rng = rand::rng();
            let key = loop {
                let id: u16 = rng.random();
                let key = (u64::from(sock.id) << 16) | u64::from(id);
                if !pending.contains_key(&key) {
                    break key;
                }
            };
            pending.insert(
                key,
                Pending {
                    question: question.clone(),
                    tx,
                },
            );
            sock.waiting.fetch_add(1, Ordering::Relaxed);
            key
        };
        packet[..2].copy_from_slice(&(key as u16).to_be_bytes());
        if let Err(e) = sock.socket.send(packet).await {
            self.inner.forget(&sock, key);
            tracing::debug!(upstream = %self.inner.addr, error = %e, "UDP send failed");
            // Unreachable now (ICMP): the next attempt, after the wait, may work.
            tokio::time::sleep(wait).await;
            return Ok(None);
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(bytes)) => Ok(Some(bytes)),
            _ => {
                self.inner.forget(&sock, key);
                Ok(None)
            }
        }
    }

    /// A socket of the pool, chosen at random; opens or replaces sockets as
    /// their use count or age runs out.
    async fn socket(&self) -> Result<Arc<Sock>, ResolveError> {
        let slot = rand::rng().random_range(0..POOL);
        {
            let pool = self.inner.pool.lock();
            if let Some(s) = pool.get(slot)
                && s.uses.fetch_add(1, Ordering::Relaxed) < MAX_USES
                && s.born.elapsed() < MAX_AGE
            {
                return Ok(s.clone());
            }
        }
        let fresh = Arc::new(self.open().await?);
        fresh.uses.store(1, Ordering::Relaxed);
        {
            let mut pool = self.inner.pool.lock();
            if pool.len() < POOL {
                pool.push(fresh.clone());
            } else {
                pool[slot] = fresh.clone();
            }
        }
        tokio::spawn(receive(Arc::downgrade(&self.inner), fresh.clone()));
        Ok(fresh)
    }

    async fn open(&self) -> Result<Sock, ResolveError> {
        let addr = self.inner.addr;
        let local: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .expect("a valid wildcard address");
        let io = |e: std::io::Error| ResolveError::Upstream(format!("socket for {addr}: {e}"));
        let socket = UdpSocket::bind(local).await.map_err(io)?;
        socket.connect(addr).await.map_err(io)?;
        Ok(Sock {
            id: self.inner.next_sock.fetch_add(1, Ordering::Relaxed),
            socket,
            uses: AtomicU32::new(0),
            born: Instant::now(),
            waiting: AtomicU32::new(0),
        })
    }
}

impl Inner {
    /// Drops an outstanding query that was not answered (timed out, or never sent).
    fn forget(&self, sock: &Sock, key: u64) {
        if self.pending.lock().remove(&key).is_some() {
            sock.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A socket's receiver: hands each datagram to the query it answers. Ends when
/// the upstream is dropped, or once the socket has left the pool and no query
/// sent on it is still waiting (so retired sockets close within a round trip or
/// a retransmission timeout, and busy upstreams do not pile up descriptors).
async fn receive(inner: Weak<Inner>, sock: Arc<Sock>) {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let got = tokio::time::timeout(RETIRE_POLL, sock.socket.recv(&mut buf)).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Ok(Ok(n)) = got {
            deliver(&inner, &sock, &buf[..n]);
        }
        // ICMP errors (port unreachable) also surface here: the waiting query
        // retransmits or times out on its own.
        if sock.waiting.load(Ordering::Relaxed) == 0
            && !inner.pool.lock().iter().any(|s| Arc::ptr_eq(s, &sock))
        {
            return;
        }
    }
}

/// Matches an answer to its outstanding query by ID and question.
fn deliver(inner: &Inner, sock: &Sock, bytes: &[u8]) {
    // A response (QR) with exactly one question.
    if bytes.len() < 12 || bytes[2] & 0x80 == 0 || bytes[4..6] != [0, 1] {
        return;
    }
    let key = (u64::from(sock.id) << 16) | u64::from(u16::from_be_bytes([bytes[0], bytes[1]]));
    let mut pending = inner.pending.lock();
    let matches = pending
        .get(&key)
        .is_some_and(|p| p.question.answered_by(&bytes[12..]));
    if matches && let Some(p) = pending.remove(&key) {
        drop(pending);
        sock.waiting.fetch_sub(1, Ordering::Relaxed);
        let _ = p.tx.send(bytes.to_vec());
    }
}

/// The query message (ID zero, set per attempt): RD, the client's CD, EDNS with
/// our payload size and the client's DO bit.
fn build_query(query: &Query, bits: DnssecBits) -> Result<Vec<u8>, ResolveError> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.metadata.checking_disabled = bits.checking_disabled;
    m.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    edns.set_dnssec_ok(bits.dnssec_ok);
    m.set_edns(edns);
    m.to_vec()
        .map_err(|e| ResolveError::Upstream(format!("cannot encode the query: {e}")))
}

/// The question section of a query built by [`build_query`].
fn question_of(packet: &[u8]) -> Result<Question, ResolveError> {
    let bad = || ResolveError::Upstream("malformed query".into());
    let mut at = 12;
    loop {
        let len = usize::from(*packet.get(at).ok_or_else(bad)?);
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    let q = packet.get(12..at + 4).ok_or_else(bad)?;
    let name_len = at - 12;
    let mut bytes: Box<[u8]> = q.into();
    bytes[..name_len].make_ascii_lowercase();
    Ok(Question { bytes, name_len })
}

/// The same query over TCP (RFC 7766 framing), for an answer too large for UDP.
async fn tcp_exchange(
    addr: SocketAddr,
    packet: &mut [u8],
    question: &Question,
    budget: Duration,
) -> Result<Message, ResolveError> {
    let id: u16 = rand::rng().random();
    packet[..2].copy_from_slice(&id.to_be_bytes());
    let sent = Instant::now();
    let work = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut framed = Vec::with_capacity(packet.len() + 2);
        framed.extend_from_slice(&(packet.len() as u16).to_be_bytes());
        framed.extend_from_slice(packet);
        stream.write_all(&framed).await?;
        let len = stream.read_u16().await?;
        let mut answer = vec![0u8; usize::from(len)];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(budget, work).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(ResolveError::Upstream(format!("TCP to {addr}: {e}"))),
        Err(_) => return Err(ResolveError::Upstream("timed out over TCP".into())),
    };
    if answer.len() < 12 || answer[..2] != id.to_be_bytes() || !question.answered_by(&answer[12..])
    {
        return Err(ResolveError::Upstream(format!(
            "TCP answer from {addr} does not match the query"
        )));
    }
    if let Some(tap) = crate::dnstap::Dnstap::upstream() {
        tap.forwarded(addr, crate::dnstap::Transport::Tcp, sent, packet, &answer);
    }
    Message::from_vec(&answer).map_err(|e| ResolveError::Upstream(format!("bad answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rto_follows_rfc6298_with_a_floor() {
        let mut r = Rtt {
            srtt: None,
            rttvar: Duration::ZERO,
        };
        assert_eq!(r.rto(), INITIAL_RTO);
        r.sample(Duration::from_millis(40));
        assert_eq!(r.rto(), Duration::from_millis(120));
        for _ in 0..50 {
            r.sample(Duration::from_micros(200));
        }
        assert_eq!(r.rto(), MIN_RTO);
    }

    #[test]
    fn questions_match_case_insensitively_and_only_whole() {
        let q = Query::query(
            hickory_proto::rr::Name::from_ascii("WwW.Example.COM.").unwrap(),
            hickory_proto::rr::RecordType::HTTPS,
        );
        let packet = build_query(&q, DnssecBits::default()).unwrap();
        let question = question_of(&packet).unwrap();
        assert_eq!(&question.bytes[..4], b"\x03www");
        let n = question.bytes.len();
        let mut answer = packet[12..].to_vec();
        assert!(question.answered_by(&answer));
        answer[1] = b'W';
        assert!(question.answered_by(&answer), "0x20 case is ignored");
        answer[2] = b'x';
        assert!(!question.answered_by(&answer));
        assert!(!question.answered_by(&packet[12..12 + n - 1]));
        // Type 65 is 0x0041 ('A'): type and class are compared exactly.
        let mut wrong_type = packet[12..].to_vec();
        wrong_type[n - 3] = b'a';
        assert!(!question.answered_by(&wrong_type));
    }
}

#[cfg(test)]
mod socket_tests {
    use super::*;
    use hickory_proto::rr::{Name, RecordType};

    /// A responder on loopback that answers every query with its own bytes, QR set.
    fn echo_upstream() -> SocketAddr {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                buf[2] |= 0x80;
                let _ = s.send_to(&buf[..n], from);
            }
        });
        addr
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sockets_rotate_and_retired_ones_close() {
        let up = PlainUpstream::new(echo_upstream());
        let q = Query::query(Name::from_ascii("rotate.example.").unwrap(), RecordType::A);
        let before = open_fds();
        let n = 2 * POOL * MAX_USES as usize;
        for _ in 0..n {
            let m = up
                .ask(&q, DnssecBits::default(), Duration::from_secs(2))
                .await
                .unwrap();
            assert_eq!(m.queries[0].name(), q.name());
        }
        let opened = up.inner.next_sock.load(Ordering::Relaxed) as usize;
        assert!(
            opened > POOL,
            "{opened} sockets opened for {n} queries: they rotate"
        );
        // Retired sockets close once nothing waits on them (within a poll).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let extra = open_fds().saturating_sub(before);
            if extra <= POOL {
                break;
            }
            assert!(Instant::now() < deadline, "{extra} descriptors still open");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up.srtt().is_some(), "round trips measured");
    }
}
