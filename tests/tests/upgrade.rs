//! Upgrading from the release before teams (issue 28): a data directory on
//! SQLite and a PostgreSQL database that release filled (made by
//! `tests/fixtures/upgrade/make.sh` with that release's binaries) start
//! under today's relay, and everything in them lands in team `default`,
//! usable with the admin token: the agent connects with its old
//! credential, the old secret still decrypts and fills a call, the old
//! callback client decides a run, and the deployment that waited for its
//! approval is approved and finishes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use borealis_api::{DeploymentState, RunState};
use borealis_tests::postgres::{Schema, server_url};
use borealis_tests::process::OutputText;
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, TempDir};
use serde_json::Value;

fn fixture(part: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/upgrade").join(part)
}

/// A copy of the fixture's data directory: the relay writes to it.
fn data_dir(backend: &str) -> TempDir {
    let copy = TempDir::new("upgrade");
    for entry in std::fs::read_dir(fixture(&format!("{backend}/data"))).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    copy
}

fn credentials(backend: &str, which: &str) -> (String, String) {
    let text = std::fs::read_to_string(fixture(&format!("{backend}/{which}.json"))).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    (value["clientId"].as_str().unwrap().to_owned(), value["clientSecret"].as_str().unwrap().to_owned())
}

async fn json(relay: &RelayProcess, args: &[&str]) -> Value {
    let out = relay.cli().args(["--json"]).args(args).run_async().await;
    assert!(out.status.success(), "{args:?}: {}", out.stderr_text());
    serde_json::from_str(&out.stdout_text()).unwrap()
}

async fn everything_lands_in_team_default(relay: RelayProcess, backend: &str) {
    let teams = json(&relay, &["teams", "list"]).await;
    let names: Vec<&str> = teams["teams"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default"]);
    let agents = json(&relay, &["agents", "list"]).await;
    assert_eq!(agents["agents"][0]["agentId"], "rna");
    assert_eq!(agents["agents"][0]["team"], "default");
    let secrets = json(&relay, &["secrets", "list"]).await;
    assert_eq!(secrets["secrets"][0]["name"], "audit-token");
    let providers = json(&relay, &["providers", "list"]).await;
    assert_eq!(
        (&providers["providers"][0]["name"], &providers["providers"][0]["team"]),
        (&"prom".into(), &"default".into())
    );
    let runs = json(&relay, &["runs", "list"]).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs["runs"][0]["team"], "default");
    let deployments = json(&relay, &["deployments", "list"]).await;
    let old = &deployments["deployments"][0];
    assert_eq!((&old["team"], &old["application"]), (&"default".into(), &"checkout".into()), "{deployments}");
    let id = old["id"].as_str().unwrap().to_owned();

    // The old client's credential calls back; the old agent's connects;
    // the old secret fills the header, decrypted as it was sealed.
    let (client_id, client_secret) = credentials(backend, "client");
    let (endpoint, external) = borealis_tests::external::start(&relay.http_url, &client_id, &client_secret).await;
    let (agent_id, agent_secret) = credentials(backend, "agent");
    let agent = AgentProcess::start(&relay.agents_url, &agent_id, &agent_secret, &["--allow", &endpoint.to_string()]);
    agent.wait_connected(Duration::from_secs(10)).await;
    let file = std::fs::read_to_string(fixture("app.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:9/audit", &format!("http://{endpoint}/pass"))
        .replace(
            "        value: Bearer {{secrets.audit-token}}\n",
            "        value: Bearer {{secrets.audit-token}}\n      - key: Location\n        value: '{{armory.callbackUri}}/callback'\n",
        );
    let dir = TempDir::new("upgrade-file");
    let path = dir.path().join("app.yaml");
    std::fs::write(&path, file).unwrap();
    let run = json(&relay, &["webhook", "run", "-f", path.to_str().unwrap(), "--name", "audit"]).await;
    let run = relay.wait_run(run["id"].as_str().unwrap()).await;
    assert_eq!(run.state, RunState::Succeeded, "{run:?}");
    assert_eq!(external.received()[0].headers["authorization"], "Bearer old-secret-value-1234");

    // Resumed here, it asks for its approval again (the release before may
    // have stopped before it asked).
    let deployer = borealis_tests::deployer::Deployer::new(&relay);
    let waits = |d: &borealis_api::Deployment| d.targets[0].state == borealis_api::TargetState::AwaitingApproval;
    deployer.until(&id, "the old deployment waits for its approval", waits).await;
    let out = relay.cli().args(["approve", &id, "prod"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:?}");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_from_the_release_before_teams_lands_in_team_default() {
    let options = RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() };
    let relay = RelayProcess::start_on(data_dir("sqlite"), options);
    everything_lands_in_team_default(relay, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_database_from_the_release_before_teams_lands_in_team_default() {
    let schema = Schema::new();
    let dump = std::fs::read_to_string(fixture("postgres/dump.sql")).unwrap();
    let name = schema.database_url();
    let name = name.rsplit("%3D").next().unwrap();
    let dump = dump.replace("CREATE SCHEMA upgrade_fixture;", "").replace("upgrade_fixture", name);
    let dir = TempDir::new("upgrade-dump");
    std::fs::write(dir.path().join("dump.sql"), dump).unwrap();
    let loaded = std::process::Command::new("psql")
        .args([&server_url(), "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(dir.path().join("dump.sql"))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", String::from_utf8_lossy(&loaded.stderr));
    let options = RelayOptions {
        direct_allow: vec!["127.0.0.0/8".into()],
        extra_args: vec!["--database-url".into(), schema.database_url()],
        ..Default::default()
    };
    let relay = RelayProcess::start_on(data_dir("postgres"), options);
    everything_lands_in_team_default(relay, "postgres").await;
}
