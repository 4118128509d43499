//! Time behind a trait so tests can move it: [`Clock`], [`SystemClock`] and
//! [`OffsetClock`] (wall time plus an adjustable offset).

use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};

/// Where the framework reads the current time (cron ticks, run deadlines, timestamps).
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time shifted by an offset that only grows ([`OffsetClock::advance`]), so time
/// keeps flowing but a test can jump to the next cron tick instead of waiting for it.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset: Mutex<Duration>,
}

impl OffsetClock {
    /// A clock equal to the wall clock until advanced.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }

    /// Moves the clock forward to `to` (nothing if it is already past it).
    pub fn advance_to(&self, to: DateTime<Utc>) {
        let now = self.now();
        if to > now {
            self.advance(to - now);
        }
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
