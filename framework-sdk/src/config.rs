//! How a driver connects and behaves: [`DriverConfig`].

use std::time::Duration;

use mezzo_proto::v1;
use tonic::transport::Endpoint;

use crate::SdkError;

/// Configuration of a [`SchedulerDriver`](crate::SchedulerDriver).
///
/// Build it with [`DriverConfig::new`] and adjust the public fields; the struct is
/// `#[non_exhaustive]` so new settings can be added without breaking callers.
///
/// ```
/// use std::time::Duration;
/// use mezzo_sdk::{v1, DriverConfig};
///
/// let framework = v1::FrameworkInfo { name: "example".into(), ..Default::default() };
/// let mut config = DriverConfig::new("127.0.0.1:5050", framework);
/// config.auto_acknowledge = false;
/// config.max_backoff = Duration::from_secs(2);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DriverConfig {
    /// Where the master listens: `host:port` or `http://host:port`. Several masters
    /// (a high-availability set) may be given comma-separated, `h1:5050,h2:5050`: the
    /// driver tries them in turn until one accepts the subscription, and follows a
    /// standby's redirect to the leader (see [`LEADER_METADATA_KEY`]).
    pub master: String,
    /// The framework to subscribe. `id` may be set to fail over an existing framework
    /// (e.g. a restarted scheduler process); otherwise the master assigns one, and the
    /// driver sets it on every re-subscription.
    pub framework: v1::FrameworkInfo,
    /// Roles to subscribe with offers suppressed (`SubscribeRequest.suppressed_roles`).
    pub suppressed_roles: Vec<String>,
    /// Acknowledge reliable status updates (those with a `uuid`) automatically, right
    /// after [`Scheduler::update`](crate::Scheduler::update) returns. Default `true`.
    /// When `false` the scheduler must call [`Driver::acknowledge`](crate::Driver::acknowledge)
    /// itself, or the agent keeps re-sending the update.
    pub auto_acknowledge: bool,
    /// Upper bound of the exponential backoff between (re)subscription attempts, which
    /// starts at 100 ms and doubles (with jitter). Default 5 s.
    pub max_backoff: Duration,
    /// Timeout for establishing the TCP/HTTP2 connection to a master. Default 5 s.
    pub connect_timeout: Duration,
    /// Timeout for each unary call (accept, decline, ...) and for the master's answer to
    /// `Subscribe` (not for the event stream itself). Default 30 s.
    pub request_timeout: Duration,
    /// How many heartbeat intervals without any event mean the master is gone: the
    /// driver then treats the subscription as lost and re-subscribes. Default 5, as Mesos
    /// recommends. The interval is the one the master announces in `Subscribed`
    /// (15 s until then).
    pub missed_heartbeats: u32,
}

/// Heartbeat interval assumed until the master announces its own (Mesos' default).
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// The gRPC metadata key a standby master sets on an error status to tell the
/// scheduler where the leader is (`host:port`). The driver follows it at once instead
/// of treating the status as a failure. This is the gRPC counterpart of Mesos'
/// `307 Temporary Redirect` to the leading master.
pub const LEADER_METADATA_KEY: &str = "mezzo-leader";

impl DriverConfig {
    /// A configuration with defaults: auto-acknowledge on, backoff capped at 5 s,
    /// connect timeout 5 s, request timeout 30 s, 5 missed heartbeats.
    pub fn new(master: impl Into<String>, framework: v1::FrameworkInfo) -> Self {
        DriverConfig {
            master: master.into(),
            framework,
            suppressed_roles: Vec::new(),
            auto_acknowledge: true,
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            missed_heartbeats: 5,
        }
    }

    /// Parses [`DriverConfig::master`] into one endpoint per master.
    pub(crate) fn endpoints(&self) -> Result<Vec<Endpoint>, SdkError> {
        let endpoints = self
            .master
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|address| endpoint(address, self.connect_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(SdkError::InvalidMaster {
                address: self.master.clone(),
                reason: "no address given".into(),
            });
        }
        Ok(endpoints)
    }
}

/// One master address (`host:port` or `http://host:port`) as a tonic endpoint.
pub(crate) fn endpoint(address: &str, connect_timeout: Duration) -> Result<Endpoint, SdkError> {
    let invalid = |reason: String| SdkError::InvalidMaster {
        address: address.to_string(),
        reason,
    };
    let url = if address.contains("://") {
        address.to_string()
    } else {
        // Mesos users write `host:5050`; gRPC needs a URI.
        format!("http://{address}")
    };
    if !url.starts_with("http://") {
        return Err(invalid("only http:// masters are supported".into()));
    }
    let endpoint = Endpoint::from_shared(url).map_err(|e| invalid(e.to_string()))?;
    if endpoint.uri().host().is_none_or(str::is_empty) {
        return Err(invalid("missing host".into()));
    }
    Ok(endpoint.connect_timeout(connect_timeout).tcp_nodelay(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(master: &str) -> DriverConfig {
        DriverConfig::new(master, v1::FrameworkInfo::default())
    }

    #[test]
    fn accepts_host_port_and_urls() {
        let e = config("127.0.0.1:5050").endpoints().unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].uri().to_string(), "http://127.0.0.1:5050/");
        let e = config("http://m1:5050, m2:5051").endpoints().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].uri().port_u16(), Some(5051));
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in ["", " , ", "https://m:5050", "http://", "not a host:x"] {
            assert!(
                matches!(config(bad).endpoints(), Err(SdkError::InvalidMaster { .. })),
                "{bad:?}"
            );
        }
    }
}
