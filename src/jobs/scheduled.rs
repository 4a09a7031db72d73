//! The daily full backup (`0 2 * * *`, the design's `data-backup-full`).
//!
//! A cron tick is an event `inngest/scheduled.timer` whose id is the scheduled time, so the row
//! uuid derived from it makes a retried or duplicated tick one backup. The backup itself runs
//! through exactly the same steps as `backup/execute`.

use serde_json::Value;

use crate::jobs::backup_execute;
use crate::jobs::events::BackupEvent;
use crate::startup::AppState;

pub const SLUG: &str = "backup-daily-full";
pub const CRON: &str = "0 2 * * *";

/// # Errors
/// See [`backup_execute::run`].
pub async fn run(state: AppState, ctx: inngest::Ctx) -> Result<Value, inngest::Error> {
    let day = chrono::Utc::now().format("%Y%m%d");
    let event = BackupEvent {
        backup_scope: Some("all".to_owned()),
        backup_type: Some("full".to_owned()),
        name: Some(format!("scheduled-full-{day}")),
        ..BackupEvent::default()
    };
    backup_execute::run_event(state, ctx, event).await
}
