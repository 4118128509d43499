//! Fault tests: an agent killed with SIGKILL and restarted keeps its tasks;
//! frameworks fail over within their failover_timeout, or lose their tasks.

use std::time::Duration;

use anyhow::Result;
use mezzo_proto::v1::{self, TaskState};
use mezzo_tests::*;

const T: Duration = Duration::from_secs(30);

async fn running_tasks_in_state(master: &MasterProc) -> Option<Vec<String>> {
    let s = master.state().await.ok()?;
    Some(task_ids_in_state(&s, "TASK_RUNNING"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_and_restarted_keeps_its_running_tasks() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let mut agent = AgentProc::start(&master.addr, "cpus:2;mem:1024", &[])?;
    let mut fw = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            failover_timeout: 60.0,
            ..Default::default()
        },
    )
    .await?;
    fw.launch_many("svc", 5, "sleep 600").await?;
    let before = eventually(T, "5 task processes", || async {
        let p = processes_under(agent.work_dir.path(), "sleep 600");
        (p.len() == 5).then_some(p)
    })
    .await?;

    agent.kill();
    agent.restart()?;

    // Re-registered with the same id, all five still RUNNING, no duplicates.
    let ids = eventually(T, "agent re-registered with its tasks", || async {
        let s = master.state().await.ok()?;
        let slaves = s["slaves"].as_array()?;
        let reregistered = slaves.len() == 1
            && slaves[0]["active"] == true
            && !slaves[0]["reregistered_time"].is_null();
        let ids = running_tasks_in_state(&master).await?;
        (reregistered && ids.len() == 5).then_some(ids)
    })
    .await?;
    assert_eq!(ids, ["svc-0", "svc-1", "svc-2", "svc-3", "svc-4"]);
    assert_eq!(
        processes_under(agent.work_dir.path(), "sleep 600"),
        before,
        "task processes changed across the agent restart"
    );
    for pid in &before {
        assert!(pid_alive(*pid));
    }
    // The recovered executors are reachable again: a kill works.
    let agent_id = fw
        .updates
        .last()
        .map(|s| s.agent_id.clone())
        .unwrap_or_default();
    fw.driver.kill("svc-0", &agent_id, Some(1.0)).await?;
    let st = fw.wait_terminal("svc-0", T).await?;
    assert_eq!(st.state, TaskState::TaskKilled as i32, "{st:?}");
    let s = master.state().await?;
    assert_eq!(
        s["slaves"].as_array().map(Vec::len),
        Some(1),
        "agent registered twice: {s}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_that_died_while_agent_was_down_fails_its_task() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let mut agent = AgentProc::start(&master.addr, "cpus:2;mem:1024", &["--isolation", "posix"])?;
    let mut fw = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            failover_timeout: 60.0,
            ..Default::default()
        },
    )
    .await?;
    fw.launch_many("doomed", 1, "sleep 600").await?;
    agent.kill();
    // Kill the executor and its task while the agent is down.
    kill_processes_under(agent.work_dir.path());
    agent.restart()?;
    let st = fw.wait_terminal("doomed-0", T).await?;
    assert_eq!(st.state, TaskState::TaskFailed as i32, "{st:?}");
    assert_eq!(st.reason, v1::StatusReason::ReasonExecutorTerminated as i32);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_failover_within_timeout_keeps_tasks_and_after_it_loses_them() -> Result<()> {
    init_logs();
    // Offers the idle frameworks hold are rescinded quickly so the next one gets them.
    let master = MasterProc::start(&["--offer-timeout", "1s"])?;
    let agent = AgentProc::start(&master.addr, "cpus:2;mem:1024", &["--isolation", "posix"])?;

    // Within the timeout: same framework id, same tasks.
    let mut fw = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            name: "patient".into(),
            failover_timeout: 30.0,
            ..Default::default()
        },
    )
    .await?;
    fw.launch_many("keep", 2, "sleep 600").await?;
    let id = fw.id.clone();
    drop(fw);
    let mut again = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            name: "patient".into(),
            failover_timeout: 30.0,
            id: id.clone(),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(again.id, id);
    again.driver.reconcile(vec![]).await?;
    again
        .wait_state("keep-0", TaskState::TaskRunning, T)
        .await?;
    again
        .wait_state("keep-1", TaskState::TaskRunning, T)
        .await?;
    assert_eq!(processes_under(agent.work_dir.path(), "sleep 600").len(), 2);
    again.driver.suppress(vec![]).await?;

    // Past the timeout: the tasks are killed and the framework removed.
    let mut brief = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            name: "brief".into(),
            failover_timeout: 1.0,
            ..Default::default()
        },
    )
    .await?;
    brief.launch_many("gone", 1, "sleep 601").await?;
    let brief_id = brief.id.clone();
    drop(brief);
    eventually(T, "framework removed and its task killed", || async {
        let s = master.state().await.ok()?;
        let removed = s["completed_frameworks"]
            .as_array()?
            .iter()
            .any(|f| f["id"] == brief_id.as_str());
        (removed && processes_under(agent.work_dir.path(), "sleep 601").is_empty()).then_some(())
    })
    .await?;
    // The patient framework's tasks are untouched.
    assert_eq!(processes_under(agent.work_dir.path(), "sleep 600").len(), 2);
    // A removed framework cannot come back with its id.
    let back = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            name: "brief".into(),
            id: brief_id,
            ..Default::default()
        },
    )
    .await;
    assert!(back.is_err(), "a removed framework re-subscribed");
    again.driver.teardown().await.ok();
    Ok(())
}

/// An operator can tear down a framework that is disconnected but still
/// within its failover timeout: its tasks are killed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_tears_down_a_disconnected_framework() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let agent = AgentProc::start(&master.addr, "cpus:2;mem:1024", &["--isolation", "posix"])?;
    let mut fw = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            name: "abandoned".into(),
            failover_timeout: 3600.0,
            ..Default::default()
        },
    )
    .await?;
    fw.launch_many("orphan", 2, "sleep 602").await?;
    let id = fw.id.clone();
    drop(fw);
    eventually(T, "the framework disconnected", || async {
        let s = master.state().await.ok()?;
        s["frameworks"]
            .as_array()?
            .iter()
            .any(|f| f["id"] == id.as_str() && f["connected"] == false)
            .then_some(())
    })
    .await?;
    let r = reqwest::Client::new()
        .post(format!("{}/master/teardown", master.url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("frameworkId={id}"))
        .send()
        .await?;
    assert!(r.status().is_success(), "teardown answered {}", r.status());
    eventually(T, "its tasks killed", || async {
        processes_under(agent.work_dir.path(), "sleep 602")
            .is_empty()
            .then_some(())
    })
    .await?;
    let s = master.state().await?;
    assert!(s["completed_frameworks"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f["id"] == id.as_str())));
    Ok(())
}
