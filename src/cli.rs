//! Command-line interface: the subcommands and their arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// dnsguard: a filtering DNS resolver for networks that run autonomous agents.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the DNS service.
    Serve {
        /// Configuration file; without one, the embedded default is used
        /// (127.0.0.1:5353, DoT to Quad9, the bundled blocklist).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Show what dnsguard would do with a name, and why (group, list, rule, line).
    Check {
        /// The name to check, e.g. `ads.example.com`.
        name: String,
        /// The client asking (decides the group); default 127.0.0.1.
        #[arg(long, default_value = "127.0.0.1")]
        client: std::net::IpAddr,
        /// The query type, e.g. A, AAAA, HTTPS.
        #[arg(long = "type", default_value = "A")]
        qtype: String,
        /// Configuration file (default: the embedded one).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Work with block and allow lists.
    Lists {
        /// What to do with the lists.
        #[command(subcommand)]
        action: ListsAction,
    },
    /// Work with configuration files.
    Config {
        /// What to do with the configuration.
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// `dnsguard config …`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Check a configuration file and report the first problem with its key and line.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the embedded default configuration, a commented starting point.
    Default,
}

/// `dnsguard lists …`
#[derive(Debug, Subcommand)]
pub enum ListsAction {
    /// Download every enabled URL list now (keeping the last good copy on failure)
    /// and report entries and invalid lines of every list.
    Update {
        /// Configuration file (default: the embedded one).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}
