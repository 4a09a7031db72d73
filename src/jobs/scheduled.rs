//! The scheduled functions: the daily full backup (`backup-daily-full`, the design's
//! `data-backup-full`), the hourly incremental (`backup-hourly-incremental`) and retention
//! (`backup-retention`).
//!
//! Their crons come from the effective policy ([`crate::policy::load_effective`]) each time the
//! app is synced, so a changed schedule takes effect at the next sync, without a restart.
//!
//! A cron tick is an event `inngest/scheduled.timer` whose id is the scheduled time (RFC 3339).
//! The row's uuid derives from that tick (not from the run or the wall clock), and the row
//! records it in `scheduled_for`, so a retried, duplicated or rerun tick is one backup. The
//! backup itself runs through exactly the same steps as `backup/execute`.
//!
//! With the policy's `tenant_fanout`, a tick also creates one tenant-scoped backup per active
//! tenant of `TENANTS_TABLE` (rows whose `status` is `active`, or every row without a `status`
//! column) and sends one `backup/execute` per tenant with the row's uuid as event id, so a
//! repeated tick sends the same events and creates no second row.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::db::backups::{self as rows, NewBackup};
use crate::jobs::events::{BackupEvent, BackupRef};
use crate::jobs::{backup_execute, engine_error, step};
use crate::policy::BackupPolicy;
use crate::startup::AppState;

pub const SLUG: &str = "backup-daily-full";
pub const INCREMENTAL_SLUG: &str = "backup-hourly-incremental";
pub const RETENTION_SLUG: &str = "backup-retention";

/// Retention runs hourly at a quarter past, in the policy's time zone, so 24 h incrementals
/// leave within the hour after they expire.
pub const RETENTION_CRON: &str = "15 * * * *";

/// Namespace of the uuids of scheduled backups (one per function, scope, tenant and tick).
const TICK_NAMESPACE: Uuid = Uuid::from_u128(0x0b1c_5e3d_7a2f_4c61_8d90_3e4f_a5b6_c7d8);

/// Which schedule a cron function serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Full,
    Incremental,
    Retention,
}

impl Schedule {
    /// Its cron, as Inngest takes it, under `policy` (`None`: not scheduled).
    pub fn cron(self, policy: &BackupPolicy) -> Option<String> {
        match self {
            Self::Full => Some(policy.full_schedule()),
            Self::Incremental => policy.incremental_schedule(),
            Self::Retention => Some(policy.with_timezone(RETENTION_CRON)),
        }
    }

    fn backup_type(self) -> &'static str {
        match self {
            Self::Incremental => "incremental",
            Self::Full | Self::Retention => "full",
        }
    }
}

/// The cron triggers of `schedule`, read from the effective policy at sync time. A database
/// that cannot be read keeps the defaults (and says so): a sync must not drop the schedules.
pub async fn triggers(state: AppState, schedule: Schedule) -> Vec<inngest::Trigger> {
    let policy = match crate::policy::load_effective(&state.pool).await {
        Ok(effective) => effective.policy,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the backup policy at sync; registering the default schedules");
            BackupPolicy::default()
        }
    };
    schedule
        .cron(&policy)
        .map(inngest::Trigger::cron)
        .into_iter()
        .collect()
}

/// The tick a run belongs to: the cron event's id (its scheduled time), else its
/// `data.scheduledAt`, else (a manual invocation) the event's time, else now, to the minute.
pub fn scheduled_for(event: &inngest::Event) -> DateTime<Utc> {
    let parse = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|t| t.to_utc());
    event
        .id
        .as_deref()
        .and_then(parse)
        .or_else(|| event.data["scheduledAt"].as_str().and_then(parse))
        .or_else(|| event.ts.and_then(DateTime::from_timestamp_millis))
        .unwrap_or_else(Utc::now)
        .trunc_subsecs(0)
}

/// The uuid of the backup of `slug` for `scope`/`tenant` at `tick`.
pub fn tick_uuid(slug: &str, scope: &str, tenant: Option<i32>, tick: DateTime<Utc>) -> Uuid {
    let tenant = tenant.map_or_else(|| "-".to_owned(), |t| t.to_string());
    Uuid::new_v5(
        &TICK_NAMESPACE,
        format!("{slug}:{scope}:{tenant}:{}", tick.to_rfc3339()).as_bytes(),
    )
}

/// `backup-daily-full`.
///
/// # Errors
/// See [`backup_execute::run_event`].
pub async fn run(state: AppState, ctx: inngest::Ctx) -> Result<Value, inngest::Error> {
    run_scheduled(state, ctx, SLUG, Schedule::Full).await
}

/// `backup-hourly-incremental`.
///
/// # Errors
/// See [`backup_execute::run_event`].
pub async fn run_incremental(state: AppState, ctx: inngest::Ctx) -> Result<Value, inngest::Error> {
    run_scheduled(state, ctx, INCREMENTAL_SLUG, Schedule::Incremental).await
}

async fn run_scheduled(
    state: AppState,
    ctx: inngest::Ctx,
    slug: &'static str,
    schedule: Schedule,
) -> Result<Value, inngest::Error> {
    let tick = scheduled_for(&ctx.event);
    let uuid = tick_uuid(slug, "all", None, tick);
    let backup_type = schedule.backup_type();
    let st = state.clone();
    step(&ctx.step, "schedule", move || async move {
        let new = NewBackup {
            uuid: uuid.to_string(),
            tenant_id: None,
            name: format!("scheduled-{backup_type}-{}", tick.format("%Y%m%dT%H%MZ")),
            backup_type: backup_type.to_owned(),
            backup_scope: "all".to_owned(),
            backup_tables: None,
        };
        let created = rows::insert_scheduled(&st.pool, &new, tick)
            .await
            .map_err(engine_error)?;
        Ok(json!({"backup_uuid": new.uuid, "scheduled_for": tick, "created": created}))
    })
    .await?;
    let st = state.clone();
    let fanout: Vec<(i32, String)> = step(&ctx.step, "fan-out-plan", move || async move {
        plan_fanout(&st, slug, backup_type, tick)
            .await
            .map_err(|e| inngest::Error::retriable(format!("tenant fan-out: {e:#}")))
    })
    .await?;
    if !fanout.is_empty() {
        let events = fanout
            .iter()
            .map(|(tenant, uuid)| {
                inngest::Event::new(
                    backup_execute::EVENTS[0],
                    json!({"backup_uuid": uuid, "tenant_id": tenant}),
                )
                .with_id(uuid.clone())
            })
            .collect();
        ctx.step.send_event("fan-out", events).await?;
    }
    let event = BackupEvent {
        backup: Some(BackupRef::Uuid(uuid)),
        backup_scope: Some("all".to_owned()),
        backup_type: Some(backup_type.to_owned()),
        ..BackupEvent::default()
    };
    backup_execute::run_event(state, ctx, event).await
}

/// With fan-out on, the pending row of each active tenant's backup for `tick`: `(tenant, uuid)`.
async fn plan_fanout(
    state: &AppState,
    slug: &str,
    backup_type: &str,
    tick: DateTime<Utc>,
) -> anyhow::Result<Vec<(i32, String)>> {
    let policy = crate::policy::load_effective(&state.pool).await?.policy;
    let Some(table_name) = state.settings.backup.tenants_table.as_deref() else {
        if policy.tenant_fanout {
            tracing::warn!(
                "tenant fan-out is on but TENANTS_TABLE=none: no tenant list to fan out to"
            );
        }
        return Ok(Vec::new());
    };
    if !policy.tenant_fanout {
        return Ok(Vec::new());
    }
    let catalog = crate::catalog::Catalog::load(&state.pool).await?;
    let table = catalog.resolve(table_name)?;
    let has_status = catalog
        .table(&table)
        .is_some_and(|t| t.column("status").is_some());
    // The name comes from the catalog, quoted: never raw input.
    let sql = format!(
        "SELECT \"id\" FROM {} {} ORDER BY \"id\"",
        table.quoted(),
        if has_status {
            "WHERE \"status\" = 'active'"
        } else {
            ""
        }
    );
    let tenants: Vec<i32> = sqlx::query_scalar(&sql).fetch_all(&state.pool).await?;
    let mut out = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let uuid = tick_uuid(slug, "tenant", Some(tenant), tick).to_string();
        let new = NewBackup {
            uuid: uuid.clone(),
            tenant_id: Some(tenant),
            name: format!(
                "scheduled-{backup_type}-tenant-{tenant}-{}",
                tick.format("%Y%m%dT%H%MZ")
            ),
            backup_type: backup_type.to_owned(),
            backup_scope: "tenant".to_owned(),
            backup_tables: None,
        };
        rows::insert_scheduled(&state.pool, &new, tick).await?;
        out.push((tenant, uuid));
    }
    Ok(out)
}

/// `backup-retention`: prunes with the effective policy.
///
/// # Errors
/// Database errors (retried).
pub async fn run_retention(state: AppState, ctx: inngest::Ctx) -> Result<Value, inngest::Error> {
    step(&ctx.step, "prune", move || async move {
        let effective = crate::policy::load_effective(&state.pool)
            .await
            .map_err(engine_error)?;
        let report = crate::usecases::retention::prune(&state, &effective.policy, false)
            .await
            .map_err(engine_error)?;
        // The verdicts on kept backups stay out of the step's saved output (it has a size cap).
        Ok(json!({
            "deleted": report.deleted,
            "skipped": report.skipped,
            "policy_problems": effective.problems,
        }))
    })
    .await
}
