//! Wall-clock time for everything the relay schedules: retry times, callback
//! deadlines, approval expiry, timed pauses and analysis intervals.
//!
//! These are stored as wall-clock instants (they outlive the process), so
//! they are read from a [`Clock`], not from `SystemTime::now` directly. A
//! [`Clock::manual`] clock moves only when a test advances it, so a test can
//! cross a 24 h deadline without waiting. (`tokio::time::pause` cannot do
//! this here: it advances time whenever the runtime idles, which it does
//! while SQLite's worker thread or a socket is busy, and that fires the
//! timeouts of real I/O early.) Timeouts of network calls stay on tokio's
//! clock: they measure elapsed time, not an instant in the schedule.
//!
//! Replicas sharing a database read their schedule and their leases on the
//! database's clock: the system clock here is corrected by the [`Skew`] each
//! heartbeat measures, so a replica whose own clock runs ahead neither takes
//! a lease over early nor ends a callback's wait before its time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// How far the database's clock reads ahead of this machine's (behind when
/// negative), in milliseconds, as the last heartbeat measured it; 0 where
/// the store has no clock of its own (SQLite: this machine's is the one).
#[derive(Debug, Default)]
pub struct Skew(AtomicI64);

impl Skew {
    /// Records a measurement: the database read `theirs` while this machine
    /// read `ours`. Returns the skew, in milliseconds.
    pub fn measure(&self, theirs: SystemTime, ours: SystemTime) -> i64 {
        let millis = |t: SystemTime| borealis_store::unix_ms(t);
        let skew = millis(theirs) - millis(ours);
        self.0.store(skew, Ordering::Relaxed);
        skew
    }

    /// The last measurement, in milliseconds.
    pub fn millis(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// The time now, by the database's clock.
    pub fn now(&self) -> SystemTime {
        let skew = self.millis();
        let now = SystemTime::now();
        if skew >= 0 {
            now + Duration::from_millis(skew as u64)
        } else {
            now - Duration::from_millis(skew.unsigned_abs())
        }
    }
}

#[derive(Clone)]
pub struct Clock(Arc<Source>);

enum Source {
    System(Arc<Skew>),
    Manual(watch::Sender<SystemTime>),
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Source::System(skew) => write!(f, "Clock::System({skew:?})"),
            Source::Manual(now) => write!(f, "Clock::Manual({:?})", *now.borrow()),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The machine's clock.
    pub fn system() -> Self {
        Self::corrected(Arc::default())
    }

    /// The machine's clock corrected by `skew`: the database's clock.
    pub fn corrected(skew: Arc<Skew>) -> Self {
        Self(Arc::new(Source::System(skew)))
    }

    /// A clock that stands at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: SystemTime) -> Self {
        Self(Arc::new(Source::Manual(watch::Sender::new(start))))
    }

    pub fn now(&self) -> SystemTime {
        match &*self.0 {
            Source::System(skew) => skew.now(),
            Source::Manual(now) => *now.borrow(),
        }
    }

    /// Moves a manual clock forward, waking every sleeper whose time came.
    ///
    /// # Panics
    /// On the system clock, which no one may move.
    pub fn advance(&self, by: Duration) {
        match &*self.0 {
            Source::System(_) => panic!("the system clock cannot be advanced"),
            Source::Manual(now) => now.send_modify(|now| *now += by),
        }
    }

    /// Returns once the clock reads `at` or later.
    pub async fn sleep_until(&self, at: SystemTime) {
        match &*self.0 {
            Source::System(skew) => loop {
                // Checked again after each sleep: the wall clock may be set
                // back, and the skew measured again.
                match at.duration_since(skew.now()) {
                    Ok(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
                    _ => return,
                }
            },
            Source::Manual(now) => {
                let mut now = now.subscribe();
                // The sender lives as long as this clock does.
                let _ = now.wait_for(|now| *now >= at).await;
            }
        }
    }

    pub async fn sleep(&self, wait: Duration) {
        self.sleep_until(self.now() + wait).await;
    }
}

/// UTC with milliseconds, as every API reply and template shows times.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_only_when_advanced_past_their_time() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = Clock::manual(start);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(start + Duration::from_secs(86_400)).await }
        });
        clock.advance(Duration::from_secs(86_399));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke a second early");
        clock.advance(Duration::from_secs(1));
        sleeper.await.expect("the sleeper wakes");
        assert_eq!(clock.now(), start + Duration::from_secs(86_400));
    }

    #[test]
    fn a_corrected_clock_reads_the_databases_time() {
        let skew = Arc::new(Skew::default());
        let clock = Clock::corrected(skew.clone());
        let ours = SystemTime::now();
        assert_eq!(skew.measure(ours - Duration::from_secs(20), ours), -20_000);
        let behind = SystemTime::now().duration_since(clock.now()).unwrap();
        assert!(behind >= Duration::from_millis(19_900) && behind <= Duration::from_millis(20_100), "{behind:?}");
        skew.measure(ours + Duration::from_secs(5), ours);
        let ahead = clock.now().duration_since(SystemTime::now()).unwrap();
        assert!(ahead >= Duration::from_millis(4_900) && ahead <= Duration::from_secs(5), "{ahead:?}");
    }
}
