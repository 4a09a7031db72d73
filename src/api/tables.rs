//! `GET /tables`: the tables a `table`-scope backup can name, for the page's table picker.
//! Names only (never rows); the worker's own bookkeeping tables are left out, as the backup
//! refuses them.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::auth::Caller;
use super::error::Result;
use super::ApiState;
use crate::catalog::Catalog;
use crate::db::OWN_TABLES;

/// One table of the database.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    /// Has a `tenant_id` column: its rows belong to tenants (RiverEdge's convention).
    pub tenant_id: bool,
}

/// `{items}`, in catalog order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TableList {
    pub items: Vec<TableInfo>,
}

/// The tables a backup of scope `table` may name.
#[utoipa::path(get, path = "/api/v1/core/data-backups/tables", tag = "backups",
    responses((status = 200, body = TableList), (status = 401), (status = 403)))]
pub async fn list(State(state): State<ApiState>, _caller: Caller) -> Result<Json<TableList>> {
    let catalog = Catalog::load(&state.app.pool)
        .await
        .map_err(|e| anyhow::Error::new(e).context("reading the catalog"))?;
    let items = catalog
        .tables()
        .filter(|t| !OWN_TABLES.contains(&t.table.name.as_str()))
        .map(|t| TableInfo {
            schema: t.table.schema.clone(),
            name: t.table.name.clone(),
            tenant_id: t.has_tenant_id(),
        })
        .collect();
    Ok(Json(TableList { items }))
}
