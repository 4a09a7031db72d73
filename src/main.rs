//! The `riveredge-backup` binary: parse the command line and run it; everything else (settings,
//! logging, the commands and their exit codes) lives in the library's `commands`.

use clap::Parser;
use riveredge_backup::cli::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    riveredge_backup::commands::run(Cli::parse()).await
}
