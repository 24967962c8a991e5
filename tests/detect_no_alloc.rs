//! The hot path (`observe`, `record_rcode`, `is_quarantined`) does not
//! allocate once the detector is built, even while evicting domains.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};

use dnsguard::detect::{DetectConfig, Detector};

struct Counting;

thread_local! {
    /// Allocations made by this thread: the test harness's own threads (output
    /// capture, the main thread waiting) must not count.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: the thread-local may already be gone while a thread exits.
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn observe_does_not_allocate() {
    let det = Detector::new(&DetectConfig {
        max_domains: 128,
        ..DetectConfig::default()
    })
    .unwrap();
    // Names prepared up front: far more domains than the cap, so the LRU
    // evicts all the time, plus exempt, long and escaped names.
    let mut names: Vec<String> = (0..5000).map(|i| format!("www.site{i}.com")).collect();
    names.push("3b174fe909ce67ddbf9e4832f00751b8.hash.cymru.com".into());
    names.push("s1._domainkey.example.com".into());
    names.push(r"rbnadmk\193b\190\222wymgdb.n.ntp-pool-status.net".into());
    names.push("mzxw6ytboi2gk43umvzxi5dpmvzwg2lbmvzw42dpnvqxi.x.evil.example".into());
    let client = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    // A proven client behind the same address (its flags count there too).
    let agent = dnsguard::detect::Who::Client {
        tag: dnsguard::detect::ClientTag::of("agent-1"),
        from: client,
    };
    // A thread's first query sets up its per-name memo (one allocation per thread).
    let _ = det.observe(1_767_398_399_000, client, "warm.example.com", 1);
    let before = allocs();
    let mut flagged = 0u32;
    for (i, q) in names.iter().cycle().take(30_000).enumerate() {
        let now = 1_767_398_400_000 + i as u64 * 10;
        let s = det.observe(now, client, q, 16);
        flagged += u32::from(s.flagged);
        flagged += u32::from(det.observe(now, agent, q, 16).flagged);
        det.record_rcode(now + 1, &s, 3);
        let _ = det.is_quarantined(now + 2, client, q);
    }
    let after = allocs();
    assert_eq!(after - before, 0, "allocations on the hot path");
    assert!(flagged > 0);
}

#[test]
fn information_budget_and_answer_scoring_do_not_allocate() {
    use dnsguard::detect::{AnswerData, ReasonCode};
    let det = Detector::new(&DetectConfig {
        max_domains: 256,
        ..DetectConfig::default()
    })
    .unwrap();
    // Word-like names below private domains from many clients (the budget's
    // pair table fills and evicts), user/host-name look-ups, escaped names.
    let mut names: Vec<String> = (0..3000)
        .map(|i| format!("word{i}syllable{}.cdn.private{}.net", i * 7, i % 97))
        .collect();
    names.push("ci.k8s-node-7.hooks.agent-telemetry.dev".into());
    names.push(r"caf\195\169.bar\.baz.private1.net".into());
    names.push("www.example.com".into());
    let clients: Vec<IpAddr> = (0..64u8)
        .map(|c| IpAddr::V4(Ipv4Addr::new(10, 1, 0, c)))
        .collect();
    // Every thread that scores sets up its per-name memo once.
    let _ = det.observe(1_767_398_399_000, clients[0], "warm.example.com", 1);
    let before = allocs();
    let (mut over, mut answered) = (0u32, 0u32);
    for (i, q) in names.iter().cycle().take(20_000).enumerate() {
        let now = 1_767_398_400_000 + i as u64 * 50;
        let s = det.observe(now, clients[i % clients.len()], q, 16);
        over += u32::from(s.reasons.has(ReasonCode::Budget));
        // Answers of watched domains are scored on the same terms.
        if det.watches(now, q) {
            answered += 1;
            det.record_answer(now, q, |f| {
                f(AnswerData::Text(
                    b"aGVscCBtZSBvdXQgb2YgaGVyZQ== v=spf1 ~all",
                ));
                f(AnswerData::Target(
                    "mzxw6ytboi2gk43umvzxi5dp.c2.example.net.",
                ));
            });
        }
    }
    let after = allocs();
    assert_eq!(after - before, 0, "allocations on the hot path");
    assert!(over > 0, "the budget was never crossed");
    assert!(answered > 0, "no answer was scored");
}
