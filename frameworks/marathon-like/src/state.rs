//! The framework's state and every decision about it, without I/O.
//!
//! [`Core`] owns apps (with their versions), tasks ("instances"), deployments, launch
//! delays and the launch queue. HTTP requests, offers, status updates and clock ticks
//! are method calls on it; what must happen in the outside world comes back as
//! [`Effect`]s (launch, decline, kill, revive, suppress, reconcile), events for
//! `/v2/events`, and a set of dirty keys to persist. The actor in `actor.rs` performs
//! those; nothing here awaits anything.
//!
//! Invariants: only the planner (`planner.rs`) decides launches and kills for an app;
//! an app is changed by at most one deployment at a time (a second change is a 409
//! unless forced); nothing is killed on recovery unless the planner says so for an
//! app under deployment, or the task is unknown or failed its health check.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use mezzo_sdk::{task_state, v1, Effect, RangeSet, Resources};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use crate::backoff::{self, BackoffPolicy, Delay};
use crate::constraints::{self, Placement};
use crate::model::{self, timestamp, App, ParseError, Violation};
use crate::planner::{self, KillReason, Phase, PlanInput, TaskView};

/// An API error, mapped to Marathon's status codes and bodies by the HTTP layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 400 (malformed JSON, bad parameters).
    #[error("{message}")]
    BadRequest {
        /// Message.
        message: String,
        /// Details.
        details: Vec<Violation>,
    },
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409 with the blocking deployments, or a plain conflict.
    #[error("{message}")]
    Conflict {
        /// Message.
        message: String,
        /// Blocking deployment ids.
        deployments: Vec<String>,
    },
    /// 422 with validation details.
    #[error("Object is not valid")]
    Invalid(Vec<Violation>),
    /// 503: not ready yet.
    #[error("{0}")]
    Unavailable(String),
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::InvalidJson(details) => ApiError::BadRequest {
                message: "Invalid JSON".into(),
                details,
            },
            ParseError::Invalid(v) => ApiError::Invalid(v),
        }
    }
}

/// A task of an app as the framework tracks it (Marathon's instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Task id.
    pub task_id: String,
    /// App id.
    pub app_id: String,
    /// Agent id.
    pub agent_id: String,
    /// Hostname and attributes of the agent.
    pub placement: Placement,
    /// Host ports.
    pub ports: Vec<u64>,
    /// Service ports of the app at launch.
    pub service_ports: Vec<u64>,
    /// App version at launch.
    pub version: String,
    /// App config version at launch.
    pub config_version: String,
    /// Mesos state name, e.g. `TASK_RUNNING`.
    pub state: String,
    /// Launch time.
    pub staged_at: DateTime<Utc>,
    /// First TASK_RUNNING.
    pub started_at: Option<DateTime<Utc>>,
    /// Latest health report.
    pub healthy: Option<bool>,
    /// First passed check.
    pub first_success: Option<DateTime<Utc>>,
    /// Latest passed check.
    pub last_success: Option<DateTime<Utc>>,
    /// Latest failed check.
    pub last_failure: Option<DateTime<Utc>>,
    /// Consecutive failures at the latest report.
    pub consecutive_failures: u32,
    /// Why the last check failed.
    pub last_failure_cause: Option<String>,
    /// Since when it is unhealthy.
    pub unhealthy_since: Option<DateTime<Utc>>,
    /// When we asked to kill it.
    pub kill_requested_at: Option<DateTime<Utc>>,
    /// Why we kill it (`Upgrade`, `ScaleDown`, `Unhealthy`, `Api`, `Unknown`).
    pub kill_reason: Option<String>,
    /// Since when its agent is unreachable (state `TASK_UNREACHABLE`).
    #[serde(default)]
    pub unreachable_since: Option<DateTime<Utc>>,
}

/// An app with its version history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    /// Current definition.
    pub app: App,
    /// Every stored version, by version timestamp.
    pub versions: BTreeMap<String, App>,
}

/// One deployment action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// `StartApplication`, `ScaleApplication`, `RestartApplication`, `StopApplication`.
    pub action: String,
    /// App id.
    pub app: String,
}

/// A deployment plan in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Plan id (uuid).
    pub id: String,
    /// Target version timestamp.
    pub version: String,
    /// Apps it changes.
    pub affected_apps: Vec<String>,
    /// Steps of actions; steps run in order, actions of a step together.
    pub steps: Vec<Vec<Action>>,
    /// Index of the step in progress (== steps.len() when done).
    pub current: usize,
    /// The apps before the change (`None`: did not exist), for rollback.
    pub original: BTreeMap<String, Option<App>>,
}

/// `{deploymentId, version}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentResult {
    /// Deployment id.
    pub deployment_id: String,
    /// Version.
    pub version: String,
}

/// Why offers were not used, per app, for `/v2/queue`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OfferStats {
    /// Offers looked at.
    pub processed: u64,
    /// Offers not used.
    pub unused: u64,
    /// Last unused offer.
    pub last_unused_at: Option<DateTime<Utc>>,
    /// Last used offer.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Declines per reason.
    pub reasons: BTreeMap<&'static str, u64>,
}

/// A waiting launch of an app.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    /// Tasks still to launch.
    pub count: usize,
    /// Since when something waits.
    pub since: DateTime<Utc>,
    /// Offer statistics.
    pub stats: OfferStats,
}

/// Marathon's offer decline reasons, in the order they are reported.
pub const REASONS: [&str; 10] = [
    "UnfulfilledRole",
    "UnfulfilledConstraint",
    "NoCorrespondingReservationFound",
    "AgentMaintenance",
    "InsufficientCpus",
    "InsufficientMemory",
    "InsufficientDisk",
    "InsufficientGpus",
    "InsufficientPorts",
    "DeclinedScarceResources",
];

/// The last failure of an app's task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// App id.
    pub app_id: String,
    /// Host.
    pub host: String,
    /// Message.
    pub message: String,
    /// State.
    pub state: String,
    /// Task id.
    pub task_id: String,
    /// Time.
    pub timestamp: DateTime<Utc>,
    /// App version of the task.
    pub version: String,
    /// Agent.
    pub slave_id: String,
}

/// Static facts the core needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Role to launch with.
    pub role: String,
    /// Seconds an unhealthy task waits for its replacement.
    pub unhealthy_grace: f64,
    /// Seconds between repeated kills of a task that does not die.
    pub kill_retry: f64,
    /// First service port.
    pub service_port_min: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            role: "*".into(),
            unhealthy_grace: 60.0,
            kill_retry: 10.0,
            service_port_min: 10000,
        }
    }
}

/// Keys changed since the last flush.
#[derive(Debug, Default, Clone)]
pub struct Dirty {
    /// App ids.
    pub apps: BTreeSet<String>,
    /// Task ids.
    pub instances: BTreeSet<String>,
    /// Deployment ids.
    pub deployments: BTreeSet<String>,
    /// Group ids.
    pub groups: BTreeSet<String>,
    /// The framework id.
    pub framework_id: bool,
}

impl Dirty {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
            && self.instances.is_empty()
            && self.deployments.is_empty()
            && self.groups.is_empty()
            && !self.framework_id
    }
}

/// One change of a deployment: an app becomes `app` (`None`: removed).
#[derive(Debug, Clone)]
pub struct Change {
    /// App id.
    pub id: String,
    /// New definition.
    pub app: Option<App>,
    /// Keep the definition's config version (rollback): tasks of that version stay.
    pub restore: bool,
}

/// The framework's whole state.
#[derive(Debug)]
pub struct Core {
    /// Settings.
    pub settings: Settings,
    /// Apps by id.
    pub apps: BTreeMap<String, AppRecord>,
    /// Group dependencies by group id.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Tasks by id.
    pub instances: BTreeMap<String, Instance>,
    /// Deployments in progress, oldest first.
    pub deployments: Vec<Deployment>,
    /// Launch delays by app id.
    pub delays: BTreeMap<String, Delay>,
    /// Waiting launches by app id.
    pub queue: BTreeMap<String, QueueEntry>,
    /// Last task failure per app.
    pub failures: BTreeMap<String, TaskFailure>,
    /// Framework id once subscribed.
    pub framework_id: Option<String>,
    /// Subscribed to a master now.
    pub connected: bool,
    /// Whether offers are wanted as last told to the master (`None`: unknown).
    offers_wanted: Option<bool>,
    queued_total: usize,
    /// Outside work to do.
    pub effects: Vec<Effect>,
    /// Events for `/v2/events` (type, JSON).
    pub events: Vec<(String, Value)>,
    /// What to persist.
    pub dirty: Dirty,
    /// Counters for `/metrics`.
    pub counters: BTreeMap<&'static str, u64>,
}

fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn terminal_name(state: &str) -> bool {
    matches!(
        state,
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_LOST"
            | "TASK_ERROR"
            | "TASK_DROPPED"
            | "TASK_GONE"
            | "TASK_GONE_BY_OPERATOR"
            | "TASK_UNKNOWN"
    )
}

/// Parses a query boolean the way Marathon's clients send them (`True`, `false`, `1`).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

impl Core {
    /// An empty state.
    pub fn new(settings: Settings) -> Core {
        Core {
            settings,
            apps: BTreeMap::new(),
            groups: BTreeMap::new(),
            instances: BTreeMap::new(),
            deployments: Vec::new(),
            delays: BTreeMap::new(),
            queue: BTreeMap::new(),
            failures: BTreeMap::new(),
            framework_id: None,
            connected: false,
            offers_wanted: None,
            queued_total: 0,
            effects: Vec::new(),
            events: Vec::new(),
            dirty: Dirty::default(),
            counters: BTreeMap::new(),
        }
    }

    fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_default() += 1;
    }

    fn event(&mut self, kind: &str, mut body: Value, now: DateTime<Utc>) {
        if let Some(o) = body.as_object_mut() {
            o.insert("eventType".into(), json!(kind));
            o.insert("timestamp".into(), json!(timestamp(now)));
        }
        self.events.push((kind.to_string(), body));
    }

    // ------------------------------------------------------------ deployments

    /// Deployments that change `app_id`.
    pub fn deployments_of(&self, app_id: &str) -> Vec<String> {
        self.deployments
            .iter()
            .filter(|d| d.affected_apps.iter().any(|a| a == app_id))
            .map(|d| d.id.clone())
            .collect()
    }

    fn locked(ids: &[String]) -> ApiError {
        let first = ids.first().cloned().unwrap_or_default();
        ApiError::Conflict {
            message: format!(
                "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{first}'."
            ),
            deployments: ids.to_vec(),
        }
    }

    fn cancel_deployment(&mut self, id: &str, now: DateTime<Utc>) -> Option<Deployment> {
        let pos = self.deployments.iter().position(|d| d.id == id)?;
        let d = self.deployments.remove(pos);
        self.dirty.deployments.insert(d.id.clone());
        let plan = self.plan_json(&d);
        self.event("deployment_failed", json!({"id": d.id, "plan": plan}), now);
        Some(d)
    }

    /// All apps (and groups) `id` depends on, transitively through ancestor groups.
    fn dependencies_of(&self, app: &App) -> Vec<String> {
        let mut deps = app.dependencies.clone();
        let mut path = app.id.as_str();
        while let Some(pos) = path.rfind('/') {
            path = &path[..pos];
            let group = if path.is_empty() { "/" } else { path };
            if let Some(d) = self.groups.get(group) {
                deps.extend(d.iter().cloned());
            }
            if path.is_empty() {
                break;
            }
        }
        deps
    }

    fn assign_service_ports(&self, app: &mut App, previous: Option<&App>) {
        let mut used: BTreeSet<i64> = self
            .apps
            .values()
            .filter(|r| r.app.id != app.id)
            .flat_map(|r| r.app.port_defs().iter().map(|p| p.port))
            .collect();
        let prev: Vec<i64> = previous
            .map(|p| p.port_defs().iter().map(|d| d.port).collect())
            .unwrap_or_default();
        let min = self.settings.service_port_min as i64;
        let mut next = min;
        if let Some(defs) = app.port_definitions.as_mut() {
            for (i, def) in defs.iter_mut().enumerate() {
                if def.port != 0 {
                    continue;
                }
                if let Some(&p) = prev.get(i) {
                    if p != 0 && !used.contains(&p) {
                        def.port = p;
                        used.insert(p);
                        continue;
                    }
                }
                while used.contains(&next) {
                    next += 1;
                }
                def.port = next;
                used.insert(next);
            }
        }
    }

    /// Applies `changes` as one deployment. With `force`, deployments in the way are
    /// cancelled; without, they make it a 409. Validates nothing: callers do.
    pub fn deploy(
        &mut self,
        changes: Vec<Change>,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<DeploymentResult, ApiError> {
        let ids: Vec<String> = changes.iter().map(|c| c.id.clone()).collect();
        let mut blocking: Vec<String> = ids.iter().flat_map(|id| self.deployments_of(id)).collect();
        blocking.sort();
        blocking.dedup();
        if !blocking.is_empty() {
            if !force {
                return Err(Core::locked(&blocking));
            }
            for id in &blocking {
                self.cancel_deployment(id, now);
            }
        }
        let version = timestamp(now);
        let mut original = BTreeMap::new();
        let mut stops = Vec::new();
        let mut starts = Vec::new();
        let mut later: Vec<(String, &'static str)> = Vec::new();
        let mut targets: BTreeMap<String, App> = BTreeMap::new();
        for change in changes {
            let before = self.apps.get(&change.id).map(|r| r.app.clone());
            original.insert(change.id.clone(), before.clone());
            match change.app {
                None => {
                    if self.apps.remove(&change.id).is_some() {
                        stops.push(change.id.clone());
                        self.dirty.apps.insert(change.id.clone());
                        self.delays.remove(&change.id);
                        self.event("app_terminated_event", json!({"appId": change.id}), now);
                    }
                }
                Some(mut app) => {
                    app.id = change.id.clone();
                    self.assign_service_ports(&mut app, before.as_ref());
                    let restart = before.as_ref().is_none_or(|b| b.needs_restart(&app));
                    let config_version = match (&before, change.restore) {
                        (_, true) => app.config_version().to_string(),
                        (Some(b), false) if !restart => b.config_version().to_string(),
                        _ => version.clone(),
                    };
                    let config_version = if config_version.is_empty() {
                        version.clone()
                    } else {
                        config_version
                    };
                    app.version = Some(version.clone());
                    app.version_info = Some(model::VersionInfo {
                        last_scaling_at: version.clone(),
                        last_config_change_at: config_version.clone(),
                    });
                    let action = match &before {
                        None => {
                            starts.push(change.id.clone());
                            "ScaleApplication"
                        }
                        Some(b) if b.config_version() != config_version => {
                            self.delays.remove(&change.id);
                            "RestartApplication"
                        }
                        Some(_) => "ScaleApplication",
                    };
                    let changed = before.as_ref().is_none_or(|b| {
                        b.instances != app.instances || b.config_version() != config_version
                    });
                    if changed {
                        later.push((change.id.clone(), action));
                    }
                    let record = self
                        .apps
                        .entry(change.id.clone())
                        .or_insert_with(|| AppRecord {
                            app: app.clone(),
                            versions: BTreeMap::new(),
                        });
                    record.app = app.clone();
                    record.versions.insert(version.clone(), app.clone());
                    while record.versions.len() > 50 {
                        let Some(first) = record.versions.keys().next().cloned() else {
                            break;
                        };
                        record.versions.remove(&first);
                    }
                    self.dirty.apps.insert(change.id.clone());
                    targets.insert(change.id.clone(), app);
                }
            }
        }
        // Steps: stops, then starts, then scale/restart by dependency level.
        let mut steps: Vec<Vec<Action>> = Vec::new();
        if !stops.is_empty() {
            steps.push(
                stops
                    .iter()
                    .map(|a| Action {
                        action: "StopApplication".into(),
                        app: a.clone(),
                    })
                    .collect(),
            );
        }
        if !starts.is_empty() {
            steps.push(
                starts
                    .iter()
                    .map(|a| Action {
                        action: "StartApplication".into(),
                        app: a.clone(),
                    })
                    .collect(),
            );
        }
        let changed_ids: Vec<String> = later.iter().map(|(id, _)| id.clone()).collect();
        let mut levels: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..=changed_ids.len() {
            for id in &changed_ids {
                let Some(app) = targets.get(id) else { continue };
                let deps = self.dependencies_of(app);
                let level = changed_ids
                    .iter()
                    .filter(|other| {
                        *other != id
                            && deps
                                .iter()
                                .any(|d| *other == d || other.starts_with(&format!("{d}/")))
                    })
                    .map(|other| levels.get(other).copied().unwrap_or(0) + 1)
                    .max()
                    .unwrap_or(0)
                    .min(changed_ids.len());
                levels.insert(id.clone(), level);
            }
        }
        let max_level = levels.values().copied().max().unwrap_or(0);
        for level in 0..=max_level {
            let step: Vec<Action> = later
                .iter()
                .filter(|(id, _)| levels.get(id).copied().unwrap_or(0) == level)
                .map(|(id, action)| Action {
                    action: action.to_string(),
                    app: id.clone(),
                })
                .collect();
            if !step.is_empty() {
                steps.push(step);
            }
        }
        let deployment = Deployment {
            id: uuid::Uuid::new_v4().to_string(),
            version: version.clone(),
            affected_apps: ids,
            steps,
            current: 0,
            original,
        };
        info!(deployment.id = %deployment.id, apps = ?deployment.affected_apps, "deployment started");
        self.count("deployments");
        self.dirty.deployments.insert(deployment.id.clone());
        let plan = self.plan_json(&deployment);
        self.event(
            "deployment_info",
            json!({"plan": plan, "currentStep": deployment.steps.first().map(|s| self.step_json(s))}),
            now,
        );
        self.event(
            "group_change_success",
            json!({"groupId": "/", "version": version}),
            now,
        );
        let result = DeploymentResult {
            deployment_id: deployment.id.clone(),
            version,
        };
        self.deployments.push(deployment);
        self.offers_wanted = None; // re-evaluate (and revive) on the next tick
        Ok(result)
    }

    fn step_json(&self, step: &[Action]) -> Value {
        json!({"actions": step.iter().map(|a| json!({"action": a.action, "app": a.app})).collect::<Vec<_>>()})
    }

    fn plan_json(&self, d: &Deployment) -> Value {
        json!({
            "id": d.id,
            "version": d.version,
            "steps": d.steps.iter().map(|s| self.step_json(s)).collect::<Vec<_>>(),
        })
    }

    /// `GET /v2/deployments` entry.
    pub fn deployment_json(&self, d: &Deployment) -> Value {
        let current: Vec<Value> = d
            .steps
            .get(d.current)
            .map(|s| {
                s.iter()
                    .map(|a| json!({"action": a.action, "app": a.app, "readinessCheckResults": []}))
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "id": d.id,
            "version": d.version,
            "affectedApps": d.affected_apps,
            "affectedPods": [],
            "steps": d.steps.iter().map(|s| self.step_json(s)).collect::<Vec<_>>(),
            "currentActions": current,
            "currentStep": (d.current + 1).min(d.steps.len().max(1)),
            "totalSteps": d.steps.len(),
        })
    }

    /// `DELETE /v2/deployments/{id}`: with `force` just stops it (`None`), otherwise
    /// cancels it and deploys its apps' previous definitions (rollback).
    pub fn delete_deployment(
        &mut self,
        id: &str,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<DeploymentResult>, ApiError> {
        let d = self
            .cancel_deployment(id, now)
            .ok_or_else(|| ApiError::NotFound(format!("DeploymentPlan {id} does not exist")))?;
        if force {
            info!(deployment.id = id, "deployment cancelled");
            return Ok(None);
        }
        info!(deployment.id = id, "rolling back deployment");
        let changes = d
            .original
            .into_iter()
            .map(|(id, app)| Change {
                id,
                app,
                restore: true,
            })
            .collect();
        self.deploy(changes, true, now).map(Some)
    }

    // ------------------------------------------------------------------ apps

    /// Parses and validates a full app definition.
    pub fn parse_app(value: &Value) -> Result<App, ApiError> {
        let app = App::from_json(value)?;
        let v = app.validate();
        if !v.is_empty() {
            return Err(ApiError::Invalid(v));
        }
        Ok(app)
    }

    /// `POST /v2/apps`.
    pub fn create_app(
        &mut self,
        body: &Value,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<(Value, DeploymentResult), ApiError> {
        let app = Core::parse_app(body)?;
        if self.apps.contains_key(&app.id) {
            return Err(ApiError::Conflict {
                message: format!("An app with id [{}] already exists.", app.id),
                deployments: Vec::new(),
            });
        }
        let id = app.id.clone();
        self.event(
            "api_post_event",
            json!({"clientIp": "", "uri": "/v2/apps", "appDefinition": body}),
            now,
        );
        let result = self.deploy(
            vec![Change {
                id: id.clone(),
                app: Some(app),
                restore: false,
            }],
            force,
            now,
        )?;
        let body = self.app_json(&id, &Embed::counts_and_deployments(), now);
        Ok((body, result))
    }

    /// The definition an update turns app `id` into (partial: `body` overlays the
    /// current definition; `{"version": v}` alone: the stored version `v`).
    fn resolve_update(&self, id: &str, body: &Value, partial: bool) -> Result<App, ApiError> {
        let existing = self.apps.get(id);
        let only_version = body
            .as_object()
            .is_some_and(|o| o.len() == 1 && o.contains_key("version"));
        if let (true, Some(record)) = (only_version, existing) {
            let v = body["version"].as_str().unwrap_or_default();
            return record.versions.get(v).cloned().ok_or_else(|| {
                ApiError::NotFound(format!("Version {v} of app '{id}' does not exist"))
            });
        }
        let mut merged = match (existing, partial) {
            (Some(record), true) => {
                let mut base = serde_json::to_value(&record.app).unwrap_or(json!({}));
                if let Some(o) = base.as_object_mut() {
                    // Marathon drops the other of cmd/args when one is given.
                    if body.get("cmd").is_some() {
                        o.remove("args");
                    }
                    if body.get("args").is_some() {
                        o.remove("cmd");
                    }
                    if body.get("ports").is_some() {
                        o.remove("portDefinitions");
                    }
                }
                model::merge(&base, body)
            }
            _ => body.clone(),
        };
        if let Some(o) = merged.as_object_mut() {
            o.insert("id".into(), json!(id));
            o.remove("version");
            o.remove("versionInfo");
        }
        Core::parse_app(&merged)
    }

    /// `PUT`/`PATCH /v2/apps/{id}`: creates or updates; returns whether it was created.
    pub fn update_app(
        &mut self,
        id: &str,
        body: &Value,
        partial: bool,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<(bool, DeploymentResult), ApiError> {
        let id = model::normalize_id(id);
        let app = self.resolve_update(&id, body, partial)?;
        let created = !self.apps.contains_key(&id);
        self.event(
            "api_post_event",
            json!({"clientIp": "", "uri": format!("/v2/apps{id}"), "appDefinition": body}),
            now,
        );
        let result = self.deploy(
            vec![Change {
                id,
                app: Some(app),
                restore: false,
            }],
            force,
            now,
        )?;
        Ok((created, result))
    }

    /// `PUT /v2/apps` with a list of apps: one deployment for all of them.
    pub fn update_apps(
        &mut self,
        bodies: &[Value],
        partial: bool,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<DeploymentResult, ApiError> {
        let mut changes = Vec::new();
        let mut violations = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            let id = model::normalize_id(body["id"].as_str().unwrap_or_default());
            match self.resolve_update(&id, body, partial) {
                Ok(app) => changes.push(Change {
                    id,
                    app: Some(app),
                    restore: false,
                }),
                Err(ApiError::Invalid(v)) => violations.extend(v.into_iter().map(|mut x| {
                    x.path = format!("/({i}){}", x.path);
                    x
                })),
                Err(e) => return Err(e),
            }
        }
        if !violations.is_empty() {
            return Err(ApiError::Invalid(violations));
        }
        self.deploy(changes, force, now)
    }

    // ---------------------------------------------------------------- groups

    /// Ids of the apps at or under group `id`.
    fn apps_under(&self, id: &str) -> Vec<String> {
        let prefix = if id == "/" {
            "/".to_string()
        } else {
            format!("{id}/")
        };
        self.apps
            .keys()
            .filter(|a| a.starts_with(&prefix))
            .cloned()
            .collect()
    }

    fn group_tree(&self, id: &str, now: DateTime<Utc>) -> Value {
        let prefix = if id == "/" {
            "/".to_string()
        } else {
            format!("{id}/")
        };
        let mut apps = Vec::new();
        let mut children: BTreeSet<String> = BTreeSet::new();
        for a in self.apps.keys().filter(|a| a.starts_with(&prefix)) {
            let rest = &a[prefix.len()..];
            match rest.split_once('/') {
                None => apps.push(self.app_json(a, &Embed::none(), now)),
                Some((child, _)) => {
                    children.insert(format!("{prefix}{child}"));
                }
            }
        }
        for g in self.groups.keys() {
            if let Some(rest) = g.strip_prefix(&prefix) {
                if !rest.is_empty() {
                    let child = rest.split('/').next().unwrap_or(rest);
                    children.insert(format!("{prefix}{child}"));
                }
            }
        }
        let groups: Vec<Value> = children.iter().map(|c| self.group_tree(c, now)).collect();
        let version = self
            .apps_under(id)
            .iter()
            .filter_map(|a| self.apps.get(a).and_then(|r| r.app.version.clone()))
            .max()
            .unwrap_or_else(|| timestamp(now));
        json!({
            "id": id,
            "apps": apps,
            "groups": groups,
            "pods": [],
            "dependencies": self.groups.get(id).cloned().unwrap_or_default(),
            "version": version,
        })
    }

    /// `GET /v2/groups[/{id}]`.
    pub fn group_json(&self, id: &str, now: DateTime<Utc>) -> Result<Value, ApiError> {
        let id = model::normalize_id(id);
        let exists = id == "/" || self.groups.contains_key(&id) || !self.apps_under(&id).is_empty();
        if !exists {
            return Err(ApiError::NotFound(format!("Group '{id}' does not exist")));
        }
        Ok(self.group_tree(&id, now))
    }

    /// Collects `(app, group dependencies)` of a group body, ids resolved under `base`.
    fn collect_group(
        body: &Value,
        base: &str,
        apps: &mut Vec<Value>,
        groups: &mut Vec<(String, Vec<String>)>,
    ) -> Result<(), ApiError> {
        let resolve = |id: &str, base: &str| {
            if id.starts_with('/') || base == "/" {
                model::normalize_id(id)
            } else {
                model::normalize_id(&format!("{base}/{id}"))
            }
        };
        let id = body["id"]
            .as_str()
            .map(|i| resolve(i, base))
            .unwrap_or_else(|| base.to_string());
        let deps: Vec<String> = body["dependencies"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str())
                    .map(|d| resolve(d, &id))
                    .collect()
            })
            .unwrap_or_default();
        groups.push((id.clone(), deps));
        for app in body["apps"].as_array().cloned().unwrap_or_default() {
            let mut app = app;
            let app_id = app["id"]
                .as_str()
                .map(|i| resolve(i, &id))
                .unwrap_or_default();
            if let Some(o) = app.as_object_mut() {
                o.insert("id".into(), json!(app_id));
                if let Some(deps) = o.get("dependencies").and_then(Value::as_array).cloned() {
                    let deps: Vec<Value> = deps
                        .iter()
                        .filter_map(|d| d.as_str())
                        .map(|d| json!(resolve(d, &id)))
                        .collect();
                    o.insert("dependencies".into(), json!(deps));
                }
            }
            apps.push(app);
        }
        for g in body["groups"].as_array().cloned().unwrap_or_default() {
            Core::collect_group(&g, &id, apps, groups)?;
        }
        Ok(())
    }

    /// `POST`/`PUT /v2/groups[/{id}]`: creates or updates the apps of a group tree in
    /// one deployment ordered by dependencies; `{"scaleBy": f}` scales every app.
    pub fn put_group(
        &mut self,
        id: &str,
        body: &Value,
        create: bool,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<DeploymentResult, ApiError> {
        let id = model::normalize_id(id);
        if let Some(factor) = body.get("scaleBy").and_then(Value::as_f64) {
            let changes: Vec<Change> = self
                .apps_under(&id)
                .iter()
                .filter_map(|a| self.apps.get(a))
                .map(|r| {
                    let mut app = r.app.clone();
                    app.instances = (app.instances as f64 * factor).ceil() as i64;
                    Change {
                        id: app.id.clone(),
                        app: Some(app),
                        restore: true,
                    }
                })
                .collect();
            if changes.is_empty() {
                return Err(ApiError::NotFound(format!("Group '{id}' does not exist")));
            }
            return self.deploy(changes, force, now);
        }
        let base = id.clone();
        let mut apps = Vec::new();
        let mut groups = Vec::new();
        let mut top = body.clone();
        if let Some(o) = top.as_object_mut() {
            let given = o.get("id").and_then(Value::as_str).map(str::to_string);
            let gid = match given {
                Some(g) if g.starts_with('/') => model::normalize_id(&g),
                Some(g) if base == "/" => model::normalize_id(&g),
                Some(g) => model::normalize_id(&format!("{base}/{g}")),
                None => base.clone(),
            };
            o.insert("id".into(), json!(gid));
        }
        Core::collect_group(&top, "/", &mut apps, &mut groups)?;
        if create {
            if let Some((gid, _)) = groups.first() {
                if gid != "/" && (self.groups.contains_key(gid) || !self.apps_under(gid).is_empty())
                {
                    return Err(ApiError::Conflict {
                        message: format!("A group with id {gid} already exists."),
                        deployments: Vec::new(),
                    });
                }
            }
        }
        let mut changes = Vec::new();
        let mut violations = Vec::new();
        for (i, app) in apps.iter().enumerate() {
            let app_id = app["id"].as_str().unwrap_or_default().to_string();
            match self.resolve_update(&app_id, app, true) {
                Ok(a) => changes.push(Change {
                    id: app_id,
                    app: Some(a),
                    restore: false,
                }),
                Err(ApiError::Invalid(v)) => violations.extend(v.into_iter().map(|mut x| {
                    x.path = format!("/apps({i}){}", x.path);
                    x
                })),
                Err(e) => return Err(e),
            }
        }
        if !violations.is_empty() {
            return Err(ApiError::Invalid(violations));
        }
        for (gid, deps) in groups {
            if !deps.is_empty() || self.groups.contains_key(&gid) || gid != "/" {
                self.groups.insert(gid.clone(), deps);
                self.dirty.groups.insert(gid);
            }
        }
        self.deploy(changes, force, now)
    }

    /// `DELETE /v2/groups/{id}`: removes every app under it.
    pub fn delete_group(
        &mut self,
        id: &str,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<DeploymentResult, ApiError> {
        let id = model::normalize_id(id);
        let apps = self.apps_under(&id);
        let known = id == "/" || self.groups.contains_key(&id) || !apps.is_empty();
        if !known {
            return Err(ApiError::NotFound(format!("Group '{id}' does not exist")));
        }
        let prefix = format!("{id}/");
        let gone: Vec<String> = self
            .groups
            .keys()
            .filter(|g| **g == id || g.starts_with(&prefix) || id == "/")
            .cloned()
            .collect();
        for g in gone {
            self.groups.remove(&g);
            self.dirty.groups.insert(g);
        }
        let changes = apps
            .into_iter()
            .map(|a| Change {
                id: a,
                app: None,
                restore: false,
            })
            .collect();
        self.deploy(changes, force, now)
    }

    /// `DELETE /v2/apps/{id}`.
    pub fn delete_app(
        &mut self,
        id: &str,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<DeploymentResult, ApiError> {
        let id = model::normalize_id(id);
        if !self.apps.contains_key(&id) {
            return Err(ApiError::NotFound(format!("App '{id}' does not exist")));
        }
        self.deploy(
            vec![Change {
                id,
                app: None,
                restore: false,
            }],
            force,
            now,
        )
    }

    /// `POST /v2/apps/{id}/restart`: a new config version, rolling-replaced.
    pub fn restart_app(
        &mut self,
        id: &str,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<DeploymentResult, ApiError> {
        let id = model::normalize_id(id);
        let app = self
            .apps
            .get(&id)
            .map(|r| r.app.clone())
            .ok_or_else(|| ApiError::NotFound(format!("App '{id}' does not exist")))?;
        let mut app = app;
        // A fresh config version: every task is "old".
        app.version_info = Some(model::VersionInfo {
            last_scaling_at: timestamp(now),
            last_config_change_at: timestamp(now),
        });
        self.deploy(
            vec![Change {
                id,
                app: Some(app),
                restore: true,
            }],
            force,
            now,
        )
    }

    /// Counts of an app's tasks: staged, running, healthy, unhealthy.
    pub fn counts(&self, app_id: &str) -> (usize, usize, usize, usize) {
        let hc = self
            .apps
            .get(app_id)
            .is_some_and(|r| !r.app.health_checks.is_empty());
        let mut c = (0, 0, 0, 0);
        for i in self.instances.values().filter(|i| i.app_id == app_id) {
            match i.state.as_str() {
                "TASK_STAGING" | "TASK_STARTING" => c.0 += 1,
                "TASK_RUNNING" => {
                    c.1 += 1;
                    if hc && i.healthy == Some(true) {
                        c.2 += 1;
                    }
                    if hc && i.healthy == Some(false) {
                        c.3 += 1;
                    }
                }
                _ => {}
            }
        }
        c
    }

    /// An app's JSON with the embedded parts asked for.
    pub fn app_json(&self, id: &str, embed: &Embed, _now: DateTime<Utc>) -> Value {
        let Some(record) = self.apps.get(id) else {
            return Value::Null;
        };
        let mut v = serde_json::to_value(&record.app).unwrap_or(json!({}));
        let Some(o) = v.as_object_mut() else {
            return v;
        };
        if embed.counts {
            let (staged, running, healthy, unhealthy) = self.counts(id);
            o.insert("tasksStaged".into(), json!(staged));
            o.insert("tasksRunning".into(), json!(running));
            o.insert("tasksHealthy".into(), json!(healthy));
            o.insert("tasksUnhealthy".into(), json!(unhealthy));
        }
        if embed.deployments {
            let d: Vec<Value> = self
                .deployments_of(id)
                .into_iter()
                .map(|id| json!({"id": id}))
                .collect();
            o.insert("deployments".into(), json!(d));
        }
        if embed.tasks {
            o.insert("tasks".into(), json!(self.tasks_json(Some(id), None)));
        }
        if embed.last_task_failure {
            if let Some(f) = self.failures.get(id) {
                o.insert(
                    "lastTaskFailure".into(),
                    json!({
                        "appId": f.app_id,
                        "host": f.host,
                        "message": f.message,
                        "state": f.state,
                        "taskId": f.task_id,
                        "timestamp": timestamp(f.timestamp),
                        "version": f.version,
                        "slaveId": f.slave_id,
                    }),
                );
            }
        }
        v
    }

    /// Ids of apps matching `GET /v2/apps` filters.
    pub fn filter_apps(
        &self,
        id: Option<&str>,
        cmd: Option<&str>,
        label: Option<&str>,
    ) -> Vec<String> {
        let selectors = label.map(parse_label_selector).unwrap_or_default();
        self.apps
            .values()
            .filter(|r| id.is_none_or(|f| r.app.id.contains(f)))
            .filter(|r| cmd.is_none_or(|f| r.app.cmd.as_deref().is_some_and(|c| c.contains(f))))
            .filter(|r| selectors.iter().all(|s| s.matches(&r.app.labels)))
            .map(|r| r.app.id.clone())
            .collect()
    }

    // ----------------------------------------------------------------- tasks

    /// Task JSON.
    pub fn task_json(&self, i: &Instance) -> Value {
        let mut v = json!({
            "id": i.task_id,
            "appId": i.app_id,
            "host": i.placement.hostname,
            "ports": i.ports,
            "servicePorts": i.service_ports,
            "slaveId": i.agent_id,
            "stagedAt": timestamp(i.staged_at),
            "startedAt": i.started_at.map(timestamp),
            "version": i.version,
            "state": i.state,
            "ipAddresses": [{"ipAddress": i.placement.hostname, "protocol": "IPv4"}],
            "localVolumes": [],
        });
        let hc = self
            .apps
            .get(&i.app_id)
            .is_some_and(|r| !r.app.health_checks.is_empty());
        if hc {
            let results: Vec<Value> = i
                .healthy
                .map(|alive| {
                    json!({
                        "alive": alive,
                        "consecutiveFailures": i.consecutive_failures,
                        "firstSuccess": i.first_success.map(timestamp),
                        "lastSuccess": i.last_success.map(timestamp),
                        "lastFailure": i.last_failure.map(timestamp),
                        "lastFailureCause": i.last_failure_cause,
                        "instanceId": i.task_id,
                    })
                })
                .into_iter()
                .collect();
            if let Some(o) = v.as_object_mut() {
                o.insert("healthCheckResults".into(), json!(results));
            }
        }
        v
    }

    /// Tasks of one app (or all), optionally only in the given states (`running`,
    /// `staging`, ... or `TASK_RUNNING`).
    pub fn tasks_json(&self, app: Option<&str>, states: Option<&[String]>) -> Vec<Value> {
        let wanted: Option<Vec<String>> = states.map(|s| {
            s.iter()
                .map(|x| {
                    let up = x.to_ascii_uppercase();
                    if up.starts_with("TASK_") {
                        up
                    } else {
                        format!("TASK_{up}")
                    }
                })
                .collect()
        });
        self.instances
            .values()
            .filter(|i| app.is_none_or(|a| i.app_id == a))
            .filter(|i| {
                wanted
                    .as_ref()
                    .is_none_or(|w| w.is_empty() || w.contains(&i.state))
            })
            .map(|i| self.task_json(i))
            .collect()
    }

    fn request_kill(&mut self, task_id: &str, reason: &str, now: DateTime<Utc>) {
        let Some(i) = self.instances.get_mut(task_id) else {
            return;
        };
        if i.kill_requested_at.is_some() {
            return;
        }
        i.kill_requested_at = Some(now);
        i.kill_reason = Some(reason.to_string());
        let grace = self
            .apps
            .get(&i.app_id)
            .and_then(|r| r.app.task_kill_grace_period_seconds);
        info!(task.id = task_id, reason, "killing task");
        self.effects.push(Effect::Kill {
            task_id: task_id.to_string(),
            agent_id: i.agent_id.clone(),
            grace,
        });
        self.dirty.instances.insert(task_id.to_string());
        self.count("tasks_killed");
    }

    /// `DELETE /v2/apps/{id}/tasks/{task}`, `DELETE /v2/apps/{id}/tasks` and
    /// `POST /v2/tasks/delete`: kills tasks; with `scale` the app's instances drop by
    /// as many (a deployment).
    pub fn kill_tasks(
        &mut self,
        task_ids: &[String],
        scale: bool,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Value>, Option<DeploymentResult>), ApiError> {
        let mut by_app: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in task_ids {
            let i = self
                .instances
                .get(t)
                .ok_or_else(|| ApiError::NotFound(format!("Task '{t}' does not exist")))?;
            by_app.entry(i.app_id.clone()).or_default().push(t.clone());
        }
        let mut result = None;
        if scale {
            let mut changes = Vec::new();
            for (app_id, tasks) in &by_app {
                if let Some(r) = self.apps.get(app_id) {
                    let mut app = r.app.clone();
                    app.instances = (app.instances - tasks.len() as i64).max(0);
                    changes.push(Change {
                        id: app_id.clone(),
                        app: Some(app),
                        restore: true,
                    });
                }
            }
            if !changes.is_empty() {
                result = Some(self.deploy(changes, force, now)?);
            }
        }
        let killed: Vec<Value> = task_ids
            .iter()
            .filter_map(|t| self.instances.get(t).map(|i| self.task_json(i)))
            .collect();
        for t in task_ids {
            self.request_kill(t, "Api", now);
        }
        self.offers_wanted = None;
        Ok((killed, result))
    }

    /// `DELETE /v2/queue/{id}/delay`.
    pub fn reset_delay(&mut self, app_id: &str) -> Result<(), ApiError> {
        let id = model::normalize_id(app_id);
        if !self.apps.contains_key(&id) {
            return Err(ApiError::NotFound(format!(
                "Application {id} not found in tasks queue."
            )));
        }
        self.delays.remove(&id);
        self.offers_wanted = None;
        Ok(())
    }

    /// `GET /v2/queue`.
    pub fn queue_json(&self, now: DateTime<Utc>) -> Value {
        let items: Vec<Value> = self
            .queue
            .iter()
            .filter(|(_, q)| q.count > 0)
            .map(|(app_id, q)| {
                let delay = self.delays.get(app_id);
                let left = delay.map(|d| d.time_left(secs(now))).unwrap_or(0.0);
                let reasons: Vec<Value> = REASONS
                    .iter()
                    .map(|r| {
                        json!({
                            "reason": r,
                            "declined": q.stats.reasons.get(r).copied().unwrap_or(0),
                            "processed": q.stats.processed,
                        })
                    })
                    .collect();
                json!({
                    "app": self.app_json(app_id, &Embed::none(), now),
                    "count": q.count,
                    "delay": {"timeLeftSeconds": left, "overdue": left <= 0.0},
                    "since": timestamp(q.since),
                    "processedOffersSummary": {
                        "processedOffersCount": q.stats.processed,
                        "unusedOffersCount": q.stats.unused,
                        "lastUnusedOfferAt": q.stats.last_unused_at.map(timestamp),
                        "lastUsedOfferAt": q.stats.last_used_at.map(timestamp),
                        "rejectSummaryLastOffers": reasons,
                        "rejectSummaryLaunchAttempt": reasons,
                    },
                })
            })
            .collect();
        json!({ "queue": items })
    }

    // ------------------------------------------------------------- scheduler

    /// The driver subscribed (first time or again): remember the id and reconcile.
    pub fn on_subscribed(&mut self, framework_id: &str) {
        if self.framework_id.as_deref() != Some(framework_id) {
            self.framework_id = Some(framework_id.to_string());
            self.dirty.framework_id = true;
        }
        self.connected = true;
        self.offers_wanted = None;
        let known: Vec<(String, String)> = self
            .instances
            .values()
            .map(|i| (i.task_id.clone(), i.agent_id.clone()))
            .collect();
        if !known.is_empty() {
            self.effects.push(Effect::Reconcile(known));
        }
        self.effects.push(Effect::Reconcile(Vec::new()));
    }

    /// The subscription was lost.
    pub fn on_disconnected(&mut self) {
        self.connected = false;
    }

    /// Why `app` cannot take (more of) this offer, if it cannot.
    fn misfit(
        app: &App,
        remaining: &Resources,
        placement: &Placement,
        placed: &[Placement],
    ) -> Result<Resources, &'static str> {
        if !constraints::admits_all(&constraints::parse_all(&app.constraints), placement, placed) {
            return Err("UnfulfilledConstraint");
        }
        if app.gpus > 0.0 {
            return Err("InsufficientGpus");
        }
        let mut want = Resources::new();
        for (name, v, reason) in [
            ("cpus", app.cpus, "InsufficientCpus"),
            ("mem", app.mem, "InsufficientMemory"),
            ("disk", app.disk, "InsufficientDisk"),
        ] {
            if v > 0.0 {
                if remaining.scalar(name) + 1e-9 < v {
                    return Err(reason);
                }
                want.add_scalar(name, v);
            }
        }
        let defs = app.port_defs();
        if !defs.is_empty() {
            let free = remaining.ranges("ports");
            let ports = if app.require_ports {
                let set =
                    RangeSet::from_ranges(defs.iter().map(|d| (d.port as u64, d.port as u64)));
                if !free.contains(&set) {
                    return Err("InsufficientPorts");
                }
                set
            } else {
                free.take(defs.len() as u64).ok_or("InsufficientPorts")?
            };
            want.add_ranges("ports", &ports);
        }
        if !remaining.contains(&want) {
            return Err("InsufficientCpus");
        }
        Ok(want)
    }

    fn task_info(
        &self,
        app: &App,
        task_id: &str,
        agent_id: &str,
        res: &Resources,
        ports: &[u64],
    ) -> v1::TaskInfo {
        let mut env: Vec<v1::EnvironmentVariable> = app
            .env
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s)))
            .map(|(k, v)| v1::EnvironmentVariable {
                name: k.clone(),
                value: v.to_string(),
            })
            .collect();
        let version = app.version.clone().unwrap_or_default();
        for (k, v) in [
            ("MARATHON_APP_ID", app.id.clone()),
            ("MARATHON_APP_VERSION", version),
            ("MARATHON_APP_RESOURCE_CPUS", app.cpus.to_string()),
            ("MARATHON_APP_RESOURCE_MEM", app.mem.to_string()),
            ("MARATHON_APP_RESOURCE_DISK", app.disk.to_string()),
            (
                "MARATHON_APP_LABELS",
                app.labels.keys().cloned().collect::<Vec<_>>().join(" "),
            ),
        ] {
            env.push(v1::EnvironmentVariable {
                name: k.into(),
                value: v,
            });
        }
        let command = match (&app.cmd, &app.args) {
            (Some(cmd), _) => v1::CommandInfo {
                value: cmd.clone(),
                shell: true,
                arguments: Vec::new(),
                environment: env,
                user: app.user.clone().unwrap_or_default(),
            },
            (None, Some(args)) => v1::CommandInfo {
                value: args.first().cloned().unwrap_or_default(),
                shell: false,
                arguments: args.clone(),
                environment: env,
                user: app.user.clone().unwrap_or_default(),
            },
            (None, None) => v1::CommandInfo {
                value: "true".into(),
                shell: true,
                environment: env,
                ..Default::default()
            },
        };
        let health_check = app.health_checks.first().map(|hc| {
            let kind = match hc.protocol.as_str() {
                "COMMAND" => v1::HealthCheckType::HealthCheckCommand,
                "TCP" | "MESOS_TCP" => v1::HealthCheckType::HealthCheckTcp,
                _ => v1::HealthCheckType::HealthCheckHttp,
            };
            let port = match (hc.port, hc.port_index) {
                (Some(p), _) => p.max(0) as u32,
                (None, Some(i)) => ports.get(i.max(0) as usize).copied().unwrap_or(0) as u32,
                (None, None) => ports.first().copied().unwrap_or(0) as u32,
            };
            v1::HealthCheck {
                r#type: kind as i32,
                command: hc
                    .command
                    .as_ref()
                    .map(|c| c.value.clone())
                    .unwrap_or_default(),
                port,
                path: hc.path.clone().unwrap_or_default(),
                delay_seconds: hc.delay_seconds,
                interval_seconds: hc.interval_seconds,
                timeout_seconds: hc.timeout_seconds,
                consecutive_failures: hc.max_consecutive_failures.max(1) as u32,
                grace_period_seconds: hc.grace_period_seconds,
            }
        });
        v1::TaskInfo {
            name: app.id.trim_start_matches('/').replace('/', "."),
            task_id: task_id.to_string(),
            agent_id: agent_id.to_string(),
            resources: res.to_proto(),
            command: Some(command),
            kill_grace_period_seconds: app.task_kill_grace_period_seconds,
            labels: app
                .labels
                .iter()
                .map(|(k, v)| v1::Label {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            health_check,
        }
    }

    /// Matches offers against the launch queue; returns nothing, pushes effects.
    pub fn on_offers(&mut self, offers: Vec<v1::Offer>, now: DateTime<Utc>) {
        let now_s = secs(now);
        let mut min_wait: Option<f64> = None;
        for offer in offers {
            let mut remaining = Resources::from_proto(&offer.resources);
            let placement = Placement::of_offer(&offer);
            let mut tasks = Vec::new();
            let app_ids: Vec<String> = self
                .queue
                .iter()
                .filter(|(_, q)| q.count > 0)
                .map(|(id, _)| id.clone())
                .collect();
            for app_id in app_ids {
                let Some(app) = self.apps.get(&app_id).map(|r| r.app.clone()) else {
                    continue;
                };
                if let Some(d) = self.delays.get(&app_id) {
                    if !d.overdue(now_s) {
                        let left = d.time_left(now_s);
                        min_wait = Some(min_wait.map_or(left, |m: f64| m.min(left)));
                        continue;
                    }
                }
                let mut launched = 0;
                loop {
                    let count = self.queue.get(&app_id).map(|q| q.count).unwrap_or(0);
                    if count == 0 {
                        break;
                    }
                    let placed: Vec<Placement> = self
                        .instances
                        .values()
                        .filter(|i| i.app_id == app_id && i.kill_requested_at.is_none())
                        .map(|i| i.placement.clone())
                        .collect();
                    match Core::misfit(&app, &remaining, &placement, &placed) {
                        Ok(res) => {
                            remaining.subtract(&res);
                            let ports: Vec<u64> = res.ranges("ports").values().collect();
                            let task_id = format!(
                                "{}.{}",
                                app.id.trim_start_matches('/').replace('/', "_"),
                                uuid::Uuid::new_v4()
                            );
                            let info =
                                self.task_info(&app, &task_id, &offer.agent_id, &res, &ports);
                            let instance = Instance {
                                task_id: task_id.clone(),
                                app_id: app_id.clone(),
                                agent_id: offer.agent_id.clone(),
                                placement: placement.clone(),
                                ports,
                                service_ports: app
                                    .port_defs()
                                    .iter()
                                    .map(|d| d.port.max(0) as u64)
                                    .collect(),
                                version: app.version.clone().unwrap_or_default(),
                                config_version: app.config_version().to_string(),
                                state: "TASK_STAGING".into(),
                                staged_at: now,
                                started_at: None,
                                healthy: None,
                                first_success: None,
                                last_success: None,
                                last_failure: None,
                                consecutive_failures: 0,
                                last_failure_cause: None,
                                unhealthy_since: None,
                                kill_requested_at: None,
                                kill_reason: None,
                                unreachable_since: None,
                            };
                            info!(task.id = %task_id, app.id = %app_id, agent = %offer.hostname, "launching task");
                            self.instances.insert(task_id.clone(), instance);
                            self.dirty.instances.insert(task_id);
                            tasks.push(info);
                            launched += 1;
                            self.count("tasks_launched");
                            if let Some(q) = self.queue.get_mut(&app_id) {
                                q.count -= 1;
                            }
                        }
                        Err(reason) => {
                            if launched == 0 {
                                if let Some(q) = self.queue.get_mut(&app_id) {
                                    q.stats.processed += 1;
                                    q.stats.unused += 1;
                                    q.stats.last_unused_at = Some(now);
                                    *q.stats.reasons.entry(reason).or_default() += 1;
                                }
                                debug!(app.id = %app_id, offer = %offer.id, reason, "offer not used");
                            }
                            break;
                        }
                    }
                }
                if launched > 0 {
                    if let Some(q) = self.queue.get_mut(&app_id) {
                        q.stats.processed += 1;
                        q.stats.last_used_at = Some(now);
                    }
                }
            }
            if tasks.is_empty() {
                let refuse = min_wait.map(|w| w.clamp(0.5, 5.0)).unwrap_or(5.0);
                self.effects.push(Effect::Decline {
                    offer_ids: vec![offer.id.clone()],
                    refuse_seconds: refuse,
                });
            } else {
                self.effects.push(Effect::Launch {
                    offer_id: offer.id.clone(),
                    tasks,
                    // The unused rest comes back within a second, so the queue's
                    // next instances need not wait for the master's default filter.
                    refuse_seconds: Some(1.0),
                });
            }
        }
    }

    /// A launch was refused by the master (e.g. the offer was rescinded): forget the
    /// tasks so they are planned again.
    pub fn on_launch_failed(&mut self, task_ids: &[String]) {
        for t in task_ids {
            if self.instances.remove(t).is_some() {
                self.dirty.instances.insert(t.clone());
            }
        }
    }

    /// A status update.
    pub fn on_update(&mut self, status: &v1::TaskStatus, now: DateTime<Utc>) {
        let state = task_state(status);
        let name = state.as_str_name().to_string();
        let task_id = status.task_id.clone();
        let Some(inst) = self.instances.get_mut(&task_id) else {
            if !state.is_terminal() {
                warn!(task.id = %task_id, state = %name, "unknown task: killing it");
                self.effects.push(Effect::Kill {
                    task_id: task_id.clone(),
                    agent_id: status.agent_id.clone(),
                    grace: None,
                });
                let body = json!({"instanceId": task_id, "runSpecId": "", "condition": name});
                self.event("unknown_instance_terminated_event", body, now);
            }
            return;
        };
        let app_id = inst.app_id.clone();
        let changed_state = inst.state != name;
        inst.state = name.clone();
        if state == v1::TaskState::TaskRunning && inst.started_at.is_none() {
            inst.started_at = Some(now);
        }
        // Partition awareness: an unreachable task is not terminal. It keeps its place
        // (not healthy, never killed for its health) until `unreachableStrategy` says
        // to replace it, and counts again when its agent returns.
        if state == v1::TaskState::TaskUnreachable {
            if inst.unreachable_since.is_none() {
                warn!(task.id = %task_id, "task unreachable");
                inst.unreachable_since = Some(now);
            }
        } else if inst.unreachable_since.take().is_some() {
            info!(task.id = %task_id, state = %name, "unreachable task is back");
        }
        let mut health_changed = None;
        if state == v1::TaskState::TaskRunning {
            if let Some(h) = status.healthy {
                if h {
                    inst.first_success.get_or_insert(now);
                    inst.last_success = Some(now);
                    inst.consecutive_failures = 0;
                    inst.unhealthy_since = None;
                } else {
                    inst.last_failure = Some(now);
                    inst.consecutive_failures += 1;
                    inst.last_failure_cause = Some(status.message.clone());
                    inst.unhealthy_since.get_or_insert(now);
                }
                if inst.healthy != Some(h) {
                    health_changed = Some(h);
                }
                inst.healthy = Some(h);
            }
        }
        let inst = inst.clone();
        self.dirty.instances.insert(task_id.clone());
        if changed_state {
            let body = json!({
                "slaveId": inst.agent_id,
                "taskId": task_id,
                "taskStatus": name,
                "message": status.message,
                "appId": app_id,
                "host": inst.placement.hostname,
                "ports": inst.ports,
                "ipAddresses": [{"ipAddress": inst.placement.hostname, "protocol": "IPv4"}],
                "version": inst.version,
            });
            self.event("status_update_event", body, now);
            let body = json!({
                "instanceId": task_id,
                "condition": name,
                "runSpecId": app_id,
                "agentId": inst.agent_id,
                "host": inst.placement.hostname,
                "runSpecVersion": inst.version,
            });
            self.event("instance_changed_event", body, now);
        }
        if let Some(alive) = health_changed {
            info!(task.id = %task_id, alive, "health changed");
            let body = json!({"appId": app_id, "instanceId": task_id, "taskId": task_id, "version": inst.version, "alive": alive});
            self.event("health_status_changed_event", body, now);
            let body = json!({"instanceId": task_id, "runSpecId": app_id, "runSpecVersion": inst.version, "healthy": alive});
            self.event("instance_health_changed_event", body, now);
            if !alive {
                let body = json!({"appId": app_id, "taskId": task_id, "healthCheck": Value::Null});
                self.event("failed_health_check_event", body, now);
            }
        }
        if state.is_terminal() || terminal_name(&name) {
            self.instances.remove(&task_id);
            let ours = inst.kill_requested_at.is_some();
            let failed = matches!(
                state,
                v1::TaskState::TaskFailed
                    | v1::TaskState::TaskError
                    | v1::TaskState::TaskFinished
                    | v1::TaskState::TaskGone
                    | v1::TaskState::TaskDropped
                    | v1::TaskState::TaskLost
            ) && !ours;
            let unhealthy_kill = ours && inst.kill_reason.as_deref() == Some("Unhealthy");
            if failed || unhealthy_kill {
                self.count("tasks_failed");
                if let Some(app) = self.apps.get(&app_id).map(|r| r.app.clone()) {
                    // Backoff applies to the version that failed only.
                    if inst.config_version == app.config_version() {
                        let policy = BackoffPolicy {
                            seconds: app.backoff_seconds,
                            factor: app.backoff_factor,
                            max: app.max_launch_delay_seconds,
                        };
                        let d = backoff::on_failure(
                            self.delays.get(&app_id).copied(),
                            policy,
                            secs(now),
                        );
                        info!(app.id = %app_id, delay = d.seconds, "launch delayed after task failure");
                        self.delays.insert(app_id.clone(), d);
                    }
                }
                let message = if unhealthy_kill {
                    "Task was killed since health check failed".to_string()
                } else {
                    status.message.clone()
                };
                self.failures.insert(
                    app_id.clone(),
                    TaskFailure {
                        app_id: app_id.clone(),
                        host: inst.placement.hostname.clone(),
                        message,
                        state: name.clone(),
                        task_id: task_id.clone(),
                        timestamp: now,
                        version: inst.version.clone(),
                        slave_id: inst.agent_id.clone(),
                    },
                );
            }
        }
    }

    // ------------------------------------------------------------------ tick

    /// True when an app must wait: a deployment affects it in a later step.
    fn held(&self, app_id: &str) -> bool {
        self.deployments.iter().any(|d| {
            // Start steps complete at once: look past them.
            let mut current = d.current;
            while d
                .steps
                .get(current)
                .is_some_and(|s| s.iter().all(|a| a.action == "StartApplication"))
            {
                current += 1;
            }
            d.steps
                .iter()
                .position(|s| {
                    s.iter()
                        .any(|a| a.app == app_id && a.action != "StartApplication")
                })
                .is_some_and(|idx| idx > current)
        })
    }

    fn upgrading(&self, app_id: &str) -> bool {
        self.deployments
            .iter()
            .any(|d| d.affected_apps.iter().any(|a| a == app_id))
    }

    /// Forgets tasks unreachable for longer than their app's `expungeAfterSeconds`:
    /// should one come back, it is an unknown task and is killed.
    fn expunge_unreachable(&mut self, now: DateTime<Utc>) {
        let now_s = secs(now);
        let gone: Vec<Instance> = self
            .instances
            .values()
            .filter(|i| {
                let Some(since) = i.unreachable_since else {
                    return false;
                };
                let after = self
                    .apps
                    .get(&i.app_id)
                    .map(|r| r.app.unreachable_after())
                    .unwrap_or(Some((0.0, 0.0)));
                after.is_some_and(|(_, expunge)| now_s - secs(since) >= expunge)
            })
            .cloned()
            .collect();
        for i in gone {
            warn!(task.id = %i.task_id, app.id = %i.app_id, "unreachable too long: expunged");
            self.instances.remove(&i.task_id);
            self.dirty.instances.insert(i.task_id.clone());
            self.count("tasks_expunged");
        }
    }

    /// Plans every app, issues kills, refreshes the queue, advances deployments,
    /// re-kills stuck tasks and decides about offers.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        let now_s = secs(now);
        self.expunge_unreachable(now);
        // Every app with a definition or with tasks.
        let mut app_ids: BTreeSet<String> = self.apps.keys().cloned().collect();
        app_ids.extend(self.instances.values().map(|i| i.app_id.clone()));
        let mut done: BTreeMap<String, bool> = BTreeMap::new();
        let mut queue: BTreeMap<String, usize> = BTreeMap::new();
        for app_id in &app_ids {
            let app = self.apps.get(app_id).map(|r| r.app.clone());
            if app.is_some() && self.held(app_id) {
                done.insert(app_id.clone(), false);
                continue;
            }
            let target = match &app {
                Some(a) => planner::Target {
                    instances: a.instance_count(),
                    minimum_health_capacity: a.upgrade_strategy.minimum_health_capacity,
                    maximum_over_capacity: a.upgrade_strategy.maximum_over_capacity,
                    health_checked: !a.health_checks.is_empty(),
                    kill_unhealthy: a
                        .health_checks
                        .first()
                        .is_some_and(|h| h.max_consecutive_failures > 0),
                    oldest_first: a.kill_selection == "OLDEST_FIRST",
                },
                None => planner::Target {
                    instances: 0,
                    minimum_health_capacity: 0.0,
                    maximum_over_capacity: 0.0,
                    health_checked: false,
                    kill_unhealthy: false,
                    oldest_first: false,
                },
            };
            let config = app
                .as_ref()
                .map(|a| a.config_version().to_string())
                .unwrap_or_default();
            let unreachable = app.as_ref().and_then(|a| a.unreachable_after());
            let tasks: Vec<TaskView> = self
                .instances
                .values()
                .filter(|i| &i.app_id == app_id)
                // Unreachable past `inactiveAfterSeconds`: inactive, no longer counted,
                // so a replacement is launched (the task itself is left alone).
                .filter(|i| {
                    !i.unreachable_since.is_some_and(|t| {
                        unreachable.is_some_and(|(inactive, _)| now_s - secs(t) >= inactive)
                    })
                })
                .map(|i| TaskView {
                    id: i.task_id.clone(),
                    current: i.config_version == config,
                    phase: if i.unreachable_since.is_some() {
                        Phase::Unreachable
                    } else if i.state == "TASK_RUNNING" {
                        Phase::Running
                    } else {
                        Phase::Starting
                    },
                    healthy: i.healthy,
                    killing: i.kill_requested_at.is_some() || i.state == "TASK_KILLING",
                    staged_at: i.staged_at.timestamp_millis(),
                    unhealthy_for: i.unhealthy_since.map(|t| now_s - secs(t)),
                })
                .collect();
            let plan = planner::plan(&PlanInput {
                target,
                tasks,
                upgrading: app.is_none() || self.upgrading(app_id),
                unhealthy_grace: self.settings.unhealthy_grace,
            });
            for (task_id, reason) in &plan.kill {
                let why = match reason {
                    KillReason::Upgrade => "Upgrade",
                    KillReason::ScaleDown => "ScaleDown",
                    KillReason::Unhealthy => "Unhealthy",
                };
                if *reason == KillReason::Unhealthy {
                    if let Some(i) = self.instances.get(task_id).cloned() {
                        let body = json!({
                            "appId": app_id, "taskId": task_id, "instanceId": task_id,
                            "version": i.version, "reason": "HealthCheckFailed",
                            "host": i.placement.hostname, "slaveId": i.agent_id,
                        });
                        self.event("unhealthy_instance_kill_event", body.clone(), now);
                        self.event("unhealthy_task_kill_event", body, now);
                    }
                }
                self.request_kill(task_id, why, now);
            }
            if plan.launch > 0 && app.is_some() {
                queue.insert(app_id.clone(), plan.launch);
            }
            done.insert(app_id.clone(), plan.done);
        }
        // The queue mirrors the plans; statistics survive while an app keeps waiting.
        self.queue.retain(|id, _| queue.contains_key(id));
        for (id, count) in &queue {
            let entry = self.queue.entry(id.clone()).or_insert_with(|| QueueEntry {
                count: 0,
                since: now,
                stats: OfferStats::default(),
            });
            entry.count = *count;
        }
        // Deployments advance step by step.
        let mut finished = Vec::new();
        for idx in 0..self.deployments.len() {
            loop {
                let d = &self.deployments[idx];
                let Some(step) = d.steps.get(d.current) else {
                    break;
                };
                let complete = step.iter().all(|a| match a.action.as_str() {
                    "StartApplication" => true,
                    "StopApplication" => !self.instances.values().any(|i| i.app_id == a.app),
                    _ => {
                        !self.apps.contains_key(&a.app)
                            || done.get(&a.app).copied().unwrap_or(false)
                    }
                });
                if !complete {
                    break;
                }
                let step_json = self.step_json(step);
                let plan = self.plan_json(d);
                self.deployments[idx].current += 1;
                self.dirty
                    .deployments
                    .insert(self.deployments[idx].id.clone());
                self.event(
                    "deployment_step_success",
                    json!({"plan": plan, "currentStep": step_json}),
                    now,
                );
            }
            let d = &self.deployments[idx];
            if d.current >= d.steps.len() {
                finished.push(d.id.clone());
            }
        }
        for id in finished {
            if let Some(pos) = self.deployments.iter().position(|d| d.id == id) {
                let d = self.deployments.remove(pos);
                info!(deployment.id = %d.id, "deployment finished");
                self.dirty.deployments.insert(d.id.clone());
                let plan = self.plan_json(&d);
                self.event("deployment_success", json!({"id": d.id, "plan": plan}), now);
            }
        }
        // Kills that did not take effect are repeated.
        let retry = self.settings.kill_retry;
        let stuck: Vec<(String, String)> = self
            .instances
            .values_mut()
            .filter(|i| i.kill_requested_at.is_some_and(|t| now_s - secs(t) > retry))
            .map(|i| {
                i.kill_requested_at = Some(now);
                (i.task_id.clone(), i.agent_id.clone())
            })
            .collect();
        for (task_id, agent_id) in stuck {
            self.effects.push(Effect::Kill {
                task_id,
                agent_id,
                grace: None,
            });
        }
        // Offers: revive when something (more) waits, suppress when nothing does.
        let total: usize = self.queue.values().map(|q| q.count).sum();
        let wanted = total > 0;
        if self.connected {
            let grew = total > self.queued_total;
            if self.offers_wanted != Some(wanted) || (wanted && grew) {
                self.effects.push(if wanted {
                    Effect::Revive
                } else {
                    Effect::Suppress
                });
                self.offers_wanted = Some(wanted);
            }
        }
        self.queued_total = total;
    }
}

/// Which parts of an app to embed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Embed {
    /// tasksStaged/Running/Healthy/Unhealthy.
    pub counts: bool,
    /// deployments.
    pub deployments: bool,
    /// tasks.
    pub tasks: bool,
    /// lastTaskFailure.
    pub last_task_failure: bool,
}

impl Embed {
    /// Nothing embedded.
    pub fn none() -> Embed {
        Embed::default()
    }

    /// Counts and deployments (what `GET /v2/apps` always has).
    pub fn counts_and_deployments() -> Embed {
        Embed {
            counts: true,
            deployments: true,
            ..Default::default()
        }
    }

    /// Adds what `embed=` values ask for (prefixes `apps.`, `app.`, `group.apps.` or
    /// none are all accepted; unknown values are ignored).
    pub fn with(mut self, values: &[String]) -> Embed {
        for v in values {
            let name = v
                .trim_start_matches("group.apps.")
                .trim_start_matches("apps.")
                .trim_start_matches("app.");
            match name {
                "tasks" => {
                    self.tasks = true;
                    self.deployments = true;
                }
                "counts" => self.counts = true,
                "deployments" => self.deployments = true,
                "lastTaskFailure" => self.last_task_failure = true,
                _ => {}
            }
        }
        self
    }
}

/// One term of a label selector (`a`, `b==x`, `c!=y`, `d in (x, y)`, `e notin (x)`).
#[derive(Debug, Clone, PartialEq)]
pub enum LabelSelector {
    /// Key present.
    Exists(String),
    /// Key equals one of the values.
    In(String, Vec<String>),
    /// Key absent or not one of the values.
    NotIn(String, Vec<String>),
}

impl LabelSelector {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelSelector::Exists(k) => labels.contains_key(k),
            LabelSelector::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelSelector::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        }
    }
}

/// Parses Marathon's label selector syntax; unparsable terms are ignored.
pub fn parse_label_selector(text: &str) -> Vec<LabelSelector> {
    // Split at commas outside parentheses.
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    terms.push(cur);
    let list = |s: &str| -> Vec<String> {
        s.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    };
    terms
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| {
            if let Some((k, v)) = t.split_once("!=") {
                LabelSelector::NotIn(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = t.split_once("==") {
                LabelSelector::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = t.split_once(" notin ") {
                LabelSelector::NotIn(k.trim().into(), list(v))
            } else if let Some((k, v)) = t.split_once(" in ") {
                LabelSelector::In(k.trim().into(), list(v))
            } else {
                LabelSelector::Exists(t.into())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    fn offer(id: &str, host: &str, res: &str) -> v1::Offer {
        v1::Offer {
            id: id.into(),
            agent_id: format!("agent-{host}"),
            hostname: host.into(),
            resources: Resources::parse(res).unwrap().to_proto(),
            ..Default::default()
        }
    }

    fn running(core: &mut Core, healthy: Option<bool>) {
        let ids: Vec<(String, String)> = core
            .instances
            .values()
            .map(|i| (i.task_id.clone(), i.agent_id.clone()))
            .collect();
        for (t, a) in ids {
            core.on_update(
                &v1::TaskStatus {
                    task_id: t,
                    agent_id: a,
                    state: v1::TaskState::TaskRunning as i32,
                    healthy,
                    ..Default::default()
                },
                now(),
            );
        }
    }

    #[test]
    fn create_launch_run_and_finish_a_deployment() {
        let mut core = Core::new(Settings::default());
        core.connected = true;
        let body = json!({"id": "web", "cmd": "sleep 100", "instances": 2, "cpus": 0.1, "mem": 16});
        let (app, result) = core.create_app(&body, false, now()).unwrap();
        assert_eq!(app["id"], "/web");
        assert_eq!(app["deployments"][0]["id"], json!(result.deployment_id));
        core.tick(now());
        assert_eq!(core.queue["/web"].count, 2);
        assert!(core.effects.contains(&Effect::Revive));
        core.effects.clear();
        core.on_offers(
            vec![offer("o1", "h1", "cpus:1;mem:100;ports:[31000-31010]")],
            now(),
        );
        assert_eq!(core.instances.len(), 2);
        assert!(matches!(
            &core.effects[0],
            Effect::Launch { tasks, refuse_seconds: Some(r), .. } if tasks.len() == 2 && *r == 1.0
        ));
        running(&mut core, None);
        core.tick(now());
        assert!(core.deployments.is_empty(), "{:?}", core.deployments);
        assert!(core.effects.contains(&Effect::Suppress));
        // A second change while idle is fine; a third while that one runs is a 409.
        let (_, _) = core
            .update_app("/web", &json!({"cmd": "sleep 200"}), true, false, now())
            .unwrap();
        let err = core
            .update_app("/web", &json!({"instances": 3}), true, false, now())
            .unwrap_err();
        assert!(matches!(err, ApiError::Conflict { .. }));
        assert!(core
            .update_app("/web", &json!({"instances": 3}), true, true, now())
            .is_ok());
    }

    #[test]
    fn unreachable_task_waits_for_inactive_then_is_replaced_and_the_surplus_goes_on_return() {
        let mut core = Core::new(Settings::default());
        core.connected = true;
        let body = json!({
            "id": "web", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16,
            "healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"}, "maxConsecutiveFailures": 1}],
            "unreachableStrategy": {"inactiveAfterSeconds": 5, "expungeAfterSeconds": 100}
        });
        core.create_app(&body, false, now()).unwrap();
        core.tick(now());
        core.on_offers(
            vec![offer("o1", "h1", "cpus:1;mem:100;ports:[31000-31010]")],
            now(),
        );
        running(&mut core, Some(false));
        let t0 = now() - chrono::Duration::seconds(6);
        let first = core.instances.keys().next().unwrap().clone();
        let agent = core.instances[&first].agent_id.clone();
        let status = |state: v1::TaskState| v1::TaskStatus {
            task_id: first.clone(),
            agent_id: agent.clone(),
            state: state as i32,
            ..Default::default()
        };
        // Launched well before its replacement will be (killSelection compares ages).
        core.instances.get_mut(&first).unwrap().staged_at = t0;
        core.effects.clear();
        core.on_update(&status(v1::TaskState::TaskUnreachable), t0);
        core.tick(t0 + chrono::Duration::seconds(1));
        // Kept, not healthy, not killed for its (failed) health, not replaced yet.
        assert_eq!(core.instances[&first].state, "TASK_UNREACHABLE");
        assert!(core.instances[&first].kill_requested_at.is_none());
        assert_eq!(core.counts("/web"), (0, 0, 0, 0));
        assert!(!core.queue.contains_key("/web"));
        assert!(!core
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Kill { .. })));
        // Inactive: a replacement is queued; the task itself is left alone.
        core.tick(now());
        assert_eq!(core.queue["/web"].count, 1);
        core.on_offers(
            vec![offer("o2", "h2", "cpus:1;mem:100;ports:[31000-31010]")],
            now(),
        );
        let second = core
            .instances
            .keys()
            .find(|k| **k != first)
            .unwrap()
            .clone();
        core.on_update(
            &v1::TaskStatus {
                task_id: second.clone(),
                agent_id: "agent-h2".into(),
                state: v1::TaskState::TaskRunning as i32,
                healthy: Some(true),
                ..Default::default()
            },
            now(),
        );
        core.tick(now());
        assert!(core.instances[&first].kill_requested_at.is_none());
        // Back: running again, it counts, and the surplus is killed (youngest first).
        core.on_update(&status(v1::TaskState::TaskRunning), now());
        assert!(core.instances[&first].unreachable_since.is_none());
        core.on_update(
            &v1::TaskStatus {
                healthy: Some(true),
                ..status(v1::TaskState::TaskRunning)
            },
            now(),
        );
        core.tick(now());
        assert!(core.instances[&first].kill_requested_at.is_none());
        assert_eq!(
            core.instances[&second].kill_reason.as_deref(),
            Some("ScaleDown")
        );
    }

    #[test]
    fn unreachable_task_is_expunged_after_expunge_after_seconds() {
        let mut core = Core::new(Settings::default());
        core.connected = true;
        let body = json!({
            "id": "web", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16,
            "unreachableStrategy": {"inactiveAfterSeconds": 1, "expungeAfterSeconds": 2}
        });
        core.create_app(&body, false, now()).unwrap();
        core.tick(now());
        core.on_offers(
            vec![offer("o1", "h1", "cpus:1;mem:100;ports:[31000-31010]")],
            now(),
        );
        running(&mut core, None);
        let t0 = now();
        let id = core.instances.keys().next().unwrap().clone();
        let unreachable = v1::TaskStatus {
            task_id: id.clone(),
            agent_id: "agent-h1".into(),
            state: v1::TaskState::TaskUnreachable as i32,
            ..Default::default()
        };
        core.on_update(&unreachable, t0);
        core.tick(t0 + chrono::Duration::seconds(3));
        assert!(!core.instances.contains_key(&id));
        // Should it come back, it is unknown: killed.
        core.effects.clear();
        core.on_update(
            &v1::TaskStatus {
                state: v1::TaskState::TaskRunning as i32,
                ..unreachable
            },
            now(),
        );
        assert!(core
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Kill { task_id, .. } if *task_id == id)));
    }

    #[test]
    fn unreachable_strategy_defaults_and_validation() {
        let app = Core::parse_app(&json!({"id": "a", "cmd": "x"})).unwrap();
        assert_eq!(app.unreachable_after(), Some((300.0, 600.0)));
        let app =
            Core::parse_app(&json!({"id": "a", "cmd": "x", "unreachableStrategy": "disabled"}))
                .unwrap();
        assert_eq!(app.unreachable_after(), None);
        let app = Core::parse_app(
            &json!({"id": "a", "cmd": "x", "unreachableStrategy": {"inactiveAfterSeconds": 0}}),
        )
        .unwrap();
        assert_eq!(app.unreachable_after(), Some((0.0, 600.0)));
        let bad = json!({"id": "a", "cmd": "x", "unreachableStrategy": {"inactiveAfterSeconds": 10, "expungeAfterSeconds": 5}});
        assert!(matches!(Core::parse_app(&bad), Err(ApiError::Invalid(_))));
    }

    #[test]
    fn unused_offers_are_counted_per_reason() {
        let mut core = Core::new(Settings::default());
        core.connected = true;
        let body = json!({"id": "big", "cmd": "x", "cpus": 4, "mem": 16});
        core.create_app(&body, false, now()).unwrap();
        core.tick(now());
        core.on_offers(
            vec![offer("o1", "h1", "cpus:1;mem:100;ports:[31000-31010]")],
            now(),
        );
        let q = core.queue_json(now());
        let reasons = &q["queue"][0]["processedOffersSummary"]["rejectSummaryLastOffers"];
        let cpus = reasons
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["reason"] == "InsufficientCpus")
            .unwrap();
        assert_eq!(cpus["declined"], 1);
        assert!(matches!(core.effects.last(), Some(Effect::Decline { .. })));
    }

    #[test]
    fn rollback_restores_the_previous_config_without_touching_its_tasks() {
        let mut core = Core::new(Settings::default());
        core.connected = true;
        let body = json!({"id": "web", "cmd": "good", "instances": 1, "cpus": 0.1, "mem": 16});
        core.create_app(&body, false, now()).unwrap();
        core.tick(now());
        core.on_offers(
            vec![offer("o1", "h1", "cpus:1;mem:100;ports:[31000-31010]")],
            now(),
        );
        running(&mut core, None);
        core.tick(now());
        let old_task = core.instances.keys().next().unwrap().clone();
        let (_, d) = core
            .update_app("/web", &json!({"cmd": "bad"}), true, false, now())
            .unwrap();
        let rollback = core
            .delete_deployment(&d.deployment_id, false, now())
            .unwrap()
            .unwrap();
        assert_ne!(rollback.deployment_id, d.deployment_id);
        assert_eq!(core.apps["/web"].app.cmd.as_deref(), Some("good"));
        core.tick(now());
        assert!(core.instances[&old_task].kill_requested_at.is_none());
        assert!(core.deployments.is_empty(), "converged at once");
    }

    #[test]
    fn label_selectors() {
        let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
        let ok = |s: &str| parse_label_selector(s).iter().all(|x| x.matches(&labels));
        assert!(ok("env"));
        assert!(ok("env==prod"));
        assert!(!ok("env!=prod"));
        assert!(ok("env in (dev, prod)"));
        assert!(!ok("env notin (prod)"));
        assert!(!ok("tier"));
        assert!(ok("env,env==prod"));
    }

    #[test]
    fn query_booleans_ignore_case() {
        assert_eq!(parse_bool("False"), Some(false));
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("maybe"), None);
    }
}
