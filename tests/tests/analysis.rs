//! Analysis steps (issue 15): metric providers, and judgment against a real
//! Prometheus, direct or through an agent.

use std::time::Duration;

use borealis_api::{DeploymentState, Lookback, TargetState};
use borealis_tests::console::Console;
use borealis_tests::deployer::{Deployer, kinds, target};
use borealis_tests::process::OutputText;
use borealis_tests::prometheus::{Exporter, Prometheus};
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, TempDir};

fn loopback_relay() -> RelayProcess {
    RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() })
}

#[tokio::test]
async fn providers_are_created_listed_and_deleted_and_only_prometheus_is_accepted() {
    let relay = loopback_relay();
    let created = relay
        .cli()
        .args([
            "providers",
            "create",
            "prom",
            "--type",
            "prometheus",
            "--url",
            "http://127.0.0.1:9/",
            "--header",
            "Authorization: Bearer {{secrets.prom_token}}",
        ])
        .run_async()
        .await;
    assert!(created.status.success(), "{}", created.stderr_text());
    let again = relay
        .cli()
        .args(["providers", "create", "prom", "--type", "prometheus", "--url", "http://x/"])
        .run_async()
        .await;
    assert!(!again.status.success());
    assert!(again.stderr_text().contains("a metric provider named \"prom\" exists already"), "{}", again.stderr_text());
    let datadog =
        relay.cli().args(["providers", "create", "dd", "--type", "datadog", "--url", "http://x/"]).run_async().await;
    assert!(!datadog.status.success());
    assert!(
        datadog.stderr_text().contains("unsupported provider type \"datadog\" (supported: prometheus)"),
        "{}",
        datadog.stderr_text()
    );
    let listed = relay.cli().args(["--json", "providers", "list"]).run_async().await;
    let value: serde_json::Value = serde_json::from_str(&listed.stdout_text()).unwrap();
    let providers = value["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 1, "{value}");
    assert_eq!(providers[0]["type"], "prometheus");
    assert_eq!(providers[0]["headers"][0]["value"], "Bearer {{secrets.prom_token}}", "templates are kept, not values");
    let table = relay.cli().args(["providers", "list"]).run_async().await.stdout_text();
    assert!(table.contains("prom") && table.contains("http://127.0.0.1:9/"), "{table}");
    let deleted = relay.cli().args(["providers", "delete", "prom"]).run_async().await;
    assert!(deleted.status.success(), "{}", deleted.stderr_text());
    let gone = relay.cli().args(["providers", "delete", "prom"]).run_async().await;
    assert!(gone.stderr_text().contains("no metric provider named \"prom\""), "{}", gone.stderr_text());
}

#[tokio::test]
async fn a_deployment_naming_an_unknown_provider_is_refused_where_it_names_it() {
    let relay = loopback_relay();
    let dir = TempDir::new("analysis");
    let file = "\
application: app
targets:
  prod:
    constraints:
      beforeDeployment:
        - analysis:
            metricProviderName: nowhere
            interval: 1
            units: seconds
            queries: [q]
analysis:
  queries:
    - {name: q, queryTemplate: up, upperLimit: 1}
";
    let path = dir.path().join("d.yaml");
    std::fs::write(&path, file).unwrap();
    let out = relay.cli().args(["deploy", "-f", path.to_str().unwrap()]).run_async().await;
    assert!(!out.status.success());
    let stderr = out.stderr_text();
    assert!(
        stderr.contains("targets.prod.constraints.beforeDeployment[0].analysis.metricProviderName: unknown metric provider \"nowhere\" in team \"default\" (none is defined; create it with borealis providers create) at 7:33"),
        "{stderr}"
    );
}

/// Seed 003's blue/green example as pasted; only the provider name, the
/// query and its limits and the webhook's URL are ours.
fn seed_blue_green(external: std::net::SocketAddr, webhook_path: &str, query: &str, limits: &str) -> String {
    format!(
        "application: myApp
targets:
  prod:
    account: prod-cluster
    namespace: myApp-prod
    strategy: myBlueGreen
analysis:
  defaultMetricProviderName: prom
  queries:
    - name: avgCPUUsage-pass
      queryTemplate: {query}
      {limits}
webhooks:
  - name: security-scan
    method: POST
    uriTemplate: http://{external}/{webhook_path}
    networkMode: direct
    headers:
      - key: Location
        value: {{{{armory.callbackUri}}}}/callback
strategies:
  myBlueGreen:
    blueGreen:
      activeService: myApp-external
      previewService: myApp-preview
      redirectTrafficAfter:
        - analysis:
            interval: 7
            units: seconds
            numberOfJudgmentRuns: 1
            rollBackMode: manual
            rollForwardMode: automatic
            queries:
              - avgCPUUsage-pass
        - runWebhook:
            name: security-scan
"
    )
}

fn provider(relay: &RelayProcess, name: &str, url: &str, agent: Option<&str>) {
    let mut args = vec!["providers", "create", name, "--type", "prometheus", "--url", url];
    if let Some(agent) = agent {
        args.extend(["--agent", agent]);
    }
    let out = relay.cli().args(args).run();
    assert!(out.status.success(), "{}", out.stderr_text());
}

async fn prometheus_with_gauge(value: f64) -> (Exporter, Prometheus) {
    let exporter = Exporter::start(Some(value)).await;
    let prometheus = Prometheus::start(&[exporter.addr()]).await;
    prometheus.wait_value("borealis_test_gauge", value).await;
    (exporter, prometheus)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_blue_green_analysis_proceeds_inside_its_limits_and_waits_for_a_decision_outside() {
    let relay = loopback_relay();
    let (external, _system) = relay.external_system().await;
    let (_exporter, prometheus) = prometheus_with_gauge(5.0).await;
    provider(&relay, "prom", &prometheus.url, None);
    let deployer = Deployer::new(&relay);
    let query = "'max_over_time(borealis_test_gauge{job=\"test\"}[{{armory.promQlStepInterval}}])'";

    // Inside its limits: the target proceeds.
    let id = deployer.start(&seed_blue_green(external, "pass", query, "upperLimit: 10\n      lowerLimit: 0")).await;
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:#?}");
    let runs = target(&done, "prod").analysis_runs.clone();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].queries[0].value, Some(5.0));
    assert_eq!(runs[0].queries[0].upper_limit, Some(10.0));
    assert_eq!(runs[0].queries[0].rendered.as_deref(), Some("max_over_time(borealis_test_gauge{job=\"test\"}[7s])"));
    assert!(!runs[0].window.start.is_empty() && !runs[0].window.end.is_empty(), "{runs:?}");
    let table = relay.cli().args(["deployments", "show", &id]).run_async().await.stdout_text();
    assert!(
        table.contains("prod/redirectTrafficAfter/0")
            && table.contains("passed: every query within its limits (avgCPUUsage-pass=5.0)"),
        "{table}"
    );

    // Outside: rollBackMode manual holds the target; rollback rolls it back.
    let outside = seed_blue_green(external, "pass", query, "upperLimit: 4");
    let id = deployer.start(&outside).await;
    let waiting = deployer.until(&id, "prod waits for a decision", |d| d.pending_decisions == ["prod"]).await;
    assert_eq!(target(&waiting, "prod").state, TargetState::AwaitingRollbackDecision);
    let step = target(&waiting, "prod").step.as_deref().unwrap().to_owned();
    assert!(step.contains("query avgCPUUsage-pass returned 5, outside its limits (at most 4)"), "{step}");
    let out = relay.cli().args(["approve", &id, "prod"]).run_async().await;
    assert!(!out.status.success(), "approve is not a decision on an analysis");
    // The console shows the judgment's values and takes the decision.
    let console = Console::sign_in(&relay.http_url, &relay.admin_token()).await;
    let (status, page) = console.get(&format!("{}/deployments/{id}", relay.http_url)).await;
    assert_eq!(status, 200);
    for shown in [
        "judgment run 1 of 1",
        "max_over_time(borealis_test_gauge{job=&#34;test&#34;}[7s])",
        r#"<td data-label="Value">5</td>"#,
        "at most 4",
        "outside",
    ] {
        assert!(page.contains(shown), "{shown} on the page:\n{page}");
    }
    assert!(!page.contains(&format!("/deployments/{id}/targets/prod/approve")), "no approval is pending");
    let decide = format!("{}/deployments/{id}/targets/prod/rollback", relay.http_url);
    assert!(page.contains(&format!("/deployments/{id}/targets/prod/rollback")), "a Roll back button");
    let (status, location) = console.post(&decide, &Console::csrf(&page), &[]).await;
    assert_eq!((status, location), (303, Some(format!("/deployments/{id}"))));
    let done = deployer.finished(&id).await;
    assert_eq!(target(&done, "prod").state, TargetState::RolledBack);
    assert!(
        target(&done, "prod").reason.as_deref().unwrap().contains("rolled back by the bootstrap admin token"),
        "{done:#?}"
    );
    assert!(!kinds(&done, "prod").iter().any(|k| k.starts_with("action: redirect")), "{:?}", kinds(&done, "prod"));

    // Outside again: continue lets it proceed.
    let id = deployer.start(&outside).await;
    deployer.until(&id, "prod waits again", |d| d.pending_decisions == ["prod"]).await;
    deployer.decide("continue", &id, "prod").await;
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:#?}");
    assert!(kinds(&done, "prod").iter().any(|k| k.starts_with("continued")), "{:?}", kinds(&done, "prod"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_webhook_beside_the_analysis_rolls_back_at_once_while_the_analysis_waits() {
    let relay = loopback_relay();
    let (external, system) = relay.external_system().await;
    let (_exporter, prometheus) = prometheus_with_gauge(5.0).await;
    provider(&relay, "prom", &prometheus.url, None);
    let deployer = Deployer::new(&relay);
    // The analysis fails and waits for a manual decision; the webhook
    // beside it (held until the test calls back) then fails, and rolls the
    // target back automatically without that decision.
    let file = seed_blue_green(external, "hold", "borealis_test_gauge", "upperLimit: 1");
    let id = deployer.start(&file).await;
    deployer.until(&id, "the analysis waits for a decision", |d| d.pending_decisions == ["prod"]).await;
    let callback = system.received().iter().find_map(|r| r.callback_uri.clone()).expect("the webhook was called");
    let callback = if callback.ends_with("/callback") { callback } else { format!("{callback}/callback") };
    system.call_back(&callback, serde_json::json!({ "success": false, "mdMessage": "CVE found" })).await;
    let done = deployer.finished(&id).await;
    let prod = target(&done, "prod");
    assert_eq!(prod.state, TargetState::RolledBack, "{done:#?}");
    assert!(prod.reason.as_deref().unwrap().contains("webhook security-scan failed: CVE found"), "{prod:#?}");
    assert_eq!(done.pending_decisions, Vec::<String>::new(), "the decision is no longer pending");
    assert!(!prod.analysis_runs[0].passed, "{prod:#?}");
    assert!(kinds(&done, "prod").iter().any(|k| k.starts_with("action: rollback")), "{:?}", kinds(&done, "prod"));
}

fn canary(steps: &str, queries: &str) -> String {
    format!(
        "application: shop
targets:
  prod:
    strategy: canary
analysis:
  defaultMetricProviderName: prom
  queries:
{queries}
strategies:
  canary:
    canary:
      steps:
        - setWeight: {{weight: 25}}
{steps}
        - setWeight: {{weight: 100}}
"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_analysis_passes_three_runs_and_rolls_back_automatically_at_the_run_that_fails() {
    let relay = loopback_relay();
    let (exporter, prometheus) = prometheus_with_gauge(5.0).await;
    provider(&relay, "prom", &prometheus.url, None);
    let deployer = Deployer::new(&relay);
    let queries = "    - {name: gauge, queryTemplate: borealis_test_gauge, lowerLimit: 1, upperLimit: 10}";
    let step = |interval: u32| {
        format!(
            "        - analysis: {{interval: {interval}, units: seconds, numberOfJudgmentRuns: 3, lookbackMethod: sliding, queries: [gauge]}}"
        )
    };
    let id = deployer.start(&canary(&step(1), queries)).await;
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:#?}");
    let runs = target(&done, "prod").analysis_runs.clone();
    assert_eq!(runs.iter().map(|r| r.run).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(runs.iter().all(|r| r.passed && r.window.lookback == Lookback::Sliding), "{runs:?}");
    let events = kinds(&done, "prod");
    let weights: Vec<&String> = events.iter().filter(|k| k.starts_with("action: setWeight")).collect();
    assert_eq!(weights.len(), 2, "{events:?}");

    // The second judgment goes out of bounds: rolled back at that run.
    let id = deployer.start(&canary(&step(3), queries)).await;
    deployer.until(&id, "the first judgment run", |d| target(d, "prod").analysis_runs.len() == 1).await;
    exporter.set(Some(50.0));
    prometheus.wait_value("borealis_test_gauge", 50.0).await;
    let done = deployer.finished(&id).await;
    let prod = target(&done, "prod");
    assert_eq!(prod.state, TargetState::RolledBack, "{done:#?}");
    let runs = &prod.analysis_runs;
    assert_eq!(runs.len(), 2, "no third run: {runs:?}");
    assert_eq!((runs[0].passed, runs[1].passed), (true, false));
    assert_eq!(runs[1].queries[0].value, Some(50.0));
    assert!(
        prod.reason
            .as_deref()
            .unwrap()
            .contains("analysis failed at judgment run 2 of 3: query gauge returned 50, outside its limits ([1, 10])"),
        "{prod:#?}"
    );
    let events = kinds(&done, "prod");
    assert_eq!(events.iter().filter(|k| k.starts_with("action: setWeight")).count(), 1, "{events:?}");
    assert!(events.iter().any(|k| k.starts_with("action: rollback")), "{events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn roll_forward_manual_holds_a_passing_step_until_continue() {
    let relay = loopback_relay();
    let (_exporter, prometheus) = prometheus_with_gauge(5.0).await;
    provider(&relay, "prom", &prometheus.url, None);
    let deployer = Deployer::new(&relay);
    let queries = "    - {name: gauge, queryTemplate: borealis_test_gauge, upperLimit: 10}";
    let step = "        - analysis: {interval: 1, units: seconds, rollForwardMode: manual, queries: [gauge]}";
    let id = deployer.start(&canary(step, queries)).await;
    let waiting = deployer.until(&id, "prod held after passing", |d| d.pending_decisions == ["prod"]).await;
    assert_eq!(target(&waiting, "prod").state, TargetState::AwaitingContinueDecision);
    assert!(target(&waiting, "prod").analysis_runs[0].passed);
    // Approving is the wrong question: the refusal says which to use.
    let out = deployer.approve(&id, "prod").await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr_text());
    assert!(
        out.stderr_text().contains(
            "waits for a rollback or continue decision on its analysis, not an approval: use rollback or continue"
        ),
        "{}",
        out.stderr_text()
    );
    deployer.decide("continue", &id, "prod").await;
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:#?}");
    let judged = target(&done, "prod").analysis_runs.len() as f64;
    assert_eq!(relay.metric("borealis_analysis_judgments_total{result=\"passed\"}").await, judged);
    assert_eq!(relay.metric("borealis_analysis_judgments_total{result=\"failed\"}").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_non_numeric_erroring_and_unreachable_prometheus_each_fail_with_their_reason() {
    let relay = loopback_relay();
    let (_exporter, prometheus) = prometheus_with_gauge(5.0).await;
    provider(&relay, "prom", &prometheus.url, None);
    // Nothing listens here.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    provider(&relay, "down", &format!("http://{closed}"), None);
    // Answers every query with HTTP 500.
    let broken = borealis_tests::servers::serve(
        axum::Router::new()
            .fallback(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "the TSDB is on fire") }),
    )
    .await;
    provider(&relay, "broken", &format!("http://{broken}"), None);
    let deployer = Deployer::new(&relay);
    let cases = [
        ("prom", "nothing_is_called_this", "returned an empty result"),
        ("prom", "'\"text\"'", "returned a string, not a single number"),
        ("prom", "'sum(('", "answered HTTP 400: bad_data"),
        ("prom", "'0/0'", "returned NaN"),
        ("down", "up", "provider down could not be queried"),
        ("broken", "up", "answered HTTP 500: the TSDB is on fire"),
    ];
    for (provider, query, reason) in cases {
        let file = canary(
            &format!(
                "        - analysis: {{metricProviderName: {provider}, interval: 1, units: seconds, queries: [q]}}"
            ),
            &format!("    - {{name: q, queryTemplate: {query}, upperLimit: 10}}"),
        );
        let id = deployer.start(&file).await;
        let done = deployer.finished(&id).await;
        let prod = target(&done, "prod");
        assert_eq!(prod.state, TargetState::RolledBack, "{query}: {done:#?}");
        let why = prod.reason.as_deref().unwrap();
        assert!(why.contains(reason) && why.contains("query q"), "{query}: {why}");
        assert!(prod.analysis_runs[0].queries[0].error.is_some(), "{prod:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_through_an_agent_crosses_the_tunnel_and_its_allow_list_applies() {
    // No direct loopback: only the agent can reach Prometheus.
    let relay = RelayProcess::start(RelayOptions::default());
    let (_exporter, prometheus) = prometheus_with_gauge(5.0).await;
    let (client_id, secret) = relay.create_agent("metrics-rna");
    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow", &prometheus.addr.to_string()]);
    agent.wait_connected(Duration::from_secs(10)).await;
    provider(&relay, "prom", &prometheus.url, Some("metrics-rna"));
    let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    provider(&relay, "outside", &format!("http://{outside}"), Some("metrics-rna"));
    let deployer = Deployer::new(&relay);
    let queries = "    - {name: gauge, queryTemplate: borealis_test_gauge, upperLimit: 10}";
    let before = agent.metric("borealis_agent_requests_total{outcome=\"2xx\"}").await;
    let id = deployer
        .start(&canary(
            "        - analysis: {interval: 1, units: seconds, numberOfJudgmentRuns: 2, queries: [gauge]}",
            queries,
        ))
        .await;
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:#?}");
    assert_eq!(target(&done, "prod").analysis_runs[1].queries[0].value, Some(5.0));
    agent.wait_metric("borealis_agent_requests_total{outcome=\"2xx\"}", before + 2.0).await;

    let step = "        - analysis: {metricProviderName: outside, interval: 1, units: seconds, queries: [gauge]}";
    let id = deployer.start(&canary(step, queries)).await;
    let done = deployer.finished(&id).await;
    let prod = target(&done, "prod");
    assert_eq!(prod.state, TargetState::RolledBack, "{done:#?}");
    let why = prod.reason.as_deref().unwrap();
    assert!(
        why.contains("provider outside (through agent metrics-rna) could not be queried")
            && why.contains("is not allowed"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_killed_between_judgment_runs_keeps_the_first_and_finishes_the_rest() {
    let relay = loopback_relay();
    let (_exporter, prometheus) = prometheus_with_gauge(5.0).await;
    provider(&relay, "prom", &prometheus.url, None);
    let queries = "    - {name: gauge, queryTemplate: borealis_test_gauge, upperLimit: 10}";
    let step = "        - analysis: {interval: 2, units: seconds, numberOfJudgmentRuns: 3, queries: [gauge]}";
    let (id, first) = {
        let deployer = Deployer::new(&relay);
        let id = deployer.start(&canary(step, queries)).await;
        let shown = deployer.until(&id, "the first judgment run", |d| target(d, "prod").analysis_runs.len() == 1).await;
        (id, target(&shown, "prod").analysis_runs[0].clone())
    };
    let relay = relay.kill_and_restart();
    let deployer = Deployer::new(&relay);
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:#?}");
    let runs = target(&done, "prod").analysis_runs.clone();
    assert_eq!(runs.iter().map(|r| r.run).collect::<Vec<_>>(), [1, 2, 3], "{runs:?}");
    assert_eq!(runs[0], first, "the first run is kept as judged before the kill");
    let judged = kinds(&done, "prod").into_iter().filter(|k| k.starts_with("judgment-passed")).count();
    assert_eq!(judged, 3, "no run judged twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_not_given_before_its_expiration_fails_the_target() {
    let relay = loopback_relay();
    let deployer = Deployer::new(&relay);
    let file = "\
application: shop
targets:
  prod:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
            approvalExpiration: {duration: 1, unit: seconds}
";
    let id = deployer.start(file).await;
    let done = deployer.finished(&id).await;
    let prod = target(&done, "prod");
    assert_eq!(prod.state, TargetState::RolledBack, "{done:#?}");
    assert!(
        prod.reason.as_deref().unwrap().contains("the approval expired: target prod was not approved within 1s"),
        "{prod:#?}"
    );
    assert_eq!(done.pending_approvals, Vec::<String>::new());
    let out = relay.cli().args(["approve", &id, "prod"]).run_async().await;
    assert!(!out.status.success(), "an expired approval cannot be given");
}
