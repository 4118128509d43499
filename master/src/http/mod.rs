//! The master's JSON HTTP API (Mesos-shaped), served on the same port as
//! gRPC, plus the web dashboard at `/` and a proxy to agents' HTTP APIs.
//!
//! Reads come from the snapshot the actor publishes; nothing here locks
//! state. The endpoint documents (`/master/state-summary`, `/master/tasks`,
//! `/master/roles`...) are pure functions of the published `/master/state`
//! document, unit tested below. The only write, `/master/teardown`, goes to
//! the actor as a command like any scheduler call.
//!
//! The dashboard is three static files compiled into the binary; it reads
//! the same endpoints an operator's tools read. A browser cannot reach an
//! agent's `/files` across origins, so `/agents/<id>/...` forwards a fixed
//! set of read-only agent paths to the address that agent registered with
//! (never to an address taken from the request).

pub(crate) mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::actor::Command;
use crate::grpc::Handle;
use crate::state::Call;
use crate::view::Snapshot;
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

/// The leader's state document, or the redirect a standby answers with.
fn leader_state(s: &AppState, uri: &Uri) -> Result<std::sync::Arc<Value>, Box<Response>> {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(uri.path());
    if let Some(r) = leader_redirect(&s.snapshot, path) {
        return Err(Box::new(r));
    }
    let snap = s.snapshot.borrow().clone();
    Ok(std::sync::Arc::new(snap.state()))
}

async fn state(State(s): State<AppState>, uri: Uri) -> Response {
    match leader_state(&s, &uri) {
        Ok(st) => Json(st.as_ref().clone()).into_response(),
        Err(r) => *r,
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let snap = s.snapshot.borrow().clone();
    Json(snap.metrics()).into_response()
}

/// Prometheus text format (`mezzo_*` names).
async fn prometheus(State(s): State<AppState>) -> Response {
    let snap = s.snapshot.borrow().clone();
    let (state, metrics) = (snap.state(), snap.metrics());
    match crate::metrics::render(&state, &metrics) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
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

// ------------------------------------------------------------ documents

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Every task in the document with the framework list it came from:
/// live, unreachable and completed, of live and completed frameworks.
fn all_tasks(state: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for list in ["frameworks", "completed_frameworks"] {
        for f in arr(state, list) {
            for key in ["tasks", "unreachable_tasks", "completed_tasks"] {
                out.extend(arr(f, key).iter());
            }
        }
    }
    out
}

const SUMMARY_STATES: [&str; 10] = [
    "TASK_STAGING",
    "TASK_STARTING",
    "TASK_RUNNING",
    "TASK_KILLING",
    "TASK_FINISHED",
    "TASK_KILLED",
    "TASK_FAILED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_UNREACHABLE",
];

/// `/master/state-summary`: agents and frameworks with task counts per state.
pub(crate) fn state_summary_doc(state: &Value) -> Value {
    let tasks = all_tasks(state);
    let counts = |pred: &dyn Fn(&Value) -> bool| {
        let mut m = Map::new();
        for s in SUMMARY_STATES {
            m.insert(s.into(), json!(0));
        }
        for t in tasks.iter().filter(|t| pred(t)) {
            let st = str_of(t, "state");
            let n = m.get(st).and_then(Value::as_u64).unwrap_or(0);
            m.insert(st.to_string(), json!(n + 1));
        }
        m
    };
    let slaves: Vec<Value> = arr(state, "slaves")
        .iter()
        .map(|a| {
            let id = str_of(a, "id");
            let mut m = Map::new();
            for k in [
                "id",
                "pid",
                "hostname",
                "port",
                "registered_time",
                "reregistered_time",
                "resources",
                "used_resources",
                "offered_resources",
                "reserved_resources",
                "unreserved_resources",
                "attributes",
                "active",
                "version",
                "capabilities",
            ] {
                if let Some(v) = a.get(k) {
                    m.insert(k.into(), v.clone());
                }
            }
            m.extend(counts(&|t| str_of(t, "slave_id") == id));
            let fws: BTreeSet<&str> = tasks
                .iter()
                .filter(|t| {
                    str_of(t, "slave_id") == id
                        && !mezzo_proto::is_terminal_name(str_of(t, "state"))
                })
                .map(|t| str_of(t, "framework_id"))
                .collect();
            m.insert("framework_ids".into(), json!(fws));
            Value::Object(m)
        })
        .collect();
    let frameworks: Vec<Value> = arr(state, "frameworks")
        .iter()
        .map(|f| {
            let id = str_of(f, "id");
            let mut m = Map::new();
            for k in [
                "id",
                "name",
                "pid",
                "used_resources",
                "offered_resources",
                "capabilities",
                "hostname",
                "webui_url",
                "active",
                "connected",
                "role",
                "roles",
            ] {
                if let Some(v) = f.get(k) {
                    m.insert(k.into(), v.clone());
                }
            }
            m.extend(counts(&|t| str_of(t, "framework_id") == id));
            let agents: BTreeSet<&str> = arr(f, "tasks")
                .iter()
                .map(|t| str_of(t, "slave_id"))
                .collect();
            m.insert("slave_ids".into(), json!(agents));
            Value::Object(m)
        })
        .collect();
    json!({
        "hostname": state.get("hostname").cloned().unwrap_or(Value::Null),
        "cluster": state.get("cluster").cloned().unwrap_or(json!("")),
        "slaves": slaves,
        "frameworks": frameworks,
    })
}

/// Mesos' `*_full` resource arrays from the flat `{"cpus": 1, "ports": "[..]"}` form.
fn resources_full(flat: Option<&Value>) -> Value {
    let mut out = Vec::new();
    if let Some(m) = flat.and_then(Value::as_object) {
        for (name, v) in m {
            match v {
                Value::Number(n) => {
                    let x = n.as_f64().unwrap_or(0.0);
                    if x > 0.0 {
                        out.push(json!({"name": name, "type": "SCALAR", "scalar": {"value": x}, "role": "*"}));
                    }
                }
                Value::String(s) => {
                    let ranges: Vec<Value> = s
                        .trim_matches(|c| c == '[' || c == ']')
                        .split(',')
                        .filter_map(|r| {
                            let (b, e) = r.trim().split_once('-')?;
                            Some(json!({"begin": b.trim().parse::<u64>().ok()?, "end": e.trim().parse::<u64>().ok()?}))
                        })
                        .collect();
                    out.push(json!({"name": name, "type": "RANGES", "ranges": {"range": ranges}, "role": "*"}));
                }
                _ => {}
            }
        }
    }
    Value::Array(out)
}

/// `/master/slaves`: agents with Mesos' `*_full` resource arrays.
pub(crate) fn slaves_doc(state: &Value, slave_id: Option<&str>) -> Value {
    let slaves: Vec<Value> = arr(state, "slaves")
        .iter()
        .filter(|a| slave_id.is_none_or(|id| str_of(a, "id") == id))
        .map(|a| {
            let mut a = a.clone();
            if let Some(m) = a.as_object_mut() {
                for k in [
                    "used_resources",
                    "offered_resources",
                    "unreserved_resources",
                ] {
                    let full = resources_full(m.get(k));
                    m.insert(format!("{k}_full"), full);
                }
                m.insert("reserved_resources_full".into(), json!({}));
            }
            a
        })
        .collect();
    json!({
        "slaves": slaves,
        "recovered_slaves": state.get("recovered_slaves").cloned().unwrap_or(json!([])),
    })
}

/// `/master/frameworks`.
pub(crate) fn frameworks_doc(state: &Value, framework_id: Option<&str>) -> Value {
    let pick = |key: &str| -> Vec<Value> {
        arr(state, key)
            .iter()
            .filter(|f| framework_id.is_none_or(|id| str_of(f, "id") == id))
            .cloned()
            .collect()
    };
    json!({
        "frameworks": pick("frameworks"),
        "completed_frameworks": pick("completed_frameworks"),
        "unregistered_frameworks": [],
    })
}

/// Query of `/master/tasks`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct TasksQuery {
    limit: Option<String>,
    offset: Option<String>,
    order: Option<String>,
    framework_id: Option<String>,
    task_id: Option<String>,
}

fn start_time(t: &Value) -> f64 {
    arr(t, "statuses")
        .first()
        .and_then(|s| s.get("timestamp"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

/// `/master/tasks?limit=&offset=&order=asc|des`: tasks sorted by start
/// time, newest first by default, 100 per page (Mesos' defaults).
pub(crate) fn tasks_doc(state: &Value, q: &TasksQuery) -> Result<Value, String> {
    let parse = |name: &str, v: &Option<String>, default: usize| -> Result<usize, String> {
        match v.as_deref() {
            None | Some("") => Ok(default),
            Some(s) => s.parse::<usize>().map_err(|_| {
                format!("Failed to parse '{name}': '{s}' is not a non-negative integer")
            }),
        }
    };
    let limit = parse("limit", &q.limit, 100)?;
    let offset = parse("offset", &q.offset, 0)?;
    let descending = match q.order.as_deref() {
        None | Some("") | Some("des") | Some("desc") => true,
        Some("asc") => false,
        Some(o) => {
            return Err(format!(
                "Failed to parse 'order': '{o}' is not 'asc' or 'des'"
            ))
        }
    };
    let mut tasks: Vec<&Value> = all_tasks(state)
        .into_iter()
        .filter(|t| {
            q.framework_id
                .as_deref()
                .is_none_or(|f| str_of(t, "framework_id") == f)
                && q.task_id.as_deref().is_none_or(|id| str_of(t, "id") == id)
        })
        .collect();
    tasks.sort_by(|a, b| {
        start_time(a)
            .total_cmp(&start_time(b))
            .then_with(|| str_of(a, "id").cmp(str_of(b, "id")))
    });
    if descending {
        tasks.reverse();
    }
    let page: Vec<Value> = tasks
        .into_iter()
        .skip(offset)
        .take(limit)
        .cloned()
        .collect();
    Ok(json!({ "tasks": page }))
}

fn add_flat(into: &mut Map<String, Value>, from: Option<&Value>) {
    let Some(m) = from.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in m {
        if let Some(x) = v.as_f64() {
            let cur = into.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            into.insert(k.clone(), json!(cur + x));
        }
    }
}

/// `/master/roles`: roles that have frameworks or a weight, with their
/// weight, frameworks and allocation.
pub(crate) fn roles_doc(state: &Value) -> Value {
    let mut weights: BTreeMap<String, f64> = BTreeMap::new();
    let flag = state
        .get("flags")
        .and_then(|f| f.get("weights"))
        .and_then(Value::as_str)
        .unwrap_or("");
    for part in flag.split(',').filter(|p| !p.is_empty()) {
        if let Some((r, w)) = part.split_once('=') {
            weights.insert(r.to_string(), w.parse().unwrap_or(1.0));
        }
    }
    struct Role {
        frameworks: Vec<String>,
        allocated: Map<String, Value>,
        offered: Map<String, Value>,
    }
    let mut roles: BTreeMap<String, Role> = BTreeMap::new();
    for r in weights.keys() {
        roles.insert(
            r.clone(),
            Role {
                frameworks: vec![],
                allocated: Map::new(),
                offered: Map::new(),
            },
        );
    }
    for f in arr(state, "frameworks") {
        let role = match str_of(f, "role") {
            "" => "*",
            r => r,
        };
        let e = roles.entry(role.to_string()).or_insert_with(|| Role {
            frameworks: vec![],
            allocated: Map::new(),
            offered: Map::new(),
        });
        e.frameworks.push(str_of(f, "id").to_string());
        add_flat(&mut e.allocated, f.get("used_resources"));
        add_flat(&mut e.offered, f.get("offered_resources"));
    }
    let list: Vec<Value> = roles
        .into_iter()
        .map(|(name, r)| {
            json!({
                "name": name,
                "weight": weights.get(&name).copied().unwrap_or(1.0),
                "frameworks": r.frameworks,
                "resources": r.allocated,
                "allocated": r.allocated,
                "offered": r.offered,
                "reserved": {},
                "quota": {"role": name, "guarantee": {}, "limit": {}, "consumed": r.allocated},
            })
        })
        .collect();
    json!({ "roles": list })
}

async fn state_summary(State(s): State<AppState>, uri: Uri) -> Response {
    match leader_state(&s, &uri) {
        Ok(st) => Json(state_summary_doc(&st)).into_response(),
        Err(r) => *r,
    }
}

async fn frameworks(
    State(s): State<AppState>,
    uri: Uri,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    match leader_state(&s, &uri) {
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
    match leader_state(&s, &uri) {
        Ok(st) => Json(slaves_doc(&st, id.map(String::as_str))).into_response(),
        Err(r) => *r,
    }
}

async fn tasks(State(s): State<AppState>, uri: Uri, Query(q): Query<TasksQuery>) -> Response {
    match leader_state(&s, &uri) {
        Ok(st) => match tasks_doc(&st, &q) {
            Ok(v) => Json(v).into_response(),
            Err(m) => (StatusCode::BAD_REQUEST, m).into_response(),
        },
        Err(r) => *r,
    }
}

async fn roles(State(s): State<AppState>, uri: Uri) -> Response {
    match leader_state(&s, &uri) {
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

    fn doc() -> Value {
        json!({
            "hostname": "m1",
            "flags": {"weights": "prod=2.5"},
            "slaves": [
                {"id": "S0", "hostname": "h", "port": 5051, "resources": {"cpus": 4.0, "mem": 1024.0, "ports": "[31000-31005, 31010-31020]"},
                 "used_resources": {"cpus": 1.0, "mem": 0.0}, "offered_resources": {}, "unreserved_resources": {"cpus": 4.0}}
            ],
            "frameworks": [
                {"id": "F1", "name": "one", "role": "prod", "used_resources": {"cpus": 1.0, "mem": 64.0}, "offered_resources": {"cpus": 3.0},
                 "tasks": [
                    {"id": "a", "framework_id": "F1", "slave_id": "S0", "state": "TASK_RUNNING", "statuses": [{"state": "TASK_STAGING", "timestamp": 10.0}]},
                    {"id": "b", "framework_id": "F1", "slave_id": "S0", "state": "TASK_STAGING", "statuses": [{"state": "TASK_STAGING", "timestamp": 30.0}]}
                 ],
                 "unreachable_tasks": [],
                 "completed_tasks": [
                    {"id": "c", "framework_id": "F1", "slave_id": "S0", "state": "TASK_FINISHED", "statuses": [{"state": "TASK_STAGING", "timestamp": 20.0}]}
                 ]}
            ],
            "completed_frameworks": [
                {"id": "F0", "name": "old", "role": "*", "tasks": [], "completed_tasks": [
                    {"id": "z", "framework_id": "F0", "slave_id": "S0", "state": "TASK_KILLED", "statuses": [{"state": "TASK_STAGING", "timestamp": 1.0}]}
                ]}
            ]
        })
    }

    #[test]
    fn summary_counts_tasks_per_agent_and_framework() {
        let s = state_summary_doc(&doc());
        assert_eq!(s["slaves"][0]["TASK_RUNNING"], 1);
        assert_eq!(s["slaves"][0]["TASK_KILLED"], 1);
        assert_eq!(s["slaves"][0]["framework_ids"], json!(["F1"]));
        assert_eq!(s["frameworks"][0]["TASK_FINISHED"], 1);
        assert_eq!(s["frameworks"][0]["TASK_STAGING"], 1);
        assert_eq!(s["frameworks"][0]["slave_ids"], json!(["S0"]));
        assert_eq!(s["hostname"], "m1");
    }

    #[test]
    fn tasks_page_and_order_by_start_time() {
        let ids = |v: Value| -> Vec<String> {
            v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect()
        };
        let d = doc();
        assert_eq!(
            ids(tasks_doc(&d, &TasksQuery::default()).unwrap()),
            ["b", "c", "a", "z"]
        );
        let q = TasksQuery {
            order: Some("asc".into()),
            limit: Some("2".into()),
            offset: Some("1".into()),
            ..Default::default()
        };
        assert_eq!(ids(tasks_doc(&d, &q).unwrap()), ["a", "c"]);
        let q = TasksQuery {
            framework_id: Some("F0".into()),
            ..Default::default()
        };
        assert_eq!(ids(tasks_doc(&d, &q).unwrap()), ["z"]);
        let bad = TasksQuery {
            limit: Some("-1".into()),
            ..Default::default()
        };
        assert!(tasks_doc(&d, &bad).is_err());
        let bad = TasksQuery {
            order: Some("sideways".into()),
            ..Default::default()
        };
        assert!(tasks_doc(&d, &bad).is_err());
    }

    #[test]
    fn roles_include_weights_and_allocation() {
        let r = roles_doc(&doc());
        let prod = r["roles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "prod")
            .unwrap()
            .clone();
        assert_eq!(prod["weight"], 2.5);
        assert_eq!(prod["frameworks"], json!(["F1"]));
        assert_eq!(prod["resources"]["cpus"], 1.0);
        assert_eq!(prod["offered"]["cpus"], 3.0);
    }

    #[test]
    fn slaves_have_full_resource_arrays() {
        let s = slaves_doc(&doc(), None);
        let full = &s["slaves"][0]["unreserved_resources_full"];
        assert_eq!(full[0]["name"], "cpus");
        assert_eq!(full[0]["scalar"]["value"], 4.0);
        let res = resources_full(Some(&json!({"ports": "[31000-31005, 31010-31020]"})));
        assert_eq!(
            res[0]["ranges"]["range"][1],
            json!({"begin": 31010, "end": 31020})
        );
        assert_eq!(slaves_doc(&doc(), Some("nope"))["slaves"], json!([]));
    }

    #[test]
    fn frameworks_filter_by_id() {
        let f = frameworks_doc(&doc(), Some("F0"));
        assert_eq!(f["frameworks"], json!([]));
        assert_eq!(f["completed_frameworks"][0]["id"], "F0");
    }

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
