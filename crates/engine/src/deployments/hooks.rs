//! Flagger's hook model (seed 004): the reply's status decides. The payload
//! is Flagger's `{name, namespace, phase, checksum, metadata}`; event hooks
//! also get `eventMessage`, `eventType` and `timestamp`.

use std::time::{Duration, SystemTime};

use backon::Retryable;
use borealis_core::deployment::{self, FlaggerHook, Target};
use serde_json::json;

use super::caller::Caller;
use crate::outcall::Failure;

/// Per-call limit when a hook sets no `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest wait between a hook's tries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// The waits between a hook's tries: the first in `[base, 2·base)`, each
/// later one twice as long, every one below [`MAX_RETRY_DELAY`].
fn retry_delays(base: Duration, retries: u32) -> impl backon::Backoff {
    borealis_core::backoff::retries(base * 2, MAX_RETRY_DELAY, retries as usize, None)
}

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
) -> Result<u16, Failure> {
    let agent = deployment::agent_for(hook.network_mode, hook.agent_identifier.as_ref(), Some(target));
    let timeout = hook.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_TIMEOUT);
    let backoff = retry_delays(caller.retry_base_delay, hook.retries);
    let once = || caller.post_json(agent.as_deref(), &hook.url, body, timeout, id, hook.signing.as_ref());
    once.retry(backoff)
        .when(|err: &Failure| err.retryable)
        .await
        .map_err(|err| Failure { detail: format!("hook {:?} could not be called: {}", hook.name, err.detail), ..err })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A hook whose endpoint keeps failing is tried `retries` more times, and
    /// no wait between tries reaches the cap, however long the base delay
    /// (the delays are recorded by the sleeper, not timed).
    #[tokio::test]
    async fn a_failing_hooks_waits_stay_below_the_cap() {
        for base in [Duration::from_secs(1), Duration::from_secs(45), Duration::from_secs(600)] {
            let waits = Arc::new(Mutex::new(Vec::new()));
            let tries = Arc::new(Mutex::new(0));
            let failing = || async {
                *tries.lock().unwrap() += 1;
                Err::<(), _>(Failure { detail: "HTTP 503".into(), retryable: true, sent: crate::outcall::Sent::Yes })
            };
            let recorded = waits.clone();
            let result = failing
                .retry(retry_delays(base, 8))
                .sleep(move |wait| {
                    recorded.lock().unwrap().push(wait);
                    std::future::ready(())
                })
                .when(|err: &Failure| err.retryable)
                .await;
            assert!(result.is_err());
            assert_eq!(*tries.lock().unwrap(), 9, "the first try and 8 retries");
            let waits = waits.lock().unwrap();
            assert_eq!(waits.len(), 8);
            assert!(waits.iter().all(|wait| *wait < MAX_RETRY_DELAY), "base {base:?}: {waits:?}");
            assert!(waits[0] >= base.min(MAX_RETRY_DELAY / 2) - Duration::from_millis(1), "{waits:?}");
        }
    }
}
