use std::time::SystemTime;

use super::error::db;
use super::store::SqliteStore;
use crate::console::{ConsoleSession, ConsoleSessionStore};
use crate::error::StoreError;
use crate::rows;
use crate::time::unix_ms;

#[async_trait::async_trait]
impl ConsoleSessionStore for SqliteStore {
    async fn create_console_session(&self, session: &ConsoleSession, now: SystemTime) -> Result<(), StoreError> {
        let now = unix_ms(now);
        self.writes
            .execute(sqlx::query("DELETE FROM console_sessions WHERE expires_at <= ?").bind(now))
            .await
            .map_err(db)?;
        let (subject, name, groups) = rows::person_columns(session);
        self.writes
            .execute(
                sqlx::query(
                    "INSERT INTO console_sessions \
                     (id_hash, admin_seal, created_at, expires_at, person_subject, person_name, person_groups) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&session.id_hash)
                .bind(&session.admin_seal)
                .bind(now)
                .bind(unix_ms(session.expires_at))
                .bind(subject)
                .bind(name)
                .bind(groups),
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn console_session(&self, id_hash: &[u8], now: SystemTime) -> Result<Option<ConsoleSession>, StoreError> {
        let row = sqlx::query("SELECT * FROM console_sessions WHERE id_hash = ? AND expires_at > ?")
            .bind(id_hash)
            .bind(unix_ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.map(|row| rows::console_session(&row)))
    }

    async fn end_console_session(&self, id_hash: &[u8]) -> Result<bool, StoreError> {
        let done = self
            .writes
            .execute(sqlx::query("DELETE FROM console_sessions WHERE id_hash = ?").bind(id_hash))
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}
