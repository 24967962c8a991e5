//! The query-log codec (`src/querylog/codec.rs`): every decoder on arbitrary
//! bytes must return a value or a `DecodeError`, never panic; decoded blocks
//! re-encode to something that decodes the same; and structured entries
//! round-trip through `encode_block`/`decode_block` (times clamped into the
//! block's minute, as documented).
#![no_main]

use std::net::IpAddr;
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use dnsguard::querylog::codec::{
    BlockKey, MINUTE_MS, MinuteCounts, decode_block, decode_entry, decode_key, decode_top,
    encode_block, encode_entry, encode_top,
};
use dnsguard::detect::Reasons;
use dnsguard::querylog::{Entry, Origin, Ruling};
use libfuzzer_sys::fuzz_target;

/// Structured inputs (a first byte other than 0); a first byte 0 means the rest
/// is raw stored bytes, so seeds can be real encoder output.
#[derive(Arbitrary, Debug)]
enum Input {
    /// Entries to encode as one block (time offsets relative to `minute`).
    Block { minute: u64, entries: Vec<E> },
    /// A top list.
    Top(Vec<(String, u64)>),
    /// Per-minute counters.
    Counts([u64; 8]),
    /// A key.
    Key(u64, u32),
}

#[derive(Arbitrary, Debug)]
struct E {
    time_ms: u64,
    client: IpAddr,
    name: String,
    qtype: u16,
    verdict: u8,
    flagged: bool,
    rule: String,
    list: String,
    rcode: u16,
    answer: String,
    source: (u8, String),
    latency_us: u32,
    tunnel_score: f32,
    group: String,
    /// Tunnel reasons as stored (kept when they decode).
    tunnel: Option<[u8; Reasons::ENCODED_LEN]>,
}

impl E {
    fn entry(&self) -> Entry {
        Entry {
            time_ms: self.time_ms,
            client: self.client,
            name: Arc::from(self.name.as_str()),
            qtype: self.qtype,
            verdict: match self.verdict % 3 {
                0 => Ruling::Allowed,
                1 => Ruling::Blocked,
                _ => Ruling::Allowlisted,
            },
            flagged: self.flagged,
            rule: Arc::from(self.rule.as_str()),
            list: Arc::from(self.list.as_str()),
            rcode: self.rcode,
            answer: Arc::from(self.answer.as_str()),
            source: match self.source.0 % 7 {
                0 => Origin::Upstream(Arc::from(self.source.1.as_str())),
                1 => Origin::Cache,
                2 => Origin::Local,
                3 => Origin::Stale,
                4 => Origin::Blocked,
                5 => Origin::Refused,
                _ => Origin::Failed,
            },
            latency_us: self.latency_us,
            tunnel_score: self.tunnel_score,
            group: Arc::from(self.group.as_str()),
            client_name: Arc::from(self.group.as_str()),
            tunnel: self.tunnel.and_then(|b| Reasons::decode(&b)).map(Box::new),
        }
    }
}

/// What `e` reads back as: with tunnel reasons, their text is its rule.
fn read_back(e: &Entry) -> Entry {
    let mut want = e.clone();
    if let Some(t) = &e.tunnel {
        want.rule = Arc::from(t.rule_for(&e.name));
    }
    want
}

/// `Entry` equality with the score and the tunnel reasons compared bit for bit
/// (NaN is a value here), except that 0.0 and -0.0 both mean "not scored".
fn same(a: &Entry, b: &Entry) -> bool {
    let reasons = |e: &Entry| {
        e.tunnel.as_ref().map(|r| {
            let mut v = Vec::new();
            r.encode(&mut v);
            v
        })
    };
    let score = |e: &Entry| {
        if e.tunnel_score == 0.0 {
            0
        } else {
            e.tunnel_score.to_bits()
        }
    };
    let mut a2 = a.clone();
    let mut b2 = b.clone();
    (a2.tunnel_score, a2.tunnel) = (0.0, None);
    (b2.tunnel_score, b2.tunnel) = (0.0, None);
    a2 == b2 && score(a) == score(b) && reasons(a) == reasons(b)
}

fn raw(bytes: &[u8]) {
    let _ = decode_key(bytes);
    let _ = decode_entry(bytes);
    let _ = decode_top(bytes);
    let _ = MinuteCounts::decode(bytes);
    if let Ok(entries) = decode_block(bytes) {
        // A block that decodes re-encodes (under its own minute) to the same entries.
        let minute = entries.first().map_or(0, |e| e.time_ms - e.time_ms % MINUTE_MS);
        if entries.iter().all(|e| e.time_ms - e.time_ms % MINUTE_MS == minute) {
            let again = decode_block(&encode_block(BlockKey { minute_ms: minute, seq: 0 }, &entries))
                .expect("re-encoded block decodes");
            assert_eq!(again.len(), entries.len());
            for (a, b) in again.iter().zip(&entries) {
                assert!(same(a, b), "{a:?} != {b:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode == 0 {
        raw(rest);
        return;
    }
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(rest)) else {
        return;
    };
    match input {
        Input::Block { minute, entries } => {
            let minute = minute - minute % MINUTE_MS;
            let key = BlockKey { minute_ms: minute, seq: 0 };
            let entries: Vec<Entry> = entries.iter().map(E::entry).collect();
            let bytes = encode_block(key, &entries);
            let back = decode_block(&bytes).expect("encoded block decodes");
            assert_eq!(back.len(), entries.len());
            for (got, e) in back.iter().zip(&entries) {
                let mut want = read_back(e);
                want.time_ms = minute + e.time_ms.saturating_sub(minute).min(MINUTE_MS - 1);
                assert!(same(got, &want), "{got:?} != {want:?}");
            }
            if let Some(e) = entries.first() {
                let one = decode_entry(&encode_entry(e)).expect("encoded entry decodes");
                assert!(same(&one, &read_back(e)), "{one:?} != {e:?}");
            }
            raw(&bytes);
        }
        Input::Top(items) => {
            let items: Vec<(&str, u64)> = items.iter().map(|(k, c)| (k.as_str(), *c)).collect();
            let back = decode_top(&encode_top(&items)).expect("encoded top list decodes");
            assert_eq!(back.len(), items.len());
            for ((k, c), (k2, c2)) in back.iter().zip(&items) {
                assert_eq!((k.as_str(), *c), (*k2, *c2));
            }
        }
        Input::Counts(v) => {
            let c = MinuteCounts {
                total: v[0],
                allowed: v[1],
                blocked: v[2],
                allowlisted: v[3],
                flagged: v[4],
                cached: v[5],
                latency_sum_us: v[6],
                rate_limited: v[7],
            };
            assert_eq!(MinuteCounts::decode(&c.encode()), Ok(c));
        }
        Input::Key(minute_ms, seq) => {
            let k = BlockKey { minute_ms, seq };
            assert_eq!(decode_key(&k.encode()), Ok(k));
        }
    }
});
