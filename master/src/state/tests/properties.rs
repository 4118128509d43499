//! Random walks over the simulated cluster's inputs, checking the
//! master's invariants after every step.

use super::*;

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
