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
            shutdown: mezzo_runtime::Shutdown::new(),
        }
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
}
