//! End-to-end tests of the saga: real PostgreSQL (started by each test), the workspace broker
//! embedded over TCP, the four services and `rdkafka` clients. No mocks.

mod helpers;

mod dashboard;
mod duplicates;
mod failures;
mod guard;
mod ledger;
mod load;
mod outbox;
mod paths;
mod poison;
