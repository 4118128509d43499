//! `launch`: a complete, small Mezzo framework built on `mezzo-sdk`.
//!
//! It runs `--tasks` copies of a shell command (`--cmd`) on the cluster, each with
//! `--cpus` and `--mem`, prints one line per task as it ends, and a summary:
//!
//! ```text
//! $ cargo run -p mezzo-sdk --example launch -- --master 127.0.0.1:5050 --tasks 3 --cmd "echo hello"
//! task launch-0000 TASK_FINISHED
//! task launch-0002 TASK_FINISHED
//! task launch-0001 TASK_FINISHED
//! launched 3 tasks: 3 TASK_FINISHED
//! ```
//!
//! Exit status: 0 when every task finished (TASK_FINISHED), 1 otherwise (a task failed,
//! was lost, or the master refused the framework), 2 on `--timeout-secs`, 130 on Ctrl-C.
//! In every case the framework is torn down before exiting, so no task outlives it.
//!
//! What it shows, in order of appearance below:
//! * the [`Scheduler`] callbacks a framework implements, and the [`Driver`] calls that
//!   answer them (launch, decline, suppress, reconcile, teardown);
//! * packing several tasks into one offer with [`OfferSpace::try_fit`];
//! * tracking task states idempotently (updates are delivered at least once);
//! * using a `Driver` handle from outside the callbacks (timeout and Ctrl-C).
//!
//! Logs go to stderr (`RUST_LOG=debug` for the protocol); stdout has only the task
//! lines and the summary.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mezzo_sdk::matching::{task_info, OfferSpace, TaskResources};
use mezzo_sdk::{async_trait, task_state, v1, Driver, DriverConfig, Scheduler, SchedulerDriver};
use tracing::{info, warn};

/// Launch N copies of a shell command on a Mezzo cluster and wait for them to end.
#[derive(Parser, Debug)]
#[command(name = "launch", version)]
struct Args {
    /// Master address: host:port, http://host:port, or a comma-separated list of masters.
    #[arg(long, env = "MEZZO_MASTER", default_value = "127.0.0.1:5050")]
    master: String,
    /// How many tasks to run.
    #[arg(long, default_value_t = 1)]
    tasks: usize,
    /// Shell command each task runs (`sh -c`).
    #[arg(long, default_value = "echo hello")]
    cmd: String,
    /// CPUs per task.
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory per task, in MB.
    #[arg(long, default_value_t = 32.0)]
    mem: f64,
    /// Disk per task, in MB.
    #[arg(long, default_value_t = 0.0)]
    disk: f64,
    /// Framework name; also the prefix of the task ids.
    #[arg(long, default_value = "launch")]
    name: String,
    /// Role to subscribe with (`*`: the default role).
    #[arg(long, default_value = "*")]
    role: String,
    /// User the tasks run as (default: the master's / agent's choice).
    #[arg(long)]
    user: Option<String>,
    /// Seconds the master keeps the framework's tasks while it is disconnected.
    #[arg(long, default_value_t = 60.0)]
    failover_timeout: f64,
    /// Give up (exit 2) after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

/// The framework's state. The driver owns it while running and hands it back at the end.
struct Launcher {
    /// Resources each task asks for.
    need: TaskResources,
    cmd: String,
    name: String,
    total: usize,
    /// Task ids not launched yet, in launch order.
    pending: VecDeque<String>,
    /// Tasks launched and not yet ended.
    active: HashSet<String>,
    /// How each ended task ended (its first terminal state).
    ended: HashMap<String, v1::TaskState>,
    launched: usize,
    /// Offers are suppressed once nothing is pending, so the master stops sending them.
    suppressed: bool,
    subscriptions: usize,
}

impl Launcher {
    fn new(args: &Args) -> Self {
        Launcher {
            need: TaskResources {
                cpus: args.cpus,
                mem: args.mem,
                disk: args.disk,
                ports: 0,
            },
            cmd: args.cmd.clone(),
            name: args.name.clone(),
            total: args.tasks,
            pending: (0..args.tasks)
                .map(|i| format!("{}-{i:04}", args.name))
                .collect(),
            active: HashSet::new(),
            ended: HashMap::new(),
            launched: 0,
            suppressed: false,
            subscriptions: 0,
        }
    }

    fn all_ended(&self) -> bool {
        self.ended.len() == self.total
    }

    fn all_finished(&self) -> bool {
        self.all_ended()
            && self
                .ended
                .values()
                .all(|s| *s == v1::TaskState::TaskFinished)
    }

    /// `launched 50 tasks: 48 TASK_FINISHED, 2 TASK_FAILED` (plus how many never ended).
    fn summary(&self) -> String {
        let mut counts: BTreeMap<i32, usize> = BTreeMap::new();
        for state in self.ended.values() {
            *counts.entry(*state as i32).or_default() += 1;
        }
        let mut parts: Vec<String> = counts
            .into_iter()
            .map(|(state, n)| {
                let name = v1::TaskState::try_from(state)
                    .map(|s| s.as_str_name())
                    .unwrap_or("TASK_UNKNOWN");
                format!("{n} {name}")
            })
            .collect();
        if parts.is_empty() {
            parts.push("0 TASK_FINISHED".into());
        }
        let unfinished = self.total - self.ended.len();
        if unfinished > 0 {
            parts.push(format!("{unfinished} unfinished"));
        }
        format!("launched {} tasks: {}", self.launched, parts.join(", "))
    }
}

#[async_trait]
impl Scheduler for Launcher {
    async fn subscribed(&mut self, driver: &Driver, framework_id: &str, master: &v1::MasterInfo) {
        self.subscriptions += 1;
        info!(framework.id = framework_id, master = %master.hostname, "subscribed");
        if self.subscriptions > 1 {
            // Re-subscribed after a disconnection or master failover: updates may have
            // been missed, so ask for the state of every task (implicit reconciliation).
            // Answers arrive as ordinary updates.
            if let Err(e) = driver.reconcile(Vec::new()).await {
                warn!(error = %e, "reconciliation failed");
            }
            // A new master does not know we had suppressed offers.
            if !self.pending.is_empty() {
                self.suppressed = false;
            }
        }
    }

    async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) {
        for offer in offers {
            // Pack as many pending tasks as fit into this offer.
            let mut space = OfferSpace::new(&offer);
            let mut tasks = Vec::new();
            while !self.pending.is_empty() {
                let Some(resources) = space.try_fit(&self.need) else {
                    break;
                };
                let Some(id) = self.pending.pop_front() else {
                    break;
                };
                tasks.push(task_info(
                    &id,
                    &self.name,
                    space.agent_id(),
                    &self.cmd,
                    &resources,
                ));
            }
            if tasks.is_empty() {
                // Nothing to run here: hand the offer back, and do not offer it again
                // for a second (Mesos' default filter is 5 s).
                if let Err(e) = driver.decline(vec![offer.id], Some(1.0)).await {
                    warn!(error = %e, "decline failed");
                }
                continue;
            }
            let ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
            info!(offer.id = %offer.id, agent = %offer.hostname, tasks = ids.len(), "launching");
            // What the tasks do not use is declined with the same 1 s filter.
            let filters = v1::Filters {
                refuse_seconds: Some(1.0),
            };
            match driver.launch(vec![offer.id], tasks, Some(filters)).await {
                Ok(()) => {
                    self.launched += ids.len();
                    self.active.extend(ids);
                }
                Err(e) => {
                    // The offer was no longer valid (rescinded, or the master failed
                    // over): the tasks did not start; try them again on a later offer.
                    warn!(error = %e, "launch failed; requeueing its tasks");
                    for id in ids.into_iter().rev() {
                        self.pending.push_front(id);
                    }
                }
            }
        }
        if self.pending.is_empty() && !self.suppressed {
            // Everything is launched: stop the master from sending offers at all.
            match driver.suppress(Vec::new()).await {
                Ok(()) => self.suppressed = true,
                Err(e) => warn!(error = %e, "suppress failed"),
            }
        }
    }

    async fn update(&mut self, driver: &Driver, status: &v1::TaskStatus) {
        let state = task_state(status);
        info!(task.id = %status.task_id, state = state.as_str_name(), "update");
        // Updates come at least once (and again on reconciliation): only the first
        // terminal state of a launched task counts.
        if !state.is_terminal() || !self.active.remove(&status.task_id) {
            return;
        }
        self.ended.insert(status.task_id.clone(), state);
        if status.message.is_empty() {
            println!("task {} {}", status.task_id, state.as_str_name());
        } else {
            println!(
                "task {} {}: {}",
                status.task_id,
                state.as_str_name(),
                status.message
            );
        }
        if self.all_ended() {
            // Done. Tearing down removes the framework (and anything it still has on
            // the cluster) from the master and makes `run` return.
            if let Err(e) = driver.teardown().await {
                warn!(error = %e, "teardown failed; stopping anyway");
                driver.stop();
            }
        }
    }

    async fn error(&mut self, _driver: &Driver, message: &str) {
        warn!(%message, "error from the master");
    }

    async fn disconnected(&mut self, _driver: &Driver) {
        // The driver re-subscribes by itself; outstanding offers are void meanwhile.
        warn!("disconnected from the master; re-subscribing");
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

    let framework = v1::FrameworkInfo {
        name: args.name.clone(),
        user: args.user.clone().unwrap_or_default(),
        roles: vec![args.role.clone()],
        failover_timeout: args.failover_timeout,
        ..Default::default()
    };
    let driver = match SchedulerDriver::new(DriverConfig::new(args.master.clone(), framework)) {
        Ok(driver) => driver,
        Err(e) => {
            eprintln!("launch: {e}");
            return ExitCode::from(1);
        }
    };
    // A handle for use outside the callbacks: on timeout or Ctrl-C we tear down.
    let handle = driver.driver();
    let mut run = std::pin::pin!(driver.run(Launcher::new(&args)));

    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout_secs));
    let (result, code_if_cut_short) = tokio::select! {
        result = &mut run => (result, None),
        () = deadline => (finish(&handle, run).await, Some(2)),
        _ = tokio::signal::ctrl_c() => (finish(&handle, run).await, Some(130)),
    };

    match result {
        Ok(launcher) => {
            println!("{}", launcher.summary());
            match code_if_cut_short {
                Some(code) => {
                    eprintln!("launch: gave up before every task ended");
                    ExitCode::from(code)
                }
                None if launcher.all_finished() => ExitCode::SUCCESS,
                None => ExitCode::from(1),
            }
        }
        Err(e) => {
            eprintln!("launch: {e}");
            ExitCode::from(code_if_cut_short.unwrap_or(1))
        }
    }
}

/// Cuts a run short: tears the framework down (so its tasks do not outlive us; this
/// also makes `run` return), or just stops the driver when that is impossible (never
/// subscribed, master gone), then waits for `run` to hand the scheduler back.
async fn finish<F: std::future::Future>(handle: &Driver, run: std::pin::Pin<&mut F>) -> F::Output {
    if let Err(e) = handle.teardown().await {
        warn!(error = %e, "teardown failed");
        handle.stop();
    }
    run.await
}
