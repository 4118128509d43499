//! The master's JSON HTTP API (Mesos-shaped), served on the same port as gRPC.
//! Reads come from the snapshot the actor publishes; nothing here locks state.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;

use crate::actor::Snapshot;

#[derive(Clone)]
struct AppState {
    snapshot: watch::Receiver<Snapshot>,
}

pub(crate) fn router(snapshot: watch::Receiver<Snapshot>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/master/health", get(health))
        .route("/version", get(version))
        .route("/master/state", get(state))
        .route("/master/state.json", get(state))
        .route("/state", get(state))
        .route("/metrics/snapshot", get(metrics))
        .route("/master/redirect", get(redirect))
        .route("/redirect", get(redirect))
        .with_state(AppState { snapshot })
}

async fn health() -> StatusCode {
    StatusCode::OK
}

/// pymesos and other Mesos clients read `version` to pick the API flavour.
async fn version() -> Json<serde_json::Value> {
    Json(json!({
        "version": crate::MESOS_COMPAT_VERSION,
        "mezzo_version": env!("CARGO_PKG_VERSION"),
        "build_user": "mezzo",
    }))
}

async fn state(State(s): State<AppState>, uri: axum::http::Uri) -> Response {
    if let Some(r) = leader_redirect(&s.snapshot, uri.path()) {
        return r;
    }
    let snap = s.snapshot.borrow().state.clone();
    Json(snap.as_ref().clone()).into_response()
}

/// On a master that does not lead, the response for endpoints that need the
/// leader's view: 307 to the same path on the leader (503 if none), as Mesos.
pub(crate) fn leader_redirect(snapshot: &watch::Receiver<Snapshot>, path: &str) -> Option<Response> {
    let snap = snapshot.borrow();
    if snap.leading {
        return None;
    }
    Some(match &snap.leader {
        Some(l) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(axum::http::header::LOCATION, format!("//{l}{path}"))],
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no leading master is elected").into_response(),
    })
}

async fn metrics(State(s): State<AppState>) -> Response {
    let snap = s.snapshot.borrow().metrics.clone();
    Json(snap.as_ref().clone()).into_response()
}

/// 307 to the leading master's `/master` (Mesos), 503 when none is known.
async fn redirect(State(s): State<AppState>) -> Response {
    let leader = s.snapshot.borrow().leader.clone();
    match leader {
        Some(l) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(axum::http::header::LOCATION, format!("//{l}/master"))],
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no leading master is elected",
        )
            .into_response(),
    }
}
