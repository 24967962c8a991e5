//! dnsguard: a filtering DNS resolver appliance.
//!
//! A question arrives at a front end in [`dns`] (hickory-server's UDP/TCP
//! listeners), becomes a [`dns::Question`] and goes through the
//! [`dns::pipeline::Pipeline`]: access control → [`filter`] (client group, lists,
//! block/allow) → local records → cache → resolver ([`resolve`]: conditional
//! forwarding, forwarder, recursor) → CNAME-cloaking check. [`lists`] supplies
//! list texts (files, builtins, downloads).
//! [`app`] wires the pieces together from a [`config::Config`]; [`cli`] is the
//! command line. See `ARCHITECTURE.md` for the map.

pub mod access;
pub mod app;
pub mod channel;
pub mod cli;
pub mod commands;
pub mod config;
pub mod datadir;
pub mod detect;
pub mod dns;
pub mod dnstap;
pub mod filter;
pub mod guard;
pub mod lists;
pub mod memory;
pub mod netset;
pub mod querylog;
pub mod rebinding;
pub mod resolve;
pub mod web;

/// Sets up logging: `RUST_LOG` if set, else the configured default filter.
pub fn init_tracing(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
