//! Tests against the host's real cgroups. They need root and a usable cgroup hierarchy
//! (CI runs as root); elsewhere they print why and pass without doing anything.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezzo_isolators::{
    cgroups_available, create, join_in_child, procs_files_cstrings, Container, IsolationKind,
    Isolator, IsolatorConfig, IsolatorError, Limits,
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A container id unique to this test process and call.
fn unique_id(name: &str) -> String {
    format!(
        "test-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn isolator(enable_cfs: bool) -> Option<Arc<dyn Isolator>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: not root");
        return None;
    }
    if !cgroups_available() {
        eprintln!("skipping: cgroups not available on this host");
        return None;
    }
    let mut config = IsolatorConfig::new(IsolationKind::Cgroups);
    config.enable_cfs = enable_cfs;
    Some(create(&config).expect("cgroups available but create failed"))
}

/// Kills and removes the container even when an assertion fails half-way.
struct Guard(Box<dyn Container>);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill_all();
        let _ = self.0.destroy();
    }
}

impl std::ops::Deref for Guard {
    type Target = dyn Container;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

fn dirs(c: &dyn Container) -> Vec<PathBuf> {
    c.procs_files()
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect()
}

/// The first container directory that has `file`, read as trimmed text.
fn read_control(c: &dyn Container, file: &str) -> String {
    let path = dirs(c)
        .into_iter()
        .map(|d| d.join(file))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no {file} in {:?}", dirs(c)));
    std::fs::read_to_string(&path).unwrap().trim().to_string()
}

/// Spawns `cmd` inside the container, joining it in `pre_exec`.
fn spawn_in(c: &dyn Container, cmd: &mut Command) -> Child {
    let files = procs_files_cstrings(&c.procs_files()).unwrap();
    // SAFETY: join_in_child is async-signal-safe (open/write/close on pre-built strings).
    unsafe { cmd.pre_exec(move || join_in_child(&files)) };
    cmd.spawn().unwrap()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn prepare_sets_limits_and_destroy_removes() {
    let Some(iso) = isolator(false) else { return };
    let id = unique_id("limits");
    let limits = Limits {
        cpus: 0.5,
        mem_mb: 64.0,
        pids_max: Some(100),
    };
    let c = Guard(iso.prepare(&id, &limits).unwrap());
    assert_eq!(c.id(), id);
    let all_dirs = dirs(&*c);
    assert!(!all_dirs.is_empty());
    assert!(all_dirs
        .iter()
        .all(|d| d.is_dir() && d.ends_with(format!("mezzo/{id}"))));
    if iso.name() == "cgroups-v1" {
        assert_eq!(read_control(&*c, "cpu.shares"), "512");
        assert_eq!(read_control(&*c, "memory.limit_in_bytes"), "67108864");
        // The kernel OOM killer stays enabled.
        assert!(read_control(&*c, "memory.oom_control").contains("oom_kill_disable 0"));
    } else {
        assert_eq!(read_control(&*c, "cpu.weight"), "20");
        assert_eq!(read_control(&*c, "memory.max"), "67108864");
    }
    assert_eq!(read_control(&*c, "pids.max"), "100");
    assert!(!c.oom_killed());
    assert!(c.pids().is_empty());

    assert!(matches!(
        iso.prepare(&id, &limits),
        Err(IsolatorError::ContainerExists(_))
    ));

    c.destroy().unwrap();
    for d in &all_dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    c.destroy().unwrap(); // idempotent
}

#[test]
fn cfs_quota_is_set_when_enabled() {
    let Some(iso) = isolator(true) else { return };
    let id = unique_id("cfs");
    let limits = Limits {
        cpus: 0.5,
        mem_mb: 32.0,
        pids_max: None,
    };
    let c = Guard(iso.prepare(&id, &limits).unwrap());
    if iso.name() == "cgroups-v1" {
        assert_eq!(read_control(&*c, "cpu.cfs_period_us"), "100000");
        assert_eq!(read_control(&*c, "cpu.cfs_quota_us"), "50000");
    } else {
        assert_eq!(read_control(&*c, "cpu.max"), "50000 100000");
    }
    c.destroy().unwrap();
}

#[test]
fn oom_kill_is_detected() {
    let Some(iso) = isolator(false) else { return };
    let id = unique_id("oom");
    let limits = Limits {
        cpus: 1.0,
        mem_mb: 64.0,
        pids_max: Some(100),
    };
    let c = Guard(iso.prepare(&id, &limits).unwrap());
    let dirs = dirs(&*c);
    let mut child = spawn_in(
        &*c,
        Command::new("python3").args([
            "-c",
            "b = b'x' * (300 * 1024 * 1024)\nimport time\ntime.sleep(5)",
        ]),
    );
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "status {status:?}");
    wait_until("oom_kill counter", Duration::from_secs(5), || {
        c.oom_killed()
    });
    assert!(c.pids().is_empty());
    c.kill_all().unwrap();
    c.destroy().unwrap();
    assert!(dirs.iter().all(|d| !d.exists()));
}

#[test]
fn process_within_limits_is_listed_and_killed() {
    let Some(iso) = isolator(false) else { return };
    let id = unique_id("kill");
    let limits = Limits {
        cpus: 0.2,
        mem_mb: 64.0,
        pids_max: Some(50),
    };
    let c = Guard(iso.prepare(&id, &limits).unwrap());
    let dirs = dirs(&*c);
    // A shell with a background child too, so kill_all has more than one process to find.
    let mut child = spawn_in(
        &*c,
        Command::new("sh").args(["-c", "sleep 30 & sleep 30; wait"]),
    );
    let pid = child.id() as i32;
    wait_until(
        "both processes in the container",
        Duration::from_secs(5),
        || {
            let pids = c.pids();
            pids.contains(&pid) && pids.len() >= 3
        },
    );
    assert!(c.memory_usage().is_some());

    assert!(matches!(c.destroy(), Err(IsolatorError::NotEmpty { .. })));
    c.kill_all().unwrap();
    assert!(c.pids().is_empty());
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(!c.oom_killed());
    c.destroy().unwrap();
    assert!(dirs.iter().all(|d| !d.exists()));
}

#[test]
fn recover_finds_existing_containers_only() {
    let Some(iso) = isolator(false) else { return };
    let id = unique_id("recover");
    let limits = Limits {
        cpus: 0.1,
        mem_mb: 32.0,
        pids_max: None,
    };
    let c = Guard(iso.prepare(&id, &limits).unwrap());
    let mut child = spawn_in(&*c, Command::new("sleep").arg("30"));

    let again = iso
        .recover(&id)
        .unwrap()
        .expect("existing container recovered");
    assert_eq!(again.id(), id);
    assert_eq!(again.procs_files(), c.procs_files());
    assert_eq!(again.pids(), vec![child.id() as i32]);
    // The recovered handle can do everything the original could.
    again.kill_all().unwrap();
    child.wait().unwrap();
    again.destroy().unwrap();

    assert!(iso.recover(&id).unwrap().is_none());
    assert!(iso.recover(&unique_id("never-created")).unwrap().is_none());
    assert!(matches!(
        iso.recover("../escape"),
        Err(IsolatorError::InvalidContainerId(_))
    ));
}

#[test]
fn destroy_container_kills_a_forking_tree_and_removes_it() {
    let Some(iso) = isolator(false) else { return };
    let id = unique_id("destroy");
    let limits = Limits {
        cpus: 0.2,
        mem_mb: 64.0,
        pids_max: Some(200),
    };
    let c = Guard(iso.prepare(&id, &limits).unwrap());
    let dirs = dirs(&*c);
    // Several processes, one of them forking all the time: the freezer (v1) or cgroup.kill
    // (v2) must stop new forks escaping between listing the pids and signalling them.
    let mut child = spawn_in(
        &*c,
        Command::new("sh").args([
            "-c",
            "sleep 30 & sleep 30 & while true; do sleep 0.01; done",
        ]),
    );
    wait_until("the tree in the container", Duration::from_secs(5), || {
        c.pids().len() >= 4
    });
    assert!(iso.containers().unwrap().contains(&id));

    // A fresh isolator knows the container only by its id, as an agent after a restart does.
    let fresh = create(&IsolatorConfig::new(IsolationKind::Cgroups)).unwrap();
    assert!(fresh.destroy_container(&id).unwrap());
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(dirs.iter().all(|d| !d.exists()), "cgroup left: {dirs:?}");
    assert!(!fresh.containers().unwrap().contains(&id));
    assert!(!fresh.destroy_container(&id).unwrap(), "idempotent");
}
