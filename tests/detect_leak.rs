//! `dnsguard detect-eval` on the public session sample reports leakage,
//! confidence levels and benign alarms (issue #23): the real binary, its table
//! and its JSON. The figures are in `docs/DETECTION.md`; the targets of #23
//! (word-like exfiltration caught early, no alarm on benign clients) are
//! asserted here.

use std::process::Command;

use serde_json::Value;

const SESSIONS_V2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/tunnel-sample/sessions_v2.csv"
);

fn detect_eval(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dnsguard"))
        .arg("detect-eval")
        .args(args)
        .output()
        .expect("run dnsguard")
}

/// Tunnel rows per session, counted straight from the CSV.
fn tunnel_rows(session: &str) -> u64 {
    let text = std::fs::read_to_string(SESSIONS_V2).expect("tunnel sample present");
    text.lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(',').collect();
            f.get(1) == Some(&session) && f.get(5) == Some(&"tunnel")
        })
        .count() as u64
}

fn by_key<'a>(list: &'a Value, key: &str, want: &str) -> &'a Value {
    list.as_array()
        .expect("array")
        .iter()
        .find(|v| v[key] == want)
        .unwrap_or_else(|| panic!("no {key} {want} in {list:#}"))
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} not a count in {v:#}"))
}

#[test]
fn json_report_on_sessions_v2_holds_leakage_invariants() {
    let out = detect_eval(&["--format", "json", SESSIONS_V2]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: Value = serde_json::from_slice(&out.stdout).expect("detect-eval json parses");
    assert_eq!(rep["mode"], "replay");

    for list in [&rep["sessions"], &rep["families"]] {
        for e in list.as_array().unwrap() {
            // Nothing is leaked before a flag that is not also sent.
            assert!(
                u(e, "bytes_before_first_flag") <= u(e, "payload_bytes"),
                "{e:#}"
            );
            assert!(u(e, "unflagged_bytes") <= u(e, "payload_bytes"), "{e:#}");
            assert!(u(e, "queries_before_first_flag") <= u(e, "tunnel"), "{e:#}");
            assert!(u(e, "tunnel_flagged") <= u(e, "tunnel"), "{e:#}");
            // Every flag has exactly one level, and every level is reported.
            for (field, total) in [
                ("tunnel_flagged_by_confidence", "tunnel_flagged"),
                ("benign_flagged_by_confidence", "benign_flagged"),
            ] {
                let by = e[field].as_object().expect("levels");
                let levels: Vec<&String> = by.keys().collect();
                assert_eq!(levels, ["high", "low", "medium"], "{e:#}");
                let sum: u64 = by.values().map(|v| v.as_u64().unwrap()).sum();
                assert_eq!(sum, u(e, total), "{e:#}");
            }
            let hours = e["benign_client_hours"].as_f64().unwrap();
            assert!(hours >= 0.0, "{e:#}");
            match e["alarms_per_client_hour"].as_f64() {
                Some(rate) => assert!(rate >= 0.0 && rate.is_finite(), "{e:#}"),
                None => assert!(hours == 0.0, "rate missing with {hours} h: {e:#}"),
            }
        }
    }

    // P5: the syllable-encoded file is flagged before 100 payload bytes left
    // (the information budget), and stays flagged.
    let p5 = by_key(&rep["sessions"], "session", "P5_syllable_slow");
    assert_eq!(u(p5, "tunnel"), tunnel_rows("P5_syllable_slow"));
    assert_eq!(p5["ever_flagged"], true, "{p5:#}");
    assert!(u(p5, "bytes_before_first_flag") < 100, "{p5:#}");
    assert!(u(p5, "payload_bytes") > 1000, "{p5:#}");
    assert!(u(p5, "unflagged_bytes") < 200, "{p5:#}");
    assert_eq!(
        u(p5, "first_tunnel_flag"),
        u(p5, "queries_before_first_flag") + 1
    );

    // P6: flagged at its first look-up (a user and a host name), nothing
    // left before, and every look-up flagged.
    let p6 = by_key(&rep["sessions"], "session", "P6_agent_plaintext");
    assert_eq!(u(p6, "tunnel"), tunnel_rows("P6_agent_plaintext"));
    assert_eq!(u(p6, "first_tunnel_flag"), 1, "{p6:#}");
    assert_eq!(u(p6, "bytes_before_first_flag"), 0, "{p6:#}");
    assert_eq!(u(p6, "tunnel_flagged"), u(p6, "tunnel"), "{p6:#}");

    // No alarm on any benign row: P8 and every session's background clients.
    for s in rep["sessions"].as_array().unwrap() {
        assert_eq!(u(s, "benign_flagged"), 0, "{s:#}");
    }

    // P8: benign only, spanning real client-hours, with a defined alarm rate.
    let p8 = by_key(&rep["sessions"], "session", "P8_benign_mixed");
    assert_eq!(u(p8, "tunnel"), 0);
    assert!(u(p8, "benign") > 0);
    assert!(p8["benign_client_hours"].as_f64().unwrap() > 1.0, "{p8:#}");
    assert!(p8["alarms_per_client_hour"].as_f64().is_some());

    // Family totals add up to the session totals.
    let sum = |list: &Value, field: &str| -> u64 {
        list.as_array().unwrap().iter().map(|e| u(e, field)).sum()
    };
    for field in ["tunnel", "benign", "benign_flagged", "payload_bytes"] {
        assert_eq!(
            sum(&rep["sessions"], field),
            sum(&rep["families"], field),
            "{field}"
        );
    }
    let syl = by_key(&rep["families"], "family", "syllable_encoded");
    assert_eq!(u(syl, "tunnel_streams"), 1);
}

#[test]
fn table_report_shows_leakage_and_alarm_sections() {
    let out = detect_eval(&[SESSIONS_V2]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let leak = text.find("tunnel leakage").expect("leakage section");
    let alarms = text
        .find("benign alarms per client-hour")
        .expect("alarm section");
    assert!(leak < alarms, "{text}");
    for s in ["P5_syllable_slow", "P6_agent_plaintext"] {
        assert!(
            text[leak..alarms].contains(s),
            "{s} missing from leakage:\n{text}"
        );
    }
    assert!(text[alarms..].contains("P8_benign_mixed"), "{text}");
    // Flags per confidence level, for tunnels and for benign alarms.
    assert!(text[leak..alarms].contains("low/med/high"), "{text}");
    assert!(text[alarms..].contains("low/med/high"), "{text}");

    let bad = detect_eval(&["--format", "xml", SESSIONS_V2]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown format"));
}
