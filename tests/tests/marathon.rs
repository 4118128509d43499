//! End-to-end tests of the Marathon-like framework: a real master and agent process,
//! `mezzo_marathon` in-process, its `/v2` REST API driven with reqwest (and with the
//! `marathon` Python client).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use mezzo_marathon::{MarathonConfig, RunningMarathon};
use mezzo_tests::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(45);

static PORTS: AtomicU64 = AtomicU64::new(0);

/// A master, an agent with its own port range, and a Marathon over them.
struct Cluster {
    _master: MasterProc,
    agent: AgentProc,
    marathon: Option<RunningMarathon>,
    state_dir: tempfile::TempDir,
    master_addr: String,
    url: String,
    http: reqwest::Client,
}

impl Cluster {
    async fn start() -> Result<Cluster> {
        Cluster::start_with(&[]).await
    }

    /// A cluster whose master gets `master_flags`.
    async fn start_with(master_flags: &[&str]) -> Result<Cluster> {
        init_logs();
        let master = MasterProc::start(master_flags)?;
        let agent = AgentProc::start(&master.addr, &agent_resources(), &["--isolation", "posix"])?;
        let state_dir = tempfile::tempdir()?;
        let mut c = Cluster {
            master_addr: master.addr.clone(),
            _master: master,
            agent,
            marathon: None,
            state_dir,
            url: String::new(),
            http: reqwest::Client::new(),
        };
        c.start_marathon().await?;
        Ok(c)
    }

    async fn start_marathon(&mut self) -> Result<()> {
        let config = MarathonConfig::new(
            self.master_addr.clone(),
            "127.0.0.1:0".parse()?,
            self.state_dir.path(),
        );
        let m = mezzo_marathon::start(config).await?;
        self.url = m.url();
        self.marathon = Some(m);
        Ok(())
    }

    async fn stop_marathon(&mut self) {
        if let Some(m) = self.marathon.take() {
            m.shutdown().await;
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let (s, v) = self.call(Method::GET, path, None).await?;
        if !s.is_success() {
            bail!("GET {path}: {s} {v}");
        }
        Ok(v)
    }

    async fn app(&self, id: &str) -> Result<Value> {
        Ok(self.get(&format!("/v2/apps{id}")).await?["app"].clone())
    }

    /// Waits until the app has `n` tasks, `healthy` of them healthy (when given), and no
    /// deployment.
    async fn wait_app(&self, id: &str, running: u64, healthy: Option<u64>) -> Result<Value> {
        eventually(
            T,
            &format!("{id}: {running} running, {healthy:?} healthy, no deployment"),
            || async {
                let app = self.app(id).await.ok()?;
                let ok = app["tasksRunning"] == running
                    && app["tasks"].as_array()?.len() as u64 == running
                    && healthy.is_none_or(|h| app["tasksHealthy"] == h)
                    && app["deployments"].as_array()?.is_empty();
                ok.then_some(app)
            },
        )
        .await
    }

    async fn wait_no_deployments(&self) -> Result<()> {
        eventually(T, "no deployments", || async {
            let d = self.get("/v2/deployments").await.ok()?;
            d.as_array()?.is_empty().then_some(())
        })
        .await
    }
}

/// Agent resources with a port range of its own: tests run in parallel on one host.
fn agent_resources() -> String {
    let n = PORTS.fetch_add(1, Ordering::SeqCst) + (std::process::id() as u64 % 20) * 10;
    let base = 20000 + (n % 200) * 100;
    format!("cpus:8;mem:4096;disk:1000;ports:[{}-{}]", base, base + 99)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The actor and server die with the runtime; the agent's Drop kills the tasks.
        kill_processes_under(self.agent.work_dir.path());
    }
}

fn http_app(id: &str, instances: u64, dir: &Path) -> Value {
    // Each task serves its own directory; the health check asks for /ok in it, so a
    // test can make one task unhealthy by removing that file. The server keeps the
    // sandbox as its working directory, so `kill_processes_under(work dir)` reaps it.
    let cmd = format!(
        "mkdir -p {d}/$MESOS_TASK_ID && touch {d}/$MESOS_TASK_ID/ok && exec python3 -m http.server $PORT0 --bind 127.0.0.1 --directory {d}/$MESOS_TASK_ID",
        d = dir.display()
    );
    json!({
        "id": id,
        "cmd": cmd,
        "instances": instances,
        "cpus": 0.1,
        "mem": 32,
        "backoffSeconds": 0.2,
        "healthChecks": [{
            "protocol": "HTTP",
            "path": "/ok",
            "portIndex": 0,
            "gracePeriodSeconds": 20,
            "intervalSeconds": 1,
            "timeoutSeconds": 1,
            "maxConsecutiveFailures": 2,
            "delaySeconds": 0
        }]
    })
}

fn task_ids(app: &Value) -> Vec<String> {
    let mut ids: Vec<String> = app["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_health_checked_app_scales_up_and_down() -> Result<()> {
    let c = Cluster::start().await?;
    let dir = tempfile::tempdir()?;
    assert_eq!(c.call(Method::GET, "/ping", None).await?.1, json!("pong"));
    let (status, body) = c
        .call(
            Method::POST,
            "/v2/apps",
            Some(http_app("/prod/web", 3, dir.path())),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "/prod/web");
    assert!(body["version"].is_string());
    assert_eq!(body["deployments"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["tasksRunning"], 0);

    let app = c.wait_app("/prod/web", 3, Some(3)).await?;
    let task = &app["tasks"][0];
    for key in [
        "id",
        "appId",
        "host",
        "ports",
        "stagedAt",
        "startedAt",
        "state",
        "version",
        "healthCheckResults",
    ] {
        assert!(task.get(key).is_some(), "task lacks {key}: {task}");
    }
    assert_eq!(task["healthCheckResults"][0]["alive"], true);
    assert_eq!(task["state"], "TASK_RUNNING");
    let stamp = task["stagedAt"].as_str().unwrap_or_default();
    assert!(
        stamp.ends_with('Z') && stamp.len() == 24,
        "timestamp {stamp}"
    );

    let tasks = c.get("/v2/tasks?status=running").await?;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(3));
    let info = c.get("/v2/info").await?;
    assert_eq!(info["name"], "marathon");
    assert!(info["frameworkId"].is_string());
    assert_eq!(
        c.get("/v2/leader").await?["leader"],
        json!(c.url.trim_start_matches("http://"))
    );
    let listed = c.get("/v2/apps?embed=apps.tasks&id=web").await?;
    assert_eq!(listed["apps"][0]["tasks"].as_array().map(Vec::len), Some(3));
    assert_eq!(c.get("/v2/apps?id=nothing").await?["apps"], json!([]));

    // Scale to 5, then to 2.
    let (status, r) = c
        .call(
            Method::PUT,
            "/v2/apps/prod/web",
            Some(json!({"instances": 5})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert!(r["deploymentId"].is_string() && r["version"].is_string());
    let five = c.wait_app("/prod/web", 5, Some(5)).await?;
    let before = task_ids(&app);
    assert!(
        before.iter().all(|t| task_ids(&five).contains(t)),
        "scaling must not restart tasks"
    );
    let (status, _) = c
        .call(
            Method::PUT,
            "/v2/apps/prod/web?force=False",
            Some(json!({"instances": 2})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    c.wait_app("/prod/web", 2, Some(2)).await?;
    let versions = c.get("/v2/apps/prod/web/versions").await?;
    assert!(versions["versions"].as_array().map(Vec::len).unwrap_or(0) >= 3);

    // Delete: the tasks go away, and so does the app.
    let (status, _) = c.call(Method::DELETE, "/v2/apps/prod/web", None).await?;
    assert_eq!(status, StatusCode::OK);
    c.wait_no_deployments().await?;
    let (status, body) = c.call(Method::GET, "/v2/apps/prod/web", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "App '/prod/web' does not exist");
    assert_eq!(c.get("/v2/tasks").await?["tasks"], json!([]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_upgrade_never_drops_below_minimum_health_capacity() -> Result<()> {
    let c = Cluster::start().await?;
    let dir = tempfile::tempdir()?;
    let mut app = http_app("/roll", 3, dir.path());
    app["upgradeStrategy"] = json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.0});
    let (status, _) = c.call(Method::POST, "/v2/apps", Some(app.clone())).await?;
    assert_eq!(status, StatusCode::CREATED);
    let first = c.wait_app("/roll", 3, Some(3)).await?;
    let old = task_ids(&first);

    // A new cmd: every task must be replaced, one at a time.
    let (status, r) = c
        .call(
            Method::PUT,
            "/v2/apps/roll",
            Some(json!({"env": {"VERSION": "2"}})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{r}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut min_healthy = u64::MAX;
    let mut max_tasks = 0;
    loop {
        let app = c.app("/roll").await?;
        min_healthy = min_healthy.min(app["tasksHealthy"].as_u64().unwrap_or(0));
        max_tasks = max_tasks.max(app["tasks"].as_array().map(Vec::len).unwrap_or(0));
        let ids = task_ids(&app);
        let done = app["deployments"].as_array().is_some_and(Vec::is_empty)
            && ids.len() == 3
            && ids.iter().all(|t| !old.contains(t))
            && app["tasksHealthy"] == 3;
        if done {
            break;
        }
        if Instant::now() > deadline {
            bail!("upgrade did not finish: {app}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(min_healthy >= 3, "healthy tasks dropped to {min_healthy}");
    assert!(
        max_tasks <= 4,
        "maximumOverCapacity 0 allows one extra task, saw {max_tasks}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broken_deployment_is_rolled_back_and_conflicts_are_409() -> Result<()> {
    let c = Cluster::start().await?;
    let dir = tempfile::tempdir()?;
    let (status, _) = c
        .call(
            Method::POST,
            "/v2/apps",
            Some(http_app("/svc", 2, dir.path())),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let good = c.wait_app("/svc", 2, Some(2)).await?;
    let good_ids = task_ids(&good);
    let good_cmd = good["cmd"].clone();

    let (status, r) = c
        .call(Method::PUT, "/v2/apps/svc", Some(json!({"cmd": "exit 1"})))
        .await?;
    assert_eq!(status, StatusCode::OK, "{r}");
    let deployment = r["deploymentId"].as_str().unwrap_or_default().to_string();
    // The broken tasks fail; the deployment never finishes and locks the app.
    let (status, body) = c
        .call(Method::PUT, "/v2/apps/svc", Some(json!({"instances": 3})))
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["deployments"][0]["id"], json!(deployment));
    let deployments = c.get("/v2/deployments").await?;
    assert_eq!(deployments[0]["id"], json!(deployment));
    assert_eq!(deployments[0]["affectedApps"], json!(["/svc"]));
    assert_eq!(
        deployments[0]["currentActions"][0]["action"],
        "RestartApplication"
    );
    eventually(T, "a failed task of the broken version", || async {
        let app = c.app("/svc").await.ok()?;
        app["lastTaskFailure"]["state"].as_str().map(|_| ())
    })
    .await?;

    // Rollback: a new deployment back to the previous definition; old tasks stay.
    let (status, r) = c
        .call(
            Method::DELETE,
            &format!("/v2/deployments/{deployment}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_ne!(r["deploymentId"], json!(deployment));
    c.wait_no_deployments().await?;
    let app = c.wait_app("/svc", 2, Some(2)).await?;
    assert_eq!(app["cmd"], good_cmd);
    assert_eq!(
        task_ids(&app),
        good_ids,
        "rollback must keep the healthy old tasks"
    );

    // force=true only cancels: 202, no body.
    let (_, r) = c
        .call(Method::PUT, "/v2/apps/svc", Some(json!({"cmd": "exit 2"})))
        .await?;
    let id = r["deploymentId"].as_str().unwrap_or_default().to_string();
    let (status, body) = c
        .call(
            Method::DELETE,
            &format!("/v2/deployments/{id}?force=true"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body, Value::Null);
    let (status, _) = c.call(Method::DELETE, "/v2/deployments/nope", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_tasks_are_replaced() -> Result<()> {
    let c = Cluster::start().await?;
    let pids = tempfile::tempdir()?;
    let cmd = format!(
        "echo $$ > {}/$MESOS_TASK_ID; exec sleep 1000",
        pids.path().display()
    );
    let app = json!({"id": "/heal", "cmd": cmd, "instances": 2, "cpus": 0.1, "mem": 32, "backoffSeconds": 0.2});
    let (status, _) = c.call(Method::POST, "/v2/apps", Some(app)).await?;
    assert_eq!(status, StatusCode::CREATED);
    let app = c.wait_app("/heal", 2, None).await?;
    let ids = task_ids(&app);

    // The process dies on its own (SIGKILL from outside): a replacement starts.
    let victim = &ids[0];
    let pid_file = pids.path().join(victim);
    let pid: i32 = eventually(T, "pid file", || async {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await?;
    // SAFETY: plain syscall on a process this test started through the agent.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let healed = eventually(T, "replacement of the killed task", || async {
        let app = c.app("/heal").await.ok()?;
        let now = task_ids(&app);
        (app["tasksRunning"] == 2 && !now.contains(victim)).then_some(app)
    })
    .await?;
    assert_eq!(healed["lastTaskFailure"]["taskId"], json!(victim));

    // Killed through the API (scale=false): replaced too.
    let other = task_ids(&healed)[0].clone();
    let (status, body) = c
        .call(
            Method::DELETE,
            &format!("/v2/apps/heal/tasks/{other}?scale=False"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["task"]["id"], json!(other));
    eventually(T, "replacement of the API-killed task", || async {
        let app = c.app("/heal").await.ok()?;
        (app["tasksRunning"] == 2 && !task_ids(&app).contains(&other)).then_some(())
    })
    .await?;

    // Killed with scale=true: one task fewer, for good.
    let third = task_ids(&c.app("/heal").await?)[0].clone();
    let (status, body) = c
        .call(
            Method::POST,
            "/v2/tasks/delete?scale=true",
            Some(json!({"ids": [third]})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let app = c.wait_app("/heal", 1, None).await?;
    assert_eq!(app["instances"], 1);
    let (status, _) = c
        .call(Method::DELETE, "/v2/apps/heal/tasks/heal.nope", None)
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_health_check_replaces_the_task() -> Result<()> {
    let c = Cluster::start().await?;
    let dir = tempfile::tempdir()?;
    let (status, _) = c
        .call(
            Method::POST,
            "/v2/apps",
            Some(http_app("/sick", 2, dir.path())),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let app = c.wait_app("/sick", 2, Some(2)).await?;
    let ids = task_ids(&app);
    let victim = ids[0].clone();
    std::fs::remove_file(dir.path().join(&victim).join("ok"))?;
    let app = eventually(
        T,
        "the unhealthy task replaced by a healthy one",
        || async {
            let app = c.app("/sick").await.ok()?;
            let now = task_ids(&app);
            (!now.contains(&victim) && app["tasksHealthy"] == 2 && now.len() == 2).then_some(app)
        },
    )
    .await?;
    assert!(task_ids(&app).contains(&ids[1]), "the healthy task stays");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unique_hostname_on_one_agent_leaves_instances_waiting_in_the_queue() -> Result<()> {
    let c = Cluster::start().await?;
    let app = json!({
        "id": "/uniq", "cmd": "sleep 1000", "instances": 3, "cpus": 0.1, "mem": 32,
        "constraints": [["hostname", "UNIQUE"]]
    });
    let (status, _) = c.call(Method::POST, "/v2/apps", Some(app)).await?;
    assert_eq!(status, StatusCode::CREATED);
    let queue = eventually(T, "1 running and 2 waiting for a constraint", || async {
        let app = c.app("/uniq").await.ok()?;
        let q = c.get("/v2/queue").await.ok()?;
        let item = q["queue"].as_array()?.first()?.clone();
        let declined = item["processedOffersSummary"]["rejectSummaryLastOffers"]
            .as_array()?
            .iter()
            .find(|r| r["reason"] == "UnfulfilledConstraint")?["declined"]
            .as_u64()?;
        (app["tasksRunning"] == 1 && item["count"] == 2 && declined > 0).then_some(item)
    })
    .await?;
    assert_eq!(queue["app"]["id"], "/uniq");
    assert_eq!(queue["delay"]["overdue"], true);
    assert!(queue["since"].is_string());
    // Still exactly one task: the constraint holds.
    assert_eq!(
        c.app("/uniq").await?["tasks"].as_array().map(Vec::len),
        Some(1)
    );
    let (status, _) = c.call(Method::DELETE, "/v2/queue/uniq/delay", None).await?;
    assert!(status.is_success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_framework_keeps_apps_and_tasks() -> Result<()> {
    let mut c = Cluster::start().await?;
    let app = json!({"id": "/keep", "cmd": "sleep 1000", "instances": 2, "cpus": 0.1, "mem": 32});
    let (status, _) = c.call(Method::POST, "/v2/apps", Some(app)).await?;
    assert_eq!(status, StatusCode::CREATED);
    let before = task_ids(&c.wait_app("/keep", 2, None).await?);
    let framework_id = c.get("/v2/info").await?["frameworkId"].clone();

    c.stop_marathon().await;
    c.start_marathon().await?;

    let app = c.wait_app("/keep", 2, None).await?;
    assert_eq!(task_ids(&app), before, "same tasks after the restart");
    eventually(T, "resubscribed with the same framework id", || async {
        let info = c.get("/v2/info").await.ok()?;
        (info["frameworkId"] == framework_id).then_some(())
    })
    .await?;
    // Reconciliation settles without killing anything; the app still works.
    let (status, _) = c
        .call(Method::PUT, "/v2/apps/keep", Some(json!({"instances": 3})))
        .await?;
    assert_eq!(status, StatusCode::OK);
    let app = c.wait_app("/keep", 3, None).await?;
    let after = task_ids(&app);
    assert!(
        before.iter().all(|t| after.contains(t)),
        "{before:?} vs {after:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_requests_answer_marathon_errors() -> Result<()> {
    let c = Cluster::start().await?;
    let cases = [
        (json!({"id": "/v", "cmd": "x", "cpus": -1}), "/cpus"),
        (json!({"id": "/v", "cmd": "x", "mem": -5}), "/mem"),
        (
            json!({"id": "/v", "cmd": "x", "instances": -1}),
            "/instances",
        ),
        (json!({"id": "/Bad_Id", "cmd": "x"}), "/id"),
        (json!({"id": "/v"}), "/"),
        (json!({"id": "/v", "cmd": "x", "args": ["y"]}), "/"),
        (
            json!({"id": "/v", "cmd": "x", "upgradeStrategy": {"minimumHealthCapacity": 2}}),
            "/upgradeStrategy/minimumHealthCapacity",
        ),
        (
            json!({"id": "/v", "cmd": "x", "upgradeStrategy": {"maximumOverCapacity": -1}}),
            "/upgradeStrategy/maximumOverCapacity",
        ),
        (
            json!({"id": "/v", "cmd": "x", "constraints": [["hostname", "SOMETIMES"]]}),
            "/constraints(0)",
        ),
        (
            json!({"id": "/v", "cmd": "x", "constraints": [["hostname", "LIKE"]]}),
            "/constraints(0)",
        ),
        (
            json!({"id": "/v", "cmd": "x", "portDefinitions": [], "healthChecks": [{"protocol": "HTTP"}]}),
            "/healthChecks(0)/portIndex",
        ),
        (
            json!({"id": "/v", "cmd": "x", "healthChecks": [{"protocol": "COMMAND"}]}),
            "/healthChecks(0)/command",
        ),
        (
            json!({"id": "/v", "cmd": "x", "backoffFactor": 0.5}),
            "/backoffFactor",
        ),
        (
            json!({"id": "/v", "cmd": "x", "killSelection": "RANDOM"}),
            "/killSelection",
        ),
        (
            json!({"id": "/v", "cmd": "x", "portDefinitions": [{"port": 70000}]}),
            "/portDefinitions(0)/port",
        ),
    ];
    for (body, path) in cases {
        let (status, answer) = c.call(Method::POST, "/v2/apps", Some(body.clone())).await?;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {answer}"
        );
        assert_eq!(answer["message"], "Object is not valid");
        let details = answer["details"].as_array().cloned().unwrap_or_default();
        assert!(
            details.iter().any(|d| d["path"] == path && d["errors"].as_array().is_some_and(|e| !e.is_empty())),
            "{body}: expected a detail at {path}, got {answer}"
        );
    }
    // Nothing was created by the rejected requests.
    assert_eq!(c.get("/v2/apps").await?["apps"], json!([]));
    assert_eq!(c.get("/v2/deployments").await?, json!([]));

    // Malformed JSON: 400; wrong types: 400 Invalid JSON.
    let resp = c
        .http
        .post(format!("{}/v2/apps", c.url))
        .header("content-type", "application/json")
        .body("{\"id\": ")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await?;
    assert_eq!(v["message"], "Invalid JSON");
    let (status, v) = c
        .call(
            Method::POST,
            "/v2/apps",
            Some(json!({"id": "/v", "cmd": "x", "cpus": "many"})),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["details"][0]["path"], "/cpus");

    // Unknown app: 404 everywhere; duplicate id: 409.
    for (m, p) in [
        (Method::GET, "/v2/apps/nope"),
        (Method::DELETE, "/v2/apps/nope"),
        (Method::GET, "/v2/apps/nope/tasks"),
        (Method::POST, "/v2/apps/nope/restart"),
        (Method::PATCH, "/v2/apps/nope"),
    ] {
        let body = (m == Method::PATCH).then(|| json!({"instances": 1}));
        let (status, v) = c.call(m.clone(), p, body).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{m} {p}: {v}");
        assert!(v["message"].is_string());
    }
    let ok = json!({"id": "/dup", "cmd": "sleep 100", "instances": 0, "cpus": 0.1, "mem": 16});
    assert_eq!(
        c.call(Method::POST, "/v2/apps", Some(ok.clone())).await?.0,
        StatusCode::CREATED
    );
    let (status, v) = c.call(Method::POST, "/v2/apps", Some(ok)).await?;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(v["message"], "An app with id [/dup] already exists.");
    // An invalid update changes nothing.
    let before = c.app("/dup").await?;
    let (status, _) = c
        .call(Method::PUT, "/v2/apps/dup", Some(json!({"cpus": -2})))
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(c.app("/dup").await?["version"], before["version"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_deploy_dependencies_first_and_events_stream() -> Result<()> {
    let c = Cluster::start().await?;
    let resp = c
        .http
        .get(format!("{}/v2/events", c.url))
        .header("accept", "text/event-stream")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp;
    let group = json!({
        "id": "/shop",
        "apps": [
            {"id": "db", "cmd": "sleep 1000", "instances": 1, "cpus": 0.1, "mem": 16},
            {"id": "web", "cmd": "sleep 1000", "instances": 1, "cpus": 0.1, "mem": 16, "dependencies": ["/shop/db"]}
        ]
    });
    let (status, r) = c.call(Method::POST, "/v2/groups", Some(group)).await?;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    let d = c.get("/v2/deployments").await?;
    if let Some(d) = d.as_array().and_then(|a| a.first()) {
        let steps = &d["steps"];
        let pos = |app: &str| {
            steps.as_array().and_then(|s| {
                s.iter().position(|st| {
                    st["actions"].as_array().is_some_and(|a| {
                        a.iter()
                            .any(|x| x["app"] == app && x["action"] == "ScaleApplication")
                    })
                })
            })
        };
        assert!(pos("/shop/db") < pos("/shop/web"), "db before web: {steps}");
    }
    c.wait_no_deployments().await?;
    let g = c.get("/v2/groups/shop").await?;
    assert_eq!(g["apps"].as_array().map(Vec::len), Some(2));
    let root = c.get("/v2/groups").await?;
    assert_eq!(root["groups"][0]["id"], "/shop");

    // The event stream saw the deployment and the task updates.
    let mut seen = String::new();
    let deadline = Instant::now() + T;
    while !(seen.contains("event: deployment_success")
        && seen.contains("event: status_update_event"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            _ => bail!("events so far: {seen}"),
        }
    }
    assert!(seen.contains("\"eventType\":\"deployment_info\""), "{seen}");
    let (status, _) = c.call(Method::DELETE, "/v2/groups/shop", None).await?;
    assert_eq!(status, StatusCode::OK);
    c.wait_no_deployments().await?;
    assert_eq!(c.get("/v2/apps").await?["apps"], json!([]));
    Ok(())
}

fn python() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("MEZZO_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = repo.join(".venv/bin/python");
    if venv.exists() {
        return Ok(venv);
    }
    // Create the virtualenv ourselves.
    let dir = repo.join(".venv");
    let ok = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()?
        .success()
        && std::process::Command::new(dir.join("bin/pip"))
            .args(["install", "-q", "marathon==0.13.0"])
            .status()?
            .success();
    if !ok {
        return Err(anyhow!(
            "could not create a virtualenv with the marathon client"
        ));
    }
    Ok(venv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_marathon_client_works_unchanged() -> Result<()> {
    let c = Cluster::start().await?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/marathon_client.py");
    let python = python()?;
    let url = c.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(url)
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ALL OK"), "{stdout}\n{stderr}");
    Ok(())
}

/// The task with this id in an app's JSON.
fn task_of<'a>(app: &'a Value, id: &str) -> Option<&'a Value> {
    app["tasks"].as_array()?.iter().find(|t| t["id"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_task_is_kept_replaced_after_inactive_and_the_surplus_scaled_back() -> Result<()>
{
    // An agent silent for 3 x 200 ms is unreachable.
    let mut c = Cluster::start_with(&[
        "--agent-ping-timeout",
        "200ms",
        "--max-agent-ping-timeouts",
        "3",
    ])
    .await?;
    let dir = tempfile::tempdir()?;
    let mut app = http_app("/part", 1, dir.path());
    app["unreachableStrategy"] = json!({"inactiveAfterSeconds": 4, "expungeAfterSeconds": 600});
    let (status, body) = c.call(Method::POST, "/v2/apps", Some(app)).await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = c.wait_app("/part", 1, Some(1)).await?;
    let original = task_ids(&first)[0].clone();
    let first_agent = first["tasks"][0]["slaveId"].clone();

    // A second agent for the replacement, then the first one goes silent.
    let second = AgentProc::start(
        &c.master_addr,
        &agent_resources(),
        &["--isolation", "posix"],
    )?;
    let master = c.master_addr.clone();
    eventually(T, "two agents registered", || async {
        let s = get_json(&format!("http://{master}/master/state"))
            .await
            .ok()?;
        (s["slaves"].as_array()?.len() == 2).then_some(())
    })
    .await?;
    let frozen = c.agent.proc.take().context("agent process")?;
    frozen.signal(libc::SIGSTOP);
    let result = async {
        let app = eventually(T, "the task is TASK_UNREACHABLE", || async {
            let app = c.app("/part").await.ok()?;
            (task_of(&app, &original)?["state"] == "TASK_UNREACHABLE").then_some(app)
        })
        .await?;
        let unreachable_at = Instant::now();
        // Not terminal: still listed, neither running nor healthy, no replacement yet.
        assert_eq!(task_ids(&app), vec![original.clone()], "{app}");
        assert_eq!(
            (app["tasksRunning"].as_u64(), app["tasksHealthy"].as_u64()),
            (Some(0), Some(0)),
            "{app}"
        );
        while unreachable_at.elapsed() < Duration::from_millis(2500) {
            let app = c.app("/part").await?;
            assert_eq!(
                task_ids(&app),
                vec![original.clone()],
                "replaced before inactiveAfterSeconds: {app}"
            );
            assert_eq!(app["tasksHealthy"], 0, "{app}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Inactive: a replacement runs on the other agent; the original is left alone.
        let app = eventually(T, "a healthy replacement on the second agent", || async {
            let app = c.app("/part").await.ok()?;
            let ok = app["tasksHealthy"] == 1
                && task_of(&app, &original)?["state"] == "TASK_UNREACHABLE"
                && app["tasks"]
                    .as_array()?
                    .iter()
                    .any(|t| t["id"] != original.as_str() && t["slaveId"] != first_agent);
            ok.then_some(app)
        })
        .await?;
        assert_eq!(app["tasks"].as_array().map(Vec::len), Some(2), "{app}");
        let s = get_json(&format!("http://{master}/master/state")).await?;
        let unreachable: Vec<Value> = s["frameworks"][0]["unreachable_tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            unreachable.iter().any(|t| t["id"] == original.as_str()),
            "master: {s}"
        );
        anyhow::Ok(())
    }
    .await;
    // Whatever happened, the first agent runs again.
    frozen.signal(libc::SIGCONT);
    c.agent.proc = Some(frozen);
    result?;

    // Back: the original runs again and counts; the surplus (youngest first: the
    // replacement) is killed, back to `instances`.
    let app = eventually(T, "back to one task: the original", || async {
        let app = c.app("/part").await.ok()?;
        let ok = task_ids(&app) == vec![original.clone()]
            && task_of(&app, &original)?["state"] == "TASK_RUNNING"
            && app["tasksHealthy"] == 1
            && app["deployments"].as_array()?.is_empty();
        ok.then_some(app)
    })
    .await?;
    assert_eq!(app["tasksRunning"], 1, "{app}");
    kill_processes_under(second.work_dir.path());
    Ok(())
}

/// Healthy tasks among `tasks` (id, host port), asking each task's server for `/ok`
/// ourselves: the same check the health check makes, with no framework involved.
async fn probe_healthy(http: &reqwest::Client, tasks: &[(String, u64)]) -> usize {
    let mut healthy = 0;
    for (_, port) in tasks {
        let r = http
            .get(format!("http://127.0.0.1:{port}/ok"))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            healthy += 1;
        }
    }
    healthy
}

fn task_ports(app: &Value) -> Vec<(String, u64)> {
    app["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| Some((t["id"].as_str()?.to_string(), t["ports"][0].as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minimum_health_capacity_holds_across_a_framework_failover_mid_deployment() -> Result<()> {
    let mut c = Cluster::start().await?;
    let dir = tempfile::tempdir()?;
    let mut app = http_app("/ha-roll", 3, dir.path());
    app["upgradeStrategy"] = json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.0});
    let (status, _) = c.call(Method::POST, "/v2/apps", Some(app)).await?;
    assert_eq!(status, StatusCode::CREATED);
    let first = c.wait_app("/ha-roll", 3, Some(3)).await?;
    let old = task_ids(&first);

    // New tasks take 5 s to become healthy (their /ok appears late).
    let slow = format!(
        "mkdir -p {d}/$MESOS_TASK_ID && (sleep 5; touch {d}/$MESOS_TASK_ID/ok) & exec python3 -m http.server $PORT0 --bind 127.0.0.1 --directory {d}/$MESOS_TASK_ID",
        d = dir.path().display()
    );
    let (status, r) = c
        .call(Method::PUT, "/v2/apps/ha-roll", Some(json!({"cmd": slow})))
        .await?;
    assert_eq!(status, StatusCode::OK, "{r}");

    let mut min_api = u64::MAX;
    let mut min_probe = usize::MAX;
    // Until the first new task is launched.
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = loop {
        let app = c.app("/ha-roll").await?;
        min_api = min_api.min(app["tasksHealthy"].as_u64().unwrap_or(0));
        if task_ids(&app).iter().any(|t| !old.contains(t)) {
            break app;
        }
        ensure!(Instant::now() < deadline, "no new task launched: {app}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // The framework goes away mid-deployment; the tasks keep running and stay healthy.
    c.stop_marathon().await;
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(3) {
        min_probe = min_probe.min(probe_healthy(&c.http, &task_ports(&last)).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new instance over the same state continues the deployment.
    c.start_marathon().await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let app = c.app("/ha-roll").await?;
        min_api = min_api.min(app["tasksHealthy"].as_u64().unwrap_or(0));
        min_probe = min_probe.min(probe_healthy(&c.http, &task_ports(&app)).await);
        let ids = task_ids(&app);
        let done = app["deployments"].as_array().is_some_and(Vec::is_empty)
            && ids.len() == 3
            && ids.iter().all(|t| !old.contains(t))
            && app["tasksHealthy"] == 3;
        if done {
            break;
        }
        ensure!(Instant::now() < deadline, "upgrade did not finish: {app}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(min_api >= 3, "tasksHealthy dropped to {min_api}");
    assert!(min_probe >= 3, "healthy servers dropped to {min_probe}");
    Ok(())
}
