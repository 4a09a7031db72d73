//! Logging: `tracing` with an env filter (`RUST_LOG`), pretty or JSON output.

use tracing_subscriber::{fmt, EnvFilter};

use crate::settings::LogFormat;

const DEFAULT_FILTER: &str = "riveredge_backup=info,inngest=info,tower_http=info";

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops), which
/// is what tests need.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Logs go to stderr (stdout carries command output such as a new backup's uuid); colours only
    // for a terminal, never into log files or collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// Tests log only when `TEST_LOG` is set, so a failing test's output stays readable.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init(LogFormat::Pretty);
    }
}
