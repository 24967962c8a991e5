//! What each subcommand does (the arguments are in [`crate::cli`]).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{AllowlistAction, Cli, Command, ConfigAction, ListsAction, QueryLogArgs};
use crate::config::{Config, EMBEDDED_DEFAULT};
use crate::querylog::{self, EntryWriter, QueryLog, QueryLogError, StatsRequest};
use crate::web::api::StatsReply;
use crate::web::client::{ListSummary, Remote};

/// Runs one command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let cfg = load(&config)?;
            crate::init_tracing(&cfg.server.log);
            runtime()?.block_on(crate::app::serve(cfg, config))
        }
        Command::Stub {
            listen,
            to,
            pin,
            ca,
            cert,
            key,
            data_dir,
        } => {
            let cfg = crate::stub::config(&crate::stub::StubArgs {
                listen,
                to,
                pins: pin,
                ca_file: ca,
                client_cert: cert.zip(key),
                data_dir: data_dir.unwrap_or_else(crate::stub::default_data_dir),
            })?;
            crate::init_tracing(&cfg.server.log);
            runtime()?.block_on(crate::app::serve(cfg, None))
        }
        Command::Check {
            name,
            client,
            qtype,
            resolve,
            config,
        } => check(&name, &client, &qtype, resolve, &config),
        Command::Lists {
            action: ListsAction::Update { config },
        } => lists_update(&config),
        Command::Clients {
            action: crate::cli::ClientsAction::Issue { name, cert: None },
        } => {
            let (secret, entry) = crate::identity::issue(&name)?;
            println!("secret (shown once, stored nowhere): {secret}\n");
            println!("# add to the configuration file:\n{entry}");
            Ok(())
        }
        Command::Clients {
            action:
                crate::cli::ClientsAction::Issue {
                    name,
                    cert: Some(dir),
                },
        } => {
            let (pin, entry) = crate::identity::issue_cert(&name, &dir)?;
            let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
            println!(
                "client certificate {} (key {}, owner-only: keep it on this machine)",
                cert.display(),
                key.display()
            );
            println!("SPKI pin: {pin}\n");
            println!("# add to the dnsguard's configuration file:\n{entry}");
            println!(
                "# present it: dnsguard stub --cert {} --key {} …, kdig +tls-certfile= +tls-keyfile=, curl --cert --key",
                cert.display(),
                key.display()
            );
            Ok(())
        }
        Command::QueryLog(args) => query_log(&args),
        Command::Stats {
            since,
            until,
            top,
            format,
            verbose,
            config,
        } => {
            let req = StatsRequest {
                since: Some(since),
                until,
                top: Some(top),
            };
            stats(&req, &format, verbose, &config)
        }
        Command::DetectEval {
            file,
            config,
            format,
        } => {
            anyhow::ensure!(
                matches!(format.as_str(), "table" | "json"),
                "unknown format {format:?}: use table or json"
            );
            let cfg = load(&config)?;
            let f = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let csv = std::io::BufReader::new(f);
            let mut out = std::io::stdout().lock();
            if format == "json" {
                let rep = crate::detect::eval_with(&cfg.detect, csv, std::io::sink())?;
                writeln!(out, "{}", serde_json::to_string_pretty(&rep.to_json())?)?;
            } else {
                crate::detect::eval_with(&cfg.detect, csv, out)?;
            }
            Ok(())
        }
        Command::SetPassword { config } => set_password(&config),
        Command::Allowlist {
            action:
                AllowlistAction::Learn {
                    group,
                    client,
                    since,
                    until,
                    apply,
                    enforce,
                    format,
                    verbose,
                    config,
                },
        } => {
            anyhow::ensure!(apply || !enforce, "--enforce needs --apply");
            let req = crate::guard::learn::LearnRequest {
                group,
                client,
                since: Some(since),
                until,
                enforce,
            };
            allowlist_learn(&req, apply, &format, verbose, &config)
        }
        Command::Report {
            since,
            until,
            top,
            format,
            verbose,
            config,
        } => {
            let req = StatsRequest {
                since: Some(since),
                until,
                top: Some(top),
            };
            report(&req, &format, verbose, &config)
        }
        Command::Config { action } => match action {
            ConfigAction::Check { file } => {
                Config::load(&file)?;
                println!("{}: ok", file.display());
                Ok(())
            }
            ConfigAction::Default => {
                print!("{EMBEDDED_DEFAULT}");
                Ok(())
            }
        },
    }
}

fn load(config: &Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(match config {
        Some(path) => Config::load(path)?,
        None => Config::embedded()?,
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Its workers answer queries too (TCP, cache misses): see `latency_sensitive`.
        .on_thread_start(crate::channel::latency_sensitive)
        .build()?)
}

/// `dnsguard check`: the server's own decision chain on a pipeline built from the
/// configuration (nothing sent anywhere unless `resolve`).
fn check(
    name: &str,
    client: &str,
    qtype: &str,
    resolve: bool,
    config: &Option<PathBuf>,
) -> anyhow::Result<()> {
    let cfg = load(config)?;
    crate::init_tracing("warn");
    let lists = crate::lists::Lists::new(&cfg.server.data_dir, &cfg.list_updates)?;
    let filter = crate::live::compile_filter_blocking(&cfg, &lists)?;
    let qtype = crate::dns::parse_qtype(qtype)?;
    let name = crate::name::normalize(name)
        .map_err(|e| anyhow::anyhow!("{name:?} is not a valid name: {e}"))?;
    let log = Arc::new(QueryLog::disabled(cfg.query_log.clone()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (checked, policy) = runtime.block_on(async {
        let policy = crate::pipeline::Policy::new(filter, &cfg.policy())?;
        // An address, or a `[[clients]]` name (asking from loopback).
        let (ip, identity) = policy.identities().asker(client).ok_or_else(|| {
            anyhow::anyhow!("--client {client:?}: neither an address nor a [[clients]] name")
        })?;
        let pipeline = crate::pipeline::Pipeline::new(&cfg.pipeline(), policy, log)?;
        let checked = pipeline
            .check_as(ip, identity, &name, qtype.into(), resolve)
            .await;
        anyhow::Ok((checked, pipeline.policy()))
    })?;
    let texts = crate::live::read_texts(&cfg, &lists);
    let refs: Vec<_> = texts
        .iter()
        .map(|(name, t)| crate::filter::ListText {
            name,
            text: &t.text,
        })
        .collect();
    let x = checked.verdict.map(|v| policy.filter.explain(&v, &refs));
    println!("{name}: {}", checked.describe(x.as_ref()));
    Ok(())
}

fn set_password(config: &Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = load(config)?;
    let password = if is_terminal() {
        let first = prompt_hidden("New dashboard password: ")?;
        let second = prompt_hidden("Again: ")?;
        anyhow::ensure!(first == second, "the passwords differ");
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    crate::web::auth::set_password(&cfg.server.data_dir, &password)?;
    println!(
        "password stored in {}",
        crate::web::auth::password_path(&cfg.server.data_dir).display()
    );
    Ok(())
}

fn is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
}

/// Reads a line from the terminal with echo off.
fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    // SAFETY: termios is plain data; tcgetattr fills it for fd 0, which is a terminal.
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    let have = unsafe { libc::tcgetattr(0, &mut old) } == 0;
    if have {
        let mut quiet = old;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: setting attributes of fd 0 from a valid termios.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    if have {
        // SAFETY: restores the attributes read above.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &old) };
    }
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// `lists update`: a running server is asked to update (it downloads, compiles
/// and applies); with none to ask, the saved copies are updated here and the
/// server compiles them when it starts.
fn lists_update(config: &Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = load(config)?;
    crate::init_tracing("warn");
    if let Ok(remote) = Remote::find(&cfg.server.data_dir) {
        let asked = runtime()?.block_on(async {
            let results = remote.update_lists().await?;
            anyhow::Ok((results, remote.lists().await?))
        });
        match asked {
            Ok((results, lists)) => {
                println!("asked the running server at {}", remote.base());
                for (name, r) in results {
                    println!("{name}: {r}");
                }
                for l in lists {
                    let ListSummary {
                        enabled, missing, ..
                    } = l;
                    print_list_row(
                        &l.name,
                        (enabled, missing),
                        (l.entries, l.invalid),
                        &l.invalid_samples,
                    );
                    if let Some(e) = l.last_error.filter(|_| l.enabled) {
                        println!("    error: {e}");
                    }
                }
                return Ok(());
            }
            Err(e) if crate::web::client::is_unreachable(&e) => {}
            Err(e) => return Err(e.context("the running server could not update its lists")),
        }
    }
    let lists = Arc::new(crate::lists::Lists::new(
        &cfg.server.data_dir,
        &cfg.list_updates,
    )?);
    runtime()?.block_on(async {
        for list in cfg.lists.iter().filter(|l| l.enabled) {
            match lists.update(list).await {
                Ok(u) => println!("{}: {u:?}", list.name),
                Err(e) => println!("{}: {e} (kept the last good copy)", list.name),
            }
        }
    });
    let filter = crate::live::compile_filter_blocking(&cfg, &lists)?;
    for s in filter.list_stats() {
        print_list_row(
            &s.name,
            (s.enabled, s.missing),
            (s.entries, s.invalid),
            &s.invalid_samples,
        );
    }
    println!(
        "no running server found to ask: the saved copies apply when it starts (or at its next update or SIGHUP)"
    );
    Ok(())
}

/// One line per list: state, entries and invalid lines, a few of those.
fn print_list_row(
    name: &str,
    (enabled, missing): (bool, bool),
    (entries, invalid): (usize, usize),
    samples: &[(u32, String)],
) {
    let state = match (enabled, missing) {
        (false, _) => "disabled",
        (true, true) => "missing",
        (true, false) => "loaded",
    };
    println!("{name:<24} {state:<8} {entries:>9} entries {invalid:>7} invalid");
    for (line, reason) in samples.iter().take(3) {
        println!("    line {line}: {reason}");
    }
}

/// The query log opened directly, or the server that holds it.
enum LogAccess {
    Local(QueryLog),
    Remote(Remote),
}

fn open_log(cfg: &Config, verbose: bool) -> anyhow::Result<LogAccess> {
    let dir = crate::app::query_log_dir(cfg);
    match QueryLog::open(&dir, cfg.query_log.clone()) {
        Ok(log) => {
            if verbose {
                eprintln!("reading the query log directly from {}", dir.display());
            }
            Ok(LogAccess::Local(log))
        }
        Err(QueryLogError::Locked(_)) => {
            let remote = Remote::find(&cfg.server.data_dir).context(
                "the query log is held by a running server, but its API cannot be found",
            )?;
            if verbose {
                eprintln!(
                    "a running server holds the query log; asking it at {}",
                    remote.base()
                );
            }
            Ok(LogAccess::Remote(remote))
        }
        Err(e) => Err(e).with_context(|| format!("cannot open the query log in {}", dir.display())),
    }
}

fn query_log(args: &QueryLogArgs) -> anyhow::Result<()> {
    let cfg = load(&args.config)?;
    let req = args.request();
    // Bad input is reported before anything is opened.
    let filter = req.filter(querylog::now_ms())?;
    let format = req.format()?;
    let stdout = std::io::stdout();
    match open_log(&cfg, args.verbose)? {
        LogAccess::Local(log) => {
            let mut out = EntryWriter::new(format, stdout.lock());
            let mut it = log.query(&filter);
            for e in it.by_ref() {
                out.write(&e?)?;
            }
            out.flush()?;
            if !args.follow {
                return Ok(());
            }
            let mut cursor = match filter.until_ms {
                Some(_) => return Ok(()),
                None => log.end_cursor()?,
            };
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let mut it = log.query_after(cursor, &filter);
                for e in it.by_ref() {
                    out.write(&e?)?;
                }
                cursor = it.cursor();
                out.flush()?;
            }
        }
        LogAccess::Remote(remote) => runtime()?.block_on(async {
            let mut out = stdout.lock();
            if !args.follow {
                return remote.copy_log(&req, &mut out).await;
            }
            let mut writer = EntryWriter::new(format, out);
            let mut after: Option<String> = None;
            let mut first = true;
            loop {
                let reply = if first {
                    // Start with what the range already holds, then follow.
                    let mut buf = Vec::new();
                    let mut json = req.clone();
                    json.format = Some("json".into());
                    remote.copy_log(&json, &mut buf).await?;
                    for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        writer.write(&serde_json::from_slice(line)?)?;
                    }
                    first = false;
                    remote.follow(&req, None).await?
                } else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    remote.follow(&req, after.as_deref()).await?
                };
                for e in &reply.entries {
                    writer.write(e)?;
                }
                writer.flush()?;
                after = Some(reply.cursor);
            }
        }),
    }
}

fn stats(
    req: &StatsRequest,
    format: &str,
    verbose: bool,
    config: &Option<PathBuf>,
) -> anyhow::Result<()> {
    let cfg = load(config)?;
    let (since, until, top) = req.resolve(querylog::now_ms())?;
    let reply = match open_log(&cfg, verbose)? {
        LogAccess::Local(log) => StatsReply {
            stats: log.stats(since, until, top)?,
            log_dropped: log.dropped(),
            log_write_errors: log.write_errors(),
            log_last_error: log.last_error(),
        },
        LogAccess::Remote(remote) => runtime()?.block_on(remote.stats(req))?,
    };
    let mut out = std::io::stdout().lock();
    match format {
        "json" => writeln!(out, "{}", serde_json::to_string_pretty(&reply)?)?,
        "table" => print_stats(&mut out, &reply)?,
        other => anyhow::bail!("unknown format {other:?}: use table or json"),
    }
    Ok(())
}

fn print_stats(out: &mut impl Write, r: &StatsReply) -> std::io::Result<()> {
    let s = &r.stats;
    writeln!(
        out,
        "period        {} .. {}",
        querylog::format_time(s.since_ms),
        querylog::format_time(s.until_ms)
    )?;
    writeln!(out, "queries       {}", s.total)?;
    writeln!(
        out,
        "blocked       {} ({:.1}%)",
        s.blocked,
        s.blocked_share * 100.0
    )?;
    writeln!(out, "allowlisted   {}", s.allowlisted)?;
    writeln!(out, "from cache    {}", s.cached)?;
    writeln!(out, "flagged       {}", s.flagged)?;
    writeln!(out, "rate-limited  {}", s.rate_limited)?;
    writeln!(out, "avg latency   {:.0} µs", s.avg_latency_us)?;
    if r.log_dropped > 0 || r.log_write_errors > 0 {
        writeln!(
            out,
            "log           {} dropped, {} write errors{}",
            r.log_dropped,
            r.log_write_errors,
            r.log_last_error
                .as_deref()
                .map(|e| format!(" (last: {e})"))
                .unwrap_or_default()
        )?;
    }
    for (title, items) in [
        ("top domains", &s.top_domains),
        ("top blocked", &s.top_blocked),
        ("top clients", &s.top_clients),
    ] {
        writeln!(out, "\n{title}")?;
        for item in items.iter() {
            writeln!(out, "  {:>8}  {}", item.count, item.key)?;
        }
    }
    Ok(())
}

fn allowlist_learn(
    req: &crate::guard::learn::LearnRequest,
    apply: bool,
    format: &str,
    verbose: bool,
    config: &Option<PathBuf>,
) -> anyhow::Result<()> {
    use crate::guard::learn;
    anyhow::ensure!(
        matches!(format, "table" | "json"),
        "unknown format {format:?}: use table or json"
    );
    let cfg = load(config)?;
    req.criteria(querylog::now_ms())?;
    let learned = match open_log(&cfg, verbose)? {
        LogAccess::Local(log) => {
            let allowed = learn::allow_entries(&cfg.groups, &req.group);
            let mut learned = learn::learn(&log, req, &allowed, querylog::now_ms())?;
            drop(log);
            if apply {
                let path = config
                    .as_deref()
                    .context("--apply needs the configuration file (--config FILE)")?;
                learned.applied = Some(apply_learned(path, &cfg, &learned, req.enforce)?);
                learned.enforced = req.enforce;
            }
            learned
        }
        LogAccess::Remote(remote) => runtime()?.block_on(remote.learn(req, apply))?,
    };
    let mut out = std::io::stdout().lock();
    match format {
        "json" => writeln!(out, "{}", serde_json::to_string_pretty(&learned)?)?,
        _ => learn::print_table(&mut out, &learned)?,
    }
    Ok(())
}

/// Adds the learned entries to the group in the file at `path`: comment-keeping
/// edit, validated, written atomically. (A running server is asked through its
/// API instead, which applies the change live.)
fn apply_learned(
    path: &std::path::Path,
    cfg: &Config,
    learned: &crate::guard::learn::Learned,
    enforce: bool,
) -> anyhow::Result<usize> {
    crate::config::edit::commit(path, |doc| {
        crate::config::edit::apply_learned(doc, learned, &cfg.groups, enforce)
            .map_err(anyhow::Error::msg)
    })
}

fn report(
    req: &StatsRequest,
    format: &str,
    verbose: bool,
    config: &Option<PathBuf>,
) -> anyhow::Result<()> {
    use crate::guard::report;
    let cfg = load(config)?;
    let (since, until, top) = req.resolve(querylog::now_ms())?;
    anyhow::ensure!(
        matches!(format, "table" | "json"),
        "unknown format {format:?}: use table or json"
    );
    let r = match open_log(&cfg, verbose)? {
        LogAccess::Local(log) => {
            let cats = cfg.guard_categories();
            report::report(&log, &cats, since, until, top)?
        }
        LogAccess::Remote(remote) => runtime()?.block_on(remote.report(req))?,
    };
    let mut out = std::io::stdout().lock();
    match format {
        "json" => writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?,
        _ => report::print_table(&mut out, &r)?,
    }
    Ok(())
}
