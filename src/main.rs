//! The `dnsguard` binary: parses the command line and hands over to the library.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use dnsguard::cli::{Cli, Command, ConfigAction, ListsAction};
use dnsguard::config::{Config, EMBEDDED_DEFAULT};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // reqwest and hickory use rustls with the ring provider (no aws-lc: it breaks the
    // aarch64 cross-build); it must be installed before any TLS client is made.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
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
        .build()?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let cfg = load(&config)?;
            dnsguard::init_tracing(&cfg.server.log);
            runtime()?.block_on(dnsguard::app::serve(cfg, config))
        }
        Command::Check {
            name,
            client,
            qtype,
            config,
        } => {
            let cfg = load(&config)?;
            dnsguard::init_tracing("warn");
            let lists = dnsguard::lists::Lists::new(&cfg.server.data_dir, &cfg.list_updates)?;
            let filter = dnsguard::app::compile_filter_blocking(&cfg, &lists)?;
            let qtype = dnsguard::dns::parse_qtype(&qtype)?;
            let name = dnsguard::filter::name::normalize(&name)
                .map_err(|e| anyhow::anyhow!("{name:?} is not a valid name: {e}"))?;
            let verdict = filter.check(client, &name, qtype);
            let texts = dnsguard::app::read_texts(&cfg, &lists);
            let refs: Vec<_> = texts
                .iter()
                .map(|(name, text)| dnsguard::filter::ListText { name, text })
                .collect();
            println!("{name}: {}", filter.explain(&verdict, &refs));
            Ok(())
        }
        Command::Lists {
            action: ListsAction::Update { config },
        } => {
            let cfg = load(&config)?;
            dnsguard::init_tracing("warn");
            let lists = Arc::new(dnsguard::lists::Lists::new(
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
            let filter = dnsguard::app::compile_filter_blocking(&cfg, &lists)?;
            for s in filter.list_stats() {
                let state = match (s.enabled, s.missing) {
                    (false, _) => "disabled",
                    (true, true) => "missing",
                    (true, false) => "loaded",
                };
                println!(
                    "{:<24} {:<8} {:>9} entries {:>7} invalid",
                    s.name, state, s.entries, s.invalid
                );
                for (line, reason) in s.invalid_samples.iter().take(3) {
                    println!("    line {line}: {reason}");
                }
            }
            Ok(())
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
