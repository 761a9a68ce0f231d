//! Durable storage: record batch headers, segment files, and the per-partition log.

pub mod batch;
pub mod log;
pub mod segment;

pub use log::{AppendError, Appended, LogConfig, OpenReport, PartitionLog, ReadOutcome};
