//! Marathon JSON views of the state, rendered on read: apps (with embeds), tasks,
//! groups, the launch queue.

use super::*;

impl Core {
    pub(super) fn group_tree(&self, id: &str, now: DateTime<Utc>) -> Value {
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
