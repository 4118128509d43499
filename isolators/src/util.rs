//! Helpers shared by the cgroup v1 and v2 implementations: input validation, the conversion
//! of [`Limits`] into kernel values, small file helpers that keep the path in their errors, and
//! the bounded kill loop.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{IsolatorError, Limits};

/// CPU shares per CPU, as in Mesos (`CPU_SHARES_PER_CPU`).
pub(crate) const CPU_SHARES_PER_CPU: f64 = 1024.0;
/// The kernel's minimum for `cpu.shares` (Mesos `MIN_CPU_SHARES`).
pub(crate) const MIN_CPU_SHARES: u64 = 2;
/// The kernel's maximum for `cpu.shares`.
pub(crate) const MAX_CPU_SHARES: u64 = 262_144;
/// CFS period in microseconds (Mesos `CPU_CFS_PERIOD` = 100 ms).
pub(crate) const CFS_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota in microseconds (Mesos `MIN_CPU_CFS_QUOTA` = 1 ms).
pub(crate) const MIN_CFS_QUOTA_US: u64 = 1_000;

/// How many kill rounds `kill_all` attempts before giving up.
pub(crate) const KILL_ROUNDS: u32 = 20;
/// How long one round waits for the killed processes to leave the cgroup.
const ROUND_WAIT: Duration = Duration::from_millis(250);
/// Poll interval while waiting for a cgroup to empty.
const POLL: Duration = Duration::from_millis(5);

/// A container id becomes a directory name, so it must be exactly one safe path component.
pub(crate) fn validate_container_id(id: &str) -> Result<(), IsolatorError> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(IsolatorError::InvalidContainerId(id.to_string()))
    }
}

/// The cgroups root is joined under each hierarchy's mount point: it must stay below it.
pub(crate) fn validate_cgroups_root(root: &str) -> Result<(), IsolatorError> {
    let ok = !root.is_empty()
        && !root.contains('\0')
        && root
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(IsolatorError::InvalidCgroupsRoot(root.to_string()))
    }
}

/// Rejects limits the kernel cannot represent, before anything is created.
pub(crate) fn validate_limits(limits: &Limits) -> Result<(), IsolatorError> {
    if !limits.cpus.is_finite() || limits.cpus <= 0.0 {
        return Err(IsolatorError::InvalidLimits(format!(
            "cpus must be a positive number, got {}",
            limits.cpus
        )));
    }
    if !limits.mem_mb.is_finite() || limits.mem_mb <= 0.0 {
        return Err(IsolatorError::InvalidLimits(format!(
            "mem_mb must be a positive number, got {}",
            limits.mem_mb
        )));
    }
    // i64::MAX bytes is already far beyond any machine; refuse rather than overflow.
    if limits.mem_mb * 1024.0 * 1024.0 >= i64::MAX as f64 / 2.0 {
        return Err(IsolatorError::InvalidLimits(format!(
            "mem_mb {} is too large",
            limits.mem_mb
        )));
    }
    if limits.pids_max == Some(0) {
        return Err(IsolatorError::InvalidLimits(
            "pids_max must be at least 1".to_string(),
        ));
    }
    if let Some(n) = limits.pids_max {
        if n > i64::MAX as u64 {
            return Err(IsolatorError::InvalidLimits(format!(
                "pids_max {n} is too large"
            )));
        }
    }
    Ok(())
}

/// `cpu.shares` for a number of CPUs: 1024 per CPU, clamped to the kernel's range.
pub(crate) fn cpu_shares(cpus: f64) -> u64 {
    // `as` saturates for floats, so a huge value cannot wrap.
    ((CPU_SHARES_PER_CPU * cpus) as u64).clamp(MIN_CPU_SHARES, MAX_CPU_SHARES)
}

/// The standard conversion of v1 shares (2..262144) to v2 `cpu.weight` (1..10000), the one
/// used by runc, crun and systemd, so that mixed fleets weigh tasks alike.
pub(crate) fn cpu_weight_from_shares(shares: u64) -> u64 {
    let shares = shares.clamp(MIN_CPU_SHARES, MAX_CPU_SHARES);
    1 + ((shares - 2) * 9999) / 262_142
}

/// CFS quota in microseconds per [`CFS_PERIOD_US`] for a number of CPUs (at least 1 ms).
pub(crate) fn cfs_quota_us(cpus: f64) -> u64 {
    ((cpus * CFS_PERIOD_US as f64) as u64).max(MIN_CFS_QUOTA_US)
}

/// The memory limit in bytes, rounded up to a whole page: the kernel rounds limits to pages
/// itself, and rounding up ourselves means the value read back equals the value written.
pub(crate) fn memory_limit_bytes(mem_mb: f64) -> u64 {
    let bytes = (mem_mb * 1024.0 * 1024.0).ceil() as u64;
    let page = page_size();
    bytes.div_ceil(page) * page
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// Writes a control file, keeping the path in the error.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), IsolatorError> {
    std::fs::write(path, value).map_err(|e| IsolatorError::io("write", path, e))
}

/// Reads a control file as trimmed text, keeping the path in the error.
pub(crate) fn read_file(path: &Path) -> Result<String, IsolatorError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| IsolatorError::io("read", path, e))
}

/// Value of `key` in a flat-keyed file such as v1 `memory.oom_control` or v2 `memory.events`
/// ("key value" per line). Parsed by key, not by position, because the kernel has added lines
/// to these files over time.
pub(crate) fn flat_keyed_value(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        match (it.next(), it.next()) {
            (Some(k), Some(v)) if k == key => v.parse().ok(),
            _ => None,
        }
    })
}

/// Pids listed in one `cgroup.procs` file. A missing file (container already removed) is an
/// empty list, not an error, so that `kill_all`/`destroy` stay idempotent.
pub(crate) fn read_procs(path: &Path) -> Result<Vec<i32>, IsolatorError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .filter(|p| *p > 0)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(IsolatorError::io("read", path, e)),
    }
}

/// Union of the pids in several `cgroup.procs` files, sorted and without duplicates.
pub(crate) fn read_procs_union(files: &[PathBuf]) -> Result<Vec<i32>, IsolatorError> {
    let mut all = BTreeSet::new();
    for f in files {
        all.extend(read_procs(f)?);
    }
    Ok(all.into_iter().collect())
}

/// Sends SIGKILL to each pid; a pid that is already gone is not an error.
pub(crate) fn sigkill_all(pids: &[i32]) {
    for &pid in pids {
        // SAFETY: kill has no memory-safety preconditions; pid > 0 was checked when parsing,
        // so this never signals a process group or every process.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(pid, error = %err, "SIGKILL failed");
            }
        }
    }
}

/// Polls `list` until it is empty or `timeout` passes; returns the last list seen.
pub(crate) fn wait_empty(
    list: &mut dyn FnMut() -> Result<Vec<i32>, IsolatorError>,
    timeout: Duration,
) -> Result<Vec<i32>, IsolatorError> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = list()?;
        if pids.is_empty() || Instant::now() >= deadline {
            return Ok(pids);
        }
        std::thread::sleep(POLL);
    }
}

/// Hooks that let an implementation stop forks while a kill round runs (v1 freezer) or use a
/// kernel-side kill (v2 `cgroup.kill`).
pub(crate) trait KillHooks {
    /// Runs before the pids of a round are read and signalled.
    fn before_round(&self, round: u32);
    /// Runs after the round's signals were sent (e.g. thaw, so SIGKILL is delivered).
    fn after_round(&self, round: u32);
}

/// The kill loop shared by v1 and v2: read the container's pids, SIGKILL them, wait for the
/// cgroup to empty; repeat a bounded number of times because a process may fork between the
/// read and the kill.
pub(crate) fn kill_until_empty(
    id: &str,
    list: &mut dyn FnMut() -> Result<Vec<i32>, IsolatorError>,
    hooks: &dyn KillHooks,
) -> Result<(), IsolatorError> {
    let mut last = Vec::new();
    for round in 0..KILL_ROUNDS {
        if list()?.is_empty() {
            return Ok(());
        }
        hooks.before_round(round);
        let signalled = list();
        if let Ok(pids) = &signalled {
            sigkill_all(pids);
        }
        hooks.after_round(round);
        signalled?;
        last = wait_empty(list, ROUND_WAIT)?;
        if last.is_empty() {
            return Ok(());
        }
        tracing::debug!(container = id, round, pids = ?last, "processes survive kill round");
    }
    Err(IsolatorError::KillFailed {
        id: id.to_string(),
        rounds: KILL_ROUNDS,
        pids: last,
    })
}

/// Names of the sub-directories of `dir` that are valid container ids (a missing `dir` has
/// none), sorted: the containers under one hierarchy's cgroups root.
pub(crate) fn container_dirs(dir: &Path) -> Result<Vec<String>, IsolatorError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IsolatorError::io("read directory", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| IsolatorError::io("read directory", dir, e))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let name = entry.file_name().to_string_lossy().into_owned();
        // Control files sit beside the groups; anything not shaped like an id is not ours.
        if is_dir && validate_container_id(&name).is_ok() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Deepest existing ancestor of `path` (or `path` itself): where a `mkdir` would happen.
pub(crate) fn deepest_existing(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

/// Whether the calling process may create entries in `dir` (real uid/gid, like `access(2)`).
pub(crate) fn writable(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// `rmdir` of a cgroup, retried briefly: right after the last process exits the kernel may
/// still hold the cgroup busy for a moment (EBUSY). A missing directory counts as removed.
pub(crate) fn remove_cgroup_dir(dir: &Path) -> Result<(), IsolatorError> {
    let mut delay = Duration::from_millis(10);
    for _ in 0..5 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => return Err(IsolatorError::io("remove directory", dir, e)),
        }
    }
    std::fs::remove_dir(dir).map_err(|e| IsolatorError::io("remove directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_mesos() {
        assert_eq!(cpu_shares(0.5), 512);
        assert_eq!(cpu_shares(1.0), 1024);
        assert_eq!(cpu_shares(2.5), 2560);
        assert_eq!(cpu_shares(0.0001), MIN_CPU_SHARES);
        assert_eq!(cpu_shares(1e12), MAX_CPU_SHARES);
    }

    #[test]
    fn weight_conversion_matches_runc() {
        assert_eq!(cpu_weight_from_shares(2), 1);
        assert_eq!(cpu_weight_from_shares(262_144), 10_000);
        assert_eq!(cpu_weight_from_shares(1024), 39);
        assert_eq!(cpu_weight_from_shares(512), 20);
    }

    #[test]
    fn quota_has_a_floor() {
        assert_eq!(cfs_quota_us(0.5), 50_000);
        assert_eq!(cfs_quota_us(2.0), 200_000);
        assert_eq!(cfs_quota_us(0.001), MIN_CFS_QUOTA_US);
    }

    #[test]
    fn memory_rounds_up_to_pages() {
        assert_eq!(memory_limit_bytes(64.0), 64 * 1024 * 1024);
        let odd = memory_limit_bytes(0.001);
        assert!(odd >= 1048 && odd / page_size() * page_size() == odd);
    }

    #[test]
    fn ids_and_roots_are_validated() {
        assert!(validate_container_id("task-1.abc_DEF:2").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "a\nb",
            "a\\b",
            &"x".repeat(256),
        ] {
            assert!(validate_container_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_cgroups_root("mezzo").is_ok());
        assert!(validate_cgroups_root("mezzo/agent-1").is_ok());
        for bad in ["", "/mezzo", "mezzo/", "a//b", "../x", "a/./b"] {
            assert!(validate_cgroups_root(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_are_validated() {
        let ok = Limits {
            cpus: 0.1,
            mem_mb: 32.0,
            pids_max: Some(10),
        };
        assert!(validate_limits(&ok).is_ok());
        for bad in [
            Limits {
                cpus: 0.0,
                ..ok.clone()
            },
            Limits {
                cpus: f64::NAN,
                ..ok.clone()
            },
            Limits {
                mem_mb: -1.0,
                ..ok.clone()
            },
            Limits {
                mem_mb: f64::INFINITY,
                ..ok.clone()
            },
            Limits {
                mem_mb: 1e300,
                ..ok.clone()
            },
            Limits {
                pids_max: Some(0),
                ..ok.clone()
            },
        ] {
            assert!(validate_limits(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flat_keyed_parsing_is_by_key() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(flat_keyed_value(v1, "oom_kill"), Some(3));
        assert_eq!(flat_keyed_value(v1, "oom_kill_disable"), Some(0));
        let v2 = "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(flat_keyed_value(v2, "oom_kill"), Some(1));
        assert_eq!(flat_keyed_value(v2, "absent"), None);
    }

    #[test]
    fn procs_files_parse_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "12\n7\n").unwrap();
        std::fs::write(&b, "7\n9\n").unwrap();
        let missing = dir.path().join("missing");
        assert_eq!(read_procs(&missing).unwrap(), Vec::<i32>::new());
        assert_eq!(read_procs_union(&[a, b, missing]).unwrap(), vec![7, 9, 12]);
    }

    #[test]
    fn container_dirs_lists_only_sub_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert!(container_dirs(&dir.path().join("missing"))
            .unwrap()
            .is_empty());
        std::fs::create_dir(dir.path().join("c2")).unwrap();
        std::fs::create_dir(dir.path().join("c1")).unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), "").unwrap();
        assert_eq!(container_dirs(dir.path()).unwrap(), vec!["c1", "c2"]);
    }
}
