//! Filter benchmark: the 1.6 M-domain list + 1,000 generated wildcard rules + 100 generated regex rules.
//! Measures `check` for 4–5-label names (hit and miss), compile time, and prints the table's bytes per domain.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use dnsguard::filter::*;

const BIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/blocklists/big-1.6m.domains.txt"
);
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20));

/// Deterministic xorshift generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "adserv",
    "track",
    "metric",
    "pixel",
    "beacon",
    "telemetry",
    "banner",
    "promo",
    "stat",
    "count",
    "affil",
    "click",
    "popup",
    "analytic",
    "tag",
    "spy",
    "log",
    "collect",
    "insight",
    "audience",
    "bid",
    "rtb",
];
const TLDS: &[&str] = &["com", "net", "org", "io", "xyz", "info", "biz", "top"];

fn wildcard_rules(n: usize) -> String {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let mut out = String::new();
    for i in 0..n {
        let (w, t) = (r.pick(WORDS), r.pick(TLDS));
        match i % 4 {
            0 => out.push_str(&format!("||{w}{i}*.{}.{t}^\n", r.pick(WORDS))),
            1 => out.push_str(&format!("||*{w}-{i}.{t}^\n")),
            2 => out.push_str(&format!("{w}x{i}*\n")),
            _ => out.push_str(&format!("|{w}{i}-*.cdn.{t}^\n")),
        }
    }
    out
}

/// Regexes shaped like the widely used Pi-hole/AdGuard regex lists (e.g. `^(.+[_.-])?telemetry[_.-]`),
/// plus anchored per-host patterns; each gets a unique number so all 100 are distinct.
fn regex_rules(n: usize) -> String {
    let mut r = Rng(0x0fed_cba9_8765_4321);
    let mut out = String::new();
    for i in 0..n {
        let (w, t) = (r.pick(WORDS), r.pick(TLDS));
        match i % 4 {
            0 => out.push_str(&format!("/^(.+[_.-])?{w}{i}[0-9]*[_.-]/\n")),
            1 => out.push_str(&format!("/(^|\\.){w}-z{i}-[a-z0-9]+\\./\n")),
            2 => out.push_str(&format!("/^{w}[0-9]{{2,4}}q{i}\\.[a-z]+\\.{t}$/\n")),
            _ => out.push_str(&format!("/^[a-z]+{i}{w}\\d+\\./\n")),
        }
    }
    out
}

fn lists() -> Vec<ListConfig> {
    ["big", "wild", "regex"]
        .iter()
        .map(|n| ListConfig {
            name: n.to_string(),
            source: format!("builtin:{n}"),
            ..ListConfig::default()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let big = std::fs::read_to_string(BIG).unwrap_or_else(|e| panic!("{BIG}: {e}"));
    let wild = wildcard_rules(1000);
    let regex = regex_rules(100);
    let texts = [
        ListText {
            name: "big",
            text: &big,
        },
        ListText {
            name: "wild",
            text: &wild,
        },
        ListText {
            name: "regex",
            text: &regex,
        },
    ];
    let lists = lists();
    let t = Instant::now();
    let filter = Filter::build(&lists, &[], &texts).unwrap_or_else(|e| panic!("{e}"));
    println!("first compile: {:.3} s", t.elapsed().as_secs_f64());
    let m = filter.memory();
    println!(
        "table: {} entries, {} bytes, {:.2} bytes/entry; {} wildcard ({} suffix-indexed), {} regex rules",
        m.domains,
        m.table_bytes,
        m.bytes_per_domain,
        m.wildcard_rules,
        m.wildcard_indexed,
        m.regex_rules
    );
    // Fingerprint collisions over the whole list (expected: none).
    let mut fps: Vec<u64> = big
        .lines()
        .filter(|l| !l.is_empty())
        .map(hash::name_fingerprint)
        .collect();
    let n = fps.len();
    fps.sort_unstable();
    fps.dedup();
    println!(
        "fingerprints: {n} names, {} distinct ({} collisions)",
        fps.len(),
        n - fps.len()
    );
    for st in filter.list_stats() {
        println!(
            "list {}: {} entries, {} invalid {:?}",
            st.name, st.entries, st.invalid, st.invalid_samples
        );
    }

    // Hit names: 4–5 labels, blocked through an exact or a subdomain match of a listed domain.
    let domains: Vec<&str> = big.lines().filter(|l| !l.is_empty()).collect();
    let mut r = Rng(42);
    let mut hits = Vec::new();
    while hits.len() < 4096 {
        let d = domains[(r.next() % domains.len() as u64) as usize];
        let labels = d.split('.').count();
        let name = match labels {
            4 | 5 => d.to_string(),
            3 => format!("www.{d}"),
            2 => format!("cdn.www.{d}"),
            _ => continue,
        };
        if filter.check(CLIENT, &name, 1).action == Action::Block(BlockReason::Rule) {
            hits.push(name);
        }
    }
    // Miss names: 4–5 labels that no rule matches.
    let mut misses = Vec::new();
    while misses.len() < 4096 {
        let name = format!(
            "{}{}.{}.service{}.{}",
            r.pick(&["www", "api", "mail", "img", "static"]),
            r.next() % 1000,
            r.pick(&["eu-west", "us", "edge", "prod"]),
            r.next() % 100_000,
            r.pick(&["example.com", "corp.internal", "shop.de", "bank.co.uk"])
        );
        if filter.check(CLIENT, &name, 1).action == Action::Pass {
            misses.push(name);
        }
    }

    // "hot": 256 distinct names cycled (cache-resident, like a busy resolver's popular names);
    // "4k": 4,096 distinct names cycled (table lines mostly not in L1/L2).
    let mut g = c.benchmark_group("check");
    g.measurement_time(std::time::Duration::from_secs(4));
    for (label, set, mask) in [
        ("hit_hot256", &hits, 255usize),
        ("miss_hot256", &misses, 255),
        ("hit_4k", &hits, 4095),
        ("miss_4k", &misses, 4095),
    ] {
        let mut i = 0usize;
        g.bench_function(label, |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                black_box(filter.check(CLIENT, black_box(&set[i]), 1))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("1.6m+1000wild+100regex", |b| {
        b.iter(|| {
            black_box(
                Filter::build(&lists, &[], &texts)
                    .map(|f| f.memory().domains)
                    .unwrap_or(0),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
