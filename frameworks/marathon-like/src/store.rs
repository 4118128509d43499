//! Durable state behind a small versioned key-value [`Store`] trait, with a local-file
//! implementation ([`FileStore`]: write to a temp file, fsync, rename, fsync the
//! directory). A ZooKeeper implementation can sit behind the same trait.
//!
//! Keys are `/`-separated paths such as `apps/prod_web` or `framework-id`; values are
//! bytes. Each key has a version that grows by one on every put; a put may require
//! the version it expects (compare-and-set).

use std::path::{Path, PathBuf};

use async_trait::async_trait;

/// A store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File system error, with the path.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Compare-and-set failed.
    #[error("version conflict on {key}: expected {expected}, found {found}")]
    Conflict {
        /// The key.
        key: String,
        /// Expected version.
        expected: u64,
        /// Actual version (0: absent).
        found: u64,
    },
    /// A key that cannot be stored (empty, `..`, absolute).
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    /// A stored file is damaged.
    #[error("{path}: corrupt entry")]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
}

/// A value with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    /// The bytes.
    pub value: Vec<u8>,
    /// Version (1 after the first put).
    pub version: u64,
}

/// A versioned key-value store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value of `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Writes `key`; with `expected`, only if its current version is that (0: absent).
    /// Returns the new version.
    async fn put(&self, key: &str, value: &[u8], expected: Option<u64>) -> Result<u64, StoreError>;
    /// Removes `key` (absent is fine).
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Keys directly under `prefix` (e.g. `apps`), full keys, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}

/// A [`Store`] in a local directory: one file per key.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl FileStore {
    /// A store rooted at `root` (created when missing).
    pub fn open(root: impl Into<PathBuf>) -> Result<FileStore, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        Ok(FileStore { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let bad = key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..");
        if bad {
            return Err(StoreError::InvalidKey(key.to_string()));
        }
        Ok(self.root.join(key))
    }

    fn read(path: &Path) -> Result<Option<Versioned>, StoreError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(path)(e)),
        };
        // Layout: "<version>\n<value>".
        let corrupt = || StoreError::Corrupt {
            path: path.to_path_buf(),
        };
        let nl = bytes.iter().position(|b| *b == b'\n').ok_or_else(corrupt)?;
        let version = std::str::from_utf8(&bytes[..nl])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(corrupt)?;
        Ok(Some(Versioned {
            value: bytes[nl + 1..].to_vec(),
            version,
        }))
    }

    fn write(path: &Path, version: u64, value: &[u8]) -> Result<(), StoreError> {
        use std::io::Write;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        {
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(format!("{version}\n").as_bytes())
                .and_then(|()| f.write_all(value))
                .and_then(|()| f.sync_all())
                .map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, path).map_err(io(path))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FileStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let path = self.path(key)?;
        FileStore::read(&path)
    }

    async fn put(&self, key: &str, value: &[u8], expected: Option<u64>) -> Result<u64, StoreError> {
        let path = self.path(key)?;
        let current = FileStore::read(&path)?.map(|v| v.version).unwrap_or(0);
        if let Some(expected) = expected {
            if expected != current {
                return Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    found: current,
                });
            }
        }
        let version = current + 1;
        FileStore::write(&path, version, value)?;
        Ok(version)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.path(prefix)?;
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut keys = Vec::new();
        for entry in rd {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.contains(".tmp-") || !entry.path().is_file() {
                continue;
            }
            keys.push(format!("{prefix}/{name}"));
        }
        keys.sort();
        Ok(keys)
    }
}

/// Encodes an arbitrary id (e.g. an app id with slashes) as one key segment.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_delete_with_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.get("apps/a").await.unwrap(), None);
        assert_eq!(store.put("apps/a", b"one", Some(0)).await.unwrap(), 1);
        assert_eq!(store.put("apps/a", b"two", None).await.unwrap(), 2);
        assert!(matches!(
            store.put("apps/a", b"x", Some(1)).await,
            Err(StoreError::Conflict { found: 2, .. })
        ));
        store.put("apps/b", b"b", None).await.unwrap();
        let got = store.get("apps/a").await.unwrap().unwrap();
        assert_eq!((got.value.as_slice(), got.version), (&b"two"[..], 2));
        assert_eq!(store.list("apps").await.unwrap(), ["apps/a", "apps/b"]);
        store.delete("apps/a").await.unwrap();
        store.delete("apps/a").await.unwrap();
        assert_eq!(store.list("apps").await.unwrap(), ["apps/b"]);
        assert!(store.list("none").await.unwrap().is_empty());
        // A second store over the same directory sees everything (durability).
        let again = FileStore::open(dir.path()).unwrap();
        assert_eq!(again.get("apps/b").await.unwrap().unwrap().value, b"b");
    }

    #[tokio::test]
    async fn rejects_escaping_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        for bad in ["", "/abs", "a/../b", "a//b"] {
            assert!(matches!(
                store.put(bad, b"x", None).await,
                Err(StoreError::InvalidKey(_))
            ));
        }
    }

    #[test]
    fn key_segments_are_safe() {
        assert_eq!(key_segment("/prod/web"), "_2fprod_2fweb");
        assert_eq!(key_segment("a.b-c"), "a.b-c");
        assert_eq!(key_segment(".."), "_2e.");
    }
}
