//! The relay on PostgreSQL (`--database-url postgres://...`): its state is in
//! the database, not the data dir, and runs and deployments survive a
//! SIGKILL as they do on SQLite. Each test has a schema of its own on the
//! machine's PostgreSQL (`BOREALIS_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`); without one the tests fail.

use std::time::Duration;

use borealis_api::{Deployment, DeploymentState, RunState, TargetState, WebhookRun};
use borealis_tests::postgres::Schema;
use borealis_tests::process::OutputText;
use borealis_tests::{RelayOptions, RelayProcess, api_time_of, eventually};
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
        assert_eq!(done.state, if success { RunState::Succeeded } else { RunState::Failed }, "{done:#?}");
        assert_eq!(done.attempts, 1, "called once, not again after the restart");
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
    constraints:
      dependsOn: [staging]
";
    let created =
        api(&relay, reqwest::Method::POST, "/api/v1/deployments", Some(serde_json::json!({ "file": file }))).await;
    let id = created["id"].as_str().unwrap().to_owned();
    eventually("staging waits for approval", Duration::from_secs(30), || async {
        let d: Deployment = relay.get_as(&format!("/api/v1/deployments/{id}")).await;
        (d.pending_approvals == ["staging"]).then_some(())
    })
    .await;

    let relay = relay.kill_and_restart();
    eventually("the resumed deployment asks again", Duration::from_secs(30), || async {
        let d: Deployment = relay.get_as(&format!("/api/v1/deployments/{id}")).await;
        (d.pending_approvals == ["staging"]).then_some(())
    })
    .await;
    api(&relay, reqwest::Method::POST, &format!("/api/v1/deployments/{id}/targets/staging/approve"), None).await;
    let done: Deployment = relay.get_as(&format!("/api/v1/deployments/{id}?wait=30s")).await;
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:#?}");
    let states: Vec<TargetState> = done.targets.iter().map(|t| t.state).collect();
    assert_eq!(states, [TargetState::Deployed, TargetState::Deployed], "{done:#?}");
    assert_eq!(schema.count("deployments"), 1);
}

/// `borealis-relay migrate` moves a single relay's SQLite state into an
/// empty PostgreSQL database; a relay started on it finishes what the
/// single relay left: runs awaiting callbacks, and a deployment paused for
/// an approval. Credentials (by their secrets), secrets (by the same secret
/// key) and the admin token carry over; a second migrate is refused.
#[tokio::test(flavor = "multi_thread")]
async fn migrate_moves_a_single_relay_into_postgres_and_a_replica_finishes_its_work() {
    const RUNS: usize = 5;
    let mut single =
        RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() });
    let (client_id, client_secret) = single.create_client("ci");
    let (agent_id, agent_secret) = single.create_agent("rna");
    let out = single.cli().args(["secrets", "set", "api_token"]).stdin_text("s3cr3t-value").run();
    assert!(out.status.success(), "{}", out.stderr_text());
    let (addr, system) = borealis_tests::external::start(&single.http_url, &client_id, &client_secret).await;
    let file = format!(
        "webhooks:
  - name: job
    method: POST
    uriTemplate: http://{addr}/silent
    networkMode: direct
    headers:
      - key: Location
        value: '{{{{armory.callbackUri}}}}/callback'
      - key: Authorization
        value: 'Bearer {{{{secrets.api_token}}}}'
"
    );
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let body = serde_json::json!({ "file": file, "name": "job" });
        runs.push(api(&single, reqwest::Method::POST, "/api/v1/webhook-runs", Some(body)).await);
    }
    eventually("every webhook was called", PATIENCE_LONG, || async { (system.received().len() >= RUNS).then_some(()) })
        .await;
    // A run waiting to retry: its destination refuses connections.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let retrying = format!(
        "webhooks:\n  - name: down\n    method: POST\n    uriTemplate: http://{closed}/x\n    networkMode: direct\n    retryCount: 2\n"
    );
    let pending = api(
        &single,
        reqwest::Method::POST,
        "/api/v1/webhook-runs",
        Some(serde_json::json!({ "file": retrying, "name": "down" })),
    )
    .await;
    let pending_id = pending["id"].as_str().unwrap().to_owned();
    eventually("the run waits to retry", PATIENCE_LONG, || async {
        let run: WebhookRun = single.get_as(&format!("/api/v1/webhook-runs/{pending_id}")).await;
        (run.state == RunState::Pending && run.attempts >= 1).then_some(())
    })
    .await;
    let deployment = "application: shop
targets:
  staging:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
";
    let created =
        api(&single, reqwest::Method::POST, "/api/v1/deployments", Some(serde_json::json!({ "file": deployment })))
            .await;
    let deployment_id = created["id"].as_str().unwrap().to_owned();
    eventually("staging waits for approval", PATIENCE_LONG, || async {
        let d = api(&single, reqwest::Method::GET, &format!("/api/v1/deployments/{deployment_id}"), None).await;
        (d["pendingApprovals"] == serde_json::json!(["staging"])).then_some(())
    })
    .await;
    let admin_token = single.admin_token();
    // As the migrate command says: BOREALIS_SECRET_KEY=$(base64 -w0 DATA_DIR/secret-key).
    let secret_key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(single.data_dir.path().join("secret-key")).unwrap())
    };
    assert!(single.terminate(Duration::from_secs(20)).success());

    let schema = Schema::new();
    let from = format!("sqlite://{}", single.data_dir.path().join("borealis.db").display());
    let migrate = || {
        std::process::Command::new(borealis_tests::process::binary("borealis-relay"))
            .args(["migrate", "--from", &from, "--to", &schema.database_url()])
            .output()
            .unwrap()
    };
    let out = migrate();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    for line in ["webhook_runs: 6", "deployments: 1", "secrets: 1", "credentials: 2", "approvals: 1"] {
        assert!(said.contains(line), "{line:?} in {said}");
    }
    assert_eq!(schema.count("webhook_runs"), RUNS as u64 + 1);
    let again = migrate();
    assert!(!again.status.success());
    let refused = String::from_utf8_lossy(&again.stderr);
    assert!(refused.contains("the target database is not empty"), "{refused}");

    let replica = RelayProcess::start(RelayOptions {
        direct_allow: vec!["127.0.0.0/8".into()],
        extra_args: vec!["--database-url".into(), schema.database_url(), "--lease-duration".into(), "3s".into()],
        env: vec![("BOREALIS_ADMIN_TOKEN".into(), admin_token), ("BOREALIS_SECRET_KEY".into(), secret_key)],
        ..Default::default()
    });
    // The callback client's credentials were copied: a token from the new
    // relay, and each run's callback (same path, the new relay's address).
    let (_, caller) = borealis_tests::external::start(&replica.http_url, &client_id, &client_secret).await;
    for (i, call) in system.received().iter().enumerate() {
        let uri = call.callback_uri.clone().unwrap();
        let path = &uri[uri.find("/callbacks/").unwrap()..];
        let reply = caller
            .call_back(&format!("{}{path}", replica.http_url), serde_json::json!({ "success": i % 2 == 0 }))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(call.headers.get("authorization").unwrap(), "Bearer s3cr3t-value");
    }
    for run in &runs {
        let done = replica.wait_run(run["id"].as_str().unwrap()).await;
        assert!([RunState::Succeeded, RunState::Failed].contains(&done.state), "{done:#?}");
        assert_eq!(done.attempts, 1, "{done:#?}");
    }
    api(&replica, reqwest::Method::POST, &format!("/api/v1/deployments/{deployment_id}/targets/staging/approve"), None)
        .await;
    let done: Deployment = replica.get_as(&format!("/api/v1/deployments/{deployment_id}?wait=30s")).await;
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:#?}");
    // The agent's credential and the stored secret came along.
    let (status, _) = borealis_tests::token_reply(&replica.agents_url, &agent_id, &agent_secret).await;
    assert_eq!(status, 200);
    // The pending run went on with its retries on the new relay, and gave up after them.
    let down = replica.wait_run(&pending_id).await;
    assert_eq!((down.state, down.attempts), (RunState::Failed, 3), "{down:#?}");
    let last = api_time_of(&down.attempt_log.as_deref().unwrap()[2].started_at);
    assert!(last >= replica.started_at(), "the last retry was made by the new relay: {down:#?}");
    let secrets = api(&replica, reqwest::Method::GET, "/api/v1/secrets", None).await;
    assert_eq!(secrets["secrets"][0]["name"], "api_token", "{secrets}");
    assert_eq!(system.received().len(), RUNS, "no webhook was sent again");
}

const PATIENCE_LONG: Duration = Duration::from_secs(60);
