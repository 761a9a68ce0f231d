//! Committed consumer-group offsets, kept in memory and in a journal they are stored in before
//! a commit is acknowledged.
//!
//! On a single node the journal is an append-only file: every commit appends one JSON line per
//! partition to `<data-dir>/consumer-offsets.jsonl`, so offsets survive both consumer and broker
//! restarts (and power loss with `--fsync always`). On start the file is replayed (a torn last
//! line is ignored) and rewritten compactly when it holds mostly superseded lines.
//!
//! In a cluster the journal is the replicated internal topic `__consumer_offsets`, as in Kafka
//! ([`replicated`]): a group's coordinator is the leader of the group's partition of it, and the
//! store holds only the groups of the partitions this node leads.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use crate::jsonl::{JsonLines, to_lines};

mod line;
pub mod replicated;

pub use line::Line;

pub use replicated::OFFSETS_TOPIC;

use crate::internal_topic::{self, InternalTopic};

/// One committed position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A committed position and the sequence number of the commit that stored it.
#[derive(Debug, Clone)]
struct Stored {
    committed: Committed,
    seq: u64,
}

type GroupOffsets = HashMap<(String, i32), Stored>;

/// The offset store of the broker. The journal and the offsets have locks of their own: readers
/// (OffsetFetch, ListGroups, DescribeGroups) never wait for a commit's fsync (or replication). A
/// commit holds the journal's lock until its offsets are applied, so they are applied in the
/// journal's order.
#[derive(Debug)]
pub struct OffsetStore {
    /// A single node's file (none in a cluster, whose journal is [`OffsetStore::topic`]), and
    /// the sequence number of the last commit (numbers grow by one per commit). Its lock orders
    /// the commits.
    file: Mutex<(Option<JsonLines>, u64)>,
    /// In a cluster: the partitions of `__consumer_offsets` this node leads (its own lock, so
    /// that asking who coordinates a group never waits for a commit's replication).
    topic: Option<InternalTopic>,
    groups: Mutex<HashMap<String, GroupOffsets>>,
    /// In a cluster: offsets transactions committed (TxnOffsetCommit) that count once their
    /// transaction's commit marker is written, by producer id.
    pending: Mutex<HashMap<i64, Vec<Line>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl OffsetStore {
    pub fn open(data_dir: &Path, fsync: bool) -> io::Result<Self> {
        let (file, lines) =
            JsonLines::open::<Line>(data_dir.join("consumer-offsets.jsonl"), fsync)?;
        let mut groups: HashMap<String, GroupOffsets> = HashMap::new();
        let mut seq = 0;
        for line in lines {
            seq = seq.max(line.s);
            apply(&mut groups, line);
        }
        let live: usize = groups.values().map(HashMap::len).sum();
        let lines_written = file.lines();
        let store = Self {
            file: Mutex::new((Some(file), seq)),
            topic: None,
            groups: Mutex::new(groups),
            pending: Mutex::new(HashMap::new()),
        };
        if lines_written > 2 * live + 1000 {
            store.compact()?;
        }
        Ok(store)
    }

    /// The store of a node of a cluster: empty until this node leads partitions of
    /// `__consumer_offsets` and loads them ([`Self::load`]).
    pub fn replicated(partitions: i32) -> Self {
        Self {
            file: Mutex::new((None, 0)),
            topic: Some(InternalTopic::new(OFFSETS_TOPIC, partitions)),
            groups: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The cluster's journal, if this store is a cluster node's.
    fn with_replicated<T>(&self, f: impl FnOnce(&InternalTopic) -> T) -> Option<T> {
        self.topic.as_ref().map(f)
    }

    /// Whether this is a cluster node's store (its journal `__consumer_offsets`).
    pub fn is_replicated(&self) -> bool {
        self.topic.is_some()
    }

    /// Whether this node coordinates `group`: always on a single node; in a cluster, when it
    /// leads (and has loaded) the group's partition of `__consumer_offsets`.
    pub fn coordinates(&self, group: &str) -> bool {
        self.with_replicated(|j| j.coordinates(group))
            .unwrap_or(true)
    }

    /// Durably records commits for one group.
    pub fn commit(&self, group: &str, commits: Vec<(String, i32, Committed)>) -> io::Result<()> {
        let commits = commits
            .into_iter()
            .map(|(t, p, c)| (t, p, c, u64::MAX))
            .collect();
        self.commit_unless_newer(group, commits)
    }

    /// The sequence number of the last commit stored.
    pub fn last_seq(&self) -> u64 {
        lock(&self.file).1
    }

    /// Numbers the next commits after `seq` at least (a transaction may hold a number that a
    /// lost or compacted tail of the file no longer shows).
    pub fn raise_seq(&self, seq: u64) {
        let mut file = lock(&self.file);
        file.1 = file.1.max(seq);
    }

    /// Like [`Self::commit`], each offset given with a commit number `since` (see
    /// [`Self::last_seq`]): a partition whose committed offset was stored by a later commit keeps
    /// it. A transaction applies its staged offsets so, each numbered when it was staged: a plain
    /// commit made since wins (as in Kafka), and applying them again after a failure writes
    /// none twice.
    pub fn commit_unless_newer(
        &self,
        group: &str,
        commits: Vec<(String, i32, Committed, u64)>,
    ) -> io::Result<()> {
        let mut file = lock(&self.file);
        let seq = file.1 + 1;
        let lines: Vec<Line> = {
            let groups = lock(&self.groups);
            let current = groups.get(group);
            commits
                .into_iter()
                .filter(|(t, p, _, since)| {
                    current
                        .and_then(|g| g.get(&(t.clone(), *p)))
                        .is_none_or(|stored| stored.seq <= *since)
                })
                .map(|(t, p, c, _)| Line {
                    g: group.to_string(),
                    t,
                    p,
                    o: c.offset,
                    e: c.leader_epoch,
                    m: c.metadata,
                    s: seq,
                })
                .collect()
        };
        if lines.is_empty() {
            return Ok(());
        }
        match (&mut file.0, &self.topic) {
            (Some(f), _) => {
                let (buf, count) = to_lines(&lines)?;
                f.append(&buf, count)?;
            }
            (None, Some(topic)) => {
                topic.write(group, replicated::encode(&lines).map_err(io::Error::other)?)?;
            }
            (None, None) => unreachable!("a store has a file or a topic"),
        }
        file.1 = seq;
        let mut groups = lock(&self.groups);
        for line in lines {
            apply(&mut groups, line);
        }
        Ok(())
    }

    /// fsyncs the file (for interval flushing; a cluster's partitions are synced as logs).
    pub fn sync(&self) -> io::Result<()> {
        match &mut lock(&self.file).0 {
            Some(f) => f.sync(),
            None => Ok(()),
        }
    }

    pub fn fetch(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        lock(&self.groups)
            .get(group)?
            .get(&(topic.to_string(), partition))
            .map(|stored| stored.committed.clone())
    }

    /// All committed offsets of a group, sorted by topic and partition.
    pub fn group_offsets(&self, group: &str) -> Vec<(String, i32, Committed)> {
        let mut all: Vec<_> = lock(&self.groups)
            .get(group)
            .map(|g| {
                g.iter()
                    .map(|((t, p), stored)| (t.clone(), *p, stored.committed.clone()))
                    .collect()
            })
            .unwrap_or_default();
        all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        all
    }

    /// Whether a group has committed offsets.
    pub fn has_group(&self, group: &str) -> bool {
        lock(&self.groups).contains_key(group)
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        lock(&self.groups).keys().cloned().collect()
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

    /// Forgets the offsets of a deleted topic. In a cluster, tombstones in `__consumer_offsets`
    /// for the groups this node coordinates.
    pub fn delete_topic(&self, topic: &str) -> io::Result<()> {
        if self.is_replicated() {
            let doomed: Vec<(String, Vec<(String, i32)>)> = lock(&self.groups)
                .iter()
                .map(|(g, offsets)| {
                    let parts = offsets.keys().filter(|(t, _)| t == topic).cloned();
                    (g.clone(), parts.collect::<Vec<_>>())
                })
                .filter(|(_, parts)| !parts.is_empty())
                .collect();
            for (group, parts) in doomed {
                self.delete(&group, Some(&parts))?;
            }
            return Ok(());
        }
        // The file's lock first, as a commit takes them: one under way applies its lines
        // before the topic's are dropped, never after.
        let mut file = lock(&self.file);
        {
            let mut groups = lock(&self.groups);
            for offsets in groups.values_mut() {
                offsets.retain(|(t, _), _| t != topic);
            }
            groups.retain(|_, offsets| !offsets.is_empty());
        }
        self.rewrite(&mut file)
    }

    /// A cluster node became the leader of partition `index` of `__consumer_offsets`: its
    /// groups' offsets are read from the partition's log, and this node coordinates them.
    pub fn load(
        &self,
        index: i32,
        partition: std::sync::Arc<crate::topics::Partition>,
        min_insync: usize,
    ) -> io::Result<usize> {
        let Some(journal) = &self.topic else {
            return Ok(0);
        };
        let mut file = lock(&self.file);
        let mut count = 0;
        let mut seq = file.1;
        // A transaction's offsets count from its commit marker on; those of one still open
        // stay pending.
        let mut open: HashMap<i64, Vec<Line>> = HashMap::new();
        {
            let mut groups = lock(&self.groups);
            groups.retain(|g, _| journal.partition_of(g) != index);
            for record in internal_topic::read_all(&partition)? {
                if record.control {
                    let lines = open.remove(&record.producer_id).unwrap_or_default();
                    if internal_topic::is_commit_marker(&record) {
                        apply_unless_newer(&mut groups, lines);
                    }
                    continue;
                }
                let Some(line) = replicated::decode(&record) else {
                    continue;
                };
                count += 1;
                seq = seq.max(line.s);
                if record.transactional {
                    open.entry(record.producer_id).or_default().push(line);
                } else {
                    apply(&mut groups, line);
                }
            }
        }
        let mut pending = lock(&self.pending);
        for (producer_id, lines) in open {
            pending.entry(producer_id).or_default().extend(lines);
        }
        journal.lead(index, partition, min_insync);
        file.1 = seq;
        Ok(count)
    }

    /// In a cluster, TxnOffsetCommit at the group's coordinator: the offsets are written to the
    /// group's partition of `__consumer_offsets` as records of the producer's transaction, and
    /// count once its commit marker is written there ([`Self::end_transaction`]). Each is
    /// numbered as of now, so a plain commit of the group made meanwhile wins.
    pub fn stage_transactional(
        &self,
        group: &str,
        producer: (i64, i16),
        commits: Vec<(String, i32, Committed)>,
    ) -> io::Result<()> {
        let Some(topic) = &self.topic else {
            return Err(io::Error::other(
                "transactional offsets are staged by the coordinator",
            ));
        };
        let file = lock(&self.file);
        let lines: Vec<Line> = commits
            .into_iter()
            .map(|(t, p, c)| Line {
                g: group.to_string(),
                t,
                p,
                o: c.offset,
                e: c.leader_epoch,
                m: c.metadata,
                s: file.1,
            })
            .collect();
        let records = replicated::encode(&lines).map_err(io::Error::other)?;
        topic.write_transactional(group, records, producer)?;
        let mut pending = lock(&self.pending);
        let staged = pending.entry(producer.0).or_default();
        for line in lines {
            staged.retain(|s| (&s.g, &s.t, s.p) != (&line.g, &line.t, line.p));
            staged.push(line);
        }
        Ok(())
    }

    /// A transaction's marker was written into partition `index` of `__consumer_offsets`: its
    /// offsets there count (a commit), or are dropped (an abort).
    pub fn end_transaction(&self, index: i32, producer_id: i64, commit: bool) {
        let Some(topic) = &self.topic else {
            return;
        };
        let mut pending = lock(&self.pending);
        let Some(lines) = pending.get_mut(&producer_id) else {
            return;
        };
        let (ending, rest): (Vec<Line>, Vec<Line>) = lines
            .drain(..)
            .partition(|l| topic.partition_of(&l.g) == index);
        *lines = rest;
        if lines.is_empty() {
            pending.remove(&producer_id);
        }
        if commit {
            apply_unless_newer(&mut lock(&self.groups), ending);
        }
    }

    /// Whether a transaction not yet ended has committed an offset for this partition of
    /// `group` (in a cluster; a single node's coordinator keeps them itself).
    pub fn has_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        lock(&self.pending)
            .values()
            .flatten()
            .any(|l| (l.g.as_str(), l.t.as_str(), l.p) == (group, topic, partition))
    }

    /// This node no longer leads partition `index` of `__consumer_offsets`: its groups are
    /// dropped (their new coordinator loads them). Whether it had them.
    pub fn unload(&self, index: i32) -> bool {
        let Some(journal) = &self.topic else {
            return false;
        };
        if !journal.unlead(index) {
            return false;
        }
        lock(&self.groups).retain(|g, _| journal.partition_of(g) != index);
        let mut pending = lock(&self.pending);
        for lines in pending.values_mut() {
            lines.retain(|l| journal.partition_of(&l.g) != index);
        }
        pending.retain(|_, lines| !lines.is_empty());
        true
    }

    /// The partition of `__consumer_offsets` that holds `group` (0 on a single node).
    pub fn partition_of(&self, group: &str) -> i32 {
        self.with_replicated(|t| t.partition_of(group)).unwrap_or(0)
    }

    /// Partitions of `__consumer_offsets` (1 on a single node, which has none).
    pub fn partitions(&self) -> i32 {
        self.with_replicated(InternalTopic::partitions).unwrap_or(1)
    }

    /// The partitions of `__consumer_offsets` this node has loaded (none on a single node).
    pub fn loaded(&self) -> Vec<i32> {
        self.with_replicated(InternalTopic::led).unwrap_or_default()
    }

    /// Rewrites the file with only the live entries.
    fn compact(&self) -> io::Result<()> {
        let mut file = lock(&self.file);
        self.rewrite(&mut file)
    }

    /// The live entries, and a last line that only keeps the commit number: the entry that
    /// had it may be gone (a deleted offset), and numbers must never go back.
    fn rewrite(&self, file: &mut (Option<JsonLines>, u64)) -> io::Result<()> {
        let Some(journal) = &mut file.0 else {
            return Ok(());
        };
        let mut live: Vec<Line> = lock(&self.groups)
            .iter()
            .flat_map(|(g, offsets)| {
                offsets.iter().map(|((t, p), stored)| Line {
                    g: g.clone(),
                    t: t.clone(),
                    p: *p,
                    o: stored.committed.offset,
                    e: stored.committed.leader_epoch,
                    m: stored.committed.metadata.clone(),
                    s: stored.seq,
                })
            })
            .collect();
        live.push(Line {
            g: String::new(),
            t: String::new(),
            p: -1,
            o: -1,
            e: -1,
            m: None,
            s: file.1,
        });
        let (buf, count) = to_lines(&live)?;
        journal.rewrite(&buf, count)
    }
}

/// Applies a transaction's offsets, each unless the group committed that partition after it
/// was staged (a later commit number).
fn apply_unless_newer(groups: &mut HashMap<String, GroupOffsets>, lines: Vec<Line>) {
    for line in lines {
        let newer = groups
            .get(&line.g)
            .and_then(|g| g.get(&(line.t.clone(), line.p)))
            .is_some_and(|stored| stored.seq > line.s);
        if !newer {
            apply(groups, line);
        }
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
            Stored {
                committed: Committed {
                    offset: line.o,
                    leader_epoch: line.e,
                    metadata: line.m,
                },
                seq: line.s,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

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

    #[test]
    fn commit_numbers_never_go_back_across_compaction_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let c = |o| Committed {
            offset: o,
            leader_epoch: -1,
            metadata: None,
        };
        let store = OffsetStore::open(dir.path(), false).unwrap();
        store.commit("g", vec![("t".into(), 0, c(1))]).unwrap();
        store.commit("h", vec![("u".into(), 0, c(2))]).unwrap();
        // The last number belongs to a tombstone, then to nothing once the topic is dropped.
        store.delete("g", None).unwrap();
        store.delete_topic("u").unwrap();
        let last = store.last_seq();
        assert_eq!(last, 3);
        drop(store);
        let store = OffsetStore::open(dir.path(), false).unwrap();
        assert_eq!(store.last_seq(), last);
        assert!(store.groups().is_empty());
        // A staged offset numbered before a later plain commit does not replace it.
        store.commit("g", vec![("t".into(), 0, c(8))]).unwrap();
        store
            .commit_unless_newer("g", vec![("t".into(), 0, c(5), last)])
            .unwrap();
        assert_eq!(store.fetch("g", "t", 0).unwrap().offset, 8);
        store
            .commit_unless_newer("g", vec![("t".into(), 1, c(5), last)])
            .unwrap();
        assert_eq!(store.fetch("g", "t", 1).unwrap().offset, 5);
    }
}
