//! Which [`StoreError`] an sqlx error on SQLite is.

use crate::error::{Conflict, StoreError};

/// SQLite's result codes for "another connection holds the lock" (primary
/// and extended): BUSY, LOCKED, BUSY_RECOVERY, LOCKED_SHAREDCACHE,
/// BUSY_SNAPSHOT, BUSY_TIMEOUT.
const BUSY_OR_LOCKED: [&str; 6] = ["5", "6", "261", "262", "517", "773"];

/// Lock contention, a pool timeout or I/O trouble may pass on a retry; a
/// unique violation is the caller's conflict; the rest is a bug or corruption.
pub(super) fn db(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => StoreError::Unavailable(Box::new(err)),
        sqlx::Error::Database(db) if db.code().is_some_and(|code| BUSY_OR_LOCKED.contains(&code.as_ref())) => {
            StoreError::Unavailable(Box::new(err))
        }
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(Conflict::Duplicate(db.message().to_owned()))
        }
        _ => StoreError::Backend(Box::new(err)),
    }
}

/// Whether the write failed on a uniqueness rule.
pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
