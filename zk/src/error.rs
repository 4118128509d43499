//! Error type of the crate.

/// Result alias using [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the ZooKeeper building blocks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The `zk://` URL is malformed; `reason` names the bad part.
    #[error("invalid ZooKeeper URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A store key is not a valid relative znode path.
    #[error("invalid store key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `create` of a key that already exists.
    #[error("store key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key does not exist.
    #[error("store key {key:?} does not exist")]
    NoNode {
        /// The key.
        key: String,
    },
    /// Compare-and-set refused: the znode's version is not the expected one (a stale writer).
    #[error("stale write to store key {key:?}: expected version {expected} is not current")]
    BadVersion {
        /// The key.
        key: String,
        /// The version the writer expected.
        expected: i32,
    },
    /// A fenced write was refused because the fencing znode (the writer's election node)
    /// no longer exists: the writer is not the leader any more.
    #[error("write to store key {key:?} refused: fencing node {fence} is gone (leadership lost)")]
    Fenced {
        /// The key.
        key: String,
        /// The fencing znode path.
        fence: String,
    },
    /// The value exceeds [`crate::MAX_VALUE_BYTES`] (ZooKeeper's 1 MB jute.maxbuffer limit).
    #[error("value for store key {key:?} is {size} bytes, over the {limit}-byte limit of a znode")]
    TooLarge {
        /// The key.
        key: String,
        /// Size of the value given.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The contender does not (or no longer) lead.
    #[error("not the leader")]
    NotLeader,
    /// Could not establish a ZooKeeper session.
    #[error("cannot connect to ZooKeeper at {servers}: {source}")]
    Connect {
        /// The servers tried.
        servers: String,
        /// The client's error.
        source: zookeeper_client::Error,
    },
    /// The connection was lost during the operation; a write may or may not have applied
    /// (re-read before retrying).
    #[error("ZooKeeper connection lost during operation on {path}")]
    ConnectionLoss {
        /// The znode path.
        path: String,
    },
    /// The session expired or was closed; the next operation reconnects.
    #[error("ZooKeeper session expired during operation on {path}")]
    SessionExpired {
        /// The znode path.
        path: String,
    },
    /// Any other ZooKeeper error.
    #[error("ZooKeeper error on {path}: {source}")]
    Zk {
        /// The znode path.
        path: String,
        /// The client's error.
        source: zookeeper_client::Error,
    },
}

impl Error {
    /// Maps a client error on `path` to the common variants (connection loss, expiry).
    pub(crate) fn zk(path: &str, source: zookeeper_client::Error) -> Error {
        use zookeeper_client::Error as Z;
        let path = path.to_string();
        match source {
            Z::ConnectionLoss | Z::Timeout => Error::ConnectionLoss { path },
            Z::SessionExpired | Z::ClientClosed | Z::SessionMoved => Error::SessionExpired { path },
            source => Error::Zk { path, source },
        }
    }

    /// True for errors caused by the connection or session rather than by the request.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. } | Error::ConnectionLoss { .. } | Error::SessionExpired { .. }
        )
    }
}
