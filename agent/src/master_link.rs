//! The agent's link to the leading master: finds it (ZooKeeper or the
//! configured address, following a standby's redirect), registers through
//! the actor, holds one attached gRPC stream and reconnects with
//! exponential backoff and jitter.

use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::v1::{self, agent_message, master_message};
use mezzo_runtime::Shutdown;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, info};

use crate::event::{Event, EventTx};
use crate::{AgentConfig, AgentError};

/// Keeps one attached stream to the master until `shutdown`; dropping it
/// then closes the stream.
pub(crate) async fn run(config: Arc<AgentConfig>, events: EventTx, shutdown: Shutdown) {
    tokio::select! {
        _ = keep_attached(config, events) => {}
        _ = shutdown.wait() => {}
    }
}

/// First delay before reconnecting; it doubles up to
/// `--max-registration-backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

async fn keep_attached(config: Arc<AgentConfig>, events: EventTx) {
    let mut backoff = INITIAL_BACKOFF;
    // With `zk://` the leader is whoever ZooKeeper elected; otherwise the
    // configured address, or where a standby redirected us.
    let mut detector = match mezzo_zk::ZkUrl::parse(&config.master) {
        Ok(url) if config.master.starts_with("zk://") => {
            Some(mezzo_zk::Detector::start(&url, Duration::from_secs(10)))
        }
        _ => None,
    };
    let mut redirect: Option<String> = None;
    loop {
        // The leader this attempt goes to, as ZooKeeper named it.
        let tried = detector
            .as_mut()
            .and_then(|rx| rx.borrow().as_ref().map(|l| l.epoch));
        let target = match detector.as_mut() {
            Some(rx) => {
                let leader = rx
                    .wait_for(|l| l.as_ref().and_then(mezzo_zk::LeaderInfo::address).is_some())
                    .await
                    .ok()
                    .and_then(|l| l.as_ref().and_then(mezzo_zk::LeaderInfo::address));
                match leader {
                    Some(l) => l,
                    None => return,
                }
            }
            None => redirect.take().unwrap_or_else(|| config.master.clone()),
        };
        let attempt = attach_once(&target, &events);
        let result = match detector.as_mut() {
            // A new leader elected: drop this connection and follow it.
            // (Losing ZooKeeper alone is no reason to drop a working stream.)
            Some(rx) => {
                let epoch = rx.borrow_and_update().as_ref().map(|l| l.epoch);
                tokio::select! {
                    r = attempt => r,
                    _ = rx.wait_for(|l| l.as_ref().is_some_and(|l| Some(l.epoch) != epoch)) => {
                        Err(AgentError::Master("the leading master changed".into()))
                    }
                }
            }
            None => attempt.await,
        };
        match result {
            Ok(()) => backoff = INITIAL_BACKOFF,
            Err(AgentError::Redirect(leader)) => {
                info!(leader = %leader, "redirected to the leading master");
                redirect = Some(leader);
                let _ = events.send(Event::MasterDisconnected);
                continue;
            }
            Err(e) => debug!(error = %e, "master connection failed"),
        }
        let _ = events.send(Event::MasterDisconnected);
        if events.is_closed() {
            return;
        }
        let delay = backoff + jitter(backoff / 2);
        if wait_or_new_leader(detector.as_mut(), tried, delay).await {
            // A dead leader keeps its znode until its session expires, so
            // by the time a successor is elected the backoff has grown to
            // seconds: sleeping it out is what made failovers slow. Go to
            // the new leader now, after a jitter that spreads the agents.
            info!("a new leading master was elected: re-registering");
            backoff = INITIAL_BACKOFF;
            tokio::time::sleep(jitter(INITIAL_BACKOFF)).await;
        } else {
            backoff = (backoff * 2).min(config.max_registration_backoff);
        }
    }
}

/// Sleeps `delay`, or less if ZooKeeper names a leader other than `tried`
/// (then returns true).
async fn wait_or_new_leader(
    detector: Option<&mut tokio::sync::watch::Receiver<Option<mezzo_zk::LeaderInfo>>>,
    tried: Option<u64>,
    delay: Duration,
) -> bool {
    let Some(rx) = detector else {
        tokio::time::sleep(delay).await;
        return false;
    };
    let new_leader = |l: &Option<mezzo_zk::LeaderInfo>| {
        l.as_ref()
            .is_some_and(|l| Some(l.epoch) != tried && l.address().is_some())
    };
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        // A closed detector disables this branch: the sleep decides.
        Ok(_) = rx.wait_for(new_leader) => true,
    }
}

/// A random delay below `max`: enough to de-synchronise agents that lost
/// the same master; not security-relevant.
fn jitter(max: Duration) -> Duration {
    let max_ms = max.as_millis().max(1);
    let r = uuid::Uuid::new_v4().as_u128() % max_ms;
    Duration::from_millis(u64::try_from(r).unwrap_or(0))
}

fn endpoint(target: &str) -> Result<tonic::transport::Endpoint, AgentError> {
    let url = if target.starts_with("http://") || target.starts_with("https://") {
        target.to_string()
    } else {
        format!("http://{target}")
    };
    Ok(tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| AgentError::Config(format!("invalid master address '{target}': {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20)))
}

async fn attach_once(target: &str, events: &EventTx) -> Result<(), AgentError> {
    let channel = endpoint(target)?
        .connect()
        .await
        .map_err(|e| AgentError::Master(e.to_string()))?;
    let mut client = v1::agent_service_client::AgentServiceClient::new(channel);
    let (reply, rx) = oneshot::channel();
    let _ = events.send(Event::BuildRegister(reply));
    let register = rx
        .await
        .map_err(|_| AgentError::Master("agent stopped".into()))?;
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let _ = out_tx.send(v1::AgentMessage {
        message: Some(agent_message::Message::Register(register)),
    });
    let response = client
        .attach(UnboundedReceiverStream::new(out_rx))
        .await
        .map_err(|e| {
            match e
                .metadata()
                .get("mezzo-leader")
                .and_then(|v| v.to_str().ok())
            {
                // A standby names the leader: go there at once.
                Some(leader) if leader != target => AgentError::Redirect(leader.to_string()),
                _ => AgentError::Master(e.message().to_string()),
            }
        })?;
    let mut inbound = response.into_inner();
    let first = inbound
        .message()
        .await
        .map_err(|e| AgentError::Master(e.message().to_string()))?
        .ok_or_else(|| AgentError::Master("stream closed before registration".into()))?;
    let Some(master_message::Message::Registered(reg)) = first.message else {
        return Err(AgentError::Master(
            "the master did not answer with Registered".into(),
        ));
    };
    let _ = events.send(Event::MasterConnected {
        agent_id: reg.agent_id,
        epoch: first.epoch,
        tx: out_tx,
    });
    loop {
        match inbound.message().await {
            Ok(Some(msg)) => {
                if events.send(Event::MasterMessage(Box::new(msg))).is_err() {
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(AgentError::Master(e.message().to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backoff that has grown long is cut short when ZooKeeper names a
    /// new leader.
    #[tokio::test]
    async fn a_new_leader_ends_the_backoff_at_once() {
        let leader = |epoch| {
            Some(mezzo_zk::LeaderInfo {
                epoch,
                data: Vec::new(),
                json: serde_json::json!({"address": {"ip": "127.0.0.1", "port": 5050}}),
            })
        };
        let (tx, mut rx) = tokio::sync::watch::channel(leader(1));
        let delay = Duration::from_millis(50);
        assert!(
            !wait_or_new_leader(Some(&mut rx), Some(1), delay).await,
            "same leader: the delay"
        );
        let waiter = tokio::spawn(async move {
            let start = std::time::Instant::now();
            let woke = wait_or_new_leader(Some(&mut rx), Some(1), Duration::from_secs(60)).await;
            (woke, start.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send_replace(leader(2));
        let (woke, waited) = waiter.await.unwrap();
        assert!(woke);
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        // Without ZooKeeper there is only the delay.
        assert!(!wait_or_new_leader(None, None, Duration::from_millis(5)).await);
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(50)) < Duration::from_millis(50));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
