//! Mesos' v1 operator API on the master (`POST /api/v1`): the read-only
//! calls GET_HEALTH, GET_VERSION, GET_MASTER, GET_AGENTS, GET_FRAMEWORKS,
//! GET_TASKS, GET_EXECUTORS and GET_STATE, in the JSON shapes of
//! `mesos.v1.master.Response`.
//!
//! Answers are rendered from the typed snapshot the actor publishes
//! ([`crate::view::operator_response`], unit tested below); nothing here
//! asks the actor.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tokio::sync::watch;

use crate::http::common::{json_body, redirect, standby_leader};
use crate::view::{operator_response, Snapshot};

/// The routes of the v1 operator API (also under `/master`, as Mesos
/// serves it).
pub(crate) fn router(snapshot: watch::Receiver<Snapshot>) -> Router {
    Router::new()
        .route("/api/v1", post(operator))
        .route("/api/v1/", post(operator))
        .route("/master/api/v1", post(operator))
        .with_state(snapshot)
}

async fn operator(
    State(snapshot): State<watch::Receiver<Snapshot>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(leader) = standby_leader(&snapshot) {
        return redirect(&leader, "/api/v1");
    }
    let value = match json_body(&headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    // Clone the snapshot (O(1)) so rendering never holds the watch lock.
    let snap = snapshot.borrow().clone();
    match operator_response(&value, &snap) {
        Ok(v) => Json(v).into_response(),
        Err(msg) => (StatusCode::BAD_REQUEST, msg).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use mezzo_proto::v1;
    use serde_json::{json, Value};

    use crate::config::MasterConfig;
    use crate::sim::{task, Sim, SimFramework};
    use crate::view::{operator_response, Snapshot};

    /// One agent (attributes rack:r1, level:3) registered at wall time
    /// 1_000_001.5; framework "fw" (PARTITION_AWARE) with a running task
    /// t1 (labelled a=b), a finished task t0 and an outstanding offer.
    fn cluster() -> (Snapshot, String) {
        let mut sim = Sim::new(MasterConfig::default(), 3);
        sim.now = std::time::Duration::from_millis(1500);
        let aid = sim
            .add_agent("a", "cpus:2;mem:1024;ports:[31000-31010]")
            .unwrap();
        sim.frameworks.insert(
            "fw".into(),
            SimFramework {
                info: v1::FrameworkInfo {
                    name: "fw".into(),
                    user: "root".into(),
                    roles: vec!["*".into()],
                    capabilities: vec!["PARTITION_AWARE".into()],
                    ..Default::default()
                },
                auto_ack: true,
                ..Default::default()
            },
        );
        let fid = sim.subscribe("fw", "*").unwrap();
        sim.allocate();
        let offer = sim.frameworks["fw"].offers.keys().next().cloned().unwrap();
        let mut t1 = task("t1", "cpus:0.5;mem:64");
        t1.labels = vec![v1::Label {
            key: "a".into(),
            value: "b".into(),
        }];
        sim.launch("fw", &offer, vec![task("t0", "cpus:0.1"), t1])
            .unwrap();
        sim.agent_update("a", &fid, "t0", v1::TaskState::TaskFinished);
        sim.now += std::time::Duration::from_secs(10);
        sim.allocate();
        let mut snap = Snapshot::of(&sim.master);
        if let Some(a) = snap.agents.get_mut(&aid) {
            a.info.attributes =
                mezzo_proto::resources::parse_attributes("rack:r1;level:3").unwrap();
        }
        (snap, aid)
    }

    fn call(kind: &str) -> Value {
        operator_response(&json!({ "type": kind }), &cluster().0).unwrap()
    }

    #[test]
    fn health_version_master() {
        assert_eq!(
            call("GET_HEALTH"),
            json!({"type": "GET_HEALTH", "get_health": {"healthy": true}})
        );
        assert_eq!(
            call("GET_VERSION")["get_version"]["version_info"]["version"],
            crate::MESOS_COMPAT_VERSION
        );
        let m = call("GET_MASTER");
        assert_eq!(m["get_master"]["master_info"]["address"]["port"], 5050);
        assert_eq!(m["get_master"]["start_time"], 1_000_000.0);
    }

    #[test]
    fn agents_in_v1_shape() {
        let (snap, aid) = cluster();
        let agents = operator_response(&json!({"type": "GET_AGENTS"}), &snap).unwrap();
        let a = &agents["get_agents"]["agents"][0];
        assert_eq!(a["agent_info"]["id"]["value"], aid.as_str());
        assert_eq!(a["active"], true);
        assert_eq!(
            a["registered_time"]["nanoseconds"],
            1_000_001_500_000_000_i64
        );
        assert!(a.get("reregistered_time").is_none());
        let total = a["total_resources"].as_array().unwrap();
        assert_eq!(total.len(), 3, "zero disk/gpus dropped: {total:?}");
        assert!(total.contains(
            &json!({"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}, "role": "*"})
        ));
        assert!(total.contains(&json!({"name": "ports", "type": "RANGES",
            "ranges": {"range": [{"begin": 31000, "end": 31010}]}, "role": "*"})));
        let attrs = a["agent_info"]["attributes"].as_array().unwrap();
        assert!(attrs.contains(&json!({"name": "rack", "type": "TEXT", "text": {"value": "r1"}})));
        assert!(
            attrs.contains(&json!({"name": "level", "type": "SCALAR", "scalar": {"value": 3.0}}))
        );
    }

    #[test]
    fn frameworks_and_tasks_in_v1_shape() {
        let (snap, _) = cluster();
        let fw = snap.frameworks.values().next().unwrap().clone();
        let offer = fw.offers.iter().next().unwrap().clone();
        let call = |kind: &str| operator_response(&json!({ "type": kind }), &snap).unwrap();
        let f = &call("GET_FRAMEWORKS")["get_frameworks"]["frameworks"][0];
        assert_eq!(f["framework_info"]["id"]["value"], fw.id.as_str());
        assert_eq!(
            f["framework_info"]["capabilities"],
            json!([{"type": "PARTITION_AWARE"}])
        );
        assert_eq!(f["connected"], true);
        assert!(f.get("unregistered_time").is_none());
        assert_eq!(f["offers"][0]["id"]["value"], offer.as_str());
        let t = &call("GET_TASKS")["get_tasks"];
        assert_eq!(t["tasks"][0]["task_id"]["value"], "t1");
        assert_eq!(t["tasks"][0]["state"], "TASK_RUNNING");
        assert_eq!(t["tasks"][0]["statuses"][0]["state"], "TASK_STAGING");
        assert_eq!(t["tasks"][0]["statuses"][1]["state"], "TASK_RUNNING");
        assert_eq!(t["tasks"][0]["labels"]["labels"][0]["key"], "a");
        assert_eq!(t["completed_tasks"][0]["task_id"]["value"], "t0");
        let st = &call("GET_STATE")["get_state"];
        assert_eq!(st["get_tasks"], *t);
        assert_eq!(
            st["get_agents"]["agents"][0]["agent_info"]["id"]["value"],
            snap.agents.keys().next().unwrap().as_str()
        );
    }

    #[test]
    fn bad_operator_calls() {
        let st = Snapshot::default();
        assert!(operator_response(&json!({}), &st)
            .unwrap_err()
            .contains("'type'"));
        assert!(operator_response(&json!({"type": "GET_FLAGS"}), &st)
            .unwrap_err()
            .contains("not supported"));
        assert!(operator_response(&json!({"type": 3}), &st).is_err());
    }
}
