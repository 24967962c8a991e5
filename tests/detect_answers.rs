//! Answers scored too (issue #23): a command channel coming back in TXT
//! answers of a domain the detector already watches gets its client's next
//! look-ups flagged, with the reason and a level; an ordinary domain's TXT
//! answer is not even looked at. Real binary, fake upstream, query log read
//! back through the CLI.

mod common;

use std::time::{Duration, Instant};

use common::client::{Ask, ask_with, rcode};
use common::server::{Dnsguard, run_cli};
use common::upstream::FakeUpstream;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Base64 commands, one per poll name.
const CMD: &str = "aGVscCBtZSBvdXQgb2YgaGVyZTsgY2F0IC9ldGMvc2hhZG93IHwgYmFzZTY0IC13MA==";

fn zone() -> String {
    let mut z = String::from("www.example.org. 300 TXT \"v=spf1 include:_spf.example.org ~all\"\n");
    for i in 0..30 {
        z.push_str(&format!("p{i}.c2-update.net. 60 TXT \"{CMD}{i}\"\n"));
    }
    z
}

#[test]
fn encoded_txt_answers_of_a_polled_domain_flag_the_poller() {
    let up = FakeUpstream::start("127.0.0.1".parse().unwrap(), zone().as_str());
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n",
        up.addr()
    ));
    let r = ask_with(
        dg.addr,
        "www.example.org.",
        RecordType::TXT,
        &Ask::default(),
    );
    assert_eq!(rcode(&r), ResponseCode::NoError);
    for i in 0..30 {
        let r = ask_with(
            dg.addr,
            &format!("p{i}.c2-update.net."),
            RecordType::TXT,
            &Ask::default(),
        );
        assert_eq!(rcode(&r), ResponseCode::NoError, "{i}");
    }
    let cfg = dg.config_path();
    let deadline = Instant::now() + Duration::from_secs(15);
    let flagged = loop {
        let (ok, out, err) = run_cli(&[
            "query-log",
            "--since",
            "1h",
            "--flagged",
            "--format",
            "jsonl",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        let rows: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if rows.iter().any(|v| {
            v["rule"]
                .as_str()
                .unwrap()
                .contains("bits of encoded data in answers from c2-update.net")
        }) {
            break rows;
        }
        assert!(Instant::now() < deadline, "no answer flag in:\n{out}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let row = flagged
        .iter()
        .find(|v| {
            v["rule"]
                .as_str()
                .unwrap()
                .contains("encoded data in answers")
        })
        .unwrap();
    assert!(
        ["medium", "high"].contains(&row["level"].as_str().unwrap()),
        "{row}"
    );
    // The SPF record of an unwatched domain raised nothing.
    assert!(
        !flagged.iter().any(|v| v["name"] == "www.example.org"),
        "{flagged:?}"
    );
}
