//! The backup policy: how long backups are kept and when scheduled ones run. Platform admins
//! edit it through the REST API; the scheduler and retention read it with [`load`].
//!
//! Stored as one row of `root_data_backup_policy`; without a row the defaults apply, which are
//! the RiverEdge plan's (riveredge.md §6: full daily at 02:00 kept 7 days, incremental hourly
//! kept a day, never fewer than 10 backups).

use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

/// The policy, as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupPolicy {
    /// Full backups older than this many days may be removed (1..=3650).
    pub retention_days_full: i32,
    /// Incremental backups older than this many days may be removed (1..=3650).
    pub retention_days_incremental: i32,
    /// The newest this-many successful backups are always kept, whatever their age (0..=1000).
    pub min_keep: i32,
    /// When scheduled full backups run: a 5-field cron expression (UTC).
    pub full_cron: String,
    /// When scheduled incremental backups run; `null`: never.
    pub incremental_cron: Option<String>,
}

impl Default for BackupPolicy {
    fn default() -> Self {
        Self {
            retention_days_full: 7,
            retention_days_incremental: 1,
            min_keep: 10,
            full_cron: "0 2 * * *".to_owned(),
            incremental_cron: Some("0 * * * *".to_owned()),
        }
    }
}

/// A field that does not hold a valid value, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub field: &'static str,
    pub message: String,
}

impl BackupPolicy {
    /// Every problem at once (the API reports them all).
    ///
    /// # Errors
    /// The fields that are out of range or not cron expressions.
    pub fn validate(&self) -> Result<(), Vec<PolicyProblem>> {
        let mut problems = Vec::new();
        let mut range = |field, value: i32, min, max| {
            if !(min..=max).contains(&value) {
                problems.push(PolicyProblem {
                    field,
                    message: format!("must be from {min} to {max}"),
                });
            }
        };
        range("retention_days_full", self.retention_days_full, 1, 3650);
        range(
            "retention_days_incremental",
            self.retention_days_incremental,
            1,
            3650,
        );
        range("min_keep", self.min_keep, 0, 1000);
        if let Err(message) = check_cron(&self.full_cron) {
            problems.push(PolicyProblem {
                field: "full_cron",
                message,
            });
        }
        if let Some(Err(message)) = self.incremental_cron.as_deref().map(check_cron) {
            problems.push(PolicyProblem {
                field: "incremental_cron",
                message,
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// A 5-field cron expression (minute hour day-of-month month day-of-week) made of numbers in
/// range, `*`, lists, ranges and steps: what Inngest accepts, minus names and `TZ=`.
fn check_cron(expr: &str) -> Result<(), String> {
    const FIELDS: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of month", 1, 31),
        ("month", 1, 12),
        ("day of week", 0, 7),
    ];
    let parts: Vec<&str> = expr.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!(
            "{expr:?} must have 5 fields (minute hour day-of-month month day-of-week)"
        ));
    }
    for (part, (name, min, max)) in parts.iter().zip(FIELDS) {
        let number = |s: &str| {
            s.parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| format!("{name} {s:?} must be a number from {min} to {max}"))
        };
        for item in part.split(',') {
            let (base, step) = match item.split_once('/') {
                Some((base, step)) => (base, Some(step)),
                None => (item, None),
            };
            if let Some(step) = step {
                if !step.parse::<u32>().is_ok_and(|s| s >= 1 && s <= max.max(1)) {
                    return Err(format!("{name} step {step:?} is not valid"));
                }
            }
            match base.split_once('-') {
                _ if base == "*" => {}
                Some((a, b)) => {
                    if number(a)? > number(b)? {
                        return Err(format!("{name} range {base:?} is reversed"));
                    }
                }
                None => {
                    number(base)?;
                }
            }
        }
    }
    Ok(())
}

/// The policy in force (the defaults when none was saved).
///
/// # Errors
/// Database errors.
pub async fn load(db: impl PgExecutor<'_>) -> Result<BackupPolicy, sqlx::Error> {
    let row: Option<(i32, i32, i32, String, Option<String>)> = sqlx::query_as(
        "SELECT retention_days_full, retention_days_incremental, min_keep, full_cron, incremental_cron
         FROM root_data_backup_policy WHERE id = 1",
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map_or_else(BackupPolicy::default, |r| BackupPolicy {
        retention_days_full: r.0,
        retention_days_incremental: r.1,
        min_keep: r.2,
        full_cron: r.3,
        incremental_cron: r.4,
    }))
}

/// Saves a validated policy; `by` is who saved it (audit).
///
/// # Errors
/// Database errors (including the table's CHECK constraints).
pub async fn save(
    db: impl PgExecutor<'_>,
    policy: &BackupPolicy,
    by: &str,
) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query(
        "INSERT INTO root_data_backup_policy
             (id, retention_days_full, retention_days_incremental, min_keep, full_cron, incremental_cron, updated_by)
         VALUES (1, $1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET
             retention_days_full = EXCLUDED.retention_days_full,
             retention_days_incremental = EXCLUDED.retention_days_incremental,
             min_keep = EXCLUDED.min_keep, full_cron = EXCLUDED.full_cron,
             incremental_cron = EXCLUDED.incremental_cron, updated_by = EXCLUDED.updated_by,
             updated_at = now()",
    )
    .bind(policy.retention_days_full)
    .bind(policy.retention_days_incremental)
    .bind(policy.min_keep)
    .bind(policy.full_cron.trim())
    .bind(policy.incremental_cron.as_deref().map(str::trim))
    .bind(by)
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(BackupPolicy::default().validate(), Ok(()));
    }

    #[test]
    fn cron_expressions_are_checked_field_by_field() {
        for ok in ["0 2 * * *", "*/15 * * * *", "0 0-6,22 1 1-12/2 0-7"] {
            assert_eq!(check_cron(ok), Ok(()), "{ok}");
        }
        for bad in [
            "0 2 * *",
            "60 * * * *",
            "0 24 * * *",
            "a * * * *",
            "5-1 * * * *",
            "*/0 * * * *",
        ] {
            assert!(check_cron(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_bad_field_is_reported() {
        let policy = BackupPolicy {
            retention_days_full: 0,
            min_keep: -1,
            full_cron: "x".into(),
            ..BackupPolicy::default()
        };
        let fields: Vec<_> = policy
            .validate()
            .unwrap_err()
            .iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(fields, ["retention_days_full", "min_keep", "full_cron"]);
    }
}
