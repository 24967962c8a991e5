//! The query-latency histogram of `/metrics` (`dnsguard_query_duration_seconds`):
//! fixed buckets counted in per-thread shards of relaxed atomics, so recording a
//! query is two uncontended additions. (A `metrics` crate histogram keeps every
//! sample until an upkeep folds it into buckets: megabytes at 100k queries/s.)

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, microseconds (0.1 ms … 5 s).
const BOUNDS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];
const BUCKETS: usize = BOUNDS_US.len() + 1;
const SHARDS: usize = 8;

/// One thread's counters, on cache lines of their own.
#[repr(align(128))]
struct Shard {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

static HISTOGRAM: [Shard; SHARDS] = [const {
    Shard {
        buckets: [const { AtomicU64::new(0) }; BUCKETS],
        sum_us: AtomicU64::new(0),
    }
}; SHARDS];

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// Counts one answered query that took `elapsed`.
#[inline]
pub fn record(elapsed: Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let bucket = BOUNDS_US.partition_point(|&b| b < us);
    let shard = &HISTOGRAM[SHARD.with(|s| *s)];
    shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    shard.sum_us.fetch_add(us, Ordering::Relaxed);
}

/// Appends the histogram in the Prometheus text format.
pub fn render(out: &mut String) {
    let mut counts = [0u64; BUCKETS];
    let mut sum_us = 0u64;
    for shard in &HISTOGRAM {
        for (c, b) in counts.iter_mut().zip(&shard.buckets) {
            *c += b.load(Ordering::Relaxed);
        }
        sum_us += shard.sum_us.load(Ordering::Relaxed);
    }
    let name = "dnsguard_query_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from a query's arrival to its answer."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, c) in counts.iter().enumerate() {
        cumulative += c;
        match BOUNDS_US.get(i) {
            Some(&b) => {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{le=\"{}\"}} {cumulative}",
                    b as f64 / 1e6
                );
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let _ = writeln!(out, "{name}_sum {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, line_start: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line_start} in\n{text}"))
    }

    #[test]
    fn buckets_are_cumulative_and_count_every_query() {
        let mut before = String::new();
        render(&mut before);
        let b = |le: &str, t: &str| {
            value(
                t,
                &format!("dnsguard_query_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        let threads: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    record(Duration::from_micros(50));
                    record(Duration::from_micros(100));
                    record(Duration::from_millis(3));
                    record(Duration::from_secs(9));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut after = String::new();
        render(&mut after);
        // Other tests in this process may record too: compare at least.
        assert!(
            b("0.0001", &after) - b("0.0001", &before) >= 6,
            "50 µs and 100 µs"
        );
        assert!(b("0.005", &after) - b("0.005", &before) >= 9);
        assert!(b("+Inf", &after) - b("+Inf", &before) >= 12);
        assert_eq!(
            b("+Inf", &after),
            value(&after, "dnsguard_query_duration_seconds_count ")
        );
        assert!(b("0.0001", &after) <= b("0.00025", &after));
    }
}
