//! The agent <-> executor protocol: newline-delimited JSON over the agent's
//! Unix socket (`<work_dir>/agent.sock`), plus the executor's launch spec.
//!
//! The executor is the client so that it can outlive the agent: after an
//! agent restart it reconnects and re-sends every update the agent has not
//! acknowledged yet (at-least-once; the agent de-duplicates by uuid).

use serde::{Deserialize, Serialize};

/// Everything an executor needs to run its task; written by the agent to
/// `<run_dir>/executor.json` before it starts `mezzo executor`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutorSpec {
    /// Unique id of this run of the task (names the cgroup).
    pub container_id: String,
    /// Owning framework.
    pub framework_id: String,
    /// The task.
    pub task_id: String,
    /// Agent id, for updates.
    pub agent_id: String,
    /// The agent's Unix socket.
    pub agent_socket: String,
    /// The task's sandbox (cwd, stdout, stderr).
    pub sandbox: String,
    /// Run `sh -c value` when true, else exec `value` with `arguments`.
    pub shell: bool,
    /// Command line or executable.
    pub value: String,
    /// argv (argv[0] included) when not a shell command.
    pub arguments: Vec<String>,
    /// Environment (on top of a minimal base environment).
    pub env: Vec<(String, String)>,
    /// Run as this user (agent must be root); empty = the agent's user.
    pub user: String,
    /// cpus limit.
    pub cpus: f64,
    /// Memory limit in MiB.
    pub mem_mb: f64,
    /// pids.max of the container, if limited.
    pub pids_max: Option<u64>,
    /// "cgroups" or "posix".
    pub isolation: String,
    /// Cgroup root name under each hierarchy.
    pub cgroups_root: String,
    /// Enforce a CFS quota (hard cpu limit).
    pub enable_cfs: bool,
    /// SIGTERM -> SIGKILL delay.
    pub kill_grace_seconds: f64,
    /// How long to wait for a (restarted) agent before giving up.
    pub recovery_timeout_seconds: f64,
    /// The task's health check, run by the executor next to the task.
    #[serde(default)]
    pub health_check: Option<HealthSpec>,
}

/// A health check as the executor runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// `http`, `tcp` or `command`.
    pub kind: String,
    /// Shell command (command checks).
    pub command: String,
    /// Port on 127.0.0.1 (http and tcp checks).
    pub port: u16,
    /// HTTP path.
    pub path: String,
    /// Seconds before the first check.
    pub delay_seconds: f64,
    /// Seconds between checks.
    pub interval_seconds: f64,
    /// Seconds before one check counts as failed.
    pub timeout_seconds: f64,
    /// Consecutive failures that make the task unhealthy.
    pub consecutive_failures: u32,
    /// Failures before the first success within this many seconds are ignored.
    pub grace_period_seconds: f64,
}

/// One task status update as the executor reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecUpdate {
    /// Unique id (hyphenated UUID text); the agent acks it.
    pub uuid: String,
    /// Mesos state name, e.g. `TASK_RUNNING`.
    pub state: String,
    /// Human readable detail.
    pub message: String,
    /// Mesos reason name, e.g. `REASON_CONTAINER_LIMITATION_MEMORY`.
    pub reason: String,
    /// Exit code when the command exited normally.
    pub exit_code: Option<i32>,
    /// Health, when the task has a health check.
    pub healthy: Option<bool>,
    /// Seconds since the epoch.
    pub timestamp: f64,
}

/// Executor -> agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromExecutor {
    /// First message on every connection.
    Register {
        /// Which run this executor is.
        container_id: String,
        /// The executor's pid.
        pid: u32,
    },
    /// A status update to checkpoint and forward.
    Update {
        /// The update.
        update: ExecUpdate,
    },
}

/// Agent -> executor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToExecutor {
    /// The agent has the update with this uuid durably; stop re-sending it.
    Ack {
        /// Update id.
        uuid: String,
    },
    /// Kill the task (SIGTERM, SIGKILL after the grace period).
    Kill {
        /// Overrides the spec's grace period.
        grace_period_seconds: Option<f64>,
    },
}
