//! The artifact format `riveredge-backup/2` (docs/design.md): manifest types, the streaming table
//! writer, the verifying reader, the row hasher and the full verification of a stored backup.
//!
//! Every byte written is hashed on the way (sha256 of what is stored, xxh3 of every row of what
//! was read from PostgreSQL), and every byte read back is checked against the manifest before a
//! reader reports end of file, so corruption surfaces as an I/O error in whatever consumes the
//! stream (a `COPY … FROM STDIN` then fails and its transaction rolls back).

mod delta;
mod hash;
mod plan;
mod reader;
mod verify;
mod writer;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{Column, TableRef};
use crate::storage::{InvalidKey, ObjectKey};

pub use delta::{write_delta, WrittenDelta};
pub use hash::{
    copy_select, hash_query, set_session_settings, RowDigest, RowHasher, SESSION_SETTINGS,
};
pub use plan::{OwnedTableEntry, OwnershipLink, OwnershipPlan, OwnershipRule};
pub use reader::{open_table, read_manifest};
pub use verify::{verify, SchemaFile, VerifyReport};
pub use writer::{
    write_manifest, write_schema, write_table, Progress, Sha256Writer, WriteError, WrittenObject,
    WrittenTable,
};

/// The value of [`Manifest::format`] this version writes. Version 2 added the typed ownership
/// plan ([`Manifest::ownership`], replacing per-table SQL predicates) and the columns that
/// draw from each sequence ([`SequenceEntry::used_by`]).
pub const FORMAT: &str = "riveredge-backup/2";
/// The previous format, still read: its tenant artifacts carry SQL predicates, which a tenant
/// restore accepts only when the live schema generates exactly the same text.
pub const FORMAT_V1: &str = "riveredge-backup/1";

/// Whether this version can read manifests of `format`.
pub fn is_readable_format(format: &str) -> bool {
    format == FORMAT || format == FORMAT_V1
}
/// Key of the schema dump inside a backup's prefix.
pub const SCHEMA_FILE: &str = "schema.dump";
/// Key of the manifest inside a backup's prefix; it is written last, once, and deleted first
/// (storage knows it as the completion marker).
pub const MANIFEST_FILE: &str = crate::storage::COMPLETION_MARKER;

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
    /// Tenant-filtered artifacts (format 2): how every filtered table's rows belong to the
    /// tenant. `None` for unfiltered backups and format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<OwnershipPlan>,
    /// The backup an incremental builds on (`None` for a full); see docs/incremental.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_uuid: Option<String>,
    /// The full at the root of the chain (a full names itself). `None` before chains existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_uuid: Option<String>,
    /// Where the snapshot stood: the next incremental starts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// Why an incremental request was taken as a full (`backup_type` is `full` then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

/// The snapshot's position, recorded by every backup so the next incremental can tell whether
/// it may build on this one (docs/incremental.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// `pg_snapshot_xmin` of the snapshot as xid8 (decimal): every older transaction had ended.
    pub xmin: u64,
    /// `pg_snapshot_xmax` of the snapshot as xid8: every transaction from here on is invisible.
    pub xmax: u64,
    pub system_identifier: String,
    /// `pg_control_checkpoint().timeline_id`: a promoted standby or a PITR starts a new one.
    pub timeline: i64,
    /// `pg_relation_filenode` of every leaf table of the backup (`schema.table` → filenode):
    /// `TRUNCATE`, `VACUUM FULL`, `CLUSTER` and rewriting `ALTER`s change it, and none of them
    /// leaves an xmin trace, so a change forces a full.
    pub filenodes: std::collections::BTreeMap<String, i64>,
}

impl Manifest {
    /// The row filter (over alias `t`) a data file was selected with: generated from the typed
    /// plan (format 2), or the stored text (format 1); `None` for whole tables.
    pub fn predicate_of(&self, entry: &TableEntry) -> Option<String> {
        match (&self.ownership, self.tenant_id) {
            (Some(plan), Some(tenant)) => {
                crate::tenant::predicate::predicate(plan, tenant, &entry.table_ref(), "t")
            }
            _ => entry.predicate.clone(),
        }
    }

    /// The `SELECT` whose COPY output `entry`'s file holds (see [`TableEntry::select`]).
    pub fn select_of(&self, entry: &TableEntry) -> String {
        copy_select(
            &entry.table_ref(),
            &entry.columns,
            self.predicate_of(entry).as_deref(),
        )
    }
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
    /// Format 1 only: the row filter (over alias `t`) of a tenant-scoped copy as SQL text.
    /// Format 2 writes `None` and keeps the typed plan in [`Manifest::ownership`] instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<String>,
    /// Incremental backups only: what the data file holds relative to the parent, and the
    /// table's state at the snapshot. `None`: the file holds the table (full backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<TableDelta>,
}

/// One table of an incremental backup (docs/incremental.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDelta {
    pub mode: DeltaMode,
    /// Rows of the table (of the scope) at the snapshot: what the restored chain must hold.
    pub state_rows: u64,
    /// Content hash of the table (of the scope) at the snapshot, like a full's `content_hash`.
    pub state_content_hash: String,
    /// Mode `changes`: the sorted primary keys of every row at the snapshot (COPY text of the
    /// key columns); a restored row whose key is not here was deleted since the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Box<TableEntry>>,
}

/// What an incremental's data file holds for one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaMode {
    /// Every row whose xmin is at or after the parent's snapshot xmin (possibly changed):
    /// upserted by primary key over the parent's state.
    Changes,
    /// The whole table (of the scope): no primary key, or rows that can join a tenant without
    /// changing themselves. Replaces the parent's rows.
    Whole,
}

impl TableEntry {
    pub fn table_ref(&self) -> TableRef {
        TableRef::new(&self.schema, &self.name)
    }

    /// The whole table's rows in COPY order: what a database holding only this file's rows
    /// (a restore into a new database, a drill) must give back. Filtered files are re-read
    /// in a shared database through [`Manifest::select_of`].
    pub fn select_all(&self) -> String {
        copy_select(&self.table_ref(), &self.columns, None)
    }

    /// This entry with the rows and content hash the table has at the snapshot: the data
    /// file's own for a full, the recorded state for an incremental. What a restore compares
    /// the restored table with.
    #[must_use]
    pub fn as_of_snapshot(&self) -> Self {
        let mut out = self.clone();
        if let Some(delta) = &self.delta {
            out.rows = delta.state_rows;
            out.content_hash = delta.state_content_hash.clone();
        }
        out
    }
}

impl Manifest {
    /// The primary-key lists of an incremental's tables (none for a full).
    pub fn key_lists(&self) -> impl Iterator<Item = &TableEntry> {
        self.tables
            .iter()
            .filter_map(|t| t.delta.as_ref().and_then(|d| d.keys.as_deref()))
    }

    /// Whether restoring this backup needs its chain (an incremental).
    pub fn is_incremental(&self) -> bool {
        self.backup_type == "incremental"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceEntry {
    pub schema: String,
    pub name: String,
    pub last_value: i64,
    pub is_called: bool,
    pub owned_by: Option<SequenceOwner>,
    /// Every column that draws from the sequence (owner and `nextval`
    /// defaults): a restore into a live database keeps the sequence above their maximum.
    /// Empty in format 1 (then only `owned_by` is known).
    #[serde(default)]
    pub used_by: Vec<SequenceOwner>,
}

impl SequenceEntry {
    pub fn sequence_ref(&self) -> TableRef {
        TableRef::new(&self.schema, &self.name)
    }

    /// The columns drawing from it: `used_by`, or the owner for format 1 manifests.
    pub fn users(&self) -> Vec<(TableRef, String)> {
        let users = if self.used_by.is_empty() {
            self.owned_by.iter().collect::<Vec<_>>()
        } else {
            self.used_by.iter().collect()
        };
        users
            .into_iter()
            .map(|u| (TableRef::new(&u.schema, &u.table), u.column.clone()))
            .collect()
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
    #[error("{key}: the schema dump and the manifest disagree: {detail}")]
    SchemaMismatch { key: String, detail: String },
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

/// The key of the `index`th table's primary-key list of an incremental
/// (`<uuid>/data/0001.keys.zst`).
///
/// # Errors
/// `uuid` is not a valid key segment.
pub fn keys_key(uuid: &str, index: usize) -> Result<ObjectKey, InvalidKey> {
    prefix(uuid)?.join(&format!("data/{index:04}.keys.zst"))
}
