//! Acceptance tests on the labelled tunnel sample (`shared/tunnel-sample`).

use std::net::IpAddr;

use dnsguard::detect::{DetectConfig, Detector, eval, eval::parse_qtype};

const QUERIES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/tunnel-sample/queries.csv"
);
const SESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/tunnel-sample/sessions.csv"
);

#[test]
fn per_query_rates_meet_targets() {
    let file = std::fs::File::open(QUERIES).expect("tunnel sample present");
    let mut out = Vec::new();
    let rep = eval(file, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!rep.replayed);
    let normal = rep.tpr_for("normal").unwrap();
    let hard = rep.tpr_for("hard").unwrap();
    assert!(normal >= 0.97, "TPR normal {normal}\n{text}");
    assert!(hard >= 0.50, "TPR hard {hard}\n{text}");
    assert!(rep.fpr() <= 0.005, "FPR {}\n{text}", rep.fpr());
    assert_eq!(rep.benign.total, 8219);
    assert_eq!(rep.tunnel.total, 1950);
}

struct Row {
    ts_ms: u64,
    session: String,
    client: IpAddr,
    qname: String,
    qtype: u16,
    tunnel: bool,
}

fn sessions() -> Vec<Row> {
    let text = std::fs::read_to_string(SESSIONS).expect("tunnel sample present");
    let mut rows: Vec<Row> = text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Row {
                ts_ms: (f[0].parse::<f64>().unwrap() * 1000.0) as u64,
                session: f[1].to_string(),
                client: f[2].parse().unwrap(),
                qname: f[3].to_string(),
                qtype: parse_qtype(f[4]),
                tunnel: f[5] == "tunnel",
            }
        })
        .collect();
    rows.sort_by_key(|r| r.ts_ms);
    rows
}

#[test]
fn dnscat2_session_flagged_early_and_benign_session_silent() {
    let det = Detector::new(&DetectConfig::default()).unwrap();
    let mut s3_tunnel_seen = 0;
    let mut s3_first_flag = None;
    let mut s4_alarms = Vec::new();
    let mut s3_benign_alarms = 0;
    for r in sessions() {
        let s = det.observe(r.ts_ms, r.client, &r.qname, r.qtype);
        let alarm = s.flagged || s.quarantined;
        match (r.session.as_str(), r.tunnel) {
            ("S3_dnscat2", true) => {
                s3_tunnel_seen += 1;
                if alarm && s3_first_flag.is_none() {
                    s3_first_flag = Some(s3_tunnel_seen);
                }
            }
            ("S3_dnscat2", false) => s3_benign_alarms += u32::from(alarm),
            ("S4_benign_hard", _) if alarm => {
                s4_alarms.push(format!("{} [{}]", r.qname, s.reasons.display_for(&r.qname)));
            }
            _ => {}
        }
    }
    let first = s3_first_flag.expect("S3_dnscat2 flagged");
    assert!(first <= 50, "S3 first flagged at tunnel query {first}");
    assert!(s4_alarms.is_empty(), "S4 alarms: {s4_alarms:#?}");
    assert_eq!(s3_benign_alarms, 0);
}

#[test]
fn replay_eval_reports_sessions() {
    let file = std::fs::File::open(SESSIONS).unwrap();
    let rep = eval(file, Vec::new()).unwrap();
    assert!(rep.replayed);
    let s3 = &rep.sessions["S3_dnscat2"];
    assert!(s3.first_tunnel_flag.is_some_and(|n| n <= 50));
    assert_eq!(rep.sessions["S4_benign_hard"].benign_flagged, 0);
}
