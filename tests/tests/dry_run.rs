//! `--dry-run`: the relay renders and checks every call a deployment or a
//! run would make, and sends none. What only the relay can know is found
//! from its real state: the agent's allow-list as the running agent
//! reported it, which agents are connected, which secrets and metric
//! providers are stored.

use std::sync::Arc;

use borealis_api::{CallKind, DeploymentList, Plan, Severity, WebhookRunList};
use borealis_tests::process::OutputText;
use borealis_tests::servers::recorder;
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, TempDir};

const SECRET: &str = "tok-Dry-Run-7c1f";

fn file(endpoint: std::net::SocketAddr) -> String {
    format!(
        "\
application: shop
targets:
  staging:
    constraints:
      beforeDeployment:
        - runWebhook: {{name: scan}}
        - runWebhook: {{name: allowed}}
        - runWebhook: {{name: tests}}
        - runWebhook: {{name: notify}}
        - analysis:
            metricProviderName: prom-missing
            interval: 10
            units: seconds
            numberOfJudgmentRuns: 1
            queries: [errors]
analysis:
  queries:
    - {{name: errors, queryTemplate: 'sum(rate(errors[1m]))', upperLimit: 1}}
webhooks:
  - name: scan
    method: POST
    uriTemplate: http://{endpoint}/scan?image={{{{context.image}}}}
    networkMode: remoteNetworkAgent
    agentIdentifier: rna
    headers:
      - key: Authorization
        value: Bearer {{{{secrets.token}}}}
    bodyTemplate:
      inline: '{{\"callback\": \"{{{{armory.callbackUri}}}}\"}}'
  - name: allowed
    method: POST
    uriTemplate: http://allowed.internal:8443/run
    networkMode: remoteNetworkAgent
    agentIdentifier: rna
  - name: tests
    method: POST
    uriTemplate: http://{endpoint}/tests
    networkMode: remoteNetworkAgent
    agentIdentifier: offline
  - name: notify
    method: POST
    uriTemplate: http://{endpoint}/notify
    networkMode: direct
    headers:
      - key: X-Token
        value: '{{{{secrets.missing}}}}'
"
    )
}

fn call<'p>(plan: &'p Plan, name: &str) -> &'p borealis_api::PlannedCall {
    plan.calls().find(|c| c.name == name).unwrap_or_else(|| panic!("no call {name} in {plan:#?}"))
}

fn errors(call: &borealis_api::PlannedCall) -> Vec<&str> {
    call.findings.iter().filter(|f| f.severity == Severity::Error).map(|f| f.message.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_names_what_would_stop_each_call_and_sends_nothing() {
    let (endpoint, received) = recorder(Arc::new(|_, _| 200)).await;
    let relay =
        RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..RelayOptions::default() });
    let out = relay.cli().args(["secrets", "set", "token"]).stdin_text(SECRET).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let (rna_id, rna_secret) = relay.create_agent("rna");
    relay.create_agent("offline");
    // The agent allows one other host; the endpoint is not among what it allows.
    let agent = AgentProcess::start(
        &relay.agents_url,
        &rna_id,
        &rna_secret,
        &["--allow", "allowed.internal:8443", "--allow", "127.0.0.1:9"],
    );
    agent.wait_connected(std::time::Duration::from_secs(20)).await;

    let dir = TempDir::new("dry-run");
    let path = dir.path().join("deploy.yaml");
    std::fs::write(&path, file(endpoint)).unwrap();
    let path = path.to_str().unwrap();

    let out = relay
        .cli()
        .args(["--output", "json", "deploy", "-f", path, "--dry-run", "--context", "image=shop:1.2.3"])
        .run_async()
        .await;
    assert_eq!(out.status.code(), Some(1), "a plan with errors fails: {}", out.stderr_text());
    assert!(out.stderr_text().contains("nothing was started"), "{}", out.stderr_text());
    let plan: Plan = serde_json::from_str(&out.stdout_text()).expect("the plan as JSON");
    assert!(!plan.ok);
    assert_eq!(plan.targets.len(), 1);

    // The agent's allow-list, as the running agent reported it, refuses the endpoint.
    let scan = call(&plan, "scan");
    assert_eq!(scan.via, "agent rna");
    let refused = errors(scan);
    assert!(
        refused.len() == 1 && refused[0].contains("refuses it") && refused[0].contains("allowed.internal:8443"),
        "{scan:#?}"
    );
    // Rendered as it would be sent, the secret masked.
    let request = scan.request.as_ref().expect("the scan renders");
    assert_eq!(request.url, format!("http://{endpoint}/scan?image=shop%3A1.2.3"));
    assert!(request.headers.contains(&("Authorization".into(), "Bearer ********".into())), "{request:?}");
    assert!(request.body.as_deref().unwrap().contains("/callbacks/"), "{request:?}");

    // What the allow-list names passes.
    let allowed = call(&plan, "allowed");
    assert!(errors(allowed).is_empty(), "{allowed:#?}");
    assert!(
        allowed.findings.iter().any(|f| f.severity == Severity::Info && f.message.contains("allows")),
        "{allowed:#?}"
    );

    // A registered agent with no instance connected.
    let tests = call(&plan, "tests");
    assert!(errors(tests).iter().any(|e| e.contains("no instance of it is connected")), "{tests:#?}");

    // A secret never stored.
    let notify = call(&plan, "notify");
    assert!(errors(notify).iter().any(|e| e.contains("no secret named \"missing\"")), "{notify:#?}");

    // A metric provider never created.
    let query = plan.calls().find(|c| c.kind == CallKind::Query).expect("the analysis step's call");
    assert!(errors(query).iter().any(|e| e.contains("unknown metric provider \"prom-missing\"")), "{query:#?}");

    // Nothing anywhere says the secret.
    assert!(!out.stdout_text().contains(SECRET) && !out.stderr_text().contains(SECRET));

    // The same as text, target by target.
    let text = relay.cli().args(["deploy", "-f", path, "--dry-run"]).run_async().await;
    assert_eq!(text.status.code(), Some(1));
    let said = text.stdout_text();
    for line in [
        "target staging (driver record)",
        "webhook scan via agent rna",
        "webhook tests via agent offline",
        "error: agent \"offline\" is registered but no instance of it is connected",
        "not ok",
    ] {
        assert!(said.contains(line), "{line:?} in:\n{said}");
    }

    // A webhook run's dry run: the same refusal.
    let run = relay
        .cli()
        .args(["--output", "json", "webhook", "run", "-f", path, "--name", "scan", "--dry-run", "--context", "image=x"])
        .run_async()
        .await;
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr_text());
    let plan: Plan = serde_json::from_str(&run.stdout_text()).unwrap();
    let scan = plan.call.as_ref().expect("the run's call");
    assert!(errors(scan).iter().any(|e| e.contains("refuses it")), "{scan:#?}");
    let ok = relay.cli().args(["webhook", "run", "-f", path, "--name", "allowed", "--dry-run"]).run_async().await;
    assert_eq!(ok.status.code(), Some(0), "{}{}", ok.stdout_text(), ok.stderr_text());
    assert!(ok.stdout_text().contains("ok: nothing found that would stop it"), "{}", ok.stdout_text());

    // Nothing was sent, started or stored.
    assert_eq!(received.lock().unwrap().len(), 0, "the endpoint was called");
    let deployments: DeploymentList = relay.get_as("/api/v1/deployments").await;
    assert!(deployments.deployments.is_empty(), "{deployments:?}");
    let runs: WebhookRunList = relay.get_as("/api/v1/webhook-runs").await;
    assert!(runs.runs.is_empty(), "{runs:?}");
    let metrics = reqwest::get(format!("{}/metrics", agent.health_url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("agent_connected 1"), "the agent's metrics: {metrics}");
    assert!(!metrics.contains("requests_total{"), "the agent forwarded something: {metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_cannot_run_is_refused_by_the_dry_run_as_by_deploy() {
    let relay = RelayProcess::start(RelayOptions::default());
    let dir = TempDir::new("dry-run-invalid");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "application: shop\ntargets:\n  prod:\n    contraints: {}\n").unwrap();
    let out = relay.cli().args(["deploy", "-f", path.to_str().unwrap(), "--dry-run"]).run_async().await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr_text());
    assert!(out.stderr_text().contains("did you mean constraints?"), "{}", out.stderr_text());
}
