//! App changes from the API: create, update (full, partial, by version), delete,
//! restart, kill tasks, reset the launch delay. Each becomes a deployment.

use super::*;

impl Core {
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
    pub(super) fn resolve_update(
        &self,
        id: &str,
        body: &Value,
        partial: bool,
    ) -> Result<App, ApiError> {
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

    pub(super) fn request_kill(&mut self, task_id: &str, reason: &str, now: DateTime<Utc>) {
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
}
