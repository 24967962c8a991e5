//! dnsguard: a filtering DNS resolver appliance.
//!
//! A query arrives at a front end in [`dns`]: the per-core UDP loop
//! (`dns::udp`, answering blocked names and cache hits in place) or DNS over TCP
//! (`dns::tcp`); anything the UDP loop cannot answer in place, and every TCP query,
//! goes through hickory's message parser to `dns::handler`. All of them run the
//! same steps of [`dns::pipeline::Pipeline`], in this order: access control →
//! bypass canaries → [`filter`] (client group, lists, block/allow) → tunnel
//! detection ([`detect`]) → local and special-use names → cache → resolver
//! ([`resolve`]: conditional forwarding, forwarder, recursor) → checks on the answer
//! (CNAME cloaking, [`rebinding`], answer rules) → the [`querylog`], the egress
//! [`guard`] and [`dnstap`]. `dnsguard check` runs the same steps without the network
//! (`Pipeline::check`). [`lists`] supplies list texts (files, builtins,
//! downloads); [`web`] is the dashboard and API; [`cluster`] makes a
//! highly available pair (health check, config replication). [`app`] wires the pieces together
//! from a [`config::Config`]; [`cli`] and [`commands`] are the command line. See
//! `ARCHITECTURE.md` for the map.

pub mod access;
pub mod app;
pub mod channel;
pub mod cli;
pub mod cluster;
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
