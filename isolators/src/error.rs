//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while creating, inspecting, killing or removing a container.
///
/// Every variant that stems from a file-system operation names the path involved, because a
/// bare "Permission denied" from deep inside `/sys/fs/cgroup` is useless to an operator.
#[derive(Debug, thiserror::Error)]
pub enum IsolatorError {
    /// `--isolation cgroups` was asked for but this host cannot provide it. Never downgraded
    /// to posix silently: the agent must refuse to start instead.
    #[error("cgroups requested but unavailable: {0}")]
    CgroupsUnavailable(String),

    /// A read, write, mkdir or rmdir on a cgroup (or other) file failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being attempted ("write", "read", "create directory", ...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// An operation of the `cgroups-rs` crate failed.
    #[error("cgroup {action} failed for {}: {source}", path.display())]
    Cgroup {
        /// What was being attempted ("create", "delete", ...).
        action: &'static str,
        /// The cgroup directory (or logical path when no directory is known yet).
        path: PathBuf,
        /// The crate's error, which carries the OS error as its cause.
        #[source]
        source: cgroups_rs::fs::error::Error,
    },

    /// The kernel silently did not take a limit (read-back differs from what was written).
    #[error("limit not applied: {} reads {actual:?}, expected {expected:?}", path.display())]
    LimitNotApplied {
        /// The control file that was read back.
        path: PathBuf,
        /// The value written.
        expected: String,
        /// The value read back.
        actual: String,
    },

    /// A container id that cannot safely be used as a single directory name.
    #[error("invalid container id {0:?}: must be 1-255 printable ASCII characters without '/' or '\\', and not '.' or '..'")]
    InvalidContainerId(String),

    /// A `cgroups_root` that is not a clean relative path.
    #[error("invalid cgroups root {0:?}: must be a relative path of non-empty components without '.' or '..'")]
    InvalidCgroupsRoot(String),

    /// Limits that cannot be turned into kernel values (non-positive, NaN, too large).
    #[error("invalid limits: {0}")]
    InvalidLimits(String),

    /// `prepare` found the container already there; use `recover` to re-attach to it.
    #[error("container {0} already exists")]
    ContainerExists(String),

    /// `destroy` was called while processes are still in the container.
    #[error("container {id} is not empty (pids {pids:?}); call kill_all first")]
    NotEmpty {
        /// The container.
        id: String,
        /// The processes still in it.
        pids: Vec<i32>,
    },

    /// `kill_all` gave up: processes kept appearing or did not die.
    #[error("could not kill every process of container {id} after {rounds} rounds; still present: {pids:?}")]
    KillFailed {
        /// The container.
        id: String,
        /// How many kill rounds were attempted.
        rounds: u32,
        /// The processes still present at the end.
        pids: Vec<i32>,
    },

    /// An `--isolation` value that names no known isolation.
    #[error("invalid isolation {value:?}: {reason}; expected 'cgroups' or 'posix' (or a Mesos-style list such as 'cgroups/cpu,cgroups/mem' or 'posix/cpu,posix/mem')")]
    InvalidIsolation {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A path that cannot be passed to the C library (it contains a NUL byte).
    #[error("path {} contains a NUL byte", .0.display())]
    NulInPath(PathBuf),
}

impl IsolatorError {
    /// Builds an [`IsolatorError::Io`] with the path it concerns.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        IsolatorError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
