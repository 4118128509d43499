//! One allocation round at Mesos benchmark scale.
//!
//! The cluster is shaped like Mesos' `HierarchicalAllocator_BENCHMARK_Test.DeclineOffers`
//! (src/tests/hierarchical_allocator_tests.cpp): every agent has
//! `cpus:24;mem:4096;disk:4096;ports:[31000-32000]`, and on agent `i` framework
//! `i % frameworks` already runs `cpus:16;mem:2014;disk:1024` plus 16 random
//! ports. What is left is offered in one `allocate()` call, which is what is
//! timed. Mesos' reference: 1.06 s for 10,000 agents × 1,000 frameworks
//! (apache/mesos commit 86653356d, optimized build).
//!
//! Variants: all frameworks in one role, or spread over 10 roles with weights
//! 1, 2 and 3; and, at the largest size, half of the (framework, agent) pairs
//! carrying a refuse filter, as after frameworks have declined offers.
//! `clone_10000_offers_only` times just copying every agent's `Resources`,
//! the part of a round that returning owned offers makes unavoidable.
//! `allocator_scale.rs` prints how a round grows up to 50,000 agents.
//! Results and the machine they were taken on: docs/PERFORMANCE.md.

#[path = "common/alloc_cluster.rs"]
mod alloc_cluster;

use std::hint::black_box;
use std::time::Duration;

use alloc_cluster::{cluster, half_filtered, no_filter};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mezzo_master::allocator::{allocate, AllocatorConfig, Round};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn bench_round(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocate_round");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let config = AllocatorConfig::default();

    let mut cases: Vec<(usize, usize, usize, bool)> = Vec::new();
    for agents in [1_000, 10_000] {
        for frameworks in [100, 1_000] {
            for roles in [1, 10] {
                cases.push((agents, frameworks, roles, false));
            }
        }
    }
    cases.push((10_000, 1_000, 1, true));
    cases.push((10_000, 1_000, 10, true));

    for (agents, frameworks, roles, filtered) in cases {
        let cl = cluster(agents, frameworks, roles);
        let is_filtered: &dyn Fn(usize, usize) -> bool =
            if filtered { &half_filtered } else { &no_filter };
        let round = Round {
            agents: &cl.agents,
            frameworks: &cl.frameworks,
            weights: &cl.weights,
            total: &cl.total,
            is_filtered,
        };
        let name = if filtered {
            "half_filtered"
        } else {
            "no_filters"
        };
        let id = BenchmarkId::new(
            name,
            format!("{agents}_agents/{frameworks}_frameworks/{roles}_roles"),
        );
        let mut rng = StdRng::seed_from_u64(1);
        group.bench_function(id, |b| {
            // The offers are returned so that freeing them is not timed: the
            // master keeps them as outstanding offers, it does not drop them.
            b.iter_with_large_drop(|| {
                let offers = allocate(&config, black_box(&round), &mut rng);
                // Every agent has 8 cpus left, so every one must be offered.
                assert_eq!(offers.len(), agents);
                offers
            })
        });
        if (agents, frameworks, roles, filtered) == (10_000, 1_000, 1, false) {
            // The floor any implementation of this API pays: one owned copy
            // of each offered agent's resources.
            group.bench_function("clone_10000_offers_only", |b| {
                b.iter_with_large_drop(|| {
                    cl.agents
                        .iter()
                        .map(|a| black_box(&a.available).clone())
                        .collect::<Vec<_>>()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_round);
criterion_main!(benches);
