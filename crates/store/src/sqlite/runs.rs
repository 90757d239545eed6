use std::time::SystemTime;

use sqlx::Row;

use super::error::{db, is_unique_violation};
use super::group_commit::Query;
use super::store::{SqliteStore, now_ms};
use crate::error::{Conflict, StoreError};
use crate::idempotency::IdempotencyKey;
use crate::rows;
use crate::runs::{Attempt, NewRun, Outcome, RunRecord, RunState, RunStore, RunView};
use crate::time::unix_ms;

/// The tables whose rows an Idempotency-Key can name.
#[derive(Clone, Copy)]
pub(super) enum Keyed {
    Runs,
    Deployments,
}

impl SqliteStore {
    /// After a unique violation: whether `key` was the reason, as the
    /// conflict that names the row it created.
    pub(super) async fn key_used(
        &self,
        table: Keyed,
        key: Option<&IdempotencyKey>,
    ) -> Result<Option<Conflict>, StoreError> {
        let Some(key) = key else { return Ok(None) };
        let query = match table {
            Keyed::Runs => "SELECT id, request_hash FROM webhook_runs WHERE idempotency_key = ?",
            Keyed::Deployments => "SELECT id, request_hash FROM deployments WHERE idempotency_key = ?",
        };
        let row = sqlx::query(query).bind(&key.key).fetch_optional(&self.pool).await.map_err(db)?;
        Ok(row.map(|row| {
            let hash: Option<String> = row.get("request_hash");
            Conflict::IdempotencyKeyUsed {
                id: row.get("id"),
                same_request: hash.as_deref() == Some(key.request_hash.as_str()),
            }
        }))
    }
}

fn run_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT * FROM webhook_runs WHERE id = ?").bind(id)
}

#[async_trait::async_trait]
impl RunStore for SqliteStore {
    async fn insert_run(&self, run: &NewRun) -> Result<(), StoreError> {
        let now = now_ms();
        let result = self.writes.execute(sqlx::query(
            "INSERT INTO webhook_runs (id, callback_id, webhook, environment, spec, state, next_attempt_at, created_at, updated_at, \
             idempotency_key, request_hash) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
        )
        .bind(&run.id)
        .bind(&run.callback_id)
        .bind(&run.webhook)
        .bind(&run.environment)
        .bind(&run.spec)
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(run.idempotency.as_ref().map(|k| &k.key))
        .bind(run.idempotency.as_ref().map(|k| &k.request_hash)))
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => {
                match self.key_used(Keyed::Runs, run.idempotency.as_ref()).await? {
                    Some(used) => Err(used.into()),
                    None => Err(db(err)),
                }
            }
            Err(err) => Err(db(err)),
        }
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = run_query(id).fetch_optional(&self.pool).await.map_err(db)?;
        Ok(row.map(|row| rows::run(&row)))
    }

    async fn run_by_callback(&self, callback_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM webhook_runs WHERE callback_id = ?")
            .bind(callback_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.map(|row| rows::run(&row)))
    }

    async fn runs(&self, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM webhook_runs ORDER BY created_at DESC, id LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows.iter().map(rows::run).collect())
    }

    async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM webhook_runs WHERE finished_at IS NULL")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows.iter().map(rows::run).collect())
    }

    async fn run_view(&self, id: &str) -> Result<Option<RunView>, StoreError> {
        let mut tx = self.snapshot().await?;
        let Some(run) = run_query(id).fetch_optional(&mut *tx).await.map_err(db)? else { return Ok(None) };
        let attempts = sqlx::query("SELECT * FROM webhook_attempts WHERE run_id = ? ORDER BY number")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .iter()
            .map(rows::attempt)
            .collect();
        tx.rollback().await.map_err(db)?;
        Ok(Some(RunView { run: rows::run(&run), attempts }))
    }

    async fn start_attempt(&self, id: &str, number: u32, request: &str) -> Result<bool, StoreError> {
        let done = self.writes.execute(sqlx::query(
            "UPDATE webhook_runs SET state = 'calling', attempts = ?, request = ?, next_attempt_at = NULL, updated_at = ? \
             WHERE id = ? AND state = 'pending'",
        )
        .bind(i64::from(number))
        .bind(request)
        .bind(now_ms())
        .bind(id))
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_attempt(&self, run_id: &str, attempt: &Attempt) -> Result<(), StoreError> {
        self.writes.execute(sqlx::query(
            "INSERT INTO webhook_attempts (run_id, number, started_at, latency_ms, status, error, reply) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (run_id, number) DO NOTHING",
        )
        .bind(run_id)
        .bind(i64::from(attempt.number))
        .bind(unix_ms(attempt.started_at))
        .bind(attempt.latency_ms as i64)
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .bind(&attempt.reply))
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn retry_at(&self, id: &str, at: SystemTime, reason: &str) -> Result<bool, StoreError> {
        let done = self
            .writes
            .execute(
                sqlx::query(
                    "UPDATE webhook_runs SET state = 'pending', next_attempt_at = ?, reason = ?, updated_at = ? \
             WHERE id = ? AND state = 'calling'",
                )
                .bind(unix_ms(at))
                .bind(reason)
                .bind(now_ms())
                .bind(id),
            )
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn await_callback(&self, id: &str, deadline: SystemTime, reason: Option<&str>) -> Result<bool, StoreError> {
        let done = self
            .writes
            .execute(
                sqlx::query(
                    "UPDATE webhook_runs SET state = 'awaiting_callback', deadline_at = ?, reason = ?, updated_at = ? \
             WHERE id = ? AND state = 'calling'",
                )
                .bind(unix_ms(deadline))
                .bind(reason)
                .bind(now_ms())
                .bind(id),
            )
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish(&self, id: &str, from: &[RunState], outcome: &Outcome) -> Result<bool, StoreError> {
        let now = now_ms();
        let states: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let placeholders = vec!["?"; states.len()].join(", ");
        let sql = format!(
            "UPDATE webhook_runs SET state = ?, success = ?, md_message = ?, reason = ?, callback_at = ?, \
             next_attempt_at = NULL, finished_at = ?, updated_at = ? WHERE id = ? AND state IN ({placeholders})"
        );
        // Only `?` placeholders are interpolated; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(outcome.state.as_str())
            .bind(outcome.success.map(i64::from))
            .bind(&outcome.md_message)
            .bind(&outcome.reason)
            .bind(outcome.by_callback.then_some(now))
            .bind(now)
            .bind(now)
            .bind(id);
        for state in states {
            query = query.bind(state);
        }
        Ok(self.writes.execute(query).await.map_err(db)?.rows_affected() == 1)
    }
}
