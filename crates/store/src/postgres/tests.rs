//! The conformance suite on PostgreSQL, and what only several processes
//! sharing one database show: two stores (two pools, as two relays) racing
//! the same writes. They need a server (`BOREALIS_TEST_POSTGRES_URL`, by
//! default `postgres://postgres@127.0.0.1:5432/test`) and fail without one:
//! a skipped backend would pass unseen.

use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::PostgresStore;
use crate::cluster::{Change, ClusterStore};
use crate::conformance::Harness;
use crate::credentials::{CredentialKind, CredentialStore};
use crate::deployments::{ApprovalState, DeploymentLease, DeploymentState, DeploymentStore, TargetState, Voter};
use crate::error::{Conflict, StoreError};
use crate::idempotency::IdempotencyKey;
use crate::identities::DEFAULT_TEAM;
use crate::runs::{Claim, Fence, NewRun, Outcome, RunState, RunStore};
use crate::secrets::SecretStore;
use crate::settings::SettingStore;
use crate::store::Lifecycle;

/// Connections per store: tests run many at once against one server.
const POOL: u32 = 4;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("BOREALIS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema of its own in the test database, made on first open and
/// dropped with the harness (also when the case panics).
struct TempSchema {
    base: PgConnectOptions,
    schema: String,
}

impl TempSchema {
    fn new() -> Self {
        let base = PgConnectOptions::from_str(&url()).expect("BOREALIS_TEST_POSTGRES_URL is a postgres:// URL");
        Self { base, schema: format!("bt_{}", uuid::Uuid::new_v4().simple()) }
    }

    async fn admin(&self) -> PgConnection {
        PgConnection::connect_with(&self.base).await.unwrap_or_else(|err| {
            panic!(
                "PostgreSQL is unreachable at {}:{} ({err}). These tests need a server: start one, or set \
                 BOREALIS_TEST_POSTGRES_URL (default {DEFAULT_URL})",
                self.base.get_host(),
                self.base.get_port()
            )
        })
    }

    fn options(&self) -> PgConnectOptions {
        self.base.clone().options([("search_path", self.schema.as_str())])
    }
}

#[async_trait::async_trait]
impl Harness for TempSchema {
    type Store = PostgresStore;

    async fn open(&self) -> PostgresStore {
        let mut admin = self.admin().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {}", self.schema)))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        PostgresStore::open_pool(self.options(), POOL).await.unwrap()
    }

    async fn prepared_statements(&self, store: &PostgresStore) -> usize {
        crate::conformance::prepared_statements(&store.pool).await
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        // Drop runs outside async: a runtime of its own on a thread of its own.
        let (base, schema) = (self.base.clone(), self.schema.clone());
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
                let mut admin = PgConnection::connect_with(&base).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}", self.schema);
        }
    }
}

crate::conformance_suite!(TempSchema::new());

/// Two relays on one database: two pools on the same schema.
async fn two_replicas(harness: &TempSchema) -> (Arc<PostgresStore>, Arc<PostgresStore>) {
    (Arc::new(harness.open().await), Arc::new(harness.open().await))
}

fn new_run(id: &str, key: Option<&str>) -> NewRun {
    NewRun {
        id: id.into(),
        team: DEFAULT_TEAM.into(),
        callback_id: format!("cb-{id}"),
        webhook: "w".into(),
        environment: None,
        spec: "{}".into(),
        idempotency: key.map(|key| IdempotencyKey { key: key.into(), request_hash: "h".into() }),
    }
}

const ROUNDS: usize = 25;
/// Writers per replica in each round.
const RACERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_one_finish_have_one_winner() {
    let harness = TempSchema::new();
    let (a, b) = two_replicas(&harness).await;
    for round in 0..ROUNDS {
        let id = format!("r{round}");
        a.insert_run(&new_run(&id, None)).await.unwrap();
        assert_eq!(claim(&a, "a", &id).await, 1);
        let mut racers = tokio::task::JoinSet::new();
        for racer in 0..2 * RACERS {
            let store = if racer % 2 == 0 { a.clone() } else { b.clone() };
            let id = id.clone();
            racers.spawn(async move {
                let outcome = Outcome {
                    state: RunState::Succeeded,
                    success: Some(true),
                    md_message: Some(format!("by {racer}")),
                    reason: None,
                    by_callback: true,
                };
                (racer, store.finish(&id, &RunState::UNFINISHED, &outcome).await.unwrap())
            });
        }
        let winners: Vec<usize> = racers.join_all().await.into_iter().filter(|(_, won)| *won).map(|(r, _)| r).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one finish applies, not {winners:?}");
        let stored = b.run(&id).await.unwrap().unwrap();
        assert_eq!(stored.md_message, Some(format!("by {}", winners[0])), "the winner's verdict is the one stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_one_idempotency_key_make_one_row() {
    let harness = TempSchema::new();
    let (a, b) = two_replicas(&harness).await;
    for round in 0..ROUNDS {
        let key = format!("k{round}");
        let mut racers = tokio::task::JoinSet::new();
        for racer in 0..2 * RACERS {
            let store = if racer % 2 == 0 { a.clone() } else { b.clone() };
            let (run, deployment) = (new_run(&format!("r{round}-{racer}"), Some(&key)), format!("d{round}-{racer}"));
            let key = IdempotencyKey { key: key.clone(), request_hash: "h".into() };
            racers.spawn(async move {
                let run = store.insert_run(&run).await.map(|()| run.id);
                // Each round's deployments are of one application too: the key decides first.
                let made =
                    store.insert_deployment(&deployment, DEFAULT_TEAM, "app", "f", "{}", Some(&key), &lease()).await;
                (run, made.map(|()| deployment))
            });
        }
        let (runs, deployments): (Vec<_>, Vec<_>) = racers.join_all().await.into_iter().unzip();
        for made in [&runs, &deployments] {
            one_winner_and_losers_told_its_id(round, made);
        }
        let winner = deployments.iter().find_map(|made| made.as_ref().ok()).unwrap();
        a.finish_deployment(winner, "a", DeploymentState::Succeeded, None).await.unwrap();
    }
    assert_eq!(a.runs(1000).await.unwrap().len(), ROUNDS);
    assert_eq!(b.deployments(1000).await.unwrap().len(), ROUNDS);
}

fn one_winner_and_losers_told_its_id(round: usize, answers: &[Result<String, StoreError>]) {
    let winners: Vec<&String> = answers.iter().filter_map(|made| made.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "round {round}: one row per key, not {winners:?}");
    for made in answers {
        match made {
            Ok(_) => {}
            Err(StoreError::Conflict(Conflict::IdempotencyKeyUsed { id, same_request: true })) => {
                assert_eq!(id, winners[0], "every loser is told the winner's id")
            }
            Err(other) => panic!("round {round}: a loser got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_one_application_run_one_deployment() {
    let harness = TempSchema::new();
    let (a, b) = two_replicas(&harness).await;
    let mut previous: Option<String> = None;
    for round in 0..ROUNDS {
        let mut racers = tokio::task::JoinSet::new();
        for racer in 0..2 * RACERS {
            let store = if racer % 2 == 0 { a.clone() } else { b.clone() };
            let id = format!("d{round}-{racer}");
            racers.spawn(async move {
                store.insert_deployment(&id, DEFAULT_TEAM, "app", "f", "{}", None, &lease()).await.map(|()| id)
            });
        }
        // The one running before ends while they race: each insert either
        // wins or names the deployment it lost to, never another error.
        let ending = previous.take();
        if let Some(ending) = &ending {
            b.finish_deployment(ending, "a", DeploymentState::Succeeded, None).await.unwrap();
        }
        let answers = racers.join_all().await;
        let winners: Vec<&String> = answers.iter().filter_map(|made| made.as_ref().ok()).collect();
        assert!(winners.len() <= 1, "round {round}: one running deployment per application, not {winners:?}");
        let running: Vec<String> = a.unfinished_deployments().await.unwrap().into_iter().map(|d| d.id).collect();
        assert!(running.len() <= 1, "round {round}: {running:?} run at once");
        for made in &answers {
            match made {
                Ok(_) => {}
                // Lost to the one ending, or to this round's winner.
                Err(StoreError::Conflict(Conflict::DeploymentInProgress { application, running: lost_to })) => {
                    assert_eq!(application, "app");
                    let known = ending.as_ref() == Some(lost_to) || winners.contains(&lost_to);
                    assert!(known, "round {round}: lost to {lost_to}, neither {ending:?} nor {winners:?}");
                }
                Err(other) => panic!("round {round}: a loser got {other:?}"),
            }
        }
        previous = running.into_iter().next();
        if previous.is_none() {
            // Every racer lost to the one that was ending: the next round starts clean.
            a.insert_deployment(&format!("d{round}-x"), DEFAULT_TEAM, "app", "f", "{}", None, &lease()).await.unwrap();
            previous = Some(format!("d{round}-x"));
        }
    }
}

/// Replicas voting on one approval while another decides it: each voter
/// counts once, whichever replica it voted through, and no vote lands
/// after the decision (the votes read once it is decided are all there
/// ever are); each voter hears the votes in one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_voting_while_one_decides_count_each_voter_once_and_none_after() {
    let harness = TempSchema::new();
    let (a, b) = two_replicas(&harness).await;
    let late = Voter { id: "user:late".into(), name: "late".into() };
    for round in 0..ROUNDS {
        let id = format!("d{round}");
        a.insert_deployment(&id, DEFAULT_TEAM, &format!("app{round}"), "f", "{}", None, &lease()).await.unwrap();
        a.request_approval(&id, "a", "t", "t/0").await.unwrap();
        let mut racers = tokio::task::JoinSet::new();
        for racer in 0..2 * RACERS {
            let store = if racer % 2 == 0 { a.clone() } else { b.clone() };
            let id = id.clone();
            // Two racers per voter, one through each replica.
            let voter = Voter { id: format!("user:{}", racer / 2), name: format!("racer {racer}") };
            racers.spawn(async move { store.vote_approval(&id, "t/0", &voter).await.unwrap() });
        }
        assert_eq!(b.decide_approvals(&id, "t", ApprovalState::Approved, false, "admin").await.unwrap(), 1);
        let decided = a.vote_approval(&id, "t/0", &late).await.unwrap();
        let heard = racers.join_all().await;
        let all = b.vote_approval(&id, "t/0", &late).await.unwrap();
        assert_eq!(all, decided, "round {round}: a vote landed after the decision");
        let mut ids: Vec<&str> = all.iter().map(|voter| voter.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len(), "round {round}: each voter once: {all:?}");
        assert!(all.len() <= RACERS, "round {round}: {all:?}");
        for voters in heard {
            let mut rest = all.iter();
            assert!(voters.iter().all(|voter| rest.any(|v| v == voter)), "round {round}: {voters:?} in {all:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_adding_targets_at_once_keep_one_order() {
    let harness = TempSchema::new();
    let (a, b) = two_replicas(&harness).await;
    a.insert_deployment("d", DEFAULT_TEAM, "app", "f", "{}", None, &lease()).await.unwrap();
    let mut racers = tokio::task::JoinSet::new();
    for racer in 0..40 {
        let store = if racer % 2 == 0 { a.clone() } else { b.clone() };
        racers.spawn(async move {
            // Each target twice: the second write is an update that keeps its place.
            for _ in 0..2 {
                store.set_target("d", "a", &format!("t{racer}"), TargetState::Waiting, None, None).await.unwrap();
            }
        });
    }
    racers.join_all().await;
    let order: Vec<String> = a.targets("d").await.unwrap().into_iter().map(|t| t.target).collect();
    assert_eq!(order.len(), 40, "every target recorded once: {order:?}");
    for target in order.iter().rev() {
        b.set_target("d", "a", target, TargetState::Deployed, None, None).await.unwrap();
    }
    let again: Vec<String> = b.targets("d").await.unwrap().into_iter().map(|t| t.target).collect();
    assert_eq!(again, order, "updates keep the order of first recording");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_settings_and_credentials_agree() {
    let harness = TempSchema::new();
    let (a, b) = two_replicas(&harness).await;
    let (one, two) = tokio::join!(a.setting_or_init("key", b"a".to_vec()), b.setting_or_init("key", b"b".to_vec()));
    assert_eq!(one.unwrap(), two.unwrap(), "both replicas sign with the first key stored");
    let (one, two) = tokio::join!(
        a.create_credential(CredentialKind::Agent, DEFAULT_TEAM, "rna", "c1", b"h"),
        b.create_credential(CredentialKind::Agent, DEFAULT_TEAM, "rna", "c2", b"h")
    );
    let refused = [one.err(), two.err()].into_iter().flatten().collect::<Vec<_>>();
    assert!(
        matches!(&refused[..], [StoreError::Conflict(Conflict::CredentialExists { .. })]),
        "one live credential per subject: {refused:?}"
    );
}

/// Relays starting at once against an empty schema: the migrator's
/// advisory lock lets one migrate and the others find it done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_starting_at_once_migrate_once() {
    let harness = TempSchema::new();
    let mut admin = harness.admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {}", harness.schema))).execute(&mut admin).await.unwrap();
    let mut starting = tokio::task::JoinSet::new();
    for _ in 0..4 {
        starting.spawn(PostgresStore::open_pool(harness.options(), POOL));
    }
    for store in starting.join_all().await {
        let store = store.expect("every relay starts");
        store.ping().await.unwrap();
    }
    let applied: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}._sqlx_migrations WHERE success",
        harness.schema
    )))
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(applied as usize, super::store::MIGRATIONS.iter().count());
}

/// A schema from before objects had teams: everything in it is team
/// `default`'s, read through the traits.
#[tokio::test]
async fn migration_17_puts_what_was_stored_in_team_default() {
    let harness = TempSchema::new();
    let mut admin = harness.admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {}", harness.schema))).execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
    let old = sqlx::PgPool::connect_with(harness.options()).await.unwrap();
    super::store::MIGRATIONS.run_to(16, &old).await.unwrap();
    let rows = crate::conformance::stored_before_teams(|text| format!("convert_to('{text}', 'UTF8')"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(rows)).execute(&old).await.unwrap();
    old.close().await;

    let store = harness.open().await;
    crate::conformance::what_was_stored_before_teams_is_the_default_teams(&store).await;
}

/// `migrate` copies each object with its team, the teams themselves (with
/// their rule on approving one's own deployment, `default`'s too), service
/// accounts, role bindings, personal tokens (revoked as they were), the
/// audit trail, an abort asked and by whom, approvals with their deciders,
/// and votes in their order (a vote cast after the copy comes after them).
#[tokio::test]
async fn the_copy_from_sqlite_keeps_each_objects_team() {
    use crate::audit::{AuditEntry, AuditQuery, AuditStore};
    use crate::identities::{BindingSubject, IdentityStore, PersonalToken, RoleBinding, ServiceAccount};
    use crate::providers::{MetricProvider, MetricProviderStore};

    let dir = tempfile::tempdir().unwrap();
    let source = crate::SqliteStore::open_in(dir.path()).await.unwrap();
    source.create_team("blue").await.unwrap();
    source.create_team("green").await.unwrap();
    assert!(source.set_forbid_self_approval("blue", true).await.unwrap());
    assert!(source.set_forbid_self_approval(DEFAULT_TEAM, true).await.unwrap());
    let account = ServiceAccount {
        id: "0123456789abcdef".into(),
        team: "blue".into(),
        name: "ci".into(),
        roles: vec!["deployer".into()],
        secret_hash: b"hash".to_vec(),
        created_at: SystemTime::UNIX_EPOCH,
        created_by: "admin:admin".into(),
        expires_at: None,
        revoked_at: None,
    };
    source.create_service_account(&account).await.unwrap();
    let binding = RoleBinding {
        id: "fedcba9876543210".into(),
        team: "green".into(),
        subject_kind: BindingSubject::Group,
        subject: "ops".into(),
        role: "deployer".into(),
        created_at: SystemTime::UNIX_EPOCH,
        created_by: "admin:admin".into(),
    };
    source.create_role_binding(&binding).await.unwrap();
    let token = PersonalToken {
        id: "00112233aabbccdd".into(),
        person: crate::console::Person { subject: "sub-ada".into(), name: "Ada".into(), groups: vec!["ops".into()] },
        description: "laptop".into(),
        secret_hash: b"token hash".to_vec(),
        created_at: SystemTime::UNIX_EPOCH,
        expires_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(3600),
        revoked_at: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(60)),
    };
    source.create_personal_token(&token).await.unwrap();
    assert!(source.revoke_personal_token(Some("sub-ada"), &token.id, token.revoked_at.unwrap()).await.unwrap());
    let entry = AuditEntry {
        seq: 0,
        time: SystemTime::UNIX_EPOCH,
        actor_kind: "admin".into(),
        actor_id: "admin".into(),
        actor_name: "the bootstrap admin token".into(),
        team: Some("blue".into()),
        action: "team.create".into(),
        object: "/api/v1/teams".into(),
        outcome: "allowed".into(),
        status: 201,
        source_address: None,
        request_id: "r1".into(),
    };
    source.append_audit(std::slice::from_ref(&entry)).await.unwrap();
    source.put_secret("blue", "token", b"nonce", b"sealed").await.unwrap();
    let provider = MetricProvider {
        team: "blue".into(),
        name: "prom".into(),
        kind: "prometheus".into(),
        url: "http://p:9090".into(),
        agent: None,
        headers: Vec::new(),
        created_at: SystemTime::UNIX_EPOCH,
    };
    source.insert_provider(&provider).await.unwrap();
    source.create_credential(CredentialKind::Agent, "blue", "rna", "c1", b"h").await.unwrap();
    source.insert_run(&NewRun { team: "blue".into(), ..new_run("r", None) }).await.unwrap();
    source.insert_deployment("d", "blue", "app", "f", "{}", None, &lease()).await.unwrap();
    let voter = |id: &str| Voter { id: format!("user:{id}"), name: id.to_uppercase() };
    for (target, step_key) in [("t", "t/0"), ("u", "u/0")] {
        source.request_approval("d", "a", target, step_key).await.unwrap();
    }
    for (step_key, id) in [("u/0", "zed"), ("t/0", "bob"), ("u/0", "amy"), ("u/0", "bob")] {
        source.vote_approval("d", step_key, &voter(id)).await.unwrap();
    }
    assert_eq!(source.decide_approvals("d", "t", ApprovalState::Rejected, false, "BOB").await.unwrap(), 1);
    source.request_abort("d", "stop", false, "ALICE").await.unwrap();

    let harness = TempSchema::new();
    let target = harness.open().await;
    crate::migrate::sqlite_to_postgres(&source, &target).await.unwrap();
    let secrets = target.secrets().await.unwrap();
    assert_eq!(secrets.iter().map(|s| (s.team.as_str(), s.name.as_str())).collect::<Vec<_>>(), [("blue", "token")]);
    assert_eq!(target.provider("blue", "prom").await.unwrap(), Some(provider));
    assert!(target.active_credential(CredentialKind::Agent, "blue", "rna").await.unwrap().is_some());
    assert_eq!(target.run("r").await.unwrap().unwrap().team, "blue");
    let deployment = target.deployment("d").await.unwrap().unwrap();
    assert_eq!(deployment.team, "blue");
    assert_eq!(
        deployment.abort.map(|a| (a.reason, a.rollback, a.requested_by)),
        Some(("stop".into(), false, Some("ALICE".into())))
    );
    assert_eq!(target.approval("d", "t/0").await.unwrap(), Some(ApprovalState::Rejected));
    assert_eq!(target.approval_decided_by("d", "t/0").await.unwrap().as_deref(), Some("BOB"));
    assert_eq!(target.approval_decided_by("d", "u/0").await.unwrap(), None, "pending");
    let view = target.deployment_view("d").await.unwrap().unwrap();
    let votes: Vec<(&str, &str)> = view.approval_votes.iter().map(|(k, v)| (k.as_str(), v.name.as_str())).collect();
    assert_eq!(votes, [("u/0", "ZED"), ("u/0", "AMY"), ("u/0", "BOB")], "the pending one's, in their order");
    let after = target.vote_approval("d", "u/0", &voter("cy")).await.unwrap();
    assert_eq!(after, ["zed", "amy", "bob", "cy"].map(voter), "a vote after the copy comes after the copied ones");
    let bob = target.vote_approval("d", "t/0", &voter("cy")).await.unwrap();
    assert_eq!(bob, [voter("bob")], "a decided approval's vote is copied, and takes no more");
    let teams: Vec<(String, bool)> =
        target.teams().await.unwrap().into_iter().map(|t| (t.name, t.forbid_self_approval)).collect();
    let rule = |name: &str, forbid| (name.to_owned(), forbid);
    assert_eq!(
        teams,
        [rule("blue", true), rule(DEFAULT_TEAM, true), rule("green", false)],
        "the default team once, with the source's rule, and the copied ones"
    );
    assert_eq!(target.service_account(&account.id).await.unwrap(), Some(account));
    assert_eq!(target.role_bindings(None).await.unwrap(), std::slice::from_ref(&binding));
    assert_eq!(target.bindings_of("someone", &["ops".into()]).await.unwrap(), [binding]);
    assert_eq!(
        target.personal_tokens(Some("sub-ada"), None, 10).await.unwrap(),
        [token],
        "with its person, description and revocation"
    );
    let trail = target.audit(&AuditQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!((trail[0].action.as_str(), trail[0].team.as_deref()), ("team.create", Some("blue")));
}

#[tokio::test]
async fn open_takes_postgres_urls_and_says_when_the_server_is_away() {
    let harness = TempSchema::new();
    drop(harness.open().await);
    // Both schemes, by `open`; the schema by the URL's `options`.
    let search_path = format!("options=-c%20search_path%3D{}", harness.schema);
    for scheme in ["postgres", "postgresql"] {
        let url = url().replacen("postgres", scheme, 1);
        let url = format!("{url}{}{search_path}", if url.contains('?') { "&" } else { "?" });
        let store = crate::open(Some(&url), std::path::Path::new("/nonexistent")).await.unwrap();
        assert_eq!(store.setting_or_init("k", b"v".to_vec()).await.unwrap(), b"v", "{scheme}");
        store.close().await;
    }
    // Nothing listens on port 1: retryable, and the password is not echoed.
    let away = crate::open(Some("postgres://u:hunter2@127.0.0.1:1/db"), std::path::Path::new("/")).await.err().unwrap();
    assert!(matches!(away, StoreError::Unavailable(_)), "{away:?}");
    assert!(!away.to_string().contains("hunter2"), "{away}");
    let bad = crate::open(Some("postgres://u:hunter2@db/x?sslmode=sometimes"), std::path::Path::new("/"))
        .await
        .err()
        .unwrap();
    assert!(matches!(bad, StoreError::InvalidUrl(_)), "{bad:?}");
    assert!(!bad.to_string().contains("hunter2"), "{bad}");
}

#[tokio::test]
async fn a_lost_compare_and_set_is_not_an_error_and_a_stale_run_is_not_finished_twice() {
    // The same as SQLite's, across two pools: a replica acting on a stale
    // read (the run it loaded as pending) changes nothing.
    let harness = TempSchema::new();
    let (a, b) = two_replicas(&harness).await;
    a.insert_run(&new_run("r", None)).await.unwrap();
    let stale = b.run("r").await.unwrap().unwrap();
    assert_eq!(claim(&a, "a", "r").await, 1);
    assert_eq!(claim(&b, "b", &stale.id).await, 0, "the run moved on");
    let fence = |owner| Fence { owner, attempt: 1 };
    assert!(a.await_callback("r", &fence("a"), SystemTime::now(), None).await.unwrap());
    assert!(!b.retry_at("r", &fence("b"), SystemTime::now(), "late").await.unwrap());
    assert!(!a.retry_at("r", &fence("a"), SystemTime::now(), "late").await.unwrap(), "no longer calling");
}

/// `sslmode=require` in the URL: the connection is TLS (rustls), as the
/// server reports it. Needs a server with `ssl = on`, as CI's and the
/// default Debian package are.
#[tokio::test]
async fn sslmode_in_the_url_makes_the_connection_tls() {
    let harness = TempSchema::new();
    drop(harness.open().await);
    let url = url();
    let url = format!(
        "{url}{}sslmode=require&options=-c%20search_path%3D{}",
        if url.contains('?') { "&" } else { "?" },
        harness.schema
    );
    let store = PostgresStore::open(&url).await.expect("a TLS connection (is ssl on in the server?)");
    let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert!(tls, "sslmode=require connected in the clear");
    store.close().await;
}

/// The SQLSTATEs as the server raises them: a lost serialization race or
/// a deadlock is retryable, a unique violation a conflict, the rest `Backend`.
#[tokio::test]
async fn error_codes_map_to_the_variants() {
    let harness = TempSchema::new();
    let store = harness.open().await;
    let raise = |code: &'static str| {
        let pool = store.pool.clone();
        async move {
            let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{code}'; END $$");
            super::error::db(sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap_err())
        }
    };
    // Also a full disk, a read-only server and one starting up: another
    // try may pass, so they are unavailable (503 to a caller), not bugs.
    for code in ["40001", "40P01", "57P01", "08006", "53300", "53100", "25006", "57P03"] {
        let err = raise(code).await;
        assert!(err.is_retryable(), "{code}: {err:?}");
    }
    assert!(matches!(raise("23505").await, StoreError::Conflict(Conflict::Duplicate(_))));
    assert!(matches!(raise("42P01").await, StoreError::Backend(_)));
    assert!(matches!(raise("22P02").await, StoreError::Backend(_)));
}

/// Claims run `id` for `owner` if it is due; returns how many were claimed.
async fn claim(store: &PostgresStore, owner: &str, id: &str) -> usize {
    let now = SystemTime::now();
    let claim = Claim { owner, now, lease_until: now + std::time::Duration::from_secs(60), limit: 1 };
    store.claim_due(&claim, Some(id)).await.unwrap().len()
}

fn lease() -> DeploymentLease<'static> {
    DeploymentLease { owner: "a", until: SystemTime::now() + std::time::Duration::from_secs(60) }
}

/// Two replicas claiming the same due runs in many small batches at once:
/// every run is claimed, none twice (SKIP LOCKED, and the re-check of the
/// state under the row lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_claiming_at_once_claim_each_run_once() {
    const RUNS: usize = 300;
    let harness = TempSchema::new();
    let (a, b) = two_replicas(&harness).await;
    for i in 0..RUNS {
        a.insert_run(&new_run(&format!("r{i}"), None)).await.unwrap();
    }
    let mut claimers = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (store, owner) = if worker % 2 == 0 { (a.clone(), "a") } else { (b.clone(), "b") };
        claimers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let now = SystemTime::now();
                let claim = Claim { owner, now, lease_until: now + std::time::Duration::from_secs(60), limit: 7 };
                let batch = store.claim_due(&claim, None).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|run| run.id));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(mine) = claimers.join_next().await {
        all.extend(mine.unwrap());
    }
    let claimed = all.len();
    all.sort();
    all.dedup();
    assert_eq!((claimed, all.len()), (RUNS, RUNS), "each run claimed exactly once");
}

/// What one replica commits reaches another replica's change feed, with
/// the id; a relay on another schema hears nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_committed_by_one_replica_reach_the_others_feed() {
    let harness = TempSchema::new();
    let elsewhere = TempSchema::new();
    let (a, b) = two_replicas(&harness).await;
    let other = elsewhere.open().await;
    let mut feed = b.changes().await.unwrap().expect("postgres has a feed");
    let mut other_feed = other.changes().await.unwrap().expect("postgres has a feed");
    // A run's end is announced when someone waits for it, and only then.
    let ended =
        Outcome { state: RunState::Succeeded, success: Some(true), md_message: None, reason: None, by_callback: true };
    a.insert_run(&new_run("quiet", None)).await.unwrap();
    assert!(a.finish("quiet", &RunState::UNFINISHED, &ended).await.unwrap());
    a.insert_run(&new_run("r", None)).await.unwrap();
    a.watch_run("r").await.unwrap();
    assert_eq!(claim(&a, "a", "r").await, 1);
    assert!(a.finish_attempt("r", &Fence { owner: "a", attempt: 1 }, &ended).await.unwrap());
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv()).await.expect("within 10 s");
    assert_eq!(next, Some(Change::Run("r".into())));
    a.insert_deployment("d", DEFAULT_TEAM, "app", "f", "{}", None, &lease()).await.unwrap();
    a.request_approval("d", "a", "t", "t/0").await.unwrap();
    assert_eq!(b.approval("d", "t/0").await.unwrap(), Some(ApprovalState::Pending));
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv()).await.unwrap();
    assert_eq!(next, Some(Change::Deployment("d".into())));
    a.put_secret(DEFAULT_TEAM, "token", b"nonce", b"sealed").await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv()).await.unwrap();
    assert_eq!(next, Some(Change::Secret("token".into())));
    assert!(a.delete_secret(DEFAULT_TEAM, "token").await.unwrap());
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv()).await.unwrap();
    assert_eq!(next, Some(Change::Secret("token".into())));
    // Another team's secret is announced by its name too.
    a.put_secret("blue", "key", b"nonce", b"sealed").await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv()).await.unwrap();
    assert_eq!(next, Some(Change::Secret("key".into())));
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(500), other_feed.recv()).await;
    assert!(quiet.is_err(), "another schema's relays hear nothing: {quiet:?}");
}

/// Fills `store` with `count` pending runs in one statement: run `r{i}`
/// falls due `i` ms after `base`, and the ids are in no due order
/// ([`crate::conformance::backlog_id`]), so an index on id cannot pass for one on the due time.
async fn fill_pending(store: &PostgresStore, count: i64, base: i64) {
    sqlx::query(
        "INSERT INTO webhook_runs (id, callback_id, webhook, spec, state, next_attempt_at, created_at, updated_at) \
         SELECT 'r' || lpad(((i * 7919) % 100003)::text, 6, '0'), 'cb-' || i, 'w', '{}', 'pending', $2 + i, $2, $2 \
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(count)
    .bind(base)
    .execute(&store.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE webhook_runs").execute(&store.pool).await.unwrap();
}

/// The plan PostgreSQL picks for `sql` with these binds, as text.
async fn plan(store: &PostgresStore, sql: &str, id: Option<&str>, limit: i64, now: i64) -> String {
    let explain = format!("EXPLAIN {sql}");
    let query = match id {
        Some(id) => sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(explain)).bind(id.to_owned()),
        None => sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(explain)).bind(limit),
    };
    let lines = query.bind("a").bind(now + 60_000).bind(now).bind(now).fetch_all(&store.pool).await.unwrap();
    lines.join("\n")
}

/// Claiming costs the same whatever the backlog: on 20 000 pending runs
/// the claim of one run reads it by its primary key, and the claim of the
/// due ones reads the partial index on the due time; neither scans the table.
#[tokio::test]
async fn claims_use_the_primary_key_and_the_due_index() {
    let harness = TempSchema::new();
    let store = harness.open().await;
    let now = crate::time::unix_ms(SystemTime::now());
    fill_pending(&store, 20_000, now - 10_000).await;

    let one = plan(&store, super::runs::CLAIM_ONE, Some("r7"), 0, now).await;
    assert!(one.contains("using webhook_runs_pkey"), "the claim of one run by its key:\n{one}");
    assert!(!one.contains("Seq Scan"), "{one}");
    let due = plan(&store, super::runs::CLAIM_DUE, None, 64, now).await;
    assert!(due.contains("using webhook_runs_due"), "the claim of the due runs by the due index:\n{due}");
    assert!(!due.contains("Seq Scan"), "{due}");
}

/// The sweep for lapsed leases reads only the runs under way and the
/// finished ones with an attempt unrecorded, each through its partial
/// index: on 20 000 pending runs neither statement scans the table.
#[tokio::test]
async fn the_lapsed_lease_sweep_reads_its_partial_indexes() {
    let harness = TempSchema::new();
    let store = harness.open().await;
    let now = crate::time::unix_ms(SystemTime::now());
    fill_pending(&store, 20_000, now - 10_000).await;

    for (lapsed, index) in [
        (super::runs::LAPSED_CALLING, "webhook_runs_calling"),
        (super::runs::LAPSED_UNRECORDED, "webhook_runs_unrecorded"),
    ] {
        let explain = format!("EXPLAIN {}", super::runs::take_over(lapsed));
        let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
            .bind("a")
            .bind(now + 60_000)
            .bind(now)
            .bind(now)
            .bind(64_i64)
            .fetch_all(&store.pool)
            .await
            .unwrap();
        let plan = lines.join("\n");
        assert!(plan.contains(index), "through {index}:\n{plan}");
        assert!(!plan.contains("Seq Scan on webhook_runs"), "{plan}");
    }
}

/// From 100 000 pending runs (some not yet due), claims take the earliest
/// due first.
#[tokio::test]
async fn a_large_backlog_is_claimed_earliest_first() {
    let harness = TempSchema::new();
    let store = harness.open().await;
    let now = SystemTime::now();
    fill_pending(&store, 100_000, crate::time::unix_ms(now) - 90_000).await;
    crate::conformance::a_large_backlog_is_claimed_earliest_first(&store, now).await;
}
