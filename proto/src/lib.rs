//! Mezzo's wire protocol and shared resource model.
//!
//! * [`v1`]: the protobuf messages and gRPC services (`mezzo.v1`), generated at
//!   build time by protox + tonic-prost-build; names follow Mesos' v1 protos.
//! * [`resources`]: the resource bundle type used by the master, the agent
//!   and the SDK, with Mesos' text syntax (`cpus:2;mem:1024;ports:[31000-32000]`).
//!
//! Invariant: this crate does no I/O; every other crate depends on it.

pub mod resources;

/// Generated protobuf types and gRPC stubs for package `mezzo.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("mezzo.v1");
}

pub use resources::{ParseError, RangeSet, Resources};

impl v1::TaskState {
    /// True for states a task never leaves (Mesos' `protobuf::isTerminalState`).
    pub fn is_terminal(self) -> bool {
        use v1::TaskState::*;
        matches!(
            self,
            TaskFinished
                | TaskFailed
                | TaskKilled
                | TaskError
                | TaskLost
                | TaskDropped
                | TaskGone
                | TaskGoneByOperator
        )
    }
}

/// True when `name` is a terminal task state's Mesos name (`TASK_FINISHED`...).
pub fn is_terminal_name(name: &str) -> bool {
    v1::TaskState::from_str_name(name).is_some_and(v1::TaskState::is_terminal)
}

/// Current time as seconds since the Unix epoch, as Mesos timestamps are.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The task's state, treating unknown numbers as `TASK_UNKNOWN`.
pub fn task_state(status: &v1::TaskStatus) -> v1::TaskState {
    v1::TaskState::try_from(status.state).unwrap_or(v1::TaskState::TaskUnknown)
}
