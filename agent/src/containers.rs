//! Destroying containers from the agent's side, so that a container never
//! outlives its executor (as Mesos' containerizer destroys a container
//! whenever its executor ends, and orphans on recovery).
//!
//! The executor normally empties and removes its own container before it
//! reports the task's end. When it cannot — it was SIGKILLed, crashed, was
//! OOM-killed itself, or died while the agent was down — the agent does it:
//!
//! * every process carrying the container's id in its environment
//!   (`MESOS_CONTAINER_ID`, with `MESOS_SANDBOX` under this agent's
//!   sandboxes) is SIGKILLed together with its process group: the task runs
//!   in a process group of its own, so this is the posix isolation's sweep,
//!   and under cgroups it also catches anything that left the cgroup;
//! * then the isolator kills whatever is still in the cgroup (freezer then
//!   SIGKILL on v1, `cgroup.kill` or freeze + SIGKILL on v2, repeated until
//!   `cgroup.procs` is empty) and removes the cgroup.
//!
//! Only when that succeeded does the agent report the task's end, which is
//! what releases its resources on the master.
//!
//! Everything here blocks (it polls `/proc` and cgroup files): the actor
//! runs it on the blocking pool.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::unix::ffi::OsStrExt;

use mezzo_isolators::{Isolator, IsolatorConfig};
use tracing::debug;

use crate::checkpoint::Layout;
use crate::{AgentConfig, AgentError};

/// How long the process sweep of one container may take before it gives up
/// (the isolator then still tries the cgroup, and the actor retries).
const SWEEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between sweep rounds, for SIGKILLed processes to be reaped.
const SWEEP_POLL: Duration = Duration::from_millis(10);

/// Destroys containers and finds the ones present on the host.
#[derive(Debug)]
pub(crate) struct Destroyer {
    isolator: Arc<dyn Isolator>,
    /// `<work_dir>/sandboxes`: a process is one of ours only if its
    /// `MESOS_SANDBOX` is below it.
    sandboxes: PathBuf,
}

impl Destroyer {
    /// The destroyer for the agent's isolation (the same cgroups root and
    /// hierarchy the executors use).
    pub(crate) fn new(config: &AgentConfig, layout: &Layout) -> Result<Destroyer, AgentError> {
        let isolator = mezzo_isolators::create(&IsolatorConfig {
            kind: config.isolation,
            cgroups_root: config.cgroups_root.clone(),
            enable_cfs: config.enable_cfs,
        })
        .map_err(|e| AgentError::Isolation(e.to_string()))?;
        Ok(Destroyer {
            isolator,
            sandboxes: layout.sandboxes_dir(),
        })
    }

    /// A destroyer that only sweeps processes (no cgroups), for tests.
    #[cfg(test)]
    pub(crate) fn posix(sandboxes: PathBuf) -> Destroyer {
        Destroyer {
            isolator: Arc::new(mezzo_isolators::PosixIsolator),
            sandboxes,
        }
    }

    /// Kills every process of the container and removes its cgroup.
    /// Idempotent: destroying a destroyed (or never created) container
    /// succeeds. Errors name the container and what is left.
    pub(crate) fn destroy(&self, container_id: &str) -> Result<(), AgentError> {
        let swept = self.sweep(container_id);
        self.isolator
            .destroy_container(container_id)
            .map_err(|e| AgentError::Isolation(format!("container {container_id}: {e}")))?;
        swept
    }

    /// Container ids present on the host: cgroups under the agent's root,
    /// and ids carried by processes running in this agent's sandboxes.
    pub(crate) fn found(&self) -> Result<BTreeSet<String>, AgentError> {
        let mut out: BTreeSet<String> = self
            .isolator
            .containers()
            .map_err(|e| AgentError::Isolation(e.to_string()))?
            .into_iter()
            .collect();
        out.extend(
            scan(&self.sandboxes)
                .into_iter()
                .filter_map(|p| p.container),
        );
        Ok(out)
    }

    /// The process sweep: SIGKILLs the container's processes and their
    /// process groups until none is left.
    fn sweep(&self, container_id: &str) -> Result<(), AgentError> {
        // SAFETY: getpgrp has no preconditions.
        let own_group = unsafe { libc::getpgrp() };
        let deadline = Instant::now() + SWEEP_TIMEOUT;
        loop {
            let targets: Vec<Proc> = scan(&self.sandboxes)
                .into_iter()
                .filter(|p| p.container.as_deref() == Some(container_id))
                .collect();
            if targets.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let pids: Vec<i32> = targets.iter().map(|p| p.pid).collect();
                return Err(AgentError::Isolation(format!(
                    "container {container_id}: processes {pids:?} survive SIGKILL"
                )));
            }
            let groups: BTreeSet<i32> = targets
                .iter()
                .map(|p| p.pgrp)
                .filter(|g| *g > 1 && *g != own_group)
                .collect();
            debug!(container = container_id, pids = ?targets.iter().map(|p| p.pid).collect::<Vec<_>>(), ?groups, "killing container processes");
            for g in groups {
                // SAFETY: plain syscall; g > 1 is a live process group that
                // holds one of the container's processes, never our own.
                unsafe { libc::kill(-g, libc::SIGKILL) };
            }
            for p in &targets {
                // SAFETY: plain syscall on a pid just read from /proc.
                unsafe { libc::kill(p.pid, libc::SIGKILL) };
            }
            std::thread::sleep(SWEEP_POLL);
        }
    }
}

/// One live process as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proc {
    pid: i32,
    pgrp: i32,
    /// Its `MESOS_CONTAINER_ID` if its `MESOS_SANDBOX` is under ours.
    container: Option<String>,
}

/// Every live, non-zombie process other than this one, with its process
/// group and the container it belongs to (if it is one of ours). Processes
/// that vanish mid-scan or whose environment cannot be read are skipped.
fn scan(sandboxes: &Path) -> Vec<Proc> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some(pgrp) = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| live_pgrp(&s))
        else {
            continue;
        };
        let container = std::fs::read(e.path().join("environ"))
            .ok()
            .and_then(|env| container_of(&env, sandboxes));
        out.push(Proc {
            pid,
            pgrp,
            container,
        });
    }
    out
}

/// The process group in a `/proc/<pid>/stat` line, None for a zombie or
/// garbage. The command name in parentheses may contain anything, so the
/// fields are counted from the last ')'.
fn live_pgrp(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let _ppid = fields.next()?;
    fields.next()?.parse().ok()
}

/// The container id in a NUL-separated environment block, if its sandbox
/// is below `sandboxes` (so a task of another agent, or one that merely
/// inherited a Mesos environment, is never touched).
fn container_of(environ: &[u8], sandboxes: &Path) -> Option<String> {
    let mut id = None;
    let mut ours = false;
    for var in environ.split(|b| *b == 0) {
        if let Some(v) = var.strip_prefix(b"MESOS_CONTAINER_ID=") {
            id = Some(String::from_utf8_lossy(v).into_owned());
        } else if let Some(v) = var.strip_prefix(b"MESOS_SANDBOX=") {
            let sandbox = Path::new(std::ffi::OsStr::from_bytes(v));
            ours = sandbox.starts_with(sandboxes);
        }
    }
    id.filter(|i| ours && !i.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn stat_lines_give_the_group_of_live_processes_only() {
        assert_eq!(live_pgrp("42 (sh) S 1 42 42 0 -1"), Some(42));
        assert_eq!(live_pgrp("42 (a) b) (c) R 1 7 7 0"), Some(7));
        assert_eq!(live_pgrp("42 (sh) Z 1 42 42 0"), None);
        assert_eq!(live_pgrp("garbage"), None);
    }

    #[test]
    fn only_processes_in_our_sandboxes_belong_to_a_container() {
        let ours = Path::new("/w/sandboxes");
        let env = b"PATH=/bin\0MESOS_CONTAINER_ID=c1\0MESOS_SANDBOX=/w/sandboxes/fw/t/c1\0";
        assert_eq!(container_of(env, ours).as_deref(), Some("c1"));
        let other = b"MESOS_CONTAINER_ID=c1\0MESOS_SANDBOX=/other/sandboxes/fw/t/c1\0";
        assert_eq!(container_of(other, ours), None);
        assert_eq!(container_of(b"MESOS_CONTAINER_ID=c1\0", ours), None);
        assert_eq!(container_of(b"MESOS_SANDBOX=/w/sandboxes/x\0", ours), None);
        assert_eq!(container_of(b"", ours), None);
    }

    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| live_pgrp(&s))
            .is_some()
    }

    /// The posix sweep kills a task's whole tree (several processes, in a
    /// group of its own) that outlived its parent, and leaves others alone.
    #[test]
    fn the_sweep_kills_every_process_of_the_container() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let sandboxes = dir.path().join("sandboxes");
        let sandbox = sandboxes.join("fw").join("t").join("c1");
        std::fs::create_dir_all(&sandbox)?;
        let spawn = |id: &str| {
            std::process::Command::new("/bin/sh")
                .args(["-c", "sleep 300 & sleep 300 & wait"])
                .env("MESOS_CONTAINER_ID", id)
                .env("MESOS_SANDBOX", &sandbox)
                .process_group(0)
                .spawn()
        };
        let mut doomed = spawn("c1")?;
        let mut other = spawn("c2")?;
        let d = Destroyer::posix(sandboxes);
        let deadline = Instant::now() + Duration::from_secs(10);
        let members = |id: &str| {
            scan(&d.sandboxes)
                .into_iter()
                .filter(|p| p.container.as_deref() == Some(id))
                .count()
        };
        while members("c1") < 3 || members("c2") < 3 {
            assert!(Instant::now() < deadline, "task trees did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let found = d.found()?;
        assert!(found.contains("c1") && found.contains("c2"), "{found:?}");

        d.destroy("c1")?;
        let _ = doomed.wait();
        assert_eq!(members("c1"), 0);
        assert!(alive(other.id() as i32), "another container was touched");
        assert_eq!(members("c2"), 3);
        d.destroy("c1")?; // idempotent
        d.destroy("c2")?;
        let _ = other.wait();
        assert_eq!(members("c2"), 0);
        Ok(())
    }
}
