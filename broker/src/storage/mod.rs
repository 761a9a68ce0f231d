//! Durable storage: record batch headers, segment files, and the per-partition log.

pub mod batch;
pub mod clean;
pub mod log;
pub mod records;
pub mod segment;
mod sync;

pub use clean::{CleanStats, Compaction};
pub use log::{
    AbortedTxn, AppendError, Appended, LogConfig, OpenReport, PartitionLog, ReadOutcome,
};
pub use segment::{Batches, Records};
pub use sync::sync_dir;
