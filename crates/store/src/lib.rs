//! Durable state of the relay.
//!
//! SQLite in the data directory by default (WAL mode, schema by migrations in
//! `migrations/`). Everything a relay must not forget across a restart lives
//! here: credentials (secrets only as hashes) and shared settings.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    #[error("invalid database URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("schema migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Lock contention and lost connections may pass; the rest will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("5" | "6" | "517"))
            }
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => true,
            _ => false,
        }
    }
}

/// Who a credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// An agent; the subject is its identifier.
    Agent,
    /// An external system that calls back; the subject is its name.
    Callback,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Agent => "agent",
            CredentialKind::Callback => "callback",
        }
    }

    fn parse(text: &str) -> Self {
        if text == "agent" { CredentialKind::Agent } else { CredentialKind::Callback }
    }
}

#[derive(Debug, Clone)]
pub struct Credential {
    pub client_id: String,
    pub kind: CredentialKind,
    pub subject: String,
    pub secret_hash: Vec<u8>,
    pub created_at: SystemTime,
    pub revoked_at: Option<SystemTime>,
}

impl Credential {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Opens (creating if needed) the SQLite database in `data_dir`.
    pub async fn open_in(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("borealis.db");
        Self::open_sqlite(SqliteConnectOptions::new().filename(path)).await
    }

    /// Opens a database by URL (`sqlite://PATH` or `sqlite::memory:`).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::InvalidUrl {
                url: url.to_owned(),
                reason: "only sqlite: URLs are supported by this build".into(),
            });
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl { url: url.to_owned(), reason: e.to_string() })?;
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
        let in_memory = options.get_filename() == std::path::Path::new(":memory:");
        let pool =
            SqlitePoolOptions::new().max_connections(if in_memory { 1 } else { 8 }).connect_with(options).await?;
        MIGRATIONS.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Reads a setting, first storing `init()` if it is absent. Safe when
    /// several relays start at once: the first writer wins, all read it.
    pub async fn setting_or_init(&self, key: &str, init: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, StoreError> {
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(init())
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT value FROM settings WHERE key = ?").bind(key).fetch_one(&self.pool).await?;
        Ok(row.get("value"))
    }

    /// Stores a new credential. Fails with `Conflict` while `subject` has a live one.
    pub async fn create_credential(
        &self,
        kind: CredentialKind,
        subject: &str,
        client_id: &str,
        secret_hash: &[u8],
    ) -> Result<Credential, StoreError> {
        let now = SystemTime::now();
        let result = sqlx::query(
            "INSERT INTO credentials (client_id, kind, subject, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(client_id)
        .bind(kind.as_str())
        .bind(subject)
        .bind(secret_hash)
        .bind(unix_ms(now))
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(Credential {
                client_id: client_id.to_owned(),
                kind,
                subject: subject.to_owned(),
                secret_hash: secret_hash.to_vec(),
                created_at: now,
                revoked_at: None,
            }),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(StoreError::Conflict(format!(
                "{} {subject:?} already has credentials; revoke them first",
                kind.as_str()
            ))),
            Err(err) => Err(err.into()),
        }
    }

    pub async fn credential(&self, client_id: &str) -> Result<Option<Credential>, StoreError> {
        let row = sqlx::query("SELECT * FROM credentials WHERE client_id = ?")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| credential_from(&row)))
    }

    /// The live credential of `subject`, if any.
    pub async fn active_credential(
        &self,
        kind: CredentialKind,
        subject: &str,
    ) -> Result<Option<Credential>, StoreError> {
        let row = sqlx::query("SELECT * FROM credentials WHERE kind = ? AND subject = ? AND revoked_at IS NULL")
            .bind(kind.as_str())
            .bind(subject)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| credential_from(&row)))
    }

    pub async fn active_credentials(&self, kind: CredentialKind) -> Result<Vec<Credential>, StoreError> {
        let rows = sqlx::query("SELECT * FROM credentials WHERE kind = ? AND revoked_at IS NULL ORDER BY subject")
            .bind(kind.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(credential_from).collect())
    }

    /// Revokes the live credential of `subject`. Returns whether there was one.
    pub async fn revoke(&self, kind: CredentialKind, subject: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE credentials SET revoked_at = ? WHERE kind = ? AND subject = ? AND revoked_at IS NULL")
                .bind(unix_ms(SystemTime::now()))
                .bind(kind.as_str())
                .bind(subject)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn credential_from(row: &sqlx::sqlite::SqliteRow) -> Credential {
    Credential {
        client_id: row.get("client_id"),
        kind: CredentialKind::parse(row.get("kind")),
        subject: row.get("subject"),
        secret_hash: row.get("secret_hash"),
        created_at: from_unix_ms(row.get("created_at")),
        revoked_at: row.get::<Option<i64>, _>("revoked_at").map(from_unix_ms),
    }
}

pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_live_credential_per_subject_and_revocation() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        store.create_credential(CredentialKind::Agent, "rna", "c1", b"h1").await.unwrap();
        let err = store.create_credential(CredentialKind::Agent, "rna", "c2", b"h2").await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("\"rna\"")), "{err}");
        assert!(store.revoke(CredentialKind::Agent, "rna").await.unwrap());
        assert!(!store.credential("c1").await.unwrap().unwrap().is_active());
        store.create_credential(CredentialKind::Agent, "rna", "c2", b"h2").await.unwrap();
        assert_eq!(store.active_credential(CredentialKind::Agent, "rna").await.unwrap().unwrap().client_id, "c2");
    }

    #[tokio::test]
    async fn settings_keep_the_first_value() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        assert_eq!(store.setting_or_init("k", || b"one".to_vec()).await.unwrap(), b"one");
        assert_eq!(store.setting_or_init("k", || b"two".to_vec()).await.unwrap(), b"one");
    }
}
