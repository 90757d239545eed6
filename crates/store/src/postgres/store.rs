//! The PostgreSQL store's handle, how it is opened, and what every
//! aggregate's queries share.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use super::error::db;
use crate::error::StoreError;
use crate::store::Lifecycle;
use crate::time::unix_ms;

/// Several relays may share one database: every write is one statement
/// that is safe against the others (a compare-and-set, an upsert, or a
/// unique index claiming a key), so no write needs a lock of its own.
#[derive(Clone)]
pub struct PostgresStore {
    pub(super) pool: PgPool,
}

pub(super) static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl PostgresStore {
    /// Opens a database by URL (`postgres://` or `postgresql://`; TLS as its
    /// `sslmode` says) and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        // sqlx's messages name the part that is wrong, never the URL (it may hold a password).
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl(format!("not a valid postgres:// URL: {e}")))?;
        Self::open_with(options).await
    }

    /// Opens with `options` and brings the schema up to date. The migrator
    /// holds a Postgres advisory lock while it runs, so relays starting at
    /// once apply each migration once, one after the other.
    pub async fn open_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        Self::open_pool(options, 16).await
    }

    /// [`Self::open_with`] with at most `max_connections` (tests keep few,
    /// so that many at once stay under the server's limit).
    pub(super) async fn open_pool(options: PgConnectOptions, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(db)?;
        MIGRATIONS.run(&pool).await.map_err(|e| StoreError::Migration(Box::new(e)))?;
        Ok(Self { pool })
    }

    /// A read-only transaction whose reads all see one snapshot: in
    /// REPEATABLE READ, Postgres takes it at the first statement and keeps it.
    /// The connection pool, for the copy between backends (`migrate`).
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) async fn snapshot(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(db)
    }
}

#[async_trait::async_trait]
impl Lifecycle for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn shared(&self) -> bool {
        true
    }
}

pub(super) fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

crate::rows::sqlx_columns!(sqlx::postgres::PgRow, |row, column| sqlx::Row::get(row, column));
