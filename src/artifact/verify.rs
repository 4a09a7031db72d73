//! Full verification of a stored backup: the manifest, every data file read to its end, the
//! schema dump read by `pg_restore` itself, and the three lists of tables agreeing: the schema
//! archive's `TABLE` entries, the manifest's tables and the data files in storage. A table
//! created while a backup started would otherwise sit in the schema dump without rows, and a
//! stray or missing data file would go unnoticed.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::reader::{open_table, read_manifest};
use super::{ArtifactError, Manifest, ObjectEntry, TableEntry};
use crate::pg::{PgBinaries, PgCommand};
use crate::storage::{ObjectKey, Storage};

/// What a successful verification read.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub manifest: Manifest,
    pub manifest_sha256: String,
    pub files: usize,
    pub bytes: u64,
    pub rows: u64,
}

/// Re-reads backup `uuid` completely and checks it against its manifest (and the manifest
/// against `expected_sha256`, the row's checksum, when given).
///
/// # Errors
/// The first problem found, naming the object and what mismatched.
#[tracing::instrument(skip_all, fields(backup = %uuid))]
pub async fn verify(
    storage: &dyn Storage,
    bins: &PgBinaries,
    uuid: &str,
    expected_sha256: Option<&str>,
    timeout: Duration,
) -> Result<VerifyReport, ArtifactError> {
    let (manifest, manifest_sha256) = read_manifest(storage, uuid, expected_sha256).await?;
    // Two lanes of data files (biggest first, alternating) and the schema archive at once:
    // decoding and hashing use a core each, pg_restore is a process of its own.
    let mut by_size: Vec<&TableEntry> =
        manifest.tables.iter().chain(manifest.key_lists()).collect();
    by_size.sort_by_key(|t| std::cmp::Reverse(t.raw_size));
    let lane = |n: usize| {
        by_size
            .iter()
            .skip(n)
            .step_by(2)
            .copied()
            .collect::<Vec<_>>()
    };
    let (first, second) = (lane(0), lane(1));
    let (a, b, schema) = tokio::join!(
        read_tables(storage, &first),
        read_tables(storage, &second),
        check_schema(storage, bins, &manifest, timeout),
    );
    a?;
    b?;
    schema?;
    check_data_files(storage, uuid, &manifest).await?;
    let bytes = manifest.schema.size
        + manifest
            .tables
            .iter()
            .chain(manifest.key_lists())
            .map(|t| t.size)
            .sum::<u64>();
    let rows = manifest.tables.iter().map(|t| t.rows).sum();
    Ok(VerifyReport {
        files: manifest.tables.len() + manifest.key_lists().count() + 2,
        manifest,
        manifest_sha256,
        bytes,
        rows,
    })
}

/// Decodes each data file completely through the verifying reader.
async fn read_tables(storage: &dyn Storage, tables: &[&TableEntry]) -> Result<(), ArtifactError> {
    for table in tables {
        let mut reader = open_table(storage, table).await?;
        tokio::io::copy(&mut reader, &mut tokio::io::sink())
            .await
            .map_err(|e| ArtifactError::from_io(&table.key, e))?;
    }
    Ok(())
}

/// The schema archive's bytes, then a full read of it by `pg_restore`, then its tables
/// against the manifest's.
async fn check_schema(
    storage: &dyn Storage,
    bins: &PgBinaries,
    manifest: &Manifest,
    timeout: Duration,
) -> Result<(), ArtifactError> {
    let entry = &manifest.schema;
    check_object(storage, entry).await?;
    let file = SchemaFile::materialize(storage, entry).await?;
    check_schema_archive(bins, entry, &file, timeout).await?;
    let toc = PgCommand::new(bins.program("pg_restore"), timeout)
        .arg("--list")
        .arg(file.path())
        .output()
        .await
        .map_err(|e| ArtifactError::SchemaUnreadable {
            key: entry.key.clone(),
            detail: e.to_string(),
        })?;
    schema_tables_match(&String::from_utf8_lossy(&toc), manifest)
}

/// The `TABLE` entries of a `pg_restore --list` table of contents must be exactly the
/// manifest's tables (a partition's DDL, listed as excluded, may be there too).
///
/// A TOC line is `<id>; <catalog oid> <oid> <desc> <schema> <name> <owner>`. Only entries whose
/// description is exactly `TABLE` count: not `TABLE DATA`, `TABLE ATTACH` or `FOREIGN TABLE`,
/// nor a comment or grant on a table (`COMMENT public TABLE x`, `ACL public TABLE x`). Names
/// are printed unquoted and may hold spaces, so entries are matched against the manifest's
/// names rather than split apart.
pub fn schema_tables_match(toc: &str, manifest: &Manifest) -> Result<(), ArtifactError> {
    let entries: Vec<&str> = toc
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let (_, rest) = l.split_once("; ")?;
            let mut parts = rest.splitn(3, ' ');
            let (_catalog, _oid, described) = (parts.next()?, parts.next()?, parts.next()?);
            described.strip_prefix("TABLE ")
        })
        .filter(|rest| !rest.starts_with("DATA ") && !rest.starts_with("ATTACH "))
        .collect();
    let matches = |rest: &str, schema: &str, name: &str| {
        rest.strip_prefix(schema)
            .and_then(|r| r.strip_prefix(' '))
            .and_then(|r| r.strip_prefix(name))
            .is_some_and(|r| r.is_empty() || r.starts_with(' '))
    };
    let mut problems = Vec::new();
    for t in &manifest.tables {
        if !entries.iter().any(|e| matches(e, &t.schema, &t.name)) {
            problems.push(format!(
                "{}.{} has a data file but no table in the schema dump",
                t.schema, t.name
            ));
        }
    }
    for e in &entries {
        let known = manifest
            .tables
            .iter()
            .any(|t| matches(e, &t.schema, &t.name))
            || manifest
                .excluded_tables
                .iter()
                .any(|t| matches(e, &t.schema, &t.name));
        if !known {
            problems.push(format!(
                "the schema dump creates table {e:?}, which the manifest does not list"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ArtifactError::SchemaMismatch {
            key: manifest.schema.key.clone(),
            detail: problems.join("; "),
        })
    }
}

/// The objects under `<uuid>/data/` must be exactly the manifest's data files.
async fn check_data_files(
    storage: &dyn Storage,
    uuid: &str,
    manifest: &Manifest,
) -> Result<(), ArtifactError> {
    let data = super::prefix(uuid)?.join("data")?;
    let stored = storage
        .list(&data)
        .await
        .map_err(|e| ArtifactError::from_io(data.as_str(), e))?;
    let listed: Vec<&str> = manifest
        .tables
        .iter()
        .chain(manifest.key_lists())
        .map(|t| t.key.as_str())
        .collect();
    let extra: Vec<&str> = stored
        .iter()
        .map(ObjectKey::as_str)
        .filter(|k| !listed.contains(k))
        .collect();
    if extra.is_empty() {
        // Missing files were already reported by the reads.
        Ok(())
    } else {
        Err(ArtifactError::SchemaMismatch {
            key: data.as_str().to_owned(),
            detail: format!(
                "data files that the manifest does not list: {}",
                extra.join(", ")
            ),
        })
    }
}

/// Size and sha256 of a stored object against its entry.
async fn check_object(storage: &dyn Storage, entry: &ObjectEntry) -> Result<(), ArtifactError> {
    let key = ObjectKey::parse(&entry.key)?;
    let io_err = |e| ArtifactError::from_io(&entry.key, e);
    let mut reader = storage.open(&key).await.map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await.map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let actual = hex::encode(hasher.finalize());
    if size != entry.size {
        Err(ArtifactError::SizeMismatch {
            key: entry.key.clone(),
            expected: entry.size,
            actual: size,
        })
    } else if actual != entry.sha256 {
        Err(ArtifactError::Sha256Mismatch {
            key: entry.key.clone(),
            expected: entry.sha256.clone(),
            actual,
            source_of_truth: "manifest",
        })
    } else {
        Ok(())
    }
}

/// `pg_restore -f /dev/null` reads the whole archive (`-l` would only read the table of
/// contents and passes on a truncated file).
async fn check_schema_archive(
    bins: &PgBinaries,
    entry: &ObjectEntry,
    file: &SchemaFile,
    timeout: Duration,
) -> Result<(), ArtifactError> {
    PgCommand::new(bins.program("pg_restore"), timeout)
        .arg("--file=/dev/null")
        .arg(file.path())
        .output()
        .await
        .map(|_| ())
        .map_err(|e| ArtifactError::SchemaUnreadable {
            key: entry.key.clone(),
            detail: e.to_string(),
        })
}

/// The schema dump as a local file, which `pg_restore` needs (it seeks): the stored object
/// itself for local storage, else a private temporary copy removed on drop.
pub struct SchemaFile {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl SchemaFile {
    /// # Errors
    /// The object is missing or cannot be copied.
    pub async fn materialize(
        storage: &dyn Storage,
        entry: &ObjectEntry,
    ) -> Result<Self, ArtifactError> {
        let key = ObjectKey::parse(&entry.key)?;
        if let Some(path) = storage.local_path(&key) {
            return Ok(Self { path, _temp: None });
        }
        let io_err = |e| ArtifactError::from_io(&entry.key, e);
        let dir = tempfile::Builder::new()
            .prefix("rbk-schema-")
            .tempdir()
            .map_err(io_err)?;
        let path = dir.path().join("schema.dump");
        let mut file = tokio::fs::File::create(&path).await.map_err(io_err)?;
        let mut reader = storage.open(&key).await.map_err(io_err)?;
        tokio::io::copy(&mut reader, &mut file)
            .await
            .map_err(io_err)?;
        file.sync_all().await.map_err(io_err)?;
        Ok(Self {
            path,
            _temp: Some(dir),
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(tables: &[(&str, &str)]) -> Manifest {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "format": super::super::FORMAT, "backup_uuid": "u", "backup_type": "full",
            "scope": "table", "tenant_id": null, "created_at": "2026-01-01T00:00:00Z",
            "database": "d", "server_version": "15", "server_version_num": 150000,
            "tool_version": "t", "pg_dump_version": "p",
            "snapshot": { "snapshot_id": "s", "xmin": "0", "system_identifier": "0",
                          "taken_at": "2026-01-01T00:00:00Z" },
            "compression": { "codec": "zstd", "level": 3 },
            "schema": { "key": "u/schema.dump", "sha256": "", "size": 0 },
            "tables": [], "sequences": [], "excluded_tables": []
        }))
        .unwrap();
        for (schema, name) in tables {
            m.tables.push(
                serde_json::from_value(serde_json::json!({
                    "schema": schema, "name": name, "key": "u/data/0001.copy.zst", "sha256": "",
                    "size": 0, "raw_size": 0, "rows": 0, "content_hash": "", "columns": [],
                    "primary_key": []
                }))
                .unwrap(),
            );
        }
        m
    }

    const TOC: &str = ";
; Archive created at 2026-01-01
;
215; 1259 16390 TABLE public core_users postgres
216; 1259 16391 TABLE public my table postgres
3350; 0 0 COMMENT public TABLE core_users postgres
3351; 0 0 ACL public TABLE core_users postgres
217; 1259 16392 SEQUENCE public root_users_id_seq postgres
218; 2604 16393 DEFAULT public core_users id postgres
";

    #[test]
    fn comments_grants_and_sequences_are_not_tables_and_names_may_hold_spaces() {
        let m = manifest(&[("public", "core_users"), ("public", "my table")]);
        assert!(schema_tables_match(TOC, &m).is_ok());
    }

    #[test]
    fn a_table_on_either_side_only_is_a_mismatch_naming_it() {
        let missing = manifest(&[("public", "core_users")]);
        let err = schema_tables_match(TOC, &missing).unwrap_err().to_string();
        assert!(err.contains("my table"), "{err}");
        let extra = manifest(&[
            ("public", "core_users"),
            ("public", "my table"),
            ("public", "core_roles"),
        ]);
        let err = schema_tables_match(TOC, &extra).unwrap_err().to_string();
        assert!(
            err.contains("public.core_roles has a data file but no table"),
            "{err}"
        );
    }
}
