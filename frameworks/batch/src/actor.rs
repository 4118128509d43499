//! The framework actor: the one owner of jobs, schedules, runs and history.
//!
//! HTTP handlers and the SDK [`Scheduler`](mezzo_sdk::Scheduler) glue send it
//! [`Command`]s and await a oneshot reply. It persists every change before answering
//! (so an acknowledged status update or an accepted request is durable), decides
//! launches from offers (the glue sends them), and queues driver calls (kill,
//! revive, suppress, reconcile) to a worker that sends them in order: the actor never
//! awaits the master.
//!
//! Durable layout in the [`Store`]: `framework-id`; `jobs/<jobId>` (spec, schedules
//! with the last handled tick, history, recent finished runs); `runs/<jobId>/<runId>`
//! (active runs). Invariants: a schedule's tick is recorded before its run is created,
//! so a tick never starts two runs even across a crash; a run's task is recorded
//! before its launch is sent, so a restarted framework can reconcile it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use mezzo_sdk::matching::{OfferSpace, TaskResources};
use mezzo_sdk::v1;
use mezzo_sdk::{task_state, Driver};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::api::{ApiError, Embed};
use crate::clock::Clock;
use crate::cron::{evaluate, CronSpec};
use crate::model::{ConcurrencyPolicy, JobSpec, ScheduleSpec};
use crate::run::{Action, JobRun, RunStatus};
use crate::BatchError;
use mezzo_sdk::store::Store;

/// Finished runs kept per job (for `?include=finished` and `embed=history`).
const KEPT_FINISHED_RUNS: usize = 20;
/// While tasks wait for offers, revive again this often (filters may hide offers).
const REVIVE_EVERY: StdDuration = StdDuration::from_secs(5);

/// A schedule with the latest tick already handled (fired or skipped).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScheduleRecord {
    pub spec: ScheduleSpec,
    pub last_tick: DateTime<Utc>,
}

/// Counts of a job's finished runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct History {
    pub success_count: u64,
    pub failure_count: u64,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
}

/// Everything stored for one job at `jobs/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobRecord {
    pub spec: JobSpec,
    pub schedules: Vec<ScheduleRecord>,
    pub history: History,
    /// Most recent last.
    pub finished: VecDeque<JobRun>,
}

/// An HTTP-side request.
#[derive(Debug)]
pub(crate) enum Request {
    ListJobs(Embed),
    GetJob(String, Embed),
    CreateJob(JobSpec),
    UpdateJob(String, JobSpec),
    DeleteJob { id: String, stop_runs: bool },
    ListSchedules(String),
    GetSchedule(String, String),
    CreateSchedule(String, ScheduleSpec),
    UpdateSchedule(String, String, ScheduleSpec),
    DeleteSchedule(String, String),
    ListRuns { job: String, include_finished: bool },
    GetRun(String, String),
    StartRun(String),
    StopRun(String, String),
    Queue,
    Info,
    Metrics,
}

/// A successful answer: status code and JSON body.
pub(crate) type Reply = Result<(u16, Value), ApiError>;

/// What the launch glue should do with a batch of offers.
#[derive(Debug, Default)]
pub(crate) struct OfferPlan {
    /// Offer id and the tasks to launch on it.
    pub launches: Vec<(String, Vec<v1::TaskInfo>)>,
    /// Offers to decline.
    pub declines: Vec<String>,
}

/// Messages to the actor.
#[derive(Debug)]
pub(crate) enum Command {
    Http(Request, oneshot::Sender<Reply>),
    Subscribed(String, oneshot::Sender<()>),
    Offers(Vec<v1::Offer>, oneshot::Sender<OfferPlan>),
    LaunchFailed(Vec<String>),
    Update(v1::TaskStatus, oneshot::Sender<()>),
    Disconnected,
}

/// Calls to the master, sent in order by one worker.
#[derive(Debug)]
pub(crate) enum DriverCall {
    Kill {
        task_id: String,
        agent_id: String,
        grace: Option<f64>,
    },
    Revive,
    Suppress,
    Reconcile(Vec<(String, String)>),
}

/// Sends driver calls in order; failures are logged (the actor's level-triggered tick
/// repeats what matters: kills are re-sent, revive is repeated).
pub(crate) async fn driver_worker(driver: Driver, mut rx: mpsc::UnboundedReceiver<DriverCall>) {
    while let Some(call) = rx.recv().await {
        let result = match &call {
            DriverCall::Kill {
                task_id,
                agent_id,
                grace,
            } => driver.kill(task_id, agent_id, *grace).await,
            DriverCall::Revive => driver.revive(Vec::new()).await,
            DriverCall::Suppress => driver.suppress(Vec::new()).await,
            DriverCall::Reconcile(tasks) => driver.reconcile(tasks.clone()).await,
        };
        if let Err(e) = result {
            warn!(error = %e, ?call, "driver call failed");
        }
    }
}

/// Metronome's timestamp format: `2016-07-15T13:02:59.735+0000`.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string()
}

fn ts_opt(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(ts(t)))
}

/// The actor's state.
pub(crate) struct Actor {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    calls: mpsc::UnboundedSender<DriverCall>,
    jobs: BTreeMap<String, JobRecord>,
    /// Active runs by (job, run).
    runs: BTreeMap<(String, String), JobRun>,
    /// Task id to (job, run), for active and kept finished runs.
    tasks: HashMap<String, (String, String)>,
    framework_id: Option<String>,
    subscribed: bool,
    /// Offers are wanted (we revived and did not suppress since).
    revived: bool,
    last_revive: Option<tokio::time::Instant>,
    rng: StdRng,
    /// Event counters served at `/v1/metrics`.
    counters: BTreeMap<&'static str, u64>,
}

fn job_key(id: &str) -> String {
    format!("jobs/{id}")
}

fn run_key(job: &str, run: &str) -> String {
    format!("runs/{job}/{run}")
}

impl Actor {
    /// Loads the durable state.
    pub(crate) async fn load(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        calls: mpsc::UnboundedSender<DriverCall>,
    ) -> Result<Actor, BatchError> {
        let framework_id = match store.get("framework-id").await? {
            Some(v) => {
                Some(String::from_utf8_lossy(&v.data).trim().to_string()).filter(|s| !s.is_empty())
            }
            None => None,
        };
        let mut jobs = BTreeMap::new();
        for id in store.list("jobs").await? {
            let key = job_key(&id);
            let Some(v) = store.get(&key).await? else {
                continue;
            };
            let record: JobRecord =
                serde_json::from_slice(&v.data).map_err(|e| BatchError::Corrupt {
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
            jobs.insert(id, record);
        }
        let mut runs = BTreeMap::new();
        for job in store.list("runs").await? {
            for run_id in store.list(&format!("runs/{job}")).await? {
                let key = run_key(&job, &run_id);
                let Some(v) = store.get(&key).await? else {
                    continue;
                };
                let run: JobRun =
                    serde_json::from_slice(&v.data).map_err(|e| BatchError::Corrupt {
                        key: key.clone(),
                        reason: e.to_string(),
                    })?;
                let known = jobs
                    .get(&job)
                    .is_some_and(|j: &JobRecord| !j.finished.iter().any(|r| r.id == run.id));
                if !known || run.is_finished() {
                    // Its job is gone, or it was already moved to history (a crash
                    // between writing the job and deleting the run).
                    store.delete(&key).await?;
                    continue;
                }
                runs.insert((job.clone(), run_id), run);
            }
        }
        let mut actor = Actor {
            store,
            clock,
            calls,
            jobs,
            runs,
            tasks: HashMap::new(),
            framework_id,
            subscribed: false,
            revived: false,
            last_revive: None,
            rng: StdRng::from_os_rng(),
            counters: BTreeMap::new(),
        };
        let index: Vec<(String, String, String)> = actor
            .runs
            .values()
            .chain(actor.jobs.values().flat_map(|j| j.finished.iter()))
            .flat_map(|r| {
                r.tasks
                    .iter()
                    .map(|t| (t.id.clone(), r.job_id.clone(), r.id.clone()))
            })
            .collect();
        for (task, job, run) in index {
            actor.tasks.insert(task, (job, run));
        }
        info!(
            jobs = actor.jobs.len(),
            active_runs = actor.runs.len(),
            "state loaded"
        );
        Ok(actor)
    }

    /// The persisted framework id, if any.
    pub(crate) fn framework_id(&self) -> Option<String> {
        self.framework_id.clone()
    }

    /// Runs until `shutdown` turns true or every sender is gone.
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        tick_every: StdDuration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
                _ = tick.tick() => self.tick().await,
            }
        }
        debug!("batch actor stopped");
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Http(request, reply) => {
                let answer = self.request(request).await;
                let _ = reply.send(answer);
            }
            Command::Subscribed(id, reply) => {
                self.subscribed(id).await;
                let _ = reply.send(());
            }
            Command::Offers(offers, reply) => {
                let plan = self.offers(offers).await;
                let _ = reply.send(plan);
            }
            Command::LaunchFailed(task_ids) => self.launch_failed(task_ids).await,
            Command::Update(status, reply) => {
                self.update(&status).await;
                let _ = reply.send(());
            }
            Command::Disconnected => {
                self.subscribed = false;
                self.revived = false;
            }
        }
    }

    fn count(&mut self, name: &'static str, n: u64) {
        *self.counters.entry(name).or_default() += n;
    }

    fn call(&self, call: DriverCall) {
        if self.calls.send(call).is_err() {
            warn!("driver worker gone");
        }
    }

    fn execute(&self, actions: Vec<Action>, grace: Option<f64>) {
        for action in actions {
            match action {
                Action::Kill { task_id, agent_id } => {
                    info!(task.id = %task_id, "killing task");
                    self.call(DriverCall::Kill {
                        task_id,
                        agent_id,
                        grace,
                    });
                }
            }
        }
    }

    // ------------------------------------------------------------ persistence

    async fn save_job(&self, id: &str) -> Result<(), ApiError> {
        let Some(record) = self.jobs.get(id) else {
            return Ok(());
        };
        let data = serde_json::to_vec(record).map_err(|e| ApiError::internal(e.to_string()))?;
        self.store
            .put(&job_key(id), &data, None)
            .await
            .map_err(|e| ApiError::internal(format!("store: {e}")))?;
        Ok(())
    }

    async fn save_run(&self, run: &JobRun) -> Result<(), ApiError> {
        let data = serde_json::to_vec(run).map_err(|e| ApiError::internal(e.to_string()))?;
        self.store
            .put(&run_key(&run.job_id, &run.id), &data, None)
            .await
            .map_err(|e| ApiError::internal(format!("store: {e}")))?;
        Ok(())
    }

    async fn save_active_run(&self, key: &(String, String)) {
        if let Some(run) = self.runs.get(key) {
            if let Err(e) = self.save_run(run).await {
                warn!(error = %e.message, run.id = %key.1, "persisting run failed");
            }
        }
    }

    /// Moves a finished run into its job's history (written first), then forgets its
    /// active record.
    async fn finish_run(&mut self, key: &(String, String)) {
        let Some(run) = self.runs.remove(key) else {
            return;
        };
        let done = run.completed_at.unwrap_or_else(|| self.clock.now());
        self.count(
            if run.status == RunStatus::Success {
                "runs.succeeded"
            } else {
                "runs.failed"
            },
            1,
        );
        info!(job.id = %run.job_id, run.id = %run.id, status = ?run.status, reason = ?run.reason, "run finished");
        if let Some(job) = self.jobs.get_mut(&key.0) {
            match run.status {
                RunStatus::Success => {
                    job.history.success_count += 1;
                    job.history.last_success_at = Some(done);
                }
                _ => {
                    job.history.failure_count += 1;
                    job.history.last_failure_at = Some(done);
                }
            }
            job.finished.push_back(run);
            while job.finished.len() > KEPT_FINISHED_RUNS {
                if let Some(old) = job.finished.pop_front() {
                    for t in &old.tasks {
                        self.tasks.remove(&t.id);
                    }
                }
            }
            if let Err(e) = self.save_job(&key.0).await {
                warn!(error = %e.message, "persisting job history failed");
            }
        }
        if let Err(e) = self.store.delete(&run_key(&key.0, &key.1)).await {
            warn!(error = %e, "removing finished run failed");
        }
    }

    // ------------------------------------------------------------ scheduler side

    async fn subscribed(&mut self, id: String) {
        info!(framework.id = %id, "subscribed");
        self.subscribed = true;
        self.revived = true; // a fresh subscription is not suppressed
        self.last_revive = Some(tokio::time::Instant::now());
        if self.framework_id.as_deref() != Some(id.as_str()) {
            if let Err(e) = self.store.put("framework-id", id.as_bytes(), None).await {
                warn!(error = %e, "persisting the framework id failed");
            }
            self.framework_id = Some(id);
        }
        // Explicit reconciliation of every task we believe is not over.
        let live: Vec<(String, String)> = self
            .runs
            .values()
            .chain(self.jobs.values().flat_map(|j| j.finished.iter()))
            .flat_map(|r| r.live_tasks().map(|t| (t.id.clone(), t.agent_id.clone())))
            .collect();
        if !live.is_empty() {
            info!(tasks = live.len(), "reconciling");
            self.call(DriverCall::Reconcile(live));
        }
        self.tick().await;
    }

    async fn offers(&mut self, offers: Vec<v1::Offer>) -> OfferPlan {
        let now = self.clock.now();
        let mut plan = OfferPlan::default();
        // Waiting slots, oldest run first.
        let mut demand: Vec<((String, String), u32)> = Vec::new();
        let mut order: Vec<&JobRun> = self.runs.values().collect();
        order.sort_by_key(|r| r.created_at);
        for run in order {
            for slot in run.launchable(now) {
                demand.push(((run.job_id.clone(), run.id.clone()), slot));
            }
        }
        let mut dirty: Vec<(String, String)> = Vec::new();
        let mut launched_ids: Vec<((String, String), String)> = Vec::new();
        for offer in offers {
            let mut space = OfferSpace::new(&offer);
            let mut tasks = Vec::new();
            let mut i = 0;
            while i < demand.len() {
                let (key, slot) = demand[i].clone();
                let Some(run) = self.runs.get_mut(&key) else {
                    demand.remove(i);
                    continue;
                };
                let need = TaskResources {
                    cpus: run.spec.cpus,
                    mem: run.spec.mem,
                    disk: run.spec.disk,
                    ports: 0,
                };
                if !crate::constraints::satisfied(&run.spec.placement.constraints, &offer) {
                    i += 1;
                    continue;
                }
                let Some(resources) = space.try_fit(&need) else {
                    i += 1;
                    continue;
                };
                let task_id = run.launch(slot, &offer.agent_id, now);
                tasks.push(task_info(run, &task_id, &offer.agent_id, &resources));
                launched_ids.push((key.clone(), task_id));
                if !dirty.contains(&key) {
                    dirty.push(key);
                }
                demand.remove(i);
            }
            if tasks.is_empty() {
                plan.declines.push(offer.id);
            } else {
                plan.launches.push((offer.id, tasks));
            }
        }
        // Record the tasks before they are launched; a run that cannot be saved does
        // not launch.
        let mut failed = Vec::new();
        for key in &dirty {
            if let Some(run) = self.runs.get(key) {
                if let Err(e) = self.save_run(run).await {
                    warn!(error = %e.message, run.id = %key.1, "persisting run failed; not launching");
                    failed.push(key.clone());
                }
            }
        }
        if !failed.is_empty() {
            let drop_ids: Vec<String> = launched_ids
                .iter()
                .filter(|(k, _)| failed.contains(k))
                .map(|(_, t)| t.clone())
                .collect();
            for (k, t) in &launched_ids {
                if failed.contains(k) {
                    if let Some(run) = self.runs.get_mut(k) {
                        run.launch_failed(t, now);
                    }
                }
            }
            let mut kept = Vec::new();
            for (offer, tasks) in plan.launches {
                let tasks: Vec<_> = tasks
                    .into_iter()
                    .filter(|t| !drop_ids.contains(&t.task_id))
                    .collect();
                if tasks.is_empty() {
                    plan.declines.push(offer);
                } else {
                    kept.push((offer, tasks));
                }
            }
            plan.launches = kept;
        }
        for (key, task_id) in launched_ids {
            if !failed.contains(&key) {
                info!(task.id = %task_id, "launching");
                self.tasks.insert(task_id, key);
                self.count("tasks.launched", 1);
            }
        }
        self.adjust_offers(now);
        plan
    }

    async fn launch_failed(&mut self, task_ids: Vec<String>) {
        let now = self.clock.now();
        for task_id in task_ids {
            let Some(key) = self.tasks.remove(&task_id) else {
                continue;
            };
            if let Some(run) = self.runs.get_mut(&key) {
                run.launch_failed(&task_id, now);
            }
            self.save_active_run(&key).await;
        }
        self.adjust_offers(now);
    }

    async fn update(&mut self, status: &v1::TaskStatus) {
        let now = self.clock.now();
        let state = task_state(status);
        let Some(key) = self.tasks.get(&status.task_id).cloned() else {
            if !state.is_terminal() {
                // Not ours (e.g. its job was deleted): nothing should run it.
                warn!(task.id = %status.task_id, "update for an unknown task; killing it");
                self.call(DriverCall::Kill {
                    task_id: status.task_id.clone(),
                    agent_id: status.agent_id.clone(),
                    grace: None,
                });
            }
            return;
        };
        let reason =
            v1::StatusReason::try_from(status.reason).unwrap_or(v1::StatusReason::ReasonNone);
        let source =
            v1::StatusSource::try_from(status.source).unwrap_or(v1::StatusSource::SourceMaster);
        debug!(task.id = %status.task_id, state = state.as_str_name(), "update");
        if let Some(run) = self.runs.get_mut(&key) {
            let grace = run.spec.task_kill_grace_period_seconds;
            let actions = run.update(
                &status.task_id,
                state,
                reason,
                source,
                status.exit_code,
                &status.message,
                now,
            );
            let finished = run.is_finished();
            self.execute(actions, grace);
            if finished {
                self.finish_run(&key).await;
            } else {
                self.save_active_run(&key).await;
            }
            self.adjust_offers(now);
            return;
        }
        // A task of a finished run (e.g. the KILLED after a stop): record it.
        if let Some(job) = self.jobs.get_mut(&key.0) {
            if let Some(run) = job.finished.iter_mut().find(|r| r.id == key.1) {
                run.update(
                    &status.task_id,
                    state,
                    reason,
                    source,
                    status.exit_code,
                    &status.message,
                    now,
                );
                if let Err(e) = self.save_job(&key.0).await {
                    warn!(error = %e.message, "persisting job failed");
                }
            }
        }
    }

    /// Revives when slots wait for offers, suppresses when none do.
    fn adjust_offers(&mut self, now: DateTime<Utc>) {
        if !self.subscribed {
            return;
        }
        let wanted = self.runs.values().any(|r| !r.launchable(now).is_empty());
        let stale = self.last_revive.is_none_or(|t| t.elapsed() >= REVIVE_EVERY);
        if wanted && (!self.revived || stale) {
            self.revived = true;
            self.last_revive = Some(tokio::time::Instant::now());
            self.call(DriverCall::Revive);
        } else if !wanted && self.revived {
            self.revived = false;
            self.call(DriverCall::Suppress);
        }
    }

    // ------------------------------------------------------------ time

    async fn tick(&mut self) {
        let now = self.clock.now();
        // Deadlines of active runs.
        let keys: Vec<(String, String)> = self.runs.keys().cloned().collect();
        for key in keys {
            let Some(run) = self.runs.get_mut(&key) else {
                continue;
            };
            let grace = run.spec.task_kill_grace_period_seconds;
            let actions = run.tick(now);
            let finished = run.is_finished();
            self.execute(actions, grace);
            if finished {
                self.finish_run(&key).await;
            }
        }
        // Kills of finished runs' tasks that are still going.
        if self.subscribed {
            let mut kills = Vec::new();
            for job in self.jobs.values_mut() {
                for run in job.finished.iter_mut() {
                    let grace = run.spec.task_kill_grace_period_seconds;
                    kills.push((run.tick(now), grace));
                }
            }
            for (actions, grace) in kills {
                self.execute(actions, grace);
            }
        }
        self.schedules(now).await;
        self.adjust_offers(now);
    }

    async fn schedules(&mut self, now: DateTime<Utc>) {
        let mut fires: Vec<(String, ScheduleSpec, DateTime<Utc>)> = Vec::new();
        let mut changed_jobs = Vec::new();
        let mut missed = 0;
        for (job_id, job) in self.jobs.iter_mut() {
            for sched in job.schedules.iter_mut() {
                if !sched.spec.enabled {
                    continue;
                }
                let Ok(cron) = CronSpec::parse(&sched.spec.cron, &sched.spec.timezone) else {
                    continue;
                };
                let deadline = Duration::seconds(
                    i64::try_from(sched.spec.starting_deadline_seconds).unwrap_or(i64::MAX / 2_000),
                );
                let e = evaluate(&cron, sched.last_tick, now, deadline);
                if let Some(handled) = e.handled {
                    sched.last_tick = handled;
                    if !changed_jobs.contains(job_id) {
                        changed_jobs.push(job_id.clone());
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
        // The handled tick is durable before any run it causes exists.
        for job in &changed_jobs {
            if let Err(e) = self.save_job(job).await {
                warn!(error = %e.message, "persisting schedule tick failed; not firing");
                fires.retain(|(j, _, _)| j != job);
            }
        }
        for (job_id, sched, tick) in fires {
            let active: Vec<(String, String)> = self
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
                    for key in active {
                        self.stop_run(&key, "replaced by a scheduled run (REPLACE)")
                            .await;
                    }
                }
                _ => {}
            }
            let deadline = tick
                + Duration::seconds(
                    i64::try_from(sched.starting_deadline_seconds).unwrap_or(i64::MAX / 2_000),
                );
            info!(job.id = %job_id, schedule.id = %sched.id, tick = %ts(tick), "schedule fired");
            self.count("schedule.ticks.fired", 1);
            if let Err(e) = self
                .start_run(&job_id, Some((sched.id.clone(), deadline)))
                .await
            {
                warn!(error = %e.message, "starting a scheduled run failed");
            }
        }
    }

    // ------------------------------------------------------------ runs

    async fn start_run(
        &mut self,
        job_id: &str,
        schedule: Option<(String, DateTime<Utc>)>,
    ) -> Result<JobRun, ApiError> {
        let now = self.clock.now();
        let job = self
            .jobs
            .get(job_id)
            .ok_or_else(|| ApiError::no_job(job_id))?;
        let id = crate::run::new_run_id(now, &mut self.rng);
        let mut run = JobRun::new(id.clone(), job_id.to_string(), job.spec.run.clone(), now);
        if let Some((sid, deadline)) = schedule {
            run.schedule_id = Some(sid);
            run.starting_deadline = Some(deadline);
        }
        run.queued();
        self.save_run(&run).await?;
        info!(job.id = %job_id, run.id = %id, "run started");
        self.count("runs.started", 1);
        self.runs.insert((job_id.to_string(), id), run.clone());
        self.adjust_offers(now);
        Ok(run)
    }

    async fn stop_run(&mut self, key: &(String, String), why: &str) {
        let now = self.clock.now();
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        let grace = run.spec.task_kill_grace_period_seconds;
        let actions = run.stop(why, now);
        self.execute(actions, grace);
        self.finish_run(key).await;
        self.adjust_offers(now);
    }

    fn active_runs(&self, job: &str) -> Vec<&JobRun> {
        self.runs.values().filter(|r| r.job_id == job).collect()
    }

    fn job_json(&self, record: &JobRecord, embed: &Embed, now: DateTime<Utc>) -> Value {
        let mut v = serde_json::to_value(&record.spec).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            if embed.active_runs {
                let runs: Vec<Value> = self
                    .active_runs(&record.spec.id)
                    .into_iter()
                    .map(run_json)
                    .collect();
                map.insert("activeRuns".into(), Value::Array(runs));
            }
            if embed.schedules {
                let s: Vec<Value> = record
                    .schedules
                    .iter()
                    .map(|s| schedule_json(s, now))
                    .collect();
                map.insert("schedules".into(), Value::Array(s));
            }
            if embed.history {
                map.insert("history".into(), history_json(record, true));
            }
            if embed.history_summary {
                map.insert("historySummary".into(), history_json(record, false));
            }
        }
        v
    }

    // ------------------------------------------------------------ HTTP requests

    async fn request(&mut self, request: Request) -> Reply {
        let now = self.clock.now();
        match request {
            Request::ListJobs(embed) => {
                let jobs: Vec<Value> = self
                    .jobs
                    .values()
                    .map(|j| self.job_json(j, &embed, now))
                    .collect();
                Ok((200, Value::Array(jobs)))
            }
            Request::GetJob(id, embed) => {
                let job = self.jobs.get(&id).ok_or_else(|| ApiError::no_job(&id))?;
                Ok((200, self.job_json(job, &embed, now)))
            }
            Request::CreateJob(mut spec) => {
                if self.jobs.contains_key(&spec.id) {
                    return Err(ApiError::new(409, "Job with this id already exists"));
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
                if let Err(e) = self.save_job(&id).await {
                    self.jobs.remove(&id);
                    return Err(e);
                }
                info!(job.id = %id, "job created");
                let job = self.jobs.get(&id).ok_or_else(|| ApiError::no_job(&id))?;
                Ok((201, self.job_json(job, &Embed::default(), now)))
            }
            Request::UpdateJob(id, mut spec) => {
                if spec.id != id {
                    return Err(ApiError::invalid("/id", "must match the job id in the URL"));
                }
                let Some(job) = self.jobs.get_mut(&id) else {
                    return Err(ApiError::no_job(&id));
                };
                spec.schedules.clear(); // PUT keeps the existing schedules (Metronome)
                let old = std::mem::replace(&mut job.spec, spec);
                if let Err(e) = self.save_job(&id).await {
                    if let Some(job) = self.jobs.get_mut(&id) {
                        job.spec = old;
                    }
                    return Err(e);
                }
                let job = self.jobs.get(&id).ok_or_else(|| ApiError::no_job(&id))?;
                Ok((200, self.job_json(job, &Embed::default(), now)))
            }
            Request::DeleteJob { id, stop_runs } => {
                if !self.jobs.contains_key(&id) {
                    return Err(ApiError::no_job(&id));
                }
                let active: Vec<(String, String)> = self
                    .runs
                    .keys()
                    .filter(|(j, _)| *j == id)
                    .cloned()
                    .collect();
                if !active.is_empty() && !stop_runs {
                    return Err(ApiError::new(
                        409,
                        "There are active job runs. Override with stopCurrentJobRuns=true",
                    ));
                }
                for key in &active {
                    self.stop_run(key, "job deleted").await;
                }
                let body = self
                    .jobs
                    .get(&id)
                    .map(|j| self.job_json(j, &Embed::default(), now))
                    .unwrap_or(Value::Null);
                self.store
                    .delete(&job_key(&id))
                    .await
                    .map_err(|e| ApiError::internal(format!("store: {e}")))?;
                if let Some(job) = self.jobs.remove(&id) {
                    for t in job.finished.iter().flat_map(|r| r.tasks.iter()) {
                        if !t.is_terminal() {
                            self.call(DriverCall::Kill {
                                task_id: t.id.clone(),
                                agent_id: t.agent_id.clone(),
                                grace: None,
                            });
                        }
                        self.tasks.remove(&t.id);
                    }
                }
                info!(job.id = %id, "job deleted");
                Ok((200, body))
            }
            Request::ListSchedules(job) => {
                let j = self.jobs.get(&job).ok_or_else(|| ApiError::no_job(&job))?;
                Ok((
                    200,
                    Value::Array(j.schedules.iter().map(|s| schedule_json(s, now)).collect()),
                ))
            }
            Request::GetSchedule(job, sid) => {
                let j = self.jobs.get(&job).ok_or_else(|| ApiError::no_job(&job))?;
                let s = j
                    .schedules
                    .iter()
                    .find(|s| s.spec.id == sid)
                    .ok_or_else(|| ApiError::no_schedule(&sid))?;
                Ok((200, schedule_json(s, now)))
            }
            Request::CreateSchedule(job, spec) => {
                let j = self
                    .jobs
                    .get_mut(&job)
                    .ok_or_else(|| ApiError::no_job(&job))?;
                if j.schedules.iter().any(|s| s.spec.id == spec.id) {
                    return Err(ApiError::new(
                        409,
                        format!("Schedule with id '{}' already exists", spec.id),
                    ));
                }
                j.schedules.push(ScheduleRecord {
                    spec: spec.clone(),
                    last_tick: now,
                });
                if let Err(e) = self.save_job(&job).await {
                    if let Some(j) = self.jobs.get_mut(&job) {
                        j.schedules.retain(|s| s.spec.id != spec.id);
                    }
                    return Err(e);
                }
                info!(job.id = %job, schedule.id = %spec.id, cron = %spec.cron, "schedule created");
                Ok((
                    201,
                    schedule_json(
                        &ScheduleRecord {
                            spec,
                            last_tick: now,
                        },
                        now,
                    ),
                ))
            }
            Request::UpdateSchedule(job, sid, spec) => {
                if spec.id != sid {
                    return Err(ApiError::invalid(
                        "/id",
                        "must match the schedule id in the URL",
                    ));
                }
                let j = self
                    .jobs
                    .get_mut(&job)
                    .ok_or_else(|| ApiError::no_job(&job))?;
                let s = j
                    .schedules
                    .iter_mut()
                    .find(|s| s.spec.id == sid)
                    .ok_or_else(|| ApiError::no_schedule(&sid))?;
                let old = std::mem::replace(
                    s,
                    ScheduleRecord {
                        spec: spec.clone(),
                        last_tick: now,
                    },
                );
                if let Err(e) = self.save_job(&job).await {
                    if let Some(s) = self
                        .jobs
                        .get_mut(&job)
                        .and_then(|j| j.schedules.iter_mut().find(|s| s.spec.id == sid))
                    {
                        *s = old;
                    }
                    return Err(e);
                }
                Ok((
                    200,
                    schedule_json(
                        &ScheduleRecord {
                            spec,
                            last_tick: now,
                        },
                        now,
                    ),
                ))
            }
            Request::DeleteSchedule(job, sid) => {
                let j = self
                    .jobs
                    .get_mut(&job)
                    .ok_or_else(|| ApiError::no_job(&job))?;
                let pos = j
                    .schedules
                    .iter()
                    .position(|s| s.spec.id == sid)
                    .ok_or_else(|| ApiError::no_schedule(&sid))?;
                let removed = j.schedules.remove(pos);
                if let Err(e) = self.save_job(&job).await {
                    if let Some(j) = self.jobs.get_mut(&job) {
                        j.schedules.insert(pos, removed);
                    }
                    return Err(e);
                }
                Ok((200, json!({})))
            }
            Request::ListRuns {
                job,
                include_finished,
            } => {
                let j = self.jobs.get(&job).ok_or_else(|| ApiError::no_job(&job))?;
                let mut runs: Vec<Value> =
                    self.active_runs(&job).into_iter().map(run_json).collect();
                if include_finished {
                    runs.extend(j.finished.iter().rev().map(run_json));
                }
                Ok((200, Value::Array(runs)))
            }
            Request::GetRun(job, run) => {
                let j = self.jobs.get(&job).ok_or_else(|| ApiError::no_job(&job))?;
                let found = self
                    .runs
                    .get(&(job.clone(), run.clone()))
                    .or_else(|| j.finished.iter().find(|r| r.id == run))
                    .ok_or_else(|| ApiError::no_run(&job, &run))?;
                Ok((200, run_json(found)))
            }
            Request::StartRun(job) => {
                let j = self.jobs.get(&job).ok_or_else(|| ApiError::no_job(&job))?;
                let forbid = j
                    .schedules
                    .iter()
                    .any(|s| s.spec.concurrency_policy == ConcurrencyPolicy::Forbid);
                let active: Vec<Value> = self.active_runs(&job).into_iter().map(run_json).collect();
                if forbid && !active.is_empty() {
                    return Err(ApiError::new(
                        409,
                        format!("Job '{job}' forbids concurrent runs and has an active run"),
                    )
                    .with("activeRuns", Value::Array(active)));
                }
                let run = self.start_run(&job, None).await?;
                Ok((201, run_json(&run)))
            }
            Request::StopRun(job, run) => {
                let j = self.jobs.get(&job).ok_or_else(|| ApiError::no_job(&job))?;
                let key = (job.clone(), run.clone());
                if !self.runs.contains_key(&key) {
                    if j.finished.iter().any(|r| r.id == run) {
                        return Err(ApiError::new(
                            409,
                            format!("Job run '{run}' of job '{job}' is already finished"),
                        ));
                    }
                    return Err(ApiError::no_run(&job, &run));
                }
                self.stop_run(&key, "stopped by request").await;
                let body = self
                    .jobs
                    .get(&job)
                    .and_then(|j| j.finished.iter().find(|r| r.id == run))
                    .map(run_json)
                    .unwrap_or(Value::Null);
                Ok((200, body))
            }
            Request::Queue => {
                let mut by_job: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
                for run in self
                    .runs
                    .values()
                    .filter(|r| r.status == RunStatus::Starting || !r.launchable(now).is_empty())
                {
                    by_job
                        .entry(&run.job_id)
                        .or_default()
                        .push(json!({"runId": run.id}));
                }
                let out: Vec<Value> = by_job
                    .into_iter()
                    .map(|(j, runs)| json!({"jobId": j, "runs": runs}))
                    .collect();
                Ok((200, Value::Array(out)))
            }
            Request::Metrics => {
                let counters: serde_json::Map<String, Value> = self
                    .counters
                    .iter()
                    .map(|(k, v)| (format!("batch.{k}"), json!({ "count": v })))
                    .collect();
                Ok((
                    200,
                    json!({
                        "counters": counters,
                        "gauges": {
                            "batch.jobs": {"value": self.jobs.len()},
                            "batch.runs.active": {"value": self.runs.len()},
                        },
                    }),
                ))
            }
            Request::Info => Ok((
                200,
                json!({
                    "name": "mezzo-batch",
                    "version": env!("CARGO_PKG_VERSION"),
                    "frameworkId": self.framework_id,
                    "subscribed": self.subscribed,
                }),
            )),
        }
    }
}

/// The `TaskInfo` for a run's task.
fn task_info(
    run: &JobRun,
    task_id: &str,
    agent_id: &str,
    resources: &mezzo_sdk::Resources,
) -> v1::TaskInfo {
    let spec = &run.spec;
    let mut info = match (&spec.cmd, &spec.args) {
        (Some(cmd), _) => {
            mezzo_sdk::matching::task_info(task_id, &run.job_id, agent_id, cmd, resources)
        }
        (None, args) => {
            let args = args.clone().unwrap_or_default();
            let mut t =
                mezzo_sdk::matching::task_info(task_id, &run.job_id, agent_id, "", resources);
            if let Some(cmd) = t.command.as_mut() {
                cmd.shell = false;
                cmd.value = args.first().cloned().unwrap_or_default();
                cmd.arguments = args;
            }
            t
        }
    };
    if let Some(cmd) = info.command.as_mut() {
        cmd.environment = spec
            .env
            .iter()
            .map(|(name, value)| v1::EnvironmentVariable {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        cmd.user = spec.user.clone().unwrap_or_default();
    }
    info.kill_grace_period_seconds = spec.task_kill_grace_period_seconds;
    info.labels = vec![
        v1::Label {
            key: "jobId".into(),
            value: run.job_id.clone(),
        },
        v1::Label {
            key: "runId".into(),
            value: run.id.clone(),
        },
    ];
    info
}

/// A run in Metronome's JSON shape (plus `exitCode`/`message` per task and `reason`).
pub(crate) fn run_json(run: &JobRun) -> Value {
    let tasks: Vec<Value> = run
        .tasks
        .iter()
        .map(|t| {
            let mut v = json!({
                "id": t.id,
                "status": t.status,
                "startedAt": ts(t.started_at),
                "completedAt": ts_opt(t.completed_at),
            });
            if let Value::Object(m) = &mut v {
                if let Some(code) = t.exit_code {
                    m.insert("exitCode".into(), json!(code));
                }
                if let Some(msg) = &t.message {
                    m.insert("message".into(), json!(msg));
                }
            }
            v
        })
        .collect();
    let mut v = json!({
        "id": run.id,
        "jobId": run.job_id,
        "status": run.status,
        "createdAt": ts(run.created_at),
        "completedAt": ts_opt(run.completed_at),
        "tasks": tasks,
    });
    if let Value::Object(m) = &mut v {
        if let Some(reason) = &run.reason {
            m.insert("reason".into(), json!(reason));
        }
        if let Some(s) = &run.schedule_id {
            m.insert("scheduleId".into(), json!(s));
        }
    }
    v
}

fn schedule_json(s: &ScheduleRecord, now: DateTime<Utc>) -> Value {
    let mut v = serde_json::to_value(&s.spec).unwrap_or(Value::Null);
    let next = if s.spec.enabled {
        CronSpec::parse(&s.spec.cron, &s.spec.timezone)
            .ok()
            .and_then(|c| c.next_after(if s.last_tick > now { s.last_tick } else { now }))
    } else {
        None
    };
    if let Value::Object(m) = &mut v {
        m.insert("nextRunAt".into(), ts_opt(next));
    }
    v
}

fn history_json(job: &JobRecord, full: bool) -> Value {
    let h = &job.history;
    let mut v = json!({
        "successCount": h.success_count,
        "failureCount": h.failure_count,
        "lastSuccessAt": ts_opt(h.last_success_at),
        "lastFailureAt": ts_opt(h.last_failure_at),
    });
    if full {
        let summary = |r: &JobRun| {
            json!({
                "id": r.id,
                "createdAt": ts(r.created_at),
                "finishedAt": ts_opt(r.completed_at),
                "tasks": r.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            })
        };
        if let Value::Object(m) = &mut v {
            m.insert(
                "successfulFinishedRuns".into(),
                job.finished
                    .iter()
                    .rev()
                    .filter(|r| r.status == RunStatus::Success)
                    .map(summary)
                    .collect(),
            );
            m.insert(
                "failedFinishedRuns".into(),
                job.finished
                    .iter()
                    .rev()
                    .filter(|r| r.status != RunStatus::Success)
                    .map(summary)
                    .collect(),
            );
        }
    }
    v
}
