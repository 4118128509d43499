//! The master actor: the thin shell that runs the pure core
//! ([`crate::state::Master`]) on tokio.
//!
//! gRPC and HTTP handlers send a [`Command`] over an `mpsc` channel and await
//! a oneshot reply. The shell owns what the core must not: the mailbox, the
//! clock and timers, each peer's outbound channel (keyed by connection id),
//! the registry writer, and the snapshot published to HTTP readers. It never
//! awaits a peer: outputs go into per-connection unbounded channels that the
//! gRPC streams drain.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::v1::{self, agent_message};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::info;

use crate::registry::{RegistryHandle, RegistryState};
use crate::state::{self, Call, ConnId, Input, Master, Output, Reply};
use crate::view::Snapshot;
use crate::MasterError;

/// Outbound stream to one agent.
pub(crate) type AgentTx = mpsc::UnboundedSender<Result<v1::MasterMessage, tonic::Status>>;
/// Outbound event stream to one framework.
pub(crate) type EventTx = mpsc::UnboundedSender<Result<v1::Event, tonic::Status>>;

/// A message to the actor.
pub(crate) enum Command {
    /// The election result changed (ZooKeeper mode).
    Leadership(LeaderState),
    AgentAttach {
        register: v1::RegisterAgent,
        tx: AgentTx,
        reply: oneshot::Sender<Result<(String, u64), MasterError>>,
    },
    AgentMessage {
        agent_id: String,
        conn: u64,
        msg: agent_message::Message,
    },
    AgentClosed {
        agent_id: String,
        conn: u64,
    },
    Subscribe {
        request: v1::SubscribeRequest,
        tx: EventTx,
        reply: oneshot::Sender<Result<(String, u64), MasterError>>,
    },
    FrameworkClosed {
        framework_id: String,
        conn: u64,
    },
    Call {
        call: Call,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
}

/// The election state as the shell receives it: a new term comes with the
/// registry it loaded (whose writer the shell keeps).
#[derive(Debug, Clone)]
pub enum LeaderState {
    /// This master leads in `epoch` (the znode sequence).
    Leading {
        /// Leadership epoch: every message carries it.
        epoch: u64,
        /// The registry as this term loaded it.
        registry: Option<Arc<std::sync::Mutex<Option<RegistryHandle>>>>,
    },
    /// Another master leads (`host:port`, if known).
    Following {
        /// The leader's address.
        leader: Option<String>,
    },
    /// No ZooKeeper session: not leading, leader unknown.
    Lost,
}

enum Peer {
    Agent(AgentTx),
    Framework(EventTx),
}

/// Longest time HTTP readers may see agents' status updates late.
const SNAPSHOT_PERIOD: Duration = Duration::from_millis(50);

/// The shell's state around the core.
pub(crate) struct Shell {
    core: Master,
    origin: Instant,
    peers: HashMap<ConnId, Peer>,
    next_conn: ConnId,
    registry_writer: Option<watch::Sender<RegistryState>>,
    /// The writer task of the registry this term writes to.
    registry_done: Option<tokio::task::JoinHandle<()>>,
    /// Something changed since the last publish.
    dirty: bool,
    /// Publish at once rather than at the next period (a caller that got an
    /// answer must see its change in the next read).
    publish_now: bool,
}

impl Shell {
    /// Wraps `core`; a standalone master passes the registry it opened.
    pub(crate) fn new(mut core: Master, registry: Option<RegistryHandle>) -> Self {
        let (registry_writer, registry_done) = match registry {
            Some(h) => {
                core.adopt_registry(h.state);
                (Some(h.writer), Some(h.done))
            }
            None => (None, None),
        };
        Shell {
            core,
            origin: Instant::now(),
            peers: HashMap::new(),
            next_conn: 1,
            registry_writer,
            registry_done,
            dirty: true,
            publish_now: true,
        }
    }

    fn now(&self) -> state::Time {
        self.origin.elapsed()
    }

    fn step(&mut self, input: Input) -> Result<Reply, MasterError> {
        let r = self.core.handle(self.now(), input);
        self.deliver();
        r
    }

    fn conn(&mut self, peer: Peer) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.peers.insert(conn, peer);
        conn
    }

    fn handle(&mut self, cmd: Command) {
        self.dirty = true;
        // Agents' status updates (the hot path) are coalesced.
        if !matches!(cmd, Command::AgentMessage { .. }) {
            self.publish_now = true;
        }
        match cmd {
            Command::Leadership(state) => self.leadership(state),
            Command::AgentAttach {
                register,
                tx,
                reply,
            } => {
                let conn = self.conn(Peer::Agent(tx));
                let r = self.step(Input::AgentAttach { conn, register });
                let _ = reply.send(self.attached(conn, r));
            }
            Command::AgentMessage {
                agent_id,
                conn,
                msg,
            } => {
                let _ = self.step(Input::AgentMessage {
                    agent_id,
                    conn,
                    msg,
                });
            }
            Command::AgentClosed { agent_id, conn } => {
                let _ = self.step(Input::AgentClosed { agent_id, conn });
                self.peers.remove(&conn);
            }
            Command::Subscribe { request, tx, reply } => {
                let conn = self.conn(Peer::Framework(tx));
                let r = self.step(Input::Subscribe { conn, request });
                let _ = reply.send(self.attached(conn, r));
            }
            Command::FrameworkClosed { framework_id, conn } => {
                let _ = self.step(Input::FrameworkClosed { framework_id, conn });
                self.peers.remove(&conn);
            }
            Command::Call { call, reply } => {
                let r = self.step(Input::Call(call)).map(|_| ());
                let _ = reply.send(r);
            }
        }
    }

    /// The reply to an attach or subscribe: the id and connection, or the
    /// error (and the connection is forgotten).
    fn attached(
        &mut self,
        conn: ConnId,
        r: Result<Reply, MasterError>,
    ) -> Result<(String, u64), MasterError> {
        match r {
            Ok(Reply::Agent(id) | Reply::Framework(id)) => Ok((id, conn)),
            Ok(Reply::Done) => {
                self.peers.remove(&conn);
                Err(MasterError::Internal("no id assigned".into()))
            }
            Err(e) => {
                self.peers.remove(&conn);
                Err(e)
            }
        }
    }

    fn leadership(&mut self, state: LeaderState) {
        let input = match state {
            LeaderState::Leading { epoch, registry } => {
                if self.core.leading() && self.core.epoch() == epoch {
                    return;
                }
                let handle = registry.and_then(|r| r.lock().ok().and_then(|mut h| h.take()));
                // The old term's writer is fenced; this term writes with its own.
                self.registry_writer = None;
                let registry = handle.map(|h| {
                    self.registry_writer = Some(h.writer);
                    self.registry_done = Some(h.done);
                    h.state
                });
                state::LeaderState::Leading { epoch, registry }
            }
            LeaderState::Following { leader } => {
                self.registry_writer = None;
                state::LeaderState::Following { leader }
            }
            LeaderState::Lost => {
                self.registry_writer = None;
                state::LeaderState::Lost
            }
        };
        let _ = self.step(Input::Leadership(input));
    }

    /// Hands the core's outputs to the peers' channels.
    fn deliver(&mut self) {
        for out in self.core.take_outputs() {
            match out {
                Output::ToAgent { conn, msg } => {
                    if let Some(Peer::Agent(tx)) = self.peers.get(&conn) {
                        // A closed channel means the peer is gone; its
                        // stream's end tells the core.
                        let _ = tx.send(Ok(msg));
                    }
                }
                Output::ToFramework { conn, event } => {
                    if let Some(Peer::Framework(tx)) = self.peers.get(&conn) {
                        let _ = tx.send(Ok(event));
                    }
                }
                Output::Close { conn, error } => match (self.peers.remove(&conn), error) {
                    (Some(Peer::Agent(tx)), Some(e)) => {
                        let _ = tx.send(Err(tonic::Status::unavailable(e)));
                    }
                    (Some(Peer::Framework(tx)), Some(e)) => {
                        let _ = tx.send(Err(tonic::Status::unavailable(e)));
                    }
                    _ => {}
                },
            }
        }
    }

    /// Ends every peer's stream with `reason` (they reconnect elsewhere or
    /// retry), writes what the registry still owes and waits for it.
    async fn stop(&mut self, reason: &str) {
        for (_, peer) in self.peers.drain() {
            let status = tonic::Status::unavailable(reason);
            match peer {
                Peer::Agent(tx) => {
                    let _ = tx.send(Err(status));
                }
                Peer::Framework(tx) => {
                    let _ = tx.send(Err(status));
                }
            }
        }
        if let Some(state) = self.core.take_registry_update() {
            if let Some(w) = &self.registry_writer {
                w.send_replace(state);
            }
        }
        // Dropping the sender lets the writer finish its last write and end.
        self.registry_writer = None;
        if let Some(done) = self.registry_done.take() {
            let _ = done.await;
        }
    }

    fn tick(&mut self) {
        let _ = self.step(Input::Tick);
        self.dirty = true;
        self.publish_now = true;
    }

    fn allocate(&mut self) {
        let runs = self.core.metrics.allocation_runs;
        let started = std::time::Instant::now();
        let _ = self.step(Input::Allocate);
        if self.core.metrics.allocation_runs != runs {
            self.core
                .record_allocation_run(started.elapsed().as_secs_f64());
            self.dirty = true;
            self.publish_now = true;
        }
    }

    /// Registry writes, histograms and the snapshot, once per batch.
    fn flush(&mut self, snapshot: &watch::Sender<Snapshot>, last_publish: &mut Option<Instant>) {
        if let Some(state) = self.core.take_registry_update() {
            if let Some(w) = &self.registry_writer {
                w.send_replace(state);
            }
        }
        crate::metrics::observe(&self.core.metrics.timings.take_pending());
        let due = last_publish.is_none_or(|at| at.elapsed() >= SNAPSHOT_PERIOD);
        if self.dirty && (due || self.publish_now) {
            self.dirty = false;
            self.publish_now = false;
            *last_publish = Some(Instant::now());
            snapshot.send_replace(Snapshot::of(&self.core));
        }
    }
}

/// Runs the actor until every command sender is dropped or the
/// configured shutdown trips.
pub(crate) async fn run(
    mut shell: Shell,
    mut rx: mpsc::Receiver<Command>,
    snapshot: watch::Sender<Snapshot>,
) {
    let config = shell.core.config.clone();
    let shutdown = config.shutdown.clone();
    let mut alloc_tick = tokio::time::interval(config.allocation_interval);
    alloc_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let maint_period = (config.agent_ping_timeout / 4)
        .clamp(Duration::from_millis(20), Duration::from_millis(250));
    let mut maint_tick = tokio::time::interval(maint_period);
    maint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut publish_tick = tokio::time::interval(SNAPSHOT_PERIOD);
    publish_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_publish: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = publish_tick.tick() => {}
            cmd = rx.recv() => match cmd {
                Some(c) => shell.handle(c),
                None => break,
            },
            _ = alloc_tick.tick() => shell.allocate(),
            _ = maint_tick.tick() => shell.tick(),
            _ = shutdown.wait() => {
                shell.flush(&snapshot, &mut None);
                shell.stop("master is shutting down").await;
                break;
            }
        }
        // Handle whatever else is queued before the costlier work below.
        while let Ok(c) = rx.try_recv() {
            shell.handle(c);
        }
        if shell.core.wants_allocation() {
            shell.allocate();
        }
        shell.flush(&snapshot, &mut last_publish);
    }
    info!("master actor stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MasterConfig;

    fn register(hostname: &str) -> v1::RegisterAgent {
        v1::RegisterAgent {
            info: Some(v1::AgentInfo {
                hostname: hostname.into(),
                resources: mezzo_proto::Resources::parse("cpus:1;mem:128")
                    .map(|r| r.to_proto())
                    .unwrap_or_default(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Attaches an agent through the actor; its id and outbound stream.
    async fn attach(
        tx: &mpsc::Sender<Command>,
        hostname: &str,
    ) -> (
        String,
        mpsc::UnboundedReceiver<Result<v1::MasterMessage, tonic::Status>>,
    ) {
        let (agent_tx, agent_rx) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        tx.send(Command::AgentAttach {
            register: register(hostname),
            tx: agent_tx,
            reply,
        })
        .await
        .unwrap();
        let (id, _) = answer.await.unwrap().unwrap();
        (id, agent_rx)
    }

    fn shell(config: MasterConfig) -> Shell {
        let info = v1::MasterInfo {
            id: "m".into(),
            ip: "127.0.0.1".into(),
            port: 5050,
            epoch: 1,
            ..Default::default()
        };
        Shell::new(Master::new(config, info, 0.0, 1), None)
    }

    /// The shell's timers on tokio's paused clock: pings every ping timeout,
    /// and a silent agent's stream is closed after max timeouts.
    #[tokio::test(start_paused = true)]
    async fn a_silent_agent_is_pinged_then_cut_off_on_the_shells_timers() {
        let config = MasterConfig {
            agent_ping_timeout: Duration::from_secs(1),
            max_agent_ping_timeouts: 3,
            ..MasterConfig::default()
        };
        let (tx, rx) = mpsc::channel(16);
        let (snap_tx, mut snap_rx) = watch::channel(Snapshot::default());
        tokio::spawn(run(shell(config), rx, snap_tx));
        let start = Instant::now();
        let (id, mut agent_rx) = attach(&tx, "h1").await;
        let mut pings = 0;
        let mut registered = false;
        while let Some(msg) = agent_rx.recv().await {
            match msg.unwrap().message {
                Some(v1::master_message::Message::Registered(r)) => {
                    registered = r.agent_id == id;
                }
                Some(v1::master_message::Message::Ping(_)) => pings += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        // The stream ended: the master dropped it as unreachable.
        let silent = start.elapsed();
        assert!(registered);
        assert!(pings >= 2, "{pings} pings");
        assert!(
            silent >= Duration::from_secs(3) && silent < Duration::from_secs(4),
            "{silent:?}"
        );
        let snap = snap_rx
            .wait_for(|s| s.agents.get(&id).is_some_and(|a| !a.reachable))
            .await
            .unwrap()
            .clone();
        assert_eq!(snap.metrics.agent_removals, 1);
    }

    /// A shutdown closes every stream with its reason and stops the actor.
    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_streams_with_a_reason() {
        let config = MasterConfig::default();
        let shutdown = config.shutdown.clone();
        let (tx, rx) = mpsc::channel(16);
        let (snap_tx, _snap_rx) = watch::channel(Snapshot::default());
        let actor = tokio::spawn(run(shell(config), rx, snap_tx));
        let (_, mut agent_rx) = attach(&tx, "h1").await;
        shutdown.trigger();
        actor.await.unwrap();
        let mut last = None;
        while let Some(m) = agent_rx.recv().await {
            last = Some(m);
        }
        let err = last.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(err.message(), "master is shutting down");
    }
}
