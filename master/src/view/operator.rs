//! Responses of Mesos' v1 operator API (`mesos.v1.master.Response` in JSON)
//! for the read-only calls, rendered from the typed [`Snapshot`].

use std::collections::BTreeMap;

use mezzo_proto::v1::{self, TaskState};
use mezzo_proto::Resources;
use serde_json::{json, Map, Value};

use super::{attribute_json, id_json, master_info_json, resource_json, Snapshot};
use crate::state::{Agent, Framework, Task};

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

/// Answers one operator call (its JSON body) from the snapshot; the error
/// is the 400 message.
pub(crate) fn operator_response(call: &Value, snap: &Snapshot) -> Result<Value, String> {
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
            "master_info": master_info_json(&snap.info),
            "start_time": snap.start_time,
            "elected_time": snap.elected_time,
        }),
        "GET_AGENTS" => get_agents(snap),
        "GET_FRAMEWORKS" => get_frameworks(snap),
        "GET_TASKS" => get_tasks(snap),
        "GET_EXECUTORS" => json!({"executors": [], "orphan_executors": []}),
        "GET_STATE" => json!({
            "get_tasks": get_tasks(snap),
            "get_executors": {"executors": []},
            "get_frameworks": get_frameworks(snap),
            "get_agents": get_agents(snap),
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

/// Wall-clock seconds to a `TimeInfo`; unset (0) times are left out.
fn time_info(secs: f64) -> Option<Value> {
    (secs > 0.0).then(|| json!({"nanoseconds": (secs * 1e9) as i64}))
}

/// A v1 resource list; zero scalars and empty range sets are left out, as
/// Mesos lists only what is there.
fn resources_list(r: &Resources) -> Vec<Value> {
    r.to_proto()
        .iter()
        .filter(|x| {
            if x.r#type == v1::ValueType::Ranges as i32 {
                !x.ranges.is_empty()
            } else {
                x.scalar > 0.0
            }
        })
        .map(|x| resource_json(x, None))
        .collect()
}

/// The agent's attributes by name (the last of a repeated name wins, as in
/// `/master/state`).
fn attributes_list(a: &Agent) -> Vec<Value> {
    let by_name: BTreeMap<&str, &v1::Attribute> = a
        .info
        .attributes
        .iter()
        .map(|x| (x.name.as_str(), x))
        .collect();
    by_name
        .into_values()
        .map(|x| {
            // A non-finite scalar has no JSON number: it reads as empty text.
            if x.r#type == v1::ValueType::Scalar as i32 && !x.scalar.is_finite() {
                json!({"name": x.name, "type": "TEXT", "text": {"value": ""}})
            } else {
                attribute_json(x)
            }
        })
        .collect()
}

fn agent_v1(a: &Agent) -> Value {
    let mut m = Map::new();
    m.insert(
        "agent_info".into(),
        json!({
            "hostname": a.info.hostname,
            "port": a.info.port,
            "id": id_json(&a.id),
            "resources": resources_list(&a.total),
            "attributes": attributes_list(a),
        }),
    );
    m.insert("active".into(), json!(a.active()));
    m.insert("deactivated".into(), json!(false));
    m.insert(
        "pid".into(),
        json!(format!("slave(1)@{}:{}", a.info.hostname, a.info.port)),
    );
    m.insert("version".into(), json!(crate::MESOS_COMPAT_VERSION));
    if let Some(t) = time_info(a.registered_time) {
        m.insert("registered_time".into(), t);
    }
    if let Some(t) = a.reregistered_time.and_then(time_info) {
        m.insert("reregistered_time".into(), t);
    }
    m.insert("total_resources".into(), json!(resources_list(&a.total)));
    m.insert("allocated_resources".into(), json!(resources_list(&a.used)));
    m.insert(
        "offered_resources".into(),
        json!(resources_list(&a.offered)),
    );
    Value::Object(m)
}

fn get_agents(snap: &Snapshot) -> Value {
    let agents: Vec<Value> = snap.agents.values().map(agent_v1).collect();
    json!({"agents": agents, "recovered_agents": []})
}

fn framework_info_v1(f: &Framework) -> Value {
    let mut info = Map::new();
    info.insert("id".into(), id_json(&f.id));
    info.insert("name".into(), json!(f.info.name));
    info.insert("user".into(), json!(f.info.user));
    for (k, v) in [
        ("hostname", &f.info.hostname),
        ("principal", &f.info.principal),
        ("webui_url", &f.info.webui_url),
    ] {
        if !v.is_empty() {
            info.insert(k.into(), json!(v));
        }
    }
    info.insert("roles".into(), json!([f.role]));
    info.insert("failover_timeout".into(), json!(f.info.failover_timeout));
    info.insert("checkpoint".into(), json!(f.info.checkpoint));
    let caps: Vec<Value> = f
        .info
        .capabilities
        .iter()
        .map(|c| json!({"type": c}))
        .collect();
    info.insert("capabilities".into(), json!(caps));
    Value::Object(info)
}

/// `active` is false for completed frameworks, as in `/master/state`.
fn framework_v1(snap: &Snapshot, f: &Framework, active: bool) -> Value {
    let mut m = Map::new();
    m.insert("framework_info".into(), framework_info_v1(f));
    m.insert("active".into(), json!(active && f.connected));
    m.insert("connected".into(), json!(f.connected));
    m.insert("recovered".into(), json!(false));
    if let Some(t) = time_info(f.registered_time) {
        m.insert("registered_time".into(), t);
    }
    if let Some(t) = time_info(f.unregistered_time.unwrap_or(0.0)) {
        m.insert("unregistered_time".into(), t);
    }
    let offers: Vec<Value> = f
        .offers
        .iter()
        .filter_map(|id| {
            snap.offers.get(id).map(|o| {
                json!({
                    "id": id_json(id),
                    "framework_id": id_json(&o.framework_id),
                    "agent_id": id_json(&o.agent_id),
                    "resources": resources_list(&o.resources),
                })
            })
        })
        .collect();
    m.insert("offers".into(), json!(offers));
    m.insert("allocated_resources".into(), json!(resources_list(&f.used)));
    m.insert(
        "offered_resources".into(),
        json!(resources_list(&f.offered)),
    );
    Value::Object(m)
}

fn get_frameworks(snap: &Snapshot) -> Value {
    json!({
        "frameworks": snap.frameworks.values()
            .map(|f| framework_v1(snap, f, true)).collect::<Vec<_>>(),
        "completed_frameworks": snap.completed_frameworks.iter()
            .map(|f| framework_v1(snap, f, false)).collect::<Vec<_>>(),
        "recovered_frameworks": [],
    })
}

fn task_v1(t: &Task) -> Value {
    let task_id = t.info.task_id.as_str();
    let statuses: Vec<Value> = t
        .statuses
        .iter()
        .map(|(state, ts)| {
            json!({
                "task_id": id_json(task_id),
                "state": state.as_str_name(),
                "timestamp": ts,
            })
        })
        .collect();
    let labels: Vec<Value> = t
        .info
        .labels
        .iter()
        .map(|l| json!({"key": l.key, "value": l.value}))
        .collect();
    json!({
        "name": t.info.name,
        "task_id": id_json(task_id),
        "framework_id": id_json(&t.framework_id),
        "executor_id": id_json(task_id),
        "agent_id": id_json(&t.agent_id),
        "state": t.state.as_str_name(),
        "resources": resources_list(&t.resources),
        "statuses": statuses,
        "labels": {"labels": labels},
    })
}

fn get_tasks(snap: &Snapshot) -> Value {
    let mut tasks = Vec::new();
    let mut unreachable = Vec::new();
    let mut completed = Vec::new();
    for f in snap
        .frameworks
        .values()
        .chain(snap.completed_frameworks.iter())
    {
        for t in f.tasks.values() {
            if t.state == TaskState::TaskUnreachable {
                unreachable.push(task_v1(t));
            } else {
                tasks.push(task_v1(t));
            }
        }
        completed.extend(f.completed.iter().map(task_v1));
    }
    json!({
        "pending_tasks": [],
        "tasks": tasks,
        "unreachable_tasks": unreachable,
        "completed_tasks": completed,
        "orphan_tasks": [],
    })
}
