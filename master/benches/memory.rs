//! Master memory at 100,000 tasks on 10,000 agents (10 frameworks, one task
//! of each on every agent), built through the simulated cluster.
//!
//! A counting global allocator gives the live heap exactly; the simulated
//! peers are dropped before measuring, so what is left is the master core.
//! Per agent: the heap of a master with the agents and frameworks but no
//! task, over the agents. Per task: what the tasks add, over the tasks.
//! RSS (/proc/self/statm) is printed too, though the allocator keeps freed
//! pages, so it overstates. Targets (issue 12): ≤ 2 KiB per task, ≤ 20 KiB
//! per agent.
//!
//! `cargo bench -p mezzo-master --bench memory` (under a minute); under
//! `cargo test` it measures a tiny cluster as a smoke test.

#[path = "common/sim_cluster.rs"]
mod sim_cluster;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use mezzo_master::sim::Sim;
use mezzo_master::state::Master;
use sim_cluster::{benchmarking, build, Shape};

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Builds `shape` and keeps only the master core; returns it with the live
/// heap and RSS it added.
fn master_of(shape: Shape) -> (Master, usize, usize) {
    let (heap0, rss0) = (live(), rss());
    let sim: Sim = build(shape);
    let Sim { master, .. } = sim;
    (master, live() - heap0, rss().saturating_sub(rss0))
}

fn main() {
    let (agents, frameworks) = if benchmarking() {
        (10_000, 10)
    } else {
        (20, 2)
    };
    let empty = Shape {
        agents,
        frameworks,
        tasks_per: 0,
        completed: 0,
    };
    let full = Shape {
        tasks_per: 1,
        ..empty
    };
    let (m0, heap_agents, _) = master_of(empty);
    drop(m0);
    let (m1, heap_full, rss_full) = master_of(full);
    let tasks = full.running_tasks();
    let per_agent = heap_agents as f64 / agents as f64;
    let per_task = heap_full.saturating_sub(heap_agents) as f64 / tasks as f64;
    println!(
        "master heap: {:.1} MiB with {agents} agents and {frameworks} frameworks, \
         {:.1} MiB with {tasks} tasks too (RSS grew {:.1} MiB)",
        heap_agents as f64 / 1048576.0,
        heap_full as f64 / 1048576.0,
        rss_full as f64 / 1048576.0,
    );
    println!(
        "master memory at {tasks} tasks on {agents} agents: {:.0} B per task (target 2048, {:.1}x under), \
         {:.0} B per agent (target 20480, {:.1}x under)",
        per_task,
        2048.0 / per_task,
        per_agent,
        20480.0 / per_agent,
    );
    drop(m1);
}
