use borealis_core::template::{SecretUse, Uses};

use super::error::db;
use super::store::{PostgresStore, now_ms};
use crate::error::StoreError;
use crate::rows;
use crate::secrets::{EncryptedSecret, SecretStore};
use crate::text::storable;

#[async_trait::async_trait]
impl SecretStore for PostgresStore {
    async fn put_secret_with_uses(
        &self,
        team: &str,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
        uses: Option<&Uses>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO secrets (team, name, nonce, ciphertext, updated_at, uses) VALUES ($1, $2, $3, $4, $5, COALESCE($6, 'webhooks')) \
             ON CONFLICT (team, name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at, \
             uses = COALESCE($6, secrets.uses)",
        )
        .bind(storable(team))
        .bind(storable(name))
        .bind(nonce)
        .bind(ciphertext)
        .bind(now_ms())
        .bind(uses.map(SecretUse::join))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn secrets(&self) -> Result<Vec<EncryptedSecret>, StoreError> {
        let rows = sqlx::query("SELECT * FROM secrets ORDER BY team, name").fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.iter().map(rows::secret).collect())
    }

    async fn delete_secret(&self, team: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM secrets WHERE team = $1 AND name = $2")
            .bind(storable(team))
            .bind(storable(name))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}
