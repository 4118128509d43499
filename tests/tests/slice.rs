//! End-to-end tests of the vertical slice: a real master and agent process,
//! tasks in real cgroups, frameworks written with the SDK.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use mezzo_proto::v1::{self, TaskState};
use mezzo_sdk::matching::{task_info, OfferSpace, TaskResources};
use mezzo_tests::*;

const T: Duration = Duration::from_secs(30);

fn read_stdout(agent: &AgentProc, fid: &str, task_id: &str) -> String {
    let dir = agent
        .work_dir
        .path()
        .join("sandboxes")
        .join(fid)
        .join(task_id);
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for run in rd.flatten() {
            out.push_str(&std::fs::read_to_string(run.path().join("stdout")).unwrap_or_default());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_runs_to_finished_with_stdout_in_sandbox() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let agent = AgentProc::start(
        &master.addr,
        "cpus:2;mem:1024;disk:1000;ports:[31000-31010]",
        &[],
    )?;
    let mut fw = TestFramework::start(&master.addr, FrameworkOpts::default()).await?;
    let need = TaskResources {
        ports: 2,
        ..TaskResources::new(0.5, 64.0)
    };
    fw.launch_with(
        "hello",
        "echo hello; echo \"port=$PORT0,$PORT1 ports=$PORTS sandbox=$MESOS_SANDBOX\"; sleep 1",
        need,
    )
    .await?;
    fw.wait_state("hello", TaskState::TaskRunning, T).await?;
    let done = fw.wait_terminal("hello", T).await?;
    assert_eq!(done.state, TaskState::TaskFinished as i32, "{done:?}");
    assert_eq!(done.exit_code, Some(0));
    let states: Vec<String> = fw
        .summary()
        .into_iter()
        .filter(|(t, _)| t == "hello")
        .map(|(_, s)| s)
        .collect();
    assert_eq!(states, ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]);
    let out = read_stdout(&agent, &fw.id, "hello");
    assert!(out.starts_with("hello\n"), "stdout was {out:?}");
    assert!(
        out.contains("sandbox=/tmp/"),
        "MESOS_SANDBOX missing: {out:?}"
    );
    assert!(
        out.contains("port=31000,31001 ports=31000,31001 "),
        "PORT0/PORT1/PORTS wrong: {out:?}"
    );
    // The master's state shows the completed task and free resources again.
    let state = eventually(T, "task completed in /master/state", || async {
        let s = master.state().await.ok()?;
        let fw0 = s["frameworks"].as_array()?.first()?.clone();
        let done = fw0["completed_tasks"]
            .as_array()?
            .iter()
            .any(|t| t["id"] == "hello" && t["state"] == "TASK_FINISHED");
        (done && s["slaves"][0]["used_resources"]["cpus"] == 0.0).then_some(s)
    })
    .await?;
    assert_eq!(state["slaves"][0]["resources"]["cpus"], 2.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_task_reports_exit_status() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let _agent = AgentProc::start(&master.addr, "cpus:2;mem:1024", &[])?;
    let mut fw = TestFramework::start(&master.addr, FrameworkOpts::default()).await?;
    fw.launch("exit3", "exit 3", 0.1, 32.0).await?;
    let st = fw.wait_terminal("exit3", T).await?;
    assert_eq!(st.state, TaskState::TaskFailed as i32, "{st:?}");
    assert_eq!(st.exit_code, Some(3));
    assert!(st.message.contains("status 3"), "{}", st.message);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_killed_by_the_cgroup_limit() -> Result<()> {
    init_logs();
    if !can_use_cgroups() {
        eprintln!("skipping: needs root and cgroups");
        return Ok(());
    }
    let master = MasterProc::start(&[])?;
    let agent = AgentProc::start(&master.addr, "cpus:2;mem:1024", &["--isolation", "cgroups"])?;
    let mut fw = TestFramework::start(&master.addr, FrameworkOpts::default()).await?;
    let hog = "python3 -c 'b = bytearray(200 * 1024 * 1024); import time; time.sleep(30)'";
    fw.launch("hog", hog, 0.5, 64.0).await?;
    let st = fw.wait_terminal("hog", T).await?;
    assert_eq!(st.state, TaskState::TaskFailed as i32, "{st:?}");
    assert_eq!(
        st.reason,
        v1::StatusReason::ReasonContainerLimitationMemory as i32,
        "{st:?}"
    );
    assert!(
        st.message.contains("Memory limit exceeded"),
        "{}",
        st.message
    );
    assert!(
        agent.cgroup_dirs().is_empty(),
        "cgroups left: {:?}",
        agent.cgroup_dirs()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_task_killed_within_grace() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let agent = AgentProc::start(&master.addr, "cpus:2;mem:1024", &[])?;
    let mut fw = TestFramework::start(&master.addr, FrameworkOpts::default()).await?;
    // The task ignores SIGTERM, so only the SIGKILL after the grace ends it.
    let offer = fw
        .launch("sleeper", "trap '' TERM; sleep 1000", 0.1, 32.0)
        .await?;
    fw.wait_state("sleeper", TaskState::TaskRunning, T).await?;
    let pids = eventually(T, "task processes", || async {
        let p = processes_under(agent.work_dir.path(), "sleep 1000");
        (!p.is_empty()).then_some(p)
    })
    .await?;
    let grace = 1.0;
    let start = Instant::now();
    fw.driver
        .kill("sleeper", &offer.agent_id, Some(grace))
        .await?;
    let st = fw.wait_terminal("sleeper", T).await?;
    let took = start.elapsed();
    assert_eq!(st.state, TaskState::TaskKilled as i32, "{st:?}");
    assert!(
        took < Duration::from_secs_f64(grace + 2.0),
        "kill took {took:?}"
    );
    assert!(
        took >= Duration::from_secs_f64(grace * 0.9),
        "SIGTERM was not given its grace: {took:?}"
    );
    assert!(fw
        .summary()
        .iter()
        .any(|(t, s)| t == "sleeper" && s == "TASK_KILLING"));
    for pid in pids {
        assert!(!pid_alive(pid), "process {pid} survived the kill");
    }
    Ok(())
}

/// Two frameworks in roles of weight 1 and 3 that each take 0.1 cpu per offer
/// converge to ~1:3 of the agent's cpus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_roles_converge_to_their_weights() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&["--weights", "light=1,heavy=3"])?;
    let _agent = AgentProc::start(&master.addr, "cpus:4;mem:4096", &["--isolation", "posix"])?;
    let mut light = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            name: "light".into(),
            role: "light".into(),
            ..Default::default()
        },
    )
    .await?;
    let mut heavy = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            name: "heavy".into(),
            role: "heavy".into(),
            ..Default::default()
        },
    )
    .await?;
    let per_task = TaskResources::new(0.1, 32.0);
    let mut counts = [0usize; 2];
    let deadline = Instant::now() + Duration::from_secs(60);
    // Each offer: launch one small long-running task, decline the rest with
    // no filter, until the agent is full.
    while counts[0] + counts[1] < 36 && Instant::now() < deadline {
        for (i, fw) in [&mut light, &mut heavy].into_iter().enumerate() {
            let Ok(offers) = fw.next_offers(Duration::from_millis(300)).await else {
                continue;
            };
            for o in offers {
                let mut space = OfferSpace::new(&o);
                if let Some(res) = space.try_fit(&per_task) {
                    let id = format!("{}-{}", o.role, counts[i]);
                    let t = task_info(&id, &id, &o.agent_id, "sleep 600", &res);
                    fw.driver
                        .launch(
                            vec![o.id.clone()],
                            vec![t],
                            Some(v1::Filters {
                                refuse_seconds: Some(0.0),
                            }),
                        )
                        .await?;
                    counts[i] += 1;
                } else {
                    fw.driver.decline(vec![o.id.clone()], Some(0.0)).await?;
                }
            }
        }
    }
    let (l, h) = (counts[0] as f64, counts[1] as f64);
    assert!(l + h >= 36.0, "only {l}+{h} tasks launched");
    let ratio = h / l.max(1.0);
    assert!(
        (2.2..=4.0).contains(&ratio),
        "heavy:light = {h}:{l} = {ratio:.2}, expected ~3"
    );
    light.driver.teardown().await.ok();
    heavy.driver.teardown().await.ok();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_offer_is_not_reoffered_within_refuse_seconds() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let _agent = AgentProc::start(&master.addr, "cpus:1;mem:512", &["--isolation", "posix"])?;
    let mut fw = TestFramework::start(&master.addr, FrameworkOpts::default()).await?;
    let offers = fw.next_offers(T).await?;
    let declined_at = Instant::now();
    fw.driver
        .decline(offers.iter().map(|o| o.id.clone()).collect(), Some(3.0))
        .await?;
    let again = fw.next_offers(Duration::from_secs(15)).await?;
    let gap = declined_at.elapsed();
    assert!(!again.is_empty());
    assert!(
        gap >= Duration::from_secs_f64(2.9),
        "re-offered after {gap:?}, refuse_seconds was 3"
    );
    // Revive clears the filter at once.
    fw.driver
        .decline(again.iter().map(|o| o.id.clone()).collect(), Some(60.0))
        .await?;
    fw.driver.revive(vec![]).await?;
    let revived_at = Instant::now();
    fw.next_offers(Duration::from_secs(5)).await?;
    assert!(revived_at.elapsed() < Duration::from_secs(3));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_update_is_resent_until_acknowledged() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let _agent = AgentProc::start(
        &master.addr,
        "cpus:1;mem:512",
        &[
            "--isolation",
            "posix",
            "--status-update-retry-interval",
            "500ms",
        ],
    )?;
    let mut fw = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            auto_ack: false,
            ..Default::default()
        },
    )
    .await?;
    fw.launch("unacked", "sleep 600", 0.1, 32.0).await?;
    // TASK_STARTING is the head of the stream: without an ack it comes back.
    let first = fw.wait_state("unacked", TaskState::TaskStarting, T).await?;
    fw.wait_event(
        Duration::from_secs(5),
        |e| matches!(e, Ev::Update(s) if s.task_id == "unacked"),
    )
    .await?;
    let resent: Vec<_> = fw.updates.iter().filter(|s| s.uuid == first.uuid).collect();
    assert!(
        resent.len() >= 2,
        "STARTING was not re-sent: {:?}",
        fw.summary()
    );
    // RUNNING is queued behind it and must not have been sent yet.
    assert!(!fw.summary().iter().any(|(_, s)| s == "TASK_RUNNING"));
    fw.driver.acknowledge(&first).await?;
    let running = fw.wait_state("unacked", TaskState::TaskRunning, T).await?;
    fw.driver.acknowledge(&running).await?;
    // Once acknowledged, nothing is re-sent for a few retry intervals.
    let seen = fw.updates.len();
    let extra = fw
        .wait_event(
            Duration::from_secs(2),
            |e| matches!(e, Ev::Update(s) if s.task_id == "unacked"),
        )
        .await;
    assert!(
        extra.is_err(),
        "an acknowledged update was re-sent: {:?}",
        &fw.summary()[seen..]
    );
    let starting_count = fw.updates.iter().filter(|s| s.uuid == first.uuid).count();
    assert_eq!(
        fw.updates.iter().filter(|s| s.uuid == running.uuid).count(),
        1
    );
    assert!(starting_count >= 2);
    fw.driver.teardown().await.ok();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_resources_is_a_startup_error_naming_the_part() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(mezzo_bin())
        .args(["agent", "--master", "127.0.0.1:1", "--work-dir"])
        .arg(dir.path())
        .args(["--resources", "cpus:2;mem:lots;ports:[31000-31100]"])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mem:lots"), "stderr: {err}");
    assert!(err.contains("--resources"), "stderr: {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_over_offered_resources_and_stale_offers_are_refused() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let _agent = AgentProc::start(&master.addr, "cpus:1;mem:512", &["--isolation", "posix"])?;
    let mut fw = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            capabilities: vec!["PARTITION_AWARE".into()],
            ..Default::default()
        },
    )
    .await?;
    let offer = fw.next_offers(T).await?.remove(0);
    let res = mezzo_proto::Resources::parse("cpus:4;mem:128")?;
    let t = task_info("greedy", "greedy", &offer.agent_id, "true", &res);
    fw.driver
        .launch(
            vec![offer.id.clone()],
            vec![t],
            Some(v1::Filters {
                refuse_seconds: Some(0.0),
            }),
        )
        .await?;
    let st = fw.wait_terminal("greedy", T).await?;
    assert_eq!(st.state, TaskState::TaskError as i32, "{st:?}");
    assert_eq!(st.reason, v1::StatusReason::ReasonTaskInvalid as i32);
    assert!(st.message.contains("more resources"), "{}", st.message);
    assert!(st.message.contains("cpus"), "{}", st.message);
    // The offer was consumed: using it again is a stale offer.
    let small = mezzo_proto::Resources::parse("cpus:0.1;mem:32")?;
    let t = task_info("late", "late", &offer.agent_id, "true", &small);
    fw.driver
        .launch(vec![offer.id.clone()], vec![t], None)
        .await?;
    let st = fw.wait_terminal("late", T).await?;
    assert_eq!(st.state, TaskState::TaskDropped as i32, "{st:?}");
    assert!(st.message.contains("no longer valid"), "{}", st.message);
    // Bad task definitions are rejected with the field named.
    let offer = fw.next_offers(T).await?.remove(0);
    let mut t = task_info("", "noid", &offer.agent_id, "true", &small);
    t.task_id = String::new();
    fw.driver
        .launch(vec![offer.id.clone()], vec![t], None)
        .await?;
    let st = fw
        .wait_event(T, |e| matches!(e, Ev::Update(s) if s.state == TaskState::TaskError as i32 && s.task_id.is_empty()))
        .await?;
    if let Ev::Update(s) = st {
        assert!(s.message.contains("Task ID"), "{}", s.message);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_are_rescinded_after_offer_timeout() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&["--offer-timeout", "1s"])?;
    let _agent = AgentProc::start(&master.addr, "cpus:1;mem:512", &["--isolation", "posix"])?;
    let mut fw = TestFramework::start(&master.addr, FrameworkOpts::default()).await?;
    let offer = fw.next_offers(T).await?.remove(0);
    let ev = fw
        .wait_event(Duration::from_secs(10), |e| matches!(e, Ev::Rescinded(_)))
        .await?;
    match ev {
        Ev::Rescinded(id) => assert_eq!(id, offer.id),
        _ => bail!("unexpected"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_agent_becomes_unreachable_and_its_tasks_lost() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[
        "--agent-ping-timeout",
        "200ms",
        "--max-agent-ping-timeouts",
        "3",
    ])?;
    let mut agent = AgentProc::start(&master.addr, "cpus:1;mem:512", &["--isolation", "posix"])?;
    let mut fw = TestFramework::start(&master.addr, FrameworkOpts::default()).await?;
    fw.launch("orphan", "sleep 600", 0.1, 32.0).await?;
    fw.wait_state("orphan", TaskState::TaskRunning, T).await?;
    // SIGSTOP keeps the TCP connection open but silences the agent.
    let pid = agent.proc.as_ref().map(|p| p.pid()).unwrap_or(0);
    // SAFETY: plain syscall on our child.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let st = fw.wait_terminal("orphan", Duration::from_secs(10)).await;
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    let st = st?;
    assert_eq!(st.state, TaskState::TaskLost as i32, "{st:?}");
    assert_eq!(st.reason, v1::StatusReason::ReasonAgentRemoved as i32);
    let s = master.state().await?;
    assert_eq!(s["unreachable_slaves"], 1, "{s}");
    agent.kill();
    Ok(())
}

/// The documented example framework launches N tasks that all finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_framework_launches_tasks_that_finish() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let _agent = AgentProc::start(&master.addr, "cpus:2;mem:2048", &["--isolation", "posix"])?;
    let out = tokio::process::Command::new(examples_dir().join("launch"))
        .args([
            "--master",
            &master.addr,
            "--tasks",
            "20",
            "--cmd",
            "echo hi",
            "--cpus",
            "0.1",
            "--mem",
            "32",
        ])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "example failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("launched 20 tasks: 20 TASK_FINISHED"),
        "{stdout}"
    );
    Ok(())
}
