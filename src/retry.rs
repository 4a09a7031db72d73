//! The one retry rule: which database and I/O failures are worth running the same work again.
//!
//! Transient: the connection was lost or refused, the server is shutting down or starting,
//! a serialization failure, a deadlock, a lock or statement timeout, a storage that is busy or
//! interrupted. Everything else is final: a constraint violation, a missing table, a syntax
//! error, a checksum mismatch fail the same way every time, and retrying them only repeats
//! their cost (a deterministic FK failure used to reload live tables four times).
//!
//! Every engine's error type answers `is_retriable` through these functions, and
//! [`crate::jobs`] maps that answer onto Inngest's retry semantics in one place.

use std::io;

/// SQLSTATEs that a retry can outlive.
const TRANSIENT_SQLSTATES: &[&str] = &[
    "40001", // serialization_failure
    "40P01", // deadlock_detected
    "55P03", // lock_not_available (lock_timeout)
    "57014", // query_canceled (statement_timeout, cancel on shutdown)
    "57P01", // admin_shutdown
    "57P02", // crash_shutdown
    "57P03", // cannot_connect_now (starting up, recovering)
    "53300", // too_many_connections
    "53400", // configuration_limit_exceeded
    "08000", "08003", "08006", "08001", "08004", // connection exceptions
];

/// Whether a database error may go away by itself.
pub fn is_transient_sql(e: &sqlx::Error) -> bool {
    match e {
        // I/O on the connection itself: refused, reset, a socket not there while the server
        // restarts. The server may be back on the next attempt.
        sqlx::Error::Io(_) => true,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| TRANSIENT_SQLSTATES.contains(&code.as_ref())),
        _ => false,
    }
}

/// Whether a storage or process I/O error may go away by itself. A full disk counts: the
/// reaper and retention free space, and an operator can add it.
pub fn is_transient_io(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    matches!(
        e.kind(),
        K::Interrupted
            | K::WouldBlock
            | K::TimedOut
            | K::StorageFull
            | K::ResourceBusy
            | K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::NotConnected
    )
}

/// Errors that know whether a retry can help.
pub trait Retriable {
    fn is_retriable(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_are_classified() {
        assert!(is_transient_io(&io::Error::from(
            io::ErrorKind::ConnectionReset
        )));
        assert!(is_transient_io(&io::Error::from(
            io::ErrorKind::StorageFull
        )));
        assert!(!is_transient_io(&io::Error::from(
            io::ErrorKind::PermissionDenied
        )));
        assert!(!is_transient_io(&io::Error::from(
            io::ErrorKind::InvalidData
        )));
    }

    #[test]
    fn sql_errors_without_a_transient_state_are_final() {
        assert!(is_transient_sql(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient_sql(&sqlx::Error::RowNotFound));
        assert!(!is_transient_sql(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
