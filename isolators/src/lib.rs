//! Task isolation for Mezzo agents: cgroups v1, cgroups v2, and a posix fallback.
//!
//! The per-task executor uses this crate to put the task's process into a *container* with
//! resource limits, to tell whether the kernel OOM killer ended it, to kill everything in it,
//! and to remove it. It is the counterpart of Mesos' `cgroups/cpu`, `cgroups/mem` and
//! `cgroups/pids` isolators (and of `posix/cpu,posix/mem`).
//!
//! # Model
//!
//! * [`create`] builds the [`Isolator`] asked for by `--isolation`. Asking for cgroups on a
//!   host that cannot provide them is an error ([`IsolatorError::CgroupsUnavailable`]), never
//!   a silent downgrade to posix: tasks would otherwise run without the limits the operator
//!   believes they have.
//! * [`Isolator::prepare`] creates the container `<cgroups_root>/<container_id>` (under every
//!   hierarchy used on v1, one directory on v2) and writes its limits; [`Isolator::recover`]
//!   re-attaches to one after an executor or agent restart.
//! * The task joins the container **before it execs**: the executor forks, and the child
//!   writes `"0"` into each of [`Container::procs_files`] from `pre_exec` with
//!   [`join_in_child`]. Hence the task never runs outside its limits, and every process it
//!   forks inherits the container. The paths are converted to `CString`s before the fork
//!   ([`procs_files_cstrings`]) because nothing that allocates may run in the child.
//! * An exit by SIGKILL together with [`Container::oom_killed`] means the kernel OOM killer
//!   ended the task (Mesos' `REASON_CONTAINER_LIMITATION_MEMORY`).
//! * [`Container::kill_all`] empties the container, then [`Container::destroy`] removes it.
//!   `destroy` refuses while processes remain and is idempotent.
//!   [`Isolator::destroy_container`] does both for a container known only by its id, and
//!   [`Isolator::containers`] lists what exists under the root, so an agent can destroy the
//!   containers of executors that are gone and orphans it has no record of.
//!
//! # Cgroup versions
//!
//! The version is detected at start-up: a cgroup2 file system on `/sys/fs/cgroup` means v2
//! ([`CgroupsV2Isolator`]); otherwise the v1 hierarchies mounted under it are used
//! ([`CgroupsV1Isolator`]). On hybrid hosts the cgroup2 mount at `/sys/fs/cgroup/unified`
//! usually offers no memory or cpu controller, so v1 is preferred there, and that mount is
//! only tried when v1 lacks them.
//!
//! # Example
//!
//! ```no_run
//! use std::os::unix::process::CommandExt;
//! use mezzo_isolators::{create, join_in_child, procs_files_cstrings, IsolationKind, IsolatorConfig, Limits};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let isolator = create(&IsolatorConfig::new(IsolationKind::Cgroups))?;
//! let limits = Limits { cpus: 0.5, mem_mb: 64.0, pids_max: Some(100) };
//! let container = isolator.prepare("task-1", &limits)?;
//! let files = procs_files_cstrings(&container.procs_files())?;
//! let mut cmd = std::process::Command::new("sleep");
//! cmd.arg("1");
//! // SAFETY: join_in_child only calls open/write/close on pre-built C strings.
//! unsafe { cmd.pre_exec(move || join_in_child(&files)) };
//! let status = cmd.spawn()?.wait()?;
//! let oom = container.oom_killed();
//! container.kill_all()?;
//! container.destroy()?;
//! # let _ = (status, oom);
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod error;
mod posix;
mod util;
mod v1;
mod v2;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::IsolatorError;
pub use posix::{PosixContainer, PosixIsolator};
pub use v1::{CgroupsV1Isolator, V1Container};
pub use v2::{CgroupsV2Isolator, V2Container, DEFAULT_V2_MOUNT};

/// Default cgroup root under each hierarchy, like Mesos' `--cgroups_root=mesos`.
pub const DEFAULT_CGROUPS_ROOT: &str = "mezzo";

/// Resource limits of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// CPUs: relative weight (1024 shares per CPU, at least 2) and, with CFS enabled, a hard
    /// cap of `cpus` × 100 ms per 100 ms period (at least 1 ms).
    pub cpus: f64,
    /// Hard memory limit in MiB (rounded up to a whole page); exceeding it invokes the
    /// kernel OOM killer inside the container.
    pub mem_mb: f64,
    /// Maximum number of processes (`pids.max`), when set and the pids controller exists.
    pub pids_max: Option<u64>,
}

/// Which isolation the agent was asked for (`--isolation cgroups|posix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationKind {
    /// Kernel control groups (v1 or v2, detected).
    Cgroups,
    /// No kernel isolation: the executor only manages the task's process group.
    Posix,
}

impl IsolationKind {
    /// The isolation to use when none was asked for: cgroups when usable, else posix.
    pub fn detect_default() -> Self {
        if cgroups_available() {
            IsolationKind::Cgroups
        } else {
            IsolationKind::Posix
        }
    }
}

impl std::fmt::Display for IsolationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IsolationKind::Cgroups => "cgroups",
            IsolationKind::Posix => "posix",
        })
    }
}

impl std::str::FromStr for IsolationKind {
    type Err = IsolatorError;

    /// Accepts `cgroups` and `posix`, and Mesos-style isolator lists: any `cgroups/...` item
    /// selects cgroups (`cgroups/cpu,cgroups/mem`), a list of only `posix/...` items (and
    /// Mesos' `filesystem/posix`) selects posix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| IsolatorError::InvalidIsolation {
            value: s.to_string(),
            reason,
        };
        let value = s.trim();
        match value {
            "cgroups" => return Ok(IsolationKind::Cgroups),
            "posix" => return Ok(IsolationKind::Posix),
            "" => return Err(invalid("it is empty".to_string())),
            _ => {}
        }
        let mut cgroups = false;
        for item in value.split(',').map(str::trim) {
            let named = |prefix: &str| {
                item.strip_prefix(prefix)
                    .is_some_and(|rest| !rest.is_empty())
            };
            if named("cgroups/") {
                cgroups = true;
            } else if named("posix/") || item == "filesystem/posix" {
                // posix isolators (and Mesos' default filesystem isolator) add nothing.
            } else {
                return Err(invalid(format!("unknown isolator {item:?}")));
            }
        }
        Ok(if cgroups {
            IsolationKind::Cgroups
        } else {
            IsolationKind::Posix
        })
    }
}

/// Options of the isolator.
#[derive(Debug, Clone)]
pub struct IsolatorConfig {
    /// Which isolation to provide.
    pub kind: IsolationKind,
    /// Relative cgroup path under each hierarchy holding all containers (default
    /// [`DEFAULT_CGROUPS_ROOT`], like Mesos' `--cgroups_root`).
    pub cgroups_root: String,
    /// Enforce a hard CPU cap with CFS bandwidth control (default false, like Mesos'
    /// `--cgroups_enable_cfs`); shares alone only weigh tasks against each other.
    pub enable_cfs: bool,
}

impl IsolatorConfig {
    /// Configuration for `kind` with the default root and CFS disabled.
    pub fn new(kind: IsolationKind) -> Self {
        IsolatorConfig {
            kind,
            cgroups_root: DEFAULT_CGROUPS_ROOT.to_string(),
            enable_cfs: false,
        }
    }
}

/// Creates, recovers and thereby hands out containers. Shared by all tasks of an executor.
pub trait Isolator: Send + Sync + std::fmt::Debug {
    /// Short name for logs: `"cgroups-v1"`, `"cgroups-v2"` or `"posix"`.
    fn name(&self) -> &'static str;

    /// Creates the container (e.g. cgroup `<root>/<container_id>` in every needed hierarchy)
    /// with its limits. Fails with [`IsolatorError::ContainerExists`] if it is already there
    /// (use [`Isolator::recover`]); nothing is left behind when it fails.
    fn prepare(
        &self,
        container_id: &str,
        limits: &Limits,
    ) -> Result<Box<dyn Container>, IsolatorError>;

    /// Re-attaches to an existing container after an executor/agent restart (None if it does
    /// not exist).
    fn recover(&self, container_id: &str) -> Result<Option<Box<dyn Container>>, IsolatorError>;

    /// Ids of every container that exists under the cgroups root (in any hierarchy on v1),
    /// sorted. The agent compares them with its checkpoints on start-up to find orphans.
    /// Posix: always empty, since nothing on the host records a posix container.
    fn containers(&self) -> Result<Vec<String>, IsolatorError>;

    /// Destroys a container whatever its state: SIGKILLs every process in it (freezer or
    /// `cgroup.kill` so nothing forks in between, repeated until `cgroup.procs` is empty),
    /// then removes it. Returns whether it existed. Idempotent; blocking like
    /// [`Container::kill_all`].
    fn destroy_container(&self, container_id: &str) -> Result<bool, IsolatorError> {
        let Some(container) = self.recover(container_id)? else {
            return Ok(false);
        };
        container.kill_all()?;
        container.destroy()?;
        Ok(true)
    }
}

/// One task's container.
pub trait Container: Send + std::fmt::Debug {
    /// The container id given to [`Isolator::prepare`].
    fn id(&self) -> &str;

    /// Files a freshly forked child must write "0" into (in pre_exec) to join the container.
    /// Empty for posix.
    fn procs_files(&self) -> Vec<PathBuf>;

    /// Pids currently in the container (posix: empty, the caller uses the process group).
    fn pids(&self) -> Vec<i32>;

    /// True when the kernel OOM killer killed a process of this container (v1:
    /// `memory.oom_control` `oom_kill` counter > 0; v2: `memory.events` `oom_kill` > 0).
    /// Ask before [`Container::destroy`]: the counter goes away with the container.
    fn oom_killed(&self) -> bool;

    /// Memory usage in bytes if known.
    fn memory_usage(&self) -> Option<u64>;

    /// SIGKILLs every process in the container, repeating until `cgroup.procs` is empty, for
    /// a bounded number of rounds (the freezer or `cgroup.kill` is used when present so that
    /// nothing forks in between). Fails with [`IsolatorError::KillFailed`] if processes remain.
    ///
    /// Blocking: it polls with short sleeps, normally for milliseconds and at most about five
    /// seconds, so async callers may prefer `spawn_blocking`.
    fn kill_all(&self) -> Result<(), IsolatorError>;

    /// Removes the container (every hierarchy's directory). Fails with
    /// [`IsolatorError::NotEmpty`] while processes remain (call [`Container::kill_all`]
    /// first). Idempotent: removing a removed container succeeds.
    fn destroy(&self) -> Result<(), IsolatorError>;
}

/// Builds the isolator asked for. `Cgroups` on a host where no usable cgroup hierarchy with
/// memory and cpu exists is an error saying why, never a silent fallback to posix.
pub fn create(config: &IsolatorConfig) -> Result<Arc<dyn Isolator>, IsolatorError> {
    match config.kind {
        IsolationKind::Posix => Ok(Arc::new(PosixIsolator)),
        IsolationKind::Cgroups => {
            let isolator = create_cgroups(&config.cgroups_root, config.enable_cfs)?;
            tracing::info!(
                isolator = isolator.name(),
                cgroups_root = %config.cgroups_root,
                enable_cfs = config.enable_cfs,
                "cgroups isolation ready"
            );
            Ok(isolator)
        }
    }
}

fn create_cgroups(root: &str, enable_cfs: bool) -> Result<Arc<dyn Isolator>, IsolatorError> {
    util::validate_cgroups_root(root)?;
    if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
        return Ok(Arc::new(CgroupsV2Isolator::with_root(
            DEFAULT_V2_MOUNT,
            root,
            enable_cfs,
        )?));
    }
    let v1_why = match CgroupsV1Isolator::new(root, enable_cfs) {
        Ok(v1) => return Ok(Arc::new(v1)),
        Err(IsolatorError::CgroupsUnavailable(why)) => why,
        Err(e) => return Err(e),
    };
    // Hybrid layout: v1 hierarchies plus a cgroup2 mount in `unified`. Only used when v1
    // cannot serve, since that mount rarely has the memory and cpu controllers.
    let unified = Path::new(DEFAULT_V2_MOUNT).join("unified");
    if !unified.join("cgroup.controllers").exists() {
        return Err(IsolatorError::CgroupsUnavailable(v1_why));
    }
    match CgroupsV2Isolator::with_root(&unified, root, enable_cfs) {
        Ok(v2) => Ok(Arc::new(v2)),
        Err(IsolatorError::CgroupsUnavailable(v2_why)) => Err(IsolatorError::CgroupsUnavailable(
            format!("{v1_why}; and {v2_why}"),
        )),
        Err(e) => Err(e),
    }
}

/// Whether cgroups isolation is usable on this host (used to pick the default).
pub fn cgroups_available() -> bool {
    match create_cgroups(DEFAULT_CGROUPS_ROOT, false) {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(error = %e, "cgroups isolation not available");
            false
        }
    }
}

/// Converts [`Container::procs_files`] to the C strings [`join_in_child`] needs. Call it
/// before forking: allocation is not allowed in the child.
pub fn procs_files_cstrings(files: &[PathBuf]) -> Result<Vec<CString>, IsolatorError> {
    files
        .iter()
        .map(|p| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| IsolatorError::NulInPath(p.clone()))
        })
        .collect()
}

/// Async-signal-safe join for use inside `CommandExt::pre_exec`: writes "0" (the calling
/// process) into each file (paths pre-converted to CString BEFORE fork). Uses only libc
/// open/write/close, no allocation. The first failure is returned, which makes `spawn` fail
/// rather than run the task outside its container.
pub fn join_in_child(procs_files: &[CString]) -> std::io::Result<()> {
    for path in procs_files {
        // SAFETY: `path` is a valid NUL-terminated string borrowed for the call.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = loop {
            // SAFETY: `fd` is open and the buffer is one valid static byte.
            let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break n;
        };
        // Capture errno before close() can overwrite it.
        let result = match written {
            1 => Ok(()),
            n if n < 0 => Err(std::io::Error::last_os_error()),
            _ => Err(std::io::Error::from_raw_os_error(libc::EIO)),
        };
        // SAFETY: `fd` was opened above and is closed exactly once.
        unsafe { libc::close(fd) };
        result?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_isolation_kinds() {
        for (s, k) in [
            ("cgroups", IsolationKind::Cgroups),
            ("posix", IsolationKind::Posix),
            (" cgroups ", IsolationKind::Cgroups),
            ("cgroups/cpu,cgroups/mem", IsolationKind::Cgroups),
            (
                "cgroups/cpu,cgroups/mem,cgroups/pids",
                IsolationKind::Cgroups,
            ),
            ("posix/cpu,posix/mem", IsolationKind::Posix),
            ("filesystem/posix,posix/cpu,posix/mem", IsolationKind::Posix),
            ("cgroups/cpu,posix/disk", IsolationKind::Cgroups),
        ] {
            assert_eq!(s.parse::<IsolationKind>().unwrap(), k, "{s:?}");
        }
        assert_eq!(IsolationKind::Cgroups.to_string(), "cgroups");
        assert_eq!(IsolationKind::Posix.to_string(), "posix");
        assert_eq!(
            IsolationKind::Posix
                .to_string()
                .parse::<IsolationKind>()
                .unwrap(),
            IsolationKind::Posix
        );
    }

    #[test]
    fn isolation_errors_name_the_value() {
        for bad in [
            "docker",
            "",
            "cgroups/",
            "cgroups/cpu,,cgroups/mem",
            "Cgroups",
            "network/cni",
        ] {
            let err = bad.parse::<IsolationKind>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("cgroups") && msg.contains("posix"), "{msg}");
        }
        let msg = "cgroups/cpu,gpu/nvidia"
            .parse::<IsolationKind>()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("gpu/nvidia"), "{msg}");
    }

    #[test]
    fn config_defaults() {
        let c = IsolatorConfig::new(IsolationKind::Cgroups);
        assert_eq!(c.cgroups_root, "mezzo");
        assert!(!c.enable_cfs);
    }

    #[test]
    fn posix_is_created_anywhere() {
        let iso = create(&IsolatorConfig::new(IsolationKind::Posix)).unwrap();
        assert_eq!(iso.name(), "posix");
    }

    #[test]
    fn bad_cgroups_root_is_rejected() {
        let mut c = IsolatorConfig::new(IsolationKind::Cgroups);
        c.cgroups_root = "../../etc".to_string();
        assert!(matches!(
            create(&c),
            Err(IsolatorError::InvalidCgroupsRoot(_))
        ));
    }

    #[test]
    fn cstrings_and_join_in_child() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "").unwrap();
        std::fs::write(&b, "").unwrap();
        let c = procs_files_cstrings(&[a.clone(), b.clone()]).unwrap();
        join_in_child(&c).unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "0");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "0");

        let missing = procs_files_cstrings(&[dir.path().join("missing")]).unwrap();
        let err = join_in_child(&missing).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);

        use std::os::unix::ffi::OsStringExt;
        let nul = PathBuf::from(std::ffi::OsString::from_vec(b"a\0b".to_vec()));
        assert!(matches!(
            procs_files_cstrings(&[nul]),
            Err(IsolatorError::NulInPath(_))
        ));
    }
}
