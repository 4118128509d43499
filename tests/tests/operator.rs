//! The operators' view against a real master and agent: every master and
//! agent HTTP endpoint's JSON shape, Prometheus text checked by `promtool`,
//! `/files` confinement to the sandboxes (directly and through the master's
//! agent proxy), teardown, and the dashboard rendered by headless Chromium.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mezzo_proto::v1;
use mezzo_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// GET returning status and body text (no status check).
async fn get_raw(url: &str) -> Result<(u16, String)> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = client.get(url).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.text().await?))
}

fn keys(v: &Value, want: &[&str], what: &str) {
    for k in want {
        assert!(v.get(k).is_some(), "{what} lacks '{k}': {v}");
    }
}

/// A master, an agent with its HTTP API, and a framework with one running
/// task that wrote to stdout and stderr.
struct Cluster {
    master: MasterProc,
    agent: AgentProc,
    fw: TestFramework,
    /// `http://127.0.0.1:<agent port>`.
    agent_url: String,
    agent_id: String,
    task_id: String,
    /// The task's sandbox as the agent's `/state` reports it.
    sandbox: String,
}

async fn cluster(task_id: &str) -> Result<Cluster> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let agent = AgentProc::start(
        &master.addr,
        "cpus:2;mem:1024;disk:2048;ports:[31000-31010]",
        &["--isolation", "posix", "--attributes", "rack:r1"],
    )?;
    let mut fw = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            name: "operator-test".into(),
            ..Default::default()
        },
    )
    .await?;
    fw.launch(
        task_id,
        "echo hello-stdout; echo hello-stderr >&2; exec sleep 300",
        0.5,
        64.0,
    )
    .await?;
    fw.wait_state(task_id, v1::TaskState::TaskRunning, T)
        .await?;
    let (agent_id, port) = eventually(T, "the agent's HTTP port in /master/state", || async {
        let st = master.state().await.ok()?;
        let a = st["slaves"].as_array()?.first()?.clone();
        let port = a["port"].as_u64().filter(|p| *p > 0)?;
        Some((a["id"].as_str()?.to_string(), port))
    })
    .await?;
    let agent_url = format!("http://127.0.0.1:{port}");
    let fid = fw.id.clone();
    let sandbox = eventually(T, "the task's sandbox in the agent's /state", || async {
        let st = get_json(&format!("{agent_url}/state")).await.ok()?;
        let f = st["frameworks"]
            .as_array()?
            .iter()
            .find(|f| f["id"] == fid.as_str())?
            .clone();
        let e = f["executors"]
            .as_array()?
            .iter()
            .find(|e| e["id"] == task_id)?
            .clone();
        let dir = e["directory"].as_str()?.to_string();
        // Wait until the task has written its output.
        let out = std::fs::read_to_string(Path::new(&dir).join("stdout")).ok()?;
        out.contains("hello-stdout").then_some(dir)
    })
    .await?;
    Ok(Cluster {
        master,
        agent,
        fw,
        agent_url,
        agent_id,
        task_id: task_id.into(),
        sandbox,
    })
}

/// Runs `promtool check metrics` on `text`; `Ok(false)` if promtool is absent.
fn promtool_check(text: &str, what: &str) -> Result<bool> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "SKIPPED promtool check of {what}: promtool is not installed (Debian package 'prometheus')"
            );
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "promtool check metrics rejected {what}:\n{}{}\n--- text ---\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_endpoints_have_mesos_shapes_and_metrics_pass_promtool() -> Result<()> {
    let mut c = cluster("op-task-1").await?;
    let url = c.master.url();
    let fid = c.fw.id.clone();

    // /master/state
    let st = c.master.state().await?;
    keys(
        &st,
        &[
            "version",
            "id",
            "pid",
            "hostname",
            "leader",
            "leader_info",
            "activated_slaves",
            "start_time",
            "elected_time",
            "slaves",
            "frameworks",
            "completed_frameworks",
            "orphan_tasks",
            "unregistered_frameworks",
            "flags",
            "build_user",
        ],
        "/master/state",
    );
    assert_eq!(st["activated_slaves"], 1);
    let slave = &st["slaves"][0];
    keys(
        slave,
        &[
            "id",
            "hostname",
            "port",
            "pid",
            "attributes",
            "resources",
            "used_resources",
            "offered_resources",
            "unreserved_resources",
            "reserved_resources",
            "active",
            "registered_time",
            "cpus",
            "mem",
        ],
        "slave",
    );
    assert_eq!(slave["attributes"]["rack"], "r1");
    assert_eq!(slave["resources"]["cpus"], 2.0);
    assert_eq!(slave["used_resources"]["cpus"], 0.5);
    assert_eq!(slave["active"], true);
    let fw = st["frameworks"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["id"] == fid.as_str()))
        .ok_or_else(|| anyhow!("framework missing from state"))?;
    keys(
        fw,
        &[
            "id",
            "name",
            "tasks",
            "completed_tasks",
            "offers",
            "resources",
            "used_resources",
            "offered_resources",
            "active",
            "role",
            "webui_url",
        ],
        "framework",
    );
    let task = &fw["tasks"][0];
    keys(
        task,
        &[
            "id",
            "name",
            "framework_id",
            "slave_id",
            "state",
            "resources",
            "statuses",
        ],
        "task",
    );
    assert_eq!(task["state"], "TASK_RUNNING");

    // /master/state-summary
    let sum = get_json(&format!("{url}/master/state-summary")).await?;
    keys(&sum, &["hostname", "slaves", "frameworks"], "state-summary");
    assert_eq!(sum["slaves"][0]["TASK_RUNNING"], 1);
    assert_eq!(sum["slaves"][0]["framework_ids"][0], fid.as_str());
    let sfw = sum["frameworks"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["id"] == fid.as_str()))
        .ok_or_else(|| anyhow!("framework missing from state-summary"))?;
    assert_eq!(sfw["TASK_RUNNING"], 1);
    assert_eq!(sfw["slave_ids"][0], c.agent_id.as_str());

    // /master/frameworks, /master/slaves
    let fws = get_json(&format!("{url}/master/frameworks")).await?;
    keys(
        &fws,
        &[
            "frameworks",
            "completed_frameworks",
            "unregistered_frameworks",
        ],
        "/master/frameworks",
    );
    let one = get_json(&format!("{url}/master/frameworks?framework_id={fid}")).await?;
    assert_eq!(one["frameworks"].as_array().map(Vec::len), Some(1));
    let slaves = get_json(&format!("{url}/master/slaves")).await?;
    keys(&slaves, &["slaves", "recovered_slaves"], "/master/slaves");
    keys(
        &slaves["slaves"][0],
        &[
            "id",
            "used_resources_full",
            "unreserved_resources_full",
            "offered_resources_full",
        ],
        "/master/slaves slave",
    );
    assert!(slaves["slaves"][0]["unreserved_resources_full"]
        .as_array()
        .is_some_and(|a| a
            .iter()
            .any(|r| r["name"] == "ports" && r["type"] == "RANGES")));

    // /master/tasks with limit, offset and order
    for id in ["op-task-2", "op-task-3"] {
        c.fw.launch(id, "exec sleep 300", 0.5, 64.0).await?;
        c.fw.wait_state(id, v1::TaskState::TaskRunning, T).await?;
    }
    let tasks = get_json(&format!("{url}/master/tasks")).await?;
    let ids = |v: &Value| -> Vec<String> {
        v["tasks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| t["id"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(ids(&tasks), ["op-task-3", "op-task-2", "op-task-1"]);
    let asc = get_json(&format!("{url}/master/tasks?order=asc&limit=2")).await?;
    assert_eq!(ids(&asc), ["op-task-1", "op-task-2"]);
    let page = get_json(&format!("{url}/master/tasks?order=asc&offset=2&limit=5")).await?;
    assert_eq!(ids(&page), ["op-task-3"]);
    let (code, _) = get_raw(&format!("{url}/master/tasks?limit=abc")).await?;
    assert_eq!(code, 400);

    // /master/roles
    let roles = get_json(&format!("{url}/master/roles")).await?;
    let star = roles["roles"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "*"))
        .ok_or_else(|| anyhow!("role * missing: {roles}"))?;
    keys(
        star,
        &["name", "weight", "frameworks", "resources", "quota"],
        "role",
    );
    assert_eq!(star["weight"], 1.0);
    assert_eq!(star["frameworks"][0], fid.as_str());
    assert!((star["resources"]["cpus"].as_f64().unwrap_or(0.0) - 1.5).abs() < 1e-9);

    // health, version, redirect, flags
    assert_eq!(
        get_raw(&format!("{url}/master/health")).await?,
        (200, String::new())
    );
    assert_eq!(get_raw(&format!("{url}/health")).await?.0, 200);
    let version = get_json(&format!("{url}/version")).await?;
    keys(&version, &["version", "build_user"], "/version");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = client.get(format!("{url}/master/redirect")).send().await?;
    assert_eq!(r.status().as_u16(), 307);
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(loc, format!("//{}/master", c.master.addr));
    let flags = get_json(&format!("{url}/master/flags")).await?;
    keys(
        &flags["flags"],
        &["allocation_interval", "weights"],
        "/master/flags",
    );

    // /metrics/snapshot: Mesos names
    let m = eventually(T, "launch latency in /metrics/snapshot", || async {
        let m = get_json(&format!("{url}/metrics/snapshot")).await.ok()?;
        (m["mezzo/task_launch_latency_ms/count"].as_u64() >= Some(3)).then_some(m)
    })
    .await?;
    for k in [
        "master/elected",
        "master/uptime_secs",
        "master/slaves_active",
        "master/frameworks_active",
        "master/tasks_staging",
        "master/tasks_starting",
        "master/tasks_running",
        "master/tasks_finished",
        "master/tasks_failed",
        "master/tasks_killed",
        "master/tasks_lost",
        "master/cpus_total",
        "master/cpus_used",
        "master/cpus_percent",
        "master/mem_total",
        "master/mem_used",
        "master/mem_percent",
        "master/disk_total",
        "master/disk_used",
        "master/disk_percent",
        "master/messages_launch_tasks",
        "master/messages_status_update",
        "master/messages_decline_offers",
        "master/outstanding_offers",
        "master/slave_registrations",
        "allocator/mesos/allocation_runs",
        "allocator/mesos/allocation_run_ms",
        "allocator/mesos/allocation_run_ms/count",
        "allocator/mesos/allocation_run_ms/p50",
        "allocator/mesos/allocation_run_ms/p99",
        "mezzo/offer_accept_latency_ms/p50",
        "mezzo/task_launch_latency_ms/p99",
    ] {
        assert!(
            m.get(k).is_some_and(Value::is_number),
            "/metrics/snapshot lacks {k}: {m}"
        );
    }
    assert_eq!(m["master/elected"], 1);
    assert_eq!(m["master/tasks_running"], 3);
    assert_eq!(m["master/cpus_used"], 1.5);
    assert_eq!(m["master/messages_launch_tasks"], 3);
    assert_eq!(m["master/slave_registrations"], 1);

    // /metrics: Prometheus text, mezzo_ names, histograms, promtool-clean
    let r = reqwest::get(format!("{url}/metrics")).await?;
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ctype.starts_with("text/plain"), "content-type {ctype}");
    let text = r.text().await?;
    for needle in [
        "# TYPE mezzo_allocation_run_duration_seconds histogram",
        "# TYPE mezzo_offer_accept_latency_seconds histogram",
        "# TYPE mezzo_task_launch_latency_seconds histogram",
        "mezzo_task_launch_latency_seconds_count 3",
        "mezzo_master_tasks{state=\"TASK_RUNNING\"} 3",
        "mezzo_master_elected 1",
        "# HELP mezzo_master_resources_used",
        "mezzo_master_messages_total{type=\"launch_tasks\"} 3",
    ] {
        assert!(text.contains(needle), "/metrics lacks '{needle}':\n{text}");
    }
    assert!(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .all(|l| l.starts_with("mezzo_")),
        "every sample is mezzo_-prefixed"
    );
    promtool_check(&text, "the master's /metrics")?;

    // /master/teardown: 400 without an id, 400 for an unknown one, 200
    // and the framework moves to completed_frameworks with its tasks killed.
    let post = |body: &'static str| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client
                .post(format!("{url}/master/teardown"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await?;
            anyhow::Ok(r.status().as_u16())
        }
    };
    assert_eq!(post("").await?, 400);
    assert_eq!(post("frameworkId=no-such-framework").await?, 400);
    let r = client
        .post(format!("{url}/master/teardown"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("frameworkId={fid}"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    let st = eventually(T, "the framework in completed_frameworks", || async {
        let st = c.master.state().await.ok()?;
        st["completed_frameworks"]
            .as_array()?
            .iter()
            .any(|f| f["id"] == fid.as_str())
            .then_some(st)
    })
    .await?;
    assert!(st["frameworks"]
        .as_array()
        .is_some_and(|a| a.iter().all(|f| f["id"] != fid.as_str())));
    let done = get_json(&format!("{url}/master/frameworks?framework_id={fid}")).await?;
    assert!(done["completed_frameworks"][0]["completed_tasks"]
        .as_array()
        .is_some_and(|t| t.len() == 3 && t.iter().all(|t| t["state"] == "TASK_KILLED")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_endpoints_and_files_never_leave_the_sandboxes() -> Result<()> {
    let c = cluster("files-task").await?;
    let a = &c.agent_url;
    let fid = c.fw.id.clone();

    // /state in the Mesos agent shape
    let st = get_json(&format!("{a}/state")).await?;
    keys(
        &st,
        &[
            "id",
            "pid",
            "hostname",
            "resources",
            "attributes",
            "frameworks",
            "completed_frameworks",
            "flags",
            "version",
            "start_time",
        ],
        "agent /state",
    );
    assert_eq!(st["id"], c.agent_id.as_str());
    assert_eq!(st["resources"]["cpus"], 2.0);
    assert_eq!(st["attributes"]["rack"], "r1");
    let f = &st["frameworks"][0];
    keys(
        f,
        &["id", "name", "executors", "completed_executors"],
        "agent framework",
    );
    assert_eq!(f["id"], fid.as_str());
    let e = &f["executors"][0];
    keys(
        e,
        &[
            "id",
            "directory",
            "container",
            "resources",
            "tasks",
            "completed_tasks",
        ],
        "executor",
    );
    assert_eq!(e["tasks"][0]["id"], "files-task");
    assert_eq!(e["tasks"][0]["state"], "TASK_RUNNING");
    assert_eq!(get_raw(&format!("{a}/health")).await?.0, 200);

    // metrics
    let m = get_json(&format!("{a}/metrics/snapshot")).await?;
    for k in [
        "slave/registered",
        "slave/uptime_secs",
        "slave/cpus_total",
        "slave/cpus_used",
        "slave/cpus_percent",
        "slave/mem_total",
        "slave/mem_used",
        "slave/disk_total",
        "slave/tasks_running",
        "slave/tasks_finished",
        "slave/executors_running",
        "slave/frameworks_active",
    ] {
        assert!(
            m.get(k).is_some_and(Value::is_number),
            "agent metrics lack {k}: {m}"
        );
    }
    assert_eq!(m["slave/registered"], 1);
    assert_eq!(m["slave/tasks_running"], 1);
    assert_eq!(m["slave/cpus_used"], 0.5);
    let text = reqwest::get(format!("{a}/metrics")).await?.text().await?;
    assert!(
        text.contains("mezzo_agent_tasks{state=\"TASK_RUNNING\"} 1"),
        "{text}"
    );
    promtool_check(&text, "the agent's /metrics")?;

    // /files on the sandbox: browse, read (Mesos semantics), download
    let dir = c.sandbox.clone();
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let listing = get_json(&format!("{a}/files/browse?path={}", enc(&dir))).await?;
    let names: Vec<String> = listing
        .as_array()
        .ok_or_else(|| anyhow!("browse is not an array: {listing}"))?
        .iter()
        .map(|e| {
            keys(
                e,
                &["path", "nlink", "size", "mtime", "mode", "uid", "gid"],
                "browse entry",
            );
            e["path"]
                .as_str()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(
        names.contains(&"stdout".to_string()) && names.contains(&"stderr".to_string()),
        "{names:?}"
    );
    let stdout = format!("{dir}/stdout");
    let size = get_json(&format!("{a}/files/read?path={}&offset=-1", enc(&stdout))).await?;
    assert_eq!(size["data"], "");
    let n = size["offset"]
        .as_u64()
        .ok_or_else(|| anyhow!("no size: {size}"))?;
    assert_eq!(n, "hello-stdout\n".len() as u64);
    let all = get_json(&format!("{a}/files/read?path={}&offset=0", enc(&stdout))).await?;
    assert_eq!(all["data"], "hello-stdout\n");
    assert_eq!(all["offset"], 0);
    let part = get_json(&format!(
        "{a}/files/read?path={}&offset=6&length=3",
        enc(&stdout)
    ))
    .await?;
    assert_eq!(part["data"], "std");
    assert_eq!(part["offset"], 6);
    let past = get_json(&format!("{a}/files/read?path={}&offset=9999", enc(&stdout))).await?;
    assert_eq!(past["data"], "");
    let stderr = get_json(&format!(
        "{a}/files/read?path={}&offset=0",
        enc(&format!("{dir}/stderr"))
    ))
    .await?;
    assert_eq!(stderr["data"], "hello-stderr\n");
    assert_eq!(
        get_raw(&format!("{a}/files/read?path={}&offset=-5", enc(&stdout)))
            .await?
            .0,
        400
    );
    assert_eq!(
        get_raw(&format!("{a}/files/read?path={}&offset=0", enc(&dir)))
            .await?
            .0,
        400
    );
    assert_eq!(get_raw(&format!("{a}/files/read")).await?.0, 400);
    let r = reqwest::get(format!("{a}/files/download?path={}", enc(&stdout))).await?;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("attachment") && v.contains("stdout")));
    assert_eq!(r.text().await?, "hello-stdout\n");
    // Relative paths are relative to the sandboxes root.
    let work_dir = c.agent.work_dir.path().to_path_buf();
    let root = work_dir.join("sandboxes").canonicalize()?;
    let rel = Path::new(&stdout)
        .strip_prefix(&root)?
        .display()
        .to_string();
    let r = get_json(&format!("{a}/files/read?path={}&offset=0", enc(&rel))).await?;
    assert_eq!(r["data"], "hello-stdout\n");

    // The same through the master's proxy, as the dashboard reads it.
    let proxy = format!("{}/agents/{}", c.master.url(), c.agent_id);
    let r = get_json(&format!(
        "{proxy}/files/read?path={}&offset=0",
        enc(&stdout)
    ))
    .await?;
    assert_eq!(r["data"], "hello-stdout\n");
    let pst = get_json(&format!("{proxy}/state")).await?;
    assert_eq!(pst["id"], c.agent_id.as_str());
    assert_eq!(get_raw(&format!("{proxy}/flags")).await?.0, 404);
    assert_eq!(
        get_raw(&format!("{}/agents/nope/state", c.master.url()))
            .await?
            .0,
        404
    );

    // Escapes. A secret outside the sandboxes but inside the work dir, and
    // symlinks a task could plant in its own sandbox.
    let secret = "TOP-SECRET-CONTENT";
    std::fs::write(work_dir.join("secret.txt"), secret)?;
    let sb = PathBuf::from(&dir);
    std::os::unix::fs::symlink(work_dir.join("secret.txt"), sb.join("leak"))?;
    std::os::unix::fs::symlink("/", sb.join("rootdir"))?;
    std::os::unix::fs::symlink(&work_dir, sb.join("workdir"))?;
    std::os::unix::fs::symlink("../../../../secret.txt", sb.join("relleak"))?;
    let wd = work_dir.display().to_string();
    let wd_canon = work_dir.canonicalize()?.display().to_string();
    let raw_attacks: Vec<String> = vec![
        // plain and absolute
        "/etc/passwd".into(),
        enc("/etc/passwd"),
        enc(&format!("{wd}/secret.txt")),
        enc(&format!("{wd_canon}/secret.txt")),
        enc(&format!("{wd}/meta/agent_id")),
        // dot-dot, in every spelling
        enc(&format!("{dir}/../../../../secret.txt")),
        enc(&format!("{wd}/sandboxes/../secret.txt")),
        enc("../secret.txt"),
        enc("../../../../../../etc/passwd"),
        format!("{}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt", enc(&dir)),
        "%2e%2e%2fsecret.txt".into(),
        "%2E%2E/%2E%2E/etc/passwd".into(),
        "..%2f..%2f..%2fsecret.txt".into(),
        "%252e%252e%252fsecret.txt".into(),
        "%252e%252e/%252e%252e/%252e%252e/etc/passwd".into(),
        "....//....//secret.txt".into(),
        "..%5c..%5csecret.txt".into(),
        "%2Fetc%2Fpasswd".into(),
        format!("{}%00/../../../../secret.txt", enc(&stdout)),
        format!("{}%00", enc(&format!("{wd}/secret.txt"))),
        "%C0%AE%C0%AE/secret.txt".into(),
        // symlinks planted in the sandbox
        enc(&format!("{dir}/leak")),
        enc(&format!("{dir}/relleak")),
        enc(&format!("{dir}/rootdir/etc/passwd")),
        enc(&format!("{dir}/rootdir")),
        enc(&format!("{dir}/workdir/secret.txt")),
        enc(&format!("{dir}/workdir")),
    ];
    let passwd_marker = "root:x:0:0";
    for q in &raw_attacks {
        for base in [a.clone(), proxy.clone()] {
            for ep in ["files/read", "files/browse", "files/download"] {
                let url = format!("{base}/{ep}?path={q}&offset=0");
                let (code, body) = get_raw(&url).await?;
                assert!(
                    code != 200 && !body.contains(secret) && !body.contains(passwd_marker),
                    "{url} was served: {code} {body}"
                );
                assert!(
                    code == 400 || code == 403 || code == 404,
                    "{url}: unexpected status {code} {body}"
                );
            }
        }
    }
    // Browsing the sandbox lists the planted links but never their targets'
    // contents; the secret never appears in any listing.
    let listing = get_raw(&format!("{a}/files/browse?path={}", enc(&dir))).await?;
    assert_eq!(listing.0, 200);
    assert!(listing.1.contains("/leak") && !listing.1.contains(secret));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_the_cluster_in_headless_chromium() -> Result<()> {
    let c = cluster("dash-task-1").await?;
    let url = c.master.url();
    // The static assets are served from the binary.
    let (code, html) = get_raw(&format!("{url}/")).await?;
    assert_eq!(code, 200);
    assert!(html.contains("/dashboard/app.js"));
    let r = reqwest::get(format!("{url}/dashboard/app.js")).await?;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/javascript")));
    assert_eq!(get_raw(&format!("{url}/dashboard/app.css")).await?.0, 200);

    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        eprintln!("SKIPPED headless dashboard check: chromium is not installed (Debian package 'chromium')");
        return Ok(());
    };
    let out = output_dir();
    let profile = tempfile::tempdir()?;
    let run = |args: Vec<String>| -> Result<std::process::Output> {
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null());
        let o = cmd.output().context("running chromium")?;
        if !o.status.success() {
            bail!(
                "chromium failed: {}\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(o)
    };
    // The tasks table is filled by JavaScript: dump the DOM after scripts ran.
    let dom = run(vec!["--dump-dom".into(), format!("{url}/#/tasks")])?;
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    std::fs::write(out.join("dashboard-tasks.html"), &dom)?;
    let table = dom
        .split("id=\"tasks-table\"")
        .nth(1)
        .ok_or_else(|| anyhow!("no tasks table in the rendered DOM:\n{dom}"))?;
    assert!(
        table.contains("dash-task-1"),
        "task missing from the tasks table:\n{dom}"
    );
    assert!(table.contains("TASK_RUNNING"));
    // Overview with bars, and the task's sandbox with its stdout tail.
    let dom = run(vec!["--dump-dom".into(), format!("{url}/")])?;
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        dom.contains("Cluster overview") && dom.contains("class=\"bar\""),
        "{dom}"
    );
    let task_url = format!("{url}/#/task/{}/{}", c.fw.id, c.task_id);
    let dom = run(vec!["--dump-dom".into(), task_url.clone()])?;
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    std::fs::write(out.join("dashboard-task.html"), &dom)?;
    assert!(
        dom.contains("hello-stdout") && dom.contains("hello-stderr"),
        "sandbox logs missing:\n{dom}"
    );
    for (name, page) in [
        ("dashboard.png", format!("{url}/")),
        ("dashboard-tasks.png", format!("{url}/#/tasks")),
        ("dashboard-task.png", task_url),
    ] {
        let shot = out.join(name);
        run(vec![format!("--screenshot={}", shot.display()), page])?;
        assert!(
            std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
            "no screenshot at {}",
            shot.display()
        );
    }
    Ok(())
}
