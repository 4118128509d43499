//! A bounded, seeded chaos run on loopback (issue 13, item 4).
//!
//! Cluster: one real ZooKeeper, three masters on it (2 s sessions), two
//! agents (cgroups isolation when usable, else posix), one `mezzo marathon`
//! (`--master zk://…`, state in ZooKeeper) with two HTTP-health-checked apps
//! of two instances, and one `mezzo batch` whose job is started every few
//! seconds by the runner (batch's cron is five-field, a minute at least);
//! every run acknowledged with 201 is recorded.
//!
//! A seeded RNG ([`ChaosConfig::seed`], printed; `MEZZO_CHAOS_SEED` replays
//! it) picks events at random intervals: kill -9 and restart the leading or a
//! standby master, an agent, Marathon or batch; kill -9 an executor; SIGSTOP a
//! process past its timeouts then SIGCONT it; stop and start ZooKeeper. Each
//! event goes into a time-stamped log.
//!
//! After the chaos phase a bounded quiet period polls until every check holds
//! (or its deadline passes, and the run fails with the seed, the event log and
//! what did not hold):
//! * every app exists and has exactly its instance count RUNNING and healthy;
//! * no task id is running twice (leading master, across frameworks, and
//!   across the agents' `/state`), and master and agents agree on the set;
//! * every batch run acknowledged with 201 exists and has finished;
//! * every `mezzo executor` and every task process under the agents' work dirs
//!   belongs to a task the master reports RUNNING; no cgroup under the agents'
//!   roots without a live task;
//! * no listening port in the agents' port ranges outside the ports of the
//!   tasks the cluster reports.
//!
//! Everything is torn down in `Drop` (processes under every work dir, cgroup
//! roots, ZooKeeper), also when a check fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::zk::ZkServer;
use crate::{can_use_cgroups, free_port, kill_processes_under, pid_alive, remove_cgroup_root};
use crate::{spawn_mezzo, MasterProc, Proc};

/// A small deterministic RNG (SplitMix64): the same seed gives the same
/// sequence of events.
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform duration in `[lo, hi)` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi - lo).max(1))
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The RNG seed (printed; replay with `MEZZO_CHAOS_SEED`).
    pub seed: u64,
    /// Length of the chaos phase.
    pub chaos: Duration,
    /// Longest quiet period before the checks must hold.
    pub quiet: Duration,
}

impl ChaosConfig {
    /// Seed from `MEZZO_CHAOS_SEED` (else from the clock), chaos length from
    /// `MEZZO_CHAOS_SECS` (else `default_chaos`, at most 10 min).
    pub fn from_env(default_chaos: Duration) -> ChaosConfig {
        let seed = std::env::var("MEZZO_CHAOS_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64 ^ u64::from(std::process::id()))
                    .unwrap_or(1)
            });
        let chaos = std::env::var("MEZZO_CHAOS_SECS")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(default_chaos)
            .min(Duration::from_secs(600));
        ChaosConfig {
            seed,
            chaos,
            quiet: Duration::from_secs(120),
        }
    }
}

/// The apps Marathon runs: (id, instances).
const APPS: [(&str, u64); 2] = [("/chaos/web", 2), ("/chaos/api", 2)];
/// The batch job started periodically.
const JOB: &str = "chaos-tick";
/// Ports per agent.
const PORTS_PER_AGENT: u16 = 40;

/// An agent on a pinned HTTP port (so it comes back on the same address).
struct Agent {
    proc: Option<Proc>,
    work_dir: tempfile::TempDir,
    cgroups_root: String,
    port: u16,
    ports: (u16, u16),
    args: Vec<String>,
}

impl Agent {
    fn start(master: &str, index: u16, isolation: &str) -> Result<Agent> {
        let work_dir = tempfile::Builder::new()
            .prefix("mzchaos-agent")
            .tempdir_in("/tmp")?;
        let cgroups_root = format!("mezzo-chaos-{}-{index}", std::process::id());
        let port = free_port()?;
        // Below the ephemeral range (32768+), spread by pid so parallel runs differ.
        let base = 22000 + (std::process::id() as u16 % 120) * (2 * PORTS_PER_AGENT);
        let lo = base + index * PORTS_PER_AGENT;
        let hi = lo + PORTS_PER_AGENT - 1;
        let args: Vec<String> = [
            "agent",
            "--master",
            master,
            "--work-dir",
            &work_dir.path().display().to_string(),
            "--resources",
            &format!("cpus:4;mem:2048;disk:1000;ports:[{lo}-{hi}]"),
            "--cgroups-root",
            &cgroups_root,
            "--hostname",
            "127.0.0.1",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--isolation",
            isolation,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut a = Agent {
            proc: None,
            work_dir,
            cgroups_root,
            port,
            ports: (lo, hi),
            args,
        };
        a.restart()?;
        Ok(a)
    }

    fn restart(&mut self) -> Result<()> {
        let (proc, _) = spawn_mezzo(&self.args, "agent:", self.work_dir.path())?;
        self.proc = Some(proc);
        Ok(())
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Container cgroup dirs under this agent's root in every hierarchy.
    fn cgroups(&self) -> Vec<PathBuf> {
        let mut bases = vec![PathBuf::from("/sys/fs/cgroup")];
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            bases.extend(rd.flatten().map(|e| e.path()));
        }
        let mut out = Vec::new();
        for base in bases {
            if let Ok(rd) = std::fs::read_dir(base.join(&self.cgroups_root)) {
                out.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
        }
        out
    }

    /// The task id of a container, from its executor spec.
    fn task_of_container(&self, container: &str) -> Option<String> {
        let spec = self
            .work_dir
            .path()
            .join("runs")
            .join(container)
            .join("executor.json");
        let v: Value = serde_json::from_slice(&std::fs::read(spec).ok()?).ok()?;
        v["task_id"].as_str().map(String::from)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        kill_processes_under(self.work_dir.path());
        remove_cgroup_root(&self.cgroups_root);
    }
}

/// A framework process on a pinned HTTP port with a kept state dir.
struct Framework {
    name: &'static str,
    proc: Option<Proc>,
    url: String,
    args: Vec<String>,
    logs: PathBuf,
}

impl Framework {
    fn new(name: &'static str, mut args: Vec<String>, root: &Path) -> Result<Framework> {
        let port = free_port()?;
        let logs = root.join(name);
        std::fs::create_dir_all(&logs)?;
        args.extend([
            "--http".to_string(),
            format!("127.0.0.1:{port}"),
            "--state-dir".to_string(),
            logs.join("state").display().to_string(),
        ]);
        let mut f = Framework {
            name,
            proc: None,
            url: format!("http://127.0.0.1:{port}"),
            args,
            logs,
        };
        f.restart()?;
        Ok(f)
    }

    fn restart(&mut self) -> Result<()> {
        let prefix = format!("{}:", self.name);
        let (proc, _) = spawn_mezzo(&self.args, &prefix, &self.logs)?;
        self.proc = Some(proc);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

/// The time-stamped event log.
#[derive(Clone)]
struct EventLog {
    start: Instant,
    events: Arc<Mutex<Vec<(f64, String)>>>,
}

impl EventLog {
    fn push(&self, what: impl Into<String>) {
        let t = self.start.elapsed().as_secs_f64();
        let what = what.into();
        println!("chaos [{t:7.2}s] {what}");
        if let Ok(mut e) = self.events.lock() {
            e.push((t, what));
        }
    }

    fn render(&self) -> String {
        self.events
            .lock()
            .map(|e| {
                e.iter()
                    .map(|(t, w)| format!("  [{t:7.2}s] {w}\n"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The whole cluster under test. Drop tears everything down.
pub struct Cluster {
    // Frameworks first, then agents, masters, ZooKeeper (see Drop).
    marathon: Framework,
    batch: Framework,
    agents: Vec<Agent>,
    masters: Vec<Option<MasterProc>>,
    master_flags: Vec<String>,
    zk: ZkServer,
    http: reqwest::Client,
    log: EventLog,
    /// Batch runs acknowledged with 201.
    acked_runs: Arc<Mutex<Vec<String>>>,
    _root: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Wake anything left stopped so it dies promptly, then kill in order.
        for p in self.all_pids() {
            signal(p, libc::SIGCONT);
        }
        self.marathon.kill();
        self.batch.kill();
        self.agents.clear();
        for m in self.masters.iter_mut() {
            *m = None;
        }
        self.zk.stop();
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: plain syscall on a pid we started.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Command line of a pid, arguments joined by spaces.
fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

/// One variable of a pid's environment.
fn environ_var(pid: i32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    env.split(|b| *b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(&prefix).map(String::from)
    })
}

fn all_proc_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
                .filter(|p| pid_alive(*p))
                .collect()
        })
        .unwrap_or_default()
}

/// Local ports in LISTEN state (IPv4 and IPv6).
fn listening_ports() -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 3 && cols[3] == "0A" {
                if let Some(port) = cols[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                {
                    out.insert(port);
                }
            }
        }
    }
    out
}

fn app_body(id: &str, instances: u64) -> Value {
    let python = std::env::var("MEZZO_PYTHON").unwrap_or_else(|_| "python3".into());
    // The server serves its sandbox (its cwd); the health check asks for /ok.
    json!({
        "id": id,
        "cmd": format!("touch ok && exec {python} -m http.server $PORT0 --bind 127.0.0.1"),
        "instances": instances,
        "cpus": 0.1,
        "mem": 32,
        "backoffSeconds": 0.5,
        "maxLaunchDelaySeconds": 5,
        "healthChecks": [{
            "protocol": "HTTP",
            "path": "/ok",
            "portIndex": 0,
            "gracePeriodSeconds": 15,
            "intervalSeconds": 1,
            "timeoutSeconds": 1,
            "maxConsecutiveFailures": 3,
            "delaySeconds": 0
        }]
    })
}

impl Cluster {
    /// Starts the whole cluster and waits until the apps are healthy.
    pub async fn start(log_start: Instant) -> Result<Cluster> {
        let root = tempfile::Builder::new()
            .prefix("mzchaos")
            .tempdir_in("/tmp")?;
        let zk = ZkServer::start()?;
        let url = zk.url("/mezzo");
        let master_flags: Vec<String> = [
            "--zk",
            &url,
            "--zk-session-timeout",
            "2s",
            "--quorum",
            "2",
            "--agent-ping-timeout",
            "1s",
            "--max-agent-ping-timeouts",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let flags: Vec<&str> = master_flags.iter().map(String::as_str).collect();
        let masters = (0..3)
            .map(|_| MasterProc::start(&flags).map(Some))
            .collect::<Result<Vec<_>>>()?;
        let isolation = if can_use_cgroups() {
            "cgroups"
        } else {
            "posix"
        };
        let agents = (0..2)
            .map(|i| Agent::start(&url, i, isolation))
            .collect::<Result<Vec<_>>>()?;
        let marathon = Framework::new(
            "marathon",
            vec![
                "marathon".into(),
                "--master".into(),
                url.clone(),
                "--zk".into(),
                url.clone(),
                "--zk-session-timeout".into(),
                "2s".into(),
                // Marathon finds tasks it no longer knows (replaced while
                // their agent was away) by implicit reconciliation; the run
                // is short, so it reconciles often.
                "--reconciliation-initial-delay".into(),
                "2s".into(),
                "--reconciliation-interval".into(),
                "5s".into(),
            ],
            root.path(),
        )?;
        let batch = Framework::new(
            "batch",
            vec!["batch".into(), "--master".into(), url.clone()],
            root.path(),
        )?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()?;
        let c = Cluster {
            marathon,
            batch,
            agents,
            masters,
            master_flags,
            zk,
            http,
            log: EventLog {
                start: log_start,
                events: Arc::default(),
            },
            acked_runs: Arc::default(),
            _root: root,
        };
        c.log.push(format!(
            "cluster up: zk {}, masters {:?}, agents {:?} ({isolation}), marathon {}, batch {}",
            c.zk.connect_string(),
            c.masters
                .iter()
                .flatten()
                .map(|m| m.addr.clone())
                .collect::<Vec<_>>(),
            c.agents.iter().map(Agent::url).collect::<Vec<_>>(),
            c.marathon.url,
            c.batch.url
        ));
        c.setup_workload().await?;
        Ok(c)
    }

    async fn post(&self, url: &str, body: &Value) -> Result<(u16, Value)> {
        let r = self.http.post(url).json(body).send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn get(&self, url: &str) -> Result<Value> {
        let r = self.http.get(url).send().await?;
        let status = r.status();
        if !status.is_success() {
            bail!("GET {url}: {status}");
        }
        Ok(r.json().await?)
    }

    async fn setup_workload(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        for (id, n) in APPS {
            loop {
                let r = self
                    .post(&format!("{}/v2/apps", self.marathon.url), &app_body(id, n))
                    .await;
                match r {
                    Ok((201, _)) => break,
                    Ok((409, _)) => break,
                    _ if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(250)).await
                    }
                    other => bail!("creating app {id}: {other:?}"),
                }
            }
            self.log.push(format!("app {id} created ({n} instances)"));
        }
        let job = json!({"id": JOB, "run": {"cmd": "sleep 1", "cpus": 0.1, "mem": 32}});
        loop {
            match self
                .post(&format!("{}/v1/jobs", self.batch.url), &job)
                .await
            {
                Ok((201, _)) => break,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await
                }
                other => bail!("creating job: {other:?}"),
            }
        }
        self.log.push(format!("job {JOB} created"));
        // The apps run healthy before the chaos starts.
        loop {
            let failures = self.check_apps().await;
            if failures.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!("apps not healthy before the chaos: {failures:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.log.push("apps healthy");
        Ok(())
    }

    fn all_pids(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .masters
            .iter()
            .flatten()
            .map(|m| m.proc.pid() as i32)
            .collect();
        out.extend(
            self.agents
                .iter()
                .filter_map(|a| a.proc.as_ref().map(|p| p.pid() as i32)),
        );
        for f in [&self.marathon, &self.batch] {
            out.extend(f.proc.as_ref().map(|p| p.pid() as i32));
        }
        out
    }

    /// Index of the master that reports itself elected, if one does now.
    async fn leader(&self) -> Option<usize> {
        for (i, m) in self.masters.iter().enumerate() {
            if let Some(m) = m {
                let url = format!("{}/metrics/snapshot", m.url());
                let Ok(r) = self
                    .http
                    .get(&url)
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await
                else {
                    continue;
                };
                if let Ok(v) = r.json::<Value>().await {
                    if v["master/elected"] == 1 {
                        return Some(i);
                    }
                }
            }
        }
        None
    }

    fn restart_master(&mut self, i: usize) -> Result<()> {
        let flags: Vec<&str> = self.master_flags.iter().map(String::as_str).collect();
        let m = MasterProc::start(&flags)?;
        self.log.push(format!(
            "master {i} restarted on {} (pid {})",
            m.addr,
            m.proc.pid()
        ));
        self.masters[i] = Some(m);
        Ok(())
    }

    /// Restarts whatever is down (a failed restart is retried next time).
    fn ensure_up(&mut self) {
        for i in 0..self.masters.len() {
            if self.masters[i].is_none() {
                if let Err(e) = self.restart_master(i) {
                    self.log.push(format!("master {i} restart failed: {e:#}"));
                }
            }
        }
        for i in 0..self.agents.len() {
            if self.agents[i].proc.is_none() {
                match self.agents[i].restart() {
                    Ok(()) => self.log.push(format!("agent {i} restarted")),
                    Err(e) => self.log.push(format!("agent {i} restart failed: {e:#}")),
                }
            }
        }
        for f in [&mut self.marathon, &mut self.batch] {
            if f.proc.is_none() {
                match f.restart() {
                    Ok(()) => self.log.push(format!("{} restarted", f.name)),
                    Err(e) => self.log.push(format!("{} restart failed: {e:#}", f.name)),
                }
            }
        }
        if !self.zk.is_running() {
            match self.zk.restart() {
                Ok(()) => self.log.push("zookeeper restarted"),
                Err(e) => self.log.push(format!("zookeeper restart failed: {e:#}")),
            }
        }
    }

    /// Live `mezzo executor` processes of agent `i`: (pid, container id).
    fn executors(&self, i: usize) -> Vec<(i32, String)> {
        let runs = format!("{}/runs/", self.agents[i].work_dir.path().display());
        all_proc_pids()
            .into_iter()
            .filter_map(|pid| {
                let cmd = cmdline(pid);
                if !cmd.contains(" executor --spec ") {
                    return None;
                }
                let rest = cmd.split(&runs).nth(1)?;
                let container = rest.split('/').next()?.to_string();
                Some((pid, container))
            })
            .collect()
    }

    /// One random chaos event.
    async fn event(&mut self, rng: &mut Rng) {
        match rng.below(9) {
            0 | 1 => {
                let leader = self.leader().await;
                let i = match (rng.below(2), leader) {
                    (0, Some(l)) => l,
                    (_, Some(l)) => (l + 1 + rng.below(2)) % 3,
                    (_, None) => rng.below(3),
                };
                let role = if Some(i) == leader {
                    "leading"
                } else {
                    "standby"
                };
                if let Some(mut m) = self.masters[i].take() {
                    m.proc.kill();
                    self.log
                        .push(format!("kill -9 {role} master {i} ({})", m.addr));
                }
                tokio::time::sleep(rng.millis(200, 3000)).await;
                if let Err(e) = self.restart_master(i) {
                    self.log.push(format!("master {i} restart failed: {e:#}"));
                }
            }
            2 => {
                let i = rng.below(self.agents.len());
                if let Some(mut p) = self.agents[i].proc.take() {
                    p.kill();
                    self.log.push(format!("kill -9 agent {i}"));
                }
                tokio::time::sleep(rng.millis(200, 4000)).await;
                match self.agents[i].restart() {
                    Ok(()) => self.log.push(format!("agent {i} restarted")),
                    Err(e) => self.log.push(format!("agent {i} restart failed: {e:#}")),
                }
            }
            3 | 4 => {
                let i = rng.below(self.agents.len());
                let ex = self.executors(i);
                if ex.is_empty() {
                    self.log.push(format!("no executor on agent {i} to kill"));
                } else {
                    let (pid, container) = &ex[rng.below(ex.len())];
                    let task = self.agents[i].task_of_container(container);
                    signal(*pid, libc::SIGKILL);
                    self.log.push(format!(
                        "kill -9 executor pid {pid} on agent {i} (container {container}, task {task:?})"
                    ));
                }
            }
            5 => {
                let which = rng.below(2);
                let down = rng.millis(200, 4000);
                let f = if which == 0 {
                    &mut self.marathon
                } else {
                    &mut self.batch
                };
                f.kill();
                let name = f.name;
                self.log.push(format!("kill -9 {name}"));
                tokio::time::sleep(down).await;
                let f = if which == 0 {
                    &mut self.marathon
                } else {
                    &mut self.batch
                };
                match f.restart() {
                    Ok(()) => self.log.push(format!("{name} restarted")),
                    Err(e) => self.log.push(format!("{name} restart failed: {e:#}")),
                }
            }
            6 | 7 => {
                // Past the 2 s ZooKeeper session and the agent's 3 s of pings.
                let pause = rng.millis(3000, 6000);
                let leader = self.leader().await;
                let (name, pid) = match rng.below(4) {
                    0 => {
                        let i = leader.unwrap_or(0);
                        (
                            format!("master {i} (leading: {})", leader == Some(i)),
                            self.masters[i].as_ref().map(|m| m.proc.pid() as i32),
                        )
                    }
                    1 => {
                        let i = rng.below(self.agents.len());
                        (
                            format!("agent {i}"),
                            self.agents[i].proc.as_ref().map(|p| p.pid() as i32),
                        )
                    }
                    2 => (
                        "marathon".to_string(),
                        self.marathon.proc.as_ref().map(|p| p.pid() as i32),
                    ),
                    _ => (
                        "batch".to_string(),
                        self.batch.proc.as_ref().map(|p| p.pid() as i32),
                    ),
                };
                if let Some(pid) = pid {
                    signal(pid, libc::SIGSTOP);
                    self.log
                        .push(format!("SIGSTOP {name} for {:.1}s", pause.as_secs_f64()));
                    tokio::time::sleep(pause).await;
                    signal(pid, libc::SIGCONT);
                    self.log.push(format!("SIGCONT {name}"));
                }
            }
            _ => {
                let down = rng.millis(1000, 5000);
                self.zk.stop();
                self.log
                    .push(format!("zookeeper stopped for {:.1}s", down.as_secs_f64()));
                tokio::time::sleep(down).await;
                match self.zk.restart() {
                    Ok(()) => self.log.push("zookeeper restarted"),
                    Err(e) => self.log.push(format!("zookeeper restart failed: {e:#}")),
                }
            }
        }
    }

    /// Starts the job every 2–4 s until `stop`; records every 201.
    fn start_run_poster(
        &self,
        seed: u64,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        let http = self.http.clone();
        let url = format!("{}/v1/jobs/{JOB}/runs", self.batch.url);
        let acked = self.acked_runs.clone();
        let log = self.log.clone();
        tokio::spawn(async move {
            let mut rng = Rng::new(seed ^ 0x5EED);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(rng.millis(2000, 4000)).await;
                let Ok(r) = http.post(&url).json(&json!({})).send().await else {
                    continue;
                };
                if r.status().as_u16() != 201 {
                    continue;
                }
                if let Ok(v) = r.json::<Value>().await {
                    if let Some(id) = v["id"].as_str() {
                        log.push(format!("batch run {id} acknowledged (201)"));
                        if let Ok(mut a) = acked.lock() {
                            a.push(id.to_string());
                        }
                    }
                }
            }
        })
    }

    /// The apps' checks: exist, exactly `n` RUNNING and healthy, no deployment.
    async fn check_apps(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let url = format!("{}/v2/apps?embed=apps.tasks", self.marathon.url);
        let apps = match self.get(&url).await {
            Ok(v) => v,
            Err(e) => return vec![format!("marathon: {e:#}")],
        };
        for (id, n) in APPS {
            let Some(app) = apps["apps"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["id"] == id))
            else {
                failures.push(format!("app {id} lost"));
                continue;
            };
            let tasks = app["tasks"].as_array().cloned().unwrap_or_default();
            let running: Vec<&Value> = tasks
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .collect();
            let healthy = running
                .iter()
                .filter(|t| {
                    t["healthCheckResults"]
                        .as_array()
                        .is_some_and(|r| !r.is_empty() && r.iter().all(|h| h["alive"] == true))
                })
                .count();
            if tasks.len() as u64 != n || running.len() as u64 != n || healthy as u64 != n {
                failures.push(format!(
                    "app {id}: {} tasks, {} running, {healthy} healthy, want {n}: {:?}",
                    tasks.len(),
                    running.len(),
                    tasks
                        .iter()
                        .map(|t| format!("{} {} {}", t["id"], t["state"], t["healthCheckResults"]))
                        .collect::<Vec<_>>()
                ));
            }
            if app["deployments"].as_array().is_some_and(|d| !d.is_empty()) {
                failures.push(format!("app {id}: deployments {}", app["deployments"]));
            }
        }
        failures
    }

    /// Every end-of-run check; the list of what does not hold.
    async fn check_all(&self) -> Vec<String> {
        let mut failures = self.check_apps().await;

        // The leader's view (any master redirects to it).
        let mut state = None;
        for m in self.masters.iter().flatten() {
            if let Ok(s) = self.get(&format!("{}/master/state", m.url())).await {
                state = Some(s);
                break;
            }
        }
        let Some(state) = state else {
            failures.push("no master answers /master/state".into());
            return failures;
        };
        let mut master_running: BTreeMap<String, usize> = BTreeMap::new();
        for fw in state["frameworks"].as_array().cloned().unwrap_or_default() {
            for t in fw["tasks"].as_array().cloned().unwrap_or_default() {
                if t["state"] != "TASK_RUNNING" {
                    continue;
                }
                let id = t["id"].as_str().unwrap_or_default().to_string();
                *master_running.entry(id).or_default() += 1;
            }
        }
        for (id, n) in &master_running {
            if *n > 1 {
                failures.push(format!("task {id} RUNNING {n} times in /master/state"));
            }
        }
        let running: BTreeSet<String> = master_running.keys().cloned().collect();

        // The Marathon tasks are exactly what the master runs (batch runs have
        // finished by now: the runner stopped starting them). Their ports are
        // the only ones that may be held in the agents' ranges.
        let mut task_ports: BTreeSet<u16> = BTreeSet::new();
        if let Ok(apps) = self
            .get(&format!("{}/v2/apps?embed=apps.tasks", self.marathon.url))
            .await
        {
            let marathon: BTreeSet<String> = apps["apps"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["tasks"].as_array().cloned().unwrap_or_default())
                .filter_map(|t| {
                    for p in t["ports"].as_array().into_iter().flatten() {
                        if let Some(p) = p.as_u64().and_then(|p| u16::try_from(p).ok()) {
                            task_ports.insert(p);
                        }
                    }
                    t["id"].as_str().map(String::from)
                })
                .collect();
            if marathon != running {
                failures.push(format!(
                    "Marathon's tasks {marathon:?} != the master's RUNNING tasks {running:?}"
                ));
            }
        }

        // The agents' views: no task twice, same set as the master.
        let mut agent_running: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, a) in self.agents.iter().enumerate() {
            match self.get(&format!("{}/state", a.url())).await {
                Ok(s) => {
                    for fw in s["frameworks"].as_array().cloned().unwrap_or_default() {
                        for ex in fw["executors"].as_array().cloned().unwrap_or_default() {
                            for t in ex["tasks"].as_array().cloned().unwrap_or_default() {
                                if t["state"] == "TASK_RUNNING" {
                                    if let Some(id) = t["id"].as_str() {
                                        agent_running.entry(id.to_string()).or_default().push(i);
                                    }
                                }
                            }
                        }
                    }
                }
                Err(e) => failures.push(format!("agent {i} /state: {e:#}")),
            }
        }
        for (id, on) in &agent_running {
            if on.len() > 1 {
                failures.push(format!("task {id} RUNNING on agents {on:?}"));
            }
        }
        let agent_set: BTreeSet<String> = agent_running.keys().cloned().collect();
        if agent_set != running {
            failures.push(format!(
                "agents run {agent_set:?}, the master reports {running:?}"
            ));
        }

        // Acknowledged batch runs exist and have finished.
        let acked = self
            .acked_runs
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        // Finished runs may live only in the job's history after a restart.
        let job = self
            .get(&format!("{}/v1/jobs/{JOB}?embed=history", self.batch.url))
            .await
            .unwrap_or_default();
        let history = job["history"].to_string();
        // The history lists the newest KEPT_FINISHED_RUNS finished runs; older
        // ones remain only in its success and failure counts.
        let counted = job["history"]["successCount"].as_u64().unwrap_or(0)
            + job["history"]["failureCount"].as_u64().unwrap_or(0);
        let listed_from = acked.len().saturating_sub(mezzo_batch::KEPT_FINISHED_RUNS);
        for (i, run) in acked.iter().enumerate() {
            if history.contains(run.as_str()) {
                continue;
            }
            let url = format!("{}/v1/jobs/{JOB}/runs/{run}", self.batch.url);
            match self.get(&url).await {
                Ok(v) => {
                    let st = v["status"].as_str().unwrap_or_default();
                    if st != "SUCCESS" && st != "FAILED" {
                        failures.push(format!("batch run {run} not finished: {st}"));
                    }
                }
                // Rotated out of the bounded history, and counted there.
                Err(_) if i < listed_from && counted >= acked.len() as u64 => {}
                Err(e) => failures.push(format!("acknowledged batch run {run} lost: {e:#}")),
            }
        }
        if self
            .get(&format!("{}/v1/jobs/{JOB}", self.batch.url))
            .await
            .is_err()
        {
            failures.push(format!("job {JOB} lost"));
        }

        // Processes: every executor and task process belongs to a RUNNING task.
        let pids = all_proc_pids();
        for (i, a) in self.agents.iter().enumerate() {
            let wd = a.work_dir.path().display().to_string();
            for (pid, container) in self.executors(i) {
                match a.task_of_container(&container) {
                    Some(t) if running.contains(&t) => {}
                    t => failures.push(format!(
                        "executor pid {pid} on agent {i} (container {container}, task {t:?}) not of a RUNNING task"
                    )),
                }
            }
            for &pid in &pids {
                let Some(sandbox) = environ_var(pid, "MESOS_SANDBOX") else {
                    continue;
                };
                if !sandbox.starts_with(&wd) || cmdline(pid).contains(" executor --spec ") {
                    continue;
                }
                let task = environ_var(pid, "MESOS_TASK_ID").unwrap_or_default();
                if !running.contains(&task) {
                    failures.push(format!(
                        "process {pid} `{}` of task {task:?} on agent {i} outside what the cluster reports",
                        cmdline(pid).trim()
                    ));
                }
            }
            // Cgroups: only of live tasks.
            for cg in a.cgroups() {
                let container = cg
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                match a.task_of_container(&container) {
                    Some(t) if running.contains(&t) => {}
                    t => failures.push(format!(
                        "cgroup {} (task {t:?}) without a live task",
                        cg.display()
                    )),
                }
            }
        }

        // Ports: nothing listens in the agents' ranges but the RUNNING tasks.
        let listening = listening_ports();
        for a in &self.agents {
            for p in a.ports.0..=a.ports.1 {
                if listening.contains(&p) && !task_ports.contains(&p) {
                    failures.push(format!("port {p} held by a process no task owns"));
                }
            }
        }
        failures
    }
}

/// What a run found.
pub struct ChaosReport {
    /// The seed.
    pub seed: u64,
    /// The event log, rendered.
    pub events: String,
    /// The checks that did not hold at the end of the quiet period (empty: pass).
    pub failures: Vec<String>,
    /// Number of chaos events.
    pub n_events: usize,
    /// Acknowledged batch runs.
    pub acked_runs: usize,
    /// How long the quiet period took until every check held.
    pub settled_after: Option<Duration>,
}

impl ChaosReport {
    /// Fails with the seed, the event log and the failures unless all held.
    pub fn into_result(self) -> Result<()> {
        if self.failures.is_empty() {
            return Ok(());
        }
        bail!(
            "chaos run with MEZZO_CHAOS_SEED={} failed:\n{}\nevent log:\n{}replay: MEZZO_CHAOS_SEED={} (same MEZZO_CHAOS_SECS)",
            self.seed,
            self.failures
                .iter()
                .map(|f| format!("  - {f}\n"))
                .collect::<String>(),
            self.events,
            self.seed
        )
    }
}

/// Runs one chaos profile end to end; the report says what held.
pub async fn run(cfg: ChaosConfig) -> Result<ChaosReport> {
    println!(
        "chaos: MEZZO_CHAOS_SEED={} chaos {:?}, quiet up to {:?}",
        cfg.seed, cfg.chaos, cfg.quiet
    );
    let t0 = Instant::now();
    let mut c = Cluster::start(t0).await.context("starting the cluster")?;
    let mut rng = Rng::new(cfg.seed);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poster = c.start_run_poster(cfg.seed, stop.clone());
    let chaos_start = Instant::now();
    let mut n_events = 0;
    c.log
        .push(format!("chaos phase starts (seed {})", cfg.seed));
    while chaos_start.elapsed() < cfg.chaos {
        tokio::time::sleep(rng.millis(500, 3000)).await;
        c.ensure_up();
        // Each event draws from its own sub-generator, so the main sequence
        // (intervals, event kinds) does not shift with what an event found.
        c.event(&mut Rng::new(rng.next_u64())).await;
        n_events += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = poster.await;
    c.ensure_up();
    c.log.push("quiet period starts");
    let quiet_start = Instant::now();
    let deadline = quiet_start + cfg.quiet;
    let mut failures;
    let mut settled_after = None;
    loop {
        c.ensure_up();
        failures = c.check_all().await;
        if failures.is_empty() {
            // Hold for a second look: a transient agreement is not enough.
            tokio::time::sleep(Duration::from_secs(2)).await;
            failures = c.check_all().await;
            if failures.is_empty() {
                settled_after = Some(quiet_start.elapsed());
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match settled_after {
        Some(d) => c.log.push(format!(
            "all checks hold after {:.1}s of quiet",
            d.as_secs_f64()
        )),
        None => c
            .log
            .push("checks still failing at the end of the quiet period"),
    }
    let acked_runs = c.acked_runs.lock().map(|a| a.len()).unwrap_or_default();
    println!(
        "chaos: seed {} events {n_events} acknowledged batch runs {acked_runs}; checks: {}",
        cfg.seed,
        if failures.is_empty() {
            "all hold (apps RUNNING and healthy, no task twice, no run lost, no stray process, cgroup or port)".to_string()
        } else {
            failures.join("; ")
        }
    );
    Ok(ChaosReport {
        seed: cfg.seed,
        events: c.log.render(),
        failures,
        n_events,
        acked_runs,
        settled_after,
    })
}
