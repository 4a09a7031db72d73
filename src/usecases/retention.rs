//! Retention: which backups the policy lets go, and letting them go (the `backup-retention`
//! cron function and `riveredge-backup prune [--dry-run]`).
//!
//! [`plan`] is pure: every backup gets a verdict and the reason for it. A backup is kept when
//! any rule keeps it, in this order:
//! - it is in progress (`pending`, `running`), or a restore needs it (the safety backup of a
//!   restore younger than the full retention, or the source of a restore in progress);
//! - it is the newest successful backup of its scope (scope, tenant, tables), or among the
//!   newest `min_keep` successful ones;
//! - it is younger than its type's retention (`retention_days_full`, `retention_days_incremental`);
//! - it is the newest full of one of the last `keep_daily` days, `keep_weekly` ISO weeks,
//!   `keep_monthly` months or `keep_yearly` years (GFS tiers, in UTC);
//! - a kept backup builds on it (its `parent_uuid`, transitively): a chain expires as a whole
//!   and an incremental is never orphaned.
//!
//! A failed backup has no files; its row is kept as long as a full would be, for the record.
//!
//! [`prune`] carries the plan out, newest first so an incremental goes before what it builds
//! on. The row is soft-deleted first, guarded so that it fails when a live row that is not a
//! failure names the backup as its parent (an incremental that started since the plan) or a
//! restore is reading it (a failed incremental restores nothing, so it holds nothing); then
//! its files go, manifest first, so a half-deleted backup never looks complete. A crash in
//! between leaves files without a live row, which the reaper's orphan sweep removes.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::BackupPolicy;
use crate::startup::AppState;

/// A backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Candidate {
    pub uuid: String,
    pub name: String,
    pub tenant_id: Option<i32>,
    pub backup_scope: String,
    pub backup_tables: Option<Vec<String>>,
    pub backup_type: String,
    pub status: String,
    /// When the backup was taken: its cron tick, else its start, else its creation.
    pub taken_at: DateTime<Utc>,
    pub parent_uuid: Option<String>,
}

/// Keep or delete, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Keep,
    Delete,
}

/// One backup's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub backup: Candidate,
    pub verdict: Verdict,
    pub reason: String,
}

/// What a pass did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Every backup's verdict, newest first.
    pub decisions: Vec<Decision>,
    /// Backups soft-deleted by this pass (none when dry).
    pub deleted: Vec<String>,
    /// Backups planned for deletion that were left, and why (a new incremental builds on one,
    /// a restore reads it, its files could not be removed).
    pub skipped: Vec<(String, String)>,
}

impl PruneReport {
    pub fn to_delete(&self) -> impl Iterator<Item = &Decision> {
        self.decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Delete)
    }
}

type GroupKey = (String, Option<i32>, Option<Vec<String>>);

fn group_of(c: &Candidate) -> GroupKey {
    let mut tables = c.backup_tables.clone();
    if let Some(t) = tables.as_mut() {
        t.sort();
    }
    (c.backup_scope.clone(), c.tenant_id, tables)
}

/// The verdict on every backup (`protected`: uuid → why a restore needs it). Newest first.
pub fn plan(
    backups: &[Candidate],
    policy: &BackupPolicy,
    now: DateTime<Utc>,
    protected: &HashMap<String, String>,
) -> Vec<Decision> {
    let days = |n: i32| chrono::Duration::days(i64::from(n));
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then(b.uuid.cmp(&a.uuid)));

    let mut keep: HashMap<&str, String> = HashMap::new();
    let mut rank: HashMap<GroupKey, i32> = HashMap::new();
    // GFS: per group and tier, the buckets already given a full.
    let mut tiers: HashMap<(GroupKey, &'static str), HashSet<String>> = HashMap::new();
    for c in &sorted {
        let age = now - c.taken_at;
        let reason = match c.status.as_str() {
            "pending" | "running" => Some(format!("{} (in progress)", c.status)),
            _ if protected.contains_key(&c.uuid) => protected.get(&c.uuid).cloned(),
            "success" => {
                let group = group_of(c);
                let n = rank.entry(group.clone()).or_insert(0);
                *n += 1;
                let full = c.backup_type == "full";
                // Every full counts for the tiers, also one kept by another rule: a tier keeps
                // the newest full of each period, whichever rule already keeps it.
                let tier = if full {
                    gfs_tier(c, policy, &group, &mut tiers)
                } else {
                    None
                };
                let limit = if full {
                    policy.retention_days_full
                } else {
                    policy.retention_days_incremental
                };
                if *n == 1 {
                    Some("the newest successful backup of its scope".to_owned())
                } else if *n <= policy.min_keep {
                    Some(format!(
                        "among the newest {} successful backups of its scope",
                        policy.min_keep
                    ))
                } else if age < days(limit) {
                    Some(format!("{} younger than {limit} day(s)", c.backup_type))
                } else {
                    tier
                }
            }
            _ if age < days(policy.retention_days_full) => Some(format!(
                "{} less than {} day(s) ago (kept for the record)",
                c.status, policy.retention_days_full
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            keep.insert(&c.uuid, reason);
        }
    }

    // Chains: whatever a kept, restorable backup builds on stays (transitively).
    let by_uuid: HashMap<&str, &Candidate> = sorted.iter().map(|c| (c.uuid.as_str(), *c)).collect();
    let roots: Vec<&Candidate> = sorted
        .iter()
        .filter(|c| keep.contains_key(c.uuid.as_str()) && c.status != "failed")
        .copied()
        .collect();
    for kept in roots {
        let mut child = kept;
        while let Some(parent) = child.parent_uuid.as_deref().and_then(|p| by_uuid.get(p)) {
            if keep.contains_key(parent.uuid.as_str()) {
                break; // its own ancestors were (or will be) walked from it
            }
            keep.insert(
                &parent.uuid,
                format!("{} {} builds on it", child.backup_type, child.uuid),
            );
            child = parent;
        }
    }

    sorted
        .into_iter()
        .map(|c| {
            let (verdict, reason) = match keep.get(c.uuid.as_str()) {
                Some(reason) => (Verdict::Keep, reason.clone()),
                None => (Verdict::Delete, expiry_reason(c, policy)),
            };
            Decision {
                backup: c.clone(),
                verdict,
                reason,
            }
        })
        .collect()
}

fn expiry_reason(c: &Candidate, policy: &BackupPolicy) -> String {
    match (c.status.as_str(), c.backup_type.as_str()) {
        ("success", "full") => format!(
            "full older than {} day(s), outside min_keep and the GFS tiers",
            policy.retention_days_full
        ),
        ("success", _) => format!(
            "incremental older than {} day(s), outside min_keep, and no kept backup builds on it",
            policy.retention_days_incremental
        ),
        (status, _) => format!(
            "{status} more than {} day(s) ago",
            policy.retention_days_full
        ),
    }
}

/// The GFS tier that keeps this full, if any: it is the newest full of a day, week, month or
/// year that is among the tier's newest N such periods.
fn gfs_tier(
    c: &Candidate,
    policy: &BackupPolicy,
    group: &GroupKey,
    tiers: &mut HashMap<(GroupKey, &'static str), HashSet<String>>,
) -> Option<String> {
    let t = c.taken_at;
    let week = t.iso_week();
    let candidates = [
        ("daily", policy.keep_daily, t.format("%Y-%m-%d").to_string()),
        (
            "weekly",
            policy.keep_weekly,
            format!("{}-W{:02}", week.year(), week.week()),
        ),
        (
            "monthly",
            policy.keep_monthly,
            t.format("%Y-%m").to_string(),
        ),
        ("yearly", policy.keep_yearly, t.format("%Y").to_string()),
    ];
    let mut kept_by = None;
    for (tier, n, bucket) in candidates {
        if n <= 0 {
            continue;
        }
        let seen = tiers.entry((group.clone(), tier)).or_default();
        // Newest first: the first full met in a bucket is that bucket's newest.
        if !seen.contains(&bucket) && seen.len() < usize::try_from(n).unwrap_or(0) {
            seen.insert(bucket.clone());
            kept_by.get_or_insert_with(|| format!("GFS {tier} {bucket}"));
        }
    }
    kept_by
}

/// Plans against the database now, and unless `dry_run`, deletes what the plan lets go.
///
/// # Errors
/// Database errors (storage errors are per backup, in [`PruneReport::skipped`]).
pub async fn prune(
    state: &AppState,
    policy: &BackupPolicy,
    dry_run: bool,
) -> Result<PruneReport, sqlx::Error> {
    // language=PostgreSQL
    let backups: Vec<Candidate> = sqlx::query_as(
        "SELECT uuid, name, tenant_id, backup_scope, backup_tables, backup_type, status,
                coalesce(scheduled_for, started_at, created_at) AS taken_at, parent_uuid
         FROM root_data_backups WHERE deleted_at IS NULL",
    )
    .fetch_all(&state.pool)
    .await?;
    let protected = protected_by_restores(&state.pool, policy).await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&state.pool)
        .await?;
    let decisions = plan(&backups, policy, now, &protected);
    let mut report = PruneReport {
        dry_run,
        decisions,
        ..PruneReport::default()
    };
    if dry_run {
        return Ok(report);
    }
    let doomed: Vec<String> = report.to_delete().map(|d| d.backup.uuid.clone()).collect();
    for uuid in doomed {
        match delete_one(state, &uuid).await? {
            Ok(()) => report.deleted.push(uuid),
            Err(why) => report.skipped.push((uuid, why)),
        }
    }
    if !report.deleted.is_empty() || !report.skipped.is_empty() {
        tracing::info!(
            deleted = report.deleted.len(),
            skipped = ?report.skipped,
            "retention pruned expired backups"
        );
    }
    crate::metrics::retention_deleted(report.deleted.len());
    Ok(report)
}

/// Backups a restore needs: the safety backups of restores younger than the full retention
/// (the operator may want to undo them) and the sources of restores in progress.
async fn protected_by_restores(
    pool: &sqlx::PgPool,
    policy: &BackupPolicy,
) -> Result<HashMap<String, String>, sqlx::Error> {
    // language=PostgreSQL
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT safety_backup_uuid, 'safety backup of restore ' || uuid || ' (less than ' || $1 || ' day(s) old)'
         FROM root_data_restores
         WHERE safety_backup_uuid IS NOT NULL AND created_at > now() - make_interval(days => $1)
         UNION ALL
         SELECT backup_uuid, 'restore ' || uuid || ' in progress reads it'
         FROM root_data_restores WHERE status IN ('pending', 'running')",
    )
    .bind(policy.retention_days_full)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect())
}

/// Soft-deletes one backup (guarded) and removes its files, manifest first. `Err(why)` when it
/// was left.
async fn delete_one(state: &AppState, uuid: &str) -> Result<Result<(), String>, sqlx::Error> {
    // language=PostgreSQL
    let deleted = sqlx::query(
        "UPDATE root_data_backups b SET deleted_at = now(), updated_at = now()
         WHERE b.uuid = $1 AND b.deleted_at IS NULL AND b.status IN ('success', 'failed')
           AND NOT EXISTS (SELECT 1 FROM root_data_backups c
                           WHERE c.parent_uuid = b.uuid AND c.deleted_at IS NULL
                             AND c.status <> 'failed')
           AND NOT EXISTS (SELECT 1 FROM root_data_restores r
                           WHERE r.backup_uuid = b.uuid AND r.status IN ('pending', 'running'))",
    )
    .bind(uuid)
    .execute(&state.pool)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Ok(Err(
            "changed since the plan: a live backup builds on it, a restore reads it, or it is gone"
                .to_owned(),
        ));
    }
    Ok(remove_files(state, uuid)
        .await
        .map_err(|e| format!("row deleted, files left for the reaper's orphan sweep: {e}")))
}

async fn remove_files(state: &AppState, uuid: &str) -> anyhow::Result<()> {
    let prefix = crate::artifact::prefix(uuid)?;
    let manifest = prefix.join(crate::artifact::MANIFEST_FILE)?;
    state.storage.delete_prefix(&manifest).await?;
    state.storage.delete_prefix(&prefix).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours_ago: i64) -> DateTime<Utc> {
        now() - chrono::Duration::hours(hours_ago)
    }

    fn now() -> DateTime<Utc> {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    fn backup(uuid: &str, kind: &str, hours_ago: i64, parent: Option<&str>) -> Candidate {
        Candidate {
            uuid: uuid.to_owned(),
            name: uuid.to_owned(),
            tenant_id: None,
            backup_scope: "all".to_owned(),
            backup_tables: None,
            backup_type: kind.to_owned(),
            status: "success".to_owned(),
            taken_at: at(hours_ago),
            parent_uuid: parent.map(str::to_owned),
        }
    }

    fn deleted(decisions: &[Decision]) -> Vec<&str> {
        let mut out: Vec<&str> = decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Delete)
            .map(|d| d.backup.uuid.as_str())
            .collect();
        out.sort_unstable();
        out
    }

    fn policy() -> BackupPolicy {
        BackupPolicy {
            min_keep: 0,
            ..BackupPolicy::default()
        }
    }

    #[test]
    fn old_fulls_and_incrementals_go_young_ones_stay() {
        let history = [
            backup("f-old", "full", 8 * 24, None),
            backup("f-mid", "full", 3 * 24, None),
            backup("i-old", "incremental", 3 * 24 - 1, Some("f-mid")),
            backup("f-new", "full", 2, None),
            backup("i-new", "incremental", 1, Some("f-new")),
        ];
        let decisions = plan(&history, &policy(), now(), &HashMap::new());
        assert_eq!(deleted(&decisions), ["f-old", "i-old"]);
    }

    #[test]
    fn a_kept_incremental_keeps_its_whole_chain() {
        let history = [
            backup("f", "full", 9 * 24, None),
            backup("i1", "incremental", 9 * 24 - 1, Some("f")),
            backup("i2", "incremental", 9 * 24 - 2, Some("i1")),
            backup("i3", "incremental", 2, Some("i2")),
        ];
        let decisions = plan(&history, &policy(), now(), &HashMap::new());
        assert_eq!(deleted(&decisions), Vec::<&str>::new());
        let reason = &decisions
            .iter()
            .find(|d| d.backup.uuid == "f")
            .unwrap()
            .reason;
        assert!(reason.contains("i1 builds on it"), "{reason}");
    }

    #[test]
    fn the_newest_success_of_each_scope_and_min_keep_survive_any_age() {
        let mut tenant = backup("t-only", "full", 400 * 24, None);
        tenant.backup_scope = "tenant".into();
        tenant.tenant_id = Some(5);
        let mut failed = backup("all-failed", "full", 1, None);
        failed.status = "failed".into();
        let history = [
            tenant,
            failed,
            backup("all-1", "full", 30 * 24, None),
            backup("all-2", "full", 31 * 24, None),
            backup("all-3", "full", 32 * 24, None),
        ];
        let decisions = plan(&history, &policy(), now(), &HashMap::new());
        assert_eq!(deleted(&decisions), ["all-2", "all-3"]);
        let two = BackupPolicy {
            min_keep: 2,
            ..policy()
        };
        assert_eq!(
            deleted(&plan(&history, &two, now(), &HashMap::new())),
            ["all-3"]
        );
    }

    #[test]
    fn gfs_tiers_keep_the_newest_full_of_each_period() {
        // Daily fulls at 02:00 for 60 days, plus a second full on one day.
        let mut history: Vec<Candidate> = (0..60)
            .map(|d| backup(&format!("d{d:02}"), "full", d * 24 + 10, None))
            .collect();
        history.push(backup("d20-early", "full", 20 * 24 + 11, None));
        let gfs = BackupPolicy {
            keep_daily: 10,
            keep_weekly: 4,
            keep_monthly: 3,
            ..policy()
        };
        let decisions = plan(&history, &gfs, now(), &HashMap::new());
        let kept: Vec<&str> = decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Keep)
            .map(|d| d.backup.uuid.as_str())
            .collect();
        // now = Tue 2026-12-01 12:00; d = day offset, taken at 02:00.
        // 7 days by age (d00..d06); daily: the newest 10 days (d00..d09, all inside already
        // or added); weekly: newest full of the 4 newest ISO weeks (W49: d00, W48: d02 — Sun
        // Nov 29, W47: d09, W46: d16); monthly: Dec (d00), Nov (d01), Oct (d31).
        let mut expected: Vec<String> = (0..10).map(|d| format!("d{d:02}")).collect();
        expected.extend(["d16", "d31"].map(str::to_owned));
        let mut kept_sorted: Vec<String> = kept.iter().map(|s| (*s).to_owned()).collect();
        kept_sorted.sort();
        expected.sort();
        assert_eq!(kept_sorted, expected);
        assert!(decisions
            .iter()
            .any(|d| d.backup.uuid == "d31" && d.reason == "GFS monthly 2026-10"));
        assert!(deleted(&decisions).contains(&"d20-early"));
    }

    #[test]
    fn restores_protect_their_backups_and_in_progress_rows_stay() {
        let mut running = backup("run", "incremental", 50, Some("base"));
        running.status = "running".into();
        let history = [
            backup("safety", "full", 20 * 24, None),
            backup("base", "full", 20 * 24 + 1, None),
            backup("new", "full", 1, None),
            running,
        ];
        let protected =
            HashMap::from([("safety".to_owned(), "safety backup of restore r".to_owned())]);
        let decisions = plan(&history, &policy(), now(), &protected);
        assert_eq!(deleted(&decisions), Vec::<&str>::new());
    }
}
