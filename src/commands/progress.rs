//! Progress on the terminal (stderr), hidden with `--quiet`/`--json` or when stderr is not a
//! terminal (indicatif's stderr target checks that itself).
//!
//! The engines already publish their progress where every replica can read it — a backup's row
//! (`bytes_written`, `rows_written`, refreshed every [`crate::backup::PROGRESS_EVERY`]) and its
//! committed data files in storage — so the display polls those instead of threading a
//! callback through the use cases.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::Output;
use crate::startup::AppState;

/// How often the display refreshes.
const TICK: Duration = Duration::from_millis(250);

/// A spinner with elapsed time and a phase message (verify, restore, drill).
pub fn spinner(out: Output, message: &str) -> ProgressBar {
    if out.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(TICK);
    bar
}

/// The display of a running backup, fed by [`watch_backup`].
pub fn backup_bar(out: Output, estimated_rows: Option<u64>) -> ProgressBar {
    if out.quiet {
        return ProgressBar::hidden();
    }
    let (bar, template) = match estimated_rows {
        Some(rows) if rows > 0 => (
            ProgressBar::new(rows),
            "{spinner} [{bar:25}] {human_pos}/~{human_len} rows, {msg}, {per_sec}, ETA {eta} ({elapsed})",
        ),
        _ => (
            ProgressBar::new_spinner(),
            "{spinner} {human_pos} rows, {msg}, {per_sec} ({elapsed})",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(TICK);
    bar
}

/// Polls backup `uuid`'s row and its committed data files until aborted.
pub fn watch_backup(
    state: &AppState,
    uuid: &str,
    tables: usize,
    bar: ProgressBar,
) -> tokio::task::JoinHandle<()> {
    let (pool, storage) = (state.pool.clone(), state.storage.clone());
    let uuid = uuid.to_owned();
    tokio::spawn(async move {
        if bar.is_hidden() {
            return;
        }
        let data = crate::artifact::prefix(&uuid).and_then(|p| p.join("data"));
        loop {
            let row = crate::db::backups::get(&pool, &uuid).await.ok().flatten();
            let done = match &data {
                Ok(prefix) => storage.list(prefix).await.map_or(0, |k| k.len()),
                Err(_) => 0,
            };
            if let Some(row) = row {
                bar.set_position(u64::try_from(row.rows_written).unwrap_or(0));
                bar.set_message(format!(
                    "tables {}/{tables}, {}",
                    done.min(tables),
                    super::format::size(u64::try_from(row.bytes_written).unwrap_or(0))
                ));
            }
            tokio::time::sleep(TICK * 2).await;
        }
    })
}
