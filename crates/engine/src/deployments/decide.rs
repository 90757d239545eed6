//! A deployment step's decisions, as pure functions: what a hook's reply
//! means, whether an action may be sent again on replay, what an
//! analysis' judgment runs and modes call for. The orchestrator gathers
//! the inputs (journal, replies, the clock) and acts on the answers.

use borealis_core::deployment::DecisionMode;
use borealis_store::TargetState;

use super::journal::ActionProgress;
use crate::outcall::Failure;

/// What to do with a rollout action on (re)play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionReplay {
    /// Done before: not sent again.
    Skip,
    /// Never sent, or sent and safe to send again.
    Send,
    /// Sent, cut off before its end, and not safe to repeat: the step fails.
    Refuse,
}

/// An action with journal record `progress`, through a driver that is
/// `idempotent` or not.
pub fn action_replay(progress: Option<ActionProgress>, idempotent: bool) -> ActionReplay {
    match progress {
        Some(ActionProgress::Done) => ActionReplay::Skip,
        Some(ActionProgress::Started) if !idempotent => ActionReplay::Refuse,
        Some(ActionProgress::Started) | None => ActionReplay::Send,
    }
}

/// What a gate's reply means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    Open,
    /// Closed or unreachable, and its deadline is not past: ask again.
    AskAgain,
    /// Closed or unreachable at its deadline: the step fails.
    Closed,
}

/// A gate (confirm-rollout, confirm-promotion, confirm-traffic-increase)
/// opens on a 2xx reply; anything else is asked again until `past_deadline`.
pub fn gate_reply(reply: &Result<u16, Failure>, past_deadline: bool) -> GateDecision {
    match reply {
        Ok(status) if is_success(*status) => GateDecision::Open,
        _ if past_deadline => GateDecision::Closed,
        _ => GateDecision::AskAgain,
    }
}

/// What a pre-rollout or rollout hook's reply means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckDecision {
    Passed,
    /// It answered, not 2xx: the rollout fails.
    Refused(u16),
    /// No reply after its retries: the rollout fails, for this reason.
    Unreachable(String),
}

pub fn check_reply(reply: Result<u16, Failure>) -> CheckDecision {
    match reply {
        Ok(status) if is_success(status) => CheckDecision::Passed,
        Ok(status) => CheckDecision::Refused(status),
        Err(err) => CheckDecision::Unreachable(err.detail),
    }
}

/// A rollback hook asks for a rollback with a 2xx reply; a hook that
/// cannot be reached asks for nothing.
pub fn asks_for_rollback(reply: &Result<u16, Failure>) -> bool {
    matches!(reply, Ok(status) if is_success(*status))
}

/// What an analysis' judgment runs call for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnalysisDecision {
    Pass,
    Fail(String),
    /// An operator decides: the target waits in `state`, for `why`.
    Ask {
        state: TargetState,
        why: String,
    },
}

/// After `runs` judgment runs, the first `failure` if one failed: its
/// automatic mode decides at once, a manual one asks an operator.
pub fn after_analysis(
    failure: Option<String>,
    runs: u32,
    roll_back_mode: DecisionMode,
    roll_forward_mode: DecisionMode,
) -> AnalysisDecision {
    match (failure, roll_back_mode, roll_forward_mode) {
        (None, _, DecisionMode::Automatic) => AnalysisDecision::Pass,
        (Some(reason), DecisionMode::Automatic, _) => AnalysisDecision::Fail(reason),
        (None, _, DecisionMode::Manual) => AnalysisDecision::Ask {
            state: TargetState::AwaitingContinueDecision,
            why: format!("analysis passed {runs} judgment runs; rollForwardMode is manual"),
        },
        (Some(reason), DecisionMode::Manual, _) => AnalysisDecision::Ask {
            state: TargetState::AwaitingRollbackDecision,
            why: format!("{reason}; rollBackMode is manual"),
        },
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcall::Sent;
    use DecisionMode::{Automatic, Manual};

    fn unreachable() -> Result<u16, Failure> {
        Err(Failure { detail: "connection refused".into(), retryable: true, sent: Sent::No })
    }

    #[test]
    fn an_action_is_sent_once_unless_its_driver_may_repeat_it() {
        use ActionReplay::*;
        let cases = [
            (None, false, Send),
            (None, true, Send),
            (Some(ActionProgress::Started), true, Send),
            (Some(ActionProgress::Started), false, Refuse),
            (Some(ActionProgress::Done), false, Skip),
            (Some(ActionProgress::Done), true, Skip),
        ];
        for (progress, idempotent, expected) in cases {
            assert_eq!(action_replay(progress, idempotent), expected, "{progress:?}, idempotent {idempotent}");
        }
    }

    #[test]
    fn a_gate_opens_on_2xx_and_is_asked_again_until_its_deadline() {
        use GateDecision::*;
        let cases = [
            (Ok(200), false, Open),
            (Ok(204), true, Open),
            (Ok(299), false, Open),
            (Ok(300), false, AskAgain),
            (Ok(403), false, AskAgain),
            (Ok(503), true, Closed),
            (Ok(199), true, Closed),
            (unreachable(), false, AskAgain),
            (unreachable(), true, Closed),
        ];
        for (reply, past, expected) in cases {
            assert_eq!(gate_reply(&reply, past), expected, "{reply:?}, past deadline {past}");
        }
    }

    #[test]
    fn a_check_passes_on_2xx_only() {
        assert_eq!(check_reply(Ok(200)), CheckDecision::Passed);
        assert_eq!(check_reply(Ok(202)), CheckDecision::Passed);
        assert_eq!(check_reply(Ok(302)), CheckDecision::Refused(302));
        assert_eq!(check_reply(Ok(500)), CheckDecision::Refused(500));
        assert_eq!(check_reply(unreachable()), CheckDecision::Unreachable("connection refused".into()));
    }

    #[test]
    fn a_rollback_hook_asks_only_with_2xx() {
        assert!(asks_for_rollback(&Ok(200)));
        assert!(!asks_for_rollback(&Ok(404)));
        assert!(!asks_for_rollback(&Ok(500)));
        assert!(!asks_for_rollback(&unreachable()), "an unreachable hook asks for nothing");
    }

    #[test]
    fn an_analysis_decides_by_its_modes() {
        let failed = || Some("analysis failed at judgment run 2 of 3: x".to_owned());
        assert_eq!(after_analysis(None, 3, Automatic, Automatic), AnalysisDecision::Pass);
        assert_eq!(after_analysis(None, 3, Manual, Automatic), AnalysisDecision::Pass);
        assert_eq!(
            after_analysis(failed(), 3, Automatic, Manual),
            AnalysisDecision::Fail("analysis failed at judgment run 2 of 3: x".into())
        );
        assert_eq!(
            after_analysis(None, 3, Automatic, Manual),
            AnalysisDecision::Ask {
                state: TargetState::AwaitingContinueDecision,
                why: "analysis passed 3 judgment runs; rollForwardMode is manual".into()
            }
        );
        assert_eq!(
            after_analysis(failed(), 3, Manual, Automatic),
            AnalysisDecision::Ask {
                state: TargetState::AwaitingRollbackDecision,
                why: "analysis failed at judgment run 2 of 3: x; rollBackMode is manual".into()
            }
        );
    }
}
