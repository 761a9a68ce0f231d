//! The Raft log of one voter, on disk: a JSON-lines file (`<data-dir>/metadata/raft-log.jsonl`)
//! of entries appended, the vote, the commit point, and the points where the log was cut
//! (a new leader's entries replaced a tail) or purged (a snapshot holds the head). Replayed on
//! start; rewritten compactly after a purge when it holds mostly superseded lines.
//!
//! Raft's safety rests on a voter never forgetting its vote or an entry it acknowledged, so
//! every write is fsynced before it returns. The metadata log is small and changes only when
//! the cluster does (brokers come and go, topics are made, an ISR changes), so the writes are
//! few; they are done in place, on the caller's task.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};

use super::types::TypeConfig;
use crate::jsonl::{JsonLines, to_lines};

/// One line of the log file.
#[derive(Debug, Serialize, Deserialize)]
enum Line {
    Entry(Entry<TypeConfig>),
    Vote(Vote<u64>),
    Committed(Option<LogId<u64>>),
    /// The entries from this index on are gone: a new leader's log replaced them.
    Truncate(u64),
    /// The entries up to this one are gone: a snapshot holds them.
    Purge(LogId<u64>),
}

/// What the file says, replayed.
#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    purged: Option<LogId<u64>>,
}

impl State {
    fn replay(lines: Vec<Line>) -> Self {
        let mut state = Self::default();
        for line in lines {
            state.take(line);
        }
        state
    }

    fn take(&mut self, line: Line) {
        match line {
            Line::Entry(entry) => {
                self.entries.insert(entry.log_id.index, entry);
            }
            Line::Vote(vote) => self.vote = Some(vote),
            Line::Committed(committed) => self.committed = committed,
            Line::Truncate(index) => {
                self.entries.split_off(&index);
            }
            Line::Purge(log_id) => {
                self.entries = self.entries.split_off(&(log_id.index + 1));
                self.purged = Some(log_id);
            }
        }
    }

    /// The lines that say all of this.
    fn lines(&self) -> Vec<Line> {
        let mut lines = Vec::with_capacity(self.entries.len() + 3);
        lines.extend(self.vote.map(Line::Vote));
        lines.extend(self.purged.map(Line::Purge));
        lines.push(Line::Committed(self.committed));
        lines.extend(self.entries.values().cloned().map(Line::Entry));
        lines
    }
}

struct Inner {
    file: JsonLines,
    state: State,
}

impl Inner {
    /// Writes `lines` (fsynced), then takes them into the state.
    fn write(&mut self, lines: Vec<Line>) -> io::Result<()> {
        let (buf, count) = to_lines(&lines)?;
        self.file.append(&buf, count)?;
        for line in lines {
            self.state.take(line);
        }
        Ok(())
    }

    /// Rewrites the file if most of its lines are superseded.
    fn compact(&mut self) -> io::Result<()> {
        if self.file.lines() > 2 * self.state.entries.len() + 64 {
            let (buf, count) = to_lines(self.state.lines())?;
            self.file.rewrite(&buf, count)?;
        }
        Ok(())
    }
}

/// The log store; clones share it (one is the reader openraft asks for).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn io_error(e: io::Error) -> StorageError<u64> {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    /// Opens (replaying) the log in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (file, lines) = JsonLines::open(dir.join("raft-log.jsonl"), true)?;
        let state = State::replay(lines);
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner { file, state })),
        })
    }

    fn write(&self, lines: Vec<Line>) -> Result<(), StorageError<u64>> {
        self.inner.lock().unwrap().write(lines).map_err(io_error)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .state
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let inner = self.inner.lock().unwrap();
        let purged = inner.state.purged;
        let last = inner
            .state
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.write(vec![Line::Vote(*vote)])
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.inner.lock().unwrap().state.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        self.write(vec![Line::Committed(committed)])
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.inner.lock().unwrap().state.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let lines = entries.into_iter().map(Line::Entry).collect();
        let written = self.inner.lock().unwrap().write(lines);
        let result = written
            .as_ref()
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(result);
        written.map_err(io_error)
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.write(vec![Line::Truncate(log_id.index)])
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = self.inner.lock().unwrap();
        inner.write(vec![Line::Purge(log_id)]).map_err(io_error)?;
        inner.compact().map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::quorum::state_machine::StateMachine;

    struct Fresh;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Fresh {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
            let dir = tempfile::tempdir().unwrap();
            let log = LogStore::open(dir.path()).unwrap();
            let state = StateMachine::open(dir.path()).unwrap();
            Ok((dir, log, state))
        }
    }

    /// openraft's own checks of a log store and state machine (vote, append, truncate, purge,
    /// snapshots, membership).
    #[test]
    fn the_stores_pass_openrafts_suite() {
        Suite::test_all(Fresh).unwrap();
    }

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// What was written is what a reopened store reads: the vote, the commit point, and the
    /// entries after a purge and a truncation.
    #[tokio::test]
    async fn a_reopened_log_says_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        log.write((1..=10).map(|i| Line::Entry(entry(1, i))).collect())
            .unwrap();
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 8))
            .await
            .unwrap();
        log.write(vec![Line::Entry(entry(3, 8))]).unwrap();
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 4))
            .await
            .unwrap();
        let committed = Some(LogId::new(CommittedLeaderId::new(3, 1), 8));
        log.save_committed(committed).await.unwrap();
        drop(log);

        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
        assert_eq!(log.read_committed().await.unwrap(), committed);
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(4));
        assert_eq!(state.last_log_id, Some(entry(3, 8).log_id));
        let indexes: Vec<(u64, u64)> = log
            .try_get_log_entries(0..100)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect();
        assert_eq!(indexes, vec![(1, 5), (1, 6), (1, 7), (3, 8)]);
    }
}
