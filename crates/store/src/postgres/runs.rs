use std::time::SystemTime;

use sqlx::Row;
use sqlx::postgres::PgArguments;

use super::error::{db, unique_violation};
use super::store::{PostgresStore, now_ms};
use crate::error::{Conflict, StoreError};
use crate::idempotency::IdempotencyKey;
use crate::rows;
use crate::runs::{Attempt, Claim, Fence, NewRun, Outcome, RunRecord, RunState, RunStore, RunView};
use crate::text::{storable, storable_opt};
use crate::time::unix_ms;

pub(super) type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, PgArguments>;

/// The tables whose rows an Idempotency-Key can name.
#[derive(Clone, Copy)]
pub(super) enum Keyed {
    Runs,
    Deployments,
}

impl PostgresStore {
    /// The conflict naming the row `key` created, if it was used. Read in a
    /// statement of its own after the insert lost: that one waited for the
    /// winner to commit, so this one's snapshot has the winner's row.
    pub(super) async fn key_used(
        &self,
        table: Keyed,
        team: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Option<Conflict>, StoreError> {
        let Some(key) = key else { return Ok(None) };
        let query = match table {
            Keyed::Runs => "SELECT id, request_hash FROM webhook_runs WHERE team = $1 AND idempotency_key = $2",
            Keyed::Deployments => "SELECT id, request_hash FROM deployments WHERE team = $1 AND idempotency_key = $2",
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

/// A key claimed by a row that cannot be read back: only a row deleted in
/// between does that, and a retry would claim the key afresh.
pub(super) fn key_vanished() -> StoreError {
    StoreError::Unavailable("the row holding the Idempotency-Key changed while it was read; try again".into())
}

/// An attempt's fence, with the owner and number bound at the placeholders given.
macro_rules! fenced {
    ($owner:literal, $attempt:literal) => {
        concat!("state = 'calling' AND lease_owner = ", $owner, " AND attempts = ", $attempt)
    };
}

impl PostgresStore {
    /// Tells the other replicas that run `id` ended (see migration 9): best
    /// effort, as every waiter also reads again on its own.
    async fn announce_run(&self, id: &str) {
        let sent = sqlx::query("SELECT pg_notify('borealis_' || left(md5(current_schema()), 16), 'run:' || $1)")
            .bind(storable(id))
            .execute(&self.pool)
            .await;
        if let Err(err) = sent {
            tracing::debug!(run = id, error = %err, "could not announce the run's end");
        }
    }

    /// After a finishing UPDATE ... RETURNING watched: whether it changed the
    /// run, announcing the end when someone waits for it.
    pub(super) async fn ended(&self, id: &str, row: Option<sqlx::postgres::PgRow>) -> bool {
        let Some(row) = row else { return false };
        if row.get::<bool, _>("watched") {
            self.announce_run(id).await;
        }
        true
    }

    async fn fence_holds(&self, id: &str, fence: &Fence<'_>) -> Result<bool, StoreError> {
        // As `record_attempt`'s fence: owner and number (a callback may have
        // ended the run while the attempt was under way).
        let row = sqlx::query("SELECT 1 FROM webhook_runs WHERE id = $1 AND lease_owner = $2 AND attempts = $3")
            .bind(storable(id))
            .bind(storable(fence.owner))
            .bind(i64::from(fence.attempt))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }
}

fn run_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT * FROM webhook_runs WHERE id = $1").bind(storable(id))
}

/// Claims the due runs, earliest first, through the partial index
/// `webhook_runs_due`. SKIP LOCKED: replicas claiming at once take
/// different runs, and none waits on another's. Binds the limit, then
/// owner, lease end, update time and the time.
pub(super) const CLAIM_DUE: &str = "UPDATE webhook_runs r SET state = 'calling', attempts = r.attempts + 1, \
     next_attempt_at = NULL, lease_owner = $2, lease_until = $3, updated_at = $4 \
     FROM (SELECT id FROM webhook_runs WHERE state = 'pending' AND next_attempt_at <= $5 \
           ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due \
     WHERE r.id = due.id RETURNING r.*";

/// Calling runs whose lease lapsed, through `webhook_runs_calling`; `$4`
/// is the time, `$5` the limit.
pub(super) const LAPSED_CALLING: &str = "SELECT id FROM webhook_runs WHERE state = 'calling' \
     AND (lease_until IS NULL OR lease_until < $4) ORDER BY lease_until NULLS FIRST LIMIT $5 FOR UPDATE SKIP LOCKED";
/// Finished runs whose attempt was never recorded, through `webhook_runs_unrecorded`.
pub(super) const LAPSED_UNRECORDED: &str = "SELECT id FROM webhook_runs WHERE finished_at IS NOT NULL \
     AND lease_until IS NOT NULL AND lease_until < $4 ORDER BY lease_until LIMIT $5 FOR UPDATE SKIP LOCKED";

/// Takes over the runs `lapsed` selects; binds owner, lease end, update
/// time, the time and the limit.
pub(super) fn take_over(lapsed: &str) -> String {
    format!(
        "UPDATE webhook_runs r SET lease_owner = $1, lease_until = $2, updated_at = $3 \
         FROM ({lapsed}) lapsed WHERE r.id = lapsed.id RETURNING r.*"
    )
}

/// Claims one run by its primary key if it is still pending and due (a
/// replica claiming it at once waits for the row, then finds it taken).
/// Binds the id, then as [`CLAIM_DUE`].
pub(super) const CLAIM_ONE: &str = "UPDATE webhook_runs SET state = 'calling', attempts = attempts + 1, \
     next_attempt_at = NULL, lease_owner = $2, lease_until = $3, updated_at = $4 \
     WHERE id = $1 AND state = 'pending' AND next_attempt_at <= $5 RETURNING *";

#[async_trait::async_trait]
impl RunStore for PostgresStore {
    async fn insert_run(&self, run: &NewRun) -> Result<(), StoreError> {
        let now = now_ms();
        // Claiming the key and inserting the run are one statement: of
        // replicas racing one key, one inserts and the rest insert nothing.
        let result = sqlx::query(
            "INSERT INTO webhook_runs (id, team, callback_id, webhook, environment, spec, state, next_attempt_at, created_at, \
             updated_at, idempotency_key, request_hash) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7, $7, $8, $9) \
             ON CONFLICT (team, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        )
        .bind(storable(&run.id))
        .bind(storable(&run.team))
        .bind(storable(&run.callback_id))
        .bind(storable(&run.webhook))
        .bind(storable_opt(run.environment.as_ref()))
        .bind(storable(&run.spec))
        .bind(now)
        .bind(run.idempotency.as_ref().map(|k| storable(&k.key)))
        .bind(run.idempotency.as_ref().map(|k| storable(&k.request_hash)))
        .execute(&self.pool)
        .await;
        match result {
            Ok(done) if done.rows_affected() == 1 => Ok(()),
            Ok(_) => Err(self
                .key_used(Keyed::Runs, &run.team, run.idempotency.as_ref())
                .await?
                .ok_or_else(key_vanished)?
                .into()),
            // The id or callback id is taken; or the key, by a row that
            // was not committed yet when this insert checked it.
            Err(err) if unique_violation(&err).is_some() => {
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
        let row = sqlx::query("SELECT * FROM webhook_runs WHERE callback_id = $1")
            .bind(storable(callback_id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.map(|row| rows::run(&row)))
    }

    async fn watch_run(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhook_runs SET watched = true WHERE id = $1 AND NOT watched")
            .bind(storable(id))
            .execute(&self.pool)
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
        let attempts = sqlx::query("SELECT * FROM webhook_attempts WHERE run_id = $1 ORDER BY number")
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

    // The transitions are compare-and-set on `state` in one UPDATE: one that
    // waits on a racing writer's row lock checks its WHERE again against
    // the row that writer committed, so of two racing, one matches. An
    // attempt's writes are also fenced by its lease: owner and number.

    async fn claim_due(&self, claim: &Claim<'_>, only: Option<&str>) -> Result<Vec<RunRecord>, StoreError> {
        // Two statements, chosen here: one `($6 IS NULL OR id = $6)` query
        // cannot use the primary key for one run.
        let query = match only {
            Some(id) => sqlx::query(CLAIM_ONE).bind(storable(id)),
            None => sqlx::query(CLAIM_DUE).bind(i64::from(claim.limit)),
        };
        let rows = query
            .bind(storable(claim.owner))
            .bind(unix_ms(claim.lease_until))
            .bind(now_ms())
            .bind(unix_ms(claim.now))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows.iter().map(rows::run).collect())
    }

    async fn claim_expired(&self, claim: &Claim<'_>) -> Result<Vec<RunRecord>, StoreError> {
        // Two statements, each through its partial index: calling runs,
        // then finished ones whose attempt is not recorded yet.
        let mut claimed = Vec::new();
        for lapsed in [LAPSED_CALLING, LAPSED_UNRECORDED] {
            let sql = take_over(lapsed);
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(storable(claim.owner))
                .bind(unix_ms(claim.lease_until))
                .bind(now_ms())
                .bind(unix_ms(claim.now))
                .bind(i64::from(claim.limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            claimed.extend(rows.iter().map(rows::run));
        }
        Ok(claimed)
    }

    async fn renew_run_leases(&self, owner: &str, ids: &[String], lease_until: SystemTime) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "UPDATE webhook_runs SET lease_until = $1 WHERE lease_owner = $2 AND id = ANY($3) \
             AND (state = 'calling' OR lease_until IS NOT NULL)",
        )
        .bind(unix_ms(lease_until))
        .bind(storable(owner))
        .bind(ids)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn due_deadlines(&self, now: SystemTime, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_runs WHERE state = 'awaiting_callback' AND deadline_at <= $1 \
             ORDER BY deadline_at LIMIT $2",
        )
        .bind(unix_ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(rows::run).collect())
    }

    async fn set_request(&self, id: &str, fence: &Fence<'_>, request: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE webhook_runs SET request = $1, request_attempt = attempts WHERE id = $2 AND ",
            fenced!("$3", "$4")
        ))
        .bind(storable(request))
        .bind(storable(id))
        .bind(storable(fence.owner))
        .bind(i64::from(fence.attempt))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_finished(&self, id: &str, fence: &Fence<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_runs SET lease_until = NULL WHERE id = $1 AND lease_owner = $2 AND attempts = $3 \
             AND finished_at IS NOT NULL",
        )
        .bind(storable(id))
        .bind(storable(fence.owner))
        .bind(i64::from(fence.attempt))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn record_attempt(&self, run_id: &str, fence: &Fence<'_>, attempt: &Attempt) -> Result<bool, StoreError> {
        // FOR SHARE: a takeover (which locks the run's row to change its
        // owner) waits for this insert to commit, or this insert sees the
        // new owner and writes nothing.
        let done = sqlx::query(
            "WITH lease AS (SELECT id FROM webhook_runs WHERE id = $1 AND lease_owner = $8 AND attempts = $9 FOR SHARE) \
             INSERT INTO webhook_attempts (run_id, number, started_at, latency_ms, status, error, reply) \
             SELECT id, $2, $3, $4, $5, $6, $7 FROM lease ON CONFLICT (run_id, number) DO NOTHING",
        )
        .bind(storable(run_id))
        .bind(i64::from(attempt.number))
        .bind(unix_ms(attempt.started_at))
        .bind(attempt.latency_ms as i64)
        .bind(attempt.status.map(i64::from))
        .bind(storable_opt(attempt.error.as_ref()))
        .bind(storable_opt(attempt.reply.as_ref()))
        .bind(storable(fence.owner))
        .bind(i64::from(fence.attempt))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        // Nothing inserted: an earlier record of the number, or a lost fence.
        self.fence_holds(run_id, fence).await
    }

    async fn retry_at(&self, id: &str, fence: &Fence<'_>, at: SystemTime, reason: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE webhook_runs SET state = 'pending', next_attempt_at = $1, reason = $2, updated_at = $3, \
             lease_until = NULL WHERE id = $4 AND ",
            fenced!("$5", "$6")
        ))
        .bind(unix_ms(at))
        .bind(storable(reason))
        .bind(now_ms())
        .bind(storable(id))
        .bind(storable(fence.owner))
        .bind(i64::from(fence.attempt))
        .execute(&self.pool)
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
        let done = sqlx::query(concat!(
            "UPDATE webhook_runs SET state = 'awaiting_callback', deadline_at = $1, reason = $2, updated_at = $3, \
             lease_until = NULL WHERE id = $4 AND ",
            fenced!("$5", "$6")
        ))
        .bind(unix_ms(deadline))
        .bind(storable_opt(reason))
        .bind(now_ms())
        .bind(storable(id))
        .bind(storable(fence.owner))
        .bind(i64::from(fence.attempt))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_attempt(&self, id: &str, fence: &Fence<'_>, outcome: &Outcome) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(concat!(
            "UPDATE webhook_runs SET state = $1, success = $2, md_message = $3, reason = $4, next_attempt_at = NULL, \
             lease_until = NULL, finished_at = $5, updated_at = $5 WHERE id = $6 AND ",
            fenced!("$7", "$8"),
            " RETURNING watched"
        ))
        .bind(outcome.state.as_str())
        .bind(outcome.success)
        .bind(storable_opt(outcome.md_message.as_ref()))
        .bind(storable_opt(outcome.reason.as_ref()))
        .bind(now)
        .bind(storable(id))
        .bind(storable(fence.owner))
        .bind(i64::from(fence.attempt))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(self.ended(id, done).await)
    }

    async fn finish_by_callback(&self, callback_id: &str, outcome: &Outcome) -> Result<Option<String>, StoreError> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE webhook_runs SET state = $1, success = $2, md_message = $3, reason = $4, callback_at = $5, \
             next_attempt_at = NULL, lease_until = CASE WHEN state = 'calling' THEN lease_until END, \
             finished_at = $5, updated_at = $5 WHERE callback_id = $6 AND finished_at IS NULL RETURNING id, watched",
        )
        .bind(outcome.state.as_str())
        .bind(outcome.success)
        .bind(storable_opt(outcome.md_message.as_ref()))
        .bind(storable_opt(outcome.reason.as_ref()))
        .bind(now)
        .bind(storable(callback_id))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.get("id");
        if row.get::<bool, _>("watched") {
            self.announce_run(&id).await;
        }
        Ok(Some(id))
    }

    async fn finish(&self, id: &str, from: &[RunState], outcome: &Outcome) -> Result<bool, StoreError> {
        let now = now_ms();
        let states: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let done = sqlx::query(
            "UPDATE webhook_runs SET state = $1, success = $2, md_message = $3, reason = $4, callback_at = $5, \
             next_attempt_at = NULL, finished_at = $6, updated_at = $6 WHERE id = $7 AND state = ANY($8) RETURNING watched",
        )
        .bind(outcome.state.as_str())
        .bind(outcome.success)
        .bind(storable_opt(outcome.md_message.as_ref()))
        .bind(storable_opt(outcome.reason.as_ref()))
        .bind(outcome.by_callback.then_some(now))
        .bind(now)
        .bind(storable(id))
        .bind(states)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(self.ended(id, done).await)
    }
}
