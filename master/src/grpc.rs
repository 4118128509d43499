//! gRPC adapters: the `AgentService` and `Scheduler` services turn requests
//! into actor commands. No cluster state lives here.

use std::pin::Pin;

use futures::Stream;
use mezzo_proto::v1::{
    self, agent_message, agent_service_server::AgentService, scheduler_server::Scheduler,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::actor::Command;
use crate::state::Call;
use crate::MasterError;

/// Shared by both services: the way into the actor.
#[derive(Clone)]
pub(crate) struct Handle {
    pub tx: mpsc::Sender<Command>,
}

impl Handle {
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, MasterError>>) -> Command,
    ) -> Result<T, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| Status::unavailable("master is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("master is shutting down"))?
            .map_err(Status::from)
    }

    async fn call(&self, call: Call) -> Result<Response<v1::CallResponse>, Status> {
        self.ask(|reply| Command::Call { call, reply }).await?;
        Ok(Response::new(v1::CallResponse {}))
    }
}

impl From<MasterError> for Status {
    fn from(e: MasterError) -> Self {
        match e {
            MasterError::InvalidArgument(m) => Status::invalid_argument(m),
            MasterError::NotFound(m) => Status::not_found(m),
            MasterError::FailedPrecondition(m) => Status::failed_precondition(m),
            MasterError::Internal(m) => Status::internal(m),
            e @ MasterError::Listen { .. } => Status::internal(e.to_string()),
            MasterError::NotLeader(leader) => {
                let msg = MasterError::NotLeader(leader.clone()).to_string();
                let mut st = Status::unavailable(msg);
                // The SDK and agents follow this to the leader at once
                // (gRPC's counterpart of Mesos' 307 redirect).
                if let Some(l) = leader.and_then(|l| l.parse().ok()) {
                    st.metadata_mut().insert("mezzo-leader", l);
                }
                st
            }
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AgentService for Handle {
    type AttachStream = BoxStream<v1::MasterMessage>;

    async fn attach(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream closed before register"))?;
        let register = match first.message {
            Some(agent_message::Message::Register(r)) => r,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on the stream must be register",
                ))
            }
        };
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (agent_id, conn) = self
            .ask(|reply| Command::AgentAttach {
                register,
                tx: out_tx,
                reply,
            })
            .await?;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            loop {
                match inbound.next().await {
                    Some(Ok(msg)) => {
                        let Some(msg) = msg.message else { continue };
                        let cmd = Command::AgentMessage {
                            agent_id: agent_id.clone(),
                            conn,
                            msg,
                        };
                        if tx.send(cmd).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        debug!(agent.id = %agent_id, error = %e, "agent stream error");
                        break;
                    }
                    None => break,
                }
            }
            let _ = tx.send(Command::AgentClosed { agent_id, conn }).await;
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            out_rx,
        ))))
    }
}

#[tonic::async_trait]
impl Scheduler for Handle {
    type SubscribeStream = BoxStream<v1::Event>;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let watch = ev_tx.clone();
        let (framework_id, conn) = self
            .ask(|reply| Command::Subscribe {
                request,
                tx: ev_tx,
                reply,
            })
            .await?;
        let tx = self.tx.clone();
        // The receiver is dropped when the client goes away; tell the actor.
        tokio::spawn(async move {
            watch.closed().await;
            let _ = tx
                .send(Command::FrameworkClosed { framework_id, conn })
                .await;
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(ev_rx))))
    }

    async fn accept(
        &self,
        r: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(Call::Accept(r.into_inner())).await
    }
    async fn decline(
        &self,
        r: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(Call::Decline(r.into_inner())).await
    }
    async fn revive(
        &self,
        r: Request<v1::RolesRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(Call::Revive(r.into_inner())).await
    }
    async fn suppress(
        &self,
        r: Request<v1::RolesRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(Call::Suppress(r.into_inner())).await
    }
    async fn kill(
        &self,
        r: Request<v1::KillRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let k = r.into_inner();
        if k.task_id.is_empty() {
            return Err(Status::invalid_argument("kill.task_id is required"));
        }
        self.call(Call::Kill(k)).await
    }
    async fn acknowledge(
        &self,
        r: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(Call::Acknowledge(r.into_inner())).await
    }
    async fn reconcile(
        &self,
        r: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(Call::Reconcile(r.into_inner())).await
    }
    async fn teardown(
        &self,
        r: Request<v1::TeardownRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(Call::Teardown(r.into_inner())).await
    }
}
