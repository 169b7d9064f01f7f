//! The time the rules see: the system's, plus an offset that only tests move, so that bind
//! ticket lifetimes, the refresh reuse grace and the lockout can be tried without waiting
//! for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A clock for one server; cheap to clone, and every clone shows the same time.
#[derive(Clone, Default, Debug)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// Now, in unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        system_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock (and its clones) forward, as if `by` had passed: for tests of what
    /// expires.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// The system's time in unix milliseconds, for what no test needs to move (arrival times,
/// creation stamps).
pub fn system_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advanced_clock_and_its_clones_run_ahead_by_the_same_amount() {
        let clock = Clock::default();
        let clone = clock.clone();
        let before = clock.now_ms();
        clone.advance(Duration::from_secs(900));
        let ahead = clock.now_ms() - before;
        assert!((900_000..901_000).contains(&ahead), "{ahead}");
    }
}
