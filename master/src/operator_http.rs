//! Mesos' v1 operator API on the master (`POST /api/v1`): the read-only
//! calls GET_HEALTH, GET_VERSION, GET_MASTER, GET_AGENTS, GET_FRAMEWORKS,
//! GET_TASKS, GET_EXECUTORS and GET_STATE, in the JSON shapes of
//! `mesos.v1.master.Response`.
//!
//! Everything is built from the `/master/state` document the actor publishes
//! (pure functions of that JSON, unit tested below); nothing here asks the
//! actor.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use mezzo_proto::Resources;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::http::common::{json_body, redirect, standby_leader};
use crate::view::{resource_json, Snapshot};

/// The calls answered; anything else in `mesos.v1.master.Call.Type` is 400.
const SUPPORTED: &[&str] = &[
    "GET_HEALTH",
    "GET_VERSION",
    "GET_MASTER",
    "GET_AGENTS",
    "GET_FRAMEWORKS",
    "GET_TASKS",
    "GET_EXECUTORS",
    "GET_STATE",
];

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
    let snap = snapshot.borrow().clone();
    let state = snap.state();
    match operator_response(&value, &state) {
        Ok(v) => Json(v).into_response(),
        Err(msg) => (StatusCode::BAD_REQUEST, msg).into_response(),
    }
}

/// Answers one operator call from the state document.
pub(crate) fn operator_response(call: &Value, state: &Value) -> Result<Value, String> {
    let kind = match call.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(format!("'type' must be a string, not {other}")),
        None => return Err("Expecting 'type' to be present".into()),
    };
    let body = match kind {
        "GET_HEALTH" => json!({"healthy": true}),
        "GET_VERSION" => json!({"version_info": {
            "version": crate::MESOS_COMPAT_VERSION,
            "build_user": "mezzo",
            "build_date": "",
            "build_time": 0,
        }}),
        "GET_MASTER" => json!({
            "master_info": state.get("leader_info").cloned().unwrap_or(Value::Null),
            "start_time": state.get("start_time").cloned().unwrap_or(json!(0)),
            "elected_time": state.get("elected_time").cloned().unwrap_or(json!(0)),
        }),
        "GET_AGENTS" => get_agents(state),
        "GET_FRAMEWORKS" => get_frameworks(state),
        "GET_TASKS" => get_tasks(state),
        "GET_EXECUTORS" => json!({"executors": [], "orphan_executors": []}),
        "GET_STATE" => json!({
            "get_tasks": get_tasks(state),
            "get_executors": {"executors": []},
            "get_frameworks": get_frameworks(state),
            "get_agents": get_agents(state),
        }),
        other => {
            return Err(format!(
                "Operator call {other} is not supported by Mezzo; supported: {}",
                SUPPORTED.join(", ")
            ))
        }
    };
    let field = kind.to_ascii_lowercase();
    Ok(json!({"type": kind, field: body}))
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn id(v: &str) -> Value {
    json!({ "value": v })
}

/// Seconds (as in `/master/state`) to a `TimeInfo`.
fn time_info(secs: &Value) -> Option<Value> {
    let t = secs.as_f64().filter(|t| *t > 0.0)?;
    Some(json!({"nanoseconds": (t * 1e9) as i64}))
}

/// The flat `{"cpus": 2, "ports": "[31000-32000]"}` form back to a v1
/// resource list (zero scalars dropped).
fn resources_list(flat: Option<&Value>) -> Vec<Value> {
    let Some(Value::Object(m)) = flat else {
        return Vec::new();
    };
    let mut text = Vec::new();
    for (k, v) in m {
        match v {
            Value::Number(n) if n.as_f64().is_some_and(|x| x > 0.0) => {
                text.push(format!("{k}:{n}"))
            }
            Value::String(r) if r.starts_with('[') && r != "[]" => text.push(format!("{k}:{r}")),
            _ => {}
        }
    }
    Resources::parse(&text.join(";"))
        .map(|r| {
            r.to_proto()
                .iter()
                .map(|x| resource_json(x, None))
                .collect()
        })
        .unwrap_or_default()
}

fn attributes_list(attrs: Option<&Value>) -> Vec<Value> {
    let Some(Value::Object(m)) = attrs else {
        return Vec::new();
    };
    m.iter()
        .map(|(k, v)| match v {
            Value::Number(n) => json!({"name": k, "type": "SCALAR", "scalar": {"value": n}}),
            other => json!({"name": k, "type": "TEXT",
                "text": {"value": other.as_str().unwrap_or_default()}}),
        })
        .collect()
}

fn get_agents(state: &Value) -> Value {
    let agents: Vec<Value> = arr(state, "slaves")
        .iter()
        .map(|a| {
            let mut m = Map::new();
            m.insert(
                "agent_info".into(),
                json!({
                    "hostname": s(a, "hostname"),
                    "port": a.get("port").cloned().unwrap_or(json!(5051)),
                    "id": id(s(a, "id")),
                    "resources": resources_list(a.get("resources")),
                    "attributes": attributes_list(a.get("attributes")),
                }),
            );
            m.insert(
                "active".into(),
                json!(a.get("active").and_then(Value::as_bool).unwrap_or(false)),
            );
            m.insert("deactivated".into(), json!(false));
            m.insert("pid".into(), json!(s(a, "pid")));
            m.insert("version".into(), json!(crate::MESOS_COMPAT_VERSION));
            if let Some(t) = a.get("registered_time").and_then(time_info) {
                m.insert("registered_time".into(), t);
            }
            if let Some(t) = a.get("reregistered_time").and_then(time_info) {
                m.insert("reregistered_time".into(), t);
            }
            m.insert(
                "total_resources".into(),
                json!(resources_list(a.get("resources"))),
            );
            m.insert(
                "allocated_resources".into(),
                json!(resources_list(a.get("used_resources"))),
            );
            m.insert(
                "offered_resources".into(),
                json!(resources_list(a.get("offered_resources"))),
            );
            Value::Object(m)
        })
        .collect();
    json!({"agents": agents, "recovered_agents": []})
}

fn framework_json(f: &Value) -> Value {
    let mut info = Map::new();
    info.insert("id".into(), id(s(f, "id")));
    info.insert("name".into(), json!(s(f, "name")));
    info.insert("user".into(), json!(s(f, "user")));
    for k in ["hostname", "principal", "webui_url"] {
        if !s(f, k).is_empty() {
            info.insert(k.into(), json!(s(f, k)));
        }
    }
    if let Some(r) = f.get("roles") {
        info.insert("roles".into(), r.clone());
    }
    info.insert(
        "failover_timeout".into(),
        f.get("failover_timeout").cloned().unwrap_or(json!(0)),
    );
    info.insert(
        "checkpoint".into(),
        f.get("checkpoint").cloned().unwrap_or(json!(false)),
    );
    let caps: Vec<Value> = arr(f, "capabilities")
        .iter()
        .filter_map(Value::as_str)
        .map(|c| json!({"type": c}))
        .collect();
    info.insert("capabilities".into(), json!(caps));
    let mut m = Map::new();
    m.insert("framework_info".into(), Value::Object(info));
    let connected = f.get("connected").and_then(Value::as_bool).unwrap_or(false);
    m.insert(
        "active".into(),
        json!(f.get("active").and_then(Value::as_bool).unwrap_or(false)),
    );
    m.insert("connected".into(), json!(connected));
    m.insert("recovered".into(), json!(false));
    if let Some(t) = f.get("registered_time").and_then(time_info) {
        m.insert("registered_time".into(), t);
    }
    if let Some(t) = f.get("unregistered_time").and_then(time_info) {
        m.insert("unregistered_time".into(), t);
    }
    let offers: Vec<Value> = arr(f, "offers")
        .iter()
        .map(|o| {
            json!({
                "id": id(s(o, "id")),
                "framework_id": id(s(o, "framework_id")),
                "agent_id": id(s(o, "agent_id")),
                "resources": resources_list(o.get("resources")),
            })
        })
        .collect();
    m.insert("offers".into(), json!(offers));
    m.insert(
        "allocated_resources".into(),
        json!(resources_list(f.get("used_resources"))),
    );
    m.insert(
        "offered_resources".into(),
        json!(resources_list(f.get("offered_resources"))),
    );
    Value::Object(m)
}

fn get_frameworks(state: &Value) -> Value {
    json!({
        "frameworks": arr(state, "frameworks").iter().map(framework_json).collect::<Vec<_>>(),
        "completed_frameworks": arr(state, "completed_frameworks").iter().map(framework_json).collect::<Vec<_>>(),
        "recovered_frameworks": [],
    })
}

fn task_json(t: &Value) -> Value {
    let task_id = s(t, "id");
    let statuses: Vec<Value> = arr(t, "statuses")
        .iter()
        .map(|st| {
            json!({
                "task_id": id(task_id),
                "state": s(st, "state"),
                "timestamp": st.get("timestamp").cloned().unwrap_or(json!(0)),
            })
        })
        .collect();
    let labels: Vec<Value> = arr(t, "labels").to_vec();
    json!({
        "name": s(t, "name"),
        "task_id": id(task_id),
        "framework_id": id(s(t, "framework_id")),
        "executor_id": id(task_id),
        "agent_id": id(s(t, "agent_id")),
        "state": s(t, "state"),
        "resources": resources_list(t.get("resources")),
        "statuses": statuses,
        "labels": {"labels": labels},
    })
}

fn get_tasks(state: &Value) -> Value {
    let mut tasks = Vec::new();
    let mut unreachable = Vec::new();
    let mut completed = Vec::new();
    for f in arr(state, "frameworks")
        .iter()
        .chain(arr(state, "completed_frameworks"))
    {
        tasks.extend(arr(f, "tasks").iter().map(task_json));
        unreachable.extend(arr(f, "unreachable_tasks").iter().map(task_json));
        completed.extend(arr(f, "completed_tasks").iter().map(task_json));
    }
    json!({
        "pending_tasks": [],
        "tasks": tasks,
        "unreachable_tasks": unreachable,
        "completed_tasks": completed,
        "orphan_tasks": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Value {
        json!({
            "id": "m1", "start_time": 100.0, "elected_time": 100.0,
            "leader_info": {"id": "m1", "ip": 16777343, "port": 5050, "hostname": "h",
                            "address": {"hostname": "h", "ip": "127.0.0.1", "port": 5050}},
            "slaves": [{
                "id": "m1-S0", "hostname": "127.0.0.1", "port": 5051, "pid": "slave(1)@127.0.0.1:5051",
                "attributes": {"rack": "r1", "level": 3.0},
                "resources": {"cpus": 2.0, "mem": 1024.0, "disk": 0.0, "gpus": 0.0, "ports": "[31000-31010]"},
                "used_resources": {"cpus": 0.5, "mem": 64.0, "disk": 0.0, "gpus": 0.0},
                "offered_resources": {"cpus": 0.0, "mem": 0.0, "disk": 0.0, "gpus": 0.0},
                "registered_time": 101.5, "reregistered_time": null, "active": true,
            }],
            "frameworks": [{
                "id": "m1-0000", "name": "fw", "user": "root", "roles": ["*"],
                "failover_timeout": 0.0, "checkpoint": false, "capabilities": ["PARTITION_AWARE"],
                "active": true, "connected": true, "registered_time": 102.0, "unregistered_time": 0.0,
                "used_resources": {"cpus": 0.5, "mem": 64.0},
                "offered_resources": {},
                "offers": [{"id": "m1-O1", "framework_id": "m1-0000", "agent_id": "m1-S0",
                            "resources": {"cpus": 1.5}}],
                "tasks": [{"id": "t1", "name": "t1", "framework_id": "m1-0000", "agent_id": "m1-S0",
                           "state": "TASK_RUNNING", "resources": {"cpus": 0.5, "mem": 64.0},
                           "statuses": [{"state": "TASK_RUNNING", "timestamp": 103.0}],
                           "labels": [{"key": "a", "value": "b"}]}],
                "unreachable_tasks": [],
                "completed_tasks": [{"id": "t0", "name": "t0", "framework_id": "m1-0000",
                                     "agent_id": "m1-S0", "state": "TASK_FINISHED",
                                     "resources": {"cpus": 0.1}, "statuses": []}],
            }],
            "completed_frameworks": [],
        })
    }

    fn call(kind: &str) -> Value {
        operator_response(&json!({ "type": kind }), &state()).unwrap()
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
        assert_eq!(m["get_master"]["start_time"], 100.0);
    }

    #[test]
    fn agents_in_v1_shape() {
        let a = &call("GET_AGENTS")["get_agents"]["agents"][0];
        assert_eq!(a["agent_info"]["id"]["value"], "m1-S0");
        assert_eq!(a["active"], true);
        assert_eq!(a["registered_time"]["nanoseconds"], 101_500_000_000_i64);
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
        let f = &call("GET_FRAMEWORKS")["get_frameworks"]["frameworks"][0];
        assert_eq!(f["framework_info"]["id"]["value"], "m1-0000");
        assert_eq!(
            f["framework_info"]["capabilities"],
            json!([{"type": "PARTITION_AWARE"}])
        );
        assert_eq!(f["connected"], true);
        assert!(f.get("unregistered_time").is_none());
        assert_eq!(f["offers"][0]["id"]["value"], "m1-O1");
        let t = &call("GET_TASKS")["get_tasks"];
        assert_eq!(t["tasks"][0]["task_id"]["value"], "t1");
        assert_eq!(t["tasks"][0]["state"], "TASK_RUNNING");
        assert_eq!(t["tasks"][0]["statuses"][0]["state"], "TASK_RUNNING");
        assert_eq!(t["tasks"][0]["labels"]["labels"][0]["key"], "a");
        assert_eq!(t["completed_tasks"][0]["task_id"]["value"], "t0");
        let st = &call("GET_STATE")["get_state"];
        assert_eq!(st["get_tasks"], *t);
        assert_eq!(
            st["get_agents"]["agents"][0]["agent_info"]["id"]["value"],
            "m1-S0"
        );
    }

    #[test]
    fn bad_operator_calls() {
        let st = state();
        assert!(operator_response(&json!({}), &st)
            .unwrap_err()
            .contains("'type'"));
        assert!(operator_response(&json!({"type": "GET_FLAGS"}), &st)
            .unwrap_err()
            .contains("not supported"));
        assert!(operator_response(&json!({"type": 3}), &st).is_err());
    }
}
