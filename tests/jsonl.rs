//! `dnsguard query-log --format jsonl` against the schema in
//! `docs/querylog-jsonl.md`: the real server answers an allowed, a blocked and
//! a tunnel-flagged query, the real CLI exports them (through the running
//! server's API, then from the database after it stopped), and every line is
//! checked against the doc's field table, so neither can drift from the other.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::client::{addrs, ask};
use common::server::{Dnsguard, run_cli};
use common::upstream::FakeUpstream;
use hickory_proto::rr::RecordType;
use serde_json::Value;

const ZONE: &str = "www.fwd.test. 300 A 192.0.2.1\n";
const TUNNEL: &str =
    "mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpjqwe.gezdgnbvgy3tqojqgezdgnbvgy3tqojq.t.fwd.test.";

/// One row of the doc's field table.
#[derive(Debug)]
struct Field {
    ty: String,
    always: bool,
}

/// The field table of `docs/querylog-jsonl.md`: `| \`name\` | type | presence | ... |`.
fn documented() -> BTreeMap<String, Field> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/querylog-jsonl.md"
    ))
    .unwrap();
    let mut fields = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
        let name = cells[0]
            .trim_start_matches("| ")
            .trim_matches('`')
            .to_owned();
        let presence = cells[2];
        assert!(
            presence == "always" || presence == "optional",
            "presence of {name}: {presence}"
        );
        let field = Field {
            ty: cells[1].to_owned(),
            always: presence == "always",
        };
        assert!(fields.insert(name.clone(), field).is_none(), "{name} twice");
    }
    assert!(fields.len() > 15, "the table was not found: {fields:?}");
    fields
}

fn has_type(v: &Value, ty: &str) -> bool {
    match ty {
        "string" => v.is_string(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        _ => panic!("the doc names an unknown type {ty:?}"),
    }
}

/// Checks one line against the table and returns the (dotted) names it has.
fn check_line(line: &str, doc: &BTreeMap<String, Field>) -> BTreeSet<String> {
    let obj: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(obj["v"], 1, "{line}");
    let mut seen = BTreeSet::new();
    let mut walk = vec![(String::new(), obj.as_object().expect(line).clone())];
    while let Some((prefix, map)) = walk.pop() {
        for (k, v) in map {
            let name = format!("{prefix}{k}");
            let field = doc
                .get(&name)
                .unwrap_or_else(|| panic!("{name} is not documented: {line}"));
            assert!(
                has_type(&v, &field.ty),
                "{name} is not a {}: {line}",
                field.ty
            );
            if let Value::Object(inner) = v {
                walk.push((format!("{name}."), inner));
            }
            seen.insert(name);
        }
    }
    for (name, field) in doc {
        let parent_here = match name.rsplit_once('.') {
            Some((parent, _)) => seen.contains(parent),
            None => true,
        };
        // A sub-field of an optional object is there whenever its parent is.
        let required = field.always || (name.contains('.') && parent_here);
        assert!(!required || seen.contains(name), "{name} missing: {line}");
    }
    seen
}

/// The `query-log --format FORMAT` lines of the last hour.
fn export(dir: &Path, format: &str) -> String {
    let cfg = dir.join("dnsguard.toml");
    let (ok, out, err) = run_cli(&[
        "query-log",
        "--since",
        "1h",
        "--format",
        format,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(ok, "query-log failed: {err}");
    out
}

/// Checks an export of the three queries; returns the lines by name.
fn check_export(dir: &Path, doc: &BTreeMap<String, Field>) -> BTreeMap<String, Value> {
    let out = export(dir, "jsonl");
    assert_eq!(out, export(dir, "json"), "json and jsonl are one format");
    assert!(out.ends_with('\n'), "{out}");
    let mut seen = BTreeSet::new();
    let mut by_name = BTreeMap::new();
    for line in out.lines() {
        seen.extend(check_line(line, doc));
        let v: Value = serde_json::from_str(line).unwrap();
        by_name.insert(v["name"].as_str().unwrap().to_owned(), v);
    }
    assert_eq!(by_name.len(), 3, "{out}");
    let undocumented_or_unseen: Vec<_> = doc.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(
        undocumented_or_unseen.is_empty(),
        "documented but never written: {undocumented_or_unseen:?}\n{out}"
    );

    let allowed = &by_name["www.fwd.test"];
    assert_eq!(allowed["verdict"], "allowed");
    assert_eq!(allowed["type"], "A");
    assert_eq!(allowed["qtype"], 1);
    assert_eq!(allowed["rcode_name"], "NOERROR");
    assert_eq!(allowed["answer"], "192.0.2.1");
    assert_eq!(allowed["client"], "127.0.0.1");
    // Named by its address (on the UDP fast path too).
    assert_eq!(allowed["client_name"], "this-host");
    assert!(allowed.get("ede").is_none(), "{allowed}");
    // `time` is the RFC 3339 UTC form of `time_ms`.
    let t = time::OffsetDateTime::parse(
        allowed["time"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(t.offset(), time::UtcOffset::UTC);
    assert_eq!(
        (t.unix_timestamp_nanos() / 1_000_000) as u64,
        allowed["time_ms"].as_u64().unwrap()
    );

    let blocked = &by_name["x.ads.fwd.test"];
    assert_eq!(blocked["verdict"], "blocked");
    assert_eq!(blocked["source"], "blocked");
    assert_eq!(blocked["list"], "group default deny", "{blocked}");
    assert_eq!(blocked["ede"]["code"], 15, "{blocked}");

    let flagged = &by_name[TUNNEL.trim_end_matches('.')];
    assert_eq!(flagged["flagged"], true, "{flagged}");
    assert!(flagged["tunnel_score"].as_f64().unwrap() > 0.0, "{flagged}");
    assert!(
        flagged["rule"].as_str().unwrap().starts_with("tunnel: "),
        "{flagged}"
    );
    by_name
}

#[test]
fn jsonl_lines_match_the_documented_schema() {
    let doc = documented();
    let up = FakeUpstream::start("127.0.0.1".parse::<IpAddr>().unwrap(), ZONE);
    let dg = Dnsguard::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nupstreams = [\"{}\"]\ntimeout_ms = 800\n\
         [[groups]]\nname = \"default\"\ndeny = [\"||ads.fwd.test^\"]\n\
         [[clients]]\nname = \"this-host\"\naddresses = [\"127.0.0.1/32\"]\n",
        up.addr()
    ));
    assert_eq!(
        addrs(&ask(dg.addr, "www.fwd.test.", RecordType::A)),
        vec!["192.0.2.1"]
    );
    assert_eq!(
        addrs(&ask(dg.addr, "x.ads.fwd.test.", RecordType::A)),
        vec!["0.0.0.0"]
    );
    let _ = ask(dg.addr, TUNNEL, RecordType::TXT);
    let dir = dg.dir.path().to_owned();
    // The writer commits every 100 ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    while export(&dir, "jsonl").lines().count() < 3 {
        assert!(
            Instant::now() < deadline,
            "the three queries were not logged"
        );
    }

    // Through the running server's API ...
    let live = check_export(&dir, &doc);
    // ... and from the database once it stopped: the same lines.
    let (status, dir) = dg.stop_keeping_dir(libc::SIGTERM);
    assert!(status.success());
    assert_eq!(check_export(dir.path(), &doc), live);
}
