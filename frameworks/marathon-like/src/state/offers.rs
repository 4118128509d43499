//! Offers: matching them against the launch queue (constraints, resources, ports),
//! building `TaskInfo`s, and the subscription events around them.

use super::*;

impl Core {
    /// The driver subscribed (first time or again): remember the id and reconcile.
    pub fn on_subscribed(&mut self, framework_id: &str, now: DateTime<Utc>) {
        if self.framework_id.as_deref() != Some(framework_id) {
            self.framework_id = Some(framework_id.to_string());
            self.dirty.framework_id = true;
        }
        self.connected = true;
        self.offers_wanted = None;
        self.reconcile();
        // Agents may still be re-registering (after a master failover): a
        // task the master learns of later is caught by the next round.
        self.next_reconcile = Some(secs(now) + self.settings.reconciliation_initial_delay);
    }

    /// Explicit reconciliation of the tasks this framework knows, then
    /// implicit: the master answers with every task it knows, and updates
    /// for tasks unknown here kill them (`on_update`).
    fn reconcile(&mut self) {
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

    /// Reconciles again when the periodic round is due.
    pub(super) fn reconcile_periodically(&mut self, now: DateTime<Utc>) {
        let now = secs(now);
        match self.next_reconcile {
            Some(due) if self.connected && now >= due => {
                self.reconcile();
                self.next_reconcile = Some(now + self.settings.reconciliation_interval.max(1.0));
            }
            _ => {}
        }
    }

    /// The subscription was lost.
    pub fn on_disconnected(&mut self) {
        self.connected = false;
    }

    /// Why `app` cannot take (more of) this offer, if it cannot.
    pub(super) fn misfit(
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

    pub(super) fn task_info(
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
        let health_check = health_check_of(app, ports);
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
                                self.ids.next_id()
                            );
                            let info =
                                self.task_info(&app, &task_id, &offer.agent_id, &res, &ports);
                            let instance = new_instance(
                                &app,
                                &task_id,
                                &offer.agent_id,
                                &placement,
                                ports,
                                now,
                            );
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
            self.answer_offer(&offer.id, tasks, min_wait);
        }
    }

    /// Launches `tasks` on the offer, or declines it (for as long as the shortest
    /// launch delay that kept an app off it, within 0.5–5 s).
    fn answer_offer(&mut self, offer_id: &str, tasks: Vec<v1::TaskInfo>, min_wait: Option<f64>) {
        if tasks.is_empty() {
            let refuse = min_wait.map(|w| w.clamp(0.5, 5.0)).unwrap_or(5.0);
            self.effects.push(Effect::Decline {
                offer_ids: vec![offer_id.to_string()],
                refuse_seconds: refuse,
            });
        } else {
            self.effects.push(Effect::Launch {
                offer_id: offer_id.to_string(),
                tasks,
                // The unused rest comes back within a second, so the queue's
                // next instances need not wait for the master's default filter.
                refuse_seconds: Some(1.0),
            });
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
}

/// The app's first health check as the executor runs it, on the task's `ports`.
fn health_check_of(app: &App, ports: &[u64]) -> Option<v1::HealthCheck> {
    app.health_checks.first().map(|hc| {
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
    })
}

/// A task just launched from an offer, as the core tracks it.
fn new_instance(
    app: &App,
    task_id: &str,
    agent_id: &str,
    placement: &Placement,
    ports: Vec<u64>,
    now: DateTime<Utc>,
) -> Instance {
    Instance {
        task_id: task_id.to_string(),
        app_id: app.id.clone(),
        agent_id: agent_id.to_string(),
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
    }
}
