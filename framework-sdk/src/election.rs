//! High availability for frameworks: where an instance keeps its state and which
//! instance leads, so a framework needs no ZooKeeper crate of its own.
//!
//! [`FrameworkHa::open`] picks one of two modes:
//! * **standalone** (no `--zk`): the state is a [`FileStore`] in a local directory and
//!   the one instance leads forever (epoch 0);
//! * **ZooKeeper** (`zk://hosts/path`): the state is a [`ZooKeeperStore`] under
//!   `<path>/frameworks/<name>/state` and instances contend under
//!   `<path>/frameworks/<name>/leader` (see [`FrameworkZk`]), each node naming the
//!   instance's API address ([`InstanceInfo`]) so standbys can redirect to the leader.
//!
//! A leader acts in *terms*, one per epoch won: [`FrameworkHa::term_store`] gives the
//! term a store whose writes are fenced on the term's election node, and a
//! [`TermGuard`] says whether the term's leadership still holds (check it before every
//! launch or kill). Once ZooKeeper reports anything but `Leader` with that epoch, the
//! term must stop acting and a later one reloads its state from the store.
//!
//! Invariant: a deposed leader can never write (the fence), and is told to stop the
//! moment its connection to ZooKeeper is lost (the guard).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mezzo_zk::Contender;
use tokio::sync::watch;

use crate::store::{FileStore, FrameworkZk, Store, StoreError, ZkUrl, ZooKeeperStore};

/// Re-exported: what a contender currently is, and the leader it sees.
pub use mezzo_zk::{LeaderInfo, Leadership};

/// How one instance is named in the election: the address other instances redirect
/// API calls to. Written MasterInfo-shaped so [`LeaderInfo::address`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Host name or IP of the instance's API.
    pub hostname: String,
    /// Port of the instance's API.
    pub port: u16,
    /// Framework name.
    pub framework: String,
}

impl InstanceInfo {
    /// The bytes of the instance's election node.
    fn to_bytes(&self) -> Vec<u8> {
        serde_json::json!({
            "hostname": self.hostname,
            "port": self.port,
            "address": {"hostname": self.hostname, "port": self.port},
            "framework": self.framework,
        })
        .to_string()
        .into_bytes()
    }
}

/// A framework instance's store and its way of electing a leader (see the module docs).
#[derive(Clone)]
pub struct FrameworkHa {
    store: Arc<dyn Store>,
    zk: Option<ZkHa>,
}

impl std::fmt::Debug for FrameworkHa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameworkHa")
            .field("zk", &self.zk.as_ref().map(|z| &z.paths))
            .finish()
    }
}

#[derive(Debug, Clone)]
struct ZkHa {
    store: ZooKeeperStore,
    paths: FrameworkZk,
    session_timeout: Duration,
}

impl FrameworkHa {
    /// With `zk`, connects to the state of framework `name` in ZooKeeper; without,
    /// opens (creating it if missing) the local store in `state_dir`.
    pub async fn open(
        zk: Option<&ZkUrl>,
        name: &str,
        state_dir: &Path,
        session_timeout: Duration,
    ) -> Result<FrameworkHa, StoreError> {
        match zk {
            Some(url) => {
                let paths = FrameworkZk::new(url, name);
                let store = ZooKeeperStore::connect(&paths.state, session_timeout).await?;
                Ok(FrameworkHa {
                    store: Arc::new(store.clone()),
                    zk: Some(ZkHa {
                        store,
                        paths,
                        session_timeout,
                    }),
                })
            }
            None => Ok(FrameworkHa::with_store(Arc::new(FileStore::open(
                state_dir,
            )?))),
        }
    }

    /// Standalone over any store (e.g. a [`crate::MemoryStore`] in tests).
    pub fn with_store(store: Arc<dyn Store>) -> FrameworkHa {
        FrameworkHa { store, zk: None }
    }

    /// True without ZooKeeper: the one instance always leads.
    pub fn is_standalone(&self) -> bool {
        self.zk.is_none()
    }

    /// The store, unfenced: for reading (e.g. checking the state at start-up).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The store a term of leadership `epoch` writes through: with ZooKeeper, every
    /// write is refused ([`StoreError::Fenced`]) once that term's election node is gone.
    pub fn term_store(&self, epoch: u64) -> Arc<dyn Store> {
        match &self.zk {
            Some(zk) => Arc::new(
                zk.store
                    .fenced(mezzo_zk::election_node_path(&zk.paths.leader.path, epoch)),
            ),
            None => self.store.clone(),
        }
    }

    /// Enters the election as `instance` (standalone: leads at once, epoch 0). Needs a
    /// tokio runtime.
    pub fn elect(&self, instance: &InstanceInfo) -> Election {
        match &self.zk {
            Some(zk) => {
                let (contender, leadership) =
                    Contender::start(&zk.paths.leader, instance.to_bytes(), zk.session_timeout);
                Election {
                    leadership,
                    contender: Some(contender),
                    _standalone: None,
                }
            }
            None => {
                let (tx, leadership) = watch::channel(Leadership::Leader {
                    epoch: 0,
                    session_id: 0,
                });
                Election {
                    leadership,
                    contender: None,
                    _standalone: Some(tx),
                }
            }
        }
    }
}

/// This instance's place in the election. Dropping it leaves the election (the node
/// goes with its session); [`Election::withdraw`] leaves and waits for it.
#[derive(Debug)]
pub struct Election {
    leadership: watch::Receiver<Leadership>,
    contender: Option<Contender>,
    /// Keeps the standalone "always leader" channel open.
    _standalone: Option<watch::Sender<Leadership>>,
}

impl Election {
    /// A receiver of this instance's leadership, current value first.
    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// True without ZooKeeper.
    pub fn is_standalone(&self) -> bool {
        self.contender.is_none()
    }

    /// Leaves the election: leadership reads `Lost` at once, then the node is deleted.
    pub async fn withdraw(mut self) {
        if let Some(c) = self.contender.take() {
            c.withdraw().await;
        }
    }
}

/// The leadership of one term: acting is allowed only while the election still
/// reports `Leader` with the term's epoch.
#[derive(Debug, Clone)]
pub struct TermGuard {
    leadership: watch::Receiver<Leadership>,
    epoch: u64,
}

impl TermGuard {
    /// The guard of the term that won `epoch`.
    pub fn new(leadership: watch::Receiver<Leadership>, epoch: u64) -> TermGuard {
        TermGuard { leadership, epoch }
    }

    /// The term's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// True while this term's leadership holds.
    pub fn holds(&self) -> bool {
        self.leadership.borrow().leader_epoch() == Some(self.epoch)
    }

    /// Resolves when this term's leadership is gone.
    pub async fn lost(&mut self) {
        let epoch = self.epoch;
        let _ = self
            .leadership
            .wait_for(|l| l.leader_epoch() != Some(epoch))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_info_reads_back_as_the_leader_address() {
        let info = InstanceInfo {
            hostname: "10.0.0.7".into(),
            port: 8080,
            framework: "marathon".into(),
        };
        let leader = serde_json::from_slice(&info.to_bytes()).unwrap_or_default();
        assert_eq!(
            mezzo_zk::master_address(&leader).as_deref(),
            Some("10.0.0.7:8080")
        );
        assert_eq!(leader["framework"], "marathon");
    }

    #[tokio::test]
    async fn standalone_leads_epoch_zero_until_withdrawn() {
        let ha = FrameworkHa::with_store(Arc::new(crate::MemoryStore::new()));
        assert!(ha.is_standalone());
        let election = ha.elect(&InstanceInfo {
            hostname: "localhost".into(),
            port: 1,
            framework: "f".into(),
        });
        assert!(election.is_standalone());
        let guard = TermGuard::new(election.watch(), 0);
        assert!(guard.holds());
        assert!(!TermGuard::new(election.watch(), 1).holds(), "other epoch");
        ha.term_store(0).put("k", b"v", None).await.unwrap();
        assert_eq!(ha.store().get("k").await.unwrap().unwrap().data, b"v");
        election.withdraw().await;
    }

    #[tokio::test]
    async fn guard_sees_leadership_lost() {
        let (tx, rx) = watch::channel(Leadership::Leader {
            epoch: 3,
            session_id: 1,
        });
        let mut guard = TermGuard::new(rx, 3);
        assert!(guard.holds());
        tx.send_replace(Leadership::Lost);
        guard.lost().await;
        assert!(!guard.holds());
        // Regained with a new epoch: the old term stays over.
        tx.send_replace(Leadership::Leader {
            epoch: 4,
            session_id: 2,
        });
        assert!(!guard.holds());
    }
}
