//! Runs survive a relay that is killed (SIGKILL) and started again.

use std::collections::HashMap;
use std::time::Duration;

use borealis_api::RunState;
use borealis_tests::{RelayOptions, RelayProcess, api_time_of, eventually};
use futures_util::{StreamExt, stream};

fn relay(extra: &[&str]) -> RelayProcess {
    RelayProcess::start(RelayOptions {
        direct_allow: vec!["127.0.0.0/8".into()],
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

fn file(url: &str, retry_count: u32) -> String {
    format!(
        "webhooks:
  - name: job
    method: POST
    uriTemplate: {url}
    networkMode: direct
    retryCount: {retry_count}
    headers:
      - key: Location
        value: '{{{{armory.callbackUri}}}}/callback'
"
    )
}

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(relay: &RelayProcess) -> Self {
        Self { client: reqwest::Client::new(), base: relay.http_url.clone(), token: relay.admin_token() }
    }

    async fn start(&self, file: &str) -> borealis_api::WebhookRun {
        let reply = self
            .client
            .post(format!("{}/api/v1/webhook-runs", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "file": file, "name": "job" }))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201);
        reply.json().await.expect("the API's WebhookRun")
    }

    async fn run(&self, id: &str) -> borealis_api::WebhookRun {
        let reply = self
            .client
            .get(format!("{}/api/v1/webhook-runs/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        reply.json().await.expect("the API's WebhookRun")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_runs_awaiting_callbacks_survive_sigkill() {
    const RUNS: usize = 1000;
    let relay = relay(&[]);
    let (addr, system) = relay.external_system().await;
    let api = Api::new(&relay);
    let text = file(&format!("http://{addr}/silent"), 0);
    let started: Vec<borealis_api::WebhookRun> =
        stream::iter(0..RUNS).map(|_| api.start(&text)).buffer_unordered(32).collect().await;
    let ids: Vec<String> = started.iter().map(|r| r.id.clone()).collect();
    let by_callback: HashMap<String, String> =
        started.iter().map(|r| (format!("{}/callback", r.callback_uri.as_deref().unwrap()), r.id.clone())).collect();
    eventually("every webhook was called", Duration::from_secs(60), || async {
        (system.received().len() >= RUNS).then_some(())
    })
    .await;
    eventually("every run awaits its callback", Duration::from_secs(30), || async {
        let api = &api;
        let waiting = stream::iter(ids.iter())
            .map(|id| async move { api.run(id).await.state == RunState::AwaitingCallback })
            .buffer_unordered(32)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await;
        (waiting == RUNS).then_some(())
    })
    .await;

    let relay = relay.kill_and_restart();
    let api = Api::new(&relay);

    // Even runs pass, odd runs fail; each callback exactly once.
    let callbacks: Vec<(String, bool)> = system
        .received()
        .iter()
        .map(|r| {
            let uri = r.callback_uri.clone().unwrap();
            let index = ids.iter().position(|id| by_callback[&uri] == *id).unwrap();
            (uri, index % 2 == 0)
        })
        .collect();
    let replies: Vec<u16> = stream::iter(callbacks)
        .map(|(uri, success)| {
            let system = system.clone();
            async move {
                system
                    .call_back(
                        &uri,
                        serde_json::json!({ "success": success, "mdMessage": format!("verdict {success}") }),
                    )
                    .await
                    .status
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(replies.len(), RUNS);
    assert!(replies.iter().all(|&s| s == 200), "every callback is accepted after the restart");

    let api = &api;
    let states: Vec<(usize, borealis_api::WebhookRun)> = stream::iter(ids.iter().enumerate())
        .map(|(i, id)| async move { (i, api.run(id).await) })
        .buffer_unordered(32)
        .collect()
        .await;
    for (i, run) in states {
        let expected = if i % 2 == 0 { RunState::Succeeded } else { RunState::Failed };
        assert_eq!(run.state, expected, "run {i}");
        assert_eq!(run.md_message, Some(format!("verdict {}", i % 2 == 0)));
        assert_eq!(run.attempts, 1, "run {i} was called once, not again after the restart");
    }
    assert_eq!(system.received().len(), RUNS, "no webhook was sent twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_between_attempts_resumes_after_sigkill() {
    let relay = relay(&["--retry-base-delay", "1500ms"]);
    let (addr, system) = relay.external_system().await;
    let api = Api::new(&relay);
    let run = api.start(&file(&format!("http://{addr}/flaky/1"), 2)).await;
    let id = run.id.clone();
    eventually("the first attempt failed and a retry is pending", Duration::from_secs(10), || async {
        let run = api.run(&id).await;
        (run.state == RunState::Pending && run.attempts == 1).then_some(())
    })
    .await;
    let relay = relay.kill_and_restart();
    let api = Api::new(&relay);
    let run = eventually("the run resumed and succeeded", Duration::from_secs(20), || async {
        let run = api.run(&id).await;
        (run.state == RunState::Succeeded).then_some(run)
    })
    .await;
    assert_eq!(run.attempts, 2);
    assert_eq!(system.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_deadline_holds_across_sigkill() {
    let relay = relay(&["--callback-timeout", "3s"]);
    let (addr, _system) = relay.external_system().await;
    let api = Api::new(&relay);
    let run = api.start(&file(&format!("http://{addr}/silent"), 0)).await;
    let id = run.id.clone();
    let waiting = eventually("the run awaits its callback", Duration::from_secs(10), || async {
        let run = api.run(&id).await;
        (run.state == RunState::AwaitingCallback).then_some(run)
    })
    .await;
    // The scenario: the relay dies while the run waits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let relay = relay.kill_and_restart();
    let restarted = relay.started_at();
    let run = relay.wait_run(&id).await;
    assert_eq!(run.state, RunState::TimedOut, "{run:#?}");
    // The run's own record: on the original deadline (3 s after the call),
    // not 3 s after the restart.
    let deadline = api_time_of(run.deadline_at.as_deref().unwrap());
    assert_eq!(run.deadline_at, waiting.deadline_at, "the deadline survived the restart");
    let called = api_time_of(&run.attempt_log.as_deref().unwrap()[0].started_at);
    assert!(borealis_tests::between(called, deadline) >= Duration::from_secs(3), "{run:#?}");
    let finished = api_time_of(run.finished_at.as_deref().unwrap());
    println!("timed out {:?} after the call", borealis_tests::between(called, finished));
    assert!(finished >= deadline, "{run:#?}");
    assert!(restarted < finished, "the restart came while it waited: {run:#?}");
    assert!(borealis_tests::between(restarted, finished) < Duration::from_secs(3), "{run:#?}");
    assert!(run.reason.as_deref().unwrap().contains("no callback within 3s"));
}
