//! The master's logic as a pure state machine.
//!
//! [`Master::handle`] takes one [`Input`] (an agent or framework message, a
//! scheduler call, a timer tick, an election result) and the time, changes
//! the state, and queues [`Output`]s (messages to a connection, connections
//! to close); [`Master::take_outputs`] hands them to whoever delivers them.
//! Nothing here does I/O, reads a clock, or draws OS randomness: the actor
//! shell (`crate::actor`) and the simulated cluster (`crate::sim`) drive the
//! same code.
//!
//! Invariants:
//! * an agent's `used + offered <= total`; a resource is in at most one offer;
//! * every message sent carries the master's leadership `epoch` (fencing);
//! * a task's resources are released exactly once, when it first reaches a
//!   terminal state;
//! * a task never leaves a terminal state.
#![deny(clippy::disallowed_methods)]

mod agents;
mod calls;
mod frameworks;
mod leadership;
mod model;
mod offers;
mod removals;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use imbl::{OrdMap, Vector};
use mezzo_proto::v1::{self, event, master_message};
use rand::SeedableRng;

use crate::config::MasterConfig;
use crate::metrics::Timings;
use crate::registry::{AdmittedAgent, RegistryState};
use crate::MasterError;

pub(crate) use frameworks::MAX_COMPLETED_FRAMEWORKS;
pub use model::{Agent, Call, ConnId, Framework, OfferRec, Task, Unacked};

/// Monotonic time since the core was created. The shell maps its clock onto
/// it; the simulation advances it by hand.
pub type Time = Duration;

/// One thing that happened to the master.
#[derive(Debug)]
pub enum Input {
    /// The election result changed (ZooKeeper mode).
    Leadership(LeaderState),
    /// An agent opened stream `conn` with this registration.
    AgentAttach {
        /// The connection the shell allocated for the stream.
        conn: ConnId,
        /// What the agent sent first.
        register: v1::RegisterAgent,
    },
    /// A message on an agent's stream.
    AgentMessage {
        /// The agent, as it attached.
        agent_id: String,
        /// The stream it came on.
        conn: ConnId,
        /// The message.
        msg: v1::agent_message::Message,
    },
    /// An agent's stream ended.
    AgentClosed {
        /// The agent.
        agent_id: String,
        /// The stream that ended.
        conn: ConnId,
    },
    /// A framework subscribed on stream `conn`.
    Subscribe {
        /// The connection the shell allocated for the event stream.
        conn: ConnId,
        /// The request.
        request: v1::SubscribeRequest,
    },
    /// A framework's event stream ended.
    FrameworkClosed {
        /// The framework.
        framework_id: String,
        /// The stream that ended.
        conn: ConnId,
    },
    /// A scheduler call.
    Call(Call),
    /// Periodic housekeeping: pings, unreachable agents, offer and failover
    /// timeouts, heartbeats, filter expiry.
    Tick,
    /// Run an allocation round.
    Allocate,
}

/// The answer to an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The agent's id (for [`Input::AgentAttach`]).
    Agent(String),
    /// The framework's id (for [`Input::Subscribe`]).
    Framework(String),
    /// Nothing to say.
    Done,
}

/// What the master wants done, in order.
// Outputs are moved once from the core to the shell; boxing the large
// variants would add an allocation per message on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Output {
    /// Send to an agent's stream.
    ToAgent {
        /// The stream.
        conn: ConnId,
        /// The message (epoch set).
        msg: v1::MasterMessage,
    },
    /// Send to a framework's event stream.
    ToFramework {
        /// The stream.
        conn: ConnId,
        /// The event (epoch set).
        event: v1::Event,
    },
    /// End a stream; with an error (gRPC UNAVAILABLE) when `error` is set.
    Close {
        /// The stream.
        conn: ConnId,
        /// Why, if the peer should see an error.
        error: Option<String>,
    },
}

/// The election state as the master needs it.
#[derive(Debug, Clone)]
pub enum LeaderState {
    /// This master leads in `epoch` (the znode sequence).
    Leading {
        /// Leadership epoch: every message carries it.
        epoch: u64,
        /// The registry as this term loaded it.
        registry: Option<RegistryState>,
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
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// Allocation rounds run.
    pub allocation_runs: u64,
    /// Status updates received from agents.
    pub status_updates: u64,
    /// Tasks sent to agents.
    pub launched_tasks: u64,
    /// Tasks refused at launch.
    pub invalid_launches: u64,
    /// Scheduler calls by Mesos `master/messages_*` name.
    pub calls: BTreeMap<&'static str, u64>,
    /// First registrations.
    pub agent_registrations: u64,
    /// Re-registrations.
    pub agent_reregistrations: u64,
    /// Agents marked unreachable.
    pub agent_removals: u64,
    /// Agents queued for removal (Mesos' `master/slave_unreachable_scheduled`).
    pub agent_removals_scheduled: u64,
    /// Queued removals dropped because the agent came back (Mesos'
    /// `master/slave_unreachable_canceled`).
    pub agent_removals_canceled: u64,
    /// Allocation run, offer->accept and launch latencies.
    pub timings: Timings,
}

/// The master's state and the logic that changes it.
pub struct Master {
    pub(crate) config: std::sync::Arc<MasterConfig>,
    pub(crate) info: v1::MasterInfo,
    /// Wall-clock seconds at `Time::ZERO`.
    wall_origin: f64,
    /// The time of the input being handled.
    now: Time,
    pub(crate) start_time: f64,
    pub(crate) agents: OrdMap<String, Agent>,
    pub(crate) frameworks: OrdMap<String, Framework>,
    pub(crate) completed_frameworks: Vector<Framework>,
    pub(crate) offers: imbl::HashMap<String, OfferRec>,
    next_agent: u64,
    next_framework: u64,
    next_offer: u64,
    /// An allocation round is wanted soon (something freed or arrived).
    pub(crate) allocate_now: bool,
    last_heartbeat: Time,
    rng: rand::rngs::StdRng,
    pub(crate) metrics: Metrics,
    /// False while a standby (or after losing the ZooKeeper session).
    pub(crate) leading: bool,
    pub(crate) registry: RegistryState,
    /// The registry changed since the shell last took it.
    registry_dirty: bool,
    /// Agents the registry knows that have not re-registered yet.
    expected_agents: HashMap<String, (AdmittedAgent, Time)>,
    /// Agents that timed out, waiting for the removal rate limit.
    removals: removals::RemovalQueue,
    /// `host:port` of the leader, for redirects.
    pub(crate) leader_hint: Option<String>,
    pub(crate) elected_time: Option<f64>,
    outputs: Vec<Output>,
}

impl Master {
    /// A master at time zero, `wall_origin` seconds after the Unix epoch,
    /// drawing randomness (the allocator's tie-breaks) from `seed`.
    pub fn new(config: MasterConfig, info: v1::MasterInfo, wall_origin: f64, seed: u64) -> Self {
        let standalone = config.zk.is_none();
        Master {
            config: std::sync::Arc::new(config),
            info,
            wall_origin,
            now: Time::ZERO,
            start_time: wall_origin,
            agents: OrdMap::new(),
            frameworks: OrdMap::new(),
            completed_frameworks: Vector::new(),
            offers: imbl::HashMap::new(),
            next_agent: 0,
            next_framework: 0,
            next_offer: 0,
            allocate_now: false,
            last_heartbeat: Time::ZERO,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            metrics: Metrics::default(),
            // Standalone masters lead from the start; ZooKeeper mode starts
            // as a standby until elected.
            leading: standalone,
            registry: RegistryState::default(),
            registry_dirty: false,
            expected_agents: HashMap::new(),
            removals: removals::RemovalQueue::default(),
            leader_hint: None,
            elected_time: standalone.then_some(wall_origin),
            outputs: Vec::new(),
        }
    }

    /// Handles one input at time `now` (never earlier than the last).
    pub fn handle(&mut self, now: Time, input: Input) -> Result<Reply, MasterError> {
        self.now = self.now.max(now);
        if !self.leading {
            return self.handle_not_leading(input);
        }
        match input {
            Input::Leadership(state) => self.leadership(state),
            Input::AgentAttach { conn, register } => {
                return self.attach_agent(conn, register).map(Reply::Agent)
            }
            Input::AgentMessage {
                agent_id,
                conn,
                msg,
            } => self.agent_message(&agent_id, conn, msg),
            Input::AgentClosed { agent_id, conn } => self.agent_closed(&agent_id, conn),
            Input::Subscribe { conn, request } => {
                return self.subscribe(conn, request).map(Reply::Framework)
            }
            Input::FrameworkClosed { framework_id, conn } => {
                self.framework_closed(&framework_id, conn)
            }
            Input::Call(call) => self.call(call)?,
            Input::Tick => self.maintain(),
            Input::Allocate => self.allocate(),
        }
        Ok(Reply::Done)
    }

    /// A master that does not lead answers every peer with a redirect to
    /// the leader it knows (or "no leader"), and does nothing else.
    fn handle_not_leading(&mut self, input: Input) -> Result<Reply, MasterError> {
        match input {
            Input::Leadership(state) => {
                self.leadership(state);
                Ok(Reply::Done)
            }
            Input::AgentAttach { .. } | Input::Subscribe { .. } | Input::Call(_) => {
                Err(MasterError::NotLeader(self.leader_hint.clone()))
            }
            Input::AgentMessage { .. }
            | Input::AgentClosed { .. }
            | Input::FrameworkClosed { .. }
            | Input::Tick
            | Input::Allocate => Ok(Reply::Done),
        }
    }

    /// What the master wants done since the last call, in order.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// The registry to write, if it changed since the last call.
    pub fn take_registry_update(&mut self) -> Option<RegistryState> {
        if !self.registry_dirty || !self.leading {
            return None;
        }
        self.registry_dirty = false;
        Some(self.registry.clone())
    }

    /// True when this master leads.
    pub fn leading(&self) -> bool {
        self.leading
    }

    /// True when an allocation round is wanted before the next interval.
    pub fn wants_allocation(&self) -> bool {
        self.allocate_now && self.leading
    }

    /// Records how long an allocation round took on the real clock (the
    /// core cannot measure its own run time).
    pub fn record_allocation_run(&mut self, secs: f64) {
        self.metrics.timings.allocation_run(secs);
    }

    /// The leadership epoch every message carries.
    pub fn epoch(&self) -> u64 {
        self.info.epoch
    }

    /// Wall-clock seconds since the Unix epoch, now.
    pub(crate) fn wall(&self) -> f64 {
        self.wall_origin + self.now.as_secs_f64()
    }

    /// The time of the input being handled.
    pub(crate) fn now(&self) -> Time {
        self.now
    }

    fn registry_update(&mut self, f: impl FnOnce(&mut RegistryState)) {
        f(&mut self.registry);
        self.registry_dirty = true;
    }

    fn send_agent(&mut self, conn: ConnId, msg: master_message::Message) {
        self.outputs.push(Output::ToAgent {
            conn,
            msg: v1::MasterMessage {
                epoch: self.info.epoch,
                message: Some(msg),
            },
        });
    }

    /// Sends to the agent's stream if it is attached.
    fn tell_agent(&mut self, agent_id: &str, msg: master_message::Message) {
        if let Some(conn) = self
            .agents
            .get(agent_id)
            .filter(|a| a.connected)
            .map(|a| a.conn)
        {
            self.send_agent(conn, msg);
        }
    }

    /// Sends to the framework's stream if it is attached; false if not.
    fn tell_framework(&mut self, framework_id: &str, ev: event::Event) -> bool {
        let Some(conn) = self
            .frameworks
            .get(framework_id)
            .filter(|f| f.connected)
            .map(|f| f.conn)
        else {
            return false;
        };
        self.send_framework(conn, ev);
        true
    }

    fn send_framework(&mut self, conn: ConnId, ev: event::Event) {
        self.outputs.push(Output::ToFramework {
            conn,
            event: v1::Event {
                epoch: self.info.epoch,
                event: Some(ev),
            },
        });
    }

    fn send_update(&mut self, framework_id: &str, status: v1::TaskStatus) {
        self.tell_framework(
            framework_id,
            event::Event::Update(event::Update {
                status: Some(status),
            }),
        );
    }

    fn close(&mut self, conn: ConnId, error: Option<&str>) {
        self.outputs.push(Output::Close {
            conn,
            error: error.map(str::to_string),
        });
    }

    /// A status the master itself writes about a task.
    fn master_status(
        &self,
        framework_id: &str,
        task_id: &str,
        agent_id: &str,
        state: v1::TaskState,
        reason: v1::StatusReason,
        message: &str,
    ) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: task_id.to_string(),
            state: state as i32,
            message: message.to_string(),
            source: v1::StatusSource::SourceMaster as i32,
            reason: reason as i32,
            agent_id: agent_id.to_string(),
            timestamp: self.wall(),
            framework_id: framework_id.to_string(),
            ..Default::default()
        }
    }
}

/// Mesos caps durations given in seconds at a year.
const MAX_SECS: f64 = 31_536_000.0;

/// Mesos' default refuse filter is 5 s, capped at a year.
fn refuse_duration(filters: Option<&v1::Filters>) -> Result<Duration, MasterError> {
    let secs = filters.and_then(|f| f.refuse_seconds).unwrap_or(5.0);
    if !secs.is_finite() || secs < 0.0 {
        return Err(MasterError::InvalidArgument(
            "filters.refuse_seconds must be a non-negative number".into(),
        ));
    }
    Ok(Duration::from_secs_f64(secs.min(MAX_SECS)))
}

#[cfg(test)]
mod tests;
