//! `/metrics` tells an operator what webhook runs, callbacks and
//! deployments did: a scripted set of them leaves exactly its counts, the
//! gauges follow what waits, a registered agent with no session reads 0, and
//! the version is there.

use std::sync::Arc;
use std::time::Duration;

use borealis_api::{Deployment, DeploymentState, RunState, WebhookRun};
use borealis_tests::deployer::Deployer;
use borealis_tests::process::OutputText;
use borealis_tests::{RelayOptions, RelayProcess, TempDir, eventually, servers};

/// The value of `series` exactly as `/metrics` shows it, if it is there.
async fn series(relay: &RelayProcess, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", relay.http_url)).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|value| value.trim().parse().unwrap())
}

async fn expect(relay: &RelayProcess, name: &str, value: f64) {
    assert_eq!(series(relay, name).await, Some(value), "{name}");
}

/// Starts webhook `w` of a one-webhook file calling `url`; returns the run's id.
async fn run(relay: &RelayProcess, dir: &TempDir, url: &str) -> String {
    let path = dir.path().join(format!("{}.yaml", url.replace(|c: char| !c.is_ascii_alphanumeric(), "_")));
    let file = format!(
        "webhooks:\n  - name: w\n    method: POST\n    uriTemplate: {url}\n    networkMode: direct\n    headers:\n      - {{key: Location, value: '{{{{armory.callbackUri}}}}/callback'}}\n"
    );
    std::fs::write(&path, file).unwrap();
    let out =
        relay.cli().args(["--json", "webhook", "run", "-f", path.to_str().unwrap(), "--name", "w"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    serde_json::from_str::<WebhookRun>(&out.stdout_text()).unwrap().id
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_runs_callbacks_and_deployments_did() {
    let relay = RelayProcess::start(RelayOptions {
        direct_allow: vec!["127.0.0.0/8".into()],
        extra_args: ["--callback-timeout", "2s", "--retry-base-delay", "50ms"].map(String::from).to_vec(),
        ..Default::default()
    });
    let dir = TempDir::new("metrics");
    let (external, _system) = relay.external_system().await;
    let (silent, _) = servers::recorder(Arc::new(|path: &str, _| if path == "/missing" { 404 } else { 202 })).await;

    // Two decided by their callback, one refused at once, one left to its deadline.
    let passed = run(&relay, &dir, &format!("http://{external}/pass")).await;
    let failed = run(&relay, &dir, &format!("http://{external}/fail")).await;
    let missing = run(&relay, &dir, &format!("http://{silent}/missing")).await;
    let unanswered = run(&relay, &dir, &format!("http://{silent}/quiet")).await;
    let mut ends = Vec::new();
    for id in [&passed, &failed, &missing, &unanswered] {
        ends.push(relay.wait_run(id).await.state);
    }
    assert_eq!(ends, [RunState::Succeeded, RunState::Failed, RunState::Failed, RunState::TimedOut]);

    // A callback repeated, and one with a token that is no token.
    let repeated: WebhookRun = relay.get_as(&format!("/api/v1/webhook-runs/{passed}")).await;
    let callback = format!("{}/callback", repeated.callback_uri.unwrap());
    let (client_id, secret) = relay.create_client("ci-metrics");
    let (_, token) = borealis_tests::token_reply(&relay.http_url, &client_id, &secret).await;
    let token = token["access_token"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let again =
        client.post(&callback).bearer_auth(&token).json(&serde_json::json!({"success": true})).send().await.unwrap();
    assert_eq!(again.status(), 200);
    let forged =
        client.post(&callback).bearer_auth("nope").json(&serde_json::json!({"success": true})).send().await.unwrap();
    assert_eq!(forged.status(), 401);

    expect(&relay, "borealis_webhook_runs_started_total", 4.0).await;
    expect(&relay, "borealis_webhook_runs_finished_total{state=\"succeeded\"}", 1.0).await;
    expect(&relay, "borealis_webhook_runs_finished_total{state=\"failed\"}", 2.0).await;
    expect(&relay, "borealis_webhook_runs_finished_total{state=\"timed_out\"}", 1.0).await;
    expect(&relay, "borealis_webhook_attempts_total{network_mode=\"direct\",outcome=\"2xx\"}", 3.0).await;
    expect(&relay, "borealis_webhook_attempts_total{network_mode=\"direct\",outcome=\"4xx\"}", 1.0).await;
    expect(&relay, "borealis_webhook_call_seconds_count{network_mode=\"direct\"}", 4.0).await;
    expect(&relay, "borealis_webhook_callbacks_total{result=\"accepted\"}", 2.0).await;
    expect(&relay, "borealis_webhook_callbacks_total{result=\"repeat\"}", 1.0).await;
    expect(&relay, "borealis_webhook_callbacks_total{result=\"refused\"}", 1.0).await;
    expect(&relay, "borealis_webhook_callback_deadlines_total", 1.0).await;

    // A deployment to its end, and one held by an approval, then aborted.
    let deployer = Deployer::new(&relay);
    let done = deployer.start("application: shop\ntargets:\n  prod: {}\n").await;
    assert_eq!(deployer.finished(&done).await.state, DeploymentState::Succeeded);
    let held = deployer
        .start("application: blog\ntargets:\n  prod:\n    constraints:\n      beforeDeployment:\n        - pause: {untilApproved: true}\n")
        .await;
    deployer.until(&held, "prod waits for approval", |d: &Deployment| d.pending_approvals == ["prod"]).await;
    expect(&relay, "borealis_approvals_pending", 1.0).await;
    expect(&relay, "borealis_deployments_running", 1.0).await;
    let out = relay.cli().args(["abort", &held]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    expect(&relay, "borealis_deployments_started_total", 2.0).await;
    expect(&relay, "borealis_deployments_finished_total{state=\"succeeded\"}", 1.0).await;
    expect(&relay, "borealis_deployments_finished_total{state=\"aborted\"}", 1.0).await;
    eventually("the gauges come back down", Duration::from_secs(30), || async {
        let pending = series(&relay, "borealis_approvals_pending").await;
        let running = series(&relay, "borealis_deployments_running").await;
        (pending == Some(0.0) && running == Some(0.0)).then_some(())
    })
    .await;

    // A registered agent that never connected reads 0; the version is shown.
    relay.create_agent("idle");
    expect(&relay, "borealis_agent_sessions{team=\"default\",agent=\"idle\"}", 0.0).await;
    expect(&relay, &format!("borealis_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")), 1.0).await;
}
