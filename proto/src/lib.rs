//! Mezzo's wire protocol and shared resource model.
//!
//! * [`v1`]: the protobuf messages and gRPC services (`mezzo.v1`), generated at
//!   build time by protox + tonic-prost-build; names follow Mesos' v1 protos.
//! * [`resources`]: the resource bundle type used by the master, the agent
//!   and the SDK, with Mesos' text syntax (`cpus:2;mem:1024;ports:[31000-32000]`).
//!
//! Invariant: this crate does no I/O; every other crate depends on it.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod resources;

/// Generated protobuf types and gRPC stubs for package `mezzo.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("mezzo.v1");
}

pub use resources::{ParseError, RangeSet, Resources};

impl v1::TaskState {
    /// Every task state, in the order Mesos lists its `tasks_<state>`
    /// metrics. The one list of task states: metrics, views and counters
    /// iterate it rather than keeping their own.
    pub const ALL: [v1::TaskState; 14] = {
        use v1::TaskState::*;
        [
            TaskStaging,
            TaskStarting,
            TaskRunning,
            TaskKilling,
            TaskFinished,
            TaskFailed,
            TaskKilled,
            TaskLost,
            TaskError,
            TaskUnreachable,
            TaskDropped,
            TaskGone,
            TaskGoneByOperator,
            TaskUnknown,
        ]
    };

    /// The state's Mesos metric suffix: `TASK_GONE_BY_OPERATOR` →
    /// `gone_by_operator` (as in `master/tasks_gone_by_operator`).
    pub fn metric_suffix(self) -> &'static str {
        use v1::TaskState::*;
        match self {
            TaskStaging => "staging",
            TaskStarting => "starting",
            TaskRunning => "running",
            TaskKilling => "killing",
            TaskFinished => "finished",
            TaskFailed => "failed",
            TaskKilled => "killed",
            TaskLost => "lost",
            TaskError => "error",
            TaskUnreachable => "unreachable",
            TaskDropped => "dropped",
            TaskGone => "gone",
            TaskGoneByOperator => "gone_by_operator",
            TaskUnknown => "unknown",
        }
    }

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

#[cfg(test)]
mod tests {
    use super::v1::TaskState;

    #[test]
    fn all_lists_every_state_once_with_its_metric_name() {
        let mut seen = std::collections::HashSet::new();
        for s in TaskState::ALL {
            assert!(seen.insert(s as i32), "{s:?} twice");
            assert_eq!(
                format!("TASK_{}", s.metric_suffix().to_uppercase()),
                s.as_str_name()
            );
        }
        // Every value the enum defines is in the list.
        for n in 0..=20 {
            if let Ok(s) = TaskState::try_from(n) {
                assert!(seen.contains(&(s as i32)), "{s:?} missing");
            }
        }
    }
}
