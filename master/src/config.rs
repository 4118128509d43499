//! The master's configuration, independent of how it was given (flags, env).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything the master needs to start.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Address to listen on for both gRPC and HTTP (port 0 = OS-chosen).
    pub listen: SocketAddr,
    /// Hostname advertised in MasterInfo (defaults to the listen IP).
    pub hostname: Option<String>,
    /// Batch allocation interval (Mesos `--allocation_interval`, default 1 s).
    pub allocation_interval: Duration,
    /// Outstanding offers are rescinded after this long (Mesos `--offer_timeout`; None = never).
    pub offer_timeout: Option<Duration>,
    /// How often the master pings each agent (Mesos `--agent_ping_timeout`, 15 s).
    pub agent_ping_timeout: Duration,
    /// Missed pings before an agent is unreachable (Mesos `--max_agent_ping_timeouts`, 5).
    pub max_agent_ping_timeouts: u32,
    /// Heartbeat interval sent to frameworks in SUBSCRIBED (Mesos: 15 s).
    pub framework_heartbeat_interval: Duration,
    /// Role weights (Mesos `--weights role1=w1,role2=w2`).
    pub weights: HashMap<String, f64>,
    /// Terminal tasks kept per framework for `/master/state` (Mesos: 1000).
    pub max_completed_tasks_per_framework: usize,
    /// `zk://host:port,.../path`: contend for leadership in ZooKeeper
    /// instead of leading standalone.
    pub zk: Option<String>,
    /// ZooKeeper session timeout (Mesos `--zk_session_timeout`, 10 s).
    pub zk_session_timeout: Duration,
    /// Where a standalone master keeps its registry file (None: no registry).
    pub work_dir: Option<std::path::PathBuf>,
    /// How long agents known to the registry get to re-register after a
    /// failover before they are marked unreachable (Mesos: 10 min).
    pub agent_reregister_timeout: Duration,
    /// At most this many agents are removed (marked unreachable, their
    /// tasks lost) per period, whether they missed their pings or did not
    /// re-register after a failover; the rest wait their turn (Mesos
    /// `--agent_removal_rate_limit`; None = remove at once).
    pub agent_removal_rate_limit: Option<RateLimit>,
    /// Tripped to stop: the master stops accepting, closes every stream
    /// with a reason, flushes its registry and returns from `wait`.
    pub shutdown: mezzo_runtime::Shutdown,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5050)),
            hostname: None,
            allocation_interval: Duration::from_secs(1),
            offer_timeout: None,
            agent_ping_timeout: Duration::from_secs(15),
            max_agent_ping_timeouts: 5,
            framework_heartbeat_interval: Duration::from_secs(15),
            weights: HashMap::new(),
            max_completed_tasks_per_framework: 1000,
            zk: None,
            zk_session_timeout: Duration::from_secs(10),
            work_dir: None,
            agent_reregister_timeout: Duration::from_secs(600),
            agent_removal_rate_limit: None,
            shutdown: mezzo_runtime::Shutdown::new(),
        }
    }
}

/// A rate in Mesos' `N/Duration` form (`1/10mins`, `2/3hrs`): `permits`
/// events per `period`, spaced evenly (one every `period / permits`), as
/// Mesos' `RateLimiter` releases them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Events allowed per period (at least 1).
    pub permits: u32,
    /// The period.
    pub period: Duration,
}

impl RateLimit {
    /// The least time between two events.
    pub fn interval(&self) -> Duration {
        self.period / self.permits.max(1)
    }

    /// Parses `N/Duration`; the duration is a number and one of Mesos'
    /// units (`ns us ms secs mins hrs days weeks`, singular and short
    /// forms accepted), e.g. `1/10mins`, `5/1secs`, `2/1.5hrs`.
    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let text = text.trim();
        let invalid = |why: &str| {
            format!("invalid rate '{text}': {why} (expected N/Duration, e.g. 1/10mins)")
        };
        let (n, d) = text.split_once('/').ok_or_else(|| invalid("no '/'"))?;
        let permits: u32 = n
            .trim()
            .parse()
            .map_err(|_| invalid("the count is not a whole number"))?;
        if permits == 0 {
            return Err(invalid("the count must be at least 1"));
        }
        let d = d.trim();
        let split = d
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| invalid("the duration has no unit"))?;
        let (num, unit) = d.split_at(split);
        let num: f64 = num
            .parse()
            .map_err(|_| invalid("the duration is not a number"))?;
        let unit_secs = match unit.trim() {
            "ns" | "nsecs" => 1e-9,
            "us" | "usecs" => 1e-6,
            "ms" | "msecs" => 1e-3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "week" | "weeks" => 604_800.0,
            _ => return Err(invalid("unknown duration unit")),
        };
        let secs = num * unit_secs;
        if !(secs.is_finite() && secs > 0.0) {
            return Err(invalid("the duration must be positive"));
        }
        Ok(RateLimit {
            permits,
            period: Duration::from_secs_f64(secs),
        })
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}secs", self.permits, self.period.as_secs_f64())
    }
}

/// Parses Mesos' `--weights` syntax: `role1=2,role2=0.5`.
pub fn parse_weights(text: &str) -> Result<HashMap<String, f64>, String> {
    let mut out = HashMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (role, w) = part
            .split_once('=')
            .ok_or_else(|| format!("invalid weight '{part}': expected role=weight"))?;
        let w: f64 = w
            .trim()
            .parse()
            .map_err(|_| format!("invalid weight '{part}': weight is not a number"))?;
        if !(w.is_finite() && w > 0.0) {
            return Err(format!("invalid weight '{part}': weight must be positive"));
        }
        out.insert(role.trim().to_string(), w);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights() {
        let w = parse_weights("a=1, b=3").unwrap();
        assert_eq!(w["b"], 3.0);
        assert!(parse_weights("a").unwrap_err().contains("'a'"));
        assert!(parse_weights("a=-1").is_err());
    }

    #[test]
    fn rate_limits_in_mesos_syntax() {
        let r = RateLimit::parse("1/10mins").unwrap();
        assert_eq!(r.permits, 1);
        assert_eq!(r.period, Duration::from_secs(600));
        assert_eq!(r.interval(), Duration::from_secs(600));
        let r = RateLimit::parse(" 2/3hrs ").unwrap();
        assert_eq!(r.interval(), Duration::from_secs(5400));
        assert_eq!(
            RateLimit::parse("4/2secs").unwrap().interval(),
            Duration::from_millis(500)
        );
        assert_eq!(
            RateLimit::parse("1/1.5s").unwrap().period,
            Duration::from_millis(1500)
        );
        for bad in [
            "",
            "1",
            "0/1secs",
            "x/1secs",
            "1/secs",
            "1/10",
            "1/10fortnights",
            "1/0secs",
        ] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
        assert!(RateLimit::parse("1/10").unwrap_err().contains("1/10mins"));
    }
}
