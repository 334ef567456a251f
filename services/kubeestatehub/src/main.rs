//! Entry point of the `kubeestatehub` binary: parses the command line and hands over to
//! [`kubeestatehub::run`].

use clap::Parser;

/// mimalloc: measurably less CPU than glibc's allocator for this process's many small,
/// short-lived allocations (`bench/RESULTS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = kubeestatehub::cli::Cli::parse();
    match kubeestatehub::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "exiting");
            eprintln!("kubeestatehub: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
