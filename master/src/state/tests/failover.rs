//! Master failover, agent removal rate limits and updates held across
//! a new leader, on the simulated cluster.

use super::*;

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
    let (mut sim, fid) = one_task(false);
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

#[test]
fn a_terminal_update_acknowledged_while_its_agent_was_cut_off_is_not_delivered_again() {
    // The shrunk case the random walk found: the framework acknowledges a
    // terminal update held for it, the ack cannot reach the partitioned
    // agent, and the re-attached agent resends it.
    let (mut sim, fid) = one_task(true);
    sim.disconnect_framework("f");
    sim.agent_update("a", &fid, "t", TaskState::TaskFinished);
    sim.partition_agent("a");
    sim.subscribe("f", "*").unwrap();
    assert!(sim.agents["a"]
        .unacked
        .contains_key(&(fid.clone(), "t".to_string())));
    sim.disconnect_agent("a");
    sim.attach_agent("a").unwrap();
    let finished: Vec<_> = sim.frameworks["f"]
        .updates
        .iter()
        .filter(|u| mezzo_proto::task_state(u) == TaskState::TaskFinished && !u.uuid.is_empty())
        .collect();
    assert_eq!(finished.len(), 1, "delivered once to this subscription");
    assert!(
        sim.agents["a"].unacked.is_empty(),
        "the master acknowledged the resend"
    );
}
