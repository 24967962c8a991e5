//! Resident memory of the query log under sustained writes: records entries in
//! paced batches (as a busy server would) and prints VmRSS every 250k entries.
//!
//! `cargo run --release --example querylog_rss -- [ENTRIES]` (default 3,000,000).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use dnsguard::querylog::{Entry, Origin, QueryLog, QueryLogConfig, Ruling, now_ms};

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    dnsguard::memory::limit_arenas();
    let total: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000_000);
    let dir = tempfile::tempdir()?;
    let log = QueryLog::open(dir.path(), QueryLogConfig::default())?;
    let names: Vec<Arc<str>> = (0..5000)
        .map(|i| Arc::from(format!("host{i}.cdn{}.example{}.com", i % 17, i % 251)))
        .collect();
    let group: Arc<str> = Arc::from("default");
    let answer: Arc<str> = Arc::from("192.0.2.1");
    let start = Instant::now();
    println!("entries rss_mb");
    println!("0 {:.1}", rss_mb());
    let t0 = now_ms();
    for i in 0..total {
        let client = IpAddr::V4(Ipv4Addr::new(192, 168, 1, (i % 50) as u8));
        let mut e = Entry::new(t0 + i / 50, client, names[(i % 5000) as usize].clone(), 1);
        e.group = group.clone();
        e.answer = answer.clone();
        e.source = Origin::Cache;
        e.verdict = if i % 7 == 0 {
            Ruling::Blocked
        } else {
            Ruling::Allowed
        };
        log.record(e);
        if (i + 1) % 20_000 == 0 {
            log.flush()?;
        }
        if (i + 1) % 50_000 == 0 && std::env::var_os("TRIM").is_some() {
            dnsguard::memory::release_free();
        }
        if (i + 1) % 250_000 == 0 {
            println!("{} {:.1}", i + 1, rss_mb());
        }
    }
    log.flush()?;
    println!(
        "done: {} entries in {:.1} s, {} dropped, rss {:.1} MB",
        total,
        start.elapsed().as_secs_f64(),
        log.dropped(),
        rss_mb()
    );
    log.shutdown();
    Ok(())
}
