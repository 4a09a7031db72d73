//! The backup policy: how long backups are kept and when scheduled ones run. Platform admins
//! edit it through the REST API; the scheduler, retention and the reaper read the *effective*
//! policy with [`load_effective`].
//!
//! Stored as one row of `root_data_backup_policy`; without a row the defaults apply, which are
//! the RiverEdge plan's (riveredge.md §6: full daily at 02:00 kept 7 days, incremental hourly
//! kept a day, never fewer than 10 backups). RiverEdge's own settings page keeps `backup.*`
//! keys in `core_system_parameters`; where that table exists its active platform-wide keys
//! override the stored policy one by one, each validated: a bad value is reported and ignored
//! (the value before it stays in force).

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
    /// The time zone the crons are read in (IANA name such as `Asia/Shanghai`; `UTC`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Grandfather-father-son tiers: the newest full of each of the last N days, ISO weeks,
    /// months and years is kept whatever its age (0: tier off).
    #[serde(default)]
    pub keep_daily: i32,
    #[serde(default)]
    pub keep_weekly: i32,
    #[serde(default)]
    pub keep_monthly: i32,
    #[serde(default)]
    pub keep_yearly: i32,
    /// Scheduled backups also take one tenant-scoped backup per active tenant.
    #[serde(default)]
    pub tenant_fanout: bool,
    /// A backup or restore whose progress has not moved for this many minutes is failed
    /// (1..=110, below Inngest's 2 h limit on one call).
    #[serde(default = "default_stall_minutes")]
    pub stall_minutes: i32,
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

fn default_stall_minutes() -> i32 {
    10
}

impl Default for BackupPolicy {
    fn default() -> Self {
        Self {
            retention_days_full: 7,
            retention_days_incremental: 1,
            min_keep: 10,
            full_cron: "0 2 * * *".to_owned(),
            incremental_cron: Some("0 * * * *".to_owned()),
            timezone: default_timezone(),
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_yearly: 0,
            tenant_fanout: false,
            stall_minutes: default_stall_minutes(),
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
        range("keep_daily", self.keep_daily, 0, 3650);
        range("keep_weekly", self.keep_weekly, 0, 520);
        range("keep_monthly", self.keep_monthly, 0, 240);
        range("keep_yearly", self.keep_yearly, 0, 100);
        range("stall_minutes", self.stall_minutes, 1, 110);
        if let Err(message) = check_timezone(&self.timezone) {
            problems.push(PolicyProblem {
                field: "timezone",
                message,
            });
        }
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

impl BackupPolicy {
    /// The full backup's cron as Inngest takes it (`TZ=Asia/Shanghai 0 2 * * *`).
    pub fn full_schedule(&self) -> String {
        self.with_timezone(&self.full_cron)
    }

    /// The incremental backup's cron as Inngest takes it, when there is one.
    pub fn incremental_schedule(&self) -> Option<String> {
        self.incremental_cron
            .as_deref()
            .map(|cron| self.with_timezone(cron))
    }

    /// Any cron of ours in the policy's time zone.
    pub fn with_timezone(&self, cron: &str) -> String {
        if self.timezone == "UTC" {
            cron.trim().to_owned()
        } else {
            format!("TZ={} {}", self.timezone, cron.trim())
        }
    }

    /// The stall limit as a duration.
    pub fn stall_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::try_from(self.stall_minutes.max(1)).unwrap_or(10) * 60)
    }
}

/// An IANA time zone name as Inngest's cron parser takes it after `TZ=`: `UTC` or
/// `Area/Location` made of letters, digits, `_`, `-` and `+`. (The name is checked for shape;
/// a well-formed unknown zone is refused by Inngest at sync.)
fn check_timezone(tz: &str) -> Result<(), String> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
    };
    if tz == "UTC" || (tz.len() <= 64 && tz.contains('/') && tz.split('/').all(ok_part)) {
        Ok(())
    } else {
        Err(format!(
            "{tz:?} is not a time zone name (UTC or Area/Location, e.g. Asia/Shanghai)"
        ))
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
    Ok(sqlx::query_as::<_, PolicyRow>(
        "SELECT retention_days_full, retention_days_incremental, min_keep, full_cron, incremental_cron,
                timezone, keep_daily, keep_weekly, keep_monthly, keep_yearly, tenant_fanout, stall_minutes
         FROM root_data_backup_policy WHERE id = 1",
    )
    .fetch_optional(db)
    .await?
    .map_or_else(BackupPolicy::default, BackupPolicy::from))
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    retention_days_full: i32,
    retention_days_incremental: i32,
    min_keep: i32,
    full_cron: String,
    incremental_cron: Option<String>,
    timezone: String,
    keep_daily: i32,
    keep_weekly: i32,
    keep_monthly: i32,
    keep_yearly: i32,
    tenant_fanout: bool,
    stall_minutes: i32,
}

impl From<PolicyRow> for BackupPolicy {
    fn from(r: PolicyRow) -> Self {
        Self {
            retention_days_full: r.retention_days_full,
            retention_days_incremental: r.retention_days_incremental,
            min_keep: r.min_keep,
            full_cron: r.full_cron,
            incremental_cron: r.incremental_cron,
            timezone: r.timezone,
            keep_daily: r.keep_daily,
            keep_weekly: r.keep_weekly,
            keep_monthly: r.keep_monthly,
            keep_yearly: r.keep_yearly,
            tenant_fanout: r.tenant_fanout,
            stall_minutes: r.stall_minutes,
        }
    }
}

/// The policy in force and where each overridden value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectivePolicy {
    pub policy: BackupPolicy,
    /// `field → source` for every value not from the stored policy (or the defaults).
    pub overrides: Vec<(String, String)>,
    /// Parameters that were not applied, and why.
    pub problems: Vec<String>,
    /// `stored` (root_data_backup_policy) or `defaults`.
    pub base: &'static str,
}

/// The stored policy with `core_system_parameters` overrides applied (riveredge.md §6).
///
/// # Errors
/// Database errors.
pub async fn load_effective(db: &sqlx::PgPool) -> Result<EffectivePolicy, sqlx::Error> {
    let stored: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM root_data_backup_policy WHERE id = 1)")
            .fetch_one(db)
            .await?;
    let policy = load(db).await?;
    let table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('core_system_parameters')::text")
            .fetch_one(db)
            .await?;
    let params: Vec<(String, String)> = if table.is_some() {
        // language=PostgreSQL
        sqlx::query_as(
            "SELECT key::text, value::text FROM core_system_parameters
             WHERE key LIKE 'backup.%' AND tenant_id IS NULL AND deleted_at IS NULL
               AND coalesce(is_active, true)
             ORDER BY updated_at NULLS FIRST, key",
        )
        .fetch_all(db)
        .await?
    } else {
        Vec::new()
    };
    let mut effective = apply_parameters(policy, &params);
    effective.base = if stored { "stored" } else { "defaults" };
    Ok(effective)
}

/// Applies `backup.*` parameters one by one; a value that does not parse or makes the policy
/// invalid is reported and skipped.
pub fn apply_parameters(mut policy: BackupPolicy, params: &[(String, String)]) -> EffectivePolicy {
    let mut overrides = Vec::new();
    let mut problems = Vec::new();
    for (key, raw) in params {
        // Values are stored as JSON (`7`, `"0 2 * * *"`) or, by hand, as bare text.
        let value = match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::String(s)) => s,
            Ok(other) => other.to_string(),
            Err(_) => raw.trim().to_owned(),
        };
        let mut next = policy.clone();
        let int = |v: &str| {
            v.trim()
                .parse::<i32>()
                .map_err(|_| format!("{key} = {raw:?} is not a whole number"))
        };
        let applied: Result<&'static str, String> = match key.as_str() {
            "backup.retention.days" => int(&value).map(|n| {
                next.retention_days_full = n;
                "retention_days_full"
            }),
            "backup.retention.incremental_days" => int(&value).map(|n| {
                next.retention_days_incremental = n;
                "retention_days_incremental"
            }),
            "backup.retention.count" => int(&value).map(|n| {
                next.min_keep = n;
                "min_keep"
            }),
            "backup.retention.daily" => int(&value).map(|n| {
                next.keep_daily = n;
                "keep_daily"
            }),
            "backup.retention.weekly" => int(&value).map(|n| {
                next.keep_weekly = n;
                "keep_weekly"
            }),
            "backup.retention.monthly" => int(&value).map(|n| {
                next.keep_monthly = n;
                "keep_monthly"
            }),
            "backup.retention.yearly" => int(&value).map(|n| {
                next.keep_yearly = n;
                "keep_yearly"
            }),
            "backup.stall.minutes" => int(&value).map(|n| {
                next.stall_minutes = n;
                "stall_minutes"
            }),
            "backup.full.frequency" => {
                next.full_cron = value.trim().to_owned();
                Ok("full_cron")
            }
            "backup.incremental.frequency" => {
                next.incremental_cron = match value.trim() {
                    "" | "off" | "null" | "none" => None,
                    cron => Some(cron.to_owned()),
                };
                Ok("incremental_cron")
            }
            "backup.timezone" => {
                next.timezone = value.trim().to_owned();
                Ok("timezone")
            }
            "backup.tenant_fanout" => match value.trim() {
                "true" | "1" => {
                    next.tenant_fanout = true;
                    Ok("tenant_fanout")
                }
                "false" | "0" => {
                    next.tenant_fanout = false;
                    Ok("tenant_fanout")
                }
                _ => Err(format!("{key} = {raw:?} is not true or false")),
            },
            "backup.storage.dir" | "backup.timeout" => Err(format!(
                "{key} is not read from core_system_parameters: set BACKUP_STORAGE_DIR / BACKUP_STEP_TIMEOUT in the worker's settings"
            )),
            _ => Err(format!("{key} is not a backup policy parameter")),
        };
        match applied {
            Ok(field) => match next.validate() {
                Ok(()) => {
                    policy = next;
                    overrides.retain(|(f, _)| f != field);
                    overrides.push((field.to_owned(), format!("core_system_parameters {key}")));
                }
                Err(bad) => problems.extend(
                    bad.into_iter()
                        .map(|p| format!("{key} = {raw:?} ignored: {}: {}", p.field, p.message)),
                ),
            },
            Err(message) => problems.push(message),
        }
    }
    for problem in &problems {
        tracing::warn!(%problem, "a backup.* system parameter was not applied");
    }
    EffectivePolicy {
        policy,
        overrides,
        problems,
        base: "stored",
    }
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
             (id, retention_days_full, retention_days_incremental, min_keep, full_cron, incremental_cron, updated_by,
              timezone, keep_daily, keep_weekly, keep_monthly, keep_yearly, tenant_fanout, stall_minutes)
         VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (id) DO UPDATE SET
             retention_days_full = EXCLUDED.retention_days_full,
             retention_days_incremental = EXCLUDED.retention_days_incremental,
             min_keep = EXCLUDED.min_keep, full_cron = EXCLUDED.full_cron,
             incremental_cron = EXCLUDED.incremental_cron, updated_by = EXCLUDED.updated_by,
             timezone = EXCLUDED.timezone, keep_daily = EXCLUDED.keep_daily,
             keep_weekly = EXCLUDED.keep_weekly, keep_monthly = EXCLUDED.keep_monthly,
             keep_yearly = EXCLUDED.keep_yearly, tenant_fanout = EXCLUDED.tenant_fanout,
             stall_minutes = EXCLUDED.stall_minutes, updated_at = now()",
    )
    .bind(policy.retention_days_full)
    .bind(policy.retention_days_incremental)
    .bind(policy.min_keep)
    .bind(policy.full_cron.trim())
    .bind(policy.incremental_cron.as_deref().map(str::trim))
    .bind(by)
    .bind(policy.timezone.trim())
    .bind(policy.keep_daily)
    .bind(policy.keep_weekly)
    .bind(policy.keep_monthly)
    .bind(policy.keep_yearly)
    .bind(policy.tenant_fanout)
    .bind(policy.stall_minutes)
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

    #[test]
    fn crons_carry_the_time_zone() {
        let mut policy = BackupPolicy::default();
        assert_eq!(policy.full_schedule(), "0 2 * * *");
        policy.timezone = "Asia/Shanghai".into();
        assert_eq!(policy.full_schedule(), "TZ=Asia/Shanghai 0 2 * * *");
        assert_eq!(
            policy.incremental_schedule().as_deref(),
            Some("TZ=Asia/Shanghai 0 * * * *")
        );
        for bad in ["", "Asia Shanghai", "Asia/", "../etc", "TZ=UTC"] {
            policy.timezone = bad.into();
            assert!(policy.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn system_parameters_override_one_by_one_and_bad_values_are_reported_and_ignored() {
        let params = [
            ("backup.retention.days", "14"),
            ("backup.retention.count", "\"abc\""),
            ("backup.full.frequency", "\"0 3 * * *\""),
            ("backup.incremental.frequency", "61 * * * *"),
            ("backup.retention.weekly", "4"),
            ("backup.timezone", "\"Asia/Shanghai\""),
            ("backup.stall.minutes", "500"),
            ("backup.retention.days", "0"),
            ("backup.unknown", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let effective = apply_parameters(BackupPolicy::default(), &params);
        let p = &effective.policy;
        assert_eq!(p.retention_days_full, 14, "the later bad value keeps 14");
        assert_eq!(p.min_keep, 10);
        assert_eq!(p.full_cron, "0 3 * * *");
        assert_eq!(p.incremental_cron.as_deref(), Some("0 * * * *"));
        assert_eq!(p.keep_weekly, 4);
        assert_eq!(p.timezone, "Asia/Shanghai");
        assert_eq!(p.stall_minutes, 10);
        assert_eq!(effective.problems.len(), 5, "{:?}", effective.problems);
        assert!(effective
            .problems
            .iter()
            .any(|m| m.contains("backup.unknown")));
        let fields: Vec<_> = effective
            .overrides
            .iter()
            .map(|(f, _)| f.as_str())
            .collect();
        assert_eq!(
            fields,
            [
                "retention_days_full",
                "full_cron",
                "keep_weekly",
                "timezone"
            ]
        );
    }
}
