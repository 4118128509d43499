//! What the agent checkpoints under `--work_dir` and what a restarted agent
//! makes of it, as pure code; the reading and writing live in
//! [`crate::checkpoint_io`].
//!
//! Records, one file each so an event rewrites only what it changed:
//! * `meta/agent_id`: the id the master gave this agent (text);
//! * `meta/tasks/<container>.pb`: one task's [`v1::CheckpointedTask`]: its
//!   framework's info, the task info, its last state, its container id,
//!   its unacknowledged updates (head first) and whether its executor ended;
//! * `runs/<container>/executor.pid` and `executor.json`: the executor's
//!   pid (written by the launcher) and spec; the executors' socket is
//!   `agent.sock`.
//!
//! Recovery: a task whose executor is still alive keeps running (the
//! executor reconnects by itself); one whose executor died while the agent
//! was down, before the task ended, is reported TASK_FAILED.
#![deny(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use mezzo_proto::v1;

/// Where each record lives under the work directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    work_dir: PathBuf,
}

impl Layout {
    pub(crate) fn new(work_dir: &Path) -> Self {
        Layout {
            work_dir: work_dir.to_path_buf(),
        }
    }

    pub(crate) fn agent_id(&self) -> PathBuf {
        self.work_dir.join("meta").join("agent_id")
    }

    pub(crate) fn tasks_dir(&self) -> PathBuf {
        self.work_dir.join("meta").join("tasks")
    }

    pub(crate) fn task(&self, container_id: &str) -> PathBuf {
        self.tasks_dir().join(format!("{container_id}.pb"))
    }

    pub(crate) fn run_dir(&self, container_id: &str) -> PathBuf {
        self.work_dir.join("runs").join(container_id)
    }

    pub(crate) fn executor_pid(&self, container_id: &str) -> PathBuf {
        self.run_dir(container_id).join("executor.pid")
    }

    pub(crate) fn executor_spec(&self, container_id: &str) -> PathBuf {
        self.run_dir(container_id).join("executor.json")
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.work_dir.join("agent.sock")
    }

    /// True for a file in [`Layout::tasks_dir`] that is a task record (not
    /// a temporary file left by a crash mid-write).
    pub(crate) fn is_task_record(path: &Path) -> bool {
        path.extension().is_some_and(|x| x == "pb")
    }
}

/// One task as checkpointed.
pub(crate) struct TaskRecord<'a, I> {
    pub framework: Option<&'a v1::FrameworkInfo>,
    pub task: &'a v1::TaskInfo,
    pub state: v1::TaskState,
    pub container_id: &'a str,
    /// Its unacknowledged updates, head first.
    pub pending: I,
    pub executor_exited: bool,
}

/// Encodes a task record.
pub(crate) fn encode_task<'a, I>(r: TaskRecord<'a, I>) -> Vec<u8>
where
    I: Iterator<Item = &'a v1::TaskStatus>,
{
    let record = v1::CheckpointedTask {
        framework: r.framework.cloned(),
        task: Some(r.task.clone()),
        state: r.state as i32,
        container_id: r.container_id.to_string(),
        pending_updates: r.pending.cloned().collect(),
        executor_exited: r.executor_exited,
    };
    prost::Message::encode_to_vec(&record)
}

/// Decodes a task record.
pub(crate) fn decode_task(bytes: &[u8]) -> Result<v1::CheckpointedTask, prost::DecodeError> {
    <v1::CheckpointedTask as prost::Message>::decode(bytes)
}

/// The agent id record's contents.
pub(crate) fn encode_agent_id(id: &str) -> Vec<u8> {
    id.as_bytes().to_vec()
}

/// The agent id in a record (empty if there is none).
pub(crate) fn decode_agent_id(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// What becomes of a recovered task's executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExecutorFate {
    /// Still alive with this pid: it reconnects by itself; it is not the
    /// new agent's child, so its death is noticed by polling the pid.
    Reconnect { pid: i32 },
    /// Died while the agent was down before its task ended: the task is
    /// reported TASK_FAILED.
    FailTask,
    /// Gone after its task ended (terminal state or terminal update
    /// queued): nothing more to report.
    Gone,
}

/// A task rebuilt from its record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Recovered {
    pub framework: v1::FrameworkInfo,
    pub task: v1::TaskInfo,
    pub state: v1::TaskState,
    pub container_id: String,
    pub pending: Vec<v1::TaskStatus>,
    pub executor: ExecutorFate,
}

/// Decides what a task record means after a restart. `live_pid` says
/// whether the container's executor is alive (its pid), and is asked only
/// when the record does not already say the executor ended. `None` for a
/// record without framework or task (nothing to recover).
pub(crate) fn recover(
    record: v1::CheckpointedTask,
    live_pid: impl FnOnce(&str) -> Option<i32>,
) -> Option<Recovered> {
    let (Some(framework), Some(task)) = (record.framework, record.task) else {
        return None;
    };
    let state = v1::TaskState::try_from(record.state).unwrap_or(v1::TaskState::TaskUnknown);
    let pid = if record.executor_exited {
        None
    } else {
        live_pid(&record.container_id)
    };
    let ended = state.is_terminal()
        || record
            .pending_updates
            .iter()
            .any(|u| mezzo_proto::task_state(u).is_terminal());
    let executor = match pid {
        Some(pid) => ExecutorFate::Reconnect { pid },
        None if ended => ExecutorFate::Gone,
        None => ExecutorFate::FailTask,
    };
    Some(Recovered {
        framework,
        task,
        state,
        container_id: record.container_id,
        pending: record.pending_updates,
        executor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framework() -> v1::FrameworkInfo {
        v1::FrameworkInfo {
            id: "fw".into(),
            name: "test".into(),
            ..Default::default()
        }
    }

    fn task() -> v1::TaskInfo {
        v1::TaskInfo {
            task_id: "t1".into(),
            name: "t1".into(),
            ..Default::default()
        }
    }

    fn status(state: v1::TaskState, uuid: u8) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: "t1".into(),
            state: state as i32,
            uuid: vec![uuid],
            ..Default::default()
        }
    }

    fn record(state: v1::TaskState, pending: &[v1::TaskStatus], exited: bool) -> Vec<u8> {
        let (f, t) = (framework(), task());
        encode_task(TaskRecord {
            framework: Some(&f),
            task: &t,
            state,
            container_id: "c1",
            pending: pending.iter(),
            executor_exited: exited,
        })
    }

    fn decide(bytes: &[u8], pid: Option<i32>) -> Option<Recovered> {
        recover(decode_task(bytes).ok()?, |cid| {
            assert_eq!(cid, "c1");
            pid
        })
    }

    #[test]
    fn a_task_record_round_trips() {
        let pending = [status(v1::TaskState::TaskRunning, 1)];
        let bytes = record(v1::TaskState::TaskRunning, &pending, false);
        let r = decode_task(&bytes).ok();
        assert_eq!(
            r.as_ref().and_then(|r| r.framework.clone()),
            Some(framework())
        );
        assert_eq!(r.as_ref().and_then(|r| r.task.clone()), Some(task()));
        assert_eq!(r.as_ref().map(|r| r.container_id.as_str()), Some("c1"));
        assert_eq!(r.map(|r| r.pending_updates), Some(pending.to_vec()));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(decode_task(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn the_agent_id_record_is_trimmed_text() {
        assert_eq!(decode_agent_id(&encode_agent_id("a-1")), "a-1");
        assert_eq!(decode_agent_id(b"a-1\n"), "a-1");
        assert_eq!(decode_agent_id(b""), "");
    }

    #[test]
    fn a_live_executor_is_reconnected_with_its_updates() {
        let pending = [status(v1::TaskState::TaskRunning, 1)];
        let r = decide(
            &record(v1::TaskState::TaskRunning, &pending, false),
            Some(42),
        );
        assert_eq!(
            r.as_ref().map(|r| r.executor),
            Some(ExecutorFate::Reconnect { pid: 42 })
        );
        assert_eq!(r.map(|r| r.pending), Some(pending.to_vec()));
    }

    #[test]
    fn a_dead_executor_of_a_live_task_fails_the_task() {
        let r = decide(&record(v1::TaskState::TaskRunning, &[], false), None);
        assert_eq!(r.map(|r| r.executor), Some(ExecutorFate::FailTask));
    }

    #[test]
    fn a_dead_executor_after_the_task_ended_reports_nothing_more() {
        let terminal = decide(&record(v1::TaskState::TaskFinished, &[], false), None);
        assert_eq!(terminal.map(|r| r.executor), Some(ExecutorFate::Gone));
        // The state still says RUNNING but the terminal update is queued.
        let queued = [status(v1::TaskState::TaskFailed, 2)];
        let r = decide(&record(v1::TaskState::TaskRunning, &queued, false), None);
        assert_eq!(r.map(|r| r.executor), Some(ExecutorFate::Gone));
    }

    #[test]
    fn an_executor_recorded_as_exited_is_not_probed() {
        let bytes = record(v1::TaskState::TaskFinished, &[], true);
        let r = decode_task(&bytes)
            .ok()
            .and_then(|rec| recover(rec, |_| panic!("probed an exited executor")));
        assert_eq!(r.map(|r| r.executor), Some(ExecutorFate::Gone));
    }

    #[test]
    fn a_record_without_its_task_is_skipped() {
        let rec = v1::CheckpointedTask {
            framework: Some(framework()),
            ..Default::default()
        };
        assert_eq!(recover(rec, |_| None), None);
    }

    #[test]
    fn only_pb_files_are_task_records() {
        let l = Layout::new(Path::new("/w"));
        assert_eq!(l.task("c1"), Path::new("/w/meta/tasks/c1.pb"));
        assert!(Layout::is_task_record(&l.task("c1")));
        assert!(!Layout::is_task_record(Path::new(
            "/w/meta/tasks/c1.pb.tmp"
        )));
        assert_eq!(l.executor_pid("c1"), Path::new("/w/runs/c1/executor.pid"));
    }
}
