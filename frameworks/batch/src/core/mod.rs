//! The batch framework's pure core: jobs, schedules, runs and history, in memory.
//!
//! Every input (an HTTP request, an offer, a status update, a timer tick) is a method
//! taking the current time; the core changes its state and queues what must happen
//! outside it in an [`Output`]: store writes ([`StoreWrite`], one key each, in the
//! order they must become durable) and driver calls ([`Effect`]). The actor shell
//! takes the output ([`Core::take_output`]), makes the writes durable, and only then
//! answers callers and performs the effects. The core does no I/O, reads no clock and
//! draws run ids from an injected [`RunIds`].
//!
//! Durable layout: `framework-id`; `jobs/<jobId>` ([`JobRecord`]: spec, schedules
//! with the last handled tick, history, recent finished runs); `runs/<jobId>/<runId>`
//! (active runs). Invariants: a schedule's handled tick is written before the run it
//! starts, so a tick never starts two runs even across a crash; a run's task is
//! written before its launch is performed, so a restarted framework can reconcile it;
//! a finished run is written into its job's history before its active record is
//! deleted.
//!
//! By concern: [`jobs`] (job definitions), [`schedules`] (schedule definitions and
//! cron firing), [`runs`] (starting, stopping, finishing runs, deadlines), [`offers`]
//! (launches, revive/suppress), [`updates`] (subscription and status updates).

#![deny(clippy::disallowed_methods)]

mod jobs;
mod offers;
mod runs;
mod schedules;
mod updates;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use mezzo_sdk::Effect;
use serde::{Deserialize, Serialize};

use crate::ids::RunIds;
use crate::model::{JobSpec, ScheduleSpec, Violation};
use crate::run::{Action, JobRun};

pub use offers::{ACCEPT_REFUSE_SECONDS, DECLINE_REFUSE_SECONDS, REVIVE_EVERY_SECS};
pub use schedules::next_run_at;

/// Finished runs kept per job (for `?include=finished` and `embed=history`).
pub const KEPT_FINISHED_RUNS: usize = 20;

/// A schedule with the latest tick already handled (fired or skipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRecord {
    /// The definition.
    pub spec: ScheduleSpec,
    /// The latest tick handled; only later ticks may fire.
    pub last_tick: DateTime<Utc>,
}

/// Counts of a job's finished runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// Runs that ended SUCCESS.
    pub success_count: u64,
    /// Runs that ended FAILED.
    pub failure_count: u64,
    /// When the latest successful run ended.
    pub last_success_at: Option<DateTime<Utc>>,
    /// When the latest failed run ended.
    pub last_failure_at: Option<DateTime<Utc>>,
}

/// Everything stored for one job at `jobs/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// The definition (its inline `schedules` always empty: they live in `schedules`).
    pub spec: JobSpec,
    /// The job's schedules.
    pub schedules: Vec<ScheduleRecord>,
    /// Counts of finished runs.
    pub history: History,
    /// The latest finished runs, most recent last.
    pub finished: VecDeque<JobRun>,
}

/// An active run's key: (job id, run id).
pub type RunKey = (String, String);

/// One durable change, to be made in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreWrite {
    /// Write `value` at `key`.
    Put {
        /// Store key.
        key: String,
        /// Serialized record.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// Store key.
        key: String,
    },
}

impl StoreWrite {
    /// The key written or deleted.
    pub fn key(&self) -> &str {
        match self {
            StoreWrite::Put { key, .. } | StoreWrite::Delete { key } => key,
        }
    }
}

/// What the core wants done since the last [`Core::take_output`].
#[derive(Debug, Default)]
pub struct Output {
    /// Store writes, in the order they must become durable.
    pub writes: Vec<StoreWrite>,
    /// Driver calls, to perform after the writes are durable.
    pub effects: Vec<Effect>,
    /// A record that could not be serialized (its write is missing from `writes`):
    /// the state in memory is ahead of what can be stored.
    pub encode_error: Option<String>,
}

impl Output {
    fn put<T: Serialize>(&mut self, key: String, value: &T) {
        match serde_json::to_vec(value) {
            Ok(value) => self.writes.push(StoreWrite::Put { key, value }),
            Err(e) => self.encode_error = Some(format!("encoding {key}: {e}")),
        }
    }

    fn delete(&mut self, key: String) {
        self.writes.push(StoreWrite::Delete { key });
    }
}

/// Why a request was refused. A refused request changes nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// No job with this id.
    #[error("Job '{0}' does not exist")]
    JobNotFound(String),
    /// No schedule with this id in the job.
    #[error("Schedule '{0}' does not exist")]
    ScheduleNotFound(String),
    /// No run with this id in the job (active or kept finished).
    #[error("Job run '{run}' of job '{job}' does not exist")]
    RunNotFound {
        /// The job.
        job: String,
        /// The run asked for.
        run: String,
    },
    /// A job with this id exists already.
    #[error("Job with this id already exists")]
    JobExists(String),
    /// A schedule with this id exists already in the job.
    #[error("Schedule with id '{0}' already exists")]
    ScheduleExists(String),
    /// Deleting a job with active runs without asking to stop them.
    #[error("There are active job runs. Override with stopCurrentJobRuns=true")]
    ActiveRuns(String),
    /// A manual run of a job whose schedule forbids concurrent runs, while one is active.
    #[error("Job '{job}' forbids concurrent runs and has an active run")]
    ConcurrentRunForbidden {
        /// The job.
        job: String,
        /// Its active runs.
        active: Vec<JobRun>,
    },
    /// Stopping a run that already finished.
    #[error("Job run '{run}' of job '{job}' is already finished")]
    RunFinished {
        /// The job.
        job: String,
        /// The run.
        run: String,
    },
    /// The definition is not valid: every problem with its JSON pointer.
    #[error("Object is not valid")]
    Invalid {
        /// The problems.
        details: Vec<Violation>,
    },
}

impl CoreError {
    /// One validation problem at `path`.
    pub fn invalid(path: &str, error: &str) -> CoreError {
        CoreError::Invalid {
            details: vec![Violation {
                path: path.into(),
                errors: vec![error.into()],
            }],
        }
    }
}

/// What was read back from the store at start-up (or after losing sync with it).
#[derive(Debug, Default)]
pub struct Restored {
    /// The persisted framework id.
    pub framework_id: Option<String>,
    /// Every `jobs/<id>` record.
    pub jobs: BTreeMap<String, JobRecord>,
    /// Every `runs/<job>/<run>` record.
    pub runs: Vec<JobRun>,
}

/// The framework's state (see the module docs).
pub struct Core {
    pub(crate) jobs: BTreeMap<String, JobRecord>,
    /// Active runs.
    pub(crate) runs: BTreeMap<RunKey, JobRun>,
    /// Task id to its run, for active and kept finished runs.
    tasks: HashMap<String, RunKey>,
    framework_id: Option<String>,
    subscribed: bool,
    /// Offers are wanted (we revived and did not suppress since).
    revived: bool,
    last_revive: Option<DateTime<Utc>>,
    ids: Box<dyn RunIds>,
    /// Event counters served at `/v1/metrics`.
    counters: BTreeMap<&'static str, u64>,
    out: Output,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("jobs", &self.jobs.len())
            .field("active_runs", &self.runs.len())
            .field("framework_id", &self.framework_id)
            .field("subscribed", &self.subscribed)
            .finish()
    }
}

pub(crate) fn job_key(id: &str) -> String {
    format!("jobs/{id}")
}

pub(crate) fn run_key(job: &str, run: &str) -> String {
    format!("runs/{job}/{run}")
}

/// The store key of the framework id.
pub const FRAMEWORK_ID_KEY: &str = "framework-id";

impl Core {
    /// An empty core drawing run ids from `ids`.
    pub fn new(ids: Box<dyn RunIds>) -> Core {
        Core {
            jobs: BTreeMap::new(),
            runs: BTreeMap::new(),
            tasks: HashMap::new(),
            framework_id: None,
            subscribed: false,
            revived: false,
            last_revive: None,
            ids,
            counters: BTreeMap::new(),
            out: Output::default(),
        }
    }

    /// Replaces jobs, runs and the framework id with what the store holds. Runs whose
    /// job is gone, or that already sit in their job's history (a crash between writing
    /// the job and deleting the run), are dropped and their records deleted. The
    /// subscription, counters and queued output are kept.
    pub fn restore(&mut self, restored: Restored) {
        self.framework_id = restored.framework_id.filter(|s| !s.is_empty());
        self.jobs = restored.jobs;
        self.runs.clear();
        for run in restored.runs {
            let known = self
                .jobs
                .get(&run.job_id)
                .is_some_and(|j| !j.finished.iter().any(|r| r.id == run.id));
            if !known || run.is_finished() {
                self.out.delete(run_key(&run.job_id, &run.id));
                continue;
            }
            self.runs.insert((run.job_id.clone(), run.id.clone()), run);
        }
        self.tasks = self
            .runs
            .values()
            .chain(self.jobs.values().flat_map(|j| j.finished.iter()))
            .flat_map(|r| {
                r.tasks
                    .iter()
                    .map(|t| (t.id.clone(), (r.job_id.clone(), r.id.clone())))
            })
            .collect();
    }

    /// Everything queued since the last call.
    pub fn take_output(&mut self) -> Output {
        std::mem::take(&mut self.out)
    }

    /// The persisted framework id, if any.
    pub fn framework_id(&self) -> Option<&str> {
        self.framework_id.as_deref()
    }

    /// True while subscribed to a master.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed
    }

    /// Every job, by id.
    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values()
    }

    /// One job.
    pub fn job(&self, id: &str) -> Result<&JobRecord, CoreError> {
        self.jobs
            .get(id)
            .ok_or_else(|| CoreError::JobNotFound(id.to_string()))
    }

    /// The job's active runs, oldest id first.
    pub fn active_runs(&self, job: &str) -> Vec<&JobRun> {
        self.runs.values().filter(|r| r.job_id == job).collect()
    }

    /// Number of active runs of every job.
    pub fn active_run_count(&self) -> usize {
        self.runs.len()
    }

    /// Event counters (`runs.started`, `schedule.ticks.fired`, ...).
    pub fn counters(&self) -> &BTreeMap<&'static str, u64> {
        &self.counters
    }

    /// The timer: run deadlines, kills of finished runs' tasks still going, schedules,
    /// and revive/suppress.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        self.check_deadlines(now);
        self.fire_schedules(now);
        self.adjust_offers(now);
    }

    fn count(&mut self, name: &'static str, n: u64) {
        *self.counters.entry(name).or_default() += n;
    }

    fn effect(&mut self, effect: Effect) {
        self.out.effects.push(effect);
    }

    /// Turns a run's actions into driver calls.
    fn execute(&mut self, actions: Vec<Action>, grace: Option<f64>) {
        for action in actions {
            match action {
                Action::Kill { task_id, agent_id } => {
                    tracing::info!(task.id = %task_id, "killing task");
                    self.effect(Effect::Kill {
                        task_id,
                        agent_id,
                        grace,
                    });
                }
            }
        }
    }

    /// Queues the write of job `id` (nothing if it is gone).
    fn save_job(&mut self, id: &str) {
        if let Some(record) = self.jobs.get(id) {
            self.out.put(job_key(id), record);
        }
    }

    /// Queues the write of an active run (nothing if it is not active).
    fn save_run(&mut self, key: &RunKey) {
        if let Some(run) = self.runs.get(key) {
            self.out.put(run_key(&key.0, &key.1), run);
        }
    }
}
