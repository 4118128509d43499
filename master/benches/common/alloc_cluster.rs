//! The cluster of Mesos' `HierarchicalAllocator_BENCHMARK_Test.DeclineOffers`
//! (src/tests/hierarchical_allocator_tests.cpp), shared by the allocator
//! benches: every agent has `cpus:24;mem:4096;disk:4096;ports:[31000-32000]`,
//! and on agent `i` framework `i % frameworks` already runs
//! `cpus:16;mem:2014;disk:1024` plus 16 random ports.

use std::collections::HashMap;

use mezzo_master::allocator::{AgentSlot, FrameworkSlot};
use mezzo_proto::{RangeSet, Resources};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub struct Cluster {
    pub agents: Vec<AgentSlot>,
    pub frameworks: Vec<FrameworkSlot>,
    pub weights: HashMap<String, f64>,
    pub total: Resources,
}

fn parse(text: &str) -> Resources {
    match Resources::parse(text) {
        Ok(r) => r,
        Err(e) => panic!("benchmark resources {text:?}: {e}"),
    }
}

/// `agents` agents, `frameworks` frameworks spread over `roles` roles with
/// weights 1, 2, 3 (cyclic).
pub fn cluster(agents: usize, frameworks: usize, roles: usize) -> Cluster {
    let agent_total = parse("cpus:24;mem:4096;disk:4096;ports:[31000-32000]");
    let task_scalars = parse("cpus:16;mem:2014;disk:1024");
    let mut rng = StdRng::seed_from_u64(0x006d_657a_7a6f);

    let mut fws: Vec<FrameworkSlot> = (0..frameworks)
        .map(|i| FrameworkSlot {
            id: format!("framework-{i:05}"),
            role: format!("role-{}", i % roles),
            allocated: Resources::new(),
            suppressed: false,
        })
        .collect();
    let weights = (0..roles)
        .map(|r| (format!("role-{r}"), 1.0 + (r % 3) as f64))
        .collect();

    let mut total = Resources::new();
    let agents = (0..agents)
        .map(|i| {
            let ports = RangeSet::from_ranges((0..16).map(|_| {
                let p = rng.random_range(31000..=32000);
                (p, p)
            }));
            let used = task_scalars.clone().with_ranges("ports", ports);
            fws[i % frameworks].allocated.add(&used);
            total.add(&agent_total);
            AgentSlot {
                id: format!("agent-{i:05}"),
                available: agent_total.minus(&used),
            }
        })
        .collect();

    Cluster {
        agents,
        frameworks: fws,
        weights,
        total,
    }
}

/// A cheap, well-mixed "declined" pattern: about half of all pairs.
#[allow(dead_code)] // used by one of the two benches that include this file
pub fn half_filtered(f: usize, a: usize) -> bool {
    let h = (f as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add((a as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
    (h >> 32) & 1 == 1
}

pub fn no_filter(_: usize, _: usize) -> bool {
    false
}
