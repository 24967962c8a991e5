//! The `dnsguard` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    dnsguard::memory::limit_arenas();
    let cli = dnsguard::cli::Cli::parse();
    // reqwest and hickory use rustls with the ring provider (no aws-lc: it breaks the
    // aarch64 cross-build); it must be installed before any TLS client is made.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match dnsguard::commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
