//! `/files/{browse,read,download}` over task sandboxes, as Mesos serves them.
//!
//! Invariant: nothing outside `<work_dir>/sandboxes` is served. A path is
//! rejected if it has a `..` component or a NUL, or is absolute outside the
//! sandboxes root; it is then canonicalized (resolving symlinks) and must
//! still lie under the canonical root; finally the file is opened with
//! `O_NOFOLLOW` and its (device, inode) compared with what was checked, so
//! swapping a directory for a symlink between check and open is caught.
//! (A hard link made inside a sandbox to a file elsewhere on the same file
//! system is not detectable this way; `fs.protected_hardlinks=1`, the
//! default on Linux, stops tasks from linking files they cannot read.)

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

/// Largest `/files/read` chunk: 16 pages of 4 KiB, as Mesos.
pub const MAX_READ: u64 = 16 * 4096;

/// The sandboxes root, as configured and as canonical.
pub(crate) struct Sandboxes {
    /// `<work_dir>/sandboxes`, canonical: every served path lies under it.
    root: PathBuf,
    /// The same root as configured (may differ from `root` via symlinks).
    configured_root: PathBuf,
}

impl Sandboxes {
    /// Creates the root under `work_dir` if missing.
    pub(crate) fn new(work_dir: &Path) -> Self {
        let configured_root = work_dir.join("sandboxes");
        if let Err(e) = std::fs::create_dir_all(&configured_root) {
            warn!(path = %configured_root.display(), error = %e, "cannot create the sandboxes root");
        }
        let root = configured_root
            .canonicalize()
            .unwrap_or_else(|_| configured_root.clone());
        Sandboxes {
            root,
            configured_root,
        }
    }

    /// A sandbox path as served: under the canonical root.
    pub(crate) fn served_dir(&self, dir: &Path) -> PathBuf {
        match dir.strip_prefix(&self.configured_root) {
            Ok(rel) => self.root.join(rel),
            Err(_) => dir.to_path_buf(),
        }
    }
}

type Shared = State<Arc<Sandboxes>>;

/// The `/files` routes.
pub(crate) fn router(sandboxes: Arc<Sandboxes>) -> Router {
    Router::new()
        .route("/files/browse", get(browse))
        .route("/files/browse.json", get(browse))
        .route("/files/read", get(read))
        .route("/files/read.json", get(read))
        .route("/files/download", get(download))
        .route("/files/download.json", get(download))
        .with_state(sandboxes)
}

/// Why a `/files` request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum FileError {
    /// Malformed request (missing path, bad offset, a directory to read).
    BadRequest(String),
    /// The path is outside the sandboxes by its very spelling.
    Forbidden(String),
    /// Nothing servable there (including symlinks that lead outside).
    NotFound,
}

impl IntoResponse for FileError {
    fn into_response(self) -> Response {
        match self {
            FileError::BadRequest(m) => (StatusCode::BAD_REQUEST, m).into_response(),
            FileError::Forbidden(m) => (StatusCode::FORBIDDEN, m).into_response(),
            FileError::NotFound => (StatusCode::NOT_FOUND, "Path not found").into_response(),
        }
    }
}

/// Resolves a requested path to a canonical path under `root` (itself
/// canonical). `configured_root` is the same directory as configured; an
/// absolute request may start with either. Relative requests are relative
/// to the root.
pub fn resolve(root: &Path, configured_root: &Path, requested: &str) -> Result<PathBuf, FileError> {
    if requested.is_empty() {
        return Err(FileError::BadRequest(
            "Expecting 'path' query parameter".into(),
        ));
    }
    if requested.contains('\0') {
        return Err(FileError::Forbidden("path contains a NUL byte".into()));
    }
    let p = Path::new(requested);
    let rest = if p.is_absolute() {
        p.strip_prefix(root)
            .or_else(|_| p.strip_prefix(configured_root))
            .map_err(|_| FileError::Forbidden("path is outside the sandboxes".into()))?
    } else {
        p
    };
    let mut rel = PathBuf::new();
    for c in rest.components() {
        match c {
            Component::Normal(x) => rel.push(x),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(FileError::Forbidden("path must not contain '..'".into()))
            }
        }
    }
    let canon = root
        .join(rel)
        .canonicalize()
        .map_err(|_| FileError::NotFound)?;
    // A symlink that leads out is reported like a missing file: the
    // response says nothing about what lies outside.
    if !canon.starts_with(root) {
        return Err(FileError::NotFound);
    }
    Ok(canon)
}

/// Opens a resolved path without following a symlink in its last component
/// and checks it is the very file that was resolved.
fn open_checked(path: &Path, dir: bool) -> Result<(std::fs::File, std::fs::Metadata), FileError> {
    let expected = std::fs::metadata(path).map_err(|_| FileError::NotFound)?;
    let mut flags = libc::O_NOFOLLOW;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|_| FileError::NotFound)?;
    let got = f.metadata().map_err(|_| FileError::NotFound)?;
    if got.dev() != expected.dev() || got.ino() != expected.ino() {
        return Err(FileError::NotFound);
    }
    Ok((f, got))
}

#[derive(Deserialize)]
struct PathQuery {
    path: Option<String>,
    offset: Option<String>,
    length: Option<String>,
}

impl Sandboxes {
    fn resolve(&self, q: &PathQuery) -> Result<PathBuf, FileError> {
        resolve(
            &self.root,
            &self.configured_root,
            q.path.as_deref().unwrap_or(""),
        )
    }
}

/// `ls -l` style mode string, as Mesos' `/files/browse` returns.
fn mode_string(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn entry_json(path: &Path, md: &std::fs::Metadata) -> Value {
    json!({
        "path": path.display().to_string(),
        "nlink": md.nlink(),
        "size": md.size(),
        "mtime": md.mtime(),
        "mode": mode_string(md.mode()),
        "uid": md.uid().to_string(),
        "gid": md.gid().to_string(),
    })
}

/// `/files/browse?path=`: the entries of a directory (a file: itself).
async fn browse(State(ctx): Shared, Query(q): Query<PathQuery>) -> Response {
    let ctx2 = ctx.clone();
    let r = tokio::task::spawn_blocking(move || browse_blocking(&ctx2, &q)).await;
    match r {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn browse_blocking(ctx: &Sandboxes, q: &PathQuery) -> Result<Value, FileError> {
    let path = ctx.resolve(q)?;
    let md = std::fs::metadata(&path).map_err(|_| FileError::NotFound)?;
    if !md.is_dir() {
        let (_, md) = open_checked(&path, false)?;
        return Ok(json!([entry_json(&path, &md)]));
    }
    let (dir, _) = open_checked(&path, true)?;
    // List through the descriptor we checked, not the path again.
    let fd_path = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    ));
    let rd = std::fs::read_dir(&fd_path).map_err(|_| FileError::NotFound)?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Ok(md) = std::fs::symlink_metadata(fd_path.join(e.file_name())) else {
            continue;
        };
        out.push(entry_json(&path.join(e.file_name()), &md));
    }
    out.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Ok(Value::Array(out))
}

fn parse_i64(name: &str, v: Option<&str>) -> Result<Option<i64>, FileError> {
    match v {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| FileError::BadRequest(format!("Failed to parse {name}: '{s}'"))),
    }
}

/// `/files/read?path=&offset=&length=`: `{"data": "...", "offset": N}`;
/// `offset=-1` returns the file's length as `offset` and no data.
async fn read(State(ctx): Shared, Query(q): Query<PathQuery>) -> Response {
    let ctx2 = ctx.clone();
    match tokio::task::spawn_blocking(move || read_blocking(&ctx2, &q)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn read_blocking(ctx: &Sandboxes, q: &PathQuery) -> Result<Value, FileError> {
    let offset = parse_i64("offset", q.offset.as_deref())?.unwrap_or(0);
    let length = parse_i64("length", q.length.as_deref())?;
    if offset < -1 {
        return Err(FileError::BadRequest(format!(
            "Negative offset provided: {offset}"
        )));
    }
    if length.is_some_and(|l| l < -1) {
        return Err(FileError::BadRequest("Negative length provided".into()));
    }
    let path = ctx.resolve(q)?;
    let (mut f, md) = open_checked(&path, false)?;
    if md.is_dir() {
        return Err(FileError::BadRequest("Cannot read a directory".into()));
    }
    let size = md.len();
    if offset == -1 {
        return Ok(json!({"data": "", "offset": size}));
    }
    let offset = offset as u64;
    if offset >= size {
        return Ok(json!({"data": "", "offset": size}));
    }
    let want = match length {
        None | Some(-1) => MAX_READ,
        Some(l) => (l as u64).min(MAX_READ),
    };
    let want = want.min(size - offset);
    let mut buf = Vec::with_capacity(want as usize);
    f.seek(SeekFrom::Start(offset))
        .map_err(|_| FileError::NotFound)?;
    f.take(want)
        .read_to_end(&mut buf)
        .map_err(|_| FileError::NotFound)?;
    // Do not split a UTF-8 character at the end of a chunk: the next read
    // (from offset + bytes returned) picks it up whole.
    if let Err(e) = std::str::from_utf8(&buf) {
        if e.error_len().is_none() && e.valid_up_to() > 0 {
            buf.truncate(e.valid_up_to());
        }
    }
    Ok(json!({"data": String::from_utf8_lossy(&buf), "offset": offset}))
}

/// `/files/download?path=`: the file's bytes, as an attachment.
async fn download(State(ctx): Shared, Query(q): Query<PathQuery>) -> Response {
    let ctx2 = ctx.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let path = ctx2.resolve(&q)?;
        let (f, md) = open_checked(&path, false)?;
        if md.is_dir() {
            return Err(FileError::BadRequest("Cannot download a directory".into()));
        }
        Ok((path, f, md.len()))
    })
    .await;
    let (path, f, len) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return e.into_response(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let name: String = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    let file = tokio::fs::File::from_std(f);
    let stream = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandboxes");
        let sb = root.join("fw").join("task").join("c1");
        std::fs::create_dir_all(&sb).unwrap();
        std::fs::write(sb.join("stdout"), "hello\n").unwrap();
        std::fs::write(dir.path().join("secret"), "top secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), sb.join("leak")).unwrap();
        std::os::unix::fs::symlink(dir.path(), sb.join("up")).unwrap();
        std::os::unix::fs::symlink(sb.join("stdout"), sb.join("inside")).unwrap();
        let root = root.canonicalize().unwrap();
        (dir, root)
    }

    #[test]
    fn resolves_inside_and_refuses_every_escape() {
        let (dir, root) = fixture();
        let cfg = dir.path().join("sandboxes");
        let ok = resolve(&root, &cfg, "fw/task/c1/stdout").unwrap();
        assert!(ok.starts_with(&root));
        let abs = format!("{}/fw/task/c1/stdout", cfg.display());
        assert_eq!(resolve(&root, &cfg, &abs).unwrap(), ok);
        // A symlink that stays inside is fine.
        assert_eq!(resolve(&root, &cfg, "fw/task/c1/inside").unwrap(), ok);
        let secret = dir.path().join("secret").display().to_string();
        for bad in [
            "../secret",
            "fw/../../secret",
            "fw/task/c1/../../../../secret",
            &secret,
            "/etc/passwd",
            "fw/task/c1/leak",
            "fw/task/c1/up/secret",
            "fw/task/c1/stdout\0",
            "",
        ] {
            assert!(resolve(&root, &cfg, bad).is_err(), "{bad:?} was served");
        }
        let dotdot_abs = format!("{}/../secret", cfg.display());
        assert!(resolve(&root, &cfg, &dotdot_abs).is_err());
    }

    #[test]
    fn mode_strings_look_like_ls() {
        assert_eq!(mode_string(0o040755), "drwxr-xr-x");
        assert_eq!(mode_string(0o100644), "-rw-r--r--");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
    }

    #[test]
    fn open_checked_refuses_a_final_symlink() {
        let (_dir, root) = fixture();
        let link = root.join("fw/task/c1/inside");
        // resolve() canonicalizes, so a symlink never reaches open_checked;
        // if one did (a swap after the check), O_NOFOLLOW refuses it.
        assert!(open_checked(&link, false).is_err());
        assert!(open_checked(&root.join("fw/task/c1/stdout"), false).is_ok());
    }
}
