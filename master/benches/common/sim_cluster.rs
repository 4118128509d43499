//! A cluster of the shape of Mesos' `MasterStateQuery_BENCHMARK_Test`
//! (src/tests/master_benchmarks.cpp): every agent runs `tasks_per` tasks of
//! each of `frameworks` frameworks, and `completed` more frameworks ran as
//! many tasks per agent and were torn down, so their tasks are completed.
//! Built through the simulated cluster: real subscriptions, allocation
//! rounds, accepts, status updates and acknowledgements.

use mezzo_master::sim::{task, Sim};
use mezzo_master::state::Call;
use mezzo_master::MasterConfig;
use mezzo_proto::v1;

/// The sizes of a cluster.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub agents: usize,
    pub frameworks: usize,
    pub tasks_per: usize,
    pub completed: usize,
}

impl Shape {
    pub fn running_tasks(&self) -> usize {
        self.agents * self.frameworks * self.tasks_per
    }

    pub fn completed_tasks(&self) -> usize {
        self.agents * self.completed * self.tasks_per
    }
}

fn ok<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?}"),
    }
}

/// Builds the cluster; returns the simulation (its master holds the state).
pub fn build(shape: Shape) -> Sim {
    let config = MasterConfig {
        // Mesos' benchmark keeps every completed task; so does this one.
        max_completed_tasks_per_framework: shape.completed_tasks().max(1),
        ..MasterConfig::default()
    };
    let mut sim = Sim::new(config, 7);
    for i in 0..shape.agents {
        ok(
            sim.add_agent(
                &format!("agent-{i:06}"),
                "cpus:64;mem:262144;disk:1048576;ports:[31000-32000]",
            ),
            "add agent",
        );
    }
    let all = shape.frameworks + shape.completed;
    let names: Vec<String> = (0..all).map(|j| format!("framework-{j:02}")).collect();
    for name in &names {
        ok(sim.subscribe(name, "*"), "subscribe");
    }
    // One round offers every agent to one framework; accepting leaves the
    // agent's rest declined with the default 5 s filter, and the virtual
    // clock stands still, so over `all` rounds every framework is offered
    // every agent exactly once.
    let mut n = 0u64;
    for _ in 0..all {
        sim.allocate();
        for name in &names {
            let offers: Vec<String> = sim.frameworks[name].offers.keys().cloned().collect();
            for offer in offers {
                let tasks = (0..shape.tasks_per)
                    .map(|_| {
                        n += 1;
                        let mut t = task(&format!("task-{n:07}"), "cpus:0.1;mem:32;disk:32");
                        t.labels = vec![v1::Label {
                            key: "bench".into(),
                            value: "state".into(),
                        }];
                        t
                    })
                    .collect();
                ok(sim.launch(name, &offer, tasks), "launch");
            }
            forget_history(&mut sim);
        }
    }
    for name in &names[shape.frameworks..] {
        let framework_id = sim.fid(name);
        ok(
            sim.call(Call::Teardown(v1::TeardownRequest { framework_id })),
            "teardown",
        );
        forget_history(&mut sim);
    }
    sim
}

/// The simulated peers record every message they receive, for tests; at
/// this size that would dwarf the master, so it is dropped as it comes.
fn forget_history(sim: &mut Sim) {
    for f in sim.frameworks.values_mut() {
        f.events.clear();
        f.updates.clear();
    }
    for a in sim.agents.values_mut() {
        a.received.clear();
    }
}

/// True when `cargo bench` runs the binary (it passes `--bench`); under
/// `cargo test` it runs a smoke test with tiny sizes instead.
pub fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}
