//! Job definitions: create, replace, delete.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use mezzo_sdk::Effect;
use tracing::info;

use super::{job_key, Core, CoreError, History, JobRecord, ScheduleRecord};
use crate::model::JobSpec;

fn validate(spec: &JobSpec) -> Result<(), CoreError> {
    let details = spec.validate();
    if details.is_empty() {
        Ok(())
    } else {
        Err(CoreError::Invalid { details })
    }
}

impl Core {
    /// Creates a job (with the schedules given inline, first handled tick `now`).
    pub fn create_job(
        &mut self,
        mut spec: JobSpec,
        now: DateTime<Utc>,
    ) -> Result<&JobRecord, CoreError> {
        validate(&spec)?;
        if self.jobs.contains_key(&spec.id) {
            return Err(CoreError::JobExists(spec.id));
        }
        let schedules = std::mem::take(&mut spec.schedules)
            .into_iter()
            .map(|s| ScheduleRecord {
                spec: s,
                last_tick: now,
            })
            .collect();
        let id = spec.id.clone();
        let record = JobRecord {
            spec,
            schedules,
            history: History::default(),
            finished: VecDeque::new(),
        };
        self.jobs.insert(id.clone(), record);
        self.save_job(&id);
        info!(job.id = %id, "job created");
        self.job(&id)
    }

    /// Replaces a job's definition; its schedules, history and runs are kept (as
    /// Metronome's PUT does: inline schedules are ignored). Active runs keep the run
    /// spec they started with.
    pub fn update_job(&mut self, id: &str, mut spec: JobSpec) -> Result<&JobRecord, CoreError> {
        validate(&spec)?;
        if spec.id != id {
            return Err(CoreError::invalid(
                "/id",
                "must match the job id in the URL",
            ));
        }
        let job = self
            .jobs
            .get_mut(id)
            .ok_or_else(|| CoreError::JobNotFound(id.to_string()))?;
        spec.schedules.clear();
        job.spec = spec;
        self.save_job(id);
        info!(job.id = %id, "job updated");
        self.job(id)
    }

    /// Deletes a job. With active runs it is refused unless `stop_runs`, which stops
    /// them first (FAILED, tasks killed). Returns the deleted record.
    pub fn delete_job(
        &mut self,
        id: &str,
        stop_runs: bool,
        now: DateTime<Utc>,
    ) -> Result<JobRecord, CoreError> {
        if !self.jobs.contains_key(id) {
            return Err(CoreError::JobNotFound(id.to_string()));
        }
        let active: Vec<_> = self.runs.keys().filter(|(j, _)| j == id).cloned().collect();
        if !active.is_empty() && !stop_runs {
            return Err(CoreError::ActiveRuns(id.to_string()));
        }
        for key in &active {
            self.stop_active(key, "job deleted", now);
        }
        self.out.delete(job_key(id));
        let job = self
            .jobs
            .remove(id)
            .ok_or_else(|| CoreError::JobNotFound(id.to_string()))?;
        // Tasks of finished runs still going (e.g. a kill not yet answered): nothing
        // will track them any more, so kill them now.
        for t in job.finished.iter().flat_map(|r| r.tasks.iter()) {
            if !t.is_terminal() {
                self.out.effects.push(Effect::Kill {
                    task_id: t.id.clone(),
                    agent_id: t.agent_id.clone(),
                    grace: None,
                });
            }
            self.tasks.remove(&t.id);
        }
        self.adjust_offers(now);
        info!(job.id = %id, "job deleted");
        Ok(job)
    }
}
