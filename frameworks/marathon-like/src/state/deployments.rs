//! Deployments: turning app changes into a plan of steps (stops, starts, then
//! scale/restart by dependency level), advancing it, cancelling and rolling back.

use super::*;

/// What the changes of one deployment did, for planning its steps.
#[derive(Default)]
struct Applied {
    /// The apps before the change (`None`: did not exist), for rollback.
    original: BTreeMap<String, Option<App>>,
    /// Apps removed.
    stops: Vec<String>,
    /// Apps created.
    starts: Vec<String>,
    /// Apps to scale or restart, with the action.
    later: Vec<(String, &'static str)>,
    /// New definitions by app id.
    targets: BTreeMap<String, App>,
}

impl Core {
    /// Deployments that change `app_id`.
    pub fn deployments_of(&self, app_id: &str) -> Vec<String> {
        self.deployments
            .iter()
            .filter(|d| d.affected_apps.iter().any(|a| a == app_id))
            .map(|d| d.id.clone())
            .collect()
    }

    pub(super) fn locked(ids: &[String]) -> ApiError {
        let first = ids.first().cloned().unwrap_or_default();
        ApiError::Conflict {
            message: format!(
                "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{first}'."
            ),
            deployments: ids.to_vec(),
        }
    }

    pub(super) fn cancel_deployment(&mut self, id: &str, now: DateTime<Utc>) -> Option<Deployment> {
        let pos = self.deployments.iter().position(|d| d.id == id)?;
        let d = self.deployments.remove(pos);
        self.dirty.deployments.insert(d.id.clone());
        let plan = self.plan_json(&d);
        self.event("deployment_failed", json!({"id": d.id, "plan": plan}), now);
        Some(d)
    }

    /// All apps (and groups) `id` depends on, transitively through ancestor groups.
    pub(super) fn dependencies_of(&self, app: &App) -> Vec<String> {
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

    pub(super) fn assign_service_ports(&self, app: &mut App, previous: Option<&App>) {
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
        let mut acc = Applied::default();
        for change in changes {
            self.apply_change(change, &version, now, &mut acc);
        }
        let steps = self.plan_steps(&acc);
        let original = acc.original;
        let deployment = Deployment {
            id: self.ids.next_id(),
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

    pub(super) fn step_json(&self, step: &[Action]) -> Value {
        json!({"actions": step.iter().map(|a| json!({"action": a.action, "app": a.app})).collect::<Vec<_>>()})
    }

    pub(super) fn plan_json(&self, d: &Deployment) -> Value {
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

    /// True when an app must wait: a deployment affects it in a later step.
    pub(super) fn held(&self, app_id: &str) -> bool {
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

    pub(super) fn upgrading(&self, app_id: &str) -> bool {
        self.deployments
            .iter()
            .any(|d| d.affected_apps.iter().any(|a| a == app_id))
    }

    /// Advances every deployment past its completed steps (`done`: which apps'
    /// plans are complete) and retires the finished ones.
    pub(super) fn advance_deployments(
        &mut self,
        done: &BTreeMap<String, bool>,
        now: DateTime<Utc>,
    ) {
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
    }

    /// Applies one change of a deployment to the apps, noting in `acc` what the
    /// plan must do about it.
    fn apply_change(
        &mut self,
        change: Change,
        version: &str,
        now: DateTime<Utc>,
        acc: &mut Applied,
    ) {
        let before = self.apps.get(&change.id).map(|r| r.app.clone());
        acc.original.insert(change.id.clone(), before.clone());
        match change.app {
            None => {
                if self.apps.remove(&change.id).is_some() {
                    acc.stops.push(change.id.clone());
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
                    _ => version.to_string(),
                };
                let config_version = if config_version.is_empty() {
                    version.to_string()
                } else {
                    config_version
                };
                app.version = Some(version.to_string());
                app.version_info = Some(model::VersionInfo {
                    last_scaling_at: version.to_string(),
                    last_config_change_at: config_version.to_string(),
                });
                let action = match &before {
                    None => {
                        acc.starts.push(change.id.clone());
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
                    acc.later.push((change.id.clone(), action));
                }
                let record = self
                    .apps
                    .entry(change.id.clone())
                    .or_insert_with(|| AppRecord {
                        app: app.clone(),
                        versions: BTreeMap::new(),
                    });
                record.app = app.clone();
                record.versions.insert(version.to_string(), app.clone());
                while record.versions.len() > 50 {
                    let Some(first) = record.versions.keys().next().cloned() else {
                        break;
                    };
                    record.versions.remove(&first);
                }
                self.dirty.apps.insert(change.id.clone());
                acc.targets.insert(change.id.clone(), app);
            }
        }
    }

    /// Steps: stops, then starts, then scale/restart by dependency level.
    fn plan_steps(&self, acc: &Applied) -> Vec<Vec<Action>> {
        let (stops, starts, later, targets) = (&acc.stops, &acc.starts, &acc.later, &acc.targets);
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
        steps
    }
}
