//! Durable state behind a small [`Store`] trait (get / put / delete / list by key,
//! with versions), so a ZooKeeper store can replace [`FileStore`] without touching
//! the framework.
//!
//! Keys are `/`-separated paths of segments made of `[A-Za-z0-9._-]` (not starting
//! with `.`), like znode paths: `jobs/prod.report`, `runs/prod.report/20240101...`.
//! [`Store::list`] returns the child names directly under a path, as ZooKeeper's
//! `getChildren` does.
//!
//! [`FileStore`] maps each key to a file under its root; a write goes to a temporary
//! file that is fsynced and renamed over the old one (then the directory is fsynced),
//! so a crash leaves either the old or the new value, never a torn one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

/// A value's version: 1 for the first write, +1 per write.
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
    /// Another backend's failure (e.g. ZooKeeper).
    #[error("store backend: {0}")]
    Backend(String),
}

/// Durable key/value storage with versions.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value at `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Writes `data` at `key` and returns the new version. With `expected`, the write
    /// happens only if the current version is that (0: the key must be absent).
    async fn put(
        &self,
        key: &str,
        data: Vec<u8>,
        expected: Option<Version>,
    ) -> Result<Version, StoreError>;
    /// Removes `key` (and nothing else); absent keys are fine.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Names of the children directly under `prefix` (sorted).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
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
        data: Vec<u8>,
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
                data,
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
        let start = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
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

    fn write(path: &Path, key: &str, data: &[u8], version: Version) -> Result<(), StoreError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { op, path, source }
        };
        let dir = path
            .parent()
            .ok_or_else(|| StoreError::InvalidKey(key.to_string()))?;
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        file.write_all(format!("{version}\n").as_bytes())
            .and_then(|()| file.write_all(data))
            .and_then(|()| file.sync_all())
            .map_err(io("writing", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io("renaming to", path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", dir))?;
        Ok(())
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
        data: Vec<u8>,
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        check_key(key, false)?;
        let path = self.path(key);
        let key = key.to_string();
        Self::blocking(move || {
            let found = Self::read(&path, &key)?.map_or(0, |v| v.version);
            if let Some(expected) = expected.filter(|e| *e != found) {
                return Err(StoreError::Conflict {
                    key,
                    expected,
                    found,
                });
            }
            Self::write(&path, &key, &data, found + 1)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(store: &dyn Store) {
        assert_eq!(store.get("jobs/a").await.unwrap(), None);
        assert_eq!(
            store.put("jobs/a", b"one".to_vec(), Some(0)).await.unwrap(),
            1
        );
        assert_eq!(store.put("jobs/a", b"two".to_vec(), None).await.unwrap(), 2);
        assert!(matches!(
            store.put("jobs/a", b"x".to_vec(), Some(1)).await,
            Err(StoreError::Conflict {
                expected: 1,
                found: 2,
                ..
            })
        ));
        let v = store.get("jobs/a").await.unwrap().unwrap();
        assert_eq!((v.data.as_slice(), v.version), (b"two".as_slice(), 2));
        store
            .put("jobs/b.c", b"\nmulti\nline".to_vec(), None)
            .await
            .unwrap();
        store.put("runs/a/r1", b"{}".to_vec(), None).await.unwrap();
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
        for bad in ["", "a//b", "../x", "a/.hidden", "a b"] {
            assert!(
                matches!(
                    store.put(bad, vec![], None).await,
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
}
