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
    /// Forward this host's or container's plain DNS to a dnsguard over DoH or DoT
    /// with its ClientID: `dnsguard stub --to https://pi.lan:8443/dns-query/agent-1
    /// --pin SPKI`. Never falls back to plain DNS or another resolver.
    Stub {
        /// Address to answer plain DNS on (UDP and TCP); repeat for more.
        #[arg(long, default_value = "127.0.0.53:53")]
        listen: Vec<std::net::SocketAddr>,
        /// The dnsguard: `https://HOST[:port]/dns-query/CLIENT-ID` or
        /// `tls://CLIENT-ID.HOST-NAME[:port]`; HOST an address, or a name looked
        /// up once at start (or `https://IP:port/path#NAME`, `tls://IP:port#NAME`).
        #[arg(long)]
        to: String,
        /// SPKI pin of its certificate (dnsguard logs it as `spki_pin` and shows
        /// it on the dashboard); repeat for a key rollover. Without: the CAs.
        #[arg(long)]
        pin: Vec<String>,
        /// PEM file of CA certificates to trust instead of the system's.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Client certificate to present (`dnsguard clients issue NAME --cert
        /// DIR` made it): proves the agent's identity to the dnsguard.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The private key of `--cert`.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Private state directory (default: $STATE_DIRECTORY, $XDG_STATE_HOME/dnsguard-stub,
        /// ~/.local/state/dnsguard-stub).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the DNS service.
    Serve {
        /// Configuration file; without one, the embedded default is used
        /// (127.0.0.1:5353, DoT to Quad9, the bundled blocklist).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Show what the server would answer for a name, and why: the same steps as a
    /// query (access, canaries, lists and groups, tunnel action, local and
    /// special-use names; with `--resolve` the answer too).
    Check {
        /// The name to check, e.g. `ads.example.com`.
        name: String,
        /// The client asking (decides the group): an address, or the name of a
        /// `[[clients]]` entry; default 127.0.0.1.
        #[arg(long, default_value = "127.0.0.1")]
        client: String,
        /// The query type, e.g. A, AAAA, HTTPS.
        #[arg(long = "type", default_value = "A")]
        qtype: String,
        /// Also ask the resolver and check its answer as the server does (CNAME
        /// cloaking, rebinding, answer rules); without it nothing leaves this machine.
        #[arg(long)]
        resolve: bool,
        /// Configuration file (default: the embedded one).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Named clients (`[[clients]]`).
    Clients {
        /// What to do.
        #[command(subcommand)]
        action: ClientsAction,
    },
    /// Work with block and allow lists.
    Lists {
        /// What to do with the lists.
        #[command(subcommand)]
        action: ListsAction,
    },
    /// Show logged queries: `dnsguard query-log --since 7d --blocked`. Reads the
    /// database directly, or asks the running server when it holds the database.
    QueryLog(QueryLogArgs),
    /// Totals, blocked share, top domains, top blocked, top clients, flagged count.
    Stats {
        /// Start: a duration back from now (`30m`, `12h`, `7d`, `2w`) or an RFC 3339 time.
        #[arg(long, default_value = "24h")]
        since: String,
        /// End (exclusive), same forms; default now.
        #[arg(long)]
        until: Option<String>,
        /// Length of the top lists.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
        /// Say on stderr whether the database or the server answered.
        #[arg(short, long)]
        verbose: bool,
        /// Configuration file (default: the embedded one).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Measure the tunnel detector on labelled traffic: a CSV with columns
    /// `qname,qtype,label` (`benign|tunnel`), optional `difficulty`, `family`,
    /// `ts`, `client` and `session` (then also leakage and alarms per client-hour).
    DetectEval {
        /// The CSV file.
        file: PathBuf,
        /// Configuration file whose `[detect]` settings to use (default: embedded).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Set the dashboard password (read from stdin, or prompted for on a terminal);
    /// stores an argon2id hash in `DATA_DIR/web-password` (mode 0600). A running
    /// server uses it at the next login.
    SetPassword {
        /// Configuration file whose `server.data_dir` to use (default: the embedded one).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Allowlist-only groups: learn the allowlist from the query log.
    Allowlist {
        /// What to do.
        #[command(subcommand)]
        action: AllowlistAction,
    },
    /// The weekly review: top clients, new domains per client, blocked attempts by
    /// category, flagged names, bypass attempts.
    Report {
        /// Start: a duration back from now (`30m`, `12h`, `7d`, `2w`) or an RFC 3339 time.
        #[arg(long, default_value = "7d")]
        since: String,
        /// End (exclusive), same forms; default now.
        #[arg(long)]
        until: Option<String>,
        /// Length of each list.
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
        /// Say on stderr whether the database or the server answered.
        #[arg(short, long)]
        verbose: bool,
        /// Configuration file (default: the embedded one).
        #[arg(short, long)]
        config: Option<PathBuf>,
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

/// `dnsguard allowlist …`
#[derive(Debug, Subcommand)]
pub enum AllowlistAction {
    /// Propose the group's allowlist from what its clients resolved (registrable
    /// domains with counts, clients, first and last seen); `--apply` adds them as
    /// `||domain^` allow entries to the group in the configuration file, and a
    /// running server applies them at once.
    Learn {
        /// The group (e.g. one with `mode = "learn"`).
        #[arg(long)]
        group: String,
        /// Learn from this client of the group only: a `[[clients]]` name
        /// (`agent-1`), an address or a CIDR.
        #[arg(long)]
        client: Option<String>,
        /// Start: a duration back from now (`7d`) or an RFC 3339 time.
        #[arg(long, default_value = "7d")]
        since: String,
        /// End (exclusive), same forms; default now.
        #[arg(long)]
        until: Option<String>,
        /// Write the proposal into the configuration.
        #[arg(long)]
        apply: bool,
        /// With `--apply`: also switch the group to `mode = "enforce"`.
        #[arg(long)]
        enforce: bool,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
        /// Say on stderr whether the database or the server answered.
        #[arg(short, long)]
        verbose: bool,
        /// Configuration file (default: the embedded one; `--apply` without a
        /// running server needs one).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

/// `dnsguard clients …`
#[derive(Debug, Subcommand)]
pub enum ClientsAction {
    /// Print a fresh secret for client NAME once, and the `[[clients]]` entry
    /// (with the secret's SHA-256 only) to add to the configuration. The secret is
    /// written nowhere: give it to the client (`/dns-query/NAME/SECRET`).
    ///
    /// With `--cert DIR`, instead: make a TLS client key and certificate in DIR
    /// (`key.pem`, owner-only, and `cert.pem`), and print its SPKI pin and the
    /// `[[clients]]` entry with it. Run this on the agent machine: the private key
    /// never leaves it; only the entry goes to the dnsguard.
    Issue {
        /// The client's name, also its ClientID (`[a-z0-9-]`, 1 to 64).
        name: String,
        /// Directory for the client certificate (made if missing; an existing key
        /// is never overwritten).
        #[arg(long, value_name = "DIR")]
        cert: Option<PathBuf>,
    },
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

/// `dnsguard query-log …`
#[derive(Debug, clap::Args)]
pub struct QueryLogArgs {
    /// Start: a duration back from now (`30m`, `12h`, `7d`, `2w`) or an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// End (exclusive), same forms; default now.
    #[arg(long)]
    pub until: Option<String>,
    /// Client IP or CIDR.
    #[arg(long)]
    pub client: Option<String>,
    /// Domain: `.example.com` for the name and everything below it, else a substring.
    #[arg(long)]
    pub domain: Option<String>,
    /// Only blocked queries.
    #[arg(long)]
    pub blocked: bool,
    /// Only allowed (and allowlisted) queries.
    #[arg(long)]
    pub allowed: bool,
    /// Only queries flagged by tunnel detection.
    #[arg(long)]
    pub flagged: bool,
    /// At most this many entries.
    #[arg(long)]
    pub limit: Option<usize>,
    /// `table`, `json` or `jsonl` (the same: one object per line, schema in
    /// docs/querylog-jsonl.md) or `csv`.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Keep printing new entries as they arrive (oldest first).
    #[arg(short, long)]
    pub follow: bool,
    /// Say on stderr whether the database or the server answered.
    #[arg(short, long)]
    pub verbose: bool,
    /// Configuration file (default: the embedded one).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
}

impl QueryLogArgs {
    /// The request these arguments describe.
    pub fn request(&self) -> crate::querylog::LogRequest {
        crate::querylog::LogRequest {
            since: Some(self.since.clone()),
            until: self.until.clone(),
            client: self.client.clone(),
            domain: self.domain.clone(),
            blocked: self.blocked,
            allowed: self.allowed,
            flagged: self.flagged,
            limit: self.limit,
            format: Some(self.format.clone()),
            oldest_first: self.follow,
        }
    }
}
