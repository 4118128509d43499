//! The master's records of agents, frameworks, tasks and offers.
//!
//! Collections are persistent maps (`imbl`): the actor publishes a snapshot
//! for HTTP readers by cloning them, which costs O(1) and shares structure,
//! so a read never copies the cluster and never blocks the actor.

use std::collections::HashMap;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet, Vector};
use mezzo_proto::v1::{self, TaskState};
use mezzo_proto::Resources;

use super::Time;

/// A connection id, chosen by the actor shell for each agent or framework
/// stream; outputs are addressed to it.
pub type ConnId = u64;

/// A scheduler call (the unary RPCs of the Scheduler service).
#[derive(Debug, Clone)]
pub enum Call {
    /// Launch tasks on offers.
    Accept(v1::AcceptRequest),
    /// Return offers, with a refuse filter.
    Decline(v1::DeclineRequest),
    /// Clear filters and resume offers.
    Revive(v1::RolesRequest),
    /// Stop offers.
    Suppress(v1::RolesRequest),
    /// Kill a task.
    Kill(v1::KillRequest),
    /// Acknowledge a status update.
    Acknowledge(v1::AcknowledgeRequest),
    /// Ask for task states.
    Reconcile(v1::ReconcileRequest),
    /// Remove the framework and kill its tasks.
    Teardown(v1::TeardownRequest),
}

impl Call {
    /// The framework the call is made for.
    pub fn framework_id(&self) -> &str {
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

    /// Mesos' `master/messages_*` metric name of the call.
    pub fn metric(&self) -> &'static str {
        match self {
            Call::Accept(_) => "master/messages_launch_tasks",
            Call::Decline(_) => "master/messages_decline_offers",
            Call::Revive(_) => "master/messages_revive_offers",
            Call::Suppress(_) => "master/messages_suppress_offers",
            Call::Kill(_) => "master/messages_kill_task",
            Call::Acknowledge(_) => "master/messages_status_update_acknowledgement",
            Call::Reconcile(_) => "master/messages_reconcile_tasks",
            Call::Teardown(_) => "master/messages_unregister_framework",
        }
    }
}

/// An agent the master knows.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Agent id.
    pub id: String,
    /// What the agent registered with (id filled in).
    pub info: v1::AgentInfo,
    /// Its total resources.
    pub total: Resources,
    /// Used by tasks.
    pub used: Resources,
    /// In outstanding offers.
    pub offered: Resources,
    /// True while its stream is attached.
    pub connected: bool,
    /// Its latest stream (messages from older ones are ignored).
    pub conn: ConnId,
    /// When it last sent anything.
    pub last_seen: Time,
    /// When the master last pinged it.
    pub last_ping: Time,
    /// False once it missed its pings (or never came back after failover).
    pub reachable: bool,
    /// Wall-clock registration time (seconds since the epoch).
    pub registered_time: f64,
    /// Wall-clock time of its latest re-registration.
    pub reregistered_time: Option<f64>,
}

impl Agent {
    /// Resources neither used nor offered.
    pub fn available(&self) -> Resources {
        self.total.minus(&self.used).minus(&self.offered)
    }

    /// Attached and reachable: offers may be made on it.
    pub fn active(&self) -> bool {
        self.reachable && self.connected
    }
}

/// A task the master tracks.
#[derive(Debug, Clone)]
pub struct Task {
    /// What the framework launched (shared: never changes after launch).
    pub info: Arc<v1::TaskInfo>,
    /// Its framework.
    pub framework_id: String,
    /// Its agent.
    pub agent_id: String,
    /// Its resources.
    pub resources: Resources,
    /// Latest state.
    pub state: TaskState,
    /// Every state it went through, with wall-clock timestamps.
    pub statuses: Vec<(TaskState, f64)>,
    /// Its latest status as the agent (or the master) reported it.
    pub last_status: Option<v1::TaskStatus>,
    /// Last health the executor reported; master-generated updates keep it.
    pub healthy: Option<bool>,
    /// The agent's update awaiting the framework's acknowledgement (the
    /// head of the task's stream on the agent).
    pub unacked: Option<Unacked>,
}

/// An agent's status update the framework has not acknowledged yet.
///
/// The master keeps it so that a framework that (re-)subscribes gets it at
/// once rather than at the agent's next retry, and so that the resend an
/// agent makes when it re-registers (after a master failover or a
/// reconnect) does not reach a subscription that already has the update.
/// The agent's timed retries (`--status-update-retry-interval`) are still
/// forwarded, as in Mesos: a framework that does not acknowledge is
/// reminded.
#[derive(Debug, Clone)]
pub struct Unacked {
    /// The update as forwarded (agent and framework ids filled in).
    pub status: v1::TaskStatus,
    /// The framework stream it was last forwarded on, if any.
    pub sent_on: Option<ConnId>,
    /// The agent stream it last arrived on.
    pub agent_conn: ConnId,
}

/// A framework the master knows (subscribed, disconnected within its
/// failover timeout, or recovered from the registry).
#[derive(Debug, Clone)]
pub struct Framework {
    /// Framework id.
    pub id: String,
    /// What it subscribed with.
    pub info: v1::FrameworkInfo,
    /// Its one role.
    pub role: String,
    /// True while its event stream is attached.
    pub connected: bool,
    /// Its latest stream.
    pub conn: ConnId,
    /// When it disconnected (failover timeout runs from here).
    pub disconnected_at: Option<Time>,
    /// No offers while suppressed.
    pub suppressed: bool,
    /// Its outstanding offers.
    pub offers: OrdSet<String>,
    /// Its live tasks.
    pub tasks: OrdMap<String, Task>,
    /// Its latest terminal tasks, oldest first.
    pub completed: Vector<Task>,
    /// Resources its tasks use.
    pub used: Resources,
    /// Resources in its outstanding offers.
    pub offered: Resources,
    /// Refuse filters: agent id → until.
    pub filters: HashMap<String, Time>,
    /// Wall-clock registration time.
    pub registered_time: f64,
    /// Wall-clock time it disconnected or was removed.
    pub unregistered_time: Option<f64>,
}

impl Framework {
    /// Declared the `PARTITION_AWARE` capability.
    pub fn partition_aware(&self) -> bool {
        self.info
            .capabilities
            .iter()
            .any(|c| c == "PARTITION_AWARE")
    }

    /// The state Mesos reports for a task whose agent is gone.
    pub fn lost_state(&self) -> TaskState {
        if self.partition_aware() {
            TaskState::TaskUnreachable
        } else {
            TaskState::TaskLost
        }
    }

    /// The state Mesos reports for a task nobody knows.
    pub fn unknown_state(&self) -> TaskState {
        if self.partition_aware() {
            TaskState::TaskUnknown
        } else {
            TaskState::TaskLost
        }
    }
}

/// An outstanding offer.
#[derive(Debug, Clone)]
pub struct OfferRec {
    /// To whom.
    pub framework_id: String,
    /// On which agent.
    pub agent_id: String,
    /// What.
    pub resources: Resources,
    /// When it was made.
    pub created: Time,
}
