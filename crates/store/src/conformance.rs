//! The behaviour every backend must show, as a suite any backend runs: each
//! case is an `async fn` taking a [`Harness`], and [`conformance_suite!`]
//! expands to one `#[tokio::test]` per case. A backend's tests invoke it:
//!
//! ```ignore
//! borealis_store::conformance_suite!(MyHarness::new());
//! ```
//!
//! The expression is evaluated once per test, so each case gets a fresh
//! database. The calling crate needs `tokio` (`macros`, `rt-multi-thread`).
//! Compiled for this crate's tests and with the `conformance` feature.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::audit::AuditStore;
use crate::cluster::{ClusterStore, ReplicaRecord, ReportedAllowList, SessionRecord};
use crate::console::{ConsoleSession, ConsoleSessionStore, Person};
use crate::credentials::{CredentialKind, CredentialStore};
use crate::deployments::{
    ApprovalState, DECISION_SUFFIX, DeploymentLease, DeploymentState, DeploymentStore, TargetState, Voter,
};
use crate::error::{Conflict, StoreError};
use crate::idempotency::IdempotencyKey;
use crate::identities::{BindingSubject, IdentityStore, PersonalToken, RoleBinding};
use crate::providers::{MetricProvider, MetricProviderStore};
use crate::runs::{Attempt, Claim, Fence, NewRun, Outcome, RunState, RunStore, RunView};
use crate::settings::SettingStore;
use crate::store::{Lifecycle, Store};

/// A database for one test case.
#[async_trait::async_trait]
pub trait Harness: Send + Sync {
    type Store: Store;

    /// Opens the database: empty the first time, and as it was left (every
    /// acknowledged write in it) each time after, as a restarted relay finds it.
    async fn open(&self) -> Self::Store;

    /// Statements the store's connections keep prepared, all together.
    async fn prepared_statements(&self, store: &Self::Store) -> usize;
}

/// What every connection of `pool` keeps prepared, all together: each is
/// held at once, so none is counted twice.
pub async fn prepared_statements<DB>(pool: &sqlx::Pool<DB>) -> usize
where
    DB: sqlx::Database,
    DB::Connection: sqlx::Connection<Database = DB>,
    DB: sqlx::database::HasStatementCache,
{
    use sqlx::Connection;
    // A connection on its way back to the pool is counted once it is there.
    for _ in 0..100 {
        if pool.num_idle() >= pool.size() as usize {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut held = Vec::new();
    for _ in 0..pool.size() {
        held.push(pool.acquire().await.unwrap());
    }
    held.iter().map(|connection| connection.cached_statements_size()).sum()
}

/// One `#[tokio::test]` per conformance case, each on a fresh `$harness`.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:expr) => {
        $crate::conformance_suite!(@cases $harness;
            one_live_credential_per_subject_and_revocation,
            an_idempotency_key_creates_one_row,
            settings_keep_the_first_value,
            run_transitions_are_compare_and_set,
            providers_and_decisions_keep_to_themselves,
            a_deployment_view_is_one_snapshot,
            a_run_view_is_one_snapshot,
            the_deployment_list_carries_each_deployments_own_targets_newest_first,
            lists_page_through_history_by_state_and_name,
            targets_keep_the_place_they_were_first_recorded_in,
            concurrent_writes_keep_their_own_answers_and_survive_a_reopen,
            an_attempt_is_claimed_once_and_fenced_by_its_lease,
            an_attempt_decided_meanwhile_keeps_its_lease_until_recorded,
            a_deployment_lease_fences_its_journal_and_is_taken_over_when_it_lapses,
            replicas_and_their_sessions,
            console_sessions_expire_and_end,
            a_console_session_keeps_its_person,
            text_with_nul_is_stored_replaced,
            secrets_keep_their_uses,
            an_abort_request_stands_once,
            approvals_count_each_voter_once_while_pending,
            teams_and_service_accounts,
            role_bindings_give_roles_in_a_team_to_people_and_groups,
            a_persons_bindings_are_theirs_and_their_groups_in_every_team,
            a_team_may_forbid_approving_ones_own_deployment,
            personal_tokens_are_a_persons_own,
            the_audit_trail_appends_and_filters,
            audit_batches_of_every_size_leave_no_statement_prepared,
            names_and_subjects_are_a_teams_own,
            runs_and_deployments_keep_to_their_team,
            sessions_are_found_by_team_and_agent,
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            // Two workers for all: the snapshot cases need a writer running
            // beside the reader.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::conformance::$case(&$harness).await;
            }
        )*
    };
}

/// The team the cases' objects belong to, unless they are about teams.
const TEAM: &str = crate::DEFAULT_TEAM;

fn new_run(id: &str, callback_id: &str) -> NewRun {
    NewRun {
        id: id.into(),
        team: TEAM.into(),
        callback_id: callback_id.into(),
        webhook: "w".into(),
        environment: None,
        spec: "{}".into(),
        idempotency: None,
    }
}

pub async fn one_live_credential_per_subject_and_revocation<H: Harness>(harness: &H) {
    let store = harness.open().await;
    store.create_credential(CredentialKind::Agent, TEAM, "rna", "c1", b"h1").await.unwrap();
    let err = store.create_credential(CredentialKind::Agent, TEAM, "rna", "c2", b"h2").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::CredentialExists { ref subject, .. }) if subject == "rna"),
        "{err}"
    );
    assert!(err.to_string().contains("\"rna\""), "{err}");
    assert!(!err.is_retryable());
    assert!(store.revoke(CredentialKind::Agent, TEAM, "rna").await.unwrap());
    assert!(!store.credential("c1").await.unwrap().unwrap().is_active());
    store.create_credential(CredentialKind::Agent, TEAM, "rna", "c2", b"h2").await.unwrap();
    assert_eq!(store.active_credential(CredentialKind::Agent, TEAM, "rna").await.unwrap().unwrap().client_id, "c2");
}

pub async fn an_idempotency_key_creates_one_row<H: Harness>(harness: &H) {
    let store = harness.open().await;
    let key = |hash: &str| Some(IdempotencyKey { key: "k1".into(), request_hash: hash.into() });
    store.insert_run(&NewRun { idempotency: key("h"), ..new_run("r1", "c1") }).await.unwrap();
    let again = store.insert_run(&NewRun { idempotency: key("h"), ..new_run("r2", "c2") }).await.unwrap_err();
    assert!(
        matches!(again, StoreError::Conflict(Conflict::IdempotencyKeyUsed { ref id, same_request: true }) if id == "r1"),
        "{again}"
    );
    let other = store.insert_run(&NewRun { idempotency: key("x"), ..new_run("r3", "c3") }).await.unwrap_err();
    assert!(matches!(other, StoreError::Conflict(Conflict::IdempotencyKeyUsed { same_request: false, .. })), "{other}");
    assert!(store.run("r2").await.unwrap().is_none());
    store.insert_run(&new_run("r4", "c4")).await.unwrap();
    store.insert_run(&new_run("r5", "c5")).await.unwrap();

    let deployment_key = IdempotencyKey { key: "k1".into(), request_hash: "h".into() };
    store.insert_deployment("d1", TEAM, "app", "f", "{}", Some(&deployment_key), &lease()).await.unwrap();
    let again =
        store.insert_deployment("d2", TEAM, "app", "f", "{}", Some(&deployment_key), &lease()).await.unwrap_err();
    assert!(
        matches!(again, StoreError::Conflict(Conflict::IdempotencyKeyUsed { ref id, same_request: true }) if id == "d1"),
        "{again}"
    );
    let running = store.insert_deployment("d3", TEAM, "app", "f", "{}", None, &lease()).await.unwrap_err();
    assert!(
        matches!(running, StoreError::Conflict(Conflict::DeploymentInProgress { running: ref id, .. }) if id == "d1"),
        "{running}"
    );
}

pub async fn settings_keep_the_first_value<H: Harness>(harness: &H) {
    let store = harness.open().await;
    assert_eq!(store.setting_or_init("k", b"one".to_vec()).await.unwrap(), b"one");
    assert_eq!(store.setting_or_init("k", b"two".to_vec()).await.unwrap(), b"one");
}

pub async fn console_sessions_expire_and_end<H: Harness>(harness: &H) {
    let store = harness.open().await;
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let session = |id: &[u8], expires_at| ConsoleSession {
        id_hash: id.to_vec(),
        admin_seal: b"seal".to_vec(),
        expires_at,
        person: None,
    };
    store.create_console_session(&session(b"old", now - hour), now - 2 * hour).await.unwrap();
    store.create_console_session(&session(b"live", now + hour), now).await.unwrap();
    let found = store.console_session(b"live", now).await.unwrap().expect("a live session is found");
    assert_eq!(crate::unix_ms(found.expires_at), crate::unix_ms(now + hour));
    assert_eq!((found.id_hash.as_slice(), found.admin_seal.as_slice()), (&b"live"[..], &b"seal"[..]));
    assert_eq!(store.console_session(b"live", now + 2 * hour).await.unwrap(), None, "an expired session is not found");
    assert_eq!(
        store.console_session(b"old", now - 2 * hour).await.unwrap(),
        None,
        "a sign-in forgets expired sessions"
    );
    assert_eq!(store.console_session(b"unknown", now).await.unwrap(), None);
    assert!(store.end_console_session(b"live").await.unwrap());
    assert!(!store.end_console_session(b"live").await.unwrap(), "a session ends once");
    assert_eq!(store.console_session(b"live", now).await.unwrap(), None, "an ended session is not found");
}

/// A session signed in as a person keeps who they are, their groups in
/// order, and reads back so after a reopen; one signed in with the admin
/// token has no person.
pub async fn a_console_session_keeps_its_person<H: Harness>(harness: &H) {
    let store = harness.open().await;
    let now = SystemTime::now();
    let expires_at = now + Duration::from_secs(3600);
    let person = Person {
        subject: "00u1abc".into(),
        name: "Ada Lovelace".into(),
        groups: vec!["platform".into(), "on-call".into(), "admins".into()],
    };
    let signed_in = ConsoleSession {
        id_hash: b"person".to_vec(),
        admin_seal: b"seal".to_vec(),
        expires_at,
        person: Some(person.clone()),
    };
    store.create_console_session(&signed_in, now).await.unwrap();
    let no_groups = Person { groups: Vec::new(), ..person.clone() };
    let lonely = ConsoleSession { id_hash: b"lonely".to_vec(), person: Some(no_groups.clone()), ..signed_in.clone() };
    store.create_console_session(&lonely, now).await.unwrap();
    let admin = ConsoleSession { id_hash: b"admin".to_vec(), person: None, ..signed_in.clone() };
    store.create_console_session(&admin, now).await.unwrap();
    store.close().await;
    drop(store);

    let store = harness.open().await;
    let found = store.console_session(b"person", now).await.unwrap().expect("found");
    assert_eq!(found.person, Some(person), "its person, groups in order");
    assert_eq!(crate::unix_ms(found.expires_at), crate::unix_ms(expires_at));
    assert_eq!(store.console_session(b"lonely", now).await.unwrap().unwrap().person, Some(no_groups));
    let found = store.console_session(b"admin", now).await.unwrap().expect("found");
    assert_eq!(found.person, None, "the admin token's session names no person");
}

pub async fn run_transitions_are_compare_and_set<H: Harness>(harness: &H) {
    let store = harness.open().await;
    let run = new_run("r", "c");
    store.insert_run(&run).await.unwrap();
    assert_eq!(claim(&store, "a", Some("r")).await, ["r"]);
    assert!(claim(&store, "a", Some("r")).await.is_empty(), "only a pending run starts an attempt");
    let fence = Fence { owner: "a", attempt: 1 };
    assert!(store.await_callback("r", &fence, SystemTime::now(), None).await.unwrap());
    assert!(!store.retry_at("r", &fence, SystemTime::now(), "x").await.unwrap(), "only a calling run is retried");
    let verdict = |success: bool| Outcome {
        state: if success { RunState::Succeeded } else { RunState::Failed },
        success: Some(success),
        md_message: Some("m".into()),
        reason: None,
        by_callback: true,
    };
    assert_eq!(store.finish_by_callback("no-such-callback", &verdict(true)).await.unwrap(), None);
    assert_eq!(store.finish_by_callback("c", &verdict(true)).await.unwrap().as_deref(), Some("r"));
    assert_eq!(store.finish_by_callback("c", &verdict(false)).await.unwrap(), None, "the first verdict wins");
    assert!(!store.finish("r", &RunState::UNFINISHED, &verdict(false)).await.unwrap(), "the first verdict wins");
    let stored = store.run_by_callback("c").await.unwrap().unwrap();
    assert_eq!((stored.state, stored.success, stored.attempts), (RunState::Succeeded, Some(true), 1));
    assert!(stored.callback_at.is_some() && stored.finished_at.is_some());
    assert!(store.unfinished_runs().await.unwrap().is_empty());
}

pub async fn providers_and_decisions_keep_to_themselves<H: Harness>(harness: &H) {
    let store = harness.open().await;
    let provider = MetricProvider {
        team: TEAM.into(),
        name: "prom".into(),
        kind: "prometheus".into(),
        url: "http://p:9090".into(),
        agent: Some("rna".into()),
        headers: vec![("Authorization".into(), "Bearer {{secrets.t}}".into())],
        created_at: UNIX_EPOCH + Duration::from_secs(1),
    };
    store.insert_provider(&provider).await.unwrap();
    assert!(matches!(
        store.insert_provider(&provider).await,
        Err(StoreError::Conflict(Conflict::ProviderExists { ref name })) if name == "prom"
    ));
    assert_eq!(store.provider(TEAM, "prom").await.unwrap(), Some(provider.clone()));
    assert_eq!(store.providers(None).await.unwrap(), [provider]);
    assert!(store.delete_provider(TEAM, "prom").await.unwrap());
    assert!(!store.delete_provider(TEAM, "prom").await.unwrap());

    store.insert_deployment("d", TEAM, "app", "file", "{}", None, &lease()).await.unwrap();
    store.request_approval("d", OWNER, "t", "t/beforeDeployment/0").await.unwrap();
    store.request_approval("d", OWNER, "t", &format!("t/beforeDeployment/1{DECISION_SUFFIX}")).await.unwrap();
    assert_eq!(store.decide_approvals("d", "t", ApprovalState::Approved, true, "alice").await.unwrap(), 1);
    assert_eq!(store.approval("d", "t/beforeDeployment/0").await.unwrap(), Some(ApprovalState::Pending));
    assert_eq!(store.decide_approvals("d", "t", ApprovalState::Rejected, false, "bob").await.unwrap(), 1);
    assert_eq!(store.approval("d", "t/beforeDeployment/0").await.unwrap(), Some(ApprovalState::Rejected));
    let decision = format!("t/beforeDeployment/1{DECISION_SUFFIX}");
    assert_eq!(store.approval("d", &decision).await.unwrap(), Some(ApprovalState::Approved));
    assert_eq!(store.approval_decided_by("d", &decision).await.unwrap().as_deref(), Some("alice"));
    assert_eq!(store.approval_decided_by("d", "t/beforeDeployment/0").await.unwrap().as_deref(), Some("bob"));
}

/// A deployment's view is one snapshot: while a writer adds a journal
/// entry, then an event, then moves the target on, round after round, no
/// view shows a later write without the earlier ones.
pub async fn a_deployment_view_is_one_snapshot<H: Harness>(harness: &H) {
    let store = Arc::new(harness.open().await);
    assert!(store.deployment_view("d").await.unwrap().is_none());
    store.insert_deployment("d", TEAM, "app", "file", "{}", None, &lease()).await.unwrap();
    let run = new_run("r", "c");
    store.insert_run(&run).await.unwrap();
    store.set_target("d", OWNER, "t", TargetState::Running, Some("0"), None).await.unwrap();
    const ROUNDS: usize = 150;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for round in 1..=ROUNDS {
                let value = if round == 1 { "r".to_owned() } else { format!("v{round}") };
                store.put_journal("d", &format!("t/{round}/run"), &value).await.unwrap();
                store.add_event("d", OWNER, Some("t"), "step", &format!("round {round}")).await.unwrap();
                store.set_target("d", OWNER, "t", TargetState::Running, Some(&round.to_string()), None).await.unwrap();
            }
        })
    };
    let mut views = 0;
    loop {
        let finished = writer.is_finished();
        let view = store.deployment_view("d").await.unwrap().expect("the deployment exists");
        let (journal, events) = (view.journal.len(), view.events.len());
        let round: usize = view.targets[0].step.as_deref().expect("the round").parse().unwrap();
        assert!(
            journal >= events && events >= round && journal <= round + 1,
            "a torn view: {journal} journal entries, {events} events, target at round {round}"
        );
        assert_eq!(view.runs.len(), usize::from(journal > 0), "the journal's run is in the view with it");
        views += 1;
        if finished {
            assert_eq!((journal, events, round), (ROUNDS, ROUNDS, ROUNDS));
            break;
        }
    }
    assert!(views > 1, "the view was read while the writer ran");
    writer.await.unwrap();
}

/// A run's view is one snapshot: while a writer starts an attempt,
/// logs it and sets the run back to pending, round after round, no view
/// shows more attempts logged than the run has started, nor a pending
/// run whose last attempt is missing from the log.
pub async fn a_run_view_is_one_snapshot<H: Harness>(harness: &H) {
    let store = Arc::new(harness.open().await);
    assert!(store.run_view("r").await.unwrap().is_none());
    store.insert_run(&new_run("r", "c")).await.unwrap();
    const ROUNDS: u32 = 150;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for number in 1..=ROUNDS {
                let attempt = Attempt {
                    number,
                    started_at: SystemTime::now(),
                    latency_ms: 1,
                    status: Some(500),
                    error: None,
                    reply: None,
                };
                // In the relay's order, one after the other: calls made at
                // once have no order on a backend with a pool of writers
                // (Postgres), so the log could be ahead of the run for real.
                // A view read in two parts can still straddle the two commits.
                assert_eq!(claim(&*store, "a", Some("r")).await, ["r"]);
                let fence = Fence { owner: "a", attempt: number };
                assert!(store.record_attempt("r", &fence, &attempt).await.unwrap());
                assert!(store.retry_at("r", &fence, SystemTime::now(), "again").await.unwrap());
            }
        })
    };
    let mut views = 0;
    loop {
        let finished = writer.is_finished();
        let RunView { run, attempts } = store.run_view("r").await.unwrap().expect("the run exists");
        let logged = attempts.len() as u32;
        assert!(
            logged <= run.attempts && (run.state != RunState::Pending || logged == run.attempts),
            "a torn view: run {} with {} attempts started, {logged} logged",
            run.state.as_str(),
            run.attempts
        );
        assert!(attempts.iter().zip(1..).all(|(a, n)| a.number == n), "the log is in order");
        views += 1;
        if finished {
            assert_eq!((run.attempts, logged), (ROUNDS, ROUNDS));
            break;
        }
    }
    assert!(views > 1, "the view was read while the writer ran");
    writer.await.unwrap();
}

pub async fn the_deployment_list_carries_each_deployments_own_targets_newest_first<H: Harness>(harness: &H) {
    let store = harness.open().await;
    for (id, targets) in [("d1", &["a", "b"][..]), ("d2", &["c"][..]), ("d3", &[][..])] {
        store.insert_deployment(id, TEAM, &format!("app-{id}"), "file", "{}", None, &lease()).await.unwrap();
        for target in targets {
            store.set_target(id, OWNER, target, TargetState::Waiting, None, None).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let listed = store.deployments(2).await.unwrap();
    let shown: Vec<(&str, Vec<&str>)> = listed
        .iter()
        .map(|(record, targets)| (record.id.as_str(), targets.iter().map(|t| t.target.as_str()).collect()))
        .collect();
    assert_eq!(shown, [("d3", vec![]), ("d2", vec!["c"])]);
    let all = store.deployments(10).await.unwrap();
    assert_eq!(all[2].0.id, "d1");
    assert_eq!(all[2].1.iter().map(|t| t.target.as_str()).collect::<Vec<_>>(), ["a", "b"]);
}

/// A page starts after the cursor it is given and keeps to its filters;
/// every item comes on exactly one page.
pub async fn lists_page_through_history_by_state_and_name<H: Harness>(harness: &H) {
    let store = harness.open().await;
    // Five deployments of two applications; all but the newest ended.
    for n in 0..5 {
        let (id, app) = (format!("d{n}"), if n % 2 == 0 { "shop" } else { "api" });
        store.insert_deployment(&id, TEAM, app, "file", "{}", None, &lease()).await.unwrap();
        store.set_target(&id, OWNER, "prod", TargetState::Waiting, None, None).await.unwrap();
        if n < 4 {
            let state = if n == 1 { DeploymentState::Failed } else { DeploymentState::Succeeded };
            store.finish_deployment(&id, OWNER, state, None).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let ids = |listed: &[(crate::DeploymentRecord, Vec<crate::TargetRecord>)]| {
        listed.iter().map(|(d, _)| d.id.clone()).collect::<Vec<_>>()
    };
    let mut page = crate::Page { limit: 2, ..Default::default() };
    let mut seen = Vec::new();
    loop {
        let listed = store.deployments_page(&page).await.unwrap();
        assert!(listed.iter().all(|(_, targets)| targets.len() == 1), "each with its own target");
        seen.extend(ids(&listed));
        let Some((last, _)) = listed.last() else { break };
        page.after = Some(crate::Cursor { created_at: crate::unix_ms(last.created_at), id: last.id.clone() });
    }
    assert_eq!(seen, ["d4", "d3", "d2", "d1", "d0"], "every one, once, newest first");
    let shop = crate::Page { name: Some("shop".into()), limit: 10, ..Default::default() };
    assert_eq!(ids(&store.deployments_page(&shop).await.unwrap()), ["d4", "d2", "d0"]);
    let ended = crate::Page { state: Some("succeeded".into()), ..shop.clone() };
    assert_eq!(ids(&store.deployments_page(&ended).await.unwrap()), ["d2", "d0"]);
    let failed = crate::Page { state: Some("failed".into()), limit: 10, ..Default::default() };
    assert_eq!(ids(&store.deployments_page(&failed).await.unwrap()), ["d1"]);

    // Runs the same way, by webhook.
    for n in 0..4 {
        let webhook = if n % 2 == 0 { "scan" } else { "tests" };
        let run = NewRun { webhook: webhook.into(), ..new_run(&format!("r{n}"), &format!("c{n}")) };
        store.insert_run(&run).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let outcome = crate::Outcome {
        state: RunState::Cancelled,
        success: None,
        md_message: None,
        reason: None,
        by_callback: false,
    };
    assert!(store.finish("r2", &RunState::UNFINISHED, &outcome).await.unwrap());
    let run_ids = |runs: Vec<crate::RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let scans = crate::Page { name: Some("scan".into()), limit: 1, ..Default::default() };
    let first = store.runs_page(&scans).await.unwrap();
    assert_eq!(run_ids(first.clone()), ["r2"]);
    let next = crate::Page {
        after: Some(crate::Cursor { created_at: crate::unix_ms(first[0].created_at), id: first[0].id.clone() }),
        ..scans.clone()
    };
    assert_eq!(run_ids(store.runs_page(&next).await.unwrap()), ["r0"]);
    let pending = crate::Page { state: Some("pending".into()), limit: 10, ..Default::default() };
    assert_eq!(run_ids(store.runs_page(&pending).await.unwrap()), ["r3", "r1", "r0"]);
}

/// Targets are listed in the order they were first recorded, whatever their
/// names and however often they change; a finished deployment keeps its state.
pub async fn targets_keep_the_place_they_were_first_recorded_in<H: Harness>(harness: &H) {
    let store = harness.open().await;
    store.insert_deployment("d", TEAM, "app", "file", "{}", None, &lease()).await.unwrap();
    for target in ["zeta", "alpha", "mid"] {
        store.set_target("d", OWNER, target, TargetState::Waiting, Some("waiting to start"), None).await.unwrap();
    }
    store.set_target("d", OWNER, "alpha", TargetState::Deployed, None, None).await.unwrap();
    store.set_target("d", OWNER, "zeta", TargetState::RolledBack, None, Some("why")).await.unwrap();
    let targets = store.targets("d").await.unwrap();
    let shown: Vec<(&str, TargetState)> = targets.iter().map(|t| (t.target.as_str(), t.state)).collect();
    assert_eq!(
        shown,
        [("zeta", TargetState::RolledBack), ("alpha", TargetState::Deployed), ("mid", TargetState::Waiting)]
    );
    assert_eq!(serde_json::to_value(&targets[0]).unwrap()["state"], "rolled_back");
    let view = store.deployment_view("d").await.unwrap().unwrap();
    assert_eq!(view.targets.iter().map(|t| t.target.as_str()).collect::<Vec<_>>(), ["zeta", "alpha", "mid"]);
    assert_eq!(view.record.state, DeploymentState::Running);
    store.finish_deployment("d", OWNER, DeploymentState::Failed, Some("zeta: rolled_back")).await.unwrap();
    store.finish_deployment("d", OWNER, DeploymentState::Succeeded, None).await.unwrap();
    let record = store.deployment("d").await.unwrap().unwrap();
    assert_eq!((record.state, record.reason.as_deref()), (DeploymentState::Failed, Some("zeta: rolled_back")));
    assert!(store.unfinished_deployments().await.unwrap().is_empty());
}

/// Writes that share a group commit keep their own answers: a conflict
/// or a lost compare-and-set in one does not undo the others, and what
/// was acknowledged is in the file when it is opened again.
pub async fn concurrent_writes_keep_their_own_answers_and_survive_a_reopen<H: Harness>(harness: &H) {
    let store = Arc::new(harness.open().await);
    store.insert_run(&new_run("r0", "c0")).await.unwrap();
    assert_eq!(claim(&*store, "a", Some("r0")).await, ["r0"]);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=200 {
        let (runs, credentials, verdicts) = (store.clone(), store.clone(), store.clone());
        let run = new_run(&format!("r{i}"), &format!("c{i}"));
        tasks.spawn(async move { ("run", runs.insert_run(&run).await.map(|()| true)) });
        // Two credentials per subject: one of each pair is refused.
        let (subject, client_id) = (format!("s{}", i / 2), format!("id{i}"));
        tasks.spawn(async move {
            let made = credentials.create_credential(CredentialKind::Callback, TEAM, &subject, &client_id, b"h").await;
            let made = match made {
                Ok(_) => Ok(true),
                Err(StoreError::Conflict(_)) => Ok(false),
                Err(other) => Err(other),
            };
            ("credential", made)
        });
        // Everyone races to decide run r0: one wins.
        tasks.spawn(async move {
            let outcome = Outcome {
                state: RunState::Succeeded,
                success: Some(true),
                md_message: Some(format!("by {i}")),
                reason: None,
                by_callback: true,
            };
            ("finish", verdicts.finish("r0", &RunState::UNFINISHED, &outcome).await)
        });
    }
    let mut counts = std::collections::HashMap::<(&str, bool), usize>::new();
    while let Some(done) = tasks.join_next().await {
        let (kind, result) = done.unwrap();
        *counts.entry((kind, result.unwrap())).or_default() += 1;
    }
    assert_eq!(counts.get(&("run", true)), Some(&200));
    assert_eq!((counts.get(&("credential", true)), counts.get(&("credential", false))), (Some(&101), Some(&99)));
    assert_eq!((counts.get(&("finish", true)), counts.get(&("finish", false))), (Some(&1), Some(&199)));
    store.close().await;
    drop(store);

    let reopened = harness.open().await;
    assert_eq!(reopened.runs(1000).await.unwrap().len(), 201);
    assert_eq!(reopened.active_credentials(CredentialKind::Callback, None).await.unwrap().len(), 101);
    assert_eq!(reopened.run("r0").await.unwrap().unwrap().state, RunState::Succeeded);
}

/// The replica that creates deployments in these cases.
const OWNER: &str = "replica-a";

fn lease() -> DeploymentLease<'static> {
    DeploymentLease { owner: OWNER, until: SystemTime::now() + Duration::from_secs(60) }
}

/// Claims due attempts for `owner` (just `only`, if given) with a minute's
/// lease; returns the ids claimed.
async fn claim(store: &impl RunStore, owner: &str, only: Option<&str>) -> Vec<String> {
    let claim =
        Claim { owner, now: SystemTime::now(), lease_until: SystemTime::now() + Duration::from_secs(60), limit: 100 };
    store.claim_due(&claim, only).await.unwrap().into_iter().map(|run| run.id).collect()
}

/// Of two replicas claiming the same due runs, each run goes to one; the
/// attempt's writes land only while its owner holds the lease; a lease that
/// lapses is taken over with the attempt's number, and the first owner's
/// late writes then change nothing.
pub async fn an_attempt_is_claimed_once_and_fenced_by_its_lease<H: Harness>(harness: &H) {
    let store = Arc::new(harness.open().await);
    for i in 0..20 {
        store.insert_run(&new_run(&format!("r{i}"), &format!("c{i}"))).await.unwrap();
    }
    let (a, b) = tokio::join!(claim(&*store, "a", None), claim(&*store, "b", None));
    let mut all: Vec<&String> = a.iter().chain(&b).collect();
    all.sort();
    all.dedup();
    assert_eq!((a.len() + b.len(), all.len()), (20, 20), "every run claimed once: a {a:?}, b {b:?}");
    let run = store.run("r0").await.unwrap().unwrap();
    let owner = run.lease_owner.clone().expect("a claimed run names its owner");
    let other = if owner == "a" { "b" } else { "a" };
    assert_eq!((run.state, run.attempts), (RunState::Calling, 1));

    let attempt = |error: &str| Attempt {
        number: 1,
        started_at: SystemTime::now(),
        latency_ms: 0,
        status: None,
        error: Some(error.into()),
        reply: None,
    };
    let wrong = Fence { owner: other, attempt: 1 };
    assert!(!store.set_request("r0", &wrong, "{}").await.unwrap());
    assert!(!store.record_attempt("r0", &wrong, &attempt("not the owner")).await.unwrap());
    assert!(!store.retry_at("r0", &wrong, SystemTime::now(), "x").await.unwrap());
    assert!(!store.await_callback("r0", &Fence { owner: &owner, attempt: 2 }, SystemTime::now(), None).await.unwrap());
    assert!(store.run_view("r0").await.unwrap().unwrap().attempts.is_empty());

    // Nothing lapsed yet; then the owner "dies" and the lease runs out.
    let now = SystemTime::now();
    let takeover = Claim { owner: other, now, lease_until: now + Duration::from_secs(60), limit: 100 };
    assert!(store.claim_expired(&takeover).await.unwrap().is_empty());
    let owned_ids = if owner == "a" { &a } else { &b };
    let owned = owned_ids.len();
    assert_eq!(store.renew_run_leases(&owner, &[], now + Duration::from_secs(60)).await.unwrap(), 0);
    assert_eq!(
        store.renew_run_leases(other, owned_ids, now + Duration::from_secs(60)).await.unwrap(),
        0,
        "only the owner renews"
    );
    assert_eq!(store.renew_run_leases(&owner, owned_ids, now - Duration::from_secs(1)).await.unwrap(), owned as u64);
    let taken = store.claim_expired(&takeover).await.unwrap();
    assert_eq!(taken.len(), owned, "the first owner's runs");
    assert!(taken.iter().all(|run| run.lease_owner.as_deref() == Some(other) && run.attempts == 1));
    assert!(store.claim_expired(&takeover).await.unwrap().is_empty(), "taken over once");

    let late = Fence { owner: &owner, attempt: 1 };
    let new = Fence { owner: other, attempt: 1 };
    assert!(!store.record_attempt("r0", &late, &attempt("late")).await.unwrap(), "the lost owner writes nothing");
    assert!(store.record_attempt("r0", &new, &attempt("cut off")).await.unwrap());
    assert!(!store.finish_attempt("r0", &late, &failed()).await.unwrap());
    assert!(store.retry_at("r0", &new, SystemTime::now(), "again").await.unwrap());
    let view = store.run_view("r0").await.unwrap().unwrap();
    assert_eq!(view.attempts.len(), 1);
    assert_eq!(view.attempts[0].error.as_deref(), Some("cut off"));
    assert_eq!(claim(&*store, &owner, Some("r0")).await, ["r0"], "the retry is claimed afresh");
    let run = store.run("r0").await.unwrap().unwrap();
    assert_eq!((run.state, run.attempts), (RunState::Calling, 2));
    assert!(store.finish_attempt("r0", &Fence { owner: &owner, attempt: 2 }, &failed()).await.unwrap());
    assert_eq!(store.run("r0").await.unwrap().unwrap().state, RunState::Failed);

    // Deadlines due are found by anyone.
    store.insert_run(&new_run("w", "cw")).await.unwrap();
    assert_eq!(claim(&*store, "a", Some("w")).await, ["w"]);
    let fence = Fence { owner: "a", attempt: 1 };
    assert!(store.await_callback("w", &fence, SystemTime::now() - Duration::from_secs(1), None).await.unwrap());
    let due = store.due_deadlines(SystemTime::now(), 100).await.unwrap();
    assert_eq!(due.iter().map(|run| run.id.as_str()).collect::<Vec<_>>(), ["w"]);
}

/// An attempt records that its request is going out; a callback that
/// decides the run while the attempt is under way leaves the attempt's
/// lease, which the owner renews until it records the attempt and lets go;
/// should the owner die, whoever takes the lapsed lease over records it.
pub async fn an_attempt_decided_meanwhile_keeps_its_lease_until_recorded<H: Harness>(harness: &H) {
    let store = harness.open().await;
    for id in ["r1", "r2"] {
        store.insert_run(&new_run(id, &format!("c-{id}"))).await.unwrap();
        assert_eq!(claim(&store, "a", Some(id)).await, [id]);
    }
    let fence = Fence { owner: "a", attempt: 1 };
    assert_eq!(store.run("r1").await.unwrap().unwrap().request_attempt, None, "claimed, not sent");
    assert!(store.set_request("r1", &fence, "{}").await.unwrap());
    assert_eq!(store.run("r1").await.unwrap().unwrap().request_attempt, Some(1));

    let by_callback =
        Outcome { state: RunState::Succeeded, success: Some(true), md_message: None, reason: None, by_callback: true };
    for id in ["r1", "r2"] {
        assert_eq!(store.finish_by_callback(&format!("c-{id}"), &by_callback).await.unwrap().as_deref(), Some(id));
    }
    let now = SystemTime::now();
    let ids = ["r1".to_owned(), "r2".to_owned()];
    assert_eq!(store.renew_run_leases("a", &ids, now + Duration::from_secs(60)).await.unwrap(), 2, "still leased");
    let takeover = Claim { owner: "b", now, lease_until: now + Duration::from_secs(60), limit: 10 };
    assert!(store.claim_expired(&takeover).await.unwrap().is_empty(), "the leases hold");

    // The owner of r1 records its attempt and lets go; r2's owner dies.
    let answered = Attempt {
        number: 1,
        started_at: now,
        latency_ms: 5,
        status: Some(202),
        error: None,
        reply: Some("accepted".into()),
    };
    assert!(store.record_attempt("r1", &fence, &answered).await.unwrap());
    store.release_finished("r1", &fence).await.unwrap();
    assert_eq!(store.run("r1").await.unwrap().unwrap().lease_until, None);
    assert_eq!(store.renew_run_leases("a", &ids, now - Duration::from_secs(1)).await.unwrap(), 1, "r2's only");
    let taken = store.claim_expired(&takeover).await.unwrap();
    assert_eq!(taken.iter().map(|run| run.id.as_str()).collect::<Vec<_>>(), ["r2"]);
    assert_eq!((taken[0].state, taken[0].attempts), (RunState::Succeeded, 1));
    let by_b = Fence { owner: "b", attempt: 1 };
    assert!(store.record_attempt("r2", &by_b, &answered).await.unwrap());
    store.release_finished("r2", &by_b).await.unwrap();
    assert!(store.claim_expired(&Claim { now: now + Duration::from_secs(3600), ..takeover }).await.unwrap().is_empty());
    assert_eq!(store.run_view("r2").await.unwrap().unwrap().attempts.len(), 1);
    assert_eq!(store.run("r2").await.unwrap().unwrap().state, RunState::Succeeded, "the callback's decision stays");
}

fn failed() -> Outcome {
    Outcome { state: RunState::Failed, success: None, md_message: None, reason: Some("x".into()), by_callback: false }
}

/// A deployment belongs to the replica that created it; its journal and
/// its end are written only by the lease's holder; when the lease lapses
/// (or is released) another replica claims it, once.
pub async fn a_deployment_lease_fences_its_journal_and_is_taken_over_when_it_lapses<H: Harness>(harness: &H) {
    let store = harness.open().await;
    store.insert_deployment("d", TEAM, "app", "file", "{}", None, &lease()).await.unwrap();
    store.replace_journal("d", OWNER, "t/deploy", "started").await.unwrap();
    let lost = store.replace_journal("d", "replica-b", "t/deploy", "done").await.unwrap_err();
    assert!(matches!(lost, StoreError::Conflict(Conflict::LeaseLost { .. })), "{lost}");
    let now = SystemTime::now();
    let claim = |owner| Claim { owner, now, lease_until: now + Duration::from_secs(60), limit: 10 };
    assert!(store.claim_deployments(&claim("replica-b")).await.unwrap().is_empty(), "the lease holds");
    assert_eq!(store.renew_deployment_leases(OWNER, now + Duration::from_secs(30)).await.unwrap(), ["d"]);

    store.release_deployments(OWNER).await.unwrap();
    let (b, c) = (
        store.claim_deployments(&claim("replica-b")).await.unwrap(),
        store.claim_deployments(&claim("replica-c")).await.unwrap(),
    );
    assert_eq!((b.as_slice(), c.as_slice()), (&["d".to_owned()][..], &[][..]));
    assert!(store.renew_deployment_leases(OWNER, now).await.unwrap().is_empty(), "the first owner lost it");
    let lost = store.replace_journal("d", OWNER, "t/deploy", "done").await.unwrap_err();
    assert!(matches!(lost, StoreError::Conflict(Conflict::LeaseLost { .. })), "{lost}");
    let lost = store.finish_deployment("d", OWNER, DeploymentState::Succeeded, None).await.unwrap_err();
    assert!(matches!(lost, StoreError::Conflict(Conflict::LeaseLost { .. })), "{lost}");
    store.replace_journal("d", "replica-b", "t/deploy", "done").await.unwrap();
    assert_eq!(store.journal("d").await.unwrap(), [("t/deploy".to_owned(), "done".to_owned())]);

    // Every other write of the lease owner's is fenced the same way.
    store.insert_run(&new_run("step", "c-step")).await.unwrap();
    let lost = |result: Result<(), StoreError>, what: &str| {
        let err = result.expect_err(what);
        assert!(matches!(err, StoreError::Conflict(Conflict::LeaseLost { .. })), "{what}: {err}");
    };
    lost(store.set_target("d", OWNER, "t", TargetState::Running, Some("late"), None).await, "target state");
    lost(store.add_event("d", OWNER, Some("t"), "late", "from the old owner").await, "event");
    lost(store.request_approval("d", OWNER, "t", "t/approval").await.map(|_| ()), "approval");
    lost(store.cancel_approval("d", OWNER, "t/approval").await, "approval's cancel");
    lost(store.cancel_step_run("d", OWNER, "step", "late").await.map(|_| ()), "step's run");
    let view = store.deployment_view("d").await.unwrap().unwrap();
    assert!(view.targets.is_empty() && view.events.is_empty() && view.pending_approvals.is_empty(), "{view:?}");
    assert_eq!(store.run("step").await.unwrap().unwrap().state, RunState::Pending);
    store.set_target("d", "replica-b", "t", TargetState::Running, Some("now"), None).await.unwrap();
    store.add_event("d", "replica-b", Some("t"), "step", "from the new owner").await.unwrap();
    assert_eq!(store.request_approval("d", "replica-b", "t", "t/approval").await.unwrap(), ApprovalState::Pending);
    assert_eq!(store.request_approval("d", "replica-b", "t", "t/approval").await.unwrap(), ApprovalState::Pending);
    assert_eq!(store.deployment_view("d").await.unwrap().unwrap().pending_approvals.len(), 1);
    store.cancel_approval("d", "replica-b", "t/approval").await.unwrap();
    store.cancel_approval("d", "replica-b", "t/approval").await.unwrap();
    assert_eq!(store.approval("d", "t/approval").await.unwrap(), Some(ApprovalState::Cancelled));
    assert!(store.cancel_step_run("d", "replica-b", "step", "cancelled").await.unwrap());
    assert!(!store.cancel_step_run("d", "replica-b", "step", "cancelled").await.unwrap(), "once");
    assert_eq!(store.run("step").await.unwrap().unwrap().state, RunState::Cancelled);
    let view = store.deployment_view("d").await.unwrap().unwrap();
    assert_eq!((view.targets.len(), view.events.len()), (1, 1));
    store.finish_deployment("d", "replica-b", DeploymentState::Succeeded, None).await.unwrap();
    lost(store.add_event("d", "replica-b", None, "late", "after the end").await, "an event after the end");
    // Finished: the end stays, whoever asks.
    store.finish_deployment("d", OWNER, DeploymentState::Failed, None).await.unwrap();
    assert_eq!(store.deployment("d").await.unwrap().unwrap().state, DeploymentState::Succeeded);
    assert!(store.claim_deployments(&claim("replica-c")).await.unwrap().is_empty());
}

/// Any replica may ask a deployment to stop: the first request stands, and
/// an ended deployment is not asked.
pub async fn an_abort_request_stands_once<H: Harness>(harness: &H) {
    let store = harness.open().await;
    assert!(store.request_abort("none", "why", true, "alice").await.unwrap().is_none(), "no such deployment");
    store.insert_deployment("d", TEAM, "app", "f", "{}", None, &lease()).await.unwrap();
    store.insert_deployment("e", TEAM, "other", "f", "{}", None, &lease()).await.unwrap();
    assert!(store.deployment("d").await.unwrap().unwrap().abort.is_none());

    let asked = store.request_abort("d", "bad build", false, "alice").await.unwrap().unwrap();
    let abort = asked.abort.expect("asked");
    assert_eq!((abort.reason.as_str(), abort.rollback), ("bad build", false));
    assert_eq!(abort.requested_by.as_deref(), Some("alice"));
    assert!(abort.requested_at > SystemTime::UNIX_EPOCH);
    assert_eq!(asked.state, DeploymentState::Running, "asked, not ended: the holder ends it");
    let again = store.request_abort("d", "second thoughts", true, "bob").await.unwrap().unwrap();
    assert_eq!(again.abort, Some(abort), "the first request stands, with who asked");

    store.finish_deployment("d", OWNER, DeploymentState::Aborted, Some("aborted: bad build")).await.unwrap();
    store.finish_deployment("e", OWNER, DeploymentState::Succeeded, None).await.unwrap();
    let ended = store.request_abort("e", "too late", true, "bob").await.unwrap().unwrap();
    assert!(ended.abort.is_none(), "an ended deployment is not asked");
    let view = store.deployment_view("d").await.unwrap().unwrap();
    assert_eq!(view.record.state, DeploymentState::Aborted);
    let abort = view.record.abort.expect("asked");
    assert_eq!((abort.reason.as_str(), abort.requested_by.as_deref()), ("bad build", Some("alice")));
}

/// Each voter (by its id) counts once toward an approval, and only while
/// it is pending; voters come back in the order they voted. A decision
/// names who made it. A deployment's view shows the votes of its pending
/// approvals only. Votes are not the lease holder's: anyone may cast one.
pub async fn approvals_count_each_voter_once_while_pending<H: Harness>(harness: &H) {
    let store = harness.open().await;
    let voter = |id: &str, name: &str| Voter { id: id.into(), name: name.into() };
    let alice = voter("user:alice", "Alice");
    let ci = voter("service_account:sa1", "ci (payments)");
    let carol = voter("user:carol", "Carol");
    store.insert_deployment("d", TEAM, "app", "f", "{}", None, &lease()).await.unwrap();
    assert!(store.vote_approval("d", "t/0", &alice).await.unwrap().is_empty(), "no such approval: nothing counts");
    assert!(store.vote_approval("none", "t/0", &alice).await.unwrap().is_empty(), "no such deployment");
    for (target, step_key) in [("t", "t/0"), ("t", "t/1"), ("u", "u/0"), ("v", "v/0")] {
        store.request_approval("d", OWNER, target, step_key).await.unwrap();
    }
    assert_eq!(store.approval_decided_by("d", "t/0").await.unwrap(), None, "pending: nobody decided it");

    assert_eq!(store.vote_approval("d", "t/0", &ci).await.unwrap(), std::slice::from_ref(&ci));
    assert_eq!(store.vote_approval("d", "u/0", &carol).await.unwrap(), std::slice::from_ref(&carol));
    let both = [ci.clone(), alice.clone()];
    assert_eq!(store.vote_approval("d", "t/0", &alice).await.unwrap(), both, "in the order they voted");
    // Voting again, even under another name, counts once and keeps its place.
    assert_eq!(store.vote_approval("d", "t/0", &voter(&ci.id, "renamed")).await.unwrap(), both);
    assert_eq!(store.vote_approval("d", "t/0", &alice).await.unwrap(), both);
    assert_eq!(
        store.vote_approval("d", "t/1", &alice).await.unwrap(),
        std::slice::from_ref(&alice),
        "each approval its own"
    );
    assert_eq!(store.vote_approval("d", "v/0", &carol).await.unwrap(), std::slice::from_ref(&carol));
    let votes = |view: crate::DeploymentView| {
        view.approval_votes.into_iter().map(|(step_key, voter)| format!("{step_key} {}", voter.id)).collect::<Vec<_>>()
    };
    let view = store.deployment_view("d").await.unwrap().unwrap();
    assert_eq!(
        votes(view),
        ["t/0 service_account:sa1", "u/0 user:carol", "t/0 user:alice", "t/1 user:alice", "v/0 user:carol"],
        "every pending approval's votes, in the order they were cast"
    );

    // Deciding names the decider of each approval it decides.
    assert_eq!(store.decide_approvals("d", "t", ApprovalState::Approved, false, "Alice").await.unwrap(), 2);
    for step_key in ["t/0", "t/1"] {
        assert_eq!(store.approval_decided_by("d", step_key).await.unwrap().as_deref(), Some("Alice"), "{step_key}");
    }
    assert_eq!(store.approval_decided_by("d", "u/0").await.unwrap(), None, "another target's is pending");
    assert_eq!(store.vote_approval("d", "t/0", &carol).await.unwrap(), both, "decided: the vote records nothing");
    assert_eq!(store.decide_approvals("d", "u", ApprovalState::Rejected, false, "Carol").await.unwrap(), 1);
    assert_eq!(store.approval_decided_by("d", "u/0").await.unwrap().as_deref(), Some("Carol"), "a rejection too");
    assert_eq!(store.decide_approvals("d", "u", ApprovalState::Approved, false, "Alice").await.unwrap(), 0);
    assert_eq!(store.approval_decided_by("d", "u/0").await.unwrap().as_deref(), Some("Carol"), "decided once");
    assert_eq!(votes(store.deployment_view("d").await.unwrap().unwrap()), ["v/0 user:carol"], "pending ones' only");

    // A cancelled approval names no decider and takes no more votes.
    store.cancel_approval("d", OWNER, "v/0").await.unwrap();
    assert_eq!(store.approval_decided_by("d", "v/0").await.unwrap(), None);
    assert_eq!(store.vote_approval("d", "v/0", &alice).await.unwrap(), [carol]);
    assert!(store.deployment_view("d").await.unwrap().unwrap().approval_votes.is_empty());
    assert_eq!(store.approval_decided_by("d", "none").await.unwrap(), None, "no such approval");
}

/// Replicas record themselves and their agents' sessions; a replica not
/// seen lately hides its sessions, and forgetting it removes them.
pub async fn replicas_and_their_sessions<H: Harness>(harness: &H) {
    let store = harness.open().await;
    let now = SystemTime::now();
    let replica = |id: &str, seen_at| ReplicaRecord {
        id: id.into(),
        name: format!("relay-{id}"),
        peer_url: Some(format!("http://{id}")),
        started_at: now - Duration::from_secs(100),
        seen_at,
    };
    // When the store recorded `id` seen: its own clock's time, where it has one.
    let seen = |id: &'static str| {
        let store = &store;
        async move {
            let record = replica(id, SystemTime::now());
            let recorded = store.replica_seen(&record).await.unwrap().unwrap_or(record.seen_at);
            tokio::time::sleep(Duration::from_millis(50)).await;
            recorded
        }
    };
    seen("b").await;
    let a_seen = seen("a").await;
    // b was seen before this, a after.
    let since = a_seen - Duration::from_millis(25);
    let session = |id: &str, replica: &str, agent: &str| SessionRecord {
        session_id: id.into(),
        replica_id: replica.into(),
        team: TEAM.into(),
        agent_id: agent.into(),
        instance: format!("host-{id}"),
        version: "1.0".into(),
        remote_addr: Some("127.0.0.1:1".into()),
        connected_at: now,
        allow_list: None,
    };
    let reported = ReportedAllowList { rules: vec!["api.internal:443".into(), "10.0.0.0/8".into()], any: false };
    store
        .put_session(&SessionRecord { allow_list: Some(reported.clone()), ..session("s1", "a", "rna") })
        .await
        .unwrap();
    store.put_session(&session("s2", "b", "rna")).await.unwrap();
    store.put_session(&session("s3", "a", "other")).await.unwrap();
    let live: Vec<String> =
        store.sessions(Some((TEAM, "rna")), since).await.unwrap().into_iter().map(|s| s.session_id).collect();
    assert_eq!(live, ["s1"], "b was not seen lately");
    let lists: Vec<Option<ReportedAllowList>> =
        store.sessions(None, since).await.unwrap().into_iter().map(|s| s.allow_list).collect();
    assert_eq!(lists, [None, Some(reported)], "none where none was reported (agent other), and rna's list");
    assert_eq!(store.sessions(None, since).await.unwrap().len(), 2);
    assert_eq!(
        store.replicas(since).await.unwrap(),
        [replica("a", a_seen)].map(|mut r| {
            r.seen_at = crate::time::from_unix_ms(crate::time::unix_ms(r.seen_at));
            r.started_at = crate::time::from_unix_ms(crate::time::unix_ms(r.started_at));
            r
        })
    );
    let mut held = store.replica_session_ids("a").await.unwrap();
    held.sort();
    assert_eq!(held, ["s1", "s3"]);
    assert_eq!(store.sessions_held(since).await.unwrap(), [("a".to_owned(), 2)], "b is not counted");
    seen("b").await;
    assert_eq!(store.sessions(Some((TEAM, "rna")), since).await.unwrap().len(), 2, "b is back");
    seen("c").await;
    assert_eq!(
        store.sessions_held(since).await.unwrap(),
        [("a".to_owned(), 2), ("b".to_owned(), 1), ("c".to_owned(), 0)],
        "a replica holding none is listed"
    );
    store.replica_gone("c").await.unwrap();
    store.remove_session("s2").await.unwrap();
    assert_eq!(store.sessions(Some((TEAM, "rna")), since).await.unwrap().len(), 1);
    store.put_session(&session("s4", "b", "rna")).await.unwrap();
    // a is seen again, b not: b is forgotten, with its sessions.
    let since = seen("a").await - Duration::from_millis(25);
    assert_eq!(store.forget_replicas(since).await.unwrap(), 1);
    assert!(store.replicas(now - Duration::from_secs(3600)).await.unwrap().iter().all(|r| r.id == "a"));
    assert!(store.sessions(None, now - Duration::from_secs(3600)).await.unwrap().iter().all(|s| s.replica_id == "a"));
    store.replica_gone("a").await.unwrap();
    assert!(store.sessions(None, now - Duration::from_secs(3600)).await.unwrap().is_empty());
}

/// A secret's uses are stored with it: webhooks unless given, kept when its
/// value is replaced without them, replaced when given, and kept on reopen.
pub async fn secrets_keep_their_uses<H: Harness>(harness: &H) {
    use borealis_core::template::{SecretUse, Uses};

    use crate::secrets::SecretStore;

    async fn uses(store: &impl SecretStore, name: &str) -> Option<Uses> {
        store.secrets().await.unwrap().into_iter().find(|s| s.name == name).map(|s| s.uses)
    }
    let store = harness.open().await;
    store.put_secret(TEAM, "plain", b"n1", b"c1").await.unwrap();
    assert_eq!(uses(&store, "plain").await, Some(SecretUse::default_uses()));
    let signing = Uses::from([SecretUse::Signing, SecretUse::Providers]);
    store.put_secret_with_uses(TEAM, "key", b"n2", b"c2", Some(&signing)).await.unwrap();
    assert_eq!(uses(&store, "key").await, Some(signing.clone()));
    // A new value alone keeps the marks; new marks replace them.
    store.put_secret(TEAM, "key", b"n3", b"c3").await.unwrap();
    assert_eq!(uses(&store, "key").await, Some(signing));
    let providers = Uses::from([SecretUse::Providers]);
    store.put_secret_with_uses(TEAM, "plain", b"n4", b"c4", Some(&providers)).await.unwrap();
    drop(store);
    let store = harness.open().await;
    assert_eq!(uses(&store, "plain").await, Some(providers));
    let key = store.secrets().await.unwrap().into_iter().find(|s| s.name == "key").unwrap();
    assert_eq!((key.nonce.as_slice(), key.ciphertext.as_slice()), (&b"n3"[..], &b"c3"[..]));
}

/// Every text a peer can put a string into is stored with its NULs
/// replaced (PostgreSQL refuses them), the same on every backend, and a key
/// holding one is found by the same key.
pub async fn text_with_nul_is_stored_replaced<H: Harness>(harness: &H) {
    let nul = |text: &str| format!("{text}\0!");
    let replaced = |text: &str| format!("{text}\u{FFFD}!");
    let store = harness.open().await;

    // A run: its request, attempts (reply and error), and the reasons and
    // messages of its transitions.
    let run = NewRun { webhook: nul("w"), environment: Some(nul("e")), spec: nul("{}"), ..new_run("r", "c") };
    store.insert_run(&run).await.unwrap();
    assert_eq!(claim(&store, "a", Some("r")).await, ["r"]);
    let fence = Fence { owner: "a", attempt: 1 };
    assert!(store.set_request("r", &fence, &nul("request")).await.unwrap());
    let attempt = Attempt {
        number: 1,
        started_at: SystemTime::now(),
        latency_ms: 1,
        status: Some(200),
        error: Some(nul("error")),
        reply: Some(nul("reply")),
    };
    assert!(store.record_attempt("r", &fence, &attempt).await.unwrap());
    assert!(store.retry_at("r", &fence, SystemTime::now(), &nul("retry")).await.unwrap());
    assert_eq!(store.run("r").await.unwrap().unwrap().reason, Some(replaced("retry")));
    assert_eq!(claim(&store, "a", Some("r")).await, ["r"]);
    let fence = Fence { owner: "a", attempt: 2 };
    let deadline = SystemTime::now() + Duration::from_secs(60);
    assert!(store.await_callback("r", &fence, deadline, Some(&nul("awaiting"))).await.unwrap());
    assert_eq!(store.run("r").await.unwrap().unwrap().reason, Some(replaced("awaiting")));
    let verdict = Outcome {
        state: RunState::Succeeded,
        success: Some(true),
        md_message: Some(nul("md")),
        reason: Some(nul("callback")),
        by_callback: true,
    };
    assert_eq!(store.finish_by_callback(&nul("c"), &verdict).await.unwrap(), None, "another callback id");
    assert_eq!(store.finish_by_callback("c", &verdict).await.unwrap().as_deref(), Some("r"));
    let RunView { run, attempts } = store.run_view("r").await.unwrap().unwrap();
    assert_eq!(
        (run.webhook, run.environment, run.spec, run.request),
        (replaced("w"), Some(replaced("e")), replaced("{}"), Some(replaced("request")))
    );
    assert_eq!((run.md_message, run.reason), (Some(replaced("md")), Some(replaced("callback"))));
    assert_eq!(
        (attempts[0].error.clone(), attempts[0].reply.clone()),
        (Some(replaced("error")), Some(replaced("reply")))
    );
    for (id, finish) in [("f", true), ("g", false)] {
        store.insert_run(&new_run(id, &format!("c{id}"))).await.unwrap();
        assert_eq!(claim(&store, "a", Some(id)).await, [id]);
        let outcome = Outcome { md_message: Some(nul("md")), reason: Some(nul("end")), ..failed() };
        let fence = Fence { owner: "a", attempt: 1 };
        let done = if finish {
            store.finish(id, &RunState::UNFINISHED, &outcome).await
        } else {
            store.finish_attempt(id, &fence, &outcome).await
        };
        assert!(done.unwrap());
        let run = store.run(id).await.unwrap().unwrap();
        assert_eq!((run.md_message, run.reason), (Some(replaced("md")), Some(replaced("end"))));
    }
    assert!(store.run(&nul("r")).await.unwrap().is_none(), "a lookup with a NUL is a lookup");
    assert!(store.run_by_callback(&nul("c")).await.unwrap().is_none());

    // A deployment: its application, file and context, targets, journal,
    // events, approvals and end. The target's name holds a NUL too, and
    // its approvals are found and decided by it.
    let (target, step_key) = (nul("t"), nul("t/beforeDeployment/0"));
    store.insert_deployment("d", TEAM, &nul("app"), &nul("file"), &nul("{}"), None, &lease()).await.unwrap();
    store.set_target("d", OWNER, &target, TargetState::Running, Some(&nul("step")), Some(&nul("why"))).await.unwrap();
    store.put_journal("d", &nul("key"), &nul("value")).await.unwrap();
    store.replace_journal("d", OWNER, &nul("done"), &nul("result")).await.unwrap();
    store.add_event("d", OWNER, Some(&target), &nul("kind"), &nul("message")).await.unwrap();
    assert_eq!(store.request_approval("d", OWNER, &target, &step_key).await.unwrap(), ApprovalState::Pending);
    assert_eq!(store.approval("d", &step_key).await.unwrap(), Some(ApprovalState::Pending));
    let voter = Voter { id: nul("user:a"), name: nul("A") };
    let stored = Voter { id: replaced("user:a"), name: replaced("A") };
    assert_eq!(store.vote_approval("d", &step_key, &voter).await.unwrap(), std::slice::from_ref(&stored));
    assert_eq!(
        store.vote_approval("d", &step_key, &voter).await.unwrap(),
        std::slice::from_ref(&stored),
        "found by its id"
    );
    let view = store.deployment_view("d").await.unwrap().unwrap();
    assert_eq!(view.approval_votes, [(replaced("t/beforeDeployment/0"), stored)]);
    assert_eq!(store.decide_approvals("d", &target, ApprovalState::Approved, false, &nul("by")).await.unwrap(), 1);
    assert_eq!(store.approval_decided_by("d", &step_key).await.unwrap(), Some(replaced("by")));
    let asked = store.request_abort("d", &nul("stop"), true, &nul("who")).await.unwrap().unwrap().abort.unwrap();
    assert_eq!((asked.reason, asked.requested_by), (replaced("stop"), Some(replaced("who"))));
    let decision = format!("{step_key}{DECISION_SUFFIX}");
    store.request_approval("d", OWNER, &target, &decision).await.unwrap();
    store.cancel_approval("d", OWNER, &decision).await.unwrap();
    assert_eq!(store.approval("d", &decision).await.unwrap(), Some(ApprovalState::Cancelled));
    let view = store.deployment_view("d").await.unwrap().unwrap();
    assert_eq!((view.record.application, view.record.file), (replaced("app"), replaced("file")));
    assert_eq!(view.record.context, replaced("{}"));
    let t = &view.targets[0];
    assert_eq!((&t.target, &t.step, &t.reason), (&replaced("t"), &Some(replaced("step")), &Some(replaced("why"))));
    assert_eq!(view.journal, [(replaced("done"), replaced("result")), (replaced("key"), replaced("value"))]);
    let event = &view.events[0];
    assert_eq!(
        (&event.target, &event.kind, &event.message),
        (&Some(replaced("t")), &replaced("kind"), &replaced("message"))
    );
    store.finish_deployment("d", OWNER, DeploymentState::Failed, Some(&nul("rolled back"))).await.unwrap();
    assert_eq!(store.deployment("d").await.unwrap().unwrap().reason, Some(replaced("rolled back")));

    // What operators and agents name: providers, credentials, sessions.
    let provider = MetricProvider {
        team: TEAM.into(),
        name: nul("prom"),
        kind: "prometheus".into(),
        url: nul("http://p:9090/"),
        agent: Some(nul("rna")),
        headers: vec![(nul("X"), nul("v"))],
        created_at: UNIX_EPOCH + Duration::from_secs(1),
    };
    store.insert_provider(&provider).await.unwrap();
    let stored = store.provider(TEAM, &nul("prom")).await.unwrap().unwrap();
    assert_eq!(
        (stored.name, stored.url, stored.agent),
        (replaced("prom"), replaced("http://p:9090/"), Some(replaced("rna")))
    );
    assert_eq!(stored.headers, [(nul("X"), nul("v"))], "headers are stored as JSON, which escapes a NUL");
    store.create_credential(CredentialKind::Callback, &nul("team"), &nul("subject"), "client", b"h").await.unwrap();
    let stored = store.credential("client").await.unwrap().unwrap();
    assert_eq!((stored.team, stored.subject), (replaced("team"), replaced("subject")));
    let found = store.active_credential(CredentialKind::Callback, &nul("team"), &nul("subject")).await.unwrap();
    assert_eq!(found.map(|c| c.client_id).as_deref(), Some("client"), "found by its team and subject");
    assert!(store.credential(&nul("client")).await.unwrap().is_none(), "a client id with a NUL is unknown");
    let now = SystemTime::now();
    let replica =
        ReplicaRecord { id: "a".into(), name: nul("name"), peer_url: Some(nul("url")), started_at: now, seen_at: now };
    store.replica_seen(&replica).await.unwrap();
    let session = SessionRecord {
        session_id: "s".into(),
        replica_id: "a".into(),
        team: nul("team"),
        agent_id: nul("rna"),
        instance: nul("i"),
        version: nul("v"),
        remote_addr: Some(nul("addr")),
        connected_at: now,
        allow_list: Some(ReportedAllowList { rules: vec![nul("rule")], any: false }),
    };
    store.put_session(&session).await.unwrap();
    let sessions = store.sessions(Some((&nul("team"), &nul("rna"))), now - Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        sessions.iter().map(|s| (&s.team, &s.instance, &s.remote_addr)).collect::<Vec<_>>(),
        [(&replaced("team"), &replaced("i"), &Some(replaced("addr")))]
    );
    assert_eq!(sessions[0].allow_list.as_ref().map(|l| l.rules.len()), Some(1), "a rule with a NUL is kept");
    assert_eq!(store.replicas(now - Duration::from_secs(60)).await.unwrap()[0].name, replaced("name"));

    // People: their bindings, found by their subject and groups as given,
    // and who they are in a console session.
    let bound = |id: &str, subject_kind, subject: &str| RoleBinding {
        id: id.into(),
        team: TEAM.into(),
        subject_kind,
        subject: subject.into(),
        role: nul("role"),
        created_at: now,
        created_by: nul("by"),
    };
    store.create_role_binding(&bound("u", BindingSubject::User, &nul("ada"))).await.unwrap();
    store.create_role_binding(&bound("g", BindingSubject::Group, &nul("ops"))).await.unwrap();
    let found = store.bindings_of(&nul("ada"), &[nul("ops")]).await.unwrap();
    assert_eq!(
        found.iter().map(|b| (b.id.as_str(), &b.subject, &b.role, &b.created_by)).collect::<Vec<_>>(),
        [
            ("g", &replaced("ops"), &replaced("role"), &replaced("by")),
            ("u", &replaced("ada"), &replaced("role"), &replaced("by"))
        ]
    );
    assert!(store.delete_role_binding(TEAM, "u").await.unwrap());
    let person = Person { subject: nul("sub"), name: nul("Ada"), groups: vec![nul("ops")] };
    let session = ConsoleSession {
        id_hash: b"person".to_vec(),
        admin_seal: b"seal".to_vec(),
        expires_at: now + Duration::from_secs(60),
        person: Some(person),
    };
    store.create_console_session(&session, now).await.unwrap();
    let read = store.console_session(b"person", now).await.unwrap().unwrap().person.unwrap();
    assert_eq!((read.subject, read.name, read.groups), (replaced("sub"), replaced("Ada"), vec![replaced("ops")]));
}

/// The id a backend's bulk fill gives the run due `i` ms after its base: a
/// permutation of the numbers below 100 003 (a prime), in no due order, so
/// an index on id cannot pass for one on the due time.
pub fn backlog_id(i: i64) -> String {
    format!("r{:06}", (i * 7919) % 100_003)
}

/// On a store a backend filled with 100 000 pending runs, run `i` due
/// `i` ms after `now` less 90 s ([`backlog_id`]): claims take the earliest
/// due first, 500 at a time; one run deep in the backlog is claimed by its
/// id, once, and one not yet due is not.
pub async fn a_large_backlog_is_claimed_earliest_first(store: &impl RunStore, now: SystemTime) {
    let lease_until = now + Duration::from_secs(60);
    let deep = Claim { owner: OWNER, now, lease_until, limit: 1 };
    let one = store.claim_due(&deep, Some(&backlog_id(70_000))).await.unwrap();
    assert_eq!(one.iter().map(|run| run.id.clone()).collect::<Vec<_>>(), [backlog_id(70_000)]);
    assert_eq!((one[0].state, one[0].attempts), (RunState::Calling, 1));
    assert!(store.claim_due(&deep, Some(&backlog_id(70_000))).await.unwrap().is_empty(), "claimed once");
    assert!(store.claim_due(&deep, Some(&backlog_id(95_000))).await.unwrap().is_empty(), "not due yet");

    let batch = Claim { owner: OWNER, now, lease_until, limit: 500 };
    for round in 0..3 {
        let mut claimed: Vec<String> =
            store.claim_due(&batch, None).await.unwrap().into_iter().map(|run| run.id).collect();
        let mut expected: Vec<String> = (round * 500..(round + 1) * 500).map(backlog_id).collect();
        claimed.sort();
        expected.sort();
        assert_eq!(claimed, expected, "batch {round}: the next 500 due, earliest first");
    }
}

/// The team `default` exists from the start; names are unique; a service
/// account keeps its roles and hash, expires and is revoked once.
pub async fn teams_and_service_accounts<H: Harness>(harness: &H) {
    let store = harness.open().await;
    let names = |teams: Vec<crate::Team>| teams.into_iter().map(|t| t.name).collect::<Vec<_>>();
    assert_eq!(names(store.teams().await.unwrap()), [crate::DEFAULT_TEAM]);
    store.create_team("payments").await.unwrap();
    let err = store.create_team("payments").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(Conflict::Duplicate(_))), "{err}");
    assert_eq!(names(store.teams().await.unwrap()), ["default", "payments"]);
    assert!(store.team("nope").await.unwrap().is_none());

    let now = SystemTime::now();
    let account = crate::ServiceAccount {
        id: "sa1".into(),
        team: "payments".into(),
        name: "ci".into(),
        roles: vec!["deployer".into(), "viewer".into()],
        secret_hash: vec![1, 2, 3],
        created_at: now,
        created_by: "admin".into(),
        expires_at: Some(now + Duration::from_secs(60)),
        revoked_at: None,
    };
    store.create_service_account(&account).await.unwrap();
    let again = crate::ServiceAccount { id: "sa2".into(), ..account.clone() };
    let err = store.create_service_account(&again).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(Conflict::Duplicate(_))), "a live name is taken: {err}");
    let read = store.service_account("sa1").await.unwrap().unwrap();
    assert_eq!((read.roles.clone(), read.secret_hash.clone()), (account.roles.clone(), vec![1, 2, 3]));
    assert!(read.is_usable(now) && !read.is_usable(now + Duration::from_secs(61)), "it expires");
    assert_eq!(store.service_accounts(Some("payments")).await.unwrap().len(), 1);
    assert!(store.service_accounts(Some("default")).await.unwrap().is_empty());
    assert!(store.revoke_service_account("sa1", now).await.unwrap());
    assert!(!store.revoke_service_account("sa1", now).await.unwrap(), "revoked once");
    assert!(!store.service_account("sa1").await.unwrap().unwrap().is_usable(now));
    store.create_service_account(&again).await.expect("the name is free once revoked");
}

fn binding(id: &str, team: &str, subject_kind: BindingSubject, subject: &str, role: &str) -> RoleBinding {
    RoleBinding {
        id: id.into(),
        team: team.into(),
        subject_kind,
        subject: subject.into(),
        role: role.into(),
        created_at: UNIX_EPOCH + Duration::from_secs(1),
        created_by: "admin:admin".into(),
    }
}

/// The ids of `bindings`, in their order.
fn ids(bindings: Vec<RoleBinding>) -> Vec<String> {
    bindings.into_iter().map(|b| b.id).collect()
}

/// A binding is kept as made and listed by team, subject kind, subject and
/// role; a team binds a role to a subject once, while the same name as a
/// person and as a group are two subjects; deleting takes the binding's
/// team, and deletes once.
pub async fn role_bindings_give_roles_in_a_team_to_people_and_groups<H: Harness>(harness: &H) {
    use BindingSubject::{Group, User};
    let store = harness.open().await;
    store.create_team(BLUE).await.unwrap();
    let made = binding("b1", BLUE, User, "ada", "deployer");
    store.create_role_binding(&made).await.unwrap();
    for b in [
        binding("b2", BLUE, Group, "ada", "deployer"),
        binding("b3", BLUE, Group, "admins", "viewer"),
        binding("b4", BLUE, User, "ada", "approver"),
        binding("b5", TEAM, User, "ada", "deployer"),
    ] {
        store.create_role_binding(&b).await.unwrap();
    }
    let err = store.create_role_binding(&binding("b6", BLUE, User, "ada", "deployer")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(Conflict::Duplicate(_))), "bound once: {err}");
    let err = store.create_role_binding(&binding("b7", BLUE, Group, "ada", "deployer")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(Conflict::Duplicate(_))), "the group too: {err}");

    let blue = store.role_bindings(Some(BLUE)).await.unwrap();
    assert_eq!(blue.iter().find(|b| b.id == "b1"), Some(&made), "kept as made");
    assert_eq!(
        blue.iter().map(|b| (b.subject_kind, b.subject.as_str(), b.role.as_str())).collect::<Vec<_>>(),
        [(Group, "ada", "deployer"), (Group, "admins", "viewer"), (User, "ada", "approver"), (User, "ada", "deployer")],
        "by subject kind, subject, role"
    );
    assert_eq!(ids(store.role_bindings(None).await.unwrap()), ["b2", "b3", "b4", "b1", "b5"], "by team first");
    assert_eq!(ids(store.role_bindings(Some(TEAM)).await.unwrap()), ["b5"]);
    assert!(store.role_bindings(Some(GREEN)).await.unwrap().is_empty());

    assert!(!store.delete_role_binding(TEAM, "b1").await.unwrap(), "not in that team");
    assert!(!store.delete_role_binding(BLUE, "nope").await.unwrap());
    assert!(store.delete_role_binding(BLUE, "b1").await.unwrap());
    assert!(!store.delete_role_binding(BLUE, "b1").await.unwrap(), "deleted once");
    assert_eq!(ids(store.role_bindings(Some(BLUE)).await.unwrap()), ["b2", "b3", "b4"]);
    store.create_role_binding(&binding("b8", BLUE, User, "ada", "deployer")).await.expect("bound again once deleted");
    assert_eq!(ids(store.role_bindings(Some(TEAM)).await.unwrap()), ["b5"], "another team's is untouched");
}

/// A person's bindings are those naming them and those naming any of
/// their groups, in every team, by team then role; a group of their name,
/// a person of a group's name, and others' are not theirs. Hundreds of
/// groups are looked up at once.
pub async fn a_persons_bindings_are_theirs_and_their_groups_in_every_team<H: Harness>(harness: &H) {
    use BindingSubject::{Group, User};
    let store = harness.open().await;
    for team in [BLUE, GREEN] {
        store.create_team(team).await.unwrap();
    }
    for b in [
        binding("mine", GREEN, User, "ada", "viewer"),
        binding("ops", BLUE, Group, "ops", "deployer"),
        binding("admins", TEAM, Group, "admins", "admin"),
        binding("also", GREEN, Group, "ops", "approver"),
        // Not hers: a group named as she is, a person named as her group,
        // another person, another group.
        binding("group-ada", BLUE, Group, "ada", "admin"),
        binding("user-ops", BLUE, User, "ops", "admin"),
        binding("bob", BLUE, User, "bob", "viewer"),
        binding("devs", GREEN, Group, "devs", "viewer"),
    ] {
        store.create_role_binding(&b).await.unwrap();
    }
    let groups = |names: &[&str]| names.iter().map(|&name| name.to_owned()).collect::<Vec<_>>();
    let of = |user: &'static str, groups: Vec<String>| {
        let store = &store;
        async move { ids(store.bindings_of(user, &groups).await.unwrap()) }
    };
    assert_eq!(of("ada", groups(&["ops", "admins"])).await, ["ops", "admins", "also", "mine"], "by team then role");
    assert_eq!(of("ada", groups(&[])).await, ["mine"], "no groups: hers only");
    assert_eq!(of("ada", groups(&["admins", "admins"])).await, ["admins", "mine"], "a group named twice counts once");
    assert_eq!(of("cy", groups(&["ops"])).await, ["ops", "also"], "by a group alone");
    assert!(of("cy", groups(&["nope"])).await.is_empty());
    let read = store.bindings_of("ada", &[]).await.unwrap();
    assert_eq!(read, [binding("mine", GREEN, User, "ada", "viewer")], "kept as made");

    let mut many: Vec<String> = (0..400).map(|n| format!("group-{n:03}")).collect();
    many.push("devs".into());
    assert_eq!(of("ada", many).await, ["devs", "mine"], "one of hundreds of groups");
}

fn personal_token(id: &str, subject: &str, created_secs: u64) -> PersonalToken {
    PersonalToken {
        id: id.into(),
        person: Person {
            subject: subject.into(),
            name: subject.to_uppercase(),
            groups: vec!["ops".into(), "devs".into()],
        },
        // Its own per token, so a mixed-up column would show.
        description: format!("{subject}'s laptop ({id})"),
        secret_hash: format!("hash-{id}").into_bytes(),
        created_at: UNIX_EPOCH + Duration::from_secs(created_secs),
        expires_at: UNIX_EPOCH + Duration::from_secs(created_secs + 3600),
        revoked_at: None,
    }
}

/// A personal token is kept as made (its person's groups and description
/// too) and read by id; a person's are listed newest first, revoked and
/// expired ones included, and no one else's; everyone's are listed for an
/// organization admin; a listing holds its limit; an id is taken once; a
/// person revokes only their own, and once, while an admin revokes
/// anyone's; live ones are listed alone when asked, and a person's live
/// ones revoked at once.
pub async fn personal_tokens_are_a_persons_own<H: Harness>(harness: &H) {
    let store = harness.open().await;
    let first = personal_token("t1", "ada", 10);
    for token in [&first, &personal_token("t2", "bob", 20), &personal_token("t3", "ada", 30)] {
        store.create_personal_token(token).await.unwrap();
    }
    // Expired long since, and newest: listed all the same.
    let expired = PersonalToken { expires_at: UNIX_EPOCH + Duration::from_secs(41), ..personal_token("t4", "ada", 40) };
    store.create_personal_token(&expired).await.unwrap();
    let err = store.create_personal_token(&personal_token("t1", "cy", 50)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(Conflict::Duplicate(_))), "an id is taken once: {err}");

    assert_eq!(store.personal_token("t1").await.unwrap(), Some(first.clone()), "kept as made");
    assert_eq!(store.personal_token("t1").await.unwrap().unwrap().description, "ada's laptop (t1)");
    assert!(store.personal_token("nope").await.unwrap().is_none());
    let ids = |tokens: Vec<PersonalToken>| tokens.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(store.personal_tokens(Some("ada"), None, 10).await.unwrap()), ["t4", "t3", "t1"], "newest first");
    assert_eq!(ids(store.personal_tokens(Some("bob"), None, 10).await.unwrap()), ["t2"]);
    assert!(store.personal_tokens(Some("cy"), None, 10).await.unwrap().is_empty(), "the duplicate was not stored");
    // An organization admin's view: every person's, interleaved by age.
    let everyone = store.personal_tokens(None, None, 10).await.unwrap();
    assert_eq!(ids(everyone.clone()), ["t4", "t3", "t2", "t1"], "everyone's, newest first");
    assert_eq!(everyone[3], first, "listed as made");
    // The newest within the limit, with a subject or without.
    assert_eq!(ids(store.personal_tokens(Some("ada"), None, 2).await.unwrap()), ["t4", "t3"]);
    assert_eq!(ids(store.personal_tokens(None, None, 3).await.unwrap()), ["t4", "t3", "t2"]);

    let at = UNIX_EPOCH + Duration::from_secs(60);
    assert!(!store.revoke_personal_token(Some("bob"), "t1", at).await.unwrap(), "not his");
    assert!(!store.revoke_personal_token(Some("ada"), "nope", at).await.unwrap());
    assert!(store.revoke_personal_token(Some("ada"), "t1", at).await.unwrap());
    assert!(!store.revoke_personal_token(Some("ada"), "t1", at).await.unwrap(), "revoked once");
    let revoked = store.personal_token("t1").await.unwrap().unwrap();
    assert_eq!(revoked, PersonalToken { revoked_at: Some(at), ..first });
    let ada = store.personal_tokens(Some("ada"), None, 10).await.unwrap();
    assert_eq!(
        ada.iter().map(|t| (t.id.as_str(), t.revoked_at)).collect::<Vec<_>>(),
        [("t4", None), ("t3", None), ("t1", Some(at))],
        "the revoked one is listed, and only it is revoked"
    );
    assert_eq!(store.personal_token("t2").await.unwrap().unwrap().revoked_at, None, "another's is untouched");

    // An organization admin revokes a leaked token whoever's it is; still
    // only a live one, and only one that exists.
    let later = at + Duration::from_secs(1);
    assert!(store.revoke_personal_token(None, "t2", later).await.unwrap(), "bob's, by an admin");
    assert!(!store.revoke_personal_token(None, "t2", later).await.unwrap(), "revoked once");
    assert!(!store.revoke_personal_token(None, "t1", later).await.unwrap(), "revoked already");
    assert!(!store.revoke_personal_token(None, "nope", later).await.unwrap());
    let everyone = store.personal_tokens(None, None, 10).await.unwrap();
    assert_eq!(
        everyone.iter().map(|t| (t.id.as_str(), t.revoked_at)).collect::<Vec<_>>(),
        [("t4", None), ("t3", None), ("t2", Some(later)), ("t1", Some(at))],
        "the earlier revocation kept, and no other token touched"
    );

    // Live ones only: neither revoked nor expired at that time.
    let now = UNIX_EPOCH + Duration::from_secs(100);
    assert_eq!(ids(store.personal_tokens(Some("ada"), Some(now), 10).await.unwrap()), ["t3"]);
    assert_eq!(ids(store.personal_tokens(None, Some(now), 10).await.unwrap()), ["t3"]);
    let early = UNIX_EPOCH + Duration::from_secs(40);
    assert_eq!(ids(store.personal_tokens(Some("ada"), Some(early), 10).await.unwrap()), ["t4", "t3"], "t1 revoked");
    // A person's every live token at once (one who left): only theirs, only live ones.
    store.create_personal_token(&personal_token("t5", "bob", 90)).await.unwrap();
    assert_eq!(store.revoke_personal_tokens_of("ada", now).await.unwrap(), 1, "t3 alone was live");
    assert_eq!(store.revoke_personal_tokens_of("ada", now).await.unwrap(), 0);
    assert_eq!(store.personal_token("t4").await.unwrap().unwrap().revoked_at, None, "an expired one stays as it was");
    assert_eq!(store.personal_token("t3").await.unwrap().unwrap().revoked_at, Some(now));
    assert_eq!(ids(store.personal_tokens(None, Some(now), 10).await.unwrap()), ["t5"], "bob's untouched");
}

/// A team's rule against approving one's own deployment: off for every
/// team until set, set and cleared by the team's name, and kept; there is
/// none to set for a team that does not exist.
pub async fn a_team_may_forbid_approving_ones_own_deployment<H: Harness>(harness: &H) {
    async fn rules(store: &impl IdentityStore) -> Vec<(String, bool)> {
        let teams = store.teams().await.unwrap();
        teams.into_iter().map(|t| (t.name, t.forbid_self_approval)).collect()
    }
    let store = harness.open().await;
    let rule = |name: &str, forbid| (name.to_owned(), forbid);
    assert_eq!(rules(&store).await, [rule(TEAM, false)]);
    assert!(!store.create_team("payments").await.unwrap().forbid_self_approval, "a new team allows it");
    assert!(store.set_forbid_self_approval("payments", true).await.unwrap());
    assert!(store.set_forbid_self_approval("payments", true).await.unwrap(), "set again: the team exists");
    assert_eq!(rules(&store).await, [rule(TEAM, false), rule("payments", true)]);
    assert_eq!(store.team("payments").await.unwrap().map(|t| t.forbid_self_approval), Some(true));
    assert!(!store.set_forbid_self_approval("nope", true).await.unwrap(), "no such team");
    assert!(store.team("nope").await.unwrap().is_none(), "nor is one made");
    assert!(store.set_forbid_self_approval(TEAM, true).await.unwrap());
    assert!(store.set_forbid_self_approval("payments", false).await.unwrap());
    store.close().await;
    drop(store);

    let reopened = harness.open().await;
    assert_eq!(rules(&reopened).await, [rule(TEAM, true), rule("payments", false)], "kept");
}

/// A multi-row insert is a statement of its own for each batch size: kept
/// prepared, every connection would hold up to a hundred of them (the
/// relay's memory grew by about 1 KiB per proxied request until it did).
pub async fn audit_batches_of_every_size_leave_no_statement_prepared<H: Harness>(harness: &H) {
    let store = harness.open().await;
    let entry = |n: usize| crate::AuditEntry {
        seq: 0,
        time: SystemTime::now(),
        actor_kind: "admin".into(),
        actor_id: "admin".into(),
        actor_name: "admin".into(),
        team: None,
        action: "proxy".into(),
        object: "/api/v1/proxy".into(),
        outcome: "allowed".into(),
        status: 200,
        source_address: None,
        request_id: format!("req-{n}"),
    };
    store.append_audit(&[entry(0)]).await.unwrap();
    let before = harness.prepared_statements(&store).await;
    const SIZES: std::ops::RangeInclusive<usize> = 2..=41;
    for size in SIZES {
        store.append_audit(&(0..size).map(entry).collect::<Vec<_>>()).await.unwrap();
    }
    // Kept prepared, each size would be one more (40); a few others may
    // appear on a connection the pool opened meanwhile.
    let after = harness.prepared_statements(&store).await;
    let more = after.saturating_sub(before);
    assert!(more < 10, "forty batch sizes left {more} more statements prepared");
    let all = crate::AuditQuery { limit: 1000, ..crate::AuditQuery::default() };
    assert_eq!(store.audit(&all).await.unwrap().len(), 1 + SIZES.sum::<usize>(), "every entry is kept");
}

/// Entries come back newest first, filtered, paged by `before`, and go
/// only by retention.
pub async fn the_audit_trail_appends_and_filters<H: Harness>(harness: &H) {
    let store = harness.open().await;
    let start = SystemTime::now() - Duration::from_secs(100);
    let entry = |n: u64, team: &str, actor: &str, action: &str| crate::AuditEntry {
        seq: 0,
        time: start + Duration::from_secs(n),
        actor_kind: "service_account".into(),
        actor_id: actor.into(),
        actor_name: format!("{actor} (ci)"),
        team: Some(team.into()),
        action: action.into(),
        object: format!("/api/v1/things/{n}"),
        outcome: if n == 3 { "refused".into() } else { "allowed".into() },
        status: if n == 3 { 403 } else { 200 },
        source_address: Some("127.0.0.1".into()),
        request_id: format!("req-{n}"),
    };
    // The first two in one batch, in order; the others one by one.
    let batch = [entry(1, "a", "sa1", "deployment.create"), entry(2, "b", "sa2", "secret.put")];
    store.append_audit(&batch).await.unwrap();
    for (n, team, actor, action) in [(3, "a", "sa2", "deployment.approve"), (4, "a", "sa1", "deployment.abort")] {
        store.append_audit(&[entry(n, team, actor, action)]).await.unwrap();
    }
    let query = |q: crate::AuditQuery| {
        let store = &store;
        async move { store.audit(&q).await.unwrap().into_iter().map(|e| e.request_id).collect::<Vec<_>>() }
    };
    let all = crate::AuditQuery { limit: 10, ..Default::default() };
    assert_eq!(query(all.clone()).await, ["req-4", "req-3", "req-2", "req-1"]);
    let read = store.audit(&all).await.unwrap();
    assert_eq!(read[1].outcome, "refused");
    assert_eq!(read[1].status, 403);
    assert_eq!(read[3].actor_name, "sa1 (ci)");
    assert_eq!(query(crate::AuditQuery { team: Some("a".into()), ..all.clone() }).await, ["req-4", "req-3", "req-1"]);
    assert_eq!(query(crate::AuditQuery { actor: Some("sa2".into()), ..all.clone() }).await, ["req-3", "req-2"]);
    let action = crate::AuditQuery { action: Some("secret.put".into()), ..all.clone() };
    assert_eq!(query(action).await, ["req-2"]);
    let window = crate::AuditQuery {
        since: Some(start + Duration::from_secs(2)),
        until: Some(start + Duration::from_secs(4)),
        ..all.clone()
    };
    assert_eq!(query(window).await, ["req-3", "req-2"]);
    let first = store.audit(&crate::AuditQuery { limit: 2, ..all.clone() }).await.unwrap();
    let next = crate::AuditQuery { before: Some(first[1].seq), ..all.clone() };
    assert_eq!(query(next).await, ["req-2", "req-1"]);
    assert_eq!(store.forget_audit_before(start + Duration::from_secs(3)).await.unwrap(), 2);
    assert_eq!(query(all).await, ["req-4", "req-3"]);
}

/// Two teams besides `default`, in the order lists give them.
const BLUE: &str = "blue";
const GREEN: &str = "green";

/// A secret, a provider, an agent's and a callback's credential of the same
/// name in two teams are two objects: each is read, replaced, deleted or
/// revoked in its team alone, and lists give every team's by team.
pub async fn names_and_subjects_are_a_teams_own<H: Harness>(harness: &H) {
    use crate::secrets::SecretStore;

    let store = harness.open().await;
    for team in [GREEN, BLUE] {
        store.put_secret(team, "token", team.as_bytes(), b"sealed").await.unwrap();
    }
    store.put_secret(BLUE, "token", b"again", b"resealed").await.unwrap();
    let secrets = || {
        let store = &store;
        async move {
            let secrets = store.secrets().await.unwrap();
            secrets.into_iter().map(|s| (s.team, s.name, s.nonce)).collect::<Vec<_>>()
        }
    };
    let token = |team: &str, nonce: &[u8]| (team.to_owned(), "token".to_owned(), nonce.to_vec());
    assert_eq!(secrets().await, [token(BLUE, b"again"), token(GREEN, b"green")], "by team, each its own");
    assert!(store.delete_secret(BLUE, "token").await.unwrap());
    assert!(!store.delete_secret(BLUE, "token").await.unwrap());
    assert!(!store.delete_secret(TEAM, "token").await.unwrap(), "no such secret in default");
    assert_eq!(secrets().await, [token(GREEN, b"green")]);

    let provider = |team: &str| MetricProvider {
        team: team.into(),
        name: "prom".into(),
        kind: "prometheus".into(),
        url: format!("http://{team}:9090"),
        agent: None,
        headers: Vec::new(),
        created_at: UNIX_EPOCH + Duration::from_secs(1),
    };
    store.insert_provider(&provider(GREEN)).await.unwrap();
    store.insert_provider(&provider(BLUE)).await.expect("the name is free in another team");
    let taken = store.insert_provider(&provider(GREEN)).await.unwrap_err();
    assert!(matches!(taken, StoreError::Conflict(Conflict::ProviderExists { ref name }) if name == "prom"), "{taken}");
    assert_eq!(store.provider(GREEN, "prom").await.unwrap(), Some(provider(GREEN)));
    assert_eq!(store.provider(TEAM, "prom").await.unwrap(), None);
    assert_eq!(store.providers(Some(BLUE)).await.unwrap(), [provider(BLUE)]);
    assert_eq!(store.providers(None).await.unwrap(), [provider(BLUE), provider(GREEN)], "by team");
    assert!(store.delete_provider(BLUE, "prom").await.unwrap());
    assert!(!store.delete_provider(BLUE, "prom").await.unwrap());
    assert_eq!(store.providers(None).await.unwrap(), [provider(GREEN)]);

    for kind in [CredentialKind::Agent, CredentialKind::Callback] {
        let id = |team: &str| format!("{}-{team}", kind.as_str());
        for team in [GREEN, BLUE] {
            let made = store.create_credential(kind, team, "rna", &id(team), b"h").await.unwrap();
            assert_eq!(made.team, team);
        }
        let again = store.create_credential(kind, GREEN, "rna", "third", b"h").await.unwrap_err();
        assert!(matches!(again, StoreError::Conflict(Conflict::CredentialExists { .. })), "{again}");
        assert_eq!(store.credential(&id(BLUE)).await.unwrap().unwrap().team, BLUE);
        let live = |team| {
            let store = &store;
            async move { store.active_credential(kind, team, "rna").await.unwrap().map(|c| (c.team, c.client_id)) }
        };
        assert_eq!(live(GREEN).await, Some((GREEN.to_owned(), id(GREEN))));
        assert_eq!(live(TEAM).await, None);
        let listed = |team| {
            let store = &store;
            async move {
                let all = store.active_credentials(kind, team).await.unwrap();
                all.into_iter().map(|c| c.client_id).collect::<Vec<_>>()
            }
        };
        assert_eq!(listed(None).await, [id(BLUE), id(GREEN)], "by team");
        assert_eq!(listed(Some(GREEN)).await, [id(GREEN)]);
        assert!(!store.revoke(kind, TEAM, "rna").await.unwrap(), "none in default");
        assert!(store.revoke(kind, BLUE, "rna").await.unwrap());
        assert_eq!(live(BLUE).await, None);
        assert_eq!(live(GREEN).await, Some((GREEN.to_owned(), id(GREEN))), "the other team's stays");
        store.create_credential(kind, BLUE, "rna", &format!("{}-new", id(BLUE)), b"h").await.unwrap();
    }
}

/// One deployment per application runs in each team; an Idempotency-Key
/// is a team's own; pages of one team give only its runs and deployments;
/// records carry their team.
pub async fn runs_and_deployments_keep_to_their_team<H: Harness>(harness: &H) {
    let store = harness.open().await;
    let key = |hash: &str| IdempotencyKey { key: "k".into(), request_hash: hash.into() };
    for (n, team) in [GREEN, BLUE, GREEN].into_iter().enumerate() {
        let id = format!("d{n}");
        if n == 2 {
            // Green's app ended, so another may run.
            store.finish_deployment("d0", OWNER, DeploymentState::Succeeded, None).await.unwrap();
        }
        let keyed = (n < 2).then(|| key("h"));
        store.insert_deployment(&id, team, "app", "f", "{}", keyed.as_ref(), &lease()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let running = store.insert_deployment("d3", BLUE, "app", "f", "{}", None, &lease()).await.unwrap_err();
    assert!(
        matches!(running, StoreError::Conflict(Conflict::DeploymentInProgress { running: ref id, .. }) if id == "d1"),
        "the one running in the same team: {running}"
    );
    let used = store.insert_deployment("d3", GREEN, "other", "f", "{}", Some(&key("x")), &lease()).await.unwrap_err();
    assert!(
        matches!(used, StoreError::Conflict(Conflict::IdempotencyKeyUsed { ref id, same_request: false }) if id == "d0"),
        "the key green used: {used}"
    );
    store
        .insert_deployment("d3", TEAM, "app", "f", "{}", Some(&key("x")), &lease())
        .await
        .expect("default's key is free");
    assert_eq!(store.deployment("d1").await.unwrap().unwrap().team, BLUE);

    for (n, team) in [GREEN, BLUE, GREEN, TEAM].into_iter().enumerate() {
        let run =
            NewRun { team: team.into(), idempotency: Some(key("h")), ..new_run(&format!("r{n}"), &format!("c{n}")) };
        match n {
            2 => {
                let used = store.insert_run(&run).await.unwrap_err();
                assert!(
                    matches!(used, StoreError::Conflict(Conflict::IdempotencyKeyUsed { ref id, .. }) if id == "r0"),
                    "the key green used: {used}"
                );
                store.insert_run(&NewRun { idempotency: None, ..run }).await.unwrap();
            }
            _ => store.insert_run(&run).await.expect("the key is free in another team"),
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(store.run("r1").await.unwrap().unwrap().team, BLUE);
    assert_eq!(store.run_by_callback("c2").await.unwrap().unwrap().team, GREEN);

    let runs = |page: crate::Page| {
        let store = &store;
        async move {
            let runs = store.runs_page(&page).await.unwrap();
            runs.into_iter().map(|r| (r.team, r.id)).collect::<Vec<_>>()
        }
    };
    let green = crate::Page { team: Some(GREEN.into()), limit: 10, ..Default::default() };
    let pair = |team: &str, id: &str| (team.to_owned(), id.to_owned());
    assert_eq!(runs(green.clone()).await, [pair(GREEN, "r2"), pair(GREEN, "r0")]);
    assert_eq!(runs(crate::Page { limit: 1, ..green.clone() }).await, [pair(GREEN, "r2")]);
    assert_eq!(runs(crate::Page { team: Some("none".into()), ..green.clone() }).await, []);
    assert_eq!(runs(crate::Page::first(10)).await.len(), 4, "every team's");
    let deployments = |page: crate::Page| {
        let store = &store;
        async move {
            let listed = store.deployments_page(&page).await.unwrap();
            listed.into_iter().map(|(d, _)| (d.team, d.id)).collect::<Vec<_>>()
        }
    };
    assert_eq!(deployments(green.clone()).await, [pair(GREEN, "d2"), pair(GREEN, "d0")]);
    let first = deployments(crate::Page { limit: 1, ..green.clone() }).await;
    let created_at = store.deployment(&first[0].1).await.unwrap().unwrap().created_at;
    let after = Some(crate::Cursor { created_at: crate::unix_ms(created_at), id: first[0].1.clone() });
    assert_eq!(deployments(crate::Page { after, ..green.clone() }).await, [pair(GREEN, "d0")], "paged within the team");
    let running = crate::Page { state: Some("running".into()), name: Some("app".into()), ..green.clone() };
    assert_eq!(deployments(running).await, [pair(GREEN, "d2")]);
    let blue = crate::Page { team: Some(BLUE.into()), ..green };
    assert_eq!(deployments(blue).await, [pair(BLUE, "d1")]);
}

/// The sessions of an agent are its team's: the same identifier in another
/// team is another agent.
pub async fn sessions_are_found_by_team_and_agent<H: Harness>(harness: &H) {
    let store = harness.open().await;
    let now = SystemTime::now();
    let replica = ReplicaRecord { id: "a".into(), name: "a".into(), peer_url: None, started_at: now, seen_at: now };
    store.replica_seen(&replica).await.unwrap();
    let since = now - Duration::from_secs(60);
    for (id, team, agent) in [("s1", GREEN, "rna"), ("s2", BLUE, "rna"), ("s3", GREEN, "other"), ("s4", BLUE, "rna")] {
        let session = SessionRecord {
            session_id: id.into(),
            replica_id: "a".into(),
            team: team.into(),
            agent_id: agent.into(),
            instance: format!("host-{id}"),
            version: "1.0".into(),
            remote_addr: None,
            connected_at: now,
            allow_list: None,
        };
        store.put_session(&session).await.unwrap();
    }
    let found = |agent| {
        let store = &store;
        async move {
            let sessions = store.sessions(agent, since).await.unwrap();
            sessions.into_iter().map(|s| format!("{}/{}/{}", s.team, s.agent_id, s.session_id)).collect::<Vec<_>>()
        }
    };
    assert_eq!(found(Some((GREEN, "rna"))).await, ["green/rna/s1"]);
    assert_eq!(found(Some((BLUE, "rna"))).await, ["blue/rna/s2", "blue/rna/s4"]);
    assert!(found(Some((TEAM, "rna"))).await.is_empty());
    assert!(found(Some((BLUE, "other"))).await.is_empty());
    assert_eq!(
        found(None).await,
        ["blue/rna/s2", "blue/rna/s4", "green/other/s3", "green/rna/s1"],
        "by team, then agent"
    );
}

/// Rows as a relay stored them before objects had teams (schema version
/// 16), as SQL for either backend; `bytes` spells a byte string the
/// backend's way. [`what_was_stored_before_teams_is_the_default_teams`]
/// reads them back once migrated.
pub fn stored_before_teams(bytes: fn(&str) -> String) -> String {
    let hash = bytes("hash");
    format!(
        "INSERT INTO secrets (name, nonce, ciphertext, updated_at, uses) \
           VALUES ('token', {nonce}, {sealed}, 1, 'signing'); \
         INSERT INTO metric_providers (name, kind, url, agent, headers, created_at) \
           VALUES ('prom', 'prometheus', 'http://p:9090', 'rna', '[]', 1); \
         INSERT INTO credentials (client_id, kind, subject, secret_hash, created_at, revoked_at) \
           VALUES ('agent-old', 'agent', 'rna', {hash}, 1, 2), ('agent', 'agent', 'rna', {hash}, 3, NULL), \
                  ('callback', 'callback', 'ci', {hash}, 3, NULL); \
         INSERT INTO webhook_runs (id, callback_id, webhook, spec, state, created_at, updated_at, idempotency_key, request_hash) \
           VALUES ('r', 'cb', 'w', '{{}}', 'pending', 1, 1, 'k', 'h'); \
         INSERT INTO deployments (id, application, file, context, state, created_at, updated_at, idempotency_key, request_hash, \
                                  abort_reason, abort_rollback, abort_requested_at) \
           VALUES ('d', 'app', 'f', '{{}}', 'running', 1, 1, 'k', 'h', 'stop', TRUE, 2); \
         INSERT INTO approvals (deployment_id, step_key, target, state, requested_at, decided_at) \
           VALUES ('d', 't/0', 't', 'approved', 1, 2), ('d', 't/1', 't', 'pending', 1, NULL); \
         INSERT INTO relay_replicas (id, name, started_at, seen_at) VALUES ('a', 'a', 1, 1); \
         INSERT INTO agent_sessions (session_id, replica_id, agent_id, instance, version, connected_at) \
           VALUES ('s', 'a', 'rna', 'host', '1.0', 1);",
        nonce = bytes("nonce"),
        sealed = bytes("sealed"),
    )
}

/// What [`stored_before_teams`] stored is team `default`'s once migrated,
/// read through the traits, and its rules hold in that team. What was
/// stored before approvals by people names nobody: not who asked the abort,
/// nor who decided the approval; the team allows approving one's own
/// deployment; and an approval pending then takes votes.
pub async fn what_was_stored_before_teams_is_the_default_teams(store: &impl Store) {
    use borealis_core::template::{SecretUse, Uses};

    let secrets = store.secrets().await.unwrap();
    let found: Vec<_> = secrets.iter().map(|s| (s.team.as_str(), s.name.as_str(), s.nonce.as_slice())).collect();
    assert_eq!(found, [(TEAM, "token", &b"nonce"[..])]);
    assert_eq!(
        (secrets[0].ciphertext.as_slice(), &secrets[0].uses),
        (&b"sealed"[..], &Uses::from([SecretUse::Signing]))
    );
    store.put_secret(TEAM, "token", b"n2", b"c2").await.unwrap();
    let secrets = store.secrets().await.unwrap();
    assert_eq!((secrets.len(), &secrets[0].uses), (1, &Uses::from([SecretUse::Signing])), "replaced in place");

    let provider = store.provider(TEAM, "prom").await.unwrap().expect("the provider is default's");
    assert_eq!((provider.team.as_str(), provider.agent.as_deref()), (TEAM, Some("rna")));
    assert_eq!(store.providers(Some(TEAM)).await.unwrap(), [provider]);

    for (kind, subject, id) in [(CredentialKind::Agent, "rna", "agent"), (CredentialKind::Callback, "ci", "callback")] {
        let live = store.active_credential(kind, TEAM, subject).await.unwrap().expect("the live credential");
        assert_eq!(
            (live.team.as_str(), live.client_id.as_str(), live.secret_hash.as_slice()),
            (TEAM, id, &b"hash"[..])
        );
        let again = store.create_credential(kind, TEAM, subject, "new", b"h").await.unwrap_err();
        assert!(matches!(again, StoreError::Conflict(Conflict::CredentialExists { .. })), "{again}");
    }
    let old = store.credential("agent-old").await.unwrap().unwrap();
    assert!(old.team == TEAM && !old.is_active());

    assert_eq!(store.run("r").await.unwrap().unwrap().team, TEAM);
    let key = IdempotencyKey { key: "k".into(), request_hash: "h".into() };
    let again = NewRun { idempotency: Some(key.clone()), ..new_run("r2", "cb2") };
    let used = store.insert_run(&again).await.unwrap_err();
    assert!(
        matches!(used, StoreError::Conflict(Conflict::IdempotencyKeyUsed { ref id, same_request: true }) if id == "r")
    );
    store.insert_run(&NewRun { team: GREEN.into(), ..again }).await.unwrap();

    assert_eq!(store.deployment("d").await.unwrap().unwrap().team, TEAM);
    let used = store.insert_deployment("d2", TEAM, "other", "f", "{}", Some(&key), &lease()).await.unwrap_err();
    assert!(matches!(used, StoreError::Conflict(Conflict::IdempotencyKeyUsed { ref id, .. }) if id == "d"), "{used}");
    let running = store.insert_deployment("d2", TEAM, "app", "f", "{}", None, &lease()).await.unwrap_err();
    assert!(matches!(running, StoreError::Conflict(Conflict::DeploymentInProgress { .. })), "{running}");
    store.insert_deployment("d2", GREEN, "app", "f", "{}", Some(&key), &lease()).await.unwrap();
    let page = crate::Page { team: Some(TEAM.into()), limit: 10, ..Default::default() };
    assert_eq!(store.deployments_page(&page).await.unwrap().len(), 1);

    let sessions = store.sessions(Some((TEAM, "rna")), UNIX_EPOCH).await.unwrap();
    assert_eq!(sessions.iter().map(|s| (s.team.as_str(), s.session_id.as_str())).collect::<Vec<_>>(), [(TEAM, "s")]);

    let abort = store.deployment("d").await.unwrap().unwrap().abort.expect("asked before");
    assert_eq!((abort.reason.as_str(), abort.rollback, abort.requested_by), ("stop", true, None));
    assert_eq!(store.approval("d", "t/0").await.unwrap(), Some(ApprovalState::Approved));
    assert_eq!(store.approval_decided_by("d", "t/0").await.unwrap(), None, "decided before deciders were kept");
    let teams = store.teams().await.unwrap();
    assert!(teams.iter().all(|team| !team.forbid_self_approval), "{teams:?}");
    let voter = Voter { id: "user:alice".into(), name: "Alice".into() };
    assert_eq!(store.vote_approval("d", "t/1", &voter).await.unwrap(), std::slice::from_ref(&voter));
    assert!(store.vote_approval("d", "t/0", &voter).await.unwrap().is_empty(), "decided before");
    let view = store.deployment_view("d").await.unwrap().unwrap();
    assert_eq!(view.approval_votes, [("t/1".to_owned(), voter)]);
}
