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

// ------------------------------------------------------------------ apps

async fn list_apps(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let id = param(&q, "id").map(str::to_string);
    let cmd = param(&q, "cmd").map(str::to_string);
    let label = param(&q, "label").map(str::to_string);
    let embed = Embed::counts_and_deployments().with(&params(&q, "embed"));
    let apps = s
        .handle
        .call(move |core, now| {
            core.filter_apps(id.as_deref(), cmd.as_deref(), label.as_deref())
                .iter()
                .map(|id| core.app_json(id, &embed, now))
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(json!({ "apps": apps })).into_response())
}

async fn create_app(
    State(s): State<AppState>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value = parse_body(&body)?;
    let force = flag(&q, "force", false);
    let (app, result) = s
        .handle
        .call(move |core, now| core.create_app(&value, force, now))
        .await??;
    let location = app["id"].as_str().unwrap_or_default().to_string();
    let mut response = (StatusCode::CREATED, Json(app)).into_response();
    if let Ok(v) = HeaderValue::from_str(&result.deployment_id) {
        response.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn put_many(
    s: AppState,
    q: Params,
    body: Bytes,
    partial: bool,
) -> Result<Response, ApiError> {
    let value = parse_body(&body)?;
    let Some(items) = value.as_array().cloned() else {
        return Err(ApiError::BadRequest {
            message: "Invalid JSON".into(),
            details: vec![crate::model::Violation::new("/", "error.expected.jsarray")],
        });
    };
    let force = flag(&q, "force", false);
    let partial = flag(&q, "partialUpdate", partial);
    let result = s
        .handle
        .call(move |core, now| core.update_apps(&items, partial, force, now))
        .await??;
    Ok(deployment_response(StatusCode::OK, &result, None))
}

async fn put_apps(State(s): State<AppState>, q: Params, body: Bytes) -> Result<Response, ApiError> {
    put_many(s, q, body, true).await
}

async fn patch_apps(
    State(s): State<AppState>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    put_many(s, q, body, true).await
}

/// What a path under `/v2/apps/` addresses.
#[derive(Debug, PartialEq)]
enum AppPath {
    App(String),
    Tasks(String),
    Task(String, String),
    Versions(String),
    Version(String, String),
    Restart(String),
}

fn app_path(rest: &str) -> AppPath {
    let rest = rest.trim_end_matches('/');
    if let Some(id) = rest.strip_suffix("/restart") {
        return AppPath::Restart(normalize_id(id));
    }
    if let Some(id) = rest.strip_suffix("/tasks") {
        return AppPath::Tasks(normalize_id(id));
    }
    if let Some(id) = rest.strip_suffix("/versions") {
        return AppPath::Versions(normalize_id(id));
    }
    if let Some((id, task)) = rest.rsplit_once("/tasks/") {
        if !task.contains('/') {
            return AppPath::Task(normalize_id(id), task.to_string());
        }
    }
    if let Some((id, v)) = rest.rsplit_once("/versions/") {
        if !v.contains('/') {
            return AppPath::Version(normalize_id(id), v.to_string());
        }
    }
    AppPath::App(normalize_id(rest))
}

fn no_app(id: &str) -> ApiError {
    ApiError::NotFound(format!("App '{id}' does not exist"))
}

async fn app_get(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let embed_values = params(&q, "embed");
    match app_path(&rest) {
        AppPath::App(id) => {
            let embed = Embed {
                counts: true,
                deployments: true,
                tasks: true,
                last_task_failure: true,
            }
            .with(&embed_values);
            let app = s
                .handle
                .call(move |core, now| {
                    if core.apps.contains_key(&id) {
                        Ok(core.app_json(&id, &embed, now))
                    } else {
                        Err(no_app(&id))
                    }
                })
                .await??;
            Ok(Json(json!({ "app": app })).into_response())
        }
        AppPath::Tasks(id) => {
            let tasks = s
                .handle
                .call(move |core, _| {
                    if core.apps.contains_key(&id) {
                        Ok(core.tasks_json(Some(&id), None))
                    } else {
                        Err(no_app(&id))
                    }
                })
                .await??;
            Ok(Json(json!({ "tasks": tasks })).into_response())
        }
        AppPath::Task(id, task) => {
            let t = s
                .handle
                .call(move |core, _| match core.instances.get(&task) {
                    Some(i) if i.app_id == id => Ok(core.task_json(i)),
                    _ => Err(ApiError::NotFound(format!("Task '{task}' does not exist"))),
                })
                .await??;
            Ok(Json(json!({ "task": t })).into_response())
        }
        AppPath::Versions(id) => {
            let versions = s
                .handle
                .call(move |core, _| {
                    core.apps
                        .get(&id)
                        .map(|r| r.versions.keys().rev().cloned().collect::<Vec<_>>())
                        .ok_or_else(|| no_app(&id))
                })
                .await??;
            Ok(Json(json!({ "versions": versions })).into_response())
        }
        AppPath::Version(id, version) => {
            let app = s
                .handle
                .call(move |core, _| {
                    let record = core.apps.get(&id).ok_or_else(|| no_app(&id))?;
                    record
                        .versions
                        .get(&version)
                        .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
                        .ok_or_else(|| {
                            ApiError::NotFound(format!(
                                "Version {version} of app '{id}' does not exist"
                            ))
                        })
                })
                .await??;
            Ok(Json(app).into_response())
        }
        AppPath::Restart(_) => Err(ApiError::NotFound("use POST to restart".into())),
    }
}

async fn update(
    s: AppState,
    rest: String,
    q: Params,
    body: Bytes,
    patch: bool,
) -> Result<Response, ApiError> {
    let AppPath::App(id) = app_path(&rest) else {
        return Err(ApiError::NotFound(format!(
            "no such resource: /v2/apps/{rest}"
        )));
    };
    let value = parse_body(&body)?;
    let force = flag(&q, "force", false);
    let partial = patch || flag(&q, "partialUpdate", true);
    let (created, result) = s
        .handle
        .call(move |core, now| {
            if patch && !core.apps.contains_key(&id) {
                return Err(no_app(&id));
            }
            core.update_app(&id, &value, partial, force, now)
                .map(|(c, r)| (c.then_some(id), r))
        })
        .await??;
    Ok(match created {
        Some(id) => deployment_response(StatusCode::CREATED, &result, Some(&id)),
        None => deployment_response(StatusCode::OK, &result, None),
    })
}

async fn app_put(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(s, rest, q, body, false).await
}

async fn app_patch(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(s, rest, q, body, true).await
}

async fn app_delete(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let force = flag(&q, "force", false);
    let scale = flag(&q, "scale", false);
    match app_path(&rest) {
        AppPath::App(id) => {
            let r = s
                .handle
                .call(move |core, now| core.delete_app(&id, force, now))
                .await??;
            Ok(deployment_response(StatusCode::OK, &r, None))
        }
        AppPath::Task(id, task) => {
            let (killed, r) = s
                .handle
                .call(move |core, now| {
                    if !core.apps.contains_key(&id) {
                        return Err(no_app(&id));
                    }
                    if core.instances.get(&task).is_none_or(|i| i.app_id != id) {
                        return Err(ApiError::NotFound(format!("Task '{task}' does not exist")));
                    }
                    core.kill_tasks(&[task], scale, force, now)
                })
                .await??;
            Ok(match r {
                Some(r) => deployment_response(StatusCode::OK, &r, None),
                None => Json(json!({"task": killed.into_iter().next()})).into_response(),
            })
        }
        AppPath::Tasks(id) => {
            let host = param(&q, "host").map(str::to_string);
            let (killed, r) = s
                .handle
                .call(move |core, now| {
                    if !core.apps.contains_key(&id) {
                        return Err(no_app(&id));
                    }
                    let ids: Vec<String> = core
                        .instances
                        .values()
                        .filter(|i| i.app_id == id)
                        .filter(|i| host.as_deref().is_none_or(|h| i.placement.hostname == h))
                        .map(|i| i.task_id.clone())
                        .collect();
                    core.kill_tasks(&ids, scale, force, now)
                })
                .await??;
            Ok(match r {
                Some(r) => deployment_response(StatusCode::OK, &r, None),
                None => Json(json!({ "tasks": killed })).into_response(),
            })
        }
        _ => Err(ApiError::NotFound(format!(
            "no such resource: /v2/apps/{rest}"
        ))),
    }
}

async fn app_post(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let force = flag(&q, "force", false);
    match app_path(&rest) {
        AppPath::Restart(id) => {
            let r = s
                .handle
                .call(move |core, now| core.restart_app(&id, force, now))
                .await??;
            Ok(deployment_response(StatusCode::OK, &r, None))
        }
        _ => Err(ApiError::NotFound(format!(
            "no such resource: /v2/apps/{rest}"
        ))),
    }
}

// ----------------------------------------------------------------- tasks

async fn list_tasks(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let states = params(&q, "status");
    let tasks = s
        .handle
        .call(move |core, _| core.tasks_json(None, Some(&states)))
        .await?;
    Ok(Json(json!({ "tasks": tasks })).into_response())
}

async fn delete_tasks(
    State(s): State<AppState>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value = parse_body(&body)?;
    let ids: Vec<String> = value["ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let scale = flag(&q, "scale", false);
    let force = flag(&q, "force", false);
    let r = s
        .handle
        .call(move |core, now| {
            if let Some(bad) = ids.iter().find(|t| !core.instances.contains_key(*t)) {
                return Err(ApiError::BadRequest {
                    message: format!("Invalid task id {bad}"),
                    details: Vec::new(),
                });
            }
            core.kill_tasks(&ids, scale, force, now).map(|(_, r)| r)
        })
        .await??;
    Ok(match r {
        Some(r) => deployment_response(StatusCode::OK, &r, None),
        None => Json(json!({})).into_response(),
    })
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

// ---------------------------------------------------------------- groups

async fn group_get_id(s: AppState, id: String) -> Result<Response, ApiError> {
    let g = s
        .handle
        .call(move |core, now| core.group_json(&id, now))
        .await??;
    Ok(Json(g).into_response())
}

async fn group_change(
    s: AppState,
    id: String,
    q: Params,
    body: Bytes,
    create: bool,
) -> Result<Response, ApiError> {
    let value = parse_body(&body)?;
    let force = flag(&q, "force", false);
    let r = s
        .handle
        .call(move |core, now| core.put_group(&id, &value, create, force, now))
        .await??;
    Ok(deployment_response(
        if create {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &r,
        None,
    ))
}

async fn group_remove(s: AppState, id: String, q: Params) -> Result<Response, ApiError> {
    let force = flag(&q, "force", false);
    let r = s
        .handle
        .call(move |core, now| core.delete_group(&id, force, now))
        .await??;
    Ok(deployment_response(StatusCode::OK, &r, None))
}

async fn group_root_get(State(s): State<AppState>) -> Result<Response, ApiError> {
    group_get_id(s, "/".into()).await
}
async fn group_root_post(
    State(s): State<AppState>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    group_change(s, "/".into(), q, body, true).await
}
async fn group_root_put(
    State(s): State<AppState>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    group_change(s, "/".into(), q, body, false).await
}
async fn group_root_delete(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    group_remove(s, "/".into(), q).await
}
async fn group_get(
    State(s): State<AppState>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    group_get_id(s, normalize_id(&rest)).await
}
async fn group_post(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    group_change(s, normalize_id(&rest), q, body, true).await
}
async fn group_put(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    group_change(s, normalize_id(&rest), q, body, false).await
}
async fn group_delete(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    group_remove(s, normalize_id(&rest), q).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_paths() {
        assert_eq!(app_path("prod/web"), AppPath::App("/prod/web".into()));
        assert_eq!(
            app_path("prod/web/tasks"),
            AppPath::Tasks("/prod/web".into())
        );
        assert_eq!(
            app_path("web/tasks/web.123"),
            AppPath::Task("/web".into(), "web.123".into())
        );
        assert_eq!(app_path("web/restart"), AppPath::Restart("/web".into()));
        assert_eq!(app_path("web/versions"), AppPath::Versions("/web".into()));
        assert_eq!(
            app_path("web/versions/2020-01-01T00:00:00.000Z"),
            AppPath::Version("/web".into(), "2020-01-01T00:00:00.000Z".into())
        );
    }
}
