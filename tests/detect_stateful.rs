//! Behaviour of the stateful detector with controlled time (no sleeps).

use std::net::{IpAddr, Ipv4Addr};

use dnsguard::detect::{DetectConfig, Detector, ReasonCode, TunnelAction};
use serde::Deserialize;
use serde::de::value::{Error as DeError, MapDeserializer};

const T0: u64 = 1_767_398_400_000;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn detector() -> Detector {
    Detector::new(&DetectConfig::default()).unwrap()
}

/// RFC 4648 base32, lower case, no padding (test helper).
fn base32(data: &[u8]) -> String {
    const A: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(A[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// A plausible secret: an SSH config and key-like text.
fn secret() -> Vec<u8> {
    let mut s = String::from("Host build\n  HostName 10.1.2.3\n  User deploy\n");
    s.push_str("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    let mut x = 0x1234_5678u32;
    for _ in 0..1500 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        s.push(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(x % 64) as usize]
                as char,
        );
    }
    s.into_bytes()
}

const BACKGROUND: &[&str] = &[
    "www.google.com",
    "github.com",
    "registry.npmjs.org",
    "api.openai.com",
    "fonts.gstatic.com",
    "www.wikipedia.org",
    "static.xx.fbcdn.net",
    "deb.debian.org",
];

/// Sends `chunk`-byte pieces of the secret, one query every `gap_ms`, mixed
/// with background traffic from other clients; returns the number of secret
/// bytes sent when the first tunnel query was flagged.
fn slow_exfil(encode: fn(&[u8]) -> String, chunk: usize, gap_ms: u64, qtype: u16) -> Option<usize> {
    let det = detector();
    let data = secret();
    let mut now = T0;
    for (i, piece) in data.chunks(chunk).enumerate() {
        for (j, b) in BACKGROUND.iter().enumerate() {
            det.observe(now + j as u64 * 100, ip(20 + j as u8), b, 1);
        }
        let q = format!("{}.{i}.s.files-sync.example", encode(piece));
        let s = det.observe(now + 5_000, ip(7), &q, qtype);
        if s.flagged {
            return Some((i + 1) * chunk);
        }
        now += gap_ms;
    }
    None
}

#[test]
fn low_and_slow_exfiltration_caught_before_1kb() {
    // 10 bytes per query in base32 (16 chars), one query a minute.
    let sent = slow_exfil(base32, 10, 60_000, 1).expect("flagged");
    assert!(sent < 1024, "base32: {sent} bytes left first");
    // 8 bytes per query in hex (16 chars), one query every 30 s.
    let sent = slow_exfil(hex, 8, 30_000, 28).expect("flagged");
    assert!(sent < 1024, "hex: {sent} bytes left first");
    // Very slow: one query every 5 minutes (beyond the window).
    let sent = slow_exfil(base32, 10, 300_000, 16).expect("flagged");
    assert!(sent < 1024, "very slow: {sent} bytes left first");
}

#[test]
fn single_long_payload_is_flagged_with_reasons() {
    let det = detector();
    let label = base32(&secret()[..39]);
    let q = format!("{label}.x.evil.example");
    let s = det.observe(T0, ip(1), &q, 16);
    assert!(s.flagged);
    assert!(s.reasons.has(ReasonCode::Payload));
    let text = s.reasons.display_for(&q).to_string();
    assert!(
        text.contains(&format!("label {} chars (base32)", label.len())),
        "{text}"
    );
    assert!(text.contains("bits of payload evidence"), "{text}");
}

#[test]
fn human_names_and_exempt_families_are_quiet() {
    let det = detector();
    let names = [
        "www.bbc.co.uk",
        "mail.google.com",
        "login.microsoftonline.com",
        "s1._domainkey.example.com",
        "_acme-challenge.shop.example.org",
        "3b174fe909ce67ddbf9e4832f00751b8.hash.cymru.com",
        "8.5.6.8.9.0.6.1.0.c.0.0.e.d.e.b.a.c.f.e.3.b.3.f.7.1.8.b.6.f.e.2.ip6.arpa",
        "dma7tiosqmzbx.cloudfront.net",
        "02469357-27fd-49a7-9dbc-f0d94ae65faa.edge.example.app",
    ];
    for (i, n) in names.iter().enumerate() {
        let s = det.observe(T0 + i as u64, ip(3), n, 16);
        assert!(!s.flagged, "{n}: {:.2} [{}]", s.value, s.reasons);
    }
    // A burst of anti-virus reputation look-ups: exempt, no state, no alarm.
    for i in 0..2000u64 {
        let q = format!("{}.sxl.sophosxl.net", hex(&(i * 7919).to_le_bytes()));
        assert!(!det.observe(T0 + i, ip(4), &q, 1).flagged);
    }
    // Only the six non-exempt registrable domains above are tracked.
    assert_eq!(det.tracked_domains(), 6);
}

#[test]
fn underscore_exemption_still_counts_volume() {
    let det = detector();
    let mut flagged_at = None;
    for i in 0..400u32 {
        let q = format!("sel{i}x._domainkey.exfil.example");
        if det.observe(T0 + u64::from(i) * 100, ip(9), &q, 16).flagged {
            flagged_at = Some(i);
            break;
        }
    }
    let at = flagged_at.expect("volume of TXT look-ups under one domain flags");
    assert!(at > 20, "not flagged lexically ({at})");
}

#[test]
fn nxdomain_feedback_raises_domain_score() {
    // Plain-text exfil: nothing lexical, only the per-domain view (the
    // information budget off, to see the window's NXDOMAIN share alone).
    let run = |with_rcode: bool| {
        let det = Detector::new(&DetectConfig {
            budget_bytes: 0.0,
            ..DetectConfig::default()
        })
        .unwrap();
        for i in 0..120u64 {
            let q = format!("user-alice.host-build{i}.x.collect.example");
            let now = T0 + i * 1000;
            let s = det.observe(now, ip(5), &q, 1);
            if s.flagged {
                return Some(i);
            }
            if with_rcode {
                det.record_rcode(now + 20, &s, 3);
            }
        }
        None
    };
    assert_eq!(run(false), None);
    let at = run(true).expect("flagged with NXDOMAIN feedback");
    assert!(at < 100, "{at}");
    // With the budget, the new text itself gives it away within a few names.
    let det = detector();
    let at = (0..120u64)
        .find(|i| {
            let q = format!("user-alice.host-build{i}.x.collect-example.net");
            det.observe(T0 + i * 1000, ip(5), &q, 1).flagged
        })
        .expect("flagged by the information budget");
    assert!(at < 10, "{at}");
}

#[test]
fn spread_over_many_clients_is_not_a_tunnel() {
    // Moderately random names (below the per-name threshold) under one domain.
    let run = |clients: u8| {
        let det = detector();
        let mut flags = 0;
        for i in 0..60u64 {
            let q = format!(
                "{}.img.widgets.example",
                &hex(&(i * 2_654_435_761).to_le_bytes())[..7]
            );
            let s = det.observe(T0 + i * 2000, ip((i % u64::from(clients)) as u8 + 1), &q, 1);
            assert!(s.reasons.payload_bits < 40.0, "{q}");
            flags += u32::from(s.flagged);
        }
        flags
    };
    assert!(
        run(1) > 0,
        "one client sending many random names is flagged"
    );
    assert_eq!(run(60), 0, "many clients each resolving one hashed host");
}

#[test]
fn quarantine_after_n_flags_and_expiry() {
    let cfg = DetectConfig {
        quarantine_after: 2,
        quarantine_secs: 600,
        action: TunnelAction::Quarantine,
        ..DetectConfig::default()
    };
    let det = Detector::new(&cfg).unwrap();
    assert_eq!(
        det.actions(),
        dnsguard::detect::Actions::all(TunnelAction::Quarantine)
    );
    let q1 = format!("{}.t.evil.example", base32(&secret()[..30]));
    let q2 = format!("{}.t.evil.example", base32(&secret()[30..60]));
    assert!(!det.observe(T0, ip(1), &q1, 16).quarantined);
    assert!(det.observe(T0 + 1000, ip(1), &q2, 16).quarantined);
    assert!(det.is_quarantined(T0 + 2000, ip(1), "www.evil.example"));
    assert!(!det.is_quarantined(T0 + 2000, ip(1), "www.good.example"));
    assert!(!det.is_quarantined(T0 + 1000 + 601_000, ip(1), "www.evil.example"));
    // Only the client that was flagged: another one keeps the domain.
    assert!(!det.is_quarantined(T0 + 2000, ip(2), "www.evil.example"));
    let other = det.observe(T0 + 3000, ip(2), "www.evil.example", 1);
    assert!(!other.quarantined && !other.flagged, "{other:?}");
    assert!(
        det.observe(T0 + 3000, ip(1), "www.evil.example", 1)
            .quarantined
    );
}

#[test]
fn config_exemptions_and_watchlist_extend_builtins() {
    let q = "9f86d081884c7d659a2f8a2a0f4e3b1c.tiles.mapvendor.example";
    assert!(detector().score_name(q, 1).flagged);
    let cfg = DetectConfig {
        exemptions: vec!["tiles.mapvendor.example # map tile hashes".into()],
        watch: vec!["hooks.example".into()],
        ..DetectConfig::default()
    };
    let det = Detector::new(&cfg).unwrap();
    assert!(!det.score_name(q, 1).flagged);
    assert!(det.score_name("root.hooks.example", 1).flagged);
    assert!(det.score_name("alice.laptop.c2x.oast.pro", 1).flagged);
    let bad = DetectConfig {
        exemptions: vec!["foo.*.example".into()],
        ..DetectConfig::default()
    };
    assert!(Detector::new(&bad).is_err());
}

#[test]
fn disabled_detector_flags_nothing() {
    let cfg = DetectConfig {
        enabled: false,
        ..DetectConfig::default()
    };
    let det = Detector::new(&cfg).unwrap();
    let q = format!("{}.t.evil.example", base32(&secret()[..39]));
    assert!(!det.observe(T0, ip(1), &q, 16).flagged);
}

#[test]
fn config_deserializes_with_defaults_and_rejects_unknown_fields() {
    let cfg = DetectConfig::deserialize(MapDeserializer::<_, DeError>::new(
        [("threshold", 1.5f32)].into_iter(),
    ))
    .unwrap();
    assert_eq!(cfg.threshold, 1.5);
    assert_eq!(cfg.window_secs, DetectConfig::default().window_secs);
    let err = DetectConfig::deserialize(MapDeserializer::<_, DeError>::new(
        [("thresold", 1.5f32)].into_iter(),
    ));
    assert!(err.is_err());
}

#[test]
fn concurrent_observers_share_bounded_state() {
    let cfg = DetectConfig {
        max_domains: 256,
        ..DetectConfig::default()
    };
    let det = Detector::new(&cfg).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let det = &det;
            s.spawn(move || {
                for i in 0..5000u64 {
                    let q = format!("www.site{}.example", i * 4 + t);
                    det.observe(T0 + i, ip(t as u8), &q, 1);
                }
            });
        }
    });
    assert!(det.tracked_domains() <= 256, "{}", det.tracked_domains());
    assert!(det.tracked_domains() >= 200, "{}", det.tracked_domains());
}
