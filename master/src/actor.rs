//! The master actor: the one owner of all cluster state.
//!
//! gRPC and HTTP handlers never touch this state: they send a [`Command`] over
//! an `mpsc` channel and await a oneshot reply; HTTP reads use the JSON
//! snapshot the actor publishes on a `watch` channel after each batch of
//! commands. The actor never awaits a peer: messages to agents and frameworks
//! go into per-connection channels that their gRPC streams drain.
//!
//! Invariants:
//! * an agent's `used + offered <= total`; a resource is in at most one offer;
//! * every message sent carries the master's leadership `epoch` (fencing);
//! * a task's resources are released exactly once, when it first reaches a
//!   terminal state.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::v1::{self, agent_message, event, master_message, operation, TaskState};
use mezzo_proto::{now_secs, Resources};
use rand::SeedableRng;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::allocator::{self, AgentSlot, AllocatorConfig, FrameworkSlot, Round};
use crate::config::MasterConfig;
use crate::MasterError;

/// Outbound stream to one agent.
pub(crate) type AgentTx = mpsc::UnboundedSender<Result<v1::MasterMessage, tonic::Status>>;
/// Outbound event stream to one framework.
pub(crate) type EventTx = mpsc::UnboundedSender<Result<v1::Event, tonic::Status>>;

/// A scheduler call (the unary RPCs of the Scheduler service).
#[derive(Debug)]
pub(crate) enum Call {
    Accept(v1::AcceptRequest),
    Decline(v1::DeclineRequest),
    Revive(v1::RolesRequest),
    Suppress(v1::RolesRequest),
    Kill(v1::KillRequest),
    Acknowledge(v1::AcknowledgeRequest),
    Reconcile(v1::ReconcileRequest),
    Teardown(v1::TeardownRequest),
}

impl Call {
    fn framework_id(&self) -> &str {
        match self {
            Call::Accept(c) => &c.framework_id,
            Call::Decline(c) => &c.framework_id,
            Call::Revive(c) | Call::Suppress(c) => &c.framework_id,
            Call::Kill(c) => &c.framework_id,
            Call::Acknowledge(c) => &c.framework_id,
            Call::Reconcile(c) => &c.framework_id,
            Call::Teardown(c) => &c.framework_id,
        }
    }
}

/// A message to the actor.
pub(crate) enum Command {
    /// The election result changed (ZooKeeper mode).
    Leadership(LeaderState),
    AgentAttach {
        register: v1::RegisterAgent,
        tx: AgentTx,
        reply: oneshot::Sender<Result<(String, u64), MasterError>>,
    },
    AgentMessage {
        agent_id: String,
        conn: u64,
        msg: agent_message::Message,
    },
    AgentClosed {
        agent_id: String,
        conn: u64,
    },
    Subscribe {
        request: v1::SubscribeRequest,
        tx: EventTx,
        reply: oneshot::Sender<Result<(String, u64), MasterError>>,
    },
    FrameworkClosed {
        framework_id: String,
        conn: u64,
    },
    Call {
        call: Call,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
}

struct Agent {
    id: String,
    info: v1::AgentInfo,
    total: Resources,
    used: Resources,
    offered: Resources,
    tx: Option<AgentTx>,
    conn: u64,
    last_seen: Instant,
    last_ping: Instant,
    reachable: bool,
    registered_time: f64,
    reregistered_time: Option<f64>,
}

impl Agent {
    fn available(&self) -> Resources {
        self.total.minus(&self.used).minus(&self.offered)
    }

    fn send(&self, epoch: u64, msg: master_message::Message) {
        if let Some(tx) = &self.tx {
            // A closed channel means the agent is gone; AgentClosed handles that.
            let _ = tx.send(Ok(v1::MasterMessage {
                epoch,
                message: Some(msg),
            }));
        }
    }
}

#[derive(Clone)]
struct Task {
    info: v1::TaskInfo,
    framework_id: String,
    agent_id: String,
    resources: Resources,
    state: TaskState,
    statuses: Vec<(TaskState, f64)>,
    last_status: Option<v1::TaskStatus>,
    /// Last health the executor reported; master-generated updates keep it.
    healthy: Option<bool>,
}

struct Framework {
    id: String,
    info: v1::FrameworkInfo,
    role: String,
    tx: Option<EventTx>,
    conn: u64,
    disconnected_at: Option<Instant>,
    suppressed: bool,
    offers: HashSet<String>,
    tasks: BTreeMap<String, Task>,
    completed: VecDeque<Task>,
    used: Resources,
    offered: Resources,
    filters: HashMap<String, Instant>,
    registered_time: f64,
    unregistered_time: Option<f64>,
}

impl Framework {
    fn partition_aware(&self) -> bool {
        self.info
            .capabilities
            .iter()
            .any(|c| c == "PARTITION_AWARE")
    }

    fn send(&self, epoch: u64, ev: event::Event) -> bool {
        match &self.tx {
            Some(tx) => tx
                .send(Ok(v1::Event {
                    epoch,
                    event: Some(ev),
                }))
                .is_ok(),
            None => false,
        }
    }
}

struct OfferRec {
    framework_id: String,
    agent_id: String,
    resources: Resources,
    created: Instant,
}

/// The master's state and the logic that changes it.
pub(crate) struct Master {
    config: MasterConfig,
    info: v1::MasterInfo,
    start_time: f64,
    agents: BTreeMap<String, Agent>,
    frameworks: BTreeMap<String, Framework>,
    completed_frameworks: VecDeque<Framework>,
    offers: HashMap<String, OfferRec>,
    next_conn: u64,
    next_agent: u64,
    next_framework: u64,
    next_offer: u64,
    allocate_now: bool,
    dirty: bool,
    last_heartbeat: Instant,
    rng: rand::rngs::StdRng,
    metrics: Metrics,
    /// False while a standby (or after losing the ZooKeeper session).
    leading: bool,
    /// Publish the snapshot at once rather than at the next period.
    publish_now: bool,
    registry: crate::registry::RegistryState,
    registry_writer: Option<watch::Sender<crate::registry::RegistryState>>,
    registry_dirty: bool,
    /// Agents the registry knows that have not re-registered yet.
    expected_agents: HashMap<String, (crate::registry::AdmittedAgent, Instant)>,
    /// `host:port` of the leader, for redirects.
    leader_hint: Option<String>,
    elected_time: Option<f64>,
}

/// The election state as the actor needs it.
#[derive(Debug, Clone)]
pub enum LeaderState {
    /// This master leads in `epoch` (the znode sequence).
    Leading {
        /// Leadership epoch: every message carries it.
        epoch: u64,
        /// The registry as this term loaded it.
        registry: Option<Arc<std::sync::Mutex<Option<crate::registry::RegistryHandle>>>>,
    },
    /// Another master leads (`host:port`, if known).
    Following {
        /// The leader's address.
        leader: Option<String>,
    },
    /// No ZooKeeper session: not leading, leader unknown.
    Lost,
}

/// Counters exported in `/metrics/snapshot` (and, through it, `/metrics`).
#[derive(Default, Clone)]
struct Metrics {
    allocation_runs: u64,
    status_updates: u64,
    launched_tasks: u64,
    invalid_launches: u64,
    /// Scheduler calls by Mesos `master/messages_*` name.
    calls: BTreeMap<&'static str, u64>,
    agent_registrations: u64,
    agent_reregistrations: u64,
    agent_removals: u64,
    /// Allocation run, offer->accept and launch latencies.
    timings: crate::metrics::Timings,
}

impl Master {
    pub(crate) fn new(config: MasterConfig, info: v1::MasterInfo) -> Self {
        let standalone = config.zk.is_none();
        let now = Instant::now();
        Master {
            config,
            info,
            start_time: now_secs(),
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            completed_frameworks: VecDeque::new(),
            offers: HashMap::new(),
            next_conn: 1,
            next_agent: 0,
            next_framework: 0,
            next_offer: 0,
            allocate_now: false,
            dirty: true,
            last_heartbeat: now,
            rng: rand::rngs::StdRng::from_os_rng(),
            metrics: Metrics::default(),
            // Standalone masters lead from the start; ZooKeeper mode starts
            // as a standby until elected.
            leading: standalone,
            publish_now: true,
            registry: Default::default(),
            registry_writer: None,
            registry_dirty: false,
            expected_agents: HashMap::new(),
            leader_hint: None,
            elected_time: standalone.then(now_secs),
        }
    }

    fn epoch(&self) -> u64 {
        self.info.epoch
    }

    /// A change made outside a command (timers, allocation): peers may
    /// already have been told, so readers see it at once.
    fn changed(&mut self) {
        self.dirty = true;
        self.publish_now = true;
    }

    fn handle(&mut self, cmd: Command) {
        self.dirty = true;
        // A caller that got an answer must see its change in the next read;
        // agents' status updates (the hot path) are coalesced instead.
        if !matches!(cmd, Command::AgentMessage { .. }) {
            self.publish_now = true;
        }
        if !self.leading {
            return self.handle_not_leading(cmd);
        }
        match cmd {
            Command::Leadership(state) => self.leadership(state),
            Command::AgentAttach {
                register,
                tx,
                reply,
            } => {
                let r = self.attach_agent(register, tx);
                let _ = reply.send(r);
            }
            Command::AgentMessage {
                agent_id,
                conn,
                msg,
            } => self.agent_message(&agent_id, conn, msg),
            Command::AgentClosed { agent_id, conn } => {
                if let Some(a) = self.agents.get_mut(&agent_id) {
                    if a.conn == conn {
                        info!(agent.id = %agent_id, "agent disconnected");
                        a.tx = None;
                        // Its tasks keep running: the agent reconnects, or the
                        // health check marks it unreachable after the ping timeouts.
                        self.rescind_offers_on_agent(&agent_id);
                    }
                }
            }
            Command::Subscribe { request, tx, reply } => {
                let r = self.subscribe(request, tx);
                let _ = reply.send(r);
            }
            Command::FrameworkClosed { framework_id, conn } => {
                self.framework_closed(&framework_id, conn)
            }
            Command::Call { call, reply } => {
                let r = self.call(call);
                let _ = reply.send(r);
            }
        }
    }

    // -------------------------------------------------------- leadership

    /// A master that does not lead answers every peer with a redirect to
    /// the leader it knows (or "no leader"), and does nothing else.
    fn handle_not_leading(&mut self, cmd: Command) {
        let err = || MasterError::NotLeader(self.leader_hint.clone());
        match cmd {
            Command::Leadership(state) => self.leadership(state),
            Command::AgentAttach { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Command::Subscribe { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Command::Call { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Command::AgentMessage { .. }
            | Command::AgentClosed { .. }
            | Command::FrameworkClosed { .. } => {}
        }
    }

    fn leadership(&mut self, state: LeaderState) {
        match state {
            LeaderState::Leading { epoch, registry } => {
                if self.leading && self.info.epoch == epoch {
                    return;
                }
                let handle = registry.and_then(|r| r.lock().ok().and_then(|mut h| h.take()));
                info!(epoch, "elected leading master");
                // Nothing from an earlier term survives: peers re-register
                // and re-subscribe with this epoch.
                self.drop_all_state();
                self.info.epoch = epoch;
                self.leading = true;
                self.leader_hint = Some(format!("{}:{}", self.info.ip, self.info.port));
                self.elected_time = Some(now_secs());
                if let Some(h) = handle {
                    self.adopt_registry(h);
                }
            }
            LeaderState::Following { leader } => {
                if self.leading {
                    warn!("lost leadership: now a standby");
                    self.drop_all_state();
                }
                self.leading = false;
                self.leader_hint = leader;
            }
            LeaderState::Lost => {
                if self.leading {
                    warn!("lost the ZooKeeper session: stopped acting as leader");
                    self.drop_all_state();
                }
                self.leading = false;
                self.leader_hint = None;
            }
        }
    }

    /// Takes over what the registry remembers from earlier terms: frameworks
    /// (their failover timeouts start now, as in Mesos), removed framework
    /// ids, and agents that get `agent_reregister_timeout` to come back.
    pub(crate) fn adopt_registry(&mut self, h: crate::registry::RegistryHandle) {
        let now = Instant::now();
        for (id, f) in &h.state.frameworks {
            if self.frameworks.contains_key(id) {
                continue;
            }
            let info = v1::FrameworkInfo {
                id: id.clone(),
                name: f.name.clone(),
                user: f.user.clone(),
                failover_timeout: f.failover_timeout,
                roles: vec![f.role.clone()],
                capabilities: f.capabilities.clone(),
                ..Default::default()
            };
            let fw = self.new_framework(id.clone(), info);
            self.frameworks.insert(id.clone(), fw);
        }
        for (id, a) in &h.state.agents {
            if !self.agents.contains_key(id) {
                self.expected_agents.insert(
                    id.clone(),
                    (a.clone(), now + self.config.agent_reregister_timeout),
                );
            }
        }
        info!(
            frameworks = h.state.frameworks.len(),
            agents = h.state.agents.len(),
            removed = h.state.removed_frameworks.len(),
            "recovered the registry"
        );
        self.registry = h.state;
        self.registry_writer = Some(h.writer);
    }

    /// Records a registry change; the run loop hands it to the writer.
    fn registry_update(&mut self, f: impl FnOnce(&mut crate::registry::RegistryState)) {
        f(&mut self.registry);
        self.registry_dirty = true;
    }

    /// Agents from the registry that did not re-register in time become
    /// unreachable (Mesos' `--agent_reregister_timeout`).
    fn expire_expected_agents(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .expected_agents
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let Some((a, _)) = self.expected_agents.remove(&id) else {
                continue;
            };
            warn!(agent.id = %id, "agent did not re-register after the failover: unreachable");
            let total = Resources::parse(&a.resources).unwrap_or_default();
            self.agents.insert(
                id.clone(),
                Agent {
                    id: id.clone(),
                    info: v1::AgentInfo {
                        id: id.clone(),
                        hostname: a.hostname.clone(),
                        port: a.port,
                        resources: total.to_proto(),
                        attributes: Vec::new(),
                    },
                    total,
                    used: Resources::new(),
                    offered: Resources::new(),
                    tx: None,
                    conn: 0,
                    last_seen: now,
                    last_ping: now,
                    reachable: false,
                    registered_time: now_secs(),
                    reregistered_time: None,
                },
            );
            self.changed();
        }
    }

    /// Forgets every agent, framework and offer and closes their streams,
    /// so a master that stopped leading can send nothing more to anyone.
    fn drop_all_state(&mut self) {
        for a in self.agents.values() {
            if let Some(tx) = &a.tx {
                let _ = tx.send(Err(tonic::Status::unavailable(
                    "master is no longer the leader",
                )));
            }
        }
        for f in self.frameworks.values() {
            if let Some(tx) = &f.tx {
                let _ = tx.send(Err(tonic::Status::unavailable(
                    "master is no longer the leader",
                )));
            }
        }
        self.agents.clear();
        self.frameworks.clear();
        self.completed_frameworks.clear();
        self.offers.clear();
        self.expected_agents.clear();
        // The next term loads the registry afresh; this writer is fenced.
        self.registry_writer = None;
        self.registry_dirty = false;
        self.allocate_now = false;
    }

    // ------------------------------------------------------------ agents

    fn attach_agent(
        &mut self,
        register: v1::RegisterAgent,
        tx: AgentTx,
    ) -> Result<(String, u64), MasterError> {
        let info = register
            .info
            .ok_or_else(|| MasterError::InvalidArgument("register.info is required".into()))?;
        if info.hostname.is_empty() {
            return Err(MasterError::InvalidArgument(
                "register.info.hostname is required".into(),
            ));
        }
        let total = Resources::from_proto(&info.resources);
        if total.is_empty() {
            return Err(MasterError::InvalidArgument(
                "register.info.resources must not be empty".into(),
            ));
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        let now = Instant::now();
        let reregister = !info.id.is_empty();
        let id = if reregister {
            info.id.clone()
        } else {
            self.next_agent += 1;
            format!("{}-S{}", self.info.id, self.next_agent - 1)
        };
        let existing = self.agents.contains_key(&id);
        let agent = self.agents.entry(id.clone()).or_insert_with(|| Agent {
            id: id.clone(),
            info: info.clone(),
            total: total.clone(),
            used: Resources::new(),
            offered: Resources::new(),
            tx: None,
            conn,
            last_seen: now,
            last_ping: now,
            reachable: true,
            registered_time: now_secs(),
            reregistered_time: None,
        });
        agent.info = v1::AgentInfo {
            id: id.clone(),
            ..info
        };
        agent.total = total;
        agent.tx = Some(tx);
        agent.conn = conn;
        agent.last_seen = now;
        agent.last_ping = now;
        agent.reachable = true;
        if existing || reregister {
            agent.reregistered_time = Some(now_secs());
        }
        info!(agent.id = %id, hostname = %agent.info.hostname, resources = %agent.total, reregister, "agent registered");
        agent.send(
            self.info.epoch,
            master_message::Message::Registered(v1::AgentRegistered {
                agent_id: id.clone(),
                master: Some(self.info.clone()),
                ping_interval_seconds: self.config.agent_ping_timeout.as_secs_f64(),
            }),
        );
        let admitted = crate::registry::AdmittedAgent {
            hostname: agent.info.hostname.clone(),
            port: agent.info.port,
            resources: agent.total.to_string(),
        };
        self.expected_agents.remove(&id);
        if self.registry.agents.get(&id) != Some(&admitted) {
            let key = id.clone();
            self.registry_update(|r| {
                r.agents.insert(key, admitted);
            });
        }
        if existing || reregister {
            self.metrics.agent_reregistrations += 1;
        } else {
            self.metrics.agent_registrations += 1;
        }
        self.reconcile_agent_tasks(&id, register.tasks, &register.frameworks);
        self.allocate_now = true;
        Ok((id, conn))
    }

    /// Merges the tasks an agent reports on (re-)registration with what the
    /// master knows: unknown running tasks are adopted (master failover),
    /// tasks the master thought live there but the agent lacks are lost.
    fn reconcile_agent_tasks(
        &mut self,
        agent_id: &str,
        reported: Vec<v1::TaskAndState>,
        frameworks: &[v1::FrameworkInfo],
    ) {
        let epoch = self.epoch();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for ts in reported {
            let Some(task) = ts.task else { continue };
            let state = TaskState::try_from(ts.state).unwrap_or(TaskState::TaskUnknown);
            seen.insert((ts.framework_id.clone(), task.task_id.clone()));
            let fw_known = self.frameworks.contains_key(&ts.framework_id);
            if !fw_known {
                // A framework we do not know yet (master failover): it gets
                // its tasks back when it re-subscribes with its id.
                let info = frameworks
                    .iter()
                    .find(|f| f.id == ts.framework_id)
                    .cloned()
                    .unwrap_or_else(|| v1::FrameworkInfo {
                        id: ts.framework_id.clone(),
                        ..Default::default()
                    });
                let fw = self.new_framework(ts.framework_id.clone(), info);
                self.frameworks.insert(fw.id.clone(), fw);
            }
            let Some(fw) = self.frameworks.get_mut(&ts.framework_id) else {
                continue;
            };
            let resources = Resources::from_proto(&task.resources);
            let declared_gone = fw.completed.iter().any(|c| c.info.task_id == task.task_id);
            match fw.tasks.get_mut(&task.task_id) {
                Some(t) if t.state == TaskState::TaskUnreachable && !state.is_terminal() => {
                    t.state = state;
                    t.statuses.push((state, now_secs()));
                    let status = v1::TaskStatus {
                        task_id: task.task_id.clone(),
                        state: state as i32,
                        message: "Agent re-registered".into(),
                        source: v1::StatusSource::SourceMaster as i32,
                        reason: v1::StatusReason::ReasonReconciliation as i32,
                        agent_id: agent_id.to_string(),
                        timestamp: now_secs(),
                        framework_id: fw.id.clone(),
                        healthy: t.healthy,
                        ..Default::default()
                    };
                    fw.send(
                        epoch,
                        event::Event::Update(event::Update {
                            status: Some(status),
                        }),
                    );
                }
                Some(_) => {}
                None if declared_gone && !state.is_terminal() => {
                    // The framework was told the task is gone (TASK_LOST to a
                    // non-partition-aware framework): Mesos kills such tasks
                    // when their agent comes back.
                    if let Some(a) = self.agents.get(agent_id) {
                        a.send(
                            epoch,
                            master_message::Message::KillTask(v1::KillTask {
                                framework_id: fw.id.clone(),
                                task_id: task.task_id.clone(),
                                grace_period_seconds: None,
                            }),
                        );
                    }
                }
                None if !state.is_terminal() => {
                    fw.used.add(&resources);
                    if let Some(a) = self.agents.get_mut(agent_id) {
                        a.used.add(&resources);
                    }
                    fw.tasks.insert(
                        task.task_id.clone(),
                        Task {
                            framework_id: fw.id.clone(),
                            agent_id: agent_id.to_string(),
                            resources,
                            state,
                            statuses: vec![(state, now_secs())],
                            last_status: None,
                            healthy: None,
                            info: task,
                        },
                    );
                }
                None => {}
            }
        }
        // Tasks the master believes are on this agent but the agent lost.
        let mut lost = Vec::new();
        for fw in self.frameworks.values() {
            for t in fw.tasks.values() {
                if t.agent_id == agent_id
                    && !t.state.is_terminal()
                    && t.state != TaskState::TaskStaging
                    && !seen.contains(&(fw.id.clone(), t.info.task_id.clone()))
                {
                    lost.push((fw.id.clone(), t.info.task_id.clone()));
                }
            }
        }
        for (fid, tid) in lost {
            let state = self.lost_state(&fid);
            self.master_update(
                &fid,
                &tid,
                state,
                v1::StatusReason::ReasonAgentRestarted,
                "Task not found on re-registered agent",
            );
        }
    }

    fn agent_message(&mut self, agent_id: &str, conn: u64, msg: agent_message::Message) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        if agent.conn != conn {
            return;
        }
        agent.last_seen = Instant::now();
        match msg {
            agent_message::Message::Heartbeat(_) => {}
            agent_message::Message::Register(_) => {
                warn!(agent.id = %agent_id, "duplicate register on an attached stream ignored");
            }
            agent_message::Message::StatusUpdate(update) => self.status_update(agent_id, update),
        }
    }

    fn status_update(&mut self, agent_id: &str, update: v1::StatusUpdate) {
        let epoch = self.epoch();
        self.metrics.status_updates += 1;
        let Some(mut status) = update.status else {
            return;
        };
        let state = mezzo_proto::task_state(&status);
        status.agent_id = agent_id.to_string();
        status.framework_id = update.framework_id.clone();
        let Some(fw) = self.frameworks.get_mut(&update.framework_id) else {
            // The framework is gone for good: acknowledge on its behalf so
            // the agent stops retrying (Mesos does the same on teardown).
            if let Some(a) = self.agents.get(agent_id) {
                a.send(
                    epoch,
                    master_message::Message::Acknowledge(v1::AcknowledgeUpdate {
                        framework_id: update.framework_id,
                        task_id: status.task_id,
                        uuid: status.uuid,
                    }),
                );
            }
            return;
        };
        let mut released = None;
        if let Some(t) = fw.tasks.get_mut(&status.task_id) {
            let was_terminal = t.state.is_terminal();
            if !was_terminal {
                if state == TaskState::TaskRunning && t.state != TaskState::TaskRunning {
                    if let Some((_, staged)) = t.statuses.first() {
                        self.metrics.timings.launch(now_secs() - staged);
                    }
                }
                t.state = state;
                t.statuses.push((state, status.timestamp));
                if state.is_terminal() {
                    released = Some(t.resources.clone());
                }
            }
            if status.healthy.is_some() {
                t.healthy = status.healthy;
            }
            t.last_status = Some(status.clone());
        } else if !state.is_terminal() {
            // An update for a task the master does not know: adopt it so
            // its resources are accounted (can happen right after failover).
            debug!(task.id = %status.task_id, "status update for unknown task");
        }
        if let Some(res) = released {
            fw.used.subtract(&res);
            if let Some(a) = self.agents.get_mut(agent_id) {
                a.used.subtract(&res);
            }
        }
        debug!(task.id = %status.task_id, state = ?state, "status update");
        // Undelivered (framework disconnected) updates are retried by the agent.
        fw.send(
            epoch,
            event::Event::Update(event::Update {
                status: Some(status),
            }),
        );
    }

    fn lost_state(&self, framework_id: &str) -> TaskState {
        match self.frameworks.get(framework_id) {
            Some(f) if f.partition_aware() => TaskState::TaskUnreachable,
            _ => TaskState::TaskLost,
        }
    }

    /// A master-generated update (no uuid: not retried, not acknowledged).
    fn master_update(
        &mut self,
        framework_id: &str,
        task_id: &str,
        state: TaskState,
        reason: v1::StatusReason,
        message: &str,
    ) {
        let epoch = self.epoch();
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        let mut agent_id = String::new();
        let mut released = None;
        if let Some(t) = fw.tasks.get_mut(task_id) {
            agent_id = t.agent_id.clone();
            if !t.state.is_terminal() {
                // Unreachable tasks keep their resources: the agent may come back.
                if state.is_terminal() || state == TaskState::TaskUnreachable {
                    released = state.is_terminal().then(|| t.resources.clone());
                }
                t.state = state;
                t.statuses.push((state, now_secs()));
            }
        }
        if let Some(res) = released {
            fw.used.subtract(&res);
            if let Some(a) = self.agents.get_mut(&agent_id) {
                a.used.subtract(&res);
            }
        }
        let status = v1::TaskStatus {
            task_id: task_id.to_string(),
            state: state as i32,
            message: message.to_string(),
            source: v1::StatusSource::SourceMaster as i32,
            reason: reason as i32,
            agent_id,
            timestamp: now_secs(),
            framework_id: framework_id.to_string(),
            ..Default::default()
        };
        if let Some(t) = fw.tasks.get_mut(task_id) {
            t.last_status = Some(status.clone());
        }
        fw.send(
            epoch,
            event::Event::Update(event::Update {
                status: Some(status),
            }),
        );
        if state.is_terminal() {
            self.complete_task(framework_id, task_id);
        }
    }

    /// Moves a terminal task to the framework's completed list.
    fn complete_task(&mut self, framework_id: &str, task_id: &str) {
        let max = self.config.max_completed_tasks_per_framework;
        if let Some(fw) = self.frameworks.get_mut(framework_id) {
            if let Some(t) = fw.tasks.remove(task_id) {
                fw.completed.push_back(t);
                while fw.completed.len() > max {
                    fw.completed.pop_front();
                }
            }
        }
    }

    fn rescind_offers_on_agent(&mut self, agent_id: &str) {
        let ids: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.agent_id == agent_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.rescind(&id);
        }
    }

    /// Withdraws an outstanding offer and returns its resources.
    fn rescind(&mut self, offer_id: &str) {
        let epoch = self.epoch();
        if let Some(o) = self.remove_offer(offer_id) {
            if let Some(fw) = self.frameworks.get(&o.framework_id) {
                fw.send(
                    epoch,
                    event::Event::Rescind(event::Rescind {
                        offer_id: offer_id.to_string(),
                    }),
                );
            }
        }
    }

    fn remove_offer(&mut self, offer_id: &str) -> Option<OfferRec> {
        let o = self.offers.remove(offer_id)?;
        if let Some(a) = self.agents.get_mut(&o.agent_id) {
            a.offered.subtract(&o.resources);
        }
        if let Some(fw) = self.frameworks.get_mut(&o.framework_id) {
            fw.offers.remove(offer_id);
            fw.offered.subtract(&o.resources);
        }
        Some(o)
    }

    // -------------------------------------------------------- frameworks

    fn new_framework(&self, id: String, info: v1::FrameworkInfo) -> Framework {
        let role = info
            .roles
            .first()
            .cloned()
            .or_else(|| (!info.role.is_empty()).then(|| info.role.clone()))
            .unwrap_or_else(|| "*".to_string());
        Framework {
            id,
            info,
            role,
            tx: None,
            conn: 0,
            disconnected_at: Some(Instant::now()),
            suppressed: false,
            offers: HashSet::new(),
            tasks: BTreeMap::new(),
            completed: VecDeque::new(),
            used: Resources::new(),
            offered: Resources::new(),
            filters: HashMap::new(),
            registered_time: now_secs(),
            unregistered_time: None,
        }
    }

    fn subscribe(
        &mut self,
        request: v1::SubscribeRequest,
        tx: EventTx,
    ) -> Result<(String, u64), MasterError> {
        let mut info = request
            .framework_info
            .ok_or_else(|| MasterError::InvalidArgument("framework_info is required".into()))?;
        if info.name.is_empty() {
            return Err(MasterError::InvalidArgument(
                "framework_info.name is required".into(),
            ));
        }
        if !(info.failover_timeout.is_finite() && info.failover_timeout >= 0.0) {
            return Err(MasterError::InvalidArgument(
                "framework_info.failover_timeout must be a non-negative number".into(),
            ));
        }
        if info.roles.len() > 1 {
            return Err(MasterError::InvalidArgument(
                "framework_info.roles: only one role per framework is supported".into(),
            ));
        }
        for role in info.roles.iter().chain(std::iter::once(&info.role)) {
            if role.contains(['/', ' ', '\n']) && role != "*" {
                return Err(MasterError::InvalidArgument(format!(
                    "framework_info.roles: invalid role '{role}'"
                )));
            }
        }
        if info.user.is_empty() {
            info.user = "root".into();
        }
        if self.completed_frameworks.iter().any(|f| f.id == info.id)
            || (!info.id.is_empty() && self.registry.removed_frameworks.contains(&info.id))
        {
            return Err(MasterError::FailedPrecondition(format!(
                "framework {} has been removed (torn down or failover timeout)",
                info.id
            )));
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        let id = if info.id.is_empty() {
            self.next_framework += 1;
            format!("{}-{:04}", self.info.id, self.next_framework - 1)
        } else {
            info.id.clone()
        };
        info.id = id.clone();
        let epoch = self.epoch();
        if !self.frameworks.contains_key(&id) {
            let fw = self.new_framework(id.clone(), info.clone());
            self.frameworks.insert(id.clone(), fw);
        }
        // Offers made to the old connection are void.
        let old_offers: Vec<String> = self
            .frameworks
            .get(&id)
            .map(|f| f.offers.iter().cloned().collect())
            .unwrap_or_default();
        for o in old_offers {
            self.remove_offer(&o);
        }
        let Some(fw) = self.frameworks.get_mut(&id) else {
            return Err(MasterError::Internal("framework vanished".into()));
        };
        if let Some(old) = fw.tx.take() {
            let _ = old.send(Ok(v1::Event {
                epoch,
                event: Some(event::Event::Error(event::Error {
                    message: "Framework failed over".into(),
                })),
            }));
        }
        fw.info = info;
        fw.tx = Some(tx);
        fw.conn = conn;
        fw.disconnected_at = None;
        fw.suppressed = !request.suppressed_roles.is_empty();
        fw.unregistered_time = None;
        info!(framework.id = %id, name = %fw.info.name, role = %fw.role, "framework subscribed");
        fw.send(
            epoch,
            event::Event::Subscribed(event::Subscribed {
                framework_id: id.clone(),
                heartbeat_interval_seconds: self.config.framework_heartbeat_interval.as_secs_f64(),
                master_info: Some(self.info.clone()),
            }),
        );
        let registered = crate::registry::RegisteredFramework {
            name: fw.info.name.clone(),
            role: fw.role.clone(),
            failover_timeout: fw.info.failover_timeout,
            user: fw.info.user.clone(),
            capabilities: fw.info.capabilities.clone(),
        };
        if self.registry.frameworks.get(&id) != Some(&registered) {
            let key = id.clone();
            self.registry_update(|r| {
                r.frameworks.insert(key, registered);
            });
        }
        self.allocate_now = true;
        Ok((id, conn))
    }

    fn framework_closed(&mut self, framework_id: &str, conn: u64) {
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        if fw.conn != conn || fw.tx.is_none() {
            return;
        }
        info!(framework.id = %framework_id, failover_timeout = fw.info.failover_timeout, "framework disconnected");
        fw.tx = None;
        fw.disconnected_at = Some(Instant::now());
        fw.unregistered_time = Some(now_secs());
        let offers: Vec<String> = fw.offers.iter().cloned().collect();
        for o in offers {
            self.remove_offer(&o);
        }
        if fw_failover_expired(self.frameworks.get(framework_id), Instant::now()) {
            self.remove_framework(framework_id);
        }
    }

    /// Kills a framework's tasks and forgets it (teardown or failover timeout).
    fn remove_framework(&mut self, framework_id: &str) {
        let epoch = self.epoch();
        let Some(fw) = self.frameworks.get(framework_id) else {
            return;
        };
        info!(framework.id = %framework_id, "removing framework");
        let offers: Vec<String> = fw.offers.iter().cloned().collect();
        let agents: HashSet<String> = fw.tasks.values().map(|t| t.agent_id.clone()).collect();
        for o in offers {
            self.remove_offer(&o);
        }
        for agent_id in &agents {
            if let Some(a) = self.agents.get(agent_id) {
                a.send(
                    epoch,
                    master_message::Message::ShutdownFramework(v1::ShutdownFramework {
                        framework_id: framework_id.to_string(),
                    }),
                );
            }
        }
        let Some(mut fw) = self.frameworks.remove(framework_id) else {
            return;
        };
        for t in fw.tasks.values() {
            if !t.state.is_terminal() {
                if let Some(a) = self.agents.get_mut(&t.agent_id) {
                    a.used.subtract(&t.resources);
                }
            }
        }
        let tasks = std::mem::take(&mut fw.tasks);
        for (_, mut t) in tasks {
            if !t.state.is_terminal() {
                t.state = TaskState::TaskKilled;
                t.statuses.push((TaskState::TaskKilled, now_secs()));
            }
            fw.completed.push_back(t);
        }
        fw.used = Resources::new();
        if let Some(tx) = fw.tx.take() {
            let _ = tx.send(Ok(v1::Event {
                epoch,
                event: Some(event::Event::Error(event::Error {
                    message: "Framework has been removed".into(),
                })),
            }));
        }
        fw.unregistered_time = Some(now_secs());
        self.completed_frameworks.push_back(fw);
        while self.completed_frameworks.len() > 50 {
            self.completed_frameworks.pop_front();
        }
        let id = framework_id.to_string();
        self.registry_update(|r| {
            r.frameworks.remove(&id);
            r.removed_frameworks.insert(id);
            while r.removed_frameworks.len() > crate::registry::MAX_REMOVED_FRAMEWORKS {
                r.removed_frameworks.pop_first();
            }
        });
        self.allocate_now = true;
    }

    fn call(&mut self, call: Call) -> Result<(), MasterError> {
        let fid = call.framework_id().to_string();
        let Some(fw) = self.frameworks.get(&fid) else {
            return Err(MasterError::NotFound(format!(
                "framework '{fid}' is not subscribed"
            )));
        };
        // An operator may tear down a disconnected framework (within its
        // failover timeout); every other call needs the live subscription.
        if fw.tx.is_none() && !matches!(call, Call::Teardown(_)) {
            return Err(MasterError::FailedPrecondition(format!(
                "framework '{fid}' is not connected: subscribe first"
            )));
        }
        *self
            .metrics
            .calls
            .entry(crate::metrics::call_metric(&call))
            .or_default() += 1;
        match call {
            Call::Accept(a) => self.accept(a),
            Call::Decline(d) => {
                let refuse = refuse_duration(d.filters.as_ref())?;
                for offer_id in &d.offer_ids {
                    if let Some(o) = self.offers.get(offer_id) {
                        if o.framework_id != fid {
                            continue;
                        }
                    }
                    if let Some(o) = self.remove_offer(offer_id) {
                        self.add_filter(&fid, &o.agent_id, refuse);
                    }
                }
                Ok(())
            }
            Call::Revive(_) => {
                if let Some(fw) = self.frameworks.get_mut(&fid) {
                    fw.filters.clear();
                    fw.suppressed = false;
                }
                self.allocate_now = true;
                Ok(())
            }
            Call::Suppress(_) => {
                if let Some(fw) = self.frameworks.get_mut(&fid) {
                    fw.suppressed = true;
                }
                Ok(())
            }
            Call::Kill(k) => {
                self.kill(&fid, k);
                Ok(())
            }
            Call::Acknowledge(a) => self.acknowledge(&fid, a),
            Call::Reconcile(r) => {
                self.reconcile(&fid, r);
                Ok(())
            }
            Call::Teardown(_) => {
                self.remove_framework(&fid);
                Ok(())
            }
        }
    }

    fn add_filter(&mut self, framework_id: &str, agent_id: &str, refuse: Duration) {
        if refuse.is_zero() {
            return;
        }
        if let Some(fw) = self.frameworks.get_mut(framework_id) {
            fw.filters
                .insert(agent_id.to_string(), Instant::now() + refuse);
        }
    }

    fn accept(&mut self, req: v1::AcceptRequest) -> Result<(), MasterError> {
        let fid = req.framework_id.clone();
        let refuse = refuse_duration(req.filters.as_ref())?;
        let tasks: Vec<(v1::TaskInfo, bool)> = req
            .operations
            .iter()
            .flat_map(|op| match &op.operation {
                Some(operation::Operation::Launch(l)) => l
                    .task_infos
                    .iter()
                    .map(|t| (t.clone(), false))
                    .collect::<Vec<_>>(),
                Some(operation::Operation::LaunchGroup(g)) => {
                    g.task_infos.iter().map(|t| (t.clone(), true)).collect()
                }
                None => Vec::new(),
            })
            .collect();
        // Validate the offers: all known, all this framework's, one agent.
        let mut invalid: Option<String> = None;
        let mut agent_id: Option<String> = None;
        if req.offer_ids.is_empty() {
            invalid = Some("no offer_ids given".into());
        }
        let mut seen = HashSet::new();
        for offer_id in &req.offer_ids {
            if !seen.insert(offer_id) {
                invalid = Some(format!("offer {offer_id} appears more than once"));
                break;
            }
            match self.offers.get(offer_id) {
                None => {
                    invalid = Some(format!("Offer {offer_id} is no longer valid"));
                    break;
                }
                Some(o) if o.framework_id != fid => {
                    invalid = Some(format!("Offer {offer_id} belongs to another framework"));
                    break;
                }
                Some(o) => match &agent_id {
                    Some(a) if *a != o.agent_id => {
                        invalid = Some("Aggregated offers must belong to one agent".into());
                        break;
                    }
                    _ => agent_id = Some(o.agent_id.clone()),
                },
            }
        }
        if let Some(why) = invalid {
            // Valid offers among them are recovered (Mesos does the same).
            for offer_id in &req.offer_ids {
                if self
                    .offers
                    .get(offer_id)
                    .is_some_and(|o| o.framework_id == fid)
                {
                    self.remove_offer(offer_id);
                }
            }
            let state = if self
                .frameworks
                .get(&fid)
                .is_some_and(Framework::partition_aware)
            {
                TaskState::TaskDropped
            } else {
                TaskState::TaskLost
            };
            for (t, _) in &tasks {
                self.send_invalid(&fid, t, state, v1::StatusReason::ReasonInvalidOffers, &why);
            }
            self.metrics.invalid_launches += tasks.len() as u64;
            return Ok(());
        }
        let Some(agent_id) = agent_id else {
            return Ok(());
        };
        let mut pool = Resources::new();
        for offer_id in &req.offer_ids {
            if let Some(o) = self.remove_offer(offer_id) {
                self.metrics
                    .timings
                    .offer_accept(Instant::now().duration_since(o.created).as_secs_f64());
                pool.add(&o.resources);
            }
        }
        let framework_info = self
            .frameworks
            .get(&fid)
            .map(|f| f.info.clone())
            .unwrap_or_default();
        let epoch = self.epoch();
        for op in req.operations {
            let (group, infos) = match op.operation {
                Some(operation::Operation::Launch(l)) => (false, l.task_infos),
                Some(operation::Operation::LaunchGroup(g)) => (true, g.task_infos),
                None => continue,
            };
            // Validate every task first; a group launches all or nothing.
            let mut ok = Vec::new();
            let mut trial = pool.clone();
            let mut group_error = None;
            for mut t in infos {
                t.agent_id = agent_id.clone();
                match self.validate_task(&fid, &t, &trial, &ok) {
                    Ok(res) => {
                        trial.subtract(&res);
                        ok.push((t, res));
                    }
                    Err(why) => {
                        self.metrics.invalid_launches += 1;
                        self.send_invalid(
                            &fid,
                            &t,
                            TaskState::TaskError,
                            v1::StatusReason::ReasonTaskInvalid,
                            &why,
                        );
                        if group {
                            group_error = Some(why);
                        }
                    }
                }
            }
            if let Some(why) = group_error {
                for (t, _) in ok {
                    let msg = format!("Task group is invalid: {why}");
                    self.send_invalid(
                        &fid,
                        &t,
                        TaskState::TaskError,
                        v1::StatusReason::ReasonTaskInvalid,
                        &msg,
                    );
                }
                continue;
            }
            pool = trial;
            for (t, res) in ok {
                self.metrics.launched_tasks += 1;
                let now = now_secs();
                if let Some(a) = self.agents.get_mut(&agent_id) {
                    a.used.add(&res);
                    a.send(
                        epoch,
                        master_message::Message::RunTask(v1::RunTask {
                            framework: Some(framework_info.clone()),
                            task: Some(t.clone()),
                        }),
                    );
                }
                if let Some(fw) = self.frameworks.get_mut(&fid) {
                    fw.used.add(&res);
                    info!(framework.id = %fid, task.id = %t.task_id, agent.id = %agent_id, resources = %res, "launching task");
                    fw.tasks.insert(
                        t.task_id.clone(),
                        Task {
                            framework_id: fid.clone(),
                            agent_id: agent_id.clone(),
                            resources: res,
                            state: TaskState::TaskStaging,
                            statuses: vec![(TaskState::TaskStaging, now)],
                            last_status: None,
                            healthy: None,
                            info: t,
                        },
                    );
                }
            }
        }
        // Whatever was not used is declined with the given filter.
        if !pool.is_empty() {
            self.add_filter(&fid, &agent_id, refuse);
        }
        Ok(())
    }

    fn validate_task(
        &self,
        fid: &str,
        t: &v1::TaskInfo,
        pool: &Resources,
        batch: &[(v1::TaskInfo, Resources)],
    ) -> Result<Resources, String> {
        if t.task_id.is_empty() {
            return Err("Task ID must not be empty".into());
        }
        if t.task_id.contains(['/', '\0'])
            || t.task_id.len() > 255
            || t.task_id == "."
            || t.task_id == ".."
        {
            return Err(format!(
                "Task ID '{}' contains invalid characters",
                t.task_id
            ));
        }
        let duplicate = self.frameworks.get(fid).is_some_and(|f| {
            f.tasks
                .get(&t.task_id)
                .is_some_and(|x| !x.state.is_terminal())
        }) || batch.iter().any(|(b, _)| b.task_id == t.task_id);
        if duplicate {
            return Err(format!("Task ID '{}' is already in use", t.task_id));
        }
        match &t.command {
            Some(c) if !c.value.is_empty() => {}
            _ => return Err("Task must have a command (command.value)".into()),
        }
        if let Some(g) = t.kill_grace_period_seconds {
            if !(g.is_finite() && g >= 0.0) {
                return Err("kill_grace_period_seconds must be a non-negative number".into());
            }
        }
        for r in &t.resources {
            if r.r#type == v1::ValueType::Scalar as i32
                && !(r.scalar.is_finite() && r.scalar >= 0.0)
            {
                return Err(format!(
                    "Resource '{}' has an invalid value {}",
                    r.name, r.scalar
                ));
            }
        }
        let res = Resources::from_proto(&t.resources);
        if res.is_empty() {
            return Err("Task uses no resources".into());
        }
        if !pool.contains(&res) {
            return Err(format!(
                "Task uses more resources ({res}) than available ({pool}); short of: {}",
                pool.shortfall(&res).join(", ")
            ));
        }
        Ok(res)
    }

    fn send_invalid(
        &mut self,
        fid: &str,
        t: &v1::TaskInfo,
        state: TaskState,
        reason: v1::StatusReason,
        why: &str,
    ) {
        warn!(framework.id = %fid, task.id = %t.task_id, state = ?state, "{why}");
        let epoch = self.epoch();
        if let Some(fw) = self.frameworks.get(fid) {
            fw.send(
                epoch,
                event::Event::Update(event::Update {
                    status: Some(v1::TaskStatus {
                        task_id: t.task_id.clone(),
                        state: state as i32,
                        message: why.to_string(),
                        source: v1::StatusSource::SourceMaster as i32,
                        reason: reason as i32,
                        agent_id: t.agent_id.clone(),
                        timestamp: now_secs(),
                        framework_id: fid.to_string(),
                        ..Default::default()
                    }),
                }),
            );
        }
    }

    fn kill(&mut self, fid: &str, k: v1::KillRequest) {
        let epoch = self.epoch();
        let task = self
            .frameworks
            .get(fid)
            .and_then(|f| f.tasks.get(&k.task_id))
            .cloned();
        match task {
            Some(t) if !t.state.is_terminal() => match self.agents.get(&t.agent_id) {
                Some(a) if a.tx.is_some() && a.reachable => {
                    info!(framework.id = %fid, task.id = %k.task_id, "killing task");
                    a.send(
                        epoch,
                        master_message::Message::KillTask(v1::KillTask {
                            framework_id: fid.to_string(),
                            task_id: k.task_id.clone(),
                            grace_period_seconds: k.grace_period_seconds,
                        }),
                    );
                }
                _ => {
                    let state = self.lost_state(fid);
                    if state == TaskState::TaskUnreachable {
                        // The task may still run; say so again (Mesos answers
                        // a kill of an unreachable task with its state).
                        let st = t.last_status.clone().unwrap_or_default();
                        if let Some(fw) = self.frameworks.get(fid) {
                            fw.send(
                                epoch,
                                event::Event::Update(event::Update {
                                    status: Some(v1::TaskStatus {
                                        uuid: Vec::new(),
                                        ..st
                                    }),
                                }),
                            );
                        }
                    } else {
                        self.master_update(
                            fid,
                            &k.task_id,
                            state,
                            v1::StatusReason::ReasonAgentRemoved,
                            "Agent is not connected",
                        );
                    }
                }
            },
            Some(t) => {
                // Already terminal: repeat its last state so the caller converges.
                let status = t.last_status.unwrap_or_default();
                if let Some(fw) = self.frameworks.get(fid) {
                    fw.send(
                        epoch,
                        event::Event::Update(event::Update {
                            status: Some(v1::TaskStatus {
                                uuid: Vec::new(),
                                ..status
                            }),
                        }),
                    );
                }
            }
            None => {
                let state = if self
                    .frameworks
                    .get(fid)
                    .is_some_and(Framework::partition_aware)
                {
                    TaskState::TaskUnknown
                } else {
                    TaskState::TaskLost
                };
                let status = v1::TaskStatus {
                    task_id: k.task_id.clone(),
                    state: state as i32,
                    message: "Attempted to kill an unknown task".into(),
                    source: v1::StatusSource::SourceMaster as i32,
                    reason: v1::StatusReason::ReasonTaskUnknown as i32,
                    agent_id: k.agent_id,
                    timestamp: now_secs(),
                    framework_id: fid.to_string(),
                    ..Default::default()
                };
                if let Some(fw) = self.frameworks.get(fid) {
                    fw.send(
                        epoch,
                        event::Event::Update(event::Update {
                            status: Some(status),
                        }),
                    );
                }
            }
        }
    }

    fn acknowledge(&mut self, fid: &str, a: v1::AcknowledgeRequest) -> Result<(), MasterError> {
        if a.uuid.is_empty() {
            return Err(MasterError::InvalidArgument(
                "acknowledge.uuid is required".into(),
            ));
        }
        let epoch = self.epoch();
        let task = self
            .frameworks
            .get(fid)
            .and_then(|f| f.tasks.get(&a.task_id));
        let agent_id = match task {
            Some(t) => t.agent_id.clone(),
            None => a.agent_id.clone(),
        };
        let terminal_acked = task.is_some_and(|t| {
            t.state.is_terminal() && t.last_status.as_ref().is_some_and(|s| s.uuid == a.uuid)
        });
        if let Some(agent) = self.agents.get(&agent_id) {
            agent.send(
                epoch,
                master_message::Message::Acknowledge(v1::AcknowledgeUpdate {
                    framework_id: fid.to_string(),
                    task_id: a.task_id.clone(),
                    uuid: a.uuid,
                }),
            );
        }
        if terminal_acked {
            self.complete_task(fid, &a.task_id);
        }
        Ok(())
    }

    fn reconcile(&mut self, fid: &str, r: v1::ReconcileRequest) {
        let epoch = self.epoch();
        let Some(fw) = self.frameworks.get(fid) else {
            return;
        };
        let status_of = |t: &Task| v1::TaskStatus {
            task_id: t.info.task_id.clone(),
            state: t.state as i32,
            message: "Reconciliation: latest task state".into(),
            source: v1::StatusSource::SourceMaster as i32,
            reason: v1::StatusReason::ReasonReconciliation as i32,
            agent_id: t.agent_id.clone(),
            timestamp: now_secs(),
            framework_id: fid.to_string(),
            healthy: t.healthy,
            exit_code: t.last_status.as_ref().and_then(|s| s.exit_code),
            ..Default::default()
        };
        let mut out = Vec::new();
        if r.tasks.is_empty() {
            out.extend(fw.tasks.values().map(status_of));
        } else {
            for q in &r.tasks {
                match fw.tasks.get(&q.task_id).or_else(|| {
                    fw.completed
                        .iter()
                        .rev()
                        .find(|t| t.info.task_id == q.task_id)
                }) {
                    Some(t) => out.push(status_of(t)),
                    None => out.push(v1::TaskStatus {
                        task_id: q.task_id.clone(),
                        state: if fw.partition_aware() {
                            TaskState::TaskUnknown
                        } else {
                            TaskState::TaskLost
                        } as i32,
                        message: "Reconciliation: task is unknown".into(),
                        source: v1::StatusSource::SourceMaster as i32,
                        reason: v1::StatusReason::ReasonReconciliation as i32,
                        agent_id: q.agent_id.clone(),
                        timestamp: now_secs(),
                        framework_id: fid.to_string(),
                        ..Default::default()
                    }),
                }
            }
        }
        for s in out {
            fw.send(
                epoch,
                event::Event::Update(event::Update { status: Some(s) }),
            );
        }
    }

    // -------------------------------------------------------- timers

    /// Periodic housekeeping: agent health, offer timeouts, framework
    /// failover timeouts, heartbeats and filter expiry.
    fn maintain(&mut self) {
        if !self.leading {
            return;
        }
        self.expire_expected_agents(Instant::now());
        let now = Instant::now();
        let epoch = self.epoch();
        let ping = self.config.agent_ping_timeout;
        let deadline = ping * self.config.max_agent_ping_timeouts.max(1);
        let mut unreachable = Vec::new();
        for a in self.agents.values_mut() {
            if !a.reachable {
                continue;
            }
            if now.duration_since(a.last_ping) >= ping {
                a.last_ping = now;
                a.send(epoch, master_message::Message::Ping(v1::Ping {}));
            }
            if now.duration_since(a.last_seen) >= deadline {
                unreachable.push(a.id.clone());
            }
        }
        for agent_id in unreachable {
            self.mark_unreachable(&agent_id);
        }
        if let Some(timeout) = self.config.offer_timeout {
            let expired: Vec<String> = self
                .offers
                .iter()
                .filter(|(_, o)| now.duration_since(o.created) >= timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                debug!(offer.id = %id, "offer timed out");
                self.rescind(&id);
                self.changed();
            }
        }
        let failed: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| f.tx.is_none() && fw_failover_expired(Some(f), now))
            .map(|f| f.id.clone())
            .collect();
        for id in failed {
            info!(framework.id = %id, "framework failover timeout elapsed");
            self.remove_framework(&id);
            self.changed();
        }
        for fw in self.frameworks.values_mut() {
            fw.filters.retain(|_, until| *until > now);
        }
        if now.duration_since(self.last_heartbeat) >= self.config.framework_heartbeat_interval {
            self.last_heartbeat = now;
            for fw in self.frameworks.values() {
                fw.send(epoch, event::Event::Heartbeat(event::Heartbeat {}));
            }
        }
    }

    fn mark_unreachable(&mut self, agent_id: &str) {
        warn!(agent.id = %agent_id, "agent missed its pings: marking unreachable");
        self.changed();
        self.metrics.agent_removals += 1;
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.reachable = false;
            a.tx = None;
        }
        self.rescind_offers_on_agent(agent_id);
        let mut affected = Vec::new();
        for fw in self.frameworks.values() {
            for t in fw.tasks.values() {
                if t.agent_id == agent_id && !t.state.is_terminal() {
                    affected.push((fw.id.clone(), t.info.task_id.clone()));
                }
            }
        }
        for (fid, tid) in affected {
            let state = self.lost_state(&fid);
            self.master_update(
                &fid,
                &tid,
                state,
                v1::StatusReason::ReasonAgentRemoved,
                "Agent is unreachable",
            );
        }
    }

    /// One allocation round: turn free resources into offers.
    fn allocate(&mut self) {
        if !self.leading {
            self.allocate_now = false;
            return;
        }
        self.allocate_now = false;
        let started = std::time::Instant::now();
        let now = Instant::now();
        let agents: Vec<&Agent> = self
            .agents
            .values()
            .filter(|a| a.reachable && a.tx.is_some())
            .collect();
        let mut total = Resources::new();
        for a in &agents {
            total.add(&a.total);
        }
        let slots: Vec<AgentSlot> = agents
            .iter()
            .map(|a| AgentSlot {
                id: a.id.clone(),
                available: a.available(),
            })
            .collect();
        let fws: Vec<&Framework> = self
            .frameworks
            .values()
            .filter(|f| f.tx.is_some())
            .collect();
        if slots.is_empty() || fws.is_empty() {
            return;
        }
        let fslots: Vec<FrameworkSlot> = fws
            .iter()
            .map(|f| FrameworkSlot {
                id: f.id.clone(),
                role: f.role.clone(),
                allocated: f.used.plus(&f.offered),
                suppressed: f.suppressed,
            })
            .collect();
        let is_filtered = |fi: usize, ai: usize| -> bool {
            fws[fi]
                .filters
                .get(&slots[ai].id)
                .is_some_and(|until| *until > now)
        };
        let round = Round {
            agents: &slots,
            frameworks: &fslots,
            weights: &self.config.weights,
            total: &total,
            is_filtered: &is_filtered,
        };
        let allocations = allocator::allocate(&AllocatorConfig::default(), &round, &mut self.rng);
        let mut by_framework: BTreeMap<usize, Vec<v1::Offer>> = BTreeMap::new();
        let mut new_offers = Vec::new();
        for alloc in allocations {
            let fw = &fslots[alloc.framework];
            let agent = agents[alloc.agent];
            self.next_offer += 1;
            let id = format!("{}-O{}", self.info.id, self.next_offer - 1);
            by_framework
                .entry(alloc.framework)
                .or_default()
                .push(v1::Offer {
                    id: id.clone(),
                    framework_id: fw.id.clone(),
                    agent_id: agent.id.clone(),
                    hostname: agent.info.hostname.clone(),
                    resources: alloc.resources.to_proto(),
                    attributes: agent.info.attributes.clone(),
                    role: fw.role.clone(),
                });
            new_offers.push((
                id,
                OfferRec {
                    framework_id: fw.id.clone(),
                    agent_id: agent.id.clone(),
                    resources: alloc.resources,
                    created: now,
                },
            ));
        }
        let epoch = self.epoch();
        for (id, o) in new_offers {
            if let Some(a) = self.agents.get_mut(&o.agent_id) {
                a.offered.add(&o.resources);
            }
            if let Some(f) = self.frameworks.get_mut(&o.framework_id) {
                f.offered.add(&o.resources);
                f.offers.insert(id.clone());
            }
            self.offers.insert(id, o);
        }
        for (fi, offers) in by_framework {
            let fid = &fslots[fi].id;
            if let Some(f) = self.frameworks.get(fid) {
                debug!(framework.id = %fid, count = offers.len(), "sending offers");
                f.send(epoch, event::Event::Offers(event::Offers { offers }));
            }
        }
        self.metrics.allocation_runs += 1;
        self.metrics
            .timings
            .allocation_run(started.elapsed().as_secs_f64());
        self.changed();
    }

    // -------------------------------------------------------- snapshot

    /// The Mesos-shaped `/master/state` document.
    fn state_json(&self) -> Value {
        let leader_pid = format!("master@{}:{}", self.info.ip, self.info.port);
        let task_json = |t: &Task| {
            json!({
                "id": t.info.task_id,
                "name": t.info.name,
                "framework_id": t.framework_id,
                "executor_id": "",
                "slave_id": t.agent_id,
                "agent_id": t.agent_id,
                "state": t.state.as_str_name(),
                "resources": resources_json(&t.resources),
                "statuses": t.statuses.iter().map(|(s, ts)| json!({"state": s.as_str_name(), "timestamp": ts})).collect::<Vec<_>>(),
                "labels": t.info.labels.iter().map(|l| json!({"key": l.key, "value": l.value})).collect::<Vec<_>>(),
            })
        };
        let fw_json = |f: &Framework, active: bool| {
            json!({
                "id": f.id,
                "name": f.info.name,
                "user": f.info.user,
                "hostname": f.info.hostname,
                "webui_url": f.info.webui_url,
                "principal": f.info.principal,
                "role": f.role,
                "roles": [f.role],
                "failover_timeout": f.info.failover_timeout,
                "checkpoint": f.info.checkpoint,
                "capabilities": f.info.capabilities,
                "active": active && f.tx.is_some(),
                "connected": f.tx.is_some(),
                "registered_time": f.registered_time,
                "unregistered_time": f.unregistered_time.unwrap_or(0.0),
                "resources": resources_json(&f.used.plus(&f.offered)),
                "used_resources": resources_json(&f.used),
                "offered_resources": resources_json(&f.offered),
                "tasks": f.tasks.values().filter(|t| t.state != TaskState::TaskUnreachable).map(task_json).collect::<Vec<_>>(),
                "unreachable_tasks": f.tasks.values().filter(|t| t.state == TaskState::TaskUnreachable).map(task_json).collect::<Vec<_>>(),
                "completed_tasks": f.completed.iter().map(task_json).collect::<Vec<_>>(),
                "offers": f.offers.iter().filter_map(|id| self.offers.get(id).map(|o| json!({
                    "id": id, "framework_id": o.framework_id, "slave_id": o.agent_id, "agent_id": o.agent_id,
                    "resources": resources_json(&o.resources),
                }))).collect::<Vec<_>>(),
                "executors": [],
                "pid": null,
                "recovered": false,
                "labels": [],
            })
        };
        let c = &self.config;
        let mut weights: Vec<String> = c.weights.iter().map(|(r, w)| format!("{r}={w}")).collect();
        weights.sort();
        let flags = json!({
            "allocation_interval": format!("{}secs", c.allocation_interval.as_secs_f64()),
            "offer_timeout": c.offer_timeout.map(|d| format!("{}secs", d.as_secs_f64())),
            "agent_ping_timeout": format!("{}secs", c.agent_ping_timeout.as_secs_f64()),
            "max_agent_ping_timeouts": c.max_agent_ping_timeouts.to_string(),
            "framework_heartbeat_interval": format!("{}secs", c.framework_heartbeat_interval.as_secs_f64()),
            "max_completed_tasks_per_framework": c.max_completed_tasks_per_framework.to_string(),
            "max_completed_frameworks": "50",
            "weights": weights.join(","),
            // Credentials in `zk://user:pass@...` never leave the process.
            "zk": c.zk.as_ref().map(|z| match z.rsplit_once('@') {
                Some((_, hosts)) => format!("zk://{hosts}"),
                None => z.clone(),
            }),
        });
        let slave_json = |a: &Agent| {
            let mut m = json!({
                "id": a.id,
                "hostname": a.info.hostname,
                "port": a.info.port,
                "pid": format!("slave(1)@{}:{}", a.info.hostname, a.info.port),
                "attributes": a.info.attributes.iter().map(|x| (x.name.clone(), if x.r#type == v1::ValueType::Scalar as i32 { json!(x.scalar) } else { json!(x.text) })).collect::<serde_json::Map<_, _>>(),
                "resources": resources_json(&a.total),
                "used_resources": resources_json(&a.used),
                "offered_resources": resources_json(&a.offered),
                "unreserved_resources": resources_json(&a.total),
                "reserved_resources": {},
                "registered_time": a.registered_time,
                "reregistered_time": a.reregistered_time,
                "active": a.reachable && a.tx.is_some(),
                "deactivated": false,
                "connected": a.tx.is_some(),
                "reachable": a.reachable,
                "version": crate::MESOS_COMPAT_VERSION,
                "capabilities": [],
            });
            // Mesos also flattens the agent's total resources into the object.
            if let (Some(obj), Value::Object(res)) = (m.as_object_mut(), resources_json(&a.total)) {
                for (k, v) in res {
                    obj.entry(k).or_insert(v);
                }
            }
            m
        };
        json!({
            "version": crate::MESOS_COMPAT_VERSION,
            "mezzo_version": env!("CARGO_PKG_VERSION"),
            "git_sha": "",
            "git_branch": "",
            "build_date": "",
            "build_time": 0,
            "build_user": "mezzo",
            "cluster": "",
            "log_dir": "",
            "capabilities": [],
            "flags": flags,
            "id": self.info.id,
            "pid": leader_pid,
            "hostname": self.info.hostname,
            "start_time": self.start_time,
            "elected_time": self.elected_time,
            // A standalone master (no election) leads itself.
            "leader": self.leader_hint.as_ref().map(|h| format!("master@{h}"))
                .or_else(|| self.leading.then(|| leader_pid.clone())),
            "leading": self.leading,
            "leader_info": master_info_json(&self.info),
            "activated_slaves": self.agents.values().filter(|a| a.reachable).count(),
            "deactivated_slaves": 0,
            "unreachable_slaves": self.agents.values().filter(|a| !a.reachable).count(),
            "slaves": self.agents.values().map(slave_json).collect::<Vec<_>>(),
            "recovered_slaves": [],
            "frameworks": self.frameworks.values().map(|f| fw_json(f, true)).collect::<Vec<_>>(),
            "completed_frameworks": self.completed_frameworks.iter().map(|f| fw_json(f, false)).collect::<Vec<_>>(),
            "orphan_tasks": [],
            "unregistered_frameworks": [],
        })
    }

    fn metrics_json(&self) -> Value {
        let mut total = Resources::new();
        let mut used = Resources::new();
        for a in self.agents.values().filter(|a| a.reachable) {
            total.add(&a.total);
            used.add(&a.used);
        }
        let mut counts: HashMap<&'static str, u64> = HashMap::new();
        for f in self.frameworks.values() {
            for t in f.tasks.values().chain(f.completed.iter()) {
                *counts.entry(t.state.as_str_name()).or_default() += 1;
            }
        }
        let pct = |name: &str| {
            let t = total.scalar(name);
            if t > 0.0 {
                used.scalar(name) / t
            } else {
                0.0
            }
        };
        let mut m = serde_json::Map::new();
        m.insert("master/elected".into(), json!(u8::from(self.leading)));
        m.insert(
            "master/uptime_secs".into(),
            json!(now_secs() - self.start_time),
        );
        m.insert(
            "master/slaves_active".into(),
            json!(self
                .agents
                .values()
                .filter(|a| a.reachable && a.tx.is_some())
                .count()),
        );
        m.insert(
            "master/slaves_connected".into(),
            json!(self.agents.values().filter(|a| a.tx.is_some()).count()),
        );
        m.insert(
            "master/slaves_unreachable".into(),
            json!(self.agents.values().filter(|a| !a.reachable).count()),
        );
        m.insert(
            "master/frameworks_active".into(),
            json!(self.frameworks.values().filter(|f| f.tx.is_some()).count()),
        );
        m.insert(
            "master/frameworks_disconnected".into(),
            json!(self.frameworks.values().filter(|f| f.tx.is_none()).count()),
        );
        m.insert("master/outstanding_offers".into(), json!(self.offers.len()));
        for s in crate::metrics::TASK_STATES {
            let key = format!("TASK_{}", s.to_uppercase());
            m.insert(
                format!("master/tasks_{s}"),
                json!(counts.get(key.as_str()).copied().unwrap_or(0)),
            );
        }
        for r in ["cpus", "mem", "disk"] {
            m.insert(format!("master/{r}_total"), json!(total.scalar(r)));
            m.insert(format!("master/{r}_used"), json!(used.scalar(r)));
            m.insert(format!("master/{r}_percent"), json!(pct(r)));
        }
        let counters: [(&str, u64); 7] = [
            ("master/messages_status_update", self.metrics.status_updates),
            ("master/valid_status_updates", self.metrics.status_updates),
            ("mezzo/tasks_launched", self.metrics.launched_tasks),
            ("master/invalid_launches", self.metrics.invalid_launches),
            (
                "master/slave_registrations",
                self.metrics.agent_registrations,
            ),
            (
                "master/slave_reregistrations",
                self.metrics.agent_reregistrations,
            ),
            ("master/slave_removals", self.metrics.agent_removals),
        ];
        for (name, value) in counters {
            m.insert(name.into(), json!(value));
        }
        // Mesos counts ACCEPT messages here; the tasks they launched are
        // `mezzo/tasks_launched`.
        for name in [
            "master/messages_launch_tasks",
            "master/messages_decline_offers",
            "master/messages_revive_offers",
            "master/messages_suppress_offers",
            "master/messages_kill_task",
            "master/messages_status_update_acknowledgement",
            "master/messages_reconcile_tasks",
            "master/messages_unregister_framework",
        ] {
            m.insert(
                name.into(),
                json!(self.metrics.calls.get(name).copied().unwrap_or(0)),
            );
        }
        m.insert(
            "master/slaves_disconnected".into(),
            json!(self
                .agents
                .values()
                .filter(|a| a.reachable && a.tx.is_none())
                .count()),
        );
        m.insert(
            "master/frameworks_connected".into(),
            json!(self.frameworks.values().filter(|f| f.tx.is_some()).count()),
        );
        let mut offered = Resources::new();
        for o in self.offers.values() {
            offered.add(&o.resources);
        }
        for r in ["cpus", "mem", "disk"] {
            m.insert(
                format!("allocator/mesos/resources/{r}/total"),
                json!(total.scalar(r)),
            );
            m.insert(
                format!("allocator/mesos/resources/{r}/offered_or_allocated"),
                json!(used.scalar(r) + offered.scalar(r)),
            );
        }
        m.insert(
            "allocator/mesos/allocation_runs".into(),
            json!(self.metrics.allocation_runs),
        );
        let t = &self.metrics.timings;
        t.allocation_run
            .insert_into(&mut m, "allocator/mesos/allocation_run_ms");
        t.offer_accept
            .insert_into(&mut m, "mezzo/offer_accept_latency_ms");
        t.launch.insert_into(&mut m, "mezzo/task_launch_latency_ms");
        Value::Object(m)
    }
}

fn fw_failover_expired(fw: Option<&Framework>, now: Instant) -> bool {
    let Some(fw) = fw else { return false };
    let Some(at) = fw.disconnected_at else {
        return false;
    };
    let timeout = Duration::try_from_secs_f64(fw.info.failover_timeout.min(31_536_000.0))
        .unwrap_or(Duration::ZERO);
    now.duration_since(at) >= timeout
}

/// Mesos' default refuse filter is 5 s, capped at a year.
fn refuse_duration(filters: Option<&v1::Filters>) -> Result<Duration, MasterError> {
    let secs = filters.and_then(|f| f.refuse_seconds).unwrap_or(5.0);
    if !secs.is_finite() || secs < 0.0 {
        return Err(MasterError::InvalidArgument(
            "filters.refuse_seconds must be a non-negative number".into(),
        ));
    }
    Ok(Duration::from_secs_f64(secs.min(31_536_000.0)))
}

/// Mesos' flat resource JSON: `{"cpus": 2.0, "mem": 1024.0, "ports": "[31000-32000]"}`.
pub(crate) fn resources_json(r: &Resources) -> Value {
    json!(r.mesos_flat())
}

/// MasterInfo in Mesos' JSON field names (also the ZooKeeper znode format).
pub fn master_info_json(info: &v1::MasterInfo) -> Value {
    json!({
        "id": info.id,
        "ip": ipv4_as_u32(&info.ip),
        "port": info.port,
        "pid": format!("master@{}:{}", info.ip, info.port),
        "hostname": info.hostname,
        "version": crate::MESOS_COMPAT_VERSION,
        "address": {"hostname": info.hostname, "ip": info.ip, "port": info.port},
    })
}

/// Mesos stores the IPv4 address as a uint32 in network byte order.
fn ipv4_as_u32(ip: &str) -> u32 {
    ip.parse::<std::net::Ipv4Addr>()
        .map(|a| u32::from_ne_bytes(a.octets()))
        .unwrap_or(0)
}

/// What the actor publishes for HTTP readers.
#[derive(Clone, Default)]
pub(crate) struct Snapshot {
    pub state: Arc<Value>,
    pub metrics: Arc<Value>,
    /// Whether this master leads, and the leader's `host:port` if known.
    pub leading: bool,
    pub leader: Option<String>,
}

/// Longest time HTTP readers may see a stale snapshot.
const SNAPSHOT_PERIOD: Duration = Duration::from_millis(50);

/// Runs the actor until every command sender is dropped.
pub(crate) async fn run(
    mut master: Master,
    mut rx: mpsc::Receiver<Command>,
    snapshot: watch::Sender<Snapshot>,
) {
    let mut alloc_tick = tokio::time::interval(master.config.allocation_interval);
    alloc_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let maint_period = (master.config.agent_ping_timeout / 4)
        .clamp(Duration::from_millis(20), Duration::from_millis(250));
    let mut maint_tick = tokio::time::interval(maint_period);
    maint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The snapshot is rebuilt from the whole state: doing that after every
    // status update made a burst of N updates cost O(N^2). Agents' messages
    // are published at most every SNAPSHOT_PERIOD; every other change at once.
    let mut publish_tick = tokio::time::interval(SNAPSHOT_PERIOD);
    publish_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_publish: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = publish_tick.tick() => {}
            cmd = rx.recv() => match cmd {
                Some(c) => master.handle(c),
                None => break,
            },
            _ = alloc_tick.tick() => master.allocate(),
            _ = maint_tick.tick() => master.maintain(),
        }
        // Handle whatever else is queued before the costlier work below.
        while let Ok(c) = rx.try_recv() {
            master.handle(c);
        }
        if master.allocate_now {
            master.allocate();
        }
        if master.registry_dirty {
            master.registry_dirty = false;
            if let Some(w) = &master.registry_writer {
                w.send_replace(master.registry.clone());
            }
        }
        let due = last_publish.is_none_or(|at| at.elapsed() >= SNAPSHOT_PERIOD);
        if master.dirty && (due || master.publish_now) {
            master.dirty = false;
            master.publish_now = false;
            last_publish = Some(Instant::now());
            snapshot.send_replace(Snapshot {
                state: Arc::new(master.state_json()),
                metrics: Arc::new(master.metrics_json()),
                leading: master.leading,
                leader: master.leader_hint.clone(),
            });
        }
    }
    info!("master actor stopped");
}
