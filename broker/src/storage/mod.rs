//! Durable storage: record batch headers, segment files, and the per-partition log.

pub mod batch;
pub mod log;
pub mod records;
pub mod segment;

/// fsyncs a directory, so a file created or renamed in it survives a power loss.
pub fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

pub use log::{
    AbortedTxn, AppendError, Appended, LogConfig, OpenReport, PartitionLog, ReadOutcome,
};
