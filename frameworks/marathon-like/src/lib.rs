//! `mezzo-marathon`: a Marathon-compatible service framework built on the Mezzo SDK.
//!
//! Long-running apps are submitted as Marathon JSON over Marathon's `/v2` REST API
//! (apps, tasks, deployments, queue, groups, info, leader, events, ping, metrics), kept
//! running (self-healing with launch backoff), health-checked next to the task by the
//! agent's executor, upgraded with rolling deployments that honour
//! `minimumHealthCapacity` / `maximumOverCapacity`, and rolled back with
//! `DELETE /v2/deployments/{id}`.
//!
//! Layout (pure cores, I/O at the edges):
//! * [`model`] — app JSON, defaults and validation (422 details);
//! * [`constraints`], [`planner`], [`backoff`] — pure decision functions with tests;
//! * [`state`] — the whole state and every decision, returning effects;
//! * `actor` — the one task that owns the [`state::Core`], performs its effects
//!   (SDK driver calls, [`Store`] writes) and publishes events;
//! * `http` — axum handlers that message the actor.
//!
//! Invariants: only the actor mutates state; state is persisted before an API call is
//! answered and before tasks are launched, so a restarted framework knows every task it
//! may have started; the framework id is persisted and reused, so a restart fails over
//! the same framework (tasks keep running) within `failover_timeout`.

#![warn(missing_docs)]

mod actor;
pub mod backoff;
pub mod constraints;
mod http;
pub mod model;
pub mod planner;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mezzo_sdk::{v1, DriverConfig, SchedulerDriver};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use mezzo_sdk::store::{FileStore, Store, StoreError, ZooKeeperStore};

/// Errors starting or running the framework.
#[derive(Debug, thiserror::Error)]
pub enum MarathonError {
    /// The durable store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The SDK refused the configuration or failed.
    #[error("driver: {0}")]
    Sdk(#[from] mezzo_sdk::SdkError),
    /// The HTTP listener could not be bound.
    #[error("http listener on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Error.
        source: std::io::Error,
    },
    /// A stored record could not be decoded.
    #[error("stored state {key}: {reason}")]
    Corrupt {
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A background task failed.
    #[error("{0}")]
    Task(String),
}

/// Configuration of a Marathon-like framework instance.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MarathonConfig {
    /// Master address(es), `host:port[,host:port]`.
    pub master: String,
    /// Where the REST API listens (port 0: any).
    pub http: SocketAddr,
    /// Directory of the durable local store.
    pub state_dir: PathBuf,
    /// Framework name (`marathon`).
    pub framework_name: String,
    /// Role to subscribe with (`*`).
    pub role: String,
    /// How long the master keeps the tasks while the framework is away (7 days).
    pub failover_timeout: Duration,
    /// User tasks run as when the app has none (empty: the agent's choice).
    pub user: String,
    /// Seconds an unhealthy task may wait for its replacement before it is killed.
    pub unhealthy_grace: Duration,
    /// Interval of the planning loop.
    pub tick: Duration,
}

impl MarathonConfig {
    /// A configuration with Marathon's defaults.
    pub fn new(master: impl Into<String>, http: SocketAddr, state_dir: impl Into<PathBuf>) -> Self {
        MarathonConfig {
            master: master.into(),
            http,
            state_dir: state_dir.into(),
            framework_name: "marathon".into(),
            role: "*".into(),
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            user: String::new(),
            unhealthy_grace: Duration::from_secs(60),
            tick: Duration::from_millis(200),
        }
    }
}

/// A running framework: its API address and handles to stop it.
pub struct RunningMarathon {
    /// Where the REST API listens.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    driver: mezzo_sdk::Driver,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningMarathon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningMarathon")
            .field("addr", &self.addr)
            .finish()
    }
}

impl RunningMarathon {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs until [`RunningMarathon::shutdown`] is called from elsewhere or a
    /// component ends.
    pub async fn wait(mut self) -> Result<(), MarathonError> {
        let (first, _, rest) = futures::future::select_all(self.tasks.drain(..)).await;
        let _ = self.stop.send(true);
        self.driver.stop();
        for t in rest {
            let _ = t.await;
        }
        first.map_err(|e| MarathonError::Task(e.to_string()))
    }

    /// Stops the API, the actor and the driver. The framework stays registered with
    /// the master (its tasks keep running for `failover_timeout`), so a new instance
    /// over the same state directory takes over.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.driver.stop();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Loads the state, subscribes to the master and serves the API.
pub async fn start(config: MarathonConfig) -> Result<RunningMarathon, MarathonError> {
    let store: Arc<dyn Store> = Arc::new(FileStore::open(&config.state_dir)?);
    let settings = state::Settings {
        role: config.role.clone(),
        unhealthy_grace: config.unhealthy_grace.as_secs_f64(),
        ..Default::default()
    };
    let state = actor::load(store.as_ref(), settings).await?;
    let framework_id = state.framework_id.clone().unwrap_or_default();
    if !framework_id.is_empty() {
        info!(framework.id = %framework_id, "resuming framework");
    }

    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|source| MarathonError::Bind {
            addr: config.http,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| MarathonError::Bind {
            addr: config.http,
            source,
        })?;

    let framework = v1::FrameworkInfo {
        user: config.user.clone(),
        name: config.framework_name.clone(),
        id: framework_id,
        failover_timeout: config.failover_timeout.as_secs_f64(),
        checkpoint: true,
        roles: vec![config.role.clone()],
        hostname: addr.ip().to_string(),
        webui_url: format!("http://{addr}"),
        ..Default::default()
    };
    let mut driver_config = DriverConfig::new(config.master.clone(), framework);
    driver_config.max_backoff = Duration::from_secs(2);
    driver_config.request_timeout = Duration::from_secs(10);
    let sched_driver = SchedulerDriver::new(driver_config)?;
    let driver = sched_driver.driver();

    let (stop, stop_rx) = watch::channel(false);
    let (handle, actor_task) =
        actor::spawn(state, store, driver.clone(), config.tick, stop_rx.clone());
    let scheduler = actor::Sched::new(handle.clone());
    let driver_task = {
        let driver = driver.clone();
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = sched_driver.run(scheduler) => {
                    if let Err(e) = r {
                        warn!(error = %e, "scheduler driver ended");
                    }
                }
                _ = stop_rx.wait_for(|s| *s) => driver.stop(),
            }
        })
    };
    let info = http::Info {
        addr,
        master: config.master.clone(),
        framework_name: config.framework_name.clone(),
        role: config.role.clone(),
        failover_timeout: config.failover_timeout.as_secs_f64(),
    };
    let http_task = tokio::spawn(http::serve(listener, handle, info, stop_rx));
    info!(%addr, "marathon API listening");
    Ok(RunningMarathon {
        addr,
        stop,
        driver,
        tasks: vec![actor_task, driver_task, http_task],
    })
}
