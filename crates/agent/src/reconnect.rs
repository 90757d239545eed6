//! How long to wait before the next attempt to reach the relay; the crate
//! doc states the policy.

use std::time::{Duration, Instant};

use borealis_core::backoff::jittered;

/// The first delay is in [100, 200) ms; the delays double from there.
pub const FIRST_DELAY: Duration = Duration::from_millis(200);
/// A session that was up this long starts the delays over; one that drops
/// sooner (a relay that keeps failing) does not.
pub const STABLE_SESSION: Duration = Duration::from_secs(10);
/// How long after a session was lost the delays stay below [`RECENT_CAP`].
pub const RECENT_OUTAGE: Duration = Duration::from_secs(5 * 60);
/// The cap on delays while an outage is recent.
pub const RECENT_CAP: Duration = Duration::from_secs(2);

type Delays = Box<dyn Iterator<Item = Duration> + Send>;

/// The reconnect delays of one agent.
pub struct Reconnect {
    max: Duration,
    /// Both advance on every attempt, so a change of cap keeps the growth.
    recent: Delays,
    normal: Delays,
    attempt: u32,
    /// When the last session that was up ended.
    lost_at: Option<Instant>,
}

impl Reconnect {
    /// Delays capped at `max` (and at [`RECENT_CAP`] after a lost session).
    pub fn new(max: Duration) -> Self {
        let mut reconnect = Self {
            max,
            recent: Box::new(std::iter::empty()),
            normal: Box::new(std::iter::empty()),
            attempt: 0,
            lost_at: None,
        };
        reconnect.start_over();
        reconnect
    }

    fn start_over(&mut self) {
        self.recent = Box::new(jittered(FIRST_DELAY, RECENT_CAP.min(self.max)));
        self.normal = Box::new(jittered(FIRST_DELAY, self.max));
        self.attempt = 0;
    }

    /// A session the relay welcomed at `up_since` ended at `now`, lost or
    /// `in_order` (drained). True when the delays start over.
    pub fn session_ended(&mut self, up_since: Instant, in_order: bool, now: Instant) -> bool {
        self.lost_at = Some(now);
        let start_over = in_order || now.saturating_duration_since(up_since) > STABLE_SESSION;
        if start_over {
            self.start_over();
        }
        start_over
    }

    /// The wait before the next attempt at `now`, and that attempt's number
    /// (1 for the first since the delays started over).
    pub fn next_delay(&mut self, now: Instant) -> (Duration, u32) {
        let recent = self.lost_at.is_some_and(|at| now.saturating_duration_since(at) < RECENT_OUTAGE);
        let (recent_delay, delay) = (self.recent.next(), self.normal.next());
        let delay = if recent { recent_delay } else { delay };
        self.attempt = self.attempt.saturating_add(1);
        (delay.expect("jittered delays never end"), self.attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn without_a_session_the_delays_grow_to_the_max() {
        let mut reconnect = Reconnect::new(MAX);
        let now = Instant::now();
        let delays: Vec<Duration> = (0..40).map(|_| reconnect.next_delay(now).0).collect();
        assert!(delays[0] < FIRST_DELAY, "{delays:?}");
        assert!(delays.iter().all(|delay| *delay < MAX), "{delays:?}");
        assert!(delays[20..].iter().all(|delay| *delay >= MAX / 2), "{delays:?}");
    }

    #[test]
    fn after_a_lost_session_the_delays_stay_below_the_recent_cap() {
        let mut reconnect = Reconnect::new(MAX);
        let start = Instant::now();
        // Grown long before the session.
        for _ in 0..20 {
            reconnect.next_delay(start);
        }
        // A short session: the attempts go on counting, but the cap is short.
        let lost = start + Duration::from_secs(100);
        assert!(!reconnect.session_ended(lost - Duration::from_secs(1), false, lost));
        let mut now = lost;
        while now < lost + RECENT_OUTAGE {
            let (delay, attempt) = reconnect.next_delay(now);
            assert!(delay < RECENT_CAP, "{delay:?} at attempt {attempt}");
            now += Duration::from_secs(3);
        }
        // The outage is old: the delays are back where they had grown to.
        let (delay, attempt) = reconnect.next_delay(lost + RECENT_OUTAGE);
        assert!(delay >= MAX / 2 && delay < MAX, "{delay:?} at attempt {attempt}");
    }

    #[test]
    fn a_session_that_held_or_drained_starts_over() {
        let mut reconnect = Reconnect::new(MAX);
        let now = Instant::now();
        for _ in 0..5 {
            reconnect.next_delay(now);
        }
        let later = now + Duration::from_secs(60);
        assert!(reconnect.session_ended(now, false, later));
        let (delay, attempt) = reconnect.next_delay(later);
        assert_eq!(attempt, 1);
        assert!(delay < FIRST_DELAY, "{delay:?}");

        reconnect.next_delay(later);
        assert!(reconnect.session_ended(later, true, later + Duration::from_secs(1)));
        assert_eq!(reconnect.next_delay(later).1, 1);
    }

    #[test]
    fn a_max_below_the_recent_cap_is_kept() {
        let mut reconnect = Reconnect::new(Duration::from_millis(500));
        let now = Instant::now();
        reconnect.session_ended(now, false, now);
        assert!((0..100).all(|_| reconnect.next_delay(now).0 < Duration::from_millis(500)));
    }
}
