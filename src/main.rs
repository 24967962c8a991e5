//! The `dnsguard` binary: parses the command line and hands over to the library.

use clap::Parser;
use dnsguard::cli::{Cli, Command, ConfigAction};
use dnsguard::config::{Config, EMBEDDED_DEFAULT};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let cfg = match &config {
                Some(path) => Config::load(path)?,
                None => Config::embedded()?,
            };
            dnsguard::init_tracing(&cfg.server.log);
            let _ = rustls::crypto::ring::default_provider().install_default();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(dnsguard::app::serve(cfg))
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
