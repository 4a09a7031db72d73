//! The OpenAPI 3.1 document, generated from the handlers' annotations and the response types,
//! served at `/api/openapi.json`. Paths are listed under `/api/v1/core/data-backups`; the same
//! routes answer under `/api/v1/system/data-backups`.

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{backups, download, policy, restores, tables};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "riveredge-backup REST API",
        description = "Backups of the RiverEdge database for its backup page. Authenticate with RiverEdge's \
                       access token (HS256, `Authorization: Bearer`). Tenant admins see only their tenant's \
                       backups; platform admins see all and manage the policy. Errors are `{\"detail\", \"code\"}`; \
                       validation errors are 422 with FastAPI's `detail: [{loc, msg, type}]`. Every path is also \
                       served under /api/v1/system/data-backups."
    ),
    paths(
        backups::create, backups::list, backups::detail, backups::delete,
        restores::create, restores::list, restores::detail,
        download::download, download::file,
        policy::get_policy, policy::put_policy, tables::list,
    ),
    components(schemas(
        backups::BackupView, backups::BackupDetail, backups::Progress, backups::Chain,
        backups::CreateBackup, restores::RestoreView, restores::CreateRestore,
        restores::RestoreStarted, crate::policy::BackupPolicy,
        tables::TableList, tables::TableInfo,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "backups", description = "create, list, inspect and delete backups"),
        (name = "restores", description = "restore a backup and follow restores"),
        (name = "files", description = "download a backup as a zip, or one of its files"),
        (name = "policy", description = "retention and schedules (platform admins)"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// `GET /api/openapi.json` (public: it describes the API, it holds no data).
pub async fn serve() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| refs(i, out)),
            _ => {}
        }
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or(&r);
            assert!(schemas.contains_key(name), "{r} does not resolve");
        }
    }
}
