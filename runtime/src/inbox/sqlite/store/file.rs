//! The file guard and the data directory's lock: the inbox is the file it opened, and one
//! process serves a data directory.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::{LOCK_NAME, Store};
use crate::inbox::StoreError;

/// (device, inode) of a file.
pub(super) type FileId = (u64, u64);

impl Store {
    /// Refuses to write unless the file and its log are the ones this store opened, and
    /// writable.
    pub(super) fn guard(&self) -> Result<(), StoreError> {
        let restart = "restart the service once it is back (the deliveries acknowledged so far are in that file)";
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let dir_meta = std::fs::metadata(dir).map_err(|e| {
            StoreError::unavailable(format!("the data directory {} is unavailable", dir.display())).caused_by(e)
        })?;
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::unavailable(format!(
                    "the inbox {} was deleted while the service ran; put it back and restart the service",
                    self.path.display()
                )));
            }
            Err(e) => {
                return Err(
                    StoreError::unavailable(format!("the inbox {} is unavailable", self.path.display())).caused_by(e)
                );
            }
        };
        if file_id(&self.path) != self.db_id {
            return Err(StoreError::unavailable(format!(
                "the inbox {} was replaced while the service ran; {restart}",
                self.path.display()
            )));
        }
        if meta.permissions().readonly() || dir_meta.permissions().readonly() {
            return Err(StoreError::unavailable(format!("the inbox {} is read-only", self.path.display())));
        }
        if self.wal_id.is_some() && file_id(&self.wal_path()) != self.wal_id {
            return Err(StoreError::unavailable(format!(
                "the inbox's log {} was deleted or replaced while the service ran; {restart}",
                self.wal_path().display()
            )));
        }
        Ok(())
    }
}

/// Takes the data directory's lock, or names the process that holds it.
pub(super) fn lock(dir: &Path, owner: &str) -> Result<File, StoreError> {
    let path = dir.join(LOCK_NAME);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::unavailable(format!("cannot open {}", path.display())).caused_by(e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.lines().next().filter(|l| !l.is_empty()).unwrap_or("another process");
            return Err(StoreError::invalid(format!(
                "the data directory {} is served by {holder}: stop it first, or give this one its own --data-dir",
                dir.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(StoreError::unavailable(format!("cannot lock {}", path.display())).caused_by(e));
        }
    }
    let holder = format!("meet-webhooks pid {} ({owner})\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.write_all(holder.as_bytes()))
        .map_err(|e| StoreError::unavailable(format!("cannot write {}", path.display())).caused_by(e))?;
    Ok(file)
}

#[cfg(unix)]
pub(super) fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
pub(super) fn file_id(path: &Path) -> Option<FileId> {
    path.exists().then_some((0, 0))
}
