//! Log compaction (`cleanup.policy=compact`): the log cleaner of one partition.
//!
//! A compacted topic is a table: for each key, the latest record is what counts. The cleaner
//! keeps that record and removes the older ones of the same key, as Kafka's does:
//!
//! - Only closed segments below the last stable offset are cleaned (never the active segment,
//!   never an open transaction's records), and none holding a record younger than
//!   `min.compaction.lag.ms`.
//! - A clean starts when the "dirty" part (the segments written since the last clean, from the
//!   `cleaner-checkpoint` file on) is at least `min.cleanable.dirty.ratio` of the cleanable
//!   bytes, or its oldest record is older than `max.compaction.lag.ms`.
//! - Offsets never change: a rewritten batch keeps its base offset and last offset delta, so the
//!   removed records leave gaps a reader simply moves past.
//! - A tombstone (a record with a null value) deletes its key: it is kept, so that readers learn
//!   of the deletion, until its segment was last written `delete.retention.ms` ago (Kafka before
//!   3.1 used the segment's time as well; later versions stamp the time into the batch).
//! - Records of aborted transactions are removed; a transaction marker stays while its
//!   transaction still has records here, and after that until `delete.retention.ms`.
//!
//! A clean works in three steps. `plan` (under the partition's lock, no I/O but a file's
//! metadata) names the segments to read. [`CleanPlan::run`] (without the lock: produce and
//! fetch go on) reads them twice, once for each key's latest offset and once to write the kept
//! records into `<base>.cleaned` files, one per group of consecutive segments. `install`
//! (under the lock again) puts the cleaned segments in place of the ones they were made from,
//! as Kafka's cleaner does, through swap files (`PartitionLog::plan_clean` and
//! `PartitionLog::finish_clean` are the log's doors to the first and the last):
//!
//! 1. `<base>.cleaned` is renamed `<base>-<end>.swap` (the offsets it replaces): the commit point;
//! 2. the old segments in `base..end` are deleted;
//! 3. the swap file is renamed `<base>.log`.
//!
//! A crash before step 1 leaves a `.cleaned` file, which the next start deletes (the old
//! segments are whole); after it, the next start finishes steps 2 and 3 ([`recover`]). Either
//! way nothing is lost.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::batch::{self, AbortedTxn, BatchHeader, HEADER_LEN};
use super::records;
use super::segment::{Segment, log_file_name};

/// The first offset not yet cleaned, per partition (Kafka's `cleaner-offset-checkpoint`).
const CHECKPOINT_FILE: &str = "cleaner-checkpoint";

/// How a compacted topic's partitions are cleaned (from the topic's config).
#[derive(Debug, Clone, PartialEq)]
pub struct Compaction {
    /// How long a tombstone stays after its segment was last written (`delete.retention.ms`),
    /// and a transaction marker after its records are gone.
    pub delete_retention: Duration,
    /// The dirty share of the cleanable bytes that starts a clean (`min.cleanable.dirty.ratio`).
    pub min_dirty_ratio: f64,
    /// A segment holding a record younger than this is not cleaned yet
    /// (`min.compaction.lag.ms`).
    pub min_lag: Duration,
    /// A dirty record older than this is cleaned whatever the ratio (`max.compaction.lag.ms`).
    pub max_lag: Option<Duration>,
}

/// One closed segment a clean reads: its offsets, size, file and last write.
#[derive(Debug)]
struct Source {
    base: i64,
    next: i64,
    size: u64,
    file: Arc<File>,
    modified: SystemTime,
}

/// What a clean will read and what it must respect, taken under the partition's lock.
#[derive(Debug)]
pub struct CleanPlan {
    dir: PathBuf,
    sources: Vec<Source>,
    /// Offsets from here on were written since the last clean.
    first_dirty: i64,
    aborted: Vec<AbortedTxn>,
    compaction: Compaction,
    /// Consecutive segments are cleaned into one while their sizes add up to no more.
    segment_bytes: u64,
    max_inflated: u64,
}

/// A clean's output, waiting to be put in place.
#[derive(Debug)]
pub struct Cleaned {
    dir: PathBuf,
    groups: Vec<Group>,
    end: i64,
    pub stats: CleanStats,
}

/// The segments one `.cleaned` file replaces.
#[derive(Debug)]
struct Group {
    /// The first segment's base offset: the cleaned segment's name.
    base: i64,
    /// The offset after the last segment's.
    end: i64,
    /// Each segment replaced: base offset and size when it was read.
    replaced: Vec<(i64, u64)>,
}

/// What one clean did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_read: usize,
    pub segments_written: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    pub duration: Duration,
}

fn cleaned_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.cleaned"))
}

fn swap_path(dir: &Path, base: i64, end: i64) -> PathBuf {
    dir.join(format!("{base:020}-{end:020}.swap"))
}

/// Finishes what a crash interrupted, before the log's segments are opened: deletes
/// `.cleaned` files and completes swaps. Returns the base offsets of the segments a swap put in
/// place, which are opened with a full check (their index is written again).
pub fn recover(dir: &Path) -> io::Result<HashSet<i64>> {
    let mut swapped = HashSet::new();
    let names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    for name in &names {
        if name.ends_with(".cleaned") {
            fs::remove_file(dir.join(name))?;
        }
    }
    for name in &names {
        let Some((base, end)) = name
            .strip_suffix(".swap")
            .and_then(|range| range.split_once('-'))
            .and_then(|(b, e)| Some((b.parse::<i64>().ok()?, e.parse::<i64>().ok()?)))
        else {
            continue;
        };
        for other in &names {
            let Some(old) = other
                .strip_suffix(".log")
                .and_then(|b| b.parse::<i64>().ok())
            else {
                continue;
            };
            if (base..end).contains(&old) {
                remove_segment_files(dir, old)?;
            }
        }
        fs::rename(dir.join(name), dir.join(log_file_name(base)))?;
        super::sync::sync_dir(dir)?;
        tracing::info!(dir = %dir.display(), base, end, "finished a clean a stop interrupted");
        swapped.insert(base);
    }
    Ok(swapped)
}

fn remove_segment_files(dir: &Path, base: i64) -> io::Result<()> {
    let log = dir.join(log_file_name(base));
    for path in [log.with_extension("index"), log] {
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The clean due now in a log of `segments` (the last one active) whose last stable offset is
/// `stable`, if one is: the closed segments below `stable` and the minimum lag, when their dirty
/// part is large or old enough. Cheap, for the cleaner to ask under the partition's lock.
pub(super) fn plan(
    dir: &Path,
    segments: &[Segment],
    stable: i64,
    now_ms: i64,
    limits: Limits,
    aborted: &[AbortedTxn],
) -> io::Result<Option<CleanPlan>> {
    let compaction = limits.compaction;
    let young = now_ms.saturating_sub(compaction.min_lag.as_millis() as i64);
    let closed = &segments[..segments.len().saturating_sub(1)];
    let cleanable: Vec<&Segment> = closed
        .iter()
        .take_while(|s| s.next_offset <= stable && s.max_timestamp <= young)
        .collect();
    let first_dirty = fs::read_to_string(dir.join(CHECKPOINT_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let dirty: Vec<&&Segment> = cleanable
        .iter()
        .filter(|s| s.base_offset >= first_dirty && s.size > 0)
        .collect();
    let dirty_bytes: u64 = dirty.iter().map(|s| s.size).sum();
    let total_bytes: u64 = cleanable.iter().map(|s| s.size).sum();
    if dirty_bytes == 0 {
        return Ok(None);
    }
    let ratio = dirty_bytes as f64 / total_bytes as f64;
    let overdue = compaction.max_lag.is_some_and(|lag| {
        dirty
            .iter()
            .any(|s| now_ms - s.max_timestamp > lag.as_millis() as i64)
    });
    if ratio < compaction.min_dirty_ratio && !overdue {
        return Ok(None);
    }
    let mut sources = Vec::with_capacity(cleanable.len());
    for segment in cleanable {
        let file = segment.file()?;
        let modified = file.metadata()?.modified()?;
        sources.push(Source {
            base: segment.base_offset,
            next: segment.next_offset,
            size: segment.size,
            file,
            modified,
        });
    }
    Ok(Some(CleanPlan {
        dir: dir.to_path_buf(),
        sources,
        first_dirty,
        aborted: aborted.to_vec(),
        compaction,
        segment_bytes: limits.segment_bytes,
        max_inflated: limits.max_inflated,
    }))
}

/// What a clean must respect of the partition's config.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    pub compaction: Compaction,
    pub segment_bytes: u64,
    pub max_inflated: u64,
}

/// Puts a clean's segments in place of those it read, in `segments` (the log's, in `dir`),
/// unless the log changed meanwhile in a way that concerns them (retention, DeleteRecords, a
/// follower's truncation, the topic deleted: `dir` is then not the clean's): then the clean's
/// files are removed and `None` is returned.
pub(super) fn install(
    cleaned: Cleaned,
    dir: &Path,
    segments: &mut Vec<Segment>,
) -> io::Result<Option<CleanStats>> {
    let closed = &segments[..segments.len() - 1];
    let unchanged = cleaned.dir == dir
        && cleaned.groups.iter().all(|g| {
            g.replaced.iter().all(|(base, size)| {
                closed
                    .iter()
                    .any(|s| s.base_offset == *base && s.size == *size)
            })
        });
    if !unchanged {
        cleaned.discard();
        return Ok(None);
    }
    for group in &cleaned.groups {
        let swap = swap_path(dir, group.base, group.end);
        fs::rename(cleaned_path(dir, group.base), &swap)?;
        super::sync::sync_dir(dir)?;
        let first = segments
            .iter()
            .position(|s| s.base_offset == group.base)
            .expect("checked above");
        for segment in segments
            .drain(first..first + group.replaced.len())
            .collect::<Vec<_>>()
        {
            segment.delete()?;
        }
        fs::rename(&swap, dir.join(log_file_name(group.base)))?;
        super::sync::sync_dir(dir)?;
        let (segment, _) = Segment::open(dir, group.base, true)?;
        segments.insert(first, segment);
    }
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    fs::write(&tmp, cleaned.end.to_string())?;
    fs::rename(&tmp, dir.join(CHECKPOINT_FILE))?;
    Ok(Some(cleaned.stats))
}

impl Cleaned {
    /// Removes the clean's files: it will not be put in place.
    pub(super) fn discard(&self) {
        for group in &self.groups {
            let _ = fs::remove_file(cleaned_path(&self.dir, group.base));
        }
    }
}

/// Reads a segment file's batches in order, each whole.
struct BatchReader {
    file: Arc<File>,
    position: u64,
    size: u64,
    buffer: Vec<u8>,
}

impl BatchReader {
    fn new(source: &Source) -> Self {
        Self {
            file: source.file.clone(),
            position: 0,
            size: source.size,
            buffer: Vec::new(),
        }
    }

    /// The next batch, its header and bytes.
    fn next_batch(&mut self) -> io::Result<Option<(BatchHeader, &[u8])>> {
        if self.position + HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let mut head = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut head, self.position)?;
        let header =
            BatchHeader::parse(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.buffer.resize(header.total_len(), 0);
        self.file.read_exact_at(&mut self.buffer, self.position)?;
        self.position += header.total_len() as u64;
        Ok(Some((header, &self.buffer)))
    }
}

impl CleanPlan {
    fn is_aborted(&self, header: &BatchHeader) -> bool {
        header.is_transactional()
            && self.aborted.iter().any(|a| {
                a.producer_id == header.producer_id
                    && (a.first_offset..a.last_offset).contains(&header.base_offset)
            })
    }

    /// Cleans: finds each key's latest offset in the planned segments, then writes the records
    /// to keep into `.cleaned` files. Runs without the partition's lock.
    pub fn run(self, now_ms: i64) -> io::Result<Cleaned> {
        let started = Instant::now();
        let mut stats = CleanStats {
            segments_read: self.sources.len(),
            ..CleanStats::default()
        };
        let latest = self.latest_offsets()?;
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64);
        // Per producer: whether its current transaction kept a record so far.
        let mut txn_kept: HashMap<i64, bool> = HashMap::new();
        let mut groups = Vec::new();
        let mut at = 0;
        while at < self.sources.len() {
            // Consecutive segments whose sizes fit in one segment.
            let mut until = at + 1;
            let mut bytes = self.sources[at].size;
            while until < self.sources.len()
                && bytes + self.sources[until].size <= self.segment_bytes
                && self.sources[until].next - self.sources[at].base < i64::from(i32::MAX)
            {
                bytes += self.sources[until].size;
                until += 1;
            }
            let group = &self.sources[at..until];
            let path = cleaned_path(&self.dir, group[0].base);
            let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
            let mut modified = SystemTime::UNIX_EPOCH;
            for source in group {
                modified = modified.max(source.modified);
                let past_horizon = now
                    .duration_since(source.modified)
                    .is_ok_and(|age| age > self.compaction.delete_retention);
                stats.bytes_read += source.size;
                let mut reader = BatchReader::new(source);
                while let Some((header, bytes)) = reader.next_batch()? {
                    let kept = self.clean_batch(
                        &header,
                        bytes,
                        &latest,
                        past_horizon,
                        &mut txn_kept,
                        &mut stats,
                    )?;
                    if let Some(kept) = kept {
                        stats.bytes_written += kept.len() as u64;
                        out.write_all(&kept)?;
                    }
                }
            }
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            // The cleaned segment carries its sources' last write: tombstones age on.
            file.set_modified(modified)?;
            groups.push(Group {
                base: group[0].base,
                end: group[group.len() - 1].next,
                replaced: group.iter().map(|s| (s.base, s.size)).collect(),
            });
            stats.segments_written += 1;
            at = until;
        }
        stats.duration = started.elapsed();
        Ok(Cleaned {
            end: self.sources.last().map_or(self.first_dirty, |s| s.next),
            dir: self.dir,
            groups,
            stats,
        })
    }

    /// Each key's latest offset in the planned segments (aborted records do not count).
    fn latest_offsets(&self) -> io::Result<HashMap<Vec<u8>, i64>> {
        let mut latest = HashMap::new();
        for source in &self.sources {
            let mut reader = BatchReader::new(source);
            while let Some((header, bytes)) = reader.next_batch()? {
                if header.is_control() || self.is_aborted(&header) {
                    continue;
                }
                let body = records::records_of(bytes, &header, self.max_inflated)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                for record in records::parse_records(&body)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                {
                    if let Some(key) = record.key {
                        latest.insert(key.to_vec(), header.base_offset + record.offset_delta);
                    }
                }
            }
        }
        Ok(latest)
    }

    /// What of one batch stays: all of it (its bytes unchanged), some records (a rewritten
    /// batch), or nothing.
    fn clean_batch(
        &self,
        header: &BatchHeader,
        bytes: &[u8],
        latest: &HashMap<Vec<u8>, i64>,
        past_horizon: bool,
        txn_kept: &mut HashMap<i64, bool>,
        stats: &mut CleanStats,
    ) -> io::Result<Option<Vec<u8>>> {
        if header.is_control() {
            // A marker stays while its transaction has records here, and for the retention
            // time after.
            let kept = txn_kept.remove(&header.producer_id).unwrap_or(false);
            return Ok((kept || !past_horizon).then(|| bytes.to_vec()));
        }
        if self.is_aborted(header) {
            stats.records_removed += header.records_count.max(0) as u64;
            return Ok(None);
        }
        let body = records::records_of(bytes, header, self.max_inflated)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let all = records::parse_records(&body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut kept = Vec::with_capacity(body.len());
        let mut count = 0;
        let mut max_timestamp = header.base_timestamp;
        for record in &all {
            let offset = header.base_offset + record.offset_delta;
            let newest = record
                .key
                .is_some_and(|key| latest.get(key) == Some(&offset));
            if newest && (record.has_value || !past_horizon) {
                kept.extend_from_slice(record.bytes);
                count += 1;
                max_timestamp = max_timestamp.max(header.base_timestamp + record.timestamp_delta);
            }
        }
        stats.records_removed += (all.len() - count) as u64;
        if count > 0 && header.is_transactional() {
            txn_kept.insert(header.producer_id, true);
        }
        Ok(match count {
            0 => None,
            n if n == all.len() => Some(bytes.to_vec()),
            n => Some(batch::with_records(
                bytes,
                header,
                &kept,
                n as i32,
                max_timestamp,
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    use super::*;
    use crate::storage::batch::{BatchError, Marker};
    use crate::storage::log::tests::config;
    use crate::storage::log::{AppendError, PartitionLog, ReadOutcome};

    /// A compacted log's settings: small segments, every clean due at once, tombstones gone as
    /// soon as their segment is past `delete_retention`.
    fn compacted(delete_retention: Duration) -> crate::storage::LogConfig {
        crate::storage::LogConfig {
            segment_bytes: 2048,
            compaction: Some(Compaction {
                delete_retention,
                min_dirty_ratio: 0.0,
                min_lag: Duration::ZERO,
                max_lag: None,
            }),
            ..config()
        }
    }

    /// A batch of `(key, value)` records (`None`: a tombstone) with `compression`, optionally of
    /// a transactional producer `(id, first sequence)`.
    fn batch_of(
        records: &[(Option<&str>, Option<&str>)],
        compression: Compression,
        producer: Option<(i64, i32)>,
    ) -> Vec<u8> {
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (key, value))| Record {
                transactional: producer.is_some(),
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: producer.map_or(-1, |(id, _)| id),
                producer_epoch: if producer.is_some() { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // kafka-protocol's encoder keeps records in one batch while offset - sequence
                // stays the same.
                sequence: producer.map_or(0, |(_, seq)| seq) + i as i32,
                timestamp: 1_000 + i as i64,
                key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                headers: Default::default(),
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

    /// Every record of the log, in order: offset, key, value.
    fn read_all(log: &PartitionLog) -> Vec<(i64, Option<String>, Option<String>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.next_offset() {
            let batches = log
                .read_batches(offset, 1 << 20, true, i64::MAX)
                .unwrap()
                .unwrap_or_else(|| panic!("offset {offset} out of range"));
            if batches.records.is_empty() {
                break;
            }
            let text = |b: Option<Bytes>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
            // Where the batches end (their records may end before: the cleaner removed the last
            // ones): the next read starts there, as a client's does.
            let end = batches.next_offset;
            let mut bytes = batches.records.into_bytes().unwrap();
            let mut last = -1;
            for batch in RecordBatchDecoder::decode_all(&mut bytes).unwrap() {
                for r in batch.records {
                    assert!(r.offset > last, "offsets only grow");
                    last = r.offset;
                    if !r.control && r.offset >= offset {
                        out.push((r.offset, text(r.key), text(r.value)));
                    }
                }
            }
            offset = end;
        }
        out
    }

    /// Plans, runs and finishes one clean at `now_ms`.
    fn clean(log: &mut PartitionLog, now_ms: i64) -> Option<CleanStats> {
        let plan = log.plan_clean(now_ms).unwrap()?;
        let cleaned = plan.run(now_ms).unwrap();
        log.finish_clean(cleaned).unwrap()
    }

    /// A small deterministic generator (xorshift), so a failure can be replayed.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The model check: random puts and deletes of 40 keys in batches of 1-4 records with every
    /// codec, cleaned now and then (with a reopen now and then); after each clean, the log
    /// read back gives exactly the latest value of each live key, every record at the offset it
    /// was written at, and once every segment but the active one is cleaned with the tombstones'
    /// time passed, each key at most once there and no tombstone.
    #[test]
    fn compaction_keeps_exactly_the_latest_value_of_each_live_key_at_its_offset() {
        for seed in [1u64, 7, 42] {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, _) = PartitionLog::open(dir.path(), compacted(Duration::ZERO)).unwrap();
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut model: BTreeMap<String, String> = BTreeMap::new();
            let mut written: HashMap<i64, (String, Option<String>)> = HashMap::new();
            let later = crate::clock::now_ms() + 3_600_000;
            for round in 0..600 {
                let n = 1 + rng.below(4) as usize;
                let mut records = Vec::new();
                for _ in 0..n {
                    let key = format!("key-{}", rng.below(40));
                    let value =
                        (rng.below(5) != 0).then(|| format!("v{round}-{}", rng.below(1000)));
                    records.push((key, value));
                }
                let as_refs: Vec<(Option<&str>, Option<&str>)> = records
                    .iter()
                    .map(|(k, v)| (Some(k.as_str()), v.as_deref()))
                    .collect();
                let codec = CODECS[rng.below(5) as usize];
                let base = log
                    .append(&mut batch_of(&as_refs, codec, None))
                    .unwrap()
                    .base_offset();
                for (i, (key, value)) in records.into_iter().enumerate() {
                    written.insert(base + i as i64, (key.clone(), value.clone()));
                    match value {
                        Some(v) => model.insert(key, v),
                        None => model.remove(&key),
                    };
                }
                if round % 50 == 49 {
                    clean(&mut log, later);
                    if round % 150 == 149 {
                        let (reopened, _) =
                            PartitionLog::open(dir.path(), compacted(Duration::ZERO)).unwrap();
                        log = reopened;
                    }
                    let all = read_all(&log);
                    let mut replayed = BTreeMap::new();
                    for (offset, key, value) in &all {
                        let (k, v) = &written[offset];
                        assert_eq!((key.as_ref(), value), (Some(k), v), "offset {offset} moved");
                        match value {
                            Some(v) => replayed.insert(k.clone(), v.clone()),
                            None => replayed.remove(k),
                        };
                    }
                    assert_eq!(replayed, model, "seed {seed} round {round}");
                    let active = log.active_segment_base();
                    let cleaned: Vec<_> = all.iter().filter(|(o, ..)| *o < active).collect();
                    let keys: HashSet<_> = cleaned.iter().map(|(_, k, _)| k).collect();
                    assert_eq!(keys.len(), cleaned.len(), "a key twice in the cleaned part");
                    assert!(
                        cleaned.iter().all(|(.., v)| v.is_some()),
                        "a tombstone stayed"
                    );
                }
            }
            assert!(log.segment_count() > 2, "the test rolled segments");
            let left = read_all(&log).len();
            assert!(
                left < written.len() / 4,
                "{left} of {} records left",
                written.len()
            );
        }
    }

    /// A tombstone stays while its segment is younger than delete.retention.ms, and goes after.
    #[test]
    fn a_tombstone_stays_for_the_delete_retention_then_goes() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let (mut log, _) = PartitionLog::open(dir.path(), compacted(hour)).unwrap();
        log.append(&mut batch_of(
            &[(Some("a"), Some("1"))],
            Compression::None,
            None,
        ))
        .unwrap();
        log.append(&mut batch_of(&[(Some("a"), None)], Compression::None, None))
            .unwrap();
        log.roll().unwrap();
        let now = crate::clock::now_ms();
        clean(&mut log, now).expect("a clean");
        assert_eq!(read_all(&log), vec![(1, Some("a".into()), None)]);
        clean(&mut log, now + 2 * 3_600_000);
        // Nothing dirty: the same clean again finds nothing to do until something is written.
        assert_eq!(read_all(&log), vec![(1, Some("a".into()), None)]);
        log.append(&mut batch_of(
            &[(Some("b"), Some("2"))],
            Compression::None,
            None,
        ))
        .unwrap();
        log.roll().unwrap();
        clean(&mut log, now + 2 * 3_600_000).expect("a clean");
        assert_eq!(
            read_all(&log),
            vec![(2, Some("b".into()), Some("2".into()))]
        );
    }

    /// Aborted transactions' records go; a committed transaction's latest records stay with
    /// their marker; an open transaction holds the cleaner back (the last stable offset), and
    /// a marker whose transaction has nothing left goes once past the retention.
    #[test]
    fn aborted_records_go_committed_stay_and_open_transactions_are_not_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), compacted(Duration::ZERO)).unwrap();
        let marker = |commit| Marker {
            commit,
            coordinator_epoch: 0,
        };
        let txn = |k, v, seq| batch_of(&[(Some(k), Some(v))], Compression::None, Some((7, seq)));
        log.append(&mut txn("a", "aborted", 0)).unwrap(); // 0
        log.append_marker(7, 0, marker(false), 1).unwrap(); // 1
        log.append(&mut txn("b", "committed", 1)).unwrap(); // 2
        log.append_marker(7, 0, marker(true), 1).unwrap(); // 3
        log.append(&mut txn("c", "old", 2)).unwrap(); // 4
        log.append_marker(7, 0, marker(true), 1).unwrap(); // 5
        log.append(&mut batch_of(
            &[(Some("c"), Some("new"))],
            Compression::None,
            None,
        ))
        .unwrap(); // 6
        log.roll().unwrap();
        log.append(&mut txn("d", "open", 3)).unwrap(); // 7: stays open
        log.append(&mut batch_of(
            &[(Some("d"), Some("later"))],
            Compression::None,
            None,
        ))
        .unwrap(); // 8
        log.roll().unwrap();
        let later = crate::clock::now_ms() + 3_600_000;
        clean(&mut log, later).expect("a clean");
        let all = read_all(&log);
        assert_eq!(
            all,
            vec![
                (2, Some("b".into()), Some("committed".into())),
                (6, Some("c".into()), Some("new".into())),
                (7, Some("d".into()), Some("open".into())),
                (8, Some("d".into()), Some("later".into())),
            ]
        );
        // The open transaction's segment was not cleaned, and it is still open after a reopen.
        let (log, _) = PartitionLog::open(dir.path(), compacted(Duration::ZERO)).unwrap();
        assert_eq!(log.last_stable_offset(), 7);
        let mut markers = Vec::new();
        let ReadOutcome::Batches(mut bytes) = log.read(0, 1 << 20, true).unwrap() else {
            panic!()
        };
        for batch in RecordBatchDecoder::decode_all(&mut bytes).unwrap() {
            markers.extend(batch.records.iter().filter(|r| r.control).map(|r| r.offset));
        }
        assert_eq!(
            markers,
            vec![3],
            "only the marker of a transaction with records left"
        );
    }

    #[test]
    fn a_compacted_log_refuses_records_without_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), compacted(Duration::ZERO)).unwrap();
        let refused = log
            .append(&mut batch_of(
                &[(Some("a"), Some("1")), (None, Some("2"))],
                Compression::Lz4,
                None,
            ))
            .unwrap_err();
        assert!(
            matches!(&refused, AppendError::Corrupt(BatchError::NoKey { indexes }) if indexes == &[1]),
            "{refused:?}"
        );
        assert_eq!(
            refused.kafka_error(),
            kafka_protocol::ResponseError::InvalidRecord
        );
        assert_eq!(log.next_offset(), 0, "nothing of the batch is stored");
    }

    /// A stop at each step of putting a clean in place loses nothing: before the swap file
    /// (the old segments are whole; the `.cleaned` file is dropped), and after it with none,
    /// some or all of the old segments deleted (the start finishes the swap).
    #[test]
    fn a_stop_at_any_step_of_a_clean_loses_nothing() {
        for deleted_before_stop in [None, Some(0), Some(1), Some(usize::MAX)] {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, _) = PartitionLog::open(dir.path(), compacted(Duration::ZERO)).unwrap();
            for i in 0..120 {
                let (k, v) = (format!("k{}", i % 9), format!("v{i}"));
                log.append(&mut batch_of(
                    &[(Some(&k), Some(&v))],
                    Compression::None,
                    None,
                ))
                .unwrap();
            }
            let expected: BTreeMap<_, _> =
                read_all(&log).into_iter().map(|(_, k, v)| (k, v)).collect();
            let later = crate::clock::now_ms() + 3_600_000;
            let cleaned = log.plan_clean(later).unwrap().unwrap().run(later).unwrap();
            if let Some(deleted) = deleted_before_stop {
                // Steps 1 and 2 of finish_clean, by hand, stopping after `deleted` segments.
                let group = &cleaned.groups[0];
                fs::rename(
                    cleaned_path(dir.path(), group.base),
                    swap_path(dir.path(), group.base, group.end),
                )
                .unwrap();
                for (base, _) in group.replaced.iter().take(deleted) {
                    remove_segment_files(dir.path(), *base).unwrap();
                }
            }
            drop(log);
            let (log, _) = PartitionLog::open(dir.path(), compacted(Duration::ZERO)).unwrap();
            let names: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(
                !names
                    .iter()
                    .any(|n| n.ends_with(".cleaned") || n.ends_with(".swap")),
                "{names:?}"
            );
            let all = read_all(&log);
            let got: BTreeMap<_, _> = all.iter().cloned().map(|(_, k, v)| (k, v)).collect();
            assert_eq!(got, expected, "stopped after {deleted_before_stop:?}");
            if deleted_before_stop.is_some() {
                let keys: HashSet<_> = all.iter().map(|(_, k, _)| k).collect();
                assert!(all.len() < 120 && keys.len() == 9);
            } else {
                assert_eq!(all.len(), 120, "nothing cleaned, nothing lost");
            }
        }
    }

    /// The log cleaner's swap leaves a follower's replica of the cleaned log readable: a
    /// follower copying batches with gaps accepts them.
    #[test]
    fn a_follower_copies_a_cleaned_log_with_its_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let (mut leader, _) = PartitionLog::open(dir.path(), compacted(Duration::ZERO)).unwrap();
        for i in 0..60 {
            let (k, v) = (format!("k{}", i % 3), format!("v{i}"));
            leader
                .append(&mut batch_of(
                    &[(Some(&k), Some(&v))],
                    Compression::None,
                    None,
                ))
                .unwrap();
        }
        clean(&mut leader, crate::clock::now_ms() + 3_600_000).expect("a clean");
        let follower_dir = tempfile::tempdir().unwrap();
        let (mut follower, _) =
            PartitionLog::open(follower_dir.path(), compacted(Duration::ZERO)).unwrap();
        let mut offset = 0;
        while offset < leader.next_offset() {
            let ReadOutcome::Batches(bytes) = leader.read(offset, 1 << 20, true).unwrap() else {
                panic!()
            };
            offset = follower.append_replica(&bytes).unwrap();
        }
        assert_eq!(read_all(&follower), read_all(&leader));
        assert!(matches!(
            follower.append(&mut batch_of(&[(None, Some("x"))], Compression::None, None)),
            Err(AppendError::Corrupt(_))
        ));
    }
}
