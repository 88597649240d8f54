//! Durable file writes for the HA storage dir: write to a hidden temp file, fsync it, rename
//! it into place, fsync the directory. A reader sees the old state or the whole new file,
//! never a torn one; a crash leaves at most a hidden temp file behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::HaError;

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> HaError {
    HaError::Io { path: path.to_path_buf(), source }
}

/// The prefix of temp files; they are hidden and never a valid entry name.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Writes `bytes` to `path` durably (temp file, fsync, rename, fsync of the directory).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), HaError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!("{TEMP_PREFIX}{}-{name}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = fs::File::create(&temp).map_err(|e| io_error(&temp, e))?;
        file.write_all(bytes).map_err(|e| io_error(&temp, e))?;
        file.sync_all().map_err(|e| io_error(&temp, e))?;
        fs::rename(&temp, path).map_err(|e| io_error(path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Renames `from` to `to` and makes the rename durable.
pub(crate) fn rename_durably(from: &Path, to: &Path) -> Result<(), std::io::Error> {
    fs::rename(from, to)?;
    if let Some(dir) = to.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Fsyncs a directory, so that a rename or delete in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), HaError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(dir, e))
}

/// The files directly in `dir` (none if it does not exist).
pub(crate) fn list_files(dir: &Path) -> Result<Vec<PathBuf>, HaError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}
