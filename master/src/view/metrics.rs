//! `/metrics/snapshot` with Mesos' metric names, rendered from a
//! [`Snapshot`].

use std::collections::HashMap;

use mezzo_proto::v1::TaskState;
use mezzo_proto::Resources;
use serde_json::{json, Map, Value};

use super::Snapshot;

/// Mesos counts ACCEPT messages under `messages_launch_tasks`; the tasks
/// they launched are `mezzo/tasks_launched`.
const CALL_METRICS: [&str; 8] = [
    "master/messages_launch_tasks",
    "master/messages_decline_offers",
    "master/messages_revive_offers",
    "master/messages_suppress_offers",
    "master/messages_kill_task",
    "master/messages_status_update_acknowledgement",
    "master/messages_reconcile_tasks",
    "master/messages_unregister_framework",
];

fn cluster_gauges(snap: &Snapshot, m: &mut Map<String, Value>) {
    let agents = || snap.agents.values();
    let frameworks = || snap.frameworks.values();
    let gauges: [(&str, usize); 9] = [
        (
            "master/slaves_active",
            agents().filter(|a| a.active()).count(),
        ),
        (
            "master/slaves_connected",
            agents().filter(|a| a.connected).count(),
        ),
        (
            "master/slaves_disconnected",
            agents().filter(|a| a.reachable && !a.connected).count(),
        ),
        (
            "master/slaves_unreachable",
            agents().filter(|a| !a.reachable).count(),
        ),
        (
            "master/frameworks_active",
            frameworks().filter(|f| f.connected).count(),
        ),
        (
            "master/frameworks_connected",
            frameworks().filter(|f| f.connected).count(),
        ),
        (
            "master/frameworks_disconnected",
            frameworks().filter(|f| !f.connected).count(),
        ),
        ("master/outstanding_offers", snap.offers.len()),
        ("master/elected", usize::from(snap.leading)),
    ];
    for (name, v) in gauges {
        m.insert(name.into(), json!(v));
    }
    let mut counts: HashMap<TaskState, u64> = HashMap::new();
    for f in frameworks() {
        for t in f.tasks.values().chain(f.completed.iter()) {
            *counts.entry(t.state).or_default() += 1;
        }
    }
    for s in TaskState::ALL {
        m.insert(
            format!("master/tasks_{}", s.metric_suffix()),
            json!(counts.get(&s).copied().unwrap_or(0)),
        );
    }
}

fn resource_gauges(snap: &Snapshot, m: &mut Map<String, Value>) {
    let mut total = Resources::new();
    let mut used = Resources::new();
    for a in snap.agents.values().filter(|a| a.reachable) {
        total.add(&a.total);
        used.add(&a.used);
    }
    let mut offered = Resources::new();
    for o in snap.offers.values() {
        offered.add(&o.resources);
    }
    for r in ["cpus", "mem", "disk"] {
        let (t, u) = (total.scalar(r), used.scalar(r));
        m.insert(format!("master/{r}_total"), json!(t));
        m.insert(format!("master/{r}_used"), json!(u));
        m.insert(
            format!("master/{r}_percent"),
            json!(if t > 0.0 { u / t } else { 0.0 }),
        );
        m.insert(format!("allocator/mesos/resources/{r}/total"), json!(t));
        m.insert(
            format!("allocator/mesos/resources/{r}/offered_or_allocated"),
            json!(u + offered.scalar(r)),
        );
    }
}

fn counters(snap: &Snapshot, m: &mut Map<String, Value>) {
    let c = &snap.metrics;
    let counters: [(&str, u64); 11] = [
        ("master/messages_status_update", c.status_updates),
        ("master/valid_status_updates", c.status_updates),
        ("mezzo/tasks_launched", c.launched_tasks),
        ("master/invalid_launches", c.invalid_launches),
        ("master/slave_registrations", c.agent_registrations),
        ("master/slave_reregistrations", c.agent_reregistrations),
        ("master/slave_removals", c.agent_removals),
        // Mesos' names for the --agent-removal-rate-limit queue.
        (
            "master/slave_unreachable_scheduled",
            c.agent_removals_scheduled,
        ),
        (
            "master/slave_unreachable_canceled",
            c.agent_removals_canceled,
        ),
        ("master/slave_unreachable_completed", c.agent_removals),
        ("allocator/mesos/allocation_runs", c.allocation_runs),
    ];
    for (name, value) in counters {
        m.insert(name.into(), json!(value));
    }
    for name in CALL_METRICS {
        m.insert(name.into(), json!(c.calls.get(name).copied().unwrap_or(0)));
    }
    let t = &c.timings;
    t.allocation_run
        .insert_into(m, "allocator/mesos/allocation_run_ms");
    t.offer_accept
        .insert_into(m, "mezzo/offer_accept_latency_ms");
    t.launch.insert_into(m, "mezzo/task_launch_latency_ms");
}

/// The `/metrics/snapshot` document.
pub(crate) fn metrics_json(snap: &Snapshot) -> Value {
    let mut m = Map::new();
    m.insert(
        "master/uptime_secs".into(),
        json!(snap.taken_at - snap.start_time),
    );
    cluster_gauges(snap, &mut m);
    resource_gauges(snap, &mut m);
    counters(snap, &mut m);
    Value::Object(m)
}
