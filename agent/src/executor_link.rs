//! The executors' side of the agent: a Unix socket (`<work_dir>/agent.sock`)
//! where each executor connects, registers its container and streams its
//! updates as newline-delimited JSON; the actor answers over the same
//! connection.

use std::time::Duration;

use mezzo_runtime::Shutdown;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tracing::warn;

use crate::event::{Event, EventTx};
use crate::protocol::{FromExecutor, ToExecutor};

/// Accepts executor connections until `shutdown`; each is served on its
/// own task (and ends with the shutdown too, so executors start waiting
/// for the next agent).
pub(crate) async fn accept(listener: UnixListener, events: EventTx, shutdown: Shutdown) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let (events, shutdown) = (events.clone(), shutdown.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(stream, events) => {}
                        _ = shutdown.wait() => {}
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "accepting an executor connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(stream: UnixStream, events: EventTx) {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    let (tx, mut rx) = mpsc::unbounded_channel::<ToExecutor>();
    let mut container: Option<String> = None;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let line = match line {
                    Ok(Some(l)) => l,
                    _ => break,
                };
                match serde_json::from_str::<FromExecutor>(&line) {
                    Ok(FromExecutor::Register { container_id, .. }) => {
                        container = Some(container_id.clone());
                        let _ = events.send(Event::ExecutorRegistered { container_id, tx: tx.clone() });
                    }
                    Ok(FromExecutor::Update { update }) => {
                        if let Some(c) = &container {
                            let _ = events.send(Event::ExecutorUpdate { container_id: c.clone(), update });
                        }
                    }
                    Err(e) => warn!(error = %e, "bad message from executor"),
                }
            }
            Some(msg) = rx.recv() => {
                let Ok(mut line) = serde_json::to_vec(&msg) else { continue };
                line.push(b'\n');
                if wr.write_all(&line).await.is_err() {
                    break;
                }
            }
        }
    }
    if let Some(container_id) = container {
        let _ = events.send(Event::ExecutorDisconnected { container_id });
    }
}
