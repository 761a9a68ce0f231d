//! One lab per data dir: `<data-dir>/lab.lock`, held with an advisory lock (`flock`) for as long
//! as the lab runs. The kernel drops the lock when the process ends, however it ends (`kill -9`
//! included), so a crashed lab never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why the data dir cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "a lab is already running on the data dir {}{}; stop it (Ctrl-C in its terminal) or \
         give this one another --data-dir (or LAB_DATA_DIR)",
        dir.display(),
        pid.as_ref().map(|p| format!(" (PID {p})")).unwrap_or_default()
    )]
    Taken { dir: PathBuf, pid: Option<String> },
    #[error(
        "cannot write the data dir {}: {source}; choose another with --data-dir (or LAB_DATA_DIR)",
        dir.display()
    )]
    Unwritable {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock; released on drop (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if needed and takes its lock, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let unwritable = |source| LockError::Unwritable {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(unwritable)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("lab.lock"))
            .map_err(unwritable)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = Some(pid.trim().to_owned()).filter(|p| !p.is_empty());
                return Err(LockError::Taken {
                    dir: dir.to_owned(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(unwritable(e)),
        }
        // Who holds it, for the message another lab prints.
        file.set_len(0).map_err(unwritable)?;
        file.seek(SeekFrom::Start(0)).map_err(unwritable)?;
        write!(file, "{}", std::process::id()).map_err(unwritable)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("already running") && text.contains(&std::process::id().to_string()),
            "{text}"
        );
        drop(held);
        DataDirLock::acquire(dir.path()).expect("free again once released");
    }
}
