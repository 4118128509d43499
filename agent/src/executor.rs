//! The per-task executor (`mezzo executor --spec FILE`): a small process in
//! its own session that puts the task in its container, runs it, kills it
//! on request (SIGTERM, then SIGKILL after the grace period), works out how
//! it ended (exit code, signal, OOM kill), removes the container, and
//! reports every state to the agent until the agent acknowledges it.
//!
//! It runs on a single-threaded runtime so that joining the cgroup between
//! fork and exec happens in a process without other threads. The task gets
//! `PR_SET_PDEATHSIG` (SIGKILL) in the same window, so it dies with the
//! executor; whatever the task forked is the agent's to sweep.

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mezzo_isolators::{Container, IsolationKind, IsolatorConfig, Limits};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::protocol::{ExecUpdate, ExecutorSpec, FromExecutor, ToExecutor};
use crate::AgentError;

/// Entry point of `mezzo executor`. Returns the process exit code.
pub fn main(spec_path: &Path) -> Result<i32, AgentError> {
    let text = std::fs::read_to_string(spec_path).map_err(|e| AgentError::io(spec_path, e))?;
    let spec: ExecutorSpec = serde_json::from_str(&text).map_err(|e| {
        AgentError::Config(format!(
            "invalid executor spec {}: {e}",
            spec_path.display()
        ))
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::io(Path::new("tokio runtime"), e))?;
    rt.block_on(run(spec))
}

fn update(state: &str, message: impl Into<String>, reason: &str) -> ExecUpdate {
    ExecUpdate {
        uuid: uuid::Uuid::new_v4().to_string(),
        state: state.into(),
        message: message.into(),
        reason: reason.into(),
        exit_code: None,
        healthy: None,
        timestamp: mezzo_proto::now_secs(),
    }
}

/// How the task process ended.
struct Outcome {
    update: ExecUpdate,
}

async fn run(spec: ExecutorSpec) -> Result<i32, AgentError> {
    let (link_tx, mut kill_rx, link) = AgentLink::start(spec.clone());
    link_tx.send(update("TASK_STARTING", "", "REASON_NONE"));

    let container = match prepare_container(&spec) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "container preparation failed");
            let u = update(
                "TASK_FAILED",
                format!("Failed to prepare the container: {e}"),
                "REASON_CONTAINER_LAUNCH_FAILED",
            );
            link_tx.send(u);
            link.finish().await;
            return Ok(1);
        }
    };

    let mut child = match spawn_task(&spec, container.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "task launch failed");
            cleanup(container.as_deref(), None);
            let u = update(
                "TASK_FAILED",
                format!("Failed to launch the command: {e}"),
                "REASON_CONTAINER_LAUNCH_FAILED",
            );
            link_tx.send(u);
            link.finish().await;
            return Ok(1);
        }
    };
    let pid = child.id().map(|p| p as i32);
    if let Some(pid) = pid {
        let pid_file = Path::new(&spec.sandbox)
            .join("..")
            .join(format!("{}.pid", spec.container_id));
        // Best effort: the pid file only helps operators.
        let _ = std::fs::write(pid_file, pid.to_string());
    }
    info!(task.id = %spec.task_id, pid = ?pid, "task started");
    link_tx.send(update("TASK_RUNNING", "", "REASON_NONE"));
    let health = start_health_checks(&spec, &link_tx);

    let mut kill_deadline: Option<Instant> = None;
    let mut killed_by_us = false;
    let status = loop {
        let sleep_until =
            kill_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            st = child.wait() => break st,
            Some(grace) = kill_rx.recv(), if kill_deadline.is_none() => {
                killed_by_us = true;
                let grace = grace.unwrap_or(spec.kill_grace_seconds).clamp(0.0, 3600.0);
                info!(task.id = %spec.task_id, grace, "killing task: SIGTERM");
                link_tx.send(update("TASK_KILLING", "", "REASON_NONE"));
                signal_all(pid, container.as_deref(), libc::SIGTERM);
                kill_deadline = Some(Instant::now() + Duration::from_secs_f64(grace));
            }
            _ = tokio::time::sleep_until(sleep_until), if kill_deadline.is_some() => {
                info!(task.id = %spec.task_id, "grace period over: SIGKILL");
                signal_all(pid, container.as_deref(), libc::SIGKILL);
                kill_deadline = Some(Instant::now() + Duration::from_secs(3600));
            }
        }
    };
    if let Some(h) = health {
        h.abort();
    }
    // Processes the task left behind die with it.
    signal_all(pid, container.as_deref(), libc::SIGKILL);
    let oom = container.as_deref().is_some_and(|c| c.oom_killed());
    cleanup(container.as_deref(), pid);
    let outcome = classify(status, killed_by_us, oom, &spec);
    info!(task.id = %spec.task_id, state = %outcome.update.state, message = %outcome.update.message, "task ended");
    link_tx.send(outcome.update);
    link.finish().await;
    Ok(0)
}

/// Runs the task's health check beside it, reporting each change of
/// health as a TASK_RUNNING update.
fn start_health_checks(
    spec: &ExecutorSpec,
    link_tx: &LinkSender,
) -> Option<tokio::task::JoinHandle<()>> {
    spec.health_check.clone().map(|hc| {
        let tx = link_tx.clone();
        tokio::spawn(crate::health::run(
            hc,
            spec.sandbox.clone(),
            spec.env.clone(),
            move |healthy, why| {
                let msg = if healthy {
                    "Health check passed".to_string()
                } else {
                    format!("Health check failed: {why}")
                };
                let mut u = update(
                    "TASK_RUNNING",
                    msg,
                    "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
                );
                u.healthy = Some(healthy);
                tx.send(u);
            },
        ))
    })
}

fn prepare_container(spec: &ExecutorSpec) -> Result<Option<Box<dyn Container>>, AgentError> {
    let kind: IsolationKind = spec
        .isolation
        .parse()
        .map_err(|e| AgentError::Config(format!("{e}")))?;
    let iso = mezzo_isolators::create(&IsolatorConfig {
        kind,
        cgroups_root: spec.cgroups_root.clone(),
        enable_cfs: spec.enable_cfs,
    })
    .map_err(|e| AgentError::Isolation(e.to_string()))?;
    if kind == IsolationKind::Posix {
        return Ok(None);
    }
    let limits = Limits {
        cpus: spec.cpus,
        mem_mb: spec.mem_mb,
        pids_max: spec.pids_max,
    };
    // A leftover container of the same id (crashed executor) is replaced.
    if let Ok(Some(old)) = iso.recover(&spec.container_id) {
        let _ = old.kill_all();
        let _ = old.destroy();
    }
    let c = iso
        .prepare(&spec.container_id, &limits)
        .map_err(|e| AgentError::Isolation(e.to_string()))?;
    Ok(Some(c))
}

fn spawn_task(
    spec: &ExecutorSpec,
    container: Option<&dyn Container>,
) -> Result<tokio::process::Child, AgentError> {
    let sandbox = PathBuf::from(&spec.sandbox);
    let open = |name: &str| {
        let p = sandbox.join(name);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| AgentError::io(&p, e))
    };
    let stdout = open("stdout")?;
    let stderr = open("stderr")?;
    let mut cmd = if spec.shell {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(&spec.value);
        c
    } else {
        let mut c = tokio::process::Command::new(&spec.value);
        if let Some((argv0, rest)) = spec.arguments.split_first() {
            c.arg0(argv0);
            c.args(rest);
        }
        c
    };
    cmd.current_dir(&sandbox)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        // Its own process group, so a kill reaches the whole tree even
        // without cgroups.
        .process_group(0)
        .kill_on_drop(false);
    if !spec.user.is_empty() {
        let (uid, gid) = lookup_user(&spec.user)?;
        cmd.uid(uid).gid(gid);
    }
    let procs: Vec<CString> = container
        .map(|c| c.procs_files())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| CString::new(p.into_os_string().into_encoded_bytes()).ok())
        .collect();
    // Read before the fork: the child compares it with its parent after
    // arming the death signal.
    let executor_pid = std::process::id() as libc::pid_t;
    // SAFETY: the closure only calls `die_with_parent` (prctl, getppid) and
    // `join_in_child` (open/write/close on pre-built C strings), all
    // async-signal-safe, and the executor is single-threaded.
    unsafe {
        cmd.pre_exec(move || {
            die_with_parent(executor_pid)?;
            mezzo_isolators::join_in_child(&procs)
        });
    }
    cmd.spawn()
        .map_err(|e| AgentError::io(Path::new(&spec.value), e))
}

/// In the forked child, before exec: the task gets SIGKILL when the
/// executor dies, so a crashed or killed executor does not leave its task
/// running unmanaged (the agent's sweep then catches the task's own
/// children, which this does not reach). It runs after the uid change
/// `Command` makes, which would otherwise clear it. If the executor died
/// before the signal was armed, the child is already an orphan: it fails
/// instead of exec'ing.
fn die_with_parent(executor_pid: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and no
    // pointers; getppid has no preconditions.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != executor_pid {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

fn lookup_user(name: &str) -> Result<(u32, u32), AgentError> {
    let c = CString::new(name)
        .map_err(|_| AgentError::Config(format!("invalid user name '{name}'")))?;
    // SAFETY: getpwnam returns a pointer into static storage or NULL; we
    // copy the two ids out immediately and the executor is single-threaded.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return Err(AgentError::Config(format!(
            "user '{name}' does not exist on this agent"
        )));
    }
    // SAFETY: non-null pointer from getpwnam, see above.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok((uid, gid))
}

fn signal_all(pid: Option<i32>, container: Option<&dyn Container>, sig: i32) {
    if let Some(pid) = pid {
        // SAFETY: plain syscall; a stale pgid yields ESRCH, which is fine.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
    if let Some(c) = container {
        if sig == libc::SIGKILL {
            if let Err(e) = c.kill_all() {
                warn!(error = %e, "kill_all failed");
            }
        } else {
            for p in c.pids() {
                // SAFETY: plain syscall on a pid read from the cgroup.
                unsafe {
                    libc::kill(p, sig);
                }
            }
        }
    }
}

fn cleanup(container: Option<&dyn Container>, pid: Option<i32>) {
    signal_all(pid, container, libc::SIGKILL);
    if let Some(c) = container {
        // Emptying the cgroup after SIGKILL can take a moment.
        for _ in 0..50 {
            match c.destroy() {
                Ok(()) => return,
                Err(e) => {
                    debug!(error = %e, "cgroup not yet removable");
                    let _ = c.kill_all();
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        warn!(container = %c.id(), "could not remove the container's cgroup");
    }
}

fn classify(
    status: std::io::Result<std::process::ExitStatus>,
    killed_by_us: bool,
    oom: bool,
    spec: &ExecutorSpec,
) -> Outcome {
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                update: update(
                    "TASK_FAILED",
                    format!("Failed to wait for the command: {e}"),
                    "REASON_COMMAND_EXECUTOR_FAILED",
                ),
            }
        }
    };
    if oom {
        let mut u = update(
            "TASK_FAILED",
            format!("Memory limit exceeded: the task exceeded its {} MB limit and was killed by the OOM killer", spec.mem_mb),
            "REASON_CONTAINER_LIMITATION_MEMORY",
        );
        u.exit_code = status.code();
        return Outcome { update: u };
    }
    if killed_by_us {
        let mut u = update(
            "TASK_KILLED",
            "Command terminated by a kill request",
            "REASON_NONE",
        );
        u.exit_code = status.code();
        return Outcome { update: u };
    }
    match (status.code(), status.signal()) {
        (Some(0), _) => {
            let mut u = update(
                "TASK_FINISHED",
                "Command exited with status 0",
                "REASON_NONE",
            );
            u.exit_code = Some(0);
            Outcome { update: u }
        }
        (Some(code), _) => {
            let mut u = update(
                "TASK_FAILED",
                format!("Command exited with status {code}"),
                "REASON_COMMAND_EXECUTOR_FAILED",
            );
            u.exit_code = Some(code);
            Outcome { update: u }
        }
        (None, Some(sig)) => Outcome {
            update: update(
                "TASK_FAILED",
                format!("Command terminated with signal {sig}"),
                "REASON_COMMAND_EXECUTOR_FAILED",
            ),
        },
        (None, None) => Outcome {
            update: update(
                "TASK_FAILED",
                "Command ended in an unknown way",
                "REASON_COMMAND_EXECUTOR_FAILED",
            ),
        },
    }
}

/// The executor's side of the agent connection: keeps every update until
/// the agent acks it, re-sending all of them on each (re)connect.
struct AgentLink {
    done: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct LinkSender(mpsc::UnboundedSender<ExecUpdate>);

impl LinkSender {
    fn send(&self, u: ExecUpdate) {
        // The link task only ends when the executor is finishing.
        let _ = self.0.send(u);
    }
}

impl AgentLink {
    fn start(spec: ExecutorSpec) -> (LinkSender, mpsc::UnboundedReceiver<Option<f64>>, AgentLink) {
        let (utx, urx) = mpsc::unbounded_channel();
        let (ktx, krx) = mpsc::unbounded_channel();
        let done = tokio::spawn(link_loop(Arc::new(spec), urx, ktx));
        (LinkSender(utx), krx, AgentLink { done })
    }

    /// Waits until every update (including the terminal one) is acked, or
    /// the recovery timeout passes without an agent.
    async fn finish(self) {
        let _ = self.done.await;
    }
}

async fn link_loop(
    spec: Arc<ExecutorSpec>,
    mut updates: mpsc::UnboundedReceiver<ExecUpdate>,
    kills: mpsc::UnboundedSender<Option<f64>>,
) {
    let mut pending: VecDeque<ExecUpdate> = VecDeque::new();
    let mut terminal_queued = false;
    let recovery = Duration::from_secs_f64(spec.recovery_timeout_seconds.max(1.0));
    let mut last_connected = Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        if terminal_queued && pending.is_empty() {
            return;
        }
        let stream = match UnixStream::connect(&spec.agent_socket).await {
            Ok(s) => s,
            Err(e) => {
                if last_connected.elapsed() > recovery {
                    warn!(error = %e, "agent did not come back within the recovery timeout; exiting");
                    // Nobody will ever kill us: make sure the task dies too.
                    if !terminal_queued {
                        let _ = kills.send(Some(0.0));
                    }
                    return;
                }
                // Collect updates produced meanwhile.
                while let Ok(u) = updates.try_recv() {
                    terminal_queued |= mezzo_proto::is_terminal_name(&u.state);
                    pending.push_back(u);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let (rd, mut wr) = stream.into_split();
        let mut lines = BufReader::new(rd).lines();
        let reg = FromExecutor::Register {
            container_id: spec.container_id.clone(),
            pid: std::process::id(),
        };
        if write_msg(&mut wr, &reg).await.is_err() {
            continue;
        }
        let mut ok = true;
        for u in &pending {
            if write_msg(&mut wr, &FromExecutor::Update { update: u.clone() })
                .await
                .is_err()
            {
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        loop {
            if terminal_queued && pending.is_empty() {
                return;
            }
            tokio::select! {
                u = updates.recv() => match u {
                    Some(u) => {
                        terminal_queued |= mezzo_proto::is_terminal_name(&u.state);
                        pending.push_back(u.clone());
                        if write_msg(&mut wr, &FromExecutor::Update { update: u }).await.is_err() {
                            break;
                        }
                    }
                    None => {
                        // The executor gave up producing updates; drain acks.
                        if pending.is_empty() { return; }
                        terminal_queued = true;
                    }
                },
                line = lines.next_line() => match line {
                    Ok(Some(line)) => match serde_json::from_str::<ToExecutor>(&line) {
                        Ok(ToExecutor::Ack { uuid }) => pending.retain(|u| u.uuid != uuid),
                        Ok(ToExecutor::Kill { grace_period_seconds }) => {
                            let _ = kills.send(grace_period_seconds);
                        }
                        Err(e) => warn!(error = %e, "bad message from agent"),
                    },
                    _ => break,
                },
            }
        }
        last_connected = Instant::now();
        debug!("lost the agent connection; reconnecting");
    }
}

async fn write_msg(
    wr: &mut tokio::net::unix::OwnedWriteHalf,
    msg: &FromExecutor,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    wr.write_all(&line).await
}
