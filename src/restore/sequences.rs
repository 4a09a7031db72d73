//! Putting sequences back. The policy, in every restore mode:
//!
//! - **A new database** (fresh restore, drill) gets exactly the backup's values
//!   (`last_value`, `is_called`).
//! - **A live database** (tables or a whole database replaced with `--replace`, a tenant's
//!   rows) never moves a sequence backwards: it ends at the greatest of what the live sequence
//!   has handed out, what the backup's had handed out, and the maximum of every column that
//!   draws from it (owned, identity, or only through `DEFAULT nextval(…)`), so the next
//!   `nextval` cannot collide with a restored or a live row, even in a table without a
//!   primary key where a collision would not be an error but a silent duplicate.
//!
//! "Handed out" follows `is_called`: `last_value` itself when it is true, everything below it
//! when it is false (a fresh sequence at its start value has handed out nothing).

use sqlx::PgConnection;

use crate::artifact::SequenceEntry;
use crate::catalog::TableRef;
use crate::pg::{quote_ident, quote_literal};

/// Sets `seq` to the backup's value exactly (a new database).
///
/// # Errors
/// The sequence does not exist or the value is out of its range.
pub async fn set_exact(conn: &mut PgConnection, seq: &SequenceEntry) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT setval($1::regclass, $2, $3)")
        .bind(seq.sequence_ref().quoted())
        .bind(seq.last_value)
        .bind(seq.is_called)
        .execute(conn)
        .await?;
    Ok(())
}

/// The highest value a sequence state has handed out.
pub fn handed_out(last_value: i64, is_called: bool) -> i64 {
    if is_called {
        last_value
    } else {
        last_value.saturating_sub(1)
    }
}

/// Moves `seq` forward (never backwards) to the greatest of its own handed-out value,
/// `backup` (the backup's `last_value`, `is_called`) and the maximum of every column in
/// `users`. Returns whether it moved.
///
/// # Errors
/// Query failures (a user table that does not exist, a value beyond the sequence's maximum).
pub async fn advance(
    conn: &mut PgConnection,
    seq: &TableRef,
    users: &[(TableRef, String)],
    backup: Option<(i64, bool)>,
) -> Result<bool, sqlx::Error> {
    let select = format!(
        "setval({}::regclass, g.v, true)",
        quote_literal(&seq.quoted())
    );
    let moved = sqlx::query(&forward_move(&select, seq, users))
        .bind(backup.map(|(v, called)| handed_out(v, called)))
        .execute(conn)
        .await?
        .rows_affected();
    Ok(moved > 0)
}

/// Where [`advance`] would move `seq`, without moving it: `(last handed out, new value)`, or
/// `None` when it would stay (a preview; `setval` is not undone by a rollback).
///
/// # Errors
/// Query failures, as for [`advance`].
pub async fn movement(
    conn: &mut PgConnection,
    seq: &TableRef,
    users: &[(TableRef, String)],
    backup: Option<(i64, bool)>,
) -> Result<Option<(i64, i64)>, sqlx::Error> {
    sqlx::query_as(&forward_move("s.used, g.v", seq, users))
        .bind(backup.map(|(v, called)| handed_out(v, called)))
        .fetch_optional(conn)
        .await
}

/// `SELECT <select>` over the one row that exists only when `seq` must move forward: `g.v` is
/// the greatest of `$1` (the backup's handed-out value) and every user column's max, `s.used`
/// what the sequence has handed out. `greatest` ignores NULLs: empty tables and a missing
/// backup value do not count.
fn forward_move(select: &str, seq: &TableRef, users: &[(TableRef, String)]) -> String {
    let mut candidates: Vec<String> = users
        .iter()
        .map(|(t, c)| {
            format!(
                "(SELECT max({})::bigint FROM {})",
                quote_ident(c),
                t.quoted()
            )
        })
        .collect();
    candidates.push("$1::bigint".to_owned());
    // language=PostgreSQL
    format!(
        "SELECT {select}
         FROM (SELECT greatest({candidates}) AS v) g,
              (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS used FROM {seq}) s
         WHERE g.v > s.used",
        candidates = candidates.join(", "),
        seq = seq.quoted(),
    )
}

#[cfg(test)]
mod tests {
    use super::handed_out;

    #[test]
    fn a_sequence_that_was_never_called_has_handed_out_nothing_at_its_value() {
        assert_eq!(handed_out(1, false), 0);
        assert_eq!(handed_out(7, true), 7);
        assert_eq!(handed_out(i64::MIN, false), i64::MIN);
    }
}
