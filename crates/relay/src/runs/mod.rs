//! Webhook runs: the asynchronous webhook with a callback.
//!
//! A run is created from a deployment file and a webhook name, stored, and
//! handed to the [`engine`], which calls the webhook (direct or through an
//! agent), retries what may succeed on a retry, and waits for the callback
//! until the deadline. Every step is a compare-and-set in the store, so a
//! relay killed at any point resumes where it was.
//!
//! - [`create`]: validation and the run's stored spec.
//! - [`engine`]: the scheduler, attempts, deadlines and resume.
//! - [`api`]: `/api/v1/webhook-runs`, `/api/v1/secrets` and the callback route.

pub mod api;
pub mod create;
pub mod engine;

use std::collections::BTreeMap;

use borealis_core::deployment::Webhook;

/// Everything needed to render a run's request again, without secret values.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunSpec {
    pub webhook: Webhook,
    pub armory: BTreeMap<String, String>,
    pub context: BTreeMap<String, String>,
    /// The agent that makes the call, for remoteNetworkAgent webhooks.
    pub agent: Option<String>,
}
