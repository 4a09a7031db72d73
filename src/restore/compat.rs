//! Can a backup's rows go into a target database? Checked before anything is changed, so an
//! incompatible restore fails with a list of differences instead of halfway through a COPY.

use crate::artifact::{Manifest, TableEntry};
use crate::catalog::Catalog;

/// Every difference that would make loading `tables` of `manifest` into `target` fail or
/// change meaning; empty when compatible.
pub fn check(
    target: &Catalog,
    target_version_num: i32,
    manifest: &Manifest,
    tables: &[&TableEntry],
) -> Vec<String> {
    let mut problems = Vec::new();
    if target_version_num / 10000 < manifest.server_version_num / 10000 {
        problems.push(format!(
            "the target server is PostgreSQL {}, older than the backup's {} (restore into the same or a newer major version)",
            target_version_num / 10000,
            manifest.server_version
        ));
    }
    for entry in tables {
        let name = entry.table_ref();
        let Some(table) = target.table(&name) else {
            problems.push(format!("table {name} does not exist in the target"));
            continue;
        };
        for column in &entry.columns {
            match table.column(&column.name) {
                None => problems.push(format!(
                    "column {name}.{} ({}) does not exist in the target",
                    column.name, column.type_name
                )),
                Some(have) if have.type_name != column.type_name => problems.push(format!(
                    "column {name}.{} is {} in the target but {} in the backup",
                    column.name, have.type_name, column.type_name
                )),
                Some(have) if have.generated => {
                    problems.push(format!(
                        "column {name}.{} is a generated column in the target and cannot be loaded",
                        column.name
                    ));
                }
                Some(_) => {}
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::{CompressionEntry, ObjectEntry, SnapshotEntry};
    use crate::catalog::Column;

    fn column(name: &str, type_name: &str) -> Column {
        Column {
            name: name.into(),
            type_name: type_name.into(),
            not_null: false,
            identity: None,
            generated: false,
        }
    }

    fn manifest(version_num: i32) -> Manifest {
        Manifest {
            format: crate::artifact::FORMAT.into(),
            backup_uuid: "u".into(),
            backup_type: "full".into(),
            scope: "table".into(),
            tenant_id: None,
            created_at: chrono::Utc::now(),
            database: "d".into(),
            server_version: format!("{}.1", version_num / 10000),
            server_version_num: version_num,
            tool_version: String::new(),
            pg_dump_version: String::new(),
            snapshot: SnapshotEntry {
                snapshot_id: String::new(),
                xmin: String::new(),
                system_identifier: String::new(),
                taken_at: chrono::Utc::now(),
            },
            compression: CompressionEntry {
                codec: "zstd".into(),
                level: 1,
            },
            schema: ObjectEntry {
                key: "u/schema.dump".into(),
                sha256: String::new(),
                size: 0,
            },
            tables: vec![],
            sequences: vec![],
            excluded_tables: vec![],
            ownership: None,
            parent_uuid: None,
            chain_uuid: None,
            position: None,
            fallback_reason: None,
        }
    }

    fn entry(name: &str, columns: Vec<Column>) -> TableEntry {
        TableEntry {
            schema: "public".into(),
            name: name.into(),
            key: String::new(),
            sha256: String::new(),
            size: 0,
            raw_size: 0,
            rows: 0,
            content_hash: String::new(),
            columns,
            primary_key: vec![],
            predicate: None,
            delta: None,
        }
    }

    #[test]
    fn an_empty_target_reports_every_missing_table_and_an_older_server() {
        let e = entry("a", vec![column("id", "integer")]);
        let problems = check(&Catalog::default(), 140_000, &manifest(150_018), &[&e]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("older"));
        assert!(problems[1].contains("public.a does not exist"));
    }
}
