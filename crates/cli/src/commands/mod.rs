//! One module per group of subcommands: each builds the request from its
//! arguments, calls the relay, and hands the reply to `render`.

pub mod agents;
pub mod clients;
pub mod deployments;
pub mod identities;
pub mod login;
pub mod providers;
pub mod proxy;
pub mod runs;
pub mod secrets;
pub mod validate;

use std::collections::BTreeMap;

use crate::args::FileArgs;
use crate::client::{Failure, Relay};
use crate::render;

/// The text of `-f FILE`.
fn read_file(args: &FileArgs) -> Result<String, Failure> {
    std::fs::read_to_string(&args.file).map_err(|e| Failure::bad_input(format!("{}: {e}", args.file.display())))
}

/// `--context KEY=VALUE` pairs as a map.
fn context_map(pairs: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    pairs_map("--context", pairs)
}

/// `FLAG KEY=VALUE` pairs as a map.
fn pairs_map(flag: &str, pairs: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut map = BTreeMap::new();
    for pair in pairs {
        let (key, value) =
            pair.split_once('=').ok_or_else(|| Failure::bad_input(format!("{flag} {pair:?}: expected KEY=VALUE")))?;
        map.insert(key.to_owned(), value.to_owned());
    }
    Ok(map)
}

/// A reply that starts something: its id and the relay's warnings.
trait Started: serde::Serialize + serde::de::DeserializeOwned {
    fn id(&self) -> &str;
    fn warnings(&self) -> &[String];
}

impl Started for borealis_api::WebhookRun {
    fn id(&self) -> &str {
        &self.id
    }
    fn warnings(&self) -> &[String] {
        self.warnings.as_deref().unwrap_or_default()
    }
}

impl Started for borealis_api::Deployment {
    fn id(&self) -> &str {
        &self.id
    }
    fn warnings(&self) -> &[String] {
        self.warnings.as_deref().unwrap_or_default()
    }
}

/// A dry run at `path`: prints the plan, and fails (exit 1) when a finding
/// is an error.
async fn dry_run(relay: &Relay, json: bool, path: &str, body: &impl serde::Serialize) -> Result<(), Failure> {
    let plan: borealis_api::Plan = relay.post(path, body).await?;
    if json {
        render::json(&plan)
    } else {
        render::plan(&plan)
    }
    let errors = plan.calls().flat_map(|c| &c.findings).filter(|f| f.severity == borealis_api::Severity::Error).count();
    match errors {
        0 => Ok(()),
        n => Err(Failure {
            code: 1,
            message: format!("the dry run found {n} problem(s) that would stop it; nothing was started"),
        }),
    }
}

/// POSTs something to start, shows the relay's warnings, and says it
/// started. Returns its id when the caller is to wait for it.
async fn start<T: Started>(
    relay: &Relay,
    json: bool,
    path: &str,
    body: &impl serde::Serialize,
    what: &str,
    wait: bool,
) -> Result<Option<String>, Failure> {
    let created: T = relay.post(path, body).await?;
    for warning in created.warnings() {
        eprintln!("warning: {warning}");
    }
    let id = created.id().to_owned();
    if wait {
        eprintln!("{what} {id} started; waiting for it to finish");
        return Ok(Some(id));
    }
    if json {
        render::json(&created);
    } else {
        say!("{what} {id} started");
    }
    Ok(None)
}
