//! The records inside a batch: the one place the broker looks past a batch's header.
//!
//! Kafka's log validator walks every record of a produced batch before it is stored, so a batch
//! cannot claim more records than it holds (which would move the log end by billions of offsets)
//! and a compressed batch is never trusted blindly. [`check`] does the same: it counts the
//! records, checks each one's framing and offset delta, and decompresses while it streams, never
//! holding more than a decoder's window in memory and never inflating more than a limit (the
//! topic's `max.message.bytes`): a 2 MB gzip batch that would expand to gigabytes stops at the
//! limit and is refused. The same walk finds the first record at a timestamp for ListOffsets.
//!
//! A record (record format v2) is `length: varint` then `attributes: i8, timestamp_delta: varint,
//! offset_delta: varint, key, value, headers`; only the first three fields are read, the rest is
//! skipped by the length.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;

use super::batch::{BatchError, BatchHeader, HEADER_LEN};

/// The largest zstd window a batch may ask for (zstd's own decoders allow 128 MiB); it bounds the
/// decoder's memory (the decoder reserves the whole window a frame asks for before it inflates a
/// byte). Levels up to 19 fit: librdkafka's and the Java client's default level 3 asks for 2 MiB
/// at most. The Java client compresses a batch as a stream of unknown size, so at levels 20-22
/// every one of its frames asks for the level's full window (32-128 MiB), however small the batch.
const MAX_ZSTD_WINDOW: u64 = 8 << 20;

/// What the walk reads of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub offset_delta: i64,
    pub timestamp_delta: i64,
    /// The key's length, -1 for a record without a key.
    pub key_len: i64,
}

/// How the records of a batch are numbered: as a producer sends them (0, 1, 2, ... without a
/// gap), or as a log may store them after compaction (increasing, gaps allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbering {
    Produced,
    Stored,
}

/// Checks that the produced batch at the start of `batch` holds exactly the records its header
/// declares, well framed and numbered 0..n-1, inflating at most `max_inflated` bytes; with
/// `keys_required` (a compacted topic), that every record has a key.
pub fn check(
    batch: &[u8],
    header: &BatchHeader,
    max_inflated: u64,
    keys_required: bool,
) -> Result<(), BatchError> {
    let mut keyless = Vec::new();
    walk(batch, header, max_inflated, Numbering::Produced, |r| {
        if keys_required && r.key_len < 0 {
            keyless.push(r.offset_delta);
        }
        ControlFlow::Continue(())
    })?;
    if keyless.is_empty() {
        Ok(())
    } else {
        Err(BatchError::NoKey { indexes: keyless })
    }
}

/// The first record of one whole, stored batch whose timestamp is at or after `timestamp`: its
/// offset and timestamp (a ListOffsets by timestamp that lands inside a batch of several
/// records). On a LogAppendTime batch every record has the batch's append time.
pub fn first_at_or_after(
    batch: &[u8],
    timestamp: i64,
    max_inflated: u64,
) -> Result<Option<(i64, i64)>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.is_log_append_time() {
        return Ok((header.max_timestamp >= timestamp)
            .then_some((header.base_offset, header.max_timestamp)));
    }
    let mut found = None;
    walk(batch, &header, max_inflated, Numbering::Stored, |r| {
        let at = header.base_timestamp.saturating_add(r.timestamp_delta);
        if at >= timestamp {
            found = Some((header.base_offset + r.offset_delta, at));
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(found)
}

/// Walks the records of the batch, calling `visit` for each until it breaks. Without a break the
/// walk also checks that nothing follows the last declared record.
pub fn walk(
    batch: &[u8],
    header: &BatchHeader,
    max_inflated: u64,
    numbering: Numbering,
    visit: impl FnMut(RecordMeta) -> ControlFlow<()>,
) -> Result<(), BatchError> {
    let end = header.total_len().min(batch.len());
    let body = batch.get(HEADER_LEN..end).unwrap_or_default();
    let numbering = (header.records_count, numbering);
    match header.attributes & 0x07 {
        0 => {
            if body.len() as u64 > max_inflated {
                return Err(BatchError::InflatedTooLarge { max: max_inflated });
            }
            walk_source(&mut Slice(body), numbering, visit)
        }
        2 => {
            let inflated = snappy(body, max_inflated)?;
            walk_source(&mut Slice(&inflated), numbering, visit)
        }
        codec => walk_stream(decoder(body, codec)?, numbering, max_inflated, visit),
    }
}

/// The records of a whole, stored batch, decompressed (at most `max_inflated` bytes): each
/// record's bytes as stored (with its length prefix) and what it holds. What the log cleaner
/// reads to decide which records stay.
pub fn records_of<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
    max_inflated: u64,
) -> Result<Cow<'a, [u8]>, BatchError> {
    let end = header.total_len().min(batch.len());
    let body = batch.get(HEADER_LEN..end).unwrap_or_default();
    let inflated = match header.attributes & 0x07 {
        0 => return Ok(Cow::Borrowed(body)),
        2 => snappy(body, max_inflated)?,
        codec => {
            let mut out = Vec::new();
            decoder(body, codec)?
                .take(max_inflated + 1)
                .read_to_end(&mut out)
                .map_err(|_| BatchError::BadCompression)?;
            if out.len() as u64 > max_inflated {
                return Err(BatchError::InflatedTooLarge { max: max_inflated });
            }
            out
        }
    };
    Ok(Cow::Owned(inflated))
}

/// One record of a batch's (decompressed) records, as [`parse_records`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The whole record as stored, its length prefix included: copied as is into a rewritten
    /// batch (its deltas are relative to the batch's base offset and timestamp, which stay).
    pub bytes: &'a [u8],
    pub offset_delta: i64,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    /// `false` for a tombstone (a null value: "delete this key").
    pub has_value: bool,
}

/// Splits decompressed records into [`RecordView`]s.
pub fn parse_records(body: &[u8]) -> Result<Vec<RecordView<'_>>, BatchError> {
    let bad = |index: usize| BatchError::BadRecord {
        index: index as i64,
        reason: "the record's fields overrun it",
    };
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < body.len() {
        let index = out.len();
        let start = at;
        let mut cursor = Slice(&body[at..]);
        let length = varint(&mut cursor, 5).ok_or_else(|| bad(index))?;
        let prefix = body.len() - at - cursor.0.len();
        let len = usize::try_from(length).map_err(|_| bad(index))?;
        let record = body
            .get(at + prefix..at + prefix + len)
            .ok_or_else(|| bad(index))?;
        at += prefix + len;
        let mut fields = Slice(record.get(1..).ok_or_else(|| bad(index))?);
        let timestamp_delta = varint(&mut fields, 10).ok_or_else(|| bad(index))?;
        let offset_delta = varint(&mut fields, 5).ok_or_else(|| bad(index))?;
        let key = nullable_bytes(&mut fields).ok_or_else(|| bad(index))?;
        let has_value = nullable_bytes(&mut fields)
            .ok_or_else(|| bad(index))?
            .is_some();
        out.push(RecordView {
            bytes: &body[start..at],
            offset_delta,
            timestamp_delta,
            key,
            has_value,
        });
    }
    Ok(out)
}

/// A record's key or value: a varint length (-1: null) and that many bytes; `None` if they
/// overrun the record.
fn nullable_bytes<'a>(fields: &mut Slice<'a>) -> Option<Option<&'a [u8]>> {
    let n = varint(fields, 5)?;
    let Ok(n) = usize::try_from(n) else {
        return Some(None);
    };
    let (taken, rest) = fields.0.split_at_checked(n)?;
    fields.0 = rest;
    Some(Some(taken))
}

/// A decompressing reader of a gzip, lz4 or zstd batch body.
fn decoder<'a>(body: &'a [u8], codec: i16) -> Result<Box<dyn Read + 'a>, BatchError> {
    Ok(match codec {
        1 => Box::new(flate2::read::MultiGzDecoder::new(body)),
        3 => Box::new(lz4_flex::frame::FrameDecoder::new(body)),
        4 => Box::new(
            ruzstd::decoding::StreamingDecoder::new_with_max_window_size(body, MAX_ZSTD_WINDOW)
                .map_err(|e| match e {
                    ruzstd::decoding::errors::FrameDecoderError::WindowSizeTooBig {
                        requested,
                        max,
                    } => BatchError::ZstdWindowTooLarge { requested, max },
                    _ => BatchError::BadCompression,
                })?,
        ),
        codec => return Err(BatchError::UnknownCompression(codec as u8)),
    })
}

/// Walks a decompressing reader, stopping it after `max_inflated + 1` bytes.
fn walk_stream<R: Read>(
    decoder: R,
    numbering: (i32, Numbering),
    max_inflated: u64,
    visit: impl FnMut(RecordMeta) -> ControlFlow<()>,
) -> Result<(), BatchError> {
    let mut source = Stream(BufReader::with_capacity(
        16 * 1024,
        decoder.take(max_inflated + 1),
    ));
    let walked = walk_source(&mut source, numbering, visit);
    if source.0.get_ref().limit() == 0 {
        // The limit was hit, whatever the walk made of the cut stream.
        return Err(BatchError::InflatedTooLarge { max: max_inflated });
    }
    walked
}

/// Snappy as Kafka's producers write it: xerial's framing (a magic header, then blocks each with
/// a big-endian length) or one raw block. Each block's inflated size is read from its header and
/// checked against what is left of the limit before anything is allocated.
fn snappy(body: &[u8], max_inflated: u64) -> Result<Vec<u8>, BatchError> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER_LEN: usize = 16;
    let mut blocks = Vec::new();
    if body.starts_with(XERIAL_MAGIC) && body.len() >= XERIAL_HEADER_LEN {
        let mut rest = &body[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            let (len, tail) = rest.split_at_checked(4).ok_or(BatchError::BadCompression)?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let (block, tail) = tail
                .split_at_checked(len)
                .ok_or(BatchError::BadCompression)?;
            blocks.push(block);
            rest = tail;
        }
    } else {
        blocks.push(body);
    }
    let mut out = Vec::new();
    let mut decoder = snap::raw::Decoder::new();
    for block in blocks {
        let len = snap::raw::decompress_len(block).map_err(|_| BatchError::BadCompression)?;
        if (out.len() + len) as u64 > max_inflated {
            return Err(BatchError::InflatedTooLarge { max: max_inflated });
        }
        let at = out.len();
        out.resize(at + len, 0);
        decoder
            .decompress(block, &mut out[at..])
            .map_err(|_| BatchError::BadCompression)?;
    }
    Ok(out)
}

/// Bytes to walk: a slice (uncompressed records) or a decompressing stream.
trait Source {
    fn byte(&mut self) -> Option<u8>;
    /// Skips `n` bytes; false if there are fewer.
    fn skip(&mut self, n: u64) -> bool;
    fn at_end(&mut self) -> bool;
}

struct Slice<'a>(&'a [u8]);

impl Source for Slice<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn skip(&mut self, n: u64) -> bool {
        match usize::try_from(n).ok().and_then(|n| self.0.get(n..)) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }
    fn at_end(&mut self) -> bool {
        self.0.is_empty()
    }
}

struct Stream<R: BufRead>(R);

impl<R: BufRead> Source for Stream<R> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.0.fill_buf().ok()?.first()?;
        self.0.consume(1);
        Some(b)
    }
    fn skip(&mut self, mut n: u64) -> bool {
        while n > 0 {
            let available = match self.0.fill_buf() {
                Ok([]) | Err(_) => return false,
                Ok(buf) => buf.len(),
            };
            let step = available.min(usize::try_from(n).unwrap_or(usize::MAX));
            self.0.consume(step);
            n -= step as u64;
        }
        true
    }
    fn at_end(&mut self) -> bool {
        // A read error is not "the end": the caller then reports trailing bytes.
        self.0.fill_buf().map(<[u8]>::is_empty).unwrap_or(false)
    }
}

/// A zigzag varint of at most 5 bytes (every v2 record field read here is an int32 varint except
/// the timestamp delta, a varlong of at most 10).
fn varint(source: &mut impl Source, max_bytes: u32) -> Option<i64> {
    let mut value: u64 = 0;
    for i in 0..max_bytes {
        let byte = source.byte()?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    None
}

fn walk_source(
    source: &mut impl Source,
    (declared, numbering): (i32, Numbering),
    mut visit: impl FnMut(RecordMeta) -> ControlFlow<()>,
) -> Result<(), BatchError> {
    let mut found: i64 = 0;
    let mut last_delta = -1;
    while found < i64::from(declared) {
        let bad = |reason| BatchError::BadRecord {
            index: found,
            reason,
        };
        let missing = || BatchError::RecordCountMismatch {
            declared,
            found: found.to_string(),
        };
        if source.at_end() {
            return Err(missing());
        }
        let length = varint(source, 5).ok_or_else(missing)?;
        // attributes (1 byte) + two varints of at least a byte each.
        if length < 3 {
            return Err(bad("record length too small"));
        }
        let _attributes = source.byte().ok_or_else(missing)?;
        let mut used = 1u64;
        let timestamp_delta = counted(source, 10, &mut used).ok_or_else(missing)?;
        let offset_delta = counted(source, 5, &mut used).ok_or_else(missing)?;
        match numbering {
            Numbering::Produced if offset_delta != found => {
                return Err(bad("offset deltas must number the records 0, 1, 2, ..."));
            }
            Numbering::Stored if offset_delta <= last_delta => {
                return Err(bad("offset deltas must increase"));
            }
            _ => last_delta = offset_delta,
        }
        let key_len = counted(source, 5, &mut used).ok_or_else(missing)?;
        let rest = (length as u64)
            .checked_sub(used)
            .ok_or(bad("record length shorter than its fields"))?;
        if !source.skip(rest) {
            return Err(missing());
        }
        found += 1;
        if visit(RecordMeta {
            offset_delta,
            timestamp_delta,
            key_len,
        })
        .is_break()
        {
            return Ok(());
        }
    }
    if !source.at_end() {
        return Err(BatchError::RecordCountMismatch {
            declared,
            found: format!("more than {found}"),
        });
    }
    Ok(())
}

/// A varint, adding the bytes it took to `used`.
fn counted(source: &mut impl Source, max_bytes: u32, used: &mut u64) -> Option<i64> {
    let mut counting = Counting {
        inner: source,
        n: 0,
    };
    let value = varint(&mut counting, max_bytes);
    *used += counting.n;
    value
}

struct Counting<'a, S> {
    inner: &'a mut S,
    n: u64,
}

impl<S: Source> Source for Counting<'_, S> {
    fn byte(&mut self) -> Option<u8> {
        let b = self.inner.byte()?;
        self.n += 1;
        Some(b)
    }
    fn skip(&mut self, n: u64) -> bool {
        self.n += n;
        self.inner.skip(n)
    }
    fn at_end(&mut self) -> bool {
        self.inner.at_end()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::*;
    use crate::storage::batch::{self, BatchHeader};

    fn record(offset: i64, timestamp: i64, value: Bytes) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            // kafka-protocol's encoder puts records in one batch while offset - sequence stays.
            sequence: offset as i32,
            timestamp,
            key: Some(Bytes::from(format!("key-{offset}"))),
            value: Some(value),
            headers: Default::default(),
        }
    }

    /// A batch of `n` records at timestamps 1000, 1010, ... encoded with `compression`.
    fn encoded(n: i64, compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| {
                record(
                    i,
                    1000 + 10 * i,
                    Bytes::from(format!("value {i}").repeat(20)),
                )
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
        buf.to_vec()
    }

    fn header(b: &[u8]) -> BatchHeader {
        batch::validate(b).unwrap()
    }

    /// Rewrites the header's count fields (and the CRC), as a hostile client would.
    fn forge_count(b: &mut [u8], records: i32) {
        b[23..27].copy_from_slice(&(records - 1).to_be_bytes());
        b[57..61].copy_from_slice(&records.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_walks_to_the_declared_count_and_finds_records_by_time() {
        for codec in CODECS {
            let b = encoded(50, codec);
            let h = header(&b);
            assert_eq!(check(&b, &h, 1 << 20, true), Ok(()), "{codec:?}");
            assert_eq!(
                first_at_or_after(&b, 1205, 1 << 20),
                Ok(Some((21, 1210))),
                "{codec:?}"
            );
            assert_eq!(first_at_or_after(&b, 99_999, 1 << 20), Ok(None));
        }
    }

    #[test]
    fn a_batch_that_claims_more_or_fewer_records_than_it_holds_is_refused() {
        for codec in CODECS {
            let mut b = encoded(1, codec);
            forge_count(&mut b, i32::MAX);
            let h = header(&b);
            assert_eq!(
                check(&b, &h, 1 << 20, false),
                Err(BatchError::RecordCountMismatch {
                    declared: i32::MAX,
                    found: "1".into()
                }),
                "{codec:?}"
            );
            let mut b = encoded(3, codec);
            forge_count(&mut b, 2);
            let h = header(&b);
            assert!(
                matches!(
                    check(&b, &h, 1 << 20, false),
                    Err(BatchError::RecordCountMismatch { declared: 2, .. })
                ),
                "{codec:?}"
            );
        }
    }

    /// The records of a batch holding one record whose value is `size` zero bytes.
    fn one_huge_record(size: usize) -> Vec<u8> {
        // length, attributes, timestamp delta 0, offset delta 0, key -1, value, 0 headers
        let mut body = vec![0u8, 0, 0, 1];
        body.extend(zigzag(size as i64));
        let mut record = zigzag((body.len() + size + 1) as i64);
        record.extend(body);
        record.resize(record.len() + size + 1, 0);
        record
    }

    /// A batch of one record whose value is `size` zero bytes, compressed with `codec` (a
    /// "zip bomb": a small fraction of that on the wire).
    fn bomb(size: usize, codec: i16) -> Vec<u8> {
        let records = one_huge_record(size);
        let compressed = match codec {
            1 => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                gz.write_all(&records).unwrap();
                gz.finish().unwrap()
            }
            2 => snap::raw::Encoder::new().compress_vec(&records).unwrap(),
            3 => {
                let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
                lz.write_all(&records).unwrap();
                lz.finish().unwrap()
            }
            _ => unreachable!("gzip, snappy or lz4"),
        };
        let plain = encoded(1, Compression::None);
        let mut b = plain[..HEADER_LEN].to_vec();
        b.extend(compressed);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[21..23].copy_from_slice(&codec.to_be_bytes());
        forge_count(&mut b, 1);
        b
    }

    fn zigzag(v: i64) -> Vec<u8> {
        let mut u = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            if u < 0x80 {
                out.push(u as u8);
                return out;
            }
            out.push((u as u8 & 0x7f) | 0x80);
            u >>= 7;
        }
    }

    #[test]
    fn a_compressed_batch_stops_inflating_at_the_limit() {
        for codec in [1, 2, 3] {
            let b = bomb(64 << 20, codec);
            assert!(b.len() < 4 << 20, "64 MiB in {} bytes", b.len());
            let h = header(&b);
            assert_eq!(
                check(&b, &h, 1 << 20, false),
                Err(BatchError::InflatedTooLarge { max: 1 << 20 }),
                "codec {codec}"
            );
            assert_eq!(
                check(&b, &h, 65 << 20, false),
                Ok(()),
                "codec {codec}: a higher limit"
            );
        }
        let plain = encoded(10, Compression::None);
        assert_eq!(
            check(&plain, &header(&plain), 100, false),
            Err(BatchError::InflatedTooLarge { max: 100 })
        );
    }

    #[test]
    fn garbage_records_are_errors_not_panics() {
        for codec in CODECS {
            let b = encoded(5, codec);
            for at in HEADER_LEN..b.len() {
                let mut bad = b.clone();
                bad[at] ^= 0x5a;
                let crc = crc32c::crc32c(&bad[21..]);
                bad[17..21].copy_from_slice(&crc.to_be_bytes());
                // Whatever it says, it says it without panicking.
                let _ = check(&bad, &header(&bad), 1 << 20, false);
            }
        }
    }
}
