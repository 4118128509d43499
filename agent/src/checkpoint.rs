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
//! * `meta/boot_id`: the host's boot id when the agent last ran, and
//!   `meta/agent_info.pb`: the [`v1::AgentInfo`] it registered with
//!   (resources and attributes are compared after a reboot);
//! * `meta/archive/<boot id>/`: what a reboot made obsolete (task records,
//!   run dirs, and the agent id when a new one is needed).
//!
//! Recovery: a task whose executor is still alive keeps running (the
//! executor reconnects by itself); one whose executor died while the agent
//! was down, before the task ended, is reported TASK_FAILED once its
//! container is destroyed. After a reboot (the boot id differs, as Mesos ≥
//! 1.4 checks) no executor survived: nothing is probed or reconnected, the
//! old records are archived, unfinished tasks end TASK_FAILED with
//! REASON_EXECUTOR_TERMINATED ("Abnormal executor termination: unknown
//! container"), and the agent keeps its id only if its resources and
//! attributes are unchanged ([`reboot_plan`]).
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

    pub(crate) fn boot_id(&self) -> PathBuf {
        self.work_dir.join("meta").join("boot_id")
    }

    pub(crate) fn agent_info(&self) -> PathBuf {
        self.work_dir.join("meta").join("agent_info.pb")
    }

    pub(crate) fn archive_dir(&self) -> PathBuf {
        self.work_dir.join("meta").join("archive")
    }

    pub(crate) fn runs_dir(&self) -> PathBuf {
        self.work_dir.join("runs")
    }

    pub(crate) fn sandboxes_dir(&self) -> PathBuf {
        self.work_dir.join("sandboxes")
    }

    pub(crate) fn tasks_dir(&self) -> PathBuf {
        self.work_dir.join("meta").join("tasks")
    }

    pub(crate) fn task(&self, container_id: &str) -> PathBuf {
        self.tasks_dir().join(format!("{container_id}.pb"))
    }

    pub(crate) fn run_dir(&self, container_id: &str) -> PathBuf {
        self.runs_dir().join(container_id)
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

/// The message of a task whose executor a reboot took (Mesos' wording, so
/// tools that match it keep working).
pub(crate) const UNKNOWN_CONTAINER: &str = "Abnormal executor termination: unknown container";

/// The boot id record's contents.
pub(crate) fn encode_boot_id(id: &str) -> Vec<u8> {
    id.as_bytes().to_vec()
}

/// A boot id as read from `/proc/sys/kernel/random/boot_id` or the record
/// (None if empty).
pub(crate) fn decode_boot_id(bytes: &[u8]) -> Option<String> {
    let id = String::from_utf8_lossy(bytes).trim().to_string();
    (!id.is_empty()).then_some(id)
}

/// The agent info record's contents.
pub(crate) fn encode_agent_info(info: &v1::AgentInfo) -> Vec<u8> {
    prost::Message::encode_to_vec(info)
}

/// Decodes an agent info record.
pub(crate) fn decode_agent_info(bytes: &[u8]) -> Result<v1::AgentInfo, prost::DecodeError> {
    <v1::AgentInfo as prost::Message>::decode(bytes)
}

/// Whether an agent may keep its id: its resources and attributes are
/// those it registered with (Mesos' `equal` reconfiguration policy). With
/// no record to compare with (an agent from before this record existed),
/// it keeps its id, as it always did.
pub(crate) fn compatible(previous: Option<&v1::AgentInfo>, current: &v1::AgentInfo) -> bool {
    previous.is_none_or(|p| {
        mezzo_proto::Resources::from_proto(&p.resources)
            == mezzo_proto::Resources::from_proto(&current.resources)
            && p.attributes == current.attributes
    })
}

/// What a start-up makes of the checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RebootPlan {
    /// Same boot (or unknown: no boot id recorded or readable): recover as
    /// after an agent restart.
    Recover,
    /// The host rebooted since `previous` was recorded: archive the old
    /// records under it; keep the agent id or register anew.
    Rebooted { previous: String, keep_id: bool },
}

/// Decides from the recorded and current boot ids and agent infos whether
/// the host rebooted. Either boot id missing means "cannot tell", and the
/// agent recovers as it always did rather than discard live tasks.
pub(crate) fn reboot_plan(
    recorded: Option<&str>,
    current: Option<&str>,
    previous_info: Option<&v1::AgentInfo>,
    info: &v1::AgentInfo,
) -> RebootPlan {
    match (recorded, current) {
        (Some(r), Some(c)) if r != c => RebootPlan::Rebooted {
            previous: r.to_string(),
            keep_id: compatible(previous_info, info),
        },
        _ => RebootPlan::Recover,
    }
}

/// What a task record means after a reboot: its executor and container
/// are gone whatever the record says, so no pid is probed (it would name
/// an unrelated process of the new boot). Unfinished tasks fail; finished
/// ones keep only their unacknowledged updates, if any.
pub(crate) fn recover_after_reboot(record: v1::CheckpointedTask) -> Option<Recovered> {
    let r = recover(record, |_| None)?;
    (r.executor == ExecutorFate::FailTask || !r.pending.is_empty()).then_some(r)
}

/// Containers to destroy at start-up: every container found on the host
/// (cgroups under the root, processes carrying a container id) that is not
/// one whose executor is alive and reconnecting.
pub(crate) fn orphans<'a>(
    found: impl IntoIterator<Item = &'a String>,
    live: &std::collections::HashSet<String>,
) -> Vec<String> {
    let mut out: Vec<String> = found
        .into_iter()
        .filter(|c| !live.contains(*c))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What becomes of a recovered task's executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExecutorFate {
    /// Still alive with this pid: it reconnects by itself; it is not the
    /// new agent's child, so its death is noticed by polling the pid.
    Reconnect { pid: i32 },
    /// Died while the agent was down before its task ended: its container
    /// is destroyed, then the task is reported TASK_FAILED.
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

    fn info(resources: &str, attributes: &str) -> v1::AgentInfo {
        v1::AgentInfo {
            hostname: "h".into(),
            resources: mezzo_proto::Resources::parse(resources)
                .map(|r| r.to_proto())
                .unwrap_or_default(),
            attributes: mezzo_proto::resources::parse_attributes(attributes).unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn the_same_or_an_unknown_boot_recovers_as_before() {
        let i = info("cpus:2;mem:1024", "rack:r1");
        assert_eq!(
            reboot_plan(Some("b1"), Some("b1"), Some(&i), &i),
            RebootPlan::Recover
        );
        // First start, an agent from before boot ids, an unreadable boot id.
        assert_eq!(reboot_plan(None, Some("b1"), None, &i), RebootPlan::Recover);
        assert_eq!(reboot_plan(Some("b1"), None, None, &i), RebootPlan::Recover);
    }

    #[test]
    fn a_new_boot_id_is_a_reboot_keeping_the_id_only_if_compatible() {
        let i = info("cpus:2;mem:1024;ports:[31000-31010]", "rack:r1");
        let same = info("cpus:2;mem:1024;ports:[31000-31010]", "rack:r1");
        assert_eq!(
            reboot_plan(Some("b1"), Some("b2"), Some(&i), &same),
            RebootPlan::Rebooted {
                previous: "b1".into(),
                keep_id: true
            }
        );
        for changed in [
            info("cpus:4;mem:1024;ports:[31000-31010]", "rack:r1"),
            info("cpus:2;mem:1024;ports:[31000-31020]", "rack:r1"),
            info("cpus:2;mem:1024;ports:[31000-31010]", "rack:r2"),
            info("cpus:2;mem:1024;ports:[31000-31010]", ""),
        ] {
            assert_eq!(
                reboot_plan(Some("b1"), Some("b2"), Some(&i), &changed),
                RebootPlan::Rebooted {
                    previous: "b1".into(),
                    keep_id: false
                },
                "{changed:?}"
            );
        }
        // No agent info recorded: nothing says it changed.
        assert!(compatible(None, &i));
        // The hostname is not part of the comparison.
        let renamed = v1::AgentInfo {
            hostname: "other".into(),
            ..same
        };
        assert!(compatible(Some(&i), &renamed));
    }

    #[test]
    fn boot_ids_and_agent_infos_round_trip() {
        assert_eq!(
            decode_boot_id(&encode_boot_id("43a6-b8\n")).as_deref(),
            Some("43a6-b8")
        );
        assert_eq!(decode_boot_id(b"  \n"), None);
        let i = info("cpus:1;mem:64", "zone:a");
        assert_eq!(decode_agent_info(&encode_agent_info(&i)).ok(), Some(i));
    }

    #[test]
    fn after_a_reboot_nothing_is_probed_and_unfinished_tasks_fail() {
        let running = decode_task(&record(v1::TaskState::TaskRunning, &[], false)).ok();
        let r = running.and_then(recover_after_reboot);
        assert_eq!(r.map(|r| r.executor), Some(ExecutorFate::FailTask));

        // A finished task with its terminal update still unacknowledged keeps it.
        let queued = [status(v1::TaskState::TaskFinished, 3)];
        let done = decode_task(&record(v1::TaskState::TaskRunning, &queued, false)).ok();
        let r = done.and_then(recover_after_reboot);
        assert_eq!(r.as_ref().map(|r| r.executor), Some(ExecutorFate::Gone));
        assert_eq!(r.map(|r| r.pending), Some(queued.to_vec()));

        // A finished, acknowledged task leaves nothing to recover.
        let acked = decode_task(&record(v1::TaskState::TaskFinished, &[], false)).ok();
        assert_eq!(acked.and_then(recover_after_reboot), None);
    }

    #[test]
    fn orphans_are_found_containers_without_a_live_executor() {
        let found: Vec<String> = ["c3", "c1", "c2", "c1"].map(String::from).to_vec();
        let live: std::collections::HashSet<String> = ["c2".to_string()].into();
        assert_eq!(orphans(&found, &live), vec!["c1", "c3"]);
        assert!(orphans(&found[..0], &live).is_empty());
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
        assert_eq!(l.boot_id(), Path::new("/w/meta/boot_id"));
        assert_eq!(l.archive_dir(), Path::new("/w/meta/archive"));
    }
}
