//! Flagger's hook model (seed 004): the reply's status decides. The payload
//! is Flagger's `{name, namespace, phase, checksum, metadata}`; event hooks
//! also get `eventMessage`, `eventType` and `timestamp`.

use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use borealis_core::deployment::{FlaggerHook, NetworkMode, Target};
use serde_json::json;

use super::caller::{CallError, Caller};

/// Per-call limit when a hook sets no `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

pub fn payload(
    application: &str,
    target: &Target,
    phase: &str,
    checksum: &str,
    hook: &FlaggerHook,
) -> serde_json::Value {
    json!({
        "name": application,
        "namespace": target.namespace.clone().unwrap_or_default(),
        "phase": phase,
        "checksum": checksum,
        "metadata": hook.metadata,
    })
}

pub fn event_payload(base: serde_json::Value, message: &str, warning: bool) -> serde_json::Value {
    let mut body = base;
    body["eventMessage"] = json!(message);
    body["eventType"] = json!(if warning { "Warning" } else { "Normal" });
    let millis = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    body["timestamp"] = json!(millis.to_string());
    body
}

/// Calls a hook once, plus its `retries` when the call could not be made and
/// another try may make it (a refused destination or a missing signing key
/// is not tried again). Every try carries `webhook-id: <id>`; give a gate's
/// re-asks the same id.
pub async fn call(
    caller: &Caller,
    hook: &FlaggerHook,
    target: &Target,
    body: &serde_json::Value,
    id: &str,
) -> Result<u16, CallError> {
    let agent = match hook.network_mode {
        NetworkMode::Direct => None,
        NetworkMode::RemoteNetworkAgent => hook.agent_identifier.clone().or_else(|| target.account.clone()),
    };
    let timeout = hook.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_TIMEOUT);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(caller.retry_base_delay)
        .with_max_delay(Duration::from_secs(60))
        .with_max_times(hook.retries as usize)
        .with_jitter();
    let once = || caller.post_json(agent.as_deref(), &hook.url, body, timeout, id, hook.signing.as_ref());
    once.retry(backoff).when(|err: &CallError| err.retryable).await.map_err(|err| CallError {
        detail: format!("hook {:?} could not be called: {}", hook.name, err.detail),
        retryable: err.retryable,
    })
}
