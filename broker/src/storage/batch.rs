//! The record batch header (magic v2): what the broker reads and writes of a batch.
//!
//! The broker never re-encodes records. It checks the header and CRC of each batch (the records
//! themselves are walked by `records`), stamps the base offset and leader epoch (and, on a
//! `LogAppendTime` topic, the timestamp type and max timestamp, with a new CRC), and stores and
//! serves the bytes exactly as the producer sent them. That keeps compressed batches intact and
//! the hot path allocation-free.
//!
//! Layout (all big-endian), see the Kafka docs "Record Batch":
//! ```text
//! 0  base_offset i64          8  batch_length i32        12 partition_leader_epoch i32
//! 16 magic i8                 17 crc u32 (CRC-32C of bytes 21..end)
//! 21 attributes i16           23 last_offset_delta i32   27 base_timestamp i64
//! 35 max_timestamp i64        43 producer_id i64         51 producer_epoch i16
//! 53 base_sequence i32        57 records_count i32       61 records...
//! ```

use thiserror::Error;

/// Bytes before `batch_length`'s payload: base offset + the length field itself.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the whole v2 header, up to the first record.
pub const HEADER_LEN: usize = 61;
const CRC_START: usize = 21;

/// Why a batch was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch is truncated: needs {needed} bytes, has {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch length {0} is invalid")]
    BadLength(i32),
    #[error("unsupported record batch magic {0} (only v2 is stored)")]
    UnsupportedMagic(i8),
    #[error("batch claims {records} records but its offsets span {span}")]
    BadRecordCount { records: i32, span: i64 },
    #[error("a produce request may carry one record batch per partition, got {0}")]
    MultipleBatches(usize),
    #[error("batch CRC mismatch: header says {expected:#010x}, content is {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("batch declares {declared} records but holds {found}")]
    RecordCountMismatch { declared: i32, found: String },
    #[error("record {index} of the batch is malformed: {reason}")]
    BadRecord { index: i64, reason: &'static str },
    #[error("the batch inflates to more than {max} bytes (max.message.bytes)")]
    InflatedTooLarge { max: u64 },
    #[error(
        "compacted topic cannot accept a record without a key (records {indexes:?} of the batch)"
    )]
    NoKey { indexes: Vec<i64> },
    #[error("the batch's compressed records cannot be decompressed")]
    BadCompression,
    #[error(
        "the batch's zstd frame needs a {} MiB window, more than the broker's {} MiB \
         (zstd levels 20-22 ask for 32-128 MiB: use level 19 or lower)",
        requested >> 20,
        max >> 20
    )]
    ZstdWindowTooLarge { requested: u64, max: u64 },
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
}

/// The fields of a v2 batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl BatchHeader {
    /// Parses the header at the start of `buf` (which must hold at least [`HEADER_LEN`] bytes).
    /// Checks the length and magic, not the CRC.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let batch_length = be_i32(buf, 8);
        // The length counts everything after the length field; a header alone is 49 bytes.
        if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::BadLength(batch_length));
        }
        let magic = buf[16] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        Ok(Self {
            base_offset: be_i64(buf, 0),
            batch_length,
            magic,
            crc: u32::from_be_bytes([buf[17], buf[18], buf[19], buf[20]]),
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        })
    }

    /// Bytes the whole batch occupies, header included.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Sequence number of the last record, wrapping as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }

    /// Transaction control batches (commit/abort markers).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_ATTRIBUTE != 0
    }

    /// Batches written inside a transaction (data and its control marker).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_ATTRIBUTE != 0
    }

    /// Whether every record's timestamp is the broker's append time (the max timestamp).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & LOG_APPEND_TIME_ATTRIBUTE != 0
    }

    /// Whether the batch comes from an idempotent (or transactional) producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Parses and fully validates one batch a producer sent, at the start of `buf`: length, magic,
/// CRC, and records numbered 0..n-1 without a gap.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate_stored(buf)?;
    // Producers number records 0..n-1 within a batch; anything else would let one batch move
    // the log's offsets arbitrarily far ahead (Kafka's LogValidator refuses it the same way).
    if header.records_count <= 0
        || i64::from(header.records_count) != i64::from(header.last_offset_delta) + 1
    {
        return Err(BatchError::BadRecordCount {
            records: header.records_count,
            span: i64::from(header.last_offset_delta) + 1,
        });
    }
    Ok(header)
}

/// Parses and validates one batch as stored in a log, at the start of `buf`: length, magic,
/// CRC, and no more records than its offsets span. Log compaction leaves batches with fewer
/// records than offsets (the removed records' offsets are gaps), so a stored batch (reopened
/// from a segment, or fetched from a leader) is not held to a produced one's numbering.
pub fn validate_stored(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_len();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    let actual = crc32c::crc32c(&buf[CRC_START..total]);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            actual,
        });
    }
    if header.records_count < 0
        || header.last_offset_delta < 0
        || i64::from(header.records_count) > i64::from(header.last_offset_delta) + 1
    {
        return Err(BatchError::BadRecordCount {
            records: header.records_count,
            span: i64::from(header.last_offset_delta) + 1,
        });
    }
    Ok(header)
}

/// The batch `header` describes with only some of its records: `records` (their bytes as
/// stored, each with its length prefix, in order), `count` of them, newest timestamp
/// `max_timestamp`. Everything else of the header stays (base offset, last offset delta,
/// producer, sequence, leader epoch), so offsets never change and a reader moves past the batch
/// as before; the records are written uncompressed. What the log cleaner writes.
pub fn with_records(
    original: &[u8],
    header: &BatchHeader,
    records: &[u8],
    count: i32,
    max_timestamp: i64,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN + records.len());
    b.extend_from_slice(&original[..HEADER_LEN]);
    b.extend_from_slice(records);
    let length = (HEADER_LEN - LOG_OVERHEAD + records.len()) as i32;
    b[8..12].copy_from_slice(&length.to_be_bytes());
    b[21..23].copy_from_slice(&(header.attributes & !0x07).to_be_bytes());
    if !header.is_log_append_time() {
        b[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    }
    b[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Attribute bit 3: the batch's timestamps are the broker's append time.
const LOG_APPEND_TIME_ATTRIBUTE: i16 = 0x08;
/// Attribute bit 4: the batch belongs to a transaction.
const TRANSACTIONAL_ATTRIBUTE: i16 = 0x10;
/// Attribute bit 5: the batch holds one control record (a transaction marker).
const CONTROL_ATTRIBUTE: i16 = 0x20;

/// The control record's key type of an abort and of a commit marker.
const CONTROL_ABORT: i16 = 0;
const CONTROL_COMMIT: i16 = 1;

/// Builds the control batch that ends a transaction of `producer_id` in one partition: a
/// transactional, control batch holding one record whose key is (version 0, type: 0 abort, 1
/// commit) and whose value is (version 0, coordinator epoch), as Kafka writes it. The base offset
/// is stamped on append.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    now_ms: i64,
) -> Vec<u8> {
    let commit = marker.commit;
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(
        &(if commit {
            CONTROL_COMMIT
        } else {
            CONTROL_ABORT
        })
        .to_be_bytes(),
    );
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    // Record: attributes, timestamp delta 0, offset delta 0, key, value, no headers (varints
    // zigzag-encoded; every length here fits one byte).
    let mut record = vec![0u8, 0, 0, (key.len() as u8) << 1];
    record.extend_from_slice(&key);
    record.push((value.len() as u8) << 1);
    record.extend_from_slice(&value);
    record.push(0);
    let mut b = Vec::with_capacity(HEADER_LEN + 1 + record.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + 1 + record.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.extend_from_slice(&(CONTROL_ATTRIBUTE | TRANSACTIONAL_ATTRIBUTE).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&now_ms.to_be_bytes());
    b.extend_from_slice(&now_ms.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.push((record.len() as u8) << 1);
    b.extend_from_slice(&record);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// What a transaction marker says: commit or abort, and the epoch of the coordinator that
/// decided it (a partition refuses markers of an older coordinator: one cut off from the
/// cluster that has not yet learnt it was replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// An aborted transaction of one partition: its producer, the offset of its first batch and of
/// its abort marker. Read-committed fetches that return any of that range list it, so the
/// client drops its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// What a stored control batch says (its one record's key and value); `None` if its record
/// can't be read as a marker. A value too short for the epoch reads as epoch 0.
pub fn control_marker(batch: &[u8]) -> Option<Marker> {
    let mut at = HEADER_LEN;
    let _length = read_varint(batch, &mut at)?;
    at += 1; // attributes: one plain byte
    let _timestamp_delta = read_varint(batch, &mut at)?;
    let _offset_delta = read_varint(batch, &mut at)?;
    let key_len = usize::try_from(read_varint(batch, &mut at)?).ok()?;
    if key_len < 4 {
        return None;
    }
    let key = batch.get(at..at + 4)?;
    let commit = match i16::from_be_bytes([key[2], key[3]]) {
        CONTROL_COMMIT => true,
        CONTROL_ABORT => false,
        _ => return None,
    };
    at += key_len;
    let coordinator_epoch = match read_varint(batch, &mut at) {
        Some(6..) => batch
            .get(at + 2..at + 6)
            .map_or(0, |e| i32::from_be_bytes([e[0], e[1], e[2], e[3]])),
        _ => 0,
    };
    Some(Marker {
        commit,
        coordinator_epoch,
    })
}

/// A zigzag varint at `*at`, moving `*at` past it.
fn read_varint(buf: &[u8], at: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    None
}

/// Gives the batch the broker's append time, as Kafka does on a `LogAppendTime` topic: sets the
/// timestamp-type attribute and the max timestamp to `now_ms` (readers then take that as every
/// record's timestamp) and recomputes the CRC, which covers both. The records are unchanged.
pub fn set_log_append_time(buf: &mut [u8], header: &mut BatchHeader, now_ms: i64) {
    header.attributes |= LOG_APPEND_TIME_ATTRIBUTE;
    header.max_timestamp = now_ms;
    buf[21..23].copy_from_slice(&header.attributes.to_be_bytes());
    buf[35..43].copy_from_slice(&now_ms.to_be_bytes());
    header.crc = crc32c::crc32c(&buf[CRC_START..header.total_len()]);
    buf[17..21].copy_from_slice(&header.crc.to_be_bytes());
}

/// Stamps the broker-assigned base offset and leader epoch; neither is covered by the CRC.
pub fn stamp(buf: &mut [u8], base_offset: i64, leader_epoch: i32) {
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
    buf[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a minimal valid batch with `count` empty records, for storage tests.
    pub(crate) fn sample_batch(count: i32, timestamp: i64) -> Vec<u8> {
        let mut records = Vec::new();
        for i in 0..count {
            // length, attributes, timestamp delta, offset delta, key len -1, value len 0, headers 0
            let body = [0u8, 0, (i as u8) << 1, 1, 0, 0];
            records.push(body.len() as u8 * 2);
            records.extend_from_slice(&body);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        let batch_length = (HEADER_LEN - LOG_OVERHEAD + records.len()) as i32;
        b.extend_from_slice(&batch_length.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(2);
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(count - 1).to_be_bytes());
        b.extend_from_slice(&timestamp.to_be_bytes());
        b.extend_from_slice(&timestamp.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(&records);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn valid_batch_round_trips() {
        let mut b = sample_batch(3, 1000);
        let h = validate(&b).unwrap();
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        stamp(&mut b, 42, 0);
        let h = validate(&b).unwrap();
        assert_eq!((h.base_offset, h.last_offset()), (42, 44));
    }

    #[test]
    fn log_append_time_sets_the_type_and_max_timestamp_and_keeps_the_crc_valid() {
        let mut b = sample_batch(2, 1000);
        let mut h = validate(&b).unwrap();
        assert!(!h.is_log_append_time());
        set_log_append_time(&mut b, &mut h, 5000);
        let stored = validate(&b).unwrap();
        assert_eq!(stored, h);
        assert!(stored.is_log_append_time());
        assert_eq!((stored.base_timestamp, stored.max_timestamp), (1000, 5000));
    }

    #[test]
    fn control_batches_are_valid_and_say_what_they_end() {
        for commit in [true, false] {
            let marker = Marker {
                commit,
                coordinator_epoch: 5,
            };
            let mut b = control_batch(42, 3, marker, 1000);
            let h = validate(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.records_count),
                (42, 3, 1)
            );
            assert_eq!(control_marker(&b), Some(marker));
            stamp(&mut b, 7, 0);
            assert_eq!(control_marker(&b), Some(marker));
            // kafka-protocol's decoder reads it as one control record.
            let mut bytes = bytes::Bytes::copy_from_slice(&b);
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
            assert_eq!(set.records.len(), 1);
            assert!(set.records[0].control && set.records[0].transactional);
        }
        assert_eq!(control_marker(&sample_batch(1, 5)[..HEADER_LEN]), None);
    }

    #[test]
    fn flipped_bit_fails_crc() {
        let mut b = sample_batch(1, 1000);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(validate(&b), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn records_count_must_match_the_offset_span() {
        let mut b = sample_batch(2, 1000);
        // Claim a huge last offset delta: one batch would move the log 2^31 offsets ahead.
        b[23..27].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&b),
            Err(BatchError::BadRecordCount { .. })
        ));
    }

    #[test]
    fn truncated_and_garbage_are_errors_not_panics() {
        let b = sample_batch(2, 1000);
        for cut in 0..b.len() {
            assert!(validate(&b[..cut]).is_err());
        }
        assert!(validate(&[0xff; 80]).is_err());
    }
}
