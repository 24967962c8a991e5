//! The tunnel detector on arbitrary query names: lexical scoring (`score_name`)
//! and the stateful path (`observe`, `record_rcode`, `is_quarantined`) that every
//! allowed query goes through. Scores must be finite and non-negative, and the
//! domain table must stay within its bound.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use dnsguard::detect::{DetectConfig, Detector};
use libfuzzer_sys::fuzz_target;

/// Small table so the fuzzer reaches eviction quickly.
const MAX_DOMAINS: usize = 64;

fn detector() -> &'static Detector {
    static D: OnceLock<Detector> = OnceLock::new();
    D.get_or_init(|| {
        let cfg = DetectConfig {
            max_domains: MAX_DOMAINS,
            ..DetectConfig::default()
        };
        Detector::new(&cfg).expect("default detector")
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let qtype = u16::from_le_bytes([data[0], data[1]]);
    let now_ms = u64::from_le_bytes(data[2..10].try_into().unwrap()) >> 20;
    let text = String::from_utf8_lossy(&data[10..]);
    let d = detector();
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, data[0]));
    // Several names per input (one per line) so windows and quarantine get state.
    for name in text.split('\n') {
        let s = d.score_name(name, qtype);
        assert!(s.value.is_finite() && s.value >= 0.0, "score {:?} for {name:?}", s.value);
        let o = d.observe(now_ms, client, name, qtype);
        assert!(o.value.is_finite() && o.value >= 0.0, "observe {:?} for {name:?}", o.value);
        d.record_rcode(now_ms, &o, 3);
        let _ = d.is_quarantined(now_ms, client, name);
        let _ = o.reasons.to_string();
    }
    assert!(d.tracked_domains() <= MAX_DOMAINS, "table bound");
});
