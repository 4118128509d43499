//! `mezzo local` as a user runs it: the URLs in one block, Ctrl-C (SIGINT)
//! stops it with exit 0 and says how many tasks keep running, the next run
//! recovers them without relaunching, and `--clean` stops every task and
//! removes the work dir.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use mezzo_tests::*;

const T: Duration = Duration::from_secs(60);
const CMD: &str = "sleep 1013";

/// Kills whatever the test left under its directory.
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        kill_processes_under(self.0);
    }
}

fn args(work: &Path, clean: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "local",
        "--port",
        "0",
        "--marathon-port",
        "0",
        "--batch-port",
        "0",
        "--agent-port",
        "0",
        "--isolation",
        "posix",
        "--work-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(work.display().to_string());
    if clean {
        a.push("--clean".into());
    }
    a
}

async fn running(master: &str) -> Option<u64> {
    let m = get_json(&format!("{master}/metrics/snapshot")).await.ok()?;
    m.get("master/tasks_running")?.as_u64()
}

async fn app_task_ids(marathon: &str) -> Option<BTreeSet<String>> {
    let v = get_json(&format!("{marathon}/v2/apps/keep/tasks"))
        .await
        .ok()?;
    Some(
        v.get("tasks")?
            .as_array()?
            .iter()
            .filter_map(|t| t.get("id")?.as_str().map(str::to_string))
            .collect(),
    )
}

/// Starts `mezzo local`; returns it and its master and Marathon URLs, after
/// checking the announced block.
fn start(work: &Path, logs: &Path, clean: bool) -> Result<(Proc, String, String)> {
    let (p, lines) = spawn_mezzo_lines(
        &args(work, clean),
        &[
            "master: ",
            "dashboard: ",
            "agent: ",
            "marathon: ",
            "batch: ",
            "logs: ",
        ],
        logs,
    )?;
    let (master, dashboard) = (lines[0].clone(), lines[1].clone());
    if dashboard != format!("{master}/") || !lines[4].ends_with("/v1/jobs") {
        bail!("unexpected URL block: {lines:?}");
    }
    Ok((p, master, lines[3].clone()))
}

async fn interrupt(p: &mut Proc) -> Result<String> {
    p.signal(libc::SIGINT);
    let status = p.wait_exit(T)?;
    if !status.success() {
        bail!("mezzo local exited with {status}");
    }
    Ok(std::fs::read_to_string(&p.log)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_keeps_tasks_for_the_next_run_and_clean_removes_them() -> Result<()> {
    init_logs();
    let tmp = tempfile::tempdir()?;
    let _cleanup = Cleanup(tmp.path());
    let work = tmp.path().join("local");
    let (mut p, master, marathon) = start(&work, tmp.path(), false)?;
    let client = reqwest::Client::new();
    let app =
        serde_json::json!({"id": "/keep", "cmd": CMD, "cpus": 0.01, "mem": 8, "instances": 1});
    let r = client
        .post(format!("{marathon}/v2/apps"))
        .json(&app)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await?);
    eventually(T, "the task running", || async {
        (running(&master).await == Some(1)).then_some(())
    })
    .await?;
    let ids = eventually(T, "Marathon's task", || async {
        app_task_ids(&marathon).await.filter(|t| t.len() == 1)
    })
    .await?;
    let pids = processes_under(&work, CMD);
    assert_eq!(pids.len(), 1, "one task process");

    let log = interrupt(&mut p).await?;
    assert!(log.contains("1 task(s) keep running"), "{log}");
    assert_eq!(
        processes_under(&work, CMD),
        pids,
        "the task outlives mezzo local"
    );

    // The next run recovers the same task: same id, same process.
    let (mut p, master, marathon) = start(&work, tmp.path(), true)?;
    eventually(T, "the task recovered", || async {
        (running(&master).await == Some(1)).then_some(())
    })
    .await?;
    assert_eq!(app_task_ids(&marathon).await, Some(ids), "no relaunch");
    assert_eq!(processes_under(&work, CMD), pids);

    // --clean: every task stopped, the work dir gone.
    let log = interrupt(&mut p).await?;
    assert!(log.contains("stopping 1 task(s)"), "{log}");
    eventually(T, "no task process left", || async {
        processes_under(tmp.path(), CMD).is_empty().then_some(())
    })
    .await?;
    assert!(!work.exists(), "--clean removes the work dir");
    Ok(())
}
