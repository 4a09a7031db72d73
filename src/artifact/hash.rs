//! The content hash of COPY text (docs/design.md "Content hash") and computing it from a query.
//!
//! Rows are lines; the hash is the wrapping sum of `xxh3_64` of each line without its `\n`, so it
//! does not depend on row order and can be updated chunk by chunk whatever the chunk boundaries.

use futures::TryStreamExt;
use sqlx::PgConnection;
use xxhash_rust::xxh3::xxh3_64;

use crate::catalog::{Column, TableRef};
use crate::pg::quote_ident;

/// Session settings under which COPY text is deterministic (docs/design.md). Applied to every
/// connection that produces COPY text that is hashed or stored.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, YMD"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
];

/// Row count and content hash of some COPY text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowDigest {
    pub rows: u64,
    pub sum: u64,
}

impl RowDigest {
    /// The manifest form: 16 lowercase hex digits.
    pub fn content_hash(&self) -> String {
        format!("{:016x}", self.sum)
    }
}

/// Incremental [`RowDigest`] over chunks whose boundaries may fall inside a line.
#[derive(Debug, Default)]
pub struct RowHasher {
    rows: u64,
    sum: u64,
    /// The start of a line whose end has not arrived yet; as long as the longest value.
    partial: Vec<u8>,
}

impl RowHasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk; returns how many lines it completed.
    pub fn update(&mut self, mut chunk: &[u8]) -> u64 {
        let before = self.rows;
        while let Some(end) = memchr::memchr(b'\n', chunk) {
            if self.partial.is_empty() {
                self.add_line(&chunk[..end]);
            } else {
                self.partial.extend_from_slice(&chunk[..end]);
                let line = std::mem::take(&mut self.partial);
                self.add_line(&line);
                // Keep the allocation for the next straddling line.
                self.partial = line;
                self.partial.clear();
            }
            chunk = &chunk[end + 1..];
        }
        self.partial.extend_from_slice(chunk);
        self.rows - before
    }

    pub(super) fn add_line(&mut self, line: &[u8]) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(xxh3_64(line));
    }

    /// The digest so far. An unterminated last line counts as a row, so a truncated stream
    /// never hashes like the complete one.
    pub fn finish(mut self) -> RowDigest {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.add_line(&line);
        }
        RowDigest {
            rows: self.rows,
            sum: self.sum,
        }
    }
}

/// `SELECT <columns> FROM <table> t [WHERE <predicate>]`: the query a data file holds.
pub fn copy_select(table: &TableRef, columns: &[Column], predicate: Option<&str>) -> String {
    let cols = columns
        .iter()
        .map(|c| format!("t.{}", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut sql = format!("SELECT {cols} FROM {} t", table.quoted());
    if let Some(p) = predicate {
        sql.push_str(&format!(" WHERE {p}"));
    }
    sql
}

/// Applies [`SESSION_SETTINGS`] to `conn` for the rest of the session (not `SET LOCAL`: the
/// settings must also hold for the next statements of a worker's session).
///
/// # Errors
/// The statement fails.
pub async fn set_session_settings(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    use crate::pg::quote_literal;
    let calls = SESSION_SETTINGS
        .iter()
        .map(|(k, v)| {
            format!(
                "set_config({}, {}, false)",
                quote_literal(k),
                quote_literal(v)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {calls}");
    sqlx::query(&sql).execute(conn).await?;
    Ok(())
}

/// Rows and content hash of `select` as PostgreSQL returns it now through `conn`: used to prove
/// that restored rows equal the backup's (after a restore, in a drill, and inside a tenant
/// restore's transaction before it commits). The session settings are applied first.
///
/// # Errors
/// The query fails.
#[tracing::instrument(skip_all)]
pub async fn hash_query(conn: &mut PgConnection, select: &str) -> Result<RowDigest, sqlx::Error> {
    set_session_settings(conn).await?;
    let mut hasher = RowHasher::new();
    let mut stream = conn
        .copy_out_raw(&format!("COPY ({select}) TO STDOUT"))
        .await?;
    while let Some(chunk) = stream.try_next().await? {
        hasher.update(&chunk);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(chunks: &[&[u8]]) -> RowDigest {
        let mut h = RowHasher::new();
        for c in chunks {
            h.update(c);
        }
        h.finish()
    }

    #[test]
    fn lines_split_across_chunks_hash_like_whole_lines() {
        let whole = digest_of(&[b"1\tabc\n2\t\\N\n3\tx\\ty\n"]);
        let split = digest_of(&[b"1\ta", b"bc\n2", b"\t\\N\n3\tx\\", b"ty\n"]);
        let bytewise: Vec<&[u8]> = b"1\tabc\n2\t\\N\n3\tx\\ty\n".chunks(1).collect();
        assert_eq!(whole, split);
        assert_eq!(whole, digest_of(&bytewise));
        assert_eq!(whole.rows, 3);
    }

    #[test]
    fn the_hash_ignores_row_order_but_not_content() {
        let a = digest_of(&[b"a\nb\nc\n"]);
        assert_eq!(a, digest_of(&[b"c\na\nb\n"]));
        assert_ne!(a, digest_of(&[b"a\nb\nd\n"]));
        assert_eq!(a.content_hash().len(), 16);
    }

    #[test]
    fn a_truncated_last_line_changes_the_digest() {
        assert_ne!(digest_of(&[b"a\nbc\n"]), digest_of(&[b"a\nb"]));
        assert_eq!(digest_of(&[b""]).rows, 0);
    }

    #[test]
    fn the_select_quotes_names_and_keeps_the_predicate() {
        let col = |n: &str| Column {
            name: n.into(),
            type_name: "integer".into(),
            not_null: false,
            identity: None,
            generated: false,
        };
        let sql = copy_select(
            &TableRef::new("public", "odd\"t"),
            &[col("id"), col("Name")],
            Some("t.\"tenant_id\" = 3"),
        );
        assert_eq!(
            sql,
            "SELECT t.\"id\", t.\"Name\" FROM \"public\".\"odd\"\"t\" t WHERE t.\"tenant_id\" = 3"
        );
    }
}
