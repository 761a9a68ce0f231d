//! The saga suite again, on Apache Kafka 4.4 instead of the workspace broker: the same test
//! files, each lab started with `--brokers` pointed at a single-node KRaft cluster of its own
//! (real Kafka from Maven's jars, see the `apache-kafka` crate). The services only speak the
//! Kafka protocol, so every test here must pass unchanged; a difference is a bug in the services
//! or in the workspace broker (which the `saga` suite runs on).
//!
//! Left out, with the reason: `guard` (the dashboard's request checks do not touch the broker).

const ON_APACHE_KAFKA: bool = true;

#[path = "saga/helpers.rs"]
mod helpers;

#[path = "saga/catalogue.rs"]
mod catalogue;
#[path = "saga/dashboard.rs"]
mod dashboard;
#[path = "saga/duplicates.rs"]
mod duplicates;
#[path = "saga/failures.rs"]
mod failures;
#[path = "saga/ledger.rs"]
mod ledger;
#[path = "saga/load.rs"]
mod load;
#[path = "saga/outbox.rs"]
mod outbox;
#[path = "saga/paths.rs"]
mod paths;
#[path = "saga/poison.rs"]
mod poison;
#[path = "saga/schemas.rs"]
mod schemas;
