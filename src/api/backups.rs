//! Creating, listing, showing and deleting backups.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, FieldError, Result};
use super::restores::RestoreView;
use super::{parse_page, parse_uuid, query_pairs, ApiState, Fields, JsonBody, PageOf};
use crate::backup::{self, BackupError, BackupScope, BackupSpec, BackupType};
use crate::db::api::{self as q, BackupQuery};
use crate::db::backups::{self as rows, BackupRow, NewBackup};
use crate::storage::ObjectKey;

/// The event that runs a backup (see [`crate::jobs::backup_execute`]).
pub const EXECUTE_EVENT: &str = "backup/execute";
/// Namespace of backup uuids derived from `Idempotency-Key` (with the tenant), so a retried
/// POST finds the backup the first one created.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x3a9c_52e1_7d04_4f6b_8c2e_91b0_d5a7_e613);
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub const TYPES: [&str; 2] = ["full", "incremental"];
pub const SCOPES: [&str; 3] = ["all", "tenant", "table"];
pub const STATUSES: [&str; 4] = ["pending", "running", "success", "failed"];

/// A backup as the page reads it: RiverEdge's `DataBackupResponse` fields, plus verification
/// and progress (extra fields are safe for the page; `status` keeps RiverEdge's four values).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackupView {
    pub uuid: String,
    pub tenant_id: Option<i32>,
    pub name: String,
    /// `full` or `incremental`.
    pub backup_type: String,
    /// `all`, `tenant` or `table`.
    pub backup_scope: String,
    pub backup_tables: Option<Vec<String>>,
    /// The storage prefix (`<uuid>/`) once the backup succeeded.
    pub file_path: Option<String>,
    pub file_uuid: Option<String>,
    /// Compressed size of the artifact in bytes.
    pub file_size: Option<i64>,
    /// `pending`, `running`, `success` or `failed`.
    pub status: String,
    pub inngest_run_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// sha256 of the manifest: pins every file of the artifact.
    pub checksum: Option<String>,
    /// When the artifact was last re-read and found intact.
    pub verified_at: Option<DateTime<Utc>>,
    pub progress: Progress,
}

/// How far a backup got.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Progress {
    /// Compressed bytes written so far.
    pub bytes_written: i64,
    pub rows_written: i64,
    /// Tables finished (known once the backup completed).
    pub tables_done: Option<i64>,
    pub tables_total: Option<i64>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Where a backup sits in its incremental chain (docs/incremental.md).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Chain {
    /// The backup this incremental builds on; `null` for a full.
    pub parent: Option<String>,
    /// Incrementals that build directly on this backup (restoring them needs it).
    pub children: Vec<String>,
    /// The full at the root of the chain (a full names itself).
    pub root: Option<String>,
    /// Why an incremental request was taken as a full.
    pub fallback_reason: Option<String>,
}

/// `GET /{uuid}`: the backup, its restores and its chain.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackupDetail {
    #[serde(flatten)]
    pub backup: BackupView,
    pub restores: Vec<RestoreView>,
    pub chain: Chain,
}

impl From<BackupRow> for BackupView {
    fn from(r: BackupRow) -> Self {
        let tables = r
            .manifest
            .as_ref()
            .and_then(|m| m.get("tables"))
            .and_then(Value::as_array)
            .map(|t| i64::try_from(t.len()).unwrap_or(i64::MAX));
        Self {
            progress: Progress {
                bytes_written: r.bytes_written,
                rows_written: r.rows_written,
                tables_done: tables.filter(|_| r.status == "success"),
                tables_total: tables,
                updated_at: r.progress_updated_at,
            },
            uuid: r.uuid,
            tenant_id: r.tenant_id,
            name: r.name,
            backup_type: r.backup_type,
            backup_scope: r.backup_scope,
            backup_tables: r.backup_tables,
            file_path: r.file_path,
            file_uuid: r.file_uuid,
            file_size: r.file_size,
            status: r.status,
            inngest_run_id: r.inngest_run_id,
            started_at: r.started_at,
            completed_at: r.completed_at,
            error_message: r.error_message,
            created_at: r.created_at,
            updated_at: r.updated_at,
            checksum: r.checksum,
            verified_at: r.verified_at,
        }
    }
}

/// The body of `POST /` (RiverEdge's `DataBackupCreate`).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // documents the body for OpenAPI; the handler reads it field by field
pub struct CreateBackup {
    /// 1 to 200 characters.
    name: String,
    /// `full` (default) or `incremental`.
    backup_type: Option<String>,
    /// `all` (platform admins only), `tenant` or `table`. Default: `tenant` for a tenant admin,
    /// `all` for a platform admin.
    backup_scope: Option<String>,
    /// Required with scope `table`: `table` or `schema.table`.
    backup_tables: Option<Vec<String>>,
    /// Platform admins only: the tenant of a `tenant` or `table` backup.
    tenant_id: Option<i32>,
}

/// Create a backup and queue it.
#[utoipa::path(post, path = "/api/v1/core/data-backups", tag = "backups",
    request_body = CreateBackup,
    params(("Idempotency-Key" = Option<String>, Header, description = "a retried POST with the same key returns the same backup")),
    responses((status = 201, body = BackupView), (status = 401), (status = 403), (status = 422),
              (status = 503, description = "the backup could not be queued; it is marked failed")))]
pub async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<BackupView>)> {
    let mut f = Fields::new(&body);
    if (f.has("target_database") || f.has("replace")) && !caller.is_platform() {
        return Err(ApiError::Forbidden(
            "tenants cannot choose a target database or replace".to_owned(),
        ));
    }
    let name = f.string("name");
    let backup_type = f.string("backup_type").unwrap_or_else(|| "full".into());
    let default_scope = if caller.is_platform() {
        "all"
    } else {
        "tenant"
    };
    let scope = f
        .string("backup_scope")
        .unwrap_or_else(|| default_scope.into());
    let tables = f.strings("backup_tables").filter(|t| !t.is_empty());
    let body_tenant = f.int("tenant_id");
    match name.as_deref() {
        None => f.errors.push(FieldError::new(
            &["body", "name"],
            "Field required",
            "missing",
        )),
        Some(n) if n.is_empty() || n.chars().count() > 200 => {
            f.push("name", "name must be 1 to 200 characters");
        }
        Some(_) => {}
    }
    if !TYPES.contains(&backup_type.as_str()) {
        f.push("backup_type", "Input should be 'full' or 'incremental'");
    }
    if !SCOPES.contains(&scope.as_str()) {
        f.push("backup_scope", "Input should be 'all', 'tenant' or 'table'");
    }
    f.finish()?;
    if scope == "all" {
        caller.require_platform("back up every tenant (scope all)")?;
    }
    let tenant_id = match (caller.tenant(), body_tenant) {
        (Some(own), Some(asked)) if i64::from(own) != asked => {
            return Err(ApiError::Forbidden(
                "tenant admins can only back up their own tenant".to_owned(),
            ))
        }
        (Some(own), _) => Some(own),
        (None, Some(asked)) => Some(i32::try_from(asked).map_err(|_| {
            ApiError::validation(&["body", "tenant_id"], "tenant_id is out of range")
        })?),
        (None, None) => None,
    };
    let mut f = Fields::new(&body);
    match scope.as_str() {
        "all" if tenant_id.is_some() => {
            f.push(
                "tenant_id",
                "scope all is platform-wide and takes no tenant",
            );
        }
        "tenant" if tenant_id.is_none() => {
            f.push("tenant_id", "scope tenant needs a tenant_id");
        }
        "table" if tables.is_none() => f.push(
            "backup_tables",
            "scope table needs backup_tables: the tables to back up",
        ),
        "all" | "tenant" if tables.is_some() => f.push(
            "backup_tables",
            "backup_tables can only be given with scope table",
        ),
        _ => {}
    }
    f.finish()?;
    let name = name.unwrap_or_default();

    let uuid = match headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        Some(key) if !key.is_empty() => {
            let owner = tenant_id.map_or_else(|| "platform".to_owned(), |t| format!("tenant:{t}"));
            let derived = Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, format!("{owner}:{key}").as_bytes());
            if let Some(existing) =
                q::get_backup(&state.app.pool, caller.scope(), &derived.to_string()).await?
            {
                if existing.status == "pending" {
                    // The first POST may have died before sending; the event id makes a
                    // second send harmless.
                    send_execute(&state, &existing).await?;
                }
                return Ok((StatusCode::CREATED, Json(existing.into())));
            }
            derived
        }
        _ => Uuid::new_v4(),
    };

    let spec = BackupSpec {
        uuid: uuid.to_string(),
        backup_type: if backup_type == "incremental" {
            BackupType::Incremental
        } else {
            BackupType::Full
        },
        scope: match scope.as_str() {
            "all" => BackupScope::All,
            "tenant" => BackupScope::Tenant,
            _ => BackupScope::Table,
        },
        tenant_id,
        tables: tables.clone().unwrap_or_default(),
    };
    // The same validation the job runs, so a request that can never succeed is a 422 now
    // instead of a failed row later.
    backup::validate(&state.app, &spec)
        .await
        .map_err(validation_error)?;
    let inserted = rows::insert(
        &state.app.pool,
        &NewBackup {
            uuid: spec.uuid.clone(),
            tenant_id,
            name,
            backup_type,
            backup_scope: scope,
            backup_tables: tables,
        },
    )
    .await?;
    let Some(row) = q::get_backup(&state.app.pool, caller.scope(), &spec.uuid).await? else {
        // The key's backup exists but was deleted since: the key cannot name a new one.
        return Err(if inserted {
            ApiError::Internal(anyhow::anyhow!(
                "backup {} vanished after insert",
                spec.uuid
            ))
        } else {
            ApiError::Conflict {
                code: "idempotency_key_reused",
                detail: "this Idempotency-Key belongs to a deleted backup; use a new key"
                    .to_owned(),
            }
        });
    };
    tracing::info!(backup = %row.uuid, tenant = ?row.tenant_id, by = %caller.sub, "backup requested");
    send_execute(&state, &row).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Sends `backup/execute` for a pending row; on failure the row says why and the caller gets a
/// 503 (the page shows only non-2xx errors).
async fn send_execute(state: &ApiState, row: &BackupRow) -> Result<()> {
    let event = inngest::Event::new(
        EXECUTE_EVENT,
        // The row is the request; the event only names it. Leaving `backup_scope` out also
        // means a run for a row deleted meanwhile fails at once instead of re-creating it.
        json!({"backup_uuid": row.uuid, "tenant_id": row.tenant_id, "backup_type": row.backup_type}),
    )
    // Deterministic: Inngest starts one run per id, however often this is sent.
    .with_id(format!("backup-execute-{}", row.uuid));
    if let Err(reason) = super::send_event(state, event).await {
        tracing::warn!(backup = %row.uuid, reason = %reason, "could not queue the backup");
        q::fail_unsent(
            &state.app.pool,
            q::Unsent::Backup,
            &row.uuid,
            &format!("failed to trigger the background task: {reason}"),
        )
        .await?;
        return Err(ApiError::Unavailable {
            code: "event_send_failed",
            detail: format!("the backup could not be queued ({reason}); it is marked failed"),
        });
    }
    Ok(())
}

/// Why an event send failed, without the event URL (it contains the event key).
pub fn send_failure(e: &inngest::client::SendError) -> String {
    match e {
        inngest::client::SendError::MissingEventKey => "no Inngest event key configured".into(),
        inngest::client::SendError::Network { attempts, .. } => {
            format!("Inngest event API unreachable after {attempts} attempts")
        }
        inngest::client::SendError::Rejected { status, .. } => {
            format!("Inngest event API answered {status}")
        }
    }
}

fn validation_error(e: BackupError) -> ApiError {
    if e.is_retriable() {
        return ApiError::Internal(anyhow::Error::new(e).context("validating the backup"));
    }
    let field = match &e {
        BackupError::UnsupportedType(_) => "backup_type",
        BackupError::UnknownTables(_) => "backup_tables",
        BackupError::TenantNotFound(_) | BackupError::NoTenantRows { .. } => "tenant_id",
        _ => "body",
    };
    let loc: &[&str] = if field == "body" {
        &["body"]
    } else {
        &["body", field]
    };
    ApiError::validation(loc, e.to_string())
}

/// List backups, newest first.
#[utoipa::path(get, path = "/api/v1/core/data-backups", tag = "backups",
    params(
        ("page" = Option<i64>, Query, description = "from 1"),
        ("page_size" = Option<i64>, Query, description = "default 20; larger than 1000 is clamped to 1000"),
        ("backup_type" = Option<String>, Query), ("backup_scope" = Option<String>, Query),
        ("status" = Option<String>, Query),
        ("name" = Option<String>, Query, description = "case-insensitive part of the name (alias: search)"),
        ("created_from" = Option<String>, Query, description = "RFC 3339"),
        ("created_to" = Option<String>, Query, description = "RFC 3339"),
        ("tenant_id" = Option<i32>, Query, description = "platform admins only; ignored for tenant admins"),
    ),
    responses((status = 200, body = PageOf<BackupView>), (status = 401), (status = 403), (status = 422)))]
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<PageOf<BackupView>>> {
    let params = query_pairs(raw.as_deref());
    let mut errors = Vec::new();
    let page = parse_page(&params, &mut errors);
    let mut choice = |name: &str, allowed: &[&str]| {
        let v = params
            .get(name)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())?;
        if !allowed.contains(&v.as_str()) {
            errors.push(FieldError::new(
                &["query", name],
                format!("Input should be one of {}", allowed.join(", ")),
                "enum",
            ));
        }
        Some(v)
    };
    let backup_type = choice("backup_type", &TYPES);
    let backup_scope = choice("backup_scope", &SCOPES);
    let status = choice("status", &STATUSES);
    let mut time = |name: &str| {
        let v = params
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())?;
        DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                errors.push(FieldError::new(
                    &["query", name],
                    "Input should be an RFC 3339 date-time",
                    "datetime_parsing",
                ));
            })
            .ok()
    };
    let created_from = time("created_from");
    let created_to = time("created_to");
    let tenant_filter = match params
        .get("tenant_id")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        Some(t) if caller.is_platform() => match t.parse::<i32>() {
            Ok(t) => Some(t),
            Err(_) => {
                errors.push(FieldError::new(
                    &["query", "tenant_id"],
                    "Input should be a valid integer",
                    "int_parsing",
                ));
                None
            }
        },
        _ => None,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if backup_scope.as_deref() == Some("all") {
        caller.require_platform("see platform-wide (scope all) backups")?;
    }
    let name = params
        .get("name")
        .or_else(|| params.get("search"))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let query = BackupQuery {
        scope: caller.scope(),
        tenant_id: tenant_filter,
        backup_type,
        backup_scope,
        status,
        name,
        created_from,
        created_to,
        limit: page.page_size,
        offset: page.offset(),
    };
    let items = q::list_backups(&state.app.pool, &query).await?;
    let total = q::count_backups(&state.app.pool, &query).await?;
    Ok(Json(PageOf {
        items: items.into_iter().map(BackupView::from).collect(),
        total,
        page: page.page,
        page_size: page.page_size,
    }))
}

/// One backup with its restores and chain.
#[utoipa::path(get, path = "/api/v1/core/data-backups/{uuid}", tag = "backups",
    params(("uuid" = String, Path)),
    responses((status = 200, body = BackupDetail), (status = 404), (status = 422)))]
pub async fn detail(
    State(state): State<ApiState>,
    caller: Caller,
    Path(uuid): Path<String>,
) -> Result<Json<BackupDetail>> {
    let uuid = parse_uuid(&uuid)?.to_string();
    let row = q::get_backup(&state.app.pool, caller.scope(), &uuid)
        .await?
        .ok_or(ApiError::NotFound("backup not found"))?;
    let restores = q::restores_of_backup(&state.app.pool, &uuid).await?;
    let chain = Chain {
        parent: row.parent_uuid.clone(),
        children: retained_dependents(&state, &row).await?,
        root: row.chain_uuid.clone(),
        fallback_reason: row.fallback_reason.clone(),
    };
    Ok(Json(BackupDetail {
        backup: row.into(),
        restores: restores.into_iter().map(RestoreView::from).collect(),
        chain,
    }))
}

/// Retained backups that need this one to be restorable: the incrementals built on it (an
/// incremental's children are of the same scope and tenant). `DELETE` refuses with 409 while
/// there are any, unless `?force=true`.
async fn retained_dependents(state: &ApiState, row: &BackupRow) -> Result<Vec<String>> {
    Ok(crate::db::backups::children_of(&state.app.pool, &row.uuid).await?)
}

/// Delete a backup: the row is soft-deleted, then its files removed.
#[utoipa::path(delete, path = "/api/v1/core/data-backups/{uuid}", tag = "backups",
    params(("uuid" = String, Path), ("force" = Option<bool>, Query, description = "delete even if retained incrementals depend on it")),
    responses((status = 200, description = "`{success: true, message}`"), (status = 404),
              (status = 409, description = "running, or retained backups depend on it")))]
pub async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    Path(uuid): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let uuid = parse_uuid(&uuid)?.to_string();
    let force = query_pairs(raw.as_deref())
        .get("force")
        .is_some_and(|v| matches!(v.as_str(), "true" | "1"));
    let row = q::get_backup(&state.app.pool, caller.scope(), &uuid)
        .await?
        .ok_or(ApiError::NotFound("backup not found"))?;
    let running = || ApiError::Conflict {
        code: "backup_running",
        detail: "the backup is running; delete it once it finished".to_owned(),
    };
    if row.status == "running" {
        return Err(running());
    }
    let dependents = retained_dependents(&state, &row).await?;
    if !dependents.is_empty() && !force {
        return Err(ApiError::Conflict {
            code: "backup_has_dependents",
            detail: format!(
                "retained backups depend on this one ({}); pass force=true to delete anyway",
                dependents.join(", ")
            ),
        });
    }
    if !q::soft_delete_backup(&state.app.pool, caller.scope(), &uuid).await? {
        // It started running (or was deleted) since we looked.
        return Err(
            match q::get_backup(&state.app.pool, caller.scope(), &uuid).await? {
                Some(_) => running(),
                None => ApiError::NotFound("backup not found"),
            },
        );
    }
    remove_files(&state, &uuid).await?;
    tracing::info!(backup = %uuid, by = %caller.sub, "backup deleted");
    Ok(Json(json!({"success": true, "message": "backup deleted"})))
}

/// The manifest goes first: without it the artifact is incomplete to every reader, so a
/// removal interrupted half-way never leaves something that looks like a whole backup.
async fn remove_files(state: &ApiState, uuid: &str) -> Result<()> {
    let prefix = ObjectKey::parse(uuid).map_err(|e| anyhow::anyhow!(e))?;
    let manifest = prefix
        .join(crate::artifact::MANIFEST_FILE)
        .map_err(|e| anyhow::anyhow!(e))?;
    let storage = state.app.storage.as_ref();
    storage.delete_prefix(&manifest).await?;
    storage.delete_prefix(&prefix).await?;
    Ok(())
}
