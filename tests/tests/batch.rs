//! End-to-end tests of the batch framework (`mezzo-batch`): a real master and agent
//! process, the framework started in-process with `mezzo_batch::start`, its `/v1`
//! API driven over HTTP.
//!
//! Cron timing uses an injected [`OffsetClock`]: the test jumps the framework's clock
//! to the next minute boundary instead of waiting for it (cron stays five-field).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use mezzo_batch::chrono;
use mezzo_batch::{BatchConfig, OffsetClock, RunningBatch};
use mezzo_tests::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// A master, one posix agent, and the batch framework.
struct Env {
    master: MasterProc,
    _agent: Option<AgentProc>,
    state: tempfile::TempDir,
    batch: Option<RunningBatch>,
    http: reqwest::Client,
}

async fn start_batch(
    master: &str,
    state: &Path,
    clock: Option<Arc<OffsetClock>>,
) -> Result<RunningBatch> {
    let mut config = BatchConfig::new(master, "127.0.0.1:0".parse()?, state);
    config.tick_interval = Duration::from_millis(100);
    if let Some(clock) = clock {
        config.clock = clock;
    }
    Ok(mezzo_batch::start(config).await?)
}

impl Env {
    async fn start(clock: Option<Arc<OffsetClock>>) -> Result<Env> {
        init_logs();
        let master = MasterProc::start(&[])?;
        let agent = AgentProc::start(
            &master.addr,
            "cpus:2;mem:2048;disk:1000",
            &["--isolation", "posix"],
        )?;
        let state = tempfile::tempdir()?;
        let batch = start_batch(&master.addr, state.path(), clock).await?;
        Ok(Env {
            master,
            _agent: Some(agent),
            state,
            batch: Some(batch),
            http: reqwest::Client::new(),
        })
    }

    fn url(&self, path: &str) -> String {
        let base = self
            .batch
            .as_ref()
            .map(RunningBatch::url)
            .unwrap_or_default();
        format!("{base}{path}")
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let (status, v) = self.send(reqwest::Method::GET, path, None).await?;
        ensure!(status == 200, "GET {path}: {status} {v}");
        Ok(v)
    }

    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn create_job(&self, job: Value) -> Result<()> {
        let (status, v) = self.post("/v1/jobs", &job).await?;
        ensure!(status == 201, "create job: {status} {v}");
        Ok(())
    }

    async fn start_run(&self, job: &str) -> Result<String> {
        let (status, v) = self
            .post(&format!("/v1/jobs/{job}/runs"), &json!({}))
            .await?;
        ensure!(status == 201, "start run: {status} {v}");
        Ok(v["id"].as_str().context("run id")?.to_string())
    }

    /// Polls the run until `pred` holds.
    async fn wait_run(
        &self,
        job: &str,
        run: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let path = format!("/v1/jobs/{job}/runs/{run}");
        match eventually(T, what, || async {
            self.get(&path).await.ok().filter(|v| pred(v))
        })
        .await
        {
            Ok(v) => Ok(v),
            Err(e) => {
                let last = self.get(&path).await.unwrap_or_default();
                bail!("{e}; last state of the run: {last}")
            }
        }
    }
}

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or_default()
}

fn tasks(v: &Value) -> Vec<Value> {
    v["tasks"].as_array().cloned().unwrap_or_default()
}

fn job(id: &str, run: Value) -> Value {
    json!({"id": id, "description": "test job", "labels": {"team": "qa"}, "run": run})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_that_succeeds_updates_run_and_history() -> Result<()> {
    let env = Env::start(None).await?;
    env.create_job(job(
        "hello",
        json!({"cmd": "echo hello from $GREETING", "cpus": 0.1, "mem": 32, "env": {"GREETING": "batch"},
               "placement": {"constraints": [{"attribute": "hostname", "operator": "LIKE", "value": "127\\.0\\.0\\..*"}]}}),
    ))
    .await?;
    let got = env.get("/v1/jobs/hello").await?;
    assert_eq!(got["run"]["mem"], 32.0);
    assert_eq!(got["run"]["restart"]["policy"], "NEVER");
    assert_eq!(got["run"]["maxLaunchDelay"], 3600);
    let run = env.start_run("hello").await?;
    let done = env
        .wait_run("hello", &run, "run SUCCESS", |v| status(v) == "SUCCESS")
        .await?;
    let t = tasks(&done);
    assert_eq!(t.len(), 1, "{done}");
    assert_eq!(t[0]["status"], "TASK_FINISHED");
    assert_eq!(t[0]["exitCode"], 0);
    assert!(done["completedAt"].is_string());
    // Active runs only by default; finished ones with include=finished.
    assert_eq!(env.get("/v1/jobs/hello/runs").await?, json!([]));
    let all = env.get("/v1/jobs/hello/runs?include=finished").await?;
    assert_eq!(all[0]["id"], run.as_str());
    let j = env
        .get("/v1/jobs/hello?embed=history&embed=historySummary")
        .await?;
    let h = &j["history"];
    assert_eq!(h["successCount"], 1, "{j}");
    assert_eq!(h["failureCount"], 0);
    assert!(h["lastSuccessAt"].is_string());
    assert!(h["lastFailureAt"].is_null());
    assert_eq!(h["successfulFinishedRuns"][0]["id"], run.as_str());
    assert_eq!(j["historySummary"]["successCount"], 1);
    let list = env.get("/v1/jobs?embed=activeRuns").await?;
    assert_eq!(list[0]["activeRuns"], json!([]));
    // The master saw exactly one task of this run, finished.
    let state = env.master.state().await?;
    let done_tasks = state["frameworks"][0]["completed_tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(done_tasks.len(), 1, "{state}");
    assert_eq!(done_tasks[0]["state"], "TASK_FINISHED");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_retries_on_failure_until_its_deadline() -> Result<()> {
    let env = Env::start(None).await?;
    env.create_job(job(
        "flaky",
        json!({"cmd": "exit 1", "cpus": 0.1, "mem": 32,
               "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 5}}),
    ))
    .await?;
    let run = env.start_run("flaky").await?;
    let done = env
        .wait_run("flaky", &run, "run FAILED", |v| status(v) == "FAILED")
        .await?;
    let t = tasks(&done);
    assert!(t.len() >= 2, "ON_FAILURE should have retried: {done}");
    for task in &t {
        assert_eq!(task["status"], "TASK_FAILED", "{done}");
        assert_eq!(task["exitCode"], 1, "{done}");
    }
    assert!(
        done["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("activeDeadlineSeconds"),
        "{done}"
    );
    let created = chrono::DateTime::parse_from_str(
        done["createdAt"].as_str().unwrap_or_default(),
        "%Y-%m-%dT%H:%M:%S%.3f%z",
    )?;
    let completed = chrono::DateTime::parse_from_str(
        done["completedAt"].as_str().unwrap_or_default(),
        "%Y-%m-%dT%H:%M:%S%.3f%z",
    )?;
    let took = completed - created;
    assert!(
        took >= chrono::Duration::milliseconds(4900),
        "failed before its deadline: {took}"
    );
    let h = env.get("/v1/jobs/flaky?embed=history").await?;
    assert_eq!(h["history"]["failureCount"], 1);
    assert_eq!(h["history"]["failedFinishedRuns"][0]["id"], run.as_str());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_past_active_deadline_is_killed() -> Result<()> {
    let env = Env::start(None).await?;
    env.create_job(job(
        "sleepy",
        json!({"cmd": "sleep 600", "cpus": 0.1, "mem": 32, "taskKillGracePeriodSeconds": 1,
               "restart": {"policy": "NEVER", "activeDeadlineSeconds": 3}}),
    ))
    .await?;
    let run = env.start_run("sleepy").await?;
    env.wait_run("sleepy", &run, "task running", |v| {
        tasks(v)
            .first()
            .is_some_and(|t| t["status"] == "TASK_RUNNING")
    })
    .await?;
    let done = env
        .wait_run("sleepy", &run, "task killed after the deadline", |v| {
            status(v) == "FAILED"
                && tasks(v)
                    .first()
                    .is_some_and(|t| t["status"] == "TASK_KILLED")
        })
        .await?;
    assert!(
        done["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("activeDeadlineSeconds"),
        "{done}"
    );
    let state = env.master.state().await?;
    assert_eq!(
        state["frameworks"][0]["tasks"],
        json!([]),
        "no task left running: {state}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_schedule_fires_on_time_and_forbid_skips_an_overlapping_tick() -> Result<()> {
    let clock = Arc::new(OffsetClock::new());
    let env = Env::start(Some(clock.clone())).await?;
    env.create_job(job(
        "ticker",
        json!({"cmd": "sleep 600", "cpus": 0.1, "mem": 32}),
    ))
    .await?;
    let (code, s) = env
        .post(
            "/v1/jobs/ticker/schedules",
            &json!({"id": "every-minute", "cron": "* * * * *", "timezone": "Europe/Paris",
                    "concurrencyPolicy": "FORBID", "startingDeadlineSeconds": 60}),
        )
        .await?;
    ensure!(code == 201, "create schedule: {code} {s}");
    assert_eq!(s["enabled"], true);
    let fmt = "%Y-%m-%dT%H:%M:%S%.3f%z";
    let next = chrono::DateTime::parse_from_str(s["nextRunAt"].as_str().unwrap_or_default(), fmt)?
        .with_timezone(&chrono::Utc);
    assert_eq!(
        next.timestamp() % 60,
        0,
        "next tick on a minute boundary: {s}"
    );
    assert!(env
        .get("/v1/jobs/ticker/runs")
        .await?
        .as_array()
        .is_some_and(Vec::is_empty));

    // First tick: a run starts, created at the tick.
    clock.advance_to(next);
    let runs = eventually(T, "scheduled run", || async {
        env.get("/v1/jobs/ticker/runs")
            .await
            .ok()
            .filter(|v| v.as_array().is_some_and(|a| a.len() == 1))
    })
    .await?;
    let first = runs[0].clone();
    assert_eq!(first["scheduleId"], "every-minute");
    let created =
        chrono::DateTime::parse_from_str(first["createdAt"].as_str().unwrap_or_default(), fmt)?;
    let late = created.with_timezone(&chrono::Utc) - next;
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(5),
        "late by {late}"
    );
    let s = env.get("/v1/jobs/ticker/schedules/every-minute").await?;
    let next2 = chrono::DateTime::parse_from_str(s["nextRunAt"].as_str().unwrap_or_default(), fmt)?;
    assert_eq!(
        next2.with_timezone(&chrono::Utc) - next,
        chrono::Duration::seconds(60)
    );

    // A manual trigger is refused too while the run is active (FORBID).
    let (code, v) = env.post("/v1/jobs/ticker/runs", &json!({})).await?;
    assert_eq!(code, 409, "{v}");
    assert_eq!(v["activeRuns"][0]["id"], first["id"]);

    // Second tick while the first run is active: skipped.
    clock.advance_to(next2.with_timezone(&chrono::Utc));
    eventually(T, "tick skipped", || async {
        let m = env.get("/v1/metrics").await.ok()?;
        (m["counters"]["batch.schedule.ticks.skipped"]["count"] == 1).then_some(())
    })
    .await?;
    let runs = env.get("/v1/jobs/ticker/runs?include=finished").await?;
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    let m = env.get("/v1/metrics").await?;
    assert_eq!(
        m["counters"]["batch.schedule.ticks.fired"]["count"], 1,
        "{m}"
    );

    // Stop the run; the third tick starts a new one.
    let run_id = first["id"].as_str().unwrap_or_default().to_string();
    let (code, v) = env
        .post(
            &format!("/v1/jobs/ticker/runs/{run_id}/actions/stop"),
            &json!({}),
        )
        .await?;
    assert_eq!(code, 200, "{v}");
    clock.advance(chrono::Duration::seconds(60));
    eventually(T, "third tick's run", || async {
        let runs = env.get("/v1/jobs/ticker/runs").await.ok()?;
        let a = runs.as_array()?;
        (a.len() == 1 && a[0]["id"] != first["id"]).then_some(())
    })
    .await?;
    // Disable the schedule: no nextRunAt.
    let (code, v) = env
        .send(
            reqwest::Method::PUT,
            "/v1/jobs/ticker/schedules/every-minute",
            Some(&json!({"id": "every-minute", "cron": "* * * * *", "enabled": false})),
        )
        .await?;
    assert_eq!(code, 200, "{v}");
    assert!(v["nextRunAt"].is_null());
    let (code, v) = env
        .send(reqwest::Method::DELETE, "/v1/jobs/ticker", None)
        .await?;
    assert_eq!(code, 409, "active runs block deletion: {v}");
    let (code, v) = env
        .send(
            reqwest::Method::DELETE,
            "/v1/jobs/ticker?stopCurrentJobRuns=true",
            None,
        )
        .await?;
    assert_eq!(code, 200, "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_run_kills_its_tasks() -> Result<()> {
    let env = Env::start(None).await?;
    env.create_job(job(
        "stoppable",
        json!({"cmd": "sleep 600", "cpus": 0.1, "mem": 32}),
    ))
    .await?;
    let run = env.start_run("stoppable").await?;
    env.wait_run("stoppable", &run, "task running", |v| {
        status(v) == "ACTIVE"
            && tasks(v)
                .first()
                .is_some_and(|t| t["status"] == "TASK_RUNNING")
    })
    .await?;
    let (code, v) = env
        .post(
            &format!("/v1/jobs/stoppable/runs/{run}/actions/stop"),
            &json!({}),
        )
        .await?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "FAILED");
    env.wait_run("stoppable", &run, "task killed", |v| {
        tasks(v)
            .first()
            .is_some_and(|t| t["status"] == "TASK_KILLED")
    })
    .await?;
    eventually(T, "master has no running task", || async {
        let s = env.master.state().await.ok()?;
        (s["frameworks"][0]["tasks"] == json!([])).then_some(())
    })
    .await?;
    let (code, _) = env
        .post(
            &format!("/v1/jobs/stoppable/runs/{run}/actions/stop"),
            &json!({}),
        )
        .await?;
    assert_eq!(code, 409, "already finished");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_run_keeps_the_run_and_finishes_it_exactly_once() -> Result<()> {
    let mut env = Env::start(None).await?;
    let files = tempfile::tempdir()?;
    let marker = files.path().join("started");
    let go = files.path().join("go");
    let cmd = format!(
        "echo started >> {m}; while [ ! -f {g} ]; do sleep 0.1; done",
        m = marker.display(),
        g = go.display()
    );
    env.create_job(job(
        "resilient",
        json!({"cmd": cmd, "cpus": 0.1, "mem": 32}),
    ))
    .await?;
    let run = env.start_run("resilient").await?;
    env.wait_run("resilient", &run, "task running", |v| {
        tasks(v)
            .first()
            .is_some_and(|t| t["status"] == "TASK_RUNNING")
    })
    .await?;
    let info = env.get("/v1/info").await?;
    let framework_id = info["frameworkId"].as_str().unwrap_or_default().to_string();
    assert!(!framework_id.is_empty(), "{info}");

    // Stop the framework (it stays registered), let the task finish meanwhile.
    if let Some(batch) = env.batch.take() {
        batch.stop().await;
    }
    std::fs::write(&go, b"")?;
    eventually(T, "task finished on the master", || async {
        // Not acknowledged yet, so it may still be listed among the active tasks.
        let s = env.master.state().await.ok()?;
        let fw = &s["frameworks"][0];
        let all: Vec<Value> = ["tasks", "completed_tasks"]
            .iter()
            .flat_map(|k| fw[*k].as_array().cloned().unwrap_or_default())
            .collect();
        all.iter()
            .any(|t| t["state"] == "TASK_FINISHED")
            .then_some(())
    })
    .await?;

    // A new instance on the same state re-subscribes with the same id and finishes the run.
    env.batch = Some(start_batch(&env.master.addr, env.state.path(), None).await?);
    let done = env
        .wait_run("resilient", &run, "run SUCCESS after restart", |v| {
            status(v) == "SUCCESS"
        })
        .await?;
    assert_eq!(tasks(&done).len(), 1, "the task ran once: {done}");
    let info = env.get("/v1/info").await?;
    assert_eq!(info["frameworkId"], framework_id.as_str());
    let started = std::fs::read_to_string(&marker)?;
    assert_eq!(
        started.lines().count(),
        1,
        "task started more than once: {started:?}"
    );
    let h = env.get("/v1/jobs/resilient?embed=history").await?;
    assert_eq!(h["history"]["successCount"], 1, "{h}");
    assert_eq!(h["history"]["failureCount"], 0, "{h}");
    let state = env.master.state().await?;
    let frameworks = state["frameworks"].as_array().map(Vec::len);
    assert_eq!(frameworks, Some(1), "one framework, failed over: {state}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallelism_four_runs_four_tasks() -> Result<()> {
    let env = Env::start(None).await?;
    let files = tempfile::tempdir()?;
    let go = files.path().join("go");
    let cmd = format!("while [ ! -f {g} ]; do sleep 0.1; done", g = go.display());
    env.create_job(job(
        "wide",
        json!({"cmd": cmd, "cpus": 0.1, "mem": 32, "parallelism": 4}),
    ))
    .await?;
    let run = env.start_run("wide").await?;
    let running = env
        .wait_run("wide", &run, "4 tasks running at once", |v| {
            let t = tasks(v);
            t.len() == 4 && t.iter().all(|t| t["status"] == "TASK_RUNNING")
        })
        .await?;
    assert_eq!(status(&running), "ACTIVE");
    std::fs::write(&go, b"")?;
    let done = env
        .wait_run("wide", &run, "run SUCCESS", |v| status(v) == "SUCCESS")
        .await?;
    let t = tasks(&done);
    assert_eq!(t.len(), 4, "{done}");
    assert!(t.iter().all(|t| t["status"] == "TASK_FINISHED"), "{done}");
    let mut ids: Vec<&str> = t.iter().filter_map(|t| t["id"].as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_validation_case_answers_4xx_without_changing_state() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let state = tempfile::tempdir()?;
    let batch = start_batch(&master.addr, state.path(), None).await?;
    let env = Env {
        master,
        _agent: None,
        state,
        batch: Some(batch),
        http: reqwest::Client::new(),
    };
    let ok_run = json!({"cmd": "true", "cpus": 0.1, "mem": 32});
    env.create_job(job("valid", ok_run.clone())).await?;

    let raw = env
        .http
        .post(env.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body("{\"id\": \"x\", ")
        .send()
        .await?;
    assert_eq!(raw.status().as_u16(), 400, "malformed JSON");

    let bad_jobs: Vec<(Value, &str)> = vec![
        (json!({"id": "no-run"}), "/"),
        (job("Bad_Id", ok_run.clone()), "/id"),
        (job("neg", json!({"cmd": "true", "cpus": -1})), "/run/cpus"),
        (job("neg", json!({"cmd": "true", "mem": 8})), "/run/mem"),
        (job("neg", json!({"cmd": "true", "disk": -5})), "/run/disk"),
        (job("neg", json!({"cpus": 0.1})), "/run"),
        (job("neg", json!({"cmd": "true", "args": ["true"]})), "/run"),
        (job("neg", json!({"cmd": "true", "cpus": "many"})), "/"),
        (
            job(
                "neg",
                json!({"cmd": "true", "restart": {"policy": "SOMETIMES"}}),
            ),
            "/",
        ),
        (
            job(
                "neg",
                json!({"cmd": "true", "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 0}}),
            ),
            "/run/restart/activeDeadlineSeconds",
        ),
        (
            job("neg", json!({"cmd": "true", "parallelism": 0})),
            "/run/parallelism",
        ),
        (
            job("neg", json!({"cmd": "true", "maxLaunchDelay": 0})),
            "/run/maxLaunchDelay",
        ),
        (
            job(
                "neg",
                json!({"cmd": "true", "docker": {"image": "busybox"}}),
            ),
            "/run/docker",
        ),
        (
            job(
                "neg",
                json!({"cmd": "true", "placement": {"constraints": [{"attribute": "hostname", "operator": "LIKE", "value": "(["}]}}),
            ),
            "/run/placement/constraints/0/value",
        ),
        (
            job(
                "neg",
                json!({"cmd": "true", "placement": {"constraints": [{"attribute": "hostname", "operator": "NEAR", "value": "x"}]}}),
            ),
            "/",
        ),
        (
            json!({"id": "neg", "run": ok_run.clone(), "schedules": [{"id": "s", "cron": "not a cron"}]}),
            "/schedules/0/cron",
        ),
    ];
    for (body, path) in &bad_jobs {
        let (code, v) = env.post("/v1/jobs", body).await?;
        assert_eq!(code, 422, "{body} -> {v}");
        assert_eq!(v["message"], "Object is not valid", "{v}");
        let paths: Vec<&str> = v["details"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x["path"].as_str()).collect())
            .unwrap_or_default();
        assert!(paths.contains(path), "{body}: expected {path} in {v}");
    }

    let bad_schedules: Vec<(Value, &str)> = vec![
        (json!({"id": "s", "cron": "61 * * * *"}), "/cron"),
        (json!({"id": "s", "cron": "* * * * * *"}), "/cron"),
        (
            json!({"id": "s", "cron": "* * * * *", "timezone": "Mars/Olympus_Mons"}),
            "/timezone",
        ),
        (
            json!({"id": "s", "cron": "* * * * *", "startingDeadlineSeconds": 0}),
            "/startingDeadlineSeconds",
        ),
        (json!({"id": "S!", "cron": "* * * * *"}), "/id"),
        (
            json!({"id": "s", "cron": "* * * * *", "concurrencyPolicy": "SOMETIMES"}),
            "/",
        ),
    ];
    for (body, path) in &bad_schedules {
        let (code, v) = env.post("/v1/jobs/valid/schedules", body).await?;
        assert_eq!(code, 422, "{body} -> {v}");
        let paths: Vec<&str> = v["details"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x["path"].as_str()).collect())
            .unwrap_or_default();
        assert!(paths.contains(path), "{body}: expected {path} in {v}");
    }

    let (code, v) = env.post("/v1/jobs", &job("valid", ok_run.clone())).await?;
    assert_eq!(code, 409, "duplicate: {v}");
    let (code, v) = env
        .send(reqwest::Method::GET, "/v1/jobs/missing", None)
        .await?;
    assert_eq!(
        (code, v["message"].as_str()),
        (404, Some("Job 'missing' does not exist"))
    );
    let (code, _) = env.post("/v1/jobs/missing/runs", &json!({})).await?;
    assert_eq!(code, 404);
    let (code, _) = env
        .send(reqwest::Method::GET, "/v1/jobs/valid/runs/nope", None)
        .await?;
    assert_eq!(code, 404);
    let (code, _) = env
        .post(
            "/v1/jobs/missing/schedules",
            &json!({"id": "s", "cron": "* * * * *"}),
        )
        .await?;
    assert_eq!(code, 404);
    let (code, _) = env
        .send(
            reqwest::Method::PUT,
            "/v1/jobs/valid",
            Some(&job("other", ok_run.clone())),
        )
        .await?;
    assert_eq!(code, 422, "id mismatch");
    let (code, _) = env
        .send(
            reqwest::Method::PUT,
            "/v1/jobs/valid",
            Some(&job("valid", json!({"cmd": "true", "mem": 1}))),
        )
        .await?;
    assert_eq!(code, 422);

    // Nothing changed.
    let jobs = env.get("/v1/jobs?embed=schedules").await?;
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "{jobs}");
    assert_eq!(jobs[0]["id"], "valid");
    assert_eq!(jobs[0]["run"]["mem"], 32.0);
    assert_eq!(jobs[0]["schedules"], json!([]));
    Ok(())
}
