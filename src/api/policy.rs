//! `GET`/`PUT /policy`: the backup policy, for platform admins only.

use axum::extract::State;
use axum::Json;

use super::auth::Caller;
use super::error::{ApiError, FieldError, Result};
use super::{ApiState, JsonBody};
use crate::policy::{self, BackupPolicy};

/// The policy in force (defaults until one is saved).
#[utoipa::path(get, path = "/api/v1/core/data-backups/policy", tag = "policy",
    responses((status = 200, body = BackupPolicy), (status = 401), (status = 403)))]
pub async fn get_policy(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<BackupPolicy>> {
    caller.require_platform("read the backup policy")?;
    Ok(Json(policy::load(&state.app.pool).await?))
}

/// Replace the policy; every field is required and validated.
#[utoipa::path(put, path = "/api/v1/core/data-backups/policy", tag = "policy",
    request_body = BackupPolicy,
    responses((status = 200, body = BackupPolicy), (status = 401), (status = 403), (status = 422)))]
pub async fn put_policy(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Json<BackupPolicy>> {
    caller.require_platform("change the backup policy")?;
    let new: BackupPolicy =
        serde_json::from_value(serde_json::Value::Object(body)).map_err(|e| {
            ApiError::Validation(vec![FieldError::new(
                &["body"],
                e.to_string(),
                "value_error",
            )])
        })?;
    new.validate().map_err(|problems| {
        ApiError::Validation(
            problems
                .into_iter()
                .map(|p| FieldError::new(&["body", p.field], p.message, "value_error"))
                .collect(),
        )
    })?;
    policy::save(&state.app.pool, &new, &caller.sub).await?;
    tracing::info!(by = %caller.sub, "backup policy changed");
    Ok(Json(policy::load(&state.app.pool).await?))
}
