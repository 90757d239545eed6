//! Teams own their objects (issue 28, item 1): agents, secrets, metric
//! providers, callback clients, runs and deployments belong to one team;
//! the same name in two teams is two objects; a run or deployment uses only
//! its own team's, and a reference to another team's is refused with the
//! same words as a name that exists nowhere. Objects with an id are reached
//! only in a team where the caller holds what the route needs; elsewhere
//! they do not exist. All through the real relay, CLI and agents.

use std::time::Duration;

use borealis_api::{RunState, WebhookRun};
use borealis_tests::process::{OutputText, create_credentials};
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, TempDir, eventually};
use serde_json::{Value, json};

fn relay() -> RelayProcess {
    RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() })
}

async fn create_team(relay: &RelayProcess, name: &str) {
    let out = relay.cli().args(["teams", "create", name]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
}

async fn set_secret(relay: &RelayProcess, team: &str, name: &str, value: &str) {
    let out = relay.cli().args(["--team", team, "secrets", "set", name]).stdin_text(value).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
}

fn detail(body: &Value) -> String {
    body["detail"].as_str().unwrap_or_default().to_owned()
}

/// A file with one webhook, `check`, calling `url` through `agent` (or
/// direct) with `Authorization: Bearer {{secrets.SECRET}}`.
fn webhook_file(url: &str, agent: Option<&str>, secret: &str) -> String {
    let mode = match agent {
        Some(agent) => format!("networkMode: remoteNetworkAgent\n    agentIdentifier: {agent}"),
        None => "networkMode: direct".to_owned(),
    };
    format!(
        "webhooks:
  - name: check
    method: POST
    uriTemplate: {url}
    {mode}
    headers:
      - key: Authorization
        value: Bearer {{{{secrets.{secret}}}}}
      - key: Location
        value: '{{{{armory.callbackUri}}}}/callback'
    retryCount: 0
"
    )
}

/// Two teams each register agent `rna`, secret `token` and callback client
/// `ci`: a run in team b goes only through b's agent, with b's secret, and
/// is called back by b's client; a's agent being connected does not carry
/// it.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_names_in_two_teams_are_two_teams_objects() {
    let relay = relay();
    create_team(&relay, "alpha").await;
    create_team(&relay, "bravo").await;
    set_secret(&relay, "alpha", "token", "alpha-secret-value").await;
    set_secret(&relay, "bravo", "token", "bravo-secret-value").await;
    let (a_id, a_secret) = create_credentials(relay.cli().args(["--team", "alpha"]), "agents", "rna");
    let (b_id, b_secret) = create_credentials(relay.cli().args(["--team", "bravo"]), "agents", "rna");
    let (client_id, client_secret) = create_credentials(relay.cli().args(["--team", "bravo"]), "clients", "ci");
    let (endpoint, external) = borealis_tests::external::start(&relay.http_url, &client_id, &client_secret).await;
    let allow = endpoint.to_string();

    let alpha_agent = AgentProcess::start(&relay.agents_url, &a_id, &a_secret, &["--allow", &allow]);
    alpha_agent.wait_connected(Duration::from_secs(10)).await;
    let dir = TempDir::new("teams");
    let file = dir.path().join("check.yaml");
    std::fs::write(&file, webhook_file(&format!("http://{endpoint}/pass"), Some("rna"), "token")).unwrap();
    let run = |team: &'static str| {
        let file = file.clone();
        let relay = &relay;
        async move {
            let out = relay
                .cli()
                .args(["--team", team, "--json", "webhook", "run", "-f", file.to_str().unwrap(), "--name", "check"])
                .run_async()
                .await;
            assert!(out.status.success(), "{}", out.stderr_text());
            let run: WebhookRun = serde_json::from_str(&out.stdout_text()).unwrap();
            assert_eq!(run.team, team);
            relay.wait_run(&run.id).await
        }
    };

    // Only alpha's rna is connected: bravo's run is not carried by it.
    let unreachable = run("bravo").await;
    assert_eq!(unreachable.state, RunState::Failed, "{unreachable:?}");
    let reason = unreachable.reason.clone().unwrap_or_default();
    assert!(reason.contains("rna") && reason.contains("connected"), "{reason}");
    assert!(external.received().is_empty(), "nothing reached the endpoint through alpha's agent");

    let bravo_agent = AgentProcess::start(&relay.agents_url, &b_id, &b_secret, &["--allow", &allow]);
    bravo_agent.wait_connected(Duration::from_secs(10)).await;
    let done = run("bravo").await;
    assert_eq!(done.state, RunState::Succeeded, "{done:?}");
    let received = external.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].headers["authorization"], "Bearer bravo-secret-value", "bravo's own secret");
    assert_eq!(external.callbacks()[0].status, 200, "bravo's client decides bravo's run");

    // Each team lists its own; the admin token lists a team's with --team.
    for team in ["alpha", "bravo"] {
        let out = relay.cli().args(["--team", team, "--json", "agents", "list"]).run_async().await;
        let listed: borealis_api::AgentList = serde_json::from_str(&out.stdout_text()).unwrap();
        let seen: Vec<(&str, &str)> = listed.agents.iter().map(|a| (a.agent_id.as_str(), a.team.as_str())).collect();
        assert_eq!(seen, [("rna", team)]);
        let out = relay.cli().args(["--team", team, "--json", "runs", "list"]).run_async().await;
        let runs: borealis_api::WebhookRunList = serde_json::from_str(&out.stdout_text()).unwrap();
        assert!(runs.runs.iter().all(|r| r.team == team), "{:?}", runs.runs);
        assert_eq!(runs.runs.len(), if team == "bravo" { 2 } else { 0 });
    }
    // Revoking alpha's rna leaves bravo's connected.
    let out = relay.cli().args(["--team", "alpha", "agents", "revoke", "rna"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let bravo_only = relay.cli().args(["--team", "bravo", "--json", "agents", "list"]).run_async().await;
    let listed: borealis_api::AgentList = serde_json::from_str(&bravo_only.stdout_text()).unwrap();
    assert!(listed.agents[0].connected, "bravo's rna is still connected");
}

/// A deployer of team bravo names alpha's agent, secret and provider: each
/// refused in the words used for a name that exists nowhere, so the reply
/// does not tell whether alpha has it.
#[tokio::test(flavor = "multi_thread")]
async fn another_teams_agent_secret_and_provider_are_refused_as_if_they_did_not_exist() {
    let relay = relay();
    create_team(&relay, "alpha").await;
    create_team(&relay, "bravo").await;
    create_credentials(relay.cli().args(["--team", "alpha"]), "agents", "alpha-rna");
    set_secret(&relay, "alpha", "alpha-token", "alpha-secret-value").await;
    let out = relay
        .cli()
        .args(["--team", "alpha", "providers", "create", "alpha-prom", "--type", "prometheus"])
        .args(["--url", "http://127.0.0.1:9"])
        .run_async()
        .await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let deployer = relay.service_account("bravo", "ci", &["deployer", "operator"], &[]).await;

    // The same request naming alpha's object, then a name no team has: the
    // replies differ only in the name.
    let same_words = |(status, body): &(u16, Value), (other_status, other): &(u16, Value), name: &str, ghost: &str| {
        assert_eq!(status, other_status, "{body} / {other}");
        assert_eq!(detail(body).replace(name, "NAME"), detail(other).replace(ghost, "NAME"), "{body} / {other}");
        assert!(!detail(body).contains("alpha\""), "the other team is not named: {body}");
    };
    let run = |file: String| json!({"file": file, "name": "check"});
    let url = "http://127.0.0.1:9/x";

    let theirs = relay
        .call_as("POST", "/api/v1/webhook-runs", &deployer, Some(run(webhook_file(url, Some("alpha-rna"), "x"))))
        .await;
    let nowhere = relay
        .call_as("POST", "/api/v1/webhook-runs", &deployer, Some(run(webhook_file(url, Some("ghost-rna"), "x"))))
        .await;
    assert_eq!(theirs.0, 400, "{}", theirs.1);
    assert!(detail(&theirs.1).contains("agent \"alpha-rna\" is not registered in team \"bravo\""), "{}", theirs.1);
    same_words(&theirs, &nowhere, "alpha-rna", "ghost-rna");

    let theirs = relay
        .call_as("POST", "/api/v1/webhook-runs", &deployer, Some(run(webhook_file(url, None, "alpha-token"))))
        .await;
    let nowhere = relay
        .call_as("POST", "/api/v1/webhook-runs", &deployer, Some(run(webhook_file(url, None, "ghost-token"))))
        .await;
    assert_eq!(theirs.0, 400, "{}", theirs.1);
    assert!(detail(&theirs.1).contains("alpha-token"), "{}", theirs.1);
    same_words(&theirs, &nowhere, "alpha-token", "ghost-token");

    let analysis = |provider: &str| {
        format!(
            "application: shop
targets:
  prod:
    constraints:
      beforeDeployment:
        - analysis:
            metricProviderName: {provider}
            interval: 1
            units: seconds
            queries: [q]
analysis:
  queries:
    - {{name: q, queryTemplate: up, upperLimit: 1}}
"
        )
    };
    let deploy = |file: String| json!({"file": file});
    let theirs = relay.call_as("POST", "/api/v1/deployments", &deployer, Some(deploy(analysis("alpha-prom")))).await;
    let nowhere = relay.call_as("POST", "/api/v1/deployments", &deployer, Some(deploy(analysis("ghost-prom")))).await;
    assert_eq!(theirs.0, 400, "{}", theirs.1);
    assert!(detail(&theirs.1).contains("unknown metric provider \"alpha-prom\" in team \"bravo\""), "{}", theirs.1);
    same_words(&theirs, &nowhere, "alpha-prom", "ghost-prom");

    // A deployment's file naming alpha's agent, and a provider of bravo's
    // that would query through it.
    let through = |agent: &str| {
        format!(
            "application: shop
targets:
  prod:
    account: {agent}
    constraints:
      beforeDeployment:
        - runWebhook:
            name: check
webhooks:
  - name: check
    method: POST
    uriTemplate: {url}
    networkMode: remoteNetworkAgent
"
        )
    };
    let theirs = relay.call_as("POST", "/api/v1/deployments", &deployer, Some(deploy(through("alpha-rna")))).await;
    let nowhere = relay.call_as("POST", "/api/v1/deployments", &deployer, Some(deploy(through("ghost-rna")))).await;
    assert_eq!(theirs.0, 400, "{}", theirs.1);
    same_words(&theirs, &nowhere, "alpha-rna", "ghost-rna");
    let provider =
        |agent: &str| json!({"name": "p", "type": "prometheus", "url": "http://127.0.0.1:9", "agent": agent});
    let theirs = relay.call_as("POST", "/api/v1/metric-providers", &deployer, Some(provider("alpha-rna"))).await;
    let nowhere = relay.call_as("POST", "/api/v1/metric-providers", &deployer, Some(provider("ghost-rna"))).await;
    assert_eq!(theirs.0, 400, "{}", theirs.1);
    same_words(&theirs, &nowhere, "alpha-rna", "ghost-rna");

    // Bravo's own names are free for it, whatever alpha holds.
    set_secret(&relay, "bravo", "alpha-token", "bravo's own").await;
    let mine = relay
        .call_as("POST", "/api/v1/webhook-runs", &deployer, Some(run(webhook_file(url, None, "alpha-token"))))
        .await;
    assert_eq!(mine.0, 201, "{}", mine.1);
}

/// A deployment and a run of team alpha, asked for by id by team bravo's
/// accounts: not found, in the same words as an id that exists nowhere;
/// not in bravo's lists; not to be approved, aborted or cancelled; and
/// bravo's callback client cannot decide alpha's run.
#[tokio::test(flavor = "multi_thread")]
async fn another_teams_runs_and_deployments_are_not_found_by_id() {
    let relay = relay();
    create_team(&relay, "alpha").await;
    create_team(&relay, "bravo").await;
    let alpha = relay.service_account("alpha", "ci", &["deployer", "approver"], &[]).await;
    let bravo = relay.service_account("bravo", "ci", &["deployer", "approver", "viewer"], &[]).await;
    let gated = "application: shop
targets:
  prod:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
";
    let (status, deployment) = relay.call_as("POST", "/api/v1/deployments", &alpha, Some(json!({"file": gated}))).await;
    assert_eq!(status, 201, "{deployment}");
    assert_eq!(deployment["team"], "alpha");
    let id = deployment["id"].as_str().unwrap().to_owned();
    let (b_client, b_secret) = create_credentials(relay.cli().args(["--team", "bravo"]), "clients", "ci");
    let (endpoint, bravo_system) = borealis_tests::external::start(&relay.http_url, &b_client, &b_secret).await;
    let file = webhook_file(&format!("http://{endpoint}/wait"), None, "none")
        .replace("      - key: Authorization\n        value: Bearer {{secrets.none}}\n", "");
    let (status, run) =
        relay.call_as("POST", "/api/v1/webhook-runs", &alpha, Some(json!({"file": file, "name": "check"}))).await;
    assert_eq!(status, 201, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let callback = eventually("the run's call arrives", Duration::from_secs(10), || {
        let found = bravo_system.received().first().and_then(|r| r.callback_uri.clone());
        async move { found }
    })
    .await;

    let ghost = "00000000-0000-4000-8000-000000000000";
    for (method, path) in [
        ("GET", "/api/v1/deployments/{id}"),
        ("POST", "/api/v1/deployments/{id}/targets/prod/approve"),
        ("POST", "/api/v1/deployments/{id}/abort"),
    ] {
        let theirs = relay.call_as(method, &path.replace("{id}", &id), &bravo, None).await;
        let nowhere = relay.call_as(method, &path.replace("{id}", ghost), &bravo, None).await;
        assert_eq!(theirs.0, 404, "{method} {path}: {}", theirs.1);
        assert_eq!(theirs.0, nowhere.0);
        assert_eq!(detail(&theirs.1).replace(&id, "ID"), detail(&nowhere.1).replace(ghost, "ID"), "{method} {path}");
    }
    for (method, path) in [("GET", "/api/v1/webhook-runs/{id}"), ("POST", "/api/v1/webhook-runs/{id}/cancel")] {
        let theirs = relay.call_as(method, &path.replace("{id}", &run_id), &bravo, None).await;
        let nowhere = relay.call_as(method, &path.replace("{id}", ghost), &bravo, None).await;
        assert_eq!(theirs.0, 404, "{method} {path}: {}", theirs.1);
        assert_eq!(
            detail(&theirs.1).replace(&run_id, "ID"),
            detail(&nowhere.1).replace(ghost, "ID"),
            "{method} {path}"
        );
    }
    let (_, listed) = relay.call_as("GET", "/api/v1/deployments", &bravo, None).await;
    assert_eq!(listed["deployments"], json!([]), "bravo lists none of alpha's");
    let (_, listed) = relay.call_as("GET", "/api/v1/webhook-runs", &bravo, None).await;
    assert_eq!(listed["runs"], json!([]));

    // Bravo's client calling back alpha's run: as for a callback URI that
    // exists nowhere. Alpha's run is still waiting.
    assert!(callback.ends_with("/callback"), "{callback}");
    let refused = bravo_system.call_back(&callback, json!({"success": true})).await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    let made_up = format!("{}/callbacks/AAAAAAAAAAAAAAAAAAAAAAAA/callback", relay.http_url);
    let unknown = bravo_system.call_back(&made_up, json!({"success": true})).await;
    assert_eq!(refused.body, unknown.body);
    let (_, still) = relay.call_as("GET", &format!("/api/v1/webhook-runs/{run_id}"), &alpha, None).await;
    assert_eq!(still["state"], "awaiting_callback", "{still}");

    // Alpha reaches both, and decides its approval.
    let (status, _) =
        relay.call_as("POST", &format!("/api/v1/deployments/{id}/targets/prod/approve"), &alpha, None).await;
    assert_eq!(status, 200);
    let (status, _) = relay.call_as("GET", &format!("/api/v1/webhook-runs/{run_id}"), &alpha, None).await;
    assert_eq!(status, 200);
}
