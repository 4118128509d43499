//! Fault tests: an agent killed with SIGKILL and restarted keeps its tasks;
//! frameworks fail over within their failover_timeout, or lose their tasks.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use mezzo_proto::v1::{self, TaskState};
use mezzo_sdk::matching::{task_info, OfferSpace, TaskResources};
use mezzo_tests::*;

const T: Duration = Duration::from_secs(30);

/// Pids of `needle` processes whose cwd is under the agent's work dir.
fn task_pids(agent: &AgentProc, needle: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd =
            String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default())
                .replace('\0', " ");
        let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
        if cwd.starts_with(agent.work_dir.path()) && cmd.trim() == needle && pid_alive(pid) {
            out.insert(pid);
        }
    }
    out
}

/// Launches `n` long tasks `<prefix>-<i>` into one or more offers.
async fn launch_n(fw: &mut TestFramework, prefix: &str, n: usize, cmd: &str) -> Result<()> {
    let mut launched = 0;
    while launched < n {
        for o in fw.next_offers(T).await? {
            let mut space = OfferSpace::new(&o);
            let mut tasks = Vec::new();
            while launched + tasks.len() < n {
                let Some(res) = space.try_fit(&TaskResources::new(0.1, 32.0)) else {
                    break;
                };
                let id = format!("{prefix}-{}", launched + tasks.len());
                tasks.push(task_info(&id, &id, &o.agent_id, cmd, &res));
            }
            launched += tasks.len();
            fw.driver
                .launch(
                    vec![o.id.clone()],
                    tasks,
                    Some(v1::Filters {
                        refuse_seconds: Some(0.0),
                    }),
                )
                .await?;
        }
    }
    for i in 0..n {
        fw.wait_state(&format!("{prefix}-{i}"), TaskState::TaskRunning, T)
            .await?;
    }
    Ok(())
}

async fn running_tasks_in_state(master: &MasterProc) -> Option<Vec<String>> {
    let s = master.state().await.ok()?;
    let mut ids: Vec<String> = s["frameworks"]
        .as_array()?
        .iter()
        .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    ids.sort();
    Some(ids)
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
    launch_n(&mut fw, "svc", 5, "sleep 600").await?;
    let before = eventually(T, "5 task processes", || async {
        let p = task_pids(&agent, "sleep 600");
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
        task_pids(&agent, "sleep 600"),
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
    launch_n(&mut fw, "doomed", 1, "sleep 600").await?;
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
    launch_n(&mut fw, "keep", 2, "sleep 600").await?;
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
    assert_eq!(task_pids(&agent, "sleep 600").len(), 2);
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
    launch_n(&mut brief, "gone", 1, "sleep 601").await?;
    let brief_id = brief.id.clone();
    drop(brief);
    eventually(T, "framework removed and its task killed", || async {
        let s = master.state().await.ok()?;
        let removed = s["completed_frameworks"]
            .as_array()?
            .iter()
            .any(|f| f["id"] == brief_id.as_str());
        (removed && task_pids(&agent, "sleep 601").is_empty()).then_some(())
    })
    .await?;
    // The patient framework's tasks are untouched.
    assert_eq!(task_pids(&agent, "sleep 600").len(), 2);
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
