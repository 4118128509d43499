//! Metronome's JSON shapes, rendered from the core's typed state.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::Embed;
use crate::core::{next_run_at, Core, JobRecord, ScheduleRecord};
use crate::model::JobSpec;
use crate::run::{JobRun, RunStatus};

/// Metronome's timestamp format: `2016-07-15T13:02:59.735+0000`.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string()
}

fn ts_opt(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(ts(t)))
}

/// A job definition alone (what create, update and delete answer).
pub(crate) fn job_spec(spec: &JobSpec) -> Value {
    serde_json::to_value(spec).unwrap_or(Value::Null)
}

/// A job with the extras `embed` asks for.
pub(crate) fn job(core: &Core, record: &JobRecord, embed: &Embed, now: DateTime<Utc>) -> Value {
    let mut v = job_spec(&record.spec);
    if let Value::Object(map) = &mut v {
        if embed.active_runs {
            let runs = core.active_runs(&record.spec.id).into_iter().map(run);
            map.insert("activeRuns".into(), runs.collect());
        }
        if embed.schedules {
            let s = record.schedules.iter().map(|s| schedule(s, now));
            map.insert("schedules".into(), s.collect());
        }
        if embed.history {
            map.insert("history".into(), history(record, true));
        }
        if embed.history_summary {
            map.insert("historySummary".into(), history(record, false));
        }
    }
    v
}

/// A run (plus `exitCode`/`message` per task, `reason` and `scheduleId`).
pub(crate) fn run(run: &JobRun) -> Value {
    let tasks: Vec<Value> = run
        .tasks
        .iter()
        .map(|t| {
            let mut v = json!({
                "id": t.id,
                "status": t.status,
                "startedAt": ts(t.started_at),
                "completedAt": ts_opt(t.completed_at),
            });
            if let Value::Object(m) = &mut v {
                if let Some(code) = t.exit_code {
                    m.insert("exitCode".into(), json!(code));
                }
                if let Some(msg) = &t.message {
                    m.insert("message".into(), json!(msg));
                }
            }
            v
        })
        .collect();
    let mut v = json!({
        "id": run.id,
        "jobId": run.job_id,
        "status": run.status,
        "createdAt": ts(run.created_at),
        "completedAt": ts_opt(run.completed_at),
        "tasks": tasks,
    });
    if let Value::Object(m) = &mut v {
        if let Some(reason) = &run.reason {
            m.insert("reason".into(), json!(reason));
        }
        if let Some(s) = &run.schedule_id {
            m.insert("scheduleId".into(), json!(s));
        }
    }
    v
}

/// Runs as a JSON array.
pub(crate) fn runs<'a>(runs: impl IntoIterator<Item = &'a JobRun>) -> Value {
    runs.into_iter().map(run).collect()
}

/// A schedule with its `nextRunAt`.
pub(crate) fn schedule(s: &ScheduleRecord, now: DateTime<Utc>) -> Value {
    let mut v = serde_json::to_value(&s.spec).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("nextRunAt".into(), ts_opt(next_run_at(s, now)));
    }
    v
}

fn history(job: &JobRecord, full: bool) -> Value {
    let h = &job.history;
    let mut v = json!({
        "successCount": h.success_count,
        "failureCount": h.failure_count,
        "lastSuccessAt": ts_opt(h.last_success_at),
        "lastFailureAt": ts_opt(h.last_failure_at),
    });
    if full {
        let summary = |r: &JobRun| {
            json!({
                "id": r.id,
                "createdAt": ts(r.created_at),
                "finishedAt": ts_opt(r.completed_at),
                "tasks": r.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            })
        };
        let finished = |ok: bool| -> Value {
            job.finished
                .iter()
                .rev()
                .filter(|r| (r.status == RunStatus::Success) == ok)
                .map(summary)
                .collect()
        };
        if let Value::Object(m) = &mut v {
            m.insert("successfulFinishedRuns".into(), finished(true));
            m.insert("failedFinishedRuns".into(), finished(false));
        }
    }
    v
}

/// `/v1/queue`: runs waiting for offers, by job.
pub(crate) fn queue(core: &Core, now: DateTime<Utc>) -> Value {
    let mut by_job: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for run in core.queued_runs(now) {
        by_job
            .entry(&run.job_id)
            .or_default()
            .push(json!({"runId": run.id}));
    }
    by_job
        .into_iter()
        .map(|(j, runs)| json!({"jobId": j, "runs": runs}))
        .collect()
}

/// `/v1/metrics`: event counters and gauges.
pub(crate) fn metrics(core: &Core) -> Value {
    let counters: serde_json::Map<String, Value> = core
        .counters()
        .iter()
        .map(|(k, v)| (format!("batch.{k}"), json!({ "count": v })))
        .collect();
    json!({
        "counters": counters,
        "gauges": {
            "batch.jobs": {"value": core.jobs().count()},
            "batch.runs.active": {"value": core.active_run_count()},
        },
    })
}

/// `/v1/info`.
pub(crate) fn info(core: &Core) -> Value {
    json!({
        "name": "mezzo-batch",
        "version": env!("CARGO_PKG_VERSION"),
        "frameworkId": core.framework_id(),
        "subscribed": core.is_subscribed(),
    })
}
