//! An append-only file of JSON lines: the durable form of the offset store and of the
//! transaction coordinator. Replayed on start, appended to before a change is acknowledged,
//! rewritten compactly when it holds mostly superseded lines.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// One append-only JSON-lines file (callers keep it behind a mutex).
#[derive(Debug)]
pub(crate) struct JsonLines {
    path: PathBuf,
    fsync: bool,
    file: File,
    /// Bytes of whole lines in the file: where the next append starts.
    len: u64,
    /// Lines written since the file was last rewritten (superseded ones included).
    lines: usize,
    /// An append failed and the file could not be cut back: the next one starts a fresh line.
    torn: bool,
    /// A rewrite replaced the file but it could not be opened again: appends would go to the
    /// old, unlinked file, so they fail instead.
    lost: bool,
}

/// `items` as JSON lines, and how many.
pub(crate) fn to_lines<T: Serialize>(
    items: impl IntoIterator<Item = T>,
) -> io::Result<(Vec<u8>, usize)> {
    let mut buf = Vec::new();
    let mut count = 0;
    for item in items {
        serde_json::to_writer(&mut buf, &item).map_err(io::Error::other)?;
        buf.push(b'\n');
        count += 1;
    }
    Ok((buf, count))
}

impl JsonLines {
    /// Opens the file at `path` (created if missing) and returns the lines that parse as `T`,
    /// in order. A torn last line (no newline) is cut, so the next append starts on a line of
    /// its own; a line that doesn't parse is skipped. `fsync`: every append is fsynced.
    pub fn open<T: DeserializeOwned>(path: PathBuf, fsync: bool) -> io::Result<(Self, Vec<T>)> {
        let raw = match fs::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let complete = raw.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if complete < raw.len() {
            file.set_len(complete as u64)?;
        }
        let items: Vec<T> = raw[..complete]
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect();
        let lines = raw[..complete].iter().filter(|b| **b == b'\n').count();
        let this = Self {
            path,
            fsync,
            file,
            len: complete as u64,
            lines,
            torn: false,
            lost: false,
        };
        Ok((this, items))
    }

    /// Appends `buf`, `count` whole lines (see [`to_lines`]), durably if the file fsyncs.
    /// A failed write is cut back off the file: left there, a partial line would glue itself
    /// to the next append and hide that one on replay.
    pub fn append(&mut self, buf: &[u8], count: usize) -> io::Result<()> {
        if self.lost {
            return Err(io::Error::other(format!(
                "{} was replaced but could not be opened again",
                self.path.display()
            )));
        }
        if self.torn {
            self.file.write_all(b"\n")?;
            // Whatever part of the failed write stayed is before this newline.
            self.len = self.file.metadata()?.len();
            self.torn = false;
        }
        let written = self.file.write_all(buf).and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            if self.file.set_len(self.len).is_err() {
                self.torn = true;
            }
            return Err(e);
        }
        self.len += buf.len() as u64;
        self.lines += count;
        Ok(())
    }

    /// fsyncs the file (for interval flushing).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Lines written since the file was last rewritten.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Replaces the file's content with `buf` (`count` lines) atomically: written to a
    /// temporary file, fsynced, renamed over it.
    pub fn rewrite(&mut self, buf: &[u8], count: usize) -> io::Result<()> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(buf)?;
        f.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        match OpenOptions::new().append(true).open(&self.path) {
            Ok(file) => {
                self.file = file;
                self.lost = false;
            }
            Err(e) => {
                self.lost = true;
                return Err(e);
            }
        }
        self.len = buf.len() as u64;
        self.lines = count;
        self.torn = false;
        if let Some(dir) = self.path.parent() {
            crate::storage::sync_dir(dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_tail_is_cut_and_the_next_append_survives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jsonl");
        fs::write(&path, b"1\n2\n{\"torn").unwrap();
        let (mut file, items) = JsonLines::open::<i32>(path.clone(), false).unwrap();
        assert_eq!(items, vec![1, 2]);
        assert_eq!(file.lines(), 2);
        let (buf, n) = to_lines([3, 4]).unwrap();
        file.append(&buf, n).unwrap();
        assert_eq!(file.lines(), 4);
        let (_, items) = JsonLines::open::<i32>(path, false).unwrap();
        assert_eq!(items, vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_partial_line_left_by_a_failed_append_does_not_hide_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jsonl");
        let (mut file, _) = JsonLines::open::<i32>(path.clone(), false).unwrap();
        let (buf, n) = to_lines([1]).unwrap();
        file.append(&buf, n).unwrap();
        // Part of the next line lands, then the write fails, and so does cutting it back off
        // (a read-only handle refuses both).
        let mut other = OpenOptions::new().append(true).open(&path).unwrap();
        other.write_all(b"{\"par").unwrap();
        file.file = File::open(&path).unwrap();
        let (buf, n) = to_lines([2]).unwrap();
        assert!(file.append(&buf, n).is_err());
        assert_eq!(file.lines(), 1);
        file.file = OpenOptions::new().append(true).open(&path).unwrap();
        let (buf, n) = to_lines([3]).unwrap();
        file.append(&buf, n).unwrap();
        let (_, items) = JsonLines::open::<i32>(path, false).unwrap();
        assert_eq!(items, vec![1, 3]);
    }
}
