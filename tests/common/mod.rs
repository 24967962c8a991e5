//! Shared test fixtures.
//!
//! * [`server`]: runs the real `dnsguard` binary with a test config;
//! * [`client`]: a real DNS client over UDP/TCP sockets;
//! * [`http`]: a minimal HTTP server for list downloads;
//! * [`lab`]: a signed fake DNS hierarchy (NSD) and validating unbound resolvers
//!   with DoT/DoH on `127.<block>.0.x`, started once per test binary (needs root
//!   for port 53; `.ci/run` installs nsd, ldnsutils, unbound, openssl);
//! * [`upstream`]: an in-process fake upstream with counters and fault modes;
//! * [`tap`]: reads captured dnstap (the transport of each message).
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
