//! The order service's own tests: its HTTP endpoints and its saga handler on a database of its
//! own (a fresh database per test on one PostgreSQL server), without a broker or the other services.

mod idempotency;
mod orders;
mod saga;
