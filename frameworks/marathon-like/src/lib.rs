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
//!
//! # High availability (`--zk`)
//!
//! With [`MarathonConfig::zk`] the state lives in ZooKeeper
//! (`<path>/frameworks/<name>/state`, a [`ZooKeeperStore`]) and every instance contends
//! for leadership under `<path>/frameworks/<name>/leader` (the SDK's
//! [`mezzo_sdk::election`]; the node's data names the instance's API address). Only the leader runs a *term*: it
//! loads the state from the store, subscribes to the master with the stored framework
//! id, reconciles, and acts; its store writes are fenced on its election node, so a
//! deposed leader can never write. The moment the contender reports anything but
//! `Leader` with the term's epoch (ZooKeeper connection lost, session expired) the term
//! ends: no launch or kill is sent afterwards (leadership is checked before each one),
//! the driver disconnects and the API redirects. A leader regained later starts a new
//! term from the store — never from stale memory — so healthy tasks are reconciled, not
//! killed. Standbys redirect the API (307) to the leader and name it on `/v2/leader`.
//! Without `--zk` the single instance leads one term forever over a [`FileStore`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
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
use std::time::Duration;

use mezzo_sdk::election::{Election, FrameworkHa, InstanceInfo, Leadership, TermGuard};
use mezzo_sdk::{v1, DriverConfig, SchedulerDriver};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use mezzo_runtime::Shutdown;
pub use mezzo_sdk::store::ZkUrl;
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
    /// Master address(es), `host:port[,host:port]`, or `zk://host:port/path`.
    pub master: String,
    /// Where the REST API listens (port 0: any).
    pub http: SocketAddr,
    /// Directory of the durable local store (unused with [`MarathonConfig::zk`]).
    pub state_dir: PathBuf,
    /// ZooKeeper (`zk://host:port,.../path`): state there and leader election among
    /// instances (see the crate docs). `None`: standalone over `state_dir`.
    pub zk: Option<ZkUrl>,
    /// ZooKeeper session timeout (10 s): how long a crashed leader keeps leadership.
    pub zk_session_timeout: Duration,
    /// Host name other instances redirect to (default: the HTTP address' IP, or
    /// `localhost` when listening on all interfaces).
    pub hostname: Option<String>,
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
    /// Delay after subscribing before the first periodic reconciliation
    /// (Marathon's `--reconciliation_initial_delay`).
    pub reconciliation_initial_delay: Duration,
    /// Interval of implicit reconciliation (Marathon's `--reconciliation_interval`).
    pub reconciliation_interval: Duration,
}

impl MarathonConfig {
    /// A configuration with Marathon's defaults.
    pub fn new(master: impl Into<String>, http: SocketAddr, state_dir: impl Into<PathBuf>) -> Self {
        MarathonConfig {
            master: master.into(),
            http,
            state_dir: state_dir.into(),
            zk: None,
            zk_session_timeout: Duration::from_secs(10),
            hostname: None,
            framework_name: "marathon".into(),
            role: "*".into(),
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            user: String::new(),
            unhealthy_grace: Duration::from_secs(60),
            tick: Duration::from_millis(200),
            reconciliation_initial_delay: Duration::from_secs(15),
            reconciliation_interval: Duration::from_secs(600),
        }
    }
}

/// A running framework instance: its API address and handles to stop it.
pub struct RunningMarathon {
    /// Where the REST API listens.
    pub addr: SocketAddr,
    /// Stops the API first; the API's end stops the leader (see [`start_with`]).
    shutdown: Shutdown,
    view: watch::Receiver<http::View>,
    election: Option<Election>,
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

    /// True while this instance leads and its term is running (state loaded, API
    /// answering).
    pub fn is_leader(&self) -> bool {
        *self.view.borrow() == http::View::Leading
    }

    /// Runs until the [`Shutdown`] given to [`start_with`] trips (then stops as
    /// [`RunningMarathon::shutdown`] does) or a component ends (e.g. the master
    /// removed the framework).
    pub async fn wait(mut self) -> Result<(), MarathonError> {
        let (first, _, rest) = futures::future::select_all(self.tasks.drain(..)).await;
        self.shutdown.trigger();
        for t in rest {
            let _ = t.await;
        }
        if let Some(e) = self.election.take() {
            e.withdraw().await;
        }
        first.map_err(|e| MarathonError::Task(e.to_string()))
    }

    /// Stops gracefully: the API stops accepting and finishes the requests in flight
    /// (the actor still answers them), then the actor flushes the store and stops,
    /// the driver disconnects, and the instance leaves the election. The framework
    /// stays registered with the master (its tasks keep running for
    /// `failover_timeout`), so another instance — or a new one over the same state —
    /// takes over.
    pub async fn shutdown(mut self) {
        self.shutdown.trigger();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Some(e) = self.election.take() {
            e.withdraw().await;
        }
    }
}

/// What every leadership term shares.
struct Shared {
    config: MarathonConfig,
    addr: SocketAddr,
    ha: FrameworkHa,
    settings: state::Settings,
    events: broadcast::Sender<(String, serde_json::Value)>,
    mailbox: watch::Sender<actor::Mailbox>,
    view: watch::Sender<http::View>,
}

/// Binds the API, then contends for leadership (with `zk`) or leads at once: the leader
/// loads the state, subscribes to the master and acts. Stops with
/// [`RunningMarathon::shutdown`].
pub async fn start(config: MarathonConfig) -> Result<RunningMarathon, MarathonError> {
    start_with(config, Shutdown::new()).await
}

/// [`start`], also stopping gracefully (as [`RunningMarathon::shutdown`]) when
/// `shutdown` trips, e.g. on SIGTERM.
pub async fn start_with(
    config: MarathonConfig,
    shutdown: Shutdown,
) -> Result<RunningMarathon, MarathonError> {
    let ha = FrameworkHa::open(
        config.zk.as_ref(),
        &config.framework_name,
        &config.state_dir,
        config.zk_session_timeout,
    )
    .await?;
    let settings = state::Settings {
        role: config.role.clone(),
        unhealthy_grace: config.unhealthy_grace.as_secs_f64(),
        reconciliation_initial_delay: config.reconciliation_initial_delay.as_secs_f64(),
        reconciliation_interval: config.reconciliation_interval.as_secs_f64(),
        ..Default::default()
    };
    // Fail early on unreadable state.
    actor::load(ha.store().as_ref(), settings.clone()).await?;

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
    let host = config.hostname.clone().unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            "localhost".into()
        } else {
            addr.ip().to_string()
        }
    });

    let election = ha.elect(&InstanceInfo {
        hostname: host,
        port: addr.port(),
        framework: config.framework_name.clone(),
    });
    let leadership = election.watch();

    // The API drains first, while the actor still answers; only then does the
    // leader stop (and with it the actor, which flushes the store).
    let lead_stop = Shutdown::new();
    let (events, _) = broadcast::channel(1024);
    let (mailbox, mailbox_rx) = watch::channel(None);
    let (view, view_rx) = watch::channel(http::View::Standby(None));
    let handle = actor::Handle::new(mailbox_rx, events.clone());
    let info = http::Info {
        addr,
        master: config.master.clone(),
        framework_name: config.framework_name.clone(),
        role: config.role.clone(),
        failover_timeout: config.failover_timeout.as_secs_f64(),
        zk: config.zk.as_ref().map(ToString::to_string),
        view: view_rx.clone(),
    };
    let shared = Shared {
        config,
        addr,
        ha,
        settings,
        events,
        mailbox,
        view,
    };
    let lead_task = tokio::spawn(lead(shared, leadership, lead_stop.clone()));
    let http_task = tokio::spawn({
        let (shutdown, lead_stop) = (shutdown.clone(), lead_stop.clone());
        async move {
            http::serve(listener, handle, info, shutdown).await;
            lead_stop.trigger();
        }
    });
    info!(%addr, "marathon API listening");
    if election.is_standalone() {
        // Standalone: the only instance leads; answer the API from the first call on.
        let mut leading = view_rx.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            leading.wait_for(|v| *v == http::View::Leading),
        )
        .await;
    }
    Ok(RunningMarathon {
        addr,
        shutdown,
        view: view_rx,
        election: Some(election),
        tasks: vec![lead_task, http_task],
    })
}

/// Follows leadership: publishes who leads, and runs one term per leadership won.
async fn lead(shared: Shared, mut leadership: watch::Receiver<Leadership>, stop: Shutdown) {
    loop {
        let epoch = loop {
            let current = leadership.borrow_and_update().clone();
            match current {
                Leadership::Leader { epoch, .. } => break epoch,
                Leadership::Standby { leader } => {
                    let leader = leader.and_then(|l| l.address());
                    shared.view.send_replace(http::View::Standby(leader));
                }
                Leadership::Connecting | Leadership::Lost => {
                    shared.view.send_replace(http::View::Standby(None));
                }
            }
            tokio::select! {
                r = leadership.changed() => if r.is_err() { return },
                _ = stop.wait() => return,
            }
        };
        info!(epoch, "leading: starting a term");
        match term(&shared, epoch, leadership.clone(), stop.clone()).await {
            Ok(TermEnd::Continue) => {}
            Ok(TermEnd::Exit) => return,
            Err(e) => warn!(epoch, error = %e, "leadership term failed"),
        }
        shared.mailbox.send_replace(None);
        shared.view.send_replace(http::View::Standby(None));
        if stop.is_triggered() {
            return;
        }
        // The term ended while leadership may still hold (e.g. a failed store write):
        // pause before reloading, unless leadership changes meanwhile.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            // A closed election (its sender gone) ends the loop: retrying at
            // once would spin, failing term after term.
            r = leadership.changed() => if r.is_err() { return },
            _ = stop.wait() => return,
        }
    }
}

enum TermEnd {
    /// Leadership lost or the state needs reloading: follow leadership again.
    Continue,
    /// Stopped, or the driver ended for good.
    Exit,
}

/// One leadership term: loads the state, subscribes, acts until leadership is lost.
async fn term(
    shared: &Shared,
    epoch: u64,
    leadership: watch::Receiver<Leadership>,
    stop: Shutdown,
) -> Result<TermEnd, MarathonError> {
    let config = &shared.config;
    let store = shared.ha.term_store(epoch);
    let guard = TermGuard::new(leadership, epoch);
    let core = actor::load(store.as_ref(), shared.settings.clone()).await?;
    if !guard.holds() {
        return Ok(TermEnd::Continue);
    }
    let framework_id = core.framework_id.clone().unwrap_or_default();
    if !framework_id.is_empty() {
        info!(framework.id = %framework_id, epoch, "resuming framework");
    }
    let framework = v1::FrameworkInfo {
        user: config.user.clone(),
        name: config.framework_name.clone(),
        id: framework_id,
        failover_timeout: config.failover_timeout.as_secs_f64(),
        checkpoint: true,
        roles: vec![config.role.clone()],
        hostname: shared.addr.ip().to_string(),
        webui_url: format!("http://{}", shared.addr),
        // Tasks on an unreachable agent are TASK_UNREACHABLE (not TASK_LOST) and resume
        // when it returns; `unreachableStrategy` decides when they are replaced.
        capabilities: vec!["PARTITION_AWARE".into()],
        ..Default::default()
    };
    let mut driver_config = DriverConfig::new(config.master.clone(), framework);
    driver_config.max_backoff = Duration::from_secs(2);
    driver_config.request_timeout = Duration::from_secs(10);
    let sched_driver = SchedulerDriver::new(driver_config)?;
    let driver = sched_driver.driver();

    let term_stop = stop.child();
    let (tx, mut actor_task) = actor::spawn(
        actor::Term {
            core,
            store,
            driver: driver.clone(),
            events: shared.events.clone(),
            guard,
            tick: config.tick,
        },
        term_stop.clone(),
    );
    shared.mailbox.send_replace(Some(tx.clone()));
    shared.view.send_replace(http::View::Leading);
    let mut driver_task = tokio::spawn(sched_driver.run(actor::Sched::new(tx)));
    let end = tokio::select! {
        _ = &mut actor_task => TermEnd::Continue,
        r = &mut driver_task => {
            match r {
                Ok(Ok(_)) => info!("scheduler driver stopped"),
                Ok(Err(e)) => warn!(error = %e, "scheduler driver ended"),
                Err(e) => warn!(error = %e, "scheduler driver task failed"),
            }
            TermEnd::Exit
        }
        _ = stop.wait() => TermEnd::Exit,
    };
    // Stop acting first, then disconnect.
    shared.mailbox.send_replace(None);
    shared.view.send_replace(http::View::Standby(None));
    term_stop.trigger();
    driver.stop();
    if !actor_task.is_finished() {
        let _ = (&mut actor_task).await;
    }
    if tokio::time::timeout(Duration::from_secs(5), &mut driver_task)
        .await
        .is_err()
    {
        warn!("scheduler driver did not stop in time; abandoning it");
        driver_task.abort();
    }
    info!(epoch, "leadership term ended");
    Ok(end)
}
