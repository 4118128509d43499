//! Durable framework state behind one small versioned key-value [`Store`] trait, with
//! three implementations: [`FileStore`] (a local directory, for standalone mode),
//! [`ZooKeeperStore`] (znodes, for high availability) and [`MemoryStore`] (tests).
//!
//! # Semantics (the same for every implementation)
//!
//! * Keys are `/`-separated paths of segments made of `[A-Za-z0-9._-]`, not starting
//!   with `.` — like znode paths: `apps/_2fprod_2fweb`, `runs/report/20240101`. Encode an
//!   arbitrary id as one segment with [`key_segment`].
//! * Every key has a version: 1 after the first write, +1 per write; 0 means absent.
//!   [`Store::put`] with `expected` is compare-and-set (`Some(0)`: create only), failing
//!   with [`StoreError::Conflict`].
//! * [`Store::list`] returns the **names of the children** directly under a path
//!   (ZooKeeper's `getChildren`), sorted; `""` lists the top level. A missing path lists
//!   nothing. A path that only has children (a "directory") holds no value in the file
//!   and memory stores; in ZooKeeper it is a znode with empty data.
//! * [`Store::delete`] removes one key; absent keys are fine.
//! * Values are at most [`MAX_VALUE_BYTES`] in ZooKeeper; a bigger one is refused with
//!   [`StoreError::TooLarge`] (never a dropped connection or a crash).
//!
//! [`FileStore`] maps each key to a file under its root, replaced with
//! [`mezzo_runtime::fs::write_atomic`] (temp + fsync + rename + directory fsync), so a
//! crash leaves either the old or the new value, never a torn one.
//!
//! [`ZooKeeperStore`] keeps framework `<name>`'s state under
//! `<zk path>/frameworks/<name>/state` (see [`FrameworkZk`]); a leader's handle can be
//! [fenced](ZooKeeperStore::fenced) on its election node so that no write of a deposed
//! leader ever lands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use mezzo_zk::ZkStore;

/// Re-exported: the `zk://hosts/path` URL type.
pub use mezzo_zk::{ZkUrl, MAX_VALUE_BYTES};

/// A value's version: 1 for the first write, +1 per write (0: absent).
pub type Version = u64;

/// A stored value with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The bytes.
    pub data: Vec<u8>,
    /// Its version.
    pub version: Version,
}

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O on a path failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The key is not a valid path.
    #[error("invalid store key '{0}'")]
    InvalidKey(String),
    /// A conditional put found another version.
    #[error("version conflict on '{key}': expected {expected}, found {found}")]
    Conflict {
        /// The key.
        key: String,
        /// Version the caller expected (0: absent).
        expected: Version,
        /// Version found (0: absent).
        found: Version,
    },
    /// A stored value is not readable.
    #[error("corrupt value at '{key}': {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The value is bigger than the store accepts.
    #[error("value for '{key}' is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The key.
        key: String,
        /// Size of the value.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A fenced write was refused: the writer is no longer the leader.
    #[error("write to '{0}' refused: leadership lost")]
    Fenced(String),
    /// Another backend's failure (e.g. ZooKeeper unreachable).
    #[error("store backend: {0}")]
    Backend(String),
}

/// Durable key/value storage with versions (see the module docs for the semantics).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value at `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Writes `data` at `key` and returns the new version. With `expected`, the write
    /// happens only if the current version is that (0: the key must be absent).
    async fn put(
        &self,
        key: &str,
        data: &[u8],
        expected: Option<Version>,
    ) -> Result<Version, StoreError>;
    /// Removes `key` (and nothing else); absent keys are fine.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Names of the children directly under `prefix` (`""`: the top level), sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}

/// Encodes an arbitrary id (e.g. an app id with slashes) as one valid key segment:
/// `[A-Za-z0-9-]` and non-leading `.` are kept, every other byte becomes `_xx` (hex).
/// The encoding is injective.
pub fn key_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' && !out.is_empty() {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

fn check_key(key: &str, allow_empty: bool) -> Result<(), StoreError> {
    let ok_segment = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if (allow_empty && key.is_empty()) || key.split('/').all(ok_segment) {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_string()))
    }
}

/// `prefix/` (or `""` for the top level): what the keys under `prefix` start with.
fn dir_of(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

// ------------------------------------------------------------------ memory

/// A store in memory (tests, and a model of the trait's semantics).
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<String, Versioned>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Versioned>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        check_key(key, false)?;
        Ok(self.map().get(key).cloned())
    }

    async fn put(
        &self,
        key: &str,
        data: &[u8],
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        check_key(key, false)?;
        let mut map = self.map();
        let found = map.get(key).map_or(0, |v| v.version);
        if let Some(expected) = expected.filter(|e| *e != found) {
            return Err(StoreError::Conflict {
                key: key.into(),
                expected,
                found,
            });
        }
        map.insert(
            key.to_string(),
            Versioned {
                data: data.to_vec(),
                version: found + 1,
            },
        );
        Ok(found + 1)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key, false)?;
        self.map().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        check_key(prefix, true)?;
        let start = dir_of(prefix);
        let mut out: Vec<String> = self
            .map()
            .keys()
            .filter_map(|k| k.strip_prefix(&start))
            .filter_map(|rest| rest.split('/').next())
            .map(str::to_string)
            .collect();
        out.dedup();
        Ok(out)
    }
}

// ------------------------------------------------------------------ file

/// A store in a local directory (see the module docs). Each file holds the version on
/// its first line, then the value.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// A store rooted at `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> Result<FileStore, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| StoreError::Io {
            op: "creating",
            path: root.clone(),
            source,
        })?;
        Ok(FileStore { root })
    }

    fn path(&self, key: &str) -> PathBuf {
        key.split('/')
            .fold(self.root.clone(), |p, segment| p.join(segment))
    }

    fn read(path: &Path, key: &str) -> Result<Option<Versioned>, StoreError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // A key that is a directory (it has children) holds no value.
            Err(_) if path.is_dir() => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    op: "reading",
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        let newline = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| corrupt("no version line"))?;
        let version = std::str::from_utf8(&bytes[..newline])
            .ok()
            .and_then(|s| s.parse::<Version>().ok())
            .ok_or_else(|| corrupt("bad version line"))?;
        Ok(Some(Versioned {
            data: bytes[newline + 1..].to_vec(),
            version,
        }))
    }

    fn write(path: &Path, data: &[u8], version: Version) -> Result<(), StoreError> {
        let mut bytes = format!("{version}\n").into_bytes();
        bytes.extend_from_slice(data);
        mezzo_runtime::fs::write_atomic(path, &bytes).map_err(|source| StoreError::Io {
            op: "writing",
            path: path.to_path_buf(),
            source,
        })
    }

    /// Runs blocking file work off the async threads.
    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Backend(format!("file store task: {e}")))?
    }
}

#[async_trait]
impl Store for FileStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        check_key(key, false)?;
        let path = self.path(key);
        let key = key.to_string();
        Self::blocking(move || Self::read(&path, &key)).await
    }

    async fn put(
        &self,
        key: &str,
        data: &[u8],
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        check_key(key, false)?;
        let path = self.path(key);
        let key = key.to_string();
        let data = data.to_vec();
        Self::blocking(move || {
            let found = Self::read(&path, &key)?.map_or(0, |v| v.version);
            if let Some(expected) = expected.filter(|e| *e != found) {
                return Err(StoreError::Conflict {
                    key,
                    expected,
                    found,
                });
            }
            Self::write(&path, &data, found + 1)?;
            Ok(found + 1)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key, false)?;
        let path = self.path(key);
        Self::blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(_) if path.is_dir() => Ok(()),
            Err(source) => Err(StoreError::Io {
                op: "removing",
                path,
                source,
            }),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        check_key(prefix, true)?;
        let dir = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.path(prefix)
        };
        Self::blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(source) => {
                    return Err(StoreError::Io {
                        op: "listing",
                        path: dir,
                        source,
                    })
                }
            };
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| !n.starts_with('.'))
                .collect();
            names.sort();
            Ok(names)
        })
        .await
    }
}

// ------------------------------------------------------------------ ZooKeeper

/// Where framework `<name>` keeps its things in ZooKeeper, below the path of a
/// `zk://hosts/path` URL (the same URL the masters use, e.g. `zk://h:2181/mezzo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameworkZk {
    /// `<path>/frameworks/<name>/state`: the root of the framework's [`ZooKeeperStore`].
    pub state: ZkUrl,
    /// `<path>/frameworks/<name>/leader`: the election group of the framework's
    /// instances (for [`mezzo_zk::Contender`] / [`mezzo_zk::Detector`]).
    pub leader: ZkUrl,
}

impl FrameworkZk {
    /// The paths of framework `name` (encoded with [`key_segment`]) under `base`.
    pub fn new(base: &ZkUrl, name: &str) -> FrameworkZk {
        let root = base.child(&format!("frameworks/{}", key_segment(name)));
        let at = |leaf: &str| ZkUrl {
            servers: base.servers.clone(),
            path: format!("{root}/{leaf}"),
        };
        FrameworkZk {
            state: at("state"),
            leader: at("leader"),
        }
    }
}

/// A [`Store`] on znodes: key `a/b` is the persistent znode `<root>/a/b`, its version the
/// znode's version + 1. Cheap to clone; clones share one ZooKeeper session, which is
/// re-established after it expires.
#[derive(Debug, Clone)]
pub struct ZooKeeperStore {
    zk: ZkStore,
}

fn zk_error(e: mezzo_zk::Error) -> StoreError {
    use mezzo_zk::Error as E;
    match e {
        E::InvalidKey { key, .. } => StoreError::InvalidKey(key),
        E::TooLarge { key, size, limit } => StoreError::TooLarge { key, size, limit },
        E::Fenced { key, .. } => StoreError::Fenced(key),
        e => StoreError::Backend(e.to_string()),
    }
}

impl ZooKeeperStore {
    /// Connects to `root.servers` and creates `root.path` if missing.
    pub async fn connect(root: &ZkUrl, session_timeout: Duration) -> Result<Self, StoreError> {
        let zk = ZkStore::connect(root, session_timeout)
            .await
            .map_err(zk_error)?;
        Ok(ZooKeeperStore { zk })
    }

    /// The store of framework `name` under `base` ([`FrameworkZk::state`]).
    pub async fn for_framework(
        base: &ZkUrl,
        name: &str,
        session_timeout: Duration,
    ) -> Result<Self, StoreError> {
        Self::connect(&FrameworkZk::new(base, name).state, session_timeout).await
    }

    /// A handle on the same store whose writes only succeed while the znode
    /// `fence_node` exists (each runs in one transaction with a check of it). Pass the
    /// leader's election node ([`mezzo_zk::election_node_path`]): once its session ends,
    /// no write of that leader can land, even one already in flight
    /// ([`StoreError::Fenced`]).
    pub fn fenced(&self, fence_node: impl Into<String>) -> Self {
        ZooKeeperStore {
            zk: self.zk.fenced(fence_node),
        }
    }

    /// The root of the store.
    pub fn url(&self) -> &ZkUrl {
        self.zk.url()
    }

    /// The current version (0: absent) of `key`.
    async fn found(&self, key: &str) -> Version {
        match self.zk.get(key).await {
            Ok(Some((_, v))) => v as Version + 1,
            _ => 0,
        }
    }

    fn check_size(key: &str, data: &[u8]) -> Result<(), StoreError> {
        if data.len() > MAX_VALUE_BYTES {
            return Err(StoreError::TooLarge {
                key: key.to_string(),
                size: data.len(),
                limit: MAX_VALUE_BYTES,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Store for ZooKeeperStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        check_key(key, false)?;
        Ok(self
            .zk
            .get(key)
            .await
            .map_err(zk_error)?
            .map(|(data, v)| Versioned {
                data,
                version: v as Version + 1,
            }))
    }

    async fn put(
        &self,
        key: &str,
        data: &[u8],
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        use mezzo_zk::Error as E;
        check_key(key, false)?;
        Self::check_size(key, data)?;
        let conflict = |expected: Version, found: Version| StoreError::Conflict {
            key: key.to_string(),
            expected,
            found,
        };
        match expected {
            Some(0) => match self.zk.create(key, data).await {
                Ok(v) => Ok(v as Version + 1),
                Err(E::AlreadyExists { .. }) => Err(conflict(0, self.found(key).await)),
                Err(e) => Err(zk_error(e)),
            },
            Some(expected) => {
                let Ok(zk_version) = i32::try_from(expected - 1) else {
                    return Err(conflict(expected, self.found(key).await));
                };
                match self.zk.set(key, data, zk_version).await {
                    Ok(v) => Ok(v as Version + 1),
                    Err(E::BadVersion { .. } | E::NoNode { .. }) => {
                        Err(conflict(expected, self.found(key).await))
                    }
                    Err(e) => Err(zk_error(e)),
                }
            }
            None => loop {
                // Unconditional: set any version, or create when absent (a concurrent
                // create or delete just means another round).
                match self.zk.set(key, data, -1).await {
                    Ok(v) => return Ok(v as Version + 1),
                    Err(E::NoNode { .. }) => {}
                    Err(e) => return Err(zk_error(e)),
                }
                match self.zk.create(key, data).await {
                    Ok(v) => return Ok(v as Version + 1),
                    Err(E::AlreadyExists { .. }) => {}
                    Err(e) => return Err(zk_error(e)),
                }
            },
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key, false)?;
        match self.zk.delete(key, -1).await {
            Ok(()) | Err(mezzo_zk::Error::NoNode { .. }) => Ok(()),
            Err(e) => Err(zk_error(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        check_key(prefix, true)?;
        let dir = dir_of(prefix);
        let mut names: Vec<String> = self
            .zk
            .list(&dir)
            .await
            .map_err(zk_error)?
            .into_iter()
            .map(|k| k.strip_prefix(&dir).unwrap_or(&k).to_string())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared contract; the ZooKeeper store runs it in the end-to-end tests.
    async fn exercise(store: &dyn Store) {
        assert_eq!(store.get("jobs/a").await.unwrap(), None);
        assert_eq!(store.put("jobs/a", b"one", Some(0)).await.unwrap(), 1);
        assert_eq!(store.put("jobs/a", b"two", None).await.unwrap(), 2);
        assert!(matches!(
            store.put("jobs/a", b"x", Some(1)).await,
            Err(StoreError::Conflict {
                expected: 1,
                found: 2,
                ..
            })
        ));
        assert!(matches!(
            store.put("jobs/a", b"x", Some(0)).await,
            Err(StoreError::Conflict { found: 2, .. })
        ));
        let v = store.get("jobs/a").await.unwrap().unwrap();
        assert_eq!((v.data.as_slice(), v.version), (b"two".as_slice(), 2));
        assert_eq!(store.put("jobs/a", b"three", Some(2)).await.unwrap(), 3);
        store.put("jobs/b.c", b"\nmulti\nline", None).await.unwrap();
        store.put("runs/a/r1", b"{}", None).await.unwrap();
        assert_eq!(store.list("jobs").await.unwrap(), ["a", "b.c"]);
        assert_eq!(store.list("").await.unwrap(), ["jobs", "runs"]);
        assert_eq!(store.list("runs").await.unwrap(), ["a"]);
        assert_eq!(
            store.get("jobs/b.c").await.unwrap().unwrap().data,
            b"\nmulti\nline"
        );
        store.delete("jobs/a").await.unwrap();
        store.delete("jobs/a").await.unwrap();
        assert_eq!(store.list("jobs").await.unwrap(), ["b.c"]);
        assert_eq!(store.list("nothing").await.unwrap(), Vec::<String>::new());
        for bad in ["", "a//b", "../x", "a/.hidden", "a b", "/abs"] {
            assert!(
                matches!(
                    store.put(bad, b"", None).await,
                    Err(StoreError::InvalidKey(_))
                ),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn memory_store() {
        exercise(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn file_store_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        exercise(&store).await;
        let again = FileStore::open(dir.path()).unwrap();
        assert_eq!(again.get("runs/a/r1").await.unwrap().unwrap().version, 1);
        assert_eq!(again.list("jobs").await.unwrap(), ["b.c"]);
    }

    #[tokio::test]
    async fn file_store_leftover_temp_files_are_not_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.put("apps/a", b"1", None).await.unwrap();
        // As a crash between write and rename would leave it.
        std::fs::write(dir.path().join("apps").join(".b.tmp"), b"7\nx").unwrap();
        assert_eq!(store.list("apps").await.unwrap(), ["a"]);
        store.put("apps/a.tmp", b"2", None).await.unwrap();
        assert_eq!(store.get("apps/a").await.unwrap().unwrap().data, b"1");
        assert_eq!(store.list("apps").await.unwrap(), ["a", "a.tmp"]);
    }

    #[test]
    fn key_segments_are_safe_keys() {
        assert_eq!(key_segment("/prod/web"), "_2fprod_2fweb");
        assert_eq!(key_segment("a.b-c"), "a.b-c");
        assert_eq!(key_segment(".."), "_2e.");
        for id in ["/prod/web", "..", "a b/c", "ü"] {
            assert!(check_key(&key_segment(id), false).is_ok(), "{id}");
        }
    }

    #[test]
    fn framework_paths() {
        let base = ZkUrl::parse("zk://h:2181/mezzo").unwrap();
        let zk = FrameworkZk::new(&base, "marathon");
        assert_eq!(
            zk.state.to_string(),
            "zk://h:2181/mezzo/frameworks/marathon/state"
        );
        assert_eq!(zk.leader.path, "/mezzo/frameworks/marathon/leader");
        let root = ZkUrl::parse("zk://h:2181/").unwrap();
        assert_eq!(
            FrameworkZk::new(&root, "a/b").state.path,
            "/frameworks/a_2fb/state"
        );
    }
}
