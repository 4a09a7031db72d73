//! Event payloads, as the RiverEdge app and operators actually send them.
//!
//! Two generations of the app send different shapes (riveredge.md §1.4–1.5): the design's
//! `backup/execute {tenant_id, backup_id, backup_type, backup_scope}` and the current code's
//! `database/backup.requested {backup_uuid, tenant_id, backup_type, backup_scope, backup_tables}`.
//! Both are accepted. Parsing is strict about meaning (a tenant id must be an integer, a uuid a
//! uuid) and lenient about form (`"5"` and `5` are the same tenant; `null` means absent), and a
//! malformed payload is a final error naming the field: retrying cannot fix it.

use serde_json::Value;
use uuid::Uuid;

/// What a backup event asks for. Every field is optional; the row, when it exists, is the
/// source of truth.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupEvent {
    pub tenant_id: Option<i32>,
    pub backup: Option<BackupRef>,
    pub backup_type: Option<String>,
    pub backup_scope: Option<String>,
    pub backup_tables: Option<Vec<String>>,
    pub name: Option<String>,
}

/// How an event names an existing backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupRef {
    Uuid(Uuid),
    /// RiverEdge's internal integer id (`root_data_backups.id`).
    Id(i32),
}

/// What a restore event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreEvent {
    pub tenant_id: Option<i32>,
    pub backup_uuid: Uuid,
    pub tables: Option<Vec<String>>,
    /// A database on the same server; credentials never travel in events.
    pub target_database: Option<String>,
    /// Whole-database restores into the live database need this explicitly.
    pub replace: bool,
    /// Set by the REST API / operators so a retried request maps to one restore row.
    pub restore_uuid: Option<Uuid>,
    /// Compute the preview (tenant restores) and change nothing.
    pub dry_run: bool,
    /// Restore only this tenant from a whole-database backup (platform events).
    pub restore_tenant_id: Option<i32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed event: {0}")]
pub struct MalformedEvent(pub String);

fn malformed(msg: impl Into<String>) -> MalformedEvent {
    MalformedEvent(msg.into())
}

/// Parses `data` of `backup/execute` or `database/backup.requested`.
///
/// # Errors
/// A field of the wrong type or an unparseable uuid.
pub fn parse_backup(data: &Value) -> Result<BackupEvent, MalformedEvent> {
    let obj = data
        .as_object()
        .ok_or_else(|| malformed("event data must be a JSON object"))?;
    let field = |name: &str| obj.get(name).filter(|v| !v.is_null());
    let backup = match (field("backup_uuid"), field("backup_id")) {
        (Some(v), _) => Some(BackupRef::Uuid(uuid_field("backup_uuid", v)?)),
        (None, Some(Value::Number(n))) => Some(BackupRef::Id(
            n.as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(|| malformed("backup_id must be a uuid or an integer id"))?,
        )),
        (None, Some(v)) => Some(BackupRef::Uuid(uuid_field("backup_id", v)?)),
        (None, None) => None,
    };
    Ok(BackupEvent {
        tenant_id: tenant_field(field("tenant_id"))?,
        backup,
        backup_type: string_field("backup_type", field("backup_type"))?,
        backup_scope: string_field("backup_scope", field("backup_scope"))?,
        backup_tables: string_list_field("backup_tables", field("backup_tables"))?,
        name: string_field("name", field("name"))?,
    })
}

/// Parses `data` of `backup/restore` or `database/restore.requested`.
///
/// # Errors
/// No backup uuid, a field of the wrong type, or an invalid database name.
pub fn parse_restore(data: &Value) -> Result<RestoreEvent, MalformedEvent> {
    let obj = data
        .as_object()
        .ok_or_else(|| malformed("event data must be a JSON object"))?;
    let field = |name: &str| obj.get(name).filter(|v| !v.is_null());
    let backup_uuid = match (field("backup_uuid"), field("backup_id")) {
        (Some(v), _) => uuid_field("backup_uuid", v)?,
        (None, Some(v)) => uuid_field("backup_id", v)?,
        (None, None) => return Err(malformed("backup_uuid is required")),
    };
    // The name itself is validated where the database is created (restore::validate_database_name).
    let target_database = string_field("target_database", field("target_database"))?;
    let replace = match field("replace") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(malformed("replace must be true or false")),
    };
    let dry_run = match field("dry_run") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(malformed("dry_run must be true or false")),
    };
    Ok(RestoreEvent {
        dry_run,
        restore_tenant_id: tenant_field(field("restore_tenant_id"))?,
        tenant_id: tenant_field(field("tenant_id"))?,
        backup_uuid,
        tables: string_list_field("tables", field("tables"))?,
        target_database,
        replace,
        restore_uuid: field("restore_uuid")
            .map(|v| uuid_field("restore_uuid", v))
            .transpose()?,
    })
}

fn uuid_field(name: &str, v: &Value) -> Result<Uuid, MalformedEvent> {
    v.as_str()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .ok_or_else(|| malformed(format!("{name} must be a uuid, got {v}")))
}

fn tenant_field(v: Option<&Value>) -> Result<Option<i32>, MalformedEvent> {
    let bad = |v: &Value| malformed(format!("tenant_id must be an integer, got {v}"));
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .map(Some)
            .ok_or_else(|| bad(&Value::Number(n.clone()))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad(&Value::String(s.clone()))),
        Some(other) => Err(bad(other)),
    }
}

fn string_field(name: &str, v: Option<&Value>) -> Result<Option<String>, MalformedEvent> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(other) => Err(malformed(format!("{name} must be a string, got {other}"))),
    }
}

fn string_list_field(name: &str, v: Option<&Value>) -> Result<Option<Vec<String>>, MalformedEvent> {
    match v {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(|s| s.trim().to_owned())
                    .ok_or_else(|| malformed(format!("{name} must be a list of table names")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|list| Some(list).filter(|l| !l.is_empty())),
        // "a,b" from form fields and older clients.
        Some(Value::String(s)) => {
            let list: Vec<String> = s
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect();
            Ok(Some(list).filter(|l| !l.is_empty()))
        }
        Some(other) => Err(malformed(format!(
            "{name} must be a list of table names, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_current_riveredge_payload_parses() {
        let u = Uuid::new_v4();
        let e = parse_backup(&json!({"backup_uuid": u.to_string(), "tenant_id": 7, "backup_type": "full", "backup_scope": "tenant", "backup_tables": null})).unwrap();
        assert_eq!(e.backup, Some(BackupRef::Uuid(u)));
        assert_eq!(
            (e.tenant_id, e.backup_scope.as_deref(), e.backup_tables),
            (Some(7), Some("tenant"), None)
        );
    }

    #[test]
    fn the_design_payload_with_backup_id_and_string_tenant_parses() {
        let u = Uuid::new_v4();
        let e = parse_backup(&json!({"backup_id": u.to_string(), "tenant_id": "12"})).unwrap();
        assert_eq!(
            (e.backup, e.tenant_id),
            (Some(BackupRef::Uuid(u)), Some(12))
        );
        let e = parse_backup(&json!({"backup_id": 42})).unwrap();
        assert_eq!(e.backup, Some(BackupRef::Id(42)));
    }

    #[test]
    fn malformed_fields_are_named() {
        for (data, field) in [
            (json!({"tenant_id": "abc"}), "tenant_id"),
            (json!({"tenant_id": 1.5}), "tenant_id"),
            (json!({"backup_uuid": "not-a-uuid"}), "backup_uuid"),
            (json!({"backup_tables": [1, 2]}), "backup_tables"),
            (json!({"backup_scope": 3}), "backup_scope"),
            (json!([1]), "object"),
        ] {
            let err = parse_backup(&data).unwrap_err();
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
    }

    #[test]
    fn comma_separated_tables_are_split() {
        let e = parse_backup(&json!({"backup_tables": "core_users, core_roles"})).unwrap();
        assert_eq!(
            e.backup_tables,
            Some(vec!["core_users".into(), "core_roles".into()])
        );
    }

    #[test]
    fn restore_events_need_a_backup() {
        let u = Uuid::new_v4();
        let e = parse_restore(
            &json!({"backup_uuid": u.to_string(), "tenant_id": 3, "file_path": "/ignored"}),
        )
        .unwrap();
        assert_eq!((e.backup_uuid, e.tenant_id, e.replace), (u, Some(3), false));
        assert!(parse_restore(&json!({"tenant_id": 3})).is_err());
        assert!(
            parse_restore(&json!({"backup_uuid": u.to_string(), "target_database": 5})).is_err()
        );
    }
}
