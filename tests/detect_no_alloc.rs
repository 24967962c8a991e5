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
    // A thread's first query sets up its per-name memo (one allocation per thread).
    let _ = det.observe(1_767_398_399_000, client, "warm.example.com", 1);
    let before = allocs();
    let mut flagged = 0u32;
    for (i, q) in names.iter().cycle().take(30_000).enumerate() {
        let now = 1_767_398_400_000 + i as u64 * 10;
        flagged += u32::from(det.observe(now, client, q, 16).flagged);
        det.record_rcode(now + 1, q, 3);
        let _ = det.is_quarantined(now + 2, client, q);
    }
    let after = allocs();
    assert_eq!(after - before, 0, "allocations on the hot path");
    assert!(flagged > 0);
}
