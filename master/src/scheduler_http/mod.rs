//! Mesos' v1 HTTP scheduler API (`POST /api/v1/scheduler`), so unmodified
//! Mesos framework clients (pymesos, mesos-rxjava, ...) run against Mezzo.
//!
//! One implementation underneath, two encodings: every call is converted to
//! the same `mezzo_proto::v1` request the gRPC `Scheduler` service sends to
//! the actor (`Command::Subscribe`, `Command::Call`), and every `v1::Event`
//! the actor emits is converted back to the protobuf JSON mapping of Mesos'
//! `mesos.v1.scheduler.Event`, framed with RecordIO (`<length>\n<json>`).
//!
//! The conversions are pure and unit tested: [`decode`] (JSON → calls),
//! [`encode`] (events → JSON) and [`recordio`] (framing); this module only
//! routes and keeps the sessions.
//!
//! Stream ids: SUBSCRIBE answers with a fresh `Mesos-Stream-Id`; every other
//! call must carry the id of the framework's *current* HTTP subscription.
//! The `sessions` map (framework id -> stream id, actor connection number)
//! is connection bookkeeping of this adapter, not cluster state: an entry is
//! added when the actor accepts a subscription and removed when that
//! subscription's response body is dropped.
//!
//! Status codes: SUBSCRIBE 200 (chunked stream); other calls 202; malformed
//! JSON, unknown call type, missing field, missing `Mesos-Stream-Id` 400;
//! wrong stream id or framework not subscribed (over HTTP) 403; non-JSON body
//! 415; non-leading master 307 with `Location` of the leader.

mod decode;
mod encode;
mod recordio;

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::Stream;
use mezzo_proto::v1;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use crate::actor::Command;
use crate::grpc::Handle;
use crate::http::common::{json_body, plain, redirect, standby_leader};
use crate::state::Call;
use crate::view::Snapshot;
use decode::{parse_call, Action};
use encode::{error_event, event_json};
use recordio::record;

/// The header carrying the subscription's stream id.
pub(crate) const STREAM_ID_HEADER: &str = "mesos-stream-id";

#[derive(Clone, Debug)]
struct Session {
    stream_id: String,
    conn: u64,
}

type Sessions = Arc<Mutex<HashMap<String, Session>>>;

#[derive(Clone)]
struct ApiState {
    handle: Handle,
    snapshot: watch::Receiver<Snapshot>,
    sessions: Sessions,
}

/// The route of the v1 scheduler API (also under `/master`, as Mesos
/// serves it).
pub(crate) fn router(handle: Handle, snapshot: watch::Receiver<Snapshot>) -> Router {
    let state = ApiState {
        handle,
        snapshot,
        sessions: Arc::default(),
    };
    Router::new()
        .route("/api/v1/scheduler", post(scheduler))
        .route("/master/api/v1/scheduler", post(scheduler))
        .with_state(state)
}

/// The event stream's content type for the request's `Accept` header, or
/// `None` when the client accepts nothing we produce (406).
fn stream_content_type(headers: &HeaderMap) -> Option<&'static str> {
    let accept: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|v| !v.is_empty())
        .collect();
    if accept.is_empty()
        || accept
            .iter()
            .any(|a| a == "application/json" || a == "*/*" || a == "application/*")
    {
        Some("application/json")
    } else if accept.iter().any(|a| a == "application/recordio") {
        Some("application/recordio")
    } else {
        None
    }
}

fn status_response(status: &tonic::Status) -> Response {
    // A standby actor answers NotLeader, carrying the leader's address in
    // the `mezzo-leader` metadata: Mesos clients expect a 307 to it.
    if status.code() == tonic::Code::Unavailable {
        if let Some(leader) = status
            .metadata()
            .get("mezzo-leader")
            .and_then(|v| v.to_str().ok())
        {
            return redirect(leader, "/api/v1/scheduler");
        }
    }
    let code = match status.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound | tonic::Code::FailedPrecondition => StatusCode::FORBIDDEN,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    plain(code, status.message())
}

async fn scheduler(State(st): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(leader) = standby_leader(&st.snapshot) {
        return redirect(&leader, "/api/v1/scheduler");
    }
    let value = match json_body(&headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let call = match parse_call(&value) {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "rejected scheduler call");
            return plain(StatusCode::BAD_REQUEST, format!("Invalid call: {e}"));
        }
    };
    let stream_id = headers.get(STREAM_ID_HEADER);
    let action = match call.action {
        Action::Subscribe(request) => {
            if stream_id.is_some() {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "Subscribe calls should not include the 'Mesos-Stream-Id' header",
                );
            }
            return subscribe(st, &headers, request).await;
        }
        action => action,
    };
    let Some(sid) = stream_id else {
        return plain(
            StatusCode::BAD_REQUEST,
            "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
        );
    };
    if let Err(r) = check_stream(&st, &call.framework_id, sid.to_str().unwrap_or("")) {
        return *r;
    }
    match action {
        Action::Actor(Call::Kill(k))
            if call.kind == "SHUTDOWN" && !executor_running(&st.snapshot.borrow(), &k) =>
        {
            // Mesos forwards a shutdown of an unknown executor to the
            // agent, which ignores it: no update either way.
            debug!(framework.id = %call.framework_id, executor.id = %k.task_id, "SHUTDOWN of an executor that is not running ignored");
            StatusCode::ACCEPTED.into_response()
        }
        Action::Actor(c) => {
            debug!(framework.id = %call.framework_id, call = call.kind, "scheduler call over HTTP");
            match st
                .handle
                .ask(|reply| Command::Call { call: c, reply })
                .await
            {
                Ok(()) => StatusCode::ACCEPTED.into_response(),
                Err(s) => status_response(&s),
            }
        }
        Action::Nothing(why) => {
            debug!(framework.id = %call.framework_id, call = call.kind, "{why}");
            StatusCode::ACCEPTED.into_response()
        }
        Action::Subscribe(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "unreachable"),
    }
}

/// A non-subscribe call must come with the stream id of the framework's
/// current HTTP subscription (403 otherwise, as Mesos).
fn check_stream(st: &ApiState, framework_id: &str, sid: &str) -> Result<(), Box<Response>> {
    let current = lock(&st.sessions).get(framework_id).cloned();
    match current {
        None => Err(Box::new(plain(
            StatusCode::FORBIDDEN,
            format!("Framework '{framework_id}' is not subscribed over HTTP"),
        ))),
        Some(s) if s.stream_id != sid => Err(Box::new(plain(
            StatusCode::FORBIDDEN,
            format!(
                "The stream ID '{sid}' included in this request didn't match the stream ID currently associated with framework ID '{framework_id}'"
            ),
        ))),
        Some(_) => Ok(()),
    }
}

/// Whether the state document shows the executor (= task) a SHUTDOWN names
/// as live for that framework.
fn executor_running(snap: &Snapshot, k: &v1::KillRequest) -> bool {
    // Unreachable tasks are live tasks too (their executors may still run).
    snap.frameworks
        .get(&k.framework_id)
        .is_some_and(|f| f.tasks.contains_key(&k.task_id))
}

fn lock(s: &Sessions) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn subscribe(st: ApiState, headers: &HeaderMap, request: v1::SubscribeRequest) -> Response {
    let Some(content_type) = stream_content_type(headers) else {
        return plain(
            StatusCode::NOT_ACCEPTABLE,
            "Mezzo streams events as application/json (or application/recordio with JSON records)",
        );
    };
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (framework_id, conn) = match st
        .handle
        .ask(|reply| Command::Subscribe {
            request,
            tx: ev_tx,
            reply,
        })
        .await
    {
        Ok(r) => r,
        Err(s) => return status_response(&s),
    };
    let stream_id = uuid::Uuid::new_v4().to_string();
    {
        let mut sessions = lock(&st.sessions);
        // Subscriptions race only with each other; the actor's connection
        // numbers tell which one is current.
        let newer = sessions.get(&framework_id).is_none_or(|s| s.conn < conn);
        if newer {
            sessions.insert(
                framework_id.clone(),
                Session {
                    stream_id: stream_id.clone(),
                    conn,
                },
            );
        }
    }
    info!(framework.id = %framework_id, stream.id = %stream_id, "framework subscribed over HTTP");
    let stream = EventStream {
        rx: ev_rx,
        done: false,
        _guard: SessionGuard {
            tx: st.handle.tx.clone(),
            sessions: st.sessions.clone(),
            framework_id,
            conn,
        },
    };
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type == "application/recordio" {
        h.insert(
            "message-content-type",
            HeaderValue::from_static("application/json"),
        );
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&stream_id) {
        h.insert(STREAM_ID_HEADER, v);
    }
    resp
}

/// The body of a SUBSCRIBE response: the actor's events as RecordIO
/// records. It ends when the actor drops the subscription (teardown,
/// failover to a newer connection).
struct EventStream {
    rx: mpsc::UnboundedReceiver<Result<v1::Event, tonic::Status>>,
    /// Set after an error from the actor: the stream ends after reporting it.
    done: bool,
    _guard: SessionGuard,
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            return match this.rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Ok(ev))) => match event_json(&ev) {
                    Some(j) => Poll::Ready(Some(Ok(record(&j)))),
                    None => continue,
                },
                Poll::Ready(Some(Err(s))) => {
                    this.done = true;
                    Poll::Ready(Some(Ok(record(&error_event(s.message())))))
                }
            };
        }
    }
}

/// Dropped with the response body (the client went away, or the stream
/// ended): forgets the session and tells the actor, like the gRPC adapter.
struct SessionGuard {
    tx: mpsc::Sender<Command>,
    sessions: Sessions,
    framework_id: String,
    conn: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        {
            let mut sessions = lock(&self.sessions);
            if sessions
                .get(&self.framework_id)
                .is_some_and(|s| s.conn == self.conn)
            {
                sessions.remove(&self.framework_id);
            }
        }
        debug!(framework.id = %self.framework_id, "HTTP event stream closed");
        let cmd = Command::FrameworkClosed {
            framework_id: std::mem::take(&mut self.framework_id),
            conn: self.conn,
        };
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.tx.try_send(cmd) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let tx = self.tx.clone();
                rt.spawn(async move {
                    let _ = tx.send(cmd).await;
                });
            }
        }
    }
}

// ------------------------------------------------------------------ tests

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_targets_only_live_executors() {
        use crate::sim::{task, Sim};
        let mut sim = Sim::new(crate::config::MasterConfig::default(), 1);
        sim.add_agent("a", "cpus:4;mem:1024").unwrap();
        let f = sim.subscribe("f", "*").unwrap();
        let g = sim.subscribe("g", "*").unwrap();
        sim.allocate();
        let offer = sim.frameworks["f"].offers.keys().next().cloned().unwrap();
        sim.launch(
            "f",
            &offer,
            vec![task("live", "cpus:1;mem:32"), task("done", "cpus:1;mem:32")],
        )
        .unwrap();
        sim.agent_update("a", &f, "done", mezzo_proto::v1::TaskState::TaskFinished);
        let snap = Snapshot::of(&sim.master);
        let k = |fw: &str, t: &str| v1::KillRequest {
            framework_id: fw.into(),
            task_id: t.into(),
            ..Default::default()
        };
        assert!(executor_running(&snap, &k(&f, "live")));
        assert!(!executor_running(&snap, &k(&f, "done")));
        assert!(!executor_running(&snap, &k(&g, "live")));
        assert!(!executor_running(&snap, &k(&f, "gone")));
        assert!(!executor_running(&Snapshot::default(), &k(&f, "live")));
    }

    #[test]
    fn accept_header_negotiation() {
        let mut h = HeaderMap::new();
        assert_eq!(stream_content_type(&h), Some("application/json"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert_eq!(stream_content_type(&h), Some("application/json"));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/recordio"),
        );
        assert_eq!(stream_content_type(&h), Some("application/recordio"));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/x-protobuf"),
        );
        assert_eq!(stream_content_type(&h), None);
    }
}
