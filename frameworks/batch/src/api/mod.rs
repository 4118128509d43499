//! The Metronome-style `/v1` HTTP API (axum). Handlers parse requests, run them on the
//! core through the actor ([`Handle::call`]), and turn the outcome into a response;
//! this module alone knows HTTP status codes and error bodies.
//!
//! Errors follow Metronome: malformed JSON is 400 `{"message": "Invalid JSON", ...}`,
//! a well-formed document that is not a valid job or schedule is 422
//! `{"message": "Object is not valid", "details": [{"path", "errors"}]}`, an unknown
//! job 404 `{"message": "Job 'x' does not exist"}`, conflicts 409. A rejected request
//! changes nothing.

mod json;
mod query;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::actor::{ActorError, Handle};
use crate::core::{Core, CoreError};
use crate::model::{JobSpec, ScheduleSpec, Violation};
pub use query::Embed;
use query::{embed, flag, parse, query_values};

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

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        let message = e.to_string();
        match e {
            CoreError::JobNotFound(_)
            | CoreError::ScheduleNotFound(_)
            | CoreError::RunNotFound { .. } => ApiError::new(404, message),
            CoreError::JobExists(_)
            | CoreError::ScheduleExists(_)
            | CoreError::ActiveRuns(_)
            | CoreError::RunFinished { .. } => ApiError::new(409, message),
            CoreError::ConcurrentRunForbidden { active, .. } => {
                ApiError::new(409, message).with("activeRuns", json::runs(&active))
            }
            CoreError::Invalid { details } => ApiError::violations(details),
        }
    }
}

impl From<ActorError> for ApiError {
    fn from(e: ActorError) -> ApiError {
        match e {
            ActorError::Unavailable => ApiError::new(503, "batch framework is shutting down"),
            ActorError::NotPersisted(why) => ApiError::new(500, format!("store: {why}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

/// Runs `f` on the core; answers `ok` with its body, or the error.
async fn answer<F>(s: &Handle, ok: StatusCode, f: F) -> Response
where
    F: FnOnce(&mut Core, DateTime<Utc>) -> Result<Value, CoreError> + Send + 'static,
{
    match s.call(f).await {
        Ok(Ok(body)) => (ok, Json(body)).into_response(),
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The `/v1` router.
pub(crate) fn router(handle: Handle) -> Router {
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
        .with_state(handle)
}

const OK: StatusCode = StatusCode::OK;
const CREATED: StatusCode = StatusCode::CREATED;

async fn list_jobs(State(s): State<Handle>, RawQuery(q): RawQuery) -> Response {
    let embed = embed(q.as_deref());
    answer(&s, OK, move |core, now| {
        Ok(core
            .jobs()
            .map(|j| json::job(core, j, &embed, now))
            .collect())
    })
    .await
}

async fn create_job(State(s): State<Handle>, body: Bytes) -> Response {
    let spec: JobSpec = match parse(&body) {
        Ok(spec) => spec,
        Err(e) => return e.into_response(),
    };
    answer(&s, CREATED, move |core, now| {
        core.create_job(spec, now).map(|j| json::job_spec(&j.spec))
    })
    .await
}

async fn get_job(
    State(s): State<Handle>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let embed = embed(q.as_deref());
    answer(&s, OK, move |core, now| {
        let job = core.job(&id)?;
        Ok(json::job(core, job, &embed, now))
    })
    .await
}

async fn update_job(State(s): State<Handle>, Path(id): Path<String>, body: Bytes) -> Response {
    let spec: JobSpec = match parse(&body) {
        Ok(spec) => spec,
        Err(e) => return e.into_response(),
    };
    answer(&s, OK, move |core, _| {
        core.update_job(&id, spec).map(|j| json::job_spec(&j.spec))
    })
    .await
}

async fn delete_job(
    State(s): State<Handle>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let stop_runs = flag(q.as_deref(), "stopCurrentJobRuns");
    answer(&s, OK, move |core, now| {
        core.delete_job(&id, stop_runs, now)
            .map(|j| json::job_spec(&j.spec))
    })
    .await
}

async fn list_schedules(State(s): State<Handle>, Path(id): Path<String>) -> Response {
    answer(&s, OK, move |core, now| {
        let schedules = core.schedules(&id)?;
        Ok(schedules.iter().map(|s| json::schedule(s, now)).collect())
    })
    .await
}

async fn create_schedule(State(s): State<Handle>, Path(id): Path<String>, body: Bytes) -> Response {
    let spec: ScheduleSpec = match parse(&body) {
        Ok(spec) => spec,
        Err(e) => return e.into_response(),
    };
    answer(&s, CREATED, move |core, now| {
        let record = core.create_schedule(&id, spec, now)?;
        Ok(json::schedule(&record, now))
    })
    .await
}

async fn get_schedule(
    State(s): State<Handle>,
    Path((id, sid)): Path<(String, String)>,
) -> Response {
    answer(&s, OK, move |core, now| {
        Ok(json::schedule(core.schedule(&id, &sid)?, now))
    })
    .await
}

async fn update_schedule(
    State(s): State<Handle>,
    Path((id, sid)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let spec: ScheduleSpec = match parse(&body) {
        Ok(spec) => spec,
        Err(e) => return e.into_response(),
    };
    answer(&s, OK, move |core, now| {
        let record = core.update_schedule(&id, &sid, spec, now)?;
        Ok(json::schedule(&record, now))
    })
    .await
}

async fn delete_schedule(
    State(s): State<Handle>,
    Path((id, sid)): Path<(String, String)>,
) -> Response {
    answer(&s, OK, move |core, _| {
        core.delete_schedule(&id, &sid).map(|()| json!({}))
    })
    .await
}

async fn list_runs(
    State(s): State<Handle>,
    Path(job): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let include_finished = query_values(q.as_deref(), "include")
        .iter()
        .any(|v| v == "finished");
    answer(&s, OK, move |core, _| {
        Ok(json::runs(core.runs(&job, include_finished)?))
    })
    .await
}

async fn start_run(State(s): State<Handle>, Path(job): Path<String>) -> Response {
    answer(&s, CREATED, move |core, now| {
        core.start_run(&job, now).map(json::run)
    })
    .await
}

async fn get_run(State(s): State<Handle>, Path((job, run)): Path<(String, String)>) -> Response {
    answer(&s, OK, move |core, _| core.run(&job, &run).map(json::run)).await
}

async fn stop_run(State(s): State<Handle>, Path((job, run)): Path<(String, String)>) -> Response {
    answer(&s, OK, move |core, now| {
        core.stop_run(&job, &run, now).map(json::run)
    })
    .await
}

async fn queue(State(s): State<Handle>) -> Response {
    answer(&s, OK, |core, now| Ok(json::queue(core, now))).await
}

async fn metrics(State(s): State<Handle>) -> Response {
    answer(&s, OK, |core, _| Ok(json::metrics(core))).await
}

async fn info(State(s): State<Handle>) -> Response {
    answer(&s, OK, |core, _| Ok(json::info(core))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::JobRun;

    #[test]
    fn core_errors_map_to_metronome_statuses_and_bodies() {
        let status = |e: CoreError| ApiError::from(e).status;
        assert_eq!(status(CoreError::JobNotFound("a".into())), 404);
        assert_eq!(status(CoreError::ScheduleNotFound("s".into())), 404);
        let missing = CoreError::RunNotFound {
            job: "a".into(),
            run: "r".into(),
        };
        assert_eq!(status(missing), 404);
        assert_eq!(status(CoreError::JobExists("a".into())), 409);
        assert_eq!(status(CoreError::ScheduleExists("s".into())), 409);
        assert_eq!(status(CoreError::ActiveRuns("a".into())), 409);
        let done = CoreError::RunFinished {
            job: "a".into(),
            run: "r".into(),
        };
        assert_eq!(status(done), 409);
        let e = ApiError::from(CoreError::JobNotFound("missing".into()));
        assert_eq!(e.body(), json!({"message": "Job 'missing' does not exist"}));
        let e = ApiError::from(CoreError::invalid("/run/mem", "must be at least 32"));
        assert_eq!(e.status, 422);
        assert_eq!(e.body()["message"], "Object is not valid");
        assert_eq!(e.body()["details"][0]["path"], "/run/mem");
        let spec = serde_json::from_value(json!({"cmd": "true"})).unwrap();
        let active = JobRun::new("r1".into(), "a".into(), spec, Utc::now());
        let e = ApiError::from(CoreError::ConcurrentRunForbidden {
            job: "a".into(),
            active: vec![active],
        });
        assert_eq!(e.status, 409);
        assert_eq!(e.body()["activeRuns"][0]["id"], "r1");
        assert_eq!(ApiError::from(ActorError::Unavailable).status, 503);
        assert_eq!(
            ApiError::from(ActorError::NotPersisted("disk full".into())).status,
            500
        );
    }
}
