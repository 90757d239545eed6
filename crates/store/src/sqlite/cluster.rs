use std::time::SystemTime;

use sqlx::Row;
use tokio::sync::mpsc;

use super::error::db;
use super::store::SqliteStore;
use crate::cluster::{Change, ClusterStore, ReplicaRecord, SessionRecord};
use crate::error::StoreError;
use crate::rows;
use crate::text::{storable, storable_opt};
use crate::time::unix_ms;

#[async_trait::async_trait]
impl ClusterStore for SqliteStore {
    async fn replica_seen(&self, replica: &ReplicaRecord) -> Result<Option<SystemTime>, StoreError> {
        self.writes
            .execute(
                sqlx::query(
                    "INSERT INTO relay_replicas (id, name, peer_url, started_at, seen_at) VALUES (?, ?, ?, ?, ?) \
                     ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, peer_url = excluded.peer_url",
                )
                .bind(storable(&replica.id))
                .bind(storable(&replica.name))
                .bind(storable_opt(replica.peer_url.as_ref()))
                .bind(unix_ms(replica.started_at))
                .bind(unix_ms(replica.seen_at)),
            )
            .await
            .map_err(db)?;
        // This machine's clock is the only one: nothing to correct.
        Ok(None)
    }

    async fn replica_gone(&self, id: &str) -> Result<(), StoreError> {
        self.writes
            .execute(sqlx::query("DELETE FROM agent_sessions WHERE replica_id = ?").bind(storable(id)))
            .await
            .map_err(db)?;
        self.writes
            .execute(sqlx::query("DELETE FROM relay_replicas WHERE id = ?").bind(storable(id)))
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn replicas(&self, since: SystemTime) -> Result<Vec<ReplicaRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM relay_replicas WHERE seen_at >= ? ORDER BY name, id")
            .bind(unix_ms(since))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows.iter().map(rows::replica).collect())
    }

    async fn forget_replicas(&self, before: SystemTime) -> Result<u64, StoreError> {
        self.writes
            .execute(
                sqlx::query(
                    "DELETE FROM agent_sessions WHERE replica_id IN (SELECT id FROM relay_replicas WHERE seen_at < ?) \
                     OR replica_id NOT IN (SELECT id FROM relay_replicas)",
                )
                .bind(unix_ms(before)),
            )
            .await
            .map_err(db)?;
        let gone = self
            .writes
            .execute(sqlx::query("DELETE FROM relay_replicas WHERE seen_at < ?").bind(unix_ms(before)))
            .await
            .map_err(db)?;
        Ok(gone.rows_affected())
    }

    async fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.writes
            .execute(
                sqlx::query(
                    "INSERT INTO agent_sessions \
                     (session_id, replica_id, team, agent_id, instance, version, remote_addr, connected_at, allow_list) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
                )
                .bind(storable(&session.session_id))
                .bind(storable(&session.replica_id))
                .bind(storable(&session.team))
                .bind(storable(&session.agent_id))
                .bind(storable(&session.instance))
                .bind(storable(&session.version))
                .bind(storable_opt(session.remote_addr.as_ref()))
                .bind(unix_ms(session.connected_at))
                .bind(crate::rows::allow_list_json(session)),
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn remove_session(&self, session_id: &str) -> Result<(), StoreError> {
        self.writes
            .execute(sqlx::query("DELETE FROM agent_sessions WHERE session_id = ?").bind(storable(session_id)))
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn sessions(&self, agent: Option<(&str, &str)>, since: SystemTime) -> Result<Vec<SessionRecord>, StoreError> {
        let (team, agent_id) = agent.unzip();
        let rows = sqlx::query(
            "SELECT s.* FROM agent_sessions s JOIN relay_replicas r ON r.id = s.replica_id \
             WHERE r.seen_at >= ?1 AND (?2 IS NULL OR (s.team = ?2 AND s.agent_id = ?3)) \
             ORDER BY s.team, s.agent_id, s.connected_at, s.session_id",
        )
        .bind(unix_ms(since))
        .bind(storable_opt(team))
        .bind(storable_opt(agent_id))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(rows::session).collect())
    }

    async fn replica_session_ids(&self, replica_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT session_id FROM agent_sessions WHERE replica_id = ?")
            .bind(storable(replica_id))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|row| row.get("session_id")).collect())
    }

    async fn sessions_held(&self, since: SystemTime) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.id, count(s.session_id) AS held FROM relay_replicas r \
             LEFT JOIN agent_sessions s ON s.replica_id = r.id WHERE r.seen_at >= ? GROUP BY r.id ORDER BY r.id",
        )
        .bind(unix_ms(since))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(|row| (row.get("id"), row.get::<i64, _>("held") as u64)).collect())
    }

    async fn changes(&self) -> Result<Option<mpsc::Receiver<Change>>, StoreError> {
        Ok(None)
    }
}
