//! Status updates: task state, health, unreachable agents, failures and the
//! launch backoff they cause.

use super::*;

impl Core {
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
        let health_changed = if state == v1::TaskState::TaskRunning {
            record_health(inst, status, now)
        } else {
            None
        };
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
            self.on_terminal(&inst, state, &name, status, now);
        }
    }

    /// A task ended: it is forgotten; a failure (not a kill of ours, except for
    /// health) delays the app's next launch and is kept as its last failure.
    fn on_terminal(
        &mut self,
        inst: &Instance,
        state: v1::TaskState,
        name: &str,
        status: &v1::TaskStatus,
        now: DateTime<Utc>,
    ) {
        let (task_id, app_id) = (inst.task_id.as_str(), inst.app_id.as_str());
        self.instances.remove(task_id);
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
            if let Some(app) = self.apps.get(app_id).map(|r| r.app.clone()) {
                // Backoff applies to the version that failed only.
                if inst.config_version == app.config_version() {
                    let policy = BackoffPolicy {
                        seconds: app.backoff_seconds,
                        factor: app.backoff_factor,
                        max: app.max_launch_delay_seconds,
                    };
                    let d =
                        backoff::on_failure(self.delays.get(app_id).copied(), policy, secs(now));
                    info!(app.id = %app_id, delay = d.seconds, "launch delayed after task failure");
                    self.delays.insert(app_id.to_string(), d);
                }
            }
            let message = if unhealthy_kill {
                "Task was killed since health check failed".to_string()
            } else {
                status.message.clone()
            };
            self.failures.insert(
                app_id.to_string(),
                TaskFailure {
                    app_id: app_id.to_string(),
                    host: inst.placement.hostname.clone(),
                    message,
                    state: name.to_string(),
                    task_id: task_id.to_string(),
                    timestamp: now,
                    version: inst.version.clone(),
                    slave_id: inst.agent_id.clone(),
                },
            );
        }
    }

    /// Forgets tasks unreachable for longer than their app's `expungeAfterSeconds`:
    /// should one come back, it is an unknown task and is killed.
    pub(super) fn expunge_unreachable(&mut self, now: DateTime<Utc>) {
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
}

/// Records a health report of a running task; `Some(alive)` when its health changed.
fn record_health(inst: &mut Instance, status: &v1::TaskStatus, now: DateTime<Utc>) -> Option<bool> {
    let mut changed = None;
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
            changed = Some(h);
        }
        inst.healthy = Some(h);
    }
    changed
}
