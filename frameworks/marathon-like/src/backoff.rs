//! Launch backoff (Marathon's `RateLimiter`), pure: after the n-th consecutive task
//! failure of an app the next launch waits
//! `min(backoffSeconds * backoffFactor^(n-1), maxLaunchDelaySeconds)`.
//!
//! A failure long after the previous one (more than `maxLaunchDelaySeconds` past the
//! moment launching was allowed again) starts over at `backoffSeconds`, as Marathon
//! drops stale delays. Times are seconds since the Unix epoch.

use serde::{Deserialize, Serialize};

/// Backoff parameters of an app.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// `backoffSeconds`.
    pub seconds: f64,
    /// `backoffFactor`.
    pub factor: f64,
    /// `maxLaunchDelaySeconds`.
    pub max: f64,
}

/// The current delay of an app.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Delay {
    /// Length of the current delay in seconds.
    pub seconds: f64,
    /// No launch before this time.
    pub until: f64,
}

impl Delay {
    /// Seconds left at `now` (0 when overdue).
    pub fn time_left(&self, now: f64) -> f64 {
        (self.until - now).max(0.0)
    }

    /// True when launching is allowed at `now`.
    pub fn overdue(&self, now: f64) -> bool {
        now >= self.until
    }
}

/// The delay after a task failure at `now`, given the previous delay.
pub fn on_failure(previous: Option<Delay>, policy: BackoffPolicy, now: f64) -> Delay {
    let first = policy.seconds.min(policy.max).max(0.0);
    let seconds = match previous {
        Some(d) if now <= d.until + policy.max => (d.seconds * policy.factor).min(policy.max),
        _ => first,
    };
    Delay {
        seconds,
        until: now + seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BackoffPolicy = BackoffPolicy {
        seconds: 1.0,
        factor: 2.0,
        max: 5.0,
    };

    #[test]
    fn grows_by_the_factor_up_to_the_cap() {
        let mut d = on_failure(None, P, 100.0);
        assert_eq!(
            d,
            Delay {
                seconds: 1.0,
                until: 101.0
            }
        );
        let mut lengths = vec![d.seconds];
        for i in 0..4 {
            d = on_failure(Some(d), P, 101.0 + i as f64);
            lengths.push(d.seconds);
        }
        assert_eq!(lengths, [1.0, 2.0, 4.0, 5.0, 5.0]);
    }

    #[test]
    fn stale_delays_start_over() {
        let d = on_failure(None, P, 0.0);
        let d = on_failure(Some(d), P, 2.0);
        assert_eq!(d.seconds, 2.0);
        let later = on_failure(Some(d), P, 100.0);
        assert_eq!(later.seconds, 1.0);
    }

    #[test]
    fn time_left_and_overdue() {
        let d = Delay {
            seconds: 3.0,
            until: 10.0,
        };
        assert_eq!(d.time_left(8.0), 2.0);
        assert!(!d.overdue(8.0));
        assert_eq!(d.time_left(12.0), 0.0);
        assert!(d.overdue(10.0));
    }

    #[test]
    fn cap_below_base_wins() {
        let p = BackoffPolicy {
            seconds: 10.0,
            factor: 1.15,
            max: 3.0,
        };
        assert_eq!(on_failure(None, p, 0.0).seconds, 3.0);
    }
}
