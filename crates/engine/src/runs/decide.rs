//! What each event means for a webhook run, as pure functions: an
//! attempt's outcome, an attempt a crash cut off, a callback that finds the
//! run ended, a deadline. The engine (`engine.rs`) gathers the inputs,
//! draws the random part of a backoff, calls these, and writes what they
//! decide; the tests below cover every branch without a store or a network.

use std::time::{Duration, SystemTime};

use borealis_store::RunState;

/// The longest wait between attempts, `Retry-After` included.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// What a webhook says about its own retries and callbacks, and how long
/// the relay waits for a callback.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub retry_count: u32,
    pub disable_callback: bool,
    pub callback_timeout: Duration,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    /// The destination answered with `status`, perhaps with `Retry-After`.
    Replied { status: u16, retry_after: Option<Duration> },
    /// No answer. `sent`: whether the request left; `retryable`: whether
    /// another try may pass.
    Failed { detail: String, sent: Sent, retryable: bool },
}

/// Whether a call that got no answer reached the destination.
pub use crate::outcall::Sent;

/// Where a run goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Ends the run as succeeded: a 2xx decides when callbacks are off.
    Succeed {
        reason: String,
    },
    /// Waits for the callback until `deadline`.
    AwaitCallback {
        deadline: SystemTime,
        reason: Option<String>,
    },
    /// Another attempt at `at`.
    RetryAt {
        at: SystemTime,
        reason: String,
    },
    Fail {
        reason: String,
    },
}

/// Attempt `number`'s outcome under `policy`, at `now`. `backoff` is the
/// wait this retry would draw (jittered, below [`MAX_RETRY_DELAY`]); a
/// `Retry-After` may lengthen it, never past the cap.
pub fn after_attempt(
    number: u32,
    attempted: &Attempted,
    policy: &Policy,
    now: SystemTime,
    backoff: Duration,
) -> Decision {
    let reason = |text: &str| format!("attempt {number}: {text}");
    match attempted {
        Attempted::Replied { status: status @ 200..300, .. } if policy.disable_callback => {
            Decision::Succeed { reason: format!("HTTP {status}; callbacks are disabled, so the reply decides") }
        }
        Attempted::Replied { status: 200..300, .. } => {
            Decision::AwaitCallback { deadline: now + policy.callback_timeout, reason: None }
        }
        Attempted::Replied { status: status @ (408 | 429 | 500..), retry_after } => {
            retry(number, reason(&format!("HTTP {status}")), *retry_after, policy, now, backoff)
        }
        Attempted::Replied { status, .. } => {
            Decision::Fail { reason: reason(&format!("HTTP {status}; a 4xx other than 408 and 429 is not retried")) }
        }
        Attempted::Failed { detail, sent: Sent::CutOff, .. }
            if number > policy.retry_count && !policy.disable_callback =>
        {
            Decision::AwaitCallback {
                deadline: now + policy.callback_timeout,
                reason: Some(format!("{}; {WAITING}", reason(detail))),
            }
        }
        Attempted::Failed { detail, sent, retryable } => {
            let not = if *sent == Sent::No { "not sent: " } else { "" };
            let reason = reason(&format!("{not}{detail}"));
            if *retryable || *sent == Sent::CutOff {
                retry(number, reason, None, policy, now, backoff)
            } else {
                Decision::Fail { reason }
            }
        }
    }
}

/// What a run whose retries may be used up is told when it has none left.
const WAITING: &str = "no retries are left, so its callback decides (until the deadline)";

/// Another attempt after `backoff` (at least `retry_after`, at most
/// [`MAX_RETRY_DELAY`]) while retries are left; else the run fails.
fn retry(
    number: u32,
    reason: String,
    retry_after: Option<Duration>,
    policy: &Policy,
    now: SystemTime,
    backoff: Duration,
) -> Decision {
    if number > policy.retry_count {
        let reason = if policy.retry_count == 0 {
            format!("{reason} (retryCount is 0)")
        } else {
            format!("{reason}; gave up after {number} attempts (retryCount {})", policy.retry_count)
        };
        return Decision::Fail { reason };
    }
    let delay = backoff.max(retry_after.unwrap_or_default()).min(MAX_RETRY_DELAY);
    let shown = humantime::format_duration(Duration::from_millis(delay.as_millis() as u64));
    Decision::RetryAt { at: now + delay, reason: format!("{reason}; retrying in {shown}") }
}

/// Attempt `number` of a run whose replica stopped before writing its
/// outcome, its reply not recorded. `sent`: its request was recorded as
/// going out. Not sent: retried like any other failure. Sent: whether it
/// arrived is unknown; retried at once while retries are left, then its
/// callback decides, or with callbacks off it fails (its lost reply was
/// the decision).
pub fn after_crash(number: u32, sent: bool, policy: &Policy, now: SystemTime, backoff: Duration) -> Decision {
    if !sent {
        return retry(number, format!("attempt {number}: {NOT_SENT}"), None, policy, now, backoff);
    }
    let reason = format!("attempt {number}: {CUT_OFF}");
    if number <= policy.retry_count {
        Decision::RetryAt { at: now, reason: format!("{reason}; retrying now") }
    } else if !policy.disable_callback {
        Decision::AwaitCallback {
            deadline: now + policy.callback_timeout,
            reason: Some(format!("{reason}; {WAITING}")),
        }
    } else {
        Decision::Fail {
            reason: format!(
                "{reason}; no retries are left, and with callbacks disabled its lost reply was the decision"
            ),
        }
    }
}

/// What the history says of an attempt a restart cut off.
pub const CUT_OFF: &str = "cut off by a relay restart or a replica's loss; the destination may have received it";
/// ... of one claimed by a replica that stopped before sending it.
pub const NOT_SENT: &str = "not sent: the replica that claimed it stopped before sending it";
/// ... of one cut off while its callback (or a cancel) decided the run.
pub const DECIDED_WHILE_CUT_OFF: &str = "sent, but its reply was lost with the replica making it; the run was decided meanwhile (its callback, or a cancel)";

/// A callback that changed nothing: the run had ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LateCallback {
    /// The same verdict again: answered as the first was.
    Repeat,
    /// The other verdict after a callback decided: refused, naming the first.
    Conflict { first: bool },
    /// The run ended otherwise (failed, timed out, cancelled): refused.
    Finished,
}

/// A callback with verdict `success` for a run that had ended, whose
/// callback (if one decided it) came at `callback_at` with `first`.
pub fn late_callback(callback_at: Option<SystemTime>, first: Option<bool>, success: bool) -> LateCallback {
    match (callback_at, first) {
        (Some(_), Some(first)) if first == success => LateCallback::Repeat,
        (Some(_), Some(first)) => LateCallback::Conflict { first },
        _ => LateCallback::Finished,
    }
}

/// What a deadline wake-up finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtDeadline {
    /// Still waiting and the deadline passed: the run times out.
    TimeOut,
    /// The deadline moved later: wake up again then.
    WakeAt(SystemTime),
    /// The run is no longer waiting for its callback.
    Nothing,
}

pub fn at_deadline(state: RunState, deadline: Option<SystemTime>, now: SystemTime) -> AtDeadline {
    match (state, deadline) {
        (RunState::AwaitingCallback, Some(at)) if at > now => AtDeadline::WakeAt(at),
        (RunState::AwaitingCallback, _) => AtDeadline::TimeOut,
        _ => AtDeadline::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: SystemTime = SystemTime::UNIX_EPOCH;
    const BACKOFF: Duration = Duration::from_secs(3);
    const DAY: Duration = Duration::from_secs(86_400);

    fn policy(retry_count: u32, disable_callback: bool) -> Policy {
        Policy { retry_count, disable_callback, callback_timeout: DAY }
    }

    fn replied(status: u16) -> Attempted {
        Attempted::Replied { status, retry_after: None }
    }

    fn failed(sent: Sent, retryable: bool) -> Attempted {
        Attempted::Failed { detail: "boom".into(), sent, retryable }
    }

    fn reason(decision: &Decision) -> &str {
        match decision {
            Decision::Succeed { reason } | Decision::RetryAt { reason, .. } | Decision::Fail { reason } => reason,
            Decision::AwaitCallback { reason, .. } => reason.as_deref().unwrap_or_default(),
        }
    }

    #[test]
    fn a_2xx_awaits_the_callback_or_decides_when_callbacks_are_off() {
        for status in [200, 202, 299] {
            let waiting = after_attempt(1, &replied(status), &policy(0, false), NOW, BACKOFF);
            assert_eq!(waiting, Decision::AwaitCallback { deadline: NOW + DAY, reason: None });
            let decided = after_attempt(1, &replied(status), &policy(0, true), NOW, BACKOFF);
            assert!(matches!(&decided, Decision::Succeed { reason } if reason.starts_with(&format!("HTTP {status}"))));
        }
    }

    #[test]
    fn retryable_statuses_retry_while_retries_are_left_then_fail() {
        for status in [408, 429, 500, 503, 599] {
            let first = after_attempt(1, &replied(status), &policy(2, false), NOW, BACKOFF);
            assert_eq!(
                first,
                Decision::RetryAt { at: NOW + BACKOFF, reason: format!("attempt 1: HTTP {status}; retrying in 3s") }
            );
            let last = after_attempt(3, &replied(status), &policy(2, false), NOW, BACKOFF);
            assert_eq!(reason(&last), format!("attempt 3: HTTP {status}; gave up after 3 attempts (retryCount 2)"));
            let none = after_attempt(1, &replied(status), &policy(0, false), NOW, BACKOFF);
            assert_eq!(none, Decision::Fail { reason: format!("attempt 1: HTTP {status} (retryCount is 0)") });
        }
    }

    #[test]
    fn other_4xx_and_3xx_fail_at_once() {
        for status in [301, 400, 401, 403, 404, 409, 422] {
            let decision = after_attempt(1, &replied(status), &policy(5, false), NOW, BACKOFF);
            assert!(matches!(&decision, Decision::Fail { reason } if reason.contains("is not retried")), "{status}");
        }
    }

    #[test]
    fn retry_after_lengthens_the_wait_up_to_the_cap() {
        let retry = |retry_after| {
            let attempted = Attempted::Replied { status: 429, retry_after: Some(retry_after) };
            match after_attempt(1, &attempted, &policy(1, false), NOW, BACKOFF) {
                Decision::RetryAt { at, .. } => at.duration_since(NOW).unwrap(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(retry(Duration::from_secs(1)), BACKOFF, "a shorter Retry-After does not shorten the backoff");
        assert_eq!(retry(Duration::from_secs(120)), Duration::from_secs(120));
        assert_eq!(retry(Duration::from_secs(86_400)), MAX_RETRY_DELAY, "never past the cap");
    }

    #[test]
    fn failures_say_whether_they_were_sent() {
        let not_sent = after_attempt(1, &failed(Sent::No, true), &policy(1, false), NOW, BACKOFF);
        assert!(reason(&not_sent).starts_with("attempt 1: not sent: boom; retrying in"), "{not_sent:?}");
        let refused = after_attempt(1, &failed(Sent::No, false), &policy(1, false), NOW, BACKOFF);
        assert_eq!(refused, Decision::Fail { reason: "attempt 1: not sent: boom".into() });
        let timed_out = after_attempt(2, &failed(Sent::Yes, true), &policy(1, false), NOW, BACKOFF);
        assert_eq!(reason(&timed_out), "attempt 2: boom; gave up after 2 attempts (retryCount 1)");
    }

    #[test]
    fn a_cut_off_call_retries_then_leaves_the_run_to_its_callback() {
        let retried = after_attempt(1, &failed(Sent::CutOff, false), &policy(1, false), NOW, BACKOFF);
        assert!(matches!(retried, Decision::RetryAt { .. }), "{retried:?}");
        let waiting = after_attempt(1, &failed(Sent::CutOff, true), &policy(0, false), NOW, BACKOFF);
        assert!(matches!(&waiting, Decision::AwaitCallback { deadline, .. } if *deadline == NOW + DAY), "{waiting:?}");
        assert!(reason(&waiting).ends_with(WAITING));
        let no_callback = after_attempt(1, &failed(Sent::CutOff, true), &policy(0, true), NOW, BACKOFF);
        assert!(matches!(no_callback, Decision::Fail { .. }), "{no_callback:?}");
    }

    #[test]
    fn a_crash_retries_a_call_never_sent_and_leaves_a_sent_one_to_its_callback() {
        let not_sent = after_crash(1, false, &policy(1, false), NOW, BACKOFF);
        assert!(reason(&not_sent).contains(NOT_SENT) && matches!(not_sent, Decision::RetryAt { .. }));
        let not_sent_last = after_crash(1, false, &policy(0, false), NOW, BACKOFF);
        assert!(matches!(not_sent_last, Decision::Fail { .. }), "not sent, no retries left: {not_sent_last:?}");
        assert_eq!(
            after_crash(1, true, &policy(1, false), NOW, BACKOFF),
            Decision::RetryAt { at: NOW, reason: format!("attempt 1: {CUT_OFF}; retrying now") }
        );
        let waiting = after_crash(2, true, &policy(1, false), NOW, BACKOFF);
        assert!(matches!(waiting, Decision::AwaitCallback { reason: Some(_), .. }), "{waiting:?}");
        let lost = after_crash(1, true, &policy(0, true), NOW, BACKOFF);
        assert!(reason(&lost).ends_with("its lost reply was the decision"), "{lost:?}");
    }

    #[test]
    fn a_late_callback_is_a_repeat_a_conflict_or_too_late() {
        let at = Some(NOW);
        assert_eq!(late_callback(at, Some(true), true), LateCallback::Repeat);
        assert_eq!(late_callback(at, Some(false), false), LateCallback::Repeat);
        assert_eq!(late_callback(at, Some(true), false), LateCallback::Conflict { first: true });
        assert_eq!(late_callback(None, None, true), LateCallback::Finished, "timed out, failed or cancelled");
    }

    #[test]
    fn a_deadline_times_out_only_a_run_still_waiting() {
        let later = NOW + DAY;
        assert_eq!(at_deadline(RunState::AwaitingCallback, Some(NOW), NOW), AtDeadline::TimeOut);
        assert_eq!(at_deadline(RunState::AwaitingCallback, Some(later), NOW), AtDeadline::WakeAt(later));
        assert_eq!(at_deadline(RunState::AwaitingCallback, None, NOW), AtDeadline::TimeOut);
        for state in [RunState::Pending, RunState::Calling, RunState::Succeeded, RunState::Failed, RunState::TimedOut] {
            assert_eq!(at_deadline(state, Some(NOW), NOW), AtDeadline::Nothing, "{state:?}");
        }
    }
}
