//! Run ids behind a trait so the core stays deterministic: [`RunIds`], the
//! Metronome-style random generator the framework uses ([`RandomRunIds`]) and a
//! counting one for tests ([`SequentialRunIds`]).
//!
//! Task ids need no generator: they are derived from the run id, the slot and the
//! launch count (`<jobId>_<runId>.<slot>.<launch>`, see [`crate::run`]).

#![deny(clippy::disallowed_methods)]

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Where the core gets the id of each new run.
pub trait RunIds: Send + 'static {
    /// A new run id for a run created at `now`; unique among the job's runs.
    fn next_id(&mut self, now: DateTime<Utc>) -> String;
}

/// Metronome's run ids: `yyyyMMddHHmmss` and 5 random alphanumerics.
#[derive(Debug)]
pub struct RandomRunIds {
    rng: StdRng,
}

impl RandomRunIds {
    /// Seeded from the operating system.
    pub fn from_os() -> Self {
        RandomRunIds {
            rng: StdRng::from_os_rng(),
        }
    }

    /// Seeded with `seed` (reproducible).
    pub fn seeded(seed: u64) -> Self {
        RandomRunIds {
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl RunIds for RandomRunIds {
    fn next_id(&mut self, now: DateTime<Utc>) -> String {
        crate::run::new_run_id(now, &mut self.rng)
    }
}

/// `yyyyMMddHHmmss` and a five-digit counter: `20240101000000` + `00001`, ...
#[derive(Debug, Default)]
pub struct SequentialRunIds {
    next: u64,
}

impl RunIds for SequentialRunIds {
    fn next_id(&mut self, now: DateTime<Utc>) -> String {
        self.next += 1;
        format!("{}{:05}", now.format("%Y%m%d%H%M%S"), self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_have_metronome_shape() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let mut seq = SequentialRunIds::default();
        assert_eq!(seq.next_id(now), "2024010100000000001");
        assert_eq!(seq.next_id(now), "2024010100000000002");
        let (mut a, mut b) = (RandomRunIds::seeded(7), RandomRunIds::seeded(7));
        let id = a.next_id(now);
        assert_eq!(id, b.next_id(now), "same seed, same ids");
        assert!(id.starts_with("20240101000000") && id.len() == 19);
    }
}
