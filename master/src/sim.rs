//! A deterministic simulated cluster: simulated agents and frameworks
//! driving the pure master core ([`crate::state::Master`]) in memory with a
//! virtual clock, in the spirit of raft-rs' test harness.
//!
//! Agents run what they are told (optionally reporting TASK_RUNNING at once
//! and TASK_KILLED on a kill) and resend unacknowledged updates; frameworks
//! record every event and acknowledge updates. Tests and benchmarks cut
//! agents off (`partition_agent`), disconnect frameworks, advance the clock
//! and check invariants. Nothing here does I/O or reads a real clock, so a
//! run is a pure function of its inputs and seed.
#![deny(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mezzo_proto::v1::{self, agent_message, event, master_message, TaskState};
use mezzo_proto::Resources;

use crate::config::MasterConfig;
use crate::state::{Call, ConnId, Input, Master, Output, Reply, Time};
use crate::MasterError;

/// Wall-clock seconds at the simulation's time zero.
const WALL_ORIGIN: f64 = 1_000_000.0;

/// A simulated agent.
#[derive(Debug, Default)]
pub struct SimAgent {
    /// Its id once registered.
    pub id: String,
    /// Hostname it registers with.
    pub hostname: String,
    /// Resources it registers with.
    pub resources: Resources,
    /// Its attached stream.
    pub conn: Option<ConnId>,
    /// Cut off: nothing it sends arrives, nothing sent to it arrives.
    pub partitioned: bool,
    /// Live tasks: (framework, task) → (info, state).
    pub tasks: BTreeMap<(String, String), (v1::TaskInfo, TaskState)>,
    /// Updates sent and not yet acknowledged, per task, oldest first.
    pub unacked: BTreeMap<(String, String), Vec<v1::TaskStatus>>,
    /// Every message it received.
    pub received: Vec<v1::MasterMessage>,
    /// Report TASK_RUNNING as soon as a task arrives.
    pub auto_run: bool,
    /// Report TASK_KILLED when told to kill.
    pub auto_kill: bool,
    next_uuid: u64,
}

/// A simulated framework.
#[derive(Debug, Default)]
pub struct SimFramework {
    /// Its id once subscribed.
    pub id: String,
    /// What it subscribes with.
    pub info: v1::FrameworkInfo,
    /// Its attached stream.
    pub conn: Option<ConnId>,
    /// Every event received, in order.
    pub events: Vec<v1::Event>,
    /// Offers received and not rescinded, used or declined.
    pub offers: BTreeMap<String, v1::Offer>,
    /// Every status update received, in order.
    pub updates: Vec<v1::TaskStatus>,
    /// Acknowledge updates that carry a uuid.
    pub auto_ack: bool,
    /// The error its stream was closed with, if any.
    pub closed: Option<Option<String>>,
}

#[derive(Debug, Clone)]
enum Peer {
    Agent(String),
    Framework(String),
}

/// The simulated cluster.
pub struct Sim {
    /// The master under test.
    pub master: Master,
    /// Virtual time.
    pub now: Time,
    /// Agents by the name the test gave them.
    pub agents: BTreeMap<String, SimAgent>,
    /// Frameworks by the name the test gave them.
    pub frameworks: BTreeMap<String, SimFramework>,
    conns: HashMap<ConnId, Peer>,
    next_conn: ConnId,
}

impl Sim {
    /// A leading standalone master with `config`, RNG seeded with `seed`.
    pub fn new(config: MasterConfig, seed: u64) -> Self {
        let info = v1::MasterInfo {
            id: "sim".into(),
            ip: "127.0.0.1".into(),
            port: 5050,
            hostname: "sim".into(),
            version: crate::MESOS_COMPAT_VERSION.into(),
            epoch: 1,
        };
        Sim {
            master: Master::new(config, info, WALL_ORIGIN, seed),
            now: Time::ZERO,
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            conns: HashMap::new(),
            next_conn: 1,
        }
    }

    /// The leading master dies and a standby takes over in `epoch` with the
    /// registry the old leader last wrote, as a ZooKeeper election does:
    /// every stream to the old master ends with it; agents keep their
    /// tasks and unacknowledged updates, frameworks their ids, and each
    /// must re-attach (`attach_agent`) or re-subscribe (`subscribe`).
    pub fn fail_over(&mut self, epoch: u64) -> Result<(), MasterError> {
        let mut config = (*self.master.config).clone();
        config.zk.get_or_insert_with(|| "zk://sim/mezzo".into());
        let registry = self.master.registry.clone();
        let info = v1::MasterInfo {
            id: format!("sim{epoch}"),
            epoch,
            ..self.master.info.clone()
        };
        self.master = Master::new(config, info, WALL_ORIGIN, epoch);
        self.conns.clear();
        for a in self.agents.values_mut() {
            a.conn = None;
        }
        for f in self.frameworks.values_mut() {
            if f.conn.take().is_some() {
                f.closed = Some(Some("the master died".into()));
            }
        }
        self.input(Input::Leadership(crate::state::LeaderState::Leading {
            epoch,
            registry: Some(registry),
        }))
        .map(|_| ())
    }

    /// Feeds one input and delivers what follows until quiet.
    pub fn input(&mut self, input: Input) -> Result<Reply, MasterError> {
        let r = self.master.handle(self.now, input);
        self.settle();
        r
    }

    fn new_conn(&mut self, peer: Peer) -> ConnId {
        let c = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(c, peer);
        c
    }

    /// Registers agent `name` with `resources` (Mesos text); returns its id.
    pub fn add_agent(&mut self, name: &str, resources: &str) -> Result<String, MasterError> {
        let resources =
            Resources::parse(resources).map_err(|e| MasterError::InvalidArgument(e.to_string()))?;
        self.agents.insert(
            name.to_string(),
            SimAgent {
                hostname: format!("{name}.sim"),
                resources,
                auto_run: true,
                auto_kill: true,
                ..Default::default()
            },
        );
        self.attach_agent(name)
    }

    /// (Re-)attaches agent `name` on a new stream, reporting its tasks.
    pub fn attach_agent(&mut self, name: &str) -> Result<String, MasterError> {
        let conn = self.new_conn(Peer::Agent(name.to_string()));
        let Some(a) = self.agents.get_mut(name) else {
            return Err(MasterError::NotFound(name.into()));
        };
        a.partitioned = false;
        let register = v1::RegisterAgent {
            info: Some(v1::AgentInfo {
                id: a.id.clone(),
                hostname: a.hostname.clone(),
                port: 5051,
                resources: a.resources.to_proto(),
                attributes: Vec::new(),
            }),
            tasks: a
                .tasks
                .iter()
                .map(|((fid, _), (info, state))| v1::TaskAndState {
                    framework_id: fid.clone(),
                    task: Some(info.clone()),
                    state: *state as i32,
                })
                .collect(),
            frameworks: Vec::new(),
        };
        let r = self
            .master
            .handle(self.now, Input::AgentAttach { conn, register });
        let id = match r {
            Ok(Reply::Agent(id)) => id,
            Ok(_) => return Err(MasterError::Internal("no agent id".into())),
            Err(e) => {
                self.conns.remove(&conn);
                return Err(e);
            }
        };
        if let Some(a) = self.agents.get_mut(name) {
            a.id = id.clone();
            a.conn = Some(conn);
        }
        self.settle();
        // A re-attached agent resends every unacknowledged update's head.
        self.resend_unacked(name);
        Ok(id)
    }

    /// Subscribes framework `name` (a new one, or again after a disconnect);
    /// `partition_aware` adds the capability. Returns its id.
    pub fn subscribe(&mut self, name: &str, role: &str) -> Result<String, MasterError> {
        let fw = self
            .frameworks
            .entry(name.to_string())
            .or_insert_with(|| SimFramework {
                info: v1::FrameworkInfo {
                    name: name.to_string(),
                    roles: vec![role.to_string()],
                    failover_timeout: 60.0,
                    ..Default::default()
                },
                auto_ack: true,
                ..Default::default()
            });
        let mut info = fw.info.clone();
        info.id = fw.id.clone();
        let conn = self.new_conn(Peer::Framework(name.to_string()));
        let request = v1::SubscribeRequest {
            framework_info: Some(info),
            ..Default::default()
        };
        match self
            .master
            .handle(self.now, Input::Subscribe { conn, request })
        {
            Ok(Reply::Framework(id)) => {
                if let Some(fw) = self.frameworks.get_mut(name) {
                    fw.id = id.clone();
                    fw.conn = Some(conn);
                    fw.closed = None;
                    fw.offers.clear();
                }
                self.settle();
                Ok(id)
            }
            Ok(_) => Err(MasterError::Internal("no framework id".into())),
            Err(e) => {
                self.conns.remove(&conn);
                self.settle();
                Err(e)
            }
        }
    }

    /// Agent `name`'s tasks that have not ended, (framework id, task id).
    pub fn live_tasks(&self, name: &str) -> Vec<(String, String)> {
        self.agents
            .get(name)
            .map(|a| {
                a.tasks
                    .iter()
                    .filter(|(_, (_, s))| !s.is_terminal())
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The framework's id.
    pub fn fid(&self, name: &str) -> String {
        self.frameworks
            .get(name)
            .map(|f| f.id.clone())
            .unwrap_or_default()
    }

    /// The agent's id.
    pub fn aid(&self, name: &str) -> String {
        self.agents
            .get(name)
            .map(|a| a.id.clone())
            .unwrap_or_default()
    }

    /// A scheduler call from framework `name`.
    pub fn call(&mut self, call: Call) -> Result<(), MasterError> {
        self.input(Input::Call(call)).map(|_| ())
    }

    /// Runs an allocation round.
    pub fn allocate(&mut self) {
        let _ = self.input(Input::Allocate);
    }

    /// Advances the clock by `d` in housekeeping steps of at most `step`,
    /// with agents heartbeating (unless partitioned) at each step.
    pub fn advance(&mut self, d: Duration, step: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + step).min(end);
            let names: Vec<String> = self.agents.keys().cloned().collect();
            for n in names {
                self.agent_send(&n, agent_message::Message::Heartbeat(v1::Heartbeat {}));
            }
            let _ = self.input(Input::Tick);
        }
    }

    /// Launches `tasks` on offer `offer_id` for framework `name`.
    pub fn launch(
        &mut self,
        name: &str,
        offer_id: &str,
        tasks: Vec<v1::TaskInfo>,
    ) -> Result<(), MasterError> {
        let framework_id = self.fid(name);
        if let Some(f) = self.frameworks.get_mut(name) {
            f.offers.remove(offer_id);
        }
        self.call(Call::Accept(v1::AcceptRequest {
            framework_id,
            offer_ids: vec![offer_id.to_string()],
            operations: vec![v1::Operation {
                operation: Some(v1::operation::Operation::Launch(v1::operation::Launch {
                    task_infos: tasks,
                })),
            }],
            filters: None,
        }))
    }

    /// Ends framework `name`'s stream (the process died or the network cut).
    pub fn disconnect_framework(&mut self, name: &str) {
        let Some(f) = self.frameworks.get_mut(name) else {
            return;
        };
        let Some(conn) = f.conn.take() else { return };
        let framework_id = f.id.clone();
        self.conns.remove(&conn);
        let _ = self.input(Input::FrameworkClosed { framework_id, conn });
    }

    /// Ends agent `name`'s stream.
    pub fn disconnect_agent(&mut self, name: &str) {
        let Some(a) = self.agents.get_mut(name) else {
            return;
        };
        let Some(conn) = a.conn.take() else { return };
        let agent_id = a.id.clone();
        self.conns.remove(&conn);
        let _ = self.input(Input::AgentClosed { agent_id, conn });
    }

    /// Cuts agent `name` off without closing its stream (a partition or a
    /// frozen process): nothing it sends arrives, nor anything sent to it.
    pub fn partition_agent(&mut self, name: &str) {
        if let Some(a) = self.agents.get_mut(name) {
            a.partitioned = true;
        }
    }

    /// Agent `name` reports `state` for a task (a fresh update with a uuid).
    pub fn agent_update(
        &mut self,
        name: &str,
        framework_id: &str,
        task_id: &str,
        state: TaskState,
    ) {
        let Some(a) = self.agents.get_mut(name) else {
            return;
        };
        let key = (framework_id.to_string(), task_id.to_string());
        // A terminal task stays (and is reported on re-registration) until
        // its terminal update is acknowledged, as on a real agent.
        if let Some(t) = a.tasks.get_mut(&key) {
            t.1 = state;
        }
        a.next_uuid += 1;
        let status = v1::TaskStatus {
            task_id: task_id.to_string(),
            state: state as i32,
            source: v1::StatusSource::SourceExecutor as i32,
            uuid: format!("{}-{}", a.hostname, a.next_uuid).into_bytes(),
            agent_id: a.id.clone(),
            framework_id: framework_id.to_string(),
            ..Default::default()
        };
        let queue = a.unacked.entry(key).or_default();
        queue.push(status.clone());
        // Only the head of a task's stream is in flight (Mesos' status
        // update manager); the rest follow its acknowledgement.
        if queue.len() == 1 {
            self.send_status(name, framework_id, status);
        }
    }

    fn send_status(&mut self, name: &str, framework_id: &str, status: v1::TaskStatus) {
        self.agent_send(
            name,
            agent_message::Message::StatusUpdate(v1::StatusUpdate {
                framework_id: framework_id.to_string(),
                status: Some(status),
            }),
        );
    }

    /// Agent `name`'s retry timer fires: it resends the head of every
    /// task's stream on its current stream.
    pub fn retry_unacked(&mut self, name: &str) {
        self.resend_unacked(name);
    }

    fn resend_unacked(&mut self, name: &str) {
        let heads: Vec<(String, v1::TaskStatus)> = self
            .agents
            .get(name)
            .map(|a| {
                a.unacked
                    .iter()
                    .filter_map(|((fid, _), q)| q.first().map(|s| (fid.clone(), s.clone())))
                    .collect()
            })
            .unwrap_or_default();
        for (fid, s) in heads {
            self.send_status(name, &fid, s);
        }
    }

    fn agent_send(&mut self, name: &str, msg: agent_message::Message) {
        let Some(a) = self.agents.get(name) else {
            return;
        };
        let (Some(conn), false) = (a.conn, a.partitioned) else {
            return;
        };
        let agent_id = a.id.clone();
        let _ = self.master.handle(
            self.now,
            Input::AgentMessage {
                agent_id,
                conn,
                msg,
            },
        );
        self.settle();
    }

    /// Delivers the master's outputs, and the peers' automatic reactions,
    /// until nothing more happens.
    fn settle(&mut self) {
        loop {
            let outputs = self.master.take_outputs();
            if outputs.is_empty() {
                return;
            }
            for out in outputs {
                self.route(out);
            }
        }
    }

    fn route(&mut self, out: Output) {
        match out {
            Output::ToAgent { conn, msg } => {
                if let Some(Peer::Agent(name)) = self.conns.get(&conn).cloned() {
                    self.agent_receive(&name, msg);
                }
            }
            Output::ToFramework { conn, event } => {
                if let Some(Peer::Framework(name)) = self.conns.get(&conn).cloned() {
                    self.framework_receive(&name, event);
                }
            }
            Output::Close { conn, error } => match self.conns.remove(&conn) {
                Some(Peer::Agent(name)) => {
                    if let Some(a) = self.agents.get_mut(&name) {
                        if a.conn == Some(conn) {
                            a.conn = None;
                        }
                    }
                }
                Some(Peer::Framework(name)) => {
                    if let Some(f) = self.frameworks.get_mut(&name) {
                        if f.conn == Some(conn) {
                            f.conn = None;
                            f.closed = Some(error);
                        }
                    }
                }
                None => {}
            },
        }
    }

    fn agent_receive(&mut self, name: &str, msg: v1::MasterMessage) {
        let Some(a) = self.agents.get_mut(name) else {
            return;
        };
        if a.partitioned {
            return;
        }
        a.received.push(msg.clone());
        match msg.message {
            Some(master_message::Message::RunTask(r)) => {
                let (Some(fw), Some(task)) = (r.framework, r.task) else {
                    return;
                };
                let key = (fw.id.clone(), task.task_id.clone());
                a.tasks.insert(key, (task.clone(), TaskState::TaskStaging));
                if a.auto_run {
                    self.agent_update(name, &fw.id, &task.task_id, TaskState::TaskRunning);
                }
            }
            Some(master_message::Message::KillTask(k)) => {
                let live = a
                    .tasks
                    .get(&(k.framework_id.clone(), k.task_id.clone()))
                    .is_some_and(|(_, s)| !s.is_terminal());
                if a.auto_kill && live {
                    self.agent_update(name, &k.framework_id, &k.task_id, TaskState::TaskKilled);
                }
            }
            Some(master_message::Message::Acknowledge(ack)) => {
                let key = (ack.framework_id.clone(), ack.task_id.clone());
                let next = a.unacked.get_mut(&key).and_then(|q| {
                    if q.first().is_some_and(|s| s.uuid == ack.uuid) {
                        q.remove(0);
                    }
                    q.first().cloned()
                });
                if a.unacked.get(&key).is_some_and(Vec::is_empty) {
                    a.unacked.remove(&key);
                    if a.tasks.get(&key).is_some_and(|(_, s)| s.is_terminal()) {
                        a.tasks.remove(&key);
                    }
                }
                if let Some(s) = next {
                    self.send_status(name, &ack.framework_id, s);
                }
            }
            Some(master_message::Message::ShutdownFramework(s)) => {
                a.tasks.retain(|(fid, _), _| *fid != s.framework_id);
            }
            _ => {}
        }
    }

    fn framework_receive(&mut self, name: &str, ev: v1::Event) {
        let Some(f) = self.frameworks.get_mut(name) else {
            return;
        };
        f.events.push(ev.clone());
        match ev.event {
            Some(event::Event::Offers(o)) => {
                for offer in o.offers {
                    f.offers.insert(offer.id.clone(), offer);
                }
            }
            Some(event::Event::Rescind(r)) => {
                f.offers.remove(&r.offer_id);
            }
            Some(event::Event::Update(u)) => {
                let Some(status) = u.status else { return };
                f.updates.push(status.clone());
                if f.auto_ack && !status.uuid.is_empty() {
                    let ack = v1::AcknowledgeRequest {
                        framework_id: f.id.clone(),
                        agent_id: status.agent_id.clone(),
                        task_id: status.task_id.clone(),
                        uuid: status.uuid.clone(),
                    };
                    let _ = self
                        .master
                        .handle(self.now, Input::Call(Call::Acknowledge(ack)));
                }
            }
            _ => {}
        }
    }
}

/// A command task using `resources` (Mesos text), for launches in tests.
pub fn task(id: &str, resources: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        task_id: id.to_string(),
        name: id.to_string(),
        resources: Resources::parse(resources)
            .map(|r| r.to_proto())
            .unwrap_or_default(),
        command: Some(v1::CommandInfo {
            value: "true".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
