//! The agent actor: owns the agent's tasks and their status-update streams,
//! talks to the master over one gRPC stream and to executors over a Unix
//! socket.
//!
//! Reliable status updates: each task has an ordered stream of updates; the
//! head is sent to the master and re-sent every retry interval until the
//! framework's acknowledgement comes back, then the next one goes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::v1::{self, agent_message, master_message};
use mezzo_proto::Resources;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, info, warn};

use crate::protocol::{ExecUpdate, ExecutorSpec, FromExecutor, ToExecutor};
use crate::{AgentConfig, AgentError};

type ExecTx = mpsc::UnboundedSender<ToExecutor>;
type MasterTx = mpsc::UnboundedSender<v1::AgentMessage>;

enum Event {
    BuildRegister(oneshot::Sender<v1::RegisterAgent>),
    MasterConnected {
        agent_id: String,
        epoch: u64,
        tx: MasterTx,
    },
    MasterMessage(Box<v1::MasterMessage>),
    MasterDisconnected,
    ExecutorRegistered {
        container_id: String,
        tx: ExecTx,
    },
    ExecutorUpdate {
        container_id: String,
        update: ExecUpdate,
    },
    ExecutorDisconnected {
        container_id: String,
    },
    ExecutorExited {
        container_id: String,
        status: Option<i32>,
    },
}

struct PendingUpdate {
    status: v1::TaskStatus,
    sent_at: Option<Instant>,
}

struct TaskEntry {
    framework_id: String,
    info: v1::TaskInfo,
    state: v1::TaskState,
    container_id: String,
    updates: VecDeque<PendingUpdate>,
    executor: Option<ExecTx>,
    kill_pending: Option<Option<f64>>,
    executor_exited: bool,
    /// Pid of an executor found alive at recovery (not our child, so its
    /// death is noticed by polling rather than by `wait`).
    recovered_pid: Option<i32>,
}

struct Agent {
    config: Arc<AgentConfig>,
    info: v1::AgentInfo,
    agent_id: String,
    epoch: u64,
    master: Option<MasterTx>,
    frameworks: HashMap<String, v1::FrameworkInfo>,
    // Keyed by (framework id, task id).
    tasks: BTreeMap<(String, String), TaskEntry>,
    containers: HashMap<String, (String, String)>,
    events: mpsc::UnboundedSender<Event>,
    /// Published for the HTTP API after each event.
    view: watch::Sender<crate::http::AgentView>,
    /// Tasks forgotten after their terminal update was acknowledged, for
    /// `/state` (bounded, oldest dropped first).
    completed: VecDeque<crate::http::TaskView>,
}

/// How many forgotten tasks `/state` keeps showing.
const MAX_COMPLETED_TASKS: usize = 1000;

/// Runs the agent until it fails fatally.
pub(crate) async fn run(
    config: AgentConfig,
    info: v1::AgentInfo,
    view: watch::Sender<crate::http::AgentView>,
) -> Result<(), AgentError> {
    let config = Arc::new(config);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let socket = config.work_dir.join("agent.sock");
    if socket.as_os_str().len() > 100 {
        return Err(AgentError::Config(format!(
            "--work-dir is too long for a Unix socket path: {}",
            socket.display()
        )));
    }
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|e| AgentError::io(&socket, e))?;
    tokio::spawn(accept_executors(listener, ev_tx.clone()));
    let agent_id = read_agent_id(&config.work_dir);
    let mut agent = Agent {
        config: config.clone(),
        info,
        agent_id,
        epoch: 0,
        master: None,
        frameworks: HashMap::new(),
        tasks: BTreeMap::new(),
        containers: HashMap::new(),
        events: ev_tx.clone(),
        view,
        completed: VecDeque::new(),
    };
    agent.recover();
    agent.publish();
    tokio::spawn(master_loop(config.clone(), ev_tx.clone()));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = ev_rx.recv() => match ev {
                Some(ev) => {
                    agent.handle(ev);
                    agent.publish();
                }
                None => return Ok(()),
            },
            _ = tick.tick() => {
                agent.retry_updates();
                agent.check_recovered_executors();
            }
        }
    }
}

fn read_agent_id(work_dir: &Path) -> String {
    std::fs::read_to_string(work_dir.join("meta").join("agent_id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Agent {
    fn task_view(&self, t: &TaskEntry) -> crate::http::TaskView {
        crate::http::TaskView {
            framework_id: t.framework_id.clone(),
            info: t.info.clone(),
            state: t.state,
            container_id: t.container_id.clone(),
            directory: sandbox_dir(
                &self.config.work_dir,
                &t.framework_id,
                &t.info.task_id,
                &t.container_id,
            ),
            executor_running: !t.executor_exited,
        }
    }

    /// Publishes what the HTTP API shows.
    fn publish(&self) {
        let view = crate::http::AgentView {
            agent_id: self.agent_id.clone(),
            registered: self.master.is_some(),
            frameworks: self.frameworks.values().cloned().collect(),
            tasks: self.tasks.values().map(|t| self.task_view(t)).collect(),
            completed: self.completed.iter().cloned().collect(),
        };
        self.view.send_replace(view);
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::BuildRegister(reply) => {
                let _ = reply.send(self.register_message());
            }
            Event::MasterConnected {
                agent_id,
                epoch,
                tx,
            } => {
                if epoch < self.epoch {
                    warn!(
                        epoch,
                        current = self.epoch,
                        "ignoring registration from a stale master"
                    );
                    return;
                }
                self.epoch = epoch;
                if agent_id != self.agent_id {
                    self.agent_id = agent_id.clone();
                    let meta = self.config.work_dir.join("meta");
                    if let Err(e) = std::fs::create_dir_all(&meta)
                        .and_then(|_| std::fs::write(meta.join("agent_id"), &agent_id))
                    {
                        warn!(error = %e, "cannot checkpoint the agent id");
                    }
                }
                info!(agent.id = %agent_id, epoch, "registered with master");
                self.master = Some(tx);
                // Re-send every stream's head now rather than at the next retry.
                for t in self.tasks.values_mut() {
                    if let Some(h) = t.updates.front_mut() {
                        h.sent_at = None;
                    }
                }
                self.retry_updates();
            }
            Event::MasterDisconnected => {
                self.master = None;
            }
            Event::MasterMessage(msg) => {
                if msg.epoch < self.epoch {
                    debug!(
                        epoch = msg.epoch,
                        current = self.epoch,
                        "dropping message from a stale master"
                    );
                    return;
                }
                if let Some(m) = msg.message {
                    self.master_message(m);
                }
            }
            Event::ExecutorRegistered { container_id, tx } => {
                let Some(key) = self.containers.get(&container_id).cloned() else {
                    warn!(container = %container_id, "unknown executor registered");
                    return;
                };
                if let Some(t) = self.tasks.get_mut(&key) {
                    if let Some(grace) = t.kill_pending.take() {
                        let _ = tx.send(ToExecutor::Kill {
                            grace_period_seconds: grace,
                        });
                    }
                    t.executor = Some(tx);
                }
            }
            Event::ExecutorUpdate {
                container_id,
                update,
            } => self.executor_update(&container_id, update),
            Event::ExecutorDisconnected { container_id } => {
                if let Some(key) = self.containers.get(&container_id) {
                    if let Some(t) = self.tasks.get_mut(key) {
                        t.executor = None;
                    }
                }
            }
            Event::ExecutorExited {
                container_id,
                status,
            } => {
                let Some(key) = self.containers.get(&container_id).cloned() else {
                    return;
                };
                let Some(t) = self.tasks.get_mut(&key) else {
                    return;
                };
                t.executor_exited = true;
                t.recovered_pid = None;
                if !t.state.is_terminal()
                    && !t
                        .updates
                        .iter()
                        .any(|u| mezzo_proto::task_state(&u.status).is_terminal())
                {
                    warn!(task.id = %key.1, ?status, "executor exited before its task ended");
                    let st = self.status(
                        &key,
                        v1::TaskState::TaskFailed,
                        "Executor terminated unexpectedly",
                        v1::StatusReason::ReasonExecutorTerminated,
                        None,
                    );
                    self.enqueue(&key, st);
                }
                self.checkpoint(&key);
                self.maybe_forget(&key);
            }
        }
    }

    fn register_message(&self) -> v1::RegisterAgent {
        let tasks = self
            .tasks
            .values()
            .map(|t| v1::TaskAndState {
                framework_id: t.framework_id.clone(),
                task: Some(t.info.clone()),
                state: t.state as i32,
            })
            .collect();
        v1::RegisterAgent {
            info: Some(v1::AgentInfo {
                id: self.agent_id.clone(),
                ..self.info.clone()
            }),
            tasks,
            frameworks: self.frameworks.values().cloned().collect(),
        }
    }

    fn master_message(&mut self, m: master_message::Message) {
        match m {
            master_message::Message::Registered(_) => {}
            master_message::Message::Ping(_) => {
                self.send_master(agent_message::Message::Heartbeat(v1::Heartbeat {}))
            }
            master_message::Message::RunTask(run) => self.run_task(run),
            master_message::Message::KillTask(k) => {
                self.kill_task(&k.framework_id, &k.task_id, k.grace_period_seconds)
            }
            master_message::Message::ShutdownFramework(s) => {
                let keys: Vec<(String, String)> = self
                    .tasks
                    .keys()
                    .filter(|k| k.0 == s.framework_id)
                    .cloned()
                    .collect();
                for k in keys {
                    self.kill_task(&k.0, &k.1, None);
                }
            }
            master_message::Message::Acknowledge(a) => {
                let key = (a.framework_id.clone(), a.task_id.clone());
                let Some(t) = self.tasks.get_mut(&key) else {
                    return;
                };
                if t.updates.front().is_some_and(|h| h.status.uuid == a.uuid) {
                    t.updates.pop_front();
                    self.checkpoint(&key);
                    let Some(t) = self.tasks.get_mut(&key) else {
                        return;
                    };
                    debug!(task.id = %a.task_id, "status update acknowledged");
                    if let Some(next) = t.updates.front_mut() {
                        next.sent_at = None;
                    }
                    self.retry_updates();
                    self.maybe_forget(&key);
                }
            }
            master_message::Message::Error(e) => warn!(error = %e, "master reported an error"),
        }
    }

    fn send_master(&self, m: agent_message::Message) {
        if let Some(tx) = &self.master {
            let _ = tx.send(v1::AgentMessage { message: Some(m) });
        }
    }

    fn run_task(&mut self, run: v1::RunTask) {
        let Some(task) = run.task else { return };
        let framework = run.framework.unwrap_or_default();
        let key = (framework.id.clone(), task.task_id.clone());
        if self.tasks.contains_key(&key) {
            warn!(task.id = %task.task_id, "duplicate RunTask ignored");
            return;
        }
        self.frameworks
            .insert(framework.id.clone(), framework.clone());
        let container_id = uuid::Uuid::new_v4().to_string();
        info!(framework.id = %framework.id, task.id = %task.task_id, container = %container_id, "launching task");
        self.containers.insert(container_id.clone(), key.clone());
        self.tasks.insert(
            key.clone(),
            TaskEntry {
                framework_id: framework.id.clone(),
                info: task.clone(),
                state: v1::TaskState::TaskStaging,
                container_id: container_id.clone(),
                updates: VecDeque::new(),
                executor: None,
                kill_pending: None,
                executor_exited: false,
                recovered_pid: None,
            },
        );
        self.checkpoint(&key);
        if let Err(e) = self.launch_executor(&framework, &task, &container_id) {
            warn!(task.id = %task.task_id, error = %e, "cannot launch the executor");
            let st = self.status(
                &key,
                v1::TaskState::TaskFailed,
                &format!("Failed to launch the executor: {e}"),
                v1::StatusReason::ReasonContainerLaunchFailed,
                None,
            );
            self.enqueue(&key, st);
            if let Some(t) = self.tasks.get_mut(&key) {
                t.executor_exited = true;
            }
        }
    }

    fn launch_executor(
        &self,
        framework: &v1::FrameworkInfo,
        task: &v1::TaskInfo,
        container_id: &str,
    ) -> Result<(), AgentError> {
        let sandbox = sandbox_dir(
            &self.config.work_dir,
            &framework.id,
            &task.task_id,
            container_id,
        );
        std::fs::create_dir_all(&sandbox).map_err(|e| AgentError::io(&sandbox, e))?;
        let resources = Resources::from_proto(&task.resources);
        let command = task.command.clone().unwrap_or_default();
        let ports: Vec<u64> = resources.ranges("ports").values().collect();
        let mut env: Vec<(String, String)> = vec![
            ("MESOS_SANDBOX".into(), sandbox.display().to_string()),
            ("MESOS_TASK_ID".into(), task.task_id.clone()),
            ("MESOS_FRAMEWORK_ID".into(), framework.id.clone()),
            ("MESOS_AGENT_ID".into(), self.agent_id.clone()),
            ("MESOS_CONTAINER_ID".into(), container_id.to_string()),
            ("HOST".into(), self.info.hostname.clone()),
            ("HOME".into(), sandbox.display().to_string()),
            (
                "PORTS".into(),
                ports
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ];
        for (i, p) in ports.iter().enumerate() {
            env.push((format!("PORT{i}"), p.to_string()));
        }
        if let Some(p) = ports.first() {
            env.push(("PORT".into(), p.to_string()));
        }
        env.extend(
            command
                .environment
                .iter()
                .map(|e| (e.name.clone(), e.value.clone())),
        );
        let spec = ExecutorSpec {
            container_id: container_id.to_string(),
            framework_id: framework.id.clone(),
            task_id: task.task_id.clone(),
            agent_id: self.agent_id.clone(),
            agent_socket: self
                .config
                .work_dir
                .join("agent.sock")
                .display()
                .to_string(),
            sandbox: sandbox.display().to_string(),
            shell: command.shell || command.arguments.is_empty(),
            value: command.value.clone(),
            arguments: command.arguments.clone(),
            env,
            user: if command.user.is_empty() {
                self.config.default_user.clone()
            } else {
                command.user.clone()
            },
            cpus: resources.scalar("cpus"),
            mem_mb: resources.scalar("mem"),
            pids_max: self.config.pids_max,
            isolation: self.config.isolation.to_string(),
            cgroups_root: self.config.cgroups_root.clone(),
            enable_cfs: self.config.enable_cfs,
            kill_grace_seconds: task.kill_grace_period_seconds.unwrap_or(3.0),
            recovery_timeout_seconds: self.config.recovery_timeout.as_secs_f64(),
            health_check: task.health_check.as_ref().and_then(health_spec),
        };
        let run_dir = self.config.work_dir.join("runs").join(container_id);
        std::fs::create_dir_all(&run_dir).map_err(|e| AgentError::io(&run_dir, e))?;
        let spec_path = run_dir.join("executor.json");
        let body =
            serde_json::to_vec_pretty(&spec).map_err(|e| AgentError::Config(e.to_string()))?;
        std::fs::write(&spec_path, body).map_err(|e| AgentError::io(&spec_path, e))?;
        let log_path = run_dir.join("executor.log");
        let log = std::fs::File::create(&log_path).map_err(|e| AgentError::io(&log_path, e))?;
        let log2 = log.try_clone().map_err(|e| AgentError::io(&log_path, e))?;
        let mut cmd = tokio::process::Command::new(&self.config.executor_binary);
        cmd.arg("executor")
            .arg("--spec")
            .arg(&spec_path)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .kill_on_drop(false);
        // SAFETY: setsid is async-signal-safe; it puts the executor in its
        // own session so it survives the agent (and its terminal) going away.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| AgentError::io(&self.config.executor_binary, e))?;
        if let Some(pid) = child.id() {
            let pid_path = run_dir.join("executor.pid");
            std::fs::write(&pid_path, pid.to_string()).map_err(|e| AgentError::io(&pid_path, e))?;
        }
        let events = self.events.clone();
        let cid = container_id.to_string();
        // Reap the executor while we live; after an agent restart init does.
        tokio::spawn(async move {
            let status = child.wait().await.ok().and_then(|s| s.code());
            let _ = events.send(Event::ExecutorExited {
                container_id: cid,
                status,
            });
        });
        Ok(())
    }

    fn kill_task(&mut self, framework_id: &str, task_id: &str, grace: Option<f64>) {
        let key = (framework_id.to_string(), task_id.to_string());
        let Some(t) = self.tasks.get_mut(&key) else {
            debug!(task.id = %task_id, "kill for a task this agent does not have");
            return;
        };
        if t.state.is_terminal() || t.executor_exited {
            return;
        }
        match &t.executor {
            Some(tx) => {
                let _ = tx.send(ToExecutor::Kill {
                    grace_period_seconds: grace,
                });
            }
            None => t.kill_pending = Some(grace),
        }
    }

    fn executor_update(&mut self, container_id: &str, u: ExecUpdate) {
        let Some(key) = self.containers.get(container_id).cloned() else {
            return;
        };
        let Some(t) = self.tasks.get_mut(&key) else {
            return;
        };
        let uuid = uuid::Uuid::parse_str(&u.uuid)
            .map(|x| x.as_bytes().to_vec())
            .unwrap_or_default();
        let executor = t.executor.clone();
        // Duplicates after an executor reconnect are expected: they are
        // acked again but not queued twice.
        let fresh = !uuid.is_empty()
            && !t.updates.iter().any(|p| p.status.uuid == uuid)
            && !t.state.is_terminal();
        if fresh {
            let state =
                v1::TaskState::from_str_name(&u.state).unwrap_or(v1::TaskState::TaskUnknown);
            let reason =
                v1::StatusReason::from_str_name(&u.reason).unwrap_or(v1::StatusReason::ReasonNone);
            let mut st = self.status(&key, state, &u.message, reason, u.exit_code);
            st.uuid = uuid;
            st.timestamp = u.timestamp;
            st.healthy = u.healthy;
            // Checkpointed by enqueue before the executor hears the ack, so
            // an acked update is never only in memory.
            self.enqueue(&key, st);
        }
        if let Some(tx) = executor {
            let _ = tx.send(ToExecutor::Ack { uuid: u.uuid });
        }
    }

    fn status(
        &self,
        key: &(String, String),
        state: v1::TaskState,
        message: &str,
        reason: v1::StatusReason,
        exit_code: Option<i32>,
    ) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: key.1.clone(),
            state: state as i32,
            message: message.to_string(),
            source: v1::StatusSource::SourceExecutor as i32,
            reason: reason as i32,
            agent_id: self.agent_id.clone(),
            executor_id: key.1.clone(),
            timestamp: mezzo_proto::now_secs(),
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            healthy: None,
            exit_code,
            framework_id: key.0.clone(),
        }
    }

    fn enqueue(&mut self, key: &(String, String), status: v1::TaskStatus) {
        let Some(t) = self.tasks.get_mut(key) else {
            return;
        };
        t.state = mezzo_proto::task_state(&status);
        debug!(task.id = %key.1, state = ?t.state, "queueing status update");
        t.updates.push_back(PendingUpdate {
            status,
            sent_at: None,
        });
        self.checkpoint(key);
        self.retry_updates();
    }

    /// Sends each stream's head if it was never sent or its retry is due.
    fn retry_updates(&mut self) {
        let Some(tx) = self.master.clone() else {
            return;
        };
        let now = Instant::now();
        let interval = self.config.status_update_retry_interval;
        for t in self.tasks.values_mut() {
            let Some(head) = t.updates.front_mut() else {
                continue;
            };
            if head
                .sent_at
                .is_some_and(|at| now.duration_since(at) < interval)
            {
                continue;
            }
            if head.sent_at.is_some() {
                debug!(task.id = %t.info.task_id, "re-sending unacknowledged status update");
            }
            head.sent_at = Some(now);
            let _ = tx.send(v1::AgentMessage {
                message: Some(agent_message::Message::StatusUpdate(v1::StatusUpdate {
                    framework_id: t.framework_id.clone(),
                    status: Some(head.status.clone()),
                })),
            });
        }
    }

    /// A task whose terminal update was acknowledged and whose executor is
    /// gone is forgotten.
    fn maybe_forget(&mut self, key: &(String, String)) {
        let Some(t) = self.tasks.get(key) else { return };
        if t.state.is_terminal() && t.updates.is_empty() && t.executor_exited {
            let done = self.task_view(t);
            self.completed.push_back(done);
            while self.completed.len() > MAX_COMPLETED_TASKS {
                self.completed.pop_front();
            }
            let Some(t) = self.tasks.get(key) else { return };
            let cid = t.container_id.clone();
            self.tasks.remove(key);
            self.containers.remove(&cid);
            let run_dir = self.config.work_dir.join("runs").join(&cid);
            let _ = std::fs::remove_file(run_dir.join("executor.json"));
            let _ = std::fs::remove_file(self.checkpoint_path(&cid));
        }
    }

    fn checkpoint_path(&self, container_id: &str) -> PathBuf {
        self.config
            .work_dir
            .join("meta")
            .join("tasks")
            .join(format!("{container_id}.pb"))
    }

    /// Writes the task's checkpoint (temp file, fsync, rename), so a
    /// restarted agent knows its tasks and their unacknowledged updates.
    fn checkpoint(&self, key: &(String, String)) {
        let Some(t) = self.tasks.get(key) else { return };
        let record = v1::CheckpointedTask {
            framework: self.frameworks.get(&t.framework_id).cloned(),
            task: Some(t.info.clone()),
            state: t.state as i32,
            container_id: t.container_id.clone(),
            pending_updates: t.updates.iter().map(|u| u.status.clone()).collect(),
            executor_exited: t.executor_exited,
        };
        let path = self.checkpoint_path(&t.container_id);
        if let Err(e) = write_atomic(&path, &prost::Message::encode_to_vec(&record)) {
            warn!(error = %e, path = %path.display(), "cannot checkpoint task");
        }
    }

    /// Loads checkpointed tasks after a restart. Live executors reconnect
    /// by themselves; a task whose executor died meanwhile without a
    /// terminal update is reported TASK_FAILED.
    fn recover(&mut self) {
        let dir = self.config.work_dir.join("meta").join("tasks");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut dead = Vec::new();
        for e in rd.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "pb") {
                continue;
            }
            let record = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    <v1::CheckpointedTask as prost::Message>::decode(b.as_slice())
                        .map_err(|e| e.to_string())
                }) {
                Ok(r) => r,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "unreadable task checkpoint skipped");
                    continue;
                }
            };
            let (Some(framework), Some(task)) = (record.framework, record.task) else {
                continue;
            };
            let key = (framework.id.clone(), task.task_id.clone());
            let state = v1::TaskState::try_from(record.state).unwrap_or(v1::TaskState::TaskUnknown);
            let pid = read_executor_pid(&self.config.work_dir, &record.container_id);
            let alive = !record.executor_exited
                && pid.is_some_and(|p| executor_alive(p, &record.container_id));
            info!(task.id = %key.1, state = ?state, executor_alive = alive, "recovered task");
            self.frameworks.insert(framework.id.clone(), framework);
            self.containers
                .insert(record.container_id.clone(), key.clone());
            let terminal_queued = record
                .pending_updates
                .iter()
                .any(|u| mezzo_proto::task_state(u).is_terminal());
            self.tasks.insert(
                key.clone(),
                TaskEntry {
                    framework_id: key.0.clone(),
                    info: task,
                    state,
                    container_id: record.container_id,
                    updates: record
                        .pending_updates
                        .into_iter()
                        .map(|status| PendingUpdate {
                            status,
                            sent_at: None,
                        })
                        .collect(),
                    executor: None,
                    kill_pending: None,
                    executor_exited: !alive,
                    recovered_pid: if alive { pid } else { None },
                },
            );
            if !alive && !state.is_terminal() && !terminal_queued {
                dead.push(key);
            }
        }
        for key in dead {
            let st = self.status(
                &key,
                v1::TaskState::TaskFailed,
                "Executor terminated while the agent was down",
                v1::StatusReason::ReasonExecutorTerminated,
                None,
            );
            self.enqueue(&key, st);
        }
    }

    /// Recovered executors are not our children: poll whether they live.
    fn check_recovered_executors(&mut self) {
        let gone: Vec<String> = self
            .tasks
            .values()
            .filter_map(|t| {
                let pid = t.recovered_pid?;
                (!executor_alive(pid, &t.container_id)).then(|| t.container_id.clone())
            })
            .collect();
        for container_id in gone {
            self.handle(Event::ExecutorExited {
                container_id,
                status: None,
            });
        }
    }
}

fn read_executor_pid(work_dir: &Path, container_id: &str) -> Option<i32> {
    std::fs::read_to_string(
        work_dir
            .join("runs")
            .join(container_id)
            .join("executor.pid"),
    )
    .ok()?
    .trim()
    .parse()
    .ok()
}

/// True when `pid` is a live (non-zombie) executor of this container: the
/// command line check guards against pid reuse.
fn executor_alive(pid: i32, container_id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "Z"))
        })
        .unwrap_or(true);
    !zombie && String::from_utf8_lossy(&cmdline).contains(container_id)
}

/// Writes `data` to `path` atomically: temp file, fsync, rename.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Converts the wire health check; `None` for an unknown type.
fn health_spec(h: &v1::HealthCheck) -> Option<crate::protocol::HealthSpec> {
    let kind = match v1::HealthCheckType::try_from(h.r#type).ok()? {
        v1::HealthCheckType::HealthCheckHttp => "http",
        v1::HealthCheckType::HealthCheckTcp => "tcp",
        v1::HealthCheckType::HealthCheckCommand => "command",
        v1::HealthCheckType::HealthCheckUnknown => return None,
    };
    let or = |v: f64, d: f64| if v > 0.0 && v.is_finite() { v } else { d };
    Some(crate::protocol::HealthSpec {
        kind: kind.into(),
        command: h.command.clone(),
        port: u16::try_from(h.port).unwrap_or(0),
        path: h.path.clone(),
        // Marathon's defaults: 15 s delay-free start, 60 s interval, 20 s timeout,
        // 3 failures, 300 s grace.
        delay_seconds: h.delay_seconds.max(0.0),
        interval_seconds: or(h.interval_seconds, 60.0),
        timeout_seconds: or(h.timeout_seconds, 20.0),
        consecutive_failures: if h.consecutive_failures == 0 {
            3
        } else {
            h.consecutive_failures
        },
        grace_period_seconds: or(h.grace_period_seconds, 300.0),
    })
}

/// `<work_dir>/sandboxes/<framework>/<executor>/<run>` (the executor id is the task id).
pub fn sandbox_dir(
    work_dir: &Path,
    framework_id: &str,
    task_id: &str,
    container_id: &str,
) -> PathBuf {
    work_dir
        .join("sandboxes")
        .join(sanitize(framework_id))
        .join(sanitize(task_id))
        .join(container_id)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

async fn accept_executors(listener: UnixListener, events: mpsc::UnboundedSender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_executor(stream, events.clone()));
            }
            Err(e) => {
                warn!(error = %e, "accepting an executor connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_executor(stream: UnixStream, events: mpsc::UnboundedSender<Event>) {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    let (tx, mut rx) = mpsc::unbounded_channel::<ToExecutor>();
    let mut container: Option<String> = None;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let line = match line {
                    Ok(Some(l)) => l,
                    _ => break,
                };
                match serde_json::from_str::<FromExecutor>(&line) {
                    Ok(FromExecutor::Register { container_id, .. }) => {
                        container = Some(container_id.clone());
                        let _ = events.send(Event::ExecutorRegistered { container_id, tx: tx.clone() });
                    }
                    Ok(FromExecutor::Update { update }) => {
                        if let Some(c) = &container {
                            let _ = events.send(Event::ExecutorUpdate { container_id: c.clone(), update });
                        }
                    }
                    Err(e) => warn!(error = %e, "bad message from executor"),
                }
            }
            Some(msg) = rx.recv() => {
                let Ok(mut line) = serde_json::to_vec(&msg) else { continue };
                line.push(b'\n');
                if wr.write_all(&line).await.is_err() {
                    break;
                }
            }
        }
    }
    if let Some(container_id) = container {
        let _ = events.send(Event::ExecutorDisconnected { container_id });
    }
}

/// Keeps one attached stream to the master, reconnecting with backoff.
async fn master_loop(config: Arc<AgentConfig>, events: mpsc::UnboundedSender<Event>) {
    let mut backoff = Duration::from_millis(100);
    // With `zk://` the leader is whoever ZooKeeper elected; otherwise the
    // configured address, or where a standby redirected us.
    let mut detector = match mezzo_zk::ZkUrl::parse(&config.master) {
        Ok(url) if config.master.starts_with("zk://") => {
            Some(mezzo_zk::Detector::start(&url, Duration::from_secs(10)))
        }
        _ => None,
    };
    let mut redirect: Option<String> = None;
    loop {
        let target = match detector.as_mut() {
            Some(rx) => {
                let leader = rx
                    .wait_for(|l| l.as_ref().and_then(mezzo_zk::LeaderInfo::address).is_some())
                    .await
                    .ok()
                    .and_then(|l| l.as_ref().and_then(mezzo_zk::LeaderInfo::address));
                match leader {
                    Some(l) => l,
                    None => return,
                }
            }
            None => redirect.take().unwrap_or_else(|| config.master.clone()),
        };
        let attempt = attach_once(&target, &events);
        let result = match detector.as_mut() {
            // A new leader elected: drop this connection and follow it.
            // (Losing ZooKeeper alone is no reason to drop a working stream.)
            Some(rx) => {
                let epoch = rx.borrow_and_update().as_ref().map(|l| l.epoch);
                tokio::select! {
                    r = attempt => r,
                    _ = rx.wait_for(|l| l.as_ref().is_some_and(|l| Some(l.epoch) != epoch)) => {
                        Err(AgentError::Master("the leading master changed".into()))
                    }
                }
            }
            None => attempt.await,
        };
        match result {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(AgentError::Redirect(leader)) => {
                info!(leader = %leader, "redirected to the leading master");
                redirect = Some(leader);
                let _ = events.send(Event::MasterDisconnected);
                continue;
            }
            Err(e) => debug!(error = %e, "master connection failed"),
        }
        let _ = events.send(Event::MasterDisconnected);
        if events.is_closed() {
            return;
        }
        let jitter = Duration::from_millis(rand_jitter(backoff.as_millis() as u64 / 2 + 1));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(config.max_registration_backoff);
    }
}

fn rand_jitter(max: u64) -> u64 {
    // Enough to de-synchronise agents; not security-relevant.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos % max.max(1)
}

async fn attach_once(
    target: &str,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), AgentError> {
    let url = if target.starts_with("http://") || target.starts_with("https://") {
        target.to_string()
    } else {
        format!("http://{target}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| AgentError::Config(format!("invalid master address '{target}': {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| AgentError::Master(e.to_string()))?;
    let mut client = v1::agent_service_client::AgentServiceClient::new(channel);
    let (reply, rx) = oneshot::channel();
    let _ = events.send(Event::BuildRegister(reply));
    let register = rx
        .await
        .map_err(|_| AgentError::Master("agent stopped".into()))?;
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let _ = out_tx.send(v1::AgentMessage {
        message: Some(agent_message::Message::Register(register)),
    });
    let response = client
        .attach(UnboundedReceiverStream::new(out_rx))
        .await
        .map_err(|e| {
            match e
                .metadata()
                .get("mezzo-leader")
                .and_then(|v| v.to_str().ok())
            {
                // A standby names the leader: go there at once.
                Some(leader) if leader != target => AgentError::Redirect(leader.to_string()),
                _ => AgentError::Master(e.message().to_string()),
            }
        })?;
    let mut inbound = response.into_inner();
    let first = inbound
        .message()
        .await
        .map_err(|e| AgentError::Master(e.message().to_string()))?
        .ok_or_else(|| AgentError::Master("stream closed before registration".into()))?;
    let Some(master_message::Message::Registered(reg)) = first.message else {
        return Err(AgentError::Master(
            "the master did not answer with Registered".into(),
        ));
    };
    let _ = events.send(Event::MasterConnected {
        agent_id: reg.agent_id,
        epoch: first.epoch,
        tx: out_tx,
    });
    loop {
        match inbound.message().await {
            Ok(Some(msg)) => {
                if events.send(Event::MasterMessage(Box::new(msg))).is_err() {
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(AgentError::Master(e.message().to_string())),
        }
    }
}
