//! The hot path (`observe`, `record_rcode`, `is_quarantined`) does not
//! allocate once the detector is built, even while evicting domains.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use dnsguard::detect::{DetectConfig, Detector};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
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
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut flagged = 0u32;
    for (i, q) in names.iter().cycle().take(30_000).enumerate() {
        let now = 1_767_398_400_000 + i as u64 * 10;
        flagged += u32::from(det.observe(now, client, q, 16).flagged);
        det.record_rcode(now + 1, q, 3);
        let _ = det.is_quarantined(now + 2, q);
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "allocations on the hot path");
    assert!(flagged > 0);
}
