use borealis_core::template::{SecretUse, Uses};
use sqlx::Row;

use super::error::db;
use super::store::{SqliteStore, now_ms};
use crate::error::StoreError;
use crate::secrets::{EncryptedSecret, SecretStore, read_uses};
use crate::text::storable;
use crate::time::from_unix_ms;

#[async_trait::async_trait]
impl SecretStore for SqliteStore {
    async fn put_secret_with_uses(
        &self,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
        uses: Option<&Uses>,
    ) -> Result<(), StoreError> {
        self.writes.execute(sqlx::query(
            "INSERT INTO secrets (name, nonce, ciphertext, updated_at, uses) VALUES (?1, ?2, ?3, ?4, COALESCE(?5, 'webhooks')) \
             ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at, \
             uses = COALESCE(?5, secrets.uses)",
        )
        .bind(storable(name))
        .bind(nonce)
        .bind(ciphertext)
        .bind(now_ms())
        .bind(uses.map(SecretUse::join)))
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn secrets(&self) -> Result<Vec<EncryptedSecret>, StoreError> {
        let rows = sqlx::query("SELECT * FROM secrets ORDER BY name").fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows
            .iter()
            .map(|row| EncryptedSecret {
                name: row.get("name"),
                nonce: row.get("nonce"),
                ciphertext: row.get("ciphertext"),
                updated_at: from_unix_ms(row.get("updated_at")),
                uses: read_uses(row.get("uses")),
            })
            .collect())
    }

    async fn delete_secret(&self, name: &str) -> Result<bool, StoreError> {
        let done = self
            .writes
            .execute(sqlx::query("DELETE FROM secrets WHERE name = ?").bind(storable(name)))
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}
