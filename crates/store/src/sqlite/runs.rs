use std::time::SystemTime;

use sqlx::Row;

use super::error::{db, is_unique_violation};
use super::group_commit::Query;
use super::store::{SqliteStore, now_ms};
use crate::error::{Conflict, StoreError};
use crate::idempotency::IdempotencyKey;
use crate::rows;
use crate::runs::{Attempt, Claim, Fence, NewRun, Outcome, RunRecord, RunState, RunStore, RunView};
use crate::text::{storable, storable_opt};
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
        team: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Option<Conflict>, StoreError> {
        let Some(key) = key else { return Ok(None) };
        let query = match table {
            Keyed::Runs => "SELECT id, request_hash FROM webhook_runs WHERE team = ? AND idempotency_key = ?",
            Keyed::Deployments => "SELECT id, request_hash FROM deployments WHERE team = ? AND idempotency_key = ?",
        };
        let row = sqlx::query(query)
            .bind(storable(team))
            .bind(storable(&key.key))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.map(|row| {
            let hash: Option<String> = row.get("request_hash");
            Conflict::IdempotencyKeyUsed {
                id: row.get("id"),
                same_request: hash.as_deref() == Some(key.request_hash.as_str()),
            }
        }))
    }
}

/// An attempt's fence; owner and number are bound after what precedes it.
macro_rules! fenced {
    () => {
        "state = 'calling' AND lease_owner = ? AND attempts = ?"
    };
}

/// The due runs, earliest first, through the partial index `webhook_runs_due`;
/// binds the time and the limit.
pub(super) const DUE: &str = "SELECT id FROM webhook_runs WHERE state = 'pending' AND next_attempt_at <= ? \
                              ORDER BY next_attempt_at LIMIT ?";

/// Calling runs whose lease lapsed, through `webhook_runs_calling`; binds
/// the time and the limit.
pub(super) const LAPSED_CALLING: &str =
    "SELECT id FROM webhook_runs WHERE state = 'calling' AND (lease_until IS NULL OR lease_until < ?) LIMIT ?";
/// Finished runs whose attempt was never recorded, through `webhook_runs_unrecorded`.
pub(super) const LAPSED_UNRECORDED: &str = "SELECT id FROM webhook_runs WHERE finished_at IS NOT NULL \
     AND lease_until IS NOT NULL AND lease_until < ? LIMIT ?";

/// Claims one run by its primary key if it is still pending and due; binds
/// owner, lease end, update time, id and the time.
pub(super) const CLAIM_ONE: &str = "UPDATE webhook_runs SET state = 'calling', attempts = attempts + 1, \
                                    next_attempt_at = NULL, lease_owner = ?, lease_until = ?, updated_at = ? \
                                    WHERE id = ? AND state = 'pending' AND next_attempt_at <= ?";

fn run_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT * FROM webhook_runs WHERE id = ?").bind(storable(id))
}

#[async_trait::async_trait]
impl RunStore for SqliteStore {
    async fn insert_run(&self, run: &NewRun) -> Result<(), StoreError> {
        let now = now_ms();
        let result = self.writes.execute(sqlx::query(
            "INSERT INTO webhook_runs (id, team, callback_id, webhook, environment, spec, state, next_attempt_at, created_at, \
             updated_at, idempotency_key, request_hash) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
        )
        .bind(storable(&run.id))
        .bind(storable(&run.team))
        .bind(storable(&run.callback_id))
        .bind(storable(&run.webhook))
        .bind(storable_opt(run.environment.as_ref()))
        .bind(storable(&run.spec))
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(run.idempotency.as_ref().map(|k| storable(&k.key)))
        .bind(run.idempotency.as_ref().map(|k| storable(&k.request_hash))))
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => {
                match self.key_used(Keyed::Runs, &run.team, run.idempotency.as_ref()).await? {
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
            .bind(storable(callback_id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.map(|row| rows::run(&row)))
    }

    async fn watch_run(&self, id: &str) -> Result<(), StoreError> {
        self.writes
            .execute(sqlx::query("UPDATE webhook_runs SET watched = 1 WHERE id = ? AND watched = 0").bind(storable(id)))
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn runs_page(&self, page: &crate::Page) -> Result<Vec<RunRecord>, StoreError> {
        let rows =
            crate::page::bind_page!(sqlx::query(crate::page::RUNS), page).fetch_all(&self.pool).await.map_err(db)?;
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
            .bind(storable(id))
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .iter()
            .map(rows::attempt)
            .collect();
        tx.rollback().await.map_err(db)?;
        Ok(Some(RunView { run: rows::run(&run), attempts }))
    }

    // One relay writes this database, through one writer task, so a
    // claim's read and its compare-and-set cannot interleave with another
    // replica's; the fences still hold the two backends to one behaviour.

    async fn claim_due(&self, claim: &Claim<'_>, only: Option<&str>) -> Result<Vec<RunRecord>, StoreError> {
        // Two statements, chosen here: one `(? IS NULL OR id = ?)` query
        // cannot use the primary key, and walked the whole due index for
        // one run.
        let due: Vec<String> = match only {
            Some(id) => vec![id.to_owned()],
            None => self.ids(DUE, claim.now, claim.limit).await?,
        };
        let mut claimed = Vec::with_capacity(due.len());
        for id in due {
            let done = self
                .writes
                .execute(
                    sqlx::query(CLAIM_ONE)
                        .bind(storable(claim.owner))
                        .bind(unix_ms(claim.lease_until))
                        .bind(now_ms())
                        .bind(storable(&id))
                        .bind(unix_ms(claim.now)),
                )
                .await
                .map_err(db)?;
            if done.rows_affected() == 1
                && let Some(run) = self.run(&id).await?
            {
                claimed.push(run);
            }
        }
        Ok(claimed)
    }

    async fn claim_expired(&self, claim: &Claim<'_>) -> Result<Vec<RunRecord>, StoreError> {
        let mut lapsed = self.ids(LAPSED_CALLING, claim.now, claim.limit).await?;
        // Finished while their attempt was under way, the attempt not recorded.
        lapsed.extend(self.ids(LAPSED_UNRECORDED, claim.now, claim.limit).await?);
        let mut claimed = Vec::with_capacity(lapsed.len());
        for id in lapsed {
            let done = self
                .writes
                .execute(
                    sqlx::query(
                        "UPDATE webhook_runs SET lease_owner = ?, lease_until = ?, updated_at = ? WHERE id = ? \
                         AND ((state = 'calling' AND (lease_until IS NULL OR lease_until < ?)) \
                              OR (finished_at IS NOT NULL AND lease_until < ?))",
                    )
                    .bind(storable(claim.owner))
                    .bind(unix_ms(claim.lease_until))
                    .bind(now_ms())
                    .bind(storable(&id))
                    .bind(unix_ms(claim.now))
                    .bind(unix_ms(claim.now)),
                )
                .await
                .map_err(db)?;
            if done.rows_affected() == 1
                && let Some(run) = self.run(&id).await?
            {
                claimed.push(run);
            }
        }
        Ok(claimed)
    }

    async fn renew_run_leases(&self, owner: &str, ids: &[String], lease_until: SystemTime) -> Result<u64, StoreError> {
        let mut renewed = 0;
        for id in ids {
            let done = self
                .writes
                .execute(
                    sqlx::query(
                        "UPDATE webhook_runs SET lease_until = ? WHERE lease_owner = ? AND id = ? \
                         AND (state = 'calling' OR lease_until IS NOT NULL)",
                    )
                    .bind(unix_ms(lease_until))
                    .bind(storable(owner))
                    .bind(storable(id)),
                )
                .await
                .map_err(db)?;
            renewed += done.rows_affected();
        }
        Ok(renewed)
    }

    async fn due_deadlines(&self, now: SystemTime, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_runs WHERE state = 'awaiting_callback' AND deadline_at <= ? ORDER BY deadline_at LIMIT ?",
        )
        .bind(unix_ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(rows::run).collect())
    }

    async fn set_request(&self, id: &str, fence: &Fence<'_>, request: &str) -> Result<bool, StoreError> {
        let done = self
            .writes
            .execute(
                sqlx::query(concat!(
                    "UPDATE webhook_runs SET request = ?, request_attempt = attempts WHERE id = ? AND ",
                    fenced!()
                ))
                .bind(storable(request))
                .bind(storable(id))
                .bind(storable(fence.owner))
                .bind(i64::from(fence.attempt)),
            )
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_finished(&self, id: &str, fence: &Fence<'_>) -> Result<(), StoreError> {
        self.writes
            .execute(
                sqlx::query(
                    "UPDATE webhook_runs SET lease_until = NULL WHERE id = ? AND lease_owner = ? AND attempts = ? \
                     AND finished_at IS NOT NULL",
                )
                .bind(storable(id))
                .bind(storable(fence.owner))
                .bind(i64::from(fence.attempt)),
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn record_attempt(&self, run_id: &str, fence: &Fence<'_>, attempt: &Attempt) -> Result<bool, StoreError> {
        let done = self
            .writes
            .execute(
                sqlx::query(concat!(
                    "INSERT INTO webhook_attempts (run_id, number, started_at, latency_ms, status, error, reply) \
                     SELECT id, ?, ?, ?, ?, ?, ? FROM webhook_runs WHERE id = ? AND lease_owner = ? AND attempts = ?",
                    " ON CONFLICT (run_id, number) DO NOTHING"
                ))
                .bind(i64::from(attempt.number))
                .bind(unix_ms(attempt.started_at))
                .bind(attempt.latency_ms as i64)
                .bind(attempt.status.map(i64::from))
                .bind(storable_opt(attempt.error.as_ref()))
                .bind(storable_opt(attempt.reply.as_ref()))
                .bind(storable(run_id))
                .bind(storable(fence.owner))
                .bind(i64::from(fence.attempt)),
            )
            .await
            .map_err(db)?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        let holds = sqlx::query("SELECT 1 FROM webhook_runs WHERE id = ? AND lease_owner = ? AND attempts = ?")
            .bind(storable(run_id))
            .bind(storable(fence.owner))
            .bind(i64::from(fence.attempt))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(holds.is_some())
    }

    async fn retry_at(&self, id: &str, fence: &Fence<'_>, at: SystemTime, reason: &str) -> Result<bool, StoreError> {
        let done = self
            .writes
            .execute(
                sqlx::query(concat!(
                    "UPDATE webhook_runs SET state = 'pending', next_attempt_at = ?, reason = ?, updated_at = ?, \
                     lease_until = NULL WHERE id = ? AND ",
                    fenced!()
                ))
                .bind(unix_ms(at))
                .bind(storable(reason))
                .bind(now_ms())
                .bind(storable(id))
                .bind(storable(fence.owner))
                .bind(i64::from(fence.attempt)),
            )
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn await_callback(
        &self,
        id: &str,
        fence: &Fence<'_>,
        deadline: SystemTime,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = self
            .writes
            .execute(
                sqlx::query(concat!(
                    "UPDATE webhook_runs SET state = 'awaiting_callback', deadline_at = ?, reason = ?, updated_at = ?, \
                     lease_until = NULL WHERE id = ? AND ",
                    fenced!()
                ))
                .bind(unix_ms(deadline))
                .bind(storable_opt(reason))
                .bind(now_ms())
                .bind(storable(id))
                .bind(storable(fence.owner))
                .bind(i64::from(fence.attempt)),
            )
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_attempt(&self, id: &str, fence: &Fence<'_>, outcome: &Outcome) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = self
            .writes
            .execute(
                sqlx::query(concat!(
                    "UPDATE webhook_runs SET state = ?, success = ?, md_message = ?, reason = ?, next_attempt_at = NULL, \
                     lease_until = NULL, finished_at = ?, updated_at = ? WHERE id = ? AND ",
                    fenced!()
                ))
                .bind(outcome.state.as_str())
                .bind(outcome.success.map(i64::from))
                .bind(storable_opt(outcome.md_message.as_ref()))
                .bind(storable_opt(outcome.reason.as_ref()))
                .bind(now)
                .bind(now)
                .bind(storable(id))
                .bind(storable(fence.owner))
                .bind(i64::from(fence.attempt)),
            )
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_by_callback(&self, callback_id: &str, outcome: &Outcome) -> Result<Option<String>, StoreError> {
        // The group-commit writer returns no rows: read the id, then finish.
        let Some(run) = self.run_by_callback(callback_id).await? else { return Ok(None) };
        Ok(self.finish(&run.id, &RunState::UNFINISHED, outcome).await?.then_some(run.id))
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
            .bind(storable_opt(outcome.md_message.as_ref()))
            .bind(storable_opt(outcome.reason.as_ref()))
            .bind(outcome.by_callback.then_some(now))
            .bind(now)
            .bind(now)
            .bind(storable(id));
        for state in states {
            query = query.bind(state);
        }
        Ok(self.writes.execute(query).await.map_err(db)?.rows_affected() == 1)
    }
}
