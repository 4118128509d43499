//! Groups: app trees with dependencies, deployed in dependency order, scaled or
//! removed as a whole.

use super::*;

impl Core {
    /// Ids of the apps at or under group `id`.
    pub(super) fn apps_under(&self, id: &str) -> Vec<String> {
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

    /// Collects `(app, group dependencies)` of a group body, ids resolved under `base`.
    pub(super) fn collect_group(
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
}
