//! `/master/state` in Mesos' JSON shape, rendered from a [`Snapshot`].

use mezzo_proto::v1::{self, TaskState};
use mezzo_proto::Resources;
use serde::ser::{Serialize, SerializeMap, Serializer};
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
pub(super) fn ipv4_as_u32(ip: &str) -> u32 {
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

/// An agent's attributes as Mesos' `{name: value}` object.
pub(super) fn attributes_json(a: &Agent) -> serde_json::Map<String, Value> {
    a.info
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
        .collect()
}

pub(super) fn agent_json(a: &Agent) -> Value {
    let attributes = attributes_json(a);
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

/// The Mesos-shaped `/master/state` document as a `Value` tree: the
/// reference [`StateJson`] is checked against, and what the benchmark
/// compares it with.
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

// ---------------------------------------------------------------------------
// The same document, serialized straight to bytes.
//
// Building a `serde_json::Value` tree for 800,000 tasks allocates a map and
// a string per field and then frees it all; these `Serialize` views borrow
// the snapshot and write the JSON as they walk it. serde_json's `Value`
// keeps object keys in a `BTreeMap`, so the renderer above emits them in
// byte order: every object below writes its keys in that same order, which
// keeps the output byte-for-byte identical (`tests::direct_matches_value`).
// ---------------------------------------------------------------------------

/// `/master/state` as a borrowed [`Serialize`] view of a [`Snapshot`]; the
/// HTTP handler serializes it without building a `Value`.
pub(crate) struct StateJson<'a>(pub &'a Snapshot);

/// An empty JSON array (`[]`).
pub(super) const NO_ITEMS: &[u8] = &[];

impl Serialize for StateJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let snap = self.0;
        let info = &snap.info;
        let leader_pid = format!("master@{}:{}", info.ip, info.port);
        let leader = snap
            .leader
            .as_ref()
            .map(|h| format!("master@{h}"))
            .or_else(|| snap.leading.then(|| leader_pid.clone()));
        let reachable = snap.agents.values().filter(|a| a.reachable).count();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("activated_slaves", &reachable)?;
        m.serialize_entry("build_date", "")?;
        m.serialize_entry("build_time", &0)?;
        m.serialize_entry("build_user", "mezzo")?;
        m.serialize_entry("capabilities", NO_ITEMS)?;
        m.serialize_entry("cluster", "")?;
        m.serialize_entry(
            "completed_frameworks",
            &Frameworks {
                snap,
                list: FrameworkList::Completed,
            },
        )?;
        m.serialize_entry("deactivated_slaves", &0)?;
        m.serialize_entry("elected_time", &snap.elected_time)?;
        m.serialize_entry("flags", &flags_json(snap))?;
        m.serialize_entry(
            "frameworks",
            &Frameworks {
                snap,
                list: FrameworkList::Registered,
            },
        )?;
        m.serialize_entry("git_branch", "")?;
        m.serialize_entry("git_sha", "")?;
        m.serialize_entry("hostname", &info.hostname)?;
        m.serialize_entry("id", &info.id)?;
        m.serialize_entry("leader", &leader)?;
        m.serialize_entry("leader_info", &master_info_json(info))?;
        m.serialize_entry("leading", &snap.leading)?;
        m.serialize_entry("log_dir", "")?;
        m.serialize_entry("mezzo_version", env!("CARGO_PKG_VERSION"))?;
        m.serialize_entry("orphan_tasks", NO_ITEMS)?;
        m.serialize_entry("pid", &leader_pid)?;
        m.serialize_entry("recovered_slaves", NO_ITEMS)?;
        m.serialize_entry("slaves", &Agents(snap))?;
        m.serialize_entry("start_time", &snap.start_time)?;
        m.serialize_entry("unreachable_slaves", &(snap.agents.len() - reachable))?;
        m.serialize_entry("unregistered_frameworks", NO_ITEMS)?;
        m.serialize_entry("version", crate::MESOS_COMPAT_VERSION)?;
        m.end()
    }
}

/// Mesos' flat resource JSON ([`resources_json`]) without the intermediate
/// map: `cpus`, `mem`, `disk` and `gpus` always, then every scalar and range
/// resource, in name order, a range winning over a scalar of the same name
/// as it does in [`Resources::mesos_flat`].
pub(super) struct FlatJson<'a>(pub(super) &'a Resources);

impl Serialize for FlatJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Sorted, like the keys of the map `mesos_flat` builds.
        const ALWAYS: [&str; 4] = ["cpus", "disk", "gpus", "mem"];
        let r = self.0;
        if let Some([cpus, mem, disk, gpus]) = r.common_scalars_only() {
            // The usual task bundle: the four names, nothing to merge.
            let mut m = s.serialize_map(Some(4))?;
            m.serialize_entry("cpus", &millis(cpus))?;
            m.serialize_entry("disk", &millis(disk))?;
            m.serialize_entry("gpus", &millis(gpus))?;
            m.serialize_entry("mem", &millis(mem))?;
            return m.end();
        }
        let mut always = ALWAYS.iter().copied().peekable();
        let mut scalars = r.scalars().peekable();
        let mut ranges = r.range_resources().peekable();
        let mut m = s.serialize_map(None)?;
        loop {
            // The smallest name any of the three sorted sources has next.
            let next = [
                always.peek().copied(),
                scalars.peek().map(|(k, _)| *k),
                ranges.peek().map(|(k, _)| *k),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(key) = next else { break };
            let mut number = 0.0;
            if always.peek() == Some(&key) {
                always.next();
            }
            if let Some((_, v)) = scalars.next_if(|(k, _)| *k == key) {
                number = v;
            }
            match ranges.next_if(|(k, _)| *k == key) {
                Some((_, set)) => m.serialize_entry(key, &Display(set))?,
                None => m.serialize_entry(key, &number)?,
            }
        }
        m.end()
    }
}

/// Serializes a value's `Display` text as a JSON string.
pub(super) struct Display<'a, T: std::fmt::Display>(pub(super) &'a T);

impl<T: std::fmt::Display> Serialize for Display<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// A sequence serialized from an iterator made on demand.
pub(super) struct Seq<F>(pub(super) F);

impl<F, I> Serialize for Seq<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

/// [`task_json`], serialized directly.
pub(super) struct TaskJson<'a>(pub(super) &'a Task);

impl Serialize for TaskJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut m = s.serialize_map(Some(10))?;
        m.serialize_entry("agent_id", &t.agent_id)?;
        m.serialize_entry("executor_id", "")?;
        m.serialize_entry("framework_id", &t.framework_id)?;
        m.serialize_entry("id", &t.info.task_id)?;
        m.serialize_entry("labels", &Seq(|| t.info.labels.iter().map(LabelJson)))?;
        m.serialize_entry("name", &t.info.name)?;
        m.serialize_entry("resources", &FlatJson(&t.resources))?;
        m.serialize_entry("slave_id", &t.agent_id)?;
        m.serialize_entry("state", t.state.as_str_name())?;
        m.serialize_entry("statuses", &Seq(|| t.statuses.iter().map(StatusJson)))?;
        m.end()
    }
}

pub(super) struct LabelJson<'a>(pub(super) &'a v1::Label);

impl Serialize for LabelJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("key", &self.0.key)?;
        m.serialize_entry("value", &self.0.value)?;
        m.end()
    }
}

pub(super) struct StatusJson<'a>(&'a (TaskState, f64));

impl Serialize for StatusJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (state, ts) = self.0;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("state", state.as_str_name())?;
        m.serialize_entry("timestamp", ts)?;
        m.end()
    }
}

#[derive(Clone, Copy)]
enum FrameworkList {
    Registered,
    Completed,
}

/// `frameworks` or `completed_frameworks`.
pub(super) struct Frameworks<'a> {
    snap: &'a Snapshot,
    list: FrameworkList,
}

impl Serialize for Frameworks<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let snap = self.snap;
        match self.list {
            FrameworkList::Registered => {
                s.collect_seq(snap.frameworks.values().map(|f| FrameworkJson {
                    snap,
                    f,
                    active: true,
                }))
            }
            FrameworkList::Completed => {
                s.collect_seq(snap.completed_frameworks.iter().map(|f| FrameworkJson {
                    snap,
                    f,
                    active: false,
                }))
            }
        }
    }
}

/// [`framework_json`], serialized directly.
pub(super) struct FrameworkJson<'a> {
    snap: &'a Snapshot,
    f: &'a Framework,
    active: bool,
}

impl Serialize for FrameworkJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (snap, f) = (self.snap, self.f);
        let tasks = |unreachable: bool| {
            Seq(move || {
                f.tasks
                    .values()
                    .filter(move |t| (t.state == TaskState::TaskUnreachable) == unreachable)
                    .map(TaskJson)
            })
        };
        let offers = Seq(|| {
            f.offers
                .iter()
                .filter_map(|id| snap.offers.get(id).map(|o| OfferJson { id, o }))
        });
        let mut m = s.serialize_map(Some(26))?;
        m.serialize_entry("active", &(self.active && f.connected))?;
        m.serialize_entry("capabilities", &f.info.capabilities)?;
        m.serialize_entry("checkpoint", &f.info.checkpoint)?;
        m.serialize_entry("completed_tasks", &Seq(|| f.completed.iter().map(TaskJson)))?;
        m.serialize_entry("connected", &f.connected)?;
        m.serialize_entry("executors", NO_ITEMS)?;
        m.serialize_entry("failover_timeout", &f.info.failover_timeout)?;
        m.serialize_entry("hostname", &f.info.hostname)?;
        m.serialize_entry("id", &f.id)?;
        m.serialize_entry("labels", NO_ITEMS)?;
        m.serialize_entry("name", &f.info.name)?;
        m.serialize_entry("offered_resources", &FlatJson(&f.offered))?;
        m.serialize_entry("offers", &offers)?;
        m.serialize_entry("pid", &())?;
        m.serialize_entry("principal", &f.info.principal)?;
        m.serialize_entry("recovered", &false)?;
        m.serialize_entry("registered_time", &f.registered_time)?;
        m.serialize_entry("resources", &FlatJson(&f.used.plus(&f.offered)))?;
        m.serialize_entry("role", &f.role)?;
        m.serialize_entry("roles", &[&f.role])?;
        m.serialize_entry("tasks", &tasks(false))?;
        m.serialize_entry("unreachable_tasks", &tasks(true))?;
        m.serialize_entry("unregistered_time", &f.unregistered_time.unwrap_or(0.0))?;
        m.serialize_entry("used_resources", &FlatJson(&f.used))?;
        m.serialize_entry("user", &f.info.user)?;
        m.serialize_entry("webui_url", &f.info.webui_url)?;
        m.end()
    }
}

pub(super) struct OfferJson<'a> {
    pub(super) id: &'a String,
    pub(super) o: &'a crate::state::OfferRec,
}

impl Serialize for OfferJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = self.o;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("agent_id", &o.agent_id)?;
        m.serialize_entry("framework_id", &o.framework_id)?;
        m.serialize_entry("id", self.id)?;
        m.serialize_entry("resources", &FlatJson(&o.resources))?;
        m.serialize_entry("slave_id", &o.agent_id)?;
        m.end()
    }
}

/// `slaves`.
pub(super) struct Agents<'a>(pub(super) &'a Snapshot);

impl Serialize for Agents<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.agents.values().map(AgentJson))
    }
}

/// One field of an agent object; the agent's keys are only known at run
/// time (its resource names are flattened in), so they are sorted first.
pub(super) enum AgentField<'a> {
    Str(&'a str),
    Text(String),
    Bool(bool),
    U32(u32),
    F64(f64),
    OptF64(Option<f64>),
    Attributes(serde_json::Map<String, Value>),
    Resources(&'a Resources),
    Number(f64),
    Ranges(&'a mezzo_proto::RangeSet),
    EmptyObject,
    EmptyArray,
}

impl Serialize for AgentField<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AgentField::Str(v) => s.serialize_str(v),
            AgentField::Text(v) => s.serialize_str(v),
            AgentField::Bool(v) => s.serialize_bool(*v),
            AgentField::U32(v) => s.serialize_u32(*v),
            AgentField::F64(v) | AgentField::Number(v) => s.serialize_f64(*v),
            AgentField::OptF64(v) => v.serialize(s),
            AgentField::Attributes(m) => m.serialize(s),
            AgentField::Resources(r) => FlatJson(r).serialize(s),
            AgentField::Ranges(set) => s.collect_str(set),
            AgentField::EmptyObject => s.serialize_map(Some(0))?.end(),
            AgentField::EmptyArray => NO_ITEMS.serialize(s),
        }
    }
}

/// [`agent_json`], serialized directly.
pub(super) struct AgentJson<'a>(pub(super) &'a Agent);

impl Serialize for AgentJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use AgentField as F;
        let a = self.0;
        let mut fields: Vec<(&str, AgentField<'_>)> = vec![
            ("active", F::Bool(a.active())),
            ("attributes", F::Attributes(attributes_json(a))),
            ("capabilities", F::EmptyArray),
            ("connected", F::Bool(a.connected)),
            ("deactivated", F::Bool(false)),
            ("hostname", F::Str(&a.info.hostname)),
            ("id", F::Str(&a.id)),
            ("offered_resources", F::Resources(&a.offered)),
            (
                "pid",
                F::Text(format!("slave(1)@{}:{}", a.info.hostname, a.info.port)),
            ),
            ("port", F::U32(a.info.port)),
            ("reachable", F::Bool(a.reachable)),
            ("registered_time", F::F64(a.registered_time)),
            ("reregistered_time", F::OptF64(a.reregistered_time)),
            ("reserved_resources", F::EmptyObject),
            ("resources", F::Resources(&a.total)),
            ("unreserved_resources", F::Resources(&a.total)),
            ("used_resources", F::Resources(&a.used)),
            ("version", F::Str(crate::MESOS_COMPAT_VERSION)),
        ];
        let fixed = fields.len();
        // Mesos also flattens the total resources into the object; a name
        // that is already a key keeps the key's value.
        flat_fields(&a.total, |key, field| {
            if !fields[..fixed].iter().any(|(k, _)| *k == key) {
                fields.push((key, field));
            }
        });
        fields.sort_unstable_by(|x, y| x.0.cmp(y.0));
        let mut m = s.serialize_map(Some(fields.len()))?;
        for (k, v) in &fields {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// The entries of [`FlatJson`] as agent fields, in name order.
pub(super) fn flat_fields<'a>(r: &'a Resources, mut f: impl FnMut(&'a str, AgentField<'a>)) {
    let mut keys: Vec<&'a str> = ["cpus", "mem", "disk", "gpus"]
        .into_iter()
        .chain(r.scalars().map(|(k, _)| k))
        .chain(r.range_resources().map(|(k, _)| k))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        match r.range_resources().find(|(k, _)| *k == key) {
            Some((_, set)) => f(key, AgentField::Ranges(set)),
            None => f(key, AgentField::Number(r.scalar(key))),
        }
    }
}

/// A fixed-point amount as the `f64` that `Resources::scalar` returns.
pub(super) fn millis(v: i64) -> f64 {
    v as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mezzo_proto::v1::{self, TaskState};

    use super::{state_json, StateJson};
    use crate::config::MasterConfig;
    use crate::sim::{task, Sim, SimFramework};
    use crate::state::Call;
    use crate::view::Snapshot;

    /// A cluster with every kind of entry `/master/state` has: running,
    /// staging, finished, unreachable and killed tasks, a completed
    /// framework, outstanding offers, odd resource names and attributes.
    fn cluster() -> Snapshot {
        let config = MasterConfig {
            weights: [("prod".to_string(), 2.5)].into_iter().collect(),
            ..MasterConfig::default()
        };
        let mut sim = Sim::new(config, 3);
        sim.add_agent("s0", "cpus:4;mem:1024;ports:[31000-31005,31010-31020]")
            .unwrap();
        // `active` collides with an agent key; `bar` is a second range set.
        sim.add_agent(
            "s1",
            "cpus:2;mem:512;disk:100;gpus:1;foo:3;active:2;bar:[1-5]",
        )
        .unwrap();
        sim.frameworks.insert(
            "aware".into(),
            SimFramework {
                info: v1::FrameworkInfo {
                    name: "aware".into(),
                    roles: vec!["prod".into()],
                    failover_timeout: 60.0,
                    capabilities: vec!["PARTITION_AWARE".into()],
                    ..Default::default()
                },
                auto_ack: true,
                ..Default::default()
            },
        );
        let old = sim.subscribe("old", "*").unwrap();
        let aware = sim.subscribe("aware", "prod").unwrap();
        let mut n = 0;
        for step in 0..4 {
            sim.now = Duration::from_secs(10 * (step + 1));
            sim.allocate();
            for name in ["old", "aware"] {
                let offers: Vec<String> = sim.frameworks[name].offers.keys().cloned().collect();
                for o in offers {
                    n += 1;
                    let mut t = task(&format!("t{n}"), "cpus:0.5;mem:32;ports:[31000-31000]");
                    t.labels = vec![v1::Label {
                        key: "k\"ey".into(),
                        value: "välue".into(),
                    }];
                    sim.launch(name, &o, vec![t, task(&format!("u{n}"), "cpus:0.25")])
                        .unwrap();
                }
            }
        }
        sim.agent_update("s0", &aware, "u2", TaskState::TaskFinished);
        if let Some(a) = sim.agents.get_mut("s0") {
            a.auto_run = false;
        }
        sim.call(Call::Teardown(v1::TeardownRequest { framework_id: old }))
            .unwrap();
        sim.now += Duration::from_secs(10);
        sim.allocate();
        let offers: Vec<String> = sim.frameworks["aware"].offers.keys().cloned().collect();
        if let Some(o) = offers.first() {
            sim.launch("aware", o, vec![task("staging", "cpus:0.1")])
                .unwrap();
        }
        // s1 goes silent: the aware framework's tasks there become unreachable.
        sim.partition_agent("s1");
        sim.advance(Duration::from_secs(200), Duration::from_secs(5));
        sim.allocate();
        let mut snap = Snapshot::of(&sim.master);
        let id = sim.aid("s0");
        if let Some(a) = snap.agents.get_mut(&id) {
            a.info.attributes = vec![
                v1::Attribute {
                    name: "rack".into(),
                    r#type: v1::ValueType::Text as i32,
                    text: "r1".into(),
                    scalar: 0.0,
                },
                v1::Attribute {
                    name: "level".into(),
                    r#type: v1::ValueType::Scalar as i32,
                    text: String::new(),
                    scalar: 3.5,
                },
            ];
        }
        snap
    }

    fn both(snap: &Snapshot) -> (String, String) {
        let old = serde_json::to_string(&state_json(snap)).unwrap();
        let new = serde_json::to_string(&StateJson(snap)).unwrap();
        let by_hand = String::from_utf8(super::super::state_bytes(snap).unwrap()).unwrap();
        assert_eq!(new, by_hand);
        (old, new)
    }

    #[test]
    fn direct_matches_value() {
        let mut snap = cluster();
        let (old, new) = both(&snap);
        // The cluster has what the comparison is meant to cover.
        for needle in [
            "TASK_UNREACHABLE",
            "TASK_STAGING",
            "TASK_FINISHED",
            "TASK_KILLED",
            "\"bar\":\"[1-5]\"",
            "\"level\":3.5",
            "\"offers\":[{",
        ] {
            assert!(old.contains(needle), "{needle} missing from {old}");
        }
        assert_eq!(old, new);
        snap.leader = Some("m1:5050".into());
        snap.elected_time = Some(12.25);
        snap.leading = false;
        let (old, new) = both(&snap);
        assert_eq!(old, new);
        assert_eq!(
            serde_json::to_string(&StateJson(&Snapshot::default())).unwrap(),
            serde_json::to_string(&state_json(&Snapshot::default())).unwrap()
        );
    }
}
