//! The Deployments screens: the list, and one deployment with its targets
//! as a graph, their steps, webhook runs, analysis runs and events, and the
//! decisions an operator can take. `/deployments/{id}/live` tells the page
//! (server-sent events) when the deployment changed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Redirect, Response};
use borealis_core::deployment::{self, Pause, Step, StrategyKind};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::graph::{self, BOX_HEIGHT, BOX_WIDTH};
use super::markdown;
use super::page::{Chrome, ConfirmPage, Failure, Filters, Operator, render, segment, state_words, when};
use crate::access::rules::Permission;
use crate::http::deployments as api;
use crate::http::extract::{ListQuery, QueryOf};
use crate::http::problem::Problem;
use crate::state::AppState;
use borealis_engine::deployments::journal::{self, ActionProgress, Journal, StepEnd};
use borealis_engine::deployments::{Decider, Decision};
use borealis_store::DeploymentView;

/// How long one live stream lasts; the browser then opens another.
const LIVE_FOR: Duration = Duration::from_secs(600);
/// How often a live stream checks that its session still stands.
const SESSION_CHECK_EVERY: Duration = Duration::from_secs(30);
/// The newest events a page shows; the API has them all.
const MAX_EVENTS: usize = 200;

#[derive(Template)]
#[template(path = "console/deployments.html")]
struct ListPage {
    chrome: Chrome,
    deployments: Vec<Row>,
    filters: Filters,
}

struct Row {
    id: String,
    application: String,
    state: (String, String),
    created_at: String,
    targets: Vec<(String, (String, String))>,
}

#[derive(Template)]
#[template(path = "console/deployment.html")]
struct DetailPage {
    chrome: Chrome,
    id: String,
    application: String,
    state: (String, String),
    reason: Option<String>,
    created_at: String,
    finished_at: Option<String>,
    /// Why an abort was asked, once it was; the Abort link while it can be.
    abort: Option<String>,
    abortable: bool,
    /// What its drivers are told to deploy, and its context values.
    artifacts: Vec<(String, String)>,
    context: Vec<(String, String)>,
    graph: GraphView,
    targets: Vec<TargetView>,
    events: Vec<EventRow>,
    older_events: usize,
}

struct GraphView {
    width: u32,
    height: u32,
    box_width: u32,
    box_height: u32,
    boxes: Vec<GraphBox>,
    edges: Vec<String>,
}

struct GraphBox {
    name: String,
    anchor: String,
    state: (String, String),
    x: u32,
    y: u32,
}

struct TargetView {
    name: String,
    anchor: String,
    state: (String, String),
    step: Option<String>,
    /// Everything its current steps wait for, with their deadlines.
    waiting: Vec<String>,
    /// Pending approvals' progress: `1 of 2 approvals: NAME`.
    approvals: Vec<String>,
    reason: Option<String>,
    updated_at: String,
    depends_on: Vec<String>,
    steps: Vec<StepRow>,
    runs: Vec<RunRow>,
    analysis: Vec<AnalysisRow>,
    actions: Vec<Action>,
}

struct StepRow {
    label: String,
    state: &'static str,
    /// For a current step: what it waits for, and until when.
    waiting: Option<String>,
}

struct RunRow {
    id: String,
    webhook: String,
    state: (String, String),
    reason: Option<String>,
    message: Option<String>,
}

struct AnalysisRow {
    step: String,
    run: u32,
    of: u32,
    at: String,
    passed: bool,
    summary: String,
    queries: Vec<QueryRow>,
}

struct QueryRow {
    query: String,
    value: String,
    limits: String,
    verdict: &'static str,
}

struct Action {
    path: String,
    label: &'static str,
    danger: bool,
    /// Why it cannot be taken now: the button is shown disabled, with this.
    disabled: Option<String>,
}

struct EventRow {
    at: String,
    target: String,
    kind: String,
    /// Sanitized HTML: a message may quote an external system's mdMessage.
    message: String,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    QueryOf(query): QueryOf<ListQuery>,
) -> Result<Response, Failure> {
    let team = Some(operator.team.clone());
    let listed = api::summaries(&state, team, &ListQuery { limit: query.limit.or(Some(50)), ..query.clone() }).await?;
    let states: Vec<&str> = borealis_api::DeploymentState::ALL.iter().map(|s| s.as_str()).collect();
    let filters = Filters::new(
        ("deployments", "Application", "application"),
        &query,
        query.application.as_ref(),
        &states,
        listed.next,
    );
    let deployments = listed
        .deployments
        .into_iter()
        .map(|d| Row {
            id: d.id,
            application: d.application,
            state: state_words(&d.state),
            created_at: when(&d.created_at),
            targets: d.targets.into_iter().map(|t| (t.name, state_words(&t.state))).collect(),
        })
        .collect();
    Ok(render(&ListPage { chrome: Chrome::new("deployments", &operator), deployments, filters }, StatusCode::OK))
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let view = state.deployments.view(&id).await?;
    let file =
        deployment::parse_with(&view.record.file, deployment::UnknownFields::Warn).ok().map(|parsed| parsed.file);
    let shown = api::describe(&view);
    let console = api::decider(&state, &operator.principal, &view.record.team).await?;
    let journal = Journal::new(view.journal.iter().cloned());
    let targets_in_file = file.as_ref().map(|f| f.targets.as_slice()).unwrap_or_default();
    let depends_on = |name: &str| {
        targets_in_file.iter().find(|t| t.name == name).map(|t| t.constraints.depends_on.clone()).unwrap_or_default()
    };
    let deps: Vec<Vec<String>> = shown.targets.iter().map(|t| depends_on(&t.name)).collect();
    let nodes: Vec<graph::Node<'_>> =
        shown.targets.iter().zip(&deps).map(|(t, d)| graph::Node { name: &t.name, depends_on: d }).collect();
    let laid = graph::layout(&nodes);
    let graph = GraphView {
        width: laid.width,
        height: laid.height,
        box_width: BOX_WIDTH,
        box_height: BOX_HEIGHT,
        boxes: laid
            .boxes
            .iter()
            .map(|b| GraphBox {
                name: shown.targets[b.index].name.clone(),
                anchor: target_anchor(&shown.targets[b.index].name),
                state: state_words(&shown.targets[b.index].state),
                x: b.x,
                y: b.y,
            })
            .collect(),
        edges: laid.edges.into_iter().map(|e| e.path).collect(),
    };
    let targets = shown
        .targets
        .iter()
        .zip(deps)
        .map(|(target, depends_on)| {
            let spec = targets_in_file.iter().find(|t| t.name == target.name);
            let steps = spec
                .map(|spec| steps_of(file.as_ref(), spec, &journal, target.state, Some(&view.runs)))
                .unwrap_or_default();
            let waiting = steps.iter().filter_map(|s| s.waiting.clone()).collect();
            let mut actions = Vec::new();
            let base = format!("/deployments/{}/targets/{}", segment(&id), segment(&target.name));
            // Without the approve permission no decision is the operator's to take.
            let undecidable = (!operator.principal.grants.allows(Permission::Approve, &view.record.team))
                .then(|| approve_refusal(&view, None, &target.name, (&operator, &console)))
                .flatten();
            let act = |path: &str, label, danger| Action {
                path: format!("{base}/{path}"),
                label,
                danger,
                disabled: undecidable.clone(),
            };
            if shown.pending_approvals.contains(&target.name) {
                let disabled = approve_refusal(&view, file.as_ref(), &target.name, (&operator, &console));
                let approve = Action { disabled, ..act("approve", "Approve", false) };
                actions.push(approve);
                actions.push(act("reject", "Reject", true));
            }
            if shown.pending_decisions.contains(&target.name) {
                actions.push(act("continue", "Continue", false));
                actions.push(act("rollback", "Roll back", true));
            }
            let approvals = shown
                .approvals
                .iter()
                .filter(|a| a.target == target.name && (a.required_approvals > 1 || !a.approved_by.is_empty()))
                .map(|a| {
                    let by = if a.approved_by.is_empty() { "no one yet".to_owned() } else { a.approved_by.join(", ") };
                    format!("{} of {} approvals: {by}", a.approved_by.len(), a.required_approvals)
                })
                .collect();
            TargetView {
                name: target.name.clone(),
                anchor: target_anchor(&target.name),
                state: state_words(&target.state),
                step: target.step.clone(),
                waiting,
                approvals,
                reason: target.reason.clone(),
                updated_at: when(&target.updated_at),
                depends_on,
                steps,
                runs: target
                    .webhook_runs
                    .iter()
                    .map(|run| RunRow {
                        id: run.id.clone(),
                        webhook: run.webhook.clone(),
                        state: state_words(&run.state),
                        reason: run.reason.clone(),
                        message: run.md_message.as_deref().map(markdown::render),
                    })
                    .collect(),
                analysis: target.analysis_runs.iter().map(analysis_row).collect(),
                actions,
            }
        })
        .collect();
    let older_events = shown.events.len().saturating_sub(MAX_EVENTS);
    let events = shown
        .events
        .iter()
        .rev()
        .take(MAX_EVENTS)
        .map(|e| EventRow {
            at: when(&e.at),
            target: e.target.clone().unwrap_or_default(),
            kind: e.kind.clone(),
            message: markdown::render_line(&e.message),
        })
        .collect();
    let page = DetailPage {
        chrome: Chrome::new("deployments", &operator),
        id: shown.id.clone(),
        application: shown.application.clone(),
        state: state_words(&shown.state),
        reason: shown.reason.clone(),
        created_at: when(&shown.created_at),
        finished_at: shown.finished_at.as_deref().map(when),
        abort: shown.abort.as_ref().map(|a| a.reason.clone()),
        abortable: shown.finished_at.is_none() && shown.abort.is_none(),
        artifacts: shown.artifacts.clone().into_iter().collect(),
        context: shown.context.clone().into_iter().collect(),
        graph,
        targets,
        events,
        older_events,
    };
    Ok(render(&page, StatusCode::OK))
}

/// Asks before aborting: what an abort does cannot be undone.
pub async fn confirm_abort(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let view = state.deployments.view(&id).await?;
    let application = &view.record.application;
    let page = ConfirmPage {
        chrome: Chrome::new("deployments", &operator),
        title: format!("Abort the {application} deployment"),
        question: format!("Abort the {application} deployment?"),
        consequence: "Its pending steps and webhook runs are cancelled, the targets that were deploying are rolled \
                      back through their driver, and it ends aborted. The next deployment of the application can \
                      start at once."
            .into(),
        action: format!("/deployments/{}/abort", segment(&id)),
        button: "Abort the deployment".into(),
        cancel: format!("/deployments/{}", segment(&id)),
    };
    Ok(render(&page, StatusCode::OK))
}

pub async fn abort(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Redirect, Failure> {
    let by = &operator.principal.actor.name;
    state.deployments.abort(&id, Some("aborted in the console"), true, by).await?;
    tracing::info!(deployment = id.as_str(), "abort asked in the console");
    Ok(Redirect::to(&format!("/deployments/{}", segment(&id))))
}

/// Why the operator (deciding as `by`) cannot approve `target` now, if it
/// cannot: it lacks the approve permission in the deployment's team; the
/// engine would refuse it (a role the approval requires, its own deployment
/// where its team forbids that); or it approved already and the step waits
/// for others.
fn approve_refusal(
    view: &DeploymentView,
    file: Option<&deployment::DeploymentFile>,
    target: &str,
    (operator, by): (&Operator, &Decider),
) -> Option<String> {
    let team = &view.record.team;
    let grants = &operator.principal.grants;
    let holds = || if by.roles.is_empty() { "no role".to_owned() } else { by.roles.join(", ") };
    if !grants.allows(Permission::Approve, team) {
        let forbidden = crate::access::rules::Forbidden { permission: Permission::Approve, team: Some(team.clone()) };
        return Some(format!("{forbidden}; you hold {}", holds()));
    }
    // The engine's own rules, as it would refuse the approval.
    if let Some(why) = borealis_engine::deployments::decider_refusal(view, file, target, Decision::Approve, by) {
        return Some(why);
    }
    let keys: Vec<&String> = view.pending_approvals.iter().filter(|(t, _)| t == target).map(|(_, k)| k).collect();
    let voted = view.approval_votes.iter().any(|(key, voter)| keys.contains(&key) && voter.id == by.id);
    voted.then(|| "You approved it already; it waits for approvals from others.".to_owned())
}

/// Approve, Reject, Continue or Roll back; back to the deployment after.
pub async fn decide(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Path((id, target, decision)): Path<(String, String, String)>,
) -> Result<Redirect, Failure> {
    let decision = match decision.as_str() {
        "approve" => Decision::Approve,
        "reject" => Decision::Reject,
        "continue" => Decision::Continue,
        "rollback" => Decision::Rollback,
        other => {
            return Err(Failure(Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no decision named {other:?}"),
            )));
        }
    };
    let record = state.deployments.record(&id).await?;
    let by = api::decider(&state, &operator.principal, &record.team).await?;
    state.deployments.decide(&id, &target, decision, &by).await?;
    tracing::info!(
        deployment = id.as_str(),
        target = target.as_str(),
        decision = decision.as_str(),
        "decision taken in the console"
    );
    Ok(Redirect::to(&format!("/deployments/{}", segment(&id))))
}

/// A `change` event each time deployment `id` changes, for [`LIVE_FOR`] at
/// most; the stream ends sooner when the relay stops or the session ends.
pub async fn live(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Failure> {
    state.deployments.record(&id).await?;
    let mut session_checks = tokio::time::interval(SESSION_CHECK_EVERY);
    session_checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    session_checks.reset();
    let live = Live {
        changes: state.deployments.subscribe(),
        stopping: state.deployments.stopping(),
        until: tokio::time::Instant::now() + LIVE_FOR,
        session_checks,
        state,
        operator,
        id,
    };
    let stream = futures_util::stream::unfold(live, |mut live| async move {
        let event = live.next_change().await?;
        Some((Ok(event), live))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

struct Live {
    changes: tokio::sync::broadcast::Receiver<String>,
    stopping: tokio_util::sync::CancellationToken,
    until: tokio::time::Instant,
    session_checks: tokio::time::Interval,
    state: Arc<AppState>,
    operator: Operator,
    id: String,
}

impl Live {
    /// The next change of the deployment, or `None` when the stream is over.
    async fn next_change(&mut self) -> Option<Event> {
        loop {
            tokio::select! {
                () = self.stopping.cancelled() => return None,
                () = tokio::time::sleep_until(self.until) => return None,
                _ = self.session_checks.tick() => {
                    let found = self.state.store.console_session(&self.operator.session_hash(), SystemTime::now()).await;
                    let live = matches!(found, Ok(Some(session)) if self.state.auth.console_seal_holds(&session.admin_seal, &self.operator.session_id));
                    if !live {
                        return None;
                    }
                }
                received = self.changes.recv() => match received {
                    Err(RecvError::Closed) => return None,
                    Ok(changed) if changed != self.id => {}
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        // Changes come in bursts: one event for all that are queued.
                        while self.changes.try_recv().is_ok() {}
                        return Some(Event::default().event("change").data(self.id.clone()));
                    }
                },
            }
        }
    }
}

/// The id of a target's section, for links to it.
fn target_anchor(name: &str) -> String {
    format!("target-{}", segment(name))
}

fn analysis_row(run: &borealis_api::JudgmentRun) -> AnalysisRow {
    AnalysisRow {
        step: run.step.clone().unwrap_or_default(),
        run: run.run,
        of: run.of,
        at: when(&run.at),
        passed: run.passed,
        summary: run.summary.clone(),
        queries: run
            .queries
            .iter()
            .map(|q| QueryRow {
                query: q.rendered.clone().unwrap_or_else(|| q.query.clone()),
                value: match (&q.value, &q.error) {
                    (Some(value), _) => format!("{value}"),
                    (None, Some(error)) => error.clone(),
                    (None, None) => "no value".into(),
                },
                limits: match (q.lower_limit, q.upper_limit) {
                    (Some(lo), Some(hi)) => format!("{lo} to {hi}"),
                    (Some(lo), None) => format!("at least {lo}"),
                    (None, Some(hi)) => format!("at most {hi}"),
                    (None, None) => "none".into(),
                },
                verdict: match q.within {
                    Some(true) => "within",
                    Some(false) => "outside",
                    None => "not judged",
                },
            })
            .collect(),
    }
}

/// Where a planned step records itself in the journal.
enum Place {
    /// An item (a webhook, a pause, an approval, an analysis), under its step key.
    Item(String),
    /// A rollout action (a canary's weight too), under the action's name.
    Action(String),
}

/// A target's steps in the order they run, each with where it stands, read
/// from the deployment's journal: an item records how it ended under its
/// key, and an action that it started and then that it is done. The items
/// of one constraint list run together; the groups run one after another,
/// so a group after a started one is done.
fn steps_of<'f>(
    file: Option<&'f deployment::DeploymentFile>,
    target: &'f deployment::Target,
    journal: &Journal,
    state: borealis_api::TargetState,
    runs: Option<&[borealis_store::RunRecord]>,
) -> Vec<StepRow> {
    let name = &target.name;
    // (label, place, group, the step when it is one of the file's)
    type Planned<'f> = Vec<(String, Place, usize, Option<&'f Step>)>;
    let mut planned: Planned<'f> = Vec::new();
    let mut group = 0;
    let list = |planned: &mut Planned<'f>, group: &mut usize, list: &str, items: &'f [Step]| {
        for (i, item) in items.iter().enumerate() {
            planned.push((
                format!("{list}: {}", describe(item)),
                Place::Item(journal::step_key(name, list, i)),
                *group,
                Some(item),
            ));
        }
        *group += usize::from(!items.is_empty());
    };
    let single = |planned: &mut Planned<'f>, group: &mut usize, label: String, place: Place| {
        planned.push((label, place, *group, None));
        *group += 1;
    };
    list(&mut planned, &mut group, "beforeDeployment", &target.constraints.before_deployment);
    single(&mut planned, &mut group, "deploy".into(), Place::Action("deploy".into()));
    let strategy = target.strategy.as_deref().and_then(|s| file.and_then(|f| f.strategy(s))).map(|s| &s.kind);
    match strategy {
        Some(StrategyKind::Canary { steps }) => {
            for (i, step) in steps.iter().enumerate() {
                let place = match step {
                    Step::SetWeight { .. } => Place::Action(format!("canary/{i}")),
                    _ => Place::Item(journal::step_key(name, "canary", i)),
                };
                planned.push((format!("canary: {}", describe(step)), place, group, Some(step)));
                group += 1;
            }
        }
        Some(StrategyKind::BlueGreen { redirect_traffic_after, shut_down_old_version_after, .. }) => {
            list(&mut planned, &mut group, "redirectTrafficAfter", redirect_traffic_after);
            single(&mut planned, &mut group, "redirect traffic".into(), Place::Action("redirect".into()));
            list(&mut planned, &mut group, "shutDownOldVersionAfter", shut_down_old_version_after);
        }
        None => {}
    }
    single(&mut planned, &mut group, "promote".into(), Place::Action("promote".into()));
    let after_group = group;
    list(&mut planned, &mut group, "afterDeployment", &target.constraints.after_deployment);

    use borealis_api::TargetState as T;
    let ended = |place: &Place| match place {
        Place::Item(key) => journal.step_end(key),
        Place::Action(action) => {
            (journal.action(name, action) == Some(ActionProgress::Done)).then_some(StepEnd::Passed)
        }
    };
    // Started: something is recorded of the step, or an event of it.
    let touched = |place: &Place| match place {
        Place::Item(key) => journal.touched(key),
        Place::Action(action) => journal.touched(&journal::action_key(name, action)),
    };
    let active = matches!(
        state,
        T::Running | T::AwaitingApproval | T::AwaitingContinueDecision | T::AwaitingRollbackDecision | T::Deployed
    );
    // A step that waits (an approval, a pause) records nothing until it ends:
    // a target under way with nothing recorded is in its first group.
    let last_started = planned
        .iter()
        .filter(|(_, place, _, _)| touched(place))
        .map(|(_, _, g, _)| *g)
        .max()
        .or((active && state != T::Deployed).then_some(0));
    let deployed = matches!(state, T::Deployed | T::AfterDeploymentFailed);
    // Groups where an item failed: the others there were cancelled by it.
    let failed_groups: Vec<usize> = planned
        .iter()
        .filter(|(_, place, _, _)| matches!(ended(place), Some(StepEnd::Failed(_))))
        .map(|(_, _, group, _)| *group)
        .collect();
    planned
        .into_iter()
        .map(|(label, place, group, step)| {
            let state = match ended(&place) {
                Some(StepEnd::Passed) => "done",
                Some(StepEnd::Failed(_)) => "failed",
                _ if deployed && group < after_group => "done",
                _ if last_started.is_some_and(|last| group < last) => "done",
                _ if last_started == Some(group) && active => "current",
                _ if last_started == Some(group) && (state == T::Cancelled || failed_groups.contains(&group)) => {
                    "cancelled"
                }
                _ if last_started == Some(group) => "failed",
                _ if matches!(state, T::Cancelled | T::Failed | T::RolledBack) => "skipped",
                _ => "pending",
            };
            let waiting = match (state, runs) {
                ("current", Some(runs)) => waiting_for(step, &place, journal, runs),
                _ => None,
            };
            StepRow { label, state, waiting }
        })
        .collect()
}

/// What a current step waits for, and until when: a webhook's callback or
/// next attempt, an approval's expiry, a pause's end, an analysis' next
/// judgment run or its decision, a driver's action.
fn waiting_for(
    step: Option<&Step>,
    place: &Place,
    journal: &Journal,
    runs: &[borealis_store::RunRecord],
) -> Option<String> {
    let at = |time: SystemTime| when(&borealis_engine::clock::rfc3339(time));
    let at_ms = |ms: i64| at(borealis_store::from_unix_ms(ms));
    let key = match place {
        Place::Action(action) => {
            return Some(format!("the driver: {}", action.replace("canary/", "set weight, step ")));
        }
        Place::Item(key) => key,
    };
    match step? {
        Step::RunWebhook(run) => {
            let Some(record) = journal.step_run(key).and_then(|id| runs.iter().find(|r| r.id == id)) else {
                return Some(format!("webhook {}: starting", run.name));
            };
            let until = |time: Option<SystemTime>| time.map(|t| format!(", until {}", at(t))).unwrap_or_default();
            use borealis_store::RunState as R;
            Some(match record.state {
                R::AwaitingCallback => format!("webhook {}: its callback{}", run.name, until(record.deadline_at)),
                R::Pending => format!(
                    "webhook {}: attempt {}{}",
                    run.name,
                    record.attempts + 1,
                    record.next_attempt_at.map(|t| format!(" at {}", at(t))).unwrap_or_default()
                ),
                R::Calling => format!("webhook {}: attempt {} under way", run.name, record.attempts),
                _ => return None,
            })
        }
        Step::Pause { pause: Pause::UntilApproved { .. }, .. } => {
            Some(match journal.step_time(key, journal::StepTime::ApprovalExpires) {
                Some(ms) => format!("a manual approval, until {}", at_ms(ms)),
                None => "a manual approval (it does not expire)".to_owned(),
            })
        }
        Step::Pause { pause: Pause::Seconds(_), .. } => {
            journal.step_time(key, journal::StepTime::PauseUntil).map(|ms| format!("a pause, until {}", at_ms(ms)))
        }
        Step::Analysis(analysis) => {
            let start = journal.step_time(key, journal::StepTime::AnalysisStart)?;
            let of = analysis.number_of_judgment_runs;
            Some(match (1..=of).find(|n| journal.judgment(key, *n).is_none()) {
                Some(n) => format!(
                    "analysis: judgment run {n} of {of}, at {}",
                    at_ms(start + i64::from(n) * analysis.interval_seconds as i64 * 1000)
                ),
                None => "analysis: a decision (continue or roll back)".to_owned(),
            })
        }
        Step::SetWeight { .. } | Step::Unsupported { .. } => None,
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::RunWebhook(run) => format!("webhook {}", run.name),
        Step::Pause { pause: Pause::UntilApproved { .. }, .. } => "manual approval".into(),
        Step::Pause { pause: Pause::Seconds(seconds), .. } => format!("pause {seconds}s"),
        Step::SetWeight { weight, .. } => format!("set weight {weight}%"),
        Step::Analysis(_) => "analysis".into(),
        Step::Unsupported { kind, .. } => format!("{kind} (not run)"),
    }
}

#[cfg(test)]
mod tests {
    use borealis_api::TargetState;

    use super::{Journal, steps_of};

    fn steps(yaml: &str, target: &str, journal: &[(&str, &str)], state: TargetState) -> Vec<String> {
        let file = borealis_core::deployment::parse(yaml).expect("the test file parses").file;
        let target = file.targets.iter().find(|t| t.name == target).expect("the target");
        let journal = Journal::new(journal.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        steps_of(Some(&file), target, &journal, state, None)
            .into_iter()
            .map(|s| format!("{} {}", s.state, s.label))
            .collect()
    }

    const HOOKS: &str = "webhooks:\n  - name: a\n    method: POST\n    uriTemplate: http://127.0.0.1:9/a\n    networkMode: direct\n  - name: b\n    method: POST\n    uriTemplate: http://127.0.0.1:9/b\n    networkMode: direct\n";

    #[test]
    fn a_canary_weight_is_read_from_its_action_and_the_step_after_it_is_current() {
        let yaml = format!(
            "application: shop\ntargets:\n  staging:\n    strategy: c\nstrategies:\n  c:\n    canary:\n      steps:\n        - setWeight:\n            weight: 25\n        - runWebhook:\n            name: a\n        - pause:\n            duration: 1\n            unit: seconds\n{HOOKS}"
        );
        let journal = [
            ("staging/action/deploy", "done"),
            ("staging/action/canary/0", "done"),
            ("staging/canary/1/run", "run-id"),
        ];
        assert_eq!(
            steps(&yaml, "staging", &journal, TargetState::Running),
            [
                "done deploy",
                "done canary: set weight 25%",
                "current canary: webhook a",
                "pending canary: pause 1s",
                "pending promote"
            ]
        );
    }

    #[test]
    fn an_approval_after_the_deploy_is_current_from_its_request() {
        let yaml = format!(
            "application: shop\ntargets:\n  prod:\n    strategy: bg\nstrategies:\n  bg:\n    blueGreen:\n      activeService: a\n      previewService: p\n      redirectTrafficAfter:\n        - pause:\n            untilApproved: true\n{HOOKS}"
        );
        let journal = [("prod/action/deploy", "done"), ("event/prod/redirectTrafficAfter/0/requested", "done")];
        assert_eq!(
            steps(&yaml, "prod", &journal, TargetState::AwaitingApproval),
            [
                "done deploy",
                "current redirectTrafficAfter: manual approval",
                "pending redirect traffic",
                "pending promote"
            ]
        );
    }

    #[test]
    fn a_failed_item_cancels_its_siblings_and_what_follows_is_skipped() {
        let yaml = format!(
            "application: shop\ntargets:\n  t:\n    constraints:\n      beforeDeployment:\n        - runWebhook:\n            name: a\n        - runWebhook:\n            name: b\n{HOOKS}"
        );
        let journal = [("t/beforeDeployment/0", "failed: webhook a failed"), ("t/beforeDeployment/1/run", "run-id")];
        assert_eq!(
            steps(&yaml, "t", &journal, TargetState::RolledBack),
            [
                "failed beforeDeployment: webhook a",
                "cancelled beforeDeployment: webhook b",
                "skipped deploy",
                "skipped promote"
            ]
        );
    }
}
