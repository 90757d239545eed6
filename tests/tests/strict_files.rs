//! A misspelled key must not silently drop what it meant: unknown fields are
//! errors with the known key they look like and their `line:column`, unless
//! the caller relaxes them to warnings; `borealis validate` checks a file
//! without a relay.

use borealis_api::DeploymentList;
use borealis_tests::process::{OutputText, cli};
use borealis_tests::{RelayOptions, RelayProcess, TempDir};

/// `prod` waits for staging and its tests; `contraints` drops both.
const MISSPELLED_GATE: &str = "\
application: shop
targets:
  staging: {}
  prod:
    contraints:
      dependsOn: [staging]
      beforeDeployment:
        - pause:
            untilApproved: true
";

const THE_REFUSAL: &str = "targets.prod.contraints: unknown field (did you mean constraints?) at 5:5";

fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misspelled_key_is_refused_naming_the_key_it_looks_like_unless_relaxed_to_a_warning() {
    let relay = RelayProcess::start(RelayOptions::default());
    let dir = TempDir::new("strict-deploy");
    let file = write(&dir, "deploy.yaml", MISSPELLED_GATE);

    let refused = relay.cli().args(["deploy", "-f", &file]).run_async().await;
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr_text());
    assert!(refused.stderr_text().contains(THE_REFUSAL), "{}", refused.stderr_text());
    let list: DeploymentList = relay.get_as("/api/v1/deployments").await;
    assert!(list.deployments.is_empty(), "nothing was started: {list:?}");

    let relaxed = relay.cli().args(["deploy", "-f", &file, "--allow-unknown-fields"]).run_async().await;
    assert_eq!(relaxed.status.code(), Some(0), "{}", relaxed.stderr_text());
    assert!(
        relaxed
            .stderr_text()
            .contains("warning: targets.prod.contraints: unknown field, ignored (did you mean constraints?) at 5:5"),
        "{}",
        relaxed.stderr_text()
    );
    let list: DeploymentList = relay.get_as("/api/v1/deployments").await;
    assert_eq!(list.deployments.len(), 1, "the relaxed file started");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misspelled_agent_identifier_shows_the_unknown_key_with_the_error_it_causes() {
    let relay = RelayProcess::start(RelayOptions::default());
    let dir = TempDir::new("strict-run");
    let file = write(
        &dir,
        "run.yaml",
        "webhooks:
  - name: scan
    method: POST
    uriTemplate: http://scanner.internal/scan
    networkMode: remoteNetworkAgent
    agentIdentifer: scanners
",
    );
    let hint = "webhooks[0].agentIdentifer: unknown field (did you mean agentIdentifier?) at 6:5";
    let refused = relay.cli().args(["webhook", "run", "-f", &file, "--name", "scan"]).run_async().await;
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr_text());
    assert!(refused.stderr_text().contains(hint), "{}", refused.stderr_text());

    // Relaxed, the key is ignored; the error it causes comes with it.
    let relaxed =
        relay.cli().args(["webhook", "run", "-f", &file, "--name", "scan", "--allow-unknown-fields"]).run_async().await;
    assert_eq!(relaxed.status.code(), Some(2), "{}", relaxed.stderr_text());
    let said = relaxed.stderr_text();
    assert!(said.contains("uses remoteNetworkAgent with no agentIdentifier"), "{said}");
    assert!(
        said.contains("webhooks[0].agentIdentifer: unknown field, ignored (did you mean agentIdentifier?) at 6:5"),
        "{said}"
    );
}

#[test]
fn validate_checks_a_file_without_a_relay() {
    let dir = TempDir::new("validate");
    let bad = write(&dir, "bad.yaml", MISSPELLED_GATE);
    // No relay runs, and none is named: the check is local.
    let out = cli().args(["validate", "-f", &bad]).run();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr_text());
    assert!(
        out.stderr_text()
            .contains(&format!("{bad}:5:5: error: targets.prod.contraints: unknown field (did you mean constraints?)")),
        "{}",
        out.stderr_text()
    );
    assert!(out.stderr_text().contains("1 error"), "{}", out.stderr_text());

    let relaxed = cli().args(["validate", "-f", &bad, "--allow-unknown-fields"]).run();
    assert_eq!(relaxed.status.code(), Some(0), "{}", relaxed.stderr_text());
    assert!(
        relaxed.stderr_text().contains(&format!("{bad}:5:5: warning: targets.prod.contraints")),
        "{}",
        relaxed.stderr_text()
    );
    assert_eq!(relaxed.stdout_text().trim(), format!("{bad}: valid"));

    // Every error of the file at once.
    let several = write(
        &dir,
        "several.yaml",
        "application: a\ntargets:\n  x:\n    stratgy: fast\nwebhooks:\n  - {name: a, method: POST, uriTemplate: 'https://x/', networkMode: direct, retryCount: many}\n",
    );
    let out = cli().args(["validate", "-f", &several]).run();
    let said = out.stderr_text();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("{several}:4:5: error: targets.x.stratgy: unknown field (did you mean strategy?)")),
        "{said}"
    );
    assert!(said.contains(&format!("{several}:6:")) && said.contains("webhooks[0].retryCount"), "{said}");
    assert!(said.contains("2 errors"), "{said}");

    // And what only a deployment needs.
    let no_application = write(&dir, "no-application.yaml", "targets:\n  x: {}\n");
    let out = cli().args(["validate", "-f", &no_application]).run();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr_text()
            .contains(&format!("{no_application}: error: application: a deployment needs an application name")),
        "{}",
        out.stderr_text()
    );

    // A file only for `webhook run` needs no application.
    let webhooks = write(
        &dir,
        "webhooks.yaml",
        "webhooks:\n  - {name: a, method: POST, uriTemplate: 'https://x/', networkMode: direct}\n",
    );
    assert_eq!(cli().args(["validate", "-f", &webhooks]).run().status.code(), Some(1));
    let out = cli().args(["validate", "-f", &webhooks, "--webhooks-only"]).run();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_text());
}
