//! The agent's HTTP API, Mesos-shaped: `/state`, `/metrics/snapshot`,
//! `/metrics` (Prometheus text), `/health`, `/version`, and the sandbox
//! files of [`crate::files`].
//!
//! Reads come from the [`AgentView`] the agent actor publishes on a `watch`
//! channel after each event; nothing here touches the actor's state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mezzo_proto::v1::{self, TaskState};
use mezzo_proto::Resources;
use mezzo_runtime::Shutdown;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::files::Sandboxes;
use crate::AgentConfig;

pub use crate::files::{resolve, FileError, MAX_READ};

/// The Mesos API level the agent's JSON follows.
const MESOS_COMPAT_VERSION: &str = "1.11.0";

/// What the agent actor publishes for HTTP readers.
#[derive(Debug, Clone, Default)]
pub struct AgentView {
    /// The id the master gave us (empty before the first registration).
    pub agent_id: String,
    /// Whether the agent holds a registered stream to a master.
    pub registered: bool,
    /// Frameworks with tasks on this agent.
    pub frameworks: Vec<v1::FrameworkInfo>,
    /// Live tasks (and terminal ones whose updates are not yet acknowledged).
    pub tasks: Vec<TaskView>,
    /// Recently forgotten tasks, oldest first.
    pub completed: Vec<TaskView>,
}

/// One task as the HTTP API shows it.
#[derive(Debug, Clone)]
pub struct TaskView {
    /// Its framework.
    pub framework_id: String,
    /// What the master sent.
    pub info: v1::TaskInfo,
    /// Latest state.
    pub state: TaskState,
    /// Its container (run) id.
    pub container_id: String,
    /// Its sandbox directory.
    pub directory: PathBuf,
    /// Whether its executor process is still running.
    pub executor_running: bool,
}

struct Ctx {
    config: Arc<AgentConfig>,
    sandboxes: Arc<Sandboxes>,
    start_time: f64,
    view: watch::Receiver<AgentView>,
}

type Shared = State<Arc<Ctx>>;

/// Serves the agent's HTTP API on `listener` until `shutdown` trips.
pub(crate) async fn serve(
    listener: TcpListener,
    config: Arc<AgentConfig>,
    view: watch::Receiver<AgentView>,
    shutdown: Shutdown,
) {
    let sandboxes = Arc::new(Sandboxes::new(&config.work_dir));
    let ctx = Arc::new(Ctx {
        config,
        sandboxes: sandboxes.clone(),
        start_time: mezzo_proto::now_secs(),
        view,
    });
    let app = router(ctx).merge(crate::files::router(sandboxes));
    if let Err(e) = mezzo_runtime::serve::serve(listener, app, shutdown).await {
        warn!(error = %e, "agent HTTP server stopped");
    }
}

fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/slave(1)/health", get(health))
        .route("/version", get(version))
        .route("/state", get(state))
        .route("/state.json", get(state))
        .route("/slave(1)/state", get(state))
        .route("/slave(1)/state.json", get(state))
        .route("/metrics/snapshot", get(metrics_snapshot))
        .route("/metrics", get(prometheus))
        .with_state(ctx)
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn version() -> Json<Value> {
    Json(json!({
        "version": MESOS_COMPAT_VERSION,
        "mezzo_version": env!("CARGO_PKG_VERSION"),
        "build_user": "mezzo",
    }))
}

// ------------------------------------------------------------------ state

/// Mesos' flat resource JSON: `{"cpus": 2.0, "mem": 1024.0, "ports": "[31000-32000]"}`.
pub fn resources_json(r: &Resources) -> Value {
    json!(r.mesos_flat())
}

fn attributes_json(attrs: &[v1::Attribute]) -> Value {
    let mut m = Map::new();
    for a in attrs {
        let v = if a.r#type == v1::ValueType::Scalar as i32 {
            json!(a.scalar)
        } else {
            json!(a.text)
        };
        m.insert(a.name.clone(), v);
    }
    Value::Object(m)
}

impl Ctx {
    fn task_json(&self, agent_id: &str, t: &TaskView) -> Value {
        json!({
            "id": t.info.task_id,
            "name": t.info.name,
            "framework_id": t.framework_id,
            "executor_id": "",
            "slave_id": agent_id,
            "agent_id": agent_id,
            "state": t.state.as_str_name(),
            "resources": resources_json(&Resources::from_proto(&t.info.resources)),
            "labels": t.info.labels.iter().map(|l| json!({"key": l.key, "value": l.value})).collect::<Vec<_>>(),
            "statuses": [],
        })
    }

    /// Mezzo runs one command executor per task; its id is the task id.
    fn executor_json(&self, agent_id: &str, t: &TaskView) -> Value {
        let task = self.task_json(agent_id, t);
        let (tasks, completed) = if t.state.is_terminal() {
            (vec![], vec![task])
        } else {
            (vec![task], vec![])
        };
        json!({
            "id": t.info.task_id,
            "name": format!("Command Executor (Task: {})", t.info.task_id),
            "source": t.info.task_id,
            "type": "COMMAND",
            "framework_id": t.framework_id,
            "container": t.container_id,
            "directory": self.sandboxes.served_dir(&t.directory).display().to_string(),
            "resources": resources_json(&Resources::from_proto(&t.info.resources)),
            "tasks": tasks,
            "queued_tasks": [],
            "completed_tasks": completed,
        })
    }

    fn state_json(&self, v: &AgentView) -> Value {
        let c = &self.config;
        let mut by_fw: BTreeMap<&str, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
        for f in &v.frameworks {
            by_fw.entry(f.id.as_str()).or_default();
        }
        for t in &v.tasks {
            let e = by_fw.entry(t.framework_id.as_str()).or_default();
            let ex = self.executor_json(&v.agent_id, t);
            if t.executor_running || !t.state.is_terminal() {
                e.0.push(ex);
            } else {
                e.1.push(ex);
            }
        }
        for t in &v.completed {
            let e = by_fw.entry(t.framework_id.as_str()).or_default();
            e.1.push(self.executor_json(&v.agent_id, t));
        }
        let frameworks: Vec<Value> = by_fw
            .into_iter()
            .map(|(id, (executors, completed))| {
                let info = v.frameworks.iter().find(|f| f.id == id);
                let role = info
                    .and_then(|f| f.roles.first().cloned())
                    .or_else(|| info.map(|f| f.role.clone()).filter(|r| !r.is_empty()))
                    .unwrap_or_else(|| "*".into());
                json!({
                    "id": id,
                    "name": info.map(|f| f.name.clone()).unwrap_or_default(),
                    "user": info.map(|f| f.user.clone()).unwrap_or_default(),
                    "hostname": info.map(|f| f.hostname.clone()).unwrap_or_default(),
                    "failover_timeout": info.map(|f| f.failover_timeout).unwrap_or(0.0),
                    "checkpoint": info.map(|f| f.checkpoint).unwrap_or(false),
                    "role": role,
                    "roles": [role],
                    "executors": executors,
                    "completed_executors": completed,
                })
            })
            .collect();
        let pid = format!("slave(1)@{}:{}", c.hostname, c.port);
        json!({
            "version": MESOS_COMPAT_VERSION,
            "mezzo_version": env!("CARGO_PKG_VERSION"),
            "build_user": "mezzo",
            "id": v.agent_id,
            "pid": pid,
            "hostname": c.hostname,
            "port": c.port,
            "start_time": self.start_time,
            "registered": v.registered,
            "master_hostname": master_host(&c.master),
            "resources": resources_json(&c.resources),
            "unreserved_resources": resources_json(&c.resources),
            "reserved_resources": {},
            "attributes": attributes_json(&c.attributes),
            "flags": {
                "master": c.master,
                "work_dir": c.work_dir.display().to_string(),
                "hostname": c.hostname,
                "port": c.port.to_string(),
                "resources": c.resources.to_string(),
                "isolation": c.isolation.to_string(),
                "cgroups_root": c.cgroups_root,
                "cgroups_enable_cfs": c.enable_cfs.to_string(),
            },
            "frameworks": frameworks,
            "completed_frameworks": [],
        })
    }

    fn metrics(&self, v: &AgentView) -> Map<String, Value> {
        let total = &self.config.resources;
        let mut used = Resources::new();
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        for t in &v.tasks {
            if !t.state.is_terminal() {
                used.add(&Resources::from_proto(&t.info.resources));
            }
            *counts.entry(t.state.as_str_name()).or_default() += 1;
        }
        for t in &v.completed {
            *counts.entry(t.state.as_str_name()).or_default() += 1;
        }
        let mut m = Map::new();
        m.insert("slave/registered".into(), json!(u8::from(v.registered)));
        m.insert(
            "slave/uptime_secs".into(),
            json!(mezzo_proto::now_secs() - self.start_time),
        );
        for r in ["cpus", "mem", "disk"] {
            let t = total.scalar(r);
            let u = used.scalar(r);
            m.insert(format!("slave/{r}_total"), json!(t));
            m.insert(format!("slave/{r}_used"), json!(u));
            m.insert(
                format!("slave/{r}_percent"),
                json!(if t > 0.0 { u / t } else { 0.0 }),
            );
        }
        for s in TaskState::ALL {
            m.insert(
                format!("slave/tasks_{}", s.metric_suffix()),
                json!(counts.get(s.as_str_name()).copied().unwrap_or(0)),
            );
        }
        let running = v.tasks.iter().filter(|t| t.executor_running).count();
        m.insert("slave/executors_running".into(), json!(running));
        m.insert(
            "slave/executors_terminated".into(),
            json!(v.tasks.len() - running + v.completed.len()),
        );
        m.insert(
            "slave/frameworks_active".into(),
            json!(v
                .tasks
                .iter()
                .map(|t| &t.framework_id)
                .collect::<std::collections::BTreeSet<_>>()
                .len()),
        );
        m
    }
}

fn master_host(master: &str) -> String {
    let m = master
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    if m.starts_with("zk://") {
        return String::new();
    }
    m.rsplit_once(':').map(|(h, _)| h).unwrap_or(m).to_string()
}

async fn state(State(ctx): Shared) -> Json<Value> {
    let v = ctx.view.borrow().clone();
    Json(ctx.state_json(&v))
}

async fn metrics_snapshot(State(ctx): Shared) -> Json<Value> {
    let v = ctx.view.borrow().clone();
    Json(Value::Object(ctx.metrics(&v)))
}

/// Prometheus text: `mezzo_agent_*` gauges built from the same numbers.
async fn prometheus(State(ctx): Shared) -> Response {
    let v = ctx.view.borrow().clone();
    match render_prometheus(&ctx, &v) {
        Ok(text) => (
            [(header::CONTENT_TYPE, mezzo_runtime::prom::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn render_prometheus(ctx: &Ctx, v: &AgentView) -> Result<String, prometheus::Error> {
    let m = ctx.metrics(v);
    let num = |k: &str| m.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let e = mezzo_runtime::prom::Exposition::new();
    e.int_gauge(
        "mezzo_agent_registered",
        "1 while the agent is registered with a master",
        i64::from(v.registered),
    )?;
    e.gauge(
        "mezzo_agent_uptime_seconds",
        "Seconds since the agent started",
        num("slave/uptime_secs"),
    )?;
    let resources = |kind: &str| {
        ["cpus", "mem", "disk"].map(|r| (r.to_string(), num(&format!("slave/{r}_{kind}"))))
    };
    e.labelled_gauge(
        (
            "mezzo_agent_resources_capacity",
            "Resources the agent offers",
            "resource",
        ),
        resources("total"),
    )?;
    e.labelled_gauge(
        (
            "mezzo_agent_resources_used",
            "Resources used by the agent's live tasks",
            "resource",
        ),
        resources("used"),
    )?;
    e.labelled_int_gauge(
        (
            "mezzo_agent_tasks",
            "Tasks on this agent (live and recently completed) by state",
            "state",
        ),
        TaskState::ALL.map(|s| {
            let n = num(&format!("slave/tasks_{}", s.metric_suffix())) as i64;
            (s.as_str_name().to_string(), n)
        }),
    )?;
    e.int_gauge(
        "mezzo_agent_executors_running",
        "Executor processes running",
        num("slave/executors_running") as i64,
    )?;
    e.int_gauge(
        "mezzo_agent_frameworks_active",
        "Frameworks with live tasks on this agent",
        num("slave/frameworks_active") as i64,
    )?;
    e.render(Vec::new())
}

/// Binds the agent's HTTP listener (before the agent announces itself).
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::AgentError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| crate::AgentError::Config(format!("cannot listen on {addr}: {e}")))
}
