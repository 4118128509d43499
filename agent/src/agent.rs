//! The agent actor: owns the agent's tasks, their status-update streams
//! ([`crate::updates`]) and checkpoints ([`crate::checkpoint`]); the master
//! link, the executor connections, the launcher and the checkpoint writer
//! feed it [`Event`]s.
//!
//! Ordering: a checkpoint write is handed to the writer thread and numbered;
//! whatever that record makes durable (a status update sent to the master,
//! an acknowledgement to an executor, an executor launch) waits until the
//! writer reports the number durable. So a restarted agent never lacks a
//! task or an update that someone else already heard of.
//!
//! Containers: whenever an executor ends, its container is destroyed
//! ([`crate::containers`]) off the actor's thread, and only then is the
//! task's end reported (which releases its resources on the master). On
//! start-up, recovery destroys the containers of executors that are gone and
//! every orphan found on the host, and detects a reboot by the boot id.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::v1::{self, agent_message, master_message};
use mezzo_runtime::Shutdown;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::checkpoint::{self, ExecutorFate, Layout, RebootPlan, Recovered, TaskRecord};
use crate::checkpoint_io::{self, Op, Writer};
use crate::containers::Destroyer;
use crate::event::{Event, EventTx, ExecTx, MasterTx};
use crate::http::{AgentView, TaskView};
use crate::launcher::{self, sandbox_dir};
use crate::protocol::{ExecUpdate, ToExecutor};
use crate::updates::{Acked, Seq, TaskKey, Updates};
use crate::{executor_link, master_link, AgentConfig, AgentError};

mod recovery;

struct TaskEntry {
    framework_id: String,
    info: v1::TaskInfo,
    state: v1::TaskState,
    container_id: String,
    executor: Option<ExecTx>,
    kill_pending: Option<Option<f64>>,
    executor_exited: bool,
    /// Pid of an executor found alive at recovery (not our child, so its
    /// death is noticed by polling rather than by `wait`).
    recovered_pid: Option<i32>,
}

/// What to do once a container is destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterDestroy {
    /// Its executor exited (with this code, if known): report the task's
    /// end if the executor did not.
    ExecutorExited(Option<i32>),
    /// Recovery found its executor gone: fail the task with this message.
    Fail(&'static str),
    /// No task of ours: nothing to report.
    Orphan,
}

/// Something that must wait until a checkpoint is durable.
enum Held {
    /// Start the task's executor (its record must exist first, or a crash
    /// would leave an executor the restarted agent knows nothing of).
    Launch(TaskKey),
    /// Tell the executor we have its update (it then stops re-sending it).
    AckExecutor { container_id: String, uuid: String },
}

struct Agent {
    config: Arc<AgentConfig>,
    layout: Layout,
    info: v1::AgentInfo,
    agent_id: String,
    epoch: u64,
    master: Option<MasterTx>,
    frameworks: HashMap<String, v1::FrameworkInfo>,
    tasks: BTreeMap<TaskKey, TaskEntry>,
    containers: HashMap<String, TaskKey>,
    updates: Updates,
    writer: Writer,
    /// Checkpoint writes up to this number are durable.
    durable: Seq,
    /// Actions waiting for their checkpoint, in the order they were held.
    held: VecDeque<(Seq, Held)>,
    events: EventTx,
    /// Origin of the clock the update streams run on.
    started: Instant,
    /// Published for the HTTP API after each event.
    view: watch::Sender<AgentView>,
    /// Tasks forgotten after their terminal update was acknowledged, for
    /// `/state` (bounded, oldest dropped first).
    completed: VecDeque<TaskView>,
    /// Kills and removes containers (blocking; run off the actor's thread).
    destroyer: Arc<Destroyer>,
    /// Containers being destroyed, and what follows.
    destroying: HashMap<String, AfterDestroy>,
}

/// How many forgotten tasks `/state` keeps showing.
const MAX_COMPLETED_TASKS: usize = 1000;

/// Runs the agent until `config.shutdown` trips (or a fatal error): then
/// closes the master stream, flushes the checkpoints and returns, leaving
/// the executors running for the next agent to recover.
pub(crate) async fn run(
    config: AgentConfig,
    info: v1::AgentInfo,
    view: watch::Sender<AgentView>,
) -> Result<(), AgentError> {
    let shutdown = config.shutdown.clone();
    let config = Arc::new(config);
    let layout = Layout::new(&config.work_dir);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let listener = bind_socket(&layout)?;
    tokio::spawn(executor_link::accept(
        listener,
        ev_tx.clone(),
        shutdown.clone(),
    ));
    let durable_tx = ev_tx.clone();
    let writer = Writer::start(move |seq| {
        let _ = durable_tx.send(Event::CheckpointDurable(seq));
    })
    .map_err(|e| AgentError::io(&layout.tasks_dir(), e))?;
    let destroyer = Arc::new(Destroyer::new(&config, &layout)?);
    let mut agent = Agent {
        agent_id: checkpoint_io::read_agent_id(&layout),
        config: config.clone(),
        layout,
        info,
        epoch: 0,
        master: None,
        frameworks: HashMap::new(),
        tasks: BTreeMap::new(),
        containers: HashMap::new(),
        updates: Updates::default(),
        writer,
        durable: 0,
        held: VecDeque::new(),
        events: ev_tx.clone(),
        started: Instant::now(),
        view,
        completed: VecDeque::new(),
        destroyer,
        destroying: HashMap::new(),
    };
    agent.recover();
    agent.publish();
    let link = tokio::spawn(master_link::run(config, ev_tx, shutdown.clone()));
    agent.event_loop(&mut ev_rx, &shutdown).await;
    info!("agent stopping; executors keep running");
    agent.master = None;
    agent.writer.close().await;
    let _ = link.await;
    Ok(())
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn bind_socket(layout: &Layout) -> Result<UnixListener, AgentError> {
    let socket = layout.socket();
    if socket.as_os_str().len() > 100 {
        return Err(AgentError::Config(format!(
            "--work-dir is too long for a Unix socket path: {}",
            socket.display()
        )));
    }
    let _ = std::fs::remove_file(&socket);
    UnixListener::bind(&socket).map_err(|e| AgentError::io(&socket, e))
}

impl Agent {
    async fn event_loop(&mut self, events: &mut mpsc::UnboundedReceiver<Event>, stop: &Shutdown) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The next retry exactly when it is due, rather than at a tick.
            let retry = self
                .master
                .as_ref()
                .and(
                    self.updates
                        .next_due(self.durable, self.config.status_update_retry_interval),
                )
                .map(|d| self.started + d);
            tokio::select! {
                _ = sleep_until_some(retry) => self.send_due_updates(),
                ev = events.recv() => match ev {
                    Some(ev) => {
                        self.handle(ev);
                        self.publish();
                    }
                    None => return,
                },
                _ = tick.tick() => self.check_recovered_executors(),
                _ = stop.wait() => return,
            }
        }
    }

    fn task_view(&self, t: &TaskEntry) -> TaskView {
        TaskView {
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
        let view = AgentView {
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
            } => self.master_connected(agent_id, epoch, tx),
            Event::MasterDisconnected => self.master = None,
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
                self.executor_registered(&container_id, tx)
            }
            Event::ExecutorUpdate {
                container_id,
                update,
            } => self.executor_update(&container_id, update),
            Event::ExecutorDisconnected { container_id } => {
                if let Some(t) = self.task_of_mut(&container_id) {
                    t.executor = None;
                }
            }
            Event::ExecutorExited {
                container_id,
                status,
            } => self.executor_exited(&container_id, status),
            Event::LaunchFailed {
                container_id,
                error,
            } => self.launch_failed(&container_id, &error),
            Event::CheckpointDurable(seq) => self.checkpoint_durable(seq),
            Event::ContainerDestroyed { container_id } => self.container_destroyed(&container_id),
        }
    }

    fn task_of_mut(&mut self, container_id: &str) -> Option<&mut TaskEntry> {
        let key = self.containers.get(container_id)?;
        self.tasks.get_mut(key)
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

    fn master_connected(&mut self, agent_id: String, epoch: u64, tx: MasterTx) {
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
            self.writer.submit(Op::Write(
                self.layout.agent_id(),
                checkpoint::encode_agent_id(&agent_id),
            ));
            self.agent_id = agent_id;
        }
        info!(agent.id = %self.agent_id, epoch, "registered with master");
        self.master = Some(tx);
        // Re-send every stream's head now rather than at the next retry.
        self.updates.reconnected();
        self.send_due_updates();
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
                let keys: Vec<TaskKey> = self
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
                let key = (a.framework_id, a.task_id);
                if let Acked::Popped(_) = self.updates.ack(&key, &a.uuid) {
                    debug!(task.id = %key.1, "status update acknowledged");
                    self.checkpoint(&key);
                    self.send_due_updates();
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
                executor: None,
                kill_pending: None,
                executor_exited: false,
                recovered_pid: None,
            },
        );
        let seq = self.checkpoint(&key);
        self.hold(seq, Held::Launch(key));
    }

    fn launch(&self, key: &TaskKey) {
        let (Some(t), Some(framework)) = (self.tasks.get(key), self.frameworks.get(&key.0)) else {
            return;
        };
        let spec = launcher::executor_spec(
            &launcher::Launch {
                config: &self.config,
                layout: &self.layout,
                agent_id: &self.agent_id,
                hostname: &self.info.hostname,
            },
            framework,
            &t.info,
            &t.container_id,
        );
        tokio::spawn(launcher::launch(
            self.config.clone(),
            self.layout.clone(),
            spec,
            self.events.clone(),
        ));
    }

    fn launch_failed(&mut self, container_id: &str, error: &AgentError) {
        let Some(key) = self.containers.get(container_id).cloned() else {
            return;
        };
        warn!(task.id = %key.1, error = %error, "cannot launch the executor");
        if let Some(t) = self.tasks.get_mut(&key) {
            t.executor_exited = true;
        }
        let st = self.status(
            &key,
            v1::TaskState::TaskFailed,
            &format!("Failed to launch the executor: {error}"),
            v1::StatusReason::ReasonContainerLaunchFailed,
            None,
        );
        self.enqueue(&key, st);
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

    fn executor_registered(&mut self, container_id: &str, tx: ExecTx) {
        let Some(t) = self.task_of_mut(container_id) else {
            warn!(container = %container_id, "unknown executor registered");
            return;
        };
        if let Some(grace) = t.kill_pending.take() {
            let _ = tx.send(ToExecutor::Kill {
                grace_period_seconds: grace,
            });
        }
        t.executor = Some(tx);
    }

    fn executor_update(&mut self, container_id: &str, u: ExecUpdate) {
        let Some(key) = self.containers.get(container_id).cloned() else {
            return;
        };
        let Some(t) = self.tasks.get(&key) else {
            return;
        };
        let uuid = uuid::Uuid::parse_str(&u.uuid)
            .map(|x| x.as_bytes().to_vec())
            .unwrap_or_default();
        // Duplicates after an executor reconnect are expected: they are
        // acked again but not queued twice.
        let fresh = !uuid.is_empty()
            && !self.updates.stream(&key).is_some_and(|s| s.contains(&uuid))
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
            self.enqueue(&key, st);
        }
        // The latest write covers this update, fresh or a duplicate of one
        // queued earlier: the executor hears the ack once it is durable.
        let seq = self.writer.last();
        self.hold(
            seq,
            Held::AckExecutor {
                container_id: container_id.to_string(),
                uuid: u.uuid,
            },
        );
    }

    /// An executor ended, however: its container is destroyed first (the
    /// task's processes may have outlived it), then its end is handled.
    fn executor_exited(&mut self, container_id: &str, status: Option<i32>) {
        if let Some(t) = self.task_of_mut(container_id) {
            // Not polled any more: the destruction below settles it.
            t.recovered_pid = None;
            t.executor = None;
        }
        let after = if self.containers.contains_key(container_id) {
            AfterDestroy::ExecutorExited(status)
        } else {
            AfterDestroy::Orphan
        };
        self.destroy(container_id, after);
    }

    /// Destroys the container off the actor's thread, retrying with backoff
    /// until it is empty and removed; then [`Event::ContainerDestroyed`].
    fn destroy(&mut self, container_id: &str, after: AfterDestroy) {
        if self.destroying.contains_key(container_id) {
            return;
        }
        self.destroying.insert(container_id.to_string(), after);
        let destroyer = self.destroyer.clone();
        let events = self.events.clone();
        let container_id = container_id.to_string();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let (d, id) = (destroyer.clone(), container_id.clone());
                let result = tokio::task::spawn_blocking(move || d.destroy(&id))
                    .await
                    .unwrap_or_else(|e| Err(AgentError::Isolation(format!("destroy: {e}"))));
                match result {
                    Ok(()) => break,
                    // The task stays unfinished (its resources held) until
                    // its processes are really gone.
                    Err(e) => {
                        warn!(container = %container_id, error = %e, "cannot destroy the container yet; retrying")
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            let _ = events.send(Event::ContainerDestroyed { container_id });
        });
    }

    fn container_destroyed(&mut self, container_id: &str) {
        let Some(after) = self.destroying.remove(container_id) else {
            return;
        };
        debug!(container = %container_id, ?after, "container destroyed");
        match after {
            AfterDestroy::ExecutorExited(status) => self.executor_gone(container_id, status),
            AfterDestroy::Fail(message) => {
                let Some(key) = self.containers.get(container_id).cloned() else {
                    return;
                };
                let st = self.status(
                    &key,
                    v1::TaskState::TaskFailed,
                    message,
                    v1::StatusReason::ReasonExecutorTerminated,
                    None,
                );
                self.enqueue(&key, st);
            }
            AfterDestroy::Orphan => info!(container = %container_id, "orphan container destroyed"),
        }
    }

    /// The executor and its container are gone: the task fails unless the
    /// executor reported its end.
    fn executor_gone(&mut self, container_id: &str, status: Option<i32>) {
        let Some(key) = self.containers.get(container_id).cloned() else {
            return;
        };
        let Some(t) = self.tasks.get_mut(&key) else {
            return;
        };
        t.executor_exited = true;
        t.recovered_pid = None;
        let ended =
            t.state.is_terminal() || self.updates.stream(&key).is_some_and(|s| s.has_terminal());
        if ended {
            self.checkpoint(&key);
        } else {
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
        self.maybe_forget(&key);
    }

    fn status(
        &self,
        key: &TaskKey,
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

    /// Queues an update on the task's stream and checkpoints it; it goes to
    /// the master once that checkpoint is durable.
    fn enqueue(&mut self, key: &TaskKey, status: v1::TaskStatus) {
        let Some(t) = self.tasks.get_mut(key) else {
            return;
        };
        t.state = mezzo_proto::task_state(&status);
        debug!(task.id = %key.1, state = ?t.state, "queueing status update");
        let seq = self.checkpoint_with(key, Some(&status));
        self.updates.push(key, status, seq);
        self.send_due_updates();
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Sends each stream's head if it is durable and was never sent or its
    /// retry is due.
    fn send_due_updates(&mut self) {
        let Some(tx) = self.master.clone() else {
            return;
        };
        let interval = self.config.status_update_retry_interval;
        for (key, status) in self.updates.due(self.now(), self.durable, interval) {
            let _ = tx.send(v1::AgentMessage {
                message: Some(agent_message::Message::StatusUpdate(v1::StatusUpdate {
                    framework_id: key.0,
                    status: Some(status),
                })),
            });
        }
    }

    fn hold(&mut self, seq: Seq, action: Held) {
        self.held.push_back((seq, action));
        self.release_held();
    }

    fn checkpoint_durable(&mut self, seq: Seq) {
        self.durable = self.durable.max(seq);
        self.release_held();
        self.send_due_updates();
    }

    /// Performs held actions whose checkpoint is now durable, in order.
    fn release_held(&mut self) {
        while self.held.front().is_some_and(|(s, _)| *s <= self.durable) {
            let Some((_, action)) = self.held.pop_front() else {
                return;
            };
            match action {
                Held::Launch(key) => self.launch(&key),
                Held::AckExecutor { container_id, uuid } => {
                    let exec = self
                        .task_of_mut(&container_id)
                        .and_then(|t| t.executor.clone());
                    // Without a connection the executor re-sends the
                    // update after reconnecting and is acked then.
                    if let Some(tx) = exec {
                        let _ = tx.send(ToExecutor::Ack { uuid });
                    }
                }
            }
        }
    }

    /// A task whose terminal update was acknowledged and whose executor is
    /// gone is forgotten.
    fn maybe_forget(&mut self, key: &TaskKey) {
        let Some(t) = self.tasks.get(key) else { return };
        if !(t.state.is_terminal() && self.updates.is_empty(key) && t.executor_exited) {
            return;
        }
        let done = self.task_view(t);
        self.completed.push_back(done);
        while self.completed.len() > MAX_COMPLETED_TASKS {
            self.completed.pop_front();
        }
        let Some(t) = self.tasks.remove(key) else {
            return;
        };
        self.updates.remove(key);
        self.containers.remove(&t.container_id);
        self.writer
            .submit(Op::Remove(self.layout.executor_spec(&t.container_id)));
        self.writer
            .submit(Op::Remove(self.layout.task(&t.container_id)));
    }

    /// Checkpoints the task as it is now; returns the write's number.
    fn checkpoint(&mut self, key: &TaskKey) -> Seq {
        self.checkpoint_with(key, None)
    }

    /// Checkpoints the task with `next` queued behind its stream, so an
    /// update is recorded before it joins the stream.
    fn checkpoint_with(&mut self, key: &TaskKey, next: Option<&v1::TaskStatus>) -> Seq {
        let Some(t) = self.tasks.get(key) else {
            return self.writer.last();
        };
        let pending = self
            .updates
            .stream(key)
            .into_iter()
            .flat_map(|s| s.statuses())
            .chain(next);
        let bytes = checkpoint::encode_task(TaskRecord {
            framework: self.frameworks.get(&t.framework_id),
            task: &t.info,
            state: t.state,
            container_id: &t.container_id,
            pending,
            executor_exited: t.executor_exited,
        });
        let path = self.layout.task(&t.container_id);
        self.writer.submit(Op::Write(path, bytes))
    }
}
