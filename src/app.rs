//! The composition point: builds the pipeline from a [`Config`], starts the
//! listeners and background tasks (list updates, cache maintenance), reloads lists
//! on SIGHUP, and shuts everything down on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::dns::server::DnsServer;
use crate::lists::{ListSource, Lists};
use crate::live::{Live, compile_filter};
use crate::pipeline::{Pipeline, Policy};
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
    let policy = Policy::new(filter, &cfg.policy())?;
    let pipeline = Arc::new(Pipeline::new(&cfg.pipeline(), policy, log.clone())?);
    let guard = crate::guard::Guard::start(cfg.guard())?;
    pipeline.set_guard(guard.clone());
    let cfg_shared = Arc::new(parking_lot::Mutex::new(cfg.clone()));
    let live = Arc::new(Live {
        config_path,
        config: cfg_shared,
        lists: lists.clone(),
        pipeline: pipeline.clone(),
        guard: Some(guard.clone()),
        apply_lock: tokio::sync::Mutex::new(()),
        changes: tokio::sync::watch::Sender::new(0),
    });
    // The API first: once DNS is announced as listening, everything is up.
    let serving = crate::web::encrypted::ServingCell::default();
    let web = if cfg.web.enabled {
        Some(
            crate::web::start(
                &cfg.web,
                &cfg.server.data_dir,
                live.clone(),
                serving.clone(),
            )
            .await?,
        )
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
        Some(crate::cert::CertStore::load(
            &cfg.tls,
            &cfg.server.data_dir,
        )?)
    };
    let server = DnsServer::start(
        &cfg.server.listen,
        certs.as_ref().map(|c| (&cfg.server.tls_listen[..], c)),
        &cfg.server.quic_listen,
        &crate::dns::https::DohConfig::from_server(&cfg.server),
        crate::dns::tcp::TcpLimits::of(&cfg.server),
        &cfg.server.rate_limit,
        pipeline.clone(),
    )?;
    crate::cluster::listening_on(&server.local_addrs);
    if let Some(certs) = &certs {
        let _ = serving.set(crate::web::encrypted::Serving {
            certs: certs.clone(),
            dot: server.tls_addrs.clone(),
            doh: server.https_addrs.clone(),
            doq: server.quic_addrs.clone(),
        });
    }
    tracing::info!(mode = ?cfg.resolver.mode, "dnsguard ready");
    let endpoint_file = crate::web::endpoint_path(&cfg.server.data_dir);

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(maintain_cache(pipeline.clone()));
    tasks.spawn(update_lists_periodically(live.clone()));
    if let Some(certs) = &certs {
        tasks.spawn(crate::cert::watch::watch(certs.clone()));
    }
    tasks.spawn(reload_on_sighup(hup, live.clone(), certs));
    tasks.spawn(crate::web::cluster::follow::follow(
        live.clone(),
        cfg.cluster.clone(),
    ));

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

async fn update_lists_periodically(live: Arc<Live>) {
    loop {
        let current = live.config.lock().clone();
        let has_urls = current
            .lists
            .iter()
            .any(|l| l.enabled && matches!(ListSource::of(&l.source), ListSource::Url(_)));
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

/// On SIGHUP: the configuration (lists, groups) and the TLS certificate files, so
/// a renewed certificate is served without a restart.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    live: Arc<Live>,
    certs: Option<Arc<crate::cert::CertStore>>,
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
