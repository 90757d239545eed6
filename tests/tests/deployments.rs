//! Deployments end to end: constraint semantics as the seeds state them,
//! strategies, Flagger's hooks, drivers, and a relay killed mid-way.

use std::sync::Arc;
use std::time::Duration;

use borealis_api::{DeploymentState, RunState, TargetState};
use borealis_tests::deployer::{Deployer, kinds, target};
use borealis_tests::process::OutputText;
use borealis_tests::servers::{self, Recorded};
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, TempDir, api_time_of};

fn relay(options: RelayOptions) -> RelayProcess {
    let mut options = options;
    options.extra_args.extend(["--retry-base-delay", "50ms", "--gate-interval", "100ms"].map(String::from));
    RelayProcess::start(options)
}

fn loopback_relay() -> RelayProcess {
    relay(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() })
}

/// Webhooks that answer by callback: `pass` and `fail` at the external system.
fn webhooks(external: std::net::SocketAddr) -> String {
    format!(
        "webhooks:
  - name: pass
    method: POST
    uriTemplate: http://{external}/pass
    networkMode: direct
    headers:
      - key: Location
        value: '{{{{armory.callbackUri}}}}/callback'
  - name: fail
    method: POST
    uriTemplate: http://{external}/fail
    networkMode: direct
    headers:
      - key: Location
        value: '{{{{armory.callbackUri}}}}/callback'
"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_releases_a_pause_and_a_failing_webhook_beside_one_rolls_back_at_once() {
    let relay = loopback_relay();
    let (external, _system) = relay.external_system().await;
    let deployer = Deployer::new(&relay);
    let approve_only = format!(
        "application: shop\ntargets:\n  staging:\n    constraints:\n      beforeDeployment:\n        - pause:\n            untilApproved: true\n{}",
        webhooks(external)
    );
    let id = deployer.start(&approve_only).await;
    let waiting = deployer.until(&id, "staging waits for approval", |d| d.pending_approvals == ["staging"]).await;
    assert_eq!(target(&waiting, "staging").state, TargetState::AwaitingApproval);
    let out = deployer.approve(&id, "staging").await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Succeeded);
    assert_eq!(target(&done, "staging").state, TargetState::Deployed);

    let with_failure = format!(
        "application: shop\ntargets:\n  staging:\n    constraints:\n      beforeDeployment:\n        - pause:\n            untilApproved: true\n        - runWebhook:\n            name: fail\n{}",
        webhooks(external)
    );
    let id = deployer.start(&with_failure).await;
    // No approval is given: the failing webhook alone ends the target.
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Failed);
    let staging = target(&done, "staging");
    assert_eq!(staging.state, TargetState::RolledBack);
    assert!(staging.reason.as_deref().unwrap().contains("webhook fail failed"), "{staging:#?}");
    assert_eq!(done.pending_approvals, Vec::<String>::new(), "the approval is no longer pending");
    assert!(
        kinds(&done, "staging").iter().any(|k| k.starts_with("approval-cancelled")),
        "{:?}",
        kinds(&done, "staging")
    );
    let out = deployer.approve(&id, "staging").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr_text().contains("is not waiting for approval"), "{}", out.stderr_text());
    let out = deployer.approve(&id, "nowhere").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr_text().contains("has no target \"nowhere\""), "{}", out.stderr_text());

    // A rejection rolls the target back.
    let id = deployer.start(&approve_only).await;
    deployer.until(&id, "staging waits again", |d| d.pending_approvals == ["staging"]).await;
    let out = relay.cli().args(["reject", &id, "staging"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let done = deployer.finished(&id).await;
    assert_eq!(target(&done, "staging").state, TargetState::RolledBack);
    assert!(target(&done, "staging").reason.as_deref().unwrap().contains("rejected by the bootstrap admin token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_after_deployment_failure_cancels_dependents_and_keeps_the_target_deployed() {
    let relay = loopback_relay();
    let (external, _system) = relay.external_system().await;
    let deployer = Deployer::new(&relay);
    let file = format!(
        "application: shop
targets:
  staging:
    constraints:
      afterDeployment:
        - runWebhook:
            name: fail
  prod:
    constraints:
      dependsOn: [staging]
  dr:
    constraints:
      dependsOn: [prod]
{}",
        webhooks(external)
    );
    let id = deployer.start(&file).await;
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Failed);
    assert_eq!(target(&done, "staging").state, TargetState::AfterDeploymentFailed);
    assert!(target(&done, "staging").reason.as_deref().unwrap().contains("stays deployed"));
    assert_eq!(target(&done, "prod").state, TargetState::Cancelled);
    assert_eq!(target(&done, "dr").state, TargetState::Cancelled, "transitive dependents are cancelled too");
    let staging = kinds(&done, "staging");
    assert!(staging.iter().any(|k| k.starts_with("action: deploy on staging")), "{staging:?}");
    assert!(!staging.iter().any(|k| k.starts_with("action: rollback")), "staging is not rolled back: {staging:?}");
    assert!(!kinds(&done, "prod").iter().any(|k| k.starts_with("action: deploy")), "prod was never deployed");
    assert_eq!(
        target(&done, "staging").webhook_runs[0].md_message.as_deref(),
        Some("**3** tests failed: see the report")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blue_green_webhook_failure_rolls_back_and_cancels_its_parallel_pause() {
    let relay = loopback_relay();
    let (external, _system) = relay.external_system().await;
    let deployer = Deployer::new(&relay);
    let file = format!(
        "application: shop
targets:
  prod:
    strategy: bg
strategies:
  bg:
    blueGreen:
      activeService: shop-external
      previewService: shop-preview
      redirectTrafficAfter:
        - pause:
            untilApproved: true
        - runWebhook:
            name: fail
{}",
        webhooks(external)
    );
    let id = deployer.start(&file).await;
    let done = deployer.finished(&id).await;
    let prod = target(&done, "prod");
    assert_eq!(prod.state, TargetState::RolledBack);
    assert!(prod.reason.as_deref().unwrap().starts_with("redirectTrafficAfter: webhook fail failed"), "{prod:#?}");
    let events = kinds(&done, "prod");
    assert!(events.iter().any(|k| k.starts_with("approval-cancelled")), "{events:?}");
    assert!(events.iter().any(|k| k.starts_with("action: rollback on prod")), "{events:?}");
    assert!(!events.iter().any(|k| k.starts_with("action: redirectTraffic")), "traffic never moved: {events:?}");
    assert_eq!(done.pending_approvals, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_steps_run_in_order_and_a_webhook_failure_after_set_weight_rolls_back() {
    let relay = loopback_relay();
    let (external, _system) = relay.external_system().await;
    let deployer = Deployer::new(&relay);
    let file = |second: &str| {
        format!(
            "application: shop
targets:
  staging:
    strategy: rolling
strategies:
  rolling:
    canary:
      steps:
        - setWeight:
            weight: 25
        - runWebhook:
            name: pass
        - pause:
            duration: 1
            unit: seconds
        - setWeight:
            weight: 75
        - runWebhook:
            name: {second}
{}",
            webhooks(external)
        )
    };
    let id = deployer.start(&file("pass")).await;
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Succeeded);
    let order: Vec<String> = kinds(&done, "staging")
        .into_iter()
        .filter(|k| k.starts_with("action") || k.starts_with("webhook-succeeded"))
        .map(|k| k.split(" (").next().unwrap().to_owned())
        .collect();
    assert_eq!(
        order,
        [
            "action: deploy on staging",
            "action: setWeight 25% on staging",
            "webhook-succeeded: webhook pass succeeded: All **42** tests passed",
            "action: setWeight 75% on staging",
            "webhook-succeeded: webhook pass succeeded: All **42** tests passed",
            "action: promote on staging",
        ]
    );

    let id = deployer.start(&file("fail")).await;
    let done = deployer.finished(&id).await;
    assert_eq!(target(&done, "staging").state, TargetState::RolledBack);
    let events = kinds(&done, "staging");
    let position = |prefix: &str| {
        events.iter().position(|k| k.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {events:?}"))
    };
    assert!(
        position("action: setWeight 75%") < position("webhook-failed")
            && position("webhook-failed") < position("action: rollback")
    );
    assert!(!events.iter().any(|k| k.starts_with("action: promote")), "{events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn independent_targets_run_concurrently_and_one_deployment_per_application() {
    let relay = loopback_relay();
    let (external, _system) = relay.external_system().await;
    let deployer = Deployer::new(&relay);
    let pause = "    constraints:\n      beforeDeployment:\n        - pause:\n            untilApproved: true\n";
    let file = format!("application: shop\ntargets:\n  east:\n{pause}  west:\n{pause}{}", webhooks(external));
    let id = deployer.start(&file).await;
    // Both wait at the same time: neither waits for the other.
    let both = deployer
        .until(&id, "both targets wait together", |d| {
            let mut pending = d.pending_approvals.clone();
            pending.sort();
            pending == ["east", "west"]
        })
        .await;
    assert_eq!(target(&both, "east").state, TargetState::AwaitingApproval);
    assert_eq!(target(&both, "west").state, TargetState::AwaitingApproval);

    let path = deployer.file("again.yaml", &file);
    let out = relay.cli().args(["deploy", "-f", path.to_str().unwrap()]).run_async().await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr_text().contains(&format!("deployment {id} of application \"shop\" is still in progress")),
        "{}",
        out.stderr_text()
    );

    for name in ["west", "east"] {
        assert!(deployer.approve(&id, name).await.status.success());
    }
    assert_eq!(deployer.finished(&id).await.state, DeploymentState::Succeeded);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_deployments_are_refused_with_locations_and_leave_nothing_behind() {
    let relay = loopback_relay();
    let dir = TempDir::new("bad-deploy");
    let cases = [
        (
            "application: a\ntargets:\n  x:\n    constraints:\n      dependsOn: [y]\n  y:\n    constraints:\n      dependsOn: [x]\n",
            "dependsOn forms a cycle: x -> y -> x",
        ),
        (
            "application: a\ntargets:\n  x:\n    constraints:\n      dependsOn: [nowhere]\n",
            "targets.x.constraints.dependsOn[0]: dependsOn names target \"nowhere\", which is not defined (targets: x) at 5:19",
        ),
        ("application: a\ntargets:\n  x:\n    strategy: missing\n", "strategy \"missing\" is not defined"),
        (
            "application: a\ntargets:\n  x:\n    strategy: s\nstrategies:\n  s:\n    canary:\n      steps:\n        - exposeServices:\n            services: [a]\n",
            "strategies.s.canary.steps[0].exposeServices: exposeServices steps are not supported yet at 9:11",
        ),
        ("targets:\n  x: {}\n", "a deployment needs an application name"),
    ];
    for (i, (file, says)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&path, file).unwrap();
        let out = relay.cli().args(["deploy", "-f", path.to_str().unwrap()]).run_async().await;
        assert_eq!(out.status.code(), Some(2), "{says}");
        assert!(out.stderr_text().contains(says), "expected {says:?} in {}", out.stderr_text());
    }
    let out = relay.cli().args(["--json", "deployments", "list"]).run_async().await;
    let list: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(list["deployments"], serde_json::json!([]), "no half-created deployment");
    let out = relay.cli().args(["approve", "nope", "x"]).run_async().await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr_text().contains("no deployment \"nope\""), "{}", out.stderr_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_killed_during_a_pause_completes_the_deployment_after_approval() {
    let relay = loopback_relay();
    let (external, _system) = relay.external_system().await;
    let file = format!(
        "application: shop
targets:
  staging:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
  prod:
    constraints:
      dependsOn: [staging]
      beforeDeployment:
        - runWebhook:
            name: pass
{}",
        webhooks(external)
    );
    let id = {
        let deployer = Deployer::new(&relay);
        let id = deployer.start(&file).await;
        deployer.until(&id, "staging waits", |d| d.pending_approvals == ["staging"]).await;
        id
    };
    let relay = relay.kill_and_restart();
    let deployer = Deployer::new(&relay);
    let shown = deployer.show(&id).await;
    assert_eq!(shown.pending_approvals, ["staging"], "the approval survives the restart");
    assert!(deployer.approve(&id, "staging").await.status.success());
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:#?}");
    let deploys = kinds(&done, "staging").into_iter().filter(|k| k.starts_with("action: deploy")).count();
    assert_eq!(deploys, 1, "no action twice");
    assert_eq!(target(&done, "prod").webhook_runs[0].state, RunState::Succeeded);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_driver_through_an_agent_receives_every_action_in_order() {
    let relay = relay(RelayOptions::default());
    let (driver, actions) = servers::recorder(Arc::new(|_, _| 200)).await;
    let (client_id, secret) = relay.create_agent("prod-rna");
    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow", &driver.to_string()]);
    agent.wait_connected(Duration::from_secs(10)).await;
    let file = format!(
        "application: shop
targets:
  prod:
    account: prod-rna
    namespace: shop-prod
    strategy: rolling
    driver:
      webhook:
        url: http://{driver}/actions
        networkMode: remoteNetworkAgent
strategies:
  rolling:
    canary:
      steps:
        - setWeight:
            weight: 20
        - setWeight:
            weight: 60
"
    );
    let deployer = Deployer::new(&relay);
    let id = deployer.start(&file).await;
    assert_eq!(deployer.finished(&id).await.state, DeploymentState::Succeeded);
    let seen: Vec<(String, Option<u64>)> = actions
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.body["action"].as_str().unwrap().to_owned(), r.body["weight"].as_u64()))
        .collect();
    assert_eq!(
        seen,
        [
            ("deploy".into(), None),
            ("setWeight".into(), Some(20)),
            ("setWeight".into(), Some(60)),
            ("promote".into(), None)
        ]
    );
    let first = actions.lock().unwrap()[0].clone();
    assert_eq!(first.body["deploymentId"], id.as_str());
    assert_eq!(first.body["namespace"], "shop-prod");
    // Every action went through the agent.
    agent.wait_metric("borealis_agent_requests_total{outcome=\"2xx\"}", 4.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flaggers_hooks_fire_at_their_points_with_flaggers_payload() {
    let relay = loopback_relay();
    // Like Flagger's load tester: gates closed for the first two asks, then
    // open; rollback/check says no rollback; everything else passes.
    let (tester, calls) = servers::recorder(Arc::new(|path: &str, n| match path {
        "/gate/approve" if n < 2 => 403,
        "/rollback/check" => 400,
        _ => 200,
    }))
    .await;
    let seed = include_str!("../fixtures/seed004-flagger-hooks.yaml")
        .replace("http://flagger-loadtester.test/", &format!("http://{tester}/"))
        .replace("http://flagger-helmtester.flagger/", &format!("http://{tester}/helm/"))
        .replace("http://telegram.bot:8080/", &format!("http://{tester}/telegram/"))
        .replace("http://event-recevier.notifications/slack", &format!("http://{tester}/slack"));
    let file = format!(
        "application: podinfo
targets:
  test:
    namespace: test
    strategy: progressive
strategies:
  progressive:
    canary:
      steps:
        - setWeight:
            weight: 10
        - setWeight:
            weight: 50
spec:
{seed}"
    );
    let deployer = Deployer::new(&relay);
    let id = deployer.start(&file).await;
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:#?}");

    let calls: Vec<Recorded> = calls.lock().unwrap().clone();
    let order: Vec<&str> = calls.iter().filter(|c| c.path != "/slack").map(|c| c.path.as_str()).collect();
    let first =
        |path: &str| order.iter().position(|p| *p == path).unwrap_or_else(|| panic!("{path} never called: {order:?}"));
    let last = |path: &str| order.iter().rposition(|p| *p == path).unwrap();
    // confirm-rollout (closed twice, then open), pre-rollout, then per step:
    // rollback check, traffic gate, load test; then the promotion gate and notify.
    assert_eq!(&order[..3], ["/gate/approve", "/gate/approve", "/gate/approve"], "{order:?}");
    assert!(first("/helm/") > 2 && first("/helm/") < first("/"), "{order:?}");
    assert!(first("/rollback/check") > first("/helm/"), "{order:?}");
    assert_eq!(order.iter().filter(|p| **p == "/").count(), 2, "a rollout hook per canary step: {order:?}");
    assert!(last("/gate/approve") > last("/"), "the promotion gate comes after the steps: {order:?}");
    assert_eq!(order.last(), Some(&"/telegram/"), "post-rollout comes last: {order:?}");

    let helm = calls.iter().find(|c| c.path == "/helm/").unwrap();
    assert_eq!(helm.body["name"], "podinfo");
    assert_eq!(helm.body["namespace"], "test");
    assert_eq!(helm.body["phase"], "Progressing");
    assert!(helm.body["checksum"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(helm.body["metadata"]["type"], "helmv3");
    assert_eq!(helm.body["metadata"]["cmd"], "test podinfo -n test");
    let notify = calls.iter().find(|c| c.path == "/telegram/").unwrap();
    assert_eq!(notify.body["phase"], "Succeeded");
    assert_eq!(notify.body["metadata"]["some"], "message");
    let events: Vec<&Recorded> = calls.iter().filter(|c| c.path == "/slack").collect();
    assert!(events.len() >= 6, "every action and state change is an event: {}", events.len());
    assert!(events.iter().all(|e| e.body["eventMessage"].is_string()
        && e.body["eventType"].is_string()
        && e.body["timestamp"].is_string()));
    assert!(events.iter().any(|e| e.body["eventMessage"].as_str().unwrap().contains("setWeight 50%")));
    assert_eq!(events[0].body["metadata"]["cluster"], "flagger-test");

    // A rollback check that answers 2xx rolls the target back.
    let (tester, calls) = servers::recorder(Arc::new(|_, _| 200)).await;
    let seed = include_str!("../fixtures/seed004-flagger-hooks.yaml")
        .replace("http://flagger-loadtester.test/", &format!("http://{tester}/"))
        .replace("http://flagger-helmtester.flagger/", &format!("http://{tester}/helm/"))
        .replace("http://telegram.bot:8080/", &format!("http://{tester}/telegram/"))
        .replace("http://event-recevier.notifications/slack", &format!("http://{tester}/slack"));
    let id = deployer.start(&format!("{}{seed}", &file[..file.find("  analysis:").unwrap()])).await;
    let done = deployer.finished(&id).await;
    let test = target(&done, "test");
    assert_eq!(test.state, TargetState::RolledBack, "{done:#?}");
    assert!(
        test.reason.as_deref().unwrap().contains("rollback hook \"rollback gate\" asked for a rollback"),
        "{test:#?}"
    );
    let notify = calls.lock().unwrap().iter().find(|c| c.path == "/telegram/").cloned().unwrap();
    assert_eq!(notify.body["phase"], "Failed", "post-rollout runs after a rollback too");
}

#[tokio::test(flavor = "multi_thread")]
async fn confirm_traffic_increase_is_asked_before_every_increase() {
    let mut options = RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() };
    options.extra_args.extend(["--callback-timeout", "2s"].map(String::from));
    let relay = relay(options);
    let deployer = Deployer::new(&relay);
    let file = |tester: std::net::SocketAddr| {
        format!(
            "application: podinfo
targets:
  test:
    namespace: test
    strategy: progressive
    driver:
      webhook:
        url: http://{tester}/driver
        networkMode: direct
strategies:
  progressive:
    canary:
      steps:
        - setWeight:
            weight: 10
        - setWeight:
            weight: 50
spec:
  analysis:
    webhooks:
      - name: traffic
        type: confirm-traffic-increase
        url: http://{tester}/gate/traffic
"
        )
    };
    // What the driver was asked to do, and the gate's calls before each.
    let story = |calls: &[Recorded]| -> Vec<String> {
        calls
            .iter()
            .map(|c| match c.path.as_str() {
                "/driver" => match c.body["weight"].as_u64() {
                    Some(weight) => format!("{} {weight}", c.body["action"].as_str().unwrap()),
                    None => c.body["action"].as_str().unwrap().to_owned(),
                },
                path => path.to_owned(),
            })
            .collect()
    };

    // Open every time: asked once before each increase.
    let (tester, calls) = servers::recorder(Arc::new(|_, _| 200)).await;
    let id = deployer.start(&file(tester)).await;
    assert_eq!(deployer.finished(&id).await.state, DeploymentState::Succeeded);
    assert_eq!(
        story(&calls.lock().unwrap()),
        ["deploy", "/gate/traffic", "setWeight 10", "/gate/traffic", "setWeight 50", "promote"]
    );

    // Open for the first increase, closed after it: the second never happens.
    let (tester, calls) =
        servers::recorder(Arc::new(|path: &str, n| if path == "/gate/traffic" && n >= 1 { 403 } else { 200 })).await;
    let id = deployer.start(&file(tester)).await;
    let done = deployer.finished(&id).await;
    let test = target(&done, "test");
    assert_eq!(test.state, TargetState::RolledBack, "{done:#?}");
    assert!(
        test.reason
            .as_deref()
            .unwrap_or_default()
            .contains("gate \"traffic\" (confirm-traffic-increase) stayed closed"),
        "{test:#?}"
    );
    let told = story(&calls.lock().unwrap());
    let asked_for_50 = told.iter().skip_while(|s| *s != "setWeight 10").filter(|s| *s == "/gate/traffic").count();
    assert_eq!(&told[..3], ["deploy", "/gate/traffic", "setWeight 10"], "{told:?}");
    assert!(asked_for_50 >= 2, "the closed gate was asked again until its deadline: {told:?}");
    assert!(!told.iter().any(|s| s == "setWeight 50"), "{told:?}");
    assert_eq!(told.last().map(String::as_str), Some("rollback"), "{told:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_pause_keeps_its_deadline_across_sigkill() {
    let relay = loopback_relay();
    let file = "application: shop
targets:
  staging:
    constraints:
      beforeDeployment:
        - pause:
            duration: 3
            unit: seconds
";
    let id = {
        let deployer = Deployer::new(&relay);
        let id = deployer.start(file).await;
        deployer.until(&id, "staging pauses", |d| target(d, "staging").step.as_deref() == Some("pausing 3s")).await;
        id
    };
    // The scenario: the relay dies in the middle of the pause.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let relay = relay.kill_and_restart();
    let restarted = relay.started_at();
    let deployer = Deployer::new(&relay);
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Succeeded);
    // The relay's own record: the pause ends 3 s after it began, not 3 s
    // after the restart.
    let (created, finished) = (api_time_of(&done.created_at), api_time_of(done.finished_at.as_deref().unwrap()));
    println!("finished {:?} after the start", borealis_tests::between(created, finished));
    assert!(borealis_tests::between(created, finished) >= Duration::from_secs(3), "{done:#?}");
    assert!(restarted < finished, "the restart came during the pause: {done:#?}");
    let after_restart = borealis_tests::between(restarted, finished);
    assert!(after_restart < Duration::from_secs(3), "finished {after_restart:?} after the restart: {done:#?}");
}
