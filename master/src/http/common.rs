//! HTTP pieces shared by the master's endpoints (the JSON API, the v1
//! scheduler API and the v1 operator API): plain-text errors, redirects to
//! the leader and the JSON body check. Kept here so the handler modules
//! never import one another.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::watch;

use crate::view::Snapshot;

/// On a master that does not lead, the response for endpoints that need the
/// leader's view: 307 to the same path on the leader (503 if none), as Mesos.
pub(crate) fn leader_redirect(
    snapshot: &watch::Receiver<Snapshot>,
    path: &str,
) -> Option<Response> {
    let snap = snapshot.borrow();
    if snap.leading {
        return None;
    }
    Some(match &snap.leader {
        Some(l) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("//{l}{path}"))],
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no leading master is elected",
        )
            .into_response(),
    })
}

/// Where a non-leading master sends v1 API clients: `Some("host:port")` of
/// the leader when this master is a standby that knows it. (A standby that
/// knows no leader lets the call through; the actor answers NotLeader,
/// which becomes a 503.)
pub(crate) fn standby_leader(snapshot: &watch::Receiver<Snapshot>) -> Option<String> {
    let snap = snapshot.borrow();
    if snap.leading {
        None
    } else {
        snap.leader.clone()
    }
}

/// A `text/plain` response, as Mesos answers errors.
pub(crate) fn plain(code: StatusCode, msg: impl Into<String>) -> Response {
    let msg = msg.into();
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        msg,
    )
        .into_response()
}

/// 307 to the leader, as Mesos answers on a standby master.
pub(crate) fn redirect(leader: &str, path: &str) -> Response {
    let location = format!("//{leader}{path}");
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, v)]).into_response(),
        Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "no leading master"),
    }
}

/// Checks `Content-Type` is JSON (400 when missing, 415 otherwise) and
/// parses the body; the error is the response to send.
pub(crate) fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Box<Response>> {
    json_body_inner(headers, body).map_err(|(code, msg)| Box::new(plain(code, msg)))
}

fn json_body_inner(headers: &HeaderMap, body: &[u8]) -> Result<Value, (StatusCode, String)> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "Expecting 'Content-Type' to be present".into(),
        ));
    };
    let media = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/json" {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Unsupported Content-Type '{media}'; Mezzo accepts application/json only"),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("Failed to parse body into JSON: {e}"),
        )
    })
}
