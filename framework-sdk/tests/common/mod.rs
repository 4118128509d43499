//! A scripted in-process master for the SDK's tests: it implements the generated
//! `Scheduler` gRPC service, records every call, and lets a test push events into (or
//! close) the current subscription stream. With `offer` set it also plays a tiny
//! cluster: it offers those resources, and "runs" launched tasks by answering with
//! TASK_RUNNING then TASK_FINISHED (TASK_FAILED when the command is `false`).

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mezzo_sdk::v1::event::Event as E;
use mezzo_sdk::v1::scheduler_server::{Scheduler as SchedulerService, SchedulerServer};
use mezzo_sdk::{v1, Resources};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status};

/// How long any single expectation may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

type EventTx = mpsc::UnboundedSender<Result<v1::Event, Status>>;

/// Everything the scripted master saw.
#[derive(Default)]
pub struct Seen {
    pub subscribes: Vec<v1::SubscribeRequest>,
    pub accepts: Vec<v1::AcceptRequest>,
    pub declines: Vec<v1::DeclineRequest>,
    pub revives: Vec<v1::RolesRequest>,
    pub suppresses: Vec<v1::RolesRequest>,
    pub kills: Vec<v1::KillRequest>,
    pub acks: Vec<v1::AcknowledgeRequest>,
    pub reconciles: Vec<v1::ReconcileRequest>,
    pub teardowns: Vec<v1::TeardownRequest>,
}

pub struct Script {
    pub seen: Seen,
    /// Sender of the current subscription's stream; dropping it closes the stream.
    pub stream: Option<EventTx>,
    /// Answer every Subscribe with this error.
    pub refuse: Option<Status>,
    /// Epoch and heartbeat interval of the `Subscribed` event sent on each subscription.
    pub epoch: u64,
    pub heartbeat_seconds: f64,
    /// Resources (Mesos text) to offer after each subscription and each accept,
    /// until the framework suppresses offers.
    pub offer: Option<String>,
    pub offers_sent: u32,
    pub suppressed: bool,
}

impl Script {
    fn push(&self, event: E) {
        if let Some(tx) = &self.stream {
            let _ = tx.send(Ok(v1::Event {
                epoch: self.epoch,
                event: Some(event),
            }));
        }
    }

    fn offer_more(&mut self) {
        let Some(text) = self.offer.clone() else {
            return;
        };
        if self.suppressed {
            return;
        }
        self.offers_sent += 1;
        let offer = v1::Offer {
            id: format!("offer-{}", self.offers_sent),
            framework_id: "fw-1".into(),
            agent_id: "agent-1".into(),
            hostname: "localhost".into(),
            resources: Resources::parse(&text)
                .expect("bad offer resources")
                .to_proto(),
            ..Default::default()
        };
        self.push(E::Offers(v1::event::Offers {
            offers: vec![offer],
        }));
    }

    /// "Runs" the launched tasks: RUNNING, then FINISHED (FAILED for `false`).
    fn run_tasks(&mut self, accept: &v1::AcceptRequest) {
        let tasks = accept
            .operations
            .iter()
            .filter_map(|op| match &op.operation {
                Some(v1::operation::Operation::Launch(l)) => Some(&l.task_infos),
                _ => None,
            });
        let mut updates = Vec::new();
        for task in tasks.flatten() {
            let failed = task.command.as_ref().is_some_and(|c| c.value == "false");
            let end = if failed {
                v1::TaskState::TaskFailed
            } else {
                v1::TaskState::TaskFinished
            };
            for (n, state) in [v1::TaskState::TaskRunning, end].into_iter().enumerate() {
                updates.push(E::Update(v1::event::Update {
                    status: Some(v1::TaskStatus {
                        task_id: task.task_id.clone(),
                        agent_id: task.agent_id.clone(),
                        state: state as i32,
                        uuid: format!("{}-{n}", task.task_id).into_bytes(),
                        ..Default::default()
                    }),
                }));
            }
        }
        for u in updates {
            self.push(u);
        }
    }
}

#[derive(Clone)]
pub struct TestMaster(Arc<Mutex<Script>>);

impl TestMaster {
    pub fn new() -> Self {
        TestMaster(Arc::new(Mutex::new(Script {
            seen: Seen::default(),
            stream: None,
            refuse: None,
            epoch: 1,
            heartbeat_seconds: 15.0,
            offer: None,
            offers_sent: 0,
            suppressed: false,
        })))
    }

    pub fn script(&self) -> MutexGuard<'_, Script> {
        self.0.lock().unwrap()
    }

    /// Pushes an event into the current stream.
    pub fn send(&self, epoch: u64, event: E) {
        let script = self.script();
        let tx = script.stream.as_ref().expect("no open subscription");
        tx.send(Ok(v1::Event {
            epoch,
            event: Some(event),
        }))
        .expect("the driver dropped the stream");
    }

    /// Ends the current stream cleanly.
    pub fn close_stream(&self) {
        self.script().stream = None;
    }

    /// Polls `check` over what the master saw until it holds.
    pub async fn wait_until(&self, what: &str, check: impl Fn(&Seen) -> bool) {
        poll(what, || check(&self.script().seen)).await;
    }

    pub async fn serve(&self) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = SchedulerServer::new(self.clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        (addr, server)
    }
}

fn ok() -> Result<Response<v1::CallResponse>, Status> {
    Ok(Response::new(v1::CallResponse {}))
}

#[tonic::async_trait]
impl SchedulerService for TestMaster {
    type SubscribeStream = UnboundedReceiverStream<Result<v1::Event, Status>>;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut script = self.script();
        script.seen.subscribes.push(request.into_inner());
        if let Some(status) = script.refuse.clone() {
            return Err(status);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Ok(v1::Event {
            epoch: script.epoch,
            event: Some(E::Subscribed(v1::event::Subscribed {
                framework_id: "fw-1".into(),
                heartbeat_interval_seconds: script.heartbeat_seconds,
                master_info: Some(v1::MasterInfo {
                    id: "m1".into(),
                    epoch: script.epoch,
                    ..Default::default()
                }),
            })),
        }));
        script.stream = Some(tx);
        script.offer_more();
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn accept(
        &self,
        r: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let accept = r.into_inner();
        let mut script = self.script();
        script.run_tasks(&accept);
        script.seen.accepts.push(accept);
        script.offer_more();
        ok()
    }

    async fn decline(
        &self,
        r: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.script().seen.declines.push(r.into_inner());
        ok()
    }

    async fn revive(
        &self,
        r: Request<v1::RolesRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let mut script = self.script();
        script.suppressed = false;
        script.seen.revives.push(r.into_inner());
        ok()
    }

    async fn suppress(
        &self,
        r: Request<v1::RolesRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let mut script = self.script();
        script.suppressed = true;
        script.seen.suppresses.push(r.into_inner());
        ok()
    }

    async fn kill(
        &self,
        r: Request<v1::KillRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.script().seen.kills.push(r.into_inner());
        ok()
    }

    async fn acknowledge(
        &self,
        r: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.script().seen.acks.push(r.into_inner());
        ok()
    }

    async fn reconcile(
        &self,
        r: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.script().seen.reconciles.push(r.into_inner());
        ok()
    }

    async fn teardown(
        &self,
        r: Request<v1::TeardownRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let mut script = self.script();
        script.seen.teardowns.push(r.into_inner());
        // Like a real master: the framework's stream ends before the call returns.
        script.stream = None;
        ok()
    }
}

pub async fn poll(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}
