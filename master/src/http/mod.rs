//! The master's JSON HTTP API (Mesos-shaped), served on the same port as
//! gRPC, plus the web dashboard at `/` and a proxy to agents' HTTP APIs.
//!
//! Reads come from the snapshot the actor publishes; nothing here locks
//! state. The endpoint documents (`/master/state-summary`, `/master/tasks`,
//! `/master/roles`...) are rendered from the typed snapshot by
//! [`crate::view`]; the handlers here only pick the document and the status.
//! The only write, `/master/teardown`, goes to the actor as a command like
//! any scheduler call.
//!
//! The dashboard is three static files compiled into the binary; it reads
//! the same endpoints an operator's tools read. A browser cannot reach an
//! agent's `/files` across origins, so `/agents/<id>/...` forwards a fixed
//! set of read-only agent paths to the address that agent registered with
//! (never to an address taken from the request).

pub(crate) mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::actor::Command;
use crate::grpc::Handle;
use crate::state::Call;
use crate::view::{
    frameworks_doc, roles_doc, slaves_doc, state_summary_doc, tasks_doc, Snapshot, TasksQuery,
};
use common::leader_redirect;

#[derive(Clone)]
struct AppState {
    snapshot: watch::Receiver<Snapshot>,
    handle: Handle,
    client: reqwest::Client,
}

pub(crate) fn router(snapshot: watch::Receiver<Snapshot>, handle: Handle) -> Router {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    Router::new()
        .route("/health", get(health))
        .route("/master/health", get(health))
        .route("/version", get(version))
        .route("/master/state", get(state))
        .route("/master/state.json", get(state))
        .route("/state", get(state))
        .route("/state.json", get(state))
        .route("/master/state-summary", get(state_summary))
        .route("/master/frameworks", get(frameworks))
        .route("/master/slaves", get(slaves))
        .route("/master/agents", get(slaves))
        .route("/master/tasks", get(tasks))
        .route("/master/tasks.json", get(tasks))
        .route("/master/roles", get(roles))
        .route("/master/roles.json", get(roles))
        .route("/master/flags", get(flags))
        .route("/master/teardown", post(teardown))
        .route("/metrics/snapshot", get(metrics))
        .route("/master/metrics/snapshot", get(metrics))
        .route("/metrics", get(prometheus))
        .route("/master/redirect", get(redirect))
        .route("/redirect", get(redirect))
        .route("/", get(dashboard_index))
        .route("/dashboard/app.js", get(dashboard_js))
        .route("/dashboard/app.css", get(dashboard_css))
        .route("/agents/{agent_id}/{*rest}", get(agent_proxy))
        .with_state(AppState {
            snapshot: snapshot.clone(),
            handle,
            client,
        })
        .merge(crate::operator_http::router(snapshot))
}

async fn health() -> StatusCode {
    StatusCode::OK
}

/// pymesos and other Mesos clients read `version` to pick the API flavour.
async fn version() -> Json<Value> {
    Json(json!({
        "version": crate::MESOS_COMPAT_VERSION,
        "mezzo_version": env!("CARGO_PKG_VERSION"),
        "build_user": "mezzo",
        "build_date": "",
        "build_time": 0,
        "git_sha": "",
    }))
}

/// The leader's snapshot (an O(1) clone, so rendering never holds the
/// watch lock), or the redirect a standby answers with.
fn leader_snapshot(s: &AppState, uri: &Uri) -> Result<Snapshot, Box<Response>> {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(uri.path());
    if let Some(r) = leader_redirect(&s.snapshot, path) {
        return Err(Box::new(r));
    }
    Ok(s.snapshot.borrow().clone())
}

async fn state(State(s): State<AppState>, uri: Uri) -> Response {
    let snap = match leader_snapshot(&s, &uri) {
        Ok(snap) => snap,
        Err(r) => return *r,
    };
    // A large cluster's document takes a while to write: off the async
    // workers, so the actor and other requests keep running meanwhile.
    match tokio::task::spawn_blocking(move || snap.state_bytes()).await {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let snap = s.snapshot.borrow().clone();
    Json(snap.metrics()).into_response()
}

/// Prometheus text format (`mezzo_*` names).
async fn prometheus(State(s): State<AppState>) -> Response {
    let snap = s.snapshot.borrow().clone();
    match crate::metrics::render(&snap) {
        Ok(text) => (
            [(header::CONTENT_TYPE, mezzo_runtime::prom::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// 307 to the leading master's `/master` (Mesos), 503 when none is known.
async fn redirect(State(s): State<AppState>) -> Response {
    let leader = {
        let snap = s.snapshot.borrow();
        snap.leader.clone().or_else(|| {
            // A standalone master leads itself.
            snap.leading
                .then(|| format!("{}:{}", snap.info.ip, snap.info.port))
        })
    };
    match leader {
        Some(l) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("//{l}/master"))],
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no leading master is elected",
        )
            .into_response(),
    }
}

async fn state_summary(State(s): State<AppState>, uri: Uri) -> Response {
    match leader_snapshot(&s, &uri) {
        Ok(st) => Json(state_summary_doc(&st)).into_response(),
        Err(r) => *r,
    }
}

async fn frameworks(
    State(s): State<AppState>,
    uri: Uri,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    match leader_snapshot(&s, &uri) {
        Ok(st) => Json(frameworks_doc(
            &st,
            q.get("framework_id").map(String::as_str),
        ))
        .into_response(),
        Err(r) => *r,
    }
}

async fn slaves(
    State(s): State<AppState>,
    uri: Uri,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let id = q.get("slave_id").or_else(|| q.get("agent_id"));
    match leader_snapshot(&s, &uri) {
        Ok(st) => Json(slaves_doc(&st, id.map(String::as_str))).into_response(),
        Err(r) => *r,
    }
}

async fn tasks(State(s): State<AppState>, uri: Uri, Query(q): Query<TasksQuery>) -> Response {
    match leader_snapshot(&s, &uri) {
        Ok(st) => match tasks_doc(&st, &q) {
            Ok(v) => Json(v).into_response(),
            Err(m) => (StatusCode::BAD_REQUEST, m).into_response(),
        },
        Err(r) => *r,
    }
}

async fn roles(State(s): State<AppState>, uri: Uri) -> Response {
    match leader_snapshot(&s, &uri) {
        Ok(st) => Json(roles_doc(&st)).into_response(),
        Err(r) => *r,
    }
}

async fn flags(State(s): State<AppState>) -> Response {
    let snap = s.snapshot.borrow().clone();
    Json(json!({"flags": crate::view::flags_json(&snap)})).into_response()
}

/// Decodes `application/x-www-form-urlencoded` (`+` is a space).
fn form_decode(body: &str) -> BTreeMap<String, String> {
    fn unescape(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(b[i + 1]), hex(b[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (unescape(k), unescape(v)),
            None => (unescape(p), String::new()),
        })
        .collect()
}

/// `POST /master/teardown` with `frameworkId=<id>` (form body or query):
/// kills the framework's tasks and removes it, as Mesos.
async fn teardown(
    State(s): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = leader_redirect(&s.snapshot, uri.path()) {
        return r;
    }
    let mut params = form_decode(uri.query().unwrap_or(""));
    let text = String::from_utf8_lossy(&body);
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&text) {
            for (k, v) in m {
                if let Some(v) = v.as_str() {
                    params.insert(k, v.to_string());
                }
            }
        }
    } else {
        params.extend(form_decode(&text));
    }
    let Some(id) = params.get("frameworkId").filter(|v| !v.is_empty()).cloned() else {
        return (
            StatusCode::BAD_REQUEST,
            "Missing 'frameworkId' query parameter in the request body",
        )
            .into_response();
    };
    let call = Call::Teardown(mezzo_proto::v1::TeardownRequest {
        framework_id: id.clone(),
    });
    match s.handle.ask(|reply| Command::Call { call, reply }).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(st) => {
            let code = match st.code() {
                // Mesos answers an unknown framework with 400.
                tonic::Code::NotFound => StatusCode::BAD_REQUEST,
                tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
                tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (code, st.message().to_string()).into_response()
        }
    }
}

// ------------------------------------------------------------ dashboard

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const APP_CSS: &str = include_str!("../dashboard/app.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    r
}

async fn dashboard_index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn dashboard_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn dashboard_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

// ------------------------------------------------------------ agent proxy

/// Agent paths the master forwards (read-only).
const PROXIED: &[&str] = &[
    "state",
    "state.json",
    "health",
    "metrics/snapshot",
    "files/browse",
    "files/read",
    "files/download",
];

/// `GET /agents/<agent-id>/<path>?<query>` → the agent's `/<path>?<query>`.
async fn agent_proxy(
    State(s): State<AppState>,
    Path((agent_id, rest)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    if !PROXIED.contains(&rest.as_str()) {
        return (StatusCode::NOT_FOUND, "not a proxied agent endpoint").into_response();
    }
    let Some(agent) = s.snapshot.borrow().agents.get(&agent_id).cloned() else {
        return (StatusCode::NOT_FOUND, format!("no agent '{agent_id}'")).into_response();
    };
    let port = agent.info.port;
    if port == 0 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent did not report an HTTP port",
        )
            .into_response();
    }
    let host = agent.info.hostname.as_str();
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let mut url = format!("http://{host}:{port}/{rest}");
    if let Some(q) = uri.query() {
        url.push('?');
        url.push_str(q);
    }
    let resp = match s.client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("agent {agent_id} at {host}:{port} did not answer: {e}"),
            )
                .into_response()
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = HeaderMap::new();
    for h in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
        if let Some(v) = resp
            .headers()
            .get(h.as_str())
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        {
            out.insert(h, v);
        }
    }
    match resp.bytes().await {
        Ok(b) => (status, out, Body::from(b)).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode() {
        let m = form_decode("frameworkId=abc%2D1+x&other=%zz&flag");
        assert_eq!(m["frameworkId"], "abc-1 x");
        assert_eq!(m["other"], "%zz");
        assert_eq!(m["flag"], "");
        assert_eq!(
            form_decode("a=%4"),
            BTreeMap::from([("a".to_string(), "%4".to_string())])
        );
    }
}
