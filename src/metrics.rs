//! `/metrics` in the Prometheus text format.
//!
//! Two kinds of series:
//! - counters of what *this process* did (backups and restores by outcome, bytes and rows
//!   written, retention deletions, reaper actions), moved by the Inngest adapters and use cases
//!   through the small functions below;
//! - gauges read from `root_data_backups` at scrape time (backups by scope, type and status,
//!   last success and its duration per scope and tenant), so every replica reports the same,
//!   correct values whichever of them ran the backup.
//!
//! The endpoint is unauthenticated like `/health` and shows no tenant data beyond tenant ids;
//! keep it on the internal network.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::startup::AppState;

type Labels = Vec<(String, String)>;

/// The process's counters (clones share their values).
#[derive(Default, Clone)]
struct Counters {
    backups: Family<Labels, Counter>,
    restores: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    rows: Family<Labels, Counter>,
    retention_deleted: Counter,
    reaper_actions: Family<Labels, Counter>,
}

fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    COUNTERS.get_or_init(Counters::default)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A backup run ended (`outcome`: `success` or `failed`); bytes and rows of a success.
pub fn backup_finished(scope: &str, backup_type: &str, outcome: &str, bytes: u64, rows: u64) {
    let c = counters();
    c.backups
        .get_or_create(&labels(&[
            ("scope", scope),
            ("type", backup_type),
            ("outcome", outcome),
        ]))
        .inc();
    let scope = labels(&[("scope", scope)]);
    c.bytes.get_or_create(&scope).inc_by(bytes);
    c.rows.get_or_create(&scope).inc_by(rows);
}

/// A restore run ended.
pub fn restore_finished(outcome: &str) {
    counters()
        .restores
        .get_or_create(&labels(&[("outcome", outcome)]))
        .inc();
}

/// Retention soft-deleted this many backups.
pub fn retention_deleted(n: usize) {
    counters()
        .retention_deleted
        .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
}

/// The reaper did `n` things of one kind (`backup_failed`, `backup_stalled`, `prefix_removed`, ...).
pub fn reaper_action(action: &str, n: usize) {
    if n > 0 {
        counters()
            .reaper_actions
            .get_or_create(&labels(&[("action", action)]))
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }
}

/// The whole exposition: process counters plus the table's gauges.
///
/// # Errors
/// Database errors.
pub async fn render(pool: &sqlx::PgPool) -> anyhow::Result<String> {
    let mut registry = Registry::with_prefix("riveredge_backup");
    let c = counters().clone();
    registry.register(
        "backup_runs",
        "Backup runs this process finished, by scope, type and outcome",
        c.backups,
    );
    registry.register(
        "restore_runs",
        "Restore runs this process finished, by outcome",
        c.restores,
    );
    registry.register(
        "written_bytes",
        "Artifact bytes written by successful backups of this process",
        c.bytes,
    );
    registry.register(
        "written_rows",
        "Rows written by successful backups of this process",
        c.rows,
    );
    registry.register(
        "retention_deleted",
        "Backups retention soft-deleted (files removed)",
        c.retention_deleted,
    );
    registry.register(
        "reaper_actions",
        "Things the reaper cleaned up, by action",
        c.reaper_actions,
    );

    let by_status: Family<Labels, Gauge> = Family::default();
    // language=PostgreSQL
    let counts: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT backup_scope::text, backup_type::text, status::text, count(*)
         FROM root_data_backups WHERE deleted_at IS NULL GROUP BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await?;
    for (scope, kind, status, n) in counts {
        by_status
            .get_or_create(&labels(&[
                ("scope", &scope),
                ("type", &kind),
                ("status", &status),
            ]))
            .set(n);
    }
    registry.register(
        "backups",
        "Backups on record (not deleted), by scope, type and status",
        by_status,
    );

    let last_success: Family<Labels, Gauge> = Family::default();
    let last_duration: Family<Labels, Gauge> = Family::default();
    // language=PostgreSQL
    let lasts: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT DISTINCT ON (backup_scope, tenant_id)
                backup_scope::text, coalesce(tenant_id::text, ''),
                floor(extract(epoch FROM completed_at))::bigint,
                coalesce(extract(epoch FROM completed_at - started_at)::bigint, 0)
         FROM root_data_backups
         WHERE deleted_at IS NULL AND status = 'success' AND completed_at IS NOT NULL
         ORDER BY backup_scope, tenant_id, completed_at DESC",
    )
    .fetch_all(pool)
    .await?;
    for (scope, tenant, at, took) in lasts {
        let l = labels(&[("scope", &scope), ("tenant", &tenant)]);
        last_success.get_or_create(&l).set(at);
        last_duration.get_or_create(&l).set(took);
    }
    registry.register(
        "last_success_timestamp_seconds",
        "Completion time of the newest successful backup, by scope and tenant",
        last_success,
    );
    registry.register(
        "last_success_duration_seconds",
        "How long the newest successful backup took, by scope and tenant",
        last_duration,
    );

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// `GET /metrics`.
pub async fn handler(State(state): State<AppState>) -> Response {
    match render(&state.pool).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "could not render /metrics");
            (StatusCode::SERVICE_UNAVAILABLE, "metrics unavailable\n").into_response()
        }
    }
}
