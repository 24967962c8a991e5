//! What a running server can change live, shared by SIGHUP, the dashboard and
//! the list-update schedule ([`Live`]), and compiling the filter from the list
//! texts (the server, the dashboard and the CLI alike).

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::filter::{Filter, ListText};
use crate::lists::{ListError, ListSource, Lists, Text, Updated};
use crate::pipeline::{Pipeline, Policy};

/// Reads every enabled list and compiles the filter (on a blocking thread: a
/// million-name list takes a second of CPU).
pub async fn compile_filter(cfg: &Config, lists: &Arc<Lists>) -> anyhow::Result<Filter> {
    let cfg = cfg.clone();
    let lists = lists.clone();
    tokio::task::spawn_blocking(move || compile_filter_blocking(&cfg, &lists)).await?
}

/// [`compile_filter`] for callers without a runtime (the CLI).
pub fn compile_filter_blocking(cfg: &Config, lists: &Lists) -> anyhow::Result<Filter> {
    let texts = read_texts(cfg, lists);
    let refs: Vec<ListText<'_>> = texts
        .iter()
        .map(|(name, t)| ListText {
            name,
            text: &t.text,
        })
        .collect();
    let started = std::time::Instant::now();
    let filter = Filter::build(&cfg.lists, &cfg.groups, &refs)?;
    lists.set_compiled(&texts);
    for s in filter.list_stats().iter().filter(|s| s.enabled) {
        tracing::info!(
            list = %s.name, entries = s.entries, invalid = s.invalid, missing = s.missing,
            "list loaded"
        );
        for (line, reason) in &s.invalid_samples {
            tracing::debug!(list = %s.name, line, %reason, "invalid line");
        }
    }
    drop(refs);
    drop(texts);
    crate::memory::release_free();
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        "filter compiled"
    );
    Ok(filter)
}

/// The text of every enabled list that can be read; unreadable ones are logged and
/// reported as missing by the filter's statistics.
pub fn read_texts(cfg: &Config, lists: &Lists) -> Vec<(String, Text)> {
    let mut out = Vec::new();
    for list in cfg.lists.iter().filter(|l| l.enabled) {
        match lists.read(list) {
            Ok(text) => out.push((list.name.clone(), text)),
            Err(ListError::NotDownloaded) => {
                tracing::info!(list = %list.name, "not downloaded yet");
            }
            Err(e) => tracing::warn!(list = %list.name, error = %e, "list unavailable"),
        }
    }
    out
}

/// The outcome of updating each list, by name.
pub type UpdateResults = Vec<(String, Result<Updated, ListError>)>;

/// What a running server can change live: the configuration (and where it is
/// stored), the list store and the pipeline. SIGHUP and the dashboard both apply
/// changes through [`Live::reload`], so they behave the same.
pub struct Live {
    /// The configuration file (`None` when running on the embedded default).
    pub config_path: Option<PathBuf>,
    /// The configuration in force.
    pub config: Arc<parking_lot::Mutex<Config>>,
    /// List texts and downloads.
    pub lists: Arc<Lists>,
    /// The DNS pipeline whose policy gets swapped.
    pub pipeline: Arc<Pipeline>,
    /// The egress guard (alerts, new domains, firewall), told about new configurations.
    pub guard: Option<Arc<crate::guard::Guard>>,
    /// Orders compile-and-swap runs so an older configuration never replaces a newer one.
    pub apply_lock: tokio::sync::Mutex<()>,
    /// Bumped when the configuration in force or its file changes (the cluster
    /// state's long-poll waits on it).
    pub changes: tokio::sync::watch::Sender<u64>,
}

impl Live {
    /// Re-reads the configuration file (or keeps the current configuration when
    /// there is none), recompiles the filter and swaps the new policy in; queries
    /// in flight finish with the old one. On error nothing changes.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let new = match self.config_path.as_deref() {
            Some(p) => Config::load(p)?,
            None => self.config.lock().clone(),
        };
        self.apply(new).await
    }

    /// Compiles `new` and makes it the configuration in force.
    pub async fn apply(&self, new: Config) -> anyhow::Result<()> {
        let _in_order = self.apply_lock.lock().await;
        self.swap_in(new).await
    }

    /// Downloads the enabled URL lists (only the one named `only`, if given) and
    /// compiles the filter again when anything may have changed: a new download,
    /// a saved copy that is not the one in force (saved by another process: a
    /// 304 for it is still news here), or a list file. Both the schedule and
    /// `POST /api/v1/lists/update` (which `dnsguard lists update` calls) go here.
    pub async fn update_lists(&self, only: Option<&str>) -> anyhow::Result<UpdateResults> {
        let cfg = self.config.lock().clone();
        let mut results = Vec::new();
        let mut changed = false;
        for list in cfg.lists.iter().filter(|l| l.enabled) {
            if only.is_some_and(|n| n != list.name) {
                continue;
            }
            let r = self.lists.update(list).await;
            changed |= match &r {
                Ok(Updated::New { .. }) => true,
                Ok(Updated::Local) => matches!(ListSource::of(&list.source), ListSource::File(_)),
                Ok(Updated::NotModified) | Err(_) => self.lists.unapplied(list),
            };
            results.push((list.name.clone(), r));
        }
        if changed {
            // The configuration in force when the compile starts (the dashboard
            // may have changed it during the downloads).
            let _in_order = self.apply_lock.lock().await;
            let latest = self.config.lock().clone();
            self.swap_in(latest).await?;
        }
        Ok(results)
    }

    async fn swap_in(&self, new: Config) -> anyhow::Result<()> {
        let filter = compile_filter(&new, &self.lists).await?;
        let policy = Policy::new(filter, &new.policy())?;
        self.pipeline.set_policy(policy);
        if let Some(guard) = &self.guard {
            guard.configure(new.guard_rules());
        }
        *self.config.lock() = new;
        self.publish_list_metrics();
        self.announce_change();
        Ok(())
    }

    /// Wakes whoever waits for a configuration change (a secondary's long-poll).
    pub fn announce_change(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Sets the per-list size gauges of `/metrics` from the policy in force.
    pub fn publish_list_metrics(&self) {
        let policy = self.pipeline.policy();
        for s in policy.filter.list_stats() {
            metrics::gauge!("dnsguard_list_entries", "list" => s.name.clone())
                .set(s.entries as f64);
            metrics::gauge!("dnsguard_list_invalid_lines", "list" => s.name.clone())
                .set(s.invalid as f64);
        }
    }
}
