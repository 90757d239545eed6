//! The relay on PostgreSQL (`--database-url postgres://...`): its state is in
//! the database, not the data dir, and runs and deployments survive a
//! SIGKILL as they do on SQLite. Each test has a schema of its own on the
//! machine's PostgreSQL (`BOREALIS_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`); without one the tests fail.

use std::time::Duration;

use borealis_tests::postgres::Schema;
use borealis_tests::{RelayOptions, RelayProcess, eventually};
use futures_util::{StreamExt, stream};

fn relay(schema: &Schema) -> RelayProcess {
    RelayProcess::start(RelayOptions {
        direct_allow: vec!["127.0.0.0/8".into()],
        // A short lease: a killed relay's work is taken over soon after its restart.
        extra_args: vec!["--database-url".into(), schema.database_url(), "--lease-duration".into(), "3s".into()],
        ..Default::default()
    })
}

async fn api(
    relay: &RelayProcess,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut request =
        reqwest::Client::new().request(method, format!("{}{path}", relay.http_url)).bearer_auth(relay.admin_token());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let reply = request.send().await.unwrap();
    assert!(reply.status().is_success(), "{path}: {}", reply.status());
    reply.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_awaiting_callbacks_live_in_postgres_and_survive_sigkill() {
    const RUNS: usize = 100;
    let schema = Schema::new();
    let relay = relay(&schema);
    let (addr, system) = relay.external_system().await;
    let file = format!(
        "webhooks:
  - name: job
    method: POST
    uriTemplate: http://{addr}/silent
    networkMode: direct
    headers:
      - key: Location
        value: '{{{{armory.callbackUri}}}}/callback'
"
    );
    let body = serde_json::json!({ "file": file, "name": "job" });
    let started: Vec<serde_json::Value> = stream::iter(0..RUNS)
        .map(|_| api(&relay, reqwest::Method::POST, "/api/v1/webhook-runs", Some(body.clone())))
        .buffer_unordered(16)
        .collect()
        .await;
    eventually("every webhook was called", Duration::from_secs(60), || async {
        (system.received().len() >= RUNS).then_some(())
    })
    .await;
    assert_eq!(schema.count("webhook_runs"), RUNS as u64, "the runs are rows of the relay's schema");
    assert!(!relay.data_dir.path().join("borealis.db").exists(), "no SQLite file beside a database URL");

    let relay = relay.kill_and_restart();
    let mut ids = Vec::new();
    for (i, record) in system.received().iter().enumerate() {
        let uri = record.callback_uri.clone().unwrap();
        let reply = system.call_back(&uri, serde_json::json!({ "success": i % 2 == 0 })).await;
        assert_eq!(reply.status, 200, "a callback after the restart is accepted");
        ids.push((uri, i % 2 == 0));
    }
    for run in &started {
        let id = run["id"].as_str().unwrap();
        let done = relay.wait_run(id).await;
        let uri = format!("{}/callback", run["callbackUri"].as_str().unwrap());
        let success = ids.iter().find(|(u, _)| *u == uri).map(|(_, s)| *s).unwrap();
        assert_eq!(done["state"], if success { "succeeded" } else { "failed" }, "{done:#}");
        assert_eq!(done["attempts"], 1, "called once, not again after the restart");
    }
    assert_eq!(system.received().len(), RUNS, "no webhook was sent twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_given_after_sigkill_finishes_the_deployment() {
    let schema = Schema::new();
    let relay = relay(&schema);
    let file = "application: shop
targets:
  staging:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
  prod:
    dependsOn: [staging]
";
    let created =
        api(&relay, reqwest::Method::POST, "/api/v1/deployments", Some(serde_json::json!({ "file": file }))).await;
    let id = created["id"].as_str().unwrap().to_owned();
    eventually("staging waits for approval", Duration::from_secs(30), || async {
        let d = api(&relay, reqwest::Method::GET, &format!("/api/v1/deployments/{id}"), None).await;
        (d["pendingApprovals"] == serde_json::json!(["staging"])).then_some(())
    })
    .await;

    let relay = relay.kill_and_restart();
    eventually("the resumed deployment asks again", Duration::from_secs(30), || async {
        let d = api(&relay, reqwest::Method::GET, &format!("/api/v1/deployments/{id}"), None).await;
        (d["pendingApprovals"] == serde_json::json!(["staging"])).then_some(())
    })
    .await;
    api(&relay, reqwest::Method::POST, &format!("/api/v1/deployments/{id}/targets/staging/approve"), None).await;
    let done = api(&relay, reqwest::Method::GET, &format!("/api/v1/deployments/{id}?wait=30s"), None).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let states: Vec<&str> = done["targets"].as_array().unwrap().iter().map(|t| t["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["deployed", "deployed"], "{done:#}");
    assert_eq!(schema.count("deployments"), 1);
}
