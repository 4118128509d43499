//! The registry: the little state that must survive a master failover —
//! admitted agents, registered frameworks (with their failover timeouts),
//! frameworks that were removed for good, and role weights.
//!
//! Task state is deliberately absent: after a failover agents re-register
//! with their tasks and frameworks re-subscribe and reconcile (Mesos' model).
//!
//! Two stores behind one trait, both compare-and-set on a version so two
//! masters can never both write:
//! * [`ZkRegistry`]: one znode, written in a transaction that also checks
//!   the writer's election node still exists (a deposed leader is fenced);
//! * [`FileRegistry`]: a local file for standalone masters (temp file,
//!   fsync, rename), versioned inside the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Errors of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Another writer changed the registry since we read it.
    #[error("registry version conflict: expected version {expected}, found {found}")]
    Conflict {
        /// The version we based the write on.
        expected: i64,
        /// The version in the store.
        found: i64,
    },
    /// This master no longer leads (its election node is gone).
    #[error("registry write fenced: this master no longer leads")]
    Fenced,
    /// The store failed.
    #[error("registry store {path}: {message}")]
    Store {
        /// File or znode path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// An agent the master admitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdmittedAgent {
    /// Its hostname.
    pub hostname: String,
    /// Its HTTP port.
    pub port: u32,
    /// Its total resources in Mesos text syntax.
    pub resources: String,
}

/// A framework the master registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredFramework {
    /// Framework name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Seconds its tasks outlive a disconnection.
    pub failover_timeout: f64,
    /// Its user.
    pub user: String,
    /// Its capabilities (PARTITION_AWARE...).
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// Everything the registry keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistryState {
    /// Admitted agents by id.
    pub agents: BTreeMap<String, AdmittedAgent>,
    /// Registered frameworks by id.
    pub frameworks: BTreeMap<String, RegisteredFramework>,
    /// Ids of frameworks torn down or timed out: they may not come back.
    pub removed_frameworks: BTreeSet<String>,
    /// Role weights.
    pub weights: BTreeMap<String, f64>,
}

/// Removed framework ids kept (oldest dropped first), bounding the registry.
pub const MAX_REMOVED_FRAMEWORKS: usize = 1000;

/// A durable, versioned home for [`RegistryState`].
#[async_trait::async_trait]
pub trait Registry: Send + Sync {
    /// Reads the state and its version (`None` version: never written).
    async fn load(&self) -> Result<(RegistryState, Option<i64>), RegistryError>;
    /// Writes `state` if the stored version is still `expected`; returns the
    /// new version.
    async fn store(
        &self,
        state: &RegistryState,
        expected: Option<i64>,
    ) -> Result<i64, RegistryError>;
}

/// File layout: the version next to the state, so CAS needs one file.
#[derive(Serialize, Deserialize)]
struct FileRecord {
    version: i64,
    state: RegistryState,
}

/// The standalone registry: one JSON file written atomically.
#[derive(Debug, Clone)]
pub struct FileRegistry {
    path: PathBuf,
}

impl FileRegistry {
    /// A registry at `path` (created on first store).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileRegistry { path: path.into() }
    }

    fn err(&self, e: impl std::fmt::Display) -> RegistryError {
        RegistryError::Store {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn read(&self) -> Result<Option<FileRecord>, RegistryError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.err(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }
}

#[async_trait::async_trait]
impl Registry for FileRegistry {
    async fn load(&self) -> Result<(RegistryState, Option<i64>), RegistryError> {
        Ok(match self.read()? {
            Some(r) => (r.state, Some(r.version)),
            None => (RegistryState::default(), None),
        })
    }

    async fn store(
        &self,
        state: &RegistryState,
        expected: Option<i64>,
    ) -> Result<i64, RegistryError> {
        let found = self.read()?.map(|r| r.version);
        if found != expected {
            return Err(RegistryError::Conflict {
                expected: expected.unwrap_or(-1),
                found: found.unwrap_or(-1),
            });
        }
        let version = found.map_or(0, |v| v + 1);
        let body = serde_json::to_vec_pretty(&FileRecord {
            version,
            state: state.clone(),
        })
        .map_err(|e| self.err(e))?;
        mezzo_runtime::fs::write_atomic(&self.path, &body).map_err(|e| self.err(e))?;
        Ok(version)
    }
}

/// The HA registry: the znode `<zk path>/registry`, written only while the
/// writer's election node exists.
#[derive(Debug, Clone)]
pub struct ZkRegistry {
    store: mezzo_zk::ZkStore,
}

/// The registry's key under the ZooKeeper path.
const KEY: &str = "registry";

impl ZkRegistry {
    /// A registry on `store`; writes are fenced by `election_node` (the
    /// leader's own `json.info_` znode) when given.
    pub fn new(store: mezzo_zk::ZkStore, election_node: Option<String>) -> Self {
        let store = match election_node {
            Some(node) => store.fenced(node),
            None => store,
        };
        ZkRegistry { store }
    }

    fn err(&self, e: impl std::fmt::Display) -> RegistryError {
        RegistryError::Store {
            path: self.store.path_of(KEY).unwrap_or_else(|_| KEY.to_string()),
            message: e.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Registry for ZkRegistry {
    async fn load(&self) -> Result<(RegistryState, Option<i64>), RegistryError> {
        match self.store.get(KEY).await.map_err(|e| self.err(e))? {
            Some((bytes, version)) => {
                let state = serde_json::from_slice(&bytes).map_err(|e| self.err(e))?;
                Ok((state, Some(i64::from(version))))
            }
            None => Ok((RegistryState::default(), None)),
        }
    }

    async fn store(
        &self,
        state: &RegistryState,
        expected: Option<i64>,
    ) -> Result<i64, RegistryError> {
        let body = serde_json::to_vec(state).map_err(|e| self.err(e))?;
        let result = match expected {
            None => self.store.create(KEY, &body).await,
            Some(v) => {
                let v = i32::try_from(v).map_err(|e| self.err(e))?;
                self.store.set(KEY, &body, v).await
            }
        };
        match result {
            Ok(v) => Ok(i64::from(v)),
            Err(mezzo_zk::Error::BadVersion { .. })
            | Err(mezzo_zk::Error::AlreadyExists { .. }) => {
                let found = match self.store.get(KEY).await {
                    Ok(Some((_, v))) => i64::from(v),
                    _ => -1,
                };
                Err(RegistryError::Conflict {
                    expected: expected.unwrap_or(-1),
                    found,
                })
            }
            Err(mezzo_zk::Error::Fenced { .. }) => Err(RegistryError::Fenced),
            Err(e) => Err(self.err(e)),
        }
    }
}

/// The loaded registry handed to a newly leading actor, and where its
/// changes go: a writer task stores the latest state (coalescing bursts).
pub struct RegistryHandle {
    /// The state as loaded.
    pub state: RegistryState,
    /// Publish every change here.
    pub writer: tokio::sync::watch::Sender<RegistryState>,
    /// The writer task: it stores what is pending and ends once `writer`
    /// is dropped, so a master shutting down awaits it to flush.
    pub done: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RegistryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryHandle")
            .field("state", &self.state)
            .finish()
    }
}

/// Loads `registry` and starts its writer task.
pub async fn open(registry: Box<dyn Registry>) -> Result<RegistryHandle, RegistryError> {
    let (state, version) = registry.load().await?;
    let (tx, rx) = tokio::sync::watch::channel(state.clone());
    let done = tokio::spawn(writer(registry, version, rx));
    Ok(RegistryHandle {
        state,
        writer: tx,
        done,
    })
}

/// Stores each new state. A conflict or fence means another master owns
/// the registry now: this writer stops (the election tells the actor).
async fn writer(
    registry: Box<dyn Registry>,
    mut version: Option<i64>,
    mut rx: tokio::sync::watch::Receiver<RegistryState>,
) {
    let mut backoff = std::time::Duration::from_millis(100);
    while rx.changed().await.is_ok() {
        loop {
            let state = rx.borrow_and_update().clone();
            match registry.store(&state, version).await {
                Ok(v) => {
                    version = Some(v);
                    backoff = std::time::Duration::from_millis(100);
                    break;
                }
                Err(e @ (RegistryError::Conflict { .. } | RegistryError::Fenced)) => {
                    tracing::error!(error = %e, "registry writer stopped: another master owns the registry");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registry write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_registry_round_trips_and_refuses_a_stale_writer() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileRegistry::new(dir.path().join("registry.json"));
        let b = FileRegistry::new(dir.path().join("registry.json"));
        let (empty, v) = a.load().await.unwrap();
        assert_eq!(empty, RegistryState::default());
        assert_eq!(v, None);
        let mut s = RegistryState::default();
        s.frameworks.insert(
            "fw-1".into(),
            RegisteredFramework {
                name: "marathon".into(),
                role: "*".into(),
                failover_timeout: 60.0,
                user: "root".into(),
                capabilities: vec![],
            },
        );
        let v0 = a.store(&s, None).await.unwrap();
        // b read nothing earlier: its write is based on a stale version.
        let err = b.store(&RegistryState::default(), None).await.unwrap_err();
        assert!(
            matches!(
                err,
                RegistryError::Conflict {
                    expected: -1,
                    found: 0
                }
            ),
            "{err}"
        );
        let (back, v) = b.load().await.unwrap();
        assert_eq!(back, s);
        assert_eq!(v, Some(v0));
        s.removed_frameworks.insert("fw-0".into());
        let v1 = b.store(&s, Some(v0)).await.unwrap();
        assert_eq!(v1, v0 + 1);
        assert!(
            a.store(&s, Some(v0)).await.is_err(),
            "a stale writer must be refused"
        );
    }
}
