//! Starting executors: the executor spec built from a task (pure), the
//! sandbox and the `mezzo executor` process (I/O, on a blocking thread so
//! the actor never waits for a fork), and telling live executors from
//! dead ones after a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mezzo_proto::v1;
use mezzo_proto::Resources;

use crate::checkpoint::Layout;
use crate::event::{Event, EventTx};
use crate::protocol::{ExecutorSpec, HealthSpec};
use crate::{AgentConfig, AgentError};

/// `<work_dir>/sandboxes/<framework>/<executor>/<run>` (the executor id is the task id).
pub fn sandbox_dir(
    work_dir: &Path,
    framework_id: &str,
    task_id: &str,
    container_id: &str,
) -> PathBuf {
    work_dir
        .join("sandboxes")
        .join(sanitize(framework_id))
        .join(sanitize(task_id))
        .join(container_id)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

/// Who is launching: the parts of the agent a spec needs.
pub(crate) struct Launch<'a> {
    pub config: &'a AgentConfig,
    pub layout: &'a Layout,
    pub agent_id: &'a str,
    pub hostname: &'a str,
}

/// The environment Mesos gives a task: sandbox, ids, `HOST`, `PORT0..n`,
/// `PORTS`, `PORT`, then the task's own variables.
fn task_env(
    l: &Launch<'_>,
    framework: &v1::FrameworkInfo,
    task: &v1::TaskInfo,
    container_id: &str,
    sandbox: &Path,
    ports: &[u64],
) -> Vec<(String, String)> {
    let sandbox = sandbox.display().to_string();
    let mut env: Vec<(String, String)> = vec![
        ("MESOS_SANDBOX".into(), sandbox.clone()),
        ("MESOS_TASK_ID".into(), task.task_id.clone()),
        ("MESOS_FRAMEWORK_ID".into(), framework.id.clone()),
        ("MESOS_AGENT_ID".into(), l.agent_id.to_string()),
        ("MESOS_CONTAINER_ID".into(), container_id.to_string()),
        ("HOST".into(), l.hostname.to_string()),
        ("HOME".into(), sandbox),
        (
            "PORTS".into(),
            ports
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    for (i, p) in ports.iter().enumerate() {
        env.push((format!("PORT{i}"), p.to_string()));
    }
    if let Some(p) = ports.first() {
        env.push(("PORT".into(), p.to_string()));
    }
    if let Some(c) = &task.command {
        env.extend(
            c.environment
                .iter()
                .map(|e| (e.name.clone(), e.value.clone())),
        );
    }
    env
}

/// The spec the executor of `task` runs from.
pub(crate) fn executor_spec(
    l: &Launch<'_>,
    framework: &v1::FrameworkInfo,
    task: &v1::TaskInfo,
    container_id: &str,
) -> ExecutorSpec {
    let c = l.config;
    let sandbox = sandbox_dir(&c.work_dir, &framework.id, &task.task_id, container_id);
    let resources = Resources::from_proto(&task.resources);
    let command = task.command.clone().unwrap_or_default();
    let ports: Vec<u64> = resources.ranges("ports").values().collect();
    ExecutorSpec {
        container_id: container_id.to_string(),
        framework_id: framework.id.clone(),
        task_id: task.task_id.clone(),
        agent_id: l.agent_id.to_string(),
        agent_socket: l.layout.socket().display().to_string(),
        env: task_env(l, framework, task, container_id, &sandbox, &ports),
        sandbox: sandbox.display().to_string(),
        shell: command.shell || command.arguments.is_empty(),
        value: command.value.clone(),
        arguments: command.arguments.clone(),
        user: if command.user.is_empty() {
            c.default_user.clone()
        } else {
            command.user.clone()
        },
        cpus: resources.scalar("cpus"),
        mem_mb: resources.scalar("mem"),
        pids_max: c.pids_max,
        isolation: c.isolation.to_string(),
        cgroups_root: c.cgroups_root.clone(),
        enable_cfs: c.enable_cfs,
        kill_grace_seconds: task.kill_grace_period_seconds.unwrap_or(3.0),
        recovery_timeout_seconds: c.recovery_timeout.as_secs_f64(),
        health_check: task.health_check.as_ref().and_then(health_spec),
    }
}

/// Converts the wire health check; `None` for an unknown type.
fn health_spec(h: &v1::HealthCheck) -> Option<HealthSpec> {
    let kind = match v1::HealthCheckType::try_from(h.r#type).ok()? {
        v1::HealthCheckType::HealthCheckHttp => "http",
        v1::HealthCheckType::HealthCheckTcp => "tcp",
        v1::HealthCheckType::HealthCheckCommand => "command",
        v1::HealthCheckType::HealthCheckUnknown => return None,
    };
    let or = |v: f64, d: f64| if v > 0.0 && v.is_finite() { v } else { d };
    Some(HealthSpec {
        kind: kind.into(),
        command: h.command.clone(),
        port: u16::try_from(h.port).unwrap_or(0),
        path: h.path.clone(),
        // Marathon's defaults: 15 s delay-free start, 60 s interval, 20 s timeout,
        // 3 failures, 300 s grace.
        delay_seconds: h.delay_seconds.max(0.0),
        interval_seconds: or(h.interval_seconds, 60.0),
        timeout_seconds: or(h.timeout_seconds, 20.0),
        consecutive_failures: if h.consecutive_failures == 0 {
            3
        } else {
            h.consecutive_failures
        },
        grace_period_seconds: or(h.grace_period_seconds, 300.0),
    })
}

/// Creates the sandbox, writes the spec and starts `<binary> executor` in
/// its own session (so it survives the agent), recording its pid.
fn spawn_executor(
    binary: &Path,
    layout: &Layout,
    spec: &ExecutorSpec,
) -> Result<tokio::process::Child, AgentError> {
    let sandbox = Path::new(&spec.sandbox);
    std::fs::create_dir_all(sandbox).map_err(|e| AgentError::io(sandbox, e))?;
    let run_dir = layout.run_dir(&spec.container_id);
    std::fs::create_dir_all(&run_dir).map_err(|e| AgentError::io(&run_dir, e))?;
    let spec_path = layout.executor_spec(&spec.container_id);
    let body = serde_json::to_vec_pretty(spec).map_err(|e| AgentError::Config(e.to_string()))?;
    std::fs::write(&spec_path, body).map_err(|e| AgentError::io(&spec_path, e))?;
    let log_path = run_dir.join("executor.log");
    let log = std::fs::File::create(&log_path).map_err(|e| AgentError::io(&log_path, e))?;
    let log2 = log.try_clone().map_err(|e| AgentError::io(&log_path, e))?;
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("executor")
        .arg("--spec")
        .arg(&spec_path)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .kill_on_drop(false);
    // SAFETY: setsid is async-signal-safe; it puts the executor in its
    // own session so it survives the agent (and its terminal) going away.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| AgentError::io(binary, e))?;
    if let Some(pid) = child.id() {
        let pid_path = layout.executor_pid(&spec.container_id);
        std::fs::write(&pid_path, pid.to_string()).map_err(|e| AgentError::io(&pid_path, e))?;
    }
    Ok(child)
}

/// Starts the executor off the actor's thread, then reaps it while the
/// agent lives (after an agent restart init does) and reports its end.
pub(crate) async fn launch(
    config: Arc<AgentConfig>,
    layout: Layout,
    spec: ExecutorSpec,
    events: EventTx,
) {
    let container_id = spec.container_id.clone();
    let spawned = tokio::task::spawn_blocking(move || {
        spawn_executor(&config.executor_binary, &layout, &spec)
    })
    .await
    .unwrap_or_else(|e| Err(AgentError::Master(format!("launcher: {e}"))));
    match spawned {
        Ok(mut child) => {
            let status = child.wait().await.ok().and_then(|s| s.code());
            let _ = events.send(Event::ExecutorExited {
                container_id,
                status,
            });
        }
        Err(error) => {
            let _ = events.send(Event::LaunchFailed {
                container_id,
                error,
            });
        }
    }
}

/// The pid of the container's executor if it is alive.
pub(crate) fn live_executor(layout: &Layout, container_id: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(layout.executor_pid(container_id))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    executor_alive(pid, container_id).then_some(pid)
}

/// True when `pid` is a live (non-zombie) executor of this container: the
/// command line check guards against pid reuse.
pub(crate) fn executor_alive(pid: i32, container_id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "Z"))
        })
        .unwrap_or(true);
    !zombie && String::from_utf8_lossy(&cmdline).contains(container_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AgentConfig {
        let mut c = AgentConfig::new("127.0.0.1:5050", "/w").unwrap_or_else(|e| panic!("{e}"));
        c.default_user = "nobody".into();
        c
    }

    #[test]
    fn the_spec_carries_mesos_environment_and_ports() {
        let config = config();
        let layout = Layout::new(&config.work_dir);
        let l = Launch {
            config: &config,
            layout: &layout,
            agent_id: "a1",
            hostname: "h1",
        };
        let fw = v1::FrameworkInfo {
            id: "fw".into(),
            ..Default::default()
        };
        let task = v1::TaskInfo {
            task_id: "web/1".into(),
            resources: Resources::new()
                .with_scalar("cpus", 0.5)
                .with_ranges(
                    "ports",
                    mezzo_proto::RangeSet::from_ranges([(31000, 31001)]),
                )
                .to_proto(),
            command: Some(v1::CommandInfo {
                value: "echo hi".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = executor_spec(&l, &fw, &task, "c1");
        let env = |k: &str| {
            spec.env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(spec.sandbox, "/w/sandboxes/fw/web_1/c1");
        assert_eq!(spec.agent_socket, "/w/agent.sock");
        assert_eq!(env("PORTS").as_deref(), Some("31000,31001"));
        assert_eq!(env("PORT1").as_deref(), Some("31001"));
        assert_eq!(env("PORT").as_deref(), Some("31000"));
        assert_eq!(env("HOST").as_deref(), Some("h1"));
        assert_eq!(env("MESOS_AGENT_ID").as_deref(), Some("a1"));
        assert!(spec.shell);
        assert_eq!(spec.user, "nobody");
        assert_eq!(spec.cpus, 0.5);
    }

    #[test]
    fn sandbox_names_cannot_climb_out() {
        let d = sandbox_dir(Path::new("/w"), "../fw", "a/../../b", "c");
        assert_eq!(d, Path::new("/w/sandboxes/_fw/a_.._.._b/c"));
    }

    #[test]
    fn a_missing_pid_is_no_live_executor() {
        let layout = Layout::new(Path::new("/nonexistent-mezzo"));
        assert_eq!(live_executor(&layout, "c1"), None);
        assert!(!executor_alive(i32::MAX, "c1"));
    }
}
