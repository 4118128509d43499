//! The Mezzo agent: registers a machine's resources with the master, runs
//! each task under its own executor process (`mezzo executor`) in a
//! container, and delivers the tasks' status updates reliably.
//!
//! * `agent`: the actor owning tasks; `updates` (the reliable status-update
//!   streams) and `checkpoint` (records and recovery) are its pure cores,
//!   `checkpoint_io` the writer thread that makes records durable;
//! * `launcher`, `master_link`, `executor_link`: starting executors, the
//!   master stream, the executors' socket; `containers`: destroying the
//!   container of an executor that is gone, and orphans;
//! * [`executor`]: the per-task executor process;
//! * [`protocol`]: the agent <-> executor messages;
//! * [`http`] and `files`: the agent's HTTP API;
//! * this file: configuration, resource detection, start-up checks.
//!
//! Invariants: the agent talks only to the master it registered with (newer
//! epoch wins); an executor never exits before the agent has its terminal
//! update; a container never outlives its executor (the agent destroys it,
//! and reports the task's end only once it is gone); the agent keeps each update until the framework acknowledged it;
//! nothing a checkpoint records leaves the agent before it is durable.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod agent;
mod checkpoint;
mod checkpoint_io;
mod containers;
mod event;
pub mod executor;
mod executor_link;
mod files;
pub mod health;
pub mod http;
mod launcher;
mod master_link;
pub mod protocol;
mod updates;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mezzo_isolators::IsolationKind;
use mezzo_proto::{RangeSet, Resources};

pub use launcher::sandbox_dir;
pub use mezzo_runtime::Shutdown;

/// Errors of the agent and executor.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Bad configuration; the message names the flag or value.
    #[error("{0}")]
    Config(String),
    /// A file or socket operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Isolation could not be set up.
    #[error("isolation: {0}")]
    Isolation(String),
    /// The master connection failed.
    #[error("master: {0}")]
    Master(String),
    /// A standby master named the leader (`host:port`).
    #[error("redirected to the leading master at {0}")]
    Redirect(String),
}

impl AgentError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        AgentError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where Linux publishes the id of the current boot.
pub const DEFAULT_BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The agent's configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Master address, `host:port` or `http://host:port`.
    pub master: String,
    /// Where sandboxes, the socket and checkpoints live.
    pub work_dir: PathBuf,
    /// Hostname reported to the master (and `HOST` in tasks).
    pub hostname: String,
    /// Port reported in AgentInfo (the agent's HTTP port; 0 if none).
    pub port: u16,
    /// Where to serve the agent's HTTP API (`/state`, `/files`...); none
    /// if `None`. Port 0 picks a free port, then reported as `port`.
    pub http_listen: Option<SocketAddr>,
    /// Total resources offered.
    pub resources: Resources,
    /// Attributes, Mesos syntax already parsed.
    pub attributes: Vec<mezzo_proto::v1::Attribute>,
    /// Isolation for tasks.
    pub isolation: IsolationKind,
    /// Cgroup root name (Mesos `--cgroups_root`).
    pub cgroups_root: String,
    /// Hard cpu limits via CFS quota.
    pub enable_cfs: bool,
    /// pids.max per container.
    pub pids_max: Option<u64>,
    /// Re-send an unacknowledged update after this long (Mesos: 10 s).
    pub status_update_retry_interval: Duration,
    /// Max backoff between master connection attempts (Mesos: 1 min).
    pub max_registration_backoff: Duration,
    /// How long executors wait for a restarted agent (Mesos: 15 min).
    pub recovery_timeout: Duration,
    /// The binary started as `<binary> executor`.
    pub executor_binary: PathBuf,
    /// Default user for tasks that name none (empty = the agent's user).
    pub default_user: String,
    /// Where the host's boot id is read (default
    /// `/proc/sys/kernel/random/boot_id`, or `MEZZO_BOOT_ID_PATH`, which
    /// tests use to simulate a reboot). A boot id different from the one
    /// checkpointed means the host rebooted and no old executor survived.
    pub boot_id_path: PathBuf,
    /// Stops the agent when tripped: its HTTP server stops, pending
    /// checkpoints are flushed, the master stream closes and [`run`] /
    /// [`RunningAgent::wait`] return; executors keep running for the next
    /// agent to recover.
    pub shutdown: Shutdown,
}

impl AgentConfig {
    /// A configuration with Mesos' defaults and detected resources.
    pub fn new(
        master: impl Into<String>,
        work_dir: impl Into<PathBuf>,
    ) -> Result<Self, AgentError> {
        let work_dir = work_dir.into();
        Ok(AgentConfig {
            master: master.into(),
            resources: detect_resources(&work_dir),
            work_dir,
            hostname: default_hostname(),
            port: 0,
            http_listen: None,
            attributes: Vec::new(),
            isolation: if mezzo_isolators::cgroups_available() {
                IsolationKind::Cgroups
            } else {
                IsolationKind::Posix
            },
            cgroups_root: "mezzo".into(),
            enable_cfs: false,
            pids_max: None,
            status_update_retry_interval: Duration::from_secs(10),
            max_registration_backoff: Duration::from_secs(60),
            recovery_timeout: Duration::from_secs(15 * 60),
            executor_binary: std::env::current_exe()
                .map_err(|e| AgentError::io(Path::new("/proc/self/exe"), e))?,
            default_user: String::new(),
            boot_id_path: std::env::var_os("MEZZO_BOOT_ID_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_BOOT_ID_PATH)),
            shutdown: Shutdown::new(),
        })
    }
}

/// The machine's hostname, or `localhost`.
pub fn default_hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Detects cpus, mem and disk as Mesos does (leaving headroom for the OS:
/// mem minus min(1 GiB, half), disk minus min(5 GiB, half)) plus ports
/// [31000-32000].
pub fn detect_resources(work_dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let mem_mb = read_meminfo_mb().unwrap_or(1024.0);
    let mem = (mem_mb - (1024.0f64).min(mem_mb / 2.0)).max(32.0).floor();
    let disk_mb = disk_mb(work_dir).unwrap_or(10240.0);
    let disk = (disk_mb - (5120.0f64).min(disk_mb / 2.0)).max(0.0).floor();
    Resources::new()
        .with_scalar("cpus", cpus)
        .with_scalar("mem", mem)
        .with_scalar("disk", disk)
        .with_ranges("ports", RangeSet::from_ranges([(31000, 32000)]))
}

fn read_meminfo_mb() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn disk_mb(dir: &Path) -> Option<f64> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        probe = probe.parent()?.to_path_buf();
    }
    let c = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; c is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    Some(st.f_blocks as f64 * st.f_frsize as f64 / (1024.0 * 1024.0))
}

/// A started agent: its HTTP API is listening, the actor is running.
pub struct RunningAgent {
    /// Where the HTTP API listens, if it does.
    pub http_addr: Option<SocketAddr>,
    task: tokio::task::JoinHandle<Result<(), AgentError>>,
    http: Option<tokio::task::JoinHandle<()>>,
}

impl RunningAgent {
    /// Waits until the agent stops: after its shutdown token tripped (then
    /// also until its HTTP server finished), or on a fatal error.
    pub async fn wait(self) -> Result<(), AgentError> {
        let result = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(AgentError::Master(format!("agent task: {e}"))),
        };
        if let Some(http) = self.http {
            if result.is_ok() {
                let _ = http.await;
            } else {
                http.abort();
            }
        }
        result
    }
}

/// Checks the configuration and runs the agent until its shutdown token
/// trips or a fatal error.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    start(config).await?.wait().await
}

/// Checks the configuration, binds the HTTP API (so the caller can print
/// its address once it is reachable) and starts the agent.
pub async fn start(mut config: AgentConfig) -> Result<RunningAgent, AgentError> {
    if config.isolation == IsolationKind::Cgroups && !mezzo_isolators::cgroups_available() {
        return Err(AgentError::Isolation(
            "--isolation cgroups was requested but no usable cgroup hierarchy (cpu + memory) exists on this host; use --isolation posix".into(),
        ));
    }
    if config.master.starts_with("zk://") {
        mezzo_zk::ZkUrl::parse(&config.master)
            .map_err(|e| AgentError::Config(format!("--master: {e}")))?;
    }
    if config.resources.is_empty() {
        return Err(AgentError::Config("--resources must not be empty".into()));
    }
    std::fs::create_dir_all(&config.work_dir).map_err(|e| AgentError::io(&config.work_dir, e))?;
    let listener = match config.http_listen {
        Some(addr) => {
            let l = http::bind(addr).await?;
            let bound = l
                .local_addr()
                .map_err(|e| AgentError::Config(e.to_string()))?;
            config.port = bound.port();
            Some((l, bound))
        }
        None => None,
    };
    let (view_tx, view_rx) = tokio::sync::watch::channel(http::AgentView::default());
    let http_addr = listener.as_ref().map(|(_, a)| *a);
    let http = listener.map(|(l, _)| {
        tokio::spawn(http::serve(
            l,
            std::sync::Arc::new(config.clone()),
            view_rx,
            config.shutdown.clone(),
        ))
    });
    let info = mezzo_proto::v1::AgentInfo {
        hostname: config.hostname.clone(),
        port: u32::from(config.port),
        resources: config.resources.to_proto(),
        attributes: config.attributes.clone(),
        id: String::new(),
    };
    tracing::info!(resources = %config.resources, isolation = ?config.isolation, master = %config.master, "agent starting");
    Ok(RunningAgent {
        http_addr,
        task: tokio::spawn(agent::run(config, info, view_tx)),
        http,
    })
}
