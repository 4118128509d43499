//! The framework's state and every decision about it, without I/O.
//!
//! [`Core`] owns apps (with their versions), tasks ("instances"), deployments, launch
//! delays and the launch queue. HTTP requests, offers, status updates and clock ticks
//! are method calls on it; what must happen in the outside world comes back as
//! [`Effect`]s (launch, decline, kill, revive, suppress, reconcile), events for
//! `/v2/events`, and a set of dirty keys to persist. The actor in `actor.rs` performs
//! those; nothing here awaits anything.
//!
//! The core does no I/O and reads no clock or randomness: time comes in as `now`,
//! task and deployment ids from the injected [`IdGen`], so the same inputs always give
//! the same decisions.
//!
//! Split by concern: [`apps`] and [`groups`] (API changes), [`deployments`] (plans and
//! rollbacks), [`offers`] (matching and `TaskInfo`s), [`updates`] (status updates),
//! [`tick`] (planning), [`views`] (Marathon JSON) and [`query`] (query parameters).
//!
//! Invariants: only the planner (`planner.rs`) decides launches and kills for an app;
//! an app is changed by at most one deployment at a time (a second change is a 409
//! unless forced); nothing is killed on recovery unless the planner says so for an
//! app under deployment, or the task is unknown or failed its health check.

#![deny(clippy::disallowed_methods)]

mod apps;
mod deployments;
mod groups;
mod offers;
mod query;
#[cfg(test)]
mod tests;
mod tick;
mod updates;
mod views;

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

pub use query::{parse_bool, parse_label_selector, LabelSelector};
pub use views::Embed;

/// Where the core gets new ids (task id suffixes, deployment ids) from. Injected so
/// the core stays deterministic; the actor gives it random UUIDs.
pub trait IdGen: Send + std::fmt::Debug {
    /// A new id, never returned before.
    fn next_id(&mut self) -> String;
}

/// Ids `00000000-0000-0000-0000-000000000001`, `...2`, ...: UUID-shaped and
/// reproducible, for tests and simulations.
#[derive(Debug, Default, Clone)]
pub struct SequentialIds {
    next: u64,
}

impl IdGen for SequentialIds {
    fn next_id(&mut self) -> String {
        self.next += 1;
        format!("00000000-0000-0000-0000-{:012}", self.next)
    }
}

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
    /// Seconds after subscribing before the first periodic reconciliation
    /// (Marathon's `--reconciliation_initial_delay`, 15 s).
    pub reconciliation_initial_delay: f64,
    /// Seconds between implicit reconciliations (Marathon's
    /// `--reconciliation_interval`, 600 s): tasks the master knows and this
    /// framework does not (e.g. an agent that came back after a master
    /// failover with tasks replaced meanwhile) are then killed.
    pub reconciliation_interval: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            role: "*".into(),
            unhealthy_grace: 60.0,
            kill_retry: 10.0,
            service_port_min: 10000,
            reconciliation_initial_delay: 15.0,
            reconciliation_interval: 600.0,
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
    /// When the next periodic reconciliation is due (set on subscribing).
    next_reconcile: Option<f64>,
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
    /// New ids.
    ids: Box<dyn IdGen>,
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

impl Core {
    /// An empty state taking new ids from `ids`.
    pub fn new(settings: Settings, ids: Box<dyn IdGen>) -> Core {
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
            next_reconcile: None,
            offers_wanted: None,
            queued_total: 0,
            effects: Vec::new(),
            events: Vec::new(),
            dirty: Dirty::default(),
            counters: BTreeMap::new(),
            ids,
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
}
