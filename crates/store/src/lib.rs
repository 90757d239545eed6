//! Durable state of the relay, behind the [`Store`] trait.
//!
//! [`SqliteStore`] keeps it in the data directory (WAL mode, schema by
//! migrations in `migrations/`). Everything a relay must not forget across a
//! restart lives here: credentials (secrets only as hashes), shared
//! settings, encrypted secrets, and webhook runs with their attempts.
//!
//! Runs change state only by compare-and-set on their current state, so a
//! callback racing an attempt, a deadline or a restart never applies twice.

mod group_commit;
mod sqlite;

pub use sqlite::SqliteStore;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    /// The Idempotency-Key was used before, for the row `id`.
    #[error("the Idempotency-Key was already used, for {id}")]
    IdempotencyKeyUsed { id: String, same_request: bool },
    #[error("invalid database URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("schema migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Lock contention and lost connections may pass; the rest will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("5" | "6" | "517"))
            }
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => true,
            _ => false,
        }
    }
}

/// Who a credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// An agent; the subject is its identifier.
    Agent,
    /// An external system that calls back; the subject is its name.
    Callback,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Agent => "agent",
            CredentialKind::Callback => "callback",
        }
    }

    pub(crate) fn parse(text: &str) -> Self {
        if text == "agent" { CredentialKind::Agent } else { CredentialKind::Callback }
    }
}

#[derive(Debug, Clone)]
pub struct Credential {
    pub client_id: String,
    pub kind: CredentialKind,
    pub subject: String,
    pub secret_hash: Vec<u8>,
    pub created_at: SystemTime,
    pub revoked_at: Option<SystemTime>,
}

impl Credential {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// Where a webhook run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for its first attempt, or for a retry.
    Pending,
    /// An attempt is under way.
    Calling,
    AwaitingCallback,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl RunState {
    pub const UNFINISHED: [RunState; 3] = [RunState::Pending, RunState::Calling, RunState::AwaitingCallback];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Calling => "calling",
            RunState::AwaitingCallback => "awaiting_callback",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => RunState::Pending,
            "calling" => RunState::Calling,
            "awaiting_callback" => RunState::AwaitingCallback,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "timed_out" => RunState::TimedOut,
            "cancelled" => RunState::Cancelled,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        !Self::UNFINISHED.contains(&self)
    }
}

/// A webhook run as stored.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: String,
    pub callback_id: String,
    pub webhook: String,
    pub environment: Option<String>,
    /// JSON; the relay's business.
    pub spec: String,
    /// JSON of the last rendered request, secrets masked.
    pub request: Option<String>,
    pub state: RunState,
    pub attempts: u32,
    pub next_attempt_at: Option<SystemTime>,
    pub deadline_at: Option<SystemTime>,
    /// The callback's verdict (or a 2xx when callbacks are off).
    pub success: Option<bool>,
    pub md_message: Option<String>,
    /// Why the run ended as it did, for operators.
    pub reason: Option<String>,
    /// When a callback decided the run.
    pub callback_at: Option<SystemTime>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub finished_at: Option<SystemTime>,
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub callback_id: String,
    pub webhook: String,
    pub environment: Option<String>,
    pub spec: String,
    pub idempotency: Option<IdempotencyKey>,
}

/// A client's `Idempotency-Key` and a hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: String,
}

/// One try at calling the webhook.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempt {
    pub number: u32,
    #[serde(serialize_with = "serialize_time")]
    pub started_at: SystemTime,
    pub latency_ms: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The start of the reply body.
    pub reply: Option<String>,
}

fn serialize_time<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(unix_ms(*time))
}

/// How a run ends.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub state: RunState,
    pub success: Option<bool>,
    pub md_message: Option<String>,
    pub reason: Option<String>,
    /// Set when a callback decided it.
    pub by_callback: bool,
}

/// The step-key suffix of an analysis step's rollback-or-continue decision,
/// kept in the approvals table: `approved` continues, `rejected` rolls back.
pub const DECISION_SUFFIX: &str = "/decision";

/// A metric provider analysis steps query: `kind` is `prometheus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricProvider {
    pub name: String,
    pub kind: String,
    pub url: String,
    /// Queries go through this agent's tunnel; without, direct.
    pub agent: Option<String>,
    /// `(key, value template)`, in order.
    pub headers: Vec<(String, String)>,
    pub created_at: SystemTime,
}

#[derive(Debug, Clone)]
pub struct EncryptedSecret {
    pub name: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub updated_at: SystemTime,
}

#[derive(Debug, Clone)]
pub struct DeploymentRecord {
    pub id: String,
    pub application: String,
    /// The deployment file's text.
    pub file: String,
    /// JSON object of the caller's context.
    pub context: String,
    pub state: String,
    pub reason: Option<String>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub finished_at: Option<SystemTime>,
}

/// A run and its attempts as of one moment.
#[derive(Debug, Clone)]
pub struct RunView {
    pub run: RunRecord,
    pub attempts: Vec<Attempt>,
}

/// A deployment as of one moment: nothing in it is older or newer than the rest.
#[derive(Debug, Clone)]
pub struct DeploymentView {
    pub record: DeploymentRecord,
    pub targets: Vec<TargetRecord>,
    /// Step keys and their values.
    pub journal: Vec<(String, String)>,
    /// The webhook runs the journal names.
    pub runs: Vec<RunRecord>,
    /// Targets and step keys.
    pub pending_approvals: Vec<(String, String)>,
    pub events: Vec<EventRecord>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetRecord {
    pub target: String,
    pub state: String,
    pub step: Option<String>,
    pub reason: Option<String>,
    #[serde(serialize_with = "serialize_time")]
    pub updated_at: SystemTime,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRecord {
    #[serde(serialize_with = "serialize_time")]
    pub at: SystemTime,
    pub target: Option<String>,
    pub kind: String,
    pub message: String,
}

/// An approval a pause waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
    Cancelled,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
            ApprovalState::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(text: &str) -> Self {
        match text {
            "approved" => ApprovalState::Approved,
            "rejected" => ApprovalState::Rejected,
            "cancelled" => ApprovalState::Cancelled,
            _ => ApprovalState::Pending,
        }
    }
}

/// Everything the relay keeps. One implementation per database.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads a setting, first storing `init` if it is absent; the first writer wins.
    async fn setting_or_init(&self, key: &str, init: Vec<u8>) -> Result<Vec<u8>, StoreError>;

    /// Stores a new credential. Fails with `Conflict` while `subject` has a live one.
    async fn create_credential(
        &self,
        kind: CredentialKind,
        subject: &str,
        client_id: &str,
        secret_hash: &[u8],
    ) -> Result<Credential, StoreError>;
    async fn credential(&self, client_id: &str) -> Result<Option<Credential>, StoreError>;
    async fn active_credential(&self, kind: CredentialKind, subject: &str) -> Result<Option<Credential>, StoreError>;
    async fn active_credentials(&self, kind: CredentialKind) -> Result<Vec<Credential>, StoreError>;
    /// Revokes the live credential of `subject`. Returns whether there was one.
    async fn revoke(&self, kind: CredentialKind, subject: &str) -> Result<bool, StoreError>;

    async fn put_secret(&self, name: &str, nonce: &[u8], ciphertext: &[u8]) -> Result<(), StoreError>;
    async fn secrets(&self) -> Result<Vec<EncryptedSecret>, StoreError>;
    async fn delete_secret(&self, name: &str) -> Result<bool, StoreError>;

    /// Adds a provider; [`StoreError::Conflict`] when the name is taken.
    async fn insert_provider(&self, provider: &MetricProvider) -> Result<(), StoreError>;
    async fn providers(&self) -> Result<Vec<MetricProvider>, StoreError>;
    async fn provider(&self, name: &str) -> Result<Option<MetricProvider>, StoreError>;
    async fn delete_provider(&self, name: &str) -> Result<bool, StoreError>;

    async fn insert_run(&self, run: &NewRun) -> Result<(), StoreError>;
    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError>;
    async fn run_by_callback(&self, callback_id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// The newest runs first.
    async fn runs(&self, limit: u32) -> Result<Vec<RunRecord>, StoreError>;
    async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError>;
    /// A run and its attempts, read as one snapshot.
    async fn run_view(&self, id: &str) -> Result<Option<RunView>, StoreError>;

    /// pending -> calling, counting attempt `number`. False if the run moved on.
    async fn start_attempt(&self, id: &str, number: u32, request: &str) -> Result<bool, StoreError>;
    async fn record_attempt(&self, run_id: &str, attempt: &Attempt) -> Result<(), StoreError>;
    /// calling -> pending, to try again at `at`.
    async fn retry_at(&self, id: &str, at: SystemTime, reason: &str) -> Result<bool, StoreError>;
    /// calling -> awaiting_callback until `deadline`; `reason` says why when
    /// it is not the usual 2xx.
    async fn await_callback(&self, id: &str, deadline: SystemTime, reason: Option<&str>) -> Result<bool, StoreError>;
    /// Any of `from` -> a finished state. False if the run was not in `from`.
    async fn finish(&self, id: &str, from: &[RunState], outcome: &Outcome) -> Result<bool, StoreError>;

    /// Stores a running deployment. Fails with `Conflict` naming the
    /// deployment already running for the application, and with
    /// `IdempotencyKeyUsed` when the key was used before.
    async fn insert_deployment(
        &self,
        id: &str,
        application: &str,
        file: &str,
        context: &str,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<(), StoreError>;
    async fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, StoreError>;
    /// The newest first.
    /// The newest deployments with their targets, read as one snapshot.
    async fn deployments(&self, limit: u32) -> Result<Vec<(DeploymentRecord, Vec<TargetRecord>)>, StoreError>;
    async fn unfinished_deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError>;
    async fn finish_deployment(&self, id: &str, state: &str, reason: Option<&str>) -> Result<(), StoreError>;
    async fn set_target(
        &self,
        id: &str,
        target: &str,
        state: &str,
        step: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), StoreError>;
    /// A deployment and everything shown with it, read as one snapshot.
    async fn deployment_view(&self, id: &str) -> Result<Option<DeploymentView>, StoreError>;
    async fn targets(&self, id: &str) -> Result<Vec<TargetRecord>, StoreError>;
    async fn journal(&self, id: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Records a step's value; a key already recorded keeps its first value.
    async fn put_journal(&self, id: &str, key: &str, value: &str) -> Result<(), StoreError>;
    /// Overwrites a step's value (a step moving from started to done).
    async fn replace_journal(&self, id: &str, key: &str, value: &str) -> Result<(), StoreError>;
    async fn add_event(&self, id: &str, target: Option<&str>, kind: &str, message: &str) -> Result<(), StoreError>;
    /// Opens an approval (once; a replay finds it as it is).
    async fn request_approval(&self, id: &str, target: &str, step_key: &str) -> Result<ApprovalState, StoreError>;
    async fn approval(&self, id: &str, step_key: &str) -> Result<Option<ApprovalState>, StoreError>;
    /// Decides the pending approvals of `target`. Returns how many there were.
    /// With `decisions`, only the rollback-or-continue decisions of analysis
    /// steps (step keys ending in [`DECISION_SUFFIX`]); without, only the rest.
    async fn decide_approvals(
        &self,
        id: &str,
        target: &str,
        decision: ApprovalState,
        decisions: bool,
    ) -> Result<u64, StoreError>;
    /// Marks one approval cancelled if it is still pending.
    async fn cancel_approval(&self, id: &str, step_key: &str) -> Result<(), StoreError>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
    async fn close(&self);
}

pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn new_run(id: &str, callback_id: &str) -> NewRun {
        NewRun {
            id: id.into(),
            callback_id: callback_id.into(),
            webhook: "w".into(),
            environment: None,
            spec: "{}".into(),
            idempotency: None,
        }
    }

    #[tokio::test]
    async fn one_live_credential_per_subject_and_revocation() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store.create_credential(CredentialKind::Agent, "rna", "c1", b"h1").await.unwrap();
        let err = store.create_credential(CredentialKind::Agent, "rna", "c2", b"h2").await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("\"rna\"")), "{err}");
        assert!(store.revoke(CredentialKind::Agent, "rna").await.unwrap());
        assert!(!store.credential("c1").await.unwrap().unwrap().is_active());
        store.create_credential(CredentialKind::Agent, "rna", "c2", b"h2").await.unwrap();
        assert_eq!(store.active_credential(CredentialKind::Agent, "rna").await.unwrap().unwrap().client_id, "c2");
    }

    #[tokio::test]
    async fn an_idempotency_key_creates_one_row() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let key = |hash: &str| Some(IdempotencyKey { key: "k1".into(), request_hash: hash.into() });
        store.insert_run(&NewRun { idempotency: key("h"), ..new_run("r1", "c1") }).await.unwrap();
        let again = store.insert_run(&NewRun { idempotency: key("h"), ..new_run("r2", "c2") }).await.unwrap_err();
        assert!(
            matches!(again, StoreError::IdempotencyKeyUsed { ref id, same_request: true } if id == "r1"),
            "{again}"
        );
        let other = store.insert_run(&NewRun { idempotency: key("x"), ..new_run("r3", "c3") }).await.unwrap_err();
        assert!(matches!(other, StoreError::IdempotencyKeyUsed { same_request: false, .. }), "{other}");
        assert!(store.run("r2").await.unwrap().is_none());
        store.insert_run(&new_run("r4", "c4")).await.unwrap();
        store.insert_run(&new_run("r5", "c5")).await.unwrap();

        let deployment_key = IdempotencyKey { key: "k1".into(), request_hash: "h".into() };
        store.insert_deployment("d1", "app", "f", "{}", Some(&deployment_key)).await.unwrap();
        let again = store.insert_deployment("d2", "app", "f", "{}", Some(&deployment_key)).await.unwrap_err();
        assert!(
            matches!(again, StoreError::IdempotencyKeyUsed { ref id, same_request: true } if id == "d1"),
            "{again}"
        );
        let running = store.insert_deployment("d3", "app", "f", "{}", None).await.unwrap_err();
        assert!(matches!(running, StoreError::Conflict(_)), "{running}");
    }

    #[tokio::test]
    async fn settings_keep_the_first_value() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        assert_eq!(store.setting_or_init("k", b"one".to_vec()).await.unwrap(), b"one");
        assert_eq!(store.setting_or_init("k", b"two".to_vec()).await.unwrap(), b"one");
    }

    #[tokio::test]
    async fn run_transitions_are_compare_and_set() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let run = new_run("r", "c");
        store.insert_run(&run).await.unwrap();
        assert!(store.start_attempt("r", 1, "{}").await.unwrap());
        assert!(!store.start_attempt("r", 1, "{}").await.unwrap(), "only a pending run starts an attempt");
        assert!(store.await_callback("r", SystemTime::now(), None).await.unwrap());
        assert!(!store.retry_at("r", SystemTime::now(), "x").await.unwrap(), "only a calling run is retried");
        let verdict = |success: bool| Outcome {
            state: if success { RunState::Succeeded } else { RunState::Failed },
            success: Some(success),
            md_message: Some("m".into()),
            reason: None,
            by_callback: true,
        };
        assert!(store.finish("r", &RunState::UNFINISHED, &verdict(true)).await.unwrap());
        assert!(!store.finish("r", &RunState::UNFINISHED, &verdict(false)).await.unwrap(), "the first verdict wins");
        let stored = store.run_by_callback("c").await.unwrap().unwrap();
        assert_eq!((stored.state, stored.success, stored.attempts), (RunState::Succeeded, Some(true), 1));
        assert!(stored.callback_at.is_some() && stored.finished_at.is_some());
        assert!(store.unfinished_runs().await.unwrap().is_empty());
    }

    /// A deployment's view is one snapshot: while a writer adds a journal
    /// entry, then an event, then moves the target on, round after round, no
    /// view shows a later write without the earlier ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn providers_and_decisions_keep_to_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_in(dir.path()).await.unwrap();
        let provider = MetricProvider {
            name: "prom".into(),
            kind: "prometheus".into(),
            url: "http://p:9090".into(),
            agent: Some("rna".into()),
            headers: vec![("Authorization".into(), "Bearer {{secrets.t}}".into())],
            created_at: UNIX_EPOCH + Duration::from_secs(1),
        };
        store.insert_provider(&provider).await.unwrap();
        assert!(matches!(store.insert_provider(&provider).await, Err(StoreError::Conflict(_))));
        assert_eq!(store.provider("prom").await.unwrap(), Some(provider.clone()));
        assert_eq!(store.providers().await.unwrap(), [provider]);
        assert!(store.delete_provider("prom").await.unwrap());
        assert!(!store.delete_provider("prom").await.unwrap());

        store.insert_deployment("d", "app", "file", "{}", None).await.unwrap();
        store.request_approval("d", "t", "t/beforeDeployment/0").await.unwrap();
        store.request_approval("d", "t", &format!("t/beforeDeployment/1{DECISION_SUFFIX}")).await.unwrap();
        assert_eq!(store.decide_approvals("d", "t", ApprovalState::Approved, true).await.unwrap(), 1);
        assert_eq!(store.approval("d", "t/beforeDeployment/0").await.unwrap(), Some(ApprovalState::Pending));
        assert_eq!(store.decide_approvals("d", "t", ApprovalState::Rejected, false).await.unwrap(), 1);
        assert_eq!(store.approval("d", "t/beforeDeployment/0").await.unwrap(), Some(ApprovalState::Rejected));
        let decision = format!("t/beforeDeployment/1{DECISION_SUFFIX}");
        assert_eq!(store.approval("d", &decision).await.unwrap(), Some(ApprovalState::Approved));
    }

    #[tokio::test]
    async fn a_deployment_view_is_one_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open_in(dir.path()).await.unwrap());
        assert!(store.deployment_view("d").await.unwrap().is_none());
        store.insert_deployment("d", "app", "file", "{}", None).await.unwrap();
        let run = new_run("r", "c");
        store.insert_run(&run).await.unwrap();
        store.set_target("d", "t", "0", None, None).await.unwrap();
        const ROUNDS: usize = 150;
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for round in 1..=ROUNDS {
                    let value = if round == 1 { "r".to_owned() } else { format!("v{round}") };
                    store.put_journal("d", &format!("t/{round}/run"), &value).await.unwrap();
                    store.add_event("d", Some("t"), "step", &format!("round {round}")).await.unwrap();
                    store.set_target("d", "t", &round.to_string(), None, None).await.unwrap();
                }
            })
        };
        let mut views = 0;
        loop {
            let finished = writer.is_finished();
            let view = store.deployment_view("d").await.unwrap().expect("the deployment exists");
            let (journal, events) = (view.journal.len(), view.events.len());
            let round: usize = view.targets[0].state.parse().unwrap();
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
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_view_is_one_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open_in(dir.path()).await.unwrap());
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
                    // Queued together, the two often share one commit: a
                    // view read in two parts can then straddle it.
                    let (started, logged) =
                        tokio::join!(store.start_attempt("r", number, "{}"), store.record_attempt("r", &attempt));
                    assert!(started.unwrap());
                    logged.unwrap();
                    assert!(store.retry_at("r", SystemTime::now(), "again").await.unwrap());
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

    #[tokio::test]
    async fn the_deployment_list_carries_each_deployments_own_targets_newest_first() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        for (id, targets) in [("d1", &["a", "b"][..]), ("d2", &["c"][..]), ("d3", &[][..])] {
            store.insert_deployment(id, &format!("app-{id}"), "file", "{}", None).await.unwrap();
            for target in targets {
                store.set_target(id, target, "waiting", None, None).await.unwrap();
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

    /// Writes that share a group commit keep their own answers: a conflict
    /// or a lost compare-and-set in one does not undo the others, and what
    /// was acknowledged is in the file when it is opened again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_keep_their_own_answers_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open_in(dir.path()).await.unwrap());
        store.insert_run(&new_run("r0", "c0")).await.unwrap();
        assert!(store.start_attempt("r0", 1, "{}").await.unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 1..=200 {
            let (runs, credentials, verdicts) = (store.clone(), store.clone(), store.clone());
            let run = new_run(&format!("r{i}"), &format!("c{i}"));
            tasks.spawn(async move { ("run", runs.insert_run(&run).await.map(|()| true)) });
            // Two credentials per subject: one of each pair is refused.
            let (subject, client_id) = (format!("s{}", i / 2), format!("id{i}"));
            tasks.spawn(async move {
                let made = credentials.create_credential(CredentialKind::Callback, &subject, &client_id, b"h").await;
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

        let reopened = SqliteStore::open_in(dir.path()).await.unwrap();
        assert_eq!(reopened.runs(1000).await.unwrap().len(), 201);
        assert_eq!(reopened.active_credentials(CredentialKind::Callback).await.unwrap().len(), 101);
        assert_eq!(reopened.run("r0").await.unwrap().unwrap().state, RunState::Succeeded);
    }
}
