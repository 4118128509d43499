//! The framework's durability without a cluster: schedules fire from an injected clock
//! (no master is reachable, so runs stay STARTING), and a framework restarted on the
//! same store follows `startingDeadlineSeconds` for the ticks it missed and never fires
//! one tick twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mezzo_batch::{BatchConfig, MemoryStore, OffsetClock, RunningBatch, Store};
use serde_json::{json, Value};

async fn start(store: &Arc<MemoryStore>, clock: &Arc<OffsetClock>) -> RunningBatch {
    let dir = std::env::temp_dir();
    // Port 9 (discard) on loopback: nothing answers, the driver keeps retrying.
    let mut config = BatchConfig::new("127.0.0.1:9", "127.0.0.1:0".parse().unwrap(), dir);
    config.tick_interval = Duration::from_millis(20);
    config.clock = clock.clone();
    config.store = Some(store.clone() as Arc<dyn Store>);
    mezzo_batch::start(config).await.unwrap()
}

async fn get(batch: &RunningBatch, path: &str) -> Value {
    reqwest_get(&format!("{}{path}", batch.url())).await
}

/// A tiny HTTP/1.1 GET over a TCP stream (keeps this crate free of an HTTP client).
async fn reqwest_get(url: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

async fn post(batch: &RunningBatch, path: &str, body: &Value) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(batch.addr).await.unwrap();
    let body = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counter(m: &Value, name: &str) -> u64 {
    m["counters"][format!("batch.{name}")]["count"]
        .as_u64()
        .unwrap_or(0)
}

async fn runs(batch: &RunningBatch) -> usize {
    get(batch, "/v1/jobs/tick/runs?include=finished")
        .await
        .as_array()
        .map_or(0, Vec::len)
}

fn next_ten_minutes(after: DateTime<Utc>) -> DateTime<Utc> {
    let secs = after.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(600) + 600, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_after_a_restart_follow_the_starting_deadline() {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(OffsetClock::new());
    let batch = start(&store, &clock).await;
    let job = json!({"id": "tick", "run": {"cmd": "true", "cpus": 0.1, "mem": 32}});
    assert_eq!(post(&batch, "/v1/jobs", &job).await, 201);
    let schedule = json!({"id": "m", "cron": "*/10 * * * *", "startingDeadlineSeconds": 60});
    assert_eq!(
        post(&batch, "/v1/jobs/tick/schedules", &schedule).await,
        201
    );

    // One tick: one run.
    let t1 = next_ten_minutes(mezzo_batch::Clock::now(&*clock));
    clock.advance_to(t1);
    until("first run", async || runs(&batch).await == 1).await;
    batch.stop().await;

    // Down for 50 minutes and 30 s: five ticks due, the latest is within the 60 s
    // starting deadline and fires once; the other four are missed.
    clock.advance_to(t1 + chrono::Duration::seconds(50 * 60 + 30));
    let batch = start(&store, &clock).await;
    until("catch-up run", async || runs(&batch).await == 2).await;
    let m = get(&batch, "/v1/metrics").await;
    assert_eq!(counter(&m, "schedule.ticks.fired"), 1, "{m}");
    assert_eq!(counter(&m, "schedule.ticks.missed"), 4, "{m}");
    batch.stop().await;

    // Restarting again before the next tick fires nothing more.
    let batch = start(&store, &clock).await;
    until("state loaded", async || {
        get(&batch, "/v1/info").await["name"] == "mezzo-batch"
    })
    .await;
    let m = get(&batch, "/v1/metrics").await;
    assert_eq!(counter(&m, "schedule.ticks.fired"), 0, "{m}");
    assert_eq!(runs(&batch).await, 2);
    batch.stop().await;

    // Down until two minutes after the next two ticks: both are past the starting
    // deadline, nothing fires.
    clock.advance_to(t1 + chrono::Duration::seconds(72 * 60));
    let batch = start(&store, &clock).await;
    until("ticks handled", async || {
        counter(&get(&batch, "/v1/metrics").await, "schedule.ticks.missed") == 2
    })
    .await;
    assert_eq!(runs(&batch).await, 2);
    batch.stop().await;
}

async fn active_runs(batch: &RunningBatch, job: &str) -> Vec<Value> {
    get(batch, &format!("/v1/jobs/{job}/runs"))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_policies_allow_forbid_replace() {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(OffsetClock::new());
    let batch = start(&store, &clock).await;
    // Without a reachable master runs stay STARTING, i.e. active, across ticks.
    for (job, policy) in [
        ("allow", "ALLOW"),
        ("forbid", "FORBID"),
        ("replace", "REPLACE"),
    ] {
        let spec = json!({"id": job, "run": {"cmd": "true", "cpus": 0.1, "mem": 32}});
        assert_eq!(post(&batch, "/v1/jobs", &spec).await, 201);
        let schedule = json!({"id": "m", "cron": "* * * * *", "concurrencyPolicy": policy});
        assert_eq!(
            post(&batch, &format!("/v1/jobs/{job}/schedules"), &schedule).await,
            201
        );
    }
    let t1 = next_ten_minutes(mezzo_batch::Clock::now(&*clock));
    clock.advance_to(t1);
    until("first ticks", async || {
        counter(&get(&batch, "/v1/metrics").await, "schedule.ticks.fired") == 3
    })
    .await;
    let replaced = active_runs(&batch, "replace").await[0]["id"].clone();
    clock.advance_to(t1 + chrono::Duration::seconds(60));
    until("second ticks", async || {
        let m = get(&batch, "/v1/metrics").await;
        counter(&m, "schedule.ticks.fired") == 5 && counter(&m, "schedule.ticks.skipped") == 1
    })
    .await;
    assert_eq!(active_runs(&batch, "allow").await.len(), 2);
    assert_eq!(active_runs(&batch, "forbid").await.len(), 1);
    let now_active = active_runs(&batch, "replace").await;
    assert_eq!(now_active.len(), 1);
    assert_ne!(now_active[0]["id"], replaced);
    let old = get(
        &batch,
        &format!("/v1/jobs/replace/runs/{}", replaced.as_str().unwrap()),
    )
    .await;
    assert_eq!(old["status"], "FAILED", "{old}");
    assert!(old["reason"].as_str().unwrap().contains("REPLACE"), "{old}");
    // FORBID also refuses manual runs while one is active; ALLOW does not.
    assert_eq!(post(&batch, "/v1/jobs/forbid/runs", &json!({})).await, 409);
    assert_eq!(post(&batch, "/v1/jobs/allow/runs", &json!({})).await, 201);
    batch.stop().await;
}
