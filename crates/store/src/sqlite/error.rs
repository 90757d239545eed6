//! Which [`StoreError`] an sqlx error on SQLite is.

use crate::error::{Conflict, StoreError};

/// SQLite's primary result codes a retry may pass (an extended code is one
/// of these in its low byte): BUSY and LOCKED (another connection holds the
/// lock), READONLY (the file or its directory cannot be written now), IOERR
/// (the disk failed a read or write), FULL (the disk is full).
const RETRYABLE: [i64; 5] = [5, 6, 8, 10, 13];

/// Whether SQLite's result `code` (primary or extended) is one a retry may pass.
fn retryable(code: &str) -> bool {
    code.parse::<i64>().is_ok_and(|code| RETRYABLE.contains(&(code & 0xff)))
}

/// Lock contention, a full or read-only disk, a pool timeout or I/O trouble
/// may pass on a retry (space freed, the mount made writable again); a
/// unique violation is the caller's conflict; the rest is a bug or corruption.
pub(super) fn db(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => StoreError::Unavailable(Box::new(err)),
        sqlx::Error::Database(db) if db.code().is_some_and(|code| retryable(&code)) => {
            StoreError::Unavailable(Box::new(err))
        }
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(Conflict::Duplicate(db.message().to_owned()))
        }
        _ => StoreError::Backend(Box::new(err)),
    }
}

/// SQLite's primary result codes for a disk that refuses writes: READONLY,
/// IOERR, FULL.
const DISK_FAULTS: [i64; 3] = [8, 10, 13];

/// Whether a write failed because the disk refused it (full, read-only, an
/// I/O error): the store is not ready until a write lands again.
pub(super) fn is_disk_fault(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => {
            db.code().and_then(|code| code.parse::<i64>().ok()).is_some_and(|code| DISK_FAULTS.contains(&(code & 0xff)))
        }
        _ => false,
    }
}

/// Whether the write failed on a uniqueness rule.
pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
