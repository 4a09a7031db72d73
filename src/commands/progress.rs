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

/// The display of a running backup, fed by [`watch_backup`].
pub fn backup_bar(out: Output, estimated_rows: Option<u64>) -> ProgressBar {
    if out.quiet {
        return ProgressBar::hidden();
    }
    let (bar, template) = match estimated_rows {
        Some(rows) if rows > 0 => (
            ProgressBar::new(rows),
            "{spinner} [{bar:25}] {human_pos}/~{human_len} rows, {msg}, ETA {eta} ({elapsed})",
        ),
        _ => (
            ProgressBar::new_spinner(),
            "{spinner} {human_pos} rows, {msg} ({elapsed})",
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
        let started = std::time::Instant::now();
        loop {
            let row = crate::db::backups::get(&pool, &uuid).await.ok().flatten();
            let done = match &data {
                Ok(prefix) => storage.list(prefix).await.map_or(0, |k| k.len()),
                Err(_) => 0,
            };
            if let Some(row) = row {
                let rows = u64::try_from(row.rows_written).unwrap_or(0);
                let bytes = u64::try_from(row.bytes_written).unwrap_or(0);
                let tables_done = done.min(tables);
                let stage = if tables > 0 && tables_done == tables {
                    // Every data file is written: the backup is being read back.
                    bar.set_position(bar.length().unwrap_or(rows).max(rows));
                    "verifying".to_owned()
                } else {
                    bar.set_position(rows);
                    let rate = rows as f64 / started.elapsed().as_secs_f64().max(0.001);
                    format!("{} rows/s", human_count(rate))
                };
                bar.set_message(format!(
                    "tables {tables_done}/{tables}, {}, {stage}",
                    super::format::size(bytes)
                ));
            }
            tokio::time::sleep(TICK * 2).await;
        }
    })
}

/// `12345.6` → `12.3k`.
fn human_count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}
