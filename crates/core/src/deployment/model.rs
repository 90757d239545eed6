//! The deployment file's types, as [`parse`](super::parse) builds them.

use std::collections::BTreeMap;

use super::diagnostic::Location;

/// How a webhook is called: the API's vocabulary.
pub use borealis_api::NetworkMode;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeaderTemplate {
    pub key: String,
    pub value: String,
}

/// One entry of the top-level `webhooks` list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub name: String,
    pub method: String,
    pub uri_template: String,
    pub network_mode: NetworkMode,
    pub agent_identifier: Option<String>,
    pub headers: Vec<HeaderTemplate>,
    pub body_template: Option<String>,
    pub retry_count: u32,
    pub disable_callback: bool,
    /// Standard Webhooks signatures; without it, the relay's
    /// `webhook_signing_secret` (if set) signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,
    pub location: Location,
}

/// `signing: {secret: "{{secrets.NAME}}"}` (or `secrets: [...]`, several
/// during a key rotation): the stored secrets whose keys sign each call, one
/// `v1,` signature per key. Secrets are named, never written in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signing {
    /// Names of stored secrets, in file order.
    pub secrets: Vec<String>,
    pub location: Location,
}

/// `- runWebhook: {name, context}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunWebhook {
    pub name: String,
    pub context: BTreeMap<String, String>,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Pause {
    /// Waits for an operator's approval; with `approvalExpiration`, for at
    /// most this many seconds, after which the target fails. With
    /// `requiresRoles`, only someone holding one of them may decide it;
    /// with `requiredApprovals: N`, it passes once N distinct people approved.
    UntilApproved {
        expires_after: Option<u64>,
        #[serde(default)]
        requires_roles: Vec<String>,
        #[serde(default = "one_approval")]
        required_approvals: u32,
    },
    /// Waits this many seconds.
    Seconds(u64),
}

fn one_approval() -> u32 {
    1
}

/// The most approvals a pause may ask for.
pub const MAX_REQUIRED_APPROVALS: u64 = 20;

/// One item of a constraint list or a strategy's steps.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    RunWebhook(RunWebhook),
    Pause {
        pause: Pause,
        location: Location,
    },
    SetWeight {
        weight: u32,
        location: Location,
    },
    /// `- analysis: {...}`: metric queries judged at intervals.
    Analysis(Analysis),
    /// A step this version parses but does not run (`analysis`, `exposeServices`, ...).
    Unsupported {
        kind: String,
        location: Location,
    },
}

/// `manual` or `automatic`, for `rollBackMode` and `rollForwardMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DecisionMode {
    Manual,
    #[default]
    Automatic,
}

/// Which window each judgment run queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LookbackMethod {
    /// From the step's start to the run.
    #[default]
    Growing,
    /// The last interval before the run.
    Sliding,
}

/// A name used in an analysis step, with where it stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NameRef {
    pub name: String,
    pub location: Location,
}

/// `- analysis: {...}` (Armory's shape, plus `lookbackMethod`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Default: the top-level `analysis.defaultMetricProviderName`.
    pub metric_provider_name: Option<NameRef>,
    pub context: BTreeMap<String, String>,
    /// `interval` in `units`, in seconds.
    pub interval_seconds: u64,
    pub number_of_judgment_runs: u32,
    pub roll_back_mode: DecisionMode,
    pub roll_forward_mode: DecisionMode,
    pub queries: Vec<NameRef>,
    pub lookback_method: LookbackMethod,
    pub location: Location,
}

/// One entry of the top-level `analysis.queries`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisQuery {
    pub name: String,
    pub query_template: String,
    pub upper_limit: Option<f64>,
    pub lower_limit: Option<f64>,
    pub location: Location,
}

impl AnalysisQuery {
    /// Whether `value` lies inside the limits (both inclusive).
    pub fn within(&self, value: f64) -> bool {
        self.lower_limit.is_none_or(|low| value >= low) && self.upper_limit.is_none_or(|high| value <= high)
    }
}

/// The top-level `analysis:` block's metric part.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub default_metric_provider_name: Option<NameRef>,
    pub queries: Vec<AnalysisQuery>,
}

#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Constraints {
    pub depends_on: Vec<String>,
    /// Where each `dependsOn` entry stands.
    pub depends_on_locations: Vec<Location>,
    pub before_deployment: Vec<Step>,
    pub after_deployment: Vec<Step>,
}

/// How a target's rollout actions are carried out.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Driver {
    /// Actions are only recorded in the deployment's history.
    #[default]
    Record,
    /// Each action is POSTed as JSON to `url`; a non-2xx reply fails it.
    #[serde(rename_all = "camelCase")]
    Webhook {
        url: String,
        network_mode: NetworkMode,
        agent_identifier: Option<String>,
        /// Whether repeating an action is harmless (after a restart mid-call).
        idempotent: bool,
        /// Standard Webhooks signatures; default: the relay's `webhook_signing_secret`.
        #[serde(default)]
        signing: Option<Signing>,
        /// Headers of its own, as a webhook's: values are templates.
        #[serde(default)]
        headers: Vec<HeaderTemplate>,
        /// A body of its own instead of the action's JSON: a template over
        /// `armory` (with `action` and `weight`), `context`, `artifacts`
        /// and `secrets`.
        #[serde(default)]
        body_template: Option<String>,
    },
}

/// The agent a call in `mode` goes through: its own `agentIdentifier`,
/// else the target's account; `None` direct (or when neither names one).
pub fn agent_for(mode: NetworkMode, own: Option<&String>, target: Option<&Target>) -> Option<String> {
    match mode {
        NetworkMode::Direct => None,
        NetworkMode::RemoteNetworkAgent => own.or(target.and_then(|t| t.account.as_ref())).cloned(),
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub name: String,
    pub account: Option<String>,
    pub namespace: Option<String>,
    pub strategy: Option<String>,
    pub constraints: Constraints,
    pub driver: Driver,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StrategyKind {
    Canary {
        steps: Vec<Step>,
    },
    #[serde(rename_all = "camelCase")]
    BlueGreen {
        active_service: Option<String>,
        preview_service: Option<String>,
        redirect_traffic_after: Vec<Step>,
        shut_down_old_version_after: Vec<Step>,
    },
}

impl StrategyKind {
    /// Every step of the strategy, in file order.
    pub fn steps(&self) -> Box<dyn Iterator<Item = &Step> + '_> {
        match self {
            StrategyKind::Canary { steps } => Box::new(steps.iter()),
            StrategyKind::BlueGreen { redirect_traffic_after, shut_down_old_version_after, .. } => {
                Box::new(redirect_traffic_after.iter().chain(shut_down_old_version_after))
            }
        }
    }
}

impl Constraints {
    /// `beforeDeployment`, then `afterDeployment`.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.before_deployment.iter().chain(&self.after_deployment)
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Strategy {
    pub name: String,
    pub kind: StrategyKind,
    pub location: Location,
}

/// Flagger's hook types (seed 004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookType {
    ConfirmRollout,
    PreRollout,
    Rollout,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
    PostRollout,
    Rollback,
    Event,
}

impl HookType {
    pub const ALL: [(&'static str, HookType); 8] = [
        ("confirm-rollout", HookType::ConfirmRollout),
        ("pre-rollout", HookType::PreRollout),
        ("rollout", HookType::Rollout),
        ("confirm-traffic-increase", HookType::ConfirmTrafficIncrease),
        ("confirm-promotion", HookType::ConfirmPromotion),
        ("post-rollout", HookType::PostRollout),
        ("rollback", HookType::Rollback),
        ("event", HookType::Event),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, t)| *t == self).map(|(n, _)| *n).expect("every type is listed")
    }

    /// A gate is asked again until it opens.
    pub fn is_gate(self) -> bool {
        matches!(self, HookType::ConfirmRollout | HookType::ConfirmTrafficIncrease | HookType::ConfirmPromotion)
    }
}

/// A Flagger-style hook from `analysis.webhooks`: the reply's status decides.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlaggerHook {
    pub name: String,
    pub kind: HookType,
    pub url: String,
    /// Per-call time limit, in milliseconds.
    pub timeout_ms: Option<u64>,
    pub metadata: BTreeMap<String, String>,
    pub retries: u32,
    /// Borealis extension: `direct` (default) or `remoteNetworkAgent`.
    pub network_mode: NetworkMode,
    pub agent_identifier: Option<String>,
    /// Borealis extension: Standard Webhooks signatures; default: the
    /// relay's `webhook_signing_secret`.
    #[serde(default)]
    pub signing: Option<Signing>,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct DeploymentFile {
    pub application: Option<String>,
    pub targets: Vec<Target>,
    pub strategies: Vec<Strategy>,
    pub webhooks: Vec<Webhook>,
    pub context: BTreeMap<String, String>,
    /// What is deployed, by name (image references, versions): sent with
    /// every action to the target's driver.
    #[serde(default)]
    pub artifacts: BTreeMap<String, String>,
    /// Flagger-style hooks, applied to every target's rollout.
    pub hooks: Vec<FlaggerHook>,
    /// The top-level `analysis` block's queries and default provider.
    #[serde(default)]
    pub metrics: Metrics,
}

impl DeploymentFile {
    pub fn webhook(&self, name: &str) -> Option<&Webhook> {
        self.webhooks.iter().find(|w| w.name == name)
    }

    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    pub fn strategy(&self, name: &str) -> Option<&Strategy> {
        self.strategies.iter().find(|s| s.name == name)
    }

    /// Every step of a target, its strategy's included, with where it runs.
    pub fn steps_of<'a>(&'a self, target: &'a Target) -> impl Iterator<Item = &'a Step> + 'a {
        let strategy = target.strategy.as_deref().and_then(|s| self.strategy(s));
        target.constraints.steps().chain(strategy.into_iter().flat_map(|s| s.kind.steps()))
    }

    pub fn query(&self, name: &str) -> Option<&AnalysisQuery> {
        self.metrics.queries.iter().find(|q| q.name == name)
    }

    /// Every step anywhere in the file: targets' constraints and strategies.
    fn all_steps(&self) -> impl Iterator<Item = &Step> {
        let constraint_steps = self.targets.iter().flat_map(|t| t.constraints.steps());
        constraint_steps.chain(self.strategies.iter().flat_map(|s| s.kind.steps()))
    }

    /// All `analysis` steps anywhere in the file.
    pub fn analyses(&self) -> Vec<&Analysis> {
        self.all_steps()
            .filter_map(|step| match step {
                Step::Analysis(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// The provider an analysis step queries: its own, else the file's default.
    pub fn provider_of<'a>(&'a self, analysis: &'a Analysis) -> Option<&'a NameRef> {
        analysis.metric_provider_name.as_ref().or(self.metrics.default_metric_provider_name.as_ref())
    }

    /// Every agent a deployment of this file may call through: its
    /// `runWebhook` steps', hooks' and drivers' in `remoteNetworkAgent`
    /// mode, each its own `agentIdentifier` or else its target's account.
    pub fn agents_used(&self) -> std::collections::BTreeSet<String> {
        let mut agents = std::collections::BTreeSet::new();
        let mut add = |mode: NetworkMode, own: Option<&String>, target: &Target| {
            agents.extend(agent_for(mode, own, Some(target)));
        };
        for target in &self.targets {
            for step in self.steps_of(target) {
                if let Step::RunWebhook(run) = step
                    && let Some(webhook) = self.webhook(&run.name)
                {
                    add(webhook.network_mode, webhook.agent_identifier.as_ref(), target);
                }
            }
            for hook in &self.hooks {
                add(hook.network_mode, hook.agent_identifier.as_ref(), target);
            }
            if let Driver::Webhook { network_mode, agent_identifier, .. } = &target.driver {
                add(*network_mode, agent_identifier.as_ref(), target);
            }
        }
        agents
    }

    /// All `runWebhook` steps anywhere in the file.
    pub fn run_webhooks(&self) -> Vec<&RunWebhook> {
        self.all_steps()
            .filter_map(|step| match step {
                Step::RunWebhook(run) => Some(run),
                _ => None,
            })
            .collect()
    }
}
