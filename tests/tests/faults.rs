//! Fault tests of containers and agent recovery: a container never outlives
//! its executor (kill -9 of an executor; executors stopped while the agent
//! is down, the scenario of issue 13), and an agent detects a reboot by the
//! boot id (simulated by pointing it at another boot id file).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use mezzo_proto::v1::{self, TaskState};
use mezzo_proto::Resources;
use mezzo_sdk::matching::TaskResources;
use mezzo_tests::*;

const T: Duration = Duration::from_secs(30);

/// Pids of the live executors of this agent (from their pid files).
fn executor_pids(agent: &AgentProc) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(agent.work_dir.path().join("runs")) else {
        return out;
    };
    for run in rd.flatten() {
        let pid = std::fs::read_to_string(run.path().join("executor.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = pid.filter(|p| pid_alive(*p)) {
            out.push(pid);
        }
    }
    out
}

/// Container cgroups of this agent left in any v1 hierarchy or in the
/// unified hierarchy.
fn cgroups_left(agent: &AgentProc) -> Vec<PathBuf> {
    let mut bases = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        bases.extend(rd.flatten().map(|e| e.path()));
    }
    let mut out = Vec::new();
    for base in bases {
        if let Ok(rd) = std::fs::read_dir(base.join(&agent.cgroups_root)) {
            out.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    out
}

/// Live processes whose working directory is under `dir` and whose command
/// line contains `needle` (`python3` may be a full path behind a shim).
fn processes_with(dir: &Path, needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
        if cwd.starts_with(dir) && cmd.contains(needle) && pid_alive(pid) {
            out.push(pid);
        }
    }
    out
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: plain syscall on a pid this test found under its own work dir.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn task_resources(ports: u64) -> TaskResources {
    TaskResources {
        ports,
        ..TaskResources::new(0.1, 32.0)
    }
}

/// The resources flag of an agent owning exactly one OS-chosen port.
fn resources_with_port(port: u16) -> String {
    format!("cpus:2;mem:1024;ports:[{port}-{port}]")
}

/// Waits until an offer carries `port` again (the task's resources were
/// released), declining everything else at once.
async fn wait_port_offered(fw: &mut TestFramework, port: u16) -> Result<()> {
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("port {port} was not offered again");
        }
        for o in fw.next_offers(left).await? {
            let offered = Resources::from_proto(&o.resources)
                .ranges("ports")
                .values()
                .any(|p| p == u64::from(port));
            fw.driver.decline(vec![o.id.clone()], Some(0.0)).await?;
            if offered {
                return Ok(());
            }
        }
    }
}

/// An agent process started with extra environment (the boot id path),
/// killed on drop; the `AgentProc` it stands in for still cleans up the
/// work dir's processes and cgroups.
/// Starts `mezzo agent` on `agent`'s work dir and cgroup root with
/// `resources` and `env`, waiting for its `agent:` line.
fn start_agent_with_env(
    agent: &AgentProc,
    master: &str,
    resources: &str,
    env: &[(&str, &Path)],
) -> Result<Proc> {
    let dir = agent.work_dir.path();
    let args: Vec<String> = [
        "agent",
        "--master",
        master,
        "--work-dir",
        &dir.display().to_string(),
        "--resources",
        resources,
        "--cgroups-root",
        &agent.cgroups_root,
        "--hostname",
        "127.0.0.1",
        "--ip",
        "127.0.0.1",
        "--port",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (proc, _) = spawn_mezzo_env(&args, &["agent:"], dir, env)?;
    Ok(proc)
}

/// (a) kill -9 of an executor whose task has several processes: the task
/// fails, none of its processes survives, its cgroup is gone by the time
/// the failure is reported, and its port is offered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_executor_takes_its_whole_container_with_it() -> Result<()> {
    killed_executor_case(&[]).await
}

/// (a) under posix isolation: the process-group and environment sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_executor_takes_its_whole_tree_with_it_under_posix() -> Result<()> {
    killed_executor_case(&["--isolation", "posix"]).await
}

async fn killed_executor_case(flags: &[&str]) -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let port = free_port()?;
    let agent = AgentProc::start(&master.addr, &resources_with_port(port), flags)?;
    let mut fw = TestFramework::start(&master.addr, FrameworkOpts::default()).await?;
    fw.launch_with("victim", "sleep 1000 & sleep 1000", task_resources(1))
        .await?;
    fw.wait_state("victim", TaskState::TaskRunning, T).await?;
    let dir = agent.work_dir.path().to_path_buf();
    eventually(T, "both task processes", || async {
        (processes_under(&dir, "sleep 1000").len() == 2).then_some(())
    })
    .await?;
    let executors = executor_pids(&agent);
    assert_eq!(executors.len(), 1, "{executors:?}");
    let cgroups = cgroups_left(&agent);
    if can_use_cgroups() && flags.is_empty() {
        assert!(!cgroups.is_empty(), "the task has no cgroup");
    }

    signal(executors[0], libc::SIGKILL);
    let st = fw.wait_terminal("victim", T).await?;
    assert_eq!(st.state, TaskState::TaskFailed as i32, "{st:?}");
    assert_eq!(
        st.reason,
        v1::StatusReason::ReasonExecutorTerminated as i32,
        "{st:?}"
    );
    // Reported only once the container was destroyed.
    assert_eq!(
        processes_under(&dir, "sleep 1000"),
        Default::default(),
        "task processes outlived their executor"
    );
    assert_eq!(cgroups_left(&agent), Vec::<PathBuf>::new());
    wait_port_offered(&mut fw, port).await?;
    Ok(())
}

/// (b) Issue 13: the agent and its executors are stopped with SIGTERM; the
/// task processes that outlived them (a server holding its port, and a
/// sleep) are destroyed when the agent starts again, before the task is
/// reported failed, so the port is free for a replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_executors_stopped_with_the_agent_are_destroyed_on_restart() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let port = free_port()?;
    let mut agent = AgentProc::start(&master.addr, &resources_with_port(port), &[])?;
    let mut fw = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            failover_timeout: 60.0,
            ..Default::default()
        },
    )
    .await?;
    let server = format!("-m http.server {port} --bind 127.0.0.1");
    fw.launch_with(
        "web",
        "python3 -m http.server $PORT0 --bind 127.0.0.1 & sleep 1001",
        task_resources(1),
    )
    .await?;
    fw.wait_state("web", TaskState::TaskRunning, T).await?;
    eventually(T, "the task serving its port", || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    })
    .await?;
    let dir = agent.work_dir.path().to_path_buf();
    let executors = executor_pids(&agent);
    assert_eq!(executors.len(), 1, "{executors:?}");

    let mut proc = agent.proc.take().ok_or_else(|| anyhow!("no agent"))?;
    proc.signal(libc::SIGTERM);
    proc.wait_exit(T)?;
    for pid in &executors {
        signal(*pid, libc::SIGTERM);
    }
    eventually(T, "the executors gone", || async {
        executors.iter().all(|p| !pid_alive(*p)).then_some(())
    })
    .await?;
    // What the issue found: the task processes outlive their executor.
    assert_eq!(
        processes_with(&dir, &server).len(),
        1,
        "server not orphaned"
    );
    assert_eq!(processes_under(&dir, "sleep 1001").len(), 1);

    agent.restart()?;
    let st = fw.wait_terminal("web", T).await?;
    assert_eq!(st.state, TaskState::TaskFailed as i32, "{st:?}");
    assert_eq!(
        st.reason,
        v1::StatusReason::ReasonExecutorTerminated as i32,
        "{st:?}"
    );
    assert!(processes_with(&dir, &server).is_empty(), "orphan server");
    assert!(
        processes_under(&dir, "sleep 1001").is_empty(),
        "orphan sleep"
    );
    assert_eq!(cgroups_left(&agent), Vec::<PathBuf>::new());
    // Nobody keeps the port: a replacement could bind it.
    std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("port {port} still held"))?;
    Ok(())
}

/// Runs a task, then "reboots" the host: the agent is killed with every
/// process of its work dir, and started again reading another boot id.
/// Returns the framework, the agent, the agent id before and the new boot
/// id's file (kept alive by the returned temp dir).
async fn run_then_reboot(
    master: &MasterProc,
    resources_after: &str,
) -> Result<(TestFramework, AgentProc, Proc, String, tempfile::TempDir)> {
    let mut agent = AgentProc::start(&master.addr, "cpus:2;mem:1024", &[])?;
    let mut fw = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            failover_timeout: 60.0,
            ..Default::default()
        },
    )
    .await?;
    fw.launch("before-reboot", "sleep 1002 & sleep 1002", 0.1, 32.0)
        .await?;
    let running = fw
        .wait_state("before-reboot", TaskState::TaskRunning, T)
        .await?;
    let old_id = running.agent_id.clone();
    assert!(!old_id.is_empty());
    let meta = agent.work_dir.path().join("meta");
    eventually(T, "the boot id checkpointed", || async {
        meta.join("boot_id").is_file().then_some(())
    })
    .await?;

    // The reboot: nothing of the old boot survives but the work dir (and
    // here the empty cgroups, which a real reboot would not leave either).
    agent.kill();
    kill_processes_under(agent.work_dir.path());
    let boot = tempfile::tempdir()?;
    let boot_file = boot.path().join("boot_id");
    std::fs::write(&boot_file, "00000000-0000-4000-8000-00000000b007\n")?;
    let proc = start_agent_with_env(
        &agent,
        &master.addr,
        resources_after,
        &[("MEZZO_BOOT_ID_PATH", boot_file.as_path())],
    )?;
    Ok((fw, agent, proc, old_id, boot))
}

/// (c) After a reboot the old executors are gone: the task ends TASK_FAILED
/// with Mesos' reason and message, the agent keeps its id (same resources
/// and attributes), and the old checkpoints are archived, not replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_fails_old_tasks_keeps_the_agent_id_and_archives() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let (mut fw, agent, _proc, old_id, _boot) = run_then_reboot(&master, "cpus:2;mem:1024").await?;
    let st = fw.wait_terminal("before-reboot", T).await?;
    assert_eq!(st.state, TaskState::TaskFailed as i32, "{st:?}");
    assert_eq!(
        st.reason,
        v1::StatusReason::ReasonExecutorTerminated as i32,
        "{st:?}"
    );
    assert_eq!(
        st.message, "Abnormal executor termination: unknown container",
        "{st:?}"
    );
    assert_eq!(st.agent_id, old_id);
    let s = eventually(T, "the agent re-registered", || async {
        let s = master.state().await.ok()?;
        let slaves = s["slaves"].as_array()?;
        (slaves.len() == 1 && slaves[0]["active"] == true).then_some(s)
    })
    .await?;
    assert_eq!(s["slaves"][0]["id"], old_id.as_str(), "{s}");

    let meta = agent.work_dir.path().join("meta");
    let archived = meta.join("archive");
    let boots: Vec<PathBuf> = std::fs::read_dir(&archived)
        .with_context(|| format!("no {}", archived.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(boots.len(), 1, "{boots:?}");
    let old_records: Vec<PathBuf> = std::fs::read_dir(boots[0].join("tasks"))?
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        old_records
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "pb"))
            .count(),
        1,
        "the old task record is archived: {old_records:?}"
    );
    assert_eq!(
        std::fs::read_to_string(meta.join("boot_id"))?.trim(),
        "00000000-0000-4000-8000-00000000b007"
    );
    assert!(processes_under(agent.work_dir.path(), "sleep 1002").is_empty());
    eventually(T, "old cgroups removed", || async {
        cgroups_left(&agent).is_empty().then_some(())
    })
    .await?;
    Ok(())
}

/// After a reboot with different resources the agent registers with a new
/// id, and does not report the old agent's tasks itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_with_changed_resources_registers_a_new_agent() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let (fw, agent, _proc, old_id, _boot) = run_then_reboot(&master, "cpus:3;mem:1024").await?;
    let new_id = eventually(T, "a new agent registered", || async {
        let s = master.state().await.ok()?;
        s["slaves"]
            .as_array()?
            .iter()
            .find(|a| a["id"] != old_id.as_str() && a["active"] == true)
            .and_then(|a| a["id"].as_str().map(String::from))
    })
    .await?;
    assert_ne!(new_id, old_id);
    let archive = agent.work_dir.path().join("meta").join("archive");
    let boots: Vec<PathBuf> = std::fs::read_dir(&archive)?
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(boots.len(), 1, "{boots:?}");
    assert!(boots[0].join("agent_id").is_file(), "old agent id archived");
    assert!(
        !fw.updates
            .iter()
            .any(|u| u.agent_id == new_id && u.task_id == "before-reboot"),
        "the new agent reported the old agent's task"
    );
    Ok(())
}
