//! Incremental backups (docs/incremental.md): the parent, whether an incremental is safe
//! (otherwise a full that says why), the snapshot's position, and the capture of one table.
//!
//! A row is *possibly changed* when its xmin lies in `[parent xmin, this xmax)`: every older
//! transaction had ended before the parent's snapshot, so its rows are in the parent (or were
//! aborted). Transactions still running at the parent's snapshot, and their subtransactions,
//! have xids at or above the parent's xmin, so they are caught whenever they commit. Deleted
//! rows are found at restore by the primary-key list every incremental stores.

use std::collections::BTreeMap;

use sqlx::PgConnection;

use super::selection::SelectedTable;
use super::{BackupError, BackupScope, ValidatedSpec};
use crate::artifact::{self, ArtifactError, Manifest, Position, TableEntry};
use crate::catalog::TableRef;
use crate::startup::AppState;
use crate::storage::ObjectKey;

/// An incremental is refused (a full is taken) once the xid distance to the parent reaches
/// this: far below 2³¹, where 32-bit xmin comparisons stop being meaningful.
pub const MAX_XID_DISTANCE: u64 = 1 << 30;

/// The longest chain (the full included) an incremental may extend; longer ones restart.
pub const MAX_CHAIN: usize = 64;

/// What this backup builds on.
#[derive(Debug, Clone)]
pub(super) enum Plan {
    /// A full; `Some(reason)` when an incremental was asked for.
    Full(Option<String>),
    Incremental(Box<Parent>),
}

#[derive(Debug, Clone)]
pub(super) struct Parent {
    pub uuid: String,
    pub chain_uuid: String,
    pub manifest: Manifest,
    pub position: Position,
}

/// The xmin window of possibly changed rows, as 32-bit xids.
#[derive(Debug, Clone, Copy)]
pub(super) struct Capture {
    /// The parent's snapshot xmin modulo 2³².
    pub low: u64,
    /// This snapshot's xmax minus the parent's xmin (below [`MAX_XID_DISTANCE`]).
    pub span: u64,
}

impl Capture {
    pub(super) fn new(parent: &Position, now: &Position) -> Self {
        Self {
            low: parent.xmin % (1 << 32),
            span: now.xmax - parent.xmin,
        }
    }

    /// The flag column: whether row `t`'s xmin is in the window (modular, so an epoch boundary
    /// inside the window is fine; frozen xids outside it only add rows).
    pub(super) fn flag_sql(&self) -> String {
        format!(
            "((t.xmin::text::bigint - {low} + 4294967296) % 4294967296 < {span})",
            low = self.low,
            span = self.span
        )
    }
}

/// Before the snapshot: a full for full requests; for incremental ones the parent and its
/// chain, each manifest matching its row and every file present with its size — or a full
/// with the reason.
///
/// # Errors
/// Database errors and storage errors that may pass (a retry decides again).
pub(super) async fn plan(state: &AppState, validated: &ValidatedSpec) -> Result<Plan, BackupError> {
    let spec = &validated.spec;
    if spec.backup_type == super::BackupType::Full {
        return Ok(Plan::Full(None));
    }
    let tables = (!spec.tables.is_empty()).then_some(spec.tables.as_slice());
    let row = crate::db::backups::latest_success(
        &state.pool,
        &spec.uuid,
        spec.scope.as_str(),
        spec.tenant_id,
        tables,
    )
    .await
    .map_err(BackupError::db("looking for the parent backup"))?;
    let Some(row) = row else {
        return Ok(Plan::Full(Some(
            "no earlier successful backup of this scope to build on".into(),
        )));
    };
    let manifest = match check_chain(state, &row.uuid, row.checksum.as_deref()).await? {
        Ok(manifest) => manifest,
        Err(reason) => return Ok(Plan::Full(Some(reason))),
    };
    let Some(position) = manifest.position.clone() else {
        return Ok(Plan::Full(Some(format!(
            "parent {} has no recorded position (taken before incremental backups)",
            row.uuid
        ))));
    };
    let chain_uuid = manifest
        .chain_uuid
        .clone()
        .unwrap_or_else(|| row.uuid.clone());
    Ok(Plan::Incremental(Box::new(Parent {
        uuid: row.uuid,
        chain_uuid,
        manifest,
        position,
    })))
}

/// Walks from `uuid` up to its full: every member a successful row whose manifest has the
/// recorded checksum and whose files all exist with their recorded sizes. Returns the first
/// manifest, or why the chain cannot be built on. (Reading every byte is the restore's job,
/// which verifies each member as it streams; doing it hourly would cost as much as a full.)
async fn check_chain(
    state: &AppState,
    uuid: &str,
    checksum: Option<&str>,
) -> Result<Result<Manifest, String>, BackupError> {
    let mut first = None;
    let (mut next, mut sha) = (Some(uuid.to_owned()), checksum.map(str::to_owned));
    let mut length = 0;
    while let Some(current) = next.take() {
        length += 1;
        if length > MAX_CHAIN {
            return Ok(Err(format!(
                "the chain of {uuid} is longer than {MAX_CHAIN} backups"
            )));
        }
        let manifest = match check_member(state, &current, sha.as_deref()).await? {
            Ok(m) => m,
            Err(problem) => {
                return Ok(Err(format!(
                    "parent chain member {current} failed verification: {problem}"
                )))
            }
        };
        if let Some(parent) = &manifest.parent_uuid {
            let row = crate::db::backups::get(&state.pool, parent)
                .await
                .map_err(BackupError::db("reading a parent backup"))?;
            match row {
                Some(r) if r.status == "success" => sha = r.checksum,
                _ => return Ok(Err(format!("parent chain member {parent} is gone"))),
            }
            next = Some(parent.clone());
        }
        first.get_or_insert(manifest);
    }
    Ok(first.ok_or_else(|| "empty chain".to_owned()))
}

async fn check_member(
    state: &AppState,
    uuid: &str,
    sha: Option<&str>,
) -> Result<Result<Manifest, String>, BackupError> {
    let storage = state.storage.as_ref();
    let manifest = match artifact::read_manifest(storage, uuid, sha).await {
        Ok((m, _)) => m,
        Err(e) if e.is_retriable() => return Err(e.into()),
        Err(e) => return Ok(Err(e.to_string())),
    };
    let objects = std::iter::once((&manifest.schema.key, manifest.schema.size)).chain(
        manifest
            .tables
            .iter()
            .chain(manifest.key_lists())
            .map(|t| (&t.key, t.size)),
    );
    for (key, size) in objects {
        let parsed = ObjectKey::parse(key).map_err(|e| BackupError::Internal(e.to_string()))?;
        match storage.size(&parsed).await {
            Ok(Some(found)) if found == size => {}
            Ok(Some(found)) => {
                return Ok(Err(format!(
                    "{key} holds {found} bytes, the manifest says {size}"
                )))
            }
            Ok(None) => return Ok(Err(ArtifactError::Missing { key: key.clone() }.to_string())),
            Err(e) if crate::retry::is_transient_io(&e) => return Err(BackupError::storage(e)),
            Err(e) => return Ok(Err(format!("{key}: {e}"))),
        }
    }
    Ok(Ok(manifest))
}

/// After the snapshot: an incremental stays one only if nothing the xmin capture cannot see
/// happened since the parent. Otherwise a full, with the reason.
pub(super) fn confirm(plan: Plan, now: &Position, validated: &ValidatedSpec) -> Plan {
    let Plan::Incremental(parent) = plan else {
        return plan;
    };
    match unsafe_because(&parent, now, validated) {
        Some(reason) => Plan::Full(Some(reason)),
        None => Plan::Incremental(parent),
    }
}

fn unsafe_because(parent: &Parent, now: &Position, validated: &ValidatedSpec) -> Option<String> {
    let before = &parent.position;
    if before.system_identifier != now.system_identifier {
        return Some(format!(
            "the database cluster changed (system identifier {} → {})",
            before.system_identifier, now.system_identifier
        ));
    }
    if before.timeline != now.timeline {
        return Some(format!(
            "the timeline changed ({} → {}): a failover or point-in-time recovery",
            before.timeline, now.timeline
        ));
    }
    if now.xmin < before.xmin {
        return Some(format!(
            "transaction ids went backwards ({} → {})",
            before.xmin, now.xmin
        ));
    }
    if now.xmax - before.xmin >= MAX_XID_DISTANCE {
        return Some(format!(
            "{} transactions since the parent: too far for xmin comparisons (limit {MAX_XID_DISTANCE})",
            now.xmax - before.xmin
        ));
    }
    if let Some(changed) = schema_change(&parent.manifest, validated) {
        return Some(format!("the schema changed since the parent: {changed}"));
    }
    if before.filenodes != now.filenodes {
        let tables: Vec<&String> = now
            .filenodes
            .iter()
            .filter(|(t, f)| before.filenodes.get(*t) != Some(*f))
            .map(|(t, _)| t)
            .chain(
                before
                    .filenodes
                    .keys()
                    .filter(|t| !now.filenodes.contains_key(*t)),
            )
            .collect();
        return Some(format!(
            "tables were truncated or rewritten since the parent (TRUNCATE, VACUUM FULL, CLUSTER or a rewriting ALTER): {}",
            tables.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    None
}

/// A table's copied columns (name, type) and primary key: what an incremental must share
/// with its parent.
type Shape = (Vec<(String, String)>, Vec<String>);

/// Tables, their copied columns (names and types), primary keys, and for tenant backups the
/// ownership plan: any difference from the parent.
fn schema_change(parent: &Manifest, validated: &ValidatedSpec) -> Option<String> {
    let ours: BTreeMap<TableRef, Shape> = validated
        .selection
        .tables
        .iter()
        .map(|s| {
            let cols = s
                .table
                .copy_columns()
                .map(|c| (c.name.clone(), c.type_name.clone()))
                .collect();
            (s.table.table.clone(), (cols, s.table.primary_key.clone()))
        })
        .collect();
    let theirs: BTreeMap<TableRef, Shape> = parent
        .tables
        .iter()
        .map(|t| {
            let cols = t
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.type_name.clone()))
                .collect();
            (t.table_ref(), (cols, t.primary_key.clone()))
        })
        .collect();
    for (table, shape) in &ours {
        match theirs.get(table) {
            None => return Some(format!("{table} is new")),
            Some(old) if old != shape => {
                return Some(format!("columns or primary key of {table} changed"))
            }
            Some(_) => {}
        }
    }
    if let Some(gone) = theirs.keys().find(|t| !ours.contains_key(*t)) {
        return Some(format!("{gone} is gone"));
    }
    if validated.spec.scope == BackupScope::Tenant {
        let tables = validated.selection.table_refs();
        let plan = super::dump::ownership_plan(validated, &tables);
        if plan != parent.ownership {
            return Some("the foreign keys that attribute rows to the tenant changed".into());
        }
    }
    None
}

/// The position of the snapshot `conn` holds (the coordinator, after the export), with the
/// filenodes of every leaf table of `tables`.
///
/// # Errors
/// Database errors.
pub(super) async fn position(
    conn: &mut PgConnection,
    system_identifier: &str,
    tables: &[TableRef],
) -> Result<Position, BackupError> {
    let (xmin, xmax, timeline): (String, String, i64) = sqlx::query_as(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text,
                pg_snapshot_xmax(pg_current_snapshot())::text,
                (SELECT timeline_id::bigint FROM pg_control_checkpoint())",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(BackupError::db("reading the snapshot position"))?;
    let quoted: Vec<String> = tables.iter().map(TableRef::quoted).collect();
    // language=PostgreSQL
    // A plain table is its own leaf; a partitioned one has its partitions' files.
    let filenodes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT format('%s.%s', n.nspname, c.relname), pg_relation_filenode(c.oid)::bigint
         FROM unnest($1::text[]) s(name)
         JOIN pg_class top ON top.oid = s.name::regclass
         CROSS JOIN LATERAL (
             SELECT top.oid WHERE top.relkind = 'r'
             UNION SELECT p.relid FROM pg_partition_tree(top.oid) p WHERE p.isleaf
         ) leaf(oid)
         JOIN pg_class c ON c.oid = leaf.oid JOIN pg_namespace n ON n.oid = c.relnamespace",
    )
    .bind(&quoted)
    .fetch_all(&mut *conn)
    .await
    .map_err(BackupError::db("reading the table filenodes"))?;
    let parse = |v: &str| {
        v.parse::<u64>()
            .map_err(|_| BackupError::Internal(format!("xid8 {v:?}")))
    };
    Ok(Position {
        xmin: parse(&xmin)?,
        xmax: parse(&xmax)?,
        system_identifier: system_identifier.to_owned(),
        timeline,
        filenodes: filenodes.into_iter().collect(),
    })
}

/// Whether `table` must be captured whole in an incremental: no primary key (nothing to upsert
/// or delete by), a key column that is not copied, or tenant rows reached through foreign keys
/// (they join or leave the tenant when a parent row changes, without changing themselves).
pub(super) fn captured_whole(table: &SelectedTable) -> bool {
    let t = &table.table;
    let copied: Vec<&str> = t.copy_columns().map(|c| c.name.as_str()).collect();
    t.primary_key.is_empty()
        || t.primary_key.iter().any(|k| !copied.contains(&k.as_str()))
        || (table.predicate.is_some() && !t.has_tenant_id())
}

/// The positions of the primary-key columns among the copied columns.
pub(super) fn key_fields(table: &SelectedTable) -> Vec<usize> {
    let copied: Vec<&str> = table
        .table
        .copy_columns()
        .map(|c| c.name.as_str())
        .collect();
    table
        .table
        .primary_key
        .iter()
        .filter_map(|k| copied.iter().position(|c| c == k))
        .collect()
}

/// The key list's entry: a table entry of the key columns.
pub(super) fn keys_entry(table: &SelectedTable, written: &artifact::WrittenTable) -> TableEntry {
    let t = &table.table;
    let columns = t
        .primary_key
        .iter()
        .filter_map(|k| t.column(k).cloned())
        .collect();
    TableEntry {
        schema: t.table.schema.clone(),
        name: t.table.name.clone(),
        key: written.object.key.clone(),
        sha256: written.object.sha256.clone(),
        size: written.object.size,
        raw_size: written.raw_size,
        rows: written.digest.rows,
        content_hash: written.digest.content_hash(),
        columns,
        primary_key: t.primary_key.clone(),
        predicate: None,
        delta: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{BackupSpec, BackupType, Selection};
    use crate::catalog::Catalog;

    fn position(xmin: u64, xmax: u64) -> Position {
        Position {
            xmin,
            xmax,
            system_identifier: "7000".into(),
            timeline: 1,
            filenodes: BTreeMap::from([("public.t".to_owned(), 16_400)]),
        }
    }

    fn parent(position: Position) -> Parent {
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "format": artifact::FORMAT, "backup_uuid": "p", "backup_type": "full",
            "scope": "table", "tenant_id": null, "created_at": "2026-01-01T00:00:00Z",
            "database": "d", "server_version": "15", "server_version_num": 150000,
            "tool_version": "t", "pg_dump_version": "p",
            "snapshot": { "snapshot_id": "s", "xmin": "0", "system_identifier": "7000",
                          "taken_at": "2026-01-01T00:00:00Z" },
            "compression": { "codec": "zstd", "level": 3 },
            "schema": { "key": "p/schema.dump", "sha256": "", "size": 0 },
            "tables": [], "sequences": [], "excluded_tables": []
        }))
        .unwrap();
        Parent {
            uuid: "p".into(),
            chain_uuid: "p".into(),
            manifest,
            position,
        }
    }

    fn validated() -> ValidatedSpec {
        ValidatedSpec {
            spec: BackupSpec {
                uuid: "c".into(),
                backup_type: BackupType::Incremental,
                scope: BackupScope::Table,
                tenant_id: None,
                tables: vec!["t".into()],
            },
            catalog: Catalog::default(),
            selection: Selection {
                tables: vec![],
                excluded: vec![],
                sequences: vec![],
            },
        }
    }

    fn reason(before: Position, now: Position) -> Option<String> {
        unsafe_because(&parent(before), &now, &validated())
    }

    #[test]
    fn an_unchanged_cluster_close_in_xids_allows_an_incremental() {
        assert_eq!(reason(position(1000, 1005), position(1200, 1300)), None);
    }

    #[test]
    fn another_cluster_a_new_timeline_or_far_or_backward_xids_force_a_full() {
        let mut other = position(1200, 1300);
        other.system_identifier = "8000".into();
        assert!(reason(position(1000, 1005), other)
            .unwrap()
            .contains("cluster changed"));
        let mut promoted = position(1200, 1300);
        promoted.timeline = 2;
        assert!(reason(position(1000, 1005), promoted)
            .unwrap()
            .contains("timeline changed"));
        assert!(reason(position(1000, 1005), position(900, 950))
            .unwrap()
            .contains("backwards"));
        let far = position(1000 + MAX_XID_DISTANCE, 1000 + MAX_XID_DISTANCE);
        assert!(reason(position(1000, 1005), far)
            .unwrap()
            .contains("too far"));
        let mut truncated = position(1200, 1300);
        truncated.filenodes.insert("public.t".into(), 16_500);
        assert!(reason(position(1000, 1005), truncated)
            .unwrap()
            .contains("public.t"));
    }

    #[test]
    fn the_xmin_window_wraps_around_the_32_bit_epoch_boundary() {
        // Parent xmin just below an epoch boundary (xid8 2^32 - 10), now 20 xids later.
        let before = position((1 << 32) - 10, (1 << 32) - 5);
        let now = position((1 << 32) + 5, (1 << 32) + 10);
        let c = Capture::new(&before, &now);
        assert_eq!((c.low, c.span), ((1 << 32) - 10, 20));
        let inside = |xmin: u64| (xmin + (1 << 32) - c.low) % (1 << 32) < c.span;
        assert!(inside((1 << 32) - 10), "the parent's xmin itself");
        assert!(inside(3), "an xid of the next epoch");
        assert!(!inside((1 << 32) - 11), "older than the parent's xmin");
        assert!(!inside(10), "at or after this snapshot's xmax");
        assert!(c.flag_sql().contains("4294967286"));
    }
}
