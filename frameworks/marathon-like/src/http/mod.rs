//! Marathon's REST API over axum: each handler parses the request, sends a closure to
//! the actor and maps the result (or an [`ApiError`]) to Marathon's status codes,
//! headers and bodies.
//!
//! An instance that does not lead answers `/ping`, `/v2/leader` and `/v2/info` itself
//! and redirects every other request (`307`, same method, path and query) to the
//! leader, or answers 503 while no leader is known.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::StreamExt;
use mezzo_runtime::Shutdown;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_stream::wrappers::BroadcastStream;
use tracing::warn;

mod apps;
mod groups;

use apps::*;
use groups::*;

use crate::actor::Handle;
use crate::model::{normalize_id, timestamp};
use crate::state::{parse_bool, ApiError, DeploymentResult, Embed};

/// Static facts for `/v2/info`.
#[derive(Debug, Clone)]
pub(crate) struct Info {
    pub addr: SocketAddr,
    pub master: String,
    pub framework_name: String,
    pub role: String,
    pub failover_timeout: f64,
    /// The `--zk` URL, if any.
    pub zk: Option<String>,
    /// Who leads, as this instance sees it.
    pub view: watch::Receiver<View>,
}

/// Leadership as the API sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum View {
    /// This instance leads (its actor answers).
    Leading,
    /// Another instance leads: its `host:port`, `None` while unknown.
    Standby(Option<String>),
}

impl Info {
    /// `host:port` of the leader, if known.
    fn leader(&self) -> Option<String> {
        match &*self.view.borrow() {
            View::Leading => Some(self.addr.to_string()),
            View::Standby(l) => l.clone(),
        }
    }
}

/// Redirects what only the leader can answer when this instance does not lead.
async fn leader_only(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if matches!(path, "/ping" | "/v2/leader" | "/v2/info") {
        return next.run(req).await;
    }
    let view = s.info.view.borrow().clone();
    match view {
        View::Leading => next.run(req).await,
        View::Standby(Some(leader)) => {
            let target = format!(
                "http://{leader}{}",
                req.uri().path_and_query().map_or(path, |p| p.as_str())
            );
            match HeaderValue::from_str(&target) {
                Ok(location) => (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, location)],
                )
                    .into_response(),
                Err(_) => ApiError::Unavailable("bad leader address".into()).into_response(),
            }
        }
        View::Standby(None) => {
            ApiError::Unavailable("no leader elected; try again".into()).into_response()
        }
    }
}

#[derive(Clone)]
struct AppState {
    handle: Handle,
    info: Info,
    /// Ends long-lived responses (the event stream) when the server stops.
    shutdown: Shutdown,
}

type Params = Query<Vec<(String, String)>>;

fn param<'a>(q: &'a Params, name: &str) -> Option<&'a str> {
    q.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn params(q: &Params, name: &str) -> Vec<String> {
    q.0.iter()
        .filter(|(k, _)| k == name || k == &format!("{name}[]"))
        .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect()
}

fn flag(q: &Params, name: &str, default: bool) -> bool {
    param(q, name).and_then(parse_bool).unwrap_or(default)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::BadRequest { message, details } => (
                StatusCode::BAD_REQUEST,
                json!({"message": message, "details": details}),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, json!({"message": m})),
            ApiError::Conflict {
                message,
                deployments,
            } => {
                let mut body = json!({"message": message});
                if !deployments.is_empty() {
                    body["deployments"] = json!(deployments
                        .iter()
                        .map(|d| json!({"id": d}))
                        .collect::<Vec<_>>());
                }
                (StatusCode::CONFLICT, body)
            }
            ApiError::Invalid(details) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": "Object is not valid", "details": details}),
            ),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, json!({"message": m})),
        };
        (status, Json(body)).into_response()
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
        message: "Invalid JSON".into(),
        details: vec![crate::model::Violation::new("/", e.to_string())],
    })
}

fn deployment_response(
    status: StatusCode,
    r: &DeploymentResult,
    location: Option<&str>,
) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&r.deployment_id) {
        headers.insert("Marathon-Deployment-Id", v);
    }
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        headers.insert(header::LOCATION, l);
    }
    (status, headers, Json(json!(r))).into_response()
}

/// Serves the API until `shutdown` trips, then finishes the requests in flight.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    handle: Handle,
    info: Info,
    shutdown: Shutdown,
) {
    let state = AppState {
        handle,
        info,
        shutdown: shutdown.clone(),
    };
    let app = Router::new()
        .route(
            "/ping",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain")], "pong") }),
        )
        .route("/metrics", get(metrics))
        .route("/v2/info", get(info_handler))
        .route("/v2/leader", get(leader).delete(abdicate))
        .route(
            "/v2/apps",
            get(list_apps)
                .post(create_app)
                .put(put_apps)
                .patch(patch_apps),
        )
        .route(
            "/v2/apps/{*rest}",
            get(app_get)
                .put(app_put)
                .patch(app_patch)
                .delete(app_delete)
                .post(app_post),
        )
        .route("/v2/tasks", get(list_tasks))
        .route("/v2/tasks/delete", post(delete_tasks))
        .route("/v2/deployments", get(list_deployments))
        .route("/v2/deployments/{id}", delete(delete_deployment))
        .route("/v2/queue", get(queue))
        .route("/v2/queue/{*rest}", delete(reset_delay))
        .route("/v2/events", get(events))
        .route(
            "/v2/groups",
            get(group_root_get)
                .post(group_root_post)
                .put(group_root_put)
                .delete(group_root_delete),
        )
        .route(
            "/v2/groups/{*rest}",
            get(group_get)
                .post(group_post)
                .put(group_put)
                .delete(group_delete),
        )
        .layer(middleware::from_fn_with_state(state.clone(), leader_only))
        .with_state(state);
    if let Err(e) = mezzo_runtime::serve::serve(listener, app, shutdown).await {
        warn!(error = %e, "http server failed");
    }
}

// ------------------------------------------------------------------ misc

async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let (counters, gauges) = s
        .handle
        .call(|core, _| {
            let counters: serde_json::Map<String, Value> = core
                .counters
                .iter()
                .map(|(k, v)| (format!("marathon.{k}.counter"), json!({"count": v})))
                .collect();
            let running = core.instances.values().filter(|i| i.state == "TASK_RUNNING").count();
            let gauges = json!({
                "marathon.apps.active.gauge": {"value": core.apps.len()},
                "marathon.deployments.active.gauge": {"value": core.deployments.len()},
                "marathon.instances.running.gauge": {"value": running},
                "marathon.instances.launch-overdue.gauge": {"value": core.queue.values().map(|q| q.count).sum::<usize>()},
            });
            (counters, gauges)
        })
        .await?;
    Ok(Json(json!({
        "version": "4.0.0",
        "counters": counters,
        "gauges": gauges,
        "histograms": {},
        "meters": {},
        "timers": {},
    }))
    .into_response())
}

async fn info_handler(State(s): State<AppState>) -> Result<Response, ApiError> {
    let i = &s.info;
    let elected = *i.view.borrow() == View::Leading;
    let framework_id = if elected {
        s.handle.call(|core, _| core.framework_id.clone()).await?
    } else {
        None
    };
    Ok(Json(json!({
        "name": "marathon",
        "version": "1.11.24",
        "buildref": "mezzo",
        "elected": elected,
        "leader": i.leader(),
        "frameworkId": framework_id,
        "marathon_config": {
            "master": i.master,
            "framework_name": i.framework_name,
            "failover_timeout": i.failover_timeout as u64,
            "hostname": i.addr.ip().to_string(),
            "local_port_min": 10000,
            "local_port_max": 20000,
            "mesos_role": i.role,
            "mesos_user": Value::Null,
            "checkpoint": true,
            "executor": "//cmd",
            "ha": i.zk.is_some(),
            "webui_url": Value::Null,
            "task_launch_timeout": 300000,
            "reconciliation_initial_delay": 15000,
            "reconciliation_interval": 600000,
            "decline_offer_duration": 5000,
            "features": [],
        },
        "zookeeper_config": {
            "zk": i.zk,
            "zk_timeout": 10000,
            "zk_session_timeout": 10000,
            "zk_max_versions": 50,
        },
        "http_config": {"http_port": i.addr.port(), "https_port": 8443},
        "event_subscriber": Value::Null,
    }))
    .into_response())
}

async fn leader(State(s): State<AppState>) -> Response {
    match s.info.leader() {
        Some(l) => Json(json!({"leader": l})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "There is no leader"})),
        )
            .into_response(),
    }
}

async fn abdicate(State(s): State<AppState>) -> Response {
    // Abdication is not implemented: the leader keeps leading (standalone it is the
    // only candidate anyway). A standby has nothing to abdicate.
    if *s.info.view.borrow() != View::Leading {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "There is no leader"})),
        )
            .into_response();
    }
    (
        StatusCode::OK,
        Json(json!({"message": "Leadership abdicated"})),
    )
        .into_response()
}

// ----------------------------------------------------------- deployments

async fn list_deployments(State(s): State<AppState>) -> Result<Response, ApiError> {
    let list = s
        .handle
        .call(|core, _| {
            core.deployments
                .iter()
                .map(|d| core.deployment_json(d))
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(Value::Array(list)).into_response())
}

async fn delete_deployment(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let force = flag(&q, "force", false);
    let r = s
        .handle
        .call(move |core, now| core.delete_deployment(&id, force, now))
        .await??;
    Ok(match r {
        Some(r) => deployment_response(StatusCode::OK, &r, None),
        None => StatusCode::ACCEPTED.into_response(),
    })
}

// ----------------------------------------------------------------- queue

async fn queue(State(s): State<AppState>) -> Result<Response, ApiError> {
    let q = s.handle.call(|core, now| core.queue_json(now)).await?;
    Ok(Json(q).into_response())
}

async fn reset_delay(
    State(s): State<AppState>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    let Some(id) = rest
        .trim_end_matches('/')
        .strip_suffix("/delay")
        .map(str::to_string)
    else {
        return Err(ApiError::NotFound(format!(
            "no such resource: /v2/queue/{rest}"
        )));
    };
    s.handle
        .call(move |core, _| core.reset_delay(&id))
        .await??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- events

async fn events(State(s): State<AppState>, q: Params) -> Response {
    let filter = params(&q, "event_type");
    let rx = s.handle.subscribe();
    let attached = json!({
        "remoteAddress": "",
        "eventType": "event_stream_attached",
        "timestamp": timestamp(chrono::Utc::now()),
    });
    let first = futures::stream::once(async move {
        Ok::<_, Infallible>(
            Event::default()
                .event("event_stream_attached")
                .data(attached.to_string()),
        )
    });
    let stream = BroadcastStream::new(rx).filter_map(move |item| {
        let filter = filter.clone();
        async move {
            let (kind, body) = item.ok()?;
            if !filter.is_empty() && !filter.contains(&kind) {
                return None;
            }
            Some(Ok::<_, Infallible>(
                Event::default().event(kind).data(body.to_string()),
            ))
        }
    });
    // The stream ends at shutdown, or the server's graceful wait would last as
    // long as the subscriber stays.
    let shutdown = s.shutdown.clone();
    let stream = stream.take_until(async move { shutdown.wait().await });
    Sse::new(first.chain(stream))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
