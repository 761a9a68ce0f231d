//! Zero-copy Fetch: record batches go from a segment file to a client's socket without passing
//! through the broker's memory, as Kafka's do (`FileChannel.transferTo`, `sendfile(2)`).
//!
//! A fetch finds the whole batches it returns as a range of a segment file ([`FileRange`]). Its
//! response is encoded by `kafka-protocol` like any other, except that the records of such a
//! partition are a *placeholder*: a slice, of the right length, of a mapped region of zeros the
//! broker never reads or writes ([`FileRange::placeholder`]). The encoder writes into a
//! [`Spliced`] buffer, which recognises a placeholder by its address and, instead of copying
//! it, leaves a hole: the frame becomes encoded pieces and file ranges ([`Piece`]). The
//! connection writes the pieces and, for each hole, has the kernel send the file range from the
//! page cache to the socket ([`send_file`]).
//!
//! What this saves, per byte fetched: zeroing a buffer and `pread` into it, copying it into the
//! encoded response, and copying that into the socket (`docs/broker-storage.md`, "Zero-copy
//! Fetch"). Small reads still take the copying path: a read that fits in one [`WINDOW`] is
//! already in memory once its batch headers are read, and one `write` beats the extra system
//! calls. Where `sendfile` is not available (not Linux), ranges are read and sent from memory.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut, buf::UninitSlice};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Reads smaller than this are served from memory; larger ones from the file.
pub const WINDOW: usize = 16 * 1024;

/// Whether this platform sends file ranges without copying them.
pub const AVAILABLE: bool = cfg!(target_os = "linux");

/// The span of the placeholder region: the largest response plus room for one placeholder per
/// partition (each starts at its own offset). Address space only, never touched.
const PLACEHOLDER_SPAN: usize = 128 << 20;

/// Whole record batches of a segment file: `len` bytes at `position`. It holds the file open,
/// so a segment deleted meanwhile (retention) is still read whole; one cut meanwhile (a
/// follower truncating a divergent tail) ends the send short, which closes the connection.
#[derive(Debug, Clone)]
pub struct FileRange {
    file: Arc<File>,
    position: u64,
    len: usize,
}

impl FileRange {
    pub fn new(file: Arc<File>, position: u64, len: usize) -> Self {
        Self {
            file,
            position,
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, read into memory (where they cannot be sent from the file).
    pub fn read(&self) -> io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(self.len);
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(buf.freeze())
    }

    /// The stand-in for this range's bytes in a response: `len` bytes of the placeholder region
    /// starting at `index`, which tells the holes apart. `None` when zero copy is not available
    /// or the range is too long for the region (the caller reads it instead).
    pub fn placeholder(&self, index: usize) -> Option<Bytes> {
        let region = placeholder_region()?;
        let end = index.checked_add(self.len)?;
        (end <= region.len()).then(|| Bytes::from_static(&region[index..end]))
    }
}

/// The placeholder region: an anonymous, read-only, never-touched mapping (no memory is used
/// for it), mapped once.
fn placeholder_region() -> Option<&'static [u8]> {
    static REGION: OnceLock<Option<&'static [u8]>> = OnceLock::new();
    *REGION.get_or_init(|| {
        if !AVAILABLE {
            return None;
        }
        // SAFETY: a fresh private anonymous mapping, never unmapped, so the slice lives as long
        // as the process; read-only, and its pages read as zeros if ever touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PLACEHOLDER_SPAN,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            tracing::warn!("no address space for zero-copy placeholders: fetches copy");
            return None;
        }
        // SAFETY: the mapping is PLACEHOLDER_SPAN bytes, readable, and lives forever.
        Some(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), PLACEHOLDER_SPAN) })
    })
}

/// Where a placeholder slice sits in the region, if `bytes` is one.
fn placeholder_at(bytes: &[u8]) -> Option<Range<usize>> {
    let region = placeholder_region()?;
    let start = (bytes.as_ptr() as usize).checked_sub(region.as_ptr() as usize)?;
    (start + bytes.len() <= region.len() && !bytes.is_empty()).then(|| start..start + bytes.len())
}

/// A piece of an encoded frame.
#[derive(Debug)]
pub enum Piece {
    Bytes(Bytes),
    File(FileRange),
}

/// An encoder's buffer that leaves holes for file ranges: every slice of the placeholder region
/// written to it becomes the [`FileRange`] at the slice's offset, without a copy.
#[derive(Debug)]
pub struct Spliced<'a> {
    current: BytesMut,
    pieces: Vec<PieceMut>,
    /// Bytes before `current`, holes included (the encoder's offsets count them).
    before: usize,
    ranges: &'a [(usize, FileRange)],
    /// How many of `ranges` have been placed.
    placed: usize,
}

#[derive(Debug)]
enum PieceMut {
    Bytes(BytesMut),
    File(FileRange),
}

impl<'a> Spliced<'a> {
    /// A buffer for a frame whose placeholders are `ranges`: (placeholder index, range).
    pub fn new(ranges: &'a [(usize, FileRange)]) -> Self {
        Self {
            current: BytesMut::with_capacity(256),
            pieces: Vec::new(),
            before: 0,
            ranges,
            placed: 0,
        }
    }

    /// The frame's length so far, holes included.
    pub fn len(&self) -> usize {
        self.before + self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Overwrites bytes already written at `at` (the frame's length prefix): they must be in the
    /// first piece.
    pub fn patch(&mut self, at: usize, bytes: &[u8]) {
        let first = match self.pieces.first_mut() {
            Some(PieceMut::Bytes(first)) => first,
            Some(PieceMut::File(_)) => panic!("a frame starts with encoded bytes"),
            None => &mut self.current,
        };
        first[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// The pieces, in order. Fails if a placeholder was not found where expected (an encoder
    /// that copied it some other way would otherwise send zeros).
    pub fn finish(mut self) -> io::Result<Vec<Piece>> {
        if self.placed != self.ranges.len() {
            return Err(io::Error::other(format!(
                "{} of {} file ranges placed in the response",
                self.placed,
                self.ranges.len()
            )));
        }
        if !self.current.is_empty() {
            self.pieces.push(PieceMut::Bytes(self.current));
        }
        Ok(self
            .pieces
            .into_iter()
            .map(|p| match p {
                PieceMut::Bytes(b) => Piece::Bytes(b.freeze()),
                PieceMut::File(f) => Piece::File(f),
            })
            .collect())
    }

    fn hole(&mut self, at: Range<usize>) -> bool {
        let Some((_, range)) = self
            .ranges
            .iter()
            .find(|(index, range)| *index == at.start && range.len() == at.len())
        else {
            return false;
        };
        let encoded = self.current.split();
        self.before += encoded.len() + range.len();
        if !encoded.is_empty() {
            self.pieces.push(PieceMut::Bytes(encoded));
        }
        self.pieces.push(PieceMut::File(range.clone()));
        self.placed += 1;
        true
    }
}

// SAFETY: every method forwards to `current`, a `BytesMut`, whose guarantees hold unchanged;
// `put_slice` may instead note a hole, which writes nothing to `current`.
unsafe impl BufMut for Spliced<'_> {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if let Some(at) = placeholder_at(src)
            && self.hole(at)
        {
            return;
        }
        self.current.extend_from_slice(src);
    }
}

/// `kafka-protocol` encodes some fields by writing a gap and filling it later; a gap never spans
/// a hole (a fetch response has none after its records), and offsets count the holes.
impl ByteBufMut for Spliced<'_> {
    fn offset(&self) -> usize {
        self.len()
    }

    fn seek(&mut self, offset: usize) {
        let at = offset
            .checked_sub(self.before)
            .expect("no seek back across a file range");
        self.current.resize(at, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let start = r
            .start
            .checked_sub(self.before)
            .expect("no gap across a file range");
        &mut self.current[start..r.end - self.before]
    }
}

/// Sends `range` from its file to `socket` (non-blocking), waiting whenever the socket's buffer
/// is full. Fails if the file ends before the range does.
#[cfg(target_os = "linux")]
pub async fn send_file(socket: &tokio::net::TcpStream, range: &FileRange) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let end = range.position + range.len as u64;
    let mut offset = range.position as libc::off_t;
    while (offset as u64) < end {
        socket.writable().await?;
        let left = (end - offset as u64).min(0x7fff_f000) as usize;
        let sent = socket.try_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the call (`socket` and `range.file` are
            // borrowed), and `offset` is a valid place for the kernel to write the new offset.
            let n = unsafe {
                libc::sendfile(
                    socket.as_raw_fd(),
                    range.file.as_raw_fd(),
                    &mut offset,
                    left,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the segment file was cut while being sent",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends `range` by reading it into memory first (no `sendfile` here).
#[cfg(not(target_os = "linux"))]
pub async fn send_file(socket: &tokio::net::TcpStream, range: &FileRange) -> io::Result<()> {
    let bytes = range.read()?;
    let mut written = 0;
    while written < bytes.len() {
        socket.writable().await?;
        match socket.try_write(&bytes[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::protocol::{Decodable, Encodable};

    /// The pieces written one after the other, file ranges read.
    fn sent(pieces: &[Piece]) -> Vec<u8> {
        let mut sent = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Bytes(b) => sent.extend_from_slice(b),
                Piece::File(f) => sent.extend_from_slice(&f.read().unwrap()),
            }
        }
        sent
    }

    #[test]
    fn placeholders_become_holes_and_the_answer_decodes_with_the_files_bytes() {
        if !AVAILABLE {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        std::fs::write(&path, b"0123456789abcdef").unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let ranges = vec![
            (0, FileRange::new(file.clone(), 2, 5)),
            (1, FileRange::new(file, 10, 6)),
        ];
        let partition = |index: i32, records: Bytes| {
            PartitionData::default()
                .with_partition_index(index)
                .with_records(Some(records))
        };
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default().with_partitions(vec![
                partition(0, ranges[0].1.placeholder(0).unwrap()),
                partition(1, Bytes::from_static(b"in memory")),
                partition(2, ranges[1].1.placeholder(1).unwrap()),
            ]),
        ]);
        for version in [4, 11, 12] {
            let mut buf = Spliced::new(&ranges);
            buf.put_i32(0);
            response.encode(&mut buf, version).unwrap();
            let len = buf.len();
            buf.patch(0, &((len - 4) as i32).to_be_bytes());
            let pieces = buf.finish().unwrap();
            let files = pieces
                .iter()
                .filter(|p| matches!(p, Piece::File(_)))
                .count();
            assert_eq!(files, 2, "each placeholder is a hole");
            let mut frame = Bytes::from(sent(&pieces));
            assert_eq!(frame.len(), len);
            let declared = i32::from_be_bytes(frame[..4].try_into().unwrap());
            assert_eq!(declared as usize, len - 4);
            let _ = frame.split_to(4);
            let decoded = FetchResponse::decode(&mut frame, version).unwrap();
            let records: Vec<_> = decoded.responses[0]
                .partitions
                .iter()
                .map(|p| p.records.clone().unwrap())
                .collect();
            let expected: [&[u8]; 3] = [b"23456", b"in memory", b"abcdef"];
            assert_eq!(records, expected.map(Bytes::from_static));
        }
    }

    #[test]
    fn an_unplaced_range_is_an_error_not_zeros() {
        if !AVAILABLE {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        std::fs::write(&path, b"0123456789").unwrap();
        let ranges = vec![(
            0,
            FileRange::new(Arc::new(File::open(&path).unwrap()), 0, 4),
        )];
        let mut buf = Spliced::new(&ranges);
        buf.put_slice(b"copied some other way");
        assert!(buf.finish().is_err());
    }
}
