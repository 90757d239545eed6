//! The SQLite store's handle, how it is opened, and what every aggregate's
//! queries share.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::error::db;
use super::group_commit::GroupCommit;
use crate::error::StoreError;
use crate::store::Lifecycle;
use crate::time::unix_ms;

#[derive(Clone)]
pub struct SqliteStore {
    /// Reads; and the connections the writes are committed on.
    pub(super) pool: SqlitePool,
    pub(super) writes: GroupCommit,
}

pub(super) static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqliteStore {
    /// Opens (creating if needed) `borealis.db` in `data_dir`, readable by its owner only.
    pub async fn open_in(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("borealis.db");
        let store = Self::open_sqlite(SqliteConnectOptions::new().filename(&path)).await?;
        for file in [path.clone(), path.with_extension("db-wal"), path.with_extension("db-shm")] {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
        }
        Ok(store)
    }

    /// Opens a database by URL (`sqlite://PATH` or `sqlite::memory:`).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::InvalidUrl(format!("{url:?} is not a sqlite: URL")));
        }
        let options =
            SqliteConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl(format!("{url:?}: {e}")))?;
        Self::open_sqlite(options).await
    }

    async fn open_sqlite(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // Each connection to `:memory:` is its own database: keep one.
        let in_memory = options.get_filename() == Path::new(":memory:");
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 8 })
            .connect_with(options)
            .await
            .map_err(db)?;
        MIGRATIONS.run(&pool).await.map_err(|e| StoreError::Migration(Box::new(e)))?;
        Ok(Self { writes: GroupCommit::start(pool.clone()), pool })
    }

    /// A read transaction all of whose reads see one commit. SQLite holds a
    /// transaction to the snapshot of its first read until it ends (in WAL
    /// mode by its read mark, in rollback mode by its shared lock), so this
    /// holds whatever the journal mode.
    /// The connection pool, for the copy between backends (`migrate`).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The `id` column of `sql`, which binds a time and a limit: the
    /// candidates a claim then takes one by one.
    pub(super) async fn ids(&self, sql: &'static str, now: SystemTime, limit: u32) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query(sql).bind(unix_ms(now)).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.iter().map(|row| sqlx::Row::get(row, "id")).collect())
    }

    pub(super) async fn snapshot(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool.begin_with("BEGIN DEFERRED").await.map_err(db)
    }
}

#[async_trait::async_trait]
impl Lifecycle for SqliteStore {
    /// Also not ready while the disk refuses writes (full, read-only): the
    /// last commit failed so, and none has landed since (the heartbeat
    /// writes every quarter lease, so one lands soon after space returns).
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db)?;
        match self.writes.fault() {
            Some(fault) => Err(StoreError::Unavailable(format!("writes fail: {fault}").into())),
            None => Ok(()),
        }
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn shared(&self) -> bool {
        false
    }
}

pub(super) fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

crate::rows::sqlx_columns!(sqlx::sqlite::SqliteRow, |row, column| sqlx::Row::get::<Option<i64>, _>(row, column)
    .map(|flag| flag != 0));
