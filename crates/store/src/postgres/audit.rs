use std::time::SystemTime;

use super::error::db;
use super::store::PostgresStore;
use crate::audit::{AuditEntry, AuditQuery, AuditStore, MAX_AUDIT_BATCH};
use crate::error::StoreError;
use crate::rows;
use crate::text::{storable, storable_opt};
use crate::time::unix_ms;

#[async_trait::async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        for batch in entries.chunks(MAX_AUDIT_BATCH) {
            let mut builder = sqlx::QueryBuilder::new(
                "INSERT INTO audit_log (time, actor_kind, actor_id, actor_name, team, action, object, outcome, \
                 status, source_address, request_id) ",
            );
            builder.push_values(batch, |mut row, entry| {
                row.push_bind(unix_ms(entry.time))
                    .push_bind(storable(&entry.actor_kind).into_owned())
                    .push_bind(storable(&entry.actor_id).into_owned())
                    .push_bind(storable(&entry.actor_name).into_owned())
                    .push_bind(storable_opt(entry.team.as_ref()).map(|t| t.into_owned()))
                    .push_bind(storable(&entry.action).into_owned())
                    .push_bind(storable(&entry.object).into_owned())
                    .push_bind(storable(&entry.outcome).into_owned())
                    .push_bind(i64::from(entry.status))
                    .push_bind(storable_opt(entry.source_address.as_ref()).map(|a| a.into_owned()))
                    .push_bind(storable(&entry.request_id).into_owned());
            });
            // Not kept prepared: each batch size is a statement of its own,
            // and every connection would keep up to a hundred of them.
            builder.build().persistent(false).execute(&self.pool).await.map_err(db)?;
        }
        Ok(())
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE ($1 IS NULL OR team = $1) AND ($2 IS NULL OR actor_id = $2) \
             AND ($3 IS NULL OR action = $3) AND ($4 IS NULL OR time >= $4) AND ($5 IS NULL OR time < $5) \
             AND ($6 IS NULL OR seq < $6) ORDER BY seq DESC LIMIT $7",
        )
        .bind(storable_opt(query.team.as_ref()))
        .bind(storable_opt(query.actor.as_ref()))
        .bind(storable_opt(query.action.as_ref()))
        .bind(query.since.map(unix_ms))
        .bind(query.until.map(unix_ms))
        .bind(query.before)
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(rows::audit_entry).collect())
    }

    async fn forget_audit_before(&self, before: SystemTime) -> Result<u64, StoreError> {
        let delete = sqlx::query("DELETE FROM audit_log WHERE time < $1").bind(unix_ms(before));
        Ok(delete.execute(&self.pool).await.map_err(db)?.rows_affected())
    }
}
