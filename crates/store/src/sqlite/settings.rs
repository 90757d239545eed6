use sqlx::Row;

use super::error::db;
use super::store::SqliteStore;
use crate::error::StoreError;
use crate::settings::SettingStore;
use crate::text::storable;

#[async_trait::async_trait]
impl SettingStore for SqliteStore {
    async fn setting_or_init(&self, key: &str, init: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        self.writes
            .execute(
                sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
                    .bind(storable(key))
                    .bind(init),
            )
            .await
            .map_err(db)?;
        let row = sqlx::query("SELECT value FROM settings WHERE key = ?")
            .bind(storable(key))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.get("value"))
    }

    async fn setting(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = ?")
            .bind(storable(key))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.map(|row| row.get("value")))
    }
}
