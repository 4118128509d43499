//! The agent's HTTP API, Mesos-shaped: `/state`, `/metrics/snapshot`,
//! `/metrics` (Prometheus text), `/health`, and `/files/{browse,read,download}`
//! over task sandboxes.
//!
//! Reads come from the [`AgentView`] the agent actor publishes on a `watch`
//! channel after each event; nothing here touches the actor's state.
//!
//! Invariant: `/files` serves nothing outside `<work_dir>/sandboxes`. A path
//! is rejected if it has a `..` component or a NUL, or is absolute outside
//! the sandboxes root; it is then canonicalized (resolving symlinks) and must
//! still lie under the canonical root; finally the file is opened with
//! `O_NOFOLLOW` and its (device, inode) compared with what was checked, so
//! swapping a directory for a symlink between check and open is caught.
//! (A hard link made inside a sandbox to a file elsewhere on the same file
//! system is not detectable this way; `fs.protected_hardlinks=1`, the
//! default on Linux, stops tasks from linking files they cannot read.)

use axum::serve::ListenerExt as _;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mezzo_proto::v1::{self, TaskState};
use mezzo_proto::Resources;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::AgentConfig;

/// The Mesos API level the agent's JSON follows.
const MESOS_COMPAT_VERSION: &str = "1.11.0";

/// Largest `/files/read` chunk: 16 pages of 4 KiB, as Mesos.
pub const MAX_READ: u64 = 16 * 4096;

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
    /// `<work_dir>/sandboxes`, canonical: every served path lies under it.
    root: PathBuf,
    /// The same root as configured (may differ from `root` via symlinks).
    configured_root: PathBuf,
    start_time: f64,
    view: watch::Receiver<AgentView>,
}

type Shared = State<Arc<Ctx>>;

/// Serves the agent's HTTP API on `listener` until the process ends.
pub(crate) async fn serve(
    listener: TcpListener,
    config: Arc<AgentConfig>,
    view: watch::Receiver<AgentView>,
) {
    let configured_root = config.work_dir.join("sandboxes");
    if let Err(e) = std::fs::create_dir_all(&configured_root) {
        warn!(path = %configured_root.display(), error = %e, "cannot create the sandboxes root");
    }
    let root = configured_root
        .canonicalize()
        .unwrap_or_else(|_| configured_root.clone());
    let ctx = Arc::new(Ctx {
        config,
        root,
        configured_root,
        start_time: mezzo_proto::now_secs(),
        view,
    });
    if let Err(e) = axum::serve(
        listener.tap_io(|tcp| {
            // Best effort: without it small exchanges (acks, unary gRPC calls)
            // stall 40 ms on Nagle against the peer's delayed ACK.
            let _ = tcp.set_nodelay(true);
        }),
        router(ctx),
    )
    .await
    {
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
        .route("/files/browse", get(browse))
        .route("/files/browse.json", get(browse))
        .route("/files/read", get(read))
        .route("/files/read.json", get(read))
        .route("/files/download", get(download))
        .route("/files/download.json", get(download))
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
    /// A sandbox path as served: under the canonical root.
    fn served_dir(&self, dir: &Path) -> PathBuf {
        match dir.strip_prefix(&self.configured_root) {
            Ok(rel) => self.root.join(rel),
            Err(_) => dir.to_path_buf(),
        }
    }

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
            "directory": self.served_dir(&t.directory).display().to_string(),
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
        for s in TASK_STATES {
            let key = format!("TASK_{}", s.to_uppercase());
            m.insert(
                format!("slave/tasks_{s}"),
                json!(counts.get(key.as_str()).copied().unwrap_or(0)),
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

const TASK_STATES: [&str; 9] = [
    "staging", "starting", "running", "killing", "finished", "failed", "killed", "lost", "error",
];

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
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn render_prometheus(ctx: &Ctx, v: &AgentView) -> Result<String, prometheus::Error> {
    use prometheus::{Encoder, Gauge, GaugeVec, IntGauge, IntGaugeVec, Opts, Registry};
    let m = ctx.metrics(v);
    let num = |k: &str| m.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let reg = Registry::new();
    let registered = IntGauge::new(
        "mezzo_agent_registered",
        "1 while the agent is registered with a master",
    )?;
    registered.set(i64::from(v.registered));
    reg.register(Box::new(registered))?;
    let uptime = Gauge::new(
        "mezzo_agent_uptime_seconds",
        "Seconds since the agent started",
    )?;
    uptime.set(num("slave/uptime_secs"));
    reg.register(Box::new(uptime))?;
    let total = GaugeVec::new(
        Opts::new(
            "mezzo_agent_resources_capacity",
            "Resources the agent offers",
        ),
        &["resource"],
    )?;
    let used = GaugeVec::new(
        Opts::new(
            "mezzo_agent_resources_used",
            "Resources used by the agent's live tasks",
        ),
        &["resource"],
    )?;
    for r in ["cpus", "mem", "disk"] {
        total
            .with_label_values(&[r])
            .set(num(&format!("slave/{r}_total")));
        used.with_label_values(&[r])
            .set(num(&format!("slave/{r}_used")));
    }
    reg.register(Box::new(total))?;
    reg.register(Box::new(used))?;
    let tasks = IntGaugeVec::new(
        Opts::new(
            "mezzo_agent_tasks",
            "Tasks on this agent (live and recently completed) by state",
        ),
        &["state"],
    )?;
    for s in TASK_STATES {
        tasks
            .with_label_values(&[&format!("TASK_{}", s.to_uppercase())])
            .set(num(&format!("slave/tasks_{s}")) as i64);
    }
    reg.register(Box::new(tasks))?;
    let executors = IntGauge::new(
        "mezzo_agent_executors_running",
        "Executor processes running",
    )?;
    executors.set(num("slave/executors_running") as i64);
    reg.register(Box::new(executors))?;
    let fws = IntGauge::new(
        "mezzo_agent_frameworks_active",
        "Frameworks with live tasks on this agent",
    )?;
    fws.set(num("slave/frameworks_active") as i64);
    reg.register(Box::new(fws))?;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new().encode(&reg.gather(), &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

// ------------------------------------------------------------------ files

/// Why a `/files` request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum FileError {
    /// Malformed request (missing path, bad offset, a directory to read).
    BadRequest(String),
    /// The path is outside the sandboxes by its very spelling.
    Forbidden(String),
    /// Nothing servable there (including symlinks that lead outside).
    NotFound,
}

impl IntoResponse for FileError {
    fn into_response(self) -> Response {
        match self {
            FileError::BadRequest(m) => (StatusCode::BAD_REQUEST, m).into_response(),
            FileError::Forbidden(m) => (StatusCode::FORBIDDEN, m).into_response(),
            FileError::NotFound => (StatusCode::NOT_FOUND, "Path not found").into_response(),
        }
    }
}

/// Resolves a requested path to a canonical path under `root` (itself
/// canonical). `configured_root` is the same directory as configured; an
/// absolute request may start with either. Relative requests are relative
/// to the root.
pub fn resolve(root: &Path, configured_root: &Path, requested: &str) -> Result<PathBuf, FileError> {
    if requested.is_empty() {
        return Err(FileError::BadRequest(
            "Expecting 'path' query parameter".into(),
        ));
    }
    if requested.contains('\0') {
        return Err(FileError::Forbidden("path contains a NUL byte".into()));
    }
    let p = Path::new(requested);
    let rest = if p.is_absolute() {
        p.strip_prefix(root)
            .or_else(|_| p.strip_prefix(configured_root))
            .map_err(|_| FileError::Forbidden("path is outside the sandboxes".into()))?
    } else {
        p
    };
    let mut rel = PathBuf::new();
    for c in rest.components() {
        match c {
            Component::Normal(x) => rel.push(x),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(FileError::Forbidden("path must not contain '..'".into()))
            }
        }
    }
    let canon = root
        .join(rel)
        .canonicalize()
        .map_err(|_| FileError::NotFound)?;
    // A symlink that leads out is reported like a missing file: the
    // response says nothing about what lies outside.
    if !canon.starts_with(root) {
        return Err(FileError::NotFound);
    }
    Ok(canon)
}

/// Opens a resolved path without following a symlink in its last component
/// and checks it is the very file that was resolved.
fn open_checked(path: &Path, dir: bool) -> Result<(std::fs::File, std::fs::Metadata), FileError> {
    let expected = std::fs::metadata(path).map_err(|_| FileError::NotFound)?;
    let mut flags = libc::O_NOFOLLOW;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|_| FileError::NotFound)?;
    let got = f.metadata().map_err(|_| FileError::NotFound)?;
    if got.dev() != expected.dev() || got.ino() != expected.ino() {
        return Err(FileError::NotFound);
    }
    Ok((f, got))
}

#[derive(Deserialize)]
struct PathQuery {
    path: Option<String>,
    offset: Option<String>,
    length: Option<String>,
}

impl Ctx {
    fn resolve(&self, q: &PathQuery) -> Result<PathBuf, FileError> {
        resolve(
            &self.root,
            &self.configured_root,
            q.path.as_deref().unwrap_or(""),
        )
    }
}

/// `ls -l` style mode string, as Mesos' `/files/browse` returns.
fn mode_string(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn entry_json(path: &Path, md: &std::fs::Metadata) -> Value {
    json!({
        "path": path.display().to_string(),
        "nlink": md.nlink(),
        "size": md.size(),
        "mtime": md.mtime(),
        "mode": mode_string(md.mode()),
        "uid": md.uid().to_string(),
        "gid": md.gid().to_string(),
    })
}

/// `/files/browse?path=`: the entries of a directory (a file: itself).
async fn browse(State(ctx): Shared, Query(q): Query<PathQuery>) -> Response {
    let ctx2 = ctx.clone();
    let r = tokio::task::spawn_blocking(move || browse_blocking(&ctx2, &q)).await;
    match r {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn browse_blocking(ctx: &Ctx, q: &PathQuery) -> Result<Value, FileError> {
    let path = ctx.resolve(q)?;
    let md = std::fs::metadata(&path).map_err(|_| FileError::NotFound)?;
    if !md.is_dir() {
        let (_, md) = open_checked(&path, false)?;
        return Ok(json!([entry_json(&path, &md)]));
    }
    let (dir, _) = open_checked(&path, true)?;
    // List through the descriptor we checked, not the path again.
    let fd_path = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    ));
    let rd = std::fs::read_dir(&fd_path).map_err(|_| FileError::NotFound)?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Ok(md) = std::fs::symlink_metadata(fd_path.join(e.file_name())) else {
            continue;
        };
        out.push(entry_json(&path.join(e.file_name()), &md));
    }
    out.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Ok(Value::Array(out))
}

fn parse_i64(name: &str, v: Option<&str>) -> Result<Option<i64>, FileError> {
    match v {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| FileError::BadRequest(format!("Failed to parse {name}: '{s}'"))),
    }
}

/// `/files/read?path=&offset=&length=`: `{"data": "...", "offset": N}`;
/// `offset=-1` returns the file's length as `offset` and no data.
async fn read(State(ctx): Shared, Query(q): Query<PathQuery>) -> Response {
    let ctx2 = ctx.clone();
    match tokio::task::spawn_blocking(move || read_blocking(&ctx2, &q)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn read_blocking(ctx: &Ctx, q: &PathQuery) -> Result<Value, FileError> {
    let offset = parse_i64("offset", q.offset.as_deref())?.unwrap_or(0);
    let length = parse_i64("length", q.length.as_deref())?;
    if offset < -1 {
        return Err(FileError::BadRequest(format!(
            "Negative offset provided: {offset}"
        )));
    }
    if length.is_some_and(|l| l < -1) {
        return Err(FileError::BadRequest("Negative length provided".into()));
    }
    let path = ctx.resolve(q)?;
    let (mut f, md) = open_checked(&path, false)?;
    if md.is_dir() {
        return Err(FileError::BadRequest("Cannot read a directory".into()));
    }
    let size = md.len();
    if offset == -1 {
        return Ok(json!({"data": "", "offset": size}));
    }
    let offset = offset as u64;
    if offset >= size {
        return Ok(json!({"data": "", "offset": size}));
    }
    let want = match length {
        None | Some(-1) => MAX_READ,
        Some(l) => (l as u64).min(MAX_READ),
    };
    let want = want.min(size - offset);
    let mut buf = Vec::with_capacity(want as usize);
    f.seek(SeekFrom::Start(offset))
        .map_err(|_| FileError::NotFound)?;
    f.take(want)
        .read_to_end(&mut buf)
        .map_err(|_| FileError::NotFound)?;
    // Do not split a UTF-8 character at the end of a chunk: the next read
    // (from offset + bytes returned) picks it up whole.
    if let Err(e) = std::str::from_utf8(&buf) {
        if e.error_len().is_none() && e.valid_up_to() > 0 {
            buf.truncate(e.valid_up_to());
        }
    }
    Ok(json!({"data": String::from_utf8_lossy(&buf), "offset": offset}))
}

/// `/files/download?path=`: the file's bytes, as an attachment.
async fn download(State(ctx): Shared, Query(q): Query<PathQuery>) -> Response {
    let ctx2 = ctx.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let path = ctx2.resolve(&q)?;
        let (f, md) = open_checked(&path, false)?;
        if md.is_dir() {
            return Err(FileError::BadRequest("Cannot download a directory".into()));
        }
        Ok((path, f, md.len()))
    })
    .await;
    let (path, f, len) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return e.into_response(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let name: String = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    let file = tokio::fs::File::from_std(f);
    let stream = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Binds the agent's HTTP listener (before the agent announces itself).
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::AgentError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| crate::AgentError::Config(format!("cannot listen on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandboxes");
        let sb = root.join("fw").join("task").join("c1");
        std::fs::create_dir_all(&sb).unwrap();
        std::fs::write(sb.join("stdout"), "hello\n").unwrap();
        std::fs::write(dir.path().join("secret"), "top secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), sb.join("leak")).unwrap();
        std::os::unix::fs::symlink(dir.path(), sb.join("up")).unwrap();
        std::os::unix::fs::symlink(sb.join("stdout"), sb.join("inside")).unwrap();
        let root = root.canonicalize().unwrap();
        (dir, root)
    }

    #[test]
    fn resolves_inside_and_refuses_every_escape() {
        let (dir, root) = fixture();
        let cfg = dir.path().join("sandboxes");
        let ok = resolve(&root, &cfg, "fw/task/c1/stdout").unwrap();
        assert!(ok.starts_with(&root));
        let abs = format!("{}/fw/task/c1/stdout", cfg.display());
        assert_eq!(resolve(&root, &cfg, &abs).unwrap(), ok);
        // A symlink that stays inside is fine.
        assert_eq!(resolve(&root, &cfg, "fw/task/c1/inside").unwrap(), ok);
        let secret = dir.path().join("secret").display().to_string();
        for bad in [
            "../secret",
            "fw/../../secret",
            "fw/task/c1/../../../../secret",
            &secret,
            "/etc/passwd",
            "fw/task/c1/leak",
            "fw/task/c1/up/secret",
            "fw/task/c1/stdout\0",
            "",
        ] {
            assert!(resolve(&root, &cfg, bad).is_err(), "{bad:?} was served");
        }
        let dotdot_abs = format!("{}/../secret", cfg.display());
        assert!(resolve(&root, &cfg, &dotdot_abs).is_err());
    }

    #[test]
    fn mode_strings_look_like_ls() {
        assert_eq!(mode_string(0o040755), "drwxr-xr-x");
        assert_eq!(mode_string(0o100644), "-rw-r--r--");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
    }

    #[test]
    fn open_checked_refuses_a_final_symlink() {
        let (_dir, root) = fixture();
        let link = root.join("fw/task/c1/inside");
        // resolve() canonicalizes, so a symlink never reaches open_checked;
        // if one did (a swap after the check), O_NOFOLLOW refuses it.
        assert!(open_checked(&link, false).is_err());
        assert!(open_checked(&root.join("fw/task/c1/stdout"), false).is_ok());
    }
}
