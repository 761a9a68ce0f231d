//! One stored commit of one partition, as both journals keep it.

use serde::{Deserialize, Serialize};

/// One stored commit of one partition: a line of the file (these field names), a record of
/// `__consumer_offsets` in a cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub g: String,
    pub t: String,
    pub p: i32,
    /// `-1` is a tombstone (offsets of a deleted topic).
    pub o: i64,
    #[serde(default = "minus_one")]
    pub e: i32,
    #[serde(default)]
    pub m: Option<String>,
    /// The store's sequence number of this commit (0 in files written before it existed).
    #[serde(default)]
    pub s: u64,
}

fn minus_one() -> i32 {
    -1
}
