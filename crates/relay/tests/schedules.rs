//! The run engine and the deployment orchestrator in-process, against a real
//! SQLite store in a temp dir and a real HTTP endpoint on port 0, on a manual
//! clock: a 24 h callback deadline, a backoff schedule, a timed pause and an
//! approval's expiry pass without waiting, and what is checked about time is
//! what the relay recorded against that clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use borealis_core::template::RenderLimits;
use borealis_egress::{AddressGuard, Egress, EgressOptions, Policy};
use borealis_relay::clock::Clock;
use borealis_relay::cluster::Replica;
use borealis_relay::deployments::caller::Caller;
use borealis_relay::deployments::{DeploymentSettings, Deployments};
use borealis_relay::forward::Forwarder;
use borealis_relay::hub::Hub;
use borealis_relay::metrics::Metrics;
use borealis_relay::runs::create::RunRequest;
use borealis_relay::runs::{RunSettings, Runs, engine};
use borealis_relay::vault::Vault;
use borealis_store::{DeploymentState, DeploymentView, RunRecord, RunState, TargetState, unix_ms};

const HOUR: Duration = Duration::from_secs(3600);
/// Only keeps a broken test from hanging: nothing here waits on the clock.
const HANG_GUARD: Duration = Duration::from_secs(30);
const RETRY_BASE: Duration = Duration::from_secs(10);

struct Relay {
    runs: Arc<Runs>,
    deployments: Arc<Deployments>,
    clock: Clock,
    _dir: tempfile::TempDir,
}

async fn relay() -> Relay {
    borealis_egress::client::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let store = borealis_store::open(None, dir.path()).await.unwrap();
    let vault = Arc::new(Vault::open(store.clone(), dir.path(), None).unwrap());
    let guard = AddressGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
    let egress = Egress::new(Policy::Guarded(guard), EgressOptions::default()).unwrap();
    let forwarder = Arc::new(Forwarder::new(egress, Hub::new(Arc::new(Metrics::default())), store.clone()));
    let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
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
    let replica = Arc::new(Replica::new("schedules".into(), None, Duration::from_secs(15), Default::default()));
    let metrics = Arc::new(Metrics::default());
    let (runs, scheduler) = Runs::new(
        store.clone(),
        replica.clone(),
        metrics.clone(),
        vault.clone(),
        forwarder.clone(),
        settings,
        clock.clone(),
    );
    tokio::spawn(engine::schedule(runs.clone(), scheduler));
    let caller = Arc::new(Caller::new(forwarder, vault.clone(), None, 1 << 20, Duration::from_secs(1)));
    let settings = DeploymentSettings {
        callback_timeout: 24 * HOUR,
        gate_interval: Duration::from_secs(10),
        driver_timeout: Duration::from_secs(30),
        signing_default: None,
    };
    let deployments = Deployments::new(store, replica, metrics, runs.clone(), caller, vault, settings);
    Relay { runs, deployments, clock, _dir: dir }
}

/// An endpoint on port 0 that answers `status` and counts its calls.
async fn endpoint(status: u16) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(AtomicU16::new(status));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let (calls, answer) = (counted.clone(), answer.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

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
        file,
        name: "check".into(),
        environment: None,
        context: Default::default(),
        link: None,
        idempotency: None,
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
    let relay = relay().await;
    let (url, calls) = endpoint(202).await;
    let id = start_run(&relay, webhook_file(&url, 0)).await;
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
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one call, no retry");
}

#[tokio::test]
async fn retries_follow_the_doubling_jittered_schedule_then_give_up() {
    let relay = relay().await;
    let (url, calls) = endpoint(503).await;
    let id = start_run(&relay, webhook_file(&url, 3)).await;
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
        assert_eq!(calls.load(Ordering::SeqCst), attempt as usize, "no attempt before its time");
        relay.clock.advance(delay);
    }
    let failed = run_when(&relay, &id, "the run gives up", |r| r.state.is_finished()).await;
    assert_eq!(failed.state, RunState::Failed);
    let reason = failed.reason.unwrap_or_default();
    assert!(reason.contains("gave up after 4 attempts (retryCount 3)"), "{reason}");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
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
    let relay = relay().await;
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
    let started = relay.deployments.create(file, &Default::default(), None).await.expect("the deployment starts");
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
