//! Leader election for masters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use zookeeper_client::{Acls, Client, CreateMode, SessionState};

use crate::detector::{observe, LeaderInfo};
use crate::error::{Error, Result};
use crate::url::ZkUrl;
use crate::util::{connect, election_members, ensure_path, join, Backoff, ELECTION_LABEL};

/// The session and epoch while leading; cleared on every non-leader state.
type LeadingSlot = Arc<Mutex<Option<(Client, u64)>>>;

fn take_slot(slot: &LeadingSlot) -> Option<(Client, u64)> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn read_slot(slot: &LeadingSlot) -> Option<(Client, u64)> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// What a [`Contender`] currently is. Only `Leader` allows acting as leader.
#[derive(Debug, Clone, PartialEq)]
pub enum Leadership {
    /// Not yet connected / no node created yet (initial state).
    Connecting,
    /// This contender's node is the lowest and its session is connected.
    Leader {
        /// This node's sequence number: the leadership epoch (strictly increasing across
        /// leaders of the group).
        epoch: u64,
        /// The ZooKeeper session that owns the node.
        session_id: i64,
    },
    /// Another node is lower. `leader` is that node's info, `None` if it could not be read.
    Standby {
        /// The current leader as seen by this contender.
        leader: Option<LeaderInfo>,
    },
    /// Connection lost or session expired, or the contender was withdrawn or dropped: stop
    /// acting as leader now. After a short disconnect in which the session survived, the
    /// contender may return to `Leader` with the same epoch; after expiry it contends again
    /// with a new node and a higher epoch.
    Lost,
}

impl Leadership {
    /// True only for [`Leadership::Leader`].
    pub fn is_leader(&self) -> bool {
        matches!(self, Leadership::Leader { .. })
    }

    /// The epoch if this contender leads.
    pub fn leader_epoch(&self) -> Option<u64> {
        match self {
            Leadership::Leader { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }
}

/// A candidate in the election under a [`ZkUrl`] path (see the crate docs for the rules
/// and the fencing invariant).
///
/// Dropping it publishes [`Leadership::Lost`] and stops the background task, which closes
/// the session (so the node disappears at once). [`Contender::withdraw`] does the same but
/// deletes the node explicitly and waits for it.
#[derive(Debug)]
pub struct Contender {
    url: ZkUrl,
    session_timeout: Duration,
    tx: Arc<watch::Sender<Leadership>>,
    stopped: Arc<AtomicBool>,
    leading: LeadingSlot,
    withdraw: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Contender {
    /// Starts contending in a background task (needs a tokio runtime): connects, creates
    /// the parent path if missing, creates an ephemeral sequential `<path>/json.info_` node
    /// holding `data` (at most [`crate::MAX_VALUE_BYTES`]; larger data is refused with an
    /// error log and the state `Lost`), and follows the group. Never gives up: connection failures and
    /// session expiry are retried with backoff. The receiver starts at
    /// [`Leadership::Connecting`].
    pub fn start(
        url: &ZkUrl,
        data: Vec<u8>,
        session_timeout: Duration,
    ) -> (Contender, watch::Receiver<Leadership>) {
        let (tx, rx) = watch::channel(Leadership::Connecting);
        let tx = Arc::new(tx);
        let stopped = Arc::new(AtomicBool::new(false));
        let leading: LeadingSlot = Arc::new(Mutex::new(None));
        let (withdraw_tx, withdraw_rx) = oneshot::channel();
        let task = Task {
            url: url.clone(),
            data,
            session_timeout,
            tx: tx.clone(),
            stopped: stopped.clone(),
            leading: leading.clone(),
        };
        let handle = tokio::spawn(task.run(withdraw_rx));
        let contender = Contender {
            url: url.clone(),
            session_timeout,
            tx,
            stopped,
            leading,
            withdraw: Some(withdraw_tx),
            task: Some(handle),
        };
        (contender, rx)
    }

    /// The group this contender is in.
    pub fn url(&self) -> &ZkUrl {
        &self.url
    }

    /// The current state.
    pub fn leadership(&self) -> Leadership {
        self.tx.borrow().clone()
    }

    /// Another receiver of the state.
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.tx.subscribe()
    }

    /// Confirms leadership with a round trip to ZooKeeper: the session is connected, the
    /// node exists and is still the lowest (after a `sync`, so the read is not stale), and
    /// the published state is `Leader` with that epoch. Returns the epoch, or
    /// [`Error::NotLeader`] (or a connection error). Use before an irreversible action
    /// when the watch value alone is not enough, e.g. right after the process was paused.
    pub async fn confirm_leadership(&self) -> Result<u64> {
        let Some((client, epoch)) = read_slot(&self.leading) else {
            return Err(Error::NotLeader);
        };
        let path = &self.url.path;
        client.sync(path).await.map_err(|e| Error::zk(path, e))?;
        let children = client
            .list_children(path)
            .await
            .map_err(|e| Error::zk(path, e))?;
        let lowest = election_members(&children).first().map(|(s, _)| *s);
        if lowest != Some(epoch) || self.tx.borrow().leader_epoch() != Some(epoch) {
            return Err(Error::NotLeader);
        }
        Ok(epoch)
    }

    /// Leaves the election: publishes [`Leadership::Lost`] first (stop acting), then
    /// deletes this contender's node and closes its session. Waits at most about one
    /// session timeout; the session's expiry removes the node in any case.
    pub async fn withdraw(mut self) {
        if let Some(w) = self.withdraw.take() {
            let _ = w.send(());
        }
        if let Some(mut task) = self.task.take() {
            let limit = self.session_timeout + Duration::from_secs(1);
            if tokio::time::timeout(limit, &mut task).await.is_err() {
                warn!(url = %self.url, "withdrawing contender timed out; abandoning its session");
                task.abort();
            }
        }
        // Drop publishes Lost and marks the contender stopped.
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        // Order matters: once `stopped` is set the task can no longer publish, and the
        // final value is Lost, whatever the task is doing right now.
        self.stopped.store(true, Ordering::SeqCst);
        self.tx.send_replace(Leadership::Lost);
        drop(take_slot(&self.leading));
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// How a session ended.
enum End {
    Withdraw,
    Expired,
}

struct Task {
    url: ZkUrl,
    data: Vec<u8>,
    session_timeout: Duration,
    tx: Arc<watch::Sender<Leadership>>,
    stopped: Arc<AtomicBool>,
    leading: LeadingSlot,
}

fn is_connected(s: SessionState) -> bool {
    matches!(
        s,
        SessionState::SyncConnected | SessionState::ConnectedReadOnly
    )
}

impl Task {
    fn publish(&self, next: Leadership) {
        if !next.is_leader() {
            drop(take_slot(&self.leading));
        }
        let stopped = &self.stopped;
        self.tx.send_if_modified(|cur| {
            if stopped.load(Ordering::SeqCst) || *cur == next {
                return false;
            }
            match &next {
                Leadership::Leader { epoch, session_id } => {
                    info!(url = %self.url, epoch, session = format_args!("{session_id:#x}"), "elected leader")
                }
                Leadership::Standby { leader } => {
                    info!(url = %self.url, leader_epoch = leader.as_ref().map(|l| l.epoch), "standing by")
                }
                Leadership::Lost => warn!(url = %self.url, "leadership lost / not contending"),
                Leadership::Connecting => debug!(url = %self.url, "connecting"),
            }
            *cur = next;
            true
        });
    }

    async fn run(self, mut withdraw: oneshot::Receiver<()>) {
        if self.data.len() > crate::MAX_VALUE_BYTES {
            tracing::error!(
                size = self.data.len(),
                limit = crate::MAX_VALUE_BYTES,
                "contender data too large for a znode; not contending"
            );
            self.publish(Leadership::Lost);
            return;
        }
        let mut backoff = Backoff::new(Duration::from_secs(5));
        loop {
            let client = tokio::select! {
                r = connect(&self.url, self.session_timeout) => r,
                _ = &mut withdraw => {
                    self.publish(Leadership::Lost);
                    return;
                }
            };
            let client = match client {
                Ok(c) => c,
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(error = %e, ?delay, "contender cannot connect to ZooKeeper; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = &mut withdraw => {
                            self.publish(Leadership::Lost);
                            return;
                        }
                    }
                }
            };
            info!(url = %self.url, session = %client.session_id(), "contender connected to ZooKeeper");
            backoff.reset();
            let mut own: Option<u64> = None;
            match self.session(&client, &mut own, &mut withdraw).await {
                End::Withdraw => {
                    self.publish(Leadership::Lost);
                    if let Some(epoch) = own {
                        let node = crate::election_node_path(&self.url.path, epoch);
                        match tokio::time::timeout(self.session_timeout, client.delete(&node, None))
                            .await
                        {
                            Ok(Ok(())) => info!(node, "withdrew from the election"),
                            Ok(Err(e)) => warn!(node, error = %e, "could not delete election node"),
                            Err(_) => warn!(node, "timed out deleting election node"),
                        }
                    }
                    // Dropping the client closes the session.
                    return;
                }
                End::Expired => {
                    self.publish(Leadership::Lost);
                    let delay = backoff.next_delay();
                    warn!(url = %self.url, ?delay, "ZooKeeper session ended; contending again with a new session");
                    drop(client);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = &mut withdraw => return,
                    }
                }
            }
        }
    }

    /// Contends within one session until it ends or the contender is withdrawn.
    async fn session(
        &self,
        client: &Client,
        own: &mut Option<u64>,
        withdraw: &mut oneshot::Receiver<()>,
    ) -> End {
        use zookeeper_client::Error as Z;
        let mut states = client.state_watcher();
        let mut create_attempted = false;
        let mut errors = Backoff::new(Duration::from_secs(2));
        loop {
            let state = states.peek_state();
            if state.is_terminated() {
                return End::Expired;
            }
            if !is_connected(state) {
                self.publish(Leadership::Lost);
                tokio::select! {
                    _ = states.changed() => continue,
                    _ = &mut *withdraw => return End::Withdraw,
                }
            }
            match self.round(client, own, &mut create_attempted).await {
                Ok((view, watcher)) => {
                    errors.reset();
                    // Never publish Leader from a view read before a disconnect.
                    if !is_connected(states.peek_state()) {
                        continue;
                    }
                    if let Some(epoch) = view.leader_epoch() {
                        *self.leading.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((client.clone(), epoch));
                    }
                    self.publish(view);
                    tokio::select! {
                        ev = watcher.changed() => debug!(?ev.event_type, "election group changed"),
                        s = states.changed() => {
                            if !is_connected(s) {
                                // Fencing: stop leading the moment the connection drops.
                                self.publish(Leadership::Lost);
                            }
                        }
                        _ = &mut *withdraw => return End::Withdraw,
                    }
                }
                Err(Z::SessionExpired | Z::ClientClosed | Z::SessionMoved | Z::AuthFailed) => {
                    return End::Expired
                }
                Err(e) => {
                    self.publish(Leadership::Lost);
                    let delay = if matches!(e, Z::ConnectionLoss) {
                        Duration::from_millis(20)
                    } else {
                        errors.next_delay()
                    };
                    warn!(error = %e, "contender cannot read or join the election group");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = &mut *withdraw => return End::Withdraw,
                    }
                }
            }
        }
    }

    /// Ensures this session has a node in the group, then evaluates the group.
    async fn round(
        &self,
        client: &Client,
        own: &mut Option<u64>,
        create_attempted: &mut bool,
    ) -> Result<(Leadership, zookeeper_client::OneshotWatcher), zookeeper_client::Error> {
        let path = &self.url.path;
        loop {
            if own.is_none() {
                if let Err(e) = ensure_path(client, path).await {
                    warn!(path, error = %e, "cannot create the election path");
                }
                if *create_attempted {
                    // A create whose reply was lost may have succeeded: adopt that node
                    // rather than leaving an orphan that would lead with nobody behind it.
                    *own = self.find_own_node(client).await?;
                }
                if own.is_none() {
                    *create_attempted = true;
                    let prefix = join(path, &format!("{ELECTION_LABEL}_"));
                    let options = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
                    let (_, seq) = client.create(&prefix, &self.data, &options).await?;
                    let epoch = seq.into_i64() as u64;
                    info!(node = %format!("{prefix}{seq}"), epoch, "joined the election");
                    *own = Some(epoch);
                }
            }
            let Some(me) = *own else { continue };
            let obs = observe(client, path).await?;
            if !obs.members.iter().any(|(s, _)| *s == me) {
                warn!(
                    epoch = me,
                    "our election node disappeared while the session is alive; joining again"
                );
                *own = None;
                *create_attempted = false;
                continue;
            }
            if obs.members.first().map(|(s, _)| *s) == Some(me) {
                let session_id = client.session_id().0;
                return Ok((
                    Leadership::Leader {
                        epoch: me,
                        session_id,
                    },
                    obs.watcher,
                ));
            }
            return Ok((Leadership::Standby { leader: obs.leader }, obs.watcher));
        }
    }

    /// An election node owned by this session, if one exists.
    async fn find_own_node(&self, client: &Client) -> Result<Option<u64>, zookeeper_client::Error> {
        let children = match client.list_children(&self.url.path).await {
            Ok(c) => c,
            Err(zookeeper_client::Error::NoNode) => return Ok(None),
            Err(e) => return Err(e),
        };
        let session = client.session_id().0;
        for (seq, name) in crate::util::election_members(&children) {
            if let Some(stat) = client.check_stat(&join(&self.url.path, &name)).await? {
                if stat.ephemeral_owner == session {
                    info!(node = %name, "adopting our election node created before a connection loss");
                    return Ok(Some(seq));
                }
            }
        }
        Ok(None)
    }
}
