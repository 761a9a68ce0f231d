//! End-to-end tests of the saga: real PostgreSQL (started by each test), the workspace broker
//! embedded over TCP, the four services and `rdkafka` clients. No mocks.

/// This suite's lab embeds the workspace broker; `saga_on_kafka` runs the same tests on Apache
/// Kafka.
const ON_APACHE_KAFKA: bool = false;

mod helpers;

mod catalogue;
mod cluster;
mod dashboard;
mod duplicates;
mod failures;
mod guard;
mod ledger;
mod load;
mod outbox;
mod paths;
mod poison;
mod schemas;
