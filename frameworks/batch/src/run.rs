//! The run state machine: one [`JobRun`] from creation to SUCCESS or FAILED. Pure:
//! driven by [`JobRun::launch`], [`JobRun::update`], [`JobRun::tick`] and
//! [`JobRun::stop`] with the current time, it returns the tasks to kill and never does
//! I/O itself.
//!
//! A run has `parallelism` slots; each slot needs one task to finish successfully.
//! A failed task's slot is relaunched (after a backoff) when the restart policy is
//! ON_FAILURE and the active deadline has not passed; otherwise the run is FAILED and
//! its other tasks are killed. Invariants: a finished run never changes status again;
//! a task's first terminal state is the one kept.

#![deny(clippy::disallowed_methods)]

use chrono::{DateTime, Duration, Utc};
use mezzo_sdk::v1::{StatusReason, StatusSource, TaskState};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::model::{RestartPolicy, RunSpec};

/// Metronome's run states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Created, not yet persisted.
    Initial,
    /// Persisted, waiting for offers.
    Starting,
    /// Tasks launched.
    Active,
    /// Every slot finished successfully.
    Success,
    /// A task failed and could not be retried, or the run was stopped or timed out.
    Failed,
}

impl RunStatus {
    /// SUCCESS or FAILED.
    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Success | RunStatus::Failed)
    }
}

/// One slot of a run (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Slot {
    /// Needs a task, not before this time (retry backoff).
    Waiting {
        /// Earliest launch time.
        not_before: DateTime<Utc>,
    },
    /// A task is launched for it.
    Launched {
        /// That task.
        task_id: String,
    },
    /// Done.
    Succeeded,
}

/// One task launched for a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTask {
    /// Mesos task id: `<jobId>_<runId>.<slot>.<launch>`.
    pub id: String,
    /// The slot it serves.
    pub slot: u32,
    /// Agent it was launched on.
    pub agent_id: String,
    /// Latest Mesos state (`TASK_RUNNING`...).
    pub status: String,
    /// When it was launched.
    pub started_at: DateTime<Utc>,
    /// When it reached a terminal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Exit code, when the task's command exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Message of the latest update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// True once the agent or executor reported on it (it really was launched).
    #[serde(default)]
    pub seen: bool,
    /// True once it reached TASK_RUNNING (or ended after being seen).
    #[serde(default)]
    pub ran: bool,
    /// When a kill was last asked for (not persisted: kills are re-sent after a restart).
    #[serde(skip)]
    pub kill_sent_at: Option<DateTime<Utc>>,
}

impl RunTask {
    /// True once the task reached a terminal state.
    pub fn is_terminal(&self) -> bool {
        self.completed_at.is_some()
    }
}

/// Something the run needs done outside itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Kill this task.
    Kill {
        /// Task id.
        task_id: String,
        /// Its agent.
        agent_id: String,
    },
}

/// First retry delay; doubles per failure up to [`MAX_BACKOFF_SECS`].
pub const BASE_BACKOFF_SECS: i64 = 1;
/// Longest retry delay.
pub const MAX_BACKOFF_SECS: i64 = 60;
/// A kill not answered by a terminal update is re-sent after this long.
pub const KILL_RETRY_SECS: i64 = 5;

/// Delay before the relaunch that follows the `failures`-th failure.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::seconds((BASE_BACKOFF_SECS << exp).min(MAX_BACKOFF_SECS))
}

/// A run id as Metronome makes them: `yyyyMMddHHmmss` and 5 random alphanumerics.
pub fn new_run_id(now: DateTime<Utc>, rng: &mut impl Rng) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let suffix: String = (0..5)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("{}{suffix}", now.format("%Y%m%d%H%M%S"))
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRun {
    /// Run id.
    pub id: String,
    /// The job.
    pub job_id: String,
    /// Current status.
    pub status: RunStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it became SUCCESS or FAILED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Every task launched, in launch order.
    pub tasks: Vec<RunTask>,
    /// The job's run spec when the run was created (later job updates do not change it).
    pub spec: RunSpec,
    /// Schedule that started it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    /// A scheduled run whose tasks are not launched by then is FAILED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline: Option<DateTime<Utc>>,
    /// Slots (see the module docs).
    pub slots: Vec<Slot>,
    /// Failed tasks so far.
    pub failures: u32,
    /// Tasks launched so far (numbers task ids).
    pub launches: u32,
    /// Why it FAILED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl JobRun {
    /// A new run of `spec` in state INITIAL; every slot waits for a task now.
    pub fn new(id: String, job_id: String, spec: RunSpec, now: DateTime<Utc>) -> JobRun {
        let slots = (0..spec.parallelism.max(1))
            .map(|_| Slot::Waiting { not_before: now })
            .collect();
        JobRun {
            id,
            job_id,
            status: RunStatus::Initial,
            created_at: now,
            completed_at: None,
            tasks: Vec::new(),
            spec,
            schedule_id: None,
            starting_deadline: None,
            slots,
            failures: 0,
            launches: 0,
            reason: None,
        }
    }

    /// The run is persisted and queued for offers: STARTING.
    pub fn queued(&mut self) {
        if self.status == RunStatus::Initial {
            self.status = RunStatus::Starting;
        }
    }

    /// True once SUCCESS or FAILED.
    pub fn is_finished(&self) -> bool {
        self.status.is_finished()
    }

    /// Slots that want a task now.
    pub fn launchable(&self, now: DateTime<Utc>) -> Vec<u32> {
        if self.is_finished() {
            return Vec::new();
        }
        (0u32..)
            .zip(&self.slots)
            .filter(|(_, s)| matches!(s, Slot::Waiting { not_before } if *not_before <= now))
            .map(|(i, _)| i)
            .collect()
    }

    /// The earliest time a waiting slot may launch (for wake-ups).
    pub fn next_launch_at(&self) -> Option<DateTime<Utc>> {
        if self.is_finished() {
            return None;
        }
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::Waiting { not_before } => Some(*not_before),
                _ => None,
            })
            .min()
    }

    /// Records a task launched for `slot` on `agent_id`; returns its id. The run becomes
    /// ACTIVE. Call before sending the launch, and persist the run first.
    pub fn launch(&mut self, slot: u32, agent_id: &str, now: DateTime<Utc>) -> String {
        self.launches += 1;
        let task_id = format!("{}_{}.{}.{}", self.job_id, self.id, slot, self.launches);
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = Slot::Launched {
                task_id: task_id.clone(),
            };
        }
        self.tasks.push(RunTask {
            id: task_id.clone(),
            slot,
            agent_id: agent_id.to_string(),
            status: TaskState::TaskStaging.as_str_name().to_string(),
            started_at: now,
            completed_at: None,
            exit_code: None,
            message: None,
            seen: false,
            ran: false,
            kill_sent_at: None,
        });
        self.status = RunStatus::Active;
        task_id
    }

    /// The launch of `task_id` was not sent (the offer was gone): forget the task and let
    /// its slot wait for another offer.
    pub fn launch_failed(&mut self, task_id: &str, now: DateTime<Utc>) {
        let Some(pos) = self.tasks.iter().position(|t| t.id == task_id) else {
            return;
        };
        let task = self.tasks.remove(pos);
        if let Some(slot) = self.slots.get_mut(task.slot as usize) {
            if matches!(slot, Slot::Launched { task_id: t } if *t == task.id) {
                *slot = Slot::Waiting { not_before: now };
            }
        }
        if self.live_tasks().next().is_none() && !self.is_finished() {
            self.status = RunStatus::Starting;
        }
    }

    /// A status update for one of the run's tasks. Idempotent: updates after a task's
    /// first terminal state are ignored.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        task_id: &str,
        state: TaskState,
        reason: StatusReason,
        source: StatusSource,
        exit_code: Option<i32>,
        message: &str,
        now: DateTime<Utc>,
    ) -> Vec<Action> {
        let Some(task) = self.tasks.iter_mut().find(|t| t.id == task_id) else {
            return Vec::new();
        };
        if task.is_terminal() {
            return Vec::new();
        }
        let from_agent = source != StatusSource::SourceMaster;
        task.seen |= from_agent;
        task.status = state.as_str_name().to_string();
        if !message.is_empty() {
            task.message = Some(message.to_string());
        }
        if exit_code.is_some() {
            task.exit_code = exit_code;
        }
        if state == TaskState::TaskRunning || (state.is_terminal() && task.seen) {
            task.ran = true;
        }
        if !state.is_terminal() {
            return Vec::new();
        }
        task.completed_at = Some(now);
        let slot = task.slot as usize;
        // A task the agent never reported that the master no longer knows (it was lost
        // between our decision and the launch, e.g. across a restart) never ran: launch
        // it again without counting a failure.
        let never_launched = !task.seen
            && matches!(
                state,
                TaskState::TaskLost | TaskState::TaskDropped | TaskState::TaskUnknown
            )
            && matches!(
                reason,
                StatusReason::ReasonReconciliation | StatusReason::ReasonInvalidOffers
            );
        if self.is_finished() {
            return Vec::new();
        }
        if state == TaskState::TaskFinished {
            if let Some(s) = self.slots.get_mut(slot) {
                *s = Slot::Succeeded;
            }
            if self.slots.iter().all(|s| *s == Slot::Succeeded) {
                self.status = RunStatus::Success;
                self.completed_at = Some(now);
            }
            return Vec::new();
        }
        if never_launched {
            if let Some(s) = self.slots.get_mut(slot) {
                *s = Slot::Waiting { not_before: now };
            }
            return Vec::new();
        }
        self.failures += 1;
        if self.spec.restart.policy == RestartPolicy::OnFailure && !self.past_active_deadline(now) {
            // Relaunch after the backoff; if the active deadline comes first, `tick`
            // fails the run at the deadline.
            let not_before = now + backoff(self.failures);
            if let Some(s) = self.slots.get_mut(slot) {
                *s = Slot::Waiting { not_before };
            }
            return Vec::new();
        }
        let why = format!("task {task_id} ended {}", state.as_str_name());
        self.fail(why, now)
    }

    /// When the active deadline passes, if any.
    pub fn active_deadline(&self) -> Option<DateTime<Utc>> {
        self.spec.restart.active_deadline_seconds.map(|s| {
            self.created_at + Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 2_000))
        })
    }

    fn past_active_deadline(&self, now: DateTime<Utc>) -> bool {
        self.active_deadline().is_some_and(|d| now >= d)
    }

    /// Checks deadlines: activeDeadlineSeconds (kill and FAILED), maxLaunchDelay (no task
    /// ever ran) and a schedule's starting deadline (nothing launched yet); re-sends
    /// kills that got no answer.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        if self.is_finished() {
            return self.kill_live(now);
        }
        if self.past_active_deadline(now) {
            return self.fail("activeDeadlineSeconds exceeded".into(), now);
        }
        let ever_ran = self.tasks.iter().any(|t| t.ran);
        let max_delay = Duration::seconds(
            i64::try_from(self.spec.max_launch_delay).unwrap_or(i64::MAX / 2_000),
        );
        if !ever_ran && now >= self.created_at + max_delay {
            return self.fail("not running within maxLaunchDelay".into(), now);
        }
        if self.status == RunStatus::Starting && self.starting_deadline.is_some_and(|d| now >= d) {
            return self.fail("not started within startingDeadlineSeconds".into(), now);
        }
        Vec::new()
    }

    /// Stops the run: FAILED, every live task killed. Nothing if already finished.
    pub fn stop(&mut self, reason: &str, now: DateTime<Utc>) -> Vec<Action> {
        if self.is_finished() {
            return Vec::new();
        }
        self.fail(reason.to_string(), now)
    }

    fn fail(&mut self, reason: String, now: DateTime<Utc>) -> Vec<Action> {
        self.status = RunStatus::Failed;
        self.completed_at = Some(now);
        self.reason = Some(reason);
        self.kill_live(now)
    }

    /// Kills for every launched task not yet terminal whose kill was not sent recently.
    fn kill_live(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        let mut out = Vec::new();
        for t in &mut self.tasks {
            let due = t
                .kill_sent_at
                .is_none_or(|at| now - at >= Duration::seconds(KILL_RETRY_SECS));
            if !t.is_terminal() && due {
                t.kill_sent_at = Some(now);
                out.push(Action::Kill {
                    task_id: t.id.clone(),
                    agent_id: t.agent_id.clone(),
                });
            }
        }
        out
    }

    /// Tasks not yet terminal (to reconcile after a restart).
    pub fn live_tasks(&self) -> impl Iterator<Item = &RunTask> {
        self.tasks.iter().filter(|t| !t.is_terminal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RestartSpec;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
    }

    fn spec(policy: RestartPolicy, deadline: Option<u64>, parallelism: u32) -> RunSpec {
        serde_json::from_value::<RunSpec>(serde_json::json!({"cmd": "true"}))
            .map(|mut s| {
                s.restart = RestartSpec {
                    policy,
                    active_deadline_seconds: deadline,
                };
                s.parallelism = parallelism;
                s
            })
            .unwrap()
    }

    fn run(policy: RestartPolicy, deadline: Option<u64>, parallelism: u32) -> JobRun {
        let mut r = JobRun::new(
            "r1".into(),
            "job".into(),
            spec(policy, deadline, parallelism),
            t0(),
        );
        r.queued();
        r
    }

    fn end(r: &mut JobRun, task: &str, state: TaskState, at: DateTime<Utc>) -> Vec<Action> {
        r.update(
            task,
            state,
            StatusReason::ReasonNone,
            StatusSource::SourceExecutor,
            Some(0),
            "",
            at,
        )
    }

    #[test]
    fn success_path() {
        let mut r = run(RestartPolicy::Never, None, 1);
        assert_eq!(r.status, RunStatus::Starting);
        assert_eq!(r.launchable(t0()), vec![0]);
        let id = r.launch(0, "a1", t0());
        assert_eq!(id, "job_r1.0.1");
        assert_eq!(r.status, RunStatus::Active);
        assert!(r.launchable(t0()).is_empty());
        end(&mut r, &id, TaskState::TaskRunning, t0());
        end(&mut r, &id, TaskState::TaskFinished, t0());
        assert_eq!(r.status, RunStatus::Success);
        assert_eq!(r.tasks[0].status, "TASK_FINISHED");
        // Redelivery changes nothing.
        end(&mut r, &id, TaskState::TaskFailed, t0());
        assert_eq!(r.tasks[0].status, "TASK_FINISHED");
    }

    #[test]
    fn never_policy_fails_on_first_failure() {
        let mut r = run(RestartPolicy::Never, None, 1);
        let id = r.launch(0, "a1", t0());
        end(&mut r, &id, TaskState::TaskFailed, t0());
        assert_eq!(r.status, RunStatus::Failed);
    }

    #[test]
    fn on_failure_retries_with_backoff_until_the_deadline() {
        let mut r = run(RestartPolicy::OnFailure, Some(10), 1);
        let mut now = t0();
        let mut launched = 0;
        loop {
            let slots = r.launchable(now);
            if r.is_finished() {
                break;
            }
            if slots.is_empty() {
                now = r.next_launch_at().unwrap();
                r.tick(now);
                continue;
            }
            let id = r.launch(slots[0], "a1", now);
            launched += 1;
            end(&mut r, &id, TaskState::TaskRunning, now);
            now += Duration::milliseconds(100);
            end(&mut r, &id, TaskState::TaskFailed, now);
        }
        // Launches at 0, 1.1, 3.2 and 7.3 s; the next would be at 15.4 s, past the
        // 10 s deadline, where the run fails.
        assert_eq!(launched, 4);
        assert!(r
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("activeDeadline"));
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(backoff(1), Duration::seconds(1));
        assert_eq!(backoff(30), Duration::seconds(MAX_BACKOFF_SECS));
    }

    #[test]
    fn active_deadline_kills_a_long_task() {
        let mut r = run(RestartPolicy::Never, Some(5), 1);
        let id = r.launch(0, "a1", t0());
        end(&mut r, &id, TaskState::TaskRunning, t0());
        assert!(r.tick(t0() + Duration::seconds(4)).is_empty());
        let actions = r.tick(t0() + Duration::seconds(5));
        assert_eq!(
            actions,
            vec![Action::Kill {
                task_id: id.clone(),
                agent_id: "a1".into()
            }]
        );
        assert_eq!(r.status, RunStatus::Failed);
        // Kill re-sent only after KILL_RETRY_SECS, and not after the task ended.
        assert!(r.tick(t0() + Duration::seconds(6)).is_empty());
        assert_eq!(r.tick(t0() + Duration::seconds(10)).len(), 1);
        end(
            &mut r,
            &id,
            TaskState::TaskKilled,
            t0() + Duration::seconds(11),
        );
        assert!(r.tick(t0() + Duration::seconds(20)).is_empty());
        assert_eq!(r.status, RunStatus::Failed);
    }

    #[test]
    fn parallel_run_needs_every_slot() {
        let mut r = run(RestartPolicy::Never, None, 3);
        let ids: Vec<String> = r
            .launchable(t0())
            .into_iter()
            .map(|s| r.launch(s, "a", t0()))
            .collect();
        assert_eq!(ids.len(), 3);
        end(&mut r, &ids[0], TaskState::TaskFinished, t0());
        end(&mut r, &ids[1], TaskState::TaskFinished, t0());
        assert_eq!(r.status, RunStatus::Active);
        end(&mut r, &ids[2], TaskState::TaskFinished, t0());
        assert_eq!(r.status, RunStatus::Success);
        // One failure fails a parallel NEVER run and kills the rest.
        let mut r = run(RestartPolicy::Never, None, 2);
        let a = r.launch(0, "a", t0());
        let b = r.launch(1, "a", t0());
        let actions = end(&mut r, &a, TaskState::TaskFailed, t0());
        assert_eq!(
            actions,
            vec![Action::Kill {
                task_id: b,
                agent_id: "a".into()
            }]
        );
    }

    #[test]
    fn unlaunched_lost_tasks_are_relaunched_without_failing() {
        let mut r = run(RestartPolicy::Never, None, 1);
        let id = r.launch(0, "a", t0());
        r.update(
            &id,
            TaskState::TaskLost,
            StatusReason::ReasonReconciliation,
            StatusSource::SourceMaster,
            None,
            "",
            t0(),
        );
        assert_eq!(r.status, RunStatus::Active);
        assert_eq!(r.launchable(t0()), vec![0]);
        assert_eq!(r.failures, 0);
        // A failed send puts the slot back too.
        let id = r.launch(0, "a", t0());
        r.launch_failed(&id, t0());
        assert_eq!(r.launchable(t0()), vec![0]);
        assert_eq!(r.status, RunStatus::Starting);
    }

    #[test]
    fn launch_deadlines() {
        let mut r = run(RestartPolicy::Never, None, 1);
        r.spec.max_launch_delay = 30;
        assert!(r.tick(t0() + Duration::seconds(29)).is_empty());
        r.tick(t0() + Duration::seconds(30));
        assert_eq!(r.status, RunStatus::Failed);
        let mut r = run(RestartPolicy::Never, None, 1);
        r.starting_deadline = Some(t0() + Duration::seconds(60));
        r.tick(t0() + Duration::seconds(61));
        assert_eq!(r.status, RunStatus::Failed);
        assert!(r.reason.unwrap().contains("startingDeadline"));
    }

    #[test]
    fn stop_kills_and_fails() {
        let mut r = run(RestartPolicy::OnFailure, None, 1);
        let id = r.launch(0, "a", t0());
        assert_eq!(r.stop("stopped", t0()).len(), 1);
        assert_eq!(r.status, RunStatus::Failed);
        end(&mut r, &id, TaskState::TaskKilled, t0());
        assert_eq!(r.tasks[0].status, "TASK_KILLED");
        assert!(r.stop("again", t0()).is_empty());
        let id = new_run_id(t0(), &mut rand::rng());
        assert!(id.starts_with("20240101000000") && id.len() == 19);
    }
}
