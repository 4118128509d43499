//! The master's behaviours on the simulated cluster: no processes, no
//! network, a virtual clock; each test runs in microseconds.

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
    let mut sim = sim();
    sim.add_agent("a", "cpus:2;mem:512").unwrap();
    let fid = sim.subscribe("f", "*").unwrap();
    sim.allocate();
    let offer = first_offer(&sim, "f");
    sim.launch("f", &offer, vec![task("t", "cpus:1;mem:64")])
        .unwrap();
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
    let mut sim = sim();
    sim.add_agent("a", "cpus:2;mem:512").unwrap();
    let fid = sim.subscribe("f", "*").unwrap();
    sim.allocate();
    let offer = first_offer(&sim, "f");
    sim.launch("f", &offer, vec![task("t", "cpus:1;mem:64")])
        .unwrap();
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
    let mut sim = sim();
    sim.add_agent("a", "cpus:2;mem:512").unwrap();
    let fid = sim.subscribe("f", "*").unwrap();
    sim.allocate();
    let offer = first_offer(&sim, "f");
    sim.agents.get_mut("a").unwrap().auto_run = false;
    sim.launch("f", &offer, vec![task("t", "cpus:1;mem:64")])
        .unwrap();
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

/// Status updates framework `fw` received on its latest subscription.
fn updates_since_subscribed(sim: &Sim, fw: &str) -> Vec<(String, TaskState)> {
    let events = &sim.frameworks[fw].events;
    let start = events
        .iter()
        .rposition(|e| matches!(e.event, Some(event::Event::Subscribed(_))))
        .map_or(0, |i| i + 1);
    events[start..]
        .iter()
        .filter_map(|e| match &e.event {
            Some(event::Event::Update(u)) => u
                .status
                .as_ref()
                .map(|s| (s.task_id.clone(), mezzo_proto::task_state(s))),
            _ => None,
        })
        .collect()
}

fn rate_limited(limit: &str) -> MasterConfig {
    MasterConfig {
        agent_removal_rate_limit: Some(crate::config::RateLimit::parse(limit).unwrap()),
        ..MasterConfig::default()
    }
}

/// When each of `names` became unreachable, in seconds of virtual time,
/// advancing one second at a time up to `until`.
fn removal_times(sim: &mut Sim, names: &[String], until: Duration) -> Vec<Option<u64>> {
    let mut at = vec![None; names.len()];
    while sim.now < until {
        sim.advance(SEC, SEC);
        for (i, n) in names.iter().enumerate() {
            let id = sim.aid(n);
            if at[i].is_none() && !sim.master.agents[&id].reachable {
                at[i] = Some(sim.now.as_secs());
            }
        }
    }
    at
}

#[test]
fn silent_agents_are_removed_at_the_rate_limit_and_one_that_returns_is_kept() {
    let mut sim = Sim::new(rate_limited("1/10secs"), 3);
    let names: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    for n in &names {
        sim.add_agent(n, "cpus:1;mem:256").unwrap();
    }
    let fid = sim.subscribe("f", "*").unwrap();
    for i in 0..10 {
        sim.allocate();
        let offer = first_offer(&sim, "f");
        sim.launch("f", &offer, vec![task(&format!("t{i}"), "cpus:1;mem:256")])
            .unwrap();
    }
    let task_on = |sim: &Sim, n: &str| -> String {
        let aid = sim.aid(n);
        sim.master.frameworks[&fid]
            .tasks
            .values()
            .chain(sim.master.frameworks[&fid].completed.iter())
            .find(|t| t.agent_id == aid)
            .map(|t| t.info.task_id.clone())
            .unwrap()
    };
    let tasks: Vec<String> = names.iter().map(|n| task_on(&sim, n)).collect();
    for n in &names {
        sim.partition_agent(n);
    }
    // 75 s of silence (15 s pings × 5): all ten time out together; the first
    // goes at once, the rest wait in the queue, still counted as agents.
    let first = removal_times(&mut sim, &names, 75 * SEC);
    assert_eq!(first.iter().flatten().count(), 1, "{first:?}");
    assert_eq!(first[0], Some(75));
    assert_eq!(sim.master.metrics.agent_removals_scheduled, 10);
    let queued_running = (1..10)
        .filter(|&i| states_of(&sim, "f", &tasks[i]).last() == Some(&TaskState::TaskRunning))
        .count();
    assert_eq!(queued_running, 9, "queued agents' tasks are not lost yet");
    // While queued, n4 heals (its heartbeats arrive again on its stream)
    // and n6 re-registers: neither is removed, nor takes a removal's turn.
    let mid = removal_times(&mut sim, &names, 95 * SEC);
    sim.agents.get_mut("n4").unwrap().partitioned = false;
    sim.disconnect_agent("n6");
    sim.attach_agent("n6").unwrap();
    let rest = removal_times(&mut sim, &names, 200 * SEC);
    let mut at: Vec<Option<u64>> = (0..names.len())
        .map(|i| first[i].or(mid[i]).or(rest[i]))
        .collect();
    assert_eq!(at[4], None, "healed while queued: kept");
    assert_eq!(at[6], None, "re-registered while queued: kept");
    at.retain(Option::is_some);
    let expected: Vec<Option<u64>> = (0..8).map(|k| Some(75 + 10 * k)).collect();
    assert_eq!(at, expected, "one removal every 10 s");
    assert_eq!(sim.master.metrics.agent_removals, 8);
    assert_eq!(sim.master.metrics.agent_removals_canceled, 2);
    // Operators see the queue under Mesos' names.
    let m = crate::view::Snapshot::of(&sim.master).metrics();
    assert_eq!(m["master/slave_unreachable_scheduled"], 10);
    assert_eq!(m["master/slave_unreachable_canceled"], 2);
    assert_eq!(m["master/slave_unreachable_completed"], 8);
    for (i, t) in tasks.iter().enumerate() {
        let last = states_of(&sim, "f", t).last().copied();
        let want = if i == 4 || i == 6 {
            TaskState::TaskRunning
        } else {
            TaskState::TaskLost
        };
        assert_eq!(last, Some(want), "{t} on n{i}");
    }
}

#[test]
fn without_a_rate_limit_silent_agents_are_removed_together() {
    let mut sim = sim();
    let names: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
    for n in &names {
        sim.add_agent(n, "cpus:1;mem:256").unwrap();
        sim.partition_agent(n);
    }
    let at = removal_times(&mut sim, &names, 80 * SEC);
    assert_eq!(at, vec![Some(75); 5]);
    assert_eq!(sim.master.metrics.agent_removals, 5);
}

#[test]
fn agents_missing_after_a_failover_are_removed_at_the_rate_limit() {
    let mut sim = Sim::new(
        MasterConfig {
            agent_reregister_timeout: 30 * SEC,
            ..rate_limited("1/10secs")
        },
        5,
    );
    let names: Vec<String> = (0..4).map(|i| format!("n{i}")).collect();
    for n in &names {
        sim.add_agent(n, "cpus:1;mem:256").unwrap();
    }
    sim.subscribe("f", "*").unwrap();
    sim.fail_over(2).unwrap();
    sim.subscribe("f", "*").unwrap();
    let start = sim.now.as_secs();
    // None re-registers in time: all are due at once, removed 10 s apart;
    // n2 re-registers while it waits and is kept.
    let mut at = vec![None; names.len()];
    while sim.now.as_secs() < start + 80 {
        sim.advance(SEC, SEC);
        if sim.now.as_secs() == start + 35 {
            sim.attach_agent("n2").unwrap();
        }
        for (i, n) in names.iter().enumerate() {
            let id = sim.aid(n);
            if at[i].is_none() && sim.master.agents.get(&id).is_some_and(|a| !a.reachable) {
                at[i] = Some(sim.now.as_secs() - start);
            }
        }
    }
    assert_eq!(at, vec![Some(30), Some(40), None, Some(50)]);
    assert!(sim.master.agents[&sim.aid("n2")].active());
}

#[test]
fn an_unacknowledged_update_is_delivered_once_per_subscription_by_the_next_leader() {
    for agent_first in [true, false] {
        let mut sim = sim();
        sim.add_agent("a", "cpus:2;mem:512").unwrap();
        let fid = sim.subscribe("f", "*").unwrap();
        sim.frameworks.get_mut("f").unwrap().auto_ack = false;
        sim.allocate();
        let offer = first_offer(&sim, "f");
        sim.launch("f", &offer, vec![task("t", "cpus:1;mem:64")])
            .unwrap();
        // Delivered, not acknowledged, when the leader dies.
        assert_eq!(states_of(&sim, "f", "t"), vec![TaskState::TaskRunning]);
        assert_eq!(sim.agents["a"].unacked.len(), 1);
        sim.fail_over(2).unwrap();
        if agent_first {
            // The agent re-registers with the task and resends its head;
            // the framework is not back yet.
            sim.attach_agent("a").unwrap();
            sim.subscribe("f", "*").unwrap();
        } else {
            sim.subscribe("f", "*").unwrap();
            sim.attach_agent("a").unwrap();
        }
        let once = vec![("t".to_string(), TaskState::TaskRunning)];
        assert_eq!(
            updates_since_subscribed(&sim, "f"),
            once,
            "agent_first={agent_first}"
        );
        // Another re-registration's resend reaches this subscription no
        // more.
        sim.disconnect_agent("a");
        sim.attach_agent("a").unwrap();
        sim.advance(30 * SEC, SEC);
        assert_eq!(
            updates_since_subscribed(&sim, "f"),
            once,
            "agent_first={agent_first}"
        );
        assert!(sim.master.frameworks[&fid].tasks["t"].unacked.is_some());
        // A timed retry does, as in Mesos: a framework that does not
        // acknowledge is reminded.
        sim.retry_unacked("a");
        assert_eq!(
            updates_since_subscribed(&sim, "f"),
            vec![once[0].clone(), once[0].clone()],
            "agent_first={agent_first}"
        );
        // Acknowledged: the next update follows, once, in order.
        let uuid = sim.agents["a"].unacked.values().next().unwrap()[0]
            .uuid
            .clone();
        sim.call(Call::Acknowledge(v1::AcknowledgeRequest {
            framework_id: fid.clone(),
            agent_id: sim.aid("a"),
            task_id: "t".into(),
            uuid,
        }))
        .unwrap();
        assert!(sim.agents["a"].unacked.is_empty());
        sim.frameworks.get_mut("f").unwrap().auto_ack = true;
        sim.agent_update("a", &fid, "t", TaskState::TaskFinished);
        assert_eq!(
            updates_since_subscribed(&sim, "f"),
            vec![
                ("t".to_string(), TaskState::TaskRunning),
                ("t".to_string(), TaskState::TaskRunning),
                ("t".to_string(), TaskState::TaskFinished)
            ]
        );
        assert!(sim.agents["a"].unacked.is_empty());
        assert!(sim.master.frameworks[&fid].tasks.is_empty());
    }
}

#[test]
fn a_resubscribing_framework_gets_held_updates_at_once() {
    let mut sim = sim();
    sim.add_agent("a", "cpus:2;mem:512").unwrap();
    let fid = sim.subscribe("f", "*").unwrap();
    sim.allocate();
    let offer = first_offer(&sim, "f");
    sim.agents.get_mut("a").unwrap().auto_run = false;
    sim.launch("f", &offer, vec![task("t", "cpus:1;mem:64")])
        .unwrap();
    sim.disconnect_framework("f");
    sim.agent_update("a", &fid, "t", TaskState::TaskStarting);
    sim.agent_update("a", &fid, "t", TaskState::TaskRunning);
    // Without waiting for the agent's retry: the head on subscribing, the
    // rest as each is acknowledged.
    sim.subscribe("f", "*").unwrap();
    assert_eq!(
        states_of(&sim, "f", "t"),
        vec![TaskState::TaskStarting, TaskState::TaskRunning]
    );
    assert!(sim.agents["a"].unacked.is_empty());
}

#[test]
fn a_partition_that_spans_a_failover_heals_with_the_agents_tasks_reconciled() {
    let mut sim = Sim::new(
        MasterConfig {
            agent_reregister_timeout: 30 * SEC,
            ..MasterConfig::default()
        },
        9,
    );
    sim.add_agent("a", "cpus:2;mem:512").unwrap();
    sim.add_agent("b", "cpus:2;mem:512").unwrap();
    let fid = sim.subscribe("f", "*").unwrap();
    for _ in 0..2 {
        sim.allocate();
        let offers: Vec<(String, String)> = sim.frameworks["f"]
            .offers
            .values()
            .map(|o| (o.id.clone(), o.hostname.clone()))
            .collect();
        for (offer, host) in offers {
            let prefix = host.trim_end_matches(".sim");
            sim.launch(
                "f",
                &offer,
                vec![
                    task(&format!("{prefix}-run"), "cpus:1;mem:64"),
                    task(&format!("{prefix}-end"), "cpus:1;mem:64"),
                ],
            )
            .unwrap();
        }
    }
    assert_eq!(sim.master.frameworks[&fid].tasks.len(), 4);
    // Agent a is cut off; while cut off one of its tasks ends (the update
    // waits on the agent), and the leader dies.
    sim.partition_agent("a");
    sim.agent_update("a", &fid, "a-end", TaskState::TaskFinished);
    sim.advance(5 * SEC, SEC);
    sim.fail_over(2).unwrap();
    sim.attach_agent("b").unwrap();
    sim.subscribe("f", "*").unwrap();
    // a does not re-register within the timeout: unreachable, unknown tasks.
    sim.advance(35 * SEC, SEC);
    assert!(!sim.master.agents[&sim.aid("a")].reachable);
    assert!(!sim.master.frameworks[&fid].tasks.contains_key("a-run"));
    // The partition heals: a re-registers with its tasks and resends the
    // update it held.
    sim.attach_agent("a").unwrap();
    let master_a = &sim.master.agents[&sim.aid("a")];
    assert!(master_a.active());
    assert_eq!(master_a.used.scalar("cpus"), 1.0, "only the running task");
    let fw = &sim.master.frameworks[&fid];
    assert_eq!(fw.tasks["a-run"].state, TaskState::TaskRunning);
    assert_eq!(fw.used.scalar("cpus"), 3.0);
    let finished: Vec<_> = updates_since_subscribed(&sim, "f")
        .into_iter()
        .filter(|(t, _)| t == "a-end")
        .collect();
    assert_eq!(
        finished,
        vec![("a-end".to_string(), TaskState::TaskFinished)]
    );
    assert!(
        sim.agents["a"].unacked.is_empty(),
        "acknowledged through the new leader"
    );
    // Reconciliation answers what the agents report.
    sim.call(Call::Reconcile(v1::ReconcileRequest {
        framework_id: fid.clone(),
        tasks: vec![],
    }))
    .unwrap();
    let mut answered: Vec<(String, TaskState)> = updates_since_subscribed(&sim, "f")
        .into_iter()
        .rev()
        .take(3)
        .collect();
    answered.sort();
    assert_eq!(
        answered,
        vec![
            ("a-run".to_string(), TaskState::TaskRunning),
            ("b-end".to_string(), TaskState::TaskRunning),
            ("b-run".to_string(), TaskState::TaskRunning),
        ]
    );
}

/// Random walks over the cluster's inputs, checking invariants after each.
#[derive(Debug, Clone)]
enum Step {
    Allocate,
    Launch { fw: usize, cpus: u8 },
    Decline { fw: usize, refuse: u8 },
    Finish { agent: usize },
    Kill { fw: usize },
    Advance { secs: u8 },
    Partition { agent: usize },
    Reattach { agent: usize },
    Disconnect { fw: usize },
    Resubscribe { fw: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Allocate),
        3 => (0..3usize, 1..3u8).prop_map(|(fw, cpus)| Step::Launch { fw, cpus }),
        1 => (0..3usize, 0..20u8).prop_map(|(fw, refuse)| Step::Decline { fw, refuse }),
        2 => (0..4usize).prop_map(|agent| Step::Finish { agent }),
        1 => (0..3usize).prop_map(|fw| Step::Kill { fw }),
        1 => (1..40u8).prop_map(|secs| Step::Advance { secs }),
        1 => (0..4usize).prop_map(|agent| Step::Partition { agent }),
        1 => (0..4usize).prop_map(|agent| Step::Reattach { agent }),
        1 => (0..3usize).prop_map(|fw| Step::Disconnect { fw }),
        1 => (0..3usize).prop_map(|fw| Step::Resubscribe { fw }),
    ]
}

fn apply(sim: &mut Sim, s: &Step, n: &mut u32) {
    let fw = |i: usize| format!("f{i}");
    let ag = |i: usize| format!("a{i}");
    match *s {
        Step::Allocate => sim.allocate(),
        Step::Launch { fw: f, cpus } => {
            let name = fw(f);
            let offer = sim
                .frameworks
                .get(&name)
                .and_then(|x| x.offers.keys().next().cloned());
            if let Some(o) = offer {
                *n += 1;
                let _ = sim.launch(
                    &name,
                    &o,
                    vec![task(&format!("t{n}"), &format!("cpus:{cpus};mem:32"))],
                );
            }
        }
        Step::Decline { fw: f, refuse } => {
            let name = fw(f);
            let offer = sim
                .frameworks
                .get(&name)
                .and_then(|x| x.offers.keys().next().cloned());
            if let (Some(o), true) = (offer, sim.frameworks[&name].conn.is_some()) {
                decline(sim, &name, &o, f64::from(refuse));
            }
        }
        Step::Finish { agent } => {
            let name = ag(agent);
            if let Some((fid, tid)) = sim.live_tasks(&name).into_iter().next() {
                sim.agent_update(&name, &fid, &tid, TaskState::TaskFinished);
            }
        }
        Step::Kill { fw: f } => {
            let name = fw(f);
            let fid = sim.fid(&name);
            let task = sim
                .master
                .frameworks
                .get(&fid)
                .and_then(|x| x.tasks.keys().next().cloned());
            if let (Some(task_id), true) = (task, sim.frameworks[&name].conn.is_some()) {
                let _ = sim.call(Call::Kill(v1::KillRequest {
                    framework_id: fid,
                    task_id,
                    ..Default::default()
                }));
            }
        }
        Step::Advance { secs } => sim.advance(Duration::from_secs(u64::from(secs)), 5 * SEC),
        Step::Partition { agent } => sim.partition_agent(&ag(agent)),
        Step::Reattach { agent } => {
            sim.disconnect_agent(&ag(agent));
            let _ = sim.attach_agent(&ag(agent));
        }
        Step::Disconnect { fw: f } => sim.disconnect_framework(&fw(f)),
        Step::Resubscribe { fw: f } => {
            let _ = sim.subscribe(&fw(f), "*");
        }
    }
}

fn check_invariants(sim: &Sim) -> Result<(), TestCaseError> {
    let m = &sim.master;
    // No resource is offered twice or beyond what the agent has.
    for a in m.agents.values() {
        let mut offered = Resources::new();
        for o in m.offers.values().filter(|o| o.agent_id == a.id) {
            offered.add(&o.resources);
        }
        prop_assert_eq!(&offered, &a.offered);
        prop_assert!(
            a.total.contains(&a.used.plus(&a.offered)),
            "agent {} over capacity",
            a.id
        );
        let mut used = Resources::new();
        for f in m.frameworks.values() {
            for t in f
                .tasks
                .values()
                .filter(|t| t.agent_id == a.id && !t.state.is_terminal())
            {
                used.add(&t.resources);
            }
        }
        prop_assert_eq!(&used, &a.used, "agent {} used", a.id);
    }
    // Offers held by frameworks are exactly the master's outstanding ones.
    for f in sim.frameworks.values().filter(|f| f.conn.is_some()) {
        for id in f.offers.keys() {
            prop_assert!(
                m.offers.get(id).is_some_and(|o| o.framework_id == f.id),
                "stale offer {}",
                id
            );
        }
    }
    // A task's reported states never leave a terminal state.
    for f in sim.frameworks.values() {
        let mut terminal: std::collections::HashSet<&str> = Default::default();
        for u in &f.updates {
            let st = mezzo_proto::task_state(u);
            let reconciliation =
                u.reason == v1::StatusReason::ReasonReconciliation as i32 || u.uuid.is_empty();
            if terminal.contains(u.task_id.as_str()) && !reconciliation {
                prop_assert!(st.is_terminal(), "task {} left a terminal state", u.task_id);
            }
            if st.is_terminal() {
                terminal.insert(&u.task_id);
            }
        }
        // Every acknowledged update (uuid) reached this framework at most once.
        let mut seen = std::collections::HashSet::new();
        for u in f.updates.iter().filter(|u| !u.uuid.is_empty()) {
            prop_assert!(
                seen.insert((&u.task_id, &u.uuid)),
                "update {:?} twice",
                u.uuid
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn invariants_hold_on_random_walks(steps in prop::collection::vec(step(), 1..60), seed in 0u64..1000) {
        let mut sim = Sim::new(MasterConfig { offer_timeout: Some(20 * SEC), ..MasterConfig::default() }, seed);
        for i in 0..4 {
            sim.add_agent(&format!("a{i}"), "cpus:4;mem:512").map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        for i in 0..3 {
            sim.subscribe(&format!("f{i}"), "*").map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let mut n = 0;
        for s in &steps {
            apply(&mut sim, s, &mut n);
            check_invariants(&sim)?;
        }
    }
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
