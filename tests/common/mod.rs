//! Shared test fixtures.
//!
//! * [`server`]: runs the real `dnsguard` binary with a test config;
//! * [`client`]: a real DNS client over UDP/TCP sockets;
//! * [`http`]: a minimal HTTP server for list downloads;
//! * [`lab`]: a signed fake DNS hierarchy (NSD) and validating unbound resolvers
//!   with DoT/DoH on `127.<block>.0.x`, started once per test binary (needs root
//!   for port 53; `.ci/run` installs nsd, ldnsutils, unbound, openssl);
//! * [`upstream`]: an in-process fake upstream with counters and fault modes;
//! * [`tap`]: reads captured dnstap (the transport of each message);
//! * [`wait_for`], [`tunnel_name`]: polling for a condition, names a tunnel sends.
//!
//! Each test binary uses only part of this module, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod client;
pub mod dash;
pub mod http;
pub mod lab;
pub mod server;
pub mod tap;
pub mod upstream;
pub mod webdriver;

use std::time::{Duration, Instant};

/// Polls `f` until it returns `Some`, or fails the test naming `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `i`-th name of a tunnel below `x.learn.example`: two base32 labels of
/// 32 and 24 characters, as iodine or dnscat2 would send.
pub fn tunnel_name(i: u64) -> String {
    const A: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (i + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut label = |n: usize| -> String {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                A[(x % 32) as usize] as char
            })
            .collect()
    };
    format!("{}.{}.x.learn.example.", label(32), label(24))
}
