use std::time::SystemTime;

use super::error::{db, is_unique_violation};
use super::store::{SqliteStore, now_ms};
use crate::credentials::{Credential, CredentialKind, CredentialStore};
use crate::error::{Conflict, StoreError};
use crate::rows;
use crate::text::{storable, storable_opt};
use crate::time::unix_ms;

#[async_trait::async_trait]
impl CredentialStore for SqliteStore {
    async fn create_credential(
        &self,
        kind: CredentialKind,
        team: &str,
        subject: &str,
        client_id: &str,
        secret_hash: &[u8],
    ) -> Result<Credential, StoreError> {
        let now = SystemTime::now();
        let result = self.writes.execute(sqlx::query(
            "INSERT INTO credentials (client_id, kind, team, subject, secret_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(storable(client_id))
        .bind(kind.as_str())
        .bind(storable(team))
        .bind(storable(subject))
        .bind(secret_hash)
        .bind(unix_ms(now)))
        .await;
        match result {
            Ok(_) => Ok(Credential {
                client_id: client_id.to_owned(),
                kind,
                team: team.to_owned(),
                subject: subject.to_owned(),
                secret_hash: secret_hash.to_vec(),
                created_at: now,
                revoked_at: None,
            }),
            Err(err) if is_unique_violation(&err) => {
                Err(Conflict::CredentialExists { kind: kind.as_str(), subject: subject.to_owned() }.into())
            }
            Err(err) => Err(db(err)),
        }
    }

    async fn credential(&self, client_id: &str) -> Result<Option<Credential>, StoreError> {
        let row = sqlx::query("SELECT * FROM credentials WHERE client_id = ?")
            .bind(storable(client_id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.map(|row| rows::credential(&row)))
    }

    async fn active_credential(
        &self,
        kind: CredentialKind,
        team: &str,
        subject: &str,
    ) -> Result<Option<Credential>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM credentials WHERE kind = ? AND team = ? AND subject = ? AND revoked_at IS NULL")
                .bind(kind.as_str())
                .bind(storable(team))
                .bind(storable(subject))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(row.map(|row| rows::credential(&row)))
    }

    async fn active_credentials(
        &self,
        kind: CredentialKind,
        team: Option<&str>,
    ) -> Result<Vec<Credential>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM credentials WHERE kind = ?1 AND revoked_at IS NULL AND (?2 IS NULL OR team = ?2) \
             ORDER BY team, subject",
        )
        .bind(kind.as_str())
        .bind(storable_opt(team))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(rows::credential).collect())
    }

    async fn revoke(&self, kind: CredentialKind, team: &str, subject: &str) -> Result<bool, StoreError> {
        let done = self
            .writes
            .execute(
                sqlx::query(
                    "UPDATE credentials SET revoked_at = ? \
                     WHERE kind = ? AND team = ? AND subject = ? AND revoked_at IS NULL",
                )
                .bind(now_ms())
                .bind(kind.as_str())
                .bind(storable(team))
                .bind(storable(subject)),
            )
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}
