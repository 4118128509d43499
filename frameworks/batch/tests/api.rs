//! The wired framework without a master: the `/v1` API answers through the actor, a
//! change is durable across a restart on the same store, and stopping returns.

use std::sync::Arc;
use std::time::Duration;

use mezzo_batch::{BatchConfig, MemoryStore, Store};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 exchange (`Connection: close`); returns the status and JSON body.
async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let text = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    // The body may be chunked: take the JSON between the first `{`/`[` and the last.
    let start = text.find(['{', '[']).unwrap_or(0);
    let end = text.rfind(['}', ']']).map_or(text.len(), |e| e + 1);
    (
        status,
        serde_json::from_str(&text[start..end]).unwrap_or(Value::Null),
    )
}

async fn start(store: Arc<dyn Store>) -> mezzo_batch::RunningBatch {
    let dir = std::env::temp_dir();
    // No master listens on port 1: the driver keeps retrying in the background.
    let mut config = BatchConfig::new("127.0.0.1:1", "127.0.0.1:0".parse().unwrap(), dir);
    config.store = Some(store);
    config.tick_interval = Duration::from_millis(50);
    mezzo_batch::start(config).await.unwrap()
}

#[tokio::test]
async fn the_api_answers_through_the_actor_and_state_survives_a_restart() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let batch = start(store.clone()).await;
    let job = json!({"id": "a", "run": {"cmd": "true", "mem": 32}});
    let (code, body) = call(batch.addr, "POST", "/v1/jobs", Some(job.clone())).await;
    assert_eq!((code, &body["id"]), (201, &json!("a")), "{body}");
    let (code, body) = call(batch.addr, "POST", "/v1/jobs", Some(job)).await;
    assert_eq!(code, 409, "{body}");
    let bad = json!({"id": "b", "run": {"cmd": "true", "mem": 1}});
    let (code, body) = call(batch.addr, "POST", "/v1/jobs", Some(bad)).await;
    assert_eq!(
        (code, &body["details"][0]["path"]),
        (422, &json!("/run/mem"))
    );
    let (code, run) = call(batch.addr, "POST", "/v1/jobs/a/runs", Some(json!({}))).await;
    assert_eq!((code, &run["status"]), (201, &json!("STARTING")), "{run}");
    let (code, body) = call(batch.addr, "GET", "/v1/jobs/missing", None).await;
    assert_eq!(
        (code, body),
        (404, json!({"message": "Job 'missing' does not exist"}))
    );
    let (_, queue) = call(batch.addr, "GET", "/v1/queue", None).await;
    assert_eq!(queue[0]["runs"][0]["runId"], run["id"]);
    tokio::time::timeout(Duration::from_secs(10), batch.stop())
        .await
        .expect("stopping returns");

    let batch = start(store).await;
    let path = format!("/v1/jobs/a/runs/{}", run["id"].as_str().unwrap_or_default());
    let (code, again) = call(batch.addr, "GET", &path, None).await;
    assert_eq!((code, &again["id"]), (200, &run["id"]), "{again}");
    let (_, m) = call(batch.addr, "GET", "/v1/metrics", None).await;
    assert_eq!(m["gauges"]["batch.runs.active"]["value"], 1, "{m}");
    tokio::time::timeout(Duration::from_secs(10), batch.stop())
        .await
        .expect("stopping returns");
}
