//! Prometheus text exposition, built per scrape: each `/metrics` handler
//! fills an [`Exposition`] from its process's view and renders it, so the
//! Prometheus series and the Mesos-style JSON metrics come from the same
//! data and never disagree.

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Gauge, GaugeVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// One scrape's series.
#[derive(Default)]
pub struct Exposition {
    reg: Registry,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds any collector (e.g. a vector the caller filled).
    pub fn add<C: Collector + 'static>(&self, collector: C) -> Result<(), prometheus::Error> {
        self.reg.register(Box::new(collector))
    }

    /// A gauge with a float value.
    pub fn gauge(&self, name: &str, help: &str, value: f64) -> Result<(), prometheus::Error> {
        let g = Gauge::new(name, help)?;
        g.set(value);
        self.add(g)
    }

    /// A gauge with an integer value.
    pub fn int_gauge(&self, name: &str, help: &str, value: i64) -> Result<(), prometheus::Error> {
        let g = IntGauge::new(name, help)?;
        g.set(value);
        self.add(g)
    }

    /// A counter at `value`.
    pub fn counter(&self, name: &str, help: &str, value: u64) -> Result<(), prometheus::Error> {
        let c = IntCounter::new(name, help)?;
        c.inc_by(value);
        self.add(c)
    }

    /// One integer gauge per value of `label`.
    pub fn labelled_int_gauge(
        &self,
        (name, help, label): (&str, &str, &str),
        values: impl IntoIterator<Item = (String, i64)>,
    ) -> Result<(), prometheus::Error> {
        let g = IntGaugeVec::new(Opts::new(name, help), &[label])?;
        for (l, v) in values {
            g.with_label_values(&[l.as_str()]).set(v);
        }
        self.add(g)
    }

    /// One float gauge per value of `label`.
    pub fn labelled_gauge(
        &self,
        (name, help, label): (&str, &str, &str),
        values: impl IntoIterator<Item = (String, f64)>,
    ) -> Result<(), prometheus::Error> {
        let g = GaugeVec::new(Opts::new(name, help), &[label])?;
        for (l, v) in values {
            g.with_label_values(&[l.as_str()]).set(v);
        }
        self.add(g)
    }

    /// The text format of these series plus `extra` families (e.g. a
    /// process-wide histogram registry), sorted by name.
    pub fn render(self, extra: Vec<MetricFamily>) -> Result<String, prometheus::Error> {
        let mut families = self.reg.gather();
        families.extend(extra);
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut buf = Vec::new();
        prometheus::TextEncoder::new().encode(&families, &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sorted_families_with_help_and_labels() -> Result<(), prometheus::Error> {
        let e = Exposition::new();
        e.gauge("b_gauge", "a float", 1.5)?;
        e.counter("a_total", "a counter", 3)?;
        e.labelled_int_gauge(
            ("c_by_state", "per state", "state"),
            [("RUNNING".into(), 2)],
        )?;
        let text = e.render(Vec::new())?;
        let a = text.find("# HELP a_total").unwrap_or(usize::MAX);
        let b = text.find("# HELP b_gauge").unwrap_or(usize::MAX);
        assert!(a < b, "{text}");
        assert!(text.contains("a_total 3"));
        assert!(text.contains("b_gauge 1.5"));
        assert!(text.contains("c_by_state{state=\"RUNNING\"} 2"));
        Ok(())
    }

    #[test]
    fn a_duplicate_name_is_an_error_not_a_panic() -> Result<(), prometheus::Error> {
        let e = Exposition::new();
        e.gauge("x", "one", 1.0)?;
        assert!(e.gauge("x", "two", 2.0).is_err());
        Ok(())
    }
}
