//! `/v2/apps` and `/v2/tasks`: list, create, update, delete, restart, scale and
//! kill, each a call on the actor.

use super::*;

pub(super) async fn list_apps(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let id = param(&q, "id").map(str::to_string);
    let cmd = param(&q, "cmd").map(str::to_string);
    let label = param(&q, "label").map(str::to_string);
    let embed = Embed::counts_and_deployments().with(&params(&q, "embed"));
    let apps = s
        .handle
        .call(move |core, now| {
            core.filter_apps(id.as_deref(), cmd.as_deref(), label.as_deref())
                .iter()
                .map(|id| core.app_json(id, &embed, now))
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(json!({ "apps": apps })).into_response())
}

pub(super) async fn create_app(
    State(s): State<AppState>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value = parse_body(&body)?;
    let force = flag(&q, "force", false);
    let (app, result) = s
        .handle
        .call(move |core, now| core.create_app(&value, force, now))
        .await??;
    let location = app["id"].as_str().unwrap_or_default().to_string();
    let mut response = (StatusCode::CREATED, Json(app)).into_response();
    if let Ok(v) = HeaderValue::from_str(&result.deployment_id) {
        response.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

pub(super) async fn put_many(
    s: AppState,
    q: Params,
    body: Bytes,
    partial: bool,
) -> Result<Response, ApiError> {
    let value = parse_body(&body)?;
    let Some(items) = value.as_array().cloned() else {
        return Err(ApiError::BadRequest {
            message: "Invalid JSON".into(),
            details: vec![crate::model::Violation::new("/", "error.expected.jsarray")],
        });
    };
    let force = flag(&q, "force", false);
    let partial = flag(&q, "partialUpdate", partial);
    let result = s
        .handle
        .call(move |core, now| core.update_apps(&items, partial, force, now))
        .await??;
    Ok(deployment_response(StatusCode::OK, &result, None))
}

pub(super) async fn put_apps(
    State(s): State<AppState>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    put_many(s, q, body, true).await
}

pub(super) async fn patch_apps(
    State(s): State<AppState>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    put_many(s, q, body, true).await
}

/// What a path under `/v2/apps/` addresses.
#[derive(Debug, PartialEq)]
pub(super) enum AppPath {
    App(String),
    Tasks(String),
    Task(String, String),
    Versions(String),
    Version(String, String),
    Restart(String),
}

pub(super) fn app_path(rest: &str) -> AppPath {
    let rest = rest.trim_end_matches('/');
    if let Some(id) = rest.strip_suffix("/restart") {
        return AppPath::Restart(normalize_id(id));
    }
    if let Some(id) = rest.strip_suffix("/tasks") {
        return AppPath::Tasks(normalize_id(id));
    }
    if let Some(id) = rest.strip_suffix("/versions") {
        return AppPath::Versions(normalize_id(id));
    }
    if let Some((id, task)) = rest.rsplit_once("/tasks/") {
        if !task.contains('/') {
            return AppPath::Task(normalize_id(id), task.to_string());
        }
    }
    if let Some((id, v)) = rest.rsplit_once("/versions/") {
        if !v.contains('/') {
            return AppPath::Version(normalize_id(id), v.to_string());
        }
    }
    AppPath::App(normalize_id(rest))
}

pub(super) fn no_app(id: &str) -> ApiError {
    ApiError::NotFound(format!("App '{id}' does not exist"))
}

pub(super) async fn app_get(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let embed_values = params(&q, "embed");
    match app_path(&rest) {
        AppPath::App(id) => {
            let embed = Embed {
                counts: true,
                deployments: true,
                tasks: true,
                last_task_failure: true,
            }
            .with(&embed_values);
            let app = s
                .handle
                .call(move |core, now| {
                    if core.apps.contains_key(&id) {
                        Ok(core.app_json(&id, &embed, now))
                    } else {
                        Err(no_app(&id))
                    }
                })
                .await??;
            Ok(Json(json!({ "app": app })).into_response())
        }
        AppPath::Tasks(id) => {
            let tasks = s
                .handle
                .call(move |core, _| {
                    if core.apps.contains_key(&id) {
                        Ok(core.tasks_json(Some(&id), None))
                    } else {
                        Err(no_app(&id))
                    }
                })
                .await??;
            Ok(Json(json!({ "tasks": tasks })).into_response())
        }
        AppPath::Task(id, task) => {
            let t = s
                .handle
                .call(move |core, _| match core.instances.get(&task) {
                    Some(i) if i.app_id == id => Ok(core.task_json(i)),
                    _ => Err(ApiError::NotFound(format!("Task '{task}' does not exist"))),
                })
                .await??;
            Ok(Json(json!({ "task": t })).into_response())
        }
        AppPath::Versions(id) => {
            let versions = s
                .handle
                .call(move |core, _| {
                    core.apps
                        .get(&id)
                        .map(|r| r.versions.keys().rev().cloned().collect::<Vec<_>>())
                        .ok_or_else(|| no_app(&id))
                })
                .await??;
            Ok(Json(json!({ "versions": versions })).into_response())
        }
        AppPath::Version(id, version) => {
            let app = s
                .handle
                .call(move |core, _| {
                    let record = core.apps.get(&id).ok_or_else(|| no_app(&id))?;
                    record
                        .versions
                        .get(&version)
                        .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
                        .ok_or_else(|| {
                            ApiError::NotFound(format!(
                                "Version {version} of app '{id}' does not exist"
                            ))
                        })
                })
                .await??;
            Ok(Json(app).into_response())
        }
        AppPath::Restart(_) => Err(ApiError::NotFound("use POST to restart".into())),
    }
}

pub(super) async fn update(
    s: AppState,
    rest: String,
    q: Params,
    body: Bytes,
    patch: bool,
) -> Result<Response, ApiError> {
    let AppPath::App(id) = app_path(&rest) else {
        return Err(ApiError::NotFound(format!(
            "no such resource: /v2/apps/{rest}"
        )));
    };
    let value = parse_body(&body)?;
    let force = flag(&q, "force", false);
    let partial = patch || flag(&q, "partialUpdate", true);
    let (created, result) = s
        .handle
        .call(move |core, now| {
            if patch && !core.apps.contains_key(&id) {
                return Err(no_app(&id));
            }
            core.update_app(&id, &value, partial, force, now)
                .map(|(c, r)| (c.then_some(id), r))
        })
        .await??;
    Ok(match created {
        Some(id) => deployment_response(StatusCode::CREATED, &result, Some(&id)),
        None => deployment_response(StatusCode::OK, &result, None),
    })
}

pub(super) async fn app_put(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(s, rest, q, body, false).await
}

pub(super) async fn app_patch(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(s, rest, q, body, true).await
}

pub(super) async fn app_delete(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let force = flag(&q, "force", false);
    let scale = flag(&q, "scale", false);
    match app_path(&rest) {
        AppPath::App(id) => {
            let r = s
                .handle
                .call(move |core, now| core.delete_app(&id, force, now))
                .await??;
            Ok(deployment_response(StatusCode::OK, &r, None))
        }
        AppPath::Task(id, task) => {
            let (killed, r) = s
                .handle
                .call(move |core, now| {
                    if !core.apps.contains_key(&id) {
                        return Err(no_app(&id));
                    }
                    if core.instances.get(&task).is_none_or(|i| i.app_id != id) {
                        return Err(ApiError::NotFound(format!("Task '{task}' does not exist")));
                    }
                    core.kill_tasks(&[task], scale, force, now)
                })
                .await??;
            Ok(match r {
                Some(r) => deployment_response(StatusCode::OK, &r, None),
                None => Json(json!({"task": killed.into_iter().next()})).into_response(),
            })
        }
        AppPath::Tasks(id) => {
            let host = param(&q, "host").map(str::to_string);
            let (killed, r) = s
                .handle
                .call(move |core, now| {
                    if !core.apps.contains_key(&id) {
                        return Err(no_app(&id));
                    }
                    let ids: Vec<String> = core
                        .instances
                        .values()
                        .filter(|i| i.app_id == id)
                        .filter(|i| host.as_deref().is_none_or(|h| i.placement.hostname == h))
                        .map(|i| i.task_id.clone())
                        .collect();
                    core.kill_tasks(&ids, scale, force, now)
                })
                .await??;
            Ok(match r {
                Some(r) => deployment_response(StatusCode::OK, &r, None),
                None => Json(json!({ "tasks": killed })).into_response(),
            })
        }
        _ => Err(ApiError::NotFound(format!(
            "no such resource: /v2/apps/{rest}"
        ))),
    }
}

pub(super) async fn app_post(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let force = flag(&q, "force", false);
    match app_path(&rest) {
        AppPath::Restart(id) => {
            let r = s
                .handle
                .call(move |core, now| core.restart_app(&id, force, now))
                .await??;
            Ok(deployment_response(StatusCode::OK, &r, None))
        }
        _ => Err(ApiError::NotFound(format!(
            "no such resource: /v2/apps/{rest}"
        ))),
    }
}

// ----------------------------------------------------------------- tasks

pub(super) async fn list_tasks(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let states = params(&q, "status");
    let tasks = s
        .handle
        .call(move |core, _| core.tasks_json(None, Some(&states)))
        .await?;
    Ok(Json(json!({ "tasks": tasks })).into_response())
}

pub(super) async fn delete_tasks(
    State(s): State<AppState>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value = parse_body(&body)?;
    let ids: Vec<String> = value["ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let scale = flag(&q, "scale", false);
    let force = flag(&q, "force", false);
    let r = s
        .handle
        .call(move |core, now| {
            if let Some(bad) = ids.iter().find(|t| !core.instances.contains_key(*t)) {
                return Err(ApiError::BadRequest {
                    message: format!("Invalid task id {bad}"),
                    details: Vec::new(),
                });
            }
            core.kill_tasks(&ids, scale, force, now).map(|(_, r)| r)
        })
        .await??;
    Ok(match r {
        Some(r) => deployment_response(StatusCode::OK, &r, None),
        None => Json(json!({})).into_response(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_paths() {
        assert_eq!(app_path("prod/web"), AppPath::App("/prod/web".into()));
        assert_eq!(
            app_path("prod/web/tasks"),
            AppPath::Tasks("/prod/web".into())
        );
        assert_eq!(
            app_path("web/tasks/web.123"),
            AppPath::Task("/web".into(), "web.123".into())
        );
        assert_eq!(app_path("web/restart"), AppPath::Restart("/web".into()));
        assert_eq!(app_path("web/versions"), AppPath::Versions("/web".into()));
        assert_eq!(
            app_path("web/versions/2020-01-01T00:00:00.000Z"),
            AppPath::Version("/web".into(), "2020-01-01T00:00:00.000Z".into())
        );
    }
}
