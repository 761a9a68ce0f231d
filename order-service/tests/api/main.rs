//! The order service's own tests: its HTTP endpoints and its saga handler on a database of its
//! own (a fresh PostgreSQL per test), without a broker or the other services.

mod helpers;
mod idempotency;
mod orders;
mod saga;
