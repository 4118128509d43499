//! Master metrics: the timings the actor records, Mesos-style percentile
//! windows for `/metrics/snapshot`, and the Prometheus text of `/metrics`.
//!
//! The three latency histograms (allocation run, offer→accept, launch →
//! TASK_RUNNING) are process-wide `prometheus` histograms (atomics; the
//! actor only observes them); everything else in `/metrics` is built at
//! scrape time from the snapshot the actor publishes, so the Prometheus view
//! and `/metrics/snapshot` can never disagree.

use std::collections::VecDeque;
use std::sync::LazyLock;

use mezzo_runtime::prom::Exposition;
use prometheus::{
    exponential_buckets, GaugeVec, Histogram, HistogramOpts, IntCounterVec, Opts, Registry,
};
use serde_json::{json, Map, Value};

use crate::view::Snapshot;

/// How many recent samples the Mesos-style percentiles cover.
const WINDOW: usize = 1000;

struct Histograms {
    registry: Registry,
    allocation_run: Histogram,
    offer_accept: Histogram,
    launch: Histogram,
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    // The names and buckets are constants: a failure here is a bug that
    // the unit tests catch, so fall back to an unregistered histogram.
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.clone()))
        .or_else(|_| Histogram::with_opts(HistogramOpts::new(name, help)))
        .unwrap_or_else(|_| unreachable_histogram());
    let _ = registry.register(Box::new(h.clone()));
    h
}

fn unreachable_histogram() -> Histogram {
    // HistogramOpts with a valid constant name never fails to build.
    #[allow(clippy::expect_used)]
    Histogram::with_opts(HistogramOpts::new("mezzo_unused", "unused"))
        .expect("a constant histogram")
}

static HISTOGRAMS: LazyLock<Histograms> = LazyLock::new(|| {
    let registry = Registry::new();
    let buckets = |start: f64, n: usize| exponential_buckets(start, 2.0, n).unwrap_or_default();
    Histograms {
        allocation_run: histogram(
            &registry,
            "mezzo_allocation_run_duration_seconds",
            "Time one allocation round (DRF over all agents) takes",
            buckets(0.000_05, 18),
        ),
        offer_accept: histogram(
            &registry,
            "mezzo_offer_accept_latency_seconds",
            "Time from an offer being made to a framework accepting it",
            buckets(0.001, 18),
        ),
        launch: histogram(
            &registry,
            "mezzo_task_launch_latency_seconds",
            "Time from a task being accepted (TASK_STAGING) to TASK_RUNNING",
            buckets(0.005, 16),
        ),
        registry,
    }
});

/// Recent samples (milliseconds) for Mesos' `…/p50`, `…/p99` keys.
#[derive(Debug, Clone, Default)]
pub struct Window {
    samples: VecDeque<f64>,
    last: f64,
}

impl Window {
    fn push(&mut self, ms: f64) {
        self.last = ms;
        self.samples.push_back(ms);
        while self.samples.len() > WINDOW {
            self.samples.pop_front();
        }
    }

    /// Inserts `name` (the latest value) and `name/count|min|max|p50|...`.
    pub(crate) fn insert_into(&self, m: &mut Map<String, Value>, name: &str) {
        m.insert(name.into(), json!(self.last));
        let mut sorted: Vec<f64> = self.samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        m.insert(format!("{name}/count"), json!(sorted.len()));
        if sorted.is_empty() {
            return;
        }
        m.insert(format!("{name}/min"), json!(sorted[0]));
        m.insert(format!("{name}/max"), json!(sorted[sorted.len() - 1]));
        for (key, q) in [
            ("p50", 0.5),
            ("p90", 0.9),
            ("p95", 0.95),
            ("p99", 0.99),
            ("p999", 0.999),
            ("p9999", 0.9999),
        ] {
            m.insert(format!("{name}/{key}"), json!(percentile(&sorted, q)));
        }
    }
}

/// Linear interpolation between closest ranks (as Mesos' TimeSeries).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Which latency a sample measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Latency {
    AllocationRun,
    OfferAccept,
    Launch,
}

/// The latency samples the master records: Mesos-style windows for
/// `/metrics/snapshot`, and the samples not yet handed to the process-wide
/// Prometheus histograms (the core does no I/O, not even to a global).
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub(crate) allocation_run: Window,
    pub(crate) offer_accept: Window,
    pub(crate) launch: Window,
    pending: Vec<(Latency, f64)>,
}

impl Timings {
    /// One allocation round took `secs`.
    pub(crate) fn allocation_run(&mut self, secs: f64) {
        self.allocation_run.push(secs * 1000.0);
        self.pending.push((Latency::AllocationRun, secs));
    }

    /// An offer was accepted `secs` after it was made.
    pub(crate) fn offer_accept(&mut self, secs: f64) {
        self.offer_accept.push(secs * 1000.0);
        self.pending.push((Latency::OfferAccept, secs));
    }

    /// A task reached TASK_RUNNING `secs` after it was accepted.
    pub(crate) fn launch(&mut self, secs: f64) {
        let secs = secs.max(0.0);
        self.launch.push(secs * 1000.0);
        self.pending.push((Latency::Launch, secs));
    }

    /// The samples recorded since the last call.
    pub(crate) fn take_pending(&mut self) -> Vec<(Latency, f64)> {
        std::mem::take(&mut self.pending)
    }
}

/// Feeds samples into the process-wide Prometheus histograms.
pub(crate) fn observe(samples: &[(Latency, f64)]) {
    for (kind, secs) in samples {
        let h = match kind {
            Latency::AllocationRun => &HISTOGRAMS.allocation_run,
            Latency::OfferAccept => &HISTOGRAMS.offer_accept,
            Latency::Launch => &HISTOGRAMS.launch,
        };
        h.observe(*secs);
    }
}

fn num(m: &Value, k: &str) -> f64 {
    m.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// `/metrics`: Prometheus text from the published snapshot (the cluster
/// gauges and counters of `/metrics/snapshot`, so the two views agree, and
/// per-framework allocation) plus the latency histograms.
pub(crate) fn render(snap: &Snapshot) -> Result<String, prometheus::Error> {
    let metrics = crate::view::metrics_json(snap);
    let e = Exposition::new();
    cluster_gauges(&e, &metrics)?;
    counters(&e, &metrics)?;
    framework_gauges(&e, snap)?;
    e.render(HISTOGRAMS.registry.gather())
}

/// Registers `collector` with `reg`.
fn cluster_gauges(e: &Exposition, metrics: &Value) -> Result<(), prometheus::Error> {
    e.gauge(
        "mezzo_master_elected",
        "1 if this master is the leader",
        num(metrics, "master/elected"),
    )?;
    e.gauge(
        "mezzo_master_uptime_seconds",
        "Seconds since the master started",
        num(metrics, "master/uptime_secs"),
    )?;
    let int = |key: String| num(metrics, &key) as i64;
    e.labelled_int_gauge(
        (
            "mezzo_master_agents",
            "Agents known to the master by status",
            "status",
        ),
        ["active", "connected", "disconnected", "unreachable"]
            .map(|s| (s.to_string(), int(format!("master/slaves_{s}")))),
    )?;
    e.labelled_int_gauge(
        ("mezzo_master_frameworks", "Frameworks by status", "status"),
        ["active", "connected", "disconnected"]
            .map(|s| (s.to_string(), int(format!("master/frameworks_{s}")))),
    )?;
    e.int_gauge(
        "mezzo_master_outstanding_offers",
        "Offers made and not yet accepted, declined or rescinded",
        int("master/outstanding_offers".into()),
    )?;
    e.labelled_int_gauge(
        (
            "mezzo_master_tasks",
            "Tasks (live and completed ones kept in memory) by state",
            "state",
        ),
        mezzo_proto::v1::TaskState::ALL.map(|s| {
            let v = int(format!("master/tasks_{}", s.metric_suffix()));
            (s.as_str_name().to_string(), v)
        }),
    )?;
    let resources = |kind: &str| {
        ["cpus", "mem", "disk"]
            .map(|r| (r.to_string(), num(metrics, &format!("master/{r}_{kind}"))))
    };
    e.labelled_gauge(
        (
            "mezzo_master_resources_capacity",
            "Resources of reachable agents",
            "resource",
        ),
        resources("total"),
    )?;
    e.labelled_gauge(
        (
            "mezzo_master_resources_used",
            "Resources used by tasks on reachable agents",
            "resource",
        ),
        resources("used"),
    )
}

fn counters(e: &Exposition, metrics: &Value) -> Result<(), prometheus::Error> {
    let messages = IntCounterVec::new(
        Opts::new(
            "mezzo_master_messages_total",
            "Messages the master received, by Mesos message type",
        ),
        &["type"],
    )?;
    if let Some(m) = metrics.as_object() {
        for (k, v) in m {
            if let Some(kind) = k.strip_prefix("master/messages_") {
                messages
                    .with_label_values(&[kind])
                    .inc_by(v.as_f64().unwrap_or(0.0) as u64);
            }
        }
    }
    e.add(messages)?;
    for (name, help, key) in [
        (
            "mezzo_allocator_runs_total",
            "Allocation rounds run",
            "allocator/mesos/allocation_runs",
        ),
        (
            "mezzo_master_agent_registrations_total",
            "Agent registrations",
            "master/slave_registrations",
        ),
        (
            "mezzo_master_agent_reregistrations_total",
            "Agent re-registrations",
            "master/slave_reregistrations",
        ),
        (
            "mezzo_master_agent_removals_total",
            "Agents marked unreachable",
            "master/slave_removals",
        ),
        (
            "mezzo_master_invalid_launches_total",
            "Tasks refused at launch (TASK_ERROR, TASK_DROPPED, TASK_LOST)",
            "master/invalid_launches",
        ),
    ] {
        e.counter(name, help, num(metrics, key).max(0.0) as u64)?;
    }
    Ok(())
}

/// Per-framework allocation: what operators chart to see who holds what.
fn framework_gauges(e: &Exposition, snap: &Snapshot) -> Result<(), prometheus::Error> {
    let labels = ["framework_id", "framework_name", "role", "resource"];
    let fw_used = GaugeVec::new(
        Opts::new(
            "mezzo_framework_resources_used",
            "Resources used by a framework's tasks",
        ),
        &labels,
    )?;
    let fw_offered = GaugeVec::new(
        Opts::new(
            "mezzo_framework_resources_offered",
            "Resources offered to a framework and not yet answered",
        ),
        &labels,
    )?;
    for f in snap.frameworks.values() {
        for r in ["cpus", "mem", "disk"] {
            let l = [f.id.as_str(), f.info.name.as_str(), f.role.as_str(), r];
            fw_used.with_label_values(&l).set(f.used.scalar(r));
            fw_offered.with_label_values(&l).set(f.offered.scalar(r));
        }
    }
    e.add(fw_used)?;
    e.add(fw_offered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert!((percentile(&v, 0.5) - 50.5).abs() < 1e-9);
    }

    #[test]
    fn window_keys_follow_mesos() {
        let mut t = Timings::default();
        t.allocation_run(0.002);
        t.allocation_run(0.004);
        let mut m = Map::new();
        t.allocation_run
            .insert_into(&mut m, "allocator/mesos/allocation_run_ms");
        assert_eq!(m["allocator/mesos/allocation_run_ms"], json!(4.0));
        assert_eq!(m["allocator/mesos/allocation_run_ms/count"], json!(2));
        assert_eq!(m["allocator/mesos/allocation_run_ms/max"], json!(4.0));
        assert!(m.contains_key("allocator/mesos/allocation_run_ms/p99"));
    }

    #[test]
    fn renders_prometheus_text_with_histograms() {
        use crate::sim::{task, Sim};
        use mezzo_proto::v1;
        let mut t = Timings::default();
        t.offer_accept(0.01);
        let mut sim = Sim::new(crate::config::MasterConfig::default(), 2);
        sim.add_agent("a", "cpus:4;mem:1024").unwrap();
        sim.frameworks.insert(
            "n".into(),
            crate::sim::SimFramework {
                info: v1::FrameworkInfo {
                    name: "n \"q\"".into(),
                    roles: vec!["*".into()],
                    ..Default::default()
                },
                auto_ack: true,
                ..Default::default()
            },
        );
        let f = sim.subscribe("n", "*").unwrap();
        sim.allocate();
        let offer = sim.frameworks["n"].offers.keys().next().cloned().unwrap();
        sim.launch(
            "n",
            &offer,
            vec![task("t1", "cpus:1"), task("t2", "cpus:1")],
        )
        .unwrap();
        for _ in 0..3 {
            sim.call(crate::state::Call::Decline(v1::DeclineRequest {
                framework_id: f.clone(),
                offer_ids: vec!["gone".into()],
                filters: None,
            }))
            .unwrap();
        }
        let text = render(&Snapshot::of(&sim.master)).unwrap();
        assert!(text.contains("# TYPE mezzo_offer_accept_latency_seconds histogram"));
        assert!(text.contains("mezzo_master_tasks{state=\"TASK_RUNNING\"} 2"));
        assert!(text.contains("mezzo_master_messages_total{type=\"decline_offers\"} 3"));
        assert!(text.contains("# HELP mezzo_master_elected"));
        assert!(text.contains("mezzo_master_elected 1"));
        assert!(text.contains(&format!(
            "mezzo_framework_resources_used{{framework_id=\"{f}\",framework_name=\"n \\\"q\\\"\",resource=\"cpus\",role=\"*\"}} 2"
        )));
    }
}
