//! The Metronome-style `/v1` HTTP API (axum). Handlers parse and validate requests,
//! send them to the actor and turn its answer into a response; they hold no state.
//!
//! Errors follow Metronome: malformed JSON is 400 `{"message": "Invalid JSON", ...}`,
//! a well-formed document that is not a valid job or schedule is 422
//! `{"message": "Object is not valid", "details": [{"path", "errors"}]}`, an unknown
//! job 404 `{"message": "Job 'x' does not exist"}`, conflicts 409. A rejected request
//! changes nothing.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::actor::{Command, Request};
use crate::model::{JobSpec, ScheduleSpec, Violation};

/// An error answer: HTTP status and Metronome's error body.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// `message` of the body.
    pub message: String,
    /// `details` of the body (validation errors).
    pub details: Vec<Violation>,
    /// Extra fields of the body.
    pub extra: Vec<(String, Value)>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            details: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Adds a field to the body.
    pub fn with(mut self, key: &str, value: Value) -> ApiError {
        self.extra.push((key.to_string(), value));
        self
    }

    /// 422 with the given violations.
    pub fn violations(details: Vec<Violation>) -> ApiError {
        ApiError {
            details,
            ..ApiError::new(422, "Object is not valid")
        }
    }

    /// 422 with one violation.
    pub fn invalid(path: &str, error: &str) -> ApiError {
        ApiError::violations(vec![Violation {
            path: path.into(),
            errors: vec![error.into()],
        }])
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, message)
    }

    /// 404 for a job.
    pub fn no_job(id: &str) -> ApiError {
        ApiError::new(404, format!("Job '{id}' does not exist"))
    }

    /// 404 for a schedule.
    pub fn no_schedule(id: &str) -> ApiError {
        ApiError::new(404, format!("Schedule '{id}' does not exist"))
    }

    /// 404 for a run.
    pub fn no_run(job: &str, run: &str) -> ApiError {
        ApiError::new(
            404,
            format!("Job run '{run}' of job '{job}' does not exist"),
        )
    }

    fn body(&self) -> Value {
        let mut body = json!({"message": self.message});
        if let Value::Object(m) = &mut body {
            if !self.details.is_empty() {
                m.insert("details".into(), json!(self.details));
            }
            for (k, v) in &self.extra {
                m.insert(k.clone(), v.clone());
            }
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

/// Which extras `?embed=` asked for (repeatable or comma-separated; unknown ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Embed {
    /// `activeRuns`.
    pub active_runs: bool,
    /// `schedules`.
    pub schedules: bool,
    /// `history`.
    pub history: bool,
    /// `historySummary`.
    pub history_summary: bool,
}

/// Minimal percent-decoding for query values (`%2C`, `+`).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every value of `name` in a raw query string, comma-separated values split.
fn query_values(query: Option<&str>, name: &str) -> Vec<String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k) == name).then(|| decode(v))
        })
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn embed(query: Option<&str>) -> Embed {
    let mut e = Embed::default();
    for v in query_values(query, "embed") {
        match v.as_str() {
            "activeRuns" => e.active_runs = true,
            "schedules" => e.schedules = true,
            "history" => e.history = true,
            "historySummary" => e.history_summary = true,
            _ => {}
        }
    }
    e
}

fn flag(query: Option<&str>, name: &str) -> bool {
    query_values(query, name)
        .iter()
        .any(|v| v == "true" || v == "1")
}

/// Fields Mezzo cannot honour: rejected rather than silently ignored.
const UNSUPPORTED_RUN_FIELDS: [&str; 5] = ["docker", "ucr", "artifacts", "secrets", "volumes"];

/// Parses a JSON body: 400 when it is not JSON, 422 when it does not fit `T`.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(400, "Invalid JSON")
            .with("details", json!([{"path": "/", "errors": [e.to_string()]}]))
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid("/", "expected a JSON object"));
    }
    if let Some(run) = value.get("run").and_then(Value::as_object) {
        let bad: Vec<Violation> = UNSUPPORTED_RUN_FIELDS
            .iter()
            .filter(|f| run.get(**f).is_some_and(|v| !v.is_null()))
            .map(|f| Violation {
                path: format!("/run/{f}"),
                errors: vec!["is not supported by Mezzo".into()],
            })
            .collect();
        if !bad.is_empty() {
            return Err(ApiError::violations(bad));
        }
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid("/", &e.to_string()))
}

fn job_spec(body: &[u8]) -> Result<JobSpec, ApiError> {
    let spec: JobSpec = parse(body)?;
    let problems = spec.validate();
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(ApiError::violations(problems))
    }
}

fn schedule_spec(body: &[u8]) -> Result<ScheduleSpec, ApiError> {
    let spec: ScheduleSpec = parse(body)?;
    let problems = spec.validate();
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(ApiError::violations(problems))
    }
}

/// What handlers share: the way to the actor.
#[derive(Clone)]
pub(crate) struct AppState {
    pub actor: mpsc::Sender<Command>,
}

async fn ask(state: &AppState, request: Request) -> Response {
    let (tx, rx) = oneshot::channel();
    if state.actor.send(Command::Http(request, tx)).await.is_err() {
        return ApiError::new(503, "batch framework is shutting down").into_response();
    }
    match rx.await {
        Ok(Ok((status, body))) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            (status, Json(body)).into_response()
        }
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::new(503, "batch framework is shutting down").into_response(),
    }
}

/// The `/v1` router.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/jobs", get(list_jobs).post(create_job))
        .route(
            "/v1/jobs/{id}",
            get(get_job).put(update_job).delete(delete_job),
        )
        .route(
            "/v1/jobs/{id}/schedules",
            get(list_schedules).post(create_schedule),
        )
        .route(
            "/v1/jobs/{id}/schedules/{sid}",
            get(get_schedule)
                .put(update_schedule)
                .delete(delete_schedule),
        )
        .route("/v1/jobs/{id}/runs", get(list_runs).post(start_run))
        .route("/v1/jobs/{id}/runs/{run}", get(get_run))
        .route("/v1/jobs/{id}/runs/{run}/actions/stop", post(stop_run))
        .route("/v1/queue", get(queue))
        .route("/v1/info", get(info))
        .route("/v1/metrics", get(metrics))
        .route("/info", get(info))
        .route("/ping", get(|| async { "pong" }))
        .fallback(|| async { ApiError::new(404, "Not found") })
        .with_state(state)
}

async fn list_jobs(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    ask(&s, Request::ListJobs(embed(q.as_deref()))).await
}

async fn create_job(State(s): State<AppState>, body: Bytes) -> Response {
    match job_spec(&body) {
        Ok(spec) => ask(&s, Request::CreateJob(spec)).await,
        Err(e) => e.into_response(),
    }
}

async fn get_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    ask(&s, Request::GetJob(id, embed(q.as_deref()))).await
}

async fn update_job(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> Response {
    match job_spec(&body) {
        Ok(spec) => ask(&s, Request::UpdateJob(id, spec)).await,
        Err(e) => e.into_response(),
    }
}

async fn delete_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let stop_runs = flag(q.as_deref(), "stopCurrentJobRuns");
    ask(&s, Request::DeleteJob { id, stop_runs }).await
}

async fn list_schedules(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    ask(&s, Request::ListSchedules(id)).await
}

async fn create_schedule(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    match schedule_spec(&body) {
        Ok(spec) => ask(&s, Request::CreateSchedule(id, spec)).await,
        Err(e) => e.into_response(),
    }
}

async fn get_schedule(
    State(s): State<AppState>,
    Path((id, sid)): Path<(String, String)>,
) -> Response {
    ask(&s, Request::GetSchedule(id, sid)).await
}

async fn update_schedule(
    State(s): State<AppState>,
    Path((id, sid)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    match schedule_spec(&body) {
        Ok(spec) => ask(&s, Request::UpdateSchedule(id, sid, spec)).await,
        Err(e) => e.into_response(),
    }
}

async fn delete_schedule(
    State(s): State<AppState>,
    Path((id, sid)): Path<(String, String)>,
) -> Response {
    ask(&s, Request::DeleteSchedule(id, sid)).await
}

async fn list_runs(
    State(s): State<AppState>,
    Path(job): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let include_finished = query_values(q.as_deref(), "include")
        .iter()
        .any(|v| v == "finished");
    ask(
        &s,
        Request::ListRuns {
            job,
            include_finished,
        },
    )
    .await
}

async fn start_run(State(s): State<AppState>, Path(job): Path<String>) -> Response {
    ask(&s, Request::StartRun(job)).await
}

async fn get_run(State(s): State<AppState>, Path((job, run)): Path<(String, String)>) -> Response {
    ask(&s, Request::GetRun(job, run)).await
}

async fn stop_run(State(s): State<AppState>, Path((job, run)): Path<(String, String)>) -> Response {
    ask(&s, Request::StopRun(job, run)).await
}

async fn queue(State(s): State<AppState>) -> Response {
    ask(&s, Request::Queue).await
}

async fn metrics(State(s): State<AppState>) -> Response {
    ask(&s, Request::Metrics).await
}

async fn info(State(s): State<AppState>) -> Response {
    ask(&s, Request::Info).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let e = embed(Some("embed=activeRuns&embed=history%2Cschedules&x=1"));
        assert_eq!(
            e,
            Embed {
                active_runs: true,
                schedules: true,
                history: true,
                history_summary: false
            }
        );
        assert!(flag(Some("stopCurrentJobRuns=true"), "stopCurrentJobRuns"));
        assert!(!flag(None, "stopCurrentJobRuns"));
        assert_eq!(decode("a%2"), "a%2");
    }

    #[test]
    fn body_errors() {
        assert_eq!(job_spec(b"{not json").unwrap_err().status, 400);
        assert_eq!(job_spec(b"[]").unwrap_err().status, 422);
        assert_eq!(job_spec(br#"{"id": "a"}"#).unwrap_err().status, 422);
        assert_eq!(
            job_spec(br#"{"id": "a", "run": {"cmd": "x", "cpus": "lots"}}"#)
                .unwrap_err()
                .status,
            422
        );
        let e =
            job_spec(br#"{"id": "a", "run": {"cmd": "x", "docker": {"image": "i"}}}"#).unwrap_err();
        assert_eq!((e.status, e.details[0].path.as_str()), (422, "/run/docker"));
        let e = job_spec(br#"{"id": "a", "run": {"cmd": "x", "mem": 1}}"#).unwrap_err();
        assert_eq!(e.body()["details"][0]["path"], "/run/mem");
        assert!(job_spec(br#"{"id": "a", "run": {"cmd": "x"}}"#).is_ok());
        assert_eq!(
            schedule_spec(br#"{"id": "s", "cron": "bad"}"#)
                .unwrap_err()
                .status,
            422
        );
    }
}
