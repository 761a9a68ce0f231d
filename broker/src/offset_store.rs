//! Committed consumer-group offsets, kept in memory and in an append-only file.
//!
//! Every commit appends one JSON line per partition to `<data-dir>/consumer-offsets.jsonl`
//! before it is acknowledged, so offsets survive both consumer and broker restarts (and power
//! loss with `--fsync always`). On start the file is replayed (a torn last line is ignored) and
//! rewritten compactly when it holds mostly superseded lines.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One committed position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    g: String,
    t: String,
    p: i32,
    /// `-1` is a tombstone (offsets of a deleted topic).
    o: i64,
    #[serde(default = "minus_one")]
    e: i32,
    #[serde(default)]
    m: Option<String>,
}

fn minus_one() -> i32 {
    -1
}

type GroupOffsets = HashMap<(String, i32), Committed>;

#[derive(Debug)]
struct Inner {
    file: File,
    lines_written: usize,
    groups: HashMap<String, GroupOffsets>,
}

/// The offset store of the broker.
#[derive(Debug)]
pub struct OffsetStore {
    path: PathBuf,
    fsync: bool,
    inner: Mutex<Inner>,
}

/// The lines of the append-only JSON-lines file at `path` that parse as `T`, in order (none if
/// it doesn't exist). A torn last line (no newline) is cut from the file, so the next append
/// starts on a line of its own; a line that doesn't parse is skipped.
pub(crate) fn read_json_lines<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Vec<T>> {
    let Ok(raw) = fs::read(path) else {
        return Ok(Vec::new());
    };
    let complete = raw.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete < raw.len() {
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(complete as u64)?;
    }
    Ok(raw[..complete]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect())
}

impl OffsetStore {
    pub fn open(data_dir: &Path, fsync: bool) -> io::Result<Self> {
        let path = data_dir.join("consumer-offsets.jsonl");
        let mut groups: HashMap<String, GroupOffsets> = HashMap::new();
        let mut lines_written = 0;
        for line in read_json_lines::<Line>(&path)? {
            lines_written += 1;
            apply(&mut groups, line);
        }
        let live: usize = groups.values().map(HashMap::len).sum();
        let store = Self {
            path: path.clone(),
            fsync,
            inner: Mutex::new(Inner {
                file: OpenOptions::new().create(true).append(true).open(&path)?,
                lines_written,
                groups,
            }),
        };
        if lines_written > 2 * live + 1000 {
            store.compact()?;
        }
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Durably records commits for one group.
    pub fn commit(&self, group: &str, commits: Vec<(String, i32, Committed)>) -> io::Result<()> {
        let mut buf = Vec::new();
        let lines: Vec<Line> = commits
            .into_iter()
            .map(|(t, p, c)| Line {
                g: group.to_string(),
                t,
                p,
                o: c.offset,
                e: c.leader_epoch,
                m: c.metadata,
            })
            .collect();
        for line in &lines {
            serde_json::to_writer(&mut buf, line).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        let mut inner = self.lock();
        inner.file.write_all(&buf)?;
        if self.fsync {
            inner.file.sync_data()?;
        }
        inner.lines_written += lines.len();
        for line in lines {
            apply(&mut inner.groups, line);
        }
        Ok(())
    }

    /// fsyncs the file (for interval flushing).
    pub fn sync(&self) -> io::Result<()> {
        self.lock().file.sync_data()
    }

    pub fn fetch(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        self.lock()
            .groups
            .get(group)?
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// All committed offsets of a group, sorted by topic and partition.
    pub fn group_offsets(&self, group: &str) -> Vec<(String, i32, Committed)> {
        let inner = self.lock();
        let mut all: Vec<_> = inner
            .groups
            .get(group)
            .map(|g| {
                g.iter()
                    .map(|((t, p), c)| (t.clone(), *p, c.clone()))
                    .collect()
            })
            .unwrap_or_default();
        all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        all
    }

    /// Whether a group has committed offsets.
    pub fn has_group(&self, group: &str) -> bool {
        self.lock().groups.contains_key(group)
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.lock().groups.keys().cloned().collect()
    }

    /// Deletes committed offsets of a group: the given partitions, or all of them (DeleteGroups,
    /// OffsetDelete). Durable like a commit: one tombstone line per partition.
    pub fn delete(&self, group: &str, partitions: Option<&[(String, i32)]>) -> io::Result<()> {
        let doomed: Vec<(String, i32)> = match partitions {
            Some(p) => p.to_vec(),
            None => self
                .group_offsets(group)
                .into_iter()
                .map(|(t, p, _)| (t, p))
                .collect(),
        };
        let tombstones = doomed
            .into_iter()
            .map(|(t, p)| {
                (
                    t,
                    p,
                    Committed {
                        offset: -1,
                        leader_epoch: -1,
                        metadata: None,
                    },
                )
            })
            .collect();
        self.commit(group, tombstones)
    }

    /// Forgets the offsets of a deleted topic.
    pub fn delete_topic(&self, topic: &str) -> io::Result<()> {
        {
            let mut inner = self.lock();
            for offsets in inner.groups.values_mut() {
                offsets.retain(|(t, _), _| t != topic);
            }
            inner.groups.retain(|_, offsets| !offsets.is_empty());
        }
        self.compact()
    }

    /// Rewrites the file with only the live entries.
    fn compact(&self) -> io::Result<()> {
        let mut inner = self.lock();
        let mut buf = Vec::new();
        let mut count = 0;
        for (g, offsets) in &inner.groups {
            for ((t, p), c) in offsets {
                let line = Line {
                    g: g.clone(),
                    t: t.clone(),
                    p: *p,
                    o: c.offset,
                    e: c.leader_epoch,
                    m: c.metadata.clone(),
                };
                serde_json::to_writer(&mut buf, &line).map_err(io::Error::other)?;
                buf.push(b'\n');
                count += 1;
            }
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            crate::storage::sync_dir(dir)?;
        }
        inner.file = OpenOptions::new().append(true).open(&self.path)?;
        inner.lines_written = count;
        Ok(())
    }
}

fn apply(groups: &mut HashMap<String, GroupOffsets>, line: Line) {
    if line.o < 0 {
        if let Some(offsets) = groups.get_mut(&line.g) {
            offsets.remove(&(line.t, line.p));
            if offsets.is_empty() {
                groups.remove(&line.g);
            }
        }
    } else {
        let offsets = groups.entry(line.g).or_default();
        offsets.insert(
            (line.t, line.p),
            Committed {
                offset: line.o,
                leader_epoch: line.e,
                metadata: line.m,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_survive_reopen_and_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = OffsetStore::open(dir.path(), false).unwrap();
            let c = |o| Committed {
                offset: o,
                leader_epoch: -1,
                metadata: None,
            };
            store
                .commit("g", vec![("t".into(), 0, c(5)), ("t".into(), 1, c(7))])
                .unwrap();
            store.commit("g", vec![("t".into(), 0, c(9))]).unwrap();
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("consumer-offsets.jsonl"))
            .unwrap();
        f.write_all(b"{\"g\":\"g\",\"t\":\"t\",\"p\"").unwrap();
        let store = OffsetStore::open(dir.path(), false).unwrap();
        assert_eq!(store.fetch("g", "t", 0).unwrap().offset, 9);
        assert_eq!(store.fetch("g", "t", 1).unwrap().offset, 7);
        assert_eq!(store.fetch("g", "t", 2), None);
        // The next commit after a torn line must itself survive a restart.
        let c = Committed {
            offset: 11,
            leader_epoch: -1,
            metadata: None,
        };
        store.commit("g", vec![("t".into(), 2, c)]).unwrap();
        drop(store);
        let store = OffsetStore::open(dir.path(), false).unwrap();
        assert_eq!(store.fetch("g", "t", 2).unwrap().offset, 11);
        assert_eq!(store.fetch("g", "t", 0).unwrap().offset, 9);
    }
}
