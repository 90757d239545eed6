//! The run engine: one scheduler task keeps a timeline of attempts and
//! callback deadlines; attempts run as their own tasks, bounded in number.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::Retryable;
use borealis_core::render::{self, RenderedRequest};
use borealis_core::team::AgentRef;
use borealis_core::template::SecretUse;
use borealis_store::{Attempt, Claim, Fence, Outcome, RunRecord, RunState, StoreError, unix_ms};
use http::HeaderValue;
use tokio::sync::Semaphore;

use super::decide::{self, Sent};
use super::{Due, RunSpec, Runs, Scheduler, Wake};
use crate::metrics::{AttemptLabels, ModeLabels, status_class};
use crate::outcall::{self, Keep, Outcall};
use crate::signing::{self, Stamp};

/// How much of a reply body an attempt keeps.
const REPLY_LIMIT: usize = 2048;
/// Attempts running at once.
const CONCURRENT_ATTEMPTS: usize = 256;

/// Runs the timeline until `stop`. Work is claimed in the store, so
/// replicas sharing a database never start the same attempt twice:
///
/// - the timeline holds this replica's own wake-ups (runs it created or
///   retried, deadlines it set, and at start every unfinished run), so its
///   attempts start on time; each due attempt is claimed before it runs;
/// - every poll interval it also claims what is due anywhere (a run whose
///   replica died before its attempt), takes over attempts whose lease
///   lapsed (their replica died mid-call: recorded as cut off), and times
///   out callbacks past their deadline;
/// - every third of a lease it renews the leases of its attempts in flight.
///
/// Each claimed attempt runs as a task of the runs' tracker once it has a
/// permit, so at most [`CONCURRENT_ATTEMPTS`] run at once and shutdown can
/// wait for them.
pub async fn schedule(runs: Arc<Runs>, scheduler: Scheduler) {
    let stop = runs.stop.clone();
    if let Err(err) = resume(&runs).await {
        tracing::error!(error = err.to_string().as_str(), "could not resume webhook runs");
    }
    let Scheduler(mut wakes) = scheduler;
    let limiter = Arc::new(Semaphore::new(CONCURRENT_ATTEMPTS));
    let mut timeline: BTreeSet<Wake> = BTreeSet::new();
    let mut poll = tokio::time::interval(runs.settings.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renew = tokio::time::interval(runs.replica.lease / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = timeline.first().map(|wake| wake.at);
        let clock = runs.clock.clone();
        let sleep = async move {
            match next {
                Some(at) => clock.sleep_until(SystemTime::UNIX_EPOCH + Duration::from_millis(at.max(0) as u64)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            wake = wakes.recv() => match wake {
                Some(wake) => { timeline.insert(wake); }
                None => return,
            },
            () = sleep => {
                let now = unix_ms(runs.clock.now());
                while timeline.first().is_some_and(|wake| wake.at <= now) {
                    let Wake { due, run: id, .. } = timeline.pop_first().expect("checked");
                    let permit = tokio::select! {
                        permit = limiter.clone().acquire_owned() => permit.expect("the limiter is never closed"),
                        () = stop.cancelled() => return,
                    };
                    let task_runs = runs.clone();
                    runs.tasks.spawn(async move {
                        let _permit = permit;
                        let runs = &task_runs;
                        let step = async {
                            match due {
                                Due::Attempt => claim_and_attempt(runs, &id).await,
                                Due::Deadline => deadline(runs, &id).await,
                            }
                        };
                        let result = tokio::select! {
                            result = step => result,
                            () = runs.cut_off.cancelled() => return,
                        };
                        if let Err(err) = result {
                            tracing::error!(run = id.as_str(), error = err.to_string().as_str(), "webhook run step failed");
                        }
                    });
                }
            }
            _ = poll.tick() => {
                if let Err(err) = sweep(&runs, &limiter, false).await {
                    tracing::warn!(error = err.to_string().as_str(), "could not look for due webhook work");
                }
            }
            _ = renew.tick() => {
                // Only attempts under way here: one whose task ended without
                // its result (a store error) is left to lapse and be taken over.
                let in_flight = runs.in_flight_ids();
                if let Err(err) = runs.store.renew_run_leases(&runs.replica.id, &in_flight, runs.replica.lease_until()).await {
                    tracing::warn!(error = err.to_string().as_str(), "could not renew the leases of webhook attempts in flight");
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// Why a step of a run stopped before its end. The run stays as stored:
/// an attempt's lease lapses and a sweep (here or on another replica)
/// takes it over; a wake-up missed is found by the next sweep.
#[derive(Debug, thiserror::Error)]
enum Halt {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run's stored spec, or its request to record, is not the JSON it should be.
    #[error("a run's JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
}

type StepResult = Result<(), Halt>;

/// Most runs one sweep claims of each kind.
const SWEEP_BATCH: u32 = 64;

/// Claims what is due in the store: attempts whose lease lapsed (taken
/// over and recorded as cut off), due attempts, and deadlines passed.
/// `at_start` on a store no other relay uses: every lease is this relay's
/// own from before a restart, so it is taken over at once.
async fn sweep(runs: &Arc<Runs>, limiter: &Arc<Semaphore>, at_start: bool) -> StepResult {
    let replica = &runs.replica;
    if !replica.reachable() && !at_start {
        // Its leases may have lapsed meanwhile; claim nothing until the
        // heartbeat says the database is back.
        return Ok(());
    }
    let expired_before = if at_start { replica.now() + Duration::from_secs(365 * 24 * 3600) } else { replica.now() };
    let lapsed = runs
        .store
        .claim_expired(&Claim {
            owner: &replica.id,
            now: expired_before,
            lease_until: replica.lease_until(),
            limit: SWEEP_BATCH,
        })
        .await?;
    for run in lapsed {
        if runs.in_flight(&run.id) {
            // Its own attempt, still running here: the lease was late, not lost.
            continue;
        }
        runs.metrics.claimed("takeover");
        tracing::info!(
            run = run.id.as_str(),
            state = run.state.as_str(),
            "took over a webhook attempt whose lease lapsed"
        );
        resume_cut_off(runs, &run).await?;
    }

    let mut permits = Vec::new();
    while permits.len() < SWEEP_BATCH as usize {
        match limiter.clone().try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    if !permits.is_empty() {
        let claim = Claim {
            owner: &replica.id,
            now: runs.clock.now(),
            lease_until: replica.lease_until(),
            limit: permits.len() as u32,
        };
        for (run, permit) in runs.store.claim_due(&claim, None).await?.into_iter().zip(permits) {
            spawn_attempt(runs, run, permit);
        }
    }

    for run in runs.store.due_deadlines(runs.clock.now(), SWEEP_BATCH).await? {
        deadline(runs, &run.id).await?;
    }
    Ok(())
}

/// Runs a claimed attempt as a task of the runs' tracker.
fn spawn_attempt(runs: &Arc<Runs>, run: RunRecord, permit: tokio::sync::OwnedSemaphorePermit) {
    runs.metrics.claimed("attempt");
    let task_runs = runs.clone();
    runs.tasks.spawn(async move {
        let _permit = permit;
        let runs = &task_runs;
        let id = run.id.clone();
        let _flight = runs.flight(&id);
        let result = tokio::select! {
            result = attempt(runs, run) => result,
            () = runs.cut_off.cancelled() => return,
        };
        if let Err(err) = result {
            tracing::error!(run = id.as_str(), error = err.to_string().as_str(), "webhook attempt failed");
        }
    });
}

/// On start: every unfinished run goes on the timeline (pending ones at
/// their time, waiting ones at their deadline), and attempts cut off are
/// taken over when their lease lapses: at once where no other relay
/// shares the store, since the lease is this relay's own from before.
async fn resume(runs: &Arc<Runs>) -> StepResult {
    let unfinished = runs.store.unfinished_runs().await?;
    if !unfinished.is_empty() {
        tracing::info!(count = unfinished.len(), "resuming unfinished webhook runs");
    }
    let now = runs.clock.now();
    for run in unfinished {
        match run.state {
            RunState::Pending => runs.attempt_at(&run.id, run.next_attempt_at.unwrap_or(now)),
            RunState::AwaitingCallback => runs.deadline_at(&run.id, run.deadline_at.unwrap_or(now)),
            _ => {}
        }
    }
    if !runs.replica.shared_store {
        let none = Arc::new(Semaphore::new(0));
        sweep(runs, &none, true).await?;
    }
    Ok(())
}

/// Claims the attempt the timeline says is due, and makes it.
async fn claim_and_attempt(runs: &Arc<Runs>, id: &str) -> StepResult {
    let claim =
        Claim { owner: &runs.replica.id, now: runs.clock.now(), lease_until: runs.replica.lease_until(), limit: 1 };
    let Some(run) = runs.store.claim_due(&claim, Some(id)).await?.into_iter().next() else {
        // Not due (moved later), claimed elsewhere, or finished.
        if let Some(run) = runs.store.run(id).await?
            && run.state == RunState::Pending
            && let Some(at) = run.next_attempt_at
            && at > runs.clock.now()
        {
            runs.attempt_at(id, at);
        }
        return Ok(());
    };
    runs.metrics.claimed("attempt");
    let _flight = runs.flight(id);
    attempt(runs, run).await
}

/// An attempt whose replica stopped (a restart, or its death) before its
/// outcome was written. `run` is leased to this replica.
///
/// - Its reply was recorded (only the step after it was not written): the
///   run goes on from that reply as the attempt would have.
/// - The run was decided meanwhile (its callback came, or it was
///   cancelled): the attempt is recorded for the history, nothing more.
/// - Otherwise it is recorded as not sent or cut off, by whether its
///   request was recorded as going out, and [`decide::after_crash`] says
///   what follows.
async fn resume_cut_off(runs: &Runs, run: &RunRecord) -> StepResult {
    let spec: RunSpec = serde_json::from_str(&run.spec)?;
    let number = run.attempts;
    let fence = Fence { owner: &runs.replica.id, attempt: number };
    let recorded =
        runs.store.run_view(&run.id).await?.and_then(|view| view.attempts.into_iter().find(|a| a.number == number));
    let sent = run.request_attempt == Some(number);
    let lost = |error: &str| Attempt {
        number,
        started_at: run.updated_at,
        latency_ms: 0,
        status: None,
        error: Some(error.to_owned()),
        reply: None,
    };
    if run.state.is_finished() {
        if recorded.is_none() {
            let error = if sent { decide::DECIDED_WHILE_CUT_OFF } else { decide::NOT_SENT };
            runs.store.record_attempt(&run.id, &fence, &lost(error)).await?;
        }
        runs.store.release_finished(&run.id, &fence).await?;
        return Ok(());
    }
    let now = runs.clock.now();
    let decision = match recorded.and_then(|attempt| attempt.status) {
        Some(status) => {
            tracing::info!(
                run = run.id.as_str(),
                attempt = number,
                status,
                "the attempt taken over had its reply recorded"
            );
            let replied = decide::Attempted::Replied { status, retry_after: None };
            decide::after_attempt(number, &replied, &policy(runs, &spec), now, backoff(runs, number))
        }
        None => {
            if !runs
                .store
                .record_attempt(&run.id, &fence, &lost(if sent { decide::CUT_OFF } else { decide::NOT_SENT }))
                .await?
            {
                return Ok(());
            }
            decide::after_crash(number, sent, &policy(runs, &spec), now, backoff(runs, number))
        }
    };
    apply(runs, &run.id, &fence, decision).await
}

/// The rules a run's decisions follow: its webhook's and the relay's.
fn policy(runs: &Runs, spec: &RunSpec) -> decide::Policy {
    decide::Policy {
        retry_count: spec.webhook.retry_count,
        disable_callback: spec.webhook.disable_callback,
        callback_timeout: runs.settings.callback_timeout,
    }
}

/// The wait before retry `number`: the first in `[base, 2·base)`, each later
/// one twice as long, below the cap; drawn per run, so runs do not retry in
/// step.
fn backoff(runs: &Runs, number: u32) -> Duration {
    let base = runs.settings.retry_base_delay;
    borealis_core::backoff::jittered(base * 2, decide::MAX_RETRY_DELAY).nth(number as usize - 1).unwrap_or(base)
}

/// Writes `decision` for the fenced attempt's run, each write through
/// [`persist`]; a write the fence refuses means the lease was lost.
async fn apply(runs: &Runs, id: &str, fence: &Fence<'_>, decision: decide::Decision) -> StepResult {
    let finish = |state: RunState, success: Option<bool>, reason: String| Outcome {
        state,
        success,
        md_message: None,
        reason: Some(reason),
        by_callback: false,
    };
    let ended = |state: RunState, moved: bool| {
        if moved {
            runs.metrics.run_finished(state);
        }
        moved
    };
    let moved = match decision {
        decide::Decision::Succeed { reason } => {
            let outcome = finish(RunState::Succeeded, Some(true), reason);
            ended(RunState::Succeeded, persist(runs, id, || runs.store.finish_attempt(id, fence, &outcome)).await?)
        }
        decide::Decision::Fail { reason } => {
            let outcome = finish(RunState::Failed, None, reason);
            ended(RunState::Failed, persist(runs, id, || runs.store.finish_attempt(id, fence, &outcome)).await?)
        }
        decide::Decision::AwaitCallback { deadline, reason } => {
            let waiting =
                persist(runs, id, || runs.store.await_callback(id, fence, deadline, reason.as_deref())).await?;
            if waiting {
                runs.deadline_at(id, deadline);
            }
            waiting
        }
        decide::Decision::RetryAt { at, reason } => {
            let pending = persist(runs, id, || runs.store.retry_at(id, fence, at, &reason)).await?;
            if pending {
                runs.attempt_at(id, at);
            }
            pending
        }
    };
    if !moved {
        runs.lease_lost(id, fence).await;
    }
    runs.changed(id);
    Ok(())
}

async fn deadline(runs: &Runs, id: &str) -> StepResult {
    let Some(run) = runs.store.run(id).await? else { return Ok(()) };
    match decide::at_deadline(run.state, run.deadline_at, runs.clock.now()) {
        decide::AtDeadline::Nothing => {}
        // Moved later since this wake-up was scheduled.
        decide::AtDeadline::WakeAt(at) => runs.deadline_at(id, at),
        decide::AtDeadline::TimeOut => {
            let timeout = humantime::format_duration(runs.settings.callback_timeout);
            let outcome = Outcome {
                state: RunState::TimedOut,
                success: None,
                md_message: None,
                reason: Some(format!("no callback within {timeout}")),
                by_callback: false,
            };
            if runs.store.finish(id, &[RunState::AwaitingCallback], &outcome).await? {
                runs.metrics.deadlines.inc();
                runs.metrics.run_finished(RunState::TimedOut);
                tracing::info!(run = id, "webhook run timed out waiting for its callback");
                runs.changed(id);
            }
        }
    }
    Ok(())
}

/// The header that numbers a run's calls (1 for the first attempt), so a
/// receiver can tell a retry from a repeat of the same attempt.
pub const ATTEMPT_HEADER: &str = "borealis-attempt";

/// An attempt's call: the rendered request, stamped with the run's
/// `webhook-id` (the same on every attempt, so a receiver can drop a
/// repeat), signed when asked, and numbered.
async fn call(
    runs: &Runs,
    team: &str,
    spec: &RunSpec,
    request: &RenderedRequest,
    stamp: &Stamp,
    number: u32,
) -> Result<outcall::Reply, outcall::Failure> {
    let limits = (runs.settings.webhook_timeout, Keep::Prefix(REPLY_LIMIT));
    let target = (request.method.as_str(), request.url.as_str());
    let agent = spec.agent.as_ref().map(|name| AgentRef::new(team, name.clone()));
    let mut call =
        Outcall::from_parts(agent, target, &request.headers, request.body.as_deref(), limits)?.stamped(stamp);
    call.headers.insert(ATTEMPT_HEADER, HeaderValue::from(number));
    call.send(&*runs.transport, runs.settings.max_body_bytes).await
}

/// Makes the attempt `run` was claimed for (it is calling, leased to this
/// replica, `run.attempts` its number). Every write is fenced: a replica
/// that lost the lease meanwhile writes nothing, and the run's new owner
/// has recorded this attempt as cut off.
async fn attempt(runs: &Runs, run: RunRecord) -> StepResult {
    let id = run.id.as_str();
    let number = run.attempts;
    let fence = Fence { owner: &runs.replica.id, attempt: number };
    let spec: RunSpec = serde_json::from_str(&run.spec)?;
    let secrets = runs.vault.keyring(&run.team).await?;
    let default_key = runs.settings.signing_default.as_deref();
    let mut values = secrets.values(SecretUse::Webhooks, default_key, spec.armory.clone(), spec.context.clone());
    values.artifacts = spec.artifacts.clone();
    let rendered = match render::render_webhook_with(&spec.webhook, &values, false, &runs.settings.render_limits) {
        Ok(rendered) => rendered,
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            let reason = format!("the webhook cannot be rendered: {}", lines.join("; "));
            return apply(runs, id, &fence, decide::Decision::Fail { reason }).await;
        }
    };
    let keys = match signing::keys(default_key, spec.webhook.signing.as_ref(), &secrets) {
        Ok(keys) => keys,
        Err(reason) => {
            let reason = format!("the webhook cannot be signed: {reason}");
            return apply(runs, id, &fence, decide::Decision::Fail { reason }).await;
        }
    };
    // Signed over exactly the body sent; the stored request shows these
    // headers as sent (the signature, never the key).
    let stamp = Stamp::new(id, rendered.body.as_deref().unwrap_or_default().as_bytes(), &keys);
    let masked = render::render_webhook_with(&spec.webhook, &values, true, &runs.settings.render_limits).ok().map(
        |mut masked| {
            masked.headers.retain(|(name, _)| !borealis_core::signing::is_signing_header(name));
            masked.headers.extend(stamp.pairs());
            masked.headers.push((ATTEMPT_HEADER.to_owned(), number.to_string()));
            masked
        },
    );
    let scrubber = runs.vault.current_scrubber().await?;
    let scrub = |text: &str| scrubber.scrub(text).into_owned();
    let masked_json = serde_json::to_string(&masked)?;
    if !runs.store.set_request(id, &fence, &masked_json).await? {
        runs.lease_lost(id, &fence).await;
        return Ok(());
    }
    runs.changed(id);
    let started_at = runs.clock.now();
    let started = tokio::time::Instant::now();
    let answer = call(runs, &run.team, &spec, &rendered, &stamp, number).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let record = match &answer {
        Ok(reply) => Attempt {
            number,
            started_at,
            latency_ms,
            status: Some(reply.status),
            error: None,
            reply: Some(scrub(reply.body.as_deref().unwrap_or_default())),
        },
        Err(failure) => {
            let detail = scrub(&failure.detail);
            let error = if failure.sent == Sent::No { format!("not sent: {detail}") } else { detail };
            Attempt { number, started_at, latency_ms, status: None, error: Some(error), reply: None }
        }
    };
    // The call was made: from here its outcome is written, retried while
    // the store is away, and the call is never made again for this number.
    if !persist(runs, id, || runs.store.record_attempt(id, &fence, &record)).await? {
        runs.lease_lost(id, &fence).await;
        return Ok(());
    }
    let network_mode = spec.webhook.network_mode.as_str();
    let outcome = record.status.map_or("no_reply", status_class);
    runs.metrics.attempts.get_or_create(&AttemptLabels { network_mode, outcome }).inc();
    runs.metrics.call_seconds.get_or_create(&ModeLabels { network_mode }).observe(latency_ms as f64 / 1000.0);
    tracing::info!(
        run = id,
        webhook = spec.webhook.name.as_str(),
        attempt = number,
        status = record.status,
        error = record.error.as_deref(),
        latency_ms,
        "webhook attempt"
    );
    let attempted = match answer {
        Ok(reply) => decide::Attempted::Replied { status: reply.status, retry_after: reply.retry_after },
        Err(failure) => decide::Attempted::Failed {
            detail: scrub(&failure.detail),
            sent: failure.sent,
            retryable: failure.retryable,
        },
    };
    let decision =
        decide::after_attempt(number, &attempted, &policy(runs, &spec), runs.clock.now(), backoff(runs, number));
    apply(runs, id, &fence, decision).await
}

/// Makes one of an attempt's writes, trying it again with growing, jittered
/// delays for up to a lease while the store is unavailable. The writes are
/// fenced and idempotent (a number recorded keeps its first record; a
/// transition applies once), so a write that landed but whose answer was
/// lost is harmless to repeat. Should the store stay away, the run stays
/// calling, its lease lapses, and whoever takes it over resolves it from
/// the attempt's record, or as cut off when there is none (see
/// [`resume_cut_off`]); the call is not made again for this number.
async fn persist<T, Fut>(runs: &Runs, id: &str, write: impl FnMut() -> Fut) -> Result<T, StoreError>
where
    Fut: Future<Output = Result<T, StoreError>>,
{
    let backoff =
        borealis_core::backoff::retries(PERSIST_MIN_DELAY * 2, PERSIST_MAX_DELAY, usize::MAX, Some(runs.replica.lease));
    write
        .retry(backoff)
        .when(StoreError::is_retryable)
        .notify(|err, wait| {
            tracing::warn!(
                run = id,
                error = err.to_string().as_str(),
                retry_in_ms = wait.as_millis() as u64,
                "could not record a webhook attempt's outcome; trying again"
            );
        })
        .await
}

/// The first and the longest wait of [`persist`].
const PERSIST_MIN_DELAY: Duration = Duration::from_millis(100);
const PERSIST_MAX_DELAY: Duration = Duration::from_secs(5);
