//! The egress guard's per-query hook (`Guard::observe`) does not allocate, for
//! queries it ignores and for those it hands to its thread (new-domain watch,
//! firewall addresses, exfil hits), also when its queue is full.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;

use dnsguard::config::Config;
use dnsguard::guard::Guard;
use dnsguard::querylog::{Entry, Origin, Ruling};

struct Counting;

thread_local! {
    /// Allocations made by this thread (the guard's own threads do not count).
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
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
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n\
         [[lists]]\nname = \"exfil-endpoints\"\nsource = \"builtin:exfil\"\n\
         [[groups]]\nname = \"agents\"\nclients = [\"127.0.0.2\"]\nmode = \"learn\"\n\
         [firewall]\nenabled = true\ngroups = [\"agents\"]\ncommand = [\"true\"]\ncreate = false\n",
        dir.path().display()
    );
    let cfg = Config::parse(&text, "test").unwrap();
    let guard = Guard::start(cfg.guard()).unwrap();
    // Entries prepared up front, as the pipeline has them (shared strings).
    let agents: Arc<str> = Arc::from("agents");
    let default: Arc<str> = Arc::from("default");
    let exfil: Arc<str> = Arc::from("exfil-endpoints");
    let upstream = Origin::Upstream(Arc::from("127.0.0.1:53"));
    let entries: Vec<Entry> = (0..64)
        .map(|i| {
            let client: IpAddr = if i % 3 == 0 { "127.0.0.1" } else { "127.0.0.2" }
                .parse()
                .unwrap();
            let mut e = Entry::new(
                1_767_398_400_000 + i,
                client,
                Arc::from(format!("www.site{i}.test")),
                1,
            );
            e.source = upstream.clone();
            e.group = if i % 3 == 0 {
                default.clone()
            } else {
                agents.clone()
            };
            if i % 7 == 0 {
                e.verdict = Ruling::Blocked;
                e.source = Origin::Blocked;
                e.list = exfil.clone();
            }
            e
        })
        .collect();
    let addrs: [(IpAddr, u32); 2] = [
        ("192.0.2.1".parse().unwrap(), 300),
        ("2001:db8::1".parse().unwrap(), 60),
    ];
    // Warm-up: arc-swap's per-thread state, channel internals.
    for e in &entries {
        guard.observe(e, addrs.iter().copied());
    }
    let before = allocs();
    // Far more than the queue holds: the overflow path is exercised too.
    for e in entries.iter().cycle().take(50_000) {
        guard.observe(e, addrs.iter().copied());
    }
    assert_eq!(allocs() - before, 0, "allocations on the hot path");
}
