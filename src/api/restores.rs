//! Starting restores and looking at them.

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::Caller;
use super::backups::IDEMPOTENCY_KEY;
use super::error::{ApiError, Result};
use super::{parse_page, parse_uuid, query_pairs, ApiState, Fields, JsonBody, PageOf};
use crate::db::api as q;
use crate::db::restores::{self as rows, NewRestore, RestoreRow};

/// The event that runs a restore (see [`crate::jobs::restore`]).
pub const RESTORE_EVENT: &str = "backup/restore";
/// Namespace of restore uuids derived from `Idempotency-Key`.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x91c4_0b7e_2f58_4d3a_a6e1_5c09_b8d2_7f34);

/// A restore as recorded.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RestoreView {
    pub uuid: String,
    pub tenant_id: Option<i32>,
    pub backup_uuid: String,
    pub restore_scope: String,
    /// `null`: the live database.
    pub target_database: Option<String>,
    pub restore_tables: Option<Vec<String>>,
    /// `pending`, `running`, `success` or `failed`.
    pub status: String,
    pub inngest_run_id: Option<String>,
    /// The backup taken of what the restore replaced (undo).
    pub safety_backup_uuid: Option<String>,
    /// `{"schema.table": rows}` once done.
    #[schema(value_type = Option<Object>)]
    pub rows_per_table: Option<Value>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    /// A preview: it changes nothing and records `preview`.
    pub dry_run: bool,
    /// `{"tables":[{"table","insert","update","delete"}],"sequences":[{"sequence","from","to"}]}`:
    /// planned (dry run) or done (docs/tenant-restore.md).
    #[schema(value_type = Option<Object>)]
    pub preview: Option<Value>,
    /// A clone: the backup's tenant restored as this tenant id.
    pub target_tenant_id: Option<i32>,
}

impl From<RestoreRow> for RestoreView {
    fn from(r: RestoreRow) -> Self {
        Self {
            uuid: r.uuid,
            tenant_id: r.tenant_id,
            backup_uuid: r.backup_uuid,
            restore_scope: r.restore_scope,
            target_database: r.target_database,
            restore_tables: r.restore_tables,
            status: r.status,
            inngest_run_id: r.inngest_run_id,
            safety_backup_uuid: r.safety_backup_uuid,
            rows_per_table: r.rows_per_table,
            started_at: r.started_at,
            completed_at: r.completed_at,
            error_message: r.error_message,
            created_at: r.created_at,
            dry_run: r.dry_run,
            preview: r.preview,
            target_tenant_id: r.target_tenant_id,
        }
    }
}

/// The body of `POST /{uuid}/restore`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // documents the body for OpenAPI; the handler reads it field by field
pub struct CreateRestore {
    /// Must be `true` (the page's confirm dialog).
    confirm: bool,
    /// Check the request and say what would happen; nothing is queued.
    dry_run: Option<bool>,
    /// Only these tables of the backup (`table` or `schema.table`).
    tables: Option<Vec<String>>,
    /// Platform admins only: restore into this database of the same server.
    target_database: Option<String>,
    /// Platform admins only: allow a whole-database backup to replace the live database.
    replace: Option<bool>,
}

/// `{success, message, restore}`: the page reads `success` and `message`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RestoreStarted {
    pub success: bool,
    pub message: String,
    /// The recorded restore (a dry run too: its row carries the preview once done).
    pub restore: Option<RestoreView>,
}

/// Start a restore of a successful backup.
#[utoipa::path(post, path = "/api/v1/core/data-backups/{uuid}/restore", tag = "restores",
    params(("uuid" = String, Path),
           ("Idempotency-Key" = Option<String>, Header, description = "a retried POST with the same key returns the same restore")),
    request_body = CreateRestore,
    responses((status = 200, body = RestoreStarted), (status = 400, description = "confirm is not true, or the backup is not restorable"),
              (status = 403), (status = 404), (status = 422), (status = 503)))]
pub async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Json<RestoreStarted>> {
    let backup_uuid = parse_uuid(&uuid)?.to_string();
    let mut f = Fields::new(&body);
    let confirm = f.boolean("confirm");
    let dry_run = f.boolean("dry_run").unwrap_or(false);
    let tables = f.strings("tables").filter(|t| !t.is_empty());
    let target_database = f.string("target_database").filter(|s| !s.is_empty());
    let replace = f.boolean("replace").unwrap_or(false);
    f.finish()?;
    if (target_database.is_some() || body.contains_key("replace")) && !caller.is_platform() {
        return Err(ApiError::Forbidden(
            "tenants cannot choose a target database or replace".to_owned(),
        ));
    }
    if confirm != Some(true) && !dry_run {
        return Err(ApiError::BadRequest {
            code: "confirmation_required",
            detail: "a restore overwrites data: send {\"confirm\": true}".to_owned(),
        });
    }
    let row = q::get_backup(&state.app.pool, caller.scope(), &backup_uuid)
        .await?
        .ok_or(ApiError::NotFound("backup not found"))?;
    if row.status != "success" {
        return Err(ApiError::BadRequest {
            code: "backup_not_restorable",
            detail: format!(
                "only successful backups can be restored; this one is {}",
                row.status
            ),
        });
    }
    if let Some(names) = &tables {
        let known = manifest_tables(row.manifest.as_ref());
        let unknown: Vec<&str> = names
            .iter()
            .filter(|n| {
                !known
                    .iter()
                    .any(|(schema, name)| *n == name || **n == format!("{schema}.{name}"))
            })
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::validation(
                &["body", "tables"],
                format!("not in this backup: {}", unknown.join(", ")),
            ));
        }
    }
    if row.backup_scope == "all" && target_database.is_none() && !replace {
        return Err(ApiError::validation(
            &["body", "replace"],
            "restoring a whole-database backup into the live database replaces every table: \
             pass replace: true, or a target_database",
        ));
    }
    if dry_run && row.tenant_id.is_none() {
        return Err(ApiError::validation(
            &["body", "dry_run"],
            "a dry run previews tenant restores; this backup is not a tenant's backup",
        ));
    }

    let restore_uuid = match headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        Some(key) if !key.is_empty() => {
            let owner = caller
                .tenant()
                .map_or_else(|| "platform".to_owned(), |t| format!("tenant:{t}"));
            Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, format!("{owner}:{key}").as_bytes())
        }
        _ => Uuid::new_v4(),
    };
    let inserted = rows::insert(
        &state.app.pool,
        &NewRestore {
            uuid: restore_uuid,
            tenant_id: row.tenant_id,
            backup_uuid: parse_uuid(&row.uuid)?,
            scope: row.backup_scope.clone(),
            target_database: target_database.clone(),
            tables: tables.clone(),
            dry_run,
            target_tenant_id: None,
        },
    )
    .await?;
    let restore = q::get_restore(&state.app.pool, caller.scope(), &restore_uuid.to_string())
        .await?
        .ok_or(ApiError::NotFound("restore not found"))?;
    if !inserted && restore.backup_uuid != row.uuid {
        return Err(ApiError::Conflict {
            code: "idempotency_key_reused",
            detail: "this Idempotency-Key was used for a restore of another backup".to_owned(),
        });
    }
    if restore.status == "pending" {
        let event = inngest::Event::new(
            RESTORE_EVENT,
            json!({
                "backup_uuid": row.uuid, "tenant_id": row.tenant_id, "tables": tables,
                "target_database": target_database, "replace": replace,
                "restore_uuid": restore_uuid.to_string(), "dry_run": dry_run,
            }),
        )
        .with_id(format!("backup-restore-{restore_uuid}"));
        if let Err(reason) = super::send_event(&state, event).await {
            tracing::warn!(restore = %restore_uuid, reason = %reason, "could not queue the restore");
            q::fail_unsent(
                &state.app.pool,
                q::Unsent::Restore,
                &restore_uuid.to_string(),
                &format!("failed to trigger the background task: {reason}"),
            )
            .await?;
            return Err(ApiError::Unavailable {
                code: "event_send_failed",
                detail: format!("the restore could not be queued ({reason}); it is marked failed"),
            });
        }
    }
    tracing::info!(restore = %restore_uuid, backup = %row.uuid, by = %caller.sub, "restore requested");
    Ok(Json(RestoreStarted {
        success: true,
        message: if dry_run {
            "dry run queued: the preview is recorded on the restore; nothing is changed".to_owned()
        } else {
            "restore queued".to_owned()
        },
        restore: Some(restore.into()),
    }))
}

/// `(schema, name)` of every table in a manifest.
fn manifest_tables(manifest: Option<&Value>) -> Vec<(String, String)> {
    manifest
        .and_then(|m| m.get("tables"))
        .and_then(Value::as_array)
        .map(|tables| {
            tables
                .iter()
                .filter_map(|t| {
                    Some((
                        t.get("schema")?.as_str()?.to_owned(),
                        t.get("name")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// List restores, newest first.
#[utoipa::path(get, path = "/api/v1/core/data-backups/restores", tag = "restores",
    params(("page" = Option<i64>, Query), ("page_size" = Option<i64>, Query, description = "clamped to 1000")),
    responses((status = 200, body = PageOf<RestoreView>), (status = 401), (status = 403)))]
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<PageOf<RestoreView>>> {
    let params = query_pairs(raw.as_deref());
    let mut errors = Vec::new();
    let page = parse_page(&params, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (items, total) = q::list_restores(
        &state.app.pool,
        caller.scope(),
        page.page_size,
        page.offset(),
    )
    .await?;
    Ok(Json(PageOf {
        items: items.into_iter().map(RestoreView::from).collect(),
        total,
        page: page.page,
        page_size: page.page_size,
    }))
}

/// One restore.
#[utoipa::path(get, path = "/api/v1/core/data-backups/restores/{uuid}", tag = "restores",
    params(("uuid" = String, Path)),
    responses((status = 200, body = RestoreView), (status = 404), (status = 422)))]
pub async fn detail(
    State(state): State<ApiState>,
    caller: Caller,
    Path(uuid): Path<String>,
) -> Result<Json<RestoreView>> {
    let uuid = parse_uuid(&uuid)?.to_string();
    let row = q::get_restore(&state.app.pool, caller.scope(), &uuid)
        .await?
        .ok_or(ApiError::NotFound("restore not found"))?;
    Ok(Json(row.into()))
}
