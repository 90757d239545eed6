//! One deployment's run.
//!
//! Targets run concurrently, each after its `dependsOn` targets deployed.
//! A target goes: confirm-rollout gates, `beforeDeployment`, deploy,
//! pre-rollout hooks, its strategy, confirm-promotion gates, promote,
//! post-rollout hooks, `afterDeployment`. The items of a constraint list run
//! in parallel; the first failure cancels the others.
//!
//! Every step's outcome goes into the journal under a stable key. After a
//! restart the run is replayed: journalled steps are not done again, a
//! webhook step waits on the run it started, a pause keeps its deadline, and
//! an action cut off mid-call is repeated only if the driver is idempotent.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use borealis_core::deployment::{
    self, Analysis, DeploymentFile, FlaggerHook, HookType, LookbackMethod, Pause, RunWebhook, Step, StrategyKind,
    Target, UnknownFields,
};
use borealis_core::template::{self, Slot, Values};
use borealis_store::{
    AbortRequest, ApprovalState, Conflict, DeploymentState, RunState, StoreError, TargetState, unix_ms,
};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::caller::Caller;
use super::decide::{self, ActionReplay, AnalysisDecision, CheckDecision, GateDecision};
use super::driver::{self, Action, ActionKind, RolloutDriver};
use super::hooks;
use super::inputs::Inputs;
use super::journal::{self, ActionProgress, Entry, Journal, StepEnd, StepTime};
use super::providers;
use crate::clock::Clock;
use crate::metrics::{Held, ResultLabels, StateLabels};
use crate::runs::Runs;
use crate::runs::create::{RunLink, RunRequest};

/// How a target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetOutcome {
    Deployed,
    /// Deployed, then an `afterDeployment` item failed: kept, dependents cancelled.
    AfterDeploymentFailed,
    RolledBack,
    Cancelled,
    /// Even the rollback failed, or an action could not safely be repeated.
    Failed,
}

impl TargetOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetOutcome::Deployed => "deployed",
            TargetOutcome::AfterDeploymentFailed => "after_deployment_failed",
            TargetOutcome::RolledBack => "rolled_back",
            TargetOutcome::Cancelled => "cancelled",
            TargetOutcome::Failed => "failed",
        }
    }

    /// The target's stored state once it ended so.
    fn state(self) -> TargetState {
        match self {
            TargetOutcome::Deployed => TargetState::Deployed,
            TargetOutcome::AfterDeploymentFailed => TargetState::AfterDeploymentFailed,
            TargetOutcome::RolledBack => TargetState::RolledBack,
            TargetOutcome::Cancelled => TargetState::Cancelled,
            TargetOutcome::Failed => TargetState::Failed,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "deployed" => TargetOutcome::Deployed,
            "after_deployment_failed" => TargetOutcome::AfterDeploymentFailed,
            "rolled_back" => TargetOutcome::RolledBack,
            "cancelled" => TargetOutcome::Cancelled,
            "failed" => TargetOutcome::Failed,
            _ => return None,
        })
    }
}

/// Why a step failed, for the record.
#[derive(Debug, Clone)]
struct Failure(String);

/// Why a deployment's run stopped on this replica before its end.
#[derive(Debug, thiserror::Error)]
pub enum Halt {
    /// A read or write failed. Never taken for a step's failure (that would
    /// roll a target back for a database blip): the deployment resumes from
    /// its journal, here once the database answers, or on another replica.
    #[error("store error at {at}: {source}")]
    Store {
        at: String,
        #[source]
        source: StoreError,
    },
    /// The lease fence refused a write: another replica holds the
    /// deployment now and goes on from the journal.
    #[error("the lease fence refused this replica's write ({at}): another replica holds the deployment now")]
    LeaseLost { at: String },
    /// The deployment cannot go on anywhere (its record vanished, its file
    /// no longer parses, a target's task panicked): it is failed.
    #[error("{0}")]
    Unrunnable(String),
}

impl Halt {
    /// A store error at `at` (a journal key, a write's name).
    fn store(at: &str, source: StoreError) -> Self {
        match source {
            StoreError::Conflict(Conflict::LeaseLost { .. }) => Halt::LeaseLost { at: at.to_owned() },
            source => Halt::Store { at: at.to_owned(), source },
        }
    }

    /// Whether the deployment resumes from its journal (rather than fail).
    fn resumes(&self) -> bool {
        !matches!(self, Halt::Unrunnable(_))
    }
}

/// Why a step did not pass: it failed (its target rolls back), or this
/// replica's run of the deployment halts here.
#[derive(Debug)]
enum Stop {
    Failed(Failure),
    Halt(Halt),
}

impl From<Halt> for Stop {
    fn from(halt: Halt) -> Self {
        Stop::Halt(halt)
    }
}

fn failed(reason: impl Into<String>) -> Stop {
    Stop::Failed(Failure(reason.into()))
}

/// A step's result as its caller handles it: a halt goes on up (`?`), a
/// failure comes back to be acted on.
fn failure_of(result: Result<(), Stop>) -> Result<Option<Failure>, Halt> {
    match result {
        Ok(()) => Ok(None),
        Err(Stop::Failed(failure)) => Ok(Some(failure)),
        Err(Stop::Halt(halt)) => Err(halt),
    }
}

const CANCELLED: &str = "cancelled because another item in the same list failed";

/// `aborted by NAME: REASON`, as a deployment's and its targets' reason.
fn aborted_because(request: &AbortRequest) -> String {
    match &request.requested_by {
        Some(by) => format!("aborted by {by}: {}", request.reason),
        None => format!("aborted: {}", request.reason),
    }
}

struct Deployment {
    context: Arc<Context>,
    id: String,
    /// Its team, whose agents, secrets and providers it uses.
    team: String,
    /// Its calls, made as its team's.
    caller: Arc<Caller>,
    application: String,
    text: String,
    file: DeploymentFile,
    /// `{{context.KEY}}` values the deployment was started with.
    context_values: BTreeMap<String, String>,
    /// What its drivers are told: the file's context and artifacts,
    /// overlaid with the caller's.
    told: Inputs,
    checksum: String,
    journal: Mutex<Journal>,
}

/// What deployments take from the relay's configuration.
#[derive(Debug, Clone)]
pub struct DeploymentSettings {
    /// How long a gate is asked, and a webhook step waits.
    pub callback_timeout: Duration,
    /// How often a closed gate is asked again.
    pub gate_interval: Duration,
    /// Time limit of one driver call.
    pub driver_timeout: Duration,
    pub signing_default: Option<String>,
}

/// What a deployment's run uses, shared by all of them.
pub struct Context {
    pub store: Arc<dyn borealis_store::DeploymentStore>,
    /// Where an analysis finds its metric provider.
    pub providers: Arc<dyn borealis_store::MetricProviderStore>,
    /// Whose lease this relay's deployments run under.
    pub replica: Arc<crate::cluster::Replica>,
    pub metrics: crate::metrics::EngineMetrics,
    pub runs: Arc<Runs>,
    pub caller: Arc<Caller>,
    pub clock: Clock,
    pub settings: DeploymentSettings,
    /// Ids of deployments that changed (approvals, steps), for waiters.
    pub events: tokio::sync::broadcast::Sender<String>,
}

impl Context {
    pub fn changed(&self, id: &str) {
        let _ = self.events.send(id.to_owned());
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.events.subscribe()
    }
}

/// Runs (or resumes) deployment `id` to its end, under this replica's
/// lease. A store error stops it where it is, and it is not failed for it:
/// `lost` is cancelled, and the deployment is resumed from its journal by
/// whichever replica holds its lease next (this one, once the database
/// answers again, or another, once the lease lapsed).
pub async fn deploy(context: Arc<Context>, id: String, lost: CancellationToken) {
    let Err(halt) = deploy_to_end(&context, &id).await else { return };
    if halt.resumes() {
        tracing::warn!(deployment = %id, error = %halt, "deployment stopped here; its journal resumes it");
        lost.cancel();
        return;
    }
    tracing::error!(deployment = %id, error = %halt, "deployment stopped on an internal error");
    let reason = format!("internal error: {halt}");
    match context.store.finish_deployment(&id, &context.replica.id, DeploymentState::Failed, Some(&reason)).await {
        Ok(()) => {
            let failed = StateLabels { state: DeploymentState::Failed.as_str() };
            context.metrics.deployments_finished.get_or_create(&failed).inc();
        }
        Err(err) => tracing::warn!(deployment = %id, error = %err, "could not record the deployment's failure"),
    }
    context.changed(&id);
}

async fn deploy_to_end(context: &Arc<Context>, id: &str) -> Result<(), Halt> {
    let store_at = |at: &'static str| move |err| Halt::store(at, err);
    let record = context
        .store
        .deployment(id)
        .await
        .map_err(store_at("deployment"))?
        .ok_or_else(|| Halt::Unrunnable("deployment vanished".into()))?;
    if record.finished_at.is_some() {
        // Ended between the claim (or a restart's renewal) and now.
        return Ok(());
    }
    // Checked when it was created, in the mode its creator chose.
    let file = deployment::parse_with(&record.file, UnknownFields::Warn)
        .map_err(|e| Halt::Unrunnable(format!("the stored file no longer parses: {e:?}")))?
        .file;
    let inputs = Inputs::decode(&record.context);
    let started = match &inputs.started_by {
        Some(by) => format!("deployment started by {by}"),
        None => "deployment started".to_owned(),
    };
    let told = inputs.over(&file);
    let context_values = inputs.context;
    let journal = Journal::new(context.store.journal(id).await.map_err(store_at("journal"))?);
    let checksum = {
        let digest = ring::digest::digest(&ring::digest::SHA256, record.file.as_bytes());
        digest.as_ref().iter().take(8).map(|b| format!("{b:02x}")).collect::<String>()
    };
    let finished: HashMap<String, TargetOutcome> = context
        .store
        .targets(id)
        .await
        .map_err(store_at("targets"))?
        .into_iter()
        .filter_map(|t| TargetOutcome::parse(t.state.as_str()).map(|o| (t.target, o)))
        .collect();
    let deployment = Arc::new(Deployment {
        context: context.clone(),
        id: id.to_owned(),
        caller: context.caller.for_team(&record.team),
        team: record.team.clone(),
        application: record.application.clone(),
        text: record.file.clone(),
        file,
        context_values,
        told,
        checksum,
        journal: Mutex::new(journal),
    });
    deployment.once("started", None, "deployment-started", started).await?;
    // An abort asked here or on another replica, before or while it runs.
    let (abort_tx, abort_rx) = watch::channel(record.abort.clone());
    let _watcher = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(watch_for_abort(
        context.clone(),
        id.to_owned(),
        abort_tx,
    )));

    let mut outcomes: HashMap<String, watch::Receiver<Option<TargetOutcome>>> = HashMap::new();
    let mut senders = Vec::new();
    for target in &deployment.file.targets {
        let (tx, rx) = watch::channel(None);
        outcomes.insert(target.name.clone(), rx);
        senders.push((target.clone(), tx));
    }
    let mut tasks = FuturesUnordered::new();
    for (target, tx) in senders {
        let deployment = deployment.clone();
        let outcomes = outcomes.clone();
        let earlier = finished.get(&target.name).copied();
        let mut abort = abort_rx.clone();
        tasks.push(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let outcome = match earlier {
                Some(outcome) => outcome,
                None => {
                    // An abort drops whatever the target waits on or does.
                    let outcome = tokio::select! {
                        biased;
                        request = asked(&mut abort) => deployment.abandon(&target, &request).await?,
                        outcome = deployment.target(&target, &outcomes) => outcome?,
                    };
                    deployment.finish_target(&target, outcome).await?;
                    outcome
                }
            };
            let _ = tx.send(Some(outcome));
            Ok::<_, Halt>(())
        })));
    }
    // The first target to halt halts them all: dropping the tasks aborts them.
    while let Some(done) = tasks.next().await {
        done.map_err(|e| Halt::Unrunnable(format!("a target's task failed: {e}")))??;
    }
    // Every target sent its outcome; read them in the file's order.
    let failed: Vec<String> = deployment
        .file
        .targets
        .iter()
        .filter_map(|t| Some((t, (*outcomes.get(&t.name)?.borrow())?)))
        .filter(|(_, o)| *o != TargetOutcome::Deployed)
        .map(|(t, o)| format!("{}: {}", t.name, o.as_str()))
        .collect();
    let aborted = abort_rx.borrow().clone();
    let (final_state, reason) = match aborted {
        Some(request) => (DeploymentState::Aborted, Some(aborted_because(&request))),
        None if failed.is_empty() => (DeploymentState::Succeeded, None),
        None => (DeploymentState::Failed, Some(failed.join(", "))),
    };
    let told = match &reason {
        Some(reason) if final_state == DeploymentState::Aborted => format!("deployment {final_state} ({reason})"),
        _ => format!("deployment {final_state}"),
    };
    deployment.event(None, "deployment-finished", told).await?;
    context
        .store
        .finish_deployment(id, &context.replica.id, final_state, reason.as_deref())
        .await
        .map_err(store_at("finish"))?;
    context.metrics.deployments_finished.get_or_create(&StateLabels { state: final_state.as_str() }).inc();
    context.changed(id);
    tracing::info!(deployment = %id, state = final_state.as_str(), "deployment finished");
    Ok(())
}

/// Waits until an abort of deployment `id` is asked, and sends it: read
/// again whenever the deployment changes (here, or on another replica, via
/// the change feed), and every few seconds in case a change went unheard.
async fn watch_for_abort(context: Arc<Context>, id: String, found: watch::Sender<Option<AbortRequest>>) {
    if found.borrow().is_some() {
        return;
    }
    let mut events = context.subscribe();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(changed) if changed != id => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                _ => {}
            },
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        match context.store.deployment(&id).await {
            Ok(Some(record)) if record.abort.is_some() => {
                let _ = found.send(record.abort);
                return;
            }
            Ok(_) => {}
            Err(err) => tracing::debug!(deployment = %id, error = %err, "could not look for an abort; looking again"),
        }
    }
}

/// The abort, once asked; never, if no one asks.
async fn asked(abort: &mut watch::Receiver<Option<AbortRequest>>) -> AbortRequest {
    // The channel's guard is let go before any wait.
    let found = abort.wait_for(Option::is_some).await.ok().and_then(|request| request.clone());
    match found {
        Some(request) => request,
        None => std::future::pending().await,
    }
}

impl Deployment {
    /// What the journal holds: read under its lock, which is never held
    /// across a wait.
    fn journal<T>(&self, read: impl FnOnce(&Journal) -> T) -> T {
        read(&self.journal.lock().expect("journal lock"))
    }

    /// Records a step. A write that fails (the database is away, or
    /// another replica holds the lease now) is never passed over: this
    /// replica halts the deployment here, and it resumes from its journal.
    async fn record(&self, entry: Entry) -> Result<(), Halt> {
        let (key, value) = entry.encode();
        let owner = &self.context.replica.id;
        if let Err(err) = self.context.store.replace_journal(&self.id, owner, &key, &value).await {
            return Err(Halt::store(&key, err));
        }
        self.journal.lock().expect("journal lock").insert_encoded(key, value);
        Ok(())
    }

    /// The outcome of one of the lease owner's fenced writes (`what`, for
    /// the log): a write the fence refused (another replica holds the lease
    /// now) halts this deployment's run here, and the new owner goes on from
    /// the journal; another store error is logged and passed over, as the
    /// journal, not this write, is what a resume reads.
    fn fenced<T>(&self, what: &str, result: Result<T, StoreError>) -> Result<Option<T>, Halt> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(err @ StoreError::Conflict(Conflict::LeaseLost { .. })) => Err(Halt::store(what, err)),
            Err(err) => {
                tracing::warn!(deployment = %self.id, write = what, error = %err, "a deployment write failed");
                Ok(None)
            }
        }
    }

    /// Records an event, and tells Flagger-style event hooks.
    async fn event(&self, target: Option<&Target>, kind: &str, message: String) -> Result<(), Halt> {
        let name = target.map(|t| t.name.as_str());
        let owner = &self.context.replica.id;
        self.fenced("event", self.context.store.add_event(&self.id, owner, name, kind, &message).await)?;
        self.context.changed(&self.id);
        let warning = kind.contains("fail") || kind.contains("rolled-back") || kind.contains("cancel");
        // Each event is a message of its own; its retries share its id.
        let event = uuid::Uuid::new_v4();
        for hook in self.hooks(HookType::Event) {
            let Some(target) = target.or(self.file.targets.first()) else { continue };
            let base = hooks::payload(&self.application, target, "Progressing", &self.checksum, hook);
            let body = hooks::event_payload(base, &message, warning);
            let id = self.call_id(&format!("event/{event}/{}", hook.name));
            if let Err(reason) = hooks::call(&self.caller, hook, target, &body, &id).await {
                tracing::warn!(deployment = %self.id, hook = hook.name.as_str(), reason = reason.detail.as_str(), "event hook failed");
            }
        }
        Ok(())
    }

    /// An event told once, even across replays.
    async fn once(&self, key: &str, target: Option<&Target>, kind: &str, message: String) -> Result<(), Halt> {
        if !self.journal(|j| j.told(key)) {
            self.record(Entry::Told { event: key.to_owned() }).await?;
            self.event(target, kind, message).await?;
        }
        Ok(())
    }

    async fn step(&self, target: &Target, state: TargetState, step: &str) -> Result<(), Halt> {
        let owner = &self.context.replica.id;
        let written = self.context.store.set_target(&self.id, owner, &target.name, state, Some(step), None).await;
        self.fenced("target state", written)?;
        self.context.changed(&self.id);
        Ok(())
    }

    async fn finish_target(&self, target: &Target, outcome: TargetOutcome) -> Result<(), Halt> {
        let reason = self.journal(|j| j.reason(&target.name));
        let owner = &self.context.replica.id;
        let written = self
            .context
            .store
            .set_target(&self.id, owner, &target.name, outcome.state(), None, reason.as_deref())
            .await;
        self.fenced("target state", written)?;
        self.context.changed(&self.id);
        Ok(())
    }

    /// Records why `target` ends as it does.
    async fn reason(&self, target: &Target, reason: String) -> Result<(), Halt> {
        self.record(Entry::Reason { target: target.name.clone(), reason }).await
    }

    fn hooks(&self, kind: HookType) -> impl Iterator<Item = &FlaggerHook> {
        self.file.hooks.iter().filter(move |h| h.kind == kind)
    }

    /// The `webhook-id` of a hook or driver call: `<deployment id>:<key>`,
    /// with `key` naming the step, so that retries and re-asks of one call
    /// (and its repeat after a restart) carry the same id.
    fn call_id(&self, key: &str) -> String {
        format!("{}:{key}", self.id)
    }

    /// The whole program of one target.
    async fn target(
        &self,
        target: &Target,
        outcomes: &HashMap<String, watch::Receiver<Option<TargetOutcome>>>,
    ) -> Result<TargetOutcome, Halt> {
        let name = &target.name;
        self.step(target, TargetState::Waiting, "waiting for dependencies").await?;
        for dep in &target.constraints.depends_on {
            let Some(mut rx) = outcomes.get(dep).cloned() else { continue };
            let outcome = match rx.wait_for(|o| o.is_some()).await {
                Ok(o) => o.expect("waited for some"),
                Err(_) => TargetOutcome::Failed,
            };
            if outcome != TargetOutcome::Deployed {
                let reason = format!("cancelled: dependency {dep} ended {}", outcome.as_str());
                self.reason(target, reason.clone()).await?;
                self.once(&format!("{name}/cancelled"), Some(target), "target-cancelled", reason).await?;
                // The cancel is told to the driver; whether it went through changes nothing here.
                failure_of(self.act(target, "cancel", ActionKind::Cancel, None).await)?;
                return Ok(TargetOutcome::Cancelled);
            }
        }
        self.step(target, TargetState::Running, "starting").await?;
        self.once(&format!("{name}/started"), Some(target), "target-started", format!("target {name} started")).await?;

        if let Some(f) = failure_of(self.gates(target, HookType::ConfirmRollout, "Initialized", None).await)? {
            return self.roll_back(target, f, false).await;
        }
        if let Some(f) =
            failure_of(self.items(target, "beforeDeployment", &target.constraints.before_deployment).await)?
        {
            return self.roll_back(target, f, false).await;
        }
        if let Some(f) = failure_of(self.act(target, "deploy", ActionKind::Deploy, None).await)? {
            return self.roll_back(target, f, true).await;
        }
        if let Some(f) = failure_of(self.checks(target, HookType::PreRollout, "Progressing", "pre-rollout").await)? {
            return self.roll_back(target, f, true).await;
        }
        if let Some(f) = failure_of(self.strategy(target).await)? {
            return self.roll_back(target, f, true).await;
        }
        if let Some(f) = failure_of(self.rollback_requested(target, "promotion").await)? {
            return self.roll_back(target, f, true).await;
        }
        if let Some(f) = failure_of(self.gates(target, HookType::ConfirmPromotion, "Promoting", None).await)? {
            return self.roll_back(target, f, true).await;
        }
        if let Some(f) = failure_of(self.act(target, "promote", ActionKind::Promote, None).await)? {
            return self.roll_back(target, f, true).await;
        }
        self.post_rollout(target, "Succeeded").await?;
        self.step(target, TargetState::Deployed, "afterDeployment").await?;
        self.once(&format!("{name}/deployed"), Some(target), "target-deployed", format!("target {name} deployed"))
            .await?;
        if let Some(Failure(reason)) =
            failure_of(self.items(target, "afterDeployment", &target.constraints.after_deployment).await)?
        {
            let reason =
                format!("afterDeployment failed: {reason}; the target stays deployed and its dependents are cancelled");
            self.reason(target, reason.clone()).await?;
            self.once(&format!("{name}/after-failed"), Some(target), "after-deployment-failed", reason).await?;
            return Ok(TargetOutcome::AfterDeploymentFailed);
        }
        Ok(TargetOutcome::Deployed)
    }

    /// The target's strategy, between deploy and promotion: a canary's
    /// steps, or blue/green's waits around the traffic switch.
    async fn strategy(&self, target: &Target) -> Result<(), Stop> {
        let strategy = target.strategy.as_deref().and_then(|s| self.file.strategy(s)).map(|s| &s.kind);
        match strategy {
            Some(StrategyKind::Canary { steps }) => {
                for (i, step) in steps.iter().enumerate() {
                    self.rollback_requested(target, &format!("canary/{i}")).await?;
                    match step {
                        Step::SetWeight { weight, .. } => self.set_weight(target, i, *weight).await?,
                        other => {
                            let key = journal::step_key(&target.name, "canary", i);
                            self.item(target, key, other, CancellationToken::new()).await?
                        }
                    }
                }
            }
            Some(StrategyKind::BlueGreen { redirect_traffic_after, shut_down_old_version_after, .. }) => {
                self.items(target, "redirectTrafficAfter", redirect_traffic_after).await?;
                self.act(target, "redirect", ActionKind::RedirectTraffic, None).await?;
                self.items(target, "shutDownOldVersionAfter", shut_down_old_version_after).await?;
            }
            None => {}
        }
        Ok(())
    }

    /// Ends `target` on an abort: what it waited on is cancelled (its
    /// webhook runs, its approvals), and it is rolled back through its driver
    /// if it was deploying and the abort asks for that, else left.
    async fn abandon(&self, target: &Target, request: &AbortRequest) -> Result<TargetOutcome, Halt> {
        let name = &target.name;
        let reason = aborted_because(request);
        let owner = &self.context.replica.id;
        for run in self.journal(|j| j.runs_of(name).map(str::to_owned).collect::<Vec<_>>()) {
            let cancelled = self.context.store.cancel_step_run(&self.id, owner, &run, &reason).await;
            if self.fenced("cancel of a step's run", cancelled)? == Some(true) {
                self.context.metrics.run_finished(RunState::Cancelled);
                self.context.runs.changed(&run);
            }
        }
        let view = self.context.store.deployment_view(&self.id).await.map_err(|e| Halt::store("approvals", e))?;
        for (_, step_key) in view.iter().flat_map(|v| &v.pending_approvals).filter(|(t, _)| t == name) {
            let cancelled = self.context.store.cancel_approval(&self.id, owner, step_key).await;
            self.fenced("cancel of an approval", cancelled)?;
        }
        let deploying = self.journal(|j| j.action(name, "deploy").is_some());
        self.reason(target, reason.clone()).await?;
        if !(deploying && request.rollback) {
            let left = if deploying { "; it was deploying and is left as it is (no rollback)" } else { "" };
            let told = format!("target {name} {reason}{left}");
            self.once(&format!("{name}/aborted"), Some(target), "target-aborted", told).await?;
            return Ok(TargetOutcome::Cancelled);
        }
        let told = format!("target {name} {reason}; rolling it back");
        self.once(&format!("{name}/aborted"), Some(target), "target-aborted", told).await?;
        let outcome = match failure_of(self.act(target, "rollback", ActionKind::Rollback, None).await)? {
            None => TargetOutcome::RolledBack,
            Some(Failure(why)) => {
                self.reason(target, format!("{reason}; then the rollback failed: {why}")).await?;
                TargetOutcome::Failed
            }
        };
        self.post_rollout(target, "Failed").await?;
        Ok(outcome)
    }

    async fn roll_back(
        &self,
        target: &Target,
        Failure(reason): Failure,
        deployed: bool,
    ) -> Result<TargetOutcome, Halt> {
        let name = &target.name;
        self.reason(target, reason.clone()).await?;
        self.once(&format!("{name}/failure"), Some(target), "target-failed", reason.clone()).await?;
        let outcome = if deployed {
            match failure_of(self.act(target, "rollback", ActionKind::Rollback, None).await)? {
                None => TargetOutcome::RolledBack,
                Some(Failure(why)) => {
                    self.reason(target, format!("{reason}; then the rollback failed: {why}")).await?;
                    TargetOutcome::Failed
                }
            }
        } else {
            // Nothing was deployed: the failure itself is the rollback.
            TargetOutcome::RolledBack
        };
        self.post_rollout(target, "Failed").await?;
        self.once(
            &format!("{name}/rolled-back"),
            Some(target),
            "target-rolled-back",
            format!("target {name} rolled back: {reason}"),
        )
        .await?;
        Ok(outcome)
    }

    /// One rollout action through the target's driver, at most once unless
    /// the driver is idempotent.
    async fn act(&self, target: &Target, action: &str, kind: ActionKind, weight: Option<u32>) -> Result<(), Stop> {
        let driver: Arc<dyn RolloutDriver> = driver::for_target(
            &self.caller,
            self.context.settings.driver_timeout,
            &self.context.runs.settings().render_limits,
            target,
        );
        let progress = self.journal(|j| j.action(&target.name, action));
        match decide::action_replay(progress, driver.idempotent()) {
            ActionReplay::Skip => return Ok(()),
            ActionReplay::Refuse => {
                return Err(failed(format!(
                    "the relay restarted during {}; the {} driver is not idempotent, so it was not repeated",
                    kind.as_str(),
                    driver.name()
                )));
            }
            ActionReplay::Send => {}
        }
        let entry = |progress| Entry::Action { target: target.name.clone(), action: action.to_owned(), progress };
        self.record(entry(ActionProgress::Started)).await?;
        self.step(target, TargetState::Running, kind.as_str()).await?;
        let action = Action {
            id: self.call_id(&journal::action_key(&target.name, action)),
            deployment_id: self.id.clone(),
            application: self.application.clone(),
            target: target.name.clone(),
            account: target.account.clone(),
            namespace: target.namespace.clone(),
            kind,
            weight,
            context: self.told.context.clone(),
            artifacts: self.told.artifacts.clone(),
        };
        let described = match weight {
            Some(w) => format!("{} {w}% on {} ({} driver)", kind.as_str(), target.name, driver.name()),
            None => format!("{} on {} ({} driver)", kind.as_str(), target.name, driver.name()),
        };
        driver.act(&action).await.map_err(|e| failed(format!("{} failed: {e}", kind.as_str())))?;
        self.record(entry(ActionProgress::Done)).await?;
        self.event(Some(target), "action", described).await?;
        Ok(())
    }

    async fn set_weight(&self, target: &Target, index: usize, weight: u32) -> Result<(), Stop> {
        // Flagger asks before every increase: each step's gate is its own.
        let step = format!("canary/{index}");
        self.gates(target, HookType::ConfirmTrafficIncrease, "Progressing", Some(&step)).await?;
        self.act(target, &format!("canary/{index}"), ActionKind::SetWeight, Some(weight)).await?;
        self.checks(target, HookType::Rollout, "Progressing", &format!("canary/{index}/rollout")).await
    }

    /// Runs a constraint list: all items at once, all must pass. The
    /// first failure cancels the others; a halt stops them all at once.
    async fn items(&self, target: &Target, list: &str, items: &[Step]) -> Result<(), Stop> {
        if items.is_empty() {
            return Ok(());
        }
        let cancel = CancellationToken::new();
        let mut running: FuturesUnordered<_> = items
            .iter()
            .enumerate()
            .map(|(i, item)| self.item(target, journal::step_key(&target.name, list, i), item, cancel.clone()))
            .collect();
        let mut first: Option<Failure> = None;
        while let Some(result) = running.next().await {
            if let Some(failure) = failure_of(result)?
                && first.is_none()
            {
                first = Some(failure);
                cancel.cancel();
            }
        }
        match first {
            None => Ok(()),
            Some(Failure(reason)) => Err(failed(format!("{list}: {reason}"))),
        }
    }

    /// One item: a webhook, a pause, an approval or an analysis.
    async fn item(&self, target: &Target, key: String, item: &Step, cancel: CancellationToken) -> Result<(), Stop> {
        let key = key.as_str();
        match self.journal(|j| j.step_end(key)) {
            Some(StepEnd::Passed) => return Ok(()),
            Some(StepEnd::Failed(reason)) => return Err(failed(reason)),
            None => {}
        }
        let result = match item {
            Step::RunWebhook(run) => self.webhook(target, key, run, &cancel).await,
            Step::Pause { pause: Pause::UntilApproved { expires_after, .. }, .. } => {
                self.approval(target, key, *expires_after, &cancel).await
            }
            Step::Analysis(analysis) => self.analysis(target, key, analysis, &cancel).await,
            Step::Pause { pause: Pause::Seconds(seconds), .. } => self.pause(target, key, *seconds, &cancel).await,
            Step::SetWeight { .. } | Step::Unsupported { .. } => Err(failed("this step is not supported here")),
        };
        let end = match &result {
            Ok(()) => StepEnd::Passed,
            Err(Stop::Failed(Failure(reason))) if reason != CANCELLED => StepEnd::Failed(reason.clone()),
            Err(_) => return result,
        };
        self.record(Entry::StepEnded { step: key.to_owned(), end }).await?;
        result
    }

    async fn webhook(
        &self,
        target: &Target,
        key: &str,
        run: &RunWebhook,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let run_id = match self.journal(|j| j.step_run(key)) {
            Some(id) => id,
            None => {
                let request = RunRequest {
                    team: self.team.clone(),
                    file: self.text.clone(),
                    name: run.name.clone(),
                    environment: Some(target.name.clone()),
                    context: self.context_values.clone(),
                    link: Some(RunLink {
                        deployment_id: self.id.clone(),
                        step_context: run.context.clone(),
                        artifacts: self.told.artifacts.clone(),
                    }),
                    unknown_fields: UnknownFields::Warn,
                    // A relay that dies between creating the run and
                    // journalling it finds the same run again on resume.
                    idempotency: Some(borealis_store::IdempotencyKey {
                        key: format!("deployment:{}:{key}/run", self.id),
                        request_hash: "deployment-step".into(),
                    }),
                };
                let created = match self.context.runs.create(request).await {
                    Ok(created) => created,
                    // The run's idempotency key finds it again on resume.
                    Err(crate::runs::RunError::Store(err)) => return Err(Halt::store(key, err).into()),
                    Err(e) => return Err(failed(format!("webhook {} could not start: {e}", run.name))),
                };
                self.record(Entry::StepRun { step: key.to_owned(), run: created.id.clone() }).await?;
                self.event(
                    Some(target),
                    "webhook-started",
                    format!("webhook {} started (run {})", run.name, created.id),
                )
                .await?;
                created.id
            }
        };
        self.step(target, TargetState::Running, &format!("waiting for webhook {}", run.name)).await?;
        let mut events = self.context.runs.subscribe();
        loop {
            let record = match self.context.runs.record(&run_id).await {
                Ok(record) => record,
                Err(crate::runs::RunError::Store(err)) => return Err(Halt::store("webhook run", err).into()),
                Err(crate::runs::RunError::Unknown(_)) => return Err(failed(format!("webhook run {run_id} vanished"))),
                Err(other) => return Err(failed(format!("webhook run {run_id}: {other}"))),
            };
            if record.state.is_finished() {
                let message = record.md_message.clone().or(record.reason.clone()).unwrap_or_default();
                return if record.state == RunState::Succeeded {
                    self.event(Some(target), "webhook-succeeded", format!("webhook {} succeeded: {message}", run.name))
                        .await?;
                    Ok(())
                } else {
                    let why = format!("webhook {} {}: {message}", run.name, record.state.as_str().replace('_', " "));
                    self.event(Some(target), "webhook-failed", why.clone()).await?;
                    Err(failed(why))
                };
            }
            tokio::select! {
                _ = events.recv() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = cancel.cancelled() => {
                    let owner = &self.context.replica.id;
                    let cancelled = self.context.store.cancel_step_run(&self.id, owner, &run_id, CANCELLED).await;
                    if self.fenced("cancel of a step's run", cancelled)? == Some(true) {
                        self.context.metrics.run_finished(RunState::Cancelled);
                    }
                    self.context.runs.changed(&run_id);
                    return Err(failed(CANCELLED));
                }
            }
        }
    }

    /// A time the step `key` set on its first run, kept across restarts:
    /// `after` from now, unless the journal holds it already.
    async fn step_time(&self, key: &str, time: StepTime, after: Duration) -> Result<i64, Halt> {
        if let Some(at_ms) = self.journal(|j| j.step_time(key, time)) {
            return Ok(at_ms);
        }
        let at_ms = unix_ms(self.context.clock.now() + after);
        self.record(Entry::StepTime { step: key.to_owned(), time, at_ms }).await?;
        Ok(at_ms)
    }

    async fn approval(
        &self,
        target: &Target,
        key: &str,
        expires_after: Option<u64>,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        // An expiring approval keeps its deadline across restarts.
        let expires_at = match expires_after {
            None => None,
            Some(seconds) => Some(self.step_time(key, StepTime::ApprovalExpires, Duration::from_secs(seconds)).await?),
        };
        let store = &self.context.store;
        let mut changes = self.context.subscribe();
        // The target says it waits before the approval shows as pending.
        self.step(target, TargetState::AwaitingApproval, "waiting for approval").await?;
        let owner = &self.context.replica.id;
        let mut state =
            store.request_approval(&self.id, owner, &target.name, key).await.map_err(|e| Halt::store(key, e))?;
        self.once(
            &format!("{key}/requested"),
            Some(target),
            "approval-requested",
            format!("target {} waits for approval", target.name),
        )
        .await?;
        // Counted while this waits, whichever way the wait ends.
        let _pending = Held::on(&self.context.metrics.approvals_pending);
        loop {
            match state {
                ApprovalState::Approved => {
                    let by = self.decided_by(key).await?;
                    self.event(Some(target), "approved", format!("target {} approved by {by}", target.name)).await?;
                    return Ok(());
                }
                ApprovalState::Rejected => return Err(failed(format!("rejected by {}", self.decided_by(key).await?))),
                ApprovalState::Cancelled => return Err(failed(CANCELLED)),
                ApprovalState::Pending => {}
            }
            let expiry = async {
                match expires_at {
                    Some(at) => self.context.clock.sleep_until(from_unix_ms(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = changes.recv() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = expiry => {
                    self.fenced("approval", store.cancel_approval(&self.id, owner, key).await)?;
                    // An approval given at the last moment still counts.
                    if store.approval(&self.id, key).await.ok().flatten() == Some(ApprovalState::Approved) {
                        state = ApprovalState::Approved;
                        continue;
                    }
                    let why = format!(
                        "the approval expired: target {} was not approved within {}",
                        target.name,
                        humantime::format_duration(Duration::from_secs(expires_after.unwrap_or_default()))
                    );
                    self.event(Some(target), "approval-expired", why.clone()).await?;
                    return Err(failed(why));
                }
                () = cancel.cancelled() => {
                    self.fenced("approval", store.cancel_approval(&self.id, owner, key).await)?;
                    self.event(Some(target), "approval-cancelled", format!("the approval of {} is no longer pending", target.name)).await?;
                    return Err(failed(CANCELLED));
                }
            }
            state =
                store.approval(&self.id, key).await.map_err(|e| Halt::store(key, e))?.unwrap_or(ApprovalState::Pending);
        }
    }

    /// An analysis step: `numberOfJudgmentRuns` runs, one per interval, each
    /// journalled with its values, then the decision its modes call for.
    async fn analysis(
        &self,
        target: &Target,
        key: &str,
        analysis: &Analysis,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let start = self.step_time(key, StepTime::AnalysisStart, Duration::ZERO).await?;
        let provider_name = self.file.provider_of(analysis).map(|p| p.name.clone()).unwrap_or_default();
        let provider = self
            .context
            .providers
            .provider(&self.team, &provider_name)
            .await
            .map_err(|e| Halt::store("metric provider", e))?
            .ok_or_else(|| failed(format!("analysis: metric provider {provider_name:?} is no longer defined")))?;
        let interval_ms = analysis.interval_seconds as i64 * 1000;
        let runs = analysis.number_of_judgment_runs;
        let mut failure: Option<String> = None;
        for n in 1..=runs {
            let judged = match self.journal(|j| j.judgment(key, n)) {
                Some(judged) => judged,
                None => {
                    let at = start + n as i64 * interval_ms;
                    self.step(target, TargetState::Running, &format!("analysis: judgment run {n} of {runs}")).await?;
                    tokio::select! {
                        () = self.context.clock.sleep_until(from_unix_ms(at)) => {}
                        () = cancel.cancelled() => return Err(failed(CANCELLED)),
                    }
                    let judged = self.judge(target, analysis, &provider, start, at, n).await;
                    let summary = judged.summary.clone();
                    let kind = if judged.passed { "judgment-passed" } else { "judgment-failed" };
                    self.record(Entry::Judgment { step: key.to_owned(), n, run: Box::new(judged.clone()) }).await?;
                    let result = if judged.passed { "passed" } else { "failed" };
                    self.context.metrics.judgments.get_or_create(&ResultLabels { result }).inc();
                    self.event(Some(target), kind, format!("analysis run {n} of {runs}: {summary}")).await?;
                    judged
                }
            };
            if !judged.passed {
                failure = Some(format!("analysis failed at judgment run {n} of {runs}: {}", judged.summary));
                break;
            }
        }
        match decide::after_analysis(failure, runs, analysis.roll_back_mode, analysis.roll_forward_mode) {
            AnalysisDecision::Pass => Ok(()),
            AnalysisDecision::Fail(reason) => Err(failed(reason)),
            AnalysisDecision::Ask { state, why } => self.decision(target, key, state, why, cancel).await,
        }
    }

    /// One judgment run: every query over its window, at time `at`.
    async fn judge(
        &self,
        target: &Target,
        analysis: &Analysis,
        provider: &borealis_store::MetricProvider,
        start: i64,
        at: i64,
        n: u32,
    ) -> borealis_api::JudgmentRun {
        let interval_ms = analysis.interval_seconds as i64 * 1000;
        let window_start = match analysis.lookback_method {
            LookbackMethod::Growing => start,
            LookbackMethod::Sliding => at - interval_ms,
        };
        let time = |ms: i64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
        let window =
            providers::Window { start: time(window_start), end: time(at), interval_seconds: analysis.interval_seconds };
        let armory = providers::window_values(&self.application, &self.id, target, &window);
        let mut context = self.context_values.clone();
        context.extend(self.file.context.clone());
        context.extend(analysis.context.clone());
        // A query reads no secret: it is sent in the provider's URL, and
        // shown with its results.
        let values = Values { armory, context, artifacts: self.told.artifacts.clone(), ..Values::default() };
        let mut results = Vec::new();
        let mut problems = Vec::new();
        for name in &analysis.queries {
            let Some(query) = self.file.query(&name.name) else { continue };
            let outcome = match template::render(&query.query_template, Slot::Query, &values, false) {
                Err(err) => Err(format!("query {}: {err}", query.name)),
                Ok(text) => providers::query(&self.caller, provider, &text, time(at))
                    .await
                    .map(|v| (text, v))
                    .map_err(|e| format!("query {}: {e}", query.name)),
            };
            let mut entry = borealis_api::QueryResult {
                query: query.name.clone(),
                lower_limit: query.lower_limit,
                upper_limit: query.upper_limit,
                rendered: None,
                value: None,
                within: None,
                error: None,
            };
            match outcome {
                Ok((text, value)) => {
                    let within = query.within(value);
                    entry.rendered = Some(text);
                    entry.value = Some(value);
                    entry.within = Some(within);
                    if !within {
                        let bounds = match (query.lower_limit, query.upper_limit) {
                            (Some(low), Some(high)) => format!("[{low}, {high}]"),
                            (Some(low), None) => format!("at least {low}"),
                            (None, Some(high)) => format!("at most {high}"),
                            (None, None) => "no limits".into(),
                        };
                        problems.push(format!("query {} returned {value}, outside its limits ({bounds})", query.name));
                    }
                }
                Err(reason) => {
                    entry.error = Some(reason.clone());
                    problems.push(reason);
                }
            }
            results.push(entry);
        }
        let passed = problems.is_empty();
        let summary = if passed {
            // JSON's spelling of the value (`2.0`, not `2`), as the summary always showed it.
            let values: Vec<String> = results
                .iter()
                .map(|r| format!("{}={}", r.query, r.value.map_or(serde_json::Value::Null, serde_json::Value::from)))
                .collect();
            format!("every query within its limits ({})", values.join(", "))
        } else {
            problems.join("; ")
        };
        borealis_api::JudgmentRun {
            run: n,
            of: analysis.number_of_judgment_runs,
            at: crate::clock::rfc3339(time(at)),
            window: borealis_api::JudgmentWindow {
                start: crate::clock::rfc3339(time(window_start)),
                end: crate::clock::rfc3339(time(at)),
                lookback: match analysis.lookback_method {
                    LookbackMethod::Growing => borealis_api::Lookback::Growing,
                    LookbackMethod::Sliding => borealis_api::Lookback::Sliding,
                },
            },
            provider: provider.name.clone(),
            queries: results,
            passed,
            summary,
            step: None,
        }
    }

    /// Holds the target until an operator says `rollback` or `continue`.
    async fn decision(
        &self,
        target: &Target,
        key: &str,
        state_name: TargetState,
        why: String,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let store = &self.context.store;
        let decision_key = format!("{key}{}", borealis_store::DECISION_SUFFIX);
        let at = |e| Halt::store(&decision_key, e);
        let mut changes = self.context.subscribe();
        self.step(target, state_name, &why).await?;
        let owner = &self.context.replica.id;
        let mut state = store.request_approval(&self.id, owner, &target.name, &decision_key).await.map_err(at)?;
        self.once(
            &format!("{decision_key}/requested"),
            Some(target),
            "decision-requested",
            format!("target {} waits for rollback or continue: {why}", target.name),
        )
        .await?;
        loop {
            match state {
                ApprovalState::Approved => {
                    let by = self.decided_by(&decision_key).await?;
                    self.event(Some(target), "continued", format!("target {} continued by {by}", target.name)).await?;
                    return Ok(());
                }
                ApprovalState::Rejected => {
                    return Err(failed(format!("rolled back by {}: {why}", self.decided_by(&decision_key).await?)));
                }
                ApprovalState::Cancelled => return Err(failed(CANCELLED)),
                ApprovalState::Pending => {}
            }
            tokio::select! {
                _ = changes.recv() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = cancel.cancelled() => {
                    self.fenced("approval", store.cancel_approval(&self.id, owner, &decision_key).await)?;
                    return Err(failed(CANCELLED));
                }
            }
            state = store.approval(&self.id, &decision_key).await.map_err(at)?.unwrap_or(ApprovalState::Pending);
        }
    }

    /// Who decided approval `key`, as events name them.
    async fn decided_by(&self, key: &str) -> Result<String, Halt> {
        let by = self.context.store.approval_decided_by(&self.id, key).await.map_err(|e| Halt::store(key, e))?;
        Ok(by.unwrap_or_else(|| "an operator".to_owned()))
    }

    async fn pause(&self, target: &Target, key: &str, seconds: u64, cancel: &CancellationToken) -> Result<(), Stop> {
        let until = self.step_time(key, StepTime::PauseUntil, Duration::from_secs(seconds)).await?;
        self.step(target, TargetState::Running, &format!("pausing {seconds}s")).await?;
        tokio::select! {
            () = self.context.clock.sleep_until(from_unix_ms(until)) => Ok(()),
            () = cancel.cancelled() => Err(failed(CANCELLED)),
        }
    }

    /// Gates are asked again, every gate interval, until they answer 2xx.
    /// Asks `kind`'s gates until each opens; `at` names the canary step for
    /// a gate asked at every step.
    async fn gates(&self, target: &Target, kind: HookType, phase: &str, at: Option<&str>) -> Result<(), Stop> {
        for hook in self.hooks(kind).cloned().collect::<Vec<_>>() {
            if self.journal(|j| j.gate_opened(&target.name, kind.as_str(), at, &hook.name)) {
                continue;
            }
            self.step(target, TargetState::Running, &format!("waiting for gate {:?}", hook.name)).await?;
            let body = hooks::payload(&self.application, target, phase, &self.checksum, &hook);
            let deadline = self.context.clock.now() + self.context.settings.callback_timeout;
            // Every re-ask of the gate is the same question: the same id.
            let id = self.call_id(&journal::gate_key(&target.name, kind.as_str(), at, &hook.name));
            loop {
                let reply = hooks::call(&self.caller, &hook, target, &body, &id).await;
                match decide::gate_reply(&reply, self.context.clock.now() >= deadline) {
                    GateDecision::Open => break,
                    GateDecision::AskAgain => {}
                    GateDecision::Closed => {
                        return Err(failed(format!(
                            "gate {:?} ({}) stayed closed until its deadline",
                            hook.name,
                            kind.as_str()
                        )));
                    }
                }
                match reply {
                    Ok(status) => tracing::debug!(hook = hook.name.as_str(), status, "gate closed"),
                    Err(reason) => {
                        tracing::debug!(hook = hook.name.as_str(), reason = reason.detail.as_str(), "gate unreachable")
                    }
                }
                self.context.clock.sleep(self.context.settings.gate_interval).await;
            }
            let opened = Entry::GateOpened {
                target: target.name.clone(),
                kind: kind.as_str().to_owned(),
                hook: hook.name.clone(),
                at: at.map(str::to_owned),
            };
            self.record(opened).await?;
            let before = at.map(|at| format!(" before {at}")).unwrap_or_default();
            let told = format!("gate {:?} ({}) opened{before}", hook.name, kind.as_str());
            self.event(Some(target), "gate-opened", told).await?;
        }
        Ok(())
    }

    /// Pre-rollout and rollout hooks: a non-2xx reply fails the rollout.
    /// `step` names where they run (`pre-rollout`, `canary/1/rollout`).
    async fn checks(&self, target: &Target, kind: HookType, phase: &str, step: &str) -> Result<(), Stop> {
        for hook in self.hooks(kind).cloned().collect::<Vec<_>>() {
            let body = hooks::payload(&self.application, target, phase, &self.checksum, &hook);
            let id = self.call_id(&format!("{}/{step}/{}", target.name, hook.name));
            let reply = hooks::call(&self.caller, &hook, target, &body, &id).await;
            match decide::check_reply(reply) {
                CheckDecision::Passed => {
                    let passed = format!("{} hook {:?} passed", kind.as_str(), hook.name);
                    self.event(Some(target), "hook-passed", passed).await?;
                }
                CheckDecision::Refused(status) => {
                    return Err(failed(format!("{} hook {:?} answered HTTP {status}", kind.as_str(), hook.name)));
                }
                CheckDecision::Unreachable(detail) => return Err(failed(detail)),
            }
        }
        Ok(())
    }

    /// Rollback hooks: a 2xx reply asks for a rollback. `step` names where
    /// they are asked (`canary/0`, `promotion`).
    async fn rollback_requested(&self, target: &Target, step: &str) -> Result<(), Stop> {
        for hook in self.hooks(HookType::Rollback).cloned().collect::<Vec<_>>() {
            let body = hooks::payload(&self.application, target, "Progressing", &self.checksum, &hook);
            let id = self.call_id(&format!("{}/{step}/rollback/{}", target.name, hook.name));
            let reply = hooks::call(&self.caller, &hook, target, &body, &id).await;
            if decide::asks_for_rollback(&reply) {
                return Err(failed(format!("rollback hook {:?} asked for a rollback", hook.name)));
            }
        }
        Ok(())
    }

    /// Post-rollout hooks run whatever the outcome; their failures are noted only.
    async fn post_rollout(&self, target: &Target, phase: &str) -> Result<(), Halt> {
        for hook in self.hooks(HookType::PostRollout).cloned().collect::<Vec<_>>() {
            if self.journal(|j| j.post_rollout_called(&target.name, &hook.name)) {
                continue;
            }
            let body = hooks::payload(&self.application, target, phase, &self.checksum, &hook);
            let id = self.call_id(&format!("{}/post-rollout/{}", target.name, hook.name));
            let note = match hooks::call(&self.caller, &hook, target, &body, &id).await {
                Ok(status) => format!("post-rollout hook {:?} answered HTTP {status}", hook.name),
                Err(err) => err.detail,
            };
            self.record(Entry::PostRolloutCalled { target: target.name.clone(), hook: hook.name.clone() }).await?;
            self.event(Some(target), "post-rollout", note).await?;
        }
        Ok(())
    }
}

/// The wall-clock instant of a journalled time.
fn from_unix_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}
