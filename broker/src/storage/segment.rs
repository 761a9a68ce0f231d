//! One segment: an append-only `.log` file of record batches plus a sparse `.index` file.
//!
//! File names are the segment's base offset, zero-padded to 20 digits, as in Kafka. The index
//! holds 8-byte entries `(offset - base_offset: u32, file position: u32)`, one every
//! `INDEX_INTERVAL_BYTES` of log, so a reader binary-searches the index and then walks at most a
//! few batch headers. See `docs/broker-storage.md` for the full format.

use std::cell::{Cell, RefCell};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::batch::{self, BatchHeader, HEADER_LEN};
use crate::zero_copy::{FileRange, WINDOW};

/// Whole batches read for a fetch, and the offset after them.
#[derive(Debug)]
pub struct Batches {
    pub records: Records,
    /// The offset of the first record after these batches (where the next read starts, if
    /// nothing is in between).
    pub next_offset: i64,
}

/// Whole batches, where they are: in memory (a small read), or still in the segment file (sent
/// to the client with `sendfile`, see [`crate::zero_copy`]).
#[derive(Debug)]
pub enum Records {
    Memory(Bytes),
    File(FileRange),
}

impl Records {
    pub fn len(&self) -> usize {
        match self {
            Records::Memory(b) => b.len(),
            Records::File(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in memory, read from the file if they are not yet.
    pub fn into_bytes(self) -> io::Result<Bytes> {
        match self {
            Records::Memory(b) => Ok(b),
            Records::File(f) => f.read(),
        }
    }
}

/// `max_at` of a segment without records.
const NO_RECORDS: (i64, i64) = (-1, -1);

/// Log bytes between two index entries.
const INDEX_INTERVAL_BYTES: u64 = 4096;
const INDEX_ENTRY_LEN: usize = 8;

#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    relative_offset: u32,
    position: u32,
}

/// A segment file pair and what the broker keeps in memory about it.
#[derive(Debug)]
pub struct Segment {
    /// Offset of the first batch; also the file name.
    pub base_offset: i64,
    /// One past the last offset stored here (== base_offset when empty).
    pub next_offset: i64,
    /// Bytes in the `.log` file; every byte is part of a complete, validated batch.
    pub size: u64,
    /// Largest `max_timestamp` seen (from the tail batches when reopened), for time retention.
    pub max_timestamp: i64,
    /// When this segment took its first write in this process, for rolling by time.
    pub opened_at: Instant,
    /// The newest timestamp here and the base offset of the batch holding it (ListOffsets -3):
    /// kept as batches are appended or validated, else read once from the headers and cached
    /// (an old segment never changes). `None` until known; `(-1, -1)` for an empty segment.
    max_at: Cell<Option<(i64, i64)>>,
    log_path: PathBuf,
    index_path: PathBuf,
    /// The `.log` file while in use; an old segment nobody read for a while gives its descriptor
    /// back ([`Segment::close_if_idle`]) and reopens on the next read, so the broker's open files
    /// grow with the partitions in use, not with every segment on disk.
    log: RefCell<Option<Arc<File>>>,
    /// When the `.log` file was last used, for closing idle ones.
    last_used: Cell<Instant>,
    /// The `.index` file, open for appending while the segment is the active one.
    index_file: Option<File>,
    /// Set when the topic is deleted: the files are gone (renamed), so nothing is reopened.
    forgotten: bool,
    index: Vec<IndexEntry>,
    bytes_since_index: u64,
}

/// What a failed append restores (see [`Segment::append`]).
#[derive(Debug, Clone, Copy)]
struct Tail {
    size: u64,
    next_offset: i64,
    max_timestamp: i64,
    max_at: Option<(i64, i64)>,
    index_len: usize,
    bytes_since_index: u64,
}

/// What reopening a segment found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Bytes cut from a torn or corrupt tail.
    pub truncated_bytes: u64,
    /// Headers of every batch kept, when the segment was fully validated.
    pub headers: Vec<BatchHeader>,
}

pub fn log_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

impl Segment {
    /// Creates an empty segment starting at `base_offset`.
    pub fn create(dir: &Path, base_offset: i64) -> io::Result<Self> {
        let log_path = dir.join(log_file_name(base_offset));
        let index_path = log_path.with_extension("index");
        // The files are made now and opened again when first written: a topic of 10,000
        // partitions does not take 20,000 descriptors before anything is produced to it.
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&log_path)?;
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&index_path)?;
        // The new files' directory entries must be durable before data in them is acknowledged.
        super::sync::sync_dir(dir)?;
        Ok(Self {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: -1,
            opened_at: Instant::now(),
            max_at: Cell::new(Some(NO_RECORDS)),
            log_path,
            index_path,
            log: RefCell::new(None),
            last_used: Cell::new(Instant::now()),
            index_file: None,
            forgotten: false,
            index: Vec::new(),
            bytes_since_index: 0,
        })
    }

    /// Reopens an existing segment. With `validate_all`, every batch's CRC is checked and the file
    /// is cut at the first bad or partial batch (the active segment after a crash); otherwise the
    /// index is trusted and only the batches after its last entry are walked.
    pub fn open(dir: &Path, base_offset: i64, validate_all: bool) -> io::Result<(Self, Recovery)> {
        let log_path = dir.join(log_file_name(base_offset));
        let index_path = log_path.with_extension("index");
        let log = OpenOptions::new().read(true).write(true).open(&log_path)?;
        let mut segment = Self {
            base_offset,
            next_offset: base_offset,
            size: log.metadata()?.len(),
            max_timestamp: -1,
            opened_at: Instant::now(),
            max_at: Cell::new(None),
            log_path,
            index_path: index_path.clone(),
            log: RefCell::new(Some(Arc::new(log))),
            last_used: Cell::new(Instant::now()),
            index_file: Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&index_path)?,
            ),
            forgotten: false,
            index: Vec::new(),
            bytes_since_index: 0,
        };
        let mut recovery = Recovery::default();
        if validate_all {
            recovery = segment.validate_and_rebuild()?;
        } else {
            segment.load_index()?;
            let start = segment.index.last().map_or(0, |e| u64::from(e.position));
            if segment.walk_tail(start).is_err() {
                // The index disagreed with the log: fall back to a full check.
                recovery = segment.validate_and_rebuild()?;
            }
        }
        Ok((segment, recovery))
    }

    fn load_index(&mut self) -> io::Result<()> {
        let raw = fs::read(&self.index_path)?;
        let mut entries = Vec::with_capacity(raw.len() / INDEX_ENTRY_LEN);
        for chunk in raw.chunks_exact(INDEX_ENTRY_LEN) {
            let relative_offset = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            let monotonic = entries.last().is_none_or(|last: &IndexEntry| {
                position > last.position && relative_offset >= last.relative_offset
            });
            if !monotonic || u64::from(position) >= self.size {
                break;
            }
            entries.push(IndexEntry {
                relative_offset,
                position,
            });
        }
        self.index = entries;
        Ok(())
    }

    /// Walks batch headers from `position` to the end to learn `next_offset` and the timestamp.
    fn walk_tail(&mut self, mut position: u64) -> io::Result<()> {
        let log = self.file()?;
        while position < self.size {
            let header = header_at(&log, position)?;
            position += header.total_len() as u64;
            if position > self.size {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "partial batch"));
            }
            self.next_offset = header.last_offset() + 1;
            self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        }
        Ok(())
    }

    fn validate_and_rebuild(&mut self) -> io::Result<Recovery> {
        let data = fs::read(&self.log_path)?;
        let mut recovery = Recovery::default();
        let mut position = 0usize;
        let mut expected_offset = self.base_offset;
        self.index.clear();
        self.bytes_since_index = 0;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.max_at.set(Some(NO_RECORDS));
        while position < data.len() {
            let Ok(header) = batch::validate_stored(&data[position..]) else {
                break;
            };
            if header.base_offset < expected_offset {
                break; // offsets must grow; anything else is a corrupt tail
            }
            self.note_batch(position as u64, &header);
            expected_offset = header.last_offset() + 1;
            position += header.total_len();
            recovery.headers.push(header);
        }
        recovery.truncated_bytes = (data.len() - position) as u64;
        if recovery.truncated_bytes > 0 {
            let log = self.file()?;
            log.set_len(position as u64)?;
            log.sync_all()?;
        }
        self.size = position as u64;
        // Rewrite the index from what was validated.
        let mut bytes = Vec::with_capacity(self.index.len() * INDEX_ENTRY_LEN);
        for e in &self.index {
            bytes.extend_from_slice(&e.relative_offset.to_be_bytes());
            bytes.extend_from_slice(&e.position.to_be_bytes());
        }
        fs::write(&self.index_path, bytes)?;
        self.index_file = Some(OpenOptions::new().append(true).open(&self.index_path)?);
        Ok(recovery)
    }

    /// Records a batch written at `position` in the in-memory state; returns an index entry if
    /// one is due.
    fn note_batch(&mut self, position: u64, header: &BatchHeader) -> Option<IndexEntry> {
        let entry = if self.index.is_empty() || self.bytes_since_index >= INDEX_INTERVAL_BYTES {
            let entry = IndexEntry {
                relative_offset: (header.base_offset - self.base_offset) as u32,
                position: position as u32,
            };
            self.index.push(entry);
            self.bytes_since_index = 0;
            Some(entry)
        } else {
            None
        };
        self.bytes_since_index += header.total_len() as u64;
        self.next_offset = header.last_offset() + 1;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        if let Some((newest, _)) = self.max_at.get()
            && header.max_timestamp > newest
        {
            self.max_at
                .set(Some((header.max_timestamp, header.base_offset)));
        }
        entry
    }

    /// Appends one already validated and stamped batch. All or nothing: if the log or the index
    /// write fails (a full disk), both files are cut back to where they were and the segment's
    /// state is restored, so the client's retry is not stored twice.
    pub fn append(&mut self, bytes: &[u8], header: &BatchHeader) -> io::Result<()> {
        let tail = Tail {
            size: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            max_at: self.max_at.get(),
            index_len: self.index.len(),
            bytes_since_index: self.bytes_since_index,
        };
        let written = self.write(bytes, header);
        if written.is_err() {
            self.cut_back(tail);
        }
        written
    }

    fn write(&mut self, bytes: &[u8], header: &BatchHeader) -> io::Result<()> {
        if self.size == 0 {
            self.opened_at = Instant::now();
        }
        self.file()?.write_all_at(bytes, self.size)?;
        let position = self.size;
        self.size += bytes.len() as u64;
        if let Some(entry) = self.note_batch(position, header) {
            let mut raw = [0u8; INDEX_ENTRY_LEN];
            raw[..4].copy_from_slice(&entry.relative_offset.to_be_bytes());
            raw[4..].copy_from_slice(&entry.position.to_be_bytes());
            self.index_writer()?.write_all(&raw)?;
        }
        Ok(())
    }

    fn cut_back(&mut self, tail: Tail) {
        let cut = |path: &Path, len: u64| {
            let file = OpenOptions::new().write(true).open(path)?;
            if file.metadata()?.len() > len {
                file.set_len(len)?;
            }
            Ok::<_, io::Error>(())
        };
        // Cutting a file frees space, so it works on a full disk; if it still fails, the bytes
        // past `size` are overwritten by the next append or cut as a torn tail on the next start.
        if let Err(e) = cut(&self.log_path, tail.size) {
            tracing::warn!(file = %self.log_path.display(), "could not cut back a failed append: {e}");
        }
        let index_len = (tail.index_len * INDEX_ENTRY_LEN) as u64;
        if let Err(e) = cut(&self.index_path, index_len) {
            tracing::warn!(file = %self.index_path.display(), "could not cut back a failed index write: {e}");
        }
        self.size = tail.size;
        self.next_offset = tail.next_offset;
        self.max_timestamp = tail.max_timestamp;
        self.max_at.set(tail.max_at);
        self.index.truncate(tail.index_len);
        self.bytes_since_index = tail.bytes_since_index;
    }

    /// The `.log` file, reopened if it was closed as idle.
    pub(super) fn file(&self) -> io::Result<Arc<File>> {
        self.last_used.set(Instant::now());
        let mut log = self.log.borrow_mut();
        if let Some(file) = log.as_ref() {
            return Ok(file.clone());
        }
        if self.forgotten {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the segment's topic was deleted",
            ));
        }
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.log_path)?,
        );
        *log = Some(file.clone());
        Ok(file)
    }

    fn index_writer(&mut self) -> io::Result<&mut File> {
        if self.index_file.is_none() && !self.forgotten {
            self.index_file = Some(OpenOptions::new().append(true).open(&self.index_path)?);
        }
        self.index_file.as_mut().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the segment's topic was deleted")
        })
    }

    /// The topic was deleted: its files were renamed away, so a closed file is never reopened by
    /// its old path (which a topic created since may use). Open descriptors still read the old
    /// files until dropped.
    pub fn forget_files(&mut self) {
        self.forgotten = true;
    }

    /// Gives back the segment's descriptors if no read or append used it for `idle`; they are
    /// opened again on the next use.
    pub fn close_if_idle(&mut self, idle: Duration) {
        if self.last_used.get().elapsed() >= idle {
            self.index_file = None;
            *self.log.borrow_mut() = None;
        }
    }

    /// Closes the index file (a segment that stopped being the active one is never appended to).
    pub fn close_index(&mut self) {
        self.index_file = None;
    }

    /// Whether the `.log` file is open (for tests and the open-file count).
    pub fn is_open(&self) -> bool {
        self.log.borrow().is_some()
    }

    /// File position of the batch that contains `offset`, if this segment holds it.
    /// Cuts the segment's file at `position` (a batch boundary) and drops its index, which the
    /// next open rebuilds from the file.
    pub fn cut_at(&mut self, position: u64) -> io::Result<()> {
        let log = OpenOptions::new().write(true).open(&self.log_path)?;
        log.set_len(position)?;
        log.sync_all()?;
        fs::write(&self.index_path, [])?;
        Ok(())
    }

    pub fn position_of(&self, offset: i64) -> io::Result<Option<u64>> {
        if offset < self.base_offset || offset >= self.next_offset {
            return Ok(None);
        }
        let relative = (offset - self.base_offset) as u32;
        let slot = self
            .index
            .partition_point(|e| e.relative_offset <= relative);
        let mut position = slot
            .checked_sub(1)
            .map_or(0, |i| u64::from(self.index[i].position));
        let log = self.file()?;
        while position < self.size {
            let header = header_at(&log, position)?;
            if header.last_offset() >= offset {
                return Ok(Some(position));
            }
            position += header.total_len() as u64;
        }
        Ok(None)
    }

    /// Reads whole batches from `position`: as many as fit in `max_bytes`, and at least one when
    /// `at_least_one` (so a batch larger than the limit still makes progress, as in KIP-74).
    pub fn read(&self, position: u64, max_bytes: usize, at_least_one: bool) -> io::Result<Bytes> {
        let available = (self.size - position.min(self.size)) as usize;
        let want = available.min(max_bytes.max(HEADER_LEN));
        let mut buf = BytesMut::zeroed(want);
        let log = self.file()?;
        log.read_exact_at(&mut buf, position)?;
        // Keep only complete batches.
        let mut end = 0usize;
        while end + HEADER_LEN <= buf.len() {
            let header = BatchHeader::parse(&buf[end..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let next = end + header.total_len();
            if next > buf.len() {
                if end == 0 && at_least_one && next <= available {
                    // The first batch alone is bigger than max_bytes: read all of it.
                    let mut whole = BytesMut::zeroed(next);
                    log.read_exact_at(&mut whole, position)?;
                    return Ok(whole.freeze());
                }
                break;
            }
            end = next;
        }
        buf.truncate(end);
        Ok(buf.freeze())
    }

    /// Whole batches from `position` (a batch boundary) for a fetch: as many as fit in
    /// `max_bytes` (at least one when `at_least_one`, KIP-74), stopping before the first batch
    /// at or past offset `until` (a high watermark, a last stable offset). Reads the first
    /// [`WINDOW`] bytes; if the batches end inside them they are returned from memory, else as a
    /// range of the file, found by reading batch headers only: those of the window, then, from
    /// the last index entry short of the limits, those up to the limits.
    pub fn read_batches(
        &self,
        position: u64,
        max_bytes: usize,
        at_least_one: bool,
        until: i64,
    ) -> io::Result<Batches> {
        let log = self.file()?;
        let position = position.min(self.size);
        let limit = position.saturating_add(max_bytes as u64).min(self.size);
        let window_len = (self.size - position).min(WINDOW as u64) as usize;
        let mut window = BytesMut::zeroed(window_len);
        log.read_exact_at(&mut window, position)?;
        let window_end = position + window_len as u64;
        let header = |at: u64| -> io::Result<BatchHeader> {
            let from = (at - position) as usize;
            if at + HEADER_LEN as u64 <= window_end {
                BatchHeader::parse(&window[from..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
            } else {
                header_at(&log, at)
            }
        };
        let mut at = position;
        let mut jumped = false;
        let next_offset = loop {
            if at >= self.size {
                break self.next_offset;
            }
            let h = header(at)?;
            let end = at + h.total_len() as u64;
            let first = at == position;
            if h.base_offset >= until || (end > limit && !(first && at_least_one)) {
                break h.base_offset;
            }
            at = end;
            if at >= window_end && !jumped {
                // Past the window: skip to the last indexed batch that starts within the limits.
                jumped = true;
                if let Some(entry) = self.last_entry_within(at, limit, until) {
                    at = u64::from(entry.position);
                }
            }
        };
        let len = (at - position) as usize;
        let records = if at <= window_end {
            window.truncate(len);
            Records::Memory(window.freeze())
        } else {
            Records::File(FileRange::new(log, position, len))
        };
        Ok(Batches {
            records,
            next_offset,
        })
    }

    /// The last index entry at or after `from` whose batch starts at or before byte `limit` and
    /// below offset `until`.
    fn last_entry_within(&self, from: u64, limit: u64, until: i64) -> Option<IndexEntry> {
        let within = |e: &IndexEntry| {
            u64::from(e.position) <= limit
                && self.base_offset + i64::from(e.relative_offset) < until
        };
        let count = self.index.partition_point(within);
        let entry = *self.index.get(count.checked_sub(1)?)?;
        (u64::from(entry.position) >= from).then_some(entry)
    }

    /// Headers of every batch from `position` on, read from disk (for timestamp lookups).
    pub fn headers_from(&self, mut position: u64) -> io::Result<Vec<(u64, BatchHeader)>> {
        let mut out = Vec::new();
        let mut buf = [0u8; HEADER_LEN];
        let log = self.file()?;
        while position < self.size {
            log.read_exact_at(&mut buf, position)?;
            let header = BatchHeader::parse(&buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            out.push((position, header));
            position += header.total_len() as u64;
        }
        Ok(out)
    }

    /// The newest timestamp in the segment and the base offset of the batch holding it; read
    /// from the headers the first time for a segment opened with a trusted index, then cached.
    pub fn max_timestamp_at(&self) -> io::Result<Option<(i64, i64)>> {
        let known = match self.max_at.get() {
            Some(known) => known,
            None => {
                let mut newest = NO_RECORDS;
                for (_, header) in self.headers_from(0)? {
                    if header.max_timestamp > newest.0 {
                        newest = (header.max_timestamp, header.base_offset);
                    }
                }
                self.max_at.set(Some(newest));
                newest
            }
        };
        Ok((known != NO_RECORDS).then_some(known))
    }

    /// Forces written data to stable storage.
    pub fn sync(&self) -> io::Result<()> {
        self.file()?.sync_data()?;
        match &self.index_file {
            Some(index) => index.sync_data(),
            None => Ok(()),
        }
    }

    /// Removes both files.
    pub fn delete(self) -> io::Result<()> {
        fs::remove_file(&self.log_path)?;
        match fs::remove_file(&self.index_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The header of the batch at `position` of `log`.
fn header_at(log: &File, position: u64) -> io::Result<BatchHeader> {
    let mut buf = [0u8; HEADER_LEN];
    log.read_exact_at(&mut buf, position)?;
    BatchHeader::parse(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
