use std::collections::HashMap;
use std::time::SystemTime;

use sqlx::Row;

use super::error::{db, unique_violation};
use super::runs::{Keyed, Query, key_vanished};
use super::store::{PostgresStore, now_ms};
use crate::deployments::fenced;
use crate::deployments::{
    ApprovalState, DECISION_SUFFIX, DeploymentLease, DeploymentRecord, DeploymentState, DeploymentStore,
    DeploymentView, TargetRecord, TargetState, Voter,
};
use crate::error::{Conflict, StoreError};
use crate::idempotency::IdempotencyKey;
use crate::rows;
use crate::runs::Claim;
use crate::text::{storable, storable_opt};
use crate::time::unix_ms;

/// How often an insert that lost to a deployment finishing at that very
/// moment is tried again before the caller hears `Unavailable`.
const RUNNING_RACE_TRIES: usize = 3;

// The reads a deployment's view is made of. Those also made alone
// (record, targets, journal) serve both.

fn deployment_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT * FROM deployments WHERE id = $1").bind(storable(id))
}

fn targets_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT * FROM deployment_targets WHERE deployment_id = $1 ORDER BY position").bind(storable(id))
}

fn journal_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT key, value FROM deployment_journal WHERE deployment_id = $1 ORDER BY key").bind(storable(id))
}

fn events_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT * FROM deployment_events WHERE deployment_id = $1 ORDER BY id").bind(storable(id))
}

fn pending_approvals_query(id: &str) -> Query<'_> {
    sqlx::query(
        "SELECT target, step_key FROM approvals WHERE deployment_id = $1 AND state = 'pending' ORDER BY step_key",
    )
    .bind(storable(id))
}

/// The votes of the deployment's pending approvals, in the order they were cast.
fn pending_votes_query(id: &str) -> Query<'_> {
    sqlx::query(
        "SELECT v.step_key, v.voter_id, v.voter_name FROM approval_votes v JOIN approvals a \
         ON a.deployment_id = v.deployment_id AND a.step_key = v.step_key \
         WHERE v.deployment_id = $1 AND a.state = 'pending' ORDER BY v.seq",
    )
    .bind(storable(id))
}

/// The lease of deployment `$1` as held by the owner bound at `$owner`, as
/// a `lease` CTE. FOR SHARE: a takeover (which locks the deployment's row
/// to change its owner) waits for the write to commit, or the write sees
/// the new owner and writes nothing.
macro_rules! leased {
    ($owner:literal) => {
        concat!(
            "WITH lease AS (SELECT id FROM deployments WHERE id = $1 AND lease_owner = ",
            $owner,
            " AND finished_at IS NULL FOR SHARE) "
        )
    };
}

impl PostgresStore {
    /// Whether `owner` holds unfinished deployment `id`'s lease.
    async fn lease_held(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM deployments WHERE id = $1 AND lease_owner = $2 AND finished_at IS NULL")
            .bind(storable(id))
            .bind(storable(owner))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }
}

#[async_trait::async_trait]
impl DeploymentStore for PostgresStore {
    async fn insert_deployment(
        &self,
        id: &str,
        team: &str,
        application: &str,
        file: &str,
        context: &str,
        idempotency: Option<&IdempotencyKey>,
        lease: &DeploymentLease<'_>,
    ) -> Result<(), StoreError> {
        for _ in 0..RUNNING_RACE_TRIES {
            let now = now_ms();
            // The key's claim and the insert are one statement; the unique
            // index on running deployments refuses a second one per application
            // in the team.
            let result = sqlx::query(
                "INSERT INTO deployments (id, team, application, file, context, state, created_at, updated_at, \
                 idempotency_key, request_hash, lease_owner, lease_until) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11) \
                 ON CONFLICT (team, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
            )
            .bind(storable(id))
            .bind(storable(team))
            .bind(storable(application))
            .bind(storable(file))
            .bind(storable(context))
            .bind(DeploymentState::Running.as_str())
            .bind(now)
            .bind(idempotency.map(|k| storable(&k.key)))
            .bind(idempotency.map(|k| storable(&k.request_hash)))
            .bind(storable(lease.owner))
            .bind(unix_ms(lease.until))
            .execute(&self.pool)
            .await;
            let err = match result {
                Ok(done) if done.rows_affected() == 1 => return Ok(()),
                Ok(_) => {
                    return Err(self
                        .key_used(Keyed::Deployments, team, idempotency)
                        .await?
                        .ok_or_else(key_vanished)?
                        .into());
                }
                Err(err) => err,
            };
            let Some(constraint) = unique_violation(&err) else { return Err(db(err)) };
            // A racing insert with the same key may trip the running index
            // first; the key is the better answer.
            if let Some(used) = self.key_used(Keyed::Deployments, team, idempotency).await? {
                return Err(used.into());
            }
            if constraint != "deployments_one_running" {
                return Err(db(err));
            }
            let running: Option<String> =
                sqlx::query("SELECT id FROM deployments WHERE team = $1 AND application = $2 AND finished_at IS NULL")
                    .bind(storable(team))
                    .bind(storable(application))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?
                    .map(|row| row.get("id"));
            if let Some(running) = running {
                return Err(Conflict::DeploymentInProgress { application: application.to_owned(), running }.into());
            }
            // It finished between the insert and the read: try again.
        }
        Err(StoreError::Unavailable(
            format!("deployments of application {application:?} kept starting and finishing; try again").into(),
        ))
    }

    async fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        let row = deployment_query(id).fetch_optional(&self.pool).await.map_err(db)?;
        row.as_ref().map(rows::deployment).transpose()
    }

    async fn deployment_view(&self, id: &str) -> Result<Option<DeploymentView>, StoreError> {
        let mut tx = self.snapshot().await?;
        let Some(record) = deployment_query(id).fetch_optional(&mut *tx).await.map_err(db)? else { return Ok(None) };
        let targets = targets_query(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .iter()
            .map(rows::target)
            .collect::<Result<_, _>>()?;
        let journal = journal_query(id).fetch_all(&mut *tx).await.map_err(db)?.iter().map(rows::pair).collect();
        let runs = sqlx::query(
            "SELECT * FROM webhook_runs WHERE id IN (SELECT value FROM deployment_journal WHERE deployment_id = $1)",
        )
        .bind(storable(id))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?
        .iter()
        .map(rows::run)
        .collect();
        let pending_approvals =
            pending_approvals_query(id).fetch_all(&mut *tx).await.map_err(db)?.iter().map(rows::pair).collect();
        let approval_votes =
            pending_votes_query(id).fetch_all(&mut *tx).await.map_err(db)?.iter().map(rows::vote).collect();
        let events = events_query(id).fetch_all(&mut *tx).await.map_err(db)?.iter().map(rows::event).collect();
        tx.rollback().await.map_err(db)?;
        Ok(Some(DeploymentView {
            record: rows::deployment(&record)?,
            targets,
            journal,
            runs,
            pending_approvals,
            approval_votes,
            events,
        }))
    }

    async fn deployments_page(
        &self,
        page: &crate::Page,
    ) -> Result<Vec<(DeploymentRecord, Vec<TargetRecord>)>, StoreError> {
        let mut tx = self.snapshot().await?;
        let records = crate::page::bind_page!(sqlx::query(crate::page::DEPLOYMENTS), page)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let mut listed: Vec<(DeploymentRecord, Vec<TargetRecord>)> =
            records.iter().map(|row| Ok((rows::deployment(row)?, Vec::new()))).collect::<Result<_, StoreError>>()?;
        let index: HashMap<String, usize> =
            listed.iter().enumerate().map(|(i, (record, _))| (record.id.clone(), i)).collect();
        // The targets of all listed deployments in one query, not one each.
        let ids: Vec<&str> = listed.iter().map(|(record, _)| record.id.as_str()).collect();
        let targets = sqlx::query(
            "SELECT * FROM deployment_targets WHERE deployment_id = ANY($1) ORDER BY deployment_id, position",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.rollback().await.map_err(db)?;
        for row in &targets {
            if let Some(&i) = index.get(row.get::<&str, _>("deployment_id")) {
                listed[i].1.push(rows::target(row)?);
            }
        }
        Ok(listed)
    }

    async fn unfinished_deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM deployments WHERE finished_at IS NULL")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(rows::deployment).collect()
    }

    async fn request_abort(
        &self,
        id: &str,
        reason: &str,
        rollback: bool,
        by: &str,
    ) -> Result<Option<DeploymentRecord>, StoreError> {
        // A compare-and-set: only an unfinished deployment not asked before.
        sqlx::query(
            "UPDATE deployments SET abort_reason = $1, abort_rollback = $2, abort_requested_at = $3, \
             abort_requested_by = $5, updated_at = $3 \
             WHERE id = $4 AND finished_at IS NULL AND abort_requested_at IS NULL",
        )
        .bind(storable(reason))
        .bind(rollback)
        .bind(now_ms())
        .bind(storable(id))
        .bind(storable(by))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        self.deployment(id).await
    }

    async fn claim_deployments(&self, claim: &Claim<'_>) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "UPDATE deployments d SET lease_owner = $1, lease_until = $2 \
             FROM (SELECT id FROM deployments WHERE finished_at IS NULL AND (lease_until IS NULL OR lease_until < $3) \
                   ORDER BY created_at LIMIT $4 FOR UPDATE SKIP LOCKED) lapsed \
             WHERE d.id = lapsed.id RETURNING d.id",
        )
        .bind(storable(claim.owner))
        .bind(unix_ms(claim.lease_until))
        .bind(unix_ms(claim.now))
        .bind(i64::from(claim.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(|row| row.get("id")).collect())
    }

    async fn renew_deployment_leases(&self, owner: &str, lease_until: SystemTime) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "UPDATE deployments SET lease_until = $1 WHERE lease_owner = $2 AND finished_at IS NULL RETURNING id",
        )
        .bind(unix_ms(lease_until))
        .bind(storable(owner))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(|row| row.get("id")).collect())
    }

    async fn release_deployments(&self, owner: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE deployments SET lease_until = NULL WHERE lease_owner = $1 AND finished_at IS NULL")
            .bind(storable(owner))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn finish_deployment(
        &self,
        id: &str,
        owner: &str,
        state: DeploymentState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        // Compare-and-set on `finished_at` and the lease: the first end stays.
        let done = sqlx::query(
            "UPDATE deployments SET state = $1, reason = $2, finished_at = $3, updated_at = $3, lease_until = NULL \
             WHERE id = $4 AND finished_at IS NULL AND lease_owner = $5",
        )
        .bind(state.as_str())
        .bind(storable_opt(reason))
        .bind(now_ms())
        .bind(storable(id))
        .bind(storable(owner))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let finished: Option<Option<i64>> = sqlx::query("SELECT finished_at FROM deployments WHERE id = $1")
            .bind(storable(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .map(|row| row.get("finished_at"));
        match finished {
            Some(Some(_)) => Ok(()),
            _ => Err(Conflict::LeaseLost { what: format!("deployment {id}") }.into()),
        }
    }

    async fn set_target(
        &self,
        id: &str,
        owner: &str,
        target: &str,
        state: TargetState,
        step: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        // `position` is an identity column: a new target draws the next
        // place from a sequence (no two writers get one), and the upsert
        // leaves an old one's place.
        let done = sqlx::query(concat!(
            leased!("$7"),
            "INSERT INTO deployment_targets (deployment_id, target, state, step, reason, updated_at) \
             SELECT id, $2, $3, $4, $5, $6 FROM lease \
             ON CONFLICT (deployment_id, target) DO UPDATE SET state = excluded.state, step = excluded.step, \
             reason = excluded.reason, updated_at = excluded.updated_at"
        ))
        .bind(storable(id))
        .bind(storable(target))
        .bind(state.as_str())
        .bind(storable_opt(step))
        .bind(storable_opt(reason))
        .bind(now_ms())
        .bind(storable(owner))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        fenced(id, done.rows_affected() == 1)
    }

    async fn targets(&self, id: &str) -> Result<Vec<TargetRecord>, StoreError> {
        targets_query(id).fetch_all(&self.pool).await.map_err(db)?.iter().map(rows::target).collect()
    }

    async fn journal(&self, id: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(journal_query(id).fetch_all(&self.pool).await.map_err(db)?.iter().map(rows::pair).collect())
    }

    async fn put_journal(&self, id: &str, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO deployment_journal (deployment_id, key, value, recorded_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(storable(id))
        .bind(storable(key))
        .bind(storable(value))
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn replace_journal(&self, id: &str, owner: &str, key: &str, value: &str) -> Result<(), StoreError> {
        // FOR SHARE: a takeover (which locks the deployment's row to change
        // its owner) waits for this write to commit, so the new owner reads
        // it; or this write sees the new owner and writes nothing.
        let done = sqlx::query(
            "WITH lease AS (SELECT id FROM deployments WHERE id = $1 AND lease_owner = $5 AND finished_at IS NULL FOR SHARE) \
             INSERT INTO deployment_journal (deployment_id, key, value, recorded_at) SELECT id, $2, $3, $4 FROM lease \
             ON CONFLICT (deployment_id, key) DO UPDATE SET value = excluded.value, recorded_at = excluded.recorded_at",
        )
        .bind(storable(id))
        .bind(storable(key))
        .bind(storable(value))
        .bind(now_ms())
        .bind(storable(owner))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        fenced(id, done.rows_affected() > 0)
    }

    async fn add_event(
        &self,
        id: &str,
        owner: &str,
        target: Option<&str>,
        kind: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(concat!(
            leased!("$6"),
            "INSERT INTO deployment_events (deployment_id, at, target, kind, message) SELECT id, $2, $3, $4, $5 FROM lease"
        ))
        .bind(storable(id))
        .bind(now_ms())
        .bind(storable_opt(target))
        .bind(storable(kind))
        .bind(storable(message))
        .bind(storable(owner))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        fenced(id, done.rows_affected() == 1)
    }

    async fn request_approval(
        &self,
        id: &str,
        owner: &str,
        target: &str,
        step_key: &str,
    ) -> Result<ApprovalState, StoreError> {
        let done = sqlx::query(concat!(
            leased!("$5"),
            "INSERT INTO approvals (deployment_id, step_key, target, state, requested_at) \
             SELECT id, $2, $3, 'pending', $4 FROM lease ON CONFLICT DO NOTHING"
        ))
        .bind(storable(id))
        .bind(storable(step_key))
        .bind(storable(target))
        .bind(now_ms())
        .bind(storable(owner))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        // Nothing inserted: opened before (a replay), or the lease is lost.
        if done.rows_affected() == 0 {
            fenced(id, self.lease_held(id, owner).await?)?;
        }
        Ok(self.approval(id, step_key).await?.unwrap_or(ApprovalState::Pending))
    }

    async fn approval(&self, id: &str, step_key: &str) -> Result<Option<ApprovalState>, StoreError> {
        let row = sqlx::query("SELECT state FROM approvals WHERE deployment_id = $1 AND step_key = $2")
            .bind(storable(id))
            .bind(storable(step_key))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.map(|row| ApprovalState::parse(row.get("state"))))
    }

    async fn decide_approvals(
        &self,
        id: &str,
        target: &str,
        decision: ApprovalState,
        decisions: bool,
        by: &str,
    ) -> Result<u64, StoreError> {
        // Compare-and-set on `pending`: an approval is decided once.
        let done = sqlx::query(
            "UPDATE approvals SET state = $1, decided_at = $2, decided_by = $7 WHERE deployment_id = $3 AND target = $4 \
             AND state = 'pending' AND (right(step_key, char_length($5::text)) = $5::text) = $6",
        )
        .bind(decision.as_str())
        .bind(now_ms())
        .bind(storable(id))
        .bind(storable(target))
        .bind(DECISION_SUFFIX)
        .bind(decisions)
        .bind(storable(by))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn approval_decided_by(&self, id: &str, step_key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT decided_by FROM approvals WHERE deployment_id = $1 AND step_key = $2")
            .bind(storable(id))
            .bind(storable(step_key))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.and_then(|row| row.get("decided_by")))
    }

    async fn vote_approval(&self, id: &str, step_key: &str, voter: &Voter) -> Result<Vec<Voter>, StoreError> {
        // Only while pending. FOR SHARE: a decision being made meanwhile
        // (which locks the approval's row to change its state) commits
        // first and this vote, seeing it decided, records nothing; or the
        // decision waits for the vote. A voter already counted is left as
        // it was; `seq` (a sequence) gives the order.
        sqlx::query(
            "WITH pending AS (SELECT deployment_id, step_key FROM approvals \
             WHERE deployment_id = $1 AND step_key = $2 AND state = 'pending' FOR SHARE) \
             INSERT INTO approval_votes (deployment_id, step_key, voter_id, voter_name, voted_at) \
             SELECT deployment_id, step_key, $3, $4, $5 FROM pending \
             ON CONFLICT (deployment_id, step_key, voter_id) DO NOTHING",
        )
        .bind(storable(id))
        .bind(storable(step_key))
        .bind(storable(&voter.id))
        .bind(storable(&voter.name))
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        // A statement of its own: it sees every vote committed by now.
        let rows = sqlx::query(
            "SELECT voter_id, voter_name FROM approval_votes WHERE deployment_id = $1 AND step_key = $2 ORDER BY seq",
        )
        .bind(storable(id))
        .bind(storable(step_key))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(rows::voter).collect())
    }

    async fn cancel_approval(&self, id: &str, owner: &str, step_key: &str) -> Result<(), StoreError> {
        let done = sqlx::query(concat!(
            leased!("$4"),
            "UPDATE approvals SET state = 'cancelled', decided_at = $3 WHERE deployment_id = $1 AND step_key = $2 \
             AND state = 'pending' AND EXISTS (SELECT 1 FROM lease)"
        ))
        .bind(storable(id))
        .bind(storable(step_key))
        .bind(now_ms())
        .bind(storable(owner))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        // Nothing changed: decided before, or the lease is lost.
        if done.rows_affected() == 0 {
            fenced(id, self.lease_held(id, owner).await?)?;
        }
        Ok(())
    }

    async fn cancel_step_run(&self, id: &str, owner: &str, run_id: &str, reason: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let row = sqlx::query(concat!(
            leased!("$4"),
            "UPDATE webhook_runs SET state = 'cancelled', reason = $3, next_attempt_at = NULL, finished_at = $5, \
             updated_at = $5 WHERE id = $2 AND finished_at IS NULL AND EXISTS (SELECT 1 FROM lease) RETURNING watched"
        ))
        .bind(storable(id))
        .bind(storable(run_id))
        .bind(storable(reason))
        .bind(storable(owner))
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if row.is_none() {
            fenced(id, self.lease_held(id, owner).await?)?;
        }
        Ok(self.ended(run_id, row).await)
    }
}
