//! The composition point: builds the pipeline from a [`Config`], starts the
//! listeners and background tasks (list updates, cache maintenance), reloads lists
//! on SIGHUP, and shuts everything down on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::dns::pipeline::{Pipeline, Policy};
use crate::dns::server::DnsServer;
use crate::filter::{Filter, ListText};
use crate::lists::{ListError, Lists, Source, Text, Updated};
use crate::querylog::QueryLog;

/// Runs the service until a termination signal arrives. `config_path` is re-read on
/// SIGHUP (lists and groups are applied live; a broken file keeps the old config).
pub async fn serve(cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    // Catch the signals before the sockets open: SIGHUP's default action would
    // otherwise kill a server that a supervisor signals right after start-up.
    use tokio::signal::unix::{SignalKind, signal};
    let hup = signal(SignalKind::hangup())?;
    let term = signal(SignalKind::terminate())?;
    crate::datadir::make_private(&cfg.server.data_dir);
    let lists = Arc::new(Lists::new(&cfg.server.data_dir, &cfg.list_updates)?);
    let filter = compile_filter(&cfg, &lists).await?;
    let log = Arc::new(open_query_log_or_degrade(&cfg)?);
    let pipeline = Arc::new(Pipeline::new(&cfg, Policy::new(filter, &cfg), log.clone())?);
    let guard = crate::guard::Guard::start(&cfg)?;
    pipeline.set_guard(guard.clone());
    let cfg_shared = Arc::new(parking_lot::Mutex::new(cfg.clone()));
    let live = Arc::new(Live {
        config_path,
        config: cfg_shared,
        lists: lists.clone(),
        pipeline: pipeline.clone(),
        guard: Some(guard.clone()),
        apply_lock: tokio::sync::Mutex::new(()),
    });
    // The API first: once DNS is announced as listening, everything is up.
    let web = if cfg.web.enabled {
        Some(crate::web::start(&cfg.web, &cfg.server.data_dir, live.clone()).await?)
    } else {
        None
    };
    live.publish_list_metrics();
    // After the web server: its metrics recorder counts the dropped events.
    let dnstap = crate::dnstap::Dnstap::start(&cfg.dnstap)?;
    if let Some(tap) = &dnstap {
        pipeline.set_dnstap(tap.clone());
    }
    // Before any listener: a broken certificate stops the start with its reason.
    let certs = if cfg.server.tls_listen.is_empty()
        && cfg.server.https_listen.is_empty()
        && cfg.server.quic_listen.is_empty()
    {
        None
    } else {
        Some(crate::dns::cert::CertStore::load(
            &cfg.tls,
            &cfg.server.data_dir,
        )?)
    };
    let server = DnsServer::start(
        &cfg.server.listen,
        certs.as_ref().map(|c| (&cfg.server.tls_listen[..], c)),
        &cfg.server.quic_listen,
        &crate::dns::https::DohConfig::from_server(&cfg.server),
        cfg.server.tcp_limits(),
        &cfg.server.rate_limit,
        pipeline.clone(),
    )?;
    tracing::info!(mode = ?cfg.resolver.mode, "dnsguard ready");
    let endpoint_file = crate::web::endpoint_path(&cfg.server.data_dir);

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(maintain_cache(pipeline.clone()));
    tasks.spawn(update_lists_periodically(live.clone()));
    tasks.spawn(reload_on_sighup(hup, live.clone(), certs));

    shutdown_signal(term).await;
    tracing::info!("shutting down");
    tasks.abort_all();
    if let Some((_, task)) = web {
        task.abort();
        let _ = std::fs::remove_file(&endpoint_file);
    }
    server.shutdown().await;
    if let Some(tap) = dnstap {
        // What is queued goes out, then STOP (and the collector's FINISH).
        tokio::task::spawn_blocking(move || tap.shutdown()).await?;
    }
    drop(pipeline);
    drop(live);
    guard.flush();
    // The last batch of the query log reaches the disk before we exit.
    tokio::task::spawn_blocking(move || log.shutdown()).await?;
    Ok(())
}

/// Where the query log lives under the data directory.
pub fn query_log_dir(cfg: &Config) -> PathBuf {
    cfg.server.data_dir.join("querylog")
}

/// Opens the query log (or a disabled one when `query_log.enabled = false`).
pub fn open_query_log(cfg: &Config) -> anyhow::Result<QueryLog> {
    use anyhow::Context;
    if !cfg.query_log.enabled {
        return Ok(QueryLog::disabled(cfg.query_log.clone()));
    }
    let dir = query_log_dir(cfg);
    QueryLog::open(&dir, cfg.query_log.clone())
        .with_context(|| format!("cannot open the query log in {}", dir.display()))
}

/// [`open_query_log`] for the server: a log that cannot be opened because of its
/// disk (read-only, full, permissions) must not stop DNS, so the server runs
/// without it and reports the error (log line, `dnsguard stats`, `/metrics`).
/// Another dnsguard holding the log is still fatal: two servers on one data
/// directory is a configuration mistake.
fn open_query_log_or_degrade(cfg: &Config) -> anyhow::Result<QueryLog> {
    match open_query_log(cfg) {
        Ok(log) => Ok(log),
        Err(e)
            if e.downcast_ref::<crate::querylog::QueryLogError>()
                .is_some_and(|q| matches!(q, crate::querylog::QueryLogError::Locked(_))) =>
        {
            Err(e)
        }
        Err(e) => {
            let why = format!("{e:#}");
            tracing::error!(error = %why, "query log disabled: DNS keeps answering, queries are not logged");
            Ok(QueryLog::unavailable(cfg.query_log.clone(), &why))
        }
    }
}

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

async fn update_lists_periodically(live: Arc<Live>) {
    loop {
        let current = live.config.lock().clone();
        let has_urls = current
            .lists
            .iter()
            .any(|l| l.enabled && matches!(Source::of(&l.source), Source::Url(_)));
        if has_urls && let Err(e) = live.update_lists(None).await {
            tracing::error!(error = %format!("{e:#}"), "cannot compile the updated lists; keeping the old filter")
        }
        let hours = current.list_updates.interval_hours;
        if hours == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(hours * 3600)).await;
    }
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
                Ok(Updated::Local) => matches!(Source::of(&list.source), Source::File(_)),
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
        let policy = Policy::new(filter, &new);
        self.pipeline.set_policy(policy);
        if let Some(guard) = &self.guard {
            guard.configure(&new);
        }
        *self.config.lock() = new;
        self.publish_list_metrics();
        Ok(())
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

/// On SIGHUP: the configuration (lists, groups) and the TLS certificate files, so
/// a renewed certificate is served without a restart.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    live: Arc<Live>,
    certs: Option<Arc<crate::dns::cert::CertStore>>,
) {
    while hup.recv().await.is_some() {
        if let Some(certs) = &certs
            && let Err(e) = certs.reload()
        {
            tracing::error!(error = %e, "TLS certificate reload failed; keeping the one in force");
        }
        match live.reload().await {
            Ok(()) => tracing::info!("reloaded lists and groups"),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the running configuration")
            }
        }
    }
}

/// Every 10 s: returns memory freed by the query log's store to the system (sled
/// churns through allocations of every size; without this, idle RSS creeps up by
/// tens of MB); every minute: drops long-expired cache entries.
async fn maintain_cache(pipeline: Arc<Pipeline>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        ticks += 1;
        if ticks.is_multiple_of(6) {
            pipeline.cache().purge_expired();
        }
        tokio::task::spawn_blocking(crate::memory::release_free);
    }
}

async fn shutdown_signal(mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
