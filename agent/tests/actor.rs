//! The agent actor in process, against a fake master (in-process gRPC on
//! 127.0.0.1:0) and a fake executor (this test, speaking the executor
//! protocol on the agent's socket; the executor binary is a shell script
//! that only sleeps, so it has a pid and a command line naming its run).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use mezzo_agent::protocol::{ExecUpdate, FromExecutor, ToExecutor};
use mezzo_agent::{AgentConfig, Shutdown};
use mezzo_proto::v1::{self, agent_message, master_message};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;
const T: Duration = Duration::from_secs(10);

/// One agent stream the fake master accepted.
struct Attached {
    register: v1::RegisterAgent,
    to_agent: mpsc::UnboundedSender<Result<v1::MasterMessage, Status>>,
    from_agent: Streaming<v1::AgentMessage>,
}

struct FakeMaster {
    attached: mpsc::UnboundedSender<Attached>,
}

#[tonic::async_trait]
impl v1::agent_service_server::AgentService for FakeMaster {
    type AttachStream =
        Pin<Box<dyn Stream<Item = Result<v1::MasterMessage, Status>> + Send + 'static>>;

    async fn attach(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut from_agent = request.into_inner();
        let Some(agent_message::Message::Register(register)) =
            from_agent.message().await?.and_then(|m| m.message)
        else {
            return Err(Status::invalid_argument("register first"));
        };
        let (to_agent, rx) = mpsc::unbounded_channel();
        let _ = to_agent.send(Ok(msg(master_message::Message::Registered(
            v1::AgentRegistered {
                agent_id: "agent-1".into(),
                ..Default::default()
            },
        ))));
        let _ = self.attached.send(Attached {
            register,
            to_agent,
            from_agent,
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

fn msg(m: master_message::Message) -> v1::MasterMessage {
    v1::MasterMessage {
        epoch: 1,
        message: Some(m),
    }
}

async fn fake_master() -> Res<(String, mpsc::UnboundedReceiver<Attached>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = tonic::service::Routes::new(v1::agent_service_server::AgentServiceServer::new(
        FakeMaster { attached: tx },
    ))
    .into_axum_router();
    tokio::spawn(mezzo_runtime::serve::serve(listener, app, Shutdown::new()));
    Ok((addr.to_string(), rx))
}

fn config(master: &str, work_dir: &Path, script: &Path) -> Res<AgentConfig> {
    let mut c = AgentConfig::new(master, work_dir)?;
    c.isolation = mezzo_isolators::IsolationKind::Posix;
    c.http_listen = Some(([127, 0, 0, 1], 0).into());
    c.status_update_retry_interval = Duration::from_millis(300);
    c.executor_binary = script.to_path_buf();
    Ok(c)
}

/// An "executor" that only sleeps; its command line names its spec (and
/// so its container), which is how the agent recognises it after a restart.
fn sleeper_script(dir: &Path) -> Res<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-executor.sh");
    std::fs::write(&path, "#!/bin/sh\nsleep 600\n")?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

async fn eventually<T, F: FnMut() -> Option<T>>(what: &str, mut f: F) -> Res<T> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next status update the agent sends (skipping heartbeats).
async fn next_update(a: &mut Attached, within: Duration) -> Res<Option<v1::TaskStatus>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = match tokio::time::timeout_at(deadline, a.from_agent.message()).await {
            Err(_) => return Ok(None),
            Ok(m) => m?,
        };
        match m.and_then(|m| m.message) {
            Some(agent_message::Message::StatusUpdate(u)) => return Ok(u.status),
            Some(_) => continue,
            None => return Err("agent closed its stream".into()),
        }
    }
}

fn checkpoint(work_dir: &Path, container_id: &str) -> Option<v1::CheckpointedTask> {
    let path = work_dir
        .join("meta/tasks")
        .join(format!("{container_id}.pb"));
    let bytes = std::fs::read(path).ok()?;
    <v1::CheckpointedTask as prost::Message>::decode(bytes.as_slice()).ok()
}

struct FakeExecutor {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    wr: tokio::net::unix::OwnedWriteHalf,
}

impl FakeExecutor {
    async fn connect(work_dir: &Path, container_id: &str) -> Res<FakeExecutor> {
        let s = UnixStream::connect(work_dir.join("agent.sock")).await?;
        let (rd, wr) = s.into_split();
        let mut e = FakeExecutor {
            lines: BufReader::new(rd).lines(),
            wr,
        };
        e.send(&FromExecutor::Register {
            container_id: container_id.into(),
            pid: std::process::id(),
        })
        .await?;
        Ok(e)
    }

    async fn send(&mut self, m: &FromExecutor) -> Res<()> {
        let mut line = serde_json::to_vec(m)?;
        line.push(b'\n');
        self.wr.write_all(&line).await?;
        Ok(())
    }

    async fn update(&mut self, uuid: &uuid::Uuid, state: &str) -> Res<()> {
        let update = ExecUpdate {
            uuid: uuid.to_string(),
            state: state.into(),
            message: String::new(),
            reason: String::new(),
            exit_code: None,
            healthy: None,
            timestamp: 1.0,
        };
        self.send(&FromExecutor::Update { update }).await
    }

    async fn recv(&mut self) -> Res<ToExecutor> {
        let line = tokio::time::timeout(T, self.lines.next_line())
            .await??
            .ok_or("agent closed the executor connection")?;
        Ok(serde_json::from_str(&line)?)
    }
}

/// Kills the fake executor's process group when the test ends, even on
/// failure, so no `sleep 600` outlives it.
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

fn kill_group(pid: i32) {
    // SAFETY: kill has no memory effects; the executor called setsid, so
    // -pid is its own process group.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

fn run_task(a: &Attached) {
    let task = v1::TaskInfo {
        task_id: "t1".into(),
        name: "t1".into(),
        command: Some(v1::CommandInfo {
            value: "true".into(),
            shell: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let framework = v1::FrameworkInfo {
        id: "fw".into(),
        ..Default::default()
    };
    let _ = a
        .to_agent
        .send(Ok(msg(master_message::Message::RunTask(v1::RunTask {
            framework: Some(framework),
            task: Some(task),
        }))));
}

/// Sends one RunTask and waits for its executor: its container id and pid.
async fn launch_one(a: &Attached, work_dir: &Path) -> Res<(String, i32)> {
    run_task(a);
    let spec_path = eventually("the executor spec", || {
        let rd = std::fs::read_dir(work_dir.join("runs")).ok()?;
        rd.flatten()
            .map(|e| e.path().join("executor.json"))
            .find(|p| p.exists())
    })
    .await?;
    let spec: mezzo_agent::protocol::ExecutorSpec =
        serde_json::from_slice(&std::fs::read(&spec_path)?)?;
    let cid = spec.container_id.clone();
    // The task was checkpointed before its executor was started.
    assert!(checkpoint(work_dir, &cid).is_some_and(|c| c.task.is_some()));
    let pid: i32 = eventually("the executor pid", || {
        std::fs::read_to_string(work_dir.join("runs").join(&cid).join("executor.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .await?;
    Ok((cid, pid))
}

/// Acknowledges `uuid` and checks nothing more is sent for the task.
async fn acknowledge(a: &mut Attached, work_dir: &Path, cid: &str, uuid: &uuid::Uuid) -> Res<()> {
    let _ = a.to_agent.send(Ok(msg(master_message::Message::Acknowledge(
        v1::AcknowledgeUpdate {
            framework_id: "fw".into(),
            task_id: "t1".into(),
            uuid: uuid.as_bytes().to_vec(),
        },
    ))));
    // Drain a re-send that may have crossed the ack, then silence.
    let mut extra = next_update(a, Duration::from_millis(250)).await?;
    if extra.is_some() {
        extra = next_update(a, Duration::from_secs(1)).await?;
    }
    assert!(extra.is_none(), "an acknowledged update was re-sent");
    eventually("the ack checkpointed", || {
        checkpoint(work_dir, cid)
            .filter(|c| c.pending_updates.is_empty())
            .map(|_| ())
    })
    .await
}

/// The HTTP API shows the running task in `/state`, counts it under every
/// task state's metric, and browses its sandbox.
async fn check_http(http: std::net::SocketAddr, work_dir: &Path) -> Res<()> {
    let get = |path: &str| reqwest::get(format!("http://{http}{path}"));
    let state: serde_json::Value = get("/state").await?.json().await?;
    assert_eq!(state["id"], "agent-1");
    let executors = &state["frameworks"][0]["executors"];
    assert_eq!(executors[0]["tasks"][0]["state"], "TASK_RUNNING", "{state}");
    let metrics: serde_json::Value = get("/metrics/snapshot").await?.json().await?;
    for s in v1::TaskState::ALL {
        let key = format!("slave/tasks_{}", s.metric_suffix());
        let want = u64::from(s == v1::TaskState::TaskRunning);
        assert_eq!(metrics[&key].as_u64(), Some(want), "{key} in {metrics}");
    }
    let text = get("/metrics").await?.text().await?;
    assert!(
        text.contains("mezzo_agent_tasks{state=\"TASK_RUNNING\"} 1"),
        "{text}"
    );
    let dir = executors[0]["directory"].as_str().ok_or("no directory")?;
    let r = get(&format!("/files/browse?path={dir}")).await?;
    assert!(r.status().is_success(), "browse answered {}", r.status());
    let escape = work_dir.join("meta").display().to_string();
    let r = get(&format!("/files/browse?path={escape}")).await?;
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    Ok(())
}

/// Runs one task through launch, an update and its acknowledgement, then
/// shuts the agent down and restarts it: the task comes back and the
/// executor's death is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_durable_before_they_leave_and_shutdown_keeps_executors() -> Res<()> {
    let dir = tempfile::tempdir()?;
    let work_dir = dir.path().join("work");
    let script = sleeper_script(dir.path())?;
    let (master, mut attached) = fake_master().await?;
    let shutdown = Shutdown::new();
    let mut cfg = config(&master, &work_dir, &script)?;
    cfg.shutdown = shutdown.clone();
    let agent = mezzo_agent::start(cfg).await?;
    let http = agent.http_addr.ok_or("no HTTP address")?;
    let mut a = tokio::time::timeout(T, attached.recv())
        .await?
        .ok_or("agent never attached")?;
    assert!(a.register.tasks.is_empty());
    let (cid, pid) = launch_one(&a, &work_dir).await?;
    let _cleanup = KillGroup(pid);

    let mut exec = FakeExecutor::connect(&work_dir, &cid).await?;
    let u1 = uuid::Uuid::new_v4();
    exec.update(&u1, "TASK_RUNNING").await?;
    // The executor's ack comes once the update is checkpointed.
    match exec.recv().await? {
        ToExecutor::Ack { uuid } => assert_eq!(uuid, u1.to_string()),
        other => return Err(format!("expected an ack, got {other:?}").into()),
    }
    let on_disk = checkpoint(&work_dir, &cid).ok_or("no checkpoint")?;
    assert_eq!(on_disk.pending_updates.len(), 1);
    assert_eq!(on_disk.pending_updates[0].uuid, u1.as_bytes().to_vec());

    // Sent, and re-sent until acknowledged.
    let first = next_update(&mut a, T).await?.ok_or("no update sent")?;
    assert_eq!(first.uuid, u1.as_bytes().to_vec());
    assert_eq!(first.state, v1::TaskState::TaskRunning as i32);
    let again = next_update(&mut a, Duration::from_secs(3)).await?;
    assert_eq!(again.map(|s| s.uuid), Some(u1.as_bytes().to_vec()));
    acknowledge(&mut a, &work_dir, &cid, &u1).await?;
    check_http(http, &work_dir).await?;

    // Shutdown: returns, stops serving, leaves the executor running.
    shutdown.trigger();
    tokio::time::timeout(T, agent.wait()).await??;
    assert!(tokio::net::TcpStream::connect(http).await.is_err());
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(exec);

    // A restarted agent re-registers with its id and the running task...
    let mut cfg = config(&master, &work_dir, &script)?;
    let shutdown2 = Shutdown::new();
    cfg.shutdown = shutdown2.clone();
    let agent2 = mezzo_agent::start(cfg).await?;
    let mut a2 = tokio::time::timeout(T, attached.recv())
        .await?
        .ok_or("agent never re-attached")?;
    let info = a2.register.info.clone().unwrap_or_default();
    assert_eq!(info.id, "agent-1");
    assert_eq!(a2.register.tasks.len(), 1);
    assert_eq!(
        a2.register.tasks[0].state,
        v1::TaskState::TaskRunning as i32
    );
    // ...and reports TASK_FAILED once the recovered executor dies.
    kill_group(pid);
    let failed = next_update(&mut a2, T).await?.ok_or("no TASK_FAILED")?;
    assert_eq!(failed.state, v1::TaskState::TaskFailed as i32);
    assert_eq!(
        failed.reason,
        v1::StatusReason::ReasonExecutorTerminated as i32
    );
    shutdown2.trigger();
    tokio::time::timeout(T, agent2.wait()).await??;
    Ok(())
}

/// An executor that died while the agent was down fails its task at once
/// on recovery, and that update survives until acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_executor_found_at_recovery_fails_its_task() -> Res<()> {
    let dir = tempfile::tempdir()?;
    let work_dir = dir.path().join("work");
    let script = sleeper_script(dir.path())?;
    let (master, mut attached) = fake_master().await?;
    let shutdown = Shutdown::new();
    let mut cfg = config(&master, &work_dir, &script)?;
    cfg.shutdown = shutdown.clone();
    let agent = mezzo_agent::start(cfg).await?;
    let a = tokio::time::timeout(T, attached.recv())
        .await?
        .ok_or("agent never attached")?;
    let (_cid, pid) = launch_one(&a, &work_dir).await?;
    let _cleanup = KillGroup(pid);
    shutdown.trigger();
    tokio::time::timeout(T, agent.wait()).await??;
    kill_group(pid);
    eventually("the executor gone", || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await?;

    let shutdown2 = Shutdown::new();
    let mut cfg = config(&master, &work_dir, &script)?;
    cfg.shutdown = shutdown2.clone();
    let agent2 = mezzo_agent::start(cfg).await?;
    let mut a2 = tokio::time::timeout(T, attached.recv())
        .await?
        .ok_or("agent never re-attached")?;
    let failed = next_update(&mut a2, T).await?.ok_or("no TASK_FAILED")?;
    assert_eq!(failed.state, v1::TaskState::TaskFailed as i32);
    assert_eq!(
        failed.reason,
        v1::StatusReason::ReasonExecutorTerminated as i32
    );
    shutdown2.trigger();
    tokio::time::timeout(T, agent2.wait()).await??;
    Ok(())
}
