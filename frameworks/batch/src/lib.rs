//! `mezzo-batch`: a Metronome-style batch framework on the Mezzo SDK.
//!
//! Jobs (`/v1/jobs`), runs (`/v1/jobs/{id}/runs`), cron schedules
//! (`/v1/jobs/{id}/schedules`) and history, in Metronome's JSON shapes so Metronome
//! job files work unchanged; see `docs/batch-api.md`. Beyond Metronome: finished runs
//! listed with `?include=finished`, FORBID applied to manual triggers, the REPLACE
//! concurrency policy, and `run.parallelism` tasks per run.
//!
//! Layout, pure cores first:
//! * [`model`]: job and schedule definitions, defaults, validation.
//! * [`cron`]: cron + time zone evaluation (which tick fires, `nextRunAt`).
//! * [`run`]: the run state machine (slots, retries with backoff, deadlines).
//! * [`constraints`]: placement constraints against offers.
//! * Durable state goes through `mezzo_sdk::store` ([`Store`]: a local [`FileStore`] or,
//!   with ZooKeeper, a [`ZooKeeperStore`]).
//! * `actor`: the one owner of the framework's state; `api`: the axum handlers.
//!
//! Invariants: only the actor mutates state, and it persists every change before
//! answering; a schedule tick is recorded before its run is created (nothing runs
//! twice for one tick, even across a restart); a task is recorded before it is
//! launched, and a restarted framework re-subscribes with its persisted framework id
//! and explicitly reconciles every task it believes live.

#![warn(missing_docs)]

mod actor;
mod api;
pub mod clock;
pub mod constraints;
pub mod cron;
pub mod model;
pub mod run;

use axum::serve::ListenerExt as _;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mezzo_sdk::{async_trait, v1, Driver, DriverConfig, Scheduler, SchedulerDriver};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

pub use api::{ApiError, Embed};
/// Re-exported: [`Clock`] and [`OffsetClock`] speak `chrono` types.
pub use chrono;
pub use clock::{Clock, OffsetClock, SystemClock};
pub use mezzo_sdk::store::{FileStore, MemoryStore, Store, StoreError, ZkUrl, ZooKeeperStore};

use actor::{Actor, Command, OfferPlan};

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
        }
    }
}

/// A running batch framework: its HTTP API, actor and scheduler driver.
///
/// [`RunningBatch::shutdown`] (also done on drop) stops it without tearing the
/// framework down: the master keeps its tasks for `failover_timeout`, and a new
/// instance on the same store takes over with the same framework id.
pub struct RunningBatch {
    /// Where the HTTP API listens.
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
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
        self.shutdown.send_replace(true);
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

/// Starts the batch framework: loads the store, binds the HTTP API, and subscribes
/// to the master (with the persisted framework id, if any).
pub async fn start(config: BatchConfig) -> Result<RunningBatch, BatchError> {
    let store: Arc<dyn Store> = match (&config.store, &config.zk) {
        (Some(s), _) => s.clone(),
        (None, Some(zk)) => Arc::new(
            ZooKeeperStore::for_framework(zk, &config.framework_name, config.zk_session_timeout)
                .await?,
        ),
        (None, None) => Arc::new(FileStore::open(&config.state_dir)?),
    };
    let (calls_tx, calls_rx) = mpsc::unbounded_channel();
    let actor = Actor::load(store, config.clock.clone(), calls_tx).await?;
    let framework = v1::FrameworkInfo {
        name: config.framework_name.clone(),
        user: config.user.clone(),
        id: actor.framework_id().unwrap_or_default(),
        roles: vec![config.role.clone()],
        failover_timeout: config.failover_timeout.as_secs_f64(),
        checkpoint: true,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|source| BatchError::Bind {
            addr: config.http,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| BatchError::Bind {
        addr: config.http,
        source,
    })?;
    let mut driver_config = DriverConfig::new(config.master.clone(), framework);
    driver_config.max_backoff = Duration::from_secs(2);
    let scheduler_driver = SchedulerDriver::new(driver_config)?;
    let driver = scheduler_driver.driver();

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let span = tracing::info_span!("batch", http = %addr);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(
        actor
            .run(cmd_rx, config.tick_interval, shutdown_rx.clone())
            .instrument(span.clone()),
    ));
    tasks.push(tokio::spawn(
        actor::driver_worker(driver.clone(), calls_rx).instrument(span.clone()),
    ));
    let glue = Glue {
        actor: cmd_tx.clone(),
    };
    tasks.push(tokio::spawn(
        async move {
            match scheduler_driver.run(glue).await {
                Ok(_) => info!("scheduler driver stopped"),
                Err(e) => warn!(error = %e, "scheduler driver ended"),
            }
        }
        .instrument(span.clone()),
    ));
    let app = api::router(api::AppState { actor: cmd_tx });
    let mut rx = shutdown_rx;
    tasks.push(tokio::spawn(
        async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(
                listener.tap_io(|tcp| {
                    // Best effort: without it small exchanges (acks, unary gRPC calls)
                    // stall 40 ms on Nagle against the peer's delayed ACK.
                    let _ = tcp.set_nodelay(true);
                }),
                app,
            )
            .with_graceful_shutdown(stop)
            .await
            {
                warn!(error = %e, "http server failed");
            }
        }
        .instrument(span),
    ));
    info!(%addr, master = %config.master, "batch framework started");
    Ok(RunningBatch {
        addr,
        shutdown,
        driver,
        tasks,
    })
}

/// Feeds the SDK's callbacks into the actor and carries out its launch decisions.
struct Glue {
    actor: mpsc::Sender<Command>,
}

impl Glue {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.actor.send(make(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Resources of an accepted offer that its tasks leave unused are refused this long.
const ACCEPT_REFUSE_SECONDS: f64 = 1.0;
/// Offers with nothing to launch are refused this long (a revive clears it).
const DECLINE_REFUSE_SECONDS: f64 = 5.0;

#[async_trait]
impl Scheduler for Glue {
    async fn subscribed(&mut self, _driver: &Driver, framework_id: &str, _master: &v1::MasterInfo) {
        let id = framework_id.to_string();
        self.ask(|tx| Command::Subscribed(id, tx)).await;
    }

    async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) {
        let ids: Vec<String> = offers.iter().map(|o| o.id.clone()).collect();
        let plan = self
            .ask(|tx| Command::Offers(offers, tx))
            .await
            .unwrap_or_else(|| OfferPlan {
                launches: Vec::new(),
                declines: ids,
            });
        for (offer, tasks) in plan.launches {
            let task_ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
            let filters = v1::Filters {
                refuse_seconds: Some(ACCEPT_REFUSE_SECONDS),
            };
            if let Err(e) = driver.launch(vec![offer], tasks, Some(filters)).await {
                warn!(error = %e, "launch failed; tasks go back to waiting");
                let _ = self.actor.send(Command::LaunchFailed(task_ids)).await;
            }
        }
        if !plan.declines.is_empty() {
            if let Err(e) = driver
                .decline(plan.declines, Some(DECLINE_REFUSE_SECONDS))
                .await
            {
                warn!(error = %e, "decline failed");
            }
        }
    }

    async fn update(&mut self, _driver: &Driver, status: &v1::TaskStatus) {
        // The SDK acknowledges after this returns, i.e. after the actor persisted it.
        let status = status.clone();
        self.ask(|tx| Command::Update(status, tx)).await;
    }

    async fn error(&mut self, _driver: &Driver, message: &str) {
        warn!(%message, "error from the master");
    }

    async fn disconnected(&mut self, _driver: &Driver) {
        warn!("disconnected from the master; re-subscribing");
        let _ = self.actor.send(Command::Disconnected).await;
    }
}
