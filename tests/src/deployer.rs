//! Deployments driven the way an operator drives them: `borealis deploy`,
//! `deployments show`, `approve`; replies read as the API's own types.

use std::cell::Cell;
use std::time::Duration;

use borealis_api::{Deployment, Target};

use crate::process::OutputText;
use crate::{RelayProcess, TempDir, eventually};

/// How long a test waits for a deployment to reach a state.
const PATIENCE: Duration = Duration::from_secs(60);

pub struct Deployer<'a> {
    relay: &'a RelayProcess,
    dir: TempDir,
    files: Cell<usize>,
}

impl<'a> Deployer<'a> {
    pub fn new(relay: &'a RelayProcess) -> Self {
        Self { relay, dir: TempDir::new("deploy"), files: Cell::new(0) }
    }

    /// Writes `text` to a file `name` of this deployer's own directory.
    pub fn file(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts a deployment of `file` with `borealis deploy`; returns its id.
    pub async fn start(&self, file: &str) -> String {
        self.files.set(self.files.get() + 1);
        let path = self.file(&format!("d{}.yaml", self.files.get()), file);
        let out = self.relay.cli().args(["--json", "deploy", "-f", path.to_str().unwrap()]).run_async().await;
        assert!(out.status.success(), "deploy: {}", out.stderr_text());
        let created: Deployment = serde_json::from_str(&out.stdout_text()).expect("the API's Deployment");
        created.id
    }

    /// The deployment as `borealis --json deployments show` prints it.
    pub async fn show(&self, id: &str) -> Deployment {
        let out = self.relay.cli().args(["--json", "deployments", "show", id]).run_async().await;
        assert!(out.status.success(), "{}", out.stderr_text());
        serde_json::from_str(&out.stdout_text()).expect("the API's Deployment")
    }

    /// The deployment once `check` holds for it (`what` says what is awaited).
    pub async fn until(&self, id: &str, what: &str, check: impl Fn(&Deployment) -> bool) -> Deployment {
        eventually(what, PATIENCE, || async {
            let d = self.show(id).await;
            check(&d).then_some(d)
        })
        .await
    }

    pub async fn finished(&self, id: &str) -> Deployment {
        self.until(id, "the deployment finished", |d| d.finished_at.is_some()).await
    }

    /// `borealis approve ID TARGET`, as it ended.
    pub async fn approve(&self, id: &str, target: &str) -> std::process::Output {
        self.relay.cli().args(["approve", id, target]).run_async().await
    }

    /// `borealis VERB ID TARGET` (`approve`, `reject`, `rollback`, `continue`), which must succeed.
    pub async fn decide(&self, verb: &str, id: &str, target: &str) {
        let out = self.relay.cli().args([verb, id, target]).run_async().await;
        assert!(out.status.success(), "{verb}: {}", out.stderr_text());
    }
}

/// The deployment's target `name`.
pub fn target<'d>(d: &'d Deployment, name: &str) -> &'d Target {
    d.targets.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no target {name}: {d:#?}"))
}

/// `kind: message` of each event of `target`, in order.
pub fn kinds(d: &Deployment, target: &str) -> Vec<String> {
    d.events
        .iter()
        .filter(|e| e.target.as_deref() == Some(target))
        .map(|e| format!("{}: {}", e.kind, e.message))
        .collect()
}
