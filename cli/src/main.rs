//! `mezzo`: the one Mezzo binary.
//!
//! Subcommands: `master`, `agent`, `executor` (started by the agent, one per
//! task) and `local` (a standalone master plus one agent in one process).
//! Every flag can also be given as a `MEZZO_*` environment variable.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod local;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use mezzo_agent::AgentConfig;
use mezzo_isolators::IsolationKind;
use mezzo_master::MasterConfig;
use mezzo_proto::Resources;
use mezzo_runtime::Shutdown;

#[derive(Parser)]
#[command(
    name = "mezzo",
    version,
    about = "Mezzo: a two-level cluster resource scheduler in the line of Apache Mesos"
)]
struct Cli {
    /// Log filter, RUST_LOG syntax (e.g. `info,mezzo_master=debug`).
    #[arg(long, global = true, env = "MEZZO_LOG", default_value = "info")]
    log: String,
    /// Log format.
    #[arg(long, global = true, env = "MEZZO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a master.
    Master(MasterArgs),
    /// Run an agent.
    Agent(AgentArgs),
    /// Run one task's executor (started by the agent; not for humans).
    Executor(ExecutorArgs),
    /// Run the Metronome-style batch framework (`/v1/jobs`).
    Batch(BatchArgs),
    /// Run the Marathon-compatible service framework (`/v2/apps`).
    Marathon(MarathonArgs),
    /// Run a standalone master, one agent and the frameworks on this machine.
    Local(LocalArgs),
}

#[derive(Args)]
struct MarathonArgs {
    /// The master: `host:port` (comma-separated for several) or `zk://host:2181,.../mezzo`.
    #[arg(long, env = "MEZZO_MASTER")]
    master: String,
    /// Address of the `/v2` HTTP API.
    #[arg(long, env = "MEZZO_MARATHON_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Directory for the framework's durable state.
    #[arg(
        long,
        env = "MEZZO_MARATHON_STATE_DIR",
        default_value = "/var/lib/mezzo/marathon"
    )]
    state_dir: PathBuf,
    /// Framework name registered with the master.
    #[arg(long, env = "MEZZO_MARATHON_NAME", default_value = "marathon")]
    name: String,
    /// Role for the framework's offers.
    #[arg(long, env = "MEZZO_MARATHON_ROLE", default_value = "*")]
    role: String,
    /// `zk://host:2181,.../mezzo`: state in ZooKeeper (`<path>/frameworks/<name>`) and
    /// leader election among instances (standbys redirect to the leader).
    #[arg(long, env = "MEZZO_MARATHON_ZK")]
    zk: Option<String>,
    /// ZooKeeper session timeout; a leader that loses its session stops at once.
    #[arg(long, env = "MEZZO_MARATHON_ZK_SESSION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    zk_session_timeout: Duration,
    /// Delay after subscribing before the first periodic reconciliation
    /// (Marathon's `--reconciliation_initial_delay`).
    #[arg(long, env = "MEZZO_MARATHON_RECONCILIATION_INITIAL_DELAY", default_value = "15s", value_parser = parse_duration)]
    reconciliation_initial_delay: Duration,
    /// Interval of implicit task reconciliation with the master: tasks the
    /// master reports that this framework does not know are killed
    /// (Marathon's `--reconciliation_interval`).
    #[arg(long, env = "MEZZO_MARATHON_RECONCILIATION_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    reconciliation_interval: Duration,
}

#[derive(Args)]
struct BatchArgs {
    /// The master: `host:port` (comma-separated for several) or `zk://host:2181,.../mezzo`.
    #[arg(long, env = "MEZZO_MASTER")]
    master: String,
    /// Address of the `/v1` HTTP API.
    #[arg(long, env = "MEZZO_BATCH_HTTP", default_value = "127.0.0.1:9000")]
    http: SocketAddr,
    /// Directory for the framework's durable state.
    #[arg(
        long,
        env = "MEZZO_BATCH_STATE_DIR",
        default_value = "/var/lib/mezzo/batch"
    )]
    state_dir: PathBuf,
    /// Framework name registered with the master.
    #[arg(long, env = "MEZZO_BATCH_NAME", default_value = "metronome")]
    name: String,
    /// Role for the framework's offers.
    #[arg(long, env = "MEZZO_BATCH_ROLE", default_value = "*")]
    role: String,
    /// `zk://host:2181,.../mezzo`: keep the state in ZooKeeper (`<path>/frameworks/<name>`).
    #[arg(long, env = "MEZZO_BATCH_ZK")]
    zk: Option<String>,
}

/// Flags shared by `master` and `local`.
#[derive(Args, Clone)]
struct MasterFlags {
    /// Batch allocation interval (Mesos `--allocation_interval`), e.g. `1s`, `250ms`.
    #[arg(long, env = "MEZZO_ALLOCATION_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    allocation_interval: Duration,
    /// Rescind offers not used within this time (unset: offers never time out).
    #[arg(long, env = "MEZZO_OFFER_TIMEOUT", value_parser = parse_duration)]
    offer_timeout: Option<Duration>,
    /// Interval of the master's pings to agents.
    #[arg(long, env = "MEZZO_AGENT_PING_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    agent_ping_timeout: Duration,
    /// Missed pings after which an agent is unreachable.
    #[arg(long, env = "MEZZO_MAX_AGENT_PING_TIMEOUTS", default_value_t = 5)]
    max_agent_ping_timeouts: u32,
    /// Heartbeat interval for framework event streams.
    #[arg(long, env = "MEZZO_FRAMEWORK_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    framework_heartbeat_interval: Duration,
    /// Role weights, `role1=2,role2=0.5`.
    #[arg(long, env = "MEZZO_WEIGHTS", default_value = "")]
    weights: String,
    /// After a failover, agents known to the registry that have not
    /// re-registered within this time are marked unreachable.
    #[arg(long, env = "MEZZO_AGENT_REREGISTER_TIMEOUT", default_value = "10min", value_parser = parse_duration)]
    agent_reregister_timeout: Duration,
    /// Most agents removed per period when they miss their pings or do not
    /// re-register after a failover, as `N/Duration` (Mesos
    /// `--agent_removal_rate_limit`, e.g. `1/10mins`); the rest wait their
    /// turn and are kept if they come back. Unset: removed at once.
    #[arg(long, env = "MEZZO_AGENT_REMOVAL_RATE_LIMIT", value_parser = mezzo_master::config::RateLimit::parse)]
    agent_removal_rate_limit: Option<mezzo_master::config::RateLimit>,
}

/// ZooKeeper flags of `master`.
#[derive(Args, Clone)]
struct ZkFlags {
    /// `zk://host1:2181,host2:2181/mezzo`: elect the leader in ZooKeeper (omit for standalone).
    #[arg(long, env = "MEZZO_ZK")]
    zk: Option<String>,
    /// ZooKeeper session timeout; a leader that loses its session stops leading at once.
    #[arg(long, env = "MEZZO_ZK_SESSION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    zk_session_timeout: Duration,
    /// Number of masters in the ensemble (informational, as Mesos' `--quorum`).
    #[arg(long, env = "MEZZO_QUORUM")]
    quorum: Option<u32>,
}

#[derive(Args)]
struct MasterArgs {
    /// IP to listen on.
    #[arg(long, env = "MEZZO_IP", default_value = "127.0.0.1")]
    ip: std::net::IpAddr,
    /// Port for gRPC and HTTP (0 = any free port).
    #[arg(long, env = "MEZZO_PORT", default_value_t = 5050)]
    port: u16,
    /// Hostname advertised to agents and frameworks.
    #[arg(long, env = "MEZZO_HOSTNAME")]
    hostname: Option<String>,
    /// Directory for the standalone registry (admitted agents, frameworks);
    /// with `--zk` the registry lives in ZooKeeper instead.
    #[arg(long, env = "MEZZO_MASTER_WORK_DIR")]
    work_dir: Option<PathBuf>,
    #[command(flatten)]
    flags: MasterFlags,
    #[command(flatten)]
    zk: ZkFlags,
}

/// Flags shared by `agent` and `local`.
#[derive(Args, Clone)]
struct AgentFlags {
    /// Resources in Mesos syntax, e.g. `cpus:2;mem:1024;disk:1000;ports:[31000-31100]` (detected if unset).
    #[arg(long, env = "MEZZO_RESOURCES")]
    resources: Option<String>,
    /// Attributes in Mesos syntax, e.g. `rack:r1;zone:a`.
    #[arg(long, env = "MEZZO_ATTRIBUTES", default_value = "")]
    attributes: String,
    /// `cgroups` (default when usable) or `posix`.
    #[arg(long, env = "MEZZO_ISOLATION")]
    isolation: Option<String>,
    /// Cgroup name under each hierarchy (Mesos `--cgroups_root`).
    #[arg(long, env = "MEZZO_CGROUPS_ROOT", default_value = "mezzo")]
    cgroups_root: String,
    /// Enforce hard cpu limits with a CFS quota.
    #[arg(long, env = "MEZZO_CGROUPS_ENABLE_CFS")]
    cgroups_enable_cfs: bool,
    /// Maximum processes per task (pids cgroup).
    #[arg(long, env = "MEZZO_PIDS_MAX")]
    pids_max: Option<u64>,
    /// Re-send unacknowledged status updates after this long.
    #[arg(long, env = "MEZZO_STATUS_UPDATE_RETRY_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    status_update_retry_interval: Duration,
    /// Hostname reported to the master.
    #[arg(long, env = "MEZZO_AGENT_HOSTNAME")]
    hostname: Option<String>,
}

#[derive(Args)]
struct AgentArgs {
    /// The master: `host:port`, or `zk://host:2181,.../mezzo` to follow the elected leader.
    #[arg(long, env = "MEZZO_MASTER")]
    master: String,
    /// Directory for sandboxes and checkpoints.
    #[arg(long, env = "MEZZO_WORK_DIR", default_value = "/var/lib/mezzo")]
    work_dir: PathBuf,
    /// Address the agent's HTTP API (`/state`, `/metrics`, `/files`) listens on.
    #[arg(long, env = "MEZZO_AGENT_IP", default_value = "0.0.0.0")]
    ip: std::net::IpAddr,
    /// Port of the agent's HTTP API (0 = any free port).
    #[arg(long, env = "MEZZO_AGENT_PORT", default_value_t = 5051)]
    port: u16,
    #[command(flatten)]
    flags: AgentFlags,
}

#[derive(Args)]
struct ExecutorArgs {
    /// The executor spec written by the agent.
    #[arg(long)]
    spec: PathBuf,
}

#[derive(Args)]
struct LocalArgs {
    /// Master port (0 = any free port).
    #[arg(long, env = "MEZZO_PORT", default_value_t = 5050)]
    port: u16,
    /// Port of the Marathon framework's `/v2` API (0 = any free port).
    #[arg(long, env = "MEZZO_MARATHON_PORT", default_value_t = 8080)]
    marathon_port: u16,
    /// Port of the batch framework's `/v1` API (0 = any free port).
    #[arg(long, env = "MEZZO_BATCH_PORT", default_value_t = 9000)]
    batch_port: u16,
    /// Port of the agent's HTTP API (0 = any free port).
    #[arg(long, env = "MEZZO_AGENT_PORT", default_value_t = 5051)]
    agent_port: u16,
    /// Agent work directory.
    #[arg(long, env = "MEZZO_WORK_DIR", default_value = "/tmp/mezzo-local")]
    work_dir: PathBuf,
    /// On exit, stop every task this run started and remove the work dir
    /// (otherwise tasks keep running for the next `mezzo local`).
    #[arg(long, env = "MEZZO_CLEAN")]
    clean: bool,
    #[command(flatten)]
    master: MasterFlags,
    #[command(flatten)]
    agent: AgentFlags,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration '{s}': {e}"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_format);
    match cli.command {
        Command::Executor(args) => {
            let code = mezzo_agent::executor::main(&args.spec)?;
            std::process::exit(code);
        }
        Command::Master(args) => runtime()?.block_on(run_master(args)),
        Command::Agent(args) => runtime()?.block_on(run_agent(args)),
        Command::Local(args) => runtime()?.block_on(local::run(args)),
        Command::Batch(args) => runtime()?.block_on(run_batch(args)),
        Command::Marathon(args) => runtime()?.block_on(run_marathon(args)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    // Colour only on a terminal: logs written to a file or pipe stay plain.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn master_config(
    listen: SocketAddr,
    hostname: Option<String>,
    f: &MasterFlags,
) -> Result<MasterConfig> {
    Ok(MasterConfig {
        listen,
        hostname,
        allocation_interval: f.allocation_interval,
        offer_timeout: f.offer_timeout,
        agent_ping_timeout: f.agent_ping_timeout,
        max_agent_ping_timeouts: f.max_agent_ping_timeouts,
        framework_heartbeat_interval: f.framework_heartbeat_interval,
        agent_reregister_timeout: f.agent_reregister_timeout,
        agent_removal_rate_limit: f.agent_removal_rate_limit,
        weights: mezzo_master::parse_weights(&f.weights).map_err(|e| anyhow!("--weights: {e}"))?,
        ..MasterConfig::default()
    })
}

fn agent_config(master: String, work_dir: PathBuf, f: &AgentFlags) -> Result<AgentConfig> {
    let mut c = AgentConfig::new(master, work_dir)?;
    if let Some(r) = &f.resources {
        let parsed = Resources::parse(r).map_err(|e| anyhow!("--resources: {e}"))?;
        // Unspecified standard resources keep their detected values, as in Mesos.
        let mut merged = parsed.clone();
        for name in ["cpus", "mem", "disk"] {
            if parsed.scalar(name) == 0.0 {
                merged.add_scalar(name, c.resources.scalar(name));
            }
        }
        if parsed.ranges("ports").is_empty() {
            merged.add_ranges("ports", &c.resources.ranges("ports"));
        }
        c.resources = merged;
    }
    c.attributes = mezzo_proto::resources::parse_attributes(&f.attributes)
        .map_err(|e| anyhow!("--attributes: {e}"))?;
    if let Some(iso) = &f.isolation {
        c.isolation = iso
            .parse::<IsolationKind>()
            .map_err(|e| anyhow!("--isolation: {e}"))?;
    }
    c.cgroups_root = f.cgroups_root.clone();
    c.enable_cfs = f.cgroups_enable_cfs;
    c.pids_max = f.pids_max;
    c.status_update_retry_interval = f.status_update_retry_interval;
    if let Some(h) = &f.hostname {
        c.hostname = h.clone();
    }
    Ok(c)
}

async fn run_master(args: MasterArgs) -> Result<()> {
    let mut config = master_config(
        SocketAddr::new(args.ip, args.port),
        args.hostname,
        &args.flags,
    )?;
    if let (Some(q), None) = (args.zk.quorum, &args.zk.zk) {
        anyhow::bail!("--quorum {q} needs --zk");
    }
    config.zk = args.zk.zk;
    config.work_dir = args.work_dir;
    config.zk_session_timeout = args.zk.zk_session_timeout;
    config.shutdown = stop_on_signals();
    let master = mezzo_master::start(config).await?;
    println!("master: http://{}", master.addr);
    master.wait().await.context("master server")
}

/// A shutdown token tripped by the first SIGTERM or SIGINT; a second one
/// exits at once (a drain that hangs must not hold the terminal).
fn stop_on_signals() -> Shutdown {
    let shutdown = Shutdown::new();
    let trip = shutdown.clone();
    tokio::spawn(async move {
        match trip.on_signals().await {
            Ok(_) => {
                eprintln!("stopping: finishing requests and flushing state (signal again to exit at once)");
                if mezzo_runtime::shutdown::wait_for_signal().await.is_ok() {
                    std::process::exit(130);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot install signal handlers"),
        }
    });
    shutdown
}

async fn run_agent(args: AgentArgs) -> Result<()> {
    let mut config = agent_config(args.master, args.work_dir, &args.flags)?;
    config.http_listen = Some(SocketAddr::new(args.ip, args.port));
    // Executors keep running: a restarted agent recovers them.
    config.shutdown = stop_on_signals();
    let hostname = config.hostname.clone();
    let work_dir = config.work_dir.clone();
    let agent = mezzo_agent::start(config).await.context("agent")?;
    // The first `agent:` line comes once the HTTP API is reachable.
    if let Some(addr) = agent.http_addr {
        let host = if addr.ip().is_unspecified() {
            hostname
        } else {
            addr.ip().to_string()
        };
        println!("agent: http://{host}:{}", addr.port());
    }
    println!("agent: work dir {}", work_dir.display());
    agent.wait().await.context("agent")
}

/// The result of a spawned component's `wait`.
fn flatten<T, E: std::error::Error + Send + Sync + 'static>(
    r: std::result::Result<std::result::Result<T, E>, tokio::task::JoinError>,
) -> Result<T> {
    match r {
        Ok(r) => r.map_err(anyhow::Error::from),
        Err(e) => Err(anyhow!("component task: {e}")),
    }
}

/// The frameworks' `--zk` flag: `zk://host:port,.../path` when given.
fn parse_zk(zk: Option<&str>) -> Result<Option<mezzo_zk::ZkUrl>> {
    zk.map(mezzo_zk::ZkUrl::parse).transpose().context("--zk")
}

async fn run_marathon(args: MarathonArgs) -> Result<()> {
    let mut config = mezzo_marathon::MarathonConfig::new(args.master, args.http, args.state_dir);
    config.framework_name = args.name;
    config.role = args.role;
    config.zk = parse_zk(args.zk.as_deref())?;
    config.zk_session_timeout = args.zk_session_timeout;
    config.reconciliation_initial_delay = args.reconciliation_initial_delay;
    config.reconciliation_interval = args.reconciliation_interval;
    // SIGTERM / SIGINT drain the API and flush the store before `wait` returns.
    let marathon = mezzo_marathon::start_with(config, stop_on_signals())
        .await
        .context("starting the Marathon framework")?;
    println!("marathon: http://{}", marathon.addr);
    marathon.wait().await.context("marathon")
}

async fn run_batch(args: BatchArgs) -> Result<()> {
    let mut config = mezzo_batch::BatchConfig::new(args.master, args.http, args.state_dir);
    config.framework_name = args.name;
    config.role = args.role;
    config.zk = parse_zk(args.zk.as_deref())?;
    config.shutdown = stop_on_signals();
    let batch = mezzo_batch::start(config)
        .await
        .context("starting the batch framework")?;
    println!("batch: http://{}/v1/jobs", batch.addr);
    batch.wait().await;
    Ok(())
}
