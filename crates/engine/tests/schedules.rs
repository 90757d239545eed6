//! The run engine and the deployment orchestrator in-process, against a real
//! SQLite store in a temp dir, on an in-memory transport (the way out the
//! relay implements: here it answers from a script and records what it was
//! given) and a manual clock: a 24 h callback deadline, a backoff schedule,
//! `Retry-After`, a timed pause and an approval's expiry pass without
//! waiting, and what is checked about time is what the engine recorded
//! against that clock. The relay's own transport is exercised end to end
//! (`tests/tests/webhooks.rs`, `direct.rs`, `tunnel.rs`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use borealis_core::team::AgentRef;
use borealis_core::template::RenderLimits;
use borealis_engine::clock::Clock;
use borealis_engine::cluster::Replica;
use borealis_engine::deployments::caller::Caller;
use borealis_engine::deployments::{DeploymentSettings, Deployments};
use borealis_engine::metrics::EngineMetrics;
use borealis_engine::runs::create::RunRequest;
use borealis_engine::runs::{RunParts, RunSettings, Runs, engine};
use borealis_engine::transport::{self, Failure, Request, Response, Sent, Transport};
use borealis_engine::vault::Vault;
use borealis_store::{DeploymentState, DeploymentView, RunRecord, RunState, TargetState, unix_ms};

const HOUR: Duration = Duration::from_secs(3600);
/// Only keeps a broken test from hanging: nothing here waits on the clock.
const HANG_GUARD: Duration = Duration::from_secs(30);
const RETRY_BASE: Duration = Duration::from_secs(10);

/// What the in-memory transport answers a call.
#[derive(Clone, Debug)]
enum Answer {
    /// A reply with this status, and `Retry-After` when given.
    Status(u16, Option<&'static str>),
    /// No reply.
    Fail(Failure),
}

/// A call as the transport was given it, and when by the engine's clock.
#[derive(Debug)]
struct Seen {
    agent: Option<String>,
    request: Request,
    at: SystemTime,
}

/// Answers from `script` in order, then `then` for every later call.
struct Scripted {
    script: Mutex<VecDeque<Answer>>,
    then: Answer,
    seen: Mutex<Vec<Seen>>,
    clock: Clock,
}

impl Scripted {
    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Transport for Scripted {
    async fn send(&self, agent: Option<&AgentRef>, request: Request) -> Result<Response, Failure> {
        let at = self.clock.now();
        self.seen.lock().unwrap().push(Seen { agent: agent.map(|a| a.name.clone()), request, at });
        let answer = self.script.lock().unwrap().pop_front().unwrap_or_else(|| self.then.clone());
        match answer {
            Answer::Status(status, retry_after) => {
                let mut reply = http::Response::builder().status(status);
                if let Some(value) = retry_after {
                    reply = reply.header(http::header::RETRY_AFTER, value);
                }
                Ok(reply.body(transport::full("noted")).unwrap())
            }
            Answer::Fail(failure) => Err(failure),
        }
    }
}

struct Relay {
    runs: Arc<Runs>,
    deployments: Arc<Deployments>,
    clock: Clock,
    transport: Arc<Scripted>,
    _dir: tempfile::TempDir,
}

impl Relay {
    fn calls(&self) -> usize {
        self.transport.calls()
    }
}

/// The engine on a fresh store, its calls answered by `script`, then by
/// `then`.
async fn relay(script: Vec<Answer>, then: Answer) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let store = borealis_store::open(None, dir.path()).await.unwrap();
    let vault = Arc::new(Vault::open(store.clone(), dir.path(), None).unwrap());
    let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let transport =
        Arc::new(Scripted { script: Mutex::new(script.into()), then, seen: Mutex::default(), clock: clock.clone() });
    let settings = RunSettings {
        public_base: "http://127.0.0.1:9".into(),
        callback_timeout: 24 * HOUR,
        webhook_timeout: Duration::from_secs(30),
        retry_base_delay: RETRY_BASE,
        max_body_bytes: 1 << 20,
        render_limits: RenderLimits::default(),
        signing_default: None,
        poll_interval: Duration::from_secs(1),
    };
    let replica = Arc::new(Replica::new("schedules".into(), None, Duration::from_secs(15), Default::default(), false));
    let (runs, scheduler) = Runs::new(RunParts {
        store: store.clone(),
        agents: store.clone(),
        replica,
        metrics: EngineMetrics::default(),
        vault: vault.clone(),
        transport: transport.clone(),
        settings,
        clock: clock.clone(),
    });
    tokio::spawn(engine::schedule(runs.clone(), scheduler));
    let caller = Arc::new(Caller::new(transport.clone(), vault, None, 1 << 20, Duration::from_secs(1)));
    let settings = DeploymentSettings {
        callback_timeout: 24 * HOUR,
        gate_interval: Duration::from_secs(10),
        driver_timeout: Duration::from_secs(30),
        signing_default: None,
    };
    let deployments = Deployments::new(store.clone(), store, runs.clone(), caller, settings);
    Relay { runs, deployments, clock, transport, _dir: dir }
}

/// Where the webhooks point: the scripted transport answers every address.
const URL: &str = "http://checks.internal/hook";

fn webhook_file(url: &str, retries: u32) -> String {
    format!(
        "application: shop
targets:
  staging: {{}}
webhooks:
  - name: check
    method: POST
    uriTemplate: {url}
    networkMode: direct
    retryCount: {retries}
"
    )
}

async fn start_run(relay: &Relay, file: String) -> String {
    let request = RunRequest {
        team: "default".into(),
        file,
        name: "check".into(),
        environment: None,
        context: Default::default(),
        link: None,
        idempotency: None,
        unknown_fields: Default::default(),
    };
    relay.runs.create(request).await.expect("the run starts").id
}

/// The run once `ready` holds, woken by the runs' own change events.
async fn run_when(relay: &Relay, id: &str, what: &str, ready: impl Fn(&RunRecord) -> bool) -> RunRecord {
    let mut changes = relay.runs.subscribe();
    let wait = async {
        loop {
            let run = relay.runs.record(id).await.unwrap();
            if ready(&run) {
                return run;
            }
            let _ = changes.recv().await;
        }
    };
    tokio::time::timeout(HANG_GUARD, wait).await.unwrap_or_else(|_| panic!("never happened: {what}"))
}

async fn deployment_when(
    relay: &Relay,
    id: &str,
    what: &str,
    ready: impl Fn(&DeploymentView) -> bool,
) -> DeploymentView {
    let mut changes = relay.deployments.subscribe();
    let wait = async {
        loop {
            let view = relay.deployments.view(id).await.unwrap();
            if ready(&view) {
                return view;
            }
            // Not every journal entry is announced: look again soon anyway.
            let _ = tokio::time::timeout(Duration::from_millis(20), changes.recv()).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, wait).await.unwrap_or_else(|_| panic!("never happened: {what}"))
}

fn at_ms(time: SystemTime) -> i64 {
    unix_ms(time)
}

#[tokio::test]
async fn a_callback_that_never_comes_times_out_after_24_hours_of_the_clock() {
    let relay = relay(vec![], Answer::Status(202, None)).await;
    let id = start_run(&relay, webhook_file(URL, 0)).await;
    let started = relay.clock.now();
    let waiting =
        run_when(&relay, &id, "the run waits for its callback", |r| r.state == RunState::AwaitingCallback).await;
    assert_eq!(waiting.deadline_at, Some(started + 24 * HOUR), "the deadline is 24 h after the call");

    relay.clock.advance(24 * HOUR - Duration::from_secs(1));
    tokio::task::yield_now().await;
    let still = relay.runs.record(&id).await.unwrap();
    assert_eq!(still.state, RunState::AwaitingCallback, "a second before the deadline it still waits");

    relay.clock.advance(Duration::from_secs(1));
    let done = run_when(&relay, &id, "the run times out", |r| r.state.is_finished()).await;
    assert_eq!(done.state, RunState::TimedOut);
    assert_eq!(done.reason.as_deref(), Some("no callback within 1day"));
    assert_eq!(relay.calls(), 1, "one call, no retry");
}

#[tokio::test]
async fn retries_follow_the_doubling_jittered_schedule_then_give_up() {
    let relay = relay(vec![], Answer::Status(503, None)).await;
    let id = start_run(&relay, webhook_file(URL, 3)).await;
    for attempt in 1..=3u32 {
        let pending = run_when(&relay, &id, "the attempt failed and a retry is scheduled", |r| {
            r.attempts == attempt && r.state == RunState::Pending
        })
        .await;
        let next = pending.next_attempt_at.expect("a retry time");
        let delay = Duration::from_millis((at_ms(next) - at_ms(relay.clock.now())) as u64);
        // Retry n waits [base·2^(n-1), base·2^n): equal jitter on a doubling delay.
        let low = RETRY_BASE * 2u32.pow(attempt - 1);
        assert!(delay >= low && delay < low * 2, "retry {attempt} in {delay:?}, not in [{low:?}, {:?})", low * 2);
        assert_eq!(relay.calls(), attempt as usize, "no attempt before its time");
        relay.clock.advance(delay);
    }
    let failed = run_when(&relay, &id, "the run gives up", |r| r.state.is_finished()).await;
    assert_eq!(failed.state, RunState::Failed);
    let reason = failed.reason.unwrap_or_default();
    assert!(reason.contains("gave up after 4 attempts (retryCount 3)"), "{reason}");
    assert_eq!(relay.calls(), 4);
    let view = relay.runs.view(&id).await.unwrap();
    let starts: Vec<i64> = view.attempts.iter().map(|a| at_ms(a.started_at)).collect();
    for (n, pair) in starts.windows(2).enumerate() {
        let gap = Duration::from_millis((pair[1] - pair[0]) as u64);
        let low = RETRY_BASE * 2u32.pow(n as u32);
        assert!(gap >= low && gap < low * 2, "attempts {} and {} were {gap:?} apart", n + 1, n + 2);
    }
}

#[tokio::test]
async fn a_timed_pause_and_an_expiring_approval_run_on_the_clock() {
    let relay = relay(vec![], Answer::Status(200, None)).await;
    // The items of one constraint list run side by side.
    let file = "application: shop
targets:
  staging:
    constraints:
      beforeDeployment:
        - pause:
            duration: 1
            unit: hours
        - pause:
            untilApproved: true
            approvalExpiration:
              duration: 2
              unit: hours
";
    let started = relay
        .deployments
        .create("default", file, &Default::default(), None, Default::default())
        .await
        .expect("the deployment starts");
    let id = started.view.record.id.clone();
    let t0 = at_ms(relay.clock.now());
    let journalled = |view: &DeploymentView, suffix: &str| {
        view.journal.iter().find(|(k, _)| k.ends_with(suffix)).map(|(k, v)| (k.clone(), v.clone()))
    };
    let at = |entry: Option<(String, String)>| entry.and_then(|(_, v)| v.parse::<i64>().ok());
    let both = deployment_when(&relay, &id, "the pause and the approval start", |v| {
        journalled(v, "/until").is_some() && !v.pending_approvals.is_empty()
    })
    .await;
    assert_eq!(at(journalled(&both, "/until")), Some(t0 + 3_600_000), "the pause ends an hour after it began");
    assert_eq!(at(journalled(&both, "/expires")), Some(t0 + 7_200_000), "the approval expires after two hours");
    let (until_key, _) = journalled(&both, "/until").unwrap();
    let pause_key = until_key.strip_suffix("/until").unwrap().to_owned();

    relay.clock.advance(HOUR);
    let paused = deployment_when(&relay, &id, "the pause is over", |v| {
        v.journal.iter().any(|(k, value)| *k == pause_key && value == "ok")
    })
    .await;
    assert!(!paused.pending_approvals.is_empty(), "the approval still waits after the pause");
    assert!(paused.record.finished_at.is_none());

    relay.clock.advance(HOUR);
    let done = deployment_when(&relay, &id, "the deployment ends", |v| v.record.finished_at.is_some()).await;
    assert_eq!(done.record.state, DeploymentState::Failed);
    let expired = done.events.iter().find(|e| e.kind == "approval-expired").expect("an approval-expired event");
    assert!(expired.message.contains("was not approved within 2h"), "{}", expired.message);
    assert!(done.pending_approvals.is_empty());
    assert_ne!(done.targets[0].state, TargetState::Deployed);
}

/// Lets the engine's tasks run: what is due now happens, nothing else.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_retry_after_longer_than_the_backoff_sets_the_next_attempt_and_the_callback_decides() {
    let relay = relay(vec![Answer::Status(503, Some("300"))], Answer::Status(200, None)).await;
    let id = start_run(&relay, webhook_file(URL, 2)).await;
    let pending =
        run_when(&relay, &id, "a retry is scheduled", |r| r.attempts == 1 && r.state == RunState::Pending).await;
    let asked = Duration::from_secs(300);
    assert_eq!(pending.next_attempt_at, Some(relay.clock.now() + asked), "Retry-After outweighs a 10 s backoff");
    assert!(pending.reason.as_deref().unwrap_or_default().contains("HTTP 503"), "{:?}", pending.reason);

    relay.clock.advance(asked - Duration::from_secs(1));
    settle().await;
    assert_eq!(relay.calls(), 1, "no attempt before Retry-After has passed");
    relay.clock.advance(Duration::from_secs(1));
    let waiting =
        run_when(&relay, &id, "the second attempt is answered 200", |r| r.state == RunState::AwaitingCallback).await;
    assert_eq!(waiting.attempts, 2);

    let seen = relay
        .transport
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.agent.clone(), s.request.clone(), s.at))
        .collect::<Vec<_>>();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].2, seen[0].2 + asked, "the retry left exactly when it was due, by the engine's clock");
    for (agent, request, _) in &seen {
        assert_eq!(agent, &None, "a direct webhook goes out with no agent");
        assert_eq!((request.method.as_str(), request.url.as_str()), ("POST", URL));
        assert_eq!(request.headers["webhook-id"], id.as_str(), "every attempt carries the run's webhook-id");
        assert_eq!(request.limit, 1 << 20);
    }

    let accepted = relay
        .runs
        .callback(&waiting.callback_id, true, Some("all checks passed".into()), ("default", "ci"))
        .await
        .unwrap();
    assert_eq!((accepted.state, accepted.repeat), (RunState::Succeeded, false));
    let done = relay.runs.record(&id).await.unwrap();
    assert_eq!(
        (done.state, done.success, done.md_message.as_deref()),
        (RunState::Succeeded, Some(true), Some("all checks passed"))
    );
    assert_eq!(relay.calls(), 2, "a decided run is not called again");
}

#[tokio::test]
async fn a_call_cut_off_with_no_retries_left_waits_for_its_callback() {
    let cut_off =
        Failure { detail: "the agent went away before answering".into(), retryable: true, sent: Sent::CutOff };
    let relay = relay(vec![], Answer::Fail(cut_off)).await;
    let id = start_run(&relay, webhook_file(URL, 0)).await;
    let waiting =
        run_when(&relay, &id, "the run waits for its callback", |r| r.state == RunState::AwaitingCallback).await;
    let reason = waiting.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("the agent went away before answering") && reason.contains("its callback decides"),
        "{reason}"
    );
    assert_eq!(waiting.deadline_at, Some(relay.clock.now() + 24 * HOUR));

    relay.runs.callback(&waiting.callback_id, false, None, ("default", "ci")).await.unwrap();
    let done = relay.runs.record(&id).await.unwrap();
    assert_eq!(
        (done.state, done.success),
        (RunState::Failed, Some(false)),
        "the request arrived after all, and failed"
    );
    assert_eq!(relay.calls(), 1);
}

#[tokio::test]
async fn a_call_that_never_left_is_retried_then_fails_naming_why() {
    let refused = Failure { detail: "agent \"vm\" is not connected".into(), retryable: true, sent: Sent::No };
    let relay = relay(vec![], Answer::Fail(refused)).await;
    let id = start_run(&relay, webhook_file(URL, 1)).await;
    let pending =
        run_when(&relay, &id, "a retry is scheduled", |r| r.attempts == 1 && r.state == RunState::Pending).await;
    let reason = pending.reason.unwrap_or_default();
    assert!(reason.contains("attempt 1: not sent: agent \"vm\" is not connected"), "{reason}");
    relay.clock.advance(pending.next_attempt_at.unwrap().duration_since(relay.clock.now()).unwrap());
    let failed = run_when(&relay, &id, "the run gives up", |r| r.state.is_finished()).await;
    assert_eq!(failed.state, RunState::Failed);
    let reason = failed.reason.unwrap_or_default();
    assert!(reason.contains("gave up after 2 attempts (retryCount 1)"), "{reason}");
    assert_eq!(relay.calls(), 2);
}

#[tokio::test]
async fn a_call_that_cannot_succeed_fails_at_once() {
    let relay = relay(vec![], Answer::Status(404, None)).await;
    let id = start_run(&relay, webhook_file(URL, 3)).await;
    let failed = run_when(&relay, &id, "the run fails", |r| r.state.is_finished()).await;
    assert_eq!(failed.state, RunState::Failed);
    let reason = failed.reason.unwrap_or_default();
    assert!(reason.contains("HTTP 404; a 4xx other than 408 and 429 is not retried"), "{reason}");
    assert_eq!(relay.calls(), 1, "retries are left, but a 404 is not retried");
}
