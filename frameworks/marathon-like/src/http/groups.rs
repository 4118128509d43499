//! `/v2/groups`: group trees, deployed or removed as a whole.

use super::*;

pub(super) async fn group_get_id(s: AppState, id: String) -> Result<Response, ApiError> {
    let g = s
        .handle
        .call(move |core, now| core.group_json(&id, now))
        .await??;
    Ok(Json(g).into_response())
}

pub(super) async fn group_change(
    s: AppState,
    id: String,
    q: Params,
    body: Bytes,
    create: bool,
) -> Result<Response, ApiError> {
    let value = parse_body(&body)?;
    let force = flag(&q, "force", false);
    let r = s
        .handle
        .call(move |core, now| core.put_group(&id, &value, create, force, now))
        .await??;
    Ok(deployment_response(
        if create {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &r,
        None,
    ))
}

pub(super) async fn group_remove(s: AppState, id: String, q: Params) -> Result<Response, ApiError> {
    let force = flag(&q, "force", false);
    let r = s
        .handle
        .call(move |core, now| core.delete_group(&id, force, now))
        .await??;
    Ok(deployment_response(StatusCode::OK, &r, None))
}

pub(super) async fn group_root_get(State(s): State<AppState>) -> Result<Response, ApiError> {
    group_get_id(s, "/".into()).await
}
pub(super) async fn group_root_post(
    State(s): State<AppState>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    group_change(s, "/".into(), q, body, true).await
}
pub(super) async fn group_root_put(
    State(s): State<AppState>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    group_change(s, "/".into(), q, body, false).await
}
pub(super) async fn group_root_delete(
    State(s): State<AppState>,
    q: Params,
) -> Result<Response, ApiError> {
    group_remove(s, "/".into(), q).await
}
pub(super) async fn group_get(
    State(s): State<AppState>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    group_get_id(s, normalize_id(&rest)).await
}
pub(super) async fn group_post(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    group_change(s, normalize_id(&rest), q, body, true).await
}
pub(super) async fn group_put(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    group_change(s, normalize_id(&rest), q, body, false).await
}
pub(super) async fn group_delete(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    group_remove(s, normalize_id(&rest), q).await
}
