//! Hot-path cost: `Detector::observe` (score + window update) per query.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dnsguard::detect::{DetectConfig, Detector};

const NAMES: &[(&str, u16)] = &[
    ("www.google.com", 1),
    ("registry.npmjs.org", 28),
    ("campaign.fr.mazda.be", 65),
    ("t570.wiltonbulletin.com", 1),
    ("3b174fe909ce67ddbf9e4832f00751b8.hash.cymru.com", 16),
    ("s1._domainkey.example.com", 16),
    ("dma7tiosqmzbx.cloudfront.net", 1),
    (
        "0aaadpdngleb3j1buaeef3vkgqg4ebf2euq2turaket5yvmumgajg3ne1zcv3n.pw0yhlsbbfcitsayuqrbj5bdcge1cqayvfkhwlp1z3tgwlwslowl4p15h.rtzg25xv4h0zfdsg5pz1pt2i0h5xj4spqd2bu5uy10dy2ieu5skqmixat.t.cdn-edge-sync.net",
        16,
    ),
    ("63d801de6743c0c066001939fb5ee1e89d.sync.cloud-backup.co", 5),
    (
        "16.u33utxce6h4joesmqusgctqvom22yxjmmdmn76l5.f6dd.sync.cloud-backup.co",
        5,
    ),
];

fn bench(c: &mut Criterion) {
    let det = Detector::new(&DetectConfig::default()).unwrap();
    let client = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(NAMES.len() as u64));
    let mut now = 1_767_398_400_000u64;
    g.bench_function("observe_mix_10", |b| {
        b.iter(|| {
            for &(q, t) in NAMES {
                now += 3;
                black_box(det.observe(now, client, black_box(q), t));
            }
        })
    });
    g.bench_function("score_name_mix_10", |b| {
        b.iter(|| {
            for &(q, t) in NAMES {
                black_box(det.score_name(black_box(q), t));
            }
        })
    });
    // Many distinct domains: exercises LRU insertion and eviction.
    let small = Detector::new(&DetectConfig {
        max_domains: 4096,
        ..DetectConfig::default()
    })
    .unwrap();
    let names: Vec<String> = (0..20_000).map(|i| format!("www.site{i}.com")).collect();
    let mut i = 0usize;
    g.throughput(Throughput::Elements(1));
    g.bench_function("observe_new_domain_evicting", |b| {
        b.iter(|| {
            i = (i + 1) % names.len();
            now += 1;
            black_box(small.observe(now, client, &names[i], 1));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
