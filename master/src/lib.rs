//! The Mezzo master: collects agents' resources, offers them to frameworks
//! with a Dominant Resource Fairness allocator, and relays launches, kills
//! and status updates.
//!
//! Layout:
//! * [`actor`]: the single owner of cluster state (agents, frameworks, tasks,
//!   offers, filters); everything else talks to it through messages;
//! * [`allocator`]: a pure function from free resources and shares to offers;
//! * `grpc` / `http`: thin adapters serving gRPC and JSON on ONE port.
//!
//! Invariant: only the actor mutates cluster state; the allocator does no I/O.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod actor;
pub mod allocator;
pub mod config;
mod grpc;
mod http;
mod metrics;
mod operator_http;
pub mod registry;
mod scheduler_http;
pub mod sim;
pub mod state;
mod view;

#[doc(hidden)]
pub use view::bench_api;

use std::net::SocketAddr;

use mezzo_proto::v1;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::info;

pub use config::{parse_weights, MasterConfig};

/// The Mesos API level Mezzo speaks; clients such as pymesos read it from
/// `/version` to pick their protocol.
pub const MESOS_COMPAT_VERSION: &str = "1.11.0";

/// Errors returned by master calls; mapped to gRPC/HTTP codes at the edge.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The request is malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// The framework, task or offer does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The call is not allowed in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// This master does not lead; the leader's `host:port` if known.
    #[error("this master is not the leader{}", .0.as_ref().map(|l| format!("; the leader is {l}")).unwrap_or_else(|| ": no leader is elected".into()))]
    NotLeader(Option<String>),
    /// A bug: state the actor expected is missing.
    #[error("internal error: {0}")]
    Internal(String),
    /// Binding or serving failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address we tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running master.
pub struct RunningMaster {
    /// The address gRPC and HTTP are served on.
    pub addr: SocketAddr,
    /// The master's id.
    pub id: String,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningMaster {
    /// Waits until the server stops (it normally runs forever).
    pub async fn wait(self) -> std::io::Result<()> {
        match self.server.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Feeds election results to the actor until the actor goes away. Owns
/// the contender: dropping it would give up the candidacy.
async fn follow_election(
    contender: mezzo_zk::Contender,
    mut rx: watch::Receiver<mezzo_zk::Leadership>,
    tx: mpsc::Sender<actor::Command>,
    url: mezzo_zk::ZkUrl,
    session_timeout: std::time::Duration,
) {
    loop {
        let leadership = rx.borrow_and_update().clone();
        let state = match leadership {
            mezzo_zk::Leadership::Leader { epoch, .. } => {
                // Load the registry before acting as leader; writes are
                // fenced by this term's election node.
                match open_zk_registry(&url, epoch, session_timeout).await {
                    Ok(h) => actor::LeaderState::Leading {
                        epoch,
                        registry: Some(std::sync::Arc::new(std::sync::Mutex::new(Some(h)))),
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "cannot load the registry: not taking leadership yet");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        rx.mark_changed();
                        actor::LeaderState::Lost
                    }
                }
            }
            mezzo_zk::Leadership::Standby { leader } => actor::LeaderState::Following {
                leader: leader.as_ref().and_then(mezzo_zk::LeaderInfo::address),
            },
            mezzo_zk::Leadership::Connecting | mezzo_zk::Leadership::Lost => {
                actor::LeaderState::Lost
            }
        };
        // Leadership may have been lost while the registry loaded.
        if matches!(state, actor::LeaderState::Leading { .. }) && !rx.borrow().is_leader() {
            continue;
        }
        if tx.send(actor::Command::Leadership(state)).await.is_err() {
            break;
        }
        if rx.changed().await.is_err() {
            let _ = tx
                .send(actor::Command::Leadership(actor::LeaderState::Lost))
                .await;
            break;
        }
    }
    drop(contender);
}

async fn open_zk_registry(
    url: &mezzo_zk::ZkUrl,
    epoch: u64,
    session_timeout: std::time::Duration,
) -> Result<registry::RegistryHandle, String> {
    let store = mezzo_zk::ZkStore::connect(url, session_timeout)
        .await
        .map_err(|e| e.to_string())?;
    let fence = mezzo_zk::election_node_path(&url.path, epoch);
    registry::open(Box::new(registry::ZkRegistry::new(store, Some(fence))))
        .await
        .map_err(|e| e.to_string())
}

/// Binds the listener, starts the actor and serves gRPC + HTTP on one port.
pub async fn start(config: MasterConfig) -> Result<RunningMaster, MasterError> {
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| MasterError::Listen {
                addr: config.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| MasterError::Listen {
            addr: config.listen,
            source,
        })?;
    let id = uuid::Uuid::new_v4().to_string();
    let info = v1::MasterInfo {
        id: id.clone(),
        ip: addr.ip().to_string(),
        port: u32::from(addr.port()),
        hostname: config
            .hostname
            .clone()
            .unwrap_or_else(|| addr.ip().to_string()),
        version: MESOS_COMPAT_VERSION.to_string(),
        // Standalone masters lead forever in epoch 1.
        epoch: 1,
    };
    let (cmd_tx, cmd_rx) = mpsc::channel(4096);
    let (snap_tx, snap_rx) = watch::channel(view::Snapshot {
        // Until the actor publishes: standalone masters lead from the start.
        leading: config.zk.is_none(),
        ..view::Snapshot::default()
    });
    let mut standalone_registry = None;
    if let Some(zk) = &config.zk {
        let url = mezzo_zk::ZkUrl::parse(zk)
            .map_err(|e| MasterError::InvalidArgument(format!("--zk: {e}")))?;
        let data = serde_json::to_vec(&view::master_info_json(&info))
            .map_err(|e| MasterError::Internal(e.to_string()))?;
        let (contender, rx) = mezzo_zk::Contender::start(&url, data, config.zk_session_timeout);
        tokio::spawn(follow_election(
            contender,
            rx,
            cmd_tx.clone(),
            url,
            config.zk_session_timeout,
        ));
    } else if let Some(dir) = &config.work_dir {
        let registry = registry::FileRegistry::new(dir.join("registry.json"));
        standalone_registry = Some(
            registry::open(Box::new(registry))
                .await
                .map_err(|e| MasterError::InvalidArgument(format!("--work-dir: {e}")))?,
        );
    }
    let master_shutdown = config.shutdown.clone();
    let master = state::Master::new(config, info, mezzo_proto::now_secs(), rand::random());
    let shell = actor::Shell::new(master, standalone_registry);
    tokio::spawn(actor::run(shell, cmd_rx, snap_tx));

    let handle = grpc::Handle { tx: cmd_tx };
    let grpc_routes = tonic::service::Routes::new(
        v1::agent_service_server::AgentServiceServer::new(handle.clone()),
    )
    .add_service(v1::scheduler_server::SchedulerServer::new(handle.clone()))
    .prepare()
    .into_axum_router();
    let app = http::router(snap_rx.clone(), handle.clone())
        .merge(grpc_routes)
        .merge(scheduler_http::router(handle, snap_rx));
    info!(%addr, master.id = %id, "master listening (gRPC + HTTP)");
    let shutdown = master_shutdown;
    let server = tokio::spawn(mezzo_runtime::serve::serve(listener, app, shutdown));
    Ok(RunningMaster { addr, id, server })
}
