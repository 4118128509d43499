//! Job and schedule definitions in Metronome's JSON shape (`jobspec.schema.json`,
//! `schedulespec.schema.json`), their defaults and their validation.
//!
//! Validation is pure: it returns every problem found as a [`Violation`] (a JSON
//! pointer and messages) so the HTTP layer can answer 422 with Metronome's
//! `{"message": "Object is not valid", "details": [{"path", "errors"}]}`.

#![deny(clippy::disallowed_methods)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::constraints::Operator;
use crate::cron::CronSpec;

/// A job definition: `POST /v1/jobs` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// Dot-separated path of names made of `[a-z0-9-]` (e.g. `prod.reports.daily`).
    pub id: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free-form key/value labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// What a run of the job executes.
    pub run: RunSpec,
    /// Schedules given inline at creation (Metronome's `/v0` shape); stored apart.
    #[serde(default, skip_serializing)]
    pub schedules: Vec<ScheduleSpec>,
}

/// What each task of a run executes and needs (`run` of a job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    /// Shell command (`sh -c`); `cmd` or `args` must be given, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Command as an argument vector (executed without a shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// CPU shares per task (min 0.01).
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Memory per task in MB (min 32).
    #[serde(default = "default_mem")]
    pub mem: f64,
    /// Disk per task in MB (min 0).
    #[serde(default)]
    pub disk: f64,
    /// GPUs per task: Mezzo has no GPU resources, so only 0 is accepted.
    #[serde(default)]
    pub gpus: f64,
    /// Environment variables of the task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// User the task runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Seconds a run may wait for its tasks to start before it is aborted (FAILED).
    #[serde(default = "default_max_launch_delay")]
    pub max_launch_delay: u64,
    /// Grace period between SIGTERM and SIGKILL when a task is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<f64>,
    /// What happens when a task fails.
    #[serde(default)]
    pub restart: RestartSpec,
    /// Where tasks may run.
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
    /// Beyond Metronome: tasks per run (like a Kubernetes Job's completions); the run
    /// succeeds when all of them have finished successfully.
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
}

fn default_cpus() -> f64 {
    1.0
}
fn default_mem() -> f64 {
    128.0
}
fn default_max_launch_delay() -> u64 {
    3600
}
fn default_parallelism() -> u32 {
    1
}

/// `run.restart`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestartSpec {
    /// NEVER (default) or ON_FAILURE.
    #[serde(default)]
    pub policy: RestartPolicy,
    /// Seconds from the run's creation after which it is no longer retried, and is
    /// killed and FAILED if still going. None: forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<u64>,
}

/// `run.restart.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RestartPolicy {
    /// A failed task fails the run.
    #[default]
    Never,
    /// A failed task is relaunched (with backoff) until the active deadline.
    OnFailure,
}

/// `run.placement`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Every constraint must hold for an offer to be used.
    #[serde(default)]
    pub constraints: Vec<ConstraintSpec>,
}

impl Placement {
    fn is_empty(&self) -> bool {
        self.constraints.is_empty()
    }
}

/// One placement constraint: `{"attribute": "hostname", "operator": "LIKE", "value": "a.*"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConstraintSpec {
    /// `hostname` (or `@hostname`) or an agent attribute name.
    pub attribute: String,
    /// IS, EQ, LIKE or UNLIKE.
    pub operator: Operator,
    /// The value compared with (a full-match regular expression for LIKE/UNLIKE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A schedule of a job (`/v1/jobs/{id}/schedules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// Name made of `[a-z0-9-]`, unique within the job.
    pub id: String,
    /// Five-field cron expression (minute hour day-of-month month day-of-week).
    pub cron: String,
    /// IANA time zone name the cron expression is read in (default `UTC`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// A tick not started within this many seconds is skipped (default 900).
    #[serde(default = "default_starting_deadline")]
    pub starting_deadline_seconds: u64,
    /// What to do when a tick comes while a run of the job is active.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Disabled schedules never fire.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_timezone() -> String {
    "UTC".into()
}
fn default_starting_deadline() -> u64 {
    900
}
fn default_true() -> bool {
    true
}

/// `concurrencyPolicy` of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConcurrencyPolicy {
    /// Start a new run whatever is active (default).
    #[default]
    Allow,
    /// Skip the tick (or refuse a manual trigger) while a run is active.
    Forbid,
    /// Stop the active runs, then start the new one.
    Replace,
}

/// One problem found by validation: where (a JSON pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON pointer into the submitted document, e.g. `/run/cpus`.
    pub path: String,
    /// Human-readable messages.
    pub errors: Vec<String>,
}

/// Collects violations, merging messages for the same path.
#[derive(Debug, Default)]
struct Violations(Vec<Violation>);

impl Violations {
    fn add(&mut self, path: impl Into<String>, error: impl Into<String>) {
        let path = path.into();
        match self.0.iter_mut().find(|v| v.path == path) {
            Some(v) => v.errors.push(error.into()),
            None => self.0.push(Violation {
                path,
                errors: vec![error.into()],
            }),
        }
    }
}

/// Largest `run.parallelism` accepted.
pub const MAX_PARALLELISM: u32 = 1000;

/// True for a name of `[a-z0-9-]` that does not start or end with `-`.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// True for a job id: dot-separated [`valid_name`]s.
pub fn valid_job_id(id: &str) -> bool {
    id.len() <= 200 && id.split('.').all(valid_name)
}

/// True for a schedule id.
pub fn valid_schedule_id(id: &str) -> bool {
    id.len() <= 100 && valid_name(id)
}

impl JobSpec {
    /// Every problem of this job definition (empty: valid).
    pub fn validate(&self) -> Vec<Violation> {
        let mut v = Violations::default();
        if !valid_job_id(&self.id) {
            v.add(
                "/id",
                "must be dot-separated names of [a-z0-9-], not starting or ending with '-'",
            );
        }
        self.run.validate_into(&mut v, "/run");
        for (i, s) in self.schedules.iter().enumerate() {
            s.validate_into(&mut v, &format!("/schedules/{i}"));
        }
        let mut ids: Vec<&str> = self.schedules.iter().map(|s| s.id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            v.add("/schedules", "schedule ids must be unique");
        }
        v.0
    }
}

impl RunSpec {
    fn validate_into(&self, v: &mut Violations, at: &str) {
        match (&self.cmd, &self.args) {
            (None, None) => v.add(at, "one of cmd or args must be given"),
            (Some(_), Some(_)) => v.add(at, "only one of cmd or args may be given"),
            (Some(cmd), None) if cmd.trim().is_empty() => {
                v.add(format!("{at}/cmd"), "must not be empty")
            }
            (None, Some(args)) if args.is_empty() => {
                v.add(format!("{at}/args"), "must not be empty")
            }
            _ => {}
        }
        let scalar = |v: &mut Violations, name: &str, value: f64, min: f64| {
            if !value.is_finite() {
                v.add(format!("{at}/{name}"), "must be a finite number");
            } else if value < min {
                v.add(format!("{at}/{name}"), format!("must be at least {min}"));
            }
        };
        scalar(v, "cpus", self.cpus, 0.01);
        scalar(v, "mem", self.mem, 32.0);
        scalar(v, "disk", self.disk, 0.0);
        if self.gpus != 0.0 {
            v.add(format!("{at}/gpus"), "GPUs are not supported: must be 0");
        }
        if self.max_launch_delay < 1 {
            v.add(format!("{at}/maxLaunchDelay"), "must be at least 1");
        }
        if let Some(g) = self.task_kill_grace_period_seconds {
            if !g.is_finite() || g < 0.0 {
                v.add(
                    format!("{at}/taskKillGracePeriodSeconds"),
                    "must be a non-negative number",
                );
            }
        }
        if self.restart.active_deadline_seconds == Some(0) {
            v.add(
                format!("{at}/restart/activeDeadlineSeconds"),
                "must be at least 1",
            );
        }
        if self.parallelism < 1 || self.parallelism > MAX_PARALLELISM {
            v.add(
                format!("{at}/parallelism"),
                format!("must be between 1 and {MAX_PARALLELISM}"),
            );
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                v.add(
                    format!("{at}/env"),
                    format!("invalid variable name {name:?}"),
                );
            }
        }
        if let Some(user) = &self.user {
            if user.trim().is_empty() {
                v.add(format!("{at}/user"), "must not be empty");
            }
        }
        for (i, c) in self.placement.constraints.iter().enumerate() {
            let path = format!("{at}/placement/constraints/{i}");
            if c.attribute.trim().is_empty() {
                v.add(format!("{path}/attribute"), "must not be empty");
            }
            match &c.value {
                None => v.add(format!("{path}/value"), "is required"),
                Some(value) => {
                    if let Err(e) = crate::constraints::check_value(c.operator, value) {
                        v.add(format!("{path}/value"), e);
                    }
                }
            }
        }
    }
}

impl ScheduleSpec {
    /// Every problem of this schedule (empty: valid).
    pub fn validate(&self) -> Vec<Violation> {
        let mut v = Violations::default();
        self.validate_into(&mut v, "");
        v.0
    }

    fn validate_into(&self, v: &mut Violations, at: &str) {
        if !valid_schedule_id(&self.id) {
            v.add(
                format!("{at}/id"),
                "must be a name of [a-z0-9-], not starting or ending with '-'",
            );
        }
        if let Err(e) = CronSpec::parse(&self.cron, &self.timezone) {
            let field = match e {
                crate::cron::CronError::Timezone(_) => "timezone",
                crate::cron::CronError::Expression(_) => "cron",
            };
            v.add(format!("{at}/{field}"), e.to_string());
        }
        if self.starting_deadline_seconds < 1 {
            v.add(
                format!("{at}/startingDeadlineSeconds"),
                "must be at least 1",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(v: serde_json::Value) -> JobSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_follow_metronome() {
        let j = job(json!({"id": "prod.example-1", "run": {"cmd": "true"}}));
        assert_eq!((j.run.cpus, j.run.mem, j.run.disk), (1.0, 128.0, 0.0));
        assert_eq!(j.run.max_launch_delay, 3600);
        assert_eq!(j.run.restart.policy, RestartPolicy::Never);
        assert_eq!(j.run.parallelism, 1);
        assert!(j.validate().is_empty(), "{:?}", j.validate());
        let s: ScheduleSpec =
            serde_json::from_value(json!({"id": "s", "cron": "* * * * *"})).unwrap();
        assert_eq!(s.timezone, "UTC");
        assert_eq!(s.starting_deadline_seconds, 900);
        assert_eq!(s.concurrency_policy, ConcurrencyPolicy::Allow);
        assert!(s.enabled);
        assert!(s.validate().is_empty());
    }

    #[test]
    fn reports_each_problem_with_its_path() {
        let j = job(
            json!({"id": "Bad_Id", "run": {"cmd": "", "cpus": -1, "mem": 8, "disk": -2,
            "parallelism": 0, "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 0},
            "placement": {"constraints": [{"attribute": "hostname", "operator": "LIKE", "value": "("}]}}}),
        );
        let paths: Vec<String> = j.validate().into_iter().map(|v| v.path).collect();
        for p in [
            "/id",
            "/run/cmd",
            "/run/cpus",
            "/run/mem",
            "/run/disk",
            "/run/parallelism",
            "/run/restart/activeDeadlineSeconds",
            "/run/placement/constraints/0/value",
        ] {
            assert!(paths.iter().any(|x| x == p), "{p} missing in {paths:?}");
        }
    }

    #[test]
    fn job_ids() {
        for ok in ["a", "prod.example.app", "a-b.c1"] {
            assert!(valid_job_id(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a..b", "a_b", ".a", "a/b"] {
            assert!(!valid_job_id(bad), "{bad}");
        }
    }

    #[test]
    fn bad_schedules() {
        let s = |cron: &str, tz: &str| ScheduleSpec {
            id: "s".into(),
            cron: cron.into(),
            timezone: tz.into(),
            starting_deadline_seconds: 60,
            concurrency_policy: ConcurrencyPolicy::Forbid,
            enabled: true,
        };
        assert_eq!(s("bogus", "UTC").validate()[0].path, "/cron");
        assert_eq!(s("* * * * * *", "UTC").validate()[0].path, "/cron");
        assert_eq!(s("* * * * *", "Mars/Base").validate()[0].path, "/timezone");
        assert!(s("*/5 1 * * MON", "Europe/Paris").validate().is_empty());
    }
}
