//! Durable file replacement: after [`write_atomic`] returns, a crash at any
//! point leaves either the old or the new contents at `path`, never a mix,
//! and the new contents survive power loss.

use std::io::Write as _;
use std::path::Path;

/// Replaces `path` with `data` atomically and durably: writes a temporary
/// file beside it (`.<name>.tmp`), fsyncs it, renames it over `path` and fsyncs the
/// directory (a rename is durable only once its directory is synced).
/// Creates missing parent directories.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    // `.<name>.tmp`: hidden, so a directory listing (e.g. the SDK's file store)
    // never mistakes a leftover temp file for a value, and no valid name collides.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_and_leaves_no_temp_file() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sub").join("state.json");
        write_atomic(&path, b"one")?;
        write_atomic(&path, b"two")?;
        assert_eq!(std::fs::read(&path)?, b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap_or(dir.path()))?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        Ok(())
    }

    #[test]
    fn temp_name_keeps_the_extension_so_siblings_do_not_collide() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        write_atomic(&dir.path().join("a.json"), b"a")?;
        write_atomic(&dir.path().join("a.txt"), b"b")?;
        assert_eq!(std::fs::read(dir.path().join("a.json"))?, b"a");
        assert_eq!(std::fs::read(dir.path().join("a.txt"))?, b"b");
        Ok(())
    }
}
