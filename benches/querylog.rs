//! Query-log benchmark (plain `harness = false` main, prints figures).
//!
//! `cargo bench --bench querylog` — env `QL_BENCH_N` (default 10,000,000)
//! sets the number of entries, spread evenly over the last 7 days.
//! Measures: sustained insert rate (writer-limited, with back-off on a full
//! channel), a paced 100k/s run (drops), bytes on disk per entry, first page
//! of `--since 7d --blocked`, full export rate (raw / JSON / CSV), stats, and
//! the cost of a commit + flush.

use std::io::sink;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dnsguard::querylog::{
    Criteria, Entry, Order, Origin, OutputFormat, QueryLog, QueryLogConfig, Ruling, RulingFilter,
    now_ms, write_entries,
};

struct Gen {
    x: u64,
    names: Vec<Arc<str>>,
    answers: Vec<Arc<str>>,
    clients: Vec<IpAddr>,
    upstreams: [Arc<str>; 2],
    rule: Arc<str>,
    list: Arc<str>,
    groups: [Arc<str>; 3],
    empty: Arc<str>,
}

impl Gen {
    fn new() -> Gen {
        let names: Vec<Arc<str>> = (0..5000)
            .map(|i| Arc::from(format!("host{i}.cdn{}.example{}.com", i % 17, i % 251)))
            .collect();
        let answers = (0..5000)
            .map(|i: u32| {
                let a = Ipv4Addr::from(0x5db8_0000u32.wrapping_add(i * 7919));
                if i.is_multiple_of(4) {
                    Arc::from(format!("edge{}.cdn.net,{a}", i % 97))
                } else {
                    Arc::from(a.to_string())
                }
            })
            .collect();
        Gen {
            x: 0x2545_f491_4f6c_dd1d,
            names,
            answers,
            clients: (0..50)
                .map(|i| IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10 + i)))
                .collect(),
            upstreams: [Arc::from("quad9"), Arc::from("cloudflare")],
            rule: Arc::from("||ads.example.com^"),
            list: Arc::from("easylist"),
            groups: [Arc::from("default"), Arc::from("kids"), Arc::from("iot")],
            empty: Arc::from(""),
        }
    }

    fn rnd(&mut self) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x
    }

    fn entry(&mut self, time_ms: u64) -> Entry {
        let r = self.rnd();
        // Skewed popularity: square of a uniform variable.
        let u = (r % 5000) as f64 / 5000.0;
        let di = ((u * u) * 5000.0) as usize;
        let blocked = (r >> 20).is_multiple_of(5);
        let cached = (r >> 24) % 10 < 6;
        let flagged = (r >> 28).is_multiple_of(100);
        Entry {
            time_ms,
            client: self.clients[((r >> 32) % 50) as usize],
            name: self.names[di].clone(),
            qtype: [1, 1, 28, 65][((r >> 40) % 4) as usize],
            verdict: if blocked {
                Ruling::Blocked
            } else {
                Ruling::Allowed
            },
            flagged,
            rule: if blocked {
                self.rule.clone()
            } else {
                self.empty.clone()
            },
            list: if blocked {
                self.list.clone()
            } else {
                self.empty.clone()
            },
            rcode: 0,
            answer: if blocked {
                self.empty.clone()
            } else {
                self.answers[di].clone()
            },
            source: if blocked {
                Origin::Blocked
            } else if cached {
                Origin::Cache
            } else {
                Origin::Upstream(self.upstreams[((r >> 44) & 1) as usize].clone())
            },
            latency_us: if cached || blocked {
                (r >> 48) as u32 % 200
            } else {
                5_000 + (r >> 48) as u32 % 60_000
            },
            tunnel_score: if flagged { 0.9 } else { 0.0 },
            group: self.groups[((r >> 56) % 3) as usize].clone(),
            client_name: dnsguard::querylog::empty_str(),
            tunnel: None,
        }
    }
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            if m.is_dir() {
                n += dir_size(&e.path());
            } else {
                n += m.len();
            }
        }
    }
    n
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` run a
    // quick smoke version instead.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("QL_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench_mode { 10_000_000 } else { 20_000 });
    let paced_secs = if bench_mode { 3 } else { 1 };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ql");
    let now = now_ms();
    let span = 7 * 86_400_000u64;
    let start_ms = now - span;
    let mut g = Gen::new();

    // 1. Sustained insert rate: the producer backs off only when the
    //    channel is full, so this is the writer's throughput.
    let log = QueryLog::open(&dir, QueryLogConfig::default()).unwrap();
    let t0 = Instant::now();
    let mut dropped_seen = 0;
    let mut retries = 0u64;
    for i in 0..n {
        let e = g.entry(start_ms + i * span / n);
        loop {
            log.record(e.clone());
            let d = log.dropped();
            if d == dropped_seen {
                break;
            }
            dropped_seen = d;
            retries += 1;
            std::thread::yield_now();
        }
    }
    log.flush().unwrap();
    let el = t0.elapsed().as_secs_f64();
    println!(
        "insert: {n} entries in {el:.2} s = {:.0} entries/s (writer-limited; {retries} channel-full retries; written {})",
        n as f64 / el,
        log.written()
    );

    // 2. Commit + flush latency.
    let mut worst = Duration::ZERO;
    let t0 = Instant::now();
    for i in 0..20 {
        for j in 0..1000 {
            log.record(g.entry(now - 1000 + i * 10 + j / 100));
        }
        let t = Instant::now();
        log.flush().unwrap();
        worst = worst.max(t.elapsed());
    }
    println!(
        "commit+flush of 1,000 entries: mean {:.2} ms, worst {:.2} ms",
        t0.elapsed().as_secs_f64() * 1000.0 / 20.0,
        worst.as_secs_f64() * 1000.0
    );
    log.shutdown();
    drop(log);

    let raw = dir_size(&dir);
    println!(
        "disk after writing: {raw} bytes = {:.1} bytes/entry",
        raw as f64 / n as f64
    );

    // 3. Reopen (sled recovers / compacts segments), then measure again.
    let log = QueryLog::open(&dir, QueryLogConfig::default()).unwrap();
    let sz = log.size_on_disk().unwrap();
    let du = dir_size(&dir);
    println!(
        "disk after reopen: dir {du} bytes = {:.1} bytes/entry (sled size_on_disk {sz})",
        du as f64 / n as f64
    );

    let st = log.storage_stats().unwrap();
    println!(
        "logical: {} blocks, {} bytes = {:.1} bytes/entry ({:.0} entries/block)",
        st.blocks,
        st.block_bytes,
        st.block_bytes as f64 / n as f64,
        n as f64 / st.blocks as f64
    );

    // 4. First page of `--since 7d --blocked`.
    for order in [Order::NewestFirst, Order::OldestFirst] {
        let f = Criteria {
            since_ms: Some(now - span),
            verdict: RulingFilter::Blocked,
            limit: Some(50),
            order,
            ..Criteria::default()
        };
        let t = Instant::now();
        let page: Vec<Entry> = log.query(&f).map(Result::unwrap).collect();
        println!(
            "first page --since 7d --blocked ({order:?}): {} rows in {:.2} ms",
            page.len(),
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    // Rare filter: a client/domain combination (scans more).
    let f = Criteria {
        since_ms: Some(now - span),
        domain: Some(dnsguard::querylog::DomainPattern::new(".example7.com")),
        limit: Some(50),
        ..Criteria::default()
    }
    .with_client("192.168.1.10")
    .unwrap();
    let t = Instant::now();
    let c = log.query(&f).count();
    println!(
        "first page --since 7d --client 192.168.1.10 --domain .example7.com: {c} rows in {:.2} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );

    // 5. Full export.
    let all = Criteria {
        order: Order::OldestFirst,
        ..Criteria::default()
    };
    let t = Instant::now();
    let rows = log.query(&all).filter(|r| r.is_ok()).count();
    let el = t.elapsed().as_secs_f64();
    println!(
        "export (iterate+decode): {rows} rows in {el:.2} s = {:.0} rows/s",
        rows as f64 / el
    );
    for fmt in [OutputFormat::Json, OutputFormat::Csv, OutputFormat::Table] {
        let t = Instant::now();
        let rows = write_entries(fmt, log.query(&all), std::io::BufWriter::new(sink())).unwrap();
        let el = t.elapsed().as_secs_f64();
        println!(
            "export {fmt:?}: {rows} rows in {el:.2} s = {:.0} rows/s",
            rows as f64 / el
        );
    }

    // 6. Stats over 7 days from the aggregates.
    let t = Instant::now();
    let s = log.stats(now - span, now + 1, 10).unwrap();
    println!(
        "stats --since 7d: total {} blocked {:.1}% flagged {} top domain {:?} in {:.2} ms",
        s.total,
        s.blocked_share * 100.0,
        s.flagged,
        s.top_domains.first().map(|t| (&t.key, t.count)),
        t.elapsed().as_secs_f64() * 1000.0
    );
    log.shutdown();
    drop(log);

    // 7. Paced run at 100,000 entries/s on a fresh log: drops?
    let dir2 = tmp.path().join("paced");
    let log = QueryLog::open(&dir2, QueryLogConfig::default()).unwrap();
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < Duration::from_secs(paced_secs) {
        let due = (t0.elapsed().as_secs_f64() * 100_000.0) as u64;
        while sent < due {
            log.record(g.entry(now_ms()));
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    log.flush().unwrap();
    println!(
        "paced 100k/s for {paced_secs} s: sent {sent}, written {}, dropped {}",
        log.written(),
        log.dropped()
    );
}
