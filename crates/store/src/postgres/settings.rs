use sqlx::Row;

use super::error::db;
use super::store::PostgresStore;
use crate::error::StoreError;
use crate::settings::SettingStore;
use crate::text::storable;

#[async_trait::async_trait]
impl SettingStore for PostgresStore {
    async fn setting_or_init(&self, key: &str, init: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        // Two statements on purpose: DO NOTHING waits for a racing insert to
        // commit, and only a later statement's snapshot sees the winner's row.
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(storable(key))
            .bind(init)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(storable(key))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.get("value"))
    }

    async fn setting(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(storable(key))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.map(|row| row.get("value")))
    }
}
