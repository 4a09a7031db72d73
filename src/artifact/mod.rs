//! The artifact format `riveredge-backup/1` (docs/design.md): manifest types, the streaming table
//! writer, the verifying reader, the row hasher and the full verification of a stored backup.
//!
//! Every byte written is hashed on the way (sha256 of what is stored, xxh3 of every row of what
//! was read from PostgreSQL), and every byte read back is checked against the manifest before a
//! reader reports end of file, so corruption surfaces as an I/O error in whatever consumes the
//! stream (a `COPY … FROM STDIN` then fails and its transaction rolls back).

mod hash;
mod reader;
mod verify;
mod writer;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{Column, TableRef};
use crate::storage::{InvalidKey, ObjectKey};

pub use hash::{
    copy_select, hash_query, set_session_settings, RowDigest, RowHasher, SESSION_SETTINGS,
};
pub use reader::{open_table, read_manifest};
pub use verify::{verify, SchemaFile, VerifyReport};
pub use writer::{
    write_manifest, write_schema, write_table, Progress, Sha256Writer, WriteError, WrittenObject,
    WrittenTable,
};

/// The value of [`Manifest::format`]; readers refuse anything else.
pub const FORMAT: &str = "riveredge-backup/1";
/// Key of the schema dump inside a backup's prefix.
pub const SCHEMA_FILE: &str = "schema.dump";
/// Key of the manifest inside a backup's prefix; it is written last.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Everything needed to check and restore one backup; see docs/design.md for each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub backup_uuid: String,
    pub backup_type: String,
    pub scope: String,
    pub tenant_id: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub database: String,
    pub server_version: String,
    pub server_version_num: i32,
    pub tool_version: String,
    pub pg_dump_version: String,
    pub snapshot: SnapshotEntry,
    pub compression: CompressionEntry,
    pub schema: ObjectEntry,
    pub tables: Vec<TableEntry>,
    pub sequences: Vec<SequenceEntry>,
    pub excluded_tables: Vec<ExcludedTable>,
}

/// The exported snapshot every file of the backup was read in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    pub snapshot_id: String,
    /// `pg_snapshot_xmin(pg_current_snapshot())`: the oldest transaction still running then; a
    /// later incremental backup starts from here.
    pub xmin: String,
    /// `pg_control_system().system_identifier`: tells a restore which cluster this came from.
    pub system_identifier: String,
    pub taken_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionEntry {
    pub codec: String,
    pub level: i32,
}

/// A stored object and its integrity data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub key: String,
    pub sha256: String,
    pub size: u64,
}

/// One table's data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub schema: String,
    pub name: String,
    pub key: String,
    /// sha256 of the stored (compressed) bytes.
    pub sha256: String,
    /// Stored (compressed) size.
    pub size: u64,
    /// Size of the COPY text before compression.
    pub raw_size: u64,
    pub rows: u64,
    /// See "Content hash" in docs/design.md: 16 hex digits, order-independent.
    pub content_hash: String,
    /// The copied columns in COPY order, with `format_type()` text.
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    /// The row filter (over alias `t`) of a tenant-scoped copy; `None` for whole tables.
    pub predicate: Option<String>,
}

impl TableEntry {
    pub fn table_ref(&self) -> TableRef {
        TableRef::new(&self.schema, &self.name)
    }

    /// The `SELECT` whose COPY output this file holds, with `t` as the table alias: re-running
    /// it on a restored database must give the same rows and content hash.
    pub fn select(&self) -> String {
        copy_select(&self.table_ref(), &self.columns, self.predicate.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceEntry {
    pub schema: String,
    pub name: String,
    pub last_value: i64,
    pub is_called: bool,
    pub owned_by: Option<SequenceOwner>,
}

impl SequenceEntry {
    pub fn sequence_ref(&self) -> TableRef {
        TableRef::new(&self.schema, &self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceOwner {
    pub schema: String,
    pub table: String,
    pub column: String,
}

/// A table the backup deliberately left out, and why (so the operator can see it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludedTable {
    pub schema: String,
    pub name: String,
    pub reason: String,
}

/// What can be wrong with a stored artifact. Each variant names the object it is about.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("backup {uuid} has no manifest ({key} is missing): it is incomplete or was deleted")]
    MissingManifest { uuid: String, key: String },
    #[error("{key} is missing from storage")]
    Missing { key: String },
    #[error("{key}: sha256 is {actual}, the {source_of_truth} says {expected}")]
    Sha256Mismatch {
        key: String,
        expected: String,
        actual: String,
        source_of_truth: &'static str,
    },
    #[error("{key}: size is {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("{key}: holds {actual} rows, the manifest says {expected}")]
    RowsMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("{key}: content hash is {actual}, the manifest says {expected}")]
    ContentHashMismatch {
        key: String,
        expected: String,
        actual: String,
    },
    #[error("{key}: cannot be decompressed: {detail}")]
    Decode { key: String, detail: String },
    #[error("{key}: not a valid {FORMAT} manifest: {detail}")]
    InvalidManifest { key: String, detail: String },
    #[error("{key}: manifest lists key {listed}, which is outside backup {uuid}")]
    ForeignKey {
        key: String,
        listed: String,
        uuid: String,
    },
    #[error("{key}: pg_restore cannot read the schema dump: {detail}")]
    SchemaUnreadable { key: String, detail: String },
    #[error("{key}: storage error: {source}")]
    Storage { key: String, source: std::io::Error },
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),
}

impl ArtifactError {
    /// Storage errors may pass; everything else is a property of the stored bytes.
    pub fn is_retriable(&self) -> bool {
        // Integrity failures (checksum, decode, row counts) are final; only storage I/O that
        // may recover is worth another read.
        matches!(self, Self::Storage { source, .. } if crate::retry::is_transient_io(source))
    }

    /// Wraps this error into an `io::Error` (kind `InvalidData`) that can be recovered with
    /// [`ArtifactError::from_io`], so integrity failures can travel through `AsyncRead`s.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, self)
    }

    /// The artifact error carried by `e` (see [`ArtifactError::into_io`]), or a storage error
    /// about `key`.
    pub fn from_io(key: &str, e: std::io::Error) -> Self {
        let kind = e.kind();
        if kind == std::io::ErrorKind::NotFound {
            return Self::Missing {
                key: key.to_owned(),
            };
        }
        match e.into_inner() {
            Some(inner) => match inner.downcast::<ArtifactError>() {
                Ok(artifact) => *artifact,
                Err(other) => Self::Storage {
                    key: key.to_owned(),
                    source: std::io::Error::new(kind, other),
                },
            },
            None => Self::Storage {
                key: key.to_owned(),
                source: kind.into(),
            },
        }
    }
}

/// The storage prefix of a backup.
///
/// # Errors
/// `uuid` is not a valid key segment (it never is for a uuid).
pub fn prefix(uuid: &str) -> Result<ObjectKey, InvalidKey> {
    ObjectKey::parse(uuid)
}

/// The key of the `index`th data file of a backup (`<uuid>/data/0001.copy.zst`).
///
/// # Errors
/// `uuid` is not a valid key segment.
pub fn data_key(uuid: &str, index: usize) -> Result<ObjectKey, InvalidKey> {
    prefix(uuid)?.join(&format!("data/{index:04}.copy.zst"))
}
