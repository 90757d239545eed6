//! The `webhook` rollout driver as a deployer meets it: the example
//! receiver in `examples/deployer/` run as its README says, verifying each
//! action's signature and running a command with the action in its
//! environment; and a driver's own headers and body template.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use borealis_tests::deployer::{Deployer, target};
use borealis_tests::process::OutputText;
use borealis_tests::receiver::Receiver;
use borealis_tests::{RelayOptions, RelayProcess, TempDir};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/deployer/receiver.py");

fn relay() -> RelayProcess {
    RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() })
}

async fn store_signing_secret(relay: &RelayProcess, name: &str, value: &str) {
    let out = relay.cli().args(["secrets", "set", name, "--use", "signing"]).stdin_text(value).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
}

/// The example receiver, stopped when dropped.
struct Example {
    child: Child,
    port: u16,
}

impl Example {
    fn start(secret: &str, command: &str, log: &std::path::Path) -> Self {
        let mut child = Command::new("python3")
            .args([EXAMPLE, "--listen", "127.0.0.1:0", "--run", command])
            .env("DEPLOYER_SECRET", secret)
            .env("ACTIONS_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the example receiver");
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the example did not start: {line:?}"));
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn deployment_file(url: &str) -> String {
    format!(
        "application: shop
artifacts:
  web: registry.example/shop:1.0
targets:
  prod:
    namespace: shop-prod
    strategy: rolling
    driver:
      webhook:
        url: {url}
        signing: {{secret: \"{{{{secrets.deployer-key}}}}\"}}
strategies:
  rolling:
    canary:
      steps:
        - setWeight: {{weight: 50}}
"
    )
}

/// Each line the command wrote: action, target, weight, artifact, context.
fn logged(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_deployer_runs_its_command_for_each_signed_action_and_a_failing_command_rolls_back() {
    let relay = relay();
    let key = format!("whsec_{}", STANDARD.encode(b"the deployer's own signing key!!"));
    store_signing_secret(&relay, "deployer-key", &key).await;
    let dir = TempDir::new("example-deployer");
    let log = dir.path().join("actions.log");
    // Fails the 50 % step of version 2, as a deployer that cannot roll it out would.
    let command = r#"echo "$BOREALIS_ACTION $BOREALIS_TARGET/$BOREALIS_NAMESPACE w=$BOREALIS_WEIGHT $BOREALIS_ARTIFACT_WEB $BOREALIS_CONTEXT_TICKET" >> "$ACTIONS_LOG"; [ "$BOREALIS_WEIGHT$BOREALIS_ARTIFACT_WEB" != "50registry.example/shop:2.0" ]"#;
    let example = Example::start(&key, command, &log);
    let deployer = Deployer::new(&relay);
    let path = deployer.file("deploy.yaml", &deployment_file(&example.url()));
    let path = path.to_str().unwrap();

    let out = relay
        .cli()
        .args([
            "deploy",
            "-f",
            path,
            "--wait",
            "--artifact",
            "web=registry.example/shop:1.1",
            "--context",
            "ticket=CHG-7",
        ])
        .run_async()
        .await;
    assert!(out.status.success(), "{}\n{}", out.stdout_text(), out.stderr_text());
    assert_eq!(
        logged(&log),
        [
            "deploy prod/shop-prod w= registry.example/shop:1.1 CHG-7",
            "setWeight prod/shop-prod w=50 registry.example/shop:1.1 CHG-7",
            "promote prod/shop-prod w= registry.example/shop:1.1 CHG-7",
        ]
    );

    // The command fails: the driver's action fails, and the target is rolled back.
    std::fs::remove_file(&log).unwrap();
    let out = relay
        .cli()
        .args(["deploy", "-f", path, "--wait", "--artifact", "web=registry.example/shop:2.0"])
        .run_async()
        .await;
    assert_eq!(out.status.code(), Some(1), "{}\n{}", out.stdout_text(), out.stderr_text());
    let lines = logged(&log);
    assert_eq!(lines.first().map(String::as_str), Some("deploy prod/shop-prod w= registry.example/shop:2.0 "));
    assert!(lines.iter().any(|l| l.starts_with("setWeight prod/shop-prod w=50")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("rollback prod/shop-prod")), "{lines:?}");
    let id = relay.cli().args(["deployments", "list"]).run_async().await.stdout_text();
    assert!(id.contains("failed"), "{id}");

    // A call not signed with the key runs nothing.
    std::fs::remove_file(&log).unwrap();
    let forged = reqwest::Client::new()
        .post(example.url())
        .header("webhook-id", "forged")
        .header("webhook-timestamp", "1700000000")
        .header("webhook-signature", "v1,AAAA")
        .body(r#"{"action":"deploy","target":"prod"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert!(logged(&log).is_empty(), "a forged action ran the command");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drivers_own_headers_and_body_template_are_rendered_per_action_and_signed_as_sent() {
    let relay = relay();
    let key = format!("whsec_{}", STANDARD.encode(b"the deployer's own signing key!!"));
    store_signing_secret(&relay, "deployer-key", &key).await;
    let out = relay.cli().args(["secrets", "set", "deploy-token"]).stdin_text("tok-Driver-41").run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let receiver = Receiver::start(&[&key]);
    let deployer = Deployer::new(&relay);
    let file = format!(
        "application: shop
targets:
  prod:
    strategy: rolling
    driver:
      webhook:
        url: {url}
        signing: {{secret: \"{{{{secrets.deployer-key}}}}\"}}
        headers:
          - {{key: Authorization, value: 'Bearer {{{{secrets.deploy-token}}}}'}}
          - {{key: X-Ticket, value: '{{{{context.ticket}}}}'}}
        bodyTemplate:
          inline: >-
            {{\"event\": \"{{{{armory.action}}}}\", \"service\": \"{{{{armory.applicationName}}}}\",
            \"image\": \"{{{{artifacts.web}}}}\", \"percent\": \"{{{{armory.weight}}}}\"}}
strategies:
  rolling:
    canary:
      steps:
        - setWeight: {{weight: 25}}
",
        url = receiver.url("/deploy"),
    );
    let path = deployer.file("templated.yaml", &file);
    let path = path.to_str().unwrap();
    let args = ["--artifact", "web=registry.example/shop:3.1", "--context", "ticket=CHG-9"];

    // The dry run shows the request as it would be sent, the token masked.
    let dry = relay.cli().args(["--output", "json", "deploy", "-f", path, "--dry-run"]).args(args).run_async().await;
    assert!(dry.status.success(), "{}\n{}", dry.stdout_text(), dry.stderr_text());
    let plan: borealis_api::Plan = serde_json::from_str(&dry.stdout_text()).unwrap();
    let driver = plan.calls().find(|c| c.kind == borealis_api::CallKind::Driver).expect("the driver's call");
    let request = driver.request.as_ref().unwrap();
    assert!(request.headers.contains(&("Authorization".into(), "Bearer ********".into())), "{request:?}");
    assert!(request.body.as_deref().unwrap().contains(r#""image": "registry.example/shop:3.1""#), "{request:?}");
    assert!(!dry.stdout_text().contains("tok-Driver-41"));
    assert!(receiver.records().await.is_empty(), "the dry run sent nothing");

    let out = relay.cli().args(["--json", "deploy", "-f", path, "--wait"]).args(args).run_async().await;
    assert!(out.status.success(), "{}\n{}", out.stdout_text(), out.stderr_text());
    let done: borealis_api::Deployment = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(target(&done, "prod").state, borealis_api::TargetState::Deployed);

    let calls = receiver.records().await;
    let bodies: Vec<serde_json::Value> = calls.iter().map(|c| serde_json::from_slice(&c.body).unwrap()).collect();
    let expected = |event: &str, percent: &str| serde_json::json!({"event": event, "service": "shop", "image": "registry.example/shop:3.1", "percent": percent});
    assert_eq!(bodies, [expected("deploy", ""), expected("setWeight", "25"), expected("promote", "")]);
    for call in &calls {
        assert_eq!(call.header("authorization"), Some("Bearer tok-Driver-41"));
        assert_eq!(call.header("x-ticket"), Some("CHG-9"));
        assert_eq!(call.header("content-type"), Some("application/json"));
        assert_eq!(call.verdicts[&key], Ok(()), "signed over the body as sent: {call:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_driver_template_naming_what_does_not_exist_is_refused_before_anything_runs() {
    let relay = relay();
    let deployer = Deployer::new(&relay);
    let path = deployer.file(
        "bad.yaml",
        "application: shop
targets:
  prod:
    driver:
      webhook:
        url: http://127.0.0.1:9/
        bodyTemplate: {inline: '{{armory.nothing}} {{artefacts.web}}'}
",
    );
    let out = relay.cli().args(["deploy", "-f", path.to_str().unwrap()]).run_async().await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr_text());
    let said = out.stderr_text();
    assert!(said.contains("targets.prod.driver.webhook.bodyTemplate.inline"), "{said}");
    assert!(said.contains("action, weight"), "the driver's own keys are offered: {said}");
}
