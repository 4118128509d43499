//! The messages the agent actor receives from its helpers: the master
//! link, the executor connections, the launcher and the checkpoint writer.

use mezzo_proto::v1;
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{ExecUpdate, ToExecutor};
use crate::updates::Seq;
use crate::AgentError;

/// Sends to one connected executor.
pub(crate) type ExecTx = mpsc::UnboundedSender<ToExecutor>;
/// Sends on the attached master stream.
pub(crate) type MasterTx = mpsc::UnboundedSender<v1::AgentMessage>;
/// Sends to the actor.
pub(crate) type EventTx = mpsc::UnboundedSender<Event>;

/// One input of the agent actor.
pub(crate) enum Event {
    /// The master link asks for the registration message to send.
    BuildRegister(oneshot::Sender<v1::RegisterAgent>),
    /// A master accepted our registration.
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
    /// The executor process ended (`status` is its exit code if known).
    ExecutorExited {
        container_id: String,
        status: Option<i32>,
    },
    /// The executor could not be started.
    LaunchFailed {
        container_id: String,
        error: AgentError,
    },
    /// Every checkpoint write numbered up to this one is durable.
    CheckpointDurable(Seq),
    /// The container has no process left and its cgroup is removed.
    ContainerDestroyed {
        container_id: String,
    },
}
