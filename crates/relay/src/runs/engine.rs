//! The run engine: one scheduler task keeps a timeline of attempts and
//! callback deadlines; attempts run as their own tasks, bounded in number.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use borealis_core::template::{self, Values};
use borealis_store::{Attempt, Outcome, RunRecord, RunState, unix_ms};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use super::{RunSpec, Runs, Scheduler, Wake};
use crate::forward::{self, Outbound};
use crate::signing::{self, Stamp};

/// How much of a reply body an attempt keeps.
const REPLY_LIMIT: usize = 2048;
/// Attempts running at once.
const CONCURRENT_ATTEMPTS: usize = 256;
/// The longest wait between attempts, `Retry-After` included.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// Picks up every unfinished run after a start, then runs the timeline
/// until `stop`. Each due attempt or deadline runs as a task of the runs'
/// tracker once it has a permit, so at most [`CONCURRENT_ATTEMPTS`] run at
/// once and shutdown can wait for them.
pub async fn run(runs: Arc<Runs>, scheduler: Scheduler) {
    let stop = runs.stop.clone();
    if let Err(err) = resume(&runs).await {
        tracing::error!(error = %err, "could not resume webhook runs");
    }
    let Scheduler(mut wakes) = scheduler;
    let limiter = Arc::new(Semaphore::new(CONCURRENT_ATTEMPTS));
    // (when, kind, run id): kind 0 is an attempt, 1 a deadline.
    let mut timeline: BTreeSet<(i64, u8, String)> = BTreeSet::new();
    loop {
        let next = timeline.first().map(|(at, _, _)| *at);
        let clock = runs.clock.clone();
        let sleep = async move {
            match next {
                Some(at) => clock.sleep_until(SystemTime::UNIX_EPOCH + Duration::from_millis(at.max(0) as u64)).await,
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
                let now = unix_ms(runs.clock.now());
                while let Some(first) = timeline.first().cloned() {
                    if first.0 > now {
                        break;
                    }
                    timeline.remove(&first);
                    let (_, kind, id) = first;
                    let permit = tokio::select! {
                        permit = limiter.clone().acquire_owned() => permit.expect("the limiter is never closed"),
                        () = stop.cancelled() => return,
                    };
                    let task_runs = runs.clone();
                    runs.tasks.spawn(async move {
                        let _permit = permit;
                        let runs = &task_runs;
                        let step = async {
                            if kind == 0 { attempt(runs, &id).await } else { deadline(runs, &id).await }
                        };
                        let result = tokio::select! {
                            result = step => result,
                            () = runs.cut_off.cancelled() => return,
                        };
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

async fn resume(runs: &Runs) -> StepResult {
    let unfinished = runs.store.unfinished_runs().await?;
    if !unfinished.is_empty() {
        tracing::info!(count = unfinished.len(), "resuming unfinished webhook runs");
    }
    let now = runs.clock.now();
    for run in unfinished {
        match run.state {
            RunState::Pending => runs.attempt_at(&run.id, run.next_attempt_at.unwrap_or(now)),
            RunState::AwaitingCallback => runs.deadline_at(&run.id, run.deadline_at.unwrap_or(now)),
            RunState::Calling => resume_cut_off(runs, &run).await?,
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
async fn resume_cut_off(runs: &Runs, run: &RunRecord) -> StepResult {
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
    runs.store.record_attempt(&run.id, &cut_off).await?;
    let reason = format!("attempt {number}: {CUT_OFF}");
    if number <= spec.webhook.retry_count {
        runs.store.retry_at(&run.id, runs.clock.now(), &format!("{reason}; retrying now")).await?;
        runs.attempt_now(&run.id);
    } else if !spec.webhook.disable_callback {
        let deadline = runs.clock.now() + runs.settings.callback_timeout;
        let waiting = format!("{reason}; no retries are left, so its callback decides (until the deadline)");
        if runs.store.await_callback(&run.id, deadline, Some(&waiting)).await? {
            runs.deadline_at(&run.id, deadline);
        }
    } else {
        let failed =
            format!("{reason}; no retries are left, and with callbacks disabled its lost reply was the decision");
        fail(runs, &run.id, RunState::Calling, failed).await?;
    }
    runs.changed(&run.id);
    Ok(())
}

/// What the history says of an attempt a restart cut off.
const CUT_OFF: &str = "cut off by a relay restart; the destination may have received it";

async fn fail(runs: &Runs, id: &str, from: RunState, reason: String) -> StepResult {
    let outcome =
        Outcome { state: RunState::Failed, success: None, md_message: None, reason: Some(reason), by_callback: false };
    if runs.store.finish(id, &[from], &outcome).await? {
        runs.changed(id);
    }
    Ok(())
}

async fn deadline(runs: &Runs, id: &str) -> StepResult {
    let Some(run) = runs.store.run(id).await? else { return Ok(()) };
    if run.state != RunState::AwaitingCallback {
        return Ok(());
    }
    if run.deadline_at.is_some_and(|d| d > runs.clock.now()) {
        // Moved later since this wake-up was scheduled.
        runs.deadline_at(id, run.deadline_at.expect("checked"));
        return Ok(());
    }
    let timeout = humantime::format_duration(runs.settings.callback_timeout);
    let outcome = Outcome {
        state: RunState::TimedOut,
        success: None,
        md_message: None,
        reason: Some(format!("no callback within {timeout}")),
        by_callback: false,
    };
    if runs.store.finish(id, &[RunState::AwaitingCallback], &outcome).await? {
        tracing::info!(run = %id, "webhook run timed out waiting for its callback");
        runs.changed(id);
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

async fn call(runs: &Runs, spec: &RunSpec, request: &template::RenderedRequest, stamp: &Stamp) -> Answer {
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
    let timeout = runs.settings.webhook_timeout;
    let outbound = Outbound {
        method,
        url: request.url.clone(),
        headers,
        body: forward::full(request.body.clone().unwrap_or_default()),
        timeout,
        limit: runs.settings.max_body_bytes,
    };
    let exchange = async {
        match runs.forwarder.send(spec.agent.as_deref(), outbound).await {
            Err(err) => Answer::Failed { retryable: err.retryable(), detail: err.detail },
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

async fn attempt(runs: &Runs, id: &str) -> StepResult {
    let Some(run) = runs.store.run(id).await? else { return Ok(()) };
    if run.state != RunState::Pending {
        return Ok(());
    }
    if run.next_attempt_at.is_some_and(|at| at > runs.clock.now() + Duration::from_millis(5)) {
        runs.attempt_at(id, run.next_attempt_at.expect("checked"));
        return Ok(());
    }
    let spec: RunSpec = serde_json::from_str(&run.spec)?;
    let secrets = runs.vault.all().await?;
    let values = Values { armory: spec.armory.clone(), context: spec.context.clone(), secrets };
    let rendered = match template::render_webhook_with(&spec.webhook, &values, false, &runs.settings.render_limits) {
        Ok(rendered) => rendered,
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return fail(runs, id, RunState::Pending, format!("the webhook cannot be rendered: {}", lines.join("; ")))
                .await;
        }
    };
    let keys =
        match signing::keys(runs.settings.signing_default.as_deref(), spec.webhook.signing.as_ref(), &values.secrets) {
            Ok(keys) => keys,
            Err(reason) => {
                return fail(runs, id, RunState::Pending, format!("the webhook cannot be signed: {reason}")).await;
            }
        };
    // Signed over exactly the body sent; the stored request shows these
    // headers as sent (the signature, never the key).
    let stamp = Stamp::new(id, rendered.body.as_deref().unwrap_or_default().as_bytes(), &keys);
    let masked = template::render_webhook_with(&spec.webhook, &values, true, &runs.settings.render_limits).ok().map(
        |mut masked| {
            masked.headers.retain(|(name, _)| !borealis_core::signing::is_signing_header(name));
            masked.headers.extend(stamp.pairs());
            masked
        },
    );
    let scrubber = runs.vault.scrubber(&values.secrets);
    let scrub = |text: &str| scrubber.scrub(text).into_owned();
    let number = run.attempts + 1;
    let masked_json = serde_json::to_string(&masked)?;
    if !runs.store.start_attempt(id, number, &masked_json).await? {
        return Ok(());
    }
    runs.changed(id);
    let started_at = runs.clock.now();
    let started = tokio::time::Instant::now();
    let answer = call(runs, &spec, &rendered, &stamp).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let record = match &answer {
        Answer::Status { status, reply, .. } => {
            Attempt { number, started_at, latency_ms, status: Some(*status), error: None, reply: Some(scrub(reply)) }
        }
        Answer::Failed { detail, .. } => {
            Attempt { number, started_at, latency_ms, status: None, error: Some(scrub(detail)), reply: None }
        }
    };
    runs.store.record_attempt(id, &record).await?;
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
                runs.store.finish(id, &[RunState::Calling], &outcome).await?;
            } else {
                let deadline = runs.clock.now() + runs.settings.callback_timeout;
                if runs.store.await_callback(id, deadline, None).await? {
                    runs.deadline_at(id, deadline);
                }
            }
            runs.changed(id);
            return Ok(());
        }
        Answer::Status { status, retry_after, .. } if status == 408 || status == 429 || status >= 500 => {
            (format!("attempt {number}: HTTP {status}"), retry_after)
        }
        Answer::Status { status, .. } => {
            return fail(
                runs,
                id,
                RunState::Calling,
                format!("attempt {number}: HTTP {status}; a 4xx other than 408 and 429 is not retried"),
            )
            .await;
        }
        Answer::Failed { retryable: true, detail } => (format!("attempt {number}: {}", scrub(&detail)), None),
        Answer::Failed { detail, .. } => {
            return fail(runs, id, RunState::Calling, format!("attempt {number}: {}", scrub(&detail))).await;
        }
    };
    if number > spec.webhook.retry_count {
        let reason = if spec.webhook.retry_count == 0 {
            format!("{retry_reason} (retryCount is 0)")
        } else {
            format!("{retry_reason}; gave up after {number} attempts (retryCount {})", spec.webhook.retry_count)
        };
        return fail(runs, id, RunState::Calling, reason).await;
    }
    // The first retry waits [base, 2·base), each later one twice as long,
    // below MAX_RETRY_DELAY; drawn per run, so runs do not retry in step.
    let base = runs.settings.retry_base_delay;
    let backoff = borealis_core::backoff::jittered(base * 2, MAX_RETRY_DELAY).nth(number as usize - 1).unwrap_or(base);
    let delay = backoff.max(wait_at_least.unwrap_or_default()).min(MAX_RETRY_DELAY);
    let at = runs.clock.now() + delay;
    if runs
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
        runs.attempt_at(id, at);
    }
    runs.changed(id);
    Ok(())
}
