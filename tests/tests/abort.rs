//! A running deployment can be stopped: `borealis abort` (the API's
//! `POST .../abort`) cancels what it waits on, rolls back the targets that
//! were deploying through their driver, ends it `aborted`, and frees its
//! application for the next deployment at once.

use std::sync::Arc;

use borealis_api::{Deployment, DeploymentState, RunState, TargetState, WebhookRun};
use borealis_tests::deployer::{Deployer, target};
use borealis_tests::process::OutputText;
use borealis_tests::servers::{self, Recorded};
use borealis_tests::{RelayOptions, RelayProcess};

fn relay() -> RelayProcess {
    let mut options = RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() };
    options.extra_args.extend(["--retry-base-delay", "50ms", "--gate-interval", "100ms"].map(String::from));
    RelayProcess::start(options)
}

/// The paths called, with the driver's actions named.
fn story(calls: &[Recorded]) -> Vec<String> {
    calls
        .iter()
        .map(|c| match (c.path.as_str(), c.body["weight"].as_u64()) {
            ("/driver", Some(weight)) => format!("{} {weight}", c.body["action"].as_str().unwrap()),
            ("/driver", None) => c.body["action"].as_str().unwrap().to_owned(),
            (path, _) => path.to_owned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_held_by_a_closed_gate_is_aborted_rolled_back_and_its_application_freed() {
    let relay = relay();
    let deployer = Deployer::new(&relay);
    // The traffic gate lets the first increase through, then stays closed.
    let (tester, calls) =
        servers::recorder(Arc::new(|path: &str, n| if path == "/gate" && n >= 1 { 403 } else { 200 })).await;
    let file = format!(
        "application: shop
targets:
  prod:
    strategy: canary
    driver:
      webhook:
        url: http://{tester}/driver
strategies:
  canary:
    canary:
      steps:
        - setWeight:
            weight: 10
        - setWeight:
            weight: 50
analysis:
  webhooks:
    - name: traffic
      type: confirm-traffic-increase
      url: http://{tester}/gate
"
    );
    let id = deployer.start(&file).await;
    deployer
        .until(&id, "the gate holds the second increase", |_| {
            story(&calls.lock().unwrap()).iter().filter(|s| *s == "/gate").count() >= 3
        })
        .await;

    let out = relay.cli().args(["--json", "abort", &id, "--reason", "bad build"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let done: Deployment = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(done.state, DeploymentState::Aborted, "{done:#?}");
    assert_eq!(done.reason.as_deref(), Some("aborted by the bootstrap admin token: bad build"));
    let abort = done.abort.as_ref().expect("the request is shown");
    assert_eq!((abort.reason.as_str(), abort.rollback), ("bad build", true));
    let prod = target(&done, "prod");
    assert_eq!(prod.state, TargetState::RolledBack, "{prod:#?}");
    assert_eq!(prod.reason.as_deref(), Some("aborted by the bootstrap admin token: bad build"));
    assert!(done.events.iter().any(|e| e.kind == "target-aborted" && e.message.contains("rolling it back")));
    let asked_before = {
        let told = story(&calls.lock().unwrap());
        let actions: Vec<&String> = told.iter().filter(|s| *s != "/gate").collect();
        assert_eq!(actions, ["deploy", "setWeight 10", "rollback"], "the driver rolled back: {told:?}");
        told.iter().filter(|s| *s == "/gate").count()
    };

    // The application is free at once; while the next deployment runs to
    // its end, the aborted one's gate is asked no more.
    let (next, next_calls) = servers::recorder(Arc::new(|_, _| 200)).await;
    let again = deployer
        .start(&format!(
            "application: shop\ntargets:\n  prod:\n    driver:\n      webhook:\n        url: http://{next}/driver\n"
        ))
        .await;
    assert_eq!(deployer.finished(&again).await.state, DeploymentState::Succeeded);
    assert_eq!(story(&next_calls.lock().unwrap()), ["deploy", "promote"]);
    let gate_calls = story(&calls.lock().unwrap()).iter().filter(|s| *s == "/gate").count();
    assert_eq!(gate_calls, asked_before, "the gate was not asked again after the abort");

    // Asked again, the first request stands; an ended deployment is not
    // asked; nor one that does not exist.
    let out = relay.cli().args(["--json", "abort", &id, "--reason", "second thoughts"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let same: Deployment = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(same.abort.map(|a| a.reason).as_deref(), Some("bad build"));
    let out = relay.cli().args(["abort", &again]).run_async().await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr_text());
    assert!(
        out.stderr_text().contains(&format!("deployment {again} already ended succeeded")),
        "{}",
        out.stderr_text()
    );
    let out = relay.cli().args(["abort", "no-such-deployment"]).run_async().await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr_text().contains("no deployment \"no-such-deployment\""), "{}", out.stderr_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_in_flight_is_cancelled_and_nothing_deployed_is_rolled_back() {
    let relay = relay();
    let deployer = Deployer::new(&relay);
    // The tests' endpoint takes the call and never calls back.
    let (system, calls) = servers::recorder(Arc::new(|_, _| 200)).await;
    let file = format!(
        "application: shop
targets:
  staging:
    driver:
      webhook:
        url: http://{system}/driver
    constraints:
      beforeDeployment:
        - runWebhook:
            name: tests
  prod:
    driver:
      webhook:
        url: http://{system}/driver
    constraints:
      dependsOn: [staging]
webhooks:
  - name: tests
    method: POST
    uriTemplate: http://{system}/tests
    networkMode: direct
"
    );
    let id = deployer.start(&file).await;
    let running = deployer
        .until(&id, "the tests' run waits for its callback", |d| {
            target(d, "staging").webhook_runs.iter().any(|r| r.state == RunState::AwaitingCallback)
        })
        .await;
    let run_id = target(&running, "staging").webhook_runs[0].id.clone();

    let out = relay.cli().args(["abort", &id, "--no-wait"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Aborted, "{done:#?}");
    assert_eq!(done.reason.as_deref(), Some("aborted by the bootstrap admin token: no reason given"));
    for name in ["staging", "prod"] {
        assert_eq!(target(&done, name).state, TargetState::Cancelled, "{done:#?}");
    }
    let run: WebhookRun = relay.get_as(&format!("/api/v1/webhook-runs/{run_id}")).await;
    assert_eq!(run.state, RunState::Cancelled, "{run:#?}");
    assert!(run.reason.as_deref().unwrap_or_default().contains("aborted"), "{run:#?}");
    let told = story(&calls.lock().unwrap());
    assert_eq!(told, ["/tests"], "nothing was deployed, so nothing is rolled back: {told:?}");
}
