//! `mezzo-batch`: a Metronome-style batch framework on the Mezzo SDK.
//!
//! Jobs (`/v1/jobs`), runs (`/v1/jobs/{id}/runs`), cron schedules
//! (`/v1/jobs/{id}/schedules`) and history, in Metronome's JSON shapes so Metronome
//! job files work unchanged; see `docs/batch-api.md`. Beyond Metronome: finished runs
//! listed with `?include=finished`, FORBID applied to manual triggers, the REPLACE
//! concurrency policy, and `run.parallelism` tasks per run.
//!
//! Layout, pure cores first (dependencies point down this list, never up):
//! * `api`: the axum handlers; the only module that knows HTTP status codes and
//!   Metronome's JSON bodies.
//! * `actor`: the thin shell around the core: mailbox, timer, store writes, driver
//!   calls (as [`mezzo_sdk::Effect`]s), in that order.
//! * [`core`]: the framework's state and every decision, with no I/O: inputs and the
//!   current time in, store writes and effects out, a domain [`CoreError`].
//! * [`run`]: the run state machine (slots, retries with backoff, deadlines).
//! * [`model`]: job and schedule definitions, defaults, validation.
//! * [`cron`]: cron + time zone evaluation (which tick fires, `nextRunAt`).
//! * [`constraints`]: placement constraints against offers.
//! * [`clock`] and [`ids`]: time and run ids behind traits, so tests control them.
//! * Durable state goes through `mezzo_sdk::store` ([`Store`]: a local [`FileStore`] or,
//!   with ZooKeeper, a [`ZooKeeperStore`]).
//!
//! Invariants: only the actor's core mutates state, and a change is durable before
//! anyone hears of it (an HTTP answer, an acknowledged update, a launch); a schedule
//! tick is recorded before its run is created (nothing runs twice for one tick, even
//! across a restart); a task is recorded before it is launched, and a restarted
//! framework re-subscribes with its persisted framework id and explicitly reconciles
//! every task it believes live.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

mod actor;
mod api;
pub mod clock;
pub mod constraints;
pub mod core;
pub mod cron;
pub mod ids;
pub mod model;
pub mod run;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mezzo_runtime::Shutdown;
use mezzo_sdk::{v1, Driver, DriverConfig, SchedulerDriver};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

pub use self::core::{Core, CoreError, KEPT_FINISHED_RUNS};
pub use api::{ApiError, Embed};
/// Re-exported: [`Clock`] and [`OffsetClock`] speak `chrono` types.
pub use chrono;
pub use clock::{Clock, OffsetClock, SystemClock};
pub use ids::{RandomRunIds, RunIds, SequentialRunIds};
pub use mezzo_sdk::store::{FileStore, MemoryStore, Store, StoreError, ZkUrl, ZooKeeperStore};

use actor::{Actor, Glue};

/// Everything that can stop the batch framework from starting.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The durable store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A stored record could not be read back.
    #[error("corrupt stored record '{key}': {reason}")]
    Corrupt {
        /// Its key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The SDK refused the configuration (e.g. a bad master address).
    #[error(transparent)]
    Sdk(#[from] mezzo_sdk::SdkError),
}

/// How to run the batch framework.
#[non_exhaustive]
pub struct BatchConfig {
    /// Master address(es): `host:port`, or comma-separated for several masters.
    pub master: String,
    /// Where the `/v1` HTTP API listens (port 0: any free port).
    pub http: SocketAddr,
    /// Directory of the durable local store (used unless [`BatchConfig::store`] is set).
    pub state_dir: PathBuf,
    /// Framework name registered with the master. Default `metronome`.
    pub framework_name: String,
    /// Role to subscribe with. Default `*`.
    pub role: String,
    /// How long the master keeps the framework's tasks while it is away. Default 7 days.
    pub failover_timeout: Duration,
    /// User tasks run as when a job gives none (empty: the agent's choice).
    pub user: String,
    /// How often schedules and deadlines are checked. Default 1 s (cron has minute
    /// granularity; tests may lower it).
    pub tick_interval: Duration,
    /// The time source for cron ticks, deadlines and timestamps. Default the system
    /// clock; tests pass an [`OffsetClock`] to jump to the next tick.
    pub clock: Arc<dyn Clock>,
    /// A store to use instead of a [`FileStore`] in `state_dir` (e.g. ZooKeeper).
    pub store: Option<Arc<dyn Store>>,
    /// ZooKeeper (`zk://host:port,.../path`): unless [`BatchConfig::store`] is set, the
    /// state lives in a [`ZooKeeperStore`] under `<path>/frameworks/<name>/state`.
    pub zk: Option<ZkUrl>,
    /// ZooKeeper session timeout. Default 10 s.
    pub zk_session_timeout: Duration,
    /// Tripping it stops the framework gracefully (see [`RunningBatch`]); pass a child
    /// of the process's token so SIGTERM/SIGINT stop it. Default: a fresh token.
    pub shutdown: Shutdown,
}

impl fmt::Debug for BatchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchConfig")
            .field("master", &self.master)
            .field("http", &self.http)
            .field("state_dir", &self.state_dir)
            .field("framework_name", &self.framework_name)
            .field("role", &self.role)
            .field("failover_timeout", &self.failover_timeout)
            .field("tick_interval", &self.tick_interval)
            .field("custom_store", &self.store.is_some())
            .field("zk", &self.zk)
            .finish()
    }
}

impl BatchConfig {
    /// A configuration with the defaults listed on each field.
    pub fn new(master: impl Into<String>, http: SocketAddr, state_dir: impl Into<PathBuf>) -> Self {
        BatchConfig {
            master: master.into(),
            http,
            state_dir: state_dir.into(),
            framework_name: "metronome".into(),
            role: "*".into(),
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            user: String::new(),
            tick_interval: Duration::from_secs(1),
            clock: Arc::new(SystemClock),
            store: None,
            zk: None,
            zk_session_timeout: Duration::from_secs(10),
            shutdown: Shutdown::new(),
        }
    }
}

/// A running batch framework: its HTTP API, actor and scheduler driver.
///
/// [`RunningBatch::shutdown`] (also done on drop, or by tripping
/// [`BatchConfig::shutdown`]) stops it gracefully without tearing the framework down:
/// the API stops accepting and finishes the requests in flight, the actor answers
/// what is queued and makes it durable, and the driver disconnects. The master keeps
/// the framework's tasks for `failover_timeout`, and a new instance on the same store
/// takes over with the same framework id.
pub struct RunningBatch {
    /// Where the HTTP API listens.
    pub addr: SocketAddr,
    shutdown: Shutdown,
    driver: Driver,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for RunningBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningBatch")
            .field("addr", &self.addr)
            .finish()
    }
}

impl RunningBatch {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Asks every part to stop (the driver disconnects; the framework stays registered).
    pub fn shutdown(&self) {
        self.shutdown.trigger();
        self.driver.stop();
    }

    /// Waits until every part has stopped (after [`RunningBatch::shutdown`], or on its own
    /// if the master refused the framework for good).
    pub async fn wait(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            if let Err(e) = task.await {
                warn!(error = %e, "batch task ended abnormally");
            }
        }
    }

    /// [`RunningBatch::shutdown`] then [`RunningBatch::wait`].
    pub async fn stop(self) {
        self.shutdown();
        self.wait().await;
    }
}

impl Drop for RunningBatch {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn open_store(config: &BatchConfig) -> Result<Arc<dyn Store>, BatchError> {
    Ok(match (&config.store, &config.zk) {
        (Some(s), _) => s.clone(),
        (None, Some(zk)) => Arc::new(
            ZooKeeperStore::for_framework(zk, &config.framework_name, config.zk_session_timeout)
                .await?,
        ),
        (None, None) => Arc::new(FileStore::open(&config.state_dir)?),
    })
}

fn framework_info(config: &BatchConfig, id: Option<&str>) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        name: config.framework_name.clone(),
        user: config.user.clone(),
        id: id.unwrap_or_default().to_string(),
        roles: vec![config.role.clone()],
        failover_timeout: config.failover_timeout.as_secs_f64(),
        checkpoint: true,
        ..Default::default()
    }
}

/// Starts the batch framework: loads the store, binds the HTTP API, and subscribes
/// to the master (with the persisted framework id, if any).
pub async fn start(config: BatchConfig) -> Result<RunningBatch, BatchError> {
    let store = open_store(&config).await?;
    let mut core = Core::new(Box::new(RandomRunIds::from_os()));
    core.restore(actor::load(store.as_ref()).await?);
    info!(
        jobs = core.jobs().count(),
        active_runs = core.active_run_count(),
        "state loaded"
    );
    let framework = framework_info(&config, core.framework_id());
    let bind = |source| BatchError::Bind {
        addr: config.http,
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let mut driver_config = DriverConfig::new(config.master.clone(), framework);
    driver_config.max_backoff = Duration::from_secs(2);
    let scheduler_driver = SchedulerDriver::new(driver_config)?;
    let driver = scheduler_driver.driver();

    let shutdown = config.shutdown.clone();
    // The actor outlives the HTTP server, so requests in flight are still answered.
    let actor_stop = Shutdown::new();
    let (tx, rx) = mpsc::channel(1024);
    let (effects_tx, effects_rx) = mpsc::unbounded_channel();
    let span = tracing::info_span!("batch", http = %addr);
    let glue = Glue { tx };
    let app = api::router(glue.handle());
    let actor = Actor::new(
        core,
        store,
        config.clock.clone(),
        effects_tx,
        shutdown.clone(),
    );
    let mut tasks = vec![
        tokio::spawn(
            actor
                .run(rx, config.tick_interval, actor_stop.clone())
                .instrument(span.clone()),
        ),
        tokio::spawn(
            actor::perform_effects(driver.clone(), effects_rx, glue.tx.downgrade())
                .instrument(span.clone()),
        ),
    ];
    tasks.push(tokio::spawn(
        async move {
            match scheduler_driver.run(glue).await {
                Ok(_) => info!("scheduler driver stopped"),
                Err(e) => warn!(error = %e, "scheduler driver ended"),
            }
        }
        .instrument(span.clone()),
    ));
    let stopping = driver.clone();
    tasks.push(tokio::spawn(
        async move {
            let served = mezzo_runtime::serve::serve(listener, app, shutdown.clone());
            let stop_driver = async {
                shutdown.wait().await;
                stopping.stop();
            };
            let (served, ()) = tokio::join!(served, stop_driver);
            if let Err(e) = served {
                warn!(error = %e, "http server failed");
            }
            actor_stop.trigger();
        }
        .instrument(span),
    ));
    info!(%addr, master = %config.master, "batch framework started");
    Ok(RunningBatch {
        addr,
        shutdown: config.shutdown,
        driver,
        tasks,
    })
}
