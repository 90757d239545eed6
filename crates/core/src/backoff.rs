//! Retry delays: exponential, with "equal jitter", and capped for real.
//!
//! backon's own jitter adds up to 100 % *after* its cap, so a 30 s cap meant
//! up to 60 s. Here the cap bounds the delay itself: half of each delay is
//! fixed and half is random, and the whole stays below the cap.

use std::time::Duration;

use backon::BackoffBuilder;

/// Delays for attempt n = 0, 1, 2, …: the n-th is random in `[b, 2b)` with
/// `b = min(first·2ⁿ, cap) / 2`.
///
/// So the first delay is in `[first/2, first)`, the lower bound doubles each
/// attempt, and every delay is at least `min(first, cap)/2` and strictly
/// below `cap` (for a non-zero `cap`; a zero one gives zero delays). The
/// bounds hold to within backon's f32 rounding (well under a microsecond);
/// the cap holds exactly. The iterator never ends.
///
/// Every iterator has its own generator, seeded at random (backon's `std`
/// feature), so two processes, or two retry loops in one, draw different
/// delays and do not retry in lockstep.
pub fn jittered(first: Duration, cap: Duration) -> impl Iterator<Item = Duration> + Send + 'static {
    // backon's jitter turns its delay d into d + d·U[0, 1) = [d, 2d), so
    // growing d from first/2 to at most cap/2 gives the bounds above.
    let below_cap = cap.saturating_sub(Duration::from_nanos(1));
    backon::ExponentialBuilder::default()
        .with_min_delay(first.min(cap) / 2)
        .with_max_delay(cap / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        // d·U rounds in f32 and may land a nanosecond over d.
        .map(move |delay| delay.min(below_cap))
}

/// The delays of at most `times` retries from [`jittered`], stopping
/// before their sum would pass `total` (when given): what backon's
/// `retry` takes as a backoff, so every retry loop uses one policy.
/// Without a `total`, `times` bounds how many are drawn: keep it small.
pub fn retries(first: Duration, cap: Duration, times: usize, total: Option<Duration>) -> std::vec::IntoIter<Duration> {
    let mut waited = Duration::ZERO;
    jittered(first, cap)
        .take(times)
        .take_while(|delay| {
            waited += *delay;
            total.is_none_or(|total| waited <= total)
        })
        .collect::<Vec<_>>()
        .into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(200);
    const CAP: Duration = Duration::from_secs(30);
    /// Slack for backon's f32 arithmetic.
    const ROUNDING: Duration = Duration::from_micros(1);

    #[test]
    fn no_delay_reaches_the_cap() {
        for cap in [CAP, Duration::from_secs(2), Duration::from_millis(150), Duration::from_millis(1)] {
            let floor = FIRST.min(cap) / 2;
            for delay in jittered(FIRST, cap).take(1_000) {
                assert!(delay < cap, "{delay:?} >= {cap:?}");
                assert!(delay + ROUNDING >= floor, "{delay:?} < {floor:?}");
            }
        }
    }

    #[test]
    fn zero_cap_gives_zero_delays() {
        assert!(jittered(FIRST, Duration::ZERO).take(10).all(|delay| delay == Duration::ZERO));
    }

    #[test]
    fn retries_stop_at_their_count_or_their_total() {
        assert_eq!(retries(FIRST, CAP, 5, None).count(), 5);
        assert_eq!(retries(FIRST, CAP, 0, None).count(), 0);
        for _ in 0..100 {
            let within: Vec<Duration> = retries(FIRST, CAP, usize::MAX, Some(Duration::from_secs(3))).collect();
            assert!(within.iter().sum::<Duration>() <= Duration::from_secs(3), "{within:?}");
            assert!(within.len() >= 3, "{within:?}");
            assert!(retries(Duration::from_secs(100), CAP, 50, None).all(|delay| delay < CAP));
        }
    }

    #[test]
    fn two_generators_draw_different_delays() {
        let one: Vec<Duration> = jittered(FIRST, CAP).take(8).collect();
        let other: Vec<Duration> = jittered(FIRST, CAP).take(8).collect();
        assert_ne!(one, other);
    }

    #[test]
    fn growth_doubles_until_the_cap() {
        for _ in 0..100 {
            for (n, delay) in jittered(FIRST, CAP).take(12).enumerate() {
                let base = (FIRST * 2u32.pow(n as u32)).min(CAP) / 2;
                assert!(delay + ROUNDING >= base, "delay {n}: {delay:?} below {base:?}");
                assert!(delay < base * 2 + ROUNDING, "delay {n}: {delay:?} not below {:?}", base * 2);
            }
        }
    }

    #[test]
    fn delays_are_spread_over_the_range() {
        // Equal jitter: the random half covers [b, 2b), not a point.
        let delays: Vec<Duration> = (0..200).map(|_| jittered(FIRST, CAP).next().expect("endless")).collect();
        let (low, high) = (delays.iter().min().expect("some"), delays.iter().max().expect("some"));
        assert!(*low < Duration::from_millis(130) && *high > Duration::from_millis(170), "{low:?}..{high:?}");
    }
}
