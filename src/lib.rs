//! dnsguard: a filtering DNS resolver appliance.
//!
//! A query arrives at a front end in [`dns`]: the per-core UDP loop (`dns::udp`),
//! DNS over TCP (`dns::tcp`), TLS (`dns::tls`), HTTPS (`dns::https`) or QUIC
//! (`dns::quic`). Each reads a plain query and writes its reply in place through
//! one path (`dns::fast`); what that reader declines goes through hickory's
//! parser to `dns::handler`.
//! Every front end parses, asks [`pipeline::Pipeline::decide`], runs `fetch` and
//! `finish` when it says so, encodes the answer, and calls `record`; only
//! [`pipeline`] orders the steps: 0 who the client is ([`identity`]), 1 access
//! control, 2 bypass canaries, 3 the [`filter`] (client group, lists,
//! block/allow), 4 tunnel detection ([`detect`]), 5 local and special-use names,
//! 6 the cache, 7 the resolver ([`resolve`]: conditional forwarding, forwarder,
//! recursor; stale answers on failure), 8 checks on the answer (CNAME cloaking,
//! [`rebinding`], answer rules), 9 the record: the [`querylog`], the metrics, the
//! egress [`guard`] and [`dnstap`]. `dnsguard check` runs the same stages without
//! the network (`Pipeline::check`). [`lists`] supplies list texts (files,
//! builtins, downloads); [`web`] is the dashboard and API, changing the running
//! server through [`live::Live`] (as SIGHUP does) and the configuration file
//! through [`config::edit`]. Each module declares its own settings type;
//! [`config::Config`] aggregates them, loads and validates the file. [`app`] wires
//! the pieces together; [`cluster`] makes a highly available pair (health check,
//! config replication); [`cli`] and [`commands`] are the command line;
//! [`stub`] is the forwarder for agent machines. Shared helpers: [`name`] (domain
//! names), [`netset`], [`channel`], [`datadir`], [`pki`]. No two top-level
//! modules import each other (CI checks). See `ARCHITECTURE.md` for the map.

pub mod access;
pub mod app;
pub mod cert;
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
pub mod identity;
pub mod lists;
pub mod live;
pub mod memory;
pub mod name;
pub mod netset;
pub mod pipeline;
pub mod pki;
pub mod querylog;
pub mod ratelimit;
pub mod rebinding;
pub mod resolve;
pub mod stub;
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
