//! A small versioned key-value store on znodes (the registry's ZooKeeper backend).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tracing::{debug, info};
use zookeeper_client::{Client, MultiWriteError, MultiWriteResult};

use crate::error::{Error, Result};
use crate::url::ZkUrl;
use crate::util::{connect, ensure_path, join, persistent};

/// Largest value accepted (1 MB). ZooKeeper refuses requests over its `jute.maxbuffer`
/// (1 MiB by default, including the request header and path), so bigger values fail here
/// with [`Error::TooLarge`] instead of a dropped connection.
pub const MAX_VALUE_BYTES: usize = 1_000_000;

/// A versioned key-value store: key `a/b` is the persistent znode `<path>/a/b`.
///
/// Every value carries the znode's version; [`ZkStore::set`] and [`ZkStore::delete`] are
/// compare-and-set on it, so a writer holding a stale version is refused with
/// [`Error::BadVersion`]. Handles are cheap to clone and share one session, which is
/// re-established on the next call after it expires.
///
/// After a [`Error::ConnectionLoss`] a write may or may not have been applied: re-read
/// the key (and its version) before retrying.
#[derive(Debug, Clone)]
pub struct ZkStore {
    inner: Arc<Inner>,
    fence: Option<String>,
}

#[derive(Debug)]
struct Inner {
    url: ZkUrl,
    session_timeout: Duration,
    client: Mutex<Option<Client>>,
}

/// A write operation, run plainly or inside a fenced transaction.
enum Write<'a> {
    Create(&'a [u8]),
    Set(&'a [u8], i32),
    Delete(i32),
}

impl ZkStore {
    /// Connects to `url.servers` and creates `url.path` if missing.
    pub async fn connect(url: &ZkUrl, session_timeout: Duration) -> Result<ZkStore> {
        let store = ZkStore {
            inner: Arc::new(Inner {
                url: url.clone(),
                session_timeout,
                client: Mutex::new(None),
            }),
            fence: None,
        };
        let client = store.client().await?;
        ensure_path(&client, &url.path).await?;
        Ok(store)
    }

    /// A handle on the same store whose writes (create, set, delete) only succeed while
    /// the znode `fence_node` exists: each runs in one ZooKeeper transaction with a check
    /// of that node, failing with [`Error::Fenced`] otherwise. Pass the writer's election
    /// node ([`crate::election_node_path`]`(path, epoch)`): once its session expires the
    /// node is gone and no write of that leader can land, even one already in flight.
    pub fn fenced(&self, fence_node: impl Into<String>) -> ZkStore {
        ZkStore {
            inner: self.inner.clone(),
            fence: Some(fence_node.into()),
        }
    }

    /// The fencing node of this handle, if any.
    pub fn fence(&self) -> Option<&str> {
        self.fence.as_deref()
    }

    /// The store's URL (its root is `url.path`).
    pub fn url(&self) -> &ZkUrl {
        &self.inner.url
    }

    /// The absolute znode path of `key` (validated: non-empty `/`-separated segments, no
    /// `.`/`..`, no leading or trailing `/`).
    pub fn path_of(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        Ok(join(&self.inner.url.path, key))
    }

    /// The value and version of `key`, `None` if absent.
    pub async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, i32)>> {
        let path = self.path_of(key)?;
        let client = self.client().await?;
        match client.get_data(&path).await {
            Ok((data, stat)) => Ok(Some((data, stat.version))),
            Err(zookeeper_client::Error::NoNode) => Ok(None),
            Err(e) => Err(self.failed(&client, &path, e).await),
        }
    }

    /// Creates `key` with `data` (and missing parents); returns its version (0). Fails with
    /// [`Error::AlreadyExists`] if it exists.
    pub async fn create(&self, key: &str, data: &[u8]) -> Result<i32> {
        self.write(key, Write::Create(data)).await
    }

    /// Replaces the value of `key` if its version is still `expected_version`; returns the
    /// new version. A stale writer gets [`Error::BadVersion`]; a missing key [`Error::NoNode`].
    pub async fn set(&self, key: &str, data: &[u8], expected_version: i32) -> Result<i32> {
        self.write(key, Write::Set(data, expected_version)).await
    }

    /// Deletes `key` if its version is still `version` ([`Error::BadVersion`] otherwise,
    /// [`Error::NoNode`] if absent). A key with children cannot be deleted.
    pub async fn delete(&self, key: &str, version: i32) -> Result<()> {
        self.write(key, Write::Delete(version)).await.map(|_| ())
    }

    /// Keys starting with `prefix` among the children of one "directory", sorted.
    /// The prefix is split at its last `/`: `"agents/"` lists every child of `agents`
    /// (returning `agents/<child>`), `"frameworks/fw-"` those children of `frameworks`
    /// whose name starts with `fw-`, `""` the top-level keys. A missing directory lists
    /// nothing. Election nodes (`json.info_*`) at the top level are not keys and are skipped.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let (dir, name_prefix) = match prefix.rfind('/') {
            Some(i) => (&prefix[..i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let path = if dir.is_empty() {
            self.inner.url.path.clone()
        } else {
            self.path_of(dir)?
        };
        let client = self.client().await?;
        let children = match client.list_children(&path).await {
            Ok(c) => c,
            Err(zookeeper_client::Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(self.failed(&client, &path, e).await),
        };
        let mut keys: Vec<String> = children
            .into_iter()
            .filter(|c| c.starts_with(name_prefix))
            .filter(|c| !dir.is_empty() || crate::parse_election_node(c).is_none())
            .map(|c| {
                if dir.is_empty() {
                    c
                } else {
                    format!("{dir}/{c}")
                }
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn write(&self, key: &str, op: Write<'_>) -> Result<i32> {
        let path = self.path_of(key)?;
        if let Write::Create(data) | Write::Set(data, _) = op {
            if data.len() > MAX_VALUE_BYTES {
                return Err(Error::TooLarge {
                    key: key.to_string(),
                    size: data.len(),
                    limit: MAX_VALUE_BYTES,
                });
            }
        }
        let client = self.client().await?;
        let mut parents_ensured = false;
        loop {
            let result = match &self.fence {
                None => self.write_plain(&client, &path, &op).await,
                Some(fence) => self.write_fenced(&client, &path, fence, &op).await,
            };
            return match result {
                Ok(version) => {
                    debug!(key, version, "store write");
                    Ok(version)
                }
                Err(WriteFailure::Fenced) => {
                    info!(key, fence = ?self.fence, "store write refused: fencing node gone");
                    Err(Error::Fenced {
                        key: key.to_string(),
                        fence: self.fence.clone().unwrap_or_default(),
                    })
                }
                Err(WriteFailure::Zk(zookeeper_client::Error::NoNode))
                    if matches!(op, Write::Create(_)) && !parents_ensured =>
                {
                    if let Some(i) = path.rfind('/').filter(|i| *i > 0) {
                        ensure_path(&client, &path[..i]).await?;
                    }
                    parents_ensured = true;
                    continue;
                }
                Err(WriteFailure::Zk(e)) => Err(match e {
                    zookeeper_client::Error::NodeExists => Error::AlreadyExists {
                        key: key.to_string(),
                    },
                    zookeeper_client::Error::NoNode => Error::NoNode {
                        key: key.to_string(),
                    },
                    zookeeper_client::Error::BadVersion => {
                        let expected = match op {
                            Write::Set(_, v) | Write::Delete(v) => v,
                            Write::Create(_) => -1,
                        };
                        info!(
                            key,
                            expected, "store compare-and-set refused a stale version"
                        );
                        Error::BadVersion {
                            key: key.to_string(),
                            expected,
                        }
                    }
                    e => self.failed(&client, &path, e).await,
                }),
            };
        }
    }

    async fn write_plain(
        &self,
        client: &Client,
        path: &str,
        op: &Write<'_>,
    ) -> Result<i32, WriteFailure> {
        match *op {
            Write::Create(data) => client
                .create(path, data, &persistent())
                .await
                .map(|(s, _)| s.version.max(0)),
            Write::Set(data, v) => client
                .set_data(path, data, Some(v))
                .await
                .map(|s| s.version),
            Write::Delete(v) => client.delete(path, Some(v)).await.map(|_| 0),
        }
        .map_err(WriteFailure::Zk)
    }

    async fn write_fenced(
        &self,
        client: &Client,
        path: &str,
        fence: &str,
        op: &Write<'_>,
    ) -> Result<i32, WriteFailure> {
        let mut txn = client.new_multi_writer();
        txn.add_check_version(fence, -1).map_err(WriteFailure::Zk)?;
        match *op {
            Write::Create(data) => txn.add_create(path, data, &persistent()),
            Write::Set(data, v) => txn.add_set_data(path, data, Some(v)),
            Write::Delete(v) => txn.add_delete(path, Some(v)),
        }
        .map_err(WriteFailure::Zk)?;
        match txn.commit().await {
            Ok(results) => Ok(match results.into_iter().nth(1) {
                Some(MultiWriteResult::SetData { stat }) => stat.version,
                _ => 0,
            }),
            Err(MultiWriteError::OperationFailed {
                index: 0,
                source: zookeeper_client::Error::NoNode,
            }) => Err(WriteFailure::Fenced),
            Err(MultiWriteError::OperationFailed { source, .. }) => Err(WriteFailure::Zk(source)),
            Err(MultiWriteError::RequestFailed { source }) => Err(WriteFailure::Zk(source)),
        }
    }

    /// The live session, reconnecting if it expired or was never opened.
    async fn client(&self) -> Result<Client> {
        let mut guard = self.inner.client.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.state().is_terminated() {
                return Ok(c.clone());
            }
            info!(url = %self.inner.url, "store session ended; reconnecting");
        }
        let c = connect(&self.inner.url, self.inner.session_timeout).await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Maps an operation failure, forgetting a dead session so the next call reconnects.
    async fn failed(&self, client: &Client, path: &str, e: zookeeper_client::Error) -> Error {
        if client.state().is_terminated() {
            let mut guard = self.inner.client.lock().await;
            if guard
                .as_ref()
                .is_some_and(|c| c.session_id() == client.session_id())
            {
                *guard = None;
            }
        }
        Error::zk(path, e)
    }
}

enum WriteFailure {
    Fenced,
    Zk(zookeeper_client::Error),
}

fn validate_key(key: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return bad("must not start or end with '/'");
    }
    if key.contains('\0') {
        return bad("contains NUL");
    }
    for seg in key.split('/') {
        if seg.is_empty() {
            return bad("empty segment");
        }
        if seg == "." || seg == ".." {
            return bad("relative segment");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_key;

    #[test]
    fn keys() {
        assert!(validate_key("registry").is_ok());
        assert!(validate_key("frameworks/fw-1").is_ok());
        for k in ["", "/a", "a/", "a//b", "a/../b", ".", "a\0"] {
            assert!(validate_key(k).is_err(), "{k:?}");
        }
    }
}
