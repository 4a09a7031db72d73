//! Logging: `tracing` with an env filter (`RUST_LOG`), pretty or JSON output.

use tracing_subscriber::{fmt, EnvFilter};

use crate::settings::LogFormat;

const DEFAULT_FILTER: &str = "riveredge_backup=info,inngest=info,tower_http=info";

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops), which
/// is what tests need.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = fmt().with_env_filter(filter).with_target(true);
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
