//! cgroup v1 isolator, built on `cgroups-rs`.
//!
//! A container is the group `<cgroups_root>/<id>` created in each hierarchy we use: `cpu`
//! and `memory` (required), `cpuacct`, `pids` and `freezer` (when mounted). Hierarchies the
//! agent does not manage (cpuset, devices, blkio, name=systemd, ...) are left alone: a v1
//! cpuset group, for one, would need `cpuset.cpus`/`cpuset.mems` filled in before any process
//! could join it.
//!
//! `cgroups-rs` creates the groups and writes the cpu and pids limits (it reads each back and
//! fails on a mismatch). It swallows errors from the memory controller, so the memory limit
//! is read back here. Counters (`memory.oom_control`, `memory.usage_in_bytes`,
//! `cgroup.procs`) are read directly: the crate's parser of `memory.oom_control` indexes
//! fields by position and panics on unexpected content.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::fs::cgroup_builder::CgroupBuilder;
use cgroups_rs::fs::hierarchies::V1;
use cgroups_rs::fs::{Cgroup, Controllers, MaxValue};

use crate::util::{self, KillHooks};
use crate::{Container, Isolator, IsolatorError, Limits};

/// The hierarchies a container uses, and whether each is required.
fn wanted() -> [(Controllers, bool); 5] {
    [
        (Controllers::Mem, true),
        (Controllers::Cpu, true),
        (Controllers::CpuAcct, false),
        (Controllers::Pids, false),
        (Controllers::Freezer, false),
    ]
}

/// Finds the v1 hierarchies to use for containers under `cgroups_root`, or says why v1
/// cannot be used. Returns `(controller name, mount point)` pairs.
pub(crate) fn probe(cgroups_root: &str) -> Result<Vec<(String, PathBuf)>, String> {
    let hier = V1::new();
    let mut found = Vec::new();
    for (controller, required) in wanted() {
        let name = controller.to_string();
        let Some((mount, _)) = hier.get_mount_point(controller) else {
            if required {
                return Err(format!(
                    "no cgroup v1 hierarchy with the {name} controller is mounted"
                ));
            }
            continue;
        };
        let base = mount.join(cgroups_root);
        let usable = util::deepest_existing(&base).is_some_and(util::writable);
        if usable {
            found.push((name, mount));
        } else if required {
            return Err(format!(
                "no permission to create cgroups under {} (run the agent as root)",
                mount.display()
            ));
        } else {
            tracing::warn!(controller = %name, mount = %mount.display(), "optional cgroup hierarchy not writable; not used");
        }
    }
    Ok(found)
}

/// Isolator on cgroup v1 hierarchies (one group per container in each used hierarchy).
#[derive(Debug, Clone)]
pub struct CgroupsV1Isolator {
    /// Relative path under each hierarchy that holds every container (e.g. `mezzo`).
    cgroups_root: String,
    /// Whether to set a CFS bandwidth limit (`cpu.cfs_quota_us`).
    enable_cfs: bool,
    /// `(controller, mount point)` of each hierarchy used.
    hierarchies: Vec<(String, PathBuf)>,
}

impl CgroupsV1Isolator {
    /// Detects the mounted v1 hierarchies and checks they are usable. Fails with
    /// [`IsolatorError::CgroupsUnavailable`] when memory or cpu is missing or not writable.
    pub fn new(cgroups_root: &str, enable_cfs: bool) -> Result<Self, IsolatorError> {
        util::validate_cgroups_root(cgroups_root)?;
        let hierarchies = probe(cgroups_root).map_err(IsolatorError::CgroupsUnavailable)?;
        Ok(CgroupsV1Isolator {
            cgroups_root: cgroups_root.to_string(),
            enable_cfs,
            hierarchies,
        })
    }

    fn controllers(&self) -> Vec<String> {
        self.hierarchies.iter().map(|(c, _)| c.clone()).collect()
    }

    fn has(&self, controller: &str) -> bool {
        self.hierarchies.iter().any(|(c, _)| c == controller)
    }

    /// `<cgroups_root>/<id>`, the group's path inside every hierarchy.
    fn relative(&self, id: &str) -> String {
        format!("{}/{}", self.cgroups_root, id)
    }

    /// The memory hierarchy's directory for `id`, used to name errors.
    fn memory_dir(&self, id: &str) -> PathBuf {
        self.hierarchies
            .iter()
            .find(|(c, _)| c == "memory")
            .map(|(_, m)| m.join(self.relative(id)))
            .unwrap_or_else(|| PathBuf::from(self.relative(id)))
    }

    /// A handle on the (possibly not yet existing) group, limited to our hierarchies.
    fn load(&self, id: &str) -> Cgroup {
        Cgroup::load_with_specified_controllers(
            Box::new(V1::new()),
            self.relative(id),
            self.controllers(),
        )
    }
}

impl Isolator for CgroupsV1Isolator {
    fn name(&self) -> &'static str {
        "cgroups-v1"
    }

    fn prepare(
        &self,
        container_id: &str,
        limits: &Limits,
    ) -> Result<Box<dyn Container>, IsolatorError> {
        util::validate_container_id(container_id)?;
        util::validate_limits(limits)?;
        if self.load(container_id).exists() {
            return Err(IsolatorError::ContainerExists(container_id.to_string()));
        }

        let memory_bytes = util::memory_limit_bytes(limits.mem_mb);
        let mut cpu = CgroupBuilder::new(&self.relative(container_id))
            .set_specified_controllers(self.controllers())
            .cpu()
            .shares(util::cpu_shares(limits.cpus));
        if self.enable_cfs {
            // validate_limits bounds cpus, so the quota fits an i64.
            let quota = i64::try_from(util::cfs_quota_us(limits.cpus)).unwrap_or(i64::MAX);
            cpu = cpu.period(util::CFS_PERIOD_US).quota(quota);
        }
        let mut builder = cpu
            .done()
            .memory()
            .memory_hard_limit(i64::try_from(memory_bytes).unwrap_or(i64::MAX))
            .done();
        if let Some(n) = limits.pids_max {
            if self.has("pids") {
                let n = i64::try_from(n).unwrap_or(i64::MAX);
                builder = builder
                    .pid()
                    .maximum_number_of_processes(MaxValue::Value(n))
                    .done();
            } else {
                tracing::warn!(
                    container = container_id,
                    "pids limit requested but no pids hierarchy is mounted; not enforced"
                );
            }
        }

        let cgroup = match builder.build(Box::new(V1::new())) {
            Ok(cg) => cg,
            Err(source) => {
                // The builder may have created some hierarchies' groups before failing.
                if let Err(e) = self.load(container_id).delete() {
                    tracing::warn!(container = container_id, error = %e, "cleanup after failed prepare");
                }
                return Err(IsolatorError::Cgroup {
                    action: "create",
                    path: self.memory_dir(container_id),
                    source,
                });
            }
        };
        let container = V1Container::new(container_id, cgroup);
        if let Err(e) = container.finish_memory(memory_bytes) {
            if let Err(rm) = container.cgroup.delete() {
                tracing::warn!(container = container_id, error = %rm, "cleanup after failed prepare");
            }
            return Err(e);
        }
        tracing::debug!(container = container_id, dirs = ?container.dirs, "cgroup v1 container prepared");
        Ok(Box::new(container))
    }

    fn recover(&self, container_id: &str) -> Result<Option<Box<dyn Container>>, IsolatorError> {
        util::validate_container_id(container_id)?;
        let cgroup = self.load(container_id);
        // Present in any hierarchy counts: a half-created container must still be destroyable.
        if cgroup.exists() {
            Ok(Some(Box::new(V1Container::new(container_id, cgroup))))
        } else {
            Ok(None)
        }
    }

    fn containers(&self) -> Result<Vec<String>, IsolatorError> {
        // A container half-created or half-removed may exist in only some hierarchies: it
        // still counts, so the union is taken.
        let mut all = std::collections::BTreeSet::new();
        for (_, mount) in &self.hierarchies {
            all.extend(util::container_dirs(&mount.join(&self.cgroups_root))?);
        }
        Ok(all.into_iter().collect())
    }
}

/// One container on cgroup v1: the same group in several hierarchies.
#[derive(Debug)]
pub struct V1Container {
    id: String,
    cgroup: Cgroup,
    /// The group's directory in each hierarchy, without duplicates (co-mounted hierarchies
    /// such as `cpu,cpuacct` share one).
    dirs: Vec<PathBuf>,
    /// Directory in the memory hierarchy (counters and limits).
    memory_dir: Option<PathBuf>,
    /// Directory in the freezer hierarchy, when mounted.
    freezer_dir: Option<PathBuf>,
}

impl V1Container {
    fn new(id: &str, cgroup: Cgroup) -> Self {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut memory_dir = None;
        let mut freezer_dir = None;
        for sub in cgroup.subsystems() {
            let dir = sub.to_controller().path().to_path_buf();
            match sub.controller_name().as_str() {
                "memory" => memory_dir = Some(dir.clone()),
                "freezer" => freezer_dir = Some(dir.clone()),
                _ => {}
            }
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        V1Container {
            id: id.to_string(),
            cgroup,
            dirs,
            memory_dir,
            freezer_dir,
        }
    }

    fn memory_file(&self, name: &str) -> Option<PathBuf> {
        self.memory_dir.as_ref().map(|d| d.join(name))
    }

    /// Checks the memory limit really is in place and keeps the OOM killer on.
    fn finish_memory(&self, bytes: u64) -> Result<(), IsolatorError> {
        let Some(dir) = &self.memory_dir else {
            return Err(IsolatorError::CgroupsUnavailable(
                "the memory hierarchy disappeared".to_string(),
            ));
        };
        // A new v1 memory cgroup inherits oom_kill_disable from its parent: clear it
        // explicitly so an over-limit task is killed (and detected) instead of hanging.
        util::write_file(&dir.join("memory.oom_control"), "0")?;
        let file = dir.join("memory.limit_in_bytes");
        let actual = util::read_file(&file)?;
        if actual != bytes.to_string() {
            return Err(IsolatorError::LimitNotApplied {
                path: file,
                expected: bytes.to_string(),
                actual,
            });
        }
        Ok(())
    }

    fn try_pids(&self) -> Result<Vec<i32>, IsolatorError> {
        util::read_procs_union(&self.procs_files())
    }
}

/// Kill hooks for v1: freeze the group so nothing forks between reading `cgroup.procs` and
/// signalling, then thaw so the pending SIGKILLs are delivered.
struct V1Hooks<'a> {
    freezer_dir: Option<&'a Path>,
}

impl KillHooks for V1Hooks<'_> {
    fn before_round(&self, _round: u32) {
        let Some(dir) = self.freezer_dir else { return };
        let state = dir.join("freezer.state");
        if let Err(e) = util::write_file(&state, "FROZEN") {
            tracing::warn!(error = %e, "freezing failed; killing unfrozen");
            return;
        }
        // FREEZING can last while a task sits in an uninterruptible sleep: bounded wait, then
        // kill anyway (SIGKILL still works on a partly frozen group once thawed).
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match util::read_file(&state) {
                Ok(s) if s == "FROZEN" => return,
                Ok(_) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => return,
            }
        }
        tracing::debug!(path = %dir.display(), "freezer did not reach FROZEN in time");
    }

    fn after_round(&self, _round: u32) {
        let Some(dir) = self.freezer_dir else { return };
        if let Err(e) = util::write_file(&dir.join("freezer.state"), "THAWED") {
            tracing::warn!(error = %e, "thawing failed");
        }
    }
}

impl Container for V1Container {
    fn id(&self) -> &str {
        &self.id
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    fn pids(&self) -> Vec<i32> {
        self.try_pids().unwrap_or_else(|e| {
            tracing::warn!(container = %self.id, error = %e, "cannot list container pids");
            Vec::new()
        })
    }

    fn oom_killed(&self) -> bool {
        // `oom_kill` counts processes the kernel OOM killer killed in this group; reaching the
        // limit alone (memory.failcnt) is not an OOM kill.
        self.memory_file("memory.oom_control")
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| util::flat_keyed_value(&s, "oom_kill"))
            .is_some_and(|n| n > 0)
    }

    fn memory_usage(&self) -> Option<u64> {
        util::read_file(&self.memory_file("memory.usage_in_bytes")?)
            .ok()?
            .parse()
            .ok()
    }

    fn kill_all(&self) -> Result<(), IsolatorError> {
        let hooks = V1Hooks {
            freezer_dir: self.freezer_dir.as_deref(),
        };
        let result = util::kill_until_empty(&self.id, &mut || self.try_pids(), &hooks);
        // Never leave the group frozen, whatever happened: frozen processes would sit there
        // with their SIGKILL pending.
        if self.freezer_dir.as_deref().is_some_and(Path::exists) {
            hooks.after_round(u32::MAX);
        }
        result
    }

    fn destroy(&self) -> Result<(), IsolatorError> {
        if !self.dirs.iter().any(|d| d.exists()) {
            return Ok(());
        }
        let pids = self.try_pids()?;
        if !pids.is_empty() {
            return Err(IsolatorError::NotEmpty {
                id: self.id.clone(),
                pids,
            });
        }
        let first = self.dirs.first().cloned().unwrap_or_default();
        self.cgroup
            .delete()
            .map_err(|source| IsolatorError::Cgroup {
                action: "delete",
                path: first,
                source,
            })?;
        // cgroups-rs deletes hierarchy by hierarchy; be sure nothing stayed behind.
        for dir in self.dirs.iter().filter(|d| d.exists()) {
            util::remove_cgroup_dir(dir)?;
        }
        Ok(())
    }
}
