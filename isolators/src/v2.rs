//! cgroup v2 (unified hierarchy) isolator.
//!
//! Implemented with plain file operations rather than `cgroups-rs`: the crate's v2 code
//! hard-codes `/sys/fs/cgroup` (controller discovery, `cgroup.subtree_control` handling), so it
//! could neither run against a test fixture nor against a unified hierarchy mounted
//! elsewhere. The v2 interface used here is a handful of files, all in one directory per
//! container:
//!
//! * `<mount>/<root>/<id>/` — the container; `cgroup.procs` to join and list processes;
//! * `cpu.weight` (from shares), `cpu.max` (`"<quota> <period>"` with CFS enabled),
//!   `memory.max`, `pids.max`;
//! * `memory.events` (`oom_kill` counter), `memory.current` (usage);
//! * `cgroup.kill` (kernel ≥ 5.14) or `cgroup.freeze` to stop forks while killing.
//!
//! Controllers must be enabled in `cgroup.subtree_control` of every ancestor for the
//! container's directory to get their files, which [`CgroupsV2Isolator::prepare`] does.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::{self, KillHooks};
use crate::{Container, Isolator, IsolatorError, Limits};

/// The unified hierarchy's usual mount point.
pub const DEFAULT_V2_MOUNT: &str = "/sys/fs/cgroup";

/// Isolator on the cgroup v2 unified hierarchy.
#[derive(Debug, Clone)]
pub struct CgroupsV2Isolator {
    /// Mount point of the unified hierarchy (injectable for tests).
    mount: PathBuf,
    /// Relative path under the mount that holds every container (e.g. `mezzo`).
    cgroups_root: String,
    /// Whether to set a CFS bandwidth limit (`cpu.max`).
    enable_cfs: bool,
    /// Controllers enabled for containers: always `memory` and `cpu`, plus `pids` if offered.
    controllers: Vec<&'static str>,
}

/// Checks that `mount` is a usable unified hierarchy for containers under `cgroups_root` and
/// returns the controllers to enable. The error says why not, for the "unavailable" message.
pub(crate) fn probe(mount: &Path, cgroups_root: &str) -> Result<Vec<&'static str>, String> {
    let file = mount.join("cgroup.controllers");
    let offered = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let offered: Vec<&str> = offered.split_whitespace().collect();
    let mut controllers = Vec::new();
    for needed in ["memory", "cpu"] {
        if !offered.contains(&needed) {
            return Err(format!(
                "the {needed} controller is not available in the cgroup2 hierarchy at {} (cgroup.controllers: {:?})",
                mount.display(),
                offered.join(" ")
            ));
        }
        controllers.push(needed);
    }
    if offered.contains(&"pids") {
        controllers.push("pids");
    }
    let base = mount.join(cgroups_root);
    match util::deepest_existing(&base) {
        Some(dir) if util::writable(dir) => Ok(controllers),
        Some(dir) => Err(format!(
            "no permission to create cgroups in {} (run as root or delegate that subtree)",
            dir.display()
        )),
        None => Err(format!("{} does not exist", mount.display())),
    }
}

impl CgroupsV2Isolator {
    /// Uses the unified hierarchy mounted at `mount` (normally [`DEFAULT_V2_MOUNT`]), with
    /// containers under `<mount>/<cgroups_root>/`. Fails with
    /// [`IsolatorError::CgroupsUnavailable`] when memory or cpu is not offered there or the
    /// directory is not writable.
    pub fn with_root(
        mount: impl Into<PathBuf>,
        cgroups_root: &str,
        enable_cfs: bool,
    ) -> Result<Self, IsolatorError> {
        util::validate_cgroups_root(cgroups_root)?;
        let mount = mount.into();
        let controllers = probe(&mount, cgroups_root).map_err(IsolatorError::CgroupsUnavailable)?;
        Ok(CgroupsV2Isolator {
            mount,
            cgroups_root: cgroups_root.to_string(),
            enable_cfs,
            controllers,
        })
    }

    /// Directory holding every container.
    fn base(&self) -> PathBuf {
        self.mount.join(&self.cgroups_root)
    }

    /// Creates the directories from the mount down to [`Self::base`] and enables our
    /// controllers in each one's `cgroup.subtree_control`, so the container directory below
    /// gets `memory.*`, `cpu.*` and `pids.*` files.
    fn enable_subtree(&self) -> Result<(), IsolatorError> {
        let mut dir = self.mount.clone();
        let mut dirs = vec![dir.clone()];
        for component in self.cgroups_root.split('/') {
            dir.push(component);
            dirs.push(dir.clone());
        }
        for d in &dirs {
            if d != &self.mount {
                match std::fs::create_dir(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(IsolatorError::io("create directory", d, e)),
                }
            }
            let file = d.join("cgroup.subtree_control");
            let enabled = match std::fs::read_to_string(&file) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(IsolatorError::io("read", &file, e)),
            };
            let enabled: Vec<&str> = enabled
                .split_whitespace()
                .map(|c| c.trim_start_matches('+'))
                .collect();
            let missing: Vec<String> = self
                .controllers
                .iter()
                .filter(|c| !enabled.contains(c))
                .map(|c| format!("+{c}"))
                .collect();
            if !missing.is_empty() {
                // One write with every controller: the kernel accepts a space-separated list.
                util::write_file(&file, &missing.join(" "))?;
            }
        }
        Ok(())
    }

    fn apply_limits(&self, dir: &Path, limits: &Limits) -> Result<(), IsolatorError> {
        let weight = util::cpu_weight_from_shares(util::cpu_shares(limits.cpus));
        util::write_file(&dir.join("cpu.weight"), &weight.to_string())?;
        if self.enable_cfs {
            let quota = util::cfs_quota_us(limits.cpus);
            util::write_file(
                &dir.join("cpu.max"),
                &format!("{quota} {}", util::CFS_PERIOD_US),
            )?;
        }
        let bytes = util::memory_limit_bytes(limits.mem_mb).to_string();
        let memory_max = dir.join("memory.max");
        util::write_file(&memory_max, &bytes)?;
        let actual = util::read_file(&memory_max)?;
        if actual != bytes {
            return Err(IsolatorError::LimitNotApplied {
                path: memory_max,
                expected: bytes,
                actual,
            });
        }
        if let Some(n) = limits.pids_max {
            if self.controllers.contains(&"pids") {
                util::write_file(&dir.join("pids.max"), &n.to_string())?;
            } else {
                tracing::warn!(
                    container = %dir.display(),
                    "pids limit requested but the pids controller is not available; not enforced"
                );
            }
        }
        // The OOM killer stays on: v2 has no switch to disable it, and memory.oom.group is
        // left at its default so only the offending process is killed, as under v1.
        Ok(())
    }
}

impl Isolator for CgroupsV2Isolator {
    fn name(&self) -> &'static str {
        "cgroups-v2"
    }

    fn prepare(
        &self,
        container_id: &str,
        limits: &Limits,
    ) -> Result<Box<dyn Container>, IsolatorError> {
        util::validate_container_id(container_id)?;
        util::validate_limits(limits)?;
        self.enable_subtree()?;
        let dir = self.base().join(container_id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(IsolatorError::ContainerExists(container_id.to_string()))
            }
            Err(e) => return Err(IsolatorError::io("create directory", &dir, e)),
        }
        if let Err(e) = self.apply_limits(&dir, limits) {
            // Leave nothing half-configured behind; the directory is still empty of processes.
            if let Err(rm) = std::fs::remove_dir(&dir) {
                tracing::warn!(path = %dir.display(), error = %rm, "cleanup after failed prepare");
            }
            return Err(e);
        }
        tracing::debug!(container = container_id, path = %dir.display(), "cgroup v2 container prepared");
        Ok(Box::new(V2Container {
            id: container_id.to_string(),
            dir,
        }))
    }

    fn recover(&self, container_id: &str) -> Result<Option<Box<dyn Container>>, IsolatorError> {
        util::validate_container_id(container_id)?;
        let dir = self.base().join(container_id);
        if dir.is_dir() {
            Ok(Some(Box::new(V2Container {
                id: container_id.to_string(),
                dir,
            })))
        } else {
            Ok(None)
        }
    }

    fn containers(&self) -> Result<Vec<String>, IsolatorError> {
        util::container_dirs(&self.base())
    }
}

/// One container on the unified hierarchy: a single directory.
#[derive(Debug, Clone)]
pub struct V2Container {
    id: String,
    dir: PathBuf,
}

impl V2Container {
    fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    fn try_pids(&self) -> Result<Vec<i32>, IsolatorError> {
        let mut pids = util::read_procs(&self.procs_file())?;
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }
}

/// Kill hooks for v2: `cgroup.kill` when the kernel has it (it kills atomically, forks
/// included), otherwise freeze the cgroup around each round so nothing forks in between.
struct V2Hooks<'a> {
    dir: &'a Path,
}

impl KillHooks for V2Hooks<'_> {
    fn before_round(&self, _round: u32) {
        let kill = self.dir.join("cgroup.kill");
        if kill.exists() {
            match util::write_file(&kill, "1") {
                Ok(()) => return,
                // Fall through to freezing, so the signals of this round still race no fork.
                Err(e) => tracing::warn!(error = %e, "cgroup.kill failed; freezing and signalling"),
            }
        }
        let freeze = self.dir.join("cgroup.freeze");
        if freeze.exists() {
            if let Err(e) = util::write_file(&freeze, "1") {
                tracing::warn!(error = %e, "freezing failed; killing unfrozen");
                return;
            }
            // Wait (bounded) for the kernel to report the whole group frozen.
            let events = self.dir.join("cgroup.events");
            let deadline = std::time::Instant::now() + Duration::from_millis(500);
            while std::time::Instant::now() < deadline {
                match std::fs::read_to_string(&events) {
                    Ok(s) if util::flat_keyed_value(&s, "frozen") == Some(1) => break,
                    Ok(_) => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        }
    }

    fn after_round(&self, _round: u32) {
        let freeze = self.dir.join("cgroup.freeze");
        // Thaw whenever the group may have been frozen (cgroup.kill absent or refused), so
        // the pending SIGKILLs are delivered. Thawing a group that is not frozen is harmless.
        let froze = std::fs::read_to_string(&freeze).is_ok_and(|s| s.trim() == "1");
        if froze {
            if let Err(e) = util::write_file(&freeze, "0") {
                tracing::warn!(error = %e, "thawing failed");
            }
        }
    }
}

impl Container for V2Container {
    fn id(&self) -> &str {
        &self.id
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        vec![self.procs_file()]
    }

    fn pids(&self) -> Vec<i32> {
        self.try_pids().unwrap_or_else(|e| {
            tracing::warn!(container = %self.id, error = %e, "cannot list container pids");
            Vec::new()
        })
    }

    fn oom_killed(&self) -> bool {
        // memory.events counts OOM kills in this cgroup and its descendants.
        std::fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|s| util::flat_keyed_value(&s, "oom_kill"))
            .is_some_and(|n| n > 0)
    }

    fn memory_usage(&self) -> Option<u64> {
        util::read_file(&self.dir.join("memory.current"))
            .ok()?
            .parse()
            .ok()
    }

    fn kill_all(&self) -> Result<(), IsolatorError> {
        let hooks = V2Hooks { dir: &self.dir };
        let result = util::kill_until_empty(&self.id, &mut || self.try_pids(), &hooks);
        // Never leave the group frozen, whatever happened (as on v1).
        hooks.after_round(u32::MAX);
        result
    }

    fn destroy(&self) -> Result<(), IsolatorError> {
        if !self.dir.exists() {
            return Ok(());
        }
        let pids = self.try_pids()?;
        if !pids.is_empty() {
            return Err(IsolatorError::NotEmpty {
                id: self.id.clone(),
                pids,
            });
        }
        util::remove_cgroup_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    //! The unified hierarchy cannot be used on the development machine (its cgroup2 mount
    //! offers only hugetlb), so these tests drive the implementation against a temporary
    //! directory laid out like a cgroup2 mount and check the files it writes.

    use super::*;

    fn fixture(controllers: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), controllers).unwrap();
        dir
    }

    fn read(p: impl AsRef<Path>) -> String {
        std::fs::read_to_string(p).unwrap().trim().to_string()
    }

    fn limits() -> Limits {
        Limits {
            cpus: 0.5,
            mem_mb: 64.0,
            pids_max: Some(100),
        }
    }

    /// Removes the regular files the fixture accumulated, which a real cgroupfs would
    /// remove by itself on rmdir.
    fn clear_files(dir: &Path) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::remove_file(p).unwrap();
            }
        }
    }

    #[test]
    fn prepare_writes_expected_files() {
        let root = fixture("cpuset cpu io memory hugetlb pids rdma misc\n");
        let iso = CgroupsV2Isolator::with_root(root.path(), "mezzo/agent", true).unwrap();
        assert_eq!(iso.name(), "cgroups-v2");
        let c = iso.prepare("c1", &limits()).unwrap();
        let r = root.path();
        assert_eq!(read(r.join("cgroup.subtree_control")), "+memory +cpu +pids");
        assert_eq!(
            read(r.join("mezzo/cgroup.subtree_control")),
            "+memory +cpu +pids"
        );
        assert_eq!(
            read(r.join("mezzo/agent/cgroup.subtree_control")),
            "+memory +cpu +pids"
        );
        let dir = r.join("mezzo/agent/c1");
        assert_eq!(read(dir.join("cpu.weight")), "20");
        assert_eq!(read(dir.join("cpu.max")), "50000 100000");
        assert_eq!(read(dir.join("memory.max")), "67108864");
        assert_eq!(read(dir.join("pids.max")), "100");
        assert_eq!(c.procs_files(), vec![dir.join("cgroup.procs")]);
        assert_eq!(c.id(), "c1");

        // A second container does not rewrite already-enabled controllers.
        std::fs::write(r.join("cgroup.subtree_control"), "cpu memory pids").unwrap();
        let c2 = iso.prepare("c2", &limits()).unwrap();
        assert_eq!(read(r.join("cgroup.subtree_control")), "cpu memory pids");

        assert!(matches!(
            iso.prepare("c1", &limits()),
            Err(IsolatorError::ContainerExists(id)) if id == "c1"
        ));
        clear_files(&r.join("mezzo/agent/c2"));
        c2.destroy().unwrap();
        drop(c);
    }

    #[test]
    fn without_cfs_and_pids_no_such_files() {
        let root = fixture("cpu memory io");
        let iso = CgroupsV2Isolator::with_root(root.path(), "mezzo", false).unwrap();
        iso.prepare("c", &limits()).unwrap();
        let dir = root.path().join("mezzo/c");
        assert!(!dir.join("cpu.max").exists());
        assert!(!dir.join("pids.max").exists());
        assert_eq!(
            read(root.path().join("cgroup.subtree_control")),
            "+memory +cpu"
        );
        assert_eq!(read(dir.join("cpu.weight")), "20");
    }

    #[test]
    fn reads_oom_usage_and_pids() {
        let root = fixture("cpu memory pids");
        let iso = CgroupsV2Isolator::with_root(root.path(), "mezzo", false).unwrap();
        let c = iso.prepare("c", &limits()).unwrap();
        let dir = root.path().join("mezzo/c");

        assert!(!c.oom_killed(), "no memory.events yet");
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n",
        )
        .unwrap();
        assert!(!c.oom_killed(), "hitting the limit is not an OOM kill");
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n",
        )
        .unwrap();
        assert!(c.oom_killed());

        assert_eq!(c.memory_usage(), None);
        std::fs::write(dir.join("memory.current"), "123456\n").unwrap();
        assert_eq!(c.memory_usage(), Some(123_456));

        assert!(c.pids().is_empty());
        c.kill_all().unwrap();
        // Pids that cannot exist (above any pid_max), so nothing real is ever signalled.
        std::fs::write(dir.join("cgroup.procs"), "999999998\n999999997\n").unwrap();
        assert_eq!(c.pids(), vec![999_999_997, 999_999_998]);
        assert!(matches!(c.destroy(), Err(IsolatorError::NotEmpty { .. })));

        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        let again = iso.recover("c").unwrap().unwrap();
        assert_eq!(again.procs_files(), c.procs_files());
        assert!(again.oom_killed());

        clear_files(&dir);
        c.destroy().unwrap();
        assert!(!dir.exists());
        c.destroy().unwrap();
        assert!(iso.recover("c").unwrap().is_none());
    }

    #[test]
    fn kill_all_uses_cgroup_kill() {
        let root = fixture("cpu memory pids");
        let iso = CgroupsV2Isolator::with_root(root.path(), "mezzo", false).unwrap();
        let c = iso.prepare("k", &limits()).unwrap();
        let dir = root.path().join("mezzo/k");
        // A real child of this test, so the kill is observable and harmless.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        std::fs::write(dir.join("cgroup.kill"), "").unwrap();
        std::fs::write(dir.join("cgroup.procs"), format!("{pid}\n")).unwrap();
        // The fixture's cgroup.procs never empties by itself: empty it once the child died.
        let waiter = std::thread::spawn(move || {
            let status = child.wait().unwrap();
            std::fs::write(dir.join("cgroup.procs"), "").unwrap();
            status
        });
        c.kill_all().unwrap();
        let status = waiter.join().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(read(root.path().join("mezzo/k/cgroup.kill")), "1");
    }

    #[test]
    fn kill_all_without_cgroup_kill_freezes_kills_and_thaws() {
        let root = fixture("cpu memory pids");
        let iso = CgroupsV2Isolator::with_root(root.path(), "mezzo", false).unwrap();
        let c = iso.prepare("f", &limits()).unwrap();
        let dir = root.path().join("mezzo/f");
        // Two real children of this test stand for a task with several processes.
        let mut children: Vec<_> = (0..2)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let pids: Vec<String> = children.iter().map(|c| c.id().to_string()).collect();
        std::fs::write(dir.join("cgroup.freeze"), "0").unwrap();
        std::fs::write(dir.join("cgroup.procs"), pids.join("\n")).unwrap();
        let procs = dir.join("cgroup.procs");
        let waiter = std::thread::spawn(move || {
            let statuses: Vec<_> = children.iter_mut().map(|c| c.wait().unwrap()).collect();
            std::fs::write(procs, "").unwrap();
            statuses
        });
        c.kill_all().unwrap();
        use std::os::unix::process::ExitStatusExt;
        for status in waiter.join().unwrap() {
            assert_eq!(status.signal(), Some(libc::SIGKILL));
        }
        assert_eq!(read(dir.join("cgroup.freeze")), "0", "left frozen");
    }

    #[test]
    fn containers_are_listed_and_destroyed_by_id() {
        let root = fixture("cpu memory pids");
        let iso = CgroupsV2Isolator::with_root(root.path(), "mezzo/agent", false).unwrap();
        assert!(iso.containers().unwrap().is_empty());
        iso.prepare("b", &limits()).unwrap();
        iso.prepare("a", &limits()).unwrap();
        assert_eq!(iso.containers().unwrap(), vec!["a", "b"]);
        clear_files(&root.path().join("mezzo/agent/a"));
        assert!(iso.destroy_container("a").unwrap());
        assert!(!iso.destroy_container("a").unwrap(), "already gone");
        assert_eq!(iso.containers().unwrap(), vec!["b"]);
    }

    #[test]
    fn probe_explains_what_is_missing() {
        let root = fixture("hugetlb");
        let err = CgroupsV2Isolator::with_root(root.path(), "mezzo", false).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("cgroups requested but unavailable:"),
            "{msg}"
        );
        assert!(msg.contains("memory"), "{msg}");

        let empty = tempfile::tempdir().unwrap();
        let msg = CgroupsV2Isolator::with_root(empty.path(), "mezzo", false)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("cgroup.controllers"), "{msg}");

        let ok = fixture("cpu memory");
        assert!(matches!(
            CgroupsV2Isolator::with_root(ok.path(), "../escape", false),
            Err(IsolatorError::InvalidCgroupsRoot(_))
        ));
    }

    #[test]
    fn limit_errors_name_the_file() {
        let root = fixture("cpu memory pids");
        let iso = CgroupsV2Isolator::with_root(root.path(), "mezzo", false).unwrap();
        let dir = root.path().join("odd");
        // A directory where memory.max should be makes the write fail like a kernel refusal.
        std::fs::create_dir_all(dir.join("memory.max")).unwrap();
        let err = iso.apply_limits(&dir, &limits()).unwrap_err();
        match &err {
            IsolatorError::Io { action, path, .. } => {
                assert_eq!(*action, "write");
                assert_eq!(path, &dir.join("memory.max"));
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("memory.max"), "{err}");
    }
}
