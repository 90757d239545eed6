//! Deployments: targets run as a DAG by `dependsOn`, each through its
//! constraints, strategy and Flagger-style hooks, with every action going
//! through a [`driver::RolloutDriver`].
//!
//! - [`Deployments`]: the handle the HTTP edge uses: start, watch, decide.
//! - [`orchestrator`]: one deployment's run, and its replay after a restart.
//! - [`caller`]: the outgoing calls hooks, drivers and metric queries make.
//! - [`driver`]: the `record` and `webhook` rollout drivers.
//! - [`hooks`]: Flagger's hook types: gates, checks and events.
//! - [`providers`]: metric providers, and the Prometheus query analysis steps make.

pub mod caller;
pub mod decide;
pub mod driver;
pub mod hooks;
pub mod inputs;
pub mod journal;
pub mod orchestrator;
pub mod plan;
pub mod providers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use borealis_core::deployment::{self, DeploymentFile, UnknownFields};
use borealis_core::team::AgentRef;
use borealis_store::{
    ApprovalState, Claim, Conflict, DeploymentLease, DeploymentRecord, DeploymentStore, DeploymentView, IdempotencyKey,
    MetricProviderStore, StoreError, TargetState, Voter,
};
use tokio::sync::broadcast;

pub use orchestrator::{Context, DeploymentSettings};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Held;
use crate::runs::Runs;
use crate::vault::VaultError;
use caller::Caller;
use inputs::Inputs;

#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    /// The file cannot run: each line names a problem and where it is.
    #[error("{detail}")]
    Invalid { detail: String, errors: Vec<String> },
    #[error("this Idempotency-Key was already used for {id}, with a different request; use a new key")]
    IdempotencyKeyReused { id: String },
    /// Another deployment of the application is still running.
    #[error("{0}")]
    InProgress(String),
    #[error("no deployment {0:?}")]
    Unknown(String),
    #[error("{0}")]
    NotAwaitingApproval(String),
    /// The approval asks for a role the decider does not hold.
    #[error("{0}")]
    RoleRequired(String),
    /// The decider started the deployment, and its team forbids approving
    /// one's own.
    #[error("{0}")]
    SelfApproval(String),
    #[error("{0}")]
    NotAwaitingDecision(String),
    /// It ended before this could change it.
    #[error("{0}")]
    Ended(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

fn invalid(heading: &str, errors: Vec<String>) -> DeploymentError {
    DeploymentError::Invalid { detail: format!("{heading}:\n{}", errors.join("\n")), errors }
}

/// A deployment file read with `inputs`' artifacts: the file, its
/// warnings, and what keeps it from running on its own.
struct ReadFile {
    file: DeploymentFile,
    warnings: Vec<String>,
    errors: Vec<String>,
}

/// Reads and checks the file `text`; refuses it when it cannot be read.
fn read_file(text: &str, inputs: &Inputs, unknown: UnknownFields) -> Result<ReadFile, DeploymentError> {
    Inputs::check_artifacts(&inputs.artifacts).map_err(|e| invalid("the artifacts are invalid", vec![e]))?;
    let parsed = deployment::parse_with(text, unknown)
        .map_err(|errors| invalid("the deployment file is invalid", errors.iter().map(|e| e.to_string()).collect()))?;
    let warnings: Vec<String> = parsed.warnings.iter().map(|w| w.to_string()).collect();
    let errors: Vec<String> = deployment::validate_deployment(&parsed.file).iter().map(|e| e.to_string()).collect();
    Ok(ReadFile { file: parsed.file, warnings, errors })
}

/// Who decides a target's approval, and what they hold in the
/// deployment's team.
#[derive(Debug, Clone)]
pub struct Decider {
    /// Their `kind:id`: two approvals with the same id are one person's.
    pub id: String,
    /// How they are shown (`ci (payments)`).
    pub name: String,
    /// The roles (and identity-provider groups) they hold.
    pub roles: Vec<String>,
    /// The organization's admin: `requiresRoles` does not bind them.
    pub unrestricted: bool,
    /// The deployment's team forbids approving a deployment one started.
    pub self_approval_forbidden: bool,
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// It was taken.
    Taken,
    /// An approval was counted toward the step's `requiredApprovals`, which
    /// it does not reach yet: who approved so far, and how many it needs.
    Counted { approved_by: Vec<String>, required: u32 },
}

/// What a pending manual approval asks of whoever decides it.
struct ApprovalRules {
    key: String,
    requires_roles: Vec<String>,
    required_approvals: u32,
}

/// The manual approvals `target` waits for in `view`, with what each asks
/// of its deciders (none for a file that no longer parses).
fn approval_rules(view: &DeploymentView, file: Option<&DeploymentFile>, target: &str) -> Vec<ApprovalRules> {
    let Some(file) = file else { return Vec::new() };
    let pending = view.pending_approvals.iter().filter(|(t, k)| t == target && !is_decision(k));
    pending
        .filter_map(|(_, key)| match journal::step_at(file, key) {
            Some(deployment::Step::Pause {
                pause: deployment::Pause::UntilApproved { requires_roles, required_approvals, .. },
                ..
            }) => Some(ApprovalRules {
                key: key.clone(),
                requires_roles: requires_roles.clone(),
                required_approvals: *required_approvals,
            }),
            _ => None,
        })
        .collect()
}

/// Refuses `by` where the approvals of `target` say they may not decide
/// them: a role it does not hold, or (approving) a deployment it started
/// where its team forbids that.
fn check_decider(
    record: &DeploymentRecord,
    target: &str,
    rules: &[ApprovalRules],
    decision: Decision,
    by: &Decider,
) -> Result<(), DeploymentError> {
    for rule in rules {
        let allowed = by.unrestricted
            || rule.requires_roles.is_empty()
            || rule.requires_roles.iter().any(|r| by.roles.contains(r));
        if !allowed {
            let holds = if by.roles.is_empty() { "no role".to_owned() } else { by.roles.join(", ") };
            return Err(DeploymentError::RoleRequired(format!(
                "the approval of target {target:?} requires one of the roles {}; {} holds {holds}",
                rule.requires_roles.join(", "),
                by.name
            )));
        }
    }
    let own = Inputs::decode(&record.context).started_by_id.as_deref() == Some(by.id.as_str());
    if decision == Decision::Approve && by.self_approval_forbidden && own && !rules.is_empty() {
        return Err(DeploymentError::SelfApproval(format!(
            "{} started deployment {} and may not approve it: team {:?} forbids approving one's own deployment",
            by.name, record.id, record.team
        )));
    }
    Ok(())
}

/// Why `by` may not take `decision` on `target` of the deployment `view`
/// shows (`file` its parsed file), as [`Deployments::decide`] would refuse
/// it; `None` when it may. For showing before anyone asks (a console's
/// disabled button).
pub fn decider_refusal(
    view: &DeploymentView,
    file: Option<&DeploymentFile>,
    target: &str,
    decision: Decision,
    by: &Decider,
) -> Option<String> {
    let rules = approval_rules(view, file, target);
    check_decider(&view.record, target, &rules, decision, by).err().map(|e| e.to_string())
}

/// The longest reason an abort may give.
pub const MAX_ABORT_REASON_BYTES: usize = 1024;

/// A deployment just started (or found again by its `Idempotency-Key`).
pub struct Started {
    pub view: DeploymentView,
    pub warnings: Vec<String>,
    pub replayed: bool,
}

/// What an operator decided on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
    /// An analysis step held for a decision lets its target proceed.
    Continue,
    /// An analysis step held for a decision rolls its target back.
    Rollback,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approved",
            Decision::Reject => "rejected",
            Decision::Continue => "continue",
            Decision::Rollback => "rollback",
        }
    }
}

/// The deployments: start, watch, decide; each runs as a task of its own
/// that shutdown waits for.
pub struct Deployments {
    /// What each deployment's run uses.
    context: Arc<Context>,
    tasks: TaskTracker,
    /// Ends every deployment's task at shutdown; the journal resumes them.
    stop: CancellationToken,
    /// The deployments running here, each with the token that ends its
    /// task when this replica loses its lease.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// When this replica last renewed its deployment leases.
    renewed_at: Mutex<tokio::time::Instant>,
}

impl Deployments {
    /// Deployments run under the same replica's leases, on the same clock
    /// and counted with the same metrics as `runs`, their webhook steps' runs.
    pub fn new(
        store: Arc<dyn DeploymentStore>,
        providers: Arc<dyn MetricProviderStore>,
        runs: Arc<Runs>,
        caller: Arc<Caller>,
        settings: DeploymentSettings,
    ) -> Arc<Self> {
        let (replica, metrics, clock) = (runs.replica().clone(), runs.metrics().clone(), runs.clock().clone());
        let events = broadcast::channel(1024).0;
        let context = Arc::new(Context { store, providers, replica, metrics, runs, caller, clock, settings, events });
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let renewed_at = Mutex::new(tokio::time::Instant::now());
        Arc::new(Self { context, tasks, stop, running: Mutex::default(), renewed_at })
    }

    /// Tells waiters that deployment `id` changed: here, or on another
    /// replica (the relay's change feed).
    pub fn changed(&self, id: &str) {
        self.context.changed(id);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.context.subscribe()
    }

    /// Cancelled when this replica starts to shut down: watchers end then.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs deployment `id` here (this replica holds its lease), unless it
    /// runs here already.
    fn start(self: &Arc<Self>, id: String) {
        let lost = {
            let mut running = self.running.lock().expect("running lock");
            if running.contains_key(&id) {
                return;
            }
            let lost = self.stop.child_token();
            running.insert(id.clone(), lost.clone());
            lost
        };
        let deployments = self.clone();
        self.tasks.spawn(async move {
            let _running = Held::on(&deployments.context.metrics.deployments_running);
            tokio::select! {
                () = orchestrator::deploy(deployments.context.clone(), id.clone(), lost.clone()) => {}
                () = lost.cancelled() => {}
            }
            deployments.running.lock().expect("running lock").remove(&id);
        });
    }

    /// Keeps this replica's deployments until `stop`: renews their leases
    /// every third of a lease (ending the run of any lease found lost), and
    /// every poll interval claims the deployments whose lease lapsed (their
    /// replica died or stopped) and resumes them from their journal. At
    /// start, where no other relay shares the store, every unfinished
    /// deployment is this relay's own from before a restart: claimed at once.
    pub async fn keep(self: Arc<Self>, poll_interval: Duration, stop: CancellationToken) {
        let replica = self.context.replica.clone();
        if !replica.shared_store {
            let forever = SystemTime::now() + Duration::from_secs(365 * 24 * 3600);
            self.claim(forever).await;
        }
        let mut poll = tokio::time::interval(poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renew = tokio::time::interval(replica.lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Ends with the deployments (`close`), before their leases are released.
        let closing = self.stop.clone();
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    if replica.reachable() {
                        self.claim(replica.now()).await;
                    }
                }
                _ = renew.tick() => self.renew().await,
                () = stop.cancelled() => return,
                () = closing.cancelled() => return,
            }
        }
    }

    async fn claim(self: &Arc<Self>, expired_before: SystemTime) {
        if self.stop.is_cancelled() {
            return;
        }
        let replica = &self.context.replica;
        let claim = Claim { owner: &replica.id, now: expired_before, lease_until: replica.lease_until(), limit: 64 };
        match self.context.store.claim_deployments(&claim).await {
            Ok(ids) => {
                for id in ids {
                    self.context.metrics.claimed("deployment");
                    tracing::info!(deployment = id.as_str(), "resuming deployment (its lease lapsed)");
                    self.start(id);
                }
            }
            Err(err) => tracing::warn!(error = err.to_string().as_str(), "could not look for deployments to take over"),
        }
    }

    /// Renews this replica's deployment leases. A run whose lease another
    /// replica took is stopped here; a deployment whose lease this replica
    /// still holds but which no longer runs here (it stopped on a store
    /// error) is resumed from its journal.
    async fn renew(self: &Arc<Self>) {
        let replica = &self.context.replica;
        // Only runs that began before the renewal are judged by it: one
        // created meanwhile may not be in what it returns.
        let before: Vec<(String, CancellationToken)> =
            self.running.lock().expect("running lock").iter().map(|(id, lost)| (id.clone(), lost.clone())).collect();
        match self.context.store.renew_deployment_leases(&replica.id, replica.lease_until()).await {
            Ok(held) => {
                let stopped: Vec<String> = {
                    let running = self.running.lock().expect("running lock");
                    for (id, lost) in &before {
                        if !held.contains(id) && !lost.is_cancelled() {
                            self.context.metrics.lease_lost("deployment");
                            tracing::warn!(
                                deployment = id.as_str(),
                                "lost the deployment's lease to another replica; stopping here"
                            );
                            lost.cancel();
                        }
                    }
                    held.into_iter()
                        .filter(|id| !running.contains_key(id) && !before.iter().any(|(was, _)| was == id))
                        .collect()
                };
                for id in stopped {
                    if self.stop.is_cancelled() {
                        break;
                    }
                    tracing::info!(deployment = id.as_str(), "resuming deployment (it stopped here on a store error)");
                    self.start(id);
                }
            }
            Err(err) => {
                tracing::warn!(error = err.to_string().as_str(), "could not renew the leases of running deployments");
                // Past two thirds of a lease without renewing, another
                // replica may take them over soon: stop them here first, so
                // that no step runs on two replicas (they resume from the
                // journal wherever the lease goes).
                let unrenewed = self.renewed_at.lock().expect("renewed lock").elapsed();
                if unrenewed >= replica.lease * 2 / 3 {
                    for (id, lost) in self.running.lock().expect("running lock").iter() {
                        if !lost.is_cancelled() {
                            tracing::warn!(
                                deployment = id.as_str(),
                                "stopping the deployment here: its lease could not be renewed"
                            );
                            lost.cancel();
                        }
                    }
                }
                return;
            }
        }
        *self.renewed_at.lock().expect("renewed lock") = tokio::time::Instant::now();
    }

    /// Checks the file `text` and starts it, with the caller's `inputs`
    /// (context for its templates, artifacts for its drivers) over the
    /// file's; `unknown` says whether an unknown field is an error.
    pub async fn create(
        self: &Arc<Self>,
        team: &str,
        text: &str,
        inputs: &Inputs,
        idempotency: Option<&IdempotencyKey>,
        unknown: UnknownFields,
    ) -> Result<Started, DeploymentError> {
        let ReadFile { file, warnings, mut errors } = read_file(text, inputs, unknown)?;
        let secrets = self.context.caller.vault().keyring(team).await?;
        errors.extend(crate::signing::check_file(self.context.settings.signing_default.as_deref(), &file, &secrets));
        errors.extend(self.check_providers(team, &file).await?);
        errors.extend(self.check_agents(team, &file).await?);
        if !errors.is_empty() {
            // An ignored unknown field may be why: a misspelled key.
            errors.extend(warnings);
            return Err(invalid("the deployment cannot run", errors));
        }
        let application = file.application.clone().expect("checked");
        let id = uuid::Uuid::new_v4().to_string();
        let context_json = inputs.encode();
        let replica = &self.context.replica;
        let lease = DeploymentLease { owner: &replica.id, until: replica.lease_until() };
        match self
            .context
            .store
            .insert_deployment(&id, team, &application, text, &context_json, idempotency, &lease)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(Conflict::IdempotencyKeyUsed { id, same_request: true })) => {
                return Ok(Started { view: self.view(&id).await?, warnings, replayed: true });
            }
            Err(StoreError::Conflict(Conflict::IdempotencyKeyUsed { id, .. })) => {
                return Err(DeploymentError::IdempotencyKeyReused { id });
            }
            Err(StoreError::Conflict(conflict @ Conflict::DeploymentInProgress { .. })) => {
                return Err(DeploymentError::InProgress(conflict.to_string()));
            }
            Err(other) => return Err(other.into()),
        }
        for target in &file.targets {
            self.context
                .store
                .set_target(&id, &replica.id, &target.name, TargetState::Waiting, Some("waiting to start"), None)
                .await?;
        }
        self.context.metrics.deployments_started.inc();
        tracing::info!(deployment = id.as_str(), application = application.as_str(), "deployment started");
        self.start(id.clone());
        Ok(Started { view: self.view(&id).await?, warnings, replayed: false })
    }

    /// Every agent the file names must be registered in its team: another
    /// team's is not its to use, and whether one exists there is not said.
    async fn check_agents(&self, team: &str, file: &DeploymentFile) -> Result<Vec<String>, DeploymentError> {
        let mut errors = Vec::new();
        for agent in file.agents_used() {
            if !self.context.runs.registered(&AgentRef::new(team, agent.clone())).await? {
                errors.push(format!(
                    "agent {agent:?} is not registered in team {team:?} (borealis agents create {agent} --team {team})"
                ));
            }
        }
        Ok(errors)
    }

    /// Every analysis step's provider must be defined in the deployment's team.
    async fn check_providers(&self, team: &str, file: &DeploymentFile) -> Result<Vec<String>, DeploymentError> {
        let analyses = file.analyses();
        if analyses.is_empty() {
            return Ok(Vec::new());
        }
        let providers = self.context.providers.providers(Some(team)).await?;
        let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        let mut errors = Vec::new();
        for analysis in analyses {
            let Some(provider) = file.provider_of(analysis) else { continue };
            if !names.contains(&provider.name.as_str()) {
                let defined = if names.is_empty() {
                    "none is defined".to_owned()
                } else {
                    format!("defined: {}", names.join(", "))
                };
                let at = &provider.location;
                errors.push(
                    deployment::Diagnostic {
                        path: at.path.clone(),
                        message: format!(
                            "unknown metric provider {:?} in team {team:?} ({defined}; create it with borealis providers create)",
                            provider.name
                        ),
                        line: at.line,
                        column: at.column,
                    }
                    .to_string(),
                );
            }
        }
        Ok(errors)
    }

    pub async fn record(&self, id: &str) -> Result<DeploymentRecord, DeploymentError> {
        self.context.store.deployment(id).await?.ok_or_else(|| DeploymentError::Unknown(id.to_owned()))
    }

    /// The deployment `id` with all it shows, as of one moment.
    pub async fn view(&self, id: &str) -> Result<DeploymentView, DeploymentError> {
        self.context.store.deployment_view(id).await?.ok_or_else(|| DeploymentError::Unknown(id.to_owned()))
    }

    /// The deployment once it has finished, or as it is at `deadline`.
    pub async fn view_when_finished(
        &self,
        id: &str,
        deadline: tokio::time::Instant,
    ) -> Result<DeploymentView, DeploymentError> {
        let mut changes = self.subscribe();
        loop {
            // The record alone while waiting; the whole view once, to answer.
            let record = self.record(id).await?;
            if record.finished_at.is_some() || tokio::time::Instant::now() >= deadline {
                return self.view(id).await;
            }
            crate::runs::changed(&mut changes, id, deadline).await;
        }
    }

    /// One page of deployments, newest first, with their targets.
    pub async fn list(
        &self,
        page: &borealis_store::Page,
    ) -> Result<Vec<(DeploymentRecord, Vec<borealis_store::TargetRecord>)>, DeploymentError> {
        Ok(self.context.store.deployments_page(page).await?)
    }

    /// An operator's decision on `target`: approve or reject a pending
    /// approval, or continue or roll back an analysis held for a decision.
    pub async fn decide(
        &self,
        id: &str,
        target: &str,
        decision: Decision,
        by: &Decider,
    ) -> Result<Decided, DeploymentError> {
        let record = self.record(id).await?;
        let mut decided_by = by.name.clone();
        if matches!(decision, Decision::Approve | Decision::Reject) {
            let file = deployment::parse_with(&record.file, UnknownFields::Warn).ok().map(|parsed| parsed.file);
            let rules = approval_rules(&self.view(id).await?, file.as_ref(), target);
            check_decider(&record, target, &rules, decision, by)?;
            if decision == Decision::Approve {
                // Each approval asking for more than one person counts this
                // one's; it passes once enough distinct people approved.
                let voter = Voter { id: by.id.clone(), name: by.name.clone() };
                for rule in rules.iter().filter(|r| r.required_approvals > 1) {
                    let voters = self.context.store.vote_approval(id, &rule.key, &voter).await?;
                    let approved_by: Vec<String> = voters.into_iter().map(|v| v.name).collect();
                    if approved_by.len() < rule.required_approvals as usize {
                        self.changed(id);
                        tracing::info!(deployment = id, target, approvals = approved_by.len(), "approval counted");
                        return Ok(Decided::Counted { approved_by, required: rule.required_approvals });
                    }
                    decided_by = approved_by.join(", ");
                }
            }
        }
        let (state, on_decisions) = match decision {
            Decision::Approve => (ApprovalState::Approved, false),
            Decision::Reject => (ApprovalState::Rejected, false),
            Decision::Continue => (ApprovalState::Approved, true),
            Decision::Rollback => (ApprovalState::Rejected, true),
        };
        let decided = self.context.store.decide_approvals(id, target, state, on_decisions, &decided_by).await?;
        if decided == 0 {
            let view = self.view(id).await?;
            let waiting: Vec<&str> = view
                .pending_approvals
                .iter()
                .filter(|(_, k)| is_decision(k) == on_decisions)
                .map(|(t, _)| t.as_str())
                .collect();
            let known = view.targets.iter().any(|t| t.target == target);
            // The other kind of question may be the one it waits for.
            let waits_for_other =
                view.pending_approvals.iter().any(|(t, k)| t == target && is_decision(k) != on_decisions);
            if waits_for_other {
                let detail = if on_decisions {
                    format!(
                        "target {target:?} of deployment {id} waits for a manual approval, not a rollback or continue \
                         decision: use approve or reject"
                    )
                } else {
                    format!(
                        "target {target:?} of deployment {id} waits for a rollback or continue decision on its analysis, \
                         not an approval: use rollback or continue"
                    )
                };
                return Err(if on_decisions {
                    DeploymentError::NotAwaitingDecision(detail)
                } else {
                    DeploymentError::NotAwaitingApproval(detail)
                });
            }
            if !known {
                let detail = format!("deployment {id} has no target {target:?}");
                return Err(if on_decisions {
                    DeploymentError::NotAwaitingDecision(detail)
                } else {
                    DeploymentError::NotAwaitingApproval(detail)
                });
            }
            if on_decisions {
                let others = if waiting.is_empty() {
                    "no target is".to_owned()
                } else {
                    format!("waiting: {}", waiting.join(", "))
                };
                return Err(DeploymentError::NotAwaitingDecision(format!(
                    "target {target:?} of deployment {id} is not waiting for a rollback or continue decision ({others})"
                )));
            }
            let detail = if waiting.is_empty() {
                format!("target {target:?} of deployment {id} is not waiting for approval (no target is)")
            } else {
                format!(
                    "target {target:?} of deployment {id} is not waiting for approval (waiting: {})",
                    waiting.join(", ")
                )
            };
            return Err(DeploymentError::NotAwaitingApproval(detail));
        }
        self.changed(id);
        tracing::info!(deployment = id, target, decision = decision.as_str(), "decision taken");
        Ok(Decided::Taken)
    }

    /// Asks deployment `id` to stop: its pending steps and webhook runs are
    /// cancelled, its targets that were deploying rolled back (unless
    /// `rollback` is false) and it ends `aborted`, by whichever replica runs
    /// it. Asking again changes nothing: the first request stands.
    pub async fn abort(
        &self,
        id: &str,
        reason: Option<&str>,
        rollback: bool,
        by: &str,
    ) -> Result<DeploymentView, DeploymentError> {
        let reason = reason.map(str::trim).filter(|r| !r.is_empty()).unwrap_or("no reason given");
        if reason.len() > MAX_ABORT_REASON_BYTES {
            let detail = format!("the reason is {} bytes; at most {MAX_ABORT_REASON_BYTES} are taken", reason.len());
            return Err(DeploymentError::Invalid { detail, errors: Vec::new() });
        }
        let Some(record) = self.context.store.request_abort(id, reason, rollback, by).await? else {
            return Err(DeploymentError::Unknown(id.to_owned()));
        };
        if record.abort.is_none() {
            return Err(DeploymentError::Ended(format!("deployment {id} already ended {}", record.state)));
        }
        self.changed(id);
        tracing::info!(deployment = id, reason, rollback, "abort asked");
        self.view(id).await
    }

    /// Ends every deployment's task where it is, as a crash would (the
    /// journal resumes each), waits until they are gone, and lets go of
    /// their leases so that another replica takes them over at once.
    pub async fn close(&self) {
        self.tasks.close();
        self.stop.cancel();
        self.tasks.wait().await;
        if let Err(err) = self.context.store.release_deployments(&self.context.replica.id).await {
            tracing::warn!(
                error = err.to_string().as_str(),
                "could not release the deployments' leases; they lapse on their own"
            );
        }
    }
}

/// Whether a pending approval's step key is an analysis decision.
pub fn is_decision(step_key: &str) -> bool {
    step_key.ends_with(borealis_store::DECISION_SUFFIX)
}
