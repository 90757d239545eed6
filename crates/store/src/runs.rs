//! Webhook runs and their attempts. A run changes state only by
//! compare-and-set on its current state, so a callback racing an attempt, a
//! deadline or a restart never applies twice.

use std::time::SystemTime;

use crate::error::StoreError;
use crate::idempotency::IdempotencyKey;
use crate::time::serialize_time;

/// Where a webhook run stands: the API's vocabulary, stored as its text.
pub use borealis_api::RunState;

/// A webhook run as stored.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: String,
    /// The team it belongs to: its agents, secrets and signing keys are that team's.
    pub team: String,
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
    /// The replica that owns the attempt under way (or last owned one).
    pub lease_owner: Option<String>,
    pub lease_until: Option<SystemTime>,
    /// The attempt whose request was recorded as about to go out; a run
    /// whose attempt number is later was claimed but not sent.
    pub request_attempt: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub team: String,
    pub callback_id: String,
    pub webhook: String,
    pub environment: Option<String>,
    pub spec: String,
    /// Unique within the run's team.
    pub idempotency: Option<IdempotencyKey>,
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

/// What a claim takes: who claims, as of when, until when, how many.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub owner: &'a str,
    pub now: SystemTime,
    pub lease_until: SystemTime,
    pub limit: u32,
}

/// The fence of an attempt's writes: they land only while the run is
/// calling, on attempt `attempt`, leased to `owner`. A replica that lost its
/// lease (another took the run over) thus writes nothing.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub owner: &'a str,
    pub attempt: u32,
}

/// A run and its attempts as of one moment.
#[derive(Debug, Clone)]
pub struct RunView {
    pub run: RunRecord,
    pub attempts: Vec<Attempt>,
}

#[async_trait::async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Stores a pending run. Fails with [`Conflict::IdempotencyKeyUsed`] when
    /// its key was used before (naming that run), and with
    /// [`Conflict::Duplicate`] when its id or callback id is taken.
    ///
    /// [`Conflict::IdempotencyKeyUsed`]: crate::Conflict::IdempotencyKeyUsed
    /// [`Conflict::Duplicate`]: crate::Conflict::Duplicate
    async fn insert_run(&self, run: &NewRun) -> Result<(), StoreError>;
    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError>;
    async fn run_by_callback(&self, callback_id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// Marks the run as waited for: its state changes are announced to the
    /// other replicas sharing the store from now on.
    async fn watch_run(&self, id: &str) -> Result<(), StoreError>;
    /// The newest runs first (by creation time, then id).
    async fn runs(&self, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        self.runs_page(&crate::Page::first(limit)).await
    }
    /// One page of runs, newest first; `page.name` is the webhook.
    async fn runs_page(&self, page: &crate::Page) -> Result<Vec<RunRecord>, StoreError>;
    /// In no particular order.
    async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError>;
    /// A run and its attempts (by number), read as one snapshot: every
    /// backend must read both in one transaction that sees one commit, so
    /// the attempt log always matches the run's state.
    async fn run_view(&self, id: &str) -> Result<Option<RunView>, StoreError>;

    /// Claims due attempts for replica `owner`: each pending run whose next
    /// attempt is due at `now` moves to calling with its attempt count one
    /// higher, leased to `owner` until `lease_until`. Of replicas claiming
    /// at once, one gets each run. At most `limit` runs; with `only`, just
    /// that one. The runs are returned as claimed.
    async fn claim_due(&self, claim: &Claim<'_>, only: Option<&str>) -> Result<Vec<RunRecord>, StoreError>;
    /// Claims runs whose lease ran out before `claim.now`: their owner
    /// died (or lost the database) mid-attempt. Calling runs, and finished
    /// ones a callback or a cancel decided while their attempt was under way
    /// (the attempt is not recorded yet). The attempt count stays: the
    /// caller records that attempt.
    async fn claim_expired(&self, claim: &Claim<'_>) -> Result<Vec<RunRecord>, StoreError>;
    /// Extends the leases `owner` holds on the runs `ids` (its attempts
    /// under way, the run calling or decided meanwhile); returns how many. A lease of an attempt no
    /// longer under way is left to lapse, so another replica takes it over.
    async fn renew_run_leases(&self, owner: &str, ids: &[String], lease_until: SystemTime) -> Result<u64, StoreError>;
    /// Awaiting-callback runs whose deadline is at or before `now`.
    async fn due_deadlines(&self, now: SystemTime, limit: u32) -> Result<Vec<RunRecord>, StoreError>;
    /// Records the request the fenced attempt sends (secrets masked), and
    /// that this attempt is about to go out.
    async fn set_request(&self, id: &str, fence: &Fence<'_>, request: &str) -> Result<bool, StoreError>;
    /// Lets go of the lease of a run that finished while the fenced attempt
    /// was under way, once that attempt is recorded.
    async fn release_finished(&self, id: &str, fence: &Fence<'_>) -> Result<(), StoreError>;
    /// Logs the fenced attempt; a number logged before keeps its first
    /// record. Fenced by owner and number only: a callback may end the run
    /// while its attempt is under way, and the attempt is still logged.
    /// False when another replica took the run over.
    async fn record_attempt(&self, run_id: &str, fence: &Fence<'_>, attempt: &Attempt) -> Result<bool, StoreError>;
    /// calling -> pending, to try again at `at`; fenced.
    async fn retry_at(&self, id: &str, fence: &Fence<'_>, at: SystemTime, reason: &str) -> Result<bool, StoreError>;
    /// calling -> awaiting_callback until `deadline`; `reason` says why when
    /// it is not the usual 2xx. Fenced.
    async fn await_callback(
        &self,
        id: &str,
        fence: &Fence<'_>,
        deadline: SystemTime,
        reason: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// calling -> a finished state, by the attempt's owner. Fenced.
    async fn finish_attempt(&self, id: &str, fence: &Fence<'_>, outcome: &Outcome) -> Result<bool, StoreError>;
    /// The run whose callback id is `callback_id`, if it is unfinished ->
    /// the finished state of `outcome`, in one step where the backend can.
    /// Returns the run's id when it changed; `None` when no run has that
    /// callback id or it had finished (read the run to tell which).
    async fn finish_by_callback(&self, callback_id: &str, outcome: &Outcome) -> Result<Option<String>, StoreError>;
    /// Any of `from` -> a finished state. False if the run was not in `from`.
    async fn finish(&self, id: &str, from: &[RunState], outcome: &Outcome) -> Result<bool, StoreError>;
}
