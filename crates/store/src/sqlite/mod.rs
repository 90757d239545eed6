//! The store on SQLite: one file in the data directory, WAL mode, and
//! `synchronous = FULL` so that what was acknowledged survives a crash.
//! Writes are committed in groups ([`group_commit`]); reads go to the pool.
//! One file per aggregate implements its trait; this backend alone knows
//! sqlx and SQLite's error codes ([`error`]).

mod credentials;
mod deployments;
mod error;
mod group_commit;
mod providers;
mod runs;
mod secrets;
mod settings;
mod store;

pub use store::SqliteStore;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::SqliteStore;
    use crate::conformance::Harness;
    use crate::error::StoreError;

    /// A database file in a directory of its own, removed with it.
    struct TempSqlite(tempfile::TempDir);

    impl TempSqlite {
        fn new() -> Self {
            Self(tempfile::tempdir().unwrap())
        }
    }

    #[async_trait::async_trait]
    impl Harness for TempSqlite {
        type Store = SqliteStore;

        async fn open(&self) -> SqliteStore {
            SqliteStore::open_in(self.0.path()).await.unwrap()
        }
    }

    crate::conformance_suite!(TempSqlite::new());

    #[tokio::test]
    async fn open_picks_the_backend_by_scheme() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::open(None, dir.path()).await.unwrap();
        store.setting_or_init("k", b"v".to_vec()).await.unwrap();
        assert!(dir.path().join("borealis.db").exists(), "no URL: the data directory's file");
        let memory = crate::open(Some("sqlite::memory:"), Path::new("/nonexistent")).await.unwrap();
        assert_eq!(memory.setting_or_init("k", b"m".to_vec()).await.unwrap(), b"m");

        let err = crate::open(Some("postgres://user:secret@db/borealis"), dir.path()).await.err().unwrap();
        assert!(matches!(err, StoreError::UnsupportedScheme { ref scheme, .. } if scheme == "postgres"), "{err}");
        let message = err.to_string();
        assert!(message.contains("\"postgres\"") && message.contains("sqlite"), "{message}");
        assert!(!message.contains("secret"), "the URL is not echoed: {message}");
        let err = crate::open(Some("/var/lib/borealis.db"), dir.path()).await.err().unwrap();
        assert!(matches!(err, StoreError::InvalidUrl(_)), "{err}");
    }
}
