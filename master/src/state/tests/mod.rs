//! The master's behaviours on the simulated cluster: no processes, no
//! network, a virtual clock; each test runs in microseconds. Failover and
//! removal-rate tests are in `failover.rs`, the property test in
//! `properties.rs`.

mod failover;
mod properties;

use std::time::Duration;

use mezzo_proto::v1::{self, event, TaskState};
use mezzo_proto::Resources;
use proptest::prelude::*;

use super::{Call, Input, LeaderState};
use crate::config::MasterConfig;
use crate::registry::{AdmittedAgent, RegisteredFramework, RegistryState};
use crate::sim::{task, Sim};

const SEC: Duration = Duration::from_secs(1);

fn sim() -> Sim {
    Sim::new(MasterConfig::default(), 7)
}

/// Agent "a" (cpus:2;mem:512), framework "f", and task "t" (cpus:1;mem:64)
/// launched on the first offer; `auto_run`: the agent reports RUNNING at
/// once. Returns the cluster and f's id.
fn one_task(auto_run: bool) -> (Sim, String) {
    let mut sim = sim();
    sim.add_agent("a", "cpus:2;mem:512").unwrap();
    let fid = sim.subscribe("f", "*").unwrap();
    sim.allocate();
    let offer = first_offer(&sim, "f");
    sim.agents.get_mut("a").unwrap().auto_run = auto_run;
    sim.launch("f", &offer, vec![task("t", "cpus:1;mem:64")])
        .unwrap();
    (sim, fid)
}

fn first_offer(sim: &Sim, fw: &str) -> String {
    sim.frameworks[fw]
        .offers
        .keys()
        .next()
        .cloned()
        .unwrap_or_default()
}

fn states_of(sim: &Sim, fw: &str, task_id: &str) -> Vec<TaskState> {
    sim.frameworks[fw]
        .updates
        .iter()
        .filter(|s| s.task_id == task_id)
        .map(mezzo_proto::task_state)
        .collect()
}

fn offers_received(sim: &Sim, fw: &str) -> usize {
    sim.frameworks[fw]
        .events
        .iter()
        .filter(|e| matches!(e.event, Some(event::Event::Offers(_))))
        .count()
}

fn decline(sim: &mut Sim, fw: &str, offer: &str, refuse: f64) {
    let framework_id = sim.fid(fw);
    if let Some(f) = sim.frameworks.get_mut(fw) {
        f.offers.remove(offer);
    }
    sim.call(Call::Decline(v1::DeclineRequest {
        framework_id,
        offer_ids: vec![offer.to_string()],
        filters: Some(v1::Filters {
            refuse_seconds: Some(refuse),
        }),
    }))
    .unwrap();
}

#[test]
fn an_agent_is_offered_whole_and_a_launch_runs() {
    let mut sim = sim();
    sim.add_agent("a", "cpus:4;mem:1024;ports:[31000-31010]")
        .unwrap();
    sim.subscribe("f", "*").unwrap();
    sim.allocate();
    let offers = &sim.frameworks["f"].offers;
    assert_eq!(offers.len(), 1);
    let offer = offers.values().next().cloned().unwrap();
    let res = Resources::from_proto(&offer.resources);
    assert_eq!(res.scalar("cpus"), 4.0);
    assert_eq!(offer.hostname, "a.sim");
    sim.launch("f", &offer.id, vec![task("t1", "cpus:1;mem:64")])
        .unwrap();
    assert_eq!(states_of(&sim, "f", "t1"), vec![TaskState::TaskRunning]);
    let a = &sim.master.agents[&sim.aid("a")];
    assert_eq!(a.used.scalar("cpus"), 1.0);
    assert!(a.offered.is_empty());
    // The rest is offered again in the next round (no filter was asked: 5 s default).
    sim.advance(6 * SEC, SEC);
    sim.allocate();
    let again = sim.frameworks["f"].offers.values().next().cloned().unwrap();
    assert_eq!(Resources::from_proto(&again.resources).scalar("cpus"), 3.0);
}

#[test]
fn refuse_filters_hold_until_they_expire_and_revive_clears_them() {
    let mut sim = sim();
    sim.add_agent("a", "cpus:2;mem:512").unwrap();
    sim.subscribe("f", "*").unwrap();
    sim.allocate();
    let offer = first_offer(&sim, "f");
    decline(&mut sim, "f", &offer, 10.0);
    sim.advance(5 * SEC, SEC);
    sim.allocate();
    assert!(sim.frameworks["f"].offers.is_empty(), "filtered for 10 s");
    sim.advance(6 * SEC, SEC);
    sim.allocate();
    let offer = first_offer(&sim, "f");
    assert!(!offer.is_empty(), "offered again after the filter expired");
    decline(&mut sim, "f", &offer, 3600.0);
    sim.allocate();
    assert!(sim.frameworks["f"].offers.is_empty());
    let fid = sim.fid("f");
    sim.call(Call::Revive(v1::RolesRequest {
        framework_id: fid,
        roles: vec![],
    }))
    .unwrap();
    sim.allocate();
    assert_eq!(sim.frameworks["f"].offers.len(), 1, "revive clears filters");
}

#[test]
fn suppressed_frameworks_get_no_offers() {
    let mut sim = sim();
    sim.add_agent("a", "cpus:2;mem:512").unwrap();
    sim.subscribe("f", "*").unwrap();
    let fid = sim.fid("f");
    sim.call(Call::Suppress(v1::RolesRequest {
        framework_id: fid,
        roles: vec![],
    }))
    .unwrap();
    sim.allocate();
    sim.allocate();
    assert_eq!(offers_received(&sim, "f"), 0);
}

#[test]
fn offers_are_rescinded_after_the_offer_timeout() {
    let mut sim = Sim::new(
        MasterConfig {
            offer_timeout: Some(2 * SEC),
            ..MasterConfig::default()
        },
        1,
    );
    sim.add_agent("a", "cpus:2;mem:512").unwrap();
    sim.subscribe("f", "*").unwrap();
    sim.allocate();
    let offer = first_offer(&sim, "f");
    sim.advance(SEC, SEC);
    assert!(sim.frameworks["f"].offers.contains_key(&offer));
    sim.advance(2 * SEC, SEC);
    assert!(sim.frameworks["f"].offers.is_empty(), "rescinded");
    assert!(sim.master.offers.is_empty());
    assert!(sim.master.agents[&sim.aid("a")].offered.is_empty());
    // Accepting the rescinded offer drops the task.
    sim.launch("f", &offer, vec![task("late", "cpus:1;mem:32")])
        .unwrap();
    assert_eq!(states_of(&sim, "f", "late"), vec![TaskState::TaskLost]);
}

#[test]
fn stale_and_foreign_offers_are_refused() {
    let mut sim = sim();
    sim.add_agent("a", "cpus:2;mem:512").unwrap();
    sim.subscribe("f", "*").unwrap();
    sim.frameworks.get_mut("f").unwrap().info.capabilities = vec!["PARTITION_AWARE".into()];
    sim.subscribe("f", "*").unwrap();
    sim.subscribe("g", "*").unwrap();
    sim.allocate();
    let (owner, other) = if sim.frameworks["f"].offers.is_empty() {
        ("g", "f")
    } else {
        ("f", "g")
    };
    let offer = first_offer(&sim, owner);
    sim.launch(other, &offer, vec![task("x", "cpus:1;mem:32")])
        .unwrap();
    let st = states_of(&sim, other, "x");
    assert!(matches!(
        st[..],
        [TaskState::TaskDropped] | [TaskState::TaskLost]
    ));
    sim.launch(owner, "no-such-offer", vec![task("y", "cpus:1;mem:32")])
        .unwrap();
    let st = states_of(&sim, owner, "y");
    assert!(matches!(
        st[..],
        [TaskState::TaskDropped] | [TaskState::TaskLost]
    ));
    // A task larger than the offer is TASK_ERROR naming what is short.
    sim.allocate();
    let offer = sim.frameworks.values().find_map(|f| {
        f.offers
            .keys()
            .next()
            .cloned()
            .map(|o| (f.info.name.clone(), o))
    });
    if let Some((name, offer)) = offer {
        sim.launch(&name, &offer, vec![task("big", "cpus:100;mem:32")])
            .unwrap();
        let s = sim.frameworks[&name].updates.last().cloned().unwrap();
        assert_eq!(mezzo_proto::task_state(&s), TaskState::TaskError);
        assert!(s.message.contains("cpus"), "{}", s.message);
    }
}

#[test]
fn drf_weights_split_a_cluster_one_to_three() {
    let mut sim = Sim::new(
        MasterConfig {
            weights: [("a".to_string(), 1.0), ("b".to_string(), 3.0)].into(),
            ..MasterConfig::default()
        },
        3,
    );
    for i in 0..40 {
        sim.add_agent(&format!("n{i}"), "cpus:1;mem:256").unwrap();
    }
    sim.subscribe("fa", "a").unwrap();
    sim.subscribe("fb", "b").unwrap();
    // Each framework keeps every offer it gets (launches a task on it).
    let mut n = 0;
    for _ in 0..40 {
        sim.allocate();
        for fw in ["fa", "fb"] {
            let offers: Vec<String> = sim.frameworks[fw].offers.keys().cloned().collect();
            for o in offers {
                n += 1;
                sim.launch(fw, &o, vec![task(&format!("t{n}"), "cpus:1;mem:256")])
                    .unwrap();
            }
        }
    }
    let used = |fw: &str| sim.master.frameworks[&sim.fid(fw)].used.scalar("cpus");
    assert_eq!(used("fa") + used("fb"), 40.0);
    assert_eq!(used("fa"), 10.0, "weight 1 of 4");
    assert_eq!(used("fb"), 30.0, "weight 3 of 4");
}

#[test]
fn silent_agents_become_unreachable_and_their_tasks_lost_or_unreachable() {
    let mut sim = sim();
    sim.add_agent("a", "cpus:2;mem:512").unwrap();
    sim.subscribe("plain", "*").unwrap();
    sim.frameworks.insert(
        "aware".into(),
        crate::sim::SimFramework {
            info: v1::FrameworkInfo {
                name: "aware".into(),
                capabilities: vec!["PARTITION_AWARE".into()],
                failover_timeout: 60.0,
                ..Default::default()
            },
            auto_ack: true,
            ..Default::default()
        },
    );
    sim.subscribe("aware", "*").unwrap();
    for (fw, t) in [("plain", "p1"), ("aware", "w1")] {
        sim.allocate();
        let offer = first_offer(&sim, fw);
        sim.launch(fw, &offer, vec![task(t, "cpus:1;mem:64")])
            .unwrap();
    }
    sim.partition_agent("a");
    // 15 s pings × 5 timeouts = 75 s of silence.
    sim.advance(70 * SEC, SEC);
    assert!(sim.master.agents[&sim.aid("a")].reachable);
    sim.advance(10 * SEC, SEC);
    assert!(!sim.master.agents[&sim.aid("a")].reachable);
    assert_eq!(
        states_of(&sim, "plain", "p1").last(),
        Some(&TaskState::TaskLost)
    );
    assert_eq!(
        states_of(&sim, "aware", "w1").last(),
        Some(&TaskState::TaskUnreachable)
    );
    // The agent comes back with both tasks: the unreachable one is running
    // again; the lost one is killed (its framework was told it is gone).
    sim.attach_agent("a").unwrap();
    assert_eq!(
        states_of(&sim, "aware", "w1").last(),
        Some(&TaskState::TaskRunning)
    );
    let killed = sim.agents["a"].received.iter().any(|m| {
        matches!(&m.message, Some(v1::master_message::Message::KillTask(k)) if k.task_id == "p1")
    });
    assert!(
        killed,
        "a task reported lost is killed when its agent returns"
    );
}

#[test]
fn a_reregistering_agent_brings_its_tasks_and_loses_the_rest() {
    let mut sim = sim();
    sim.add_agent("a", "cpus:4;mem:1024").unwrap();
    let fid = sim.subscribe("f", "*").unwrap();
    sim.allocate();
    let offer = first_offer(&sim, "f");
    sim.launch(
        "f",
        &offer,
        vec![
            task("keep", "cpus:1;mem:64"),
            task("vanish", "cpus:1;mem:64"),
        ],
    )
    .unwrap();
    // The agent restarts and has lost one task.
    sim.disconnect_agent("a");
    sim.agents
        .get_mut("a")
        .unwrap()
        .tasks
        .remove(&(fid.clone(), "vanish".to_string()));
    sim.attach_agent("a").unwrap();
    assert_eq!(
        states_of(&sim, "f", "vanish").last(),
        Some(&TaskState::TaskLost)
    );
    assert_eq!(
        sim.master.frameworks[&fid].tasks["keep"].state,
        TaskState::TaskRunning
    );
    assert_eq!(sim.master.agents[&sim.aid("a")].used.scalar("cpus"), 1.0);
    assert_eq!(sim.master.metrics.agent_reregistrations, 1);
}

#[test]
fn a_new_leader_adopts_tasks_agents_report() {
    let mut sim = Sim::new(
        MasterConfig {
            zk: Some("zk://sim/mezzo".into()),
            ..MasterConfig::default()
        },
        1,
    );
    assert!(!sim.master.leading());
    assert!(
        sim.add_agent("a", "cpus:2;mem:512").is_err(),
        "standbys refuse"
    );
    sim.input(Input::Leadership(LeaderState::Leading {
        epoch: 5,
        registry: None,
    }))
    .unwrap();
    let agent = sim.agents.get_mut("a").unwrap();
    agent.id = "old-S0".into();
    agent.tasks.insert(
        ("fw-1".into(), "t".into()),
        (task("t", "cpus:1;mem:64"), TaskState::TaskRunning),
    );
    sim.attach_agent("a").unwrap();
    let fw = &sim.master.frameworks["fw-1"];
    assert_eq!(fw.tasks["t"].state, TaskState::TaskRunning);
    assert!(!fw.connected, "it gets them back when it re-subscribes");
    assert!(sim.agents["a"].received.iter().all(|m| m.epoch == 5));
}

#[test]
fn a_framework_that_does_not_return_within_its_failover_timeout_is_removed() {
    let mut sim = sim();
    sim.add_agent("a", "cpus:2;mem:512").unwrap();
    sim.frameworks.insert(
        "f".into(),
        crate::sim::SimFramework {
            info: v1::FrameworkInfo {
                name: "f".into(),
                failover_timeout: 10.0,
                ..Default::default()
            },
            auto_ack: true,
            ..Default::default()
        },
    );
    let fid = sim.subscribe("f", "*").unwrap();
    sim.allocate();
    let offer = first_offer(&sim, "f");
    sim.launch("f", &offer, vec![task("t", "cpus:1;mem:64")])
        .unwrap();
    sim.disconnect_framework("f");
    sim.advance(5 * SEC, SEC);
    // Back within the timeout: same id, task kept.
    assert_eq!(sim.subscribe("f", "*").unwrap(), fid);
    assert!(sim.master.frameworks[&fid].tasks.contains_key("t"));
    sim.disconnect_framework("f");
    sim.advance(11 * SEC, SEC);
    assert!(!sim.master.frameworks.contains_key(&fid));
    assert!(sim.live_tasks("a").is_empty(), "agent told to shut it down");
    assert!(sim.master.registry.removed_frameworks.contains(&fid));
    assert!(
        sim.subscribe("f", "*").is_err(),
        "a removed id may not return"
    );
    assert_eq!(sim.master.agents[&sim.aid("a")].used.scalar("cpus"), 0.0);
}

#[test]
fn reconciliation_answers_known_and_unknown_tasks() {
    let (mut sim, fid) = one_task(true);
    let before = sim.frameworks["f"].updates.len();
    sim.call(Call::Reconcile(v1::ReconcileRequest {
        framework_id: fid.clone(),
        tasks: vec![],
    }))
    .unwrap();
    let implicit: Vec<_> = sim.frameworks["f"].updates[before..].to_vec();
    assert_eq!(implicit.len(), 1);
    assert_eq!(
        mezzo_proto::task_state(&implicit[0]),
        TaskState::TaskRunning
    );
    assert!(
        implicit[0].uuid.is_empty(),
        "reconciliation updates are not acked"
    );
    sim.call(Call::Reconcile(v1::ReconcileRequest {
        framework_id: fid,
        tasks: vec![v1::reconcile_request::Task {
            task_id: "nope".into(),
            agent_id: String::new(),
        }],
    }))
    .unwrap();
    let last = sim.frameworks["f"].updates.last().cloned().unwrap();
    assert_eq!(last.task_id, "nope");
    assert_eq!(mezzo_proto::task_state(&last), TaskState::TaskLost);
}

#[test]
fn the_registry_is_recovered_and_missing_agents_expire() {
    let mut sim = Sim::new(
        MasterConfig {
            zk: Some("zk://sim/mezzo".into()),
            agent_reregister_timeout: 30 * SEC,
            ..MasterConfig::default()
        },
        1,
    );
    let mut registry = RegistryState::default();
    registry.agents.insert(
        "gone-S1".into(),
        AdmittedAgent {
            hostname: "gone".into(),
            port: 5051,
            resources: "cpus:1;mem:128".into(),
        },
    );
    registry.frameworks.insert(
        "fw-7".into(),
        RegisteredFramework {
            name: "seven".into(),
            role: "*".into(),
            failover_timeout: 100.0,
            user: "root".into(),
            capabilities: vec![],
        },
    );
    registry.removed_frameworks.insert("fw-dead".into());
    sim.input(Input::Leadership(LeaderState::Leading {
        epoch: 2,
        registry: Some(registry),
    }))
    .unwrap();
    assert!(sim.master.frameworks.contains_key("fw-7"));
    sim.frameworks.insert(
        "dead".into(),
        crate::sim::SimFramework {
            id: "fw-dead".into(),
            info: v1::FrameworkInfo {
                name: "dead".into(),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    assert!(sim.subscribe("dead", "*").is_err());
    sim.advance(29 * SEC, SEC);
    assert!(!sim.master.agents.contains_key("gone-S1"));
    sim.advance(2 * SEC, SEC);
    assert!(!sim.master.agents["gone-S1"].reachable);
}

#[test]
fn a_standby_sends_nothing_and_a_deposed_leader_closes_every_stream() {
    let mut sim = sim();
    sim.add_agent("a", "cpus:2;mem:512").unwrap();
    sim.subscribe("f", "*").unwrap();
    sim.input(Input::Leadership(LeaderState::Following {
        leader: Some("10.0.0.2:5050".into()),
    }))
    .unwrap();
    assert!(sim.agents["a"].conn.is_none());
    assert_eq!(
        sim.frameworks["f"].closed,
        Some(Some("master is no longer the leader".into()))
    );
    let events = sim.frameworks["f"].events.len();
    sim.allocate();
    sim.advance(20 * SEC, SEC);
    assert_eq!(sim.frameworks["f"].events.len(), events);
    let err = sim.subscribe("f", "*").unwrap_err();
    assert!(err.to_string().contains("10.0.0.2:5050"), "{err}");
}

#[test]
fn acknowledged_terminal_tasks_move_to_completed() {
    let (mut sim, fid) = one_task(true);
    sim.agent_update("a", &fid, "t", TaskState::TaskFinished);
    let fw = &sim.master.frameworks[&fid];
    assert!(!fw.tasks.contains_key("t"));
    assert_eq!(
        fw.completed.back().map(|t| t.state),
        Some(TaskState::TaskFinished)
    );
    assert!(sim.agents["a"].unacked.is_empty());
    assert_eq!(sim.master.agents[&sim.aid("a")].used.scalar("cpus"), 0.0);
}

#[test]
fn updates_are_delivered_once_each_and_in_order_across_a_framework_reconnect() {
    let (mut sim, fid) = one_task(false);
    sim.disconnect_framework("f");
    sim.agent_update("a", &fid, "t", TaskState::TaskStarting);
    sim.agent_update("a", &fid, "t", TaskState::TaskRunning);
    sim.agent_update("a", &fid, "t", TaskState::TaskFinished);
    assert!(sim.frameworks["f"].updates.is_empty());
    sim.subscribe("f", "*").unwrap();
    // The agent retries its head when the framework is back.
    sim.disconnect_agent("a");
    sim.attach_agent("a").unwrap();
    assert_eq!(
        states_of(&sim, "f", "t"),
        vec![
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskFinished
        ]
    );
    assert!(sim.agents["a"].unacked.is_empty());
}

/// The harness is the base of the scale benchmarks: 10,000 agents and 100
/// frameworks, one round offering every agent, a task launched on each.
#[test]
fn the_simulation_runs_ten_thousand_agents() {
    let mut sim = Sim::new(MasterConfig::default(), 11);
    for i in 0..10_000 {
        sim.add_agent(&format!("n{i}"), "cpus:8;mem:16384;ports:[31000-32000]")
            .unwrap();
    }
    for i in 0..100 {
        sim.subscribe(&format!("f{i}"), "*").unwrap();
    }
    sim.allocate();
    let offered: usize = sim.frameworks.values().map(|f| f.offers.len()).sum();
    assert_eq!(offered, 10_000, "every agent offered once");
    let names: Vec<String> = sim.frameworks.keys().cloned().collect();
    let mut n = 0;
    for name in names {
        let offers: Vec<String> = sim.frameworks[&name].offers.keys().cloned().collect();
        for o in offers {
            n += 1;
            sim.launch(&name, &o, vec![task(&format!("t{n}"), "cpus:1;mem:64")])
                .unwrap();
        }
    }
    let running: usize = sim
        .master
        .frameworks
        .values()
        .map(|f| {
            f.tasks
                .values()
                .filter(|t| t.state == TaskState::TaskRunning)
                .count()
        })
        .sum();
    assert_eq!(running, 10_000);
    // Fair: 100 frameworks with equal shares got 100 agents each.
    for f in sim.master.frameworks.values() {
        assert_eq!(f.tasks.len(), 100, "framework {}", f.id);
    }
}
