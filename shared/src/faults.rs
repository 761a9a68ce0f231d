//! Faults the lab switches on at run time, to show retries, backoff and the DLQ.

use std::sync::atomic::{AtomicBool, AtomicU64};

/// Faults the lab can switch on at run time to show retries and the DLQ.
#[derive(Debug, Default)]
pub struct Faults {
    /// Every handler attempt fails (as a transient error) while set.
    pub fail_handlers: AtomicBool,
    /// Extra delay before each handler attempt, in milliseconds.
    pub slow_ms: AtomicU64,
}
