//! Producer ids, handed out in blocks reserved on disk so that an id is never given twice, even
//! across restarts (idempotent and transactional producers alike). In a cluster the blocks are
//! reserved in the metadata instead (by the active controller), so that no two nodes hand out
//! the same id.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// Reserves the next block of a cluster's producer ids: `(start, end)`.
pub type ReserveBlock = Box<dyn Fn() -> io::Result<(i64, i64)> + Send + Sync>;

/// Hands out producer ids, reserving them in blocks on disk so ids never repeat across restarts.
pub struct ProducerIdAllocator {
    path: std::path::PathBuf,
    /// (next id to hand out, end of the reserved block)
    state: Mutex<(i64, i64)>,
    /// In a cluster: where blocks come from instead of the file.
    cluster: OnceLock<ReserveBlock>,
}

impl std::fmt::Debug for ProducerIdAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerIdAllocator")
            .field("path", &self.path)
            .field("state", &self.state)
            .field("cluster", &self.cluster.get().is_some())
            .finish()
    }
}

const PRODUCER_ID_BLOCK: i64 = 1000;

impl ProducerIdAllocator {
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join("producer-id-block");
        let reserved = fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        Ok(Self {
            path,
            state: Mutex::new((reserved, reserved)),
            cluster: OnceLock::new(),
        })
    }

    /// From now on, blocks come from `reserve` (a node of a cluster, once it has joined the
    /// metadata quorum); nothing from the file is handed out any more.
    pub fn reserve_from(&self, reserve: ReserveBlock) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.cluster.set(reserve).is_ok() {
            *state = (0, 0);
        }
    }

    pub fn next(&self) -> io::Result<i64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 >= state.1
            && let Some(reserve) = self.cluster.get()
        {
            *state = reserve()?;
        }
        if state.0 >= state.1 {
            let end = state.0 + PRODUCER_ID_BLOCK;
            let tmp = self.path.with_extension("tmp");
            fs::write(&tmp, end.to_string())?;
            fs::File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                crate::storage::sync_dir(dir)?;
            }
            state.1 = end;
        }
        let id = state.0;
        state.0 += 1;
        Ok(id)
    }
}
