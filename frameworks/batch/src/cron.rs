//! Pure schedule evaluation: five-field cron expressions (parsed by `croner`) read in
//! an IANA time zone (`chrono-tz`), and the decision of which tick to fire given the
//! last tick already handled, the starting deadline and the current time.
//!
//! Invariant: no I/O and no clock reads; the caller passes `now`.

#![deny(clippy::disallowed_methods)]

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// Why a cron expression or time zone was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Not a valid five-field cron expression.
    #[error("invalid cron expression: {0}")]
    Expression(String),
    /// Not an IANA time zone name.
    #[error("unknown time zone '{0}'")]
    Timezone(String),
}

/// Ticks examined at most when catching up after a long pause; older ones are
/// skipped without being looked at (they are past any starting deadline anyway).
const MAX_CATCH_UP: usize = 100_000;

/// A parsed cron expression with its time zone.
#[derive(Debug, Clone)]
pub struct CronSpec {
    cron: Cron,
    tz: Tz,
}

impl CronSpec {
    /// Parses a five-field expression (`@hourly`-style nicknames accepted) in `timezone`.
    pub fn parse(expression: &str, timezone: &str) -> Result<CronSpec, CronError> {
        let tz: Tz = timezone
            .parse()
            .map_err(|_| CronError::Timezone(timezone.to_string()))?;
        let trimmed = expression.trim();
        if !trimmed.starts_with('@') && trimmed.split_whitespace().count() != 5 {
            return Err(CronError::Expression(format!(
                "'{expression}' must have 5 fields: minute hour day-of-month month day-of-week"
            )));
        }
        let cron = Cron::new(trimmed)
            .parse()
            .map_err(|e| CronError::Expression(format!("'{expression}': {e}")))?;
        Ok(CronSpec { cron, tz })
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// What a schedule should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The tick to start a run for now, if any (the latest due one still within the
    /// starting deadline).
    pub fire: Option<DateTime<Utc>>,
    /// Due ticks skipped because they are past the starting deadline (or superseded by
    /// a later due tick: missed ticks are collapsed into one run, as Kubernetes does).
    pub missed: usize,
    /// The latest due tick (fired or not): to be recorded as handled, so no tick is
    /// ever considered twice. `None` when nothing was due.
    pub handled: Option<DateTime<Utc>>,
    /// The next tick after `now`.
    pub next: Option<DateTime<Utc>>,
}

/// Evaluates a schedule: every tick in `(last, now]` is due; the latest one is fired
/// if `now - tick <= starting_deadline`, the others are missed.
pub fn evaluate(
    spec: &CronSpec,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    starting_deadline: Duration,
) -> Evaluation {
    let mut latest = None;
    let mut due = 0usize;
    let mut cursor = last;
    while due < MAX_CATCH_UP {
        match spec.next_after(cursor) {
            Some(t) if t <= now => {
                due += 1;
                latest = Some(t);
                cursor = t;
            }
            _ => break,
        }
    }
    let fire = latest.filter(|t| now - *t <= starting_deadline);
    Evaluation {
        fire,
        missed: due - usize::from(fire.is_some()),
        handled: latest,
        next: spec.next_after(if cursor > now { cursor } else { now }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 10, h, m, s).unwrap()
    }

    #[test]
    fn every_minute_fires_once_per_tick() {
        let c = CronSpec::parse("* * * * *", "UTC").unwrap();
        let e = evaluate(&c, at(12, 0, 30), at(12, 0, 59), Duration::seconds(60));
        assert_eq!(e.fire, None);
        assert_eq!(e.next, Some(at(12, 1, 0)));
        let e = evaluate(&c, at(12, 0, 30), at(12, 1, 0), Duration::seconds(60));
        assert_eq!(
            (e.fire, e.missed, e.handled),
            (Some(at(12, 1, 0)), 0, Some(at(12, 1, 0)))
        );
        assert_eq!(e.next, Some(at(12, 2, 0)));
        // Evaluating again after recording the tick does not fire it twice.
        let e = evaluate(&c, at(12, 1, 0), at(12, 1, 30), Duration::seconds(60));
        assert_eq!((e.fire, e.handled), (None, None));
    }

    #[test]
    fn missed_ticks_collapse_and_respect_the_starting_deadline() {
        let c = CronSpec::parse("*/10 * * * *", "UTC").unwrap();
        // Down from 12:05 to 12:41: 12:10..12:40 are due, only 12:40 fires.
        let e = evaluate(&c, at(12, 5, 0), at(12, 41, 0), Duration::seconds(120));
        assert_eq!(e.fire, Some(at(12, 40, 0)));
        assert_eq!(e.missed, 3);
        // Past the deadline: nothing fires but the tick is handled.
        let e = evaluate(&c, at(12, 5, 0), at(12, 45, 0), Duration::seconds(120));
        assert_eq!(
            (e.fire, e.missed, e.handled),
            (None, 4, Some(at(12, 40, 0)))
        );
        assert_eq!(e.next, Some(at(12, 50, 0)));
    }

    #[test]
    fn time_zones_shift_ticks() {
        // 09:00 in Paris is 08:00 UTC in winter (CET, +1).
        let c = CronSpec::parse("0 9 * * *", "Europe/Paris").unwrap();
        let next = c.next_after(Utc.with_ymd_and_hms(2024, 1, 15, 0, 0, 0).unwrap());
        assert_eq!(
            next,
            Some(Utc.with_ymd_and_hms(2024, 1, 15, 8, 0, 0).unwrap())
        );
        let c = CronSpec::parse("0 9 * * *", "America/New_York").unwrap();
        let next = c.next_after(Utc.with_ymd_and_hms(2024, 7, 1, 0, 0, 0).unwrap());
        assert_eq!(
            next,
            Some(Utc.with_ymd_and_hms(2024, 7, 1, 13, 0, 0).unwrap())
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            CronSpec::parse("* * * *", "UTC"),
            Err(CronError::Expression(_))
        ));
        assert!(matches!(
            CronSpec::parse("61 * * * *", "UTC"),
            Err(CronError::Expression(_))
        ));
        assert!(matches!(
            CronSpec::parse("* * * * * *", "UTC"),
            Err(CronError::Expression(_))
        ));
        assert!(matches!(
            CronSpec::parse("* * * * *", "Nowhere/City"),
            Err(CronError::Timezone(_))
        ));
        assert!(CronSpec::parse("@hourly", "UTC").is_ok());
    }
}
