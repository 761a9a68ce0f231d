//! The saga lab in one process: a throwaway PostgreSQL ([`pg`]), the embedded broker and the four
//! services ([`system::Lab`]), a small HTTP client for them ([`client`]), the dashboard with its
//! control API ([`dashboard`]), a consumer-group inspector ([`groups`], `lab groups`), the DLQ
//! workbench ([`dlq`]) and the ledger ([`ledger`]).
//!
//! The `lab` binary, the integration tests in `tests/` and the benchmark all start the system
//! through [`system::Lab::start`], so the tests check exactly what a user runs.

pub mod browser;
pub mod client;
pub mod dashboard;
pub mod dlq;
pub mod groups;
pub mod kafka;
pub mod ledger;
pub mod lock;
pub mod nodes;
pub mod pg;
pub mod poison;
pub mod schemas;
pub mod system;

pub use client::LabClient;
pub use system::{Lab, LabConfig, Service};

/// The client context of a consumer that asks to be told the end of each partition
/// (`enable.partition.eof`, to read a topic to its end): reaching it is not logged as an error
/// (librdkafka reports it as a global error event as well as to `poll`).
pub struct EndIsNotAnError;

impl rdkafka::ClientContext for EndIsNotAnError {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EndIsNotAnError {}
