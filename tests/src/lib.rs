//! The end-to-end test harness: starts real `mezzo master` and `mezzo agent`
//! processes on OS-chosen loopback ports, runs frameworks in-process with the
//! SDK, and cleans up every process and cgroup it caused, even when a test
//! fails (everything is torn down in `Drop`).
//!
//! The binary comes from `MEZZO_BIN` (set by scripts/test.sh), falling back
//! to `target/debug/mezzo`.

pub mod chaos;
pub mod zk;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use mezzo_proto::v1;
use mezzo_sdk::{Driver, DriverConfig, Scheduler, SchedulerDriver};
use tokio::sync::mpsc;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Path of the `mezzo` binary under test.
pub fn mezzo_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MEZZO_BIN") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/mezzo")
}

/// Directory of the SDK's built examples.
pub fn examples_dir() -> PathBuf {
    if let Ok(p) = std::env::var("MEZZO_EXAMPLES_DIR") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/examples")
}

/// Where tests may leave artifacts (screenshots, logs).
pub fn output_dir() -> PathBuf {
    let p = std::env::var("MEZZO_TEST_OUTPUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-output"));
    let _ = std::fs::create_dir_all(&p);
    p
}

/// Installs a test log subscriber once (RUST_LOG controls it).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A child process killed (SIGKILL) on drop.
pub struct Proc {
    child: Child,
    /// Its stderr log file.
    pub log: PathBuf,
}

impl Proc {
    /// The OS pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain syscall on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!(
                    "process {} did not exit within {timeout:?}",
                    self.child.id()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // Keep the process's log for a post-mortem when asked to.
        if std::env::var_os("MEZZO_KEEP_LOGS").is_some() {
            if let Some(name) = self.log.file_name() {
                let dest =
                    output_dir().join(format!("{}-{}", self.child.id(), name.to_string_lossy()));
                let _ = std::fs::copy(&self.log, dest);
            }
        }
    }
}

/// Starts `mezzo <args>`, reading stdout until a line starting with
/// `prefix` appears; returns the process and the rest of that line.
pub fn spawn_mezzo(args: &[String], prefix: &str, log_dir: &Path) -> Result<(Proc, String)> {
    let (proc, mut lines) = spawn_mezzo_lines(args, &[prefix], log_dir)?;
    Ok((proc, lines.remove(0)))
}

/// A running master process.
pub struct MasterProc {
    /// The process.
    pub proc: Proc,
    /// `127.0.0.1:port`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl MasterProc {
    /// Starts a master on a free port with a fast allocation interval and
    /// any extra flags.
    pub fn start(extra: &[&str]) -> Result<MasterProc> {
        let dir = tempfile::tempdir()?;
        let mut args: Vec<String> = vec![
            "master".into(),
            "--allocation-interval".into(),
            "100ms".into(),
        ];
        // An OS-chosen port unless the test pins one (to restart on it).
        if !extra.contains(&"--port") {
            args.extend(["--port".to_string(), "0".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let (proc, url) = spawn_mezzo(&args, "master:", dir.path())?;
        let addr = url.trim_start_matches("http://").to_string();
        Ok(MasterProc {
            proc,
            addr,
            _dir: dir,
        })
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// GET `/master/state`.
    pub async fn state(&self) -> Result<serde_json::Value> {
        get_json(&format!("{}/master/state", self.url())).await
    }
}

/// A currently free loopback port, chosen by the OS (for a process that must
/// come back on the same port after a restart).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Sorted ids of the tasks of every framework in a `/master/state` document
/// that are in `task_state` (e.g. `TASK_RUNNING`).
pub fn task_ids_in_state(state: &serde_json::Value, task_state: &str) -> Vec<String> {
    let mut ids: Vec<String> = state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["state"] == task_state)
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    ids.sort();
    ids
}

/// GETs a URL and parses JSON.
pub async fn get_json(url: &str) -> Result<serde_json::Value> {
    let r = reqwest::get(url).await?;
    let status = r.status();
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    Ok(r.json().await?)
}

/// A running agent process with its own work dir and cgroup root.
pub struct AgentProc {
    /// The process (None after `kill`).
    pub proc: Option<Proc>,
    /// Its work dir.
    pub work_dir: tempfile::TempDir,
    /// The cgroup root name its containers live under.
    pub cgroups_root: String,
    args: Vec<String>,
}

impl AgentProc {
    /// Starts an agent against `master` with `resources` and extra flags.
    pub fn start(master: &str, resources: &str, extra: &[&str]) -> Result<AgentProc> {
        let work_dir = tempfile::Builder::new().prefix("mz").tempdir_in("/tmp")?;
        let cgroups_root = format!(
            "mezzo-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--master".into(),
            master.into(),
            "--work-dir".into(),
            work_dir.path().display().to_string(),
            "--resources".into(),
            resources.into(),
            "--cgroups-root".into(),
            cgroups_root.clone(),
            "--hostname".into(),
            "127.0.0.1".into(),
            // The agent's HTTP API on a free loopback port (default 5051).
            "--ip".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut a = AgentProc {
            proc: None,
            work_dir,
            cgroups_root,
            args,
        };
        a.restart()?;
        Ok(a)
    }

    /// (Re)starts the agent process with the same flags and work dir.
    pub fn restart(&mut self) -> Result<()> {
        let (proc, _) = spawn_mezzo(&self.args, "agent:", self.work_dir.path())?;
        self.proc = Some(proc);
        Ok(())
    }

    /// SIGKILLs the agent process only (executors and tasks keep running).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        self.proc
            .as_ref()
            .and_then(|p| std::fs::read_to_string(&p.log).ok())
            .unwrap_or_default()
    }

    /// Cgroup directories of this agent's containers in the memory hierarchy
    /// (cgroup v1) or the unified hierarchy (v2).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for base in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"] {
            let root = Path::new(base).join(&self.cgroups_root);
            if let Ok(rd) = std::fs::read_dir(&root) {
                for e in rd.flatten() {
                    if e.path().is_dir() {
                        out.push(e.path());
                    }
                }
            }
        }
        out
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
        kill_processes_under(self.work_dir.path());
        remove_cgroup_root(&self.cgroups_root);
    }
}

/// SIGKILLs every process whose command line or working directory refers
/// to `dir` (executors and their tasks, which live in their own sessions).
pub fn kill_processes_under(dir: &Path) {
    let needle = dir.display().to_string();
    for _ in 0..3 {
        let mut killed = 0;
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                if pid == std::process::id() as i32 {
                    continue;
                }
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                let cwd = std::fs::read_link(e.path().join("cwd"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                if cmdline.contains(&needle) || cwd.starts_with(&needle) {
                    // SAFETY: plain syscall.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                    killed += 1;
                }
            }
        }
        if killed == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes `<hierarchy>/<root>` and its children in every cgroup hierarchy.
pub fn remove_cgroup_root(root: &str) {
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut bases: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    bases.push(PathBuf::from("/sys/fs/cgroup"));
    for base in bases {
        let dir = base.join(root);
        if !dir.is_dir() {
            continue;
        }
        if let Ok(children) = std::fs::read_dir(&dir) {
            for c in children.flatten() {
                if c.path().is_dir() {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// What a test framework saw.
#[derive(Debug, Clone)]
pub enum Ev {
    /// SUBSCRIBED with the framework id.
    Subscribed(String),
    /// OFFERS.
    Offers(Vec<v1::Offer>),
    /// RESCIND.
    Rescinded(String),
    /// UPDATE.
    Update(v1::TaskStatus),
    /// ERROR.
    Error(String),
    /// The stream broke.
    Disconnected,
}

struct Recorder(mpsc::UnboundedSender<Ev>);

#[async_trait::async_trait]
impl Scheduler for Recorder {
    async fn subscribed(&mut self, _d: &Driver, framework_id: &str, _m: &v1::MasterInfo) {
        let _ = self.0.send(Ev::Subscribed(framework_id.to_string()));
    }
    async fn offers(&mut self, _d: &Driver, offers: Vec<v1::Offer>) {
        let _ = self.0.send(Ev::Offers(offers));
    }
    async fn rescinded(&mut self, _d: &Driver, offer_id: &str) {
        let _ = self.0.send(Ev::Rescinded(offer_id.to_string()));
    }
    async fn update(&mut self, _d: &Driver, status: &v1::TaskStatus) {
        let _ = self.0.send(Ev::Update(status.clone()));
    }
    async fn error(&mut self, _d: &Driver, message: &str) {
        let _ = self.0.send(Ev::Error(message.to_string()));
    }
    async fn disconnected(&mut self, _d: &Driver) {
        let _ = self.0.send(Ev::Disconnected);
    }
}

/// A framework driven step by step from a test: its events arrive on a
/// channel; the test decides what to accept, decline or kill.
pub struct TestFramework {
    /// Handle for calls.
    pub driver: Driver,
    /// The framework id.
    pub id: String,
    /// Every update seen so far, in order.
    pub updates: Vec<v1::TaskStatus>,
    /// Offers seen but not yet taken by `next_offers`.
    pending_offers: Vec<v1::Offer>,
    rx: mpsc::UnboundedReceiver<Ev>,
    task: tokio::task::JoinHandle<()>,
}

/// Options for [`TestFramework::start`].
#[derive(Clone)]
pub struct FrameworkOpts {
    /// Framework name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Acknowledge updates automatically.
    pub auto_ack: bool,
    /// failover_timeout in seconds.
    pub failover_timeout: f64,
    /// Capabilities, e.g. PARTITION_AWARE.
    pub capabilities: Vec<String>,
    /// An existing framework id to fail over.
    pub id: String,
}

impl Default for FrameworkOpts {
    fn default() -> Self {
        FrameworkOpts {
            name: "test".into(),
            role: "*".into(),
            auto_ack: true,
            failover_timeout: 0.0,
            capabilities: Vec::new(),
            id: String::new(),
        }
    }
}

impl TestFramework {
    /// Subscribes and waits for SUBSCRIBED.
    pub async fn start(master: &str, opts: FrameworkOpts) -> Result<TestFramework> {
        let info = v1::FrameworkInfo {
            user: "root".into(),
            name: opts.name.clone(),
            id: opts.id.clone(),
            roles: vec![opts.role.clone()],
            failover_timeout: opts.failover_timeout,
            capabilities: opts.capabilities.clone(),
            ..Default::default()
        };
        let mut config = DriverConfig::new(master, info);
        config.auto_acknowledge = opts.auto_ack;
        config.max_backoff = Duration::from_millis(500);
        let sd = SchedulerDriver::new(config)?;
        let driver = sd.driver();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            if let Err(e) = sd.run(Recorder(tx)).await {
                tracing::warn!(error = %e, "test framework ended");
            }
        });
        let mut fw = TestFramework {
            driver,
            id: String::new(),
            updates: Vec::new(),
            pending_offers: Vec::new(),
            rx,
            task,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match fw.next_event(deadline).await? {
                Ev::Subscribed(id) => {
                    fw.id = id;
                    return Ok(fw);
                }
                Ev::Error(e) => bail!("subscribe failed: {e}"),
                _ => {}
            }
        }
    }

    async fn next_event(&mut self, deadline: Instant) -> Result<Ev> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.rx.recv()).await {
            Ok(Some(ev)) => {
                self.record(&ev);
                Ok(ev)
            }
            Ok(None) => bail!("framework event stream ended"),
            Err(_) => bail!("timed out waiting for a framework event"),
        }
    }

    /// Updates what the test knows from one event.
    fn record(&mut self, ev: &Ev) {
        match ev {
            Ev::Update(s) => self.updates.push(s.clone()),
            Ev::Offers(o) => self.pending_offers.extend(o.iter().cloned()),
            Ev::Rescinded(id) => self.pending_offers.retain(|o| &o.id != id),
            // Offers die with the connection they came on.
            Ev::Disconnected | Ev::Subscribed(_) => self.pending_offers.clear(),
            _ => {}
        }
    }

    /// Takes all offers received so far, waiting up to `timeout` for at least one.
    pub async fn next_offers(&mut self, timeout: Duration) -> Result<Vec<v1::Offer>> {
        // Events already queued may void the offers we hold (a disconnect,
        // a rescind): apply them first.
        while let Ok(ev) = self.rx.try_recv() {
            self.record(&ev);
        }
        let deadline = Instant::now() + timeout;
        while self.pending_offers.is_empty() {
            self.next_event(deadline)
                .await
                .context("waiting for offers")?;
        }
        Ok(std::mem::take(&mut self.pending_offers))
    }

    /// Waits for an event matching `pred`, up to `timeout`.
    pub async fn wait_event(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Ev) -> bool,
    ) -> Result<Ev> {
        let deadline = Instant::now() + timeout;
        loop {
            let ev = self.next_event(deadline).await?;
            if pred(&ev) {
                return Ok(ev);
            }
        }
    }

    /// Waits until `task_id` reaches `state` (an earlier update counts too).
    pub async fn wait_state(
        &mut self,
        task_id: &str,
        state: v1::TaskState,
        timeout: Duration,
    ) -> Result<v1::TaskStatus> {
        if let Some(s) = self
            .updates
            .iter()
            .find(|s| s.task_id == task_id && s.state == state as i32)
        {
            return Ok(s.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let ev = self.next_event(deadline).await.with_context(|| {
                format!(
                    "waiting for {task_id} to reach {state:?}; updates so far: {:?}",
                    self.summary()
                )
            })?;
            if let Ev::Update(s) = ev {
                if s.task_id == task_id && s.state == state as i32 {
                    return Ok(s);
                }
            }
        }
    }

    /// Waits for the task's first terminal update.
    pub async fn wait_terminal(
        &mut self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<v1::TaskStatus> {
        let terminal =
            |s: &v1::TaskStatus| s.task_id == task_id && mezzo_proto::task_state(s).is_terminal();
        if let Some(s) = self.updates.iter().find(|s| terminal(s)) {
            return Ok(s.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let ev = self.next_event(deadline).await.with_context(|| {
                format!(
                    "waiting for {task_id} to end; updates: {:?}",
                    self.summary()
                )
            })?;
            if let Ev::Update(s) = ev {
                if terminal(&s) {
                    return Ok(s);
                }
            }
        }
    }

    /// (task, state) pairs seen so far.
    pub fn summary(&self) -> Vec<(String, String)> {
        self.updates
            .iter()
            .map(|s| {
                (
                    s.task_id.clone(),
                    mezzo_proto::task_state(s).as_str_name().to_string(),
                )
            })
            .collect()
    }

    /// Waits for an offer and launches one shell task using `cpus`/`mem` of it;
    /// the rest of the offer is declined with refuse_seconds 0.
    pub async fn launch(
        &mut self,
        task_id: &str,
        cmd: &str,
        cpus: f64,
        mem: f64,
    ) -> Result<v1::Offer> {
        self.launch_with(
            task_id,
            cmd,
            mezzo_sdk::matching::TaskResources::new(cpus, mem),
        )
        .await
    }

    /// Like [`TestFramework::launch`] with full resource needs (ports, disk).
    pub async fn launch_with(
        &mut self,
        task_id: &str,
        cmd: &str,
        need: mezzo_sdk::matching::TaskResources,
    ) -> Result<v1::Offer> {
        let offers = self.next_offers(Duration::from_secs(20)).await?;
        let mut chosen = None;
        for o in offers {
            let mut space = mezzo_sdk::matching::OfferSpace::new(&o);
            if chosen.is_none() {
                if let Some(res) = space.try_fit(&need) {
                    let task =
                        mezzo_sdk::matching::task_info(task_id, task_id, &o.agent_id, cmd, &res);
                    self.driver
                        .launch(
                            vec![o.id.clone()],
                            vec![task],
                            Some(v1::Filters {
                                refuse_seconds: Some(0.0),
                            }),
                        )
                        .await?;
                    chosen = Some(o);
                    continue;
                }
            }
            self.driver.decline(vec![o.id.clone()], Some(0.0)).await?;
        }
        chosen.ok_or_else(|| anyhow!("no offer had room for {need:?}"))
    }

    /// Launches `n` shell tasks `<prefix>-<i>` of cpus:0.1;mem:32 running
    /// `cmd`, packing as many per offer as fit, and waits until all run.
    pub async fn launch_many(&mut self, prefix: &str, n: usize, cmd: &str) -> Result<()> {
        let timeout = Duration::from_secs(40);
        let mut launched = 0;
        while launched < n {
            for o in self.next_offers(timeout).await? {
                let mut space = mezzo_sdk::matching::OfferSpace::new(&o);
                let mut tasks = Vec::new();
                while launched + tasks.len() < n {
                    let Some(res) =
                        space.try_fit(&mezzo_sdk::matching::TaskResources::new(0.1, 32.0))
                    else {
                        break;
                    };
                    let id = format!("{prefix}-{}", launched + tasks.len());
                    tasks.push(mezzo_sdk::matching::task_info(
                        &id,
                        &id,
                        &o.agent_id,
                        cmd,
                        &res,
                    ));
                }
                launched += tasks.len();
                let filters = v1::Filters {
                    refuse_seconds: Some(0.0),
                };
                self.driver
                    .launch(vec![o.id.clone()], tasks, Some(filters))
                    .await?;
            }
        }
        for i in 0..n {
            self.wait_state(
                &format!("{prefix}-{i}"),
                v1::TaskState::TaskRunning,
                timeout,
            )
            .await?;
        }
        Ok(())
    }

    /// Stops the driver (the master sees a disconnect).
    pub fn stop(&self) {
        self.driver.stop();
    }
}

impl Drop for TestFramework {
    fn drop(&mut self) {
        self.driver.stop();
        self.task.abort();
    }
}

/// Polls `f` until it yields `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pids of live processes whose working directory is under `dir` and whose
/// command line (arguments joined by spaces, trimmed) is exactly `cmdline`.
pub fn processes_under(dir: &Path, cmdline: &str) -> std::collections::BTreeSet<i32> {
    let mut out = std::collections::BTreeSet::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd =
            String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default())
                .replace('\0', " ");
        let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
        if cwd.starts_with(dir) && cmd.trim() == cmdline && pid_alive(pid) {
            out.insert(pid);
        }
    }
    out
}

/// True when a process with this pid exists (and is not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The command name in parentheses may contain spaces: the state
        // is the first field after the last ')'.
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|st| st != "Z"),
        Err(_) => false,
    }
}

/// True when this process may manage cgroups (root and a usable hierarchy).
pub fn can_use_cgroups() -> bool {
    // SAFETY: trivial syscall.
    (unsafe { libc::geteuid() } == 0) && Path::new("/sys/fs/cgroup/memory").is_dir()
        || Path::new("/sys/fs/cgroup/cgroup.controllers").is_file()
}

/// Starts `mezzo <args>` and reads stdout until a line starting with each
/// of `prefixes` appeared (in any order); returns the process and, per
/// prefix, the rest of its line.
pub fn spawn_mezzo_lines(
    args: &[String],
    prefixes: &[&str],
    log_dir: &Path,
) -> Result<(Proc, Vec<String>)> {
    spawn_mezzo_env(args, prefixes, log_dir, &[])
}

/// [`spawn_mezzo_lines`] with extra environment variables for the process.
pub fn spawn_mezzo_env(
    args: &[String],
    prefixes: &[&str],
    log_dir: &Path,
    env: &[(&str, &Path)],
) -> Result<(Proc, Vec<String>)> {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let log = log_dir.join(format!(
        "{}-{n}.log",
        args.first().map(String::as_str).unwrap_or("mezzo")
    ));
    let err = std::fs::File::create(&log)?;
    let mut child = Command::new(mezzo_bin())
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("MEZZO_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {}", mezzo_bin().display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
    std::thread::spawn(move || {
        let mut found: Vec<Option<String>> = vec![None; wanted.len()];
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            for (i, p) in wanted.iter().enumerate() {
                if found[i].is_none() {
                    if let Some(rest) = line.strip_prefix(p.as_str()) {
                        found[i] = Some(rest.trim().to_string());
                    }
                }
            }
            if !sent && found.iter().all(Option::is_some) {
                sent = true;
                let _ = tx.send(found.iter().flatten().cloned().collect::<Vec<_>>());
            }
        }
    });
    let mut proc = Proc {
        child,
        log: log.clone(),
    };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(v) => Ok((proc, v)),
        Err(_) => {
            proc.kill();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("mezzo {args:?} did not print {prefixes:?} in time; log:\n{text}")
        }
    }
}
