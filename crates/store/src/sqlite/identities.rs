use std::time::SystemTime;

use super::error::{db, is_unique_violation};
use super::store::SqliteStore;
use crate::error::{Conflict, StoreError};
use crate::identities::{IdentityStore, ServiceAccount, Team};
use crate::rows;
use crate::text::storable;
use crate::time::unix_ms;

#[async_trait::async_trait]
impl IdentityStore for SqliteStore {
    async fn create_team(&self, name: &str) -> Result<Team, StoreError> {
        let created_at = SystemTime::now();
        let insert = sqlx::query("INSERT INTO teams (name, created_at) VALUES (?, ?)")
            .bind(storable(name))
            .bind(unix_ms(created_at));
        match self.writes.execute(insert).await {
            Ok(_) => Ok(Team { name: name.to_owned(), created_at, forbid_self_approval: false }),
            Err(err) if is_unique_violation(&err) => Err(Conflict::Duplicate(format!("team {name:?}")).into()),
            Err(err) => Err(db(err)),
        }
    }

    async fn teams(&self) -> Result<Vec<Team>, StoreError> {
        let rows = sqlx::query("SELECT * FROM teams ORDER BY name").fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.iter().map(rows::team).collect())
    }

    async fn team(&self, name: &str) -> Result<Option<Team>, StoreError> {
        let row = sqlx::query("SELECT * FROM teams WHERE name = ?")
            .bind(storable(name))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.as_ref().map(rows::team))
    }

    async fn set_forbid_self_approval(&self, name: &str, forbid: bool) -> Result<bool, StoreError> {
        let update =
            sqlx::query("UPDATE teams SET forbid_self_approval = ? WHERE name = ?").bind(forbid).bind(storable(name));
        Ok(self.writes.execute(update).await.map_err(db)?.rows_affected() > 0)
    }

    async fn create_service_account(&self, account: &ServiceAccount) -> Result<(), StoreError> {
        let roles = serde_json::to_string(&account.roles).expect("names serialize");
        let insert = sqlx::query(
            "INSERT INTO service_accounts (id, team, name, roles, secret_hash, created_at, created_by, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(storable(&account.id))
        .bind(storable(&account.team))
        .bind(storable(&account.name))
        .bind(roles)
        .bind(&account.secret_hash[..])
        .bind(unix_ms(account.created_at))
        .bind(storable(&account.created_by))
        .bind(account.expires_at.map(unix_ms));
        match self.writes.execute(insert).await {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => Err(Conflict::Duplicate(format!(
                "a service account named {:?} in team {:?}; revoke it first",
                account.name, account.team
            ))
            .into()),
            Err(err) => Err(db(err)),
        }
    }

    async fn service_account(&self, id: &str) -> Result<Option<ServiceAccount>, StoreError> {
        let row = sqlx::query("SELECT * FROM service_accounts WHERE id = ?")
            .bind(storable(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.as_ref().map(rows::service_account))
    }

    async fn service_accounts(&self, team: Option<&str>) -> Result<Vec<ServiceAccount>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM service_accounts WHERE ? IS NULL OR team = ? ORDER BY team, name, created_at")
                .bind(team.map(storable))
                .bind(team.map(storable))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(rows.iter().map(rows::service_account).collect())
    }

    async fn revoke_service_account(&self, id: &str, at: SystemTime) -> Result<bool, StoreError> {
        let update = sqlx::query("UPDATE service_accounts SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(unix_ms(at))
            .bind(storable(id));
        Ok(self.writes.execute(update).await.map_err(db)?.rows_affected() > 0)
    }
}
