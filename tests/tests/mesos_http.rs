//! Mesos' v1 HTTP scheduler and operator APIs against a real master and
//! agent: the RecordIO event stream and every error case at the HTTP level
//! (reqwest, as curl would), and an unmodified pymesos scheduler.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use mezzo_tests::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// A SUBSCRIBE response being read: RecordIO records parsed as they arrive,
/// whatever the HTTP chunking.
struct Stream {
    resp: reqwest::Response,
    buf: Vec<u8>,
    ready: VecDeque<Value>,
    stream_id: String,
    framework_id: String,
    /// `http://master`, for acknowledgements.
    url: String,
    /// Tasks whose updates this stream acknowledges as they arrive (as
    /// pymesos does): the agent sends a task's next update only after the
    /// previous one is acknowledged.
    auto_ack: Vec<String>,
}

impl Stream {
    /// POSTs SUBSCRIBE and reads up to SUBSCRIBED, which must come first.
    async fn subscribe(master: &MasterProc, body: Value) -> Result<(Stream, Value)> {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/scheduler", master.url()))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .json(&body)
            .send()
            .await?;
        if resp.status() != 200 {
            bail!(
                "SUBSCRIBE answered {}: {}",
                resp.status(),
                resp.text().await?
            );
        }
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(
            h.get("transfer-encoding").map(|v| v.to_str().unwrap_or("")),
            Some("chunked")
        );
        let stream_id = h
            .get("mesos-stream-id")
            .ok_or_else(|| anyhow!("no Mesos-Stream-Id header"))?
            .to_str()?
            .to_string();
        assert_eq!(stream_id.len(), 36, "a uuid: {stream_id}");
        let mut s = Stream {
            resp,
            buf: Vec::new(),
            ready: VecDeque::new(),
            stream_id,
            framework_id: String::new(),
            url: master.url(),
            auto_ack: Vec::new(),
        };
        let first = s
            .next(T)
            .await?
            .ok_or_else(|| anyhow!("stream ended before SUBSCRIBED"))?;
        assert_eq!(first["type"], "SUBSCRIBED", "first event: {first}");
        s.framework_id = first["subscribed"]["framework_id"]["value"]
            .as_str()
            .ok_or_else(|| anyhow!("no framework_id in {first}"))?
            .to_string();
        Ok((s, first))
    }

    /// The next event; `None` when the master ended the stream.
    async fn next(&mut self, timeout: Duration) -> Result<Option<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.ready.pop_front() {
                return Ok(Some(v));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.resp.chunk())
                .await
                .map_err(|_| anyhow!("timed out waiting for an event"))??;
            let Some(chunk) = chunk else {
                return Ok(None);
            };
            self.buf.extend_from_slice(&chunk);
            // `<decimal length>\n<json>` records, in any chunking.
            while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let len: usize = std::str::from_utf8(&self.buf[..nl])?
                    .parse()
                    .with_context(|| format!("bad RecordIO prefix in {:?}", self.buf))?;
                if self.buf.len() < nl + 1 + len {
                    break;
                }
                let rec: Vec<u8> = self.buf.drain(..nl + 1 + len).skip(nl + 1).collect();
                let ev: Value = serde_json::from_slice(&rec)?;
                self.maybe_ack(&ev).await?;
                self.ready.push_back(ev);
            }
        }
    }

    async fn maybe_ack(&self, ev: &Value) -> Result<()> {
        let st = &ev["update"]["status"];
        let (Some(task), Some(uuid)) = (st["task_id"]["value"].as_str(), st["uuid"].as_str())
        else {
            return Ok(());
        };
        if !self.auto_ack.iter().any(|t| t == task) {
            return Ok(());
        }
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/scheduler", self.url))
            .header("Content-Type", "application/json")
            .header("Mesos-Stream-Id", &self.stream_id)
            .body(
                json!({"type": "ACKNOWLEDGE", "framework_id": {"value": self.framework_id},
                    "acknowledge": {"agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": uuid}})
                .to_string(),
            )
            .send()
            .await?;
        if resp.status() != 202 {
            bail!("ACKNOWLEDGE answered {}", resp.status());
        }
        Ok(())
    }

    /// Waits for an event matching `pred` (others are skipped).
    async fn wait(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + T;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Ok(Some(ev)) if pred(&ev) => return Ok(ev),
                Ok(Some(ev)) => seen.push(ev["type"].to_string()),
                Ok(None) => bail!("stream ended waiting for {what}; saw {seen:?}"),
                Err(e) => bail!("{e} waiting for {what}; saw {seen:?}"),
            }
        }
    }

    async fn offers(&mut self) -> Result<Vec<Value>> {
        let ev = self.wait("OFFERS", |e| e["type"] == "OFFERS").await?;
        Ok(ev["offers"]["offers"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    async fn update(&mut self, task: &str, state: &str) -> Result<Value> {
        let ev = self
            .wait(&format!("{task} {state}"), |e| {
                e["type"] == "UPDATE"
                    && e["update"]["status"]["task_id"]["value"] == task
                    && e["update"]["status"]["state"] == state
            })
            .await?;
        Ok(ev["update"]["status"].clone())
    }
}

/// POSTs a call; returns the status code and the body text.
async fn post(
    master: &MasterProc,
    path: &str,
    stream_id: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Result<(u16, String)> {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", master.url()))
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    if let Some(id) = stream_id {
        req = req.header("Mesos-Stream-Id", id);
    }
    let resp = req.send().await?;
    let code = resp.status().as_u16();
    Ok((code, resp.text().await?))
}

async fn call(master: &MasterProc, stream_id: Option<&str>, body: Value) -> Result<(u16, String)> {
    post(
        master,
        "/api/v1/scheduler",
        stream_id,
        Some("application/json"),
        body.to_string(),
    )
    .await
}

async fn operator(master: &MasterProc, kind: &str) -> Result<Value> {
    let (code, body) = post(
        master,
        "/api/v1",
        None,
        Some("application/json"),
        json!({ "type": kind }).to_string(),
    )
    .await?;
    if code != 200 {
        bail!("{kind}: {code} {body}");
    }
    let v: Value = serde_json::from_str(&body)?;
    assert_eq!(v["type"], kind);
    Ok(v[kind.to_ascii_lowercase()].clone())
}

fn subscribe_body(name: &str, capabilities: &[&str]) -> Value {
    let caps: Vec<Value> = capabilities.iter().map(|c| json!({ "type": c })).collect();
    json!({
        "type": "SUBSCRIBE",
        "subscribe": {"framework_info": {
            "user": "root", "name": name, "failover_timeout": 60, "capabilities": caps,
        }},
    })
}

fn task(id: &str, agent_id: &Value, cmd: &str) -> Value {
    json!({
        "name": id,
        "task_id": {"value": id},
        "agent_id": agent_id,
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}, "role": "*"},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}, "role": "*"},
        ],
        "command": {"value": cmd},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordio_stream_offers_launch_acknowledge_teardown() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let _agent = AgentProc::start(&master.addr, "cpus:2;mem:1024;ports:[31000-31005]", &[])?;
    let (mut s, subscribed) = Stream::subscribe(&master, subscribe_body("curl", &[])).await?;
    let sub = &subscribed["subscribed"];
    assert!(sub["heartbeat_interval_seconds"].as_f64().unwrap_or(0.0) > 0.0);
    let mi = &sub["master_info"];
    let port: u64 = master.addr.rsplit(':').next().unwrap_or("0").parse()?;
    assert_eq!(mi["port"], port, "{mi}");
    assert_eq!(mi["address"]["port"], port);
    assert_eq!(mi["address"]["ip"], "127.0.0.1");
    assert_eq!(
        mi["ip"],
        u32::from_ne_bytes([127, 0, 0, 1]),
        "uint32, network order"
    );
    assert!(mi["id"].as_str().is_some_and(|s| !s.is_empty()));

    let offers = s.offers().await?;
    let offer = &offers[0];
    assert!(offer["id"]["value"].is_string());
    assert_eq!(offer["framework_id"]["value"], s.framework_id.as_str());
    assert_eq!(offer["allocation_info"]["role"], "*");
    let res = offer["resources"].as_array().cloned().unwrap_or_default();
    let cpus = res
        .iter()
        .find(|r| r["name"] == "cpus")
        .ok_or_else(|| anyhow!("no cpus"))?;
    assert_eq!(cpus["type"], "SCALAR");
    assert_eq!(cpus["scalar"]["value"], 2.0);
    assert_eq!(cpus["role"], "*");
    let ports = res
        .iter()
        .find(|r| r["name"] == "ports")
        .ok_or_else(|| anyhow!("no ports"))?;
    assert_eq!(ports["type"], "RANGES");
    assert_eq!(
        ports["ranges"]["range"][0],
        json!({"begin": 31000, "end": 31005})
    );

    let sid = s.stream_id.clone();
    let fid = json!({"value": s.framework_id});
    s.auto_ack.push("sleeper".into());
    let (code, body) = call(
        &master,
        Some(&sid),
        json!({"type": "ACCEPT", "framework_id": fid, "accept": {
            "offer_ids": [offer["id"]],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
                task("echo", &offer["agent_id"], "echo hi; sleep 0.3"),
                task("sleeper", &offer["agent_id"], "sleep 60"),
            ]}}],
            "filters": {"refuse_seconds": 0},
        }}),
    )
    .await?;
    assert_eq!((code, body.as_str()), (202, ""));

    // Every executor update carries a base64 uuid; acknowledge each.
    for state in ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"] {
        let st = s.update("echo", state).await?;
        assert_eq!(st["source"], "SOURCE_EXECUTOR");
        assert_eq!(st["agent_id"], offer["agent_id"]);
        assert_eq!(st["executor_id"]["value"], "echo");
        assert!(st["timestamp"].as_f64().is_some());
        let uuid = st["uuid"]
            .as_str()
            .ok_or_else(|| anyhow!("no uuid in {st}"))?;
        assert_eq!(uuid.len(), 24, "16 bytes in base64: {uuid}");
        let (code, body) = call(
            &master,
            Some(&sid),
            json!({"type": "ACKNOWLEDGE", "framework_id": fid, "acknowledge": {
                "agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": uuid,
            }}),
        )
        .await?;
        assert_eq!((code, body.as_str()), (202, ""), "ack of {state}");
    }
    // The acknowledged terminal task is completed in the master.
    eventually(T, "the acknowledged task to be completed", || async {
        let t = operator(&master, "GET_TASKS").await.ok()?;
        let done = &t["completed_tasks"];
        (done[0]["task_id"]["value"] == "echo" && done[0]["state"] == "TASK_FINISHED").then_some(())
    })
    .await?;

    // SHUTDOWN of a task's executor (its id is the task id) kills the task.
    let (code, body) = call(
        &master,
        Some(&sid),
        json!({"type": "SHUTDOWN", "framework_id": fid, "shutdown": {
            "executor_id": {"value": "sleeper"}, "agent_id": offer["agent_id"]}}),
    )
    .await?;
    assert_eq!((code, body.as_str()), (202, ""));
    let killed = s.update("sleeper", "TASK_KILLED").await?;
    assert!(killed["uuid"].is_string(), "{killed}");

    // Explicit reconciliation answers on the stream, without uuid.
    let (code, _) = call(
        &master,
        Some(&sid),
        json!({"type": "RECONCILE", "framework_id": fid,
               "reconcile": {"tasks": [{"task_id": {"value": "echo"}}]}}),
    )
    .await?;
    assert_eq!(code, 202);
    let st = s.update("echo", "TASK_FINISHED").await?;
    assert_eq!(st["reason"], "REASON_RECONCILIATION");
    assert!(st.get("uuid").is_none(), "{st}");

    // TEARDOWN: 202, and the master ends the stream.
    let (code, _) = call(
        &master,
        Some(&sid),
        json!({"type": "TEARDOWN", "framework_id": fid}),
    )
    .await?;
    assert_eq!(code, 202);
    loop {
        match s.next(T).await? {
            None => break,
            Some(ev)
                if ev["type"] == "ERROR" || ev["type"] == "HEARTBEAT" || ev["type"] == "OFFERS" => {
            }
            Some(ev) => bail!("unexpected event after teardown: {ev}"),
        }
    }
    let f = operator(&master, "GET_FRAMEWORKS").await?;
    assert_eq!(f["frameworks"], json!([]), "{f}");
    assert_eq!(
        f["completed_frameworks"][0]["framework_info"]["id"]["value"],
        s.framework_id.as_str()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_case_and_framework_isolation() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let _agent = AgentProc::start(&master.addr, "cpus:2;mem:1024", &[])?;
    let (mut a, _) = Stream::subscribe(&master, subscribe_body("a", &["PARTITION_AWARE"])).await?;
    let (mut b, _) = Stream::subscribe(&master, subscribe_body("b", &[])).await?;
    let sid = a.stream_id.clone();
    let fid = json!({"value": a.framework_id});
    let expect = |r: (u16, String), code: u16, needle: &str| {
        assert_eq!(r.0, code, "{}", r.1);
        assert!(r.1.contains(needle), "{:?} should mention {needle:?}", r.1);
    };

    // Malformed JSON.
    expect(
        post(
            &master,
            "/api/v1/scheduler",
            Some(&sid),
            Some("application/json"),
            "{\"type\": ",
        )
        .await?,
        400,
        "JSON",
    );
    // Unknown call type.
    expect(
        call(
            &master,
            Some(&sid),
            json!({"type": "DANCE", "framework_id": fid}),
        )
        .await?,
        400,
        "Unknown call type",
    );
    // No type at all.
    expect(
        call(&master, Some(&sid), json!({"framework_id": fid})).await?,
        400,
        "'type'",
    );
    // Missing required fields are named.
    expect(
        call(
            &master,
            Some(&sid),
            json!({"type": "KILL", "framework_id": fid, "kill": {}}),
        )
        .await?,
        400,
        "kill.task_id",
    );
    expect(
        call(
            &master,
            Some(&sid),
            json!({"type": "DECLINE", "decline": {"offer_ids": []}}),
        )
        .await?,
        400,
        "framework_id",
    );
    expect(
        call(
            &master,
            Some(&sid),
            json!({"type": "ACCEPT", "framework_id": fid, "accept": {"offer_ids": [{"value": "x"}],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{"name": "n", "task_id": {"value": "t"}}]}}]}}),
        )
        .await?,
        400,
        "accept.operations[0].launch.task_infos[0].agent_id",
    );
    // Missing Mesos-Stream-Id.
    expect(
        call(
            &master,
            None,
            json!({"type": "REVIVE", "framework_id": fid}),
        )
        .await?,
        400,
        "Mesos-Stream-Id",
    );
    // Wrong Mesos-Stream-Id (another framework's, too).
    expect(
        call(
            &master,
            Some("6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
            json!({"type": "REVIVE", "framework_id": fid}),
        )
        .await?,
        403,
        "stream ID",
    );
    expect(
        call(
            &master,
            Some(&b.stream_id),
            json!({"type": "REVIVE", "framework_id": fid}),
        )
        .await?,
        403,
        "stream ID",
    );
    // Calls before subscribing.
    expect(
        call(
            &master,
            Some(&sid),
            json!({"type": "REVIVE", "framework_id": {"value": "nobody"}}),
        )
        .await?,
        403,
        "not subscribed",
    );
    expect(
        call(
            &master,
            None,
            json!({"type": "REVIVE", "framework_id": {"value": "nobody"}}),
        )
        .await?,
        400,
        "Mesos-Stream-Id",
    );
    // SUBSCRIBE must not carry a stream id.
    expect(
        call(&master, Some(&sid), subscribe_body("c", &[])).await?,
        400,
        "Mesos-Stream-Id",
    );
    // Bodies other than JSON.
    expect(
        post(
            &master,
            "/api/v1/scheduler",
            Some(&sid),
            Some("application/x-protobuf"),
            "\u{8}\u{2}",
        )
        .await?,
        415,
        "application/json",
    );
    expect(
        post(
            &master,
            "/api/v1/scheduler",
            Some(&sid),
            None,
            json!({"type": "REVIVE", "framework_id": fid}).to_string(),
        )
        .await?,
        400,
        "Content-Type",
    );
    // An unknown offer: 202, then TASK_DROPPED (partition-aware) on the stream, as Mesos.
    let (code, _) = call(
        &master,
        Some(&sid),
        json!({"type": "ACCEPT", "framework_id": fid, "accept": {
            "offer_ids": [{"value": "no-such-offer"}],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
                task("ghost", &json!({"value": "no-such-agent"}), "true"),
            ]}}],
        }}),
    )
    .await?;
    assert_eq!(code, 202);
    let st = a.update("ghost", "TASK_DROPPED").await?;
    assert_eq!(st["reason"], "REASON_INVALID_OFFERS");
    assert_eq!(st["source"], "SOURCE_MASTER");
    assert!(
        st.get("uuid").is_none(),
        "master updates are not acknowledged: {st}"
    );
    // The same for a framework without PARTITION_AWARE: TASK_LOST.
    let (code, _) = call(
        &master,
        Some(&b.stream_id),
        json!({"type": "ACCEPT", "framework_id": {"value": b.framework_id}, "accept": {
            "offer_ids": [{"value": "no-such-offer"}],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
                task("ghost-b", &json!({"value": "no-such-agent"}), "true"),
            ]}}],
        }}),
    )
    .await?;
    assert_eq!(code, 202);
    assert_eq!(
        b.update("ghost-b", "TASK_LOST").await?["reason"],
        "REASON_INVALID_OFFERS"
    );

    // None of that disturbed either framework: both streams still work.
    for s in [&mut a, &mut b] {
        let (code, _) = call(
            &master,
            Some(&s.stream_id),
            json!({"type": "RECONCILE", "framework_id": {"value": s.framework_id},
                   "reconcile": {"tasks": [{"task_id": {"value": "probe"}}]}}),
        )
        .await?;
        assert_eq!(code, 202);
        let st = s
            .wait("reconcile answer", |e| {
                e["type"] == "UPDATE" && e["update"]["status"]["task_id"]["value"] == "probe"
            })
            .await?;
        assert_eq!(st["update"]["status"]["reason"], "REASON_RECONCILIATION");
    }
    // MESSAGE and REQUEST are accepted (Mesos' command executor and
    // allocator ignore them too); SHUTDOWN kills the executor's task.
    let (code, _) = call(
        &master,
        Some(&sid),
        json!({"type": "MESSAGE", "framework_id": fid,
        "message": {"agent_id": {"value": "x"}, "executor_id": {"value": "y"}, "data": "aGk="}}),
    )
    .await?;
    assert_eq!(code, 202);
    let (code, _) = call(
        &master,
        Some(&sid),
        json!({"type": "REQUEST", "framework_id": fid,
        "request": {"requests": [{"resources": []}]}}),
    )
    .await?;
    assert_eq!(code, 202);
    let (code, _) = call(
        &master,
        Some(&sid),
        json!({"type": "SHUTDOWN", "framework_id": fid,
        "shutdown": {"agent_id": {"value": "x"}, "executor_id": {"value": "gone"}}}),
    )
    .await?;
    assert_eq!(
        code, 202,
        "SHUTDOWN of an unknown executor is ignored, as in Mesos"
    );
    for kind in ["SUPPRESS", "REVIVE"] {
        let (code, body) = call(
            &master,
            Some(&sid),
            json!({"type": kind, "framework_id": fid}),
        )
        .await?;
        assert_eq!(code, 202, "{kind}: {body}");
    }

    // Failover: re-subscribing with the framework id ends the old stream
    // and invalidates its stream id.
    let mut again = subscribe_body("a", &["PARTITION_AWARE"]);
    again["framework_id"] = fid.clone();
    again["subscribe"]["framework_info"]["id"] = fid.clone();
    let (mut a2, _) = Stream::subscribe(&master, again).await?;
    assert_eq!(a2.framework_id, a.framework_id);
    assert_ne!(a2.stream_id, a.stream_id);
    a.wait("failover ERROR", |e| e["type"] == "ERROR").await?;
    let deadline = Instant::now() + T;
    while a.next(T).await?.is_some() {
        if Instant::now() > deadline {
            bail!("old stream did not end");
        }
    }
    expect(
        call(
            &master,
            Some(&sid),
            json!({"type": "REVIVE", "framework_id": fid}),
        )
        .await?,
        403,
        "stream ID",
    );
    let (code, _) = call(
        &master,
        Some(&a2.stream_id),
        json!({"type": "REVIVE", "framework_id": fid}),
    )
    .await?;
    assert_eq!(code, 202);
    a2.offers().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_api_calls() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let _agent = AgentProc::start(
        &master.addr,
        "cpus:2;mem:1024",
        &["--attributes", "rack:r1"],
    )?;
    let (mut s, _) = Stream::subscribe(&master, subscribe_body("op", &[])).await?;
    s.offers().await?;

    assert_eq!(
        operator(&master, "GET_HEALTH").await?,
        json!({"healthy": true})
    );
    assert_eq!(
        operator(&master, "GET_VERSION").await?["version_info"]["version"],
        "1.11.0"
    );
    let m = operator(&master, "GET_MASTER").await?;
    assert!(m["master_info"]["address"]["port"].is_u64(), "{m}");
    let agents = eventually(T, "GET_AGENTS to list the agent", || async {
        let a = operator(&master, "GET_AGENTS").await.ok()?;
        a["agents"]
            .as_array()
            .is_some_and(|x| x.len() == 1)
            .then_some(a)
    })
    .await?;
    let agent = &agents["agents"][0];
    assert_eq!(agent["active"], true);
    assert!(agent["agent_info"]["id"]["value"].is_string());
    assert_eq!(
        agent["agent_info"]["attributes"],
        json!([{"name": "rack", "type": "TEXT", "text": {"value": "r1"}}])
    );
    assert!(agent["total_resources"].as_array().is_some_and(|r| r
        .iter()
        .any(|x| x["name"] == "cpus" && x["scalar"]["value"] == 2.0)));
    let f = operator(&master, "GET_FRAMEWORKS").await?;
    assert_eq!(f["frameworks"][0]["framework_info"]["name"], "op");
    assert_eq!(f["frameworks"][0]["connected"], true);
    let t = operator(&master, "GET_TASKS").await?;
    assert_eq!(t["tasks"], json!([]));
    let state = operator(&master, "GET_STATE").await?;
    for k in ["get_tasks", "get_executors", "get_frameworks", "get_agents"] {
        assert!(state.get(k).is_some(), "GET_STATE lacks {k}: {state}");
    }
    let (code, body) = post(
        &master,
        "/api/v1",
        None,
        Some("application/json"),
        r#"{"type":"GET_FLAGS"}"#,
    )
    .await?;
    assert_eq!(code, 400, "{body}");
    let (code, _) = post(&master, "/api/v1", None, Some("application/json"), "nope").await?;
    assert_eq!(code, 400);
    Ok(())
}

/// The test virtualenv's python: `MEZZO_PYTHON`, else `<repo>/.venv`,
/// created by scripts/python-env.sh when missing.
fn python() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("MEZZO_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let py = repo.join(".venv/bin/python");
    if !py.exists() {
        let st = Command::new(repo.join("scripts/python-env.sh")).status()?;
        if !st.success() {
            bail!("scripts/python-env.sh failed: {st}");
        }
    }
    Ok(py)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_scheduler_runs_unchanged() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[])?;
    let _agent = AgentProc::start(&master.addr, "cpus:2;mem:1024", &[])?;
    run_pymesos(&master.addr, std::slice::from_ref(&master)).await
}

/// pymesos' MasterDetector reads the `json.info_` znodes with kazoo and
/// follows the elected master, as it does with Mesos.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_scheduler_finds_the_leader_through_zookeeper() -> Result<()> {
    init_logs();
    let zk = mezzo_tests::zk::ZkServer::start()?;
    let url = zk.url("/mezzo");
    let masters: Vec<MasterProc> = (0..2)
        .map(|_| MasterProc::start(&["--zk", &url, "--zk-session-timeout", "2s"]))
        .collect::<Result<_>>()?;
    let _agent = AgentProc::start(&url, "cpus:2;mem:1024", &["--isolation", "posix"])?;
    run_pymesos(&url, &masters).await
}

/// Runs tests/python/pymesos_framework.py against `master` and checks that
/// its 5 tasks ran and finished, as the leading one of `masters` saw it.
async fn run_pymesos(master: &str, masters: &[MasterProc]) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pymesos_framework.py");
    let tag: String = master
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let out_path = output_dir().join(format!("pymesos_framework-{tag}.log"));
    let out = std::fs::File::create(&out_path)?;
    let mut child = Command::new(python()?)
        .arg(&script)
        .arg(master)
        .arg("5")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "pymesos framework did not exit; output:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        status.success(),
        "pymesos framework failed ({status}):\n{output}"
    );
    assert!(output.contains("all 5 tasks finished"), "{output}");
    for i in 0..5 {
        assert!(
            output.contains(&format!(
                "sleep-{i}: TASK_STARTING TASK_RUNNING TASK_FINISHED"
            )),
            "sleep-{i}:\n{output}"
        );
    }
    // It tore itself down on stop(); the master kept its finished tasks.
    let state = eventually(T, "the pymesos framework to be torn down", || async {
        let mut leader = None;
        for m in masters {
            let elected = get_json(&format!("{}/metrics/snapshot", m.url()))
                .await
                .ok()?;
            if elected["master/elected"] == 1 {
                leader = Some(m);
            }
        }
        let s = leader?.state().await.ok()?;
        s["completed_frameworks"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["name"] == "pymesos-sleep"))
            .then_some(s)
    })
    .await?;
    let fw = state["completed_frameworks"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "pymesos-sleep"))
        .ok_or_else(|| anyhow!("no framework"))?;
    let finished = fw["completed_tasks"]
        .as_array()
        .map(|t| t.iter().filter(|t| t["state"] == "TASK_FINISHED").count())
        .unwrap_or(0);
    assert_eq!(finished, 5, "{fw}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_and_rescind_events() -> Result<()> {
    init_logs();
    let master = MasterProc::start(&[
        "--framework-heartbeat-interval",
        "300ms",
        "--offer-timeout",
        "500ms",
    ])?;
    let _agent = AgentProc::start(&master.addr, "cpus:1;mem:256", &[])?;
    let (mut s, sub) = Stream::subscribe(&master, subscribe_body("hb", &[])).await?;
    assert_eq!(sub["subscribed"]["heartbeat_interval_seconds"], 0.3);
    let offer = s.offers().await?[0]["id"].clone();
    s.wait("HEARTBEAT", |e| *e == json!({"type": "HEARTBEAT"}))
        .await?;
    let ev = s.wait("RESCIND", |e| e["type"] == "RESCIND").await?;
    assert_eq!(ev["rescind"]["offer_id"], offer);
    Ok(())
}
