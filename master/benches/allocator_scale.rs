//! How one allocation round grows with the cluster: 1,000, 10,000 and
//! 50,000 agents (Mesos' benchmark sizes, up to its largest, 50,000 agents ×
//! 6,000 frameworks), on the DeclineOffers cluster of `allocator.rs`. Each
//! size is timed over several rounds and the best is printed (the machine
//! is shared, so the best is the least disturbed), as a table and then one
//! summary line against Mesos' 1.06 s for 10,000 agents × 1,000 frameworks.
//!
//! `cargo bench -p mezzo-master --bench allocator_scale` (about 30 s);
//! under `cargo test` it runs one tiny round as a smoke test.

#[path = "common/alloc_cluster.rs"]
mod alloc_cluster;

use std::hint::black_box;
use std::time::Instant;

use alloc_cluster::{cluster, no_filter};
use mezzo_master::allocator::{allocate, AllocatorConfig, Round};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Mesos: "allocate() took 1.06secs to make 10000 offers" (86653356d).
const MESOS_10K_SECS: f64 = 1.06;

/// Best round time in seconds over `rounds` rounds.
fn best_round(agents: usize, frameworks: usize, rounds: usize) -> f64 {
    let cl = cluster(agents, frameworks, 1);
    let round = Round {
        agents: &cl.agents,
        frameworks: &cl.frameworks,
        weights: &cl.weights,
        total: &cl.total,
        is_filtered: &no_filter,
    };
    let config = AllocatorConfig::default();
    let mut rng = StdRng::seed_from_u64(1);
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let t = Instant::now();
        let offers = allocate(&config, black_box(&round), &mut rng);
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(offers.len(), agents, "every agent is offered");
        // Freed outside the timing: the master keeps its offers.
        drop(offers);
    }
    best
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: &[(usize, usize)] = if bench {
        &[
            (1_000, 100),
            (1_000, 1_000),
            (10_000, 100),
            (10_000, 1_000),
            (50_000, 1_000),
            (50_000, 6_000),
        ]
    } else {
        &[(50, 5)]
    };
    let rounds = if bench { 30 } else { 1 };
    println!("| agents | frameworks | round (best of {rounds}) | per agent |");
    println!("|-------:|-----------:|------------:|----------:|");
    let mut at_10k = None;
    let mut at_50k = None;
    for &(agents, frameworks) in sizes {
        let secs = best_round(agents, frameworks, rounds);
        println!(
            "| {agents} | {frameworks} | {:.2} ms | {:.0} ns |",
            secs * 1e3,
            secs * 1e9 / agents as f64
        );
        match (agents, frameworks) {
            (10_000, 1_000) => at_10k = Some(secs),
            (50_000, 6_000) => at_50k = Some(secs),
            _ => {}
        }
    }
    if let (Some(a), Some(b)) = (at_10k, at_50k) {
        println!(
            "allocator round 10000 agents x 1000 frameworks: {:.2} ms (Mesos {MESOS_10K_SECS} s, {:.0}x faster); \
             50000 x 6000: {:.2} ms",
            a * 1e3,
            MESOS_10K_SECS / a,
            b * 1e3
        );
    }
}
