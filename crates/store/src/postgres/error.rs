//! Which [`StoreError`] an sqlx error on PostgreSQL is.

use crate::error::{Conflict, StoreError};

/// SQLSTATEs a retry may pass: serialization failure and deadlock (another
/// writer won; this backend does not retry them itself), a full disk, out
/// of memory, too many connections, a read-only server (a standby, or
/// `default_transaction_read_only`), a server shutting down or starting,
/// a lock not available.
const RETRYABLE: [&str; 11] =
    ["40001", "40P01", "53100", "53200", "53300", "25006", "57P01", "57P02", "57P03", "57P05", "55P03"];

/// No connection, a pool timeout, I/O trouble, or a lost race with another
/// writer may pass on a retry; a unique violation is the caller's conflict;
/// the rest is a bug or corruption. A connection cut while it is being
/// opened fails in its TLS or protocol handshake (sqlx reads the server's
/// `SSLRequest` answer from a closed socket as "unexpected response"): the
/// database is away, not broken, so those are retryable too.
pub(super) fn db(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => {
            StoreError::Unavailable(Box::new(err))
        }
        sqlx::Error::Database(db) => match db.code() {
            // Class 08: connection exceptions.
            Some(code) if RETRYABLE.contains(&code.as_ref()) || code.starts_with("08") => {
                StoreError::Unavailable(Box::new(err))
            }
            _ if db.is_unique_violation() => StoreError::Conflict(Conflict::Duplicate(db.message().to_owned())),
            _ => StoreError::Backend(Box::new(err)),
        },
        _ => StoreError::Backend(Box::new(err)),
    }
}

/// The unique constraint (or index) a write failed on, if that is why.
pub(super) fn unique_violation(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => Some(db.constraint().unwrap_or("")),
        _ => None,
    }
}
