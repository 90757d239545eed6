//! Time in tests: how long to wait for a state, and the times the system
//! recorded.

use std::time::{Duration, Instant};

/// The least a test waits for a state before it fails. A deadline is there
/// only so that a test that would hang fails, naming what never happened; it
/// is never a bound on how fast the system is (a loaded two-core machine
/// shared with builds must not fail a test). What a test claims about time
/// it checks on what the system recorded: attempt start times, a run's
/// deadline, a log line's timestamp, a counter.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` every 50 ms until it returns `Some`; panics, saying `what`
/// never happened, after `within` or [`PATIENCE`], whichever is longer.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let within = within.max(PATIENCE);
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < within, "this never happened (waited {within:?}): {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The instant a log line was written, from its timestamp: the first word
/// of a text line, or the `timestamp` of a JSON one. It is the logging
/// process's own record of when something happened.
pub fn log_time(line: &str) -> std::time::SystemTime {
    let stamp = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(record)) => record["timestamp"].as_str().unwrap_or_default().to_owned(),
        _ => line.split_whitespace().next().unwrap_or_default().to_owned(),
    };
    humantime::parse_rfc3339(&stamp).unwrap_or_else(|e| panic!("no timestamp ({e}) in {line:?}"))
}

/// An RFC 3339 time as the API writes it (`createdAt`, `startedAt`, ...).
pub fn api_time(value: &serde_json::Value) -> std::time::SystemTime {
    api_time_of(value.as_str().unwrap_or_else(|| panic!("not a time: {value}")))
}

/// A time as the API's types hold it (RFC 3339 text).
pub fn api_time_of(text: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// `later - earlier`, panicking (with both) when `later` is before `earlier`.
pub fn between(earlier: std::time::SystemTime, later: std::time::SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_else(|_| panic!("{later:?} is before {earlier:?}"))
}
