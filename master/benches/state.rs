//! `/master/state` at Mesos benchmark size: 40,000 agents × 5 frameworks ×
//! 2 running tasks (400,000 running) plus 5 completed frameworks with as
//! many completed tasks (400,000), the shape of Mesos'
//! `MasterStateQuery_BENCHMARK_Test` (src/tests/master_benchmarks.cpp),
//! whose v0 `/state` took 6.55–8.00 s at this size (apache/mesos 715035b24).
//!
//! The cluster is built through the simulated cluster (one allocation
//! round per framework, launches, status updates, acknowledgements,
//! teardowns); then the document the HTTP handler sends is rendered to bytes
//! a few times and the best time is reported, next to one render by the
//! former `serde_json::Value` renderer for comparison.
//!
//! `cargo bench -p mezzo-master --bench state` (about a minute); under
//! `cargo test` it renders a tiny cluster once as a smoke test.

#[path = "common/sim_cluster.rs"]
mod sim_cluster;

use std::time::Instant;

use sim_cluster::{benchmarking, build, Shape};

/// Mesos' fastest v0 `/state` at this shape, in seconds.
const MESOS_SECS: f64 = 6.55;

fn main() {
    let bench = benchmarking();
    // `MEZZO_BENCH_AGENTS` shrinks the cluster (for profiling).
    let agents = std::env::var("MEZZO_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let shape = if bench {
        Shape {
            agents,
            frameworks: 5,
            tasks_per: 2,
            completed: 5,
        }
    } else {
        Shape {
            agents: 20,
            frameworks: 2,
            tasks_per: 2,
            completed: 1,
        }
    };
    let started = Instant::now();
    let sim = build(shape);
    let built = started.elapsed().as_secs_f64();
    let master = &sim.master;

    let runs = if bench { 5 } else { 1 };
    let mut best = f64::INFINITY;
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let out = mezzo_master::bench_api::state_bytes(master);
        best = best.min(t.elapsed().as_secs_f64());
        bytes = out.len();
        drop(out);
    }
    let mut serde = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        let out = mezzo_master::bench_api::state_bytes_serde(master);
        serde = serde.min(t.elapsed().as_secs_f64());
        assert_eq!(out.len(), bytes, "both renderers write the same document");
    }
    let t = Instant::now();
    let old = mezzo_master::bench_api::state_bytes_via_value(master);
    let via_value = t.elapsed().as_secs_f64();
    assert_eq!(old.len(), bytes, "all renderers write the same document");
    drop(old);

    println!(
        "built {} agents, {} running + {} completed tasks in {built:.1} s; \
         document {:.1} MB; Serialize view (the handler today) {:.0} ms; former Value renderer {:.0} ms",
        shape.agents,
        shape.running_tasks(),
        shape.completed_tasks(),
        bytes as f64 / 1e6,
        serde * 1e3,
        via_value * 1e3,
    );
    println!(
        "/master/state {} agents, {} running + {} completed tasks: {:.0} ms (best of {runs}); \
         Mesos {MESOS_SECS} s, {:.1}x faster",
        shape.agents,
        shape.running_tasks(),
        shape.completed_tasks(),
        best * 1e3,
        MESOS_SECS / best,
    );
}
