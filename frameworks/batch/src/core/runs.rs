//! Runs: starting (manual or scheduled), stopping, deadlines, and moving finished
//! runs into their job's history.

use chrono::{DateTime, Utc};
use tracing::info;

use super::{run_key, Core, CoreError, RunKey, KEPT_FINISHED_RUNS};
use crate::model::ConcurrencyPolicy;
use crate::run::{JobRun, RunStatus};

impl Core {
    /// One run of a job, active or kept finished.
    pub fn run(&self, job: &str, run: &str) -> Result<&JobRun, CoreError> {
        let j = self.job(job)?;
        self.runs
            .get(&(job.to_string(), run.to_string()))
            .or_else(|| j.finished.iter().find(|r| r.id == run))
            .ok_or_else(|| CoreError::RunNotFound {
                job: job.to_string(),
                run: run.to_string(),
            })
    }

    /// The job's active runs, then (with `include_finished`) its kept finished runs,
    /// most recent first.
    pub fn runs(&self, job: &str, include_finished: bool) -> Result<Vec<&JobRun>, CoreError> {
        let j = self.job(job)?;
        let mut runs = self.active_runs(job);
        if include_finished {
            runs.extend(j.finished.iter().rev());
        }
        Ok(runs)
    }

    /// Runs waiting for offers: STARTING, or with a slot to (re)launch now.
    pub fn queued_runs(&self, now: DateTime<Utc>) -> Vec<&JobRun> {
        self.runs
            .values()
            .filter(|r| r.status == RunStatus::Starting || !r.launchable(now).is_empty())
            .collect()
    }

    /// Starts a run now (`POST /v1/jobs/{id}/runs`). Refused while a run is active if
    /// one of the job's schedules is FORBID (Metronome applies it to schedules only;
    /// a manual trigger overlapping a forbidding schedule is refused here too).
    pub fn start_run(&mut self, job: &str, now: DateTime<Utc>) -> Result<&JobRun, CoreError> {
        let j = self.job(job)?;
        let forbid = j
            .schedules
            .iter()
            .any(|s| s.spec.concurrency_policy == ConcurrencyPolicy::Forbid);
        let active = self.active_runs(job);
        if forbid && !active.is_empty() {
            return Err(CoreError::ConcurrentRunForbidden {
                job: job.to_string(),
                active: active.into_iter().cloned().collect(),
            });
        }
        let key = self
            .create_run(job, None, now)
            .ok_or_else(|| CoreError::JobNotFound(job.to_string()))?;
        self.runs
            .get(&key)
            .ok_or_else(|| CoreError::JobNotFound(job.to_string()))
    }

    /// Stops an active run (`.../actions/stop`): FAILED, its tasks killed. Returns it
    /// as finished.
    pub fn stop_run(
        &mut self,
        job: &str,
        run: &str,
        now: DateTime<Utc>,
    ) -> Result<&JobRun, CoreError> {
        let j = self.job(job)?;
        let key = (job.to_string(), run.to_string());
        if !self.runs.contains_key(&key) {
            if j.finished.iter().any(|r| r.id == run) {
                return Err(CoreError::RunFinished {
                    job: job.to_string(),
                    run: run.to_string(),
                });
            }
            return Err(CoreError::RunNotFound {
                job: job.to_string(),
                run: run.to_string(),
            });
        }
        self.stop_active(&key, "stopped by request", now);
        self.adjust_offers(now);
        self.run(job, run)
    }

    /// Creates a run of the job's current spec (STARTING, queued for offers) and
    /// queues its write. `schedule`: the schedule that fired it and its starting
    /// deadline. `None` if the job is gone.
    pub(crate) fn create_run(
        &mut self,
        job_id: &str,
        schedule: Option<(String, DateTime<Utc>)>,
        now: DateTime<Utc>,
    ) -> Option<RunKey> {
        let spec = self.jobs.get(job_id)?.spec.run.clone();
        let id = self.ids.next_id(now);
        let mut run = JobRun::new(id.clone(), job_id.to_string(), spec, now);
        if let Some((sid, deadline)) = schedule {
            run.schedule_id = Some(sid);
            run.starting_deadline = Some(deadline);
        }
        run.queued();
        info!(job.id = %job_id, run.id = %id, "run started");
        self.count("runs.started", 1);
        let key = (job_id.to_string(), id);
        self.runs.insert(key.clone(), run);
        self.save_run(&key);
        self.adjust_offers(now);
        Some(key)
    }

    /// Stops an active run and moves it to history.
    pub(crate) fn stop_active(&mut self, key: &RunKey, why: &str, now: DateTime<Utc>) {
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        let grace = run.spec.task_kill_grace_period_seconds;
        let actions = run.stop(why, now);
        self.execute(actions, grace);
        self.finish_run(key, now);
    }

    /// Moves a finished run into its job's history (queued first), then deletes its
    /// active record.
    pub(crate) fn finish_run(&mut self, key: &RunKey, now: DateTime<Utc>) {
        let Some(run) = self.runs.remove(key) else {
            return;
        };
        let done = run.completed_at.unwrap_or(now);
        let succeeded = run.status == RunStatus::Success;
        self.count(
            if succeeded {
                "runs.succeeded"
            } else {
                "runs.failed"
            },
            1,
        );
        info!(job.id = %run.job_id, run.id = %run.id, status = ?run.status, reason = ?run.reason, "run finished");
        if let Some(job) = self.jobs.get_mut(&key.0) {
            if succeeded {
                job.history.success_count += 1;
                job.history.last_success_at = Some(done);
            } else {
                job.history.failure_count += 1;
                job.history.last_failure_at = Some(done);
            }
            job.finished.push_back(run);
            while job.finished.len() > KEPT_FINISHED_RUNS {
                if let Some(old) = job.finished.pop_front() {
                    for t in &old.tasks {
                        self.tasks.remove(&t.id);
                    }
                }
            }
            self.save_job(&key.0);
        }
        self.out.delete(run_key(&key.0, &key.1));
    }

    /// Deadlines of active runs (activeDeadlineSeconds, maxLaunchDelay, a schedule's
    /// starting deadline), and kills re-sent for finished runs' tasks still going.
    pub(crate) fn check_deadlines(&mut self, now: DateTime<Utc>) {
        let keys: Vec<RunKey> = self.runs.keys().cloned().collect();
        for key in keys {
            let Some(run) = self.runs.get_mut(&key) else {
                continue;
            };
            let grace = run.spec.task_kill_grace_period_seconds;
            let actions = run.tick(now);
            let finished = run.is_finished();
            self.execute(actions, grace);
            if finished {
                self.finish_run(&key, now);
            }
        }
        // Only while subscribed: a kill sent while disconnected is lost, and leaving
        // `kill_sent_at` unset makes the first tick after subscribing send it.
        if self.subscribed {
            let mut kills = Vec::new();
            for run in self.jobs.values_mut().flat_map(|j| j.finished.iter_mut()) {
                let grace = run.spec.task_kill_grace_period_seconds;
                kills.push((run.tick(now), grace));
            }
            for (actions, grace) in kills {
                self.execute(actions, grace);
            }
        }
    }
}
