//! Firewall sync: every address dnsguard answers for an allowed name (clients of
//! the configured groups) goes into an nftables set with the record's TTL as
//! timeout, like dnsmasq's `--nftset`. A rule such as
//!
//! ```text
//! ip saddr 10.0.5.0/24 ip daddr != @dnsguard_allowed drop
//! ```
//!
//! then holds agents to DNS policy at the IP layer: no connection to an address
//! they did not get from dnsguard.
//!
//! The `nft` command is fed batches on stdin (`nft -f -`) from a thread of its
//! own; the DNS path never waits for it. Addresses already in the set (as far as
//! this process knows: added and not yet timed out) are not sent again.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// `[firewall]`: nftables set sync.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallConfig {
    /// Sync at all.
    pub enabled: bool,
    /// Groups whose answers are added; empty = every group.
    pub groups: Vec<String>,
    /// nftables family of the table (`inet`, `ip`, `ip6`, …).
    pub family: String,
    /// The table holding the sets.
    pub table: String,
    /// The set for IPv4 addresses (`type ipv4_addr; flags timeout`).
    pub set_v4: String,
    /// The set for IPv6 addresses (`type ipv6_addr; flags timeout`).
    pub set_v6: String,
    /// Create the table and sets at start if missing (`add table`/`add set` leave
    /// existing ones as they are).
    pub create: bool,
    /// The command run with `-f -`, e.g. `["nft"]` or
    /// `["ip", "netns", "exec", "fw", "nft"]`.
    pub command: Vec<String>,
    /// Shortest timeout given to an element (seconds): a TTL of 0 still lets the
    /// client connect.
    pub min_timeout_secs: u32,
    /// Changes are collected this long before one `nft` run (milliseconds).
    pub batch_ms: u64,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            groups: Vec::new(),
            family: "inet".into(),
            table: "dnsguard".into(),
            set_v4: "dnsguard_allowed".into(),
            set_v6: "dnsguard_allowed6".into(),
            create: true,
            command: vec!["nft".into()],
            min_timeout_secs: 5,
            batch_ms: 100,
        }
    }
}

impl FirewallConfig {
    /// The statements creating the table and both sets.
    pub fn create_script(&self) -> String {
        let (f, t) = (&self.family, &self.table);
        format!(
            "add table {f} {t}\n\
             add set {f} {t} {} {{ type ipv4_addr; flags timeout; }}\n\
             add set {f} {t} {} {{ type ipv6_addr; flags timeout; }}\n",
            self.set_v4, self.set_v6
        )
    }

    /// The statements adding `elems` (address, timeout in seconds).
    pub fn add_script(&self, elems: &[(IpAddr, u32)]) -> String {
        let mut out = String::new();
        for (v6, set) in [(false, &self.set_v4), (true, &self.set_v6)] {
            let items: Vec<String> = elems
                .iter()
                .filter(|(ip, _)| ip.is_ipv6() == v6)
                .map(|(ip, t)| format!("{ip} timeout {t}s"))
                .collect();
            if !items.is_empty() {
                out.push_str(&format!(
                    "add element {} {} {set} {{ {} }}\n",
                    self.family,
                    self.table,
                    items.join(", ")
                ));
            }
        }
        out
    }
}

/// Most addresses waiting for the sync thread; more are dropped and counted.
const QUEUE: usize = 4096;

/// Most elements in one `nft` run.
const BATCH: usize = 512;

/// The handle the guard thread uses.
pub struct Firewall {
    tx: SyncSender<(IpAddr, u32)>,
}

impl Firewall {
    /// Starts the sync thread (which creates the sets first when configured).
    pub fn start(cfg: &FirewallConfig) -> anyhow::Result<Firewall> {
        anyhow::ensure!(
            !cfg.command.is_empty(),
            "firewall.command needs at least the program"
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let cfg = cfg.clone();
        crate::channel::spawn_background("dnsguard-nft", move || Sync::new(cfg).run(rx))?;
        Ok(Firewall { tx })
    }

    /// Queues addresses (with their TTLs) without waiting.
    pub fn add(&self, addrs: &[(IpAddr, u32)]) {
        for a in addrs {
            if self.tx.try_send(*a).is_err() {
                metrics::counter!("dnsguard_firewall_dropped_total").increment(1);
            }
        }
    }
}

struct Sync {
    cfg: FirewallConfig,
    /// Address → when its element times out.
    known: HashMap<IpAddr, Instant>,
}

impl Sync {
    fn new(cfg: FirewallConfig) -> Self {
        Self {
            cfg,
            known: HashMap::new(),
        }
    }

    fn run(mut self, rx: Receiver<(IpAddr, u32)>) {
        if self.cfg.create {
            match self.nft(&self.cfg.create_script()) {
                Ok(()) => tracing::info!(
                    table = %self.cfg.table, v4 = %self.cfg.set_v4, v6 = %self.cfg.set_v6,
                    "firewall sets ready"
                ),
                Err(e) => tracing::error!(error = %e, "cannot create the firewall sets"),
            }
        }
        let window = Duration::from_millis(self.cfg.batch_ms);
        while let Ok(first) = rx.recv() {
            let mut batch = Vec::with_capacity(16);
            self.push(&mut batch, first);
            let deadline = Instant::now() + window;
            while batch.len() < BATCH {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(a) => self.push(&mut batch, a),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            match self.nft(&self.cfg.add_script(&batch)) {
                Ok(()) => {
                    metrics::counter!("dnsguard_firewall_elements_total")
                        .increment(batch.len() as u64);
                    tracing::debug!(elements = batch.len(), "firewall sets updated");
                }
                Err(e) => {
                    metrics::counter!("dnsguard_firewall_errors_total").increment(1);
                    tracing::warn!(error = %e, "cannot update the firewall sets");
                    for (ip, _) in &batch {
                        self.known.remove(ip);
                    }
                }
            }
        }
    }

    /// Adds `(ip, ttl)` to the batch unless its element is still in the set.
    fn push(&mut self, batch: &mut Vec<(IpAddr, u32)>, (ip, ttl): (IpAddr, u32)) {
        let now = Instant::now();
        if self.known.get(&ip).is_some_and(|until| *until > now) {
            return;
        }
        if self.known.len() >= 100_000 {
            self.known.retain(|_, until| *until > now);
        }
        let timeout = ttl.max(self.cfg.min_timeout_secs).max(1);
        self.known
            .insert(ip, now + Duration::from_secs(u64::from(timeout)));
        if let Some(old) = batch.iter_mut().find(|(b, _)| *b == ip) {
            old.1 = old.1.max(timeout);
        } else {
            batch.push((ip, timeout));
        }
    }

    /// Runs the command with `-f -` and `script` on stdin.
    fn nft(&self, script: &str) -> Result<(), String> {
        let mut child = Command::new(&self.cfg.command[0])
            .args(&self.cfg.command[1..])
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.cfg.command[0]))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| format!("cannot write to nft: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("nft did not finish: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts() {
        let cfg = FirewallConfig::default();
        assert!(
            cfg.create_script().contains(
                "add set inet dnsguard dnsguard_allowed { type ipv4_addr; flags timeout; }"
            )
        );
        let s = cfg.add_script(&[
            ("192.0.2.1".parse().unwrap(), 60),
            ("2001:db8::1".parse().unwrap(), 5),
            ("192.0.2.2".parse().unwrap(), 30),
        ]);
        assert_eq!(
            s,
            "add element inet dnsguard dnsguard_allowed { 192.0.2.1 timeout 60s, 192.0.2.2 timeout 30s }\n\
             add element inet dnsguard dnsguard_allowed6 { 2001:db8::1 timeout 5s }\n"
        );
    }
}
