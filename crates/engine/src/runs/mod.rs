//! Webhook runs: the asynchronous webhook with a callback.
//!
//! A run is created from a deployment file and a webhook name, stored, and
//! handed to the [`engine`], which calls the webhook (direct or through an
//! agent), retries what may succeed on a retry, and waits for the callback
//! until the deadline. Every step is a compare-and-set in the store, so a
//! relay killed at any point resumes where it was.
//!
//! - [`Runs`]: the handle the HTTP edge and deployments use.
//! - [`create`]: validation and the run's stored spec.
//! - [`engine`]: the scheduler, attempts, deadlines and resume.
//! - [`decide`]: what an attempt, a crash, a late callback or a deadline
//!   means for a run, as pure functions.

pub mod create;
pub mod decide;
pub mod engine;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use borealis_core::deployment::Webhook;
use borealis_core::team::AgentRef;
use borealis_core::template::RenderLimits;
use borealis_store::{
    CredentialKind, CredentialStore, Outcome, RunRecord, RunState, RunStore, RunView, StoreError, unix_ms,
};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::cluster::Replica;
use crate::metrics::EngineMetrics;
use crate::transport::Transport;
use crate::vault::{Vault, VaultError};

/// Everything needed to render a run's request again, without secret values.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunSpec {
    pub webhook: Webhook,
    pub armory: BTreeMap<String, String>,
    pub context: BTreeMap<String, String>,
    /// What the deployment deploys, for a deployment's step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, String>,
    /// The deployment whose step this run is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// The agent that makes the call, for remoteNetworkAgent webhooks.
    pub agent: Option<String>,
}

/// What runs take from the relay's configuration.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Base of callback URIs: `public_url`, else the relay's HTTP address.
    pub public_base: String,
    pub callback_timeout: Duration,
    pub webhook_timeout: Duration,
    pub retry_base_delay: Duration,
    pub max_body_bytes: u64,
    pub render_limits: RenderLimits,
    /// The stored secret that signs calls with no `signing:` of their own.
    pub signing_default: Option<String>,
    /// How often the store is searched for due or orphaned work.
    pub poll_interval: Duration,
}

/// Why a run operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The request is wrong: the file, the webhook name, the agent, a template.
    #[error("{detail}")]
    Invalid { detail: String, errors: Vec<String> },
    #[error("this Idempotency-Key was already used for {id}, with a different request; use a new key")]
    IdempotencyKeyReused { id: String },
    #[error("no webhook run {0:?}")]
    Unknown(String),
    #[error("no webhook run has this callback URI")]
    UnknownCallback,
    /// The run ended before this operation could change it.
    #[error("{0}")]
    Finished(String),
    #[error("run {id} was already decided by a callback with success: {first}")]
    CallbackConflict { id: String, first: bool },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

impl RunError {
    pub(crate) fn invalid(detail: impl Into<String>) -> Self {
        Self::Invalid { detail: detail.into(), errors: Vec::new() }
    }
}

/// An accepted callback.
#[derive(Debug)]
pub struct CallbackAccepted {
    pub run_id: String,
    pub state: RunState,
    /// The same verdict came before; nothing changed.
    pub repeat: bool,
}

/// What comes due for a run: its next attempt, or its callback's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Attempt,
    Deadline,
}

/// A wake-up on the engine's timeline: `due` for run `run` at `at`
/// (milliseconds since the epoch). Ordered by time first, so the timeline
/// is a sorted set of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Wake {
    at: i64,
    due: Due,
    run: String,
}

/// The runs: create, cancel, call back, watch. Changes are announced to
/// subscribers (long polls, deployment steps) by the handle itself.
pub struct Runs {
    store: Arc<dyn RunStore>,
    /// Agents' credentials: a run through an agent names a registered one.
    agents: Arc<dyn CredentialStore>,
    /// Whose leases this relay's attempts are under.
    replica: Arc<Replica>,
    metrics: EngineMetrics,
    /// Runs whose attempt is under way in this process.
    in_flight: Mutex<HashSet<String>>,
    vault: Arc<Vault>,
    transport: Arc<dyn Transport>,
    settings: RunSettings,
    clock: Clock,
    wake: mpsc::UnboundedSender<Wake>,
    events: broadcast::Sender<String>,
    /// Attempts and deadline checks in flight, awaited on shutdown.
    tasks: TaskTracker,
    /// Ends the scheduler at shutdown.
    stop: CancellationToken,
    /// Ends attempts still running once the shutdown grace is over.
    cut_off: CancellationToken,
}

/// A run's attempt under way in this process; see [`Runs::flight`].
pub(crate) struct InFlight<'a> {
    runs: &'a Runs,
    id: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.runs.in_flight.lock().expect("in-flight lock").remove(&self.id);
    }
}

/// The scheduler's end of [`Runs`]: give it to [`engine::schedule`].
pub struct Scheduler(mpsc::UnboundedReceiver<Wake>);

/// What [`Runs`] are made of.
pub struct RunParts {
    /// The runs' table.
    pub store: Arc<dyn RunStore>,
    /// Agents' credentials: a run through an agent names a registered one.
    pub agents: Arc<dyn CredentialStore>,
    /// Whose leases this relay's attempts are under.
    pub replica: Arc<Replica>,
    pub metrics: EngineMetrics,
    pub vault: Arc<Vault>,
    /// The way calls leave.
    pub transport: Arc<dyn Transport>,
    pub settings: RunSettings,
    pub clock: Clock,
}

impl Runs {
    pub fn new(parts: RunParts) -> (Arc<Self>, Scheduler) {
        let RunParts { store, agents, replica, metrics, vault, transport, settings, clock } = parts;
        let (wake, wakes) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let tasks = TaskTracker::new();
        let (stop, cut_off) = (CancellationToken::new(), CancellationToken::new());
        let runs = Self {
            store,
            agents,
            replica,
            metrics,
            in_flight: Mutex::default(),
            vault,
            transport,
            settings,
            clock,
            wake,
            events,
            tasks,
            stop,
            cut_off,
        };
        (Arc::new(runs), Scheduler(wakes))
    }

    /// Marks run `id`'s attempt as under way here until the guard drops.
    pub(crate) fn flight(&self, id: &str) -> InFlight<'_> {
        self.in_flight.lock().expect("in-flight lock").insert(id.to_owned());
        InFlight { runs: self, id: id.to_owned() }
    }

    pub(crate) fn in_flight_ids(&self) -> Vec<String> {
        self.in_flight.lock().expect("in-flight lock").iter().cloned().collect()
    }

    pub(crate) fn in_flight(&self, id: &str) -> bool {
        self.in_flight.lock().expect("in-flight lock").contains(id)
    }

    /// An attempt's fenced write changed nothing: a callback or a cancel
    /// ended the run meanwhile (nothing to do), or another replica took the
    /// run over (this one could not renew its lease in time).
    /// A fenced write found the attempt's lease gone: the run ended
    /// meanwhile (its callback, or a cancel), and the attempt, recorded by
    /// then, lets go of its lease; or another replica took the run over.
    pub(crate) async fn lease_lost(&self, id: &str, fence: &borealis_store::Fence<'_>) {
        match self.store.run(id).await {
            Ok(Some(run))
                if run.state.is_finished() && run.lease_owner.as_deref() == Some(self.replica.id.as_str()) =>
            {
                tracing::debug!(run = id, state = run.state.as_str(), "the run ended while its attempt was under way");
                if let Err(err) = self.store.release_finished(id, fence).await {
                    tracing::warn!(run = id, error = %err, "could not let go of a finished run's lease; it lapses");
                }
            }
            _ => {
                self.metrics.lease_lost("attempt");
                tracing::warn!(run = id, "lost the lease of a webhook attempt: another replica took the run over");
            }
        }
    }

    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    /// Whether `agent` has a live credential in its team.
    pub async fn registered(&self, agent: &AgentRef) -> Result<bool, StoreError> {
        Ok(self.agents.active_credential(CredentialKind::Agent, &agent.team, &agent.name).await?.is_some())
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The replica whose leases the attempts are under.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    pub(crate) fn attempt_now(&self, id: &str) {
        self.attempt_at(id, self.clock.now());
    }

    pub(crate) fn attempt_at(&self, id: &str, at: SystemTime) {
        let _ = self.wake.send(Wake { at: unix_ms(at), due: Due::Attempt, run: id.to_owned() });
    }

    pub(crate) fn deadline_at(&self, id: &str, at: SystemTime) {
        let _ = self.wake.send(Wake { at: unix_ms(at), due: Due::Deadline, run: id.to_owned() });
    }

    /// Tells waiters (`GET ...?wait=`, deployment steps) that run `id`
    /// changed: here, or on another replica (the relay's change feed).
    pub fn changed(&self, id: &str) {
        let _ = self.events.send(id.to_owned());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }

    pub async fn record(&self, id: &str) -> Result<RunRecord, RunError> {
        self.store.run(id).await?.ok_or_else(|| RunError::Unknown(id.to_owned()))
    }

    /// The run `id` with its attempts.
    pub async fn view(&self, id: &str) -> Result<RunView, RunError> {
        self.store.run_view(id).await?.ok_or_else(|| RunError::Unknown(id.to_owned()))
    }

    /// The run `id` once it has finished, or as it is at `deadline`.
    pub async fn view_when_finished(&self, id: &str, deadline: tokio::time::Instant) -> Result<RunView, RunError> {
        let mut events = self.subscribe();
        let mut watched = false;
        loop {
            let view = self.view(id).await?;
            if view.run.state.is_finished() || tokio::time::Instant::now() >= deadline {
                return Ok(view);
            }
            if !watched && self.replica.shared_store {
                // Its end may come on another replica: have it announced
                // (a write, so only once, and only for a run still going).
                self.store.watch_run(id).await?;
                watched = true;
                continue;
            }
            changed(&mut events, id, deadline).await;
        }
    }

    /// One page of runs, newest first.
    pub async fn list(&self, page: &borealis_store::Page) -> Result<Vec<RunRecord>, RunError> {
        Ok(self.store.runs_page(page).await?)
    }

    /// Ends an unfinished run as cancelled, with `reason`. A later callback gets a conflict.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<RunView, RunError> {
        let outcome = Outcome {
            state: RunState::Cancelled,
            success: None,
            md_message: None,
            reason: Some(reason.to_owned()),
            by_callback: false,
        };
        if !self.store.finish(id, &RunState::UNFINISHED, &outcome).await? {
            let view = self.view(id).await?;
            return Err(RunError::Finished(format!("run {id} already ended as {}", view.run.state.as_str())));
        }
        self.metrics.run_finished(RunState::Cancelled);
        self.changed(id);
        self.view(id).await
    }

    /// The external system's verdict on the run whose callback URI ends in
    /// `callback_id`, from the callback client `from` (`(team, name)`): a
    /// client decides only its own team's runs, and another team's run is
    /// answered as unknown. Its message is scrubbed of secrets first: a
    /// system may echo one back.
    pub async fn callback(
        &self,
        callback_id: &str,
        success: bool,
        md_message: Option<String>,
        (team, from): (&str, &str),
    ) -> Result<CallbackAccepted, RunError> {
        // The run's team never changes: read once, before the decision.
        match self.store.run_by_callback(callback_id).await? {
            Some(run) if run.team == team => {}
            _ => {
                self.metrics.callback("unknown");
                return Err(RunError::UnknownCallback);
            }
        }
        let md_message = match md_message {
            Some(text) => Some(self.vault.current_scrubber().await?.scrub(&text).into_owned()),
            None => None,
        };
        let outcome = Outcome {
            state: if success { RunState::Succeeded } else { RunState::Failed },
            success: Some(success),
            md_message: md_message.clone(),
            reason: Some(format!("callback from {from:?}")),
            by_callback: true,
        };
        // Durable before the reply: the store acknowledges committed writes only.
        if let Some(run_id) = self.store.finish_by_callback(callback_id, &outcome).await? {
            self.metrics.callback("accepted");
            self.metrics.run_finished(outcome.state);
            self.changed(&run_id);
            tracing::info!(run = run_id.as_str(), success, md_message = md_message.as_deref(), "callback accepted");
            return Ok(CallbackAccepted { run_id, state: outcome.state, repeat: false });
        }
        let Some(now) = self.store.run_by_callback(callback_id).await? else {
            self.metrics.callback("unknown");
            return Err(RunError::UnknownCallback);
        };
        let late = decide::late_callback(now.callback_at, now.success, success);
        self.metrics.callback(match late {
            decide::LateCallback::Repeat => "repeat",
            decide::LateCallback::Conflict { .. } => "conflict",
            decide::LateCallback::Finished => "too_late",
        });
        match late {
            decide::LateCallback::Repeat => Ok(CallbackAccepted { run_id: now.id, state: now.state, repeat: true }),
            decide::LateCallback::Conflict { first } => Err(RunError::CallbackConflict { id: now.id, first }),
            decide::LateCallback::Finished => Err(RunError::Finished(format!(
                "run {} already ended as {}: {}",
                now.id,
                now.state.as_str(),
                now.reason.unwrap_or_default()
            ))),
        }
    }

    /// Stops the scheduler and waits up to `grace` for attempts in flight;
    /// then cuts the rest off, as a crash would: on the next start they
    /// count as cut-off attempts.
    pub async fn close(&self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!(attempts = self.tasks.len(), "shutdown grace over with webhook attempts in flight");
        }
        self.cut_off.cancel();
        self.tasks.wait().await;
    }
}

/// How long a waiter goes without reading again, announced or not: an
/// announcement from another replica can be lost.
const RECHECK: Duration = Duration::from_secs(1);

/// Waits until `id` is announced on `events`, until [`RECHECK`] has passed,
/// or until `deadline`, whichever is first; the caller reads again.
pub async fn changed(events: &mut broadcast::Receiver<String>, id: &str, deadline: tokio::time::Instant) {
    use tokio::sync::broadcast::error::RecvError;
    let until = deadline.min(tokio::time::Instant::now() + RECHECK);
    let _ = tokio::time::timeout_at(until, async {
        loop {
            match events.recv().await {
                Ok(changed) if changed == id => return,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return,
                Err(RecvError::Closed) => std::future::pending().await,
            }
        }
    })
    .await;
}
