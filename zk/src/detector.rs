//! Leader detection for agents, schedulers and standby masters.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};
use zookeeper_client::{Client, OneshotWatcher, SessionState};

use crate::url::ZkUrl;
use crate::util::{connect, election_members, join, Backoff};

/// The current leader as read from its election znode.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderInfo {
    /// The leader's sequence number (`json.info_<epoch>`): its leadership epoch.
    pub epoch: u64,
    /// The znode's data as written by the contender (MasterInfo JSON).
    pub data: Vec<u8>,
    /// `data` parsed as JSON; `Value::Null` if it is not valid JSON.
    pub json: serde_json::Value,
}

impl LeaderInfo {
    pub(crate) fn new(epoch: u64, data: Vec<u8>) -> LeaderInfo {
        let json = match serde_json::from_slice(&data) {
            Ok(v) => v,
            Err(e) => {
                warn!(epoch, error = %e, "leader znode data is not JSON");
                serde_json::Value::Null
            }
        };
        LeaderInfo { epoch, data, json }
    }

    /// The leader's `ip:port` from its MasterInfo JSON (`address` first,
    /// as Mesos clients read it; `None` when the data has no address).
    pub fn address(&self) -> Option<String> {
        master_address(&self.json)
    }
}

/// `ip:port` of a master from MasterInfo JSON (`address.{ip,port}`, falling
/// back to `hostname` and `port`).
pub fn master_address(json: &serde_json::Value) -> Option<String> {
    let port = json["address"]["port"]
        .as_u64()
        .or_else(|| json["port"].as_u64())?;
    let host = json["address"]["ip"]
        .as_str()
        .or_else(|| json["address"]["hostname"].as_str())
        .or_else(|| json["hostname"].as_str())?;
    Some(format!("{host}:{port}"))
}

/// One look at the election group, with a watch armed on the change that would alter it.
pub(crate) struct Observation {
    /// Sorted `(sequence, child name)` of the `json.info_` members.
    pub(crate) members: Vec<(u64, String)>,
    /// The lowest member and its data; `None` when there are no members.
    pub(crate) leader: Option<LeaderInfo>,
    /// Fires on the next change of the children (or creation of the parent if missing).
    pub(crate) watcher: OneshotWatcher,
}

/// Lists the group and reads the leader's data, retrying when the leader vanishes between
/// the two reads.
pub(crate) async fn observe(
    client: &Client,
    path: &str,
) -> Result<Observation, zookeeper_client::Error> {
    use zookeeper_client::Error as Z;
    loop {
        match client.list_and_watch_children(path).await {
            Ok((children, watcher)) => {
                let members = election_members(&children);
                let Some((seq, name)) = members.first().cloned() else {
                    return Ok(Observation {
                        members,
                        leader: None,
                        watcher,
                    });
                };
                match client.get_data(&join(path, &name)).await {
                    Ok((data, _)) => {
                        let leader = Some(LeaderInfo::new(seq, data));
                        return Ok(Observation {
                            members,
                            leader,
                            watcher,
                        });
                    }
                    Err(Z::NoNode) => {
                        debug!(node = %name, "leader node vanished while reading it; listing again");
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(Z::NoNode) => {
                // Parent missing: wait for its creation.
                let (stat, watcher) = client.check_and_watch_stat(path).await?;
                if stat.is_some() {
                    continue;
                }
                return Ok(Observation {
                    members: Vec::new(),
                    leader: None,
                    watcher,
                });
            }
            Err(e) => return Err(e),
        }
    }
}

/// Follows the leader of an election group (see the crate docs for the rules).
#[derive(Debug)]
pub struct Detector;

impl Detector {
    /// Starts following the leader under `url.path` in a background task (needs a tokio
    /// runtime). The receiver holds `Some(leader)` while connected and a leader exists,
    /// `None` while unknown: before the first read, while disconnected from ZooKeeper (no
    /// quorum), after a session loss, or when no contender exists. Reconnects forever with
    /// backoff; the task ends when every receiver is dropped.
    pub fn start(url: &ZkUrl, session_timeout: Duration) -> watch::Receiver<Option<LeaderInfo>> {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(run(url.clone(), session_timeout, tx));
        rx
    }
}

fn publish(tx: &watch::Sender<Option<LeaderInfo>>, leader: Option<LeaderInfo>) {
    tx.send_if_modified(|cur| {
        if *cur == leader {
            return false;
        }
        match &leader {
            Some(l) => info!(epoch = l.epoch, "detected leader"),
            None => info!("no leader known"),
        }
        *cur = leader;
        true
    });
}

async fn run(url: ZkUrl, session_timeout: Duration, tx: watch::Sender<Option<LeaderInfo>>) {
    let mut backoff = Backoff::new(Duration::from_secs(5));
    loop {
        let client = tokio::select! {
            r = connect(&url, session_timeout) => r,
            _ = tx.closed() => return,
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                publish(&tx, None);
                let delay = backoff.next_delay();
                warn!(error = %e, ?delay, "detector cannot connect to ZooKeeper; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = tx.closed() => return,
                }
            }
        };
        info!(session = %client.session_id(), url = %url, "detector connected to ZooKeeper");
        backoff.reset();
        if !follow(&client, &url.path, &tx).await {
            return;
        }
        publish(&tx, None);
    }
}

/// Follows the group within one session. Returns false when the receivers are all gone,
/// true when the session ended and a new one is needed.
async fn follow(client: &Client, path: &str, tx: &watch::Sender<Option<LeaderInfo>>) -> bool {
    use zookeeper_client::Error as Z;
    let mut states = client.state_watcher();
    let mut errors = Backoff::new(Duration::from_secs(2));
    loop {
        let state = states.peek_state();
        if state.is_terminated() {
            warn!(?state, "detector session ended");
            return true;
        }
        if state == SessionState::Disconnected {
            publish(tx, None);
            tokio::select! {
                _ = states.changed() => continue,
                _ = tx.closed() => return false,
            }
        }
        match observe(client, path).await {
            Ok(obs) => {
                errors.reset();
                publish(tx, obs.leader);
                tokio::select! {
                    ev = obs.watcher.changed() => debug!(?ev.event_type, "election group changed"),
                    s = states.changed() => {
                        if !matches!(s, SessionState::SyncConnected | SessionState::ConnectedReadOnly) {
                            publish(tx, None);
                        }
                    }
                    _ = tx.closed() => return false,
                }
            }
            Err(Z::SessionExpired | Z::ClientClosed | Z::SessionMoved | Z::AuthFailed) => {
                return true
            }
            Err(e) => {
                publish(tx, None);
                let delay = if matches!(e, Z::ConnectionLoss) {
                    Duration::from_millis(20)
                } else {
                    errors.next_delay()
                };
                warn!(error = %e, "detector cannot read the election group");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = tx.closed() => return false,
                }
            }
        }
    }
}
