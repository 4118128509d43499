//! Shared helpers: paths, election node names, connecting, backoff.

use std::time::Duration;

use zookeeper_client::{Acls, Client, CreateMode, CreateOptions};

use crate::error::{Error, Result};
use crate::url::ZkUrl;

/// Label of election znodes: `json.info_<seq>` (Mesos' `MASTER_INFO_JSON_LABEL`).
pub const ELECTION_LABEL: &str = "json.info";

/// Joins an absolute parent path and a relative child.
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// Path of the election znode with sequence `epoch` under `path`:
/// `<path>/json.info_<epoch, 10 digits>`. Usable as a fence for [`crate::ZkStore::fenced`].
pub fn election_node_path(path: &str, epoch: u64) -> String {
    join(path, &format!("{ELECTION_LABEL}_{epoch:010}"))
}

/// Sequence of a child name `json.info_<digits>`; `None` for any other child.
pub fn parse_election_node(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(ELECTION_LABEL)?.strip_prefix('_')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Sorted `(sequence, name)` of the election nodes among `children`.
pub(crate) fn election_members(children: &[String]) -> Vec<(u64, String)> {
    let mut members: Vec<(u64, String)> = children
        .iter()
        .filter_map(|c| parse_election_node(c).map(|s| (s, c.clone())))
        .collect();
    members.sort();
    members
}

/// Persistent, world-readable-and-writable creation options.
pub(crate) fn persistent() -> CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

/// Creates `path` and its ancestors (persistent) when missing.
pub(crate) async fn ensure_path(client: &Client, path: &str) -> Result<()> {
    if path == "/" {
        return Ok(());
    }
    client
        .mkdir(path, &persistent())
        .await
        .map_err(|e| Error::zk(path, e))
}

/// Opens a new session. Fails fast (once every server was tried) when none answers.
pub(crate) async fn connect(url: &ZkUrl, session_timeout: Duration) -> Result<Client> {
    Client::connector()
        .with_session_timeout(session_timeout)
        .with_fail_eagerly()
        .connect(&url.servers)
        .await
        .map_err(|source| Error::Connect {
            servers: url.servers.clone(),
            source,
        })
}

/// Exponential backoff between reconnection attempts.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const INITIAL: Duration = Duration::from_millis(100);

    pub(crate) fn new(max: Duration) -> Backoff {
        Backoff {
            next: Self::INITIAL,
            max: max.max(Self::INITIAL),
        }
    }

    /// The delay to wait now; doubles the next one up to the maximum.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_names() {
        assert_eq!(parse_election_node("json.info_0000000003"), Some(3));
        assert_eq!(parse_election_node("json.info_12"), Some(12));
        assert_eq!(parse_election_node("info_0000000003"), None);
        assert_eq!(parse_election_node("log_replicas"), None);
        assert_eq!(parse_election_node("json.info_"), None);
        assert_eq!(parse_election_node("json.info_12a"), None);
        assert_eq!(
            election_node_path("/mezzo", 7),
            "/mezzo/json.info_0000000007"
        );
        let kids = vec![
            "log_replicas".into(),
            "json.info_0000000010".into(),
            "json.info_0000000002".into(),
        ];
        let m = election_members(&kids);
        assert_eq!(
            m,
            vec![
                (2, "json.info_0000000002".into()),
                (10, "json.info_0000000010".into())
            ]
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(350));
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        assert_eq!(b.next_delay(), Duration::from_millis(200));
        assert_eq!(b.next_delay(), Duration::from_millis(350));
        assert_eq!(b.next_delay(), Duration::from_millis(350));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
