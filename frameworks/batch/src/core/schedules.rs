//! Schedules: their definitions, `nextRunAt`, and firing cron ticks.

use chrono::{DateTime, Duration, Utc};
use tracing::{info, warn};

use super::{Core, CoreError, RunKey, ScheduleRecord};
use crate::cron::{evaluate, CronSpec};
use crate::model::{ConcurrencyPolicy, ScheduleSpec};

/// Seconds as a duration, saturating far beyond any deadline that matters.
pub(crate) fn seconds(s: u64) -> Duration {
    Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 2_000))
}

/// When the schedule fires next (after `now` and after its last handled tick); `None`
/// when disabled.
pub fn next_run_at(s: &ScheduleRecord, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if !s.spec.enabled {
        return None;
    }
    CronSpec::parse(&s.spec.cron, &s.spec.timezone)
        .ok()
        .and_then(|c| c.next_after(s.last_tick.max(now)))
}

fn validate(spec: &ScheduleSpec) -> Result<(), CoreError> {
    let details = spec.validate();
    if details.is_empty() {
        Ok(())
    } else {
        Err(CoreError::Invalid { details })
    }
}

/// A due tick: the job, the schedule and the tick's time.
type Fire = (String, ScheduleSpec, DateTime<Utc>);

impl Core {
    /// The job's schedules.
    pub fn schedules(&self, job: &str) -> Result<&[ScheduleRecord], CoreError> {
        Ok(&self.job(job)?.schedules)
    }

    /// One schedule of a job.
    pub fn schedule(&self, job: &str, id: &str) -> Result<&ScheduleRecord, CoreError> {
        self.job(job)?
            .schedules
            .iter()
            .find(|s| s.spec.id == id)
            .ok_or_else(|| CoreError::ScheduleNotFound(id.to_string()))
    }

    /// Adds a schedule; ticks up to `now` are not due.
    pub fn create_schedule(
        &mut self,
        job: &str,
        spec: ScheduleSpec,
        now: DateTime<Utc>,
    ) -> Result<ScheduleRecord, CoreError> {
        validate(&spec)?;
        let j = self
            .jobs
            .get_mut(job)
            .ok_or_else(|| CoreError::JobNotFound(job.to_string()))?;
        if j.schedules.iter().any(|s| s.spec.id == spec.id) {
            return Err(CoreError::ScheduleExists(spec.id));
        }
        let record = ScheduleRecord {
            spec,
            last_tick: now,
        };
        j.schedules.push(record.clone());
        self.save_job(job);
        info!(job.id = %job, schedule.id = %record.spec.id, cron = %record.spec.cron, "schedule created");
        Ok(record)
    }

    /// Replaces a schedule; ticks up to `now` are not due.
    pub fn update_schedule(
        &mut self,
        job: &str,
        id: &str,
        spec: ScheduleSpec,
        now: DateTime<Utc>,
    ) -> Result<ScheduleRecord, CoreError> {
        validate(&spec)?;
        if spec.id != id {
            return Err(CoreError::invalid(
                "/id",
                "must match the schedule id in the URL",
            ));
        }
        let j = self
            .jobs
            .get_mut(job)
            .ok_or_else(|| CoreError::JobNotFound(job.to_string()))?;
        let s = j
            .schedules
            .iter_mut()
            .find(|s| s.spec.id == id)
            .ok_or_else(|| CoreError::ScheduleNotFound(id.to_string()))?;
        *s = ScheduleRecord {
            spec,
            last_tick: now,
        };
        let record = s.clone();
        self.save_job(job);
        Ok(record)
    }

    /// Removes a schedule (its runs go on).
    pub fn delete_schedule(&mut self, job: &str, id: &str) -> Result<(), CoreError> {
        let j = self
            .jobs
            .get_mut(job)
            .ok_or_else(|| CoreError::JobNotFound(job.to_string()))?;
        let pos = j
            .schedules
            .iter()
            .position(|s| s.spec.id == id)
            .ok_or_else(|| CoreError::ScheduleNotFound(id.to_string()))?;
        j.schedules.remove(pos);
        self.save_job(job);
        Ok(())
    }

    /// Fires due ticks. Each handled tick is queued for writing before the run it
    /// starts, so it is durable first.
    pub(crate) fn fire_schedules(&mut self, now: DateTime<Utc>) {
        let fires = self.due_ticks(now);
        for (job_id, sched, tick) in fires {
            let active: Vec<RunKey> = self
                .runs
                .keys()
                .filter(|(j, _)| *j == job_id)
                .cloned()
                .collect();
            match sched.concurrency_policy {
                ConcurrencyPolicy::Forbid if !active.is_empty() => {
                    info!(job.id = %job_id, schedule.id = %sched.id, "tick skipped: a run is active (FORBID)");
                    self.count("schedule.ticks.skipped", 1);
                    continue;
                }
                ConcurrencyPolicy::Replace => {
                    for key in &active {
                        self.stop_active(key, "replaced by a scheduled run (REPLACE)", now);
                    }
                }
                _ => {}
            }
            let deadline = tick + seconds(sched.starting_deadline_seconds);
            info!(job.id = %job_id, schedule.id = %sched.id, tick = %tick, "schedule fired");
            self.count("schedule.ticks.fired", 1);
            self.create_run(&job_id, Some((sched.id.clone(), deadline)), now);
        }
    }

    /// Records every schedule's latest due tick as handled (queuing the job writes)
    /// and returns the ticks to fire.
    fn due_ticks(&mut self, now: DateTime<Utc>) -> Vec<Fire> {
        let mut fires = Vec::new();
        let mut changed = Vec::new();
        let mut missed = 0;
        for (job_id, job) in self.jobs.iter_mut() {
            for sched in job.schedules.iter_mut().filter(|s| s.spec.enabled) {
                let Ok(cron) = CronSpec::parse(&sched.spec.cron, &sched.spec.timezone) else {
                    continue;
                };
                let deadline = seconds(sched.spec.starting_deadline_seconds);
                let e = evaluate(&cron, sched.last_tick, now, deadline);
                if let Some(handled) = e.handled {
                    sched.last_tick = handled;
                    if !changed.contains(job_id) {
                        changed.push(job_id.clone());
                    }
                    if e.missed > 0 {
                        missed += e.missed as u64;
                        warn!(job.id = %job_id, schedule.id = %sched.spec.id, missed = e.missed, "missed schedule ticks");
                    }
                }
                if let Some(tick) = e.fire {
                    fires.push((job_id.clone(), sched.spec.clone(), tick));
                }
            }
        }
        self.count("schedule.ticks.missed", missed);
        for job in &changed {
            self.save_job(job);
        }
        fires
    }
}
