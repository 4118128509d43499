//! Marathon's app definition JSON: parsing with Marathon's defaults, validation with
//! Marathon's error shape, and the exact keys Marathon (and its clients) expect.
//!
//! Invariant: everything serialized here uses only keys the `marathon` Python client
//! (0.13) accepts, because it builds objects with `cls(**json)` and fails on unknown
//! keys.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Marathon's timestamp format: `2026-11-24T12:00:00.000Z`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Normalizes an app or group id to an absolute path without a trailing slash
/// (`web` → `/web`, `/prod/web/` → `/prod/web`); `.`/`..` are not resolved.
pub fn normalize_id(id: &str) -> String {
    let parts: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// Marathon's default `unreachableStrategy.inactiveAfterSeconds`.
pub const DEFAULT_INACTIVE_AFTER: i64 = 300;
/// Marathon's default `unreachableStrategy.expungeAfterSeconds`.
pub const DEFAULT_EXPUNGE_AFTER: i64 = 600;

/// The id segment rule Marathon enforces (lowercase letters, digits, dashes, dots).
pub const ID_PATTERN: &str =
    r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$";

/// True when every segment of `id` matches [`ID_PATTERN`] and there is at least one.
pub fn valid_path_id(id: &str) -> bool {
    let Ok(re) = regex::Regex::new(ID_PATTERN) else {
        return false;
    };
    let segments: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    !segments.is_empty() && segments.iter().all(|s| re.is_match(s))
}

/// `upgradeStrategy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UpgradeStrategy {
    /// Fraction of instances that must stay healthy during an upgrade (0..=1).
    pub minimum_health_capacity: f64,
    /// Fraction of extra instances allowed during an upgrade (0..=1).
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// `versionInfo`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VersionInfo {
    /// Last change of only the instance count.
    pub last_scaling_at: String,
    /// Last change that needs new tasks (config change or restart).
    pub last_config_change_at: String,
}

/// One `portDefinitions` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PortDefinition {
    /// Service port (0 = assign one), or the host port with `requirePorts`.
    pub port: i64,
    /// `tcp`, `udp` or `udp,tcp`.
    pub protocol: String,
    /// Optional name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl Default for PortDefinition {
    fn default() -> Self {
        PortDefinition {
            port: 0,
            protocol: "tcp".into(),
            name: None,
            labels: BTreeMap::new(),
        }
    }
}

/// `{"value": "..."}` of a COMMAND health check.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CommandValue {
    /// Shell command.
    pub value: String,
}

/// One `healthChecks` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HealthCheckDef {
    /// HTTP, HTTPS, TCP, COMMAND, MESOS_HTTP, MESOS_HTTPS, MESOS_TCP.
    pub protocol: String,
    /// HTTP path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Index into the task's ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_index: Option<i64>,
    /// A fixed port instead of `portIndex`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// COMMAND checks: the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandValue>,
    /// Failures before the first success are ignored for this long.
    pub grace_period_seconds: f64,
    /// Time between checks.
    pub interval_seconds: f64,
    /// Time a check may take.
    pub timeout_seconds: f64,
    /// Consecutive failures after which the task is killed (0: never).
    pub max_consecutive_failures: i64,
    /// Delay before the first check.
    pub delay_seconds: f64,
    /// HTTP: treat 1xx as success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_http1xx: Option<bool>,
}

impl Default for HealthCheckDef {
    fn default() -> Self {
        HealthCheckDef {
            protocol: "HTTP".into(),
            path: None,
            port_index: None,
            port: None,
            command: None,
            grace_period_seconds: 300.0,
            interval_seconds: 60.0,
            timeout_seconds: 20.0,
            max_consecutive_failures: 3,
            delay_seconds: 15.0,
            ignore_http1xx: None,
        }
    }
}

impl HealthCheckDef {
    /// Fills protocol-specific defaults (`path` `/` and `portIndex` 0 for HTTP).
    fn normalize(&mut self) {
        self.protocol = self.protocol.to_ascii_uppercase();
        match self.protocol.as_str() {
            "HTTP" | "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS" => {
                if self.path.is_none() {
                    self.path = Some("/".into());
                }
                if self.port.is_none() && self.port_index.is_none() {
                    self.port_index = Some(0);
                }
                if self.protocol == "HTTP" || self.protocol == "HTTPS" {
                    self.ignore_http1xx.get_or_insert(false);
                }
            }
            "TCP" | "MESOS_TCP" if self.port.is_none() && self.port_index.is_none() => {
                self.port_index = Some(0);
            }
            _ => {}
        }
    }

    /// True for COMMAND checks.
    pub fn is_command(&self) -> bool {
        self.protocol == "COMMAND"
    }
}

/// A Marathon app definition with Marathon's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct App {
    /// Absolute path id, e.g. `/prod/web`.
    pub id: String,
    /// Shell command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// argv (no shell).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// User to run as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Environment (string values, or secret references kept as given).
    pub env: BTreeMap<String, Value>,
    /// Wanted number of tasks.
    pub instances: i64,
    /// CPUs per task.
    pub cpus: f64,
    /// Memory per task (MiB).
    pub mem: f64,
    /// Disk per task (MiB).
    pub disk: f64,
    /// GPUs per task (not supported by Mezzo agents; must be 0 to launch).
    pub gpus: f64,
    /// Executor (empty: the default command executor).
    pub executor: String,
    /// `[field, OPERATOR, value?]` placement constraints.
    pub constraints: Vec<Vec<Value>>,
    /// Artifacts to fetch (kept, not fetched by Mezzo).
    pub fetch: Vec<Value>,
    /// Legacy artifacts.
    pub uris: Vec<String>,
    /// Base launch delay after a failure.
    pub backoff_seconds: f64,
    /// Growth of the launch delay per failure.
    pub backoff_factor: f64,
    /// Cap of the launch delay.
    pub max_launch_delay_seconds: f64,
    /// Container spec (kept as given; Mezzo runs commands only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Value>,
    /// Health checks (the first one runs next to each task).
    pub health_checks: Vec<HealthCheckDef>,
    /// Readiness checks (kept, not evaluated).
    pub readiness_checks: Vec<Value>,
    /// Ids of apps or groups that must be deployed first.
    pub dependencies: Vec<String>,
    /// Rolling upgrade parameters.
    pub upgrade_strategy: UpgradeStrategy,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Accepted resource roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_resource_roles: Option<Vec<String>>,
    /// Version timestamp of this definition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Last scaling / config change timestamps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_info: Option<VersionInfo>,
    /// `YOUNGEST_FIRST` or `OLDEST_FIRST`.
    pub kill_selection: String,
    /// `unreachableStrategy`: `{inactiveAfterSeconds, expungeAfterSeconds}` or
    /// `"disabled"` (see [`App::unreachable_after`]).
    pub unreachable_strategy: Value,
    /// Ports (service ports, or host ports with `requirePorts`).
    pub port_definitions: Option<Vec<PortDefinition>>,
    /// Legacy `ports` (input only; turned into `portDefinitions`).
    #[serde(skip_serializing)]
    pub ports: Option<Vec<i64>>,
    /// Use the `portDefinitions` ports as host ports literally.
    pub require_ports: bool,
    /// SIGTERM → SIGKILL gap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<f64>,
    /// Secrets (kept as given).
    pub secrets: BTreeMap<String, Value>,
    /// Networks.
    pub networks: Vec<Value>,
    /// Role (Marathon 1.9+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Default for App {
    fn default() -> Self {
        App {
            id: String::new(),
            cmd: None,
            args: None,
            user: None,
            env: BTreeMap::new(),
            instances: 1,
            cpus: 1.0,
            mem: 128.0,
            disk: 0.0,
            gpus: 0.0,
            executor: String::new(),
            constraints: Vec::new(),
            fetch: Vec::new(),
            uris: Vec::new(),
            backoff_seconds: 1.0,
            backoff_factor: 1.15,
            max_launch_delay_seconds: 300.0,
            container: None,
            health_checks: Vec::new(),
            readiness_checks: Vec::new(),
            dependencies: Vec::new(),
            upgrade_strategy: UpgradeStrategy::default(),
            labels: BTreeMap::new(),
            accepted_resource_roles: None,
            version: None,
            version_info: None,
            kill_selection: "YOUNGEST_FIRST".into(),
            // Marathon's documented defaults (configure-task-handling).
            unreachable_strategy: serde_json::json!({
                "inactiveAfterSeconds": DEFAULT_INACTIVE_AFTER,
                "expungeAfterSeconds": DEFAULT_EXPUNGE_AFTER
            }),
            port_definitions: None,
            ports: None,
            require_ports: false,
            task_kill_grace_period_seconds: None,
            secrets: BTreeMap::new(),
            networks: vec![serde_json::json!({"mode": "host"})],
            role: None,
        }
    }
}

/// One `{path, errors}` entry of a 422 / 400 answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// JSON path, e.g. `/cpus`, `/constraints(0)`.
    pub path: String,
    /// Messages.
    pub errors: Vec<String>,
}

impl Violation {
    /// A violation at `path`.
    pub fn new(path: impl Into<String>, error: impl Into<String>) -> Self {
        Violation {
            path: path.into(),
            errors: vec![error.into()],
        }
    }
}

/// Why a request body is not an app.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// Not JSON, or wrong JSON types: HTTP 400 "Invalid JSON".
    InvalidJson(Vec<Violation>),
    /// Well-formed but invalid: HTTP 422 "Object is not valid".
    Invalid(Vec<Violation>),
}

impl App {
    /// Parses an app from JSON (types only, Marathon defaults filled in) and
    /// normalizes it: absolute id, `ports` → `portDefinitions`, health check defaults.
    pub fn from_json(value: &Value) -> Result<App, ParseError> {
        if !value.is_object() {
            return Err(ParseError::InvalidJson(vec![Violation::new(
                "",
                "error.expected.jsobject",
            )]));
        }
        let mut app: App = serde_json::from_value(value.clone()).map_err(|e| {
            let path = type_error_path(value, &e.to_string());
            ParseError::InvalidJson(vec![Violation::new(path, e.to_string())])
        })?;
        app.normalize();
        Ok(app)
    }

    fn normalize(&mut self) {
        self.id = normalize_id(&self.id);
        if self.port_definitions.is_none() {
            self.port_definitions = Some(match self.ports.take() {
                Some(ports) => ports
                    .into_iter()
                    .map(|port| PortDefinition {
                        port,
                        ..Default::default()
                    })
                    .collect(),
                // Marathon gives an app without ports one dynamic port.
                None => vec![PortDefinition::default()],
            });
        }
        self.ports = None;
        for hc in &mut self.health_checks {
            hc.normalize();
        }
        self.dependencies = self.dependencies.iter().map(|d| normalize_id(d)).collect();
        self.kill_selection = self.kill_selection.to_ascii_uppercase();
        // Fill in the missing half of a partial unreachable strategy.
        if let Some(o) = self.unreachable_strategy.as_object_mut() {
            o.entry("inactiveAfterSeconds")
                .or_insert(serde_json::json!(DEFAULT_INACTIVE_AFTER));
            o.entry("expungeAfterSeconds")
                .or_insert(serde_json::json!(DEFAULT_EXPUNGE_AFTER));
        } else if self.unreachable_strategy.is_null() {
            self.unreachable_strategy = App::default().unreachable_strategy;
        }
    }

    /// `(inactiveAfterSeconds, expungeAfterSeconds)`: an unreachable task is replaced
    /// once unreachable for the first, and forgotten (killed should it come back) after
    /// the second. `None`: `"disabled"` (never replaced nor forgotten).
    pub fn unreachable_after(&self) -> Option<(f64, f64)> {
        let o = self.unreachable_strategy.as_object()?;
        let get = |k: &str, d: f64| o.get(k).and_then(Value::as_f64).unwrap_or(d);
        Some((
            get("inactiveAfterSeconds", DEFAULT_INACTIVE_AFTER as f64),
            get("expungeAfterSeconds", DEFAULT_EXPUNGE_AFTER as f64),
        ))
    }

    /// The port definitions (never `None` after parsing).
    pub fn port_defs(&self) -> &[PortDefinition] {
        self.port_definitions.as_deref().unwrap_or(&[])
    }

    /// The config version tasks are compared against (`versionInfo.lastConfigChangeAt`).
    pub fn config_version(&self) -> &str {
        self.version_info
            .as_ref()
            .map(|v| v.last_config_change_at.as_str())
            .unwrap_or("")
    }

    /// Instances as a count (negative treated as 0; validation rejects them).
    pub fn instance_count(&self) -> usize {
        usize::try_from(self.instances).unwrap_or(0)
    }

    /// True when changing `self` into `other` needs new tasks (anything but the
    /// instance count and version bookkeeping changed).
    pub fn needs_restart(&self, other: &App) -> bool {
        let strip = |a: &App| {
            let mut a = a.clone();
            a.instances = 0;
            a.version = None;
            a.version_info = None;
            a
        };
        strip(self) != strip(other)
    }

    /// Checks the definition; an empty vector means valid.
    pub fn validate(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        self.validate_basics(&mut v);
        self.validate_ports(&mut v);
        self.validate_health_checks(&mut v);
        self.validate_env_and_more(&mut v);
        v
    }

    /// `unreachableStrategy`: `"disabled"` or both times, expunge after inactive.
    fn validate_unreachable_strategy(&self, v: &mut Vec<Violation>) {
        match &self.unreachable_strategy {
            Value::String(s) if s == "disabled" => {}
            Value::Object(o) => {
                let inactive = o.get("inactiveAfterSeconds").and_then(Value::as_f64);
                let expunge = o.get("expungeAfterSeconds").and_then(Value::as_f64);
                match (inactive, expunge) {
                    (Some(i), Some(e)) => {
                        if i < 0.0 {
                            v.push(Violation::new(
                                "/unreachableStrategy/inactiveAfterSeconds",
                                format!("got {i}, expected 0 or more"),
                            ));
                        }
                        if e < i {
                            v.push(Violation::new(
                                "/unreachableStrategy/expungeAfterSeconds",
                                "expungeAfterSeconds must be greater than or equal to inactiveAfterSeconds",
                            ));
                        }
                    }
                    _ => v.push(Violation::new(
                        "/unreachableStrategy",
                        "inactiveAfterSeconds and expungeAfterSeconds must be numbers",
                    )),
                }
            }
            _ => v.push(Violation::new(
                "/unreachableStrategy",
                "must be an object or \"disabled\"",
            )),
        }
    }

    /// Id, command, resources, backoff, upgrade strategy, kill selection,
    /// unreachable strategy and constraints.
    fn validate_basics(&self, v: &mut Vec<Violation>) {
        self.validate_unreachable_strategy(v);
        if !valid_path_id(&self.id) {
            v.push(Violation::new(
                "/id",
                format!(
                    "'{}' must fully match regular expression '{ID_PATTERN}'",
                    self.id
                ),
            ));
        }
        match (&self.cmd, &self.args, &self.container) {
            (Some(_), Some(_), _) => v.push(Violation::new(
                "/",
                "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.",
            )),
            (None, None, None) => v.push(Violation::new(
                "/",
                "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.",
            )),
            _ => {}
        }
        if let Some(cmd) = &self.cmd {
            if cmd.trim().is_empty() {
                v.push(Violation::new("/cmd", "must not be empty"));
            }
        }
        if let Some(args) = &self.args {
            if args.is_empty() {
                v.push(Violation::new("/args", "must not be empty"));
            }
        }
        for (name, value, min) in [
            ("cpus", self.cpus, 0.0),
            ("mem", self.mem, 0.0),
            ("disk", self.disk, 0.0),
            ("gpus", self.gpus, 0.0),
            ("backoffSeconds", self.backoff_seconds, 0.0),
            ("maxLaunchDelaySeconds", self.max_launch_delay_seconds, 0.0),
        ] {
            if !value.is_finite() || value < min {
                v.push(Violation::new(
                    format!("/{name}"),
                    format!("got {value}, expected {min:.1} or more"),
                ));
            }
        }
        if !self.backoff_factor.is_finite() || self.backoff_factor < 1.0 {
            v.push(Violation::new(
                "/backoffFactor",
                format!("got {}, expected 1.0 or more", self.backoff_factor),
            ));
        }
        if self.instances < 0 {
            v.push(Violation::new(
                "/instances",
                format!("got {}, expected 0 or more", self.instances),
            ));
        }
        let us = &self.upgrade_strategy;
        for (name, value) in [
            ("minimumHealthCapacity", us.minimum_health_capacity),
            ("maximumOverCapacity", us.maximum_over_capacity),
        ] {
            let path = format!("/upgradeStrategy/{name}");
            if !value.is_finite() || value < 0.0 {
                v.push(Violation::new(path, "is less than 0"));
            } else if value > 1.0 {
                v.push(Violation::new(path, "is greater than 1"));
            }
        }
        if !["YOUNGEST_FIRST", "OLDEST_FIRST"].contains(&self.kill_selection.as_str()) {
            v.push(Violation::new(
                "/killSelection",
                "error.expected.validenumvalue (YOUNGEST_FIRST, OLDEST_FIRST)",
            ));
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if let Err(e) = crate::constraints::parse(c) {
                v.push(Violation::new(format!("/constraints({i})"), e));
            }
        }
    }

    /// Port definitions: range, protocol, unique names, required ports.
    fn validate_ports(&self, v: &mut Vec<Violation>) {
        let ports = self.port_defs();
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in ports.iter().enumerate() {
            if !(0..=65535).contains(&p.port) {
                v.push(Violation::new(
                    format!("/portDefinitions({i})/port"),
                    format!("got {}, expected between 0 and 65535", p.port),
                ));
            }
            if !["tcp", "udp", "udp,tcp", "tcp,udp"].contains(&p.protocol.as_str()) {
                v.push(Violation::new(
                    format!("/portDefinitions({i})/protocol"),
                    "is not one of (tcp,udp,udp,tcp)",
                ));
            }
            if let Some(n) = &p.name {
                if !names.insert(n.clone()) {
                    v.push(Violation::new(
                        "/portDefinitions",
                        "Port names must be unique.",
                    ));
                }
            }
        }
        if self.require_ports && ports.iter().any(|p| p.port == 0) {
            v.push(Violation::new(
                "/portDefinitions",
                "requirePorts needs explicit (non-zero) ports",
            ));
        }
    }

    /// Health checks: protocol, port, path, timings.
    fn validate_health_checks(&self, v: &mut Vec<Violation>) {
        let ports = self.port_defs();
        for (i, hc) in self.health_checks.iter().enumerate() {
            let path = format!("/healthChecks({i})");
            let known = [
                "HTTP",
                "HTTPS",
                "TCP",
                "COMMAND",
                "MESOS_HTTP",
                "MESOS_HTTPS",
                "MESOS_TCP",
            ];
            if !known.contains(&hc.protocol.as_str()) {
                v.push(Violation::new(
                    format!("{path}/protocol"),
                    format!("error.expected.validenumvalue ({})", known.join(", ")),
                ));
                continue;
            }
            if hc.is_command() {
                if hc
                    .command
                    .as_ref()
                    .is_none_or(|c| c.value.trim().is_empty())
                {
                    v.push(Violation::new(
                        format!("{path}/command"),
                        "COMMAND health checks need a command",
                    ));
                }
            } else if hc.port.is_none() {
                let idx = hc.port_index.unwrap_or(0);
                if idx < 0 || idx as usize >= ports.len() {
                    v.push(Violation::new(
                        format!("{path}/portIndex"),
                        "Health check port indices must address an element of the ports array or container port mappings.",
                    ));
                }
            }
            for (name, value) in [
                ("intervalSeconds", hc.interval_seconds),
                ("timeoutSeconds", hc.timeout_seconds),
            ] {
                if !value.is_finite() || value <= 0.0 {
                    v.push(Violation::new(
                        format!("{path}/{name}"),
                        format!("got {value}, expected more than 0"),
                    ));
                }
            }
            for (name, value) in [
                ("gracePeriodSeconds", hc.grace_period_seconds),
                ("delaySeconds", hc.delay_seconds),
            ] {
                if !value.is_finite() || value < 0.0 {
                    v.push(Violation::new(
                        format!("{path}/{name}"),
                        format!("got {value}, expected 0 or more"),
                    ));
                }
            }
            if hc.max_consecutive_failures < 0 {
                v.push(Violation::new(
                    format!("{path}/maxConsecutiveFailures"),
                    format!("got {}, expected 0 or more", hc.max_consecutive_failures),
                ));
            }
        }
    }

    /// Environment, dependencies and the kill grace period.
    fn validate_env_and_more(&self, v: &mut Vec<Violation>) {
        for (k, value) in &self.env {
            let ok = value.is_string()
                || value
                    .as_object()
                    .is_some_and(|o| o.get("secret").is_some_and(Value::is_string));
            if !ok {
                v.push(Violation::new(
                    format!("/env({k})"),
                    "must be a string or a secret reference",
                ));
            }
        }
        for (i, d) in self.dependencies.iter().enumerate() {
            if !valid_path_id(d) {
                v.push(Violation::new(
                    format!("/dependencies({i})"),
                    "is not a valid path",
                ));
            }
        }
        if let Some(g) = self.task_kill_grace_period_seconds {
            if !g.is_finite() || g < 0.0 {
                v.push(Violation::new(
                    "/taskKillGracePeriodSeconds",
                    format!("got {g}, expected 0 or more"),
                ));
            }
        }
    }
}

/// Best-effort JSON path for a serde type error: the first top-level key the error
/// message names (`invalid type: ... at line` does not carry the field, so look for a
/// field whose type cannot be right).
fn type_error_path(value: &Value, message: &str) -> String {
    let Some(obj) = value.as_object() else {
        return String::new();
    };
    let numeric = [
        "cpus",
        "mem",
        "disk",
        "gpus",
        "instances",
        "backoffSeconds",
        "backoffFactor",
        "maxLaunchDelaySeconds",
        "taskKillGracePeriodSeconds",
    ];
    for key in numeric {
        if obj.get(key).is_some_and(|v| !v.is_number() && !v.is_null()) {
            return format!("/{key}");
        }
    }
    for key in ["id", "cmd", "user", "killSelection"] {
        if obj.get(key).is_some_and(|v| !v.is_string() && !v.is_null()) {
            return format!("/{key}");
        }
    }
    if message.contains("missing field") {
        return "/".into();
    }
    String::new()
}

/// Overlays the top-level keys of `patch` on `base` (Marathon's partial update).
pub fn merge(base: &Value, patch: &Value) -> Value {
    let mut out = base.clone();
    if let (Some(o), Some(p)) = (out.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests;
