//! What the four saga services share, so that each service only writes its domain code.
//!
//! A tour, in the order an event travels:
//! - [`events`]: the topics and the typed JSON payload of every event ([`events::SagaEvent`]).
//! - [`catalogue`]: the products as a table, a compacted topic the inventory service writes and
//!   the order service reads into its own copy (event-carried state transfer).
//! - [`domain`]: the value types those payloads and the HTTP input are made of.
//! - [`envelope`]: the CloudEvents 1.0 binary-mode headers every record carries.
//! - [`outbox`]: the transactional outbox (write state and event in one transaction) and the
//!   [`outbox::OutboxRelay`] that publishes it (LISTEN/NOTIFY wake-up plus polling).
//! - [`consumer`]: the consumer runner: idempotency, retry with capped backoff, dead-letter queue.
//! - [`dlq`]: the headers of a dead-lettered record, listing and replaying them.
//! - [`faults`]: switches the lab uses to make handlers fail or slow.
//! - [`kafka`]: client settings, topic creation and the broker readiness probe.
//! - [`db`]: pool creation and the classification of database errors as transient or not.
//! - [`http`]: the RFC 9457 problem+json error type, extractors and the common middleware stack.
//! - [`telemetry`]: tracing setup and the process-wide Prometheus recorder.
//! - [`config`]: command-line / environment settings every service has.
//! - [`service`]: [`service::build`] makes a [`service::ServiceApp`] from a service's declaration: the HTTP server, the relay and the consumers.
//! - [`shutdown`]: the shutdown signal shared by those tasks.
//! - `testing` (feature `testing`): a service's endpoints and handler on a database of its own, for its fast tests.

pub mod catalogue;
pub mod config;
pub mod consumer;
pub mod db;
pub mod dlq;
pub mod domain;
pub mod envelope;
pub mod events;
pub mod faults;
pub mod http;
pub mod kafka;
pub mod outbox;
pub mod schemas;
pub mod service;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use envelope::Envelope;
