//! What the relay can tell of a call's way out without sending it, for dry
//! runs: whether its agent is registered and connected (here or to another
//! live replica) and what the allow-lists its instances reported make of
//! the destination; or, direct, what the address guard makes of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use borealis_api::Finding;
use borealis_core::team::AgentRef;
use borealis_egress::{AllowList, AllowRule, NameDecision, Policy};
use borealis_engine::plan::Preflight;
use borealis_store::{CredentialKind, ReportedAllowList};

use crate::state::AppState;

/// How long a dry run waits for the relay's own DNS answer.
const RESOLVE_WITHIN: Duration = Duration::from_secs(3);

/// Most names one dry run resolves: a file naming more is told so.
const MAX_LOOKUPS: usize = 32;

/// The relay's answers to one dry run's questions.
pub struct RelayPreflight<'a> {
    state: &'a AppState,
    /// Direct destinations already judged in this dry run, by host and port.
    judged: Mutex<HashMap<(String, u16), Vec<Finding>>>,
}

impl<'a> RelayPreflight<'a> {
    pub fn new(state: &'a AppState) -> Self {
        Self { state, judged: Mutex::default() }
    }
}

#[async_trait::async_trait]
impl Preflight for RelayPreflight<'_> {
    async fn check(&self, agent: Option<&AgentRef>, url: Option<&str>) -> Vec<Finding> {
        let parsed = match url.map(borealis_egress::client::parse_url) {
            Some(Err(err)) => return vec![Finding::error(err.to_string())],
            Some(Ok(url)) => Some(url),
            None => None,
        };
        match agent {
            Some(agent) => through_agent(self.state, agent, parsed.as_ref()).await,
            None => match parsed {
                Some(url) => self.direct(&url).await,
                None => Vec::new(),
            },
        }
    }
}

/// An instance's view of `url`, by the allow-list it reported.
async fn through_agent(state: &AppState, agent_ref: &AgentRef, url: Option<&url::Url>) -> Vec<Finding> {
    let (agent, team) = (&agent_ref.name, &agent_ref.team);
    match state.store.active_credential(CredentialKind::Agent, team, agent).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return vec![Finding::error(format!(
                "agent {agent:?} is not registered in team {team:?} (borealis agents create {agent} --team {team})"
            ))];
        }
        Err(err) => return vec![Finding::warning(format!("cannot tell whether agent {agent:?} is registered: {err}"))],
    }
    let sessions = match state.store.sessions(Some((team, agent)), state.replica.alive_since()).await {
        Ok(sessions) => sessions,
        Err(err) => return vec![Finding::warning(format!("cannot tell whether agent {agent:?} is connected: {err}"))],
    };
    let here = state.hub.instances(agent_ref);
    // Each instance's list, by instance name: the records, and the sessions
    // held here (recorded or not).
    let mut instances: BTreeMap<String, Option<ReportedAllowList>> =
        sessions.into_iter().map(|s| (s.instance, s.allow_list)).collect();
    for session in here.iter().filter(|s| !s.is_draining()) {
        instances.insert(session.info.instance.clone(), session.info.allow_list.clone());
    }
    if instances.is_empty() {
        return vec![Finding::error(format!(
            "agent {agent:?} is registered but no instance of it is connected: the call fails (and is retried) until one connects"
        ))];
    }
    let Some(url) = url else { return Vec::new() };
    // Instances that reported the same list answer the same.
    let mut by_list: BTreeMap<Option<(Vec<String>, bool)>, Vec<String>> = BTreeMap::new();
    for (instance, list) in instances {
        by_list.entry(list.map(|l| (l.rules, l.any))).or_default().push(instance);
    }
    let destination = borealis_egress::client::destination(url);
    let mut findings = Vec::new();
    for (list, names) in by_list {
        let who = if names.len() == 1 {
            format!("agent {agent:?} (instance {})", names[0])
        } else {
            format!("agent {agent:?} (instances {})", names.join(", "))
        };
        let Some((rules, any)) = list else {
            findings.push(Finding::warning(format!(
                "{who} does not report its allow-list (an older agent): whether it lets {destination} through is known only when the call is sent"
            )));
            continue;
        };
        let parsed: Result<Vec<AllowRule>, String> =
            rules.iter().map(|rule| rule.parse::<AllowRule>().map_err(|_| rule.clone())).collect();
        let list = match (any, parsed) {
            (true, _) => AllowList::any(),
            (false, Ok(rules)) => AllowList::new(rules),
            (false, Err(rule)) => {
                findings.push(Finding::warning(format!(
                    "{who} reports an allow rule this relay cannot read ({rule:?}): whether it lets {destination} through is known only when the call is sent"
                )));
                continue;
            }
        };
        findings.push(match list.check_url(url) {
            Ok(NameDecision::Allowed) => Finding::info(format!("{who} allows {destination}")),
            Ok(NameDecision::CheckAddresses) => Finding::warning(format!(
                "{who}: no allow rule names {destination}; it passes only if the address it resolves to there is in one of {}",
                rules.join(", ")
            )),
            Err(refusal) => Finding::error(format!("{who} refuses it: {refusal}")),
        });
    }
    findings
}

impl RelayPreflight<'_> {
    /// Direct mode's verdict, once per host and port, and after
    /// [`MAX_LOOKUPS`] names without resolving more.
    async fn direct(&self, url: &url::Url) -> Vec<Finding> {
        let key = (url.host_str().unwrap_or_default().to_owned(), url.port_or_known_default().unwrap_or_default());
        if let Some(found) = self.judged.lock().expect("judged lock").get(&key) {
            return found.clone();
        }
        let resolve = self.judged.lock().expect("judged lock").len() < MAX_LOOKUPS;
        let found = direct(self.state.forwarder.direct_policy(), url, resolve).await;
        self.judged.lock().expect("judged lock").insert(key, found.clone());
        found
    }
}

/// Direct mode: the guard's verdict on the name, then (with `resolve`) on
/// the addresses the relay resolves it to now (they may differ when the
/// call is sent).
async fn direct(policy: &Policy, url: &url::Url, resolve: bool) -> Vec<Finding> {
    let destination = borealis_egress::client::destination(url);
    let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
        return vec![Finding::error(format!("{url} names no host and port"))];
    };
    match policy.check_name(&host, port) {
        Err(refusal) => return vec![Finding::error(format!("direct mode refuses it: {refusal}"))],
        Ok(NameDecision::Allowed) => return vec![Finding::info(format!("direct mode allows {destination}"))],
        Ok(NameDecision::CheckAddresses) => {}
    }
    let name = host.to_string();
    if !resolve {
        return vec![Finding::warning(format!(
            "{name} was not resolved: a dry run resolves at most {MAX_LOOKUPS} names; the guard checks its addresses when the call is sent"
        ))];
    }
    let resolved = tokio::time::timeout(RESOLVE_WITHIN, tokio::net::lookup_host((name.as_str(), port))).await;
    let addresses: Vec<std::net::IpAddr> = match resolved {
        Ok(Ok(addresses)) => addresses.map(|a| a.ip()).collect(),
        Ok(Err(err)) => return vec![Finding::warning(format!("{name} does not resolve from the relay now: {err}"))],
        Err(_) => {
            return vec![Finding::warning(format!("{name} did not resolve from the relay within {RESOLVE_WITHIN:?}"))];
        }
    };
    let refused: Vec<String> =
        addresses.iter().filter_map(|ip| policy.check_address(&name, *ip).err()).map(|r| r.to_string()).collect();
    if refused.is_empty() {
        vec![Finding::info(format!("direct mode allows {destination}"))]
    } else {
        vec![Finding::error(format!("direct mode refuses it: {}", refused.join("; ")))]
    }
}

/// Whether an instance of `agent` is connected here or, by the session
/// records, to a live replica. A store that cannot say counts as connected:
/// this only decides a warning.
async fn is_connected(state: &AppState, agent: &AgentRef) -> bool {
    if state.hub.has_instance(agent) {
        return true;
    }
    match state.store.sessions(Some((&agent.team, &agent.name)), state.replica.alive_since()).await {
        Ok(sessions) => !sessions.is_empty(),
        Err(_) => true,
    }
}

/// A warning for each of `agents` with no instance connected: what was
/// just started through it fails (and is retried) until one connects.
pub async fn disconnected_agents(state: &AppState, agents: impl Iterator<Item = AgentRef>) -> Vec<String> {
    let mut warnings = Vec::new();
    for agent in agents {
        if !is_connected(state, &agent).await {
            warnings.push(format!(
                "agent {:?} is registered but no instance of it is connected: calls through it fail (and are \
                 retried) until one connects",
                agent.name
            ));
        }
    }
    warnings
}
