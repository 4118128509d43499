//! The planning tick: every app planned, kills issued, the queue refreshed,
//! deployments advanced, stuck kills retried, offers revived or suppressed.

use super::*;

impl Core {
    /// Plans every app, issues kills, refreshes the queue, advances deployments,
    /// re-kills stuck tasks and decides about offers.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        self.expunge_unreachable(now);
        // Every app with a definition or with tasks.
        let mut app_ids: BTreeSet<String> = self.apps.keys().cloned().collect();
        app_ids.extend(self.instances.values().map(|i| i.app_id.clone()));
        let mut done: BTreeMap<String, bool> = BTreeMap::new();
        let mut queue: BTreeMap<String, usize> = BTreeMap::new();
        for app_id in &app_ids {
            self.plan_app(app_id, now, &mut done, &mut queue);
        }
        self.refresh_queue(queue, now);
        self.advance_deployments(&done, now);
        self.retry_kills(now);
        self.reconcile_periodically(now);
        self.want_offers();
    }

    /// Plans one app (`done`: its plan is complete; `queue`: how many to launch).
    fn plan_app(
        &mut self,
        app_id: &String,
        now: DateTime<Utc>,
        done: &mut BTreeMap<String, bool>,
        queue: &mut BTreeMap<String, usize>,
    ) {
        let now_s = secs(now);
        let app = self.apps.get(app_id).map(|r| r.app.clone());
        if app.is_some() && self.held(app_id) {
            done.insert(app_id.clone(), false);
            return;
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

    /// The queue mirrors the plans; statistics survive while an app keeps waiting.
    fn refresh_queue(&mut self, queue: BTreeMap<String, usize>, now: DateTime<Utc>) {
        self.queue.retain(|id, _| queue.contains_key(id));
        for (id, count) in &queue {
            let entry = self.queue.entry(id.clone()).or_insert_with(|| QueueEntry {
                count: 0,
                since: now,
                stats: OfferStats::default(),
            });
            entry.count = *count;
        }
    }

    /// Kills that did not take effect are repeated.
    fn retry_kills(&mut self, now: DateTime<Utc>) {
        let now_s = secs(now);
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
    }

    /// Offers: revive when something (more) waits, suppress when nothing does.
    fn want_offers(&mut self) {
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
