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

use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde_json::{json, Map, Value};

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

/// `/metrics`: Prometheus text from the published state and metrics
/// documents plus the latency histograms.
pub(crate) fn render(state: &Value, metrics: &Value) -> Result<String, prometheus::Error> {
    let reg = Registry::new();
    let gauge = |name: &str, help: &str, v: f64| -> Result<(), prometheus::Error> {
        let g = Gauge::new(name, help)?;
        g.set(v);
        reg.register(Box::new(g))
    };
    gauge(
        "mezzo_master_elected",
        "1 if this master is the leader",
        num(metrics, "master/elected"),
    )?;
    gauge(
        "mezzo_master_uptime_seconds",
        "Seconds since the master started",
        num(metrics, "master/uptime_secs"),
    )?;
    let agents = IntGaugeVec::new(
        Opts::new(
            "mezzo_master_agents",
            "Agents known to the master by status",
        ),
        &["status"],
    )?;
    for s in ["active", "connected", "disconnected", "unreachable"] {
        agents
            .with_label_values(&[s])
            .set(num(metrics, &format!("master/slaves_{s}")) as i64);
    }
    reg.register(Box::new(agents))?;
    let fws = IntGaugeVec::new(
        Opts::new("mezzo_master_frameworks", "Frameworks by status"),
        &["status"],
    )?;
    for s in ["active", "connected", "disconnected"] {
        fws.with_label_values(&[s])
            .set(num(metrics, &format!("master/frameworks_{s}")) as i64);
    }
    reg.register(Box::new(fws))?;
    let offers = IntGauge::new(
        "mezzo_master_outstanding_offers",
        "Offers made and not yet accepted, declined or rescinded",
    )?;
    offers.set(num(metrics, "master/outstanding_offers") as i64);
    reg.register(Box::new(offers))?;
    let tasks = IntGaugeVec::new(
        Opts::new(
            "mezzo_master_tasks",
            "Tasks (live and completed ones kept in memory) by state",
        ),
        &["state"],
    )?;
    for s in mezzo_proto::v1::TaskState::ALL {
        tasks
            .with_label_values(&[s.as_str_name()])
            .set(num(metrics, &format!("master/tasks_{}", s.metric_suffix())) as i64);
    }
    reg.register(Box::new(tasks))?;
    let total = GaugeVec::new(
        Opts::new(
            "mezzo_master_resources_capacity",
            "Resources of reachable agents",
        ),
        &["resource"],
    )?;
    let used = GaugeVec::new(
        Opts::new(
            "mezzo_master_resources_used",
            "Resources used by tasks on reachable agents",
        ),
        &["resource"],
    )?;
    for r in ["cpus", "mem", "disk"] {
        total
            .with_label_values(&[r])
            .set(num(metrics, &format!("master/{r}_total")));
        used.with_label_values(&[r])
            .set(num(metrics, &format!("master/{r}_used")));
    }
    reg.register(Box::new(total))?;
    reg.register(Box::new(used))?;
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
    reg.register(Box::new(messages))?;
    let counter = |name: &str, help: &str, v: f64| -> Result<(), prometheus::Error> {
        let c = IntCounter::new(name, help)?;
        c.inc_by(v.max(0.0) as u64);
        reg.register(Box::new(c))
    };
    counter(
        "mezzo_allocator_runs_total",
        "Allocation rounds run",
        num(metrics, "allocator/mesos/allocation_runs"),
    )?;
    counter(
        "mezzo_master_agent_registrations_total",
        "Agent registrations",
        num(metrics, "master/slave_registrations"),
    )?;
    counter(
        "mezzo_master_agent_reregistrations_total",
        "Agent re-registrations",
        num(metrics, "master/slave_reregistrations"),
    )?;
    counter(
        "mezzo_master_agent_removals_total",
        "Agents marked unreachable",
        num(metrics, "master/slave_removals"),
    )?;
    counter(
        "mezzo_master_invalid_launches_total",
        "Tasks refused at launch (TASK_ERROR, TASK_DROPPED, TASK_LOST)",
        num(metrics, "master/invalid_launches"),
    )?;
    // Per-framework allocation: what operators chart to see who holds what.
    let fw_used = GaugeVec::new(
        Opts::new(
            "mezzo_framework_resources_used",
            "Resources used by a framework's tasks",
        ),
        &["framework_id", "framework_name", "role", "resource"],
    )?;
    let fw_offered = GaugeVec::new(
        Opts::new(
            "mezzo_framework_resources_offered",
            "Resources offered to a framework and not yet answered",
        ),
        &["framework_id", "framework_name", "role", "resource"],
    )?;
    for f in state
        .get("frameworks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (id, name, role) = (s("id"), s("name"), s("role"));
        for r in ["cpus", "mem", "disk"] {
            let labels = [id.as_str(), name.as_str(), role.as_str(), r];
            fw_used
                .with_label_values(&labels)
                .set(f.get("used_resources").map(|u| num(u, r)).unwrap_or(0.0));
            fw_offered
                .with_label_values(&labels)
                .set(f.get("offered_resources").map(|u| num(u, r)).unwrap_or(0.0));
        }
    }
    reg.register(Box::new(fw_used))?;
    reg.register(Box::new(fw_offered))?;
    let mut families = reg.gather();
    families.extend(HISTOGRAMS.registry.gather());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = Vec::new();
    TextEncoder::new().encode(&families, &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
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
        let mut t = Timings::default();
        t.offer_accept(0.01);
        let metrics = json!({"master/elected": 1, "master/tasks_running": 2, "master/messages_decline_offers": 3});
        let state = json!({"frameworks": [{"id": "f1", "name": "n \"q\"", "role": "*", "used_resources": {"cpus": 1.0}}]});
        let text = render(&state, &metrics).unwrap();
        assert!(text.contains("# TYPE mezzo_offer_accept_latency_seconds histogram"));
        assert!(text.contains("mezzo_master_tasks{state=\"TASK_RUNNING\"} 2"));
        assert!(text.contains("mezzo_master_messages_total{type=\"decline_offers\"} 3"));
        assert!(text.contains("# HELP mezzo_master_elected"));
    }
}
