use std::time::SystemTime;

use super::error::{db, is_unique_violation};
use super::store::SqliteStore;
use crate::error::{Conflict, StoreError};
use crate::identities::{IdentityStore, PersonalToken, RoleBinding, ServiceAccount, Team};
use crate::rows;
use crate::text::storable;
use crate::time::unix_ms;

/// A person's bindings: theirs (by subject), and their groups' (a JSON
/// array, so one statement whatever their number); each arm is read
/// through the index on (subject_kind, subject).
pub(super) const BINDINGS_OF: &str = "SELECT * FROM role_bindings \
     WHERE (subject_kind = 'user' AND subject = ?) \
     OR (subject_kind = 'group' AND subject IN (SELECT value FROM json_each(?))) \
     ORDER BY team, role, subject_kind, subject";

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

    async fn create_role_binding(&self, binding: &RoleBinding) -> Result<(), StoreError> {
        let insert = sqlx::query(
            "INSERT INTO role_bindings (id, team, subject_kind, subject, role, created_at, created_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(storable(&binding.id))
        .bind(storable(&binding.team))
        .bind(binding.subject_kind.as_str())
        .bind(storable(&binding.subject))
        .bind(storable(&binding.role))
        .bind(unix_ms(binding.created_at))
        .bind(storable(&binding.created_by));
        match self.writes.execute(insert).await {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => Err(Conflict::Duplicate(format!(
                "team {:?} already binds role {:?} to {} {:?}",
                binding.team,
                binding.role,
                binding.subject_kind.as_str(),
                binding.subject
            ))
            .into()),
            Err(err) => Err(db(err)),
        }
    }

    async fn role_bindings(&self, team: Option<&str>) -> Result<Vec<RoleBinding>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM role_bindings WHERE ? IS NULL OR team = ? ORDER BY team, subject_kind, subject, role",
        )
        .bind(team.map(storable))
        .bind(team.map(storable))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(rows::role_binding).collect()
    }

    async fn bindings_of(&self, user: &str, groups: &[String]) -> Result<Vec<RoleBinding>, StoreError> {
        let rows = sqlx::query(BINDINGS_OF)
            .bind(storable(user))
            .bind(rows::names_json(groups))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(rows::role_binding).collect()
    }

    async fn delete_role_binding(&self, team: &str, id: &str) -> Result<bool, StoreError> {
        let delete =
            sqlx::query("DELETE FROM role_bindings WHERE team = ? AND id = ?").bind(storable(team)).bind(storable(id));
        Ok(self.writes.execute(delete).await.map_err(db)?.rows_affected() > 0)
    }

    async fn create_personal_token(&self, token: &PersonalToken) -> Result<(), StoreError> {
        let insert = sqlx::query(
            "INSERT INTO personal_tokens (id, subject, name, groups, description, secret_hash, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(storable(&token.id))
        .bind(storable(&token.person.subject))
        .bind(storable(&token.person.name))
        .bind(rows::names_json(&token.person.groups))
        .bind(storable(&token.description))
        .bind(&token.secret_hash[..])
        .bind(unix_ms(token.created_at))
        .bind(unix_ms(token.expires_at));
        match self.writes.execute(insert).await {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => {
                Err(Conflict::Duplicate(format!("personal token {:?}", token.id)).into())
            }
            Err(err) => Err(db(err)),
        }
    }

    async fn personal_token(&self, id: &str) -> Result<Option<PersonalToken>, StoreError> {
        let row = sqlx::query("SELECT * FROM personal_tokens WHERE id = ?")
            .bind(storable(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.as_ref().map(rows::personal_token))
    }

    async fn personal_tokens(
        &self,
        subject: Option<&str>,
        live_at: Option<SystemTime>,
        limit: u32,
    ) -> Result<Vec<PersonalToken>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM personal_tokens WHERE (? IS NULL OR subject = ?) \
             AND (? IS NULL OR (revoked_at IS NULL AND expires_at > ?)) \
             ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(subject.map(storable))
        .bind(subject.map(storable))
        .bind(live_at.map(unix_ms))
        .bind(live_at.map(unix_ms))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(rows::personal_token).collect())
    }

    async fn revoke_personal_token(&self, subject: Option<&str>, id: &str, at: SystemTime) -> Result<bool, StoreError> {
        let update = sqlx::query(
            "UPDATE personal_tokens SET revoked_at = ? WHERE (? IS NULL OR subject = ?) AND id = ? AND revoked_at IS NULL",
        )
        .bind(unix_ms(at))
        .bind(subject.map(storable))
        .bind(subject.map(storable))
        .bind(storable(id));
        Ok(self.writes.execute(update).await.map_err(db)?.rows_affected() > 0)
    }

    async fn revoke_personal_tokens_of(&self, subject: &str, at: SystemTime) -> Result<u64, StoreError> {
        let update = sqlx::query(
            "UPDATE personal_tokens SET revoked_at = ? WHERE subject = ? AND revoked_at IS NULL AND expires_at > ?",
        )
        .bind(unix_ms(at))
        .bind(storable(subject))
        .bind(unix_ms(at));
        Ok(self.writes.execute(update).await.map_err(db)?.rows_affected())
    }
}
