//! Webhook runs and their attempts. A run changes state only by
//! compare-and-set on its current state, so a callback racing an attempt, a
//! deadline or a restart never applies twice.

use std::time::SystemTime;

use crate::error::StoreError;
use crate::idempotency::IdempotencyKey;
use crate::time::serialize_time;

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
    /// The newest runs first (by creation time, then id).
    async fn runs(&self, limit: u32) -> Result<Vec<RunRecord>, StoreError>;
    /// In no particular order.
    async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError>;
    /// A run and its attempts (by number), read as one snapshot: every
    /// backend must read both in one transaction that sees one commit, so
    /// the attempt log always matches the run's state.
    async fn run_view(&self, id: &str) -> Result<Option<RunView>, StoreError>;

    /// pending -> calling, counting attempt `number`. False if the run moved on.
    async fn start_attempt(&self, id: &str, number: u32, request: &str) -> Result<bool, StoreError>;
    /// Logs an attempt; a number logged before keeps its first record.
    async fn record_attempt(&self, run_id: &str, attempt: &Attempt) -> Result<(), StoreError>;
    /// calling -> pending, to try again at `at`.
    async fn retry_at(&self, id: &str, at: SystemTime, reason: &str) -> Result<bool, StoreError>;
    /// calling -> awaiting_callback until `deadline`; `reason` says why when
    /// it is not the usual 2xx.
    async fn await_callback(&self, id: &str, deadline: SystemTime, reason: Option<&str>) -> Result<bool, StoreError>;
    /// Any of `from` -> a finished state. False if the run was not in `from`.
    async fn finish(&self, id: &str, from: &[RunState], outcome: &Outcome) -> Result<bool, StoreError>;
}
