//! Which [`StoreError`] an sqlx error on SQLite is.

use crate::error::{Conflict, StoreError};

/// SQLite's primary result codes for a disk that refuses writes: READONLY
/// (the file or its directory cannot be written now), IOERR (the disk failed
/// a read or write), FULL.
const DISK_FAULTS: [i64; 3] = [8, 10, 13];

/// SQLite's primary result codes a retry may pass: BUSY and LOCKED (another
/// connection holds the lock), and the disk faults.
const RETRYABLE: [i64; 5] = [5, 6, DISK_FAULTS[0], DISK_FAULTS[1], DISK_FAULTS[2]];

/// The primary result code of an SQLite error (an extended code is one in
/// its low byte).
fn primary_code(db: &dyn sqlx::error::DatabaseError) -> Option<i64> {
    db.code()?.parse::<i64>().ok().map(|code| code & 0xff)
}

/// Lock contention, a full or read-only disk, a pool timeout or I/O trouble
/// may pass on a retry (space freed, the mount made writable again); a
/// unique violation is the caller's conflict; the rest is a bug or corruption.
pub(super) fn db(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => StoreError::Unavailable(Box::new(err)),
        sqlx::Error::Database(db) if primary_code(db.as_ref()).is_some_and(|code| RETRYABLE.contains(&code)) => {
            StoreError::Unavailable(Box::new(err))
        }
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(Conflict::Duplicate(db.message().to_owned()))
        }
        _ => StoreError::Backend(Box::new(err)),
    }
}

/// Whether a write failed because the disk refused it (full, read-only, an
/// I/O error): the store is not ready until a write lands again.
pub(super) fn is_disk_fault(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => primary_code(db.as_ref()).is_some_and(|code| DISK_FAULTS.contains(&code)),
        _ => false,
    }
}

/// Whether the write failed on a uniqueness rule.
pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
