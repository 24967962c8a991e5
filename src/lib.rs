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
//! downloads); [`web`] is the dashboard and API, changing the running server
//! through [`live::Live`] (as SIGHUP does) and the configuration file through
//! [`config::edit`]. Each module declares its own settings type;
//! [`config::Config`] aggregates them, loads and validates the file. [`app`] wires
//! the pieces together; [`cli`] and [`commands`] are the command line. Shared
//! helpers: [`name`] (domain names), [`netset`], [`channel`], [`datadir`]. No two
//! top-level modules import each other (CI checks). See `ARCHITECTURE.md` for the
//! map.

pub mod access;
pub mod app;
pub mod cert;
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
pub mod live;
pub mod memory;
pub mod name;
pub mod netset;
pub mod querylog;
pub mod ratelimit;
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
