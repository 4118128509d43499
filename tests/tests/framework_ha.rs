//! High availability of the frameworks with ZooKeeper (`--zk`): a private ZooKeeper
//! server (tests/src/zk.rs), a real master and agent, and the Marathon-like and batch
//! frameworks in-process with their state in ZooKeeper.
//!
//! * Marathon's state in ZooKeeper survives a restart of the instance (apps, tasks,
//!   framework id), and the SDK's ZooKeeper store refuses values over 1 MB cleanly.
//! * Two Marathon instances: one leads, the other names it on `/v2/leader` and
//!   redirects the API to it; when the leader goes, the other takes over with the same
//!   framework id and the tasks keep running (none killed, none relaunched).
//! * The same with real `mezzo marathon` processes and the leader killed with SIGKILL:
//!   the standby takes over once the leader's session expires.
//! * A leader whose ZooKeeper is stopped stops acting (a task that dies meanwhile is not
//!   replaced) and, once ZooKeeper is back, reloads, reconciles and replaces only the
//!   dead task.
//! * The batch framework's job and run state in ZooKeeper survives a restart.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use mezzo_marathon::{MarathonConfig, RunningMarathon};
use mezzo_sdk::store::{Store, StoreError, ZkUrl, ZooKeeperStore};
use mezzo_tests::zk::ZkServer;
use mezzo_tests::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(45);

static PORTS: AtomicU64 = AtomicU64::new(0);

/// ZooKeeper, a master and an agent with its own port range.
struct Env {
    zk: ZkServer,
    master: MasterProc,
    agent: AgentProc,
    http: reqwest::Client,
    no_redirect: reqwest::Client,
}

impl Env {
    fn start() -> Result<Env> {
        init_logs();
        let zk = ZkServer::start()?;
        let master = MasterProc::start(&[])?;
        let n = PORTS.fetch_add(1, Ordering::SeqCst) + (std::process::id() as u64 % 20) * 10;
        let base = 40000 + (n % 100) * 100;
        let resources = format!("cpus:8;mem:4096;disk:1000;ports:[{}-{}]", base, base + 99);
        let agent = AgentProc::start(&master.addr, &resources, &["--isolation", "posix"])?;
        Ok(Env {
            zk,
            master,
            agent,
            http: reqwest::Client::new(),
            no_redirect: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        })
    }

    fn zk_url(&self) -> Result<ZkUrl> {
        Ok(ZkUrl::parse(&self.zk.url("/mezzo"))?)
    }

    async fn marathon(&self) -> Result<RunningMarathon> {
        // A fresh state dir every time: nothing may come from local files.
        let dir = tempfile::tempdir()?;
        let mut config =
            MarathonConfig::new(self.master.addr.clone(), "127.0.0.1:0".parse()?, dir.path());
        config.zk = Some(self.zk_url()?);
        config.zk_session_timeout = Duration::from_secs(4);
        Ok(mezzo_marathon::start(config).await?)
    }

    async fn call(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut req = self.http.request(method, format!("{base}{path}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn get(&self, base: &str, path: &str) -> Result<Value> {
        let (s, v) = self.call(base, Method::GET, path, None).await?;
        ensure!(s.is_success(), "GET {path}: {s} {v}");
        Ok(v)
    }

    /// Waits until `/v2/apps{id}` shows `n` running tasks and no deployment.
    async fn wait_app(&self, base: &str, id: &str, n: u64) -> Result<Value> {
        eventually(T, &format!("{id}: {n} tasks running"), || async {
            let app = self.get(base, &format!("/v2/apps{id}")).await.ok()?["app"].clone();
            let ok = app["tasksRunning"] == n
                && app["tasks"].as_array()?.len() as u64 == n
                && app["deployments"].as_array()?.is_empty();
            ok.then_some(app)
        })
        .await
    }

    /// Every task the master knows (active and completed): id → state.
    async fn master_tasks(&self) -> Result<Vec<(String, String)>> {
        let s = self.master.state().await?;
        let mut out = Vec::new();
        for fw in s["frameworks"].as_array().cloned().unwrap_or_default() {
            for key in ["tasks", "completed_tasks"] {
                for t in fw[key].as_array().cloned().unwrap_or_default() {
                    out.push((
                        t["id"].as_str().unwrap_or_default().to_string(),
                        t["state"].as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        kill_processes_under(self.agent.work_dir.path());
    }
}

fn task_ids(app: &Value) -> BTreeSet<String> {
    app["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_leader(m: &RunningMarathon) -> Result<()> {
    eventually(T, "instance leads", || async {
        m.is_leader().then_some(())
    })
    .await
}

fn sleeper(id: &str, instances: u64, pids: Option<&Path>) -> Value {
    let cmd = match pids {
        Some(dir) => format!(
            "echo $$ > {}/$MESOS_TASK_ID; exec sleep 1000",
            dir.display()
        ),
        None => "sleep 1000".to_string(),
    };
    json!({"id": id, "cmd": cmd, "instances": instances, "cpus": 0.1, "mem": 32, "backoffSeconds": 0.5})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn marathon_state_in_zookeeper_survives_a_restart() -> Result<()> {
    let env = Env::start()?;
    let m = env.marathon().await?;
    wait_leader(&m).await?;
    let url = m.url();
    let (status, v) = env
        .call(
            &url,
            Method::POST,
            "/v2/apps",
            Some(sleeper("/prod/keep", 2, None)),
        )
        .await?;
    ensure!(status == StatusCode::CREATED, "{status} {v}");
    let before = task_ids(&env.wait_app(&url, "/prod/keep", 2).await?);
    let framework_id = env.get(&url, "/v2/info").await?["frameworkId"].clone();
    ensure!(framework_id.is_string(), "{framework_id}");

    // The state is in ZooKeeper under <path>/frameworks/marathon/state.
    let store =
        ZooKeeperStore::for_framework(&env.zk_url()?, "marathon", Duration::from_secs(5)).await?;
    assert_eq!(store.list("apps").await?, ["_2fprod_2fkeep"]);
    assert_eq!(store.list("tasks").await?.len(), 2);
    let fid = store
        .get("framework-id")
        .await?
        .context("framework id stored")?;
    assert_eq!(
        Some(String::from_utf8_lossy(&fid.data).as_ref()),
        framework_id.as_str()
    );
    // Over 1 MB is an error of the store, not a crash or a dropped session.
    let big = vec![b'x'; 1_100_000];
    assert!(matches!(
        store.put("big", &big, None).await,
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(store.put("small", b"1", Some(0)).await?, 1);
    assert!(matches!(
        store.put("small", b"2", Some(0)).await,
        Err(StoreError::Conflict { found: 1, .. })
    ));
    store.delete("small").await?;

    m.shutdown().await;
    let m = env.marathon().await?;
    wait_leader(&m).await?;
    let url = m.url();
    let app = env.wait_app(&url, "/prod/keep", 2).await?;
    assert_eq!(task_ids(&app), before, "same tasks after the restart");
    eventually(T, "same framework id", || async {
        let info = env.get(&url, "/v2/info").await.ok()?;
        (info["frameworkId"] == framework_id).then_some(())
    })
    .await?;
    // Still acts: scale up keeps the old tasks.
    let (status, v) = env
        .call(
            &url,
            Method::PUT,
            "/v2/apps/prod/keep",
            Some(json!({"instances": 3})),
        )
        .await?;
    ensure!(status == StatusCode::OK, "{status} {v}");
    let after = task_ids(&env.wait_app(&url, "/prod/keep", 3).await?);
    assert!(before.is_subset(&after), "{before:?} vs {after:?}");
    m.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_one_leads_and_the_other_takes_over_without_touching_tasks() -> Result<()> {
    let env = Env::start()?;
    let a = env.marathon().await?;
    wait_leader(&a).await?;
    let b = env.marathon().await?;
    let (a_url, b_url) = (a.url(), b.url());
    let a_addr = a.addr.to_string();

    // B stands by: names A as the leader and redirects the API to it.
    eventually(T, "B names A on /v2/leader", || async {
        let l = env.get(&b_url, "/v2/leader").await.ok()?;
        (l["leader"] == a_addr.as_str()).then_some(())
    })
    .await?;
    assert!(!b.is_leader());
    assert_eq!(
        env.get(&a_url, "/v2/leader").await?["leader"],
        a_addr.as_str()
    );
    let info = env.get(&b_url, "/v2/info").await?;
    assert_eq!(info["elected"], false, "{info}");
    assert_eq!(info["leader"], a_addr.as_str(), "{info}");
    let r = env
        .no_redirect
        .get(format!("{b_url}/v2/apps?embed=apps.tasks"))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        r.headers()["location"].to_str()?,
        format!("{a_url}/v2/apps?embed=apps.tasks")
    );
    // A client that follows redirects works through B, writes included.
    let (status, v) = env
        .call(
            &b_url,
            Method::POST,
            "/v2/apps",
            Some(sleeper("/web", 2, None)),
        )
        .await?;
    ensure!(status == StatusCode::CREATED, "{status} {v}");
    let tasks = task_ids(&env.wait_app(&b_url, "/web", 2).await?);
    let framework_id = env.get(&a_url, "/v2/info").await?["frameworkId"].clone();
    let master_before = env.master_tasks().await?;
    ensure!(
        master_before
            .iter()
            .filter(|(_, s)| s == "TASK_RUNNING")
            .count()
            == 2,
        "{master_before:?}"
    );

    // The leader goes; B takes over with the same framework id and the same tasks.
    a.shutdown().await;
    wait_leader(&b).await?;
    let b_addr = b.addr.to_string();
    assert_eq!(
        env.get(&b_url, "/v2/leader").await?["leader"],
        b_addr.as_str()
    );
    let app = env.wait_app(&b_url, "/web", 2).await?;
    assert_eq!(task_ids(&app), tasks, "same tasks after the failover");
    eventually(T, "B resubscribed with the same framework id", || async {
        let info = env.get(&b_url, "/v2/info").await.ok()?;
        (info["frameworkId"] == framework_id && info["elected"] == true).then_some(())
    })
    .await?;
    let s = env.master.state().await?;
    let frameworks = s["frameworks"].as_array().cloned().unwrap_or_default();
    ensure!(frameworks.len() == 1, "one framework: {s}");
    assert_eq!(frameworks[0]["id"], framework_id);
    // Give reconciliation time to do anything wrong: nothing is killed or relaunched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.master_tasks().await?,
        master_before,
        "tasks touched by the failover"
    );
    assert_eq!(task_ids(&env.wait_app(&b_url, "/web", 2).await?), tasks);
    b.shutdown().await;
    Ok(())
}

/// `mezzo marathon --zk ... --zk-session-timeout 2s` as a process of its own.
fn marathon_process(env: &Env, logs: &Path) -> Result<(Proc, String)> {
    let state = logs.join(format!("state-{}", free_port()?));
    let args: Vec<String> = [
        "marathon",
        "--master",
        &env.master.addr,
        "--http",
        &format!("127.0.0.1:{}", free_port()?),
        "--state-dir",
        &state.display().to_string(),
        "--zk",
        &env.zk.url("/mezzo"),
        "--zk-session-timeout",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    spawn_mezzo(&args, "marathon:", logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_leader_process_is_replaced_by_the_standby_without_touching_tasks() -> Result<()> {
    let env = Env::start()?;
    let logs = tempfile::tempdir()?;
    let (mut a, a_url) = marathon_process(&env, logs.path())?;
    eventually(T, "A leads", || async {
        let info = env.get(&a_url, "/v2/info").await.ok()?;
        (info["elected"] == true).then_some(())
    })
    .await?;
    let (b, b_url) = marathon_process(&env, logs.path())?;
    let a_addr = a_url.trim_start_matches("http://").to_string();
    eventually(T, "B stands by and names A", || async {
        let l = env.get(&b_url, "/v2/leader").await.ok()?;
        (l["leader"] == a_addr.as_str()).then_some(())
    })
    .await?;
    let (status, v) = env
        .call(
            &a_url,
            Method::POST,
            "/v2/apps",
            Some(sleeper("/web", 2, None)),
        )
        .await?;
    ensure!(status == StatusCode::CREATED, "{status} {v}");
    let tasks = task_ids(&env.wait_app(&a_url, "/web", 2).await?);
    let framework_id = env.get(&a_url, "/v2/info").await?["frameworkId"].clone();
    ensure!(framework_id.is_string(), "no framework id yet");
    let master_before = env.master_tasks().await?;
    ensure!(
        master_before
            .iter()
            .filter(|(_, s)| s == "TASK_RUNNING")
            .count()
            == 2,
        "{master_before:?}"
    );

    // kill -9: no withdrawal from the election, no goodbye to the master.
    let killed_at = std::time::Instant::now();
    a.kill();
    eventually(T, "B leads with the same framework id", || async {
        let info = env.get(&b_url, "/v2/info").await.ok()?;
        (info["elected"] == true && info["frameworkId"] == framework_id).then_some(())
    })
    .await?;
    let took = killed_at.elapsed();
    // Not before A's session expired (2 s).
    ensure!(
        took >= Duration::from_millis(1500),
        "B took over after {took:?}"
    );
    let app = env.wait_app(&b_url, "/web", 2).await?;
    assert_eq!(task_ids(&app), tasks, "same tasks after the failover");
    let s = env.master.state().await?;
    let frameworks = s["frameworks"].as_array().cloned().unwrap_or_default();
    ensure!(frameworks.len() == 1, "one framework: {s}");
    assert_eq!(frameworks[0]["id"], framework_id);
    // Give reconciliation time to do anything wrong: nothing is killed or relaunched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.master_tasks().await?,
        master_before,
        "tasks touched by the failover"
    );
    assert_eq!(task_ids(&env.wait_app(&b_url, "/web", 2).await?), tasks);
    drop(b);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_without_zookeeper_stops_acting_and_resumes_without_killing() -> Result<()> {
    let mut env = Env::start()?;
    let pids = tempfile::tempdir()?;
    let m = env.marathon().await?;
    wait_leader(&m).await?;
    let url = m.url();
    let (status, v) = env
        .call(
            &url,
            Method::POST,
            "/v2/apps",
            Some(sleeper("/svc", 2, Some(pids.path()))),
        )
        .await?;
    ensure!(status == StatusCode::CREATED, "{status} {v}");
    let tasks = task_ids(&env.wait_app(&url, "/svc", 2).await?);
    let master_before = env.master_tasks().await?;
    ensure!(master_before.len() == 2, "{master_before:?}");

    env.zk.stop();
    eventually(T, "leadership lost", || async {
        (!m.is_leader()).then_some(())
    })
    .await?;
    // The API no longer acts: no leader to redirect to.
    let (status, _) = env.call(&url, Method::GET, "/v2/apps", None).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = env.call(&url, Method::GET, "/v2/leader", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // One task dies while nobody leads: it must not be replaced (no launches).
    let victim = tasks.iter().next().cloned().context("a task")?;
    let survivor = tasks.iter().nth(1).cloned().context("a second task")?;
    let pid: i32 = std::fs::read_to_string(pids.path().join(&victim))?
        .trim()
        .parse()?;
    // SAFETY: kill(2) on a pid our own task wrote.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    eventually(T, "the master sees the victim end", || async {
        let t = env.master_tasks().await.ok()?;
        t.iter()
            .any(|(id, s)| id == &victim && s != "TASK_RUNNING")
            .then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = env.master_tasks().await?;
    let ids: BTreeSet<&String> = during.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2, "launched while not leading: {during:?}");
    assert!(
        during.contains(&(survivor.clone(), "TASK_RUNNING".into())),
        "{during:?}"
    );

    // ZooKeeper back: the instance leads again, reloads, replaces only the dead task.
    env.zk.restart()?;
    wait_leader(&m).await?;
    // The reloaded state still shows the victim running until the master's update
    // (or reconciliation) arrives: wait for that, then for the replacement.
    eventually(T, "the victim's end is known", || async {
        let app = env.get(&url, "/v2/apps/svc").await.ok()?["app"].clone();
        (!task_ids(&app).contains(&victim)).then_some(())
    })
    .await?;
    let app = env.wait_app(&url, "/svc", 2).await?;
    let now = task_ids(&app);
    assert!(now.contains(&survivor), "healthy task killed: {now:?}");
    assert!(!now.contains(&victim), "{now:?}");
    let after = env.master_tasks().await?;
    assert!(
        after.contains(&(survivor.clone(), "TASK_RUNNING".into())),
        "{after:?}"
    );
    assert_eq!(after.len(), 3, "exactly one replacement: {after:?}");
    m.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_state_in_zookeeper_survives_a_restart() -> Result<()> {
    let env = Env::start()?;
    let files = tempfile::tempdir()?;
    let marker = files.path().join("started");
    let go = files.path().join("go");
    let start = || async {
        let dir = tempfile::tempdir()?;
        let mut config = mezzo_batch::BatchConfig::new(
            env.master.addr.clone(),
            "127.0.0.1:0".parse()?,
            dir.path(),
        );
        config.zk = Some(env.zk_url()?);
        config.tick_interval = Duration::from_millis(100);
        anyhow::Ok(mezzo_batch::start(config).await?)
    };
    let batch = start().await?;
    let url = batch.url();
    let cmd = format!(
        "echo started >> {m}; while [ ! -f {g} ]; do sleep 0.1; done",
        m = marker.display(),
        g = go.display()
    );
    let job = json!({"id": "nightly", "run": {"cmd": cmd, "cpus": 0.1, "mem": 32}});
    let (status, v) = env.call(&url, Method::POST, "/v1/jobs", Some(job)).await?;
    ensure!(status == StatusCode::CREATED, "{status} {v}");
    let (status, run) = env
        .call(&url, Method::POST, "/v1/jobs/nightly/runs", Some(json!({})))
        .await?;
    ensure!(status == StatusCode::CREATED, "{status} {run}");
    let run_id = run["id"].as_str().context("run id")?.to_string();
    let run_path = format!("/v1/jobs/nightly/runs/{run_id}");
    eventually(T, "task running", || async {
        let r = env.get(&url, &run_path).await.ok()?;
        (r["tasks"][0]["status"] == "TASK_RUNNING").then_some(())
    })
    .await?;
    let framework_id = env.get(&url, "/v1/info").await?["frameworkId"].clone();
    let store =
        ZooKeeperStore::for_framework(&env.zk_url()?, "metronome", Duration::from_secs(5)).await?;
    assert_eq!(store.list("jobs").await?, ["nightly"]);
    batch.stop().await;

    // A new instance (fresh local dir) finds job and run in ZooKeeper and finishes it once.
    let batch = start().await?;
    let url = batch.url();
    env.get(&url, "/v1/jobs/nightly").await?;
    std::fs::write(&go, b"")?;
    let done = eventually(T, "run SUCCESS after the restart", || async {
        let r = env.get(&url, &run_path).await.ok()?;
        (r["status"] == "SUCCESS").then_some(r)
    })
    .await?;
    assert_eq!(done["tasks"].as_array().map(Vec::len), Some(1), "{done}");
    assert_eq!(
        env.get(&url, "/v1/info").await?["frameworkId"],
        framework_id
    );
    let started = std::fs::read_to_string(&marker)?;
    if started.lines().count() != 1 {
        bail!("task started more than once: {started:?}");
    }
    let h = env.get(&url, "/v1/jobs/nightly?embed=history").await?;
    assert_eq!(h["history"]["successCount"], 1, "{h}");
    batch.stop().await;
    Ok(())
}
