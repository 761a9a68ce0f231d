//! Producer ids, handed out in blocks reserved on disk so that an id is never given twice, even
//! across restarts (idempotent and transactional producers alike).

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Mutex;

/// Hands out producer ids, reserving them in blocks on disk so ids never repeat across restarts.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    path: std::path::PathBuf,
    /// (next id to hand out, end of the block reserved on disk)
    state: Mutex<(i64, i64)>,
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
        })
    }

    pub fn next(&self) -> io::Result<i64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
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
