//! `/master/state` in Mesos' JSON shape, rendered from a [`Snapshot`].

use mezzo_proto::v1::{self, TaskState};
use mezzo_proto::Resources;
use serde_json::{json, Value};

use super::Snapshot;
use crate::state::{Agent, Framework, Task};

/// Mesos' flat resource JSON: `{"cpus": 2.0, "mem": 1024.0, "ports": "[31000-32000]"}`.
pub(crate) fn resources_json(r: &Resources) -> Value {
    json!(r.mesos_flat())
}

/// MasterInfo in Mesos' JSON field names (also the ZooKeeper znode format).
pub fn master_info_json(info: &v1::MasterInfo) -> Value {
    json!({
        "id": info.id,
        "ip": ipv4_as_u32(&info.ip),
        "port": info.port,
        "pid": format!("master@{}:{}", info.ip, info.port),
        "hostname": info.hostname,
        "version": crate::MESOS_COMPAT_VERSION,
        "address": {"hostname": info.hostname, "ip": info.ip, "port": info.port},
    })
}

/// Mesos stores the IPv4 address as a uint32 in network byte order.
fn ipv4_as_u32(ip: &str) -> u32 {
    ip.parse::<std::net::Ipv4Addr>()
        .map(|a| u32::from_ne_bytes(a.octets()))
        .unwrap_or(0)
}

pub(crate) fn task_json(t: &Task) -> Value {
    json!({
        "id": t.info.task_id,
        "name": t.info.name,
        "framework_id": t.framework_id,
        "executor_id": "",
        "slave_id": t.agent_id,
        "agent_id": t.agent_id,
        "state": t.state.as_str_name(),
        "resources": resources_json(&t.resources),
        "statuses": t.statuses.iter().map(|(s, ts)| json!({"state": s.as_str_name(), "timestamp": ts})).collect::<Vec<_>>(),
        "labels": t.info.labels.iter().map(|l| json!({"key": l.key, "value": l.value})).collect::<Vec<_>>(),
    })
}

pub(super) fn framework_json(snap: &Snapshot, f: &Framework, active: bool) -> Value {
    let tasks = |unreachable: bool| -> Vec<Value> {
        f.tasks
            .values()
            .filter(|t| (t.state == TaskState::TaskUnreachable) == unreachable)
            .map(task_json)
            .collect()
    };
    let offers: Vec<Value> = f
        .offers
        .iter()
        .filter_map(|id| {
            snap.offers.get(id).map(|o| json!({
                "id": id, "framework_id": o.framework_id, "slave_id": o.agent_id, "agent_id": o.agent_id,
                "resources": resources_json(&o.resources),
            }))
        })
        .collect();
    json!({
        "id": f.id,
        "name": f.info.name,
        "user": f.info.user,
        "hostname": f.info.hostname,
        "webui_url": f.info.webui_url,
        "principal": f.info.principal,
        "role": f.role,
        "roles": [f.role],
        "failover_timeout": f.info.failover_timeout,
        "checkpoint": f.info.checkpoint,
        "capabilities": f.info.capabilities,
        "active": active && f.connected,
        "connected": f.connected,
        "registered_time": f.registered_time,
        "unregistered_time": f.unregistered_time.unwrap_or(0.0),
        "resources": resources_json(&f.used.plus(&f.offered)),
        "used_resources": resources_json(&f.used),
        "offered_resources": resources_json(&f.offered),
        "tasks": tasks(false),
        "unreachable_tasks": tasks(true),
        "completed_tasks": f.completed.iter().map(task_json).collect::<Vec<_>>(),
        "offers": offers,
        "executors": [],
        "pid": null,
        "recovered": false,
        "labels": [],
    })
}

pub(crate) fn flags_json(snap: &Snapshot) -> Value {
    let c = &snap.config;
    let mut weights: Vec<String> = c.weights.iter().map(|(r, w)| format!("{r}={w}")).collect();
    weights.sort();
    json!({
        "allocation_interval": format!("{}secs", c.allocation_interval.as_secs_f64()),
        "offer_timeout": c.offer_timeout.map(|d| format!("{}secs", d.as_secs_f64())),
        "agent_ping_timeout": format!("{}secs", c.agent_ping_timeout.as_secs_f64()),
        "max_agent_ping_timeouts": c.max_agent_ping_timeouts.to_string(),
        "framework_heartbeat_interval": format!("{}secs", c.framework_heartbeat_interval.as_secs_f64()),
        "max_completed_tasks_per_framework": c.max_completed_tasks_per_framework.to_string(),
        "max_completed_frameworks": crate::state::MAX_COMPLETED_FRAMEWORKS.to_string(),
        "weights": weights.join(","),
        // Credentials in `zk://user:pass@...` never leave the process.
        "zk": c.zk.as_ref().map(|z| match z.rsplit_once('@') {
            Some((_, hosts)) => format!("zk://{hosts}"),
            None => z.clone(),
        }),
    })
}

pub(super) fn agent_json(a: &Agent) -> Value {
    let attributes: serde_json::Map<String, Value> = a
        .info
        .attributes
        .iter()
        .map(|x| {
            let v = if x.r#type == v1::ValueType::Scalar as i32 {
                json!(x.scalar)
            } else {
                json!(x.text)
            };
            (x.name.clone(), v)
        })
        .collect();
    let mut m = json!({
        "id": a.id,
        "hostname": a.info.hostname,
        "port": a.info.port,
        "pid": format!("slave(1)@{}:{}", a.info.hostname, a.info.port),
        "attributes": attributes,
        "resources": resources_json(&a.total),
        "used_resources": resources_json(&a.used),
        "offered_resources": resources_json(&a.offered),
        "unreserved_resources": resources_json(&a.total),
        "reserved_resources": {},
        "registered_time": a.registered_time,
        "reregistered_time": a.reregistered_time,
        "active": a.active(),
        "deactivated": false,
        "connected": a.connected,
        "reachable": a.reachable,
        "version": crate::MESOS_COMPAT_VERSION,
        "capabilities": [],
    });
    // Mesos also flattens the agent's total resources into the object.
    if let (Some(obj), Value::Object(res)) = (m.as_object_mut(), resources_json(&a.total)) {
        for (k, v) in res {
            obj.entry(k).or_insert(v);
        }
    }
    m
}

/// The Mesos-shaped `/master/state` document.
pub(crate) fn state_json(snap: &Snapshot) -> Value {
    let info = &snap.info;
    let leader_pid = format!("master@{}:{}", info.ip, info.port);
    json!({
        "version": crate::MESOS_COMPAT_VERSION,
        "mezzo_version": env!("CARGO_PKG_VERSION"),
        "git_sha": "",
        "git_branch": "",
        "build_date": "",
        "build_time": 0,
        "build_user": "mezzo",
        "cluster": "",
        "log_dir": "",
        "capabilities": [],
        "flags": flags_json(snap),
        "id": info.id,
        "pid": leader_pid,
        "hostname": info.hostname,
        "start_time": snap.start_time,
        "elected_time": snap.elected_time,
        // A standalone master (no election) leads itself.
        "leader": snap.leader.as_ref().map(|h| format!("master@{h}"))
            .or_else(|| snap.leading.then(|| leader_pid.clone())),
        "leading": snap.leading,
        "leader_info": master_info_json(info),
        "activated_slaves": snap.agents.values().filter(|a| a.reachable).count(),
        "deactivated_slaves": 0,
        "unreachable_slaves": snap.agents.values().filter(|a| !a.reachable).count(),
        "slaves": snap.agents.values().map(agent_json).collect::<Vec<_>>(),
        "recovered_slaves": [],
        "frameworks": snap.frameworks.values().map(|f| framework_json(snap, f, true)).collect::<Vec<_>>(),
        "completed_frameworks": snap.completed_frameworks.iter().map(|f| framework_json(snap, f, false)).collect::<Vec<_>>(),
        "orphan_tasks": [],
        "unregistered_frameworks": [],
    })
}
