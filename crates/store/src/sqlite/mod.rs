//! The store on SQLite: one file in the data directory, WAL mode, and
//! `synchronous = FULL` so that what was acknowledged survives a crash.
//! Writes are committed in groups ([`group_commit`]); reads go to the pool.
//! One file per aggregate implements its trait; this backend alone knows
//! sqlx and SQLite's error codes ([`error`]).

mod cluster;
mod console;
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
    use crate::deployments::{DeploymentStore, TargetState};
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

    /// A database made before targets had a position keeps their rowid
    /// order, and a target added after goes last.
    #[tokio::test]
    async fn migration_6_backfills_target_positions_from_rowid() {
        let dir = tempfile::tempdir().unwrap();
        let options =
            sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("borealis.db")).create_if_missing(true);
        let old = sqlx::SqlitePool::connect_with(options).await.unwrap();
        super::store::MIGRATIONS.run_to(5, &old).await.unwrap();
        for (deployment, target) in [("d", "b"), ("e", "x"), ("d", "a"), ("d", "c")] {
            sqlx::query("INSERT OR IGNORE INTO deployments (id, application, file, context, state, created_at, updated_at) VALUES (?, ?, '', '{}', 'running', 0, 0)")
                .bind(deployment)
                .bind(deployment)
                .execute(&old)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO deployment_targets (deployment_id, target, state, updated_at) VALUES (?, ?, 'waiting', 0)",
            )
            .bind(deployment)
            .bind(target)
            .execute(&old)
            .await
            .unwrap();
        }
        old.close().await;

        let store = SqliteStore::open_in(dir.path()).await.unwrap();
        store.set_target("d", "a", TargetState::Running, None, None).await.unwrap();
        store.set_target("d", "0", TargetState::Waiting, None, None).await.unwrap();
        let names = |targets: Vec<crate::TargetRecord>| targets.into_iter().map(|t| t.target).collect::<Vec<_>>();
        assert_eq!(names(store.targets("d").await.unwrap()), ["b", "a", "c", "0"]);
        assert_eq!(names(store.targets("e").await.unwrap()), ["x"]);
    }

    #[tokio::test]
    async fn open_picks_the_backend_by_scheme() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::open(None, dir.path()).await.unwrap();
        store.setting_or_init("k", b"v".to_vec()).await.unwrap();
        assert!(dir.path().join("borealis.db").exists(), "no URL: the data directory's file");
        let memory = crate::open(Some("sqlite::memory:"), Path::new("/nonexistent")).await.unwrap();
        assert_eq!(memory.setting_or_init("k", b"m".to_vec()).await.unwrap(), b"m");

        let err = crate::open(Some("mysql://user:secret@db/borealis"), dir.path()).await.err().unwrap();
        assert!(matches!(err, StoreError::UnsupportedScheme { ref scheme, .. } if scheme == "mysql"), "{err}");
        let message = err.to_string();
        assert!(message.contains("\"mysql\"") && message.contains("sqlite, postgres"), "{message}");
        assert!(!message.contains("secret"), "the URL is not echoed: {message}");
        let err = crate::open(Some("/var/lib/borealis.db"), dir.path()).await.err().unwrap();
        assert!(matches!(err, StoreError::InvalidUrl(_)), "{err}");
    }
}
