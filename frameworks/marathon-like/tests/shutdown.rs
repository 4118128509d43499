//! Graceful shutdown of a standalone instance, without a master: the API stops
//! accepting, an open event stream ends instead of holding the server up, and the
//! state written before the shutdown is there for the next instance.

use std::time::Duration;

use mezzo_marathon::MarathonConfig;
use mezzo_runtime::Shutdown;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// An address nothing listens on: the driver keeps retrying, the API still works.
const NO_MASTER: &str = "127.0.0.1:1";

#[tokio::test]
async fn shutdown_ends_event_streams_stops_accepting_and_keeps_the_state() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = MarathonConfig::new(NO_MASTER, "127.0.0.1:0".parse()?, dir.path());
    let shutdown = Shutdown::new();
    let marathon = mezzo_marathon::start_with(config.clone(), shutdown.clone()).await?;
    let url = marathon.url();
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{url}/v2/apps"))
        .json(&serde_json::json!({"id": "/web", "cmd": "sleep 100", "instances": 1}))
        .send()
        .await?;
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);

    let mut events = http.get(format!("{url}/v2/events")).send().await?;
    let first = tokio::time::timeout(Duration::from_secs(5), events.chunk()).await??;
    assert!(first.is_some(), "stream attached");

    let addr = marathon.addr;
    let waiting = tokio::spawn(marathon.wait());
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(20), waiting).await???;
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the event stream ended");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "a stopped API must not accept"
    );

    let again = mezzo_marathon::start(config).await?;
    let app: serde_json::Value = http
        .get(format!("{}/v2/apps/web", again.url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(app["app"]["id"], "/web");
    assert_eq!(app["app"]["instances"], 1);
    again.shutdown().await;
    Ok(())
}
