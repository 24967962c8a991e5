//! dnstap output end to end: the real binary, a real DNS client, a fake upstream,
//! and real collectors: `fstrm_capture` (Debian `fstrm-bin`) writes the stream to
//! a file that `dnstap-read -y` (BIND) decodes. BIND 9.18's decoder does not show
//! dnstap's `Policy` or `extra`; those are read from the same file with a small
//! protobuf walker that knows only the published field numbers of dnstap.proto.
//! Collectors that misbehave (killed, never reading, answering garbage) are test
//! threads on real sockets: clients are answered all the same.

mod common;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::client::{Ask, addrs, ask, ask_with, rcode};
use common::http::request;
use common::server::Dnsguard;
use common::tap::Capture;
use common::upstream::FakeUpstream;
use common::wait_for;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const ZONE: &str = "\
www.fwd.test. 300 A 192.0.2.1
other.fwd.test. 300 A 192.0.2.3
";

/// A name the tunnel detector flags (base32 payload labels).
const TUNNEL: &str =
    "mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpjqwe.gezdgnbvgy3tqojqgezdgnbvgy3tqojq.t.a.test.";

/// Line 2 blocks, line 3 allowlists.
const LIST: &str = "# test list\nads.example\n@@||www.fwd.test^\n";

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// Starts dnsguard with the test list, a group at 127.0.0.2 answering NXDOMAIN,
/// and `[dnstap]` with `target`.
fn start(up: &FakeUpstream, target: &str, extra: &str) -> Dnsguard {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("list.txt"), LIST).unwrap();
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [[lists]]\nname = \"mine\"\nsource = \"list.txt\"\n\
         [[groups]]\nname = \"strict\"\nclients = [\"127.0.0.2\"]\nblock_mode = \"nxdomain\"\n\
         [dnstap]\ntarget = \"{target}\"\nidentity = \"tap-test\"\nversion = \"dnsguard-test 1\"\n{extra}",
        up.addr()
    );
    Dnsguard::start_in(&config, dir)
}

/// Stops dnsguard with SIGTERM: it sends what is queued, then STOP, and waits for
/// the collector's FINISH before it exits.
fn stop(dg: Dnsguard) -> String {
    let log = dg.log_handle();
    assert!(dg.stop_with(libc::SIGTERM).success());
    log.lock().unwrap().clone()
}

/// `dnstap-read -y FILE`, one YAML document per message.
fn read_yaml(file: &Path) -> Vec<String> {
    let out = Command::new("dnstap-read")
        .arg("-y")
        .arg(file)
        .output()
        .expect("dnstap-read (bind9-dnsutils) installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split("\n---\n")
        .map(str::to_owned)
        .filter(|d| d.contains("type: MESSAGE"))
        .collect()
}

/// The YAML documents of `name`'s query and response (by the question section).
fn yaml_for<'a>(docs: &'a [String], name: &str) -> Vec<&'a String> {
    let question = format!("'{name} IN ");
    docs.iter().filter(|d| d.contains(&question)).collect()
}

/// A `key: value` line of a YAML document.
fn yaml_value<'a>(doc: &'a str, key: &str) -> Option<&'a str> {
    doc.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
}

/// A protobuf field's value.
#[derive(Debug, Clone)]
enum V {
    Int(u64),
    Bytes(Vec<u8>),
}

/// The fields of one protobuf message, in order (a test-side decoder that knows
/// nothing of dnsguard's types).
fn fields(mut b: &[u8]) -> Vec<(u32, V)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let (field, wire) = ((key >> 3) as u32, key & 7);
        let value = match wire {
            0 => V::Int(varint(&mut b)),
            1 => {
                let v = u64::from_le_bytes(b[..8].try_into().unwrap());
                b = &b[8..];
                V::Int(v)
            }
            2 => {
                let n = varint(&mut b) as usize;
                let v = b[..n].to_vec();
                b = &b[n..];
                V::Bytes(v)
            }
            5 => {
                let v = u32::from_le_bytes(b[..4].try_into().unwrap());
                b = &b[4..];
                V::Int(u64::from(v))
            }
            other => panic!("wire type {other}"),
        };
        out.push((field, value));
    }
    out
}

fn int(f: &[(u32, V)], n: u32) -> Option<u64> {
    f.iter().find_map(|(k, v)| match v {
        V::Int(i) if *k == n => Some(*i),
        _ => None,
    })
}

fn bytes(f: &[(u32, V)], n: u32) -> Option<Vec<u8>> {
    f.iter().find_map(|(k, v)| match v {
        V::Bytes(b) if *k == n => Some(b.clone()),
        _ => None,
    })
}

/// One dnstap payload, decoded by field number (dnstap.proto).
#[derive(Debug)]
struct Tap {
    top: Vec<(u32, V)>,
    message: Vec<(u32, V)>,
    policy: Option<Vec<(u32, V)>>,
}

impl Tap {
    fn message_type(&self) -> u64 {
        int(&self.message, 1).unwrap()
    }

    /// The query or response message, whichever is present (wire format).
    fn wire(&self) -> Vec<u8> {
        bytes(&self.message, 10)
            .or_else(|| bytes(&self.message, 14))
            .unwrap_or_default()
    }

    fn extra(&self) -> Option<String> {
        bytes(&self.top, 3).map(|b| String::from_utf8(b).unwrap())
    }

    fn policy_text(&self, n: u32) -> Option<String> {
        bytes(self.policy.as_ref()?, n).map(|b| String::from_utf8(b).unwrap())
    }

    fn policy_int(&self, n: u32) -> Option<u64> {
        int(self.policy.as_ref()?, n)
    }
}

/// The data frames of a Frame Streams file, decoded.
fn read_taps(file: &Path) -> Vec<Tap> {
    let data = std::fs::read(file).unwrap();
    let mut b = &data[..];
    let mut taps = Vec::new();
    let u32_at = |b: &mut &[u8]| {
        let v = u32::from_be_bytes(b[..4].try_into().unwrap());
        *b = &b[4..];
        v
    };
    while !b.is_empty() {
        let len = u32_at(&mut b) as usize;
        if len == 0 {
            // A control frame (START, STOP): its length, then its body.
            let n = u32_at(&mut b) as usize;
            b = &b[n..];
            continue;
        }
        let top = fields(&b[..len]);
        b = &b[len..];
        let message = fields(&bytes(&top, 14).expect("message field"));
        let policy = bytes(&message, 15).map(|p| fields(&p));
        taps.push(Tap {
            top,
            message,
            policy,
        });
    }
    taps
}

/// `name` in DNS wire format, to find a query's messages.
fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out
}

fn taps_for<'a>(taps: &'a [Tap], name: &str) -> Vec<&'a Tap> {
    let needle = wire_name(name);
    taps.iter()
        .filter(|t| t.wire().windows(needle.len()).any(|w| w == needle))
        .collect()
}

const CLIENT_QUERY: u64 = 5;
const CLIENT_RESPONSE: u64 = 6;
const FORWARDER_QUERY: u64 = 7;
const FORWARDER_RESPONSE: u64 = 8;
const QNAME: u64 = 1;
const NXDOMAIN: u64 = 1;
const PASS: u64 = 3;
const LOCAL_DATA: u64 = 6;

/// `dnsguard_dnstap_dropped_total` from `/metrics`.
fn dropped(dg: &Dnsguard) -> u64 {
    let base = common::dash::base(dg);
    let auth = format!("Bearer {}", common::dash::token(dg));
    let m = request("GET", &base, "/metrics", &[("Authorization", &auth)], None);
    assert_eq!(m.status, 200);
    m.body
        .lines()
        .find_map(|l| l.strip_prefix("dnsguard_dnstap_dropped_total "))
        .expect("dropped counter in /metrics")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn blocked_allowed_and_flagged_queries_reach_fstrm_capture_and_dnstap_read() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("tap.sock");
    let capture = Capture::unix(&socket, &tmp.path().join("out.tap"));
    let dg = start(&up, &format!("unix:{}", socket.display()), "");
    wait_for(Duration::from_secs(20), "the collector connected", || {
        dg.log()
            .contains("dnstap collector connected")
            .then_some(())
    });
    let t0 = std::time::SystemTime::now();

    assert_eq!(
        addrs(&ask(dg.addr, "ads.example.", RecordType::A)),
        ["0.0.0.0"]
    );
    let strict = Ask {
        from: "127.0.0.2".parse().unwrap(),
        ..Ask::default()
    };
    let r = ask_with(dg.addr, "ads.example.", RecordType::AAAA, &strict);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    assert_eq!(
        addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        ["192.0.2.1"]
    );
    assert_eq!(
        addrs(&ask(dg.addr, "other.fwd.test.", RecordType::A)),
        ["192.0.2.3"]
    );
    ask(dg.addr, TUNNEL, RecordType::TXT);
    let tcp = Ask {
        tcp: true,
        ..Ask::default()
    };
    assert_eq!(
        addrs(&ask_with(dg.addr, "other.fwd.test.", RecordType::A, &tcp)),
        ["192.0.2.3"]
    );
    let t1 = std::time::SystemTime::now();
    let log = stop(dg);
    assert!(!log.contains("did not finish"), "{log}");
    let file = capture.finish();

    // BIND's decoder: envelope, addresses, ports, transport, times, messages.
    let docs = read_yaml(&file);
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    };
    // other.fwd.test: asked over UDP, then over TCP (a cache hit, answered in
    // place like a UDP one: its wire forms are there too).
    for (name, n) in [
        ("ads.example.", 4),
        ("www.fwd.test.", 2),
        ("other.fwd.test.", 4),
        (TUNNEL, 2),
    ] {
        let found = yaml_for(&docs, name);
        assert_eq!(found.len(), n, "{name}: {docs:#?}");
        for d in found {
            assert_eq!(yaml_value(d, "identity"), Some("tap-test"), "{d}");
            assert_eq!(yaml_value(d, "version"), Some("dnsguard-test 1"), "{d}");
            assert_eq!(yaml_value(d, "socket_family"), Some("INET"), "{d}");
            let protocol = yaml_value(d, "socket_protocol");
            assert!(
                protocol == Some("UDP") || (protocol == Some("TCP") && name == "other.fwd.test."),
                "{d}"
            );
            let from = yaml_value(d, "query_address").unwrap();
            assert!(from == "\"127.0.0.1\"" || from == "\"127.0.0.2\"", "{d}");
            let port: u16 = yaml_value(d, "query_port").unwrap().parse().unwrap();
            assert_ne!(port, 0);
            let (key, kind) = if d.contains("type: CLIENT_QUERY") {
                ("query_time", "query_message_data")
            } else {
                assert!(d.contains("type: CLIENT_RESPONSE"), "{d}");
                ("response_time", "response_message_data")
            };
            assert!(d.contains(kind), "{d}");
            let at = yaml_value(d, key)
                .unwrap()
                .trim_start_matches("!!timestamp ");
            let at =
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .unwrap()
                    .unix_timestamp();
            assert!(
                (secs(t0)..=secs(t1)).contains(&at),
                "{at} not in {t0:?}..{t1:?}: {d}"
            );
        }
    }
    // The TCP query: transport, port, and both wire forms.
    let tcp_docs: Vec<_> = docs
        .iter()
        .filter(|d| yaml_value(d, "socket_protocol") == Some("TCP"))
        .collect();
    assert_eq!(tcp_docs.len(), 2, "{docs:#?}");
    assert!(tcp_docs.iter().all(|d| {
        yaml_value(d, "query_port").is_some() && yaml_for(&docs, "other.fwd.test.").contains(d)
    }));

    // The same file by field number: policy and extra.
    let taps = read_taps(&file);
    assert_eq!(taps.len(), 2 * 6, "{taps:#?}");
    for t in &taps {
        assert_eq!(int(&t.top, 15), Some(1), "type MESSAGE");
        assert_eq!(bytes(&t.top, 1).unwrap(), b"tap-test");
        assert_eq!(bytes(&t.top, 2).unwrap(), b"dnsguard-test 1");
        let (q_ns, r_ns) = (int(&t.message, 9), int(&t.message, 13));
        match t.message_type() {
            CLIENT_QUERY => assert!(q_ns.is_some() && r_ns.is_none()),
            CLIENT_RESPONSE => assert!(r_ns.is_some() && int(&t.message, 12).is_some()),
            other => panic!("message type {other}"),
        }
    }
    let blocked = taps_for(&taps, "ads.example.");
    assert_eq!(blocked.len(), 4);
    for t in &blocked {
        assert_eq!(t.policy_text(1).as_deref(), Some("blocklist"));
        assert_eq!(t.policy_text(2).as_deref(), Some("mine line 2"));
        assert_eq!(t.policy_int(4), Some(QNAME));
        assert_eq!(t.policy_text(5).as_deref(), Some("ads.example"));
        assert_eq!(t.extra(), None);
    }
    let actions: Vec<_> = blocked.iter().map(|t| t.policy_int(3).unwrap()).collect();
    assert_eq!(actions, [LOCAL_DATA, LOCAL_DATA, NXDOMAIN, NXDOMAIN]);

    let allowlisted = taps_for(&taps, "www.fwd.test.");
    assert_eq!(allowlisted.len(), 2);
    for t in &allowlisted {
        assert_eq!(t.policy_text(1).as_deref(), Some("allowlist"));
        assert_eq!(t.policy_text(2).as_deref(), Some("mine line 3"));
        assert_eq!(t.policy_int(3), Some(PASS));
        assert_eq!(t.policy_int(4), Some(QNAME));
    }
    let plain = taps_for(&taps, "other.fwd.test.");
    assert_eq!(plain.len(), 4);
    assert!(
        plain
            .iter()
            .all(|t| t.policy.is_none() && t.extra().is_none())
    );

    let flagged = taps_for(&taps, TUNNEL);
    assert_eq!(flagged.len(), 2);
    for t in &flagged {
        let extra = t.extra().expect("tunnel findings in extra");
        assert!(extra.starts_with("tunnel score="), "{extra}");
        assert!(extra.contains("flagged=true reasons="), "{extra}");
        assert!(t.policy.is_none(), "flagged but answered (action log)");
    }
}

#[test]
fn log_upstream_adds_forwarder_query_and_response_with_the_upstream_address() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("tap.sock");
    let capture = Capture::unix(&socket, &tmp.path().join("out.tap"));
    let dg = start(
        &up,
        &format!("unix:{}", socket.display()),
        "log_upstream = true\n",
    );
    wait_for(Duration::from_secs(20), "the collector connected", || {
        dg.log()
            .contains("dnstap collector connected")
            .then_some(())
    });
    let t0 = std::time::SystemTime::now();
    // A miss goes upstream; the same question again is a cache hit that does not.
    for _ in 0..2 {
        assert_eq!(
            addrs(&ask(dg.addr, "other.fwd.test.", RecordType::A)),
            ["192.0.2.3"]
        );
    }
    assert_eq!(up.queries_for("other.fwd.test."), 1);
    let t1 = std::time::SystemTime::now();
    stop(dg);
    let file = capture.finish();

    // BIND's decoder: the pair, with the upstream as the responder.
    let docs = read_yaml(&file);
    let upstream: Vec<_> = yaml_for(&docs, "other.fwd.test.")
        .into_iter()
        .filter(|d| d.contains("type: FORWARDER_"))
        .collect();
    assert_eq!(upstream.len(), 2, "{docs:#?}");
    let port = up.addr().port().to_string();
    for d in &upstream {
        assert_eq!(yaml_value(d, "socket_family"), Some("INET"), "{d}");
        assert_eq!(yaml_value(d, "socket_protocol"), Some("UDP"), "{d}");
        assert_eq!(
            yaml_value(d, "response_address"),
            Some("\"127.0.0.1\""),
            "{d}"
        );
        assert_eq!(yaml_value(d, "response_port"), Some(port.as_str()), "{d}");
        assert_eq!(yaml_value(d, "identity"), Some("tap-test"), "{d}");
    }
    assert!(
        upstream[0].contains("type: FORWARDER_QUERY"),
        "{}",
        upstream[0]
    );
    assert!(upstream[0].contains("query_message_data"));
    assert!(
        upstream[1].contains("type: FORWARDER_RESPONSE"),
        "{}",
        upstream[1]
    );
    assert!(upstream[1].contains("response_message_data"));

    // By field number: the times, and the messages as they went over the wire.
    let taps = read_taps(&file);
    let types: Vec<u64> = taps_for(&taps, "other.fwd.test.")
        .iter()
        .map(|t| t.message_type())
        .collect();
    let count = |ty| types.iter().filter(|&&t| t == ty).count();
    assert_eq!(
        (count(CLIENT_QUERY), count(CLIENT_RESPONSE)),
        (2, 2),
        "{types:?}"
    );
    assert_eq!(
        (count(FORWARDER_QUERY), count(FORWARDER_RESPONSE)),
        (1, 1),
        "{types:?}"
    );
    let fq = taps
        .iter()
        .find(|t| t.message_type() == FORWARDER_QUERY)
        .unwrap();
    let fr = taps
        .iter()
        .find(|t| t.message_type() == FORWARDER_RESPONSE)
        .unwrap();
    for t in [fq, fr] {
        assert_eq!(bytes(&t.message, 5).unwrap(), [127, 0, 0, 1]);
        assert_eq!(int(&t.message, 7), Some(u64::from(up.addr().port())));
        assert_eq!(bytes(&t.message, 4), None, "dnsguard is the initiator");
        assert!(t.policy.is_none() && t.extra().is_none());
    }
    let query = bytes(&fq.message, 10).expect("the query sent");
    let answer = bytes(&fr.message, 14).expect("the upstream's answer");
    assert_eq!(query[..2], answer[..2], "the ID the upstream answered");
    assert_eq!(query[2] & 0x80, 0, "a query");
    assert_ne!(answer[2] & 0x80, 0, "a response");
    assert!(answer.windows(4).any(|w| w == [192, 0, 2, 3]), "{answer:?}");
    let micros =
        |sec: Option<u64>, nsec: Option<u64>| sec.unwrap() * 1_000_000 + nsec.unwrap() / 1000;
    let asked = micros(int(&fr.message, 8), int(&fr.message, 9));
    let answered = micros(int(&fr.message, 12), int(&fr.message, 13));
    let us = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64
    };
    assert!(
        us(t0) <= asked && asked <= answered && answered <= us(t1),
        "{} <= {asked} <= {answered} <= {}",
        us(t0),
        us(t1)
    );
}

#[test]
fn tcp_target_reaches_fstrm_capture() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let capture = Capture::tcp(port, &tmp.path().join("out.tap"));
    let dg = start(&up, &format!("tcp:127.0.0.1:{port}"), "");
    wait_for(Duration::from_secs(20), "the collector connected", || {
        dg.log()
            .contains("dnstap collector connected")
            .then_some(())
    });
    assert_eq!(
        addrs(&ask(dg.addr, "ads.example.", RecordType::A)),
        ["0.0.0.0"]
    );
    stop(dg);
    let file = capture.finish();
    let docs = read_yaml(&file);
    let found = yaml_for(&docs, "ads.example.");
    assert_eq!(found.len(), 2, "{docs:#?}");
    assert!(found.iter().all(|d| d.contains("identity: tap-test")));
}

#[test]
fn a_killed_collector_costs_events_not_answers_and_is_reconnected() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("tap.sock");
    let mut first = Capture::unix(&socket, &tmp.path().join("first.tap"));
    let dg = start(&up, &format!("unix:{}", socket.display()), "");
    wait_for(Duration::from_secs(20), "the collector connected", || {
        dg.log()
            .contains("dnstap collector connected")
            .then_some(())
    });
    assert_eq!(
        addrs(&ask(dg.addr, "ads.example.", RecordType::A)),
        ["0.0.0.0"]
    );
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    std::fs::remove_file(&socket).unwrap();
    // Nobody listening: every query still answered, the events counted as dropped.
    wait_for(Duration::from_secs(20), "the loss noticed", || {
        assert_eq!(
            addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
            ["192.0.2.1"]
        );
        (dropped(&dg) > 0).then_some(())
    });
    for _ in 0..20 {
        assert_eq!(
            addrs(&ask(dg.addr, "other.fwd.test.", RecordType::A)),
            ["192.0.2.3"]
        );
    }
    let second = Capture::unix(&socket, &tmp.path().join("second.tap"));
    wait_for(Duration::from_secs(20), "the collector reconnected", || {
        (dg.log().matches("dnstap collector connected").count() >= 2).then_some(())
    });
    assert_eq!(
        addrs(&ask(dg.addr, "ads.example.", RecordType::AAAA)),
        ["::"]
    );
    stop(dg);
    let docs = read_yaml(&second.finish());
    assert_eq!(yaml_for(&docs, "ads.example.").len(), 2, "{docs:#?}");
}

/// A collector on a Unix socket that answers READY with `reply` and then reads
/// nothing more, holding the connection open until the test ends.
fn bad_collector(socket: &Path, reply: Vec<u8>) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut ready = [0u8; 8];
            if conn.read_exact(&mut ready).is_err() {
                continue;
            }
            let len = u32::from_be_bytes(ready[4..].try_into().unwrap()) as usize;
            let mut body = vec![0; len];
            let _ = conn.read_exact(&mut body);
            let _ = conn.write_all(&reply);
            held.push(conn);
            if held.len() > 50 {
                return;
            }
        }
    })
}

/// ACCEPT with the dnstap content type.
fn accept_frame() -> Vec<u8> {
    let ct = b"protobuf:dnstap.Dnstap";
    let mut body = 1u32.to_be_bytes().to_vec();
    body.extend_from_slice(&1u32.to_be_bytes());
    body.extend_from_slice(&(ct.len() as u32).to_be_bytes());
    body.extend_from_slice(ct);
    let mut f = 0u32.to_be_bytes().to_vec();
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    f
}

#[test]
fn a_collector_that_never_reads_does_not_slow_answers() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("tap.sock");
    let _collector = bad_collector(&socket, accept_frame());
    let dg = start(&up, &format!("unix:{}", socket.display()), "queue = 64\n");
    wait_for(Duration::from_secs(20), "the collector connected", || {
        dg.log()
            .contains("dnstap collector connected")
            .then_some(())
    });
    // Far more than a Unix socket buffers: the writer's writes block, time out,
    // and it reconnects; the queue fills and drops. Clients see none of it.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut n = 0;
    while n < 3000 || !dg.log().contains("dnstap collector lost") {
        let t = Instant::now();
        assert_eq!(
            addrs(&ask(dg.addr, "ads.example.", RecordType::A)),
            ["0.0.0.0"]
        );
        slowest = slowest.max(t.elapsed());
        n += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "writer never gave up"
        );
    }
    // The writer waits up to 1 s on the stuck socket; an answer never does.
    assert!(
        slowest < Duration::from_millis(900),
        "slowest answer {slowest:?}"
    );
    assert!(dropped(&dg) > 0);
}

#[test]
fn a_collector_answering_garbage_changes_nothing_for_clients() {
    let up = FakeUpstream::start(localhost(), ZONE);
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("tap.sock");
    let _collector = bad_collector(&socket, b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec());
    let dg = start(&up, &format!("unix:{}", socket.display()), "");
    wait_for(Duration::from_secs(20), "the garbage noticed", || {
        assert_eq!(
            addrs(&ask(dg.addr, "ads.example.", RecordType::A)),
            ["0.0.0.0"]
        );
        dg.log()
            .contains("collector sent a data frame where a control frame belongs")
            .then_some(())
    });
    assert_eq!(
        addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        ["192.0.2.1"]
    );
    // What arrives while no collector takes it is discarded and counted.
    wait_for(Duration::from_secs(20), "drops counted", || {
        (dropped(&dg) > 0).then_some(())
    });
    assert!(!dg.log().contains("dnstap collector connected"));
    assert!(!dg.log().contains("panicked"));
}
