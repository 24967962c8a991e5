//! Hot-path cost of `RateLimiter::check` (one call per response): one busy client,
//! a spread of 100,000 clients (table misses and evictions), and four threads at
//! once (lock contention on the bucket mutexes).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dnsguard::ratelimit::{RateLimitConfig, RateLimiter};

fn bench(c: &mut Criterion) {
    let limiter = RateLimiter::new(&RateLimitConfig::default());
    let mut g = c.benchmark_group("ratelimit");
    g.throughput(Throughput::Elements(1));
    let one = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20));
    g.bench_function("check_one_client", |b| {
        b.iter(|| black_box(limiter.check(black_box(one), Instant::now())))
    });
    let mut i = 0u32;
    g.bench_function("check_100k_clients", |b| {
        b.iter(|| {
            i = (i + 1) % 100_000;
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8)));
            black_box(limiter.check(ip, Instant::now()))
        })
    });
    g.throughput(Throughput::Elements(4 * 10_000));
    let shared = Arc::new(RateLimiter::new(&RateLimitConfig::default()));
    g.bench_function("check_4_threads_x_10k", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for t in 0..4u32 {
                    let l = shared.clone();
                    s.spawn(move || {
                        for k in 0..10_000u32 {
                            let ip =
                                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + ((t * 10_000 + k) << 8)));
                            black_box(l.check(ip, Instant::now()));
                        }
                    });
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
