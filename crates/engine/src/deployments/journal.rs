//! A deployment's journal: what each step recorded, under a stable key, so
//! that a resumed deployment does not do it again. This module alone knows
//! how an entry is spelled as a key and a value in the store; the
//! orchestrator, the API and the console read and write typed entries.
//!
//! Keys are paths under the target's name. A step's key names the list and
//! its place in it: `prod/beforeDeployment/0`, `prod/canary/2`.

use std::collections::BTreeMap;

use borealis_api::JudgmentRun;

/// How far a rollout action got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionProgress {
    /// Sent (or about to be); not known to have ended.
    Started,
    Done,
}

/// How a step (a webhook, a pause, an approval, an analysis) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    Passed,
    Failed(String),
}

/// A time a step set for itself on its first run, kept across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepTime {
    /// When an analysis began: its judgment runs fall due from it.
    AnalysisStart,
    /// When a pause ends.
    PauseUntil,
    /// When an approval expires.
    ApprovalExpires,
}

impl StepTime {
    fn suffix(self) -> &'static str {
        match self {
            StepTime::AnalysisStart => "start",
            StepTime::PauseUntil => "until",
            StepTime::ApprovalExpires => "expires",
        }
    }
}

/// One record of the journal.
#[derive(Debug, Clone)]
pub enum Entry {
    /// An event (and its hooks) that is told once, even across replays.
    Told {
        event: String,
    },
    /// Why the target ended as it did.
    Reason {
        target: String,
        reason: String,
    },
    Action {
        target: String,
        action: String,
        progress: ActionProgress,
    },
    StepEnded {
        step: String,
        end: StepEnd,
    },
    /// The webhook run a step started.
    StepRun {
        step: String,
        run: String,
    },
    StepTime {
        step: String,
        time: StepTime,
        at_ms: i64,
    },
    Judgment {
        step: String,
        n: u32,
        run: Box<JudgmentRun>,
    },
    GateOpened {
        target: String,
        kind: String,
        hook: String,
        /// Where in the rollout, for a gate asked more than once: the
        /// canary step (`canary/2`) a traffic increase gate let through.
        at: Option<String>,
    },
    PostRolloutCalled {
        target: String,
        hook: String,
    },
}

impl Entry {
    /// The entry as the store keeps it: its key and its value.
    pub fn encode(&self) -> (String, String) {
        match self {
            Entry::Told { event } => (told_key(event), "done".into()),
            Entry::Reason { target, reason } => (reason_key(target), reason.clone()),
            Entry::Action { target, action, progress } => (
                action_key(target, action),
                match progress {
                    ActionProgress::Started => "started",
                    ActionProgress::Done => "done",
                }
                .into(),
            ),
            Entry::StepEnded { step, end } => (
                step.clone(),
                match end {
                    StepEnd::Passed => "ok".into(),
                    StepEnd::Failed(reason) => format!("{FAILED}{reason}"),
                },
            ),
            Entry::StepRun { step, run } => (run_key(step), run.clone()),
            Entry::StepTime { step, time, at_ms } => (time_key(step, *time), at_ms.to_string()),
            Entry::Judgment { step, n, run } => {
                (judgment_key(step, *n), serde_json::to_string(run).expect("a judgment run serializes"))
            }
            Entry::GateOpened { target, kind, hook, at } => {
                (gate_key(target, kind, at.as_deref(), hook), "open".into())
            }
            Entry::PostRolloutCalled { target, hook } => (post_rollout_key(target, hook), "done".into()),
        }
    }
}

const FAILED: &str = "failed: ";

fn told_key(event: &str) -> String {
    format!("event/{event}")
}

fn reason_key(target: &str) -> String {
    format!("{target}/reason")
}

/// The key of a rollout action (`deploy`, `canary/1`, `rollback`).
pub fn action_key(target: &str, action: &str) -> String {
    format!("{target}/action/{action}")
}

/// The key of the `index`th item of a target's `list` (`beforeDeployment`,
/// `canary`, `redirectTrafficAfter`).
pub fn step_key(target: &str, list: &str, index: usize) -> String {
    format!("{target}/{list}/{index}")
}

/// How many distinct people the manual approval at `key` needs (1 for
/// any other step).
pub fn required_approvals(file: &borealis_core::deployment::DeploymentFile, key: &str) -> u32 {
    use borealis_core::deployment::{Pause, Step};
    match step_at(file, key) {
        Some(Step::Pause { pause: Pause::UntilApproved { required_approvals, .. }, .. }) => *required_approvals,
        _ => 1,
    }
}

/// The step of `file` that [`step_key`] named `key`.
pub fn step_at<'f>(
    file: &'f borealis_core::deployment::DeploymentFile,
    key: &str,
) -> Option<&'f borealis_core::deployment::Step> {
    use borealis_core::deployment::StrategyKind;
    let mut parts = key.rsplitn(3, '/');
    let (index, list, target) = (parts.next()?.parse::<usize>().ok()?, parts.next()?, parts.next()?);
    let target = file.target(target)?;
    let strategy = target.strategy.as_deref().and_then(|s| file.strategy(s)).map(|s| &s.kind);
    let steps = match (list, strategy) {
        ("beforeDeployment", _) => &target.constraints.before_deployment,
        ("afterDeployment", _) => &target.constraints.after_deployment,
        ("canary", Some(StrategyKind::Canary { steps })) => steps,
        ("redirectTrafficAfter", Some(StrategyKind::BlueGreen { redirect_traffic_after, .. })) => {
            redirect_traffic_after
        }
        ("shutDownOldVersionAfter", Some(StrategyKind::BlueGreen { shut_down_old_version_after, .. })) => {
            shut_down_old_version_after
        }
        _ => return None,
    };
    steps.get(index)
}

fn run_key(step: &str) -> String {
    format!("{step}/run")
}

fn time_key(step: &str, time: StepTime) -> String {
    format!("{step}/{}", time.suffix())
}

fn judgment_key(step: &str, n: u32) -> String {
    format!("{step}/judgment/{n}")
}

/// The key of a gate that opened; also the id of the question it answers.
pub fn gate_key(target: &str, kind: &str, at: Option<&str>, hook: &str) -> String {
    match at {
        Some(at) => format!("{target}/gate/{kind}/{at}/{hook}"),
        None => format!("{target}/gate/{kind}/{hook}"),
    }
}

fn post_rollout_key(target: &str, hook: &str) -> String {
    format!("{target}/post-rollout/{hook}")
}

/// A deployment's journal, read from the store, in key order.
#[derive(Debug, Default, Clone)]
pub struct Journal {
    entries: BTreeMap<String, String>,
}

impl Journal {
    pub fn new(entries: impl IntoIterator<Item = (String, String)>) -> Self {
        Self { entries: entries.into_iter().collect() }
    }

    /// Takes in an entry once the store kept it.
    pub fn insert(&mut self, entry: &Entry) {
        let (key, value) = entry.encode();
        self.insert_encoded(key, value);
    }

    /// Takes in an entry the caller encoded already ([`Entry::encode`]).
    pub fn insert_encoded(&mut self, key: String, value: String) {
        self.entries.insert(key, value);
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    pub fn told(&self, event: &str) -> bool {
        self.get(&told_key(event)).is_some()
    }

    pub fn reason(&self, target: &str) -> Option<String> {
        self.get(&reason_key(target)).map(str::to_owned)
    }

    pub fn action(&self, target: &str, action: &str) -> Option<ActionProgress> {
        match self.get(&action_key(target, action))? {
            "done" => Some(ActionProgress::Done),
            _ => Some(ActionProgress::Started),
        }
    }

    pub fn step_end(&self, step: &str) -> Option<StepEnd> {
        let value = self.get(step)?;
        match value.strip_prefix(FAILED) {
            Some(reason) => Some(StepEnd::Failed(reason.to_owned())),
            None if value == "ok" => Some(StepEnd::Passed),
            None => None,
        }
    }

    pub fn step_run(&self, step: &str) -> Option<String> {
        self.get(&run_key(step)).map(str::to_owned)
    }

    pub fn step_time(&self, step: &str, time: StepTime) -> Option<i64> {
        self.get(&time_key(step, time))?.parse().ok()
    }

    pub fn judgment(&self, step: &str, n: u32) -> Option<JudgmentRun> {
        serde_json::from_str(self.get(&judgment_key(step, n))?).ok()
    }

    pub fn gate_opened(&self, target: &str, kind: &str, at: Option<&str>, hook: &str) -> bool {
        self.get(&gate_key(target, kind, at, hook)).is_some()
    }

    pub fn post_rollout_called(&self, target: &str, hook: &str) -> bool {
        self.get(&post_rollout_key(target, hook)).is_some()
    }

    /// Whether anything is recorded of the step or action under `key`: the
    /// key itself, a record below it, or an event told of it (an approval
    /// records only that it was requested until it ends).
    pub fn touched(&self, key: &str) -> bool {
        let (below, event) = (format!("{key}/"), told_key(&format!("{key}/")));
        self.entries.keys().any(|k| k == key || k.starts_with(&below) || k.starts_with(&event))
    }

    /// The ids of the webhook runs `target`'s steps started.
    pub fn runs_of<'a>(&'a self, target: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries.iter().filter(move |(key, _)| is_run_key_of(key, target)).map(|(_, run)| run.as_str())
    }

    /// The judgment runs `target`'s analysis steps recorded, by step and
    /// then in order, each naming its step.
    pub fn judgments_of(&self, target: &str) -> Vec<JudgmentRun> {
        let mut runs: Vec<(String, u32, JudgmentRun)> = self
            .entries
            .iter()
            .filter_map(|(key, value)| {
                let rest = key.strip_prefix(target)?.strip_prefix('/')?;
                let (step, n) = rest.rsplit_once("/judgment/")?;
                let mut value: JudgmentRun = serde_json::from_str(value).ok()?;
                value.step = Some(format!("{target}/{step}"));
                Some((step.to_owned(), n.parse().ok()?, value))
            })
            .collect();
        runs.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        runs.into_iter().map(|(_, _, v)| v).collect()
    }
}

/// Whether a key records a webhook run of one of `target`'s steps (step
/// keys start with the target's name).
fn is_run_key_of(key: &str, target: &str) -> bool {
    key.strip_prefix(target).is_some_and(|rest| rest.starts_with('/') && rest.ends_with("/run"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_key_names_its_step_in_the_file() {
        use borealis_core::deployment::{Pause, Step};
        let file = borealis_core::deployment::parse(
            "application: shop
targets:
  prod:
    strategy: rolling
    constraints:
      beforeDeployment:
        - pause: {duration: 5, unit: seconds}
        - pause: {untilApproved: true, requiresRoles: [admin]}
strategies:
  rolling:
    canary:
      steps:
        - setWeight: {weight: 50}
        - pause: {untilApproved: true}
",
        )
        .unwrap()
        .file;
        let approval = step_at(&file, &step_key("prod", "beforeDeployment", 1));
        assert!(
            matches!(approval, Some(Step::Pause { pause: Pause::UntilApproved { requires_roles, .. }, .. }) if requires_roles == &["admin"]),
            "{approval:?}"
        );
        assert!(matches!(step_at(&file, &step_key("prod", "canary", 1)), Some(Step::Pause { .. })));
        for missing in [
            "prod/beforeDeployment/2",
            "prod/afterDeployment/0",
            "staging/canary/0",
            "prod/redirectTrafficAfter/0",
            "x",
        ] {
            assert!(step_at(&file, missing).is_none(), "{missing}");
        }
    }

    fn journal_of(entries: &[Entry]) -> Journal {
        let mut journal = Journal::default();
        for entry in entries {
            journal.insert(entry);
        }
        journal
    }

    /// The spelling in the store is what journals written by earlier
    /// releases hold: a resumed deployment reads them as before.
    #[test]
    fn entries_keep_the_stored_spelling() {
        let cases = [
            (Entry::Told { event: "prod/started".into() }, "event/prod/started", "done"),
            (Entry::Reason { target: "prod".into(), reason: "gate closed".into() }, "prod/reason", "gate closed"),
            (
                Entry::Action { target: "prod".into(), action: "canary/1".into(), progress: ActionProgress::Started },
                "prod/action/canary/1",
                "started",
            ),
            (
                Entry::StepEnded { step: "prod/beforeDeployment/0".into(), end: StepEnd::Failed("no".into()) },
                "prod/beforeDeployment/0",
                "failed: no",
            ),
            (Entry::StepEnded { step: "prod/canary/2".into(), end: StepEnd::Passed }, "prod/canary/2", "ok"),
            (Entry::StepRun { step: "prod/canary/2".into(), run: "r1".into() }, "prod/canary/2/run", "r1"),
            (
                Entry::StepTime { step: "prod/canary/2".into(), time: StepTime::PauseUntil, at_ms: 42 },
                "prod/canary/2/until",
                "42",
            ),
            (
                Entry::GateOpened { target: "prod".into(), kind: "confirm-rollout".into(), hook: "h".into(), at: None },
                "prod/gate/confirm-rollout/h",
                "open",
            ),
            (
                Entry::GateOpened {
                    target: "prod".into(),
                    kind: "confirm-traffic-increase".into(),
                    hook: "h".into(),
                    at: Some("canary/2".into()),
                },
                "prod/gate/confirm-traffic-increase/canary/2/h",
                "open",
            ),
            (Entry::PostRolloutCalled { target: "prod".into(), hook: "h".into() }, "prod/post-rollout/h", "done"),
        ];
        for (entry, key, value) in cases {
            assert_eq!(entry.encode(), (key.to_owned(), value.to_owned()), "{entry:?}");
        }
    }

    #[test]
    fn what_is_written_reads_back() {
        let journal = journal_of(&[
            Entry::Told { event: "started".into() },
            Entry::Reason { target: "t".into(), reason: "why".into() },
            Entry::Action { target: "t".into(), action: "deploy".into(), progress: ActionProgress::Done },
            Entry::Action { target: "t".into(), action: "promote".into(), progress: ActionProgress::Started },
            Entry::StepEnded { step: "t/beforeDeployment/0".into(), end: StepEnd::Failed("failed: twice".into()) },
            Entry::StepEnded { step: "t/beforeDeployment/1".into(), end: StepEnd::Passed },
            Entry::StepRun { step: "t/beforeDeployment/1".into(), run: "run-1".into() },
            Entry::StepTime { step: "t/canary/0".into(), time: StepTime::ApprovalExpires, at_ms: 7 },
            Entry::GateOpened { target: "t".into(), kind: "k".into(), hook: "h".into(), at: None },
            Entry::GateOpened { target: "t".into(), kind: "k".into(), hook: "h".into(), at: Some("canary/0".into()) },
            Entry::PostRolloutCalled { target: "t".into(), hook: "h".into() },
        ]);
        assert!(journal.told("started") && !journal.told("other"));
        assert_eq!(journal.reason("t").as_deref(), Some("why"));
        assert_eq!(journal.action("t", "deploy"), Some(ActionProgress::Done));
        assert_eq!(journal.action("t", "promote"), Some(ActionProgress::Started));
        assert_eq!(journal.action("t", "rollback"), None);
        assert_eq!(journal.step_end("t/beforeDeployment/0"), Some(StepEnd::Failed("failed: twice".into())));
        assert_eq!(journal.step_end("t/beforeDeployment/1"), Some(StepEnd::Passed));
        assert_eq!(journal.step_run("t/beforeDeployment/1").as_deref(), Some("run-1"));
        assert_eq!(journal.step_time("t/canary/0", StepTime::ApprovalExpires), Some(7));
        assert_eq!(journal.step_time("t/canary/0", StepTime::PauseUntil), None);
        assert!(journal.gate_opened("t", "k", None, "h") && !journal.gate_opened("t", "k", None, "other"));
        assert!(journal.gate_opened("t", "k", Some("canary/0"), "h"));
        assert!(!journal.gate_opened("t", "k", Some("canary/1"), "h"), "each increase asks its own gate");
        assert!(journal.post_rollout_called("t", "h"));
        assert_eq!(journal.runs_of("t").collect::<Vec<_>>(), ["run-1"]);
        assert_eq!(journal.runs_of("t2").count(), 0, "another target's runs are not this one's");
        assert!(journal.touched("t/beforeDeployment/1") && !journal.touched("t/afterDeployment/0"));
    }

    #[test]
    fn a_step_key_that_holds_something_else_is_no_end() {
        let journal = Journal::new([("t/canary/0".to_owned(), "started".to_owned())]);
        assert_eq!(journal.step_end("t/canary/0"), None);
    }
}
