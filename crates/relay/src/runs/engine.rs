//! The run engine: one scheduler task keeps a timeline of attempts and
//! callback deadlines; attempts run as their own tasks, bounded in number.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use borealis_core::template::{self, Values};
use borealis_store::{Attempt, Outcome, RunRecord, RunState, unix_ms};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::RunSpec;
use crate::proxy::{self, Outbound};
use crate::signing::{self, Stamp};
use crate::state::AppState;
/// How much of a reply body an attempt keeps.
const REPLY_LIMIT: usize = 2048;
/// Attempts running at once.
const CONCURRENT_ATTEMPTS: usize = 256;
/// The longest wait between attempts, `Retry-After` included.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

#[derive(Debug)]
enum Wake {
    Attempt(String, SystemTime),
    Deadline(String, SystemTime),
}

/// The handle handlers use: schedule work, and hear of changes.
pub struct Engine {
    wake: mpsc::UnboundedSender<Wake>,
    events: broadcast::Sender<String>,
}

pub struct EngineTask(mpsc::UnboundedReceiver<Wake>);

impl Engine {
    pub fn new() -> (Self, EngineTask) {
        let (wake, wakes) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        (Self { wake, events }, EngineTask(wakes))
    }

    pub fn attempt_now(&self, id: &str) {
        self.attempt_at(id, SystemTime::now());
    }

    fn attempt_at(&self, id: &str, at: SystemTime) {
        let _ = self.wake.send(Wake::Attempt(id.to_owned(), at));
    }

    fn deadline_at(&self, id: &str, at: SystemTime) {
        let _ = self.wake.send(Wake::Deadline(id.to_owned(), at));
    }

    /// Tells waiters (`GET ...?wait=`) that run `id` changed.
    pub fn changed(&self, id: &str) {
        let _ = self.events.send(id.to_owned());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }
}

/// Picks up every unfinished run after a start, then runs the timeline
/// until `stop`.
pub async fn run(state: Arc<AppState>, task: EngineTask, stop: CancellationToken) {
    if let Err(err) = resume(&state).await {
        tracing::error!(error = %err, "could not resume webhook runs");
    }
    let EngineTask(mut wakes) = task;
    let limiter = Arc::new(Semaphore::new(CONCURRENT_ATTEMPTS));
    // (when, kind, run id): kind 0 is an attempt, 1 a deadline.
    let mut timeline: BTreeSet<(i64, u8, String)> = BTreeSet::new();
    loop {
        let next = timeline.first().map(|(at, _, _)| *at);
        let sleep = async {
            match next {
                Some(at) => {
                    let wait = (at - unix_ms(SystemTime::now())).max(0) as u64;
                    tokio::time::sleep(Duration::from_millis(wait)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            wake = wakes.recv() => match wake {
                Some(Wake::Attempt(id, at)) => { timeline.insert((unix_ms(at), 0, id)); }
                Some(Wake::Deadline(id, at)) => { timeline.insert((unix_ms(at), 1, id)); }
                None => return,
            },
            () = sleep => {
                let now = unix_ms(SystemTime::now());
                while let Some(first) = timeline.first().cloned() {
                    if first.0 > now {
                        break;
                    }
                    timeline.remove(&first);
                    let (_, kind, id) = first;
                    let state = state.clone();
                    let limiter = limiter.clone();
                    tokio::spawn(async move {
                        let _permit = limiter.acquire_owned().await;
                        let result = if kind == 0 { attempt(&state, &id).await } else { deadline(&state, &id).await };
                        if let Err(err) = result {
                            tracing::error!(run = %id, error = %err, "webhook run step failed");
                        }
                    });
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

type StepResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn resume(state: &Arc<AppState>) -> StepResult {
    let runs = state.store.unfinished_runs().await?;
    if !runs.is_empty() {
        tracing::info!(count = runs.len(), "resuming unfinished webhook runs");
    }
    for run in runs {
        match run.state {
            RunState::Pending => state.engine.attempt_at(&run.id, run.next_attempt_at.unwrap_or_else(SystemTime::now)),
            RunState::AwaitingCallback => {
                state.engine.deadline_at(&run.id, run.deadline_at.unwrap_or_else(SystemTime::now))
            }
            RunState::Calling => resume_cut_off(state, &run).await?,
            _ => {}
        }
    }
    Ok(())
}

/// A call cut off by a restart: whether it arrived is unknown. It is
/// recorded as a failed attempt and retried, with the same `webhook-id`, if
/// retries are left. With none left, a run that expects a callback waits
/// for it (the destination may well have received the call and will answer;
/// failing now would turn its answer into a 409), until the usual deadline;
/// a run whose 2xx reply was the decision fails, since that reply is lost.
async fn resume_cut_off(state: &Arc<AppState>, run: &RunRecord) -> StepResult {
    let spec: RunSpec = serde_json::from_str(&run.spec)?;
    let number = run.attempts;
    let cut_off = Attempt {
        number,
        started_at: run.updated_at,
        latency_ms: 0,
        status: None,
        error: Some(CUT_OFF.to_owned()),
        reply: None,
    };
    state.store.record_attempt(&run.id, &cut_off).await?;
    let reason = format!("attempt {number}: {CUT_OFF}");
    if number <= spec.webhook.retry_count {
        state.store.retry_at(&run.id, SystemTime::now(), &format!("{reason}; retrying now")).await?;
        state.engine.attempt_now(&run.id);
    } else if !spec.webhook.disable_callback {
        let deadline = SystemTime::now() + state.config.callback_timeout;
        let waiting = format!("{reason}; no retries are left, so its callback decides (until the deadline)");
        if state.store.await_callback(&run.id, deadline, Some(&waiting)).await? {
            state.engine.deadline_at(&run.id, deadline);
        }
    } else {
        let failed =
            format!("{reason}; no retries are left, and with callbacks disabled its lost reply was the decision");
        fail(state, &run.id, RunState::Calling, failed).await?;
    }
    state.engine.changed(&run.id);
    Ok(())
}

/// What the history says of an attempt a restart cut off.
const CUT_OFF: &str = "cut off by a relay restart; the destination may have received it";

async fn fail(state: &AppState, id: &str, from: RunState, reason: String) -> StepResult {
    let outcome =
        Outcome { state: RunState::Failed, success: None, md_message: None, reason: Some(reason), by_callback: false };
    if state.store.finish(id, &[from], &outcome).await? {
        state.engine.changed(id);
    }
    Ok(())
}

async fn deadline(state: &Arc<AppState>, id: &str) -> StepResult {
    let Some(run) = state.store.run(id).await? else { return Ok(()) };
    if run.state != RunState::AwaitingCallback {
        return Ok(());
    }
    if run.deadline_at.is_some_and(|d| d > SystemTime::now()) {
        // Moved later since this wake-up was scheduled.
        state.engine.deadline_at(id, run.deadline_at.expect("checked"));
        return Ok(());
    }
    let timeout = humantime::format_duration(state.config.callback_timeout);
    let outcome = Outcome {
        state: RunState::TimedOut,
        success: None,
        md_message: None,
        reason: Some(format!("no callback within {timeout}")),
        by_callback: false,
    };
    if state.store.finish(id, &[RunState::AwaitingCallback], &outcome).await? {
        tracing::info!(run = %id, "webhook run timed out waiting for its callback");
        state.engine.changed(id);
    }
    Ok(())
}

/// What one call produced.
enum Answer {
    Status { status: u16, retry_after: Option<Duration>, reply: String },
    Failed { retryable: bool, detail: String },
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

async fn call(state: &Arc<AppState>, spec: &RunSpec, request: &template::RenderedRequest, stamp: &Stamp) -> Answer {
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => return Answer::Failed { retryable: false, detail: format!("header {name:?} cannot be sent") },
        }
    }
    // `webhook-id` is the run's id, the same on every attempt, so a receiver
    // can drop a repeat; signed, also this attempt's timestamp and signature.
    stamp.apply(&mut headers);
    let Ok(method) = http::Method::from_bytes(request.method.as_bytes()) else {
        return Answer::Failed { retryable: false, detail: format!("invalid method {:?}", request.method) };
    };
    let timeout = state.config.webhook_timeout;
    let outbound = Outbound {
        method,
        url: request.url.clone(),
        headers,
        body: request.body.clone().map(Body::from).unwrap_or_else(Body::empty),
        timeout,
        limit: state.config.max_body_bytes,
    };
    let exchange = async {
        match proxy::send(state, spec.agent.as_deref(), outbound).await {
            Err(err) => Answer::Failed { retryable: err.retryable, detail: err.problem.detail },
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = retry_after(response.headers());
                let mut body = response.into_body().into_data_stream();
                let mut reply = Vec::new();
                while reply.len() < REPLY_LIMIT {
                    match body.next().await {
                        Some(Ok(chunk)) => reply.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                reply.truncate(REPLY_LIMIT);
                Answer::Status { status, retry_after, reply: String::from_utf8_lossy(&reply).into_owned() }
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(answer) => answer,
        Err(_) => Answer::Failed {
            retryable: true,
            detail: format!("no complete answer within {}", humantime::format_duration(timeout)),
        },
    }
}

async fn attempt(state: &Arc<AppState>, id: &str) -> StepResult {
    let Some(run) = state.store.run(id).await? else { return Ok(()) };
    if run.state != RunState::Pending {
        return Ok(());
    }
    if run.next_attempt_at.is_some_and(|at| at > SystemTime::now() + Duration::from_millis(5)) {
        state.engine.attempt_at(id, run.next_attempt_at.expect("checked"));
        return Ok(());
    }
    let spec: RunSpec = serde_json::from_str(&run.spec)?;
    let secrets = state.vault.all().await?;
    let values = Values { armory: spec.armory.clone(), context: spec.context.clone(), secrets };
    let rendered = match template::render_webhook_with(&spec.webhook, &values, false, &state.config.render_limits()) {
        Ok(rendered) => rendered,
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return fail(state, id, RunState::Pending, format!("the webhook cannot be rendered: {}", lines.join("; ")))
                .await;
        }
    };
    let keys = match signing::keys(&state.config, spec.webhook.signing.as_ref(), &values.secrets) {
        Ok(keys) => keys,
        Err(reason) => {
            return fail(state, id, RunState::Pending, format!("the webhook cannot be signed: {reason}")).await;
        }
    };
    // Signed over exactly the body sent; the stored request shows these
    // headers as sent (the signature, never the key).
    let stamp = Stamp::new(id, rendered.body.as_deref().unwrap_or_default().as_bytes(), &keys);
    let masked = template::render_webhook_with(&spec.webhook, &values, true, &state.config.render_limits()).ok().map(
        |mut masked| {
            masked.headers.retain(|(name, _)| !borealis_core::signing::is_signing_header(name));
            masked.headers.extend(stamp.pairs());
            masked
        },
    );
    let scrubber = state.vault.scrubber(&values.secrets);
    let scrub = |text: &str| scrubber.scrub(text).into_owned();
    let number = run.attempts + 1;
    let masked_json = serde_json::to_string(&masked)?;
    if !state.store.start_attempt(id, number, &masked_json).await? {
        return Ok(());
    }
    state.engine.changed(id);
    let started_at = SystemTime::now();
    let started = tokio::time::Instant::now();
    let answer = call(state, &spec, &rendered, &stamp).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let record = match &answer {
        Answer::Status { status, reply, .. } => {
            Attempt { number, started_at, latency_ms, status: Some(*status), error: None, reply: Some(scrub(reply)) }
        }
        Answer::Failed { detail, .. } => {
            Attempt { number, started_at, latency_ms, status: None, error: Some(scrub(detail)), reply: None }
        }
    };
    state.store.record_attempt(id, &record).await?;
    tracing::info!(run = %id, webhook = %spec.webhook.name, attempt = number, status = ?record.status, error = ?record.error, latency_ms, "webhook attempt");

    let (retry_reason, wait_at_least) = match answer {
        Answer::Status { status, .. } if (200..300).contains(&status) => {
            if spec.webhook.disable_callback {
                let outcome = Outcome {
                    state: RunState::Succeeded,
                    success: Some(true),
                    md_message: None,
                    reason: Some(format!("HTTP {status}; callbacks are disabled, so the reply decides")),
                    by_callback: false,
                };
                state.store.finish(id, &[RunState::Calling], &outcome).await?;
            } else {
                let deadline = SystemTime::now() + state.config.callback_timeout;
                if state.store.await_callback(id, deadline, None).await? {
                    state.engine.deadline_at(id, deadline);
                }
            }
            state.engine.changed(id);
            return Ok(());
        }
        Answer::Status { status, retry_after, .. } if status == 408 || status == 429 || status >= 500 => {
            (format!("attempt {number}: HTTP {status}"), retry_after)
        }
        Answer::Status { status, .. } => {
            return fail(
                state,
                id,
                RunState::Calling,
                format!("attempt {number}: HTTP {status}; a 4xx other than 408 and 429 is not retried"),
            )
            .await;
        }
        Answer::Failed { retryable: true, detail } => (format!("attempt {number}: {}", scrub(&detail)), None),
        Answer::Failed { detail, .. } => {
            return fail(state, id, RunState::Calling, format!("attempt {number}: {}", scrub(&detail))).await;
        }
    };
    if number > spec.webhook.retry_count {
        let reason = if spec.webhook.retry_count == 0 {
            format!("{retry_reason} (retryCount is 0)")
        } else {
            format!("{retry_reason}; gave up after {number} attempts (retryCount {})", spec.webhook.retry_count)
        };
        return fail(state, id, RunState::Calling, reason).await;
    }
    // The first retry waits [base, 2·base), each later one twice as long,
    // below MAX_RETRY_DELAY; drawn per run, so runs do not retry in step.
    let base = state.config.retry_base_delay;
    let backoff = borealis_core::backoff::jittered(base * 2, MAX_RETRY_DELAY).nth(number as usize - 1).unwrap_or(base);
    let delay = backoff.max(wait_at_least.unwrap_or_default()).min(MAX_RETRY_DELAY);
    let at = SystemTime::now() + delay;
    if state
        .store
        .retry_at(
            id,
            at,
            &format!(
                "{retry_reason}; retrying in {}",
                humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
            ),
        )
        .await?
    {
        state.engine.attempt_at(id, at);
    }
    state.engine.changed(id);
    Ok(())
}

/// A run as the API shows it; with its attempts, also the attempt log and
/// the last request sent.
pub fn describe(run: &RunRecord, attempts: Option<&[Attempt]>) -> borealis_api::WebhookRun {
    let time = |t: Option<SystemTime>| t.map(crate::api::rfc3339);
    let spec: Option<RunSpec> = serde_json::from_str(&run.spec).ok();
    borealis_api::WebhookRun {
        id: run.id.clone(),
        webhook: run.webhook.clone(),
        environment: run.environment.clone(),
        state: api_state(run.state),
        success: run.success,
        md_message: run.md_message.clone(),
        reason: run.reason.clone(),
        attempts: run.attempts,
        network_mode: spec.as_ref().map(|s| match s.webhook.network_mode {
            borealis_core::deployment::NetworkMode::Direct => borealis_api::NetworkMode::Direct,
            borealis_core::deployment::NetworkMode::RemoteNetworkAgent => borealis_api::NetworkMode::RemoteNetworkAgent,
        }),
        agent: spec.as_ref().and_then(|s| s.agent.clone()),
        callback_uri: spec.as_ref().and_then(|s| s.armory.get("callbackUri").cloned()),
        created_at: crate::api::rfc3339(run.created_at),
        updated_at: crate::api::rfc3339(run.updated_at),
        next_attempt_at: time(run.next_attempt_at),
        deadline_at: time(run.deadline_at),
        callback_at: time(run.callback_at),
        finished_at: time(run.finished_at),
        attempt_log: attempts.map(|attempts| {
            attempts
                .iter()
                .map(|a| borealis_api::Attempt {
                    number: a.number,
                    started_at: crate::api::rfc3339(a.started_at),
                    latency_ms: a.latency_ms,
                    status: a.status,
                    error: a.error.clone(),
                    reply: a.reply.clone(),
                })
                .collect()
        }),
        request: attempts.map(|_| run.request.as_deref().and_then(|r| serde_json::from_str(r).ok())),
        warnings: None,
    }
}

/// A run's state as the API spells it.
pub fn api_state(state: borealis_store::RunState) -> borealis_api::RunState {
    use borealis_api::RunState as Api;
    use borealis_store::RunState;
    match state {
        RunState::Pending => Api::Pending,
        RunState::Calling => Api::Calling,
        RunState::AwaitingCallback => Api::AwaitingCallback,
        RunState::Succeeded => Api::Succeeded,
        RunState::Failed => Api::Failed,
        RunState::TimedOut => Api::TimedOut,
        RunState::Cancelled => Api::Cancelled,
    }
}
