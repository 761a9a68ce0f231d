//! The wall clock in Kafka's unit: milliseconds since the Unix epoch (record timestamps,
//! retention, transaction timeouts).

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds, the unit of Kafka timestamps.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
