use std::collections::HashMap;
use std::time::SystemTime;

use sqlx::Row;

use super::error::{db, is_unique_violation};
use super::group_commit::Query;
use super::runs::Keyed;
use super::store::{SqliteStore, now_ms};
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

// The reads a deployment's view is made of. Those also made alone
// (record, targets, journal) serve both.

fn deployment_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT * FROM deployments WHERE id = ?").bind(storable(id))
}

fn targets_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT * FROM deployment_targets WHERE deployment_id = ? ORDER BY position").bind(storable(id))
}

fn journal_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT key, value FROM deployment_journal WHERE deployment_id = ? ORDER BY key").bind(storable(id))
}

fn events_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT * FROM deployment_events WHERE deployment_id = ? ORDER BY id").bind(storable(id))
}

fn pending_approvals_query(id: &str) -> Query<'_> {
    sqlx::query(
        "SELECT target, step_key FROM approvals WHERE deployment_id = ? AND state = 'pending' ORDER BY step_key",
    )
    .bind(storable(id))
}

/// The votes of the deployment's pending approvals, in the order they were cast.
fn pending_votes_query(id: &str) -> Query<'_> {
    sqlx::query(
        "SELECT v.step_key, v.voter_id, v.voter_name FROM approval_votes v JOIN approvals a \
         ON a.deployment_id = v.deployment_id AND a.step_key = v.step_key \
         WHERE v.deployment_id = ? AND a.state = 'pending' ORDER BY v.seq",
    )
    .bind(storable(id))
}

/// `FROM deployments WHERE` the deployment bound first is leased to the
/// owner bound next and unfinished: the fence of the owner's writes.
macro_rules! leased {
    () => {
        "FROM deployments WHERE id = ? AND lease_owner = ? AND finished_at IS NULL"
    };
}

impl SqliteStore {
    /// Whether `owner` holds unfinished deployment `id`'s lease.
    async fn lease_held(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(concat!("SELECT 1 ", leased!()))
            .bind(storable(id))
            .bind(storable(owner))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }
}

#[async_trait::async_trait]
impl DeploymentStore for SqliteStore {
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
        let now = now_ms();
        let result = self.writes.execute(sqlx::query(
            "INSERT INTO deployments (id, team, application, file, context, state, created_at, updated_at, idempotency_key, \
             request_hash, lease_owner, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(storable(id))
        .bind(storable(team))
        .bind(storable(application))
        .bind(storable(file))
        .bind(storable(context))
        .bind(DeploymentState::Running.as_str())
        .bind(now)
        .bind(now)
        .bind(idempotency.map(|k| storable(&k.key)))
        .bind(idempotency.map(|k| storable(&k.request_hash)))
        .bind(storable(lease.owner))
        .bind(unix_ms(lease.until)))
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => {
                if let Some(used) = self.key_used(Keyed::Deployments, team, idempotency).await? {
                    return Err(used.into());
                }
                let running: Option<String> = sqlx::query(
                    "SELECT id FROM deployments WHERE team = ? AND application = ? AND finished_at IS NULL",
                )
                .bind(storable(team))
                .bind(storable(application))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?
                .map(|row| row.get("id"));
                match running {
                    Some(running) => {
                        Err(Conflict::DeploymentInProgress { application: application.to_owned(), running }.into())
                    }
                    // Not the running one, so the id was taken.
                    None => Err(db(err)),
                }
            }
            Err(err) => Err(db(err)),
        }
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
            "SELECT * FROM webhook_runs WHERE id IN (SELECT value FROM deployment_journal WHERE deployment_id = ?)",
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
            "SELECT * FROM deployment_targets WHERE deployment_id IN (SELECT value FROM json_each(?)) \
             ORDER BY deployment_id, position",
        )
        .bind(serde_json::to_string(&ids).expect("ids serialize"))
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
        let now = now_ms();
        self.writes
            .execute(
                sqlx::query(
                    "UPDATE deployments SET abort_reason = ?, abort_rollback = ?, abort_requested_at = ?, \
                     abort_requested_by = ?, updated_at = ? \
                     WHERE id = ? AND finished_at IS NULL AND abort_requested_at IS NULL",
                )
                .bind(storable(reason))
                .bind(rollback)
                .bind(now)
                .bind(storable(by))
                .bind(now)
                .bind(storable(id)),
            )
            .await
            .map_err(db)?;
        self.deployment(id).await
    }

    async fn claim_deployments(&self, claim: &Claim<'_>) -> Result<Vec<String>, StoreError> {
        let lapsed = self
            .ids(
                "SELECT id FROM deployments WHERE finished_at IS NULL AND (lease_until IS NULL OR lease_until < ?) \
                 ORDER BY created_at LIMIT ?",
                claim.now,
                claim.limit,
            )
            .await?;
        let mut claimed = Vec::with_capacity(lapsed.len());
        for id in lapsed {
            let done = self
                .writes
                .execute(
                    sqlx::query(
                        "UPDATE deployments SET lease_owner = ?, lease_until = ? WHERE id = ? AND finished_at IS NULL \
                         AND (lease_until IS NULL OR lease_until < ?)",
                    )
                    .bind(storable(claim.owner))
                    .bind(unix_ms(claim.lease_until))
                    .bind(storable(&id))
                    .bind(unix_ms(claim.now)),
                )
                .await
                .map_err(db)?;
            if done.rows_affected() == 1 {
                claimed.push(id);
            }
        }
        Ok(claimed)
    }

    async fn renew_deployment_leases(&self, owner: &str, lease_until: SystemTime) -> Result<Vec<String>, StoreError> {
        self.writes
            .execute(
                sqlx::query("UPDATE deployments SET lease_until = ? WHERE lease_owner = ? AND finished_at IS NULL")
                    .bind(unix_ms(lease_until))
                    .bind(storable(owner)),
            )
            .await
            .map_err(db)?;
        let held = sqlx::query("SELECT id FROM deployments WHERE lease_owner = ? AND finished_at IS NULL")
            .bind(storable(owner))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(held.iter().map(|row| row.get("id")).collect())
    }

    async fn release_deployments(&self, owner: &str) -> Result<(), StoreError> {
        self.writes
            .execute(
                sqlx::query("UPDATE deployments SET lease_until = NULL WHERE lease_owner = ? AND finished_at IS NULL")
                    .bind(storable(owner)),
            )
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
        let now = now_ms();
        let done = self
            .writes
            .execute(
                sqlx::query(
                    "UPDATE deployments SET state = ?, reason = ?, finished_at = ?, updated_at = ?, lease_until = NULL \
                     WHERE id = ? AND finished_at IS NULL AND lease_owner = ?",
                )
                .bind(state.as_str())
                .bind(storable_opt(reason))
                .bind(now)
                .bind(now)
                .bind(storable(id))
                .bind(storable(owner)),
            )
            .await
            .map_err(db)?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        match self.deployment(id).await? {
            Some(record) if record.finished_at.is_some() => Ok(()),
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
        // A new target goes last; the upsert leaves an old one's position.
        // One statement, and writes are serialized, so no two get one place.
        let done = self.writes.execute(sqlx::query(
            "INSERT INTO deployment_targets (deployment_id, target, state, step, reason, updated_at, position) \
             SELECT id, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(position), 0) + 1 FROM deployment_targets WHERE deployment_id = ?) \
             FROM deployments WHERE id = ? AND lease_owner = ? AND finished_at IS NULL \
             ON CONFLICT (deployment_id, target) DO UPDATE SET state = excluded.state, step = excluded.step, \
             reason = excluded.reason, updated_at = excluded.updated_at",
        )
        .bind(storable(target))
        .bind(state.as_str())
        .bind(storable_opt(step))
        .bind(storable_opt(reason))
        .bind(now_ms())
        .bind(storable(id))
        .bind(storable(id))
        .bind(storable(owner)))
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
        self.writes.execute(sqlx::query("INSERT INTO deployment_journal (deployment_id, key, value, recorded_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(storable(id))
            .bind(storable(key))
            .bind(storable(value))
            .bind(now_ms()))
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn replace_journal(&self, id: &str, owner: &str, key: &str, value: &str) -> Result<(), StoreError> {
        let done = self
            .writes
            .execute(
                sqlx::query(
                    "INSERT INTO deployment_journal (deployment_id, key, value, recorded_at) \
                     SELECT id, ?, ?, ? FROM deployments WHERE id = ? AND lease_owner = ? AND finished_at IS NULL \
                     ON CONFLICT (deployment_id, key) DO UPDATE SET value = excluded.value, recorded_at = excluded.recorded_at",
                )
                .bind(storable(key))
                .bind(storable(value))
                .bind(now_ms())
                .bind(storable(id))
                .bind(storable(owner)),
            )
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
        let done = self
            .writes
            .execute(
                sqlx::query(concat!(
                    "INSERT INTO deployment_events (deployment_id, at, target, kind, message) SELECT id, ?, ?, ?, ? ",
                    leased!()
                ))
                .bind(now_ms())
                .bind(storable_opt(target))
                .bind(storable(kind))
                .bind(storable(message))
                .bind(storable(id))
                .bind(storable(owner)),
            )
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
        let done = self
            .writes
            .execute(
                sqlx::query(concat!(
                    "INSERT INTO approvals (deployment_id, step_key, target, state, requested_at) \
                     SELECT id, ?, ?, 'pending', ? ",
                    leased!(),
                    " ON CONFLICT DO NOTHING"
                ))
                .bind(storable(step_key))
                .bind(storable(target))
                .bind(now_ms())
                .bind(storable(id))
                .bind(storable(owner)),
            )
            .await
            .map_err(db)?;
        // Nothing inserted: opened before (a replay), or the lease is lost.
        if done.rows_affected() == 0 {
            fenced(id, self.lease_held(id, owner).await?)?;
        }
        Ok(self.approval(id, step_key).await?.unwrap_or(ApprovalState::Pending))
    }

    async fn approval(&self, id: &str, step_key: &str) -> Result<Option<ApprovalState>, StoreError> {
        let row = sqlx::query("SELECT state FROM approvals WHERE deployment_id = ? AND step_key = ?")
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
        let done = self.writes.execute(sqlx::query(
            "UPDATE approvals SET state = ?, decided_at = ?, decided_by = ? WHERE deployment_id = ? AND target = ? \
             AND state = 'pending' AND (substr(step_key, -length(?)) = ?) = ?",
        )
        .bind(decision.as_str())
        .bind(now_ms())
        .bind(storable(by))
        .bind(storable(id))
        .bind(storable(target))
        .bind(DECISION_SUFFIX)
        .bind(DECISION_SUFFIX)
        .bind(decisions))
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn approval_decided_by(&self, id: &str, step_key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT decided_by FROM approvals WHERE deployment_id = ? AND step_key = ?")
            .bind(storable(id))
            .bind(storable(step_key))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.and_then(|row| row.get("decided_by")))
    }

    async fn vote_approval(&self, id: &str, step_key: &str, voter: &Voter) -> Result<Vec<Voter>, StoreError> {
        // Only while pending; a voter already counted is left as it was.
        // One statement, and writes are serialized: no two votes of a
        // deployment take one place.
        self.writes
            .execute(
                sqlx::query(
                    "INSERT INTO approval_votes (deployment_id, step_key, voter_id, voter_name, voted_at, seq) \
                     SELECT deployment_id, step_key, ?, ?, ?, \
                     (SELECT COALESCE(MAX(seq), 0) + 1 FROM approval_votes WHERE deployment_id = ?) \
                     FROM approvals WHERE deployment_id = ? AND step_key = ? AND state = 'pending' \
                     ON CONFLICT (deployment_id, step_key, voter_id) DO NOTHING",
                )
                .bind(storable(&voter.id))
                .bind(storable(&voter.name))
                .bind(now_ms())
                .bind(storable(id))
                .bind(storable(id))
                .bind(storable(step_key)),
            )
            .await
            .map_err(db)?;
        let rows = sqlx::query(
            "SELECT voter_id, voter_name FROM approval_votes WHERE deployment_id = ? AND step_key = ? ORDER BY seq",
        )
        .bind(storable(id))
        .bind(storable(step_key))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(rows::voter).collect())
    }

    async fn cancel_approval(&self, id: &str, owner: &str, step_key: &str) -> Result<(), StoreError> {
        let done = self
            .writes
            .execute(
                sqlx::query(concat!(
                    "UPDATE approvals SET state = 'cancelled', decided_at = ? WHERE deployment_id = ? AND step_key = ? \
                     AND state = 'pending' AND EXISTS (SELECT 1 ",
                    leased!(),
                    ")"
                ))
                .bind(now_ms())
                .bind(storable(id))
                .bind(storable(step_key))
                .bind(storable(id))
                .bind(storable(owner)),
            )
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
        let done = self
            .writes
            .execute(
                sqlx::query(concat!(
                    "UPDATE webhook_runs SET state = 'cancelled', reason = ?, next_attempt_at = NULL, finished_at = ?, \
                     updated_at = ? WHERE id = ? AND finished_at IS NULL AND EXISTS (SELECT 1 ",
                    leased!(),
                    ")"
                ))
                .bind(storable(reason))
                .bind(now)
                .bind(now)
                .bind(storable(run_id))
                .bind(storable(id))
                .bind(storable(owner)),
            )
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            fenced(id, self.lease_held(id, owner).await?)?;
            return Ok(false);
        }
        Ok(true)
    }
}
