//! The derived `/master/*` documents (`state-summary`, `slaves`,
//! `frameworks`, `tasks`, `roles`), rendered from the typed [`Snapshot`].
//!
//! Each reuses the agent, framework and task objects of `/master/state`
//! (`super::state`), so the documents cannot drift from it; lists keep the
//! order `/master/state` lists them in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mezzo_proto::resources::FlatValue;
use mezzo_proto::v1::TaskState;
use mezzo_proto::Resources;
use serde_json::{json, Map, Value};

use super::state::{agent_json, framework_json, task_json};
use super::Snapshot;
use crate::state::{Framework, Task};

/// A framework's tasks in `/master/state` order: live, then unreachable,
/// then completed.
fn framework_tasks(f: &Framework) -> impl Iterator<Item = &Task> {
    let live = |unreachable: bool| {
        f.tasks
            .values()
            .filter(move |t| (t.state == TaskState::TaskUnreachable) == unreachable)
    };
    live(false).chain(live(true)).chain(f.completed.iter())
}

/// Every task the master keeps, of live and then completed frameworks.
fn all_tasks(snap: &Snapshot) -> Vec<&Task> {
    snap.frameworks
        .values()
        .chain(snap.completed_frameworks.iter())
        .flat_map(framework_tasks)
        .collect()
}

/// The states `/master/state-summary` always counts (others are added
/// when a task is in them).
const SUMMARY_STATES: [TaskState; 10] = [
    TaskState::TaskStaging,
    TaskState::TaskStarting,
    TaskState::TaskRunning,
    TaskState::TaskKilling,
    TaskState::TaskFinished,
    TaskState::TaskKilled,
    TaskState::TaskFailed,
    TaskState::TaskLost,
    TaskState::TaskError,
    TaskState::TaskUnreachable,
];

const AGENT_SUMMARY_KEYS: [&str; 15] = [
    "id",
    "pid",
    "hostname",
    "port",
    "registered_time",
    "reregistered_time",
    "resources",
    "used_resources",
    "offered_resources",
    "reserved_resources",
    "unreserved_resources",
    "attributes",
    "active",
    "version",
    "capabilities",
];

const FRAMEWORK_SUMMARY_KEYS: [&str; 12] = [
    "id",
    "name",
    "pid",
    "used_resources",
    "offered_resources",
    "capabilities",
    "hostname",
    "webui_url",
    "active",
    "connected",
    "role",
    "roles",
];

/// The `keys` of a `/master/state` object plus task counts per state.
fn summary_entry(full: Value, keys: &[&str], tasks: &[&Task]) -> Map<String, Value> {
    let Value::Object(mut full) = full else {
        return Map::new();
    };
    let mut m: Map<String, Value> = keys
        .iter()
        .filter_map(|k| full.remove(*k).map(|v| (k.to_string(), v)))
        .collect();
    let mut counts: BTreeMap<&str, u64> = SUMMARY_STATES
        .iter()
        .map(|s| (s.as_str_name(), 0))
        .collect();
    for t in tasks {
        *counts.entry(t.state.as_str_name()).or_default() += 1;
    }
    for (state, n) in counts {
        m.insert(state.to_string(), json!(n));
    }
    m
}

/// `/master/state-summary`: agents and frameworks with task counts per state.
pub(crate) fn state_summary_doc(snap: &Snapshot) -> Value {
    let mut by_agent: HashMap<&str, Vec<&Task>> = HashMap::new();
    let mut by_framework: HashMap<&str, Vec<&Task>> = HashMap::new();
    for t in all_tasks(snap) {
        by_agent.entry(&t.agent_id).or_default().push(t);
        by_framework.entry(&t.framework_id).or_default().push(t);
    }
    let none = Vec::new();
    let slaves: Vec<Value> = snap
        .agents
        .values()
        .map(|a| {
            let tasks = by_agent.get(a.id.as_str()).unwrap_or(&none);
            let mut m = summary_entry(agent_json(a), &AGENT_SUMMARY_KEYS, tasks);
            let fws: BTreeSet<&str> = tasks
                .iter()
                .filter(|t| !t.state.is_terminal())
                .map(|t| t.framework_id.as_str())
                .collect();
            m.insert("framework_ids".into(), json!(fws));
            Value::Object(m)
        })
        .collect();
    let frameworks: Vec<Value> = snap
        .frameworks
        .values()
        .map(|f| {
            let tasks = by_framework.get(f.id.as_str()).unwrap_or(&none);
            let full = framework_json(snap, f, true);
            let mut m = summary_entry(full, &FRAMEWORK_SUMMARY_KEYS, tasks);
            let agents: BTreeSet<&str> = f
                .tasks
                .values()
                .filter(|t| t.state != TaskState::TaskUnreachable)
                .map(|t| t.agent_id.as_str())
                .collect();
            m.insert("slave_ids".into(), json!(agents));
            Value::Object(m)
        })
        .collect();
    json!({
        "hostname": snap.info.hostname,
        "cluster": "",
        "slaves": slaves,
        "frameworks": frameworks,
    })
}

/// Mesos' `*_full` resource arrays: positive scalars and every range
/// resource, in name order.
pub(crate) fn resources_full(r: &Resources) -> Value {
    let mut out = Vec::new();
    for (name, v) in r.mesos_flat() {
        match v {
            FlatValue::Number(x) if x > 0.0 => {
                out.push(
                    json!({"name": name, "type": "SCALAR", "scalar": {"value": x}, "role": "*"}),
                );
            }
            FlatValue::Number(_) => {}
            FlatValue::Text(_) => {
                let range: Vec<Value> = r
                    .ranges(&name)
                    .ranges()
                    .iter()
                    .map(|(b, e)| json!({"begin": b, "end": e}))
                    .collect();
                out.push(json!({"name": name, "type": "RANGES", "ranges": {"range": range}, "role": "*"}));
            }
        }
    }
    Value::Array(out)
}

/// `/master/slaves`: agents with Mesos' `*_full` resource arrays.
pub(crate) fn slaves_doc(snap: &Snapshot, slave_id: Option<&str>) -> Value {
    let slaves: Vec<Value> = snap
        .agents
        .values()
        .filter(|a| slave_id.is_none_or(|id| a.id == id))
        .map(|a| {
            let mut v = agent_json(a);
            if let Some(m) = v.as_object_mut() {
                for (k, r) in [
                    ("used_resources", &a.used),
                    ("offered_resources", &a.offered),
                    ("unreserved_resources", &a.total),
                ] {
                    m.insert(format!("{k}_full"), resources_full(r));
                }
                m.insert("reserved_resources_full".into(), json!({}));
            }
            v
        })
        .collect();
    json!({ "slaves": slaves, "recovered_slaves": [] })
}

/// `/master/frameworks`.
pub(crate) fn frameworks_doc(snap: &Snapshot, framework_id: Option<&str>) -> Value {
    let wanted = |f: &&Framework| framework_id.is_none_or(|id| f.id == id);
    json!({
        "frameworks": snap.frameworks.values().filter(wanted)
            .map(|f| framework_json(snap, f, true)).collect::<Vec<_>>(),
        "completed_frameworks": snap.completed_frameworks.iter().filter(wanted)
            .map(|f| framework_json(snap, f, false)).collect::<Vec<_>>(),
        "unregistered_frameworks": [],
    })
}

/// Query of `/master/tasks`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct TasksQuery {
    pub limit: Option<String>,
    pub offset: Option<String>,
    pub order: Option<String>,
    pub framework_id: Option<String>,
    pub task_id: Option<String>,
}

/// When the task was launched: its first status.
fn start_time(t: &Task) -> f64 {
    t.statuses.first().map(|(_, ts)| *ts).unwrap_or(0.0)
}

fn parse_count(name: &str, v: Option<&str>, default: usize) -> Result<usize, String> {
    match v {
        None | Some("") => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| format!("Failed to parse '{name}': '{s}' is not a non-negative integer")),
    }
}

/// `/master/tasks?limit=&offset=&order=asc|des`: tasks sorted by start
/// time, newest first by default, 100 per page (Mesos' defaults).
pub(crate) fn tasks_doc(snap: &Snapshot, q: &TasksQuery) -> Result<Value, String> {
    let limit = parse_count("limit", q.limit.as_deref(), 100)?;
    let offset = parse_count("offset", q.offset.as_deref(), 0)?;
    let descending = match q.order.as_deref() {
        None | Some("") | Some("des") | Some("desc") => true,
        Some("asc") => false,
        Some(o) => {
            return Err(format!(
                "Failed to parse 'order': '{o}' is not 'asc' or 'des'"
            ))
        }
    };
    let mut tasks: Vec<&Task> = all_tasks(snap)
        .into_iter()
        .filter(|t| {
            q.framework_id
                .as_deref()
                .is_none_or(|f| t.framework_id == f)
                && q.task_id.as_deref().is_none_or(|id| t.info.task_id == id)
        })
        .collect();
    tasks.sort_by(|a, b| {
        start_time(a)
            .total_cmp(&start_time(b))
            .then_with(|| a.info.task_id.cmp(&b.info.task_id))
    });
    if descending {
        tasks.reverse();
    }
    let page: Vec<Value> = tasks
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(task_json)
        .collect();
    Ok(json!({ "tasks": page }))
}

/// Adds the scalars of `r` (as `/master/state` lists them) into `into`.
fn add_scalars(into: &mut BTreeMap<String, f64>, r: &Resources) {
    for (k, v) in r.mesos_flat() {
        if let FlatValue::Number(x) = v {
            *into.entry(k).or_insert(0.0) += x;
        }
    }
}

/// `/master/roles`: roles that have frameworks or a weight, with their
/// weight, frameworks and allocation.
pub(crate) fn roles_doc(snap: &Snapshot) -> Value {
    #[derive(Default)]
    struct Role {
        frameworks: Vec<String>,
        allocated: BTreeMap<String, f64>,
        offered: BTreeMap<String, f64>,
    }
    let weights: BTreeMap<&str, f64> = snap
        .config
        .weights
        .iter()
        .map(|(r, w)| (r.as_str(), *w))
        .collect();
    let mut roles: BTreeMap<String, Role> = weights
        .keys()
        .map(|r| (r.to_string(), Role::default()))
        .collect();
    for f in snap.frameworks.values() {
        let role = if f.role.is_empty() { "*" } else { &f.role };
        let e = roles.entry(role.to_string()).or_default();
        e.frameworks.push(f.id.clone());
        add_scalars(&mut e.allocated, &f.used);
        add_scalars(&mut e.offered, &f.offered);
    }
    let list: Vec<Value> = roles
        .into_iter()
        .map(|(name, r)| {
            json!({
                "name": name,
                "weight": weights.get(name.as_str()).copied().unwrap_or(1.0),
                "frameworks": r.frameworks,
                "resources": r.allocated,
                "allocated": r.allocated,
                "offered": r.offered,
                "reserved": {},
                "quota": {"role": name, "guarantee": {}, "limit": {}, "consumed": r.allocated},
            })
        })
        .collect();
    json!({ "roles": list })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::MasterConfig;
    use crate::sim::{task, Sim};
    use crate::state::Call;

    /// Agent `s0`; framework "old" (role `*`) torn down with its task z
    /// (started at 1 s, so TASK_KILLED); framework "one" (role prod, weight
    /// 2.5) with a (running, started at 10 s), c (finished, 20 s), b
    /// (staging, 30 s) and the rest of the agent offered.
    struct Doc {
        snap: Snapshot,
        agent: String,
        old: String,
        one: String,
    }

    fn doc() -> Doc {
        let mut config = MasterConfig::default();
        config.weights.insert("prod".into(), 2.5);
        let mut sim = Sim::new(config, 5);
        let agent = sim
            .add_agent("s0", "cpus:4;mem:1024;ports:[31000-31005,31010-31020]")
            .unwrap();
        let at = |sim: &mut Sim, secs: u64| sim.now = Duration::from_secs(secs);
        at(&mut sim, 1);
        let old = sim.subscribe("old", "*").unwrap();
        let launch = |sim: &mut Sim, name: &str, t: &str, res: &str| {
            sim.allocate();
            let offer = sim.frameworks[name].offers.keys().next().cloned().unwrap();
            sim.launch(name, &offer, vec![task(t, res)]).unwrap();
        };
        launch(&mut sim, "old", "z", "cpus:1");
        sim.call(Call::Teardown(mezzo_proto::v1::TeardownRequest {
            framework_id: old.clone(),
        }))
        .unwrap();
        let one = sim.subscribe("one", "prod").unwrap();
        at(&mut sim, 10);
        launch(&mut sim, "one", "a", "cpus:0.5;mem:32");
        at(&mut sim, 20);
        launch(&mut sim, "one", "c", "cpus:0.1");
        sim.agent_update("s0", &one, "c", TaskState::TaskFinished);
        at(&mut sim, 30);
        if let Some(a) = sim.agents.get_mut("s0") {
            a.auto_run = false;
        }
        launch(&mut sim, "one", "b", "cpus:0.5;mem:32");
        // Past the default refuse filter of the accepted offers.
        at(&mut sim, 40);
        sim.allocate();
        Doc {
            snap: Snapshot::of(&sim.master),
            agent,
            old,
            one,
        }
    }

    #[test]
    fn summary_counts_tasks_per_agent_and_framework() {
        let d = doc();
        let s = state_summary_doc(&d.snap);
        assert_eq!(s["slaves"][0]["TASK_RUNNING"], 1);
        assert_eq!(s["slaves"][0]["TASK_KILLED"], 1);
        assert_eq!(s["slaves"][0]["framework_ids"], json!([d.one]));
        assert_eq!(s["frameworks"][0]["TASK_FINISHED"], 1);
        assert_eq!(s["frameworks"][0]["TASK_STAGING"], 1);
        assert_eq!(s["frameworks"][0]["slave_ids"], json!([d.agent]));
        assert_eq!(s["hostname"], "sim");
    }

    #[test]
    fn tasks_page_and_order_by_start_time() {
        let ids = |v: Value| -> Vec<String> {
            v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect()
        };
        let d = doc();
        let snap = &d.snap;
        assert_eq!(
            ids(tasks_doc(snap, &TasksQuery::default()).unwrap()),
            ["b", "c", "a", "z"]
        );
        let q = TasksQuery {
            order: Some("asc".into()),
            limit: Some("2".into()),
            offset: Some("1".into()),
            ..Default::default()
        };
        assert_eq!(ids(tasks_doc(snap, &q).unwrap()), ["a", "c"]);
        let q = TasksQuery {
            framework_id: Some(d.old.clone()),
            ..Default::default()
        };
        assert_eq!(ids(tasks_doc(snap, &q).unwrap()), ["z"]);
        let bad = TasksQuery {
            limit: Some("-1".into()),
            ..Default::default()
        };
        assert!(tasks_doc(snap, &bad).is_err());
        let bad = TasksQuery {
            order: Some("sideways".into()),
            ..Default::default()
        };
        assert!(tasks_doc(snap, &bad).is_err());
    }

    #[test]
    fn roles_include_weights_and_allocation() {
        let d = doc();
        let r = roles_doc(&d.snap);
        let prod = r["roles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "prod")
            .unwrap()
            .clone();
        assert_eq!(prod["weight"], 2.5);
        assert_eq!(prod["frameworks"], json!([d.one]));
        assert_eq!(prod["resources"]["cpus"], 1.0);
        assert_eq!(prod["offered"]["cpus"], 3.0);
    }

    #[test]
    fn slaves_have_full_resource_arrays() {
        let d = doc();
        let s = slaves_doc(&d.snap, None);
        let full = &s["slaves"][0]["unreserved_resources_full"];
        assert_eq!(full[0]["name"], "cpus");
        assert_eq!(full[0]["scalar"]["value"], 4.0);
        let res = resources_full(&Resources::parse("ports:[31000-31005,31010-31020]").unwrap());
        assert_eq!(
            res[0]["ranges"]["range"][1],
            json!({"begin": 31010, "end": 31020})
        );
        assert_eq!(slaves_doc(&d.snap, Some("nope"))["slaves"], json!([]));
    }

    #[test]
    fn frameworks_filter_by_id() {
        let d = doc();
        let f = frameworks_doc(&d.snap, Some(&d.old));
        assert_eq!(f["frameworks"], json!([]));
        assert_eq!(f["completed_frameworks"][0]["id"], d.old.as_str());
    }
}
