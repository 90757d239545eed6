//! Text from outside on PostgreSQL (issue 24, finding 3), whose `text`
//! refuses NUL: a destination's reply, a callback's `mdMessage` and a
//! metric provider's error holding one are stored (with U+FFFD in its
//! place) and nothing stalls or is called twice; an attempt whose outcome
//! could not be written while the database was away is not sent again.
//! And a name with a newline stays in one log line (finding 6).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use borealis_api::{Deployment, DeploymentState, RunState, TargetState, WebhookRun};
use borealis_tests::external::External;
use borealis_tests::postgres::{Cuttable, Schema};
use borealis_tests::process::OutputText;
use borealis_tests::{RelayOptions, RelayProcess, eventually};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// A relay on `database_url` that may call loopback addresses.
fn relay_on(database_url: String) -> RelayProcess {
    RelayProcess::start(RelayOptions {
        direct_allow: vec!["127.0.0.0/8".into()],
        extra_args: vec!["--database-url".into(), database_url, "--lease-duration".into(), "10s".into()],
        ..Default::default()
    })
}

async fn api(relay: &RelayProcess, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request =
        reqwest::Client::new().request(method, format!("{}{path}", relay.http_url)).bearer_auth(relay.admin_token());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let reply = request.send().await.unwrap();
    let status = reply.status();
    let text = reply.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// A destination that answers every call 200 with `reply`, once `gate`
/// gives it a permit; it counts the calls it got.
struct Destination {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl Destination {
    async fn start(reply: &'static str, open: bool) -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }));
        let (counted, held) = (calls.clone(), gate.clone());
        let router = axum::Router::new().fallback(move || {
            let (calls, gate) = (counted.clone(), held.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                (StatusCode::OK, reply)
            }
        });
        Self { addr: borealis_tests::servers::serve(router).await, calls, gate }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Starts a run of a webhook called `job` at `url` that retries twice and
/// waits for its callback; returns the run's id and callback URL.
async fn start_run(relay: &RelayProcess, url: &str) -> (String, String) {
    let file = format!(
        "webhooks:\n  - name: job\n    method: POST\n    uriTemplate: {url}\n    networkMode: direct\n    retryCount: 2\n"
    );
    let run =
        api(relay, reqwest::Method::POST, "/api/v1/webhook-runs", Some(json!({ "file": file, "name": "job" }))).await;
    let id = run["id"].as_str().unwrap().to_owned();
    (id, format!("{}/callback", run["callbackUri"].as_str().unwrap()))
}

/// The run `id` once its first attempt is recorded with a 2xx and it
/// waits for its callback.
async fn awaiting_callback(relay: &RelayProcess, id: &str) -> WebhookRun {
    eventually("the attempt is recorded and the run waits for its callback", Duration::from_secs(60), || async {
        let run: WebhookRun = relay.get_as(&format!("/api/v1/webhook-runs/{id}")).await;
        let first = run.attempt_log.as_deref().and_then(|log| log.first());
        let answered = first.and_then(|a| a.status).is_some_and(|s| (200..300).contains(&s));
        (run.state == RunState::AwaitingCallback && answered).then_some(run)
    })
    .await
}

/// Run `id` has one attempt recorded, with `reply`, and waits for its
/// callback; called back with success at `callback`, it succeeds after that
/// one attempt, and `destination` was called once.
async fn recorded_once_then_succeeds(
    relay: &RelayProcess,
    system: &External,
    (id, callback): (&str, &str),
    destination: &Destination,
    reply: &str,
) {
    let run = awaiting_callback(relay, id).await;
    let log = run.attempt_log.as_deref().unwrap();
    assert_eq!(log.len(), 1, "{run:#?}");
    assert_eq!(log[0].reply.as_deref(), Some(reply), "{run:#?}");
    let reply = system.call_back(callback, json!({ "success": true, "mdMessage": "done" })).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let done = relay.wait_run(id).await;
    assert_eq!((done.state, done.attempts), (RunState::Succeeded, 1), "{done:#?}");
    assert_eq!(destination.calls(), 1, "the destination was called once");
}

/// Starts a deployment of `file`; returns its id and the deployment once it has ended.
async fn deploy_to_the_end(relay: &RelayProcess, file: &str) -> (String, Deployment) {
    let created = api(relay, reqwest::Method::POST, "/api/v1/deployments", Some(json!({ "file": file }))).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let done = eventually("the deployment reaches its end", Duration::from_secs(60), || async {
        let d: Deployment = relay.get_as(&format!("/api/v1/deployments/{id}")).await;
        d.finished_at.is_some().then_some(d)
    })
    .await;
    (id, done)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_with_a_nul_is_recorded_and_the_destination_called_once() {
    let schema = Schema::new();
    let relay = relay_on(schema.database_url());
    let (_, system) = relay.external_system().await;
    let destination = Destination::start("ok\0done", true).await;
    let (id, callback) = start_run(&relay, &format!("http://{}/nul", destination.addr)).await;

    recorded_once_then_succeeds(&relay, &system, (&id, &callback), &destination, "ok\u{FFFD}done").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_whose_md_message_holds_a_nul_is_accepted() {
    let schema = Schema::new();
    let relay = relay_on(schema.database_url());
    let (addr, system) = relay.external_system().await;
    let (id, callback) = start_run(&relay, &format!("http://{addr}/silent")).await;
    awaiting_callback(&relay, &id).await;

    let reply = system.call_back(&callback, json!({ "success": false, "mdMessage": "**3** tests\u{0} failed" })).await;
    assert!((200..300).contains(&reply.status), "{} {}", reply.status, reply.body);
    let done = relay.wait_run(&id).await;
    assert_eq!(done.state, RunState::Failed, "{done:#?}");
    assert_eq!(done.md_message.as_deref(), Some("**3** tests\u{FFFD} failed"), "{done:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_error_with_a_nul_does_not_stall_the_deployment() {
    let schema = Schema::new();
    let relay = relay_on(schema.database_url());
    // Stands for a Prometheus refusing the query, as one answers bad PromQL.
    let prometheus = borealis_tests::servers::serve(axum::Router::new().fallback(|| async {
        (StatusCode::BAD_REQUEST, r#"{"status":"error","errorType":"bad_data","error":"x\u0000y"}"#)
    }))
    .await;
    let out = relay
        .cli()
        .args(["providers", "create", "prom", "--type", "prometheus", "--url", &format!("http://{prometheus}")])
        .run_async()
        .await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let file = "application: shop
targets:
  prod:
    strategy: canary
analysis:
  defaultMetricProviderName: prom
  queries:
    - {name: q, queryTemplate: up, upperLimit: 10}
strategies:
  canary:
    canary:
      steps:
        - setWeight: {weight: 25}
        - analysis: {interval: 1, units: seconds, queries: [q]}
        - setWeight: {weight: 100}
";
    let (_, done) = deploy_to_the_end(&relay, file).await;
    let prod = done.targets.iter().find(|t| t.name == "prod").unwrap();
    assert_eq!(prod.state, TargetState::RolledBack, "{done:#?}");
    let why = prod.reason.as_deref().unwrap();
    assert!(why.contains("query q") && why.contains("bad_data: x\u{FFFD}y"), "{why}");
    assert!(prod.analysis_runs[0].queries[0].error.is_some(), "{prod:#?}");
}

/// The database goes away between the call and the write of its reply:
/// the relay writes the reply once the database is back, and the call is
/// not made again (it would be, as an attempt cut off, if the run were left
/// for a takeover).
#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_whose_reply_could_not_be_written_is_not_sent_again() {
    let schema = Schema::new();
    let link = Cuttable::start().await;
    let relay = relay_on(link.through(&schema.database_url()));
    let (_, system) = relay.external_system().await;
    let destination = Destination::start("held", false).await;
    let (id, callback) = start_run(&relay, &format!("http://{}/held", destination.addr)).await;
    eventually("the destination is called", Duration::from_secs(30), || async {
        (destination.calls() == 1).then_some(())
    })
    .await;

    link.cut();
    destination.gate.add_permits(Semaphore::MAX_PERMITS);
    eventually("the relay fails to write the attempt", Duration::from_secs(60), || async {
        let log = relay.log();
        (log.contains("could not record a webhook attempt's outcome") || log.contains("webhook attempt failed"))
            .then_some(())
    })
    .await;
    link.restore();

    recorded_once_then_succeeds(&relay, &system, (&id, &callback), &destination, "held").await;
}

/// A relay killed after it recorded an attempt's reply but before it moved
/// the run on (made here by putting the run back to calling with a lapsed
/// lease): the relay that takes the attempt over goes on from the recorded
/// reply, and does not call again as if the attempt had been cut off.
#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_taken_over_with_its_reply_recorded_is_not_sent_again() {
    let schema = Schema::new();
    let relay = relay_on(schema.database_url());
    let destination = Destination::start("recorded", true).await;
    let (id, _) = start_run(&relay, &format!("http://{}/recorded", destination.addr)).await;
    awaiting_callback(&relay, &id).await;

    let name = schema.database_url().rsplit("search_path%3D").next().unwrap().to_owned();
    let relay = relay.kill_change_and_restart(|_| {
        borealis_tests::postgres::psql(&format!(
            "UPDATE {name}.webhook_runs SET state = 'calling', deadline_at = NULL, lease_until = 0 WHERE id = '{id}'"
        ));
    });
    let run = awaiting_callback(&relay, &id).await;
    assert_eq!((run.attempts, run.attempt_log.as_deref().unwrap().len()), (1, 1), "{run:#?}");
    assert_eq!(destination.calls(), 1, "the call was made once");
}

/// Names chosen in a deployment file are logged quoted: a newline in one
/// cannot start a forged log line.
#[tokio::test(flavor = "multi_thread")]
async fn a_newline_in_an_application_or_webhook_name_stays_in_one_log_line() {
    let relay = RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() });
    let (addr, _system) = relay.external_system().await;
    let forged = "2030-01-01T00:00:00.000000Z  INFO borealis_relay: FORGED";
    let file = format!(
        r#"application: "shop\n{forged} application"
targets:
  prod:
    constraints:
      beforeDeployment:
        - runWebhook:
            name: "scan\n{forged} webhook"
webhooks:
  - name: "scan\n{forged} webhook"
    method: POST
    uriTemplate: http://{addr}/pass
    networkMode: direct
    headers:
      - key: Location
        value: "{{{{armory.callbackUri}}}}/callback"
"#
    );
    let (id, done) = deploy_to_the_end(&relay, &file).await;
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:#?}");
    let started = relay.wait_log_line(&["deployment started", &id]).await;
    assert!(started.contains(&format!(r#"application="shop\n{forged} application""#)), "{started}");
    let attempt = relay.wait_log_line(&["webhook attempt", "status=202"]).await;
    assert!(attempt.contains(&format!(r#"webhook="scan\n{forged} webhook""#)), "{attempt}");
    let log = relay.log();
    let forged_lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(forged) && !line.contains("shop\\n") && !line.contains("scan\\n"))
        .collect();
    assert!(forged_lines.is_empty(), "a name started a line of its own: {forged_lines:#?}");
}
