//! The CLI as people and CI jobs meet it: `deploy --wait` tells of each
//! change as it happens (as JSON lines with `--output json`), a closed pipe
//! ends it quietly, and shells complete its commands.

use std::io::Read;
use std::process::{Command, Stdio};

use std::time::Duration;

use borealis_tests::deployer::Deployer;
use borealis_tests::process::{OutputText, binary, cli};
use borealis_tests::{RelayOptions, RelayProcess};
use tokio::io::AsyncBufReadExt;

/// Only keeps a broken test from hanging.
const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn deploy_wait_with_json_output_prints_each_change_in_order_then_the_end() {
    let relay = RelayProcess::start(RelayOptions::default());
    let deployer = Deployer::new(&relay);
    let file = deployer.file(
        "wait.yaml",
        "application: shop
targets:
  staging:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
",
    );
    let mut following = tokio::process::Command::new(binary("borealis"))
        .args(["--output", "json", "deploy", "-f", file.to_str().unwrap(), "--wait"])
        .env("BOREALIS_RELAY", &relay.http_url)
        .env("BOREALIS_ADMIN_TOKEN", relay.admin_token())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(following.stdout.take().unwrap()).lines();
    let mut lines: Vec<serde_json::Value> = Vec::new();
    // Read as it prints, until it tells of the wait for approval.
    let waiting = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            let value: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
            let waits = value["state"] == "awaiting_approval";
            lines.push(value);
            if waits {
                return;
            }
        }
        panic!("the follower ended before the wait: {lines:?}");
    })
    .await;
    assert!(waiting.is_ok(), "no line told of the wait for approval: {lines:?}");
    let id = lines[0]["deployment"].as_str().unwrap().to_owned();
    let out = deployer.approve(&id, "staging").await;
    assert!(out.status.success(), "{}", out.stderr_text());
    while let Some(line) = stdout.next_line().await.unwrap() {
        lines.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}")));
    }
    assert!(following.wait().await.unwrap().success());
    let states: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "target" && l["target"] == "staging")
        .map(|l| l["state"].as_str().unwrap())
        .collect();
    let at = |state: &str| states.iter().position(|s| *s == state).unwrap_or_else(|| panic!("no {state}: {states:?}"));
    assert!(at("awaiting_approval") < at("deployed"), "{states:?}");
    assert!(lines.iter().all(|l| l["deployment"] == id.as_str()), "{lines:?}");
    let end = lines.last().unwrap();
    assert_eq!((end["type"].as_str(), end["state"].as_str()), (Some("finished"), Some("succeeded")), "{end}");
}

/// `borealis ... | head` once `head` has gone: exit 0, no panic.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_pipe_ends_the_cli_quietly() {
    let relay = RelayProcess::start(RelayOptions::default());
    let deployer = Deployer::new(&relay);
    deployer.start("application: shop\ntargets:\n  staging: {}\n").await;
    for args in [&["deployments", "list"][..], &["--json", "deployments", "list"], &["completions", "bash"]] {
        let mut child = Command::new(binary("borealis"))
            .args(args)
            .env("BOREALIS_RELAY", &relay.http_url)
            .env("BOREALIS_ADMIN_TOKEN", relay.admin_token())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes before anything is written.
        drop(child.stdout.take());
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        assert_eq!(status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn completions_cover_every_command_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = cli().args(["completions", shell]).run();
        assert!(out.status.success(), "{shell}: {}", out.stderr_text());
        let script = out.stdout_text();
        for command in ["deploy", "abort", "validate", "approve", "agents"] {
            assert!(script.contains(command), "{shell} completes {command}");
        }
    }
    let out = cli().args(["completions", "tcsh"]).run();
    assert_eq!(out.status.code(), Some(2), "an unknown shell is refused");
    assert!(out.stderr_text().contains("invalid value 'tcsh'"), "{}", out.stderr_text());
}

/// A deployment or run is named by the start of its id, as long as that
/// names one of the newest; an ambiguous or unknown start says so.
#[tokio::test(flavor = "multi_thread")]
async fn ids_may_be_given_by_a_unique_prefix() {
    let relay = RelayProcess::start(RelayOptions::default());
    let deployer = Deployer::new(&relay);
    // Seventeen deployments: two of them share a first hex digit.
    let mut ids = Vec::new();
    for n in 0..17 {
        ids.push(deployer.start(&format!("application: app{n}\ntargets:\n  prod: {{}}\n")).await);
    }
    let unique = ids
        .iter()
        .map(|id| &id[..8])
        .find(|start| ids.iter().filter(|other| other.starts_with(*start)).count() == 1)
        .unwrap()
        .to_owned();
    let whole = ids.iter().find(|id| id.starts_with(&unique)).unwrap().clone();
    let out = relay.cli().args(["--json", "deployments", "show", &unique]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let shown: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(shown["id"], whole.as_str());

    let shared = (0..16u32)
        .map(|d| char::from_digit(d, 16).unwrap().to_string())
        .find(|c| ids.iter().filter(|id| id.starts_with(c.as_str())).count() >= 2)
        .unwrap();
    let out = relay.cli().args(["deployments", "show", &shared]).run_async().await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr_text());
    assert!(
        out.stderr_text().contains(&format!("\"{shared}\" starts")) && out.stderr_text().contains("give more of it"),
        "{}",
        out.stderr_text()
    );
    let out = relay.cli().args(["abort", "0000000"]).run_async().await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr_text());
    assert!(out.stderr_text().contains("no deployment id starts with \"0000000\""), "{}", out.stderr_text());
    // What cannot be the start of an id goes to the relay as it is.
    let out = relay.cli().args(["abort", "no-such-deployment"]).run_async().await;
    assert!(out.stderr_text().contains("no deployment \"no-such-deployment\""), "{}", out.stderr_text());
}

/// A run through an agent that is registered but not connected starts, and
/// says at once why its calls will fail until the agent connects.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_through_a_disconnected_agent_warns_at_once() {
    let relay = RelayProcess::start(RelayOptions::default());
    relay.create_agent("idle");
    let deployer = Deployer::new(&relay);
    let file = deployer.file(
        "agent.yaml",
        "webhooks:\n  - {name: scan, method: POST, uriTemplate: 'http://scanner.internal/', networkMode: remoteNetworkAgent, agentIdentifier: idle}\n",
    );
    let out = relay.cli().args(["webhook", "run", "-f", file.to_str().unwrap(), "--name", "scan"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(
        out.stderr_text().contains("warning: agent \"idle\" is registered but no instance of it is connected"),
        "{}",
        out.stderr_text()
    );
    // Connected, no warning.
    let (client_id, secret) = relay.create_agent("live");
    let agent = borealis_tests::AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow-any"]);
    agent.wait_connected(Duration::from_secs(10)).await;
    let file = deployer.file(
        "live.yaml",
        "webhooks:\n  - {name: scan, method: POST, uriTemplate: 'http://scanner.internal/', networkMode: remoteNetworkAgent, agentIdentifier: live}\n",
    );
    let out = relay.cli().args(["webhook", "run", "-f", file.to_str().unwrap(), "--name", "scan"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(!out.stderr_text().contains("warning"), "{}", out.stderr_text());

    // A deployment warns the same of each agent it names that has no
    // instance connected (here through the target's account), and only those.
    let file = deployer.file(
        "deploy.yaml",
        "application: shop
targets:
  staging:
    account: idle
    constraints:
      beforeDeployment:
        - runWebhook: {name: scan}
        - runWebhook: {name: live-scan}
webhooks:
  - {name: scan, method: POST, uriTemplate: 'http://scanner.internal/', networkMode: remoteNetworkAgent}
  - {name: live-scan, method: POST, uriTemplate: 'http://scanner.internal/', networkMode: remoteNetworkAgent, agentIdentifier: live}
",
    );
    let out = relay.cli().args(["deploy", "-f", file.to_str().unwrap()]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let said = out.stderr_text();
    assert!(said.contains("warning: agent \"idle\" is registered but no instance of it is connected"), "{said}");
    assert!(!said.contains("\"live\""), "{said}");
}

/// `deployments list` and `runs list` filter and page as the API does; a
/// bad filter is refused naming it.
#[tokio::test(flavor = "multi_thread")]
async fn lists_filter_by_state_and_name_and_page_with_a_cursor() {
    let relay = RelayProcess::start(RelayOptions::default());
    let deployer = Deployer::new(&relay);
    let mut ids = Vec::new();
    for app in ["shop", "api", "shop"] {
        let file = deployer.file(&format!("{app}.yaml"), &format!("application: {app}\ntargets:\n  prod: {{}}\n"));
        let out = relay.cli().args(["--json", "deploy", "-f", file.to_str().unwrap(), "--wait"]).run_async().await;
        assert!(out.status.success(), "{}", out.stderr_text());
        ids.push(
            serde_json::from_str::<serde_json::Value>(&out.stdout_text()).unwrap()["id"].as_str().unwrap().to_owned(),
        );
    }
    let list = |args: &[&str]| {
        let mut cli = relay.cli().args(["--json", "deployments", "list"]);
        cli = cli.args(args);
        cli.run_async()
    };
    let first = list(&["--limit", "2"]).await;
    let page: borealis_api::DeploymentList = serde_json::from_str(&first.stdout_text()).unwrap();
    assert_eq!(page.deployments.iter().map(|d| &d.id).collect::<Vec<_>>(), [&ids[2], &ids[1]]);
    let next = page.next.expect("a full page has a next cursor");
    assert!(first.stderr_text().contains(&format!("--after {next}")), "{}", first.stderr_text());
    let rest: borealis_api::DeploymentList =
        serde_json::from_str(&list(&["--limit", "2", "--after", &next]).await.stdout_text()).unwrap();
    assert_eq!(rest.deployments.iter().map(|d| &d.id).collect::<Vec<_>>(), [&ids[0]]);
    assert!(rest.next.is_none(), "the last page says so");
    let shop: borealis_api::DeploymentList =
        serde_json::from_str(&list(&["--application", "shop", "--state", "succeeded"]).await.stdout_text()).unwrap();
    assert_eq!(shop.deployments.iter().map(|d| &d.id).collect::<Vec<_>>(), [&ids[2], &ids[0]]);

    for (args, says) in [
        (&["--state", "done"][..], "unknown state \"done\""),
        (&["--limit", "0"][..], "limit must be 1 to 500"),
        (&["--after", "not-a-cursor"][..], "after is not a cursor"),
    ] {
        let out = list(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr_text());
        assert!(out.stderr_text().contains(says), "{args:?}: {}", out.stderr_text());
    }
    let runs = relay.cli().args(["runs", "list", "--state", "succeeded", "--webhook", "none"]).run_async().await;
    assert!(runs.status.success(), "{}", runs.stderr_text());
}
