//! Tests of the query log: codec, filters, follow, stats, retention,
//! privacy, dropping, write errors, locking and crash safety.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::codec::{MINUTE_MS, minute_of};
use super::store::KvIter;
use super::wal;
use super::*;
use super::{Privacy, SledStore, encoder};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn base() -> u64 {
    minute_of(now_ms()) - 2 * 3_600_000
}

fn entry(t: u64, client: &str, name: &str) -> Entry {
    Entry::new(t, ip(client), Arc::from(name), 1)
}

fn full_entry(t: u64) -> Entry {
    Entry {
        time_ms: t,
        client: ip("2001:db8::7"),
        name: Arc::from("tracker.ads.example.com"),
        qtype: 28,
        verdict: Ruling::Blocked,
        flagged: true,
        rule: Arc::from("||ads.example.com^"),
        list: Arc::from("easylist"),
        rcode: 3,
        answer: Arc::from("0.0.0.0,cname.example.net"),
        source: Origin::Upstream(Arc::from("quad9")),
        latency_us: 12345,
        tunnel_score: 0.75,
        group: Arc::from("kids"),
        client_name: entry::empty_str(),
        tunnel: None,
    }
}

fn cfg() -> QueryLogConfig {
    QueryLogConfig::default()
}

fn all(log: &QueryLog, f: &Criteria) -> Vec<Entry> {
    log.query(f).collect::<Result<Vec<_>, _>>().unwrap()
}

fn names(v: &[Entry]) -> Vec<String> {
    v.iter().map(|e| e.name.to_string()).collect()
}

// ------------------------------------------------------------------ codec

#[test]
fn codec_round_trip() {
    let t = base() + 1234;
    let mut entries = vec![full_entry(t), entry(t + 10, "10.0.0.1", "example.com")];
    entries[1].source = Origin::Stale;
    entries[1].verdict = Ruling::Allowlisted;
    entries.push(full_entry(minute_of(t) + 59_999));
    let key = BlockKey {
        minute_ms: minute_of(t),
        seq: 3,
    };
    let bytes = encode_block(key, &entries);
    assert_eq!(decode_block(&bytes).unwrap(), entries);
    assert_eq!(decode_key(&key.encode()).unwrap(), key);
    for src in [
        Origin::Cache,
        Origin::Local,
        Origin::Stale,
        Origin::Blocked,
        Origin::Refused,
        Origin::Failed,
        Origin::Upstream(Arc::from("cloudflare")),
    ] {
        let mut e = full_entry(t);
        e.source = src;
        assert_eq!(decode_entry(&encode_entry(&e)).unwrap(), e);
    }
}

#[test]
fn tunnel_reasons_are_stored_as_data_and_read_back_as_the_rule() {
    use crate::detect::{ReasonCode, Reasons};
    let mut reasons = Reasons::default();
    reasons.reg_len = 11; // example.com
    reasons.distinct = 412;
    reasons.window_secs = 300;
    reasons.bytes_per_min = 2048.0;
    reasons.set(ReasonCode::DistinctSubdomains);
    let mut e = full_entry(base() + 77);
    e.rule = entry::empty_str();
    e.tunnel = Some(Box::new(reasons));
    let bytes = encode_entry(&e);
    let back = decode_entry(&bytes).unwrap();
    let text = "tunnel: 412 distinct names under example.com in 300 s, 2048 B/min";
    assert_eq!(&*back.rule, text);
    assert_eq!(
        back,
        Entry {
            rule: Arc::from(text),
            ..e.clone()
        }
    );
    // The text is what the DNS path no longer writes: it would be longer.
    let mut as_text = e.clone();
    (as_text.rule, as_text.tunnel) = (Arc::from(text), None);
    assert!(bytes.len() + 20 < encode_entry(&as_text).len());
    // Names hidden: the reasons go with the rule.
    entry::privacy_apply(Privacy::HideNames, &mut e);
    assert_eq!(e.tunnel, None);
}

/// A block as version 3 wrote it (every rule a string index), following the
/// layout in `codec.rs`: what databases and WAL segments of earlier versions hold.
fn encode_v3(minute_ms: u64, entries: &[Entry]) -> Vec<u8> {
    fn var(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut strings: Vec<Arc<str>> = Vec::new();
    let mut clients: Vec<IpAddr> = Vec::new();
    let mut body = Vec::new();
    for e in entries {
        let mut s = |x: &Arc<str>| -> u64 {
            if x.is_empty() {
                return 0;
            }
            let i = strings.iter().position(|y| y == x).unwrap_or_else(|| {
                strings.push(x.clone());
                strings.len() - 1
            });
            i as u64 + 1
        };
        let (name, group, answer, cname) =
            (s(&e.name), s(&e.group), s(&e.answer), s(&e.client_name));
        let label = match &e.source {
            Origin::Upstream(l) => Some(s(l)),
            _ => None,
        };
        let extra = !e.rule.is_empty() || !e.list.is_empty();
        let (rule, list) = (s(&e.rule), s(&e.list));
        let client = clients
            .iter()
            .position(|c| *c == e.client)
            .unwrap_or_else(|| {
                clients.push(e.client);
                clients.len() - 1
            });
        let score = e.tunnel_score != 0.0 || e.tunnel.is_some();
        var(&mut body, e.time_ms - minute_ms);
        var(&mut body, client as u64);
        var(&mut body, name);
        var(&mut body, u64::from(e.qtype));
        let verdict = match e.verdict {
            Ruling::Allowed => 0,
            Ruling::Blocked => 1,
            Ruling::Allowlisted => 2,
        };
        body.push(
            verdict
                | u8::from(e.flagged) << 2
                | e.source.kind() << 3
                | u8::from(score) << 6
                | u8::from(extra) << 7,
        );
        var(&mut body, u64::from(e.rcode));
        var(&mut body, u64::from(e.latency_us));
        if score {
            assert!(e.tunnel.is_none(), "not needed by these tests");
            body.extend_from_slice(&e.tunnel_score.to_le_bytes());
            body.push(0);
        }
        var(&mut body, group);
        if let Some(l) = label {
            var(&mut body, l);
        }
        if extra {
            var(&mut body, rule);
            var(&mut body, list);
        }
        var(&mut body, answer);
        var(&mut body, cname);
    }
    let mut out = vec![3];
    var(&mut out, minute_ms);
    var(&mut out, strings.len() as u64);
    for x in &strings {
        var(&mut out, x.len() as u64);
        out.extend_from_slice(x.as_bytes());
    }
    var(&mut out, clients.len() as u64);
    for c in &clients {
        match c {
            IpAddr::V4(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.push(6);
                out.extend_from_slice(&a.octets());
            }
        }
    }
    var(&mut out, entries.len() as u64);
    out.extend_from_slice(&body);
    out
}

/// A blocked entry as the filter logs a list's rule: its `line N` label.
fn list_blocked(t: u64, name: &str, line: &str) -> Entry {
    let mut e = entry(t, "10.0.0.9", name);
    e.verdict = Ruling::Blocked;
    e.source = Origin::Blocked;
    e.list = Arc::from("bench");
    e.rule = Arc::from(line);
    e
}

#[test]
fn list_lines_are_stored_as_numbers() {
    // Diverse blocked names each bring their own line: stored as a number,
    // not as one more string per entry (issue #24).
    let t = base();
    let key = BlockKey {
        minute_ms: minute_of(t),
        seq: 0,
    };
    let lines: Vec<Entry> = (1..=200u64)
        .map(|i| {
            list_blocked(
                t + i,
                &format!("ads{i}.example"),
                &format!("line {}", i * 7919),
            )
        })
        .collect();
    let bytes = encode_block(key, &lines);
    assert!(
        !bytes.windows(5).any(|w| w == b"line "),
        "no line label stored as text"
    );
    assert_eq!(decode_block(&bytes).unwrap(), lines);
    assert!(bytes.len() + 200 * 8 < encode_v3(key.minute_ms, &lines).len());
    // Rules that only look like a line keep their exact text.
    let odd = [
        "line 0",
        "line 4294967295",
        "line 4294967296",
        "line 007",
        "line ",
        "line +5",
        "line 12a",
        "line  3",
        "Line 3",
        "||line.example^",
    ];
    let odd: Vec<Entry> = odd
        .iter()
        .enumerate()
        .map(|(i, r)| list_blocked(t + i as u64, "x.example", r))
        .collect();
    assert_eq!(decode_block(&encode_block(key, &odd)).unwrap(), odd);
    // A line number beyond u32 is malformed, not a panic.
    let mut bad = encode_block(key, &[list_blocked(t, "a.example", "line 1")]);
    let at = bad.len() - 4; // rule, list, answer, client name
    assert_eq!(bad[at], 1 << 1 | 1, "the rule is line 1");
    let mut big = Vec::new();
    codec::put_varint(&mut big, (u64::from(u32::MAX) + 1) << 1 | 1);
    bad.splice(at..at + 1, big);
    assert_eq!(decode_block(&bad), Err(DecodeError::Invalid("rule line")));
}

#[test]
fn blocks_of_version_3_are_still_read_from_the_store_and_the_wal() {
    // A database written by version 3, with a leftover WAL segment of it.
    let dir = tempfile::tempdir().unwrap();
    let t = base();
    let in_db: Vec<Entry> = (0..5)
        .map(|i| list_blocked(t + i, &format!("db{i}.example"), &format!("line {}", i + 1)))
        .chain([full_entry(t + 5)])
        .collect();
    let in_wal: Vec<Entry> = (0..5)
        .map(|i| {
            list_blocked(
                t + 10 + i,
                &format!("wal{i}.example"),
                &format!("line {}", i + 40),
            )
        })
        .collect();
    let block = |seq, v: &[Entry]| {
        (
            BlockKey {
                minute_ms: minute_of(t),
                seq,
            }
            .encode()
            .to_vec(),
            encode_v3(minute_of(t), v),
        )
    };
    let log = QueryLog::open(dir.path(), cfg()).unwrap();
    let w = log.store.as_ref().unwrap().get(wal::KEY_WAL_SEQ).unwrap();
    let w = w.map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
    drop(log);
    let store = SledStore::open(&dir.path().join("db")).unwrap().into_dyn();
    store.apply(&[block(1, &in_db)], &[]).unwrap();
    store.flush().unwrap();
    drop(store);
    let mut seg = Vec::new();
    wal::encode_record(w + 1, &[block(2, &in_wal)], &mut seg);
    write_segment(dir.path(), 1, &seg);

    let log = QueryLog::open(dir.path(), cfg()).unwrap();
    let got = all(
        &log,
        &Criteria {
            order: Order::OldestFirst,
            ..Criteria::default()
        },
    );
    let want: Vec<Entry> = in_db.iter().chain(&in_wal).cloned().collect();
    assert_eq!(got, want);
    assert_eq!(got[1].rule.as_ref(), "line 2");
}

#[test]
fn blocks_of_version_1_are_still_read() {
    // Version 1 had no reasons byte after the score: take it out again.
    let e = full_entry(base() + 5);
    let mut bytes = encode_v3(minute_of(e.time_ms), std::slice::from_ref(&e));
    let score = e.tunnel_score.to_le_bytes();
    let at = bytes.windows(4).position(|w| w == score).unwrap() + 4;
    assert_eq!(bytes.remove(at), 0, "no reasons");
    assert_eq!(bytes.pop(), Some(0), "no client name before version 3");
    bytes[0] = 1;
    assert_eq!(decode_entry(&bytes).unwrap(), e);
}

#[test]
fn codec_rejects_garbage_without_panicking() {
    let t = base();
    let entries: Vec<Entry> = (0..20).map(|i| full_entry(t + i)).collect();
    let good = encode_block(
        BlockKey {
            minute_ms: minute_of(t),
            seq: 0,
        },
        &entries,
    );
    // Every truncation is an error.
    for n in 0..good.len() {
        assert!(decode_block(&good[..n]).is_err(), "truncated at {n}");
    }
    // Bit flips and random bytes never panic.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let mut b = good.clone();
        for _ in 0..(rnd() % 4 + 1) {
            let i = (rnd() as usize) % b.len();
            b[i] ^= 1 << (rnd() % 8);
        }
        let _ = decode_block(&b);
        let _ = decode_entry(&b);
        let len = (rnd() % 64) as usize;
        let r: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        let _ = decode_block(&r);
        let _ = decode_key(&r);
        let _ = codec::MinuteCounts::decode(&r);
        let _ = codec::decode_top(&r);
    }
    assert!(
        decode_block(&[
            1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01
        ])
        .is_err()
    );
    assert!(decode_block(&[9]).is_err());
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(decode_block(&trailing), Err(DecodeError::Trailing));
}

// ------------------------------------------------------------------ log

#[test]
fn handle_is_shareable() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<QueryLog>();
    send_sync::<Entry>();
    fn send<T: Send>() {}
    send::<EntryIter>();
}

#[test]
fn round_trip_order_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t = base();
    let mut input = Vec::new();
    {
        let log = QueryLog::open(dir.path(), cfg()).unwrap();
        for i in 0..5000u64 {
            let mut e = full_entry(t + i * 37); // spans several minutes and blocks
            e.name = Arc::from(format!("n{i}.example.com"));
            input.push(e.clone());
            log.record(e);
        }
        log.flush().unwrap();
        assert_eq!(log.written(), 5000);
        assert_eq!(log.dropped(), 0);
        let got = all(
            &log,
            &Criteria {
                order: Order::OldestFirst,
                ..Criteria::default()
            },
        );
        assert_eq!(got, input);
        let mut newest = all(&log, &Criteria::default());
        newest.reverse();
        assert_eq!(newest, input);
        log.shutdown();
    }
    // Reopen: data still there; new entries in an already used minute go to
    // a new block and come after the old ones.
    let log = QueryLog::open(dir.path(), cfg()).unwrap();
    let e = entry(t + 4999 * 37, "10.0.0.9", "after-reopen.example");
    log.record(e.clone());
    log.flush().unwrap();
    let got = all(
        &log,
        &Criteria {
            order: Order::OldestFirst,
            ..Criteria::default()
        },
    );
    assert_eq!(got.len(), 5001);
    assert_eq!(got[..5000], input[..]);
    assert_eq!(got[5000], e);
}

/// sled 0.34 keeps about one written leaf per LRU shard (256) resident
/// whatever its `cache_capacity`, and a leaf holds up to 17 values: so the
/// largest value the log writes sets its resident size under a steady stream
/// of entries. Budget: 12 MiB for those leaves (the RSS target of #24 is
/// 96 MB at 20k QPS).
#[test]
fn stored_blocks_stay_within_the_resident_leaf_budget() {
    const RESIDENT_LEAVES: usize = 256;
    const VALUES_PER_LEAF: usize = 17;
    // 6 KiB blocks (codec::BLOCK_TARGET_BYTES): about 26 MiB of resident leaves.
    const BUDGET: usize = 28 << 20;
    let dir = tempfile::tempdir().unwrap();
    let log = QueryLog::open(dir.path(), cfg()).unwrap();
    let t = base();
    for i in 0..20_000u64 {
        // Diverse names, as misses and blocked names are: little to intern.
        let mut e = full_entry(t + i % 50_000);
        e.name = Arc::from(format!("host-{i}.cdn{}.example.com", i % 97));
        log.record(e);
        if i % 1000 == 999 {
            log.flush().unwrap(); // within the channel's capacity: none dropped
        }
    }
    assert_eq!(log.written(), 20_000);
    let store = log.store.clone().unwrap();
    let mut blocks = 0;
    for kv in store.scan(&[codec::PREFIX_ENTRY], &[codec::PREFIX_ENTRY + 1], false) {
        let (_, v) = kv.unwrap();
        blocks += 1;
        assert!(
            v.len() * VALUES_PER_LEAF * RESIDENT_LEAVES <= BUDGET,
            "a block of {} bytes: sled would keep up to {} MiB of such leaves",
            v.len(),
            (v.len() * VALUES_PER_LEAF * RESIDENT_LEAVES) >> 20
        );
    }
    assert!(blocks > 10, "{blocks} blocks");
}

#[test]
fn every_filter() {
    let dir = tempfile::tempdir().unwrap();
    let log = QueryLog::open(dir.path(), cfg()).unwrap();
    let t = base();
    let mk = |dt: u64, c: &str, n: &str, v: Ruling, flagged: bool| {
        let mut e = entry(t + dt, c, n);
        e.verdict = v;
        e.flagged = flagged;
        e
    };
    let data = vec![
        mk(0, "10.0.0.1", "example.com", Ruling::Allowed, false),
        mk(1_000, "10.0.0.2", "a.example.com", Ruling::Blocked, false),
        mk(
            61_000,
            "10.0.1.1",
            "badexample.com",
            Ruling::Allowlisted,
            false,
        ),
        mk(
            120_000,
            "2001:db8::1",
            "x.tunnel.net",
            Ruling::Allowed,
            true,
        ),
        mk(
            200_000,
            "10.0.0.1",
            "Example.COM.evil.net",
            Ruling::Blocked,
            true,
        ),
    ];
    let mut data = data;
    data[1].client_name = Arc::from("agent-1");
    for e in &data {
        log.record(e.clone());
    }
    log.flush().unwrap();
    let q = |f: Criteria| {
        names(&all(
            &log,
            &Criteria {
                order: Order::OldestFirst,
                ..f
            },
        ))
    };
    assert_eq!(q(Criteria::default()).len(), 5);
    // since / until (inclusive / exclusive), across minute boundaries.
    let f = Criteria {
        since_ms: Some(t + 1_000),
        until_ms: Some(t + 120_000),
        ..Criteria::default()
    };
    assert_eq!(q(f), ["a.example.com", "badexample.com"]);
    let f = Criteria {
        since_ms: Some(t + 120_001),
        ..Criteria::default()
    };
    assert_eq!(q(f), ["Example.COM.evil.net"]);
    // client address and CIDR
    assert_eq!(
        q(Criteria::default().with_client("10.0.0.1").unwrap()),
        ["example.com", "Example.COM.evil.net"]
    );
    assert_eq!(
        q(Criteria::default().with_client("10.0.0.0/24").unwrap()).len(),
        3
    );
    assert_eq!(
        q(Criteria::default().with_client("2001:db8::/32").unwrap()),
        ["x.tunnel.net"]
    );
    assert!(Criteria::default().with_client("10.0.0.300").is_err());
    // client name: only entries logged under it
    assert_eq!(
        q(Criteria::default().with_client("agent-1").unwrap()),
        ["a.example.com"]
    );
    // domain: suffix with leading dot, otherwise substring (case-insensitive)
    let d = |p: &str| Criteria {
        domain: Some(DomainPattern::new(p)),
        ..Criteria::default()
    };
    assert_eq!(q(d(".example.com")), ["example.com", "a.example.com"]);
    assert_eq!(q(d(".EXAMPLE.com.")), ["example.com", "a.example.com"]);
    assert_eq!(
        q(d("example.com")),
        [
            "example.com",
            "a.example.com",
            "badexample.com",
            "Example.COM.evil.net"
        ]
    );
    assert_eq!(q(d("tunnel")), ["x.tunnel.net"]);
    // verdicts and flagged
    let v = |vf: RulingFilter| Criteria {
        verdict: vf,
        ..Criteria::default()
    };
    assert_eq!(
        q(v(RulingFilter::Blocked)),
        ["a.example.com", "Example.COM.evil.net"]
    );
    assert_eq!(
        q(v(RulingFilter::Allowed)),
        ["example.com", "badexample.com", "x.tunnel.net"]
    );
    assert_eq!(q(v(RulingFilter::Allowlisted)), ["badexample.com"]);
    let f = Criteria {
        flagged_only: true,
        ..Criteria::default()
    };
    assert_eq!(q(f), ["x.tunnel.net", "Example.COM.evil.net"]);
    // limit, both orders
    let f = Criteria {
        limit: Some(2),
        ..Criteria::default()
    };
    assert_eq!(q(f.clone()), ["example.com", "a.example.com"]);
    assert_eq!(
        names(&all(&log, &f)),
        ["Example.COM.evil.net", "x.tunnel.net"]
    );
    // combined
    let f = Criteria {
        verdict: RulingFilter::Blocked,
        flagged_only: true,
        domain: Some(DomainPattern::new("evil")),
        ..Criteria::default()
    }
    .with_client("10.0.0.0/8")
    .unwrap();
    assert_eq!(q(f), ["Example.COM.evil.net"]);
}

#[test]
fn follow_with_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let log = QueryLog::open(dir.path(), cfg()).unwrap();
    let t = now_ms();
    log.record(entry(t, "10.0.0.1", "before"));
    log.flush().unwrap();
    let mut cur = log.end_cursor().unwrap();
    assert_eq!(cur.to_string().parse::<Cursor>().unwrap(), cur);
    // Nothing new yet.
    let mut it = log.query_after(cur, &Criteria::default());
    assert!(it.next().is_none());
    cur = it.cursor();
    // New entries appended to the same (still open) block and a new minute.
    log.record(entry(t + 1, "10.0.0.1", "one"));
    log.record(entry(t + 2, "10.0.0.2", "two"));
    log.record(entry(minute_of(t) + MINUTE_MS + 5, "10.0.0.1", "three"));
    log.flush().unwrap();
    let f = Criteria::default().with_client("10.0.0.1").unwrap();
    let mut it = log.query_after(cur, &f);
    let got: Vec<Entry> = it.by_ref().map(Result::unwrap).collect();
    assert_eq!(names(&got), ["one", "three"]);
    cur = it.cursor();
    log.record(entry(minute_of(t) + MINUTE_MS + 6, "10.0.0.1", "four"));
    log.flush().unwrap();
    let got: Vec<Entry> = log.query_after(cur, &f).map(Result::unwrap).collect();
    assert_eq!(names(&got), ["four"]);
    assert!("bad".parse::<Cursor>().is_err());
}

#[test]
fn stats_from_aggregates_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t = base();
    let run = |n: u64| {
        let log = QueryLog::open(dir.path(), cfg()).unwrap();
        for i in 0..n {
            let mut e = entry(
                t + i * 1000,
                if i.is_multiple_of(4) {
                    "10.0.0.1"
                } else {
                    "10.0.0.2"
                },
                if i.is_multiple_of(3) {
                    "other.com"
                } else {
                    "popular.com"
                },
            );
            if i.is_multiple_of(5) {
                e.verdict = Ruling::Blocked;
                e.name = Arc::from("ads.com");
            }
            e.flagged = i.is_multiple_of(10);
            e.latency_us = 100;
            log.record(e);
        }
        log.flush().unwrap();
        log
    };
    drop(run(100));
    let log = run(100); // same period again: aggregates merge with stored ones
    let s = log.stats(t, t + 100_000, 10).unwrap();
    assert_eq!(s.total, 200);
    assert_eq!(s.blocked, 40);
    assert_eq!(s.allowed, 160);
    assert_eq!(s.flagged, 20);
    assert!((s.blocked_share - 0.2).abs() < 1e-9);
    assert!((s.avg_latency_us - 100.0).abs() < 1e-9);
    assert_eq!(
        s.top_blocked,
        vec![TopItem {
            key: "ads.com".into(),
            count: 40
        }]
    );
    assert_eq!(
        s.top_domains[0],
        TopItem {
            key: "popular.com".into(),
            count: 106
        }
    );
    assert_eq!(
        s.top_domains[1],
        TopItem {
            key: "other.com".into(),
            count: 54
        }
    );
    assert_eq!(
        s.top_clients[0],
        TopItem {
            key: "10.0.0.2".into(),
            count: 150
        }
    );
    assert_eq!(
        s.top_clients[1],
        TopItem {
            key: "10.0.0.1".into(),
            count: 50
        }
    );
    // Minute granularity: the first minute only.
    let s = log.stats(t, t + 1, 10).unwrap();
    assert_eq!(s.total, 120);
    let s = log
        .stats(t + 10 * MINUTE_MS, t + 20 * MINUTE_MS, 10)
        .unwrap();
    assert_eq!(s.total, 0);
}

#[test]
fn retention_prunes_old_entries_and_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let log = QueryLog::open(dir.path(), cfg()).unwrap();
    let now = now_ms();
    let day = 86_400_000;
    log.record(entry(now - 40 * day, "10.0.0.1", "old.example"));
    log.record(entry(now - 31 * day, "10.0.0.1", "older-than-30d.example"));
    log.record(entry(now - 29 * day, "10.0.0.1", "recent.example"));
    log.record(entry(now - 1000, "10.0.0.1", "now.example"));
    log.flush().unwrap();
    assert_eq!(log.stats(0, now + 1, 10).unwrap().total, 4);
    let deleted = log.prune_now(now).unwrap();
    assert!(deleted >= 4, "deleted {deleted}");
    let f = Criteria {
        order: Order::OldestFirst,
        ..Criteria::default()
    };
    assert_eq!(names(&all(&log, &f)), ["recent.example", "now.example"]);
    let s = log.stats(0, now + 1, 10).unwrap();
    assert_eq!(s.total, 2);
    assert_eq!(s.top_domains.len(), 2);
    // Pruning "in the future" removes the rest; retention 0 keeps everything.
    log.prune_now(now + 60 * day).unwrap();
    assert!(all(&log, &f).is_empty());
    log.shutdown();
    drop(log);
    let keep = QueryLog::open(
        dir.path(),
        QueryLogConfig {
            retention_days: 0,
            ..cfg()
        },
    )
    .unwrap();
    keep.record(entry(now - 400 * day, "10.0.0.1", "ancient"));
    keep.flush().unwrap();
    assert_eq!(keep.prune_now(now).unwrap(), 0);
    assert_eq!(all(&keep, &f).len(), 1);
}

#[test]
fn privacy_levels() {
    let t = base();
    let mut levels = Vec::new();
    for privacy in [
        Privacy::Everything,
        Privacy::HideNames,
        Privacy::HideClients,
        Privacy::Nothing,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = QueryLog::open(dir.path(), QueryLogConfig { privacy, ..cfg() }).unwrap();
        let mut e4 = full_entry(t);
        e4.client = ip("192.168.1.5");
        log.record(e4);
        log.record(full_entry(t + 1)); // IPv6 client
        log.flush().unwrap();
        let got = all(
            &log,
            &Criteria {
                order: Order::OldestFirst,
                ..Criteria::default()
            },
        );
        let s = log.stats(t, t + 1000, 10).unwrap();
        assert_eq!(s.total, 2, "{privacy}: counters always kept");
        assert_eq!(s.flagged, 2);
        levels.push((privacy, got, s));
    }
    let (_, ev, s) = &levels[0];
    assert_eq!(&*ev[0].name, "tracker.ads.example.com");
    assert_eq!(ev[0].client, ip("192.168.1.5"));
    assert_eq!(s.top_blocked.len(), 1);
    assert_eq!(s.top_clients.len(), 2);

    let (_, hn, s) = &levels[1];
    assert_eq!(hn.len(), 2);
    assert!(
        hn.iter()
            .all(|e| &*e.name == "hidden" && e.answer.is_empty() && e.rule.is_empty())
    );
    assert_eq!(&*hn[0].list, "easylist");
    assert_eq!(hn[0].client, ip("192.168.1.5"));
    assert!(s.top_blocked.is_empty() && s.top_domains.is_empty());
    assert_eq!(s.top_clients.len(), 2);

    let (_, hc, s) = &levels[2];
    assert_eq!(hc[0].client, ip("0.0.0.0"));
    assert_eq!(hc[1].client, ip("::"));
    assert_eq!(&*hc[0].name, "tracker.ads.example.com");
    assert!(s.top_clients.is_empty());
    assert_eq!(s.top_blocked.len(), 1);

    let (_, no, s) = &levels[3];
    assert!(no.is_empty());
    assert!(s.top_clients.is_empty() && s.top_blocked.is_empty() && s.top_domains.is_empty());
}

// ------------------------------------------------------------------ failure handling

/// A store wrapper that can block inside `apply` or fail on demand.
struct TestStore {
    inner: Arc<dyn Store>,
    fail: AtomicBool,
    gate: Mutex<Option<(SyncSender<()>, Receiver<()>)>>,
}

impl Store for TestStore {
    fn apply(&self, puts: &[(Vec<u8>, Vec<u8>)], dels: &[Vec<u8>]) -> Result<(), StoreError> {
        if let Some((entered, release)) = self.gate.lock().unwrap().take() {
            entered.send(()).unwrap();
            release.recv().unwrap();
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError("No space left on device (os error 28)".into()));
        }
        self.inner.apply(puts, dels)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn scan(&self, s: &[u8], e: &[u8], r: bool) -> KvIter {
        self.inner.scan(s, e, r)
    }
    fn flush(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError("flush failed".into()));
        }
        self.inner.flush()
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk()
    }
}

fn test_store(dir: &Path) -> Arc<TestStore> {
    Arc::new(TestStore {
        inner: SledStore::open(dir).ok().unwrap().into_dyn(),
        fail: AtomicBool::new(false),
        gate: Mutex::new(None),
    })
}

#[test]
fn full_channel_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let store = test_store(dir.path());
    let (entered_tx, entered_rx) = sync_channel(1);
    let (release_tx, release_rx) = sync_channel(1);
    *store.gate.lock().unwrap() = Some((entered_tx, release_rx));
    let log = QueryLog::with_store(
        store.clone(),
        QueryLogConfig {
            channel_capacity: 4,
            batch_size: 1,
            retention_days: 0,
            ..cfg()
        },
    );
    // Dropped before `log` if an assertion fails: the writer then leaves apply()
    // and the test fails instead of hanging in the log's shutdown.
    let release_tx = release_tx;
    let t = base();
    log.record(entry(t, "10.0.0.1", "first"));
    entered_rx.recv().unwrap(); // the writer is now stuck in apply()
    let start = Instant::now();
    for i in 0..14 {
        log.record(entry(t + 1 + i, "10.0.0.1", "more"));
    }
    assert!(start.elapsed() < Duration::from_secs(1), "record blocked");
    assert_eq!(log.dropped(), 10); // 4 fit in the channel
    release_tx.send(()).unwrap();
    log.flush().unwrap();
    assert_eq!(log.written(), 5);
    assert_eq!(all(&log, &Criteria::default()).len(), 5);
    log.shutdown();
    log.record(entry(t, "10.0.0.1", "after shutdown"));
    assert_eq!(log.dropped(), 11);
}

#[test]
fn write_errors_are_counted_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let store = test_store(dir.path());
    let log = QueryLog::with_store(
        store.clone(),
        QueryLogConfig {
            retention_days: 0,
            ..cfg()
        },
    );
    let t = base();
    store.fail.store(true, Ordering::SeqCst);
    for i in 0..10 {
        log.record(entry(t + i, "10.0.0.1", "during-failure"));
    }
    log.flush().unwrap();
    assert!(log.write_errors() >= 1);
    assert!(log.last_error().unwrap().contains("No space left"));
    assert_eq!(log.written(), 0);
    // The writer keeps running and retries the pending batch.
    store.fail.store(false, Ordering::SeqCst);
    log.record(entry(t + 100, "10.0.0.1", "after-recovery"));
    log.flush().unwrap();
    assert_eq!(log.written(), 11);
    assert_eq!(all(&log, &Criteria::default()).len(), 11);
    assert_eq!(log.stats(t, t + 1000, 5).unwrap().total, 11);
}

/// Real filesystem errors. We run as root, so permissions cannot make a
/// directory read-only; instead a regular file sits where the directory (or
/// the database inside it) should be.
#[test]
fn unusable_directory_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let e = QueryLog::open(&file, cfg()).err().unwrap();
    assert!(matches!(e, QueryLogError::Open { .. }), "{e}");
    let d2 = dir.path().join("d2");
    std::fs::create_dir(&d2).unwrap();
    std::fs::write(d2.join("db"), b"x").unwrap();
    let e = QueryLog::open(&d2, cfg()).err().unwrap();
    assert!(matches!(e, QueryLogError::Open { .. }), "{e}");
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let log = QueryLog::open(dir.path(), cfg()).unwrap();
    let e = QueryLog::open(dir.path(), cfg()).err().unwrap();
    assert!(matches!(e, QueryLogError::Locked(_)), "{e}");
    drop(log);
    QueryLog::open(dir.path(), cfg()).unwrap();
}

#[test]
fn disabled_log_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let log = QueryLog::open(
        dir.path().join("never"),
        QueryLogConfig {
            enabled: false,
            ..cfg()
        },
    )
    .unwrap();
    log.record(entry(base(), "10.0.0.1", "x"));
    log.flush().unwrap();
    assert_eq!(log.query(&Criteria::default()).count(), 0);
    assert_eq!(log.stats(0, u64::MAX, 5).unwrap().total, 0);
    assert!(!dir.path().join("never").exists());
}

// ------------------------------------------------------------------ crash safety

const CHILD_ENV: &str = "QUERYLOG_CRASH_CHILD_DIR";
const CHILD_STALL_ENV: &str = "QUERYLOG_CRASH_CHILD_STALL";

/// A store whose `flush` (fsync) blocks while `stalled` is set, like sled's
/// flush on a saturated disk.
struct StallStore {
    inner: Arc<dyn Store>,
    stalled: Mutex<bool>,
    cv: std::sync::Condvar,
    flushes: AtomicU64,
}

impl StallStore {
    fn wrap(inner: Arc<dyn Store>) -> Arc<StallStore> {
        Arc::new(StallStore {
            inner,
            stalled: Mutex::new(true),
            cv: std::sync::Condvar::new(),
            flushes: AtomicU64::new(0),
        })
    }
    fn release(&self) {
        *self.stalled.lock().unwrap() = false;
        self.cv.notify_all();
    }
}

impl Store for StallStore {
    fn apply(&self, puts: &[(Vec<u8>, Vec<u8>)], dels: &[Vec<u8>]) -> Result<(), StoreError> {
        self.inner.apply(puts, dels)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn scan(&self, s: &[u8], e: &[u8], r: bool) -> KvIter {
        self.inner.scan(s, e, r)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        let mut g = self.stalled.lock().unwrap();
        while *g {
            g = self.cv.wait(g).unwrap();
        }
        drop(g);
        self.inner.flush()
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk()
    }
}

/// Body of the child process of the SIGKILL tests: records at a steady
/// ~20,000 entries/s and reports progress; with `CHILD_STALL_ENV` set every
/// sled flush (fsync) blocks forever. Does nothing when run as a normal test.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let stall = std::env::var_os(CHILD_STALL_ENV).is_some();
    let log = QueryLog::open_wrapped(Path::new(&dir), cfg(), |s| {
        if stall { StallStore::wrap(s) } else { s }
    })
    .unwrap();
    let mut i: u64 = 0;
    loop {
        for _ in 0..100 {
            log.record(entry(now_ms(), "10.0.0.1", &format!("n{i}")));
            i += 1;
        }
        if i.is_multiple_of(1000) {
            println!("sent {i} dropped {}", log.dropped());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `crash_child` in a child process in `dir` until it reported 40,000
/// entries sent, then SIGKILLs it; returns the count it last reported.
fn run_and_kill_child(dir: &Path, stall: bool) -> u64 {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "querylog::tests::crash_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if stall {
        cmd.env(CHILD_STALL_ENV, "1");
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0u64;
    let mut locked_checked = false;
    while sent < 40_000 && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let Some(rest) = line.strip_prefix("sent ") else {
            continue;
        };
        let mut parts = rest.split(" dropped ");
        sent = parts.next().unwrap().parse().unwrap();
        assert_eq!(parts.next().unwrap(), "0", "child dropped entries");
        if !locked_checked && sent >= 5000 {
            let segments = wal::list_segments(dir).unwrap();
            let e = QueryLog::open(dir, cfg()).err().unwrap();
            assert!(matches!(e, QueryLogError::Locked(_)), "{e}");
            // The failed open did not touch (replay, delete) the WAL.
            if let Some(first) = segments.first() {
                let now = wal::list_segments(dir).unwrap();
                assert!(now.is_empty() || now[0] >= *first);
            }
            locked_checked = true;
        }
    }
    assert!(sent >= 40_000, "child too slow: {sent}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    sent
}

/// Reopens `dir` after a crash and checks continuity (n0, n1, ... without
/// gaps or duplicates), the loss bound and the counters; returns the count.
fn check_after_crash(dir: &Path, sent: u64) -> u64 {
    let log = QueryLog::open(dir, cfg()).unwrap();
    assert!(
        wal::list_segments(dir).unwrap().is_empty(),
        "replayed segments are deleted"
    );
    let got: Vec<Entry> = log
        .query(&Criteria {
            order: Order::OldestFirst,
            ..Criteria::default()
        })
        .map(Result::unwrap)
        .collect();
    for (i, e) in got.iter().enumerate() {
        assert_eq!(&*e.name, format!("n{i}"), "gap or duplicate at {i}");
    }
    // At ~20k/s, one batch interval (100 ms) is ~2,000 entries; the child
    // reports every 1,000 after recording them. Allow 8,000 (400 ms) for
    // scheduling noise on a loaded machine.
    let k = got.len() as u64;
    eprintln!("crash: reported sent {sent}, kept {k}");
    assert!(k + 8_000 >= sent, "kept {k} of at least {sent} sent");
    // The counters come through the same commit path (replayed too).
    let s = log.stats(0, u64::MAX, 1).unwrap();
    assert_eq!(s.total, k, "per-minute counts match the entries");
    drop(log);
    // A second open replays nothing more.
    let log = QueryLog::open(dir, cfg()).unwrap();
    assert_eq!(log.query(&Criteria::default()).count() as u64, k);
    assert_eq!(log.stats(0, u64::MAX, 1).unwrap().total, k);
    k
}

#[test]
fn crash_safety_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let sent = run_and_kill_child(dir.path(), false);
    check_after_crash(dir.path(), sent);
}

/// The fsync-stall bug: with sled's flush blocked for good (a saturated
/// disk), the writer keeps appending to the WAL and applying to sled, so a
/// SIGKILL still loses at most about one batch interval. (Before the WAL the
/// writer waited inside the first flush and everything after it was lost.)
#[test]
fn sigkill_during_stalled_fsync_loses_at_most_the_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let sent = run_and_kill_child(dir.path(), true);
    check_after_crash(dir.path(), sent);
}

fn stored_wal_seq(log: &QueryLog) -> u64 {
    let v = log
        .store
        .as_ref()
        .unwrap()
        .get(wal::KEY_WAL_SEQ)
        .unwrap()
        .unwrap();
    u64::from_be_bytes(v.try_into().unwrap())
}

fn write_segment(dir: &Path, n: u64, bytes: &[u8]) {
    std::fs::write(wal::segment_path(dir, n), bytes).unwrap();
}

#[test]
fn wal_records_round_trip_and_torn_tails_are_ignored() {
    let t = base();
    let mut bytes = Vec::new();
    let mut enc = wal::testing::encoder();
    wal::testing::encode_entries(
        &mut enc,
        7,
        &[full_entry(t), entry(t + 1, "10.0.0.1", "a")],
        &mut bytes,
    );
    let first = bytes.len();
    wal::testing::encode_entries(&mut enc, 8, &[entry(t + 2, "10.0.0.2", "b")], &mut bytes);
    let (r, torn) = wal::decode_records(&bytes);
    assert!(!torn);
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].seq, r[1].seq), (7, 8));
    assert_eq!(
        wal::testing::entries(&r[0]),
        vec![full_entry(t), entry(t + 1, "10.0.0.1", "a")]
    );
    // The block of that minute stays open: record 8 puts it again, whole.
    assert_eq!(
        wal::testing::entries(&r[1]),
        vec![
            full_entry(t),
            entry(t + 1, "10.0.0.1", "a"),
            entry(t + 2, "10.0.0.2", "b")
        ]
    );
    // Every truncation keeps exactly the whole records before the cut.
    for cut in 0..bytes.len() {
        let (r, torn) = wal::decode_records(&bytes[..cut]);
        assert_eq!(r.len(), usize::from(cut >= first), "cut at {cut}");
        assert_eq!(torn, cut != 0 && cut != first, "cut at {cut}");
    }
    // A flipped bit anywhere in the second record drops it (and only it).
    for i in first..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        let (r, torn) = wal::decode_records(&b);
        assert!(torn && r.len() == 1, "flip at {i}");
    }
    // Garbage never panics.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..300 {
        let g: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = wal::decode_records(&g);
    }
}

#[test]
fn replay_applies_new_records_once_and_ignores_torn_tails() {
    let dir = tempfile::tempdir().unwrap();
    let t = base();
    let log = QueryLog::open(dir.path(), cfg()).unwrap();
    for i in 0..10 {
        log.record(entry(t + i, "10.0.0.1", &format!("old{i}")));
    }
    log.flush().unwrap();
    let w = stored_wal_seq(&log);
    assert!(w >= 1);
    drop(log);
    assert!(wal::list_segments(dir.path()).unwrap().is_empty());

    // A crash between a completed flush and the deletion of its segments:
    // the segment still holds records that sled has (seq <= W), followed
    // by newer ones and a torn record.
    // The records are encoded as the running log would have: on top of what
    // the store holds (the old record by an encoder of its own: it is skipped).
    let old: Vec<Entry> = (0..10)
        .map(|i| entry(t + i, "10.0.0.1", &format!("old{i}")))
        .collect();
    let store = SledStore::open(&dir.path().join("db")).unwrap().into_dyn();
    let mut enc = encoder::Encoder::new(Some(store.clone()), Privacy::Everything);
    let mut seg = Vec::new();
    wal::testing::encode_entries(&mut wal::testing::encoder(), w, &old, &mut seg);
    let new = |i: u64, name: &str| entry(t + 20 + i, "10.0.0.2", name);
    wal::testing::encode_entries(&mut enc, w + 1, &[new(0, "new0")], &mut seg);
    write_segment(dir.path(), 3, &seg);
    let mut seg = Vec::new();
    wal::testing::encode_entries(&mut enc, w + 2, &[new(1, "new1")], &mut seg);
    let whole = seg.len();
    wal::testing::encode_entries(&mut enc, w + 3, &[new(2, "torn")], &mut seg);
    write_segment(dir.path(), 4, &seg[..whole + 20]);
    drop(enc);
    drop(store);

    let log = QueryLog::open(dir.path(), cfg()).unwrap();
    assert!(wal::list_segments(dir.path()).unwrap().is_empty());
    let got = names(&all(
        &log,
        &Criteria {
            order: Order::OldestFirst,
            ..Criteria::default()
        },
    ));
    let mut want: Vec<String> = (0..10).map(|i| format!("old{i}")).collect();
    want.extend(["new0".into(), "new1".into()]);
    assert_eq!(got, want, "no duplicates, the torn record ignored");
    let s = log.stats(t, t + 1000, 5).unwrap();
    assert_eq!(s.total, 12, "counters updated by the replay");
    assert_eq!(s.top_clients.len(), 2, "top lists updated by the replay");
    // New records continue after the replayed ones.
    log.record(entry(t + 30, "10.0.0.3", "later"));
    log.flush().unwrap();
    assert!(
        stored_wal_seq(&log) >= w + 3,
        "the torn record's seq is free again"
    );
    drop(log);
    let log = QueryLog::open(dir.path(), cfg()).unwrap();
    assert_eq!(log.query(&Criteria::default()).count(), 13);
}

#[test]
fn wal_holds_nothing_the_privacy_level_hides_and_shutdown_clears_it() {
    for privacy in [Privacy::HideNames, Privacy::HideClients, Privacy::Nothing] {
        let dir = tempfile::tempdir().unwrap();
        let mut stall = None;
        let log = QueryLog::open_wrapped(
            dir.path(),
            QueryLogConfig {
                privacy,
                retention_days: 0,
                ..cfg()
            },
            |s| {
                let st = StallStore::wrap(s);
                stall = Some(st.clone());
                st
            },
        )
        .unwrap();
        let stall = stall.unwrap();
        let t = base();
        let mut e = full_entry(t);
        e.client = ip("192.0.2.77");
        log.record(e.clone());
        // Wait (bounded) for the batch to reach the WAL; sled's flush is
        // stalled, so the segment stays.
        let deadline = Instant::now() + Duration::from_secs(10);
        let bytes = loop {
            let segs = wal::list_segments(dir.path()).unwrap();
            let b: Vec<u8> = segs
                .iter()
                .flat_map(|n| std::fs::read(wal::segment_path(dir.path(), *n)).unwrap())
                .collect();
            if !b.is_empty() || Instant::now() > deadline {
                break b;
            }
            std::thread::yield_now();
        };
        let (records, torn) = wal::decode_records(&bytes);
        assert!(!torn && records.len() == 1, "{privacy}");
        let logged = wal::testing::entries(&records[0]);
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|x| x == needle);
        if privacy == Privacy::Nothing {
            // Only the minute's counts: no entry at all.
            assert!(logged.is_empty(), "{logged:?}");
            let keys: Vec<u8> = records[0].puts.iter().map(|(k, _)| k[0]).collect();
            assert_eq!(keys, [b'M'], "the minute's counts only");
        }
        match privacy {
            Privacy::HideNames => {
                let w = &logged[0];
                assert_eq!(&*w.name, "hidden");
                assert!(!has(b"tracker") && !has(b"cname.example"));
                assert_eq!(w.client, e.client);
            }
            Privacy::HideClients => {
                let w = &logged[0];
                assert_eq!(&*w.name, "tracker.ads.example.com");
                assert!(w.client.is_unspecified());
                assert!(!has(&[192, 0, 2, 77]));
            }
            _ => {
                assert!(!has(b"tracker") && !has(b"kids") && !has(&[192, 0, 2, 77]));
                assert!(!has(b"hidden"));
            }
        }
        assert!(stall.flushes.load(Ordering::SeqCst) <= 1);
        stall.release();
        log.shutdown();
        assert!(
            wal::list_segments(dir.path()).unwrap().is_empty(),
            "a clean shutdown leaves no WAL"
        );
    }
}

// ------------------------------------------------------------------ parsing and output

#[test]
fn parse_durations_and_times() {
    assert_eq!(parse_duration("90s").unwrap(), 90_000);
    assert_eq!(parse_duration("30m").unwrap(), 1_800_000);
    assert_eq!(parse_duration("12h").unwrap(), 43_200_000);
    assert_eq!(parse_duration("7d").unwrap(), 604_800_000);
    assert_eq!(parse_duration("2w").unwrap(), 1_209_600_000);
    assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000);
    for bad in ["", "30", "m", "30x", "-5m", "99999999999999999999d"] {
        let e = parse_duration(bad).unwrap_err().to_string();
        assert!(e.contains(&format!("{bad:?}")), "{e}");
    }
    assert_eq!(
        parse_time("2026-11-25T10:00:00Z").unwrap(),
        1_795_600_800_000
    );
    assert_eq!(
        parse_time("2026-11-25T11:00:00.250+01:00").unwrap(),
        1_795_600_800_250
    );
    let e = parse_time("2026-13-25T10:00:00Z").unwrap_err().to_string();
    assert!(e.contains("2026-13-25T10:00:00Z"), "{e}");
    let now = 1_795_600_800_000;
    assert_eq!(parse_since("24h", now).unwrap(), now - 86_400_000);
    assert_eq!(parse_since("2026-11-25T10:00:00Z", now).unwrap(), now);
    let e = parse_since("yesterday", now).unwrap_err().to_string();
    assert!(e.contains("\"yesterday\""), "{e}");
    assert_eq!(format_time(1_795_600_800_250), "2026-11-25T10:00:00.250Z");
}

#[test]
fn output_formats() {
    let mut e = full_entry(1_795_600_800_250);
    e.answer = Arc::from("a,\"b\"");
    let e2 = entry(1_795_600_801_000, "10.0.0.1", "plain.example");
    let rows = || vec![Ok(e.clone()), Ok(e2.clone())];

    let mut out = Vec::new();
    assert_eq!(
        write_entries(OutputFormat::Json, rows(), &mut out).unwrap(),
        2
    );
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["time"], "2026-11-25T10:00:00.250Z");
    assert_eq!(v["type"], "AAAA");
    assert_eq!(v["source"], "upstream:quad9");
    assert_eq!(v["verdict"], "blocked");
    let back: Entry = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(back, e);

    let mut out = Vec::new();
    write_entries(OutputFormat::Csv, rows(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("time,time_ms,client,name"));
    assert!(lines[1].contains(",\"a,\"\"b\"\"\","), "{}", lines[1]);
    assert!(lines[2].starts_with(
        "2026-11-25T10:00:01.000Z,1795600801000,10.0.0.1,plain.example,1,A,allowed,false,"
    ));
    assert_eq!(lines.len(), 3);

    let mut out = Vec::new();
    write_entries(OutputFormat::Table, rows(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TIME"));
    let col = lines[0].find("NAME").unwrap();
    assert_eq!(&lines[2][col..col + 13], "plain.example");
    assert!(lines[1].starts_with("2026-11-25 10:00:00.250 2001:db8::7"));
    assert!(lines[2].contains("NOERROR"));

    // Empty input still gives the CSV header; errors propagate.
    let mut out = Vec::new();
    write_entries(OutputFormat::Csv, Vec::new(), &mut out).unwrap();
    assert_eq!(out.split(|&b| b == b'\n').count(), 2);
    let err = write_entries(
        OutputFormat::Json,
        vec![Err(QueryLogError::Closed)],
        &mut Vec::new(),
    );
    assert!(err.is_err());
    assert!("xml".parse::<OutputFormat>().is_err());
}

#[test]
fn config_defaults_and_strictness() {
    let c: QueryLogConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, QueryLogConfig::default());
    assert!(c.enabled);
    assert_eq!(c.retention_days, 30);
    assert_eq!(c.privacy, Privacy::Everything);
    let c: QueryLogConfig = serde_json::from_str(r#"{"privacy":"hide-names"}"#).unwrap();
    assert_eq!(c.privacy, Privacy::HideNames);
    assert!(serde_json::from_str::<QueryLogConfig>(r#"{"retention":3}"#).is_err());
    assert!("hide-clients".parse::<Privacy>().is_ok());
    assert!("bogus".parse::<Privacy>().is_err());
}

const FSIZE_ENV: &str = "QUERYLOG_FSIZE_CHILD_DIR";

/// Body of the child process of `real_disk_write_errors_recover`: runs with
/// a file-size limit (RLIMIT_FSIZE) that makes sled's writes fail with
/// EFBIG like a full disk, then lifts it. Run in a child because the limit
/// is per process. Does nothing when run as a normal test.
#[test]
fn fsize_child() {
    let Ok(dir) = std::env::var(FSIZE_ENV) else {
        return;
    };
    let log = QueryLog::open(&dir, cfg()).unwrap();
    let t = base();
    let batch = |tag: &str, round: u64| {
        for i in 0..2000 {
            log.record(entry(
                t + round * 2000 + i,
                "10.0.0.1",
                &format!("{tag}{round}-{i}"),
            ));
        }
        log.flush().unwrap();
    };
    batch("warm", 0);
    assert_eq!(log.written(), 2000);
    let size = log.size_on_disk().unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on process-wide settings of this child.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut old), 0);
        let lim = libc::rlimit {
            rlim_cur: size + 50_000,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let mut round = 1;
    while log.write_errors() == 0 && round < 200 {
        batch("full", round);
        round += 1;
    }
    assert!(log.write_errors() > 0, "no write error");
    let msg = log.last_error().unwrap();
    assert!(msg.contains("File too large"), "{msg}");
    // record() still never blocks.
    let start = Instant::now();
    for i in 0..100_000 {
        log.record(entry(t + i, "10.0.0.1", "x"));
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    // SAFETY: as above.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &old), 0);
    }
    // The writer reopens the store (with back-off) and writes again.
    // (The backlog of "x" entries alone can move `written`; what counts is that
    // entries recorded after the limit was lifted are stored.)
    let f = Criteria {
        domain: Some(DomainPattern::new("after")),
        ..Criteria::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = log.written();
        batch("after", round);
        round += 1;
        if log.written() >= before + 2000 || Instant::now() > deadline {
            break;
        }
    }
    assert!(log.query(&f).count() >= 2000, "writer did not recover");
    println!("FSIZE-CHILD-DONE errors={} msg={msg}", log.write_errors());
}

/// A real I/O error from the file system. We run as root, so a read-only
/// directory is not read-only for us; instead the child process lowers its
/// RLIMIT_FSIZE so sled's log writes fail (EFBIG), which sled 0.34 treats
/// like a full disk.
#[test]
fn real_disk_write_errors_recover() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "querylog::tests::fsize_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FSIZE_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("FSIZE-CHILD-DONE"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn series_buckets_minute_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let t = base() - base() % (5 * 60_000);
    let log = QueryLog::open(dir.path(), cfg()).unwrap();
    // 3 queries in minute 0, 2 (one blocked) in minute 6, none after.
    for ms in [0, 1_000, 59_000] {
        log.record(entry(t + ms, "10.0.0.1", "a.com"));
    }
    let mut b = entry(t + 6 * 60_000, "10.0.0.1", "ads.com");
    b.verdict = Ruling::Blocked;
    log.record(b);
    log.record(entry(t + 6 * 60_000 + 5, "10.0.0.1", "a.com"));
    log.flush().unwrap();
    let s = log.series(t, t + 15 * 60_000, 5).unwrap();
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].start_ms, t);
    assert_eq!((s[0].total, s[0].blocked), (3, 0));
    assert_eq!((s[1].total, s[1].blocked, s[1].allowed), (2, 1, 1));
    assert_eq!(s[2].total, 0);
    assert!(log.series(t, t + 100_000 * 60_000, 1).is_err());
    assert!(log.series(t, t, 1).unwrap().is_empty());
}

#[test]
fn unavailable_log_records_nothing_and_reports_why() {
    let log = QueryLog::unavailable(
        QueryLogConfig::default(),
        "Read-only file system (os error 30)",
    );
    log.record(Entry::default());
    assert_eq!(log.written(), 0);
    assert_eq!(log.write_errors(), 1);
    let why = log.last_error().expect("an error is reported");
    assert!(
        why.contains("cannot open the query log") && why.contains("Read-only file system"),
        "{why}"
    );
    // Reads work (empty), so the dashboard and `dnsguard stats` can show the error.
    assert_eq!(log.stats(0, u64::MAX, 10).unwrap().total, 0);
}

#[test]
fn rate_limited_counts_reach_the_minute_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let run = |n: u64| {
        let log = QueryLog::open(dir.path(), cfg()).unwrap();
        for _ in 0..n {
            log.count_rate_limited();
        }
        log.flush().unwrap();
        log
    };
    drop(run(7));
    let log = run(5);
    let s = log.stats(now - MINUTE_MS, now_ms() + MINUTE_MS, 0).unwrap();
    assert_eq!((s.rate_limited, s.total), (12, 0));
}

#[test]
fn minute_counts_without_rate_limited_still_decode() {
    let c = codec::MinuteCounts {
        total: 3,
        allowed: 2,
        blocked: 1,
        latency_sum_us: 40,
        ..Default::default()
    };
    // Stored as before the field existed: old readers read new minutes
    // without limiting, and new readers read old minutes.
    let bytes = c.encode();
    assert_eq!(bytes, [1, 3, 2, 1, 0, 0, 0, 40]);
    assert_eq!(codec::MinuteCounts::decode(&bytes).unwrap(), c);
    let limited = codec::MinuteCounts {
        rate_limited: 300,
        ..c
    };
    assert_eq!(
        codec::MinuteCounts::decode(&limited.encode()).unwrap(),
        limited
    );
    let mut extra = limited.encode();
    extra.push(1);
    assert!(codec::MinuteCounts::decode(&extra).is_err());
}

#[test]
fn client_names_are_stored_and_shown() {
    // Two agents behind one address, told apart by their `[[clients]]` names.
    let t = base() + 7;
    let mut a = full_entry(t);
    a.client_name = Arc::from("agent-1");
    let mut b = full_entry(t + 1);
    b.client_name = Arc::from("agent-2");
    let bytes = encode_block(
        BlockKey {
            minute_ms: minute_of(t),
            seq: 0,
        },
        &[a.clone(), b.clone()],
    );
    assert_eq!(decode_block(&bytes).unwrap(), vec![a.clone(), b]);
    // A version 2 block (no name after the answer) still reads, without a name.
    let plain = full_entry(t);
    let mut v2 = encode_v3(minute_of(t), std::slice::from_ref(&plain));
    assert_eq!(v2.pop(), Some(0), "empty name last");
    v2[0] = 2;
    assert_eq!(decode_entry(&v2).unwrap(), plain);
    // Table: the name in the client column; JSON: a `client_name` field.
    let mut out = Vec::new();
    write_entries(OutputFormat::Table, vec![Ok(a.clone())], &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let row = text.lines().nth(1).unwrap();
    assert_eq!(row.split_whitespace().nth(2), Some("agent-1"), "{row}");
    let mut out = Vec::new();
    write_entries(OutputFormat::Json, vec![Ok(a.clone())], &mut out).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["client_name"], "agent-1");
    // Hidden clients hide the name too.
    entry::privacy_apply(Privacy::HideClients, &mut a);
    assert_eq!(&*a.client_name, "");
}

#[test]
fn the_confidence_level_is_stored_and_entries_without_one_still_read() {
    use crate::detect::{Level, ReasonCode, Reasons};
    let mut reasons = Reasons::default();
    reasons.reg_len = 11; // example.com
    reasons.set(ReasonCode::Budget);
    reasons.budget_bytes = 97.0;
    reasons.budget_limit = 64.0;
    reasons.level = Some(Level::Medium);
    let mut e = full_entry(base() + 9);
    e.rule = entry::empty_str();
    e.flagged = true;
    e.tunnel = Some(Box::new(reasons));
    let bytes = encode_entry(&e);
    let back = decode_entry(&bytes).unwrap();
    assert_eq!(
        back.tunnel.as_ref().and_then(|r| r.level),
        Some(Level::Medium)
    );
    assert_eq!(
        &*back.rule,
        "tunnel: medium confidence, 97 bytes of new name text sent to example.com \
         in ~10 min (budget 64 B)"
    );
    let json = serde_json::to_value(&back).unwrap();
    assert_eq!(json["level"], "medium");
    assert!(
        serde_json::to_value(full_entry(base()))
            .unwrap()
            .get("level")
            .is_none()
    );

    // An entry logged before levels: 34 bytes of reasons, no level, no budget.
    let mut stored = Vec::new();
    e.tunnel.as_ref().unwrap().encode(&mut stored);
    let at = bytes
        .windows(stored.len())
        .position(|w| w == stored)
        .unwrap();
    assert_eq!(usize::from(bytes[at - 1]), Reasons::ENCODED_LEN);
    let mut old = bytes[..at - 1].to_vec();
    old.push(Reasons::OLD_ENCODED_LEN as u8);
    old.extend_from_slice(&stored[..Reasons::OLD_ENCODED_LEN]);
    old.extend_from_slice(&bytes[at + stored.len()..]);
    let back = decode_entry(&old).unwrap();
    let r = back.tunnel.as_ref().unwrap();
    assert_eq!((r.level, r.budget_bytes), (None, 0.0));
    assert!(r.has(ReasonCode::Budget));
    assert!(
        back.rule.starts_with("tunnel: 0 bytes of new name text"),
        "{}",
        back.rule
    );
}

/// A store that counts the batches applied to it.
struct CountingStore {
    inner: Arc<dyn Store>,
    applies: AtomicU64,
}

impl Store for CountingStore {
    fn apply(&self, puts: &[(Vec<u8>, Vec<u8>)], dels: &[Vec<u8>]) -> Result<(), StoreError> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        self.inner.apply(puts, dels)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn scan(&self, s: &[u8], e: &[u8], r: bool) -> KvIter {
        self.inner.scan(s, e, r)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk()
    }
}

/// With the WAL, batches that follow each other closely reach sled in one
/// apply (the minute's open block, put again by every batch, is applied once),
/// and reach queries without a flush. (Before, every batch was its own sled
/// batch: 50 here.) What waits for its apply is in the WAL: the SIGKILL tests
/// above check that it survives.
#[test]
fn close_batches_reach_sled_in_one_apply() {
    let dir = tempfile::tempdir().unwrap();
    let mut counting = None;
    let config = QueryLogConfig {
        batch_size: 10,
        retention_days: 0,
        ..cfg()
    };
    let log = QueryLog::open_wrapped(dir.path(), config, |s| {
        let c = Arc::new(CountingStore {
            inner: s,
            applies: AtomicU64::new(0),
        });
        counting = Some(c.clone());
        c
    })
    .unwrap();
    let store = counting.unwrap();
    let before = store.applies.load(Ordering::SeqCst);
    let started = Instant::now();
    let t = now_ms();
    for i in 0..500 {
        log.record(entry(t, "10.0.0.1", &format!("n{i}")));
    }
    // 50 batches of 10; poll until all are readable (no flush asked).
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.query(&Criteria::default()).count() < 500 {
        assert!(Instant::now() < deadline, "entries never reached sled");
        std::thread::sleep(Duration::from_millis(10));
    }
    let applies = store.applies.load(Ordering::SeqCst) - before;
    let waited = started.elapsed().as_millis() as u64;
    // One apply at once, then at most one per `APPLY_EVERY` (500 ms).
    let most = 2 + waited / 500;
    assert!(
        applies <= most && applies < 50,
        "{applies} applies for 50 batches in {waited} ms"
    );
    assert_eq!(log.dropped(), 0);
    let got = all(
        &log,
        &Criteria {
            order: Order::OldestFirst,
            ..Criteria::default()
        },
    );
    assert_eq!(
        names(&got),
        (0..500).map(|i| format!("n{i}")).collect::<Vec<_>>()
    );
}

/// More distinct blocked names in an hour than the top map keeps in memory
/// (`encoder::TOP_MEMORY_CAP`): the map is trimmed in place to its largest
/// counts, and the names asked often stay on top with their exact counts.
#[test]
fn top_lists_keep_the_largest_counts_past_the_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let config = QueryLogConfig {
        channel_capacity: 100_000,
        ..cfg()
    };
    let log = QueryLog::open(dir.path(), config).unwrap();
    let t = base();
    let blocked = |name: &str| {
        let mut e = entry(t, "10.0.0.1", name);
        e.verdict = Ruling::Blocked;
        e
    };
    let distinct = encoder::TOP_MEMORY_CAP + encoder::TOP_MEMORY_CAP / 2;
    for i in 0..distinct {
        if i % 1000 == 0 {
            // Asked before and after each trim.
            for _ in 0..3 {
                log.record(blocked("often.example"));
            }
            log.record(blocked("sometimes.example"));
        }
        log.record(blocked(&format!("once{i}.example")));
    }
    log.flush().unwrap();
    assert_eq!(log.dropped(), 0);
    let s = log.stats(t, t + MINUTE_MS, 3).unwrap();
    let rounds = distinct.div_ceil(1000) as u64;
    assert_eq!(s.blocked, distinct as u64 + 4 * rounds);
    assert_eq!(s.top_blocked.len(), 3);
    assert_eq!(
        (s.top_blocked[0].key.as_str(), s.top_blocked[0].count),
        ("often.example", 3 * rounds)
    );
    assert_eq!(
        (s.top_blocked[1].key.as_str(), s.top_blocked[1].count),
        ("sometimes.example", rounds)
    );
    assert_eq!(s.top_blocked[2].count, 1);
}
