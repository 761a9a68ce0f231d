//! The transaction coordinator (KIP-98): one state machine per `transactional.id`, kept in memory
//! and in an append-only file so that it survives a crash.
//!
//! A transaction moves `Empty -> Ongoing -> PrepareCommit|PrepareAbort -> CompleteCommit|
//! CompleteAbort`, and a new one starts from `Complete*` (or `Empty`) at the next
//! AddPartitionsToTxn/AddOffsetsToTxn. Ending one is, in order: write `Prepare*` (durable), write a
//! control record into every partition of the transaction, apply the staged offsets (commit
//! only), write `Complete*`. A crash anywhere in between leaves `Prepare*` in the file, and the
//! next start finishes the job; markers are written only where the producer still has an open
//! transaction, so finishing twice writes nothing twice. A transaction still `Ongoing` at start
//! stays open for its producer to end, as Kafka's coordinator keeps it; one past its timeout is
//! aborted with a bumped epoch, which fences its producer.
//!
//! Every change appends the whole state of that one transactional id as a JSON line to
//! `<data-dir>/transactions.jsonl` before it is answered (fsynced with `--fsync always`, like the
//! committed offsets); on start the last line of each id wins, a torn last line is ignored. The
//! file is rewritten compactly (on start, and by the ticker) when it holds mostly superseded
//! lines.
//!
//! Each transactional id has its own lock, held for the whole of a request on it, Produce
//! included: a batch can never slip into a partition after its transaction's marker.
//!
//! In a cluster the state lives in the replicated internal topic `__transaction_state` instead
//! of the file, as in Kafka ([`crate::internal_topic`]): a transactional id's coordinator is the
//! leader of the id's partition, each change is a record (key: the id, value: the state as
//! JSON) the in-sync replicas have before it is answered, and a node that comes to lead a
//! partition loads its ids and finishes what their last coordinator left
//! ([`TxnCoordinator::load`], then [`TxnCoordinator::recover`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::internal_topic::{self, InternalTopic};
use crate::jsonl::{JsonLines, to_lines};
use crate::offset_store::Committed;
use crate::producer_ids::ProducerIdAllocator;
use crate::storage::AppendError;
use crate::storage::batch::Marker;

/// What ending a transaction writes outside the coordinator's own state: a marker into each of
/// its partitions, its staged offsets into the committed offsets. The broker's state implements
/// it (`crate::broker`), the one place that ends a transaction across the logs and the offsets;
/// the coordinator decides when and in which order.
pub trait Participants {
    /// Writes `producer_id`'s commit or abort marker into a partition (nothing if the partition
    /// no longer exists).
    fn write_marker(
        &self,
        partition: (&str, i32),
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
    ) -> Result<(), AppendError>;

    /// Commits a transaction's offsets for one group: `(topic, partition, offset, the offset
    /// store's sequence number when it was staged)`, each unless the group committed since.
    fn commit_offsets(
        &self,
        group: &str,
        commits: Vec<(String, i32, Committed, u64)>,
    ) -> io::Result<()>;
}

/// Where a transactional id's current transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// The name Kafka's admin tools show.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }
}

/// An offset staged by TxnOffsetCommit, applied to the group when the transaction commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// The offset store's last commit number when it was staged: applied only to a partition
    /// not committed since (none in state files from before it existed: applied regardless).
    #[serde(default)]
    pub seq: Option<u64>,
}

/// The durable state of one transactional id (one line of the file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i64,
    pub state: TxnState,
    /// Partitions of the current transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups added with AddOffsetsToTxn.
    pub groups: BTreeSet<String>,
    /// Offsets staged with TxnOffsetCommit, last one per (group, topic, partition).
    pub offsets: Vec<StagedOffset>,
    /// When the current transaction started (wall clock ms), for its timeout.
    pub started_ms: i64,
}

/// Why a transactional request is refused (mapped to a Kafka error by the handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnError {
    /// An older epoch of a producer a newer instance fenced.
    Fenced,
    /// The producer id is not the one of this transactional id (or the id is unknown).
    UnknownProducer,
    /// The request does not fit the transaction's state.
    InvalidState,
    /// The broker could not store the change.
    Storage,
    /// In a cluster: another node coordinates this transactional id (the client finds it).
    NotCoordinator,
}

impl TxnError {
    /// The Kafka error; `fenced_code` says whether the request version knows PRODUCER_FENCED
    /// (KIP-588), older versions get INVALID_PRODUCER_EPOCH for it.
    pub fn to_kafka(self, fenced_code: bool) -> ResponseError {
        match self {
            TxnError::Fenced if fenced_code => ResponseError::ProducerFenced,
            TxnError::Fenced => ResponseError::InvalidProducerEpoch,
            TxnError::UnknownProducer => ResponseError::InvalidProducerIdMapping,
            TxnError::InvalidState => ResponseError::InvalidTxnState,
            TxnError::Storage => ResponseError::CoordinatorNotAvailable,
            TxnError::NotCoordinator => ResponseError::NotCoordinator,
        }
    }
}

type Entry = Arc<Mutex<TxnMetadata>>;
type StagedKey = (String, String, i32, String);

impl StagedOffset {
    fn key(&self, transactional_id: &str) -> StagedKey {
        (
            self.group.clone(),
            self.topic.clone(),
            self.partition,
            transactional_id.to_string(),
        )
    }
}

/// The internal topic of a cluster's transaction state, as in Kafka.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Where the coordinator's state is stored before a change is answered.
#[derive(Debug)]
enum Journal {
    /// A single node's file.
    File(Mutex<JsonLines>),
    /// A cluster's `__transaction_state`.
    Replicated(InternalTopic),
}

/// The transaction coordinator of the broker.
#[derive(Debug)]
pub struct TxnCoordinator {
    max_timeout_ms: i64,
    /// Partitions of `__consumer_offsets` (a cluster's; 1 on a single node, which has none).
    offsets_partitions: i32,
    /// Where a new transactional id's producer id comes from (shared with idempotent
    /// producers' InitProducerId).
    producer_ids: Arc<ProducerIdAllocator>,
    journal: Journal,
    /// (group, topic, partition, transactional id) of every offset staged by a transaction not
    /// yet complete, for OffsetFetch's `require_stable` (KIP-447).
    staged: Mutex<BTreeSet<StagedKey>>,
    txns: Mutex<HashMap<String, Entry>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TxnCoordinator {
    /// Replays `<data-dir>/transactions.jsonl`. Transactions left unfinished are finished by
    /// [`TxnCoordinator::recover`] once the partitions are open.
    pub fn open(
        data_dir: &Path,
        fsync: bool,
        max_timeout_ms: i64,
        producer_ids: Arc<ProducerIdAllocator>,
    ) -> io::Result<Self> {
        let (file, lines) =
            JsonLines::open::<TxnMetadata>(data_dir.join("transactions.jsonl"), fsync)?;
        let mut txns: BTreeMap<String, TxnMetadata> = BTreeMap::new();
        for meta in lines {
            txns.insert(meta.transactional_id.clone(), meta);
        }
        let live = txns.len();
        let lines_written = file.lines();
        let staged = txns
            .values()
            .flat_map(|m| m.offsets.iter().map(|o| o.key(&m.transactional_id)))
            .collect();
        let coordinator = Self {
            max_timeout_ms,
            offsets_partitions: 1,
            producer_ids,
            journal: Journal::File(Mutex::new(file)),
            staged: Mutex::new(staged),
            txns: Mutex::new(
                txns.into_iter()
                    .map(|(id, meta)| (id, Arc::new(Mutex::new(meta))))
                    .collect(),
            ),
        };
        if lines_written > 2 * live + 1000 {
            coordinator.compact()?;
        }
        Ok(coordinator)
    }

    /// The coordinator of a node of a cluster: it coordinates no id until it leads partitions
    /// of `__transaction_state` and loads them ([`Self::load`]). The partition counts of
    /// `__transaction_state` and `__consumer_offsets`.
    pub fn replicated(
        (partitions, offsets_partitions): (i32, i32),
        max_timeout_ms: i64,
        producer_ids: Arc<ProducerIdAllocator>,
    ) -> Self {
        Self {
            max_timeout_ms,
            offsets_partitions,
            producer_ids,
            journal: Journal::Replicated(InternalTopic::new(TRANSACTION_STATE_TOPIC, partitions)),
            staged: Mutex::new(BTreeSet::new()),
            txns: Mutex::new(HashMap::new()),
        }
    }

    /// Rewrites the file with one line per transactional id.
    /// A change stored meanwhile makes it give up (the next tick tries again): its line would
    /// be in the old file only.
    fn compact(&self) -> io::Result<()> {
        let Journal::File(file) = &self.journal else {
            return Ok(());
        };
        let before = lock(file).lines();
        let entries: Vec<Entry> = lock(&self.txns).values().cloned().collect();
        let (buf, count) = to_lines(entries.iter().map(|e| lock(e).clone()))?;
        let mut file = lock(file);
        if file.lines() != before {
            return Ok(());
        }
        file.rewrite(&buf, count)
    }

    /// Stores one transactional id's new state: a line of the file, or a record of its
    /// partition of `__transaction_state` the in-sync replicas have.
    fn persist(&self, meta: &TxnMetadata) -> io::Result<()> {
        match &self.journal {
            Journal::File(file) => {
                let (line, count) = to_lines([meta])?;
                lock(file).append(&line, count)
            }
            Journal::Replicated(topic) => {
                let id = &meta.transactional_id;
                let value = serde_json::to_vec(meta).map_err(io::Error::other)?;
                topic.write(id, vec![(id.as_bytes().to_vec(), Some(value))])
            }
        }
    }

    /// fsyncs the file (for interval flushing; a cluster's partitions are synced as logs).
    pub fn sync(&self) -> io::Result<()> {
        match &self.journal {
            Journal::File(file) => lock(file).sync(),
            Journal::Replicated(_) => Ok(()),
        }
    }

    /// Whether this node coordinates `transactional_id`: always on a single node; in a
    /// cluster, when it leads (and has loaded) the id's partition of `__transaction_state`.
    pub fn coordinates(&self, transactional_id: &str) -> bool {
        match &self.journal {
            Journal::File(_) => true,
            Journal::Replicated(topic) => topic.coordinates(transactional_id),
        }
    }

    /// The epoch this node coordinates `transactional_id` in, which its markers carry: on a
    /// cluster node the leader epoch of the id's `__transaction_state` partition when this node
    /// loaded it (`None` once it no longer leads it); 0 on a single node.
    pub fn coordinator_epoch(&self, transactional_id: &str) -> Option<i32> {
        match &self.journal {
            Journal::File(_) => Some(0),
            Journal::Replicated(topic) => topic.leader_epoch_of(transactional_id),
        }
    }

    /// Whether this is a cluster node's coordinator (its state in `__transaction_state`).
    pub fn is_replicated(&self) -> bool {
        matches!(self.journal, Journal::Replicated(_))
    }

    /// Partitions of `__transaction_state` (1 on a single node, which has none).
    pub fn partitions(&self) -> i32 {
        match &self.journal {
            Journal::File(_) => 1,
            Journal::Replicated(topic) => topic.partitions(),
        }
    }

    /// The partitions of `__transaction_state` this node has loaded (none on a single node).
    pub fn loaded(&self) -> Vec<i32> {
        match &self.journal {
            Journal::File(_) => Vec::new(),
            Journal::Replicated(topic) => topic.led(),
        }
    }

    /// A cluster node became the leader of partition `index` of `__transaction_state`: the
    /// last state of each of its ids is read from the partition, and this node coordinates
    /// them. The caller then finishes what was left ([`Self::recover`]). How many ids.
    pub fn load(
        &self,
        index: i32,
        partition: Arc<crate::topics::Partition>,
        min_insync: usize,
    ) -> io::Result<usize> {
        let Journal::Replicated(topic) = &self.journal else {
            return Ok(0);
        };
        let mut last: BTreeMap<String, TxnMetadata> = BTreeMap::new();
        for record in internal_topic::read_all(&partition)? {
            let (Some(key), Some(value)) = (&record.key, &record.value) else {
                continue;
            };
            if record.control {
                continue;
            }
            if let Ok(meta) = serde_json::from_slice::<TxnMetadata>(value)
                && meta.transactional_id.as_bytes() == &key[..]
            {
                last.insert(meta.transactional_id.clone(), meta);
            }
        }
        let count = last.len();
        {
            let mut txns = lock(&self.txns);
            let mut staged = lock(&self.staged);
            txns.retain(|id, _| topic.partition_of(id) != index);
            for (id, meta) in last {
                staged.extend(meta.offsets.iter().map(|o| o.key(&id)));
                txns.insert(id, Arc::new(Mutex::new(meta)));
            }
        }
        topic.lead(index, partition, min_insync);
        Ok(count)
    }

    /// This node no longer leads partition `index` of `__transaction_state`: its ids are
    /// dropped (their new coordinator loads them). Whether it had them.
    pub fn unload(&self, index: i32) -> bool {
        let Journal::Replicated(topic) = &self.journal else {
            return false;
        };
        if !topic.unlead(index) {
            return false;
        }
        lock(&self.txns).retain(|id, _| topic.partition_of(id) != index);
        lock(&self.staged).retain(|(_, _, _, id)| topic.partition_of(id) != index);
        true
    }

    fn entry(&self, transactional_id: &str) -> Option<Entry> {
        lock(&self.txns).get(transactional_id).cloned()
    }

    /// The entry of a transactional id a producer names (checked by [`Self::lock_checked`]).
    fn known(&self, transactional_id: &str) -> Result<Entry, TxnError> {
        if !self.coordinates(transactional_id) {
            return Err(TxnError::NotCoordinator);
        }
        self.entry(transactional_id)
            .ok_or(TxnError::UnknownProducer)
    }

    /// The current state of one transactional id.
    pub fn describe(&self, transactional_id: &str) -> Option<TxnMetadata> {
        let entry = self.entry(transactional_id)?;
        let meta = lock(&entry).clone();
        Some(meta)
    }

    /// The current state of every transactional id (for admin listings and tests).
    pub fn snapshot(&self) -> Vec<TxnMetadata> {
        let entries: Vec<Entry> = lock(&self.txns).values().cloned().collect();
        let mut all: Vec<TxnMetadata> = entries.iter().map(|e| lock(e).clone()).collect();
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }

    /// Changes one id's state through a copy that becomes current only once it is stored.
    fn update(
        &self,
        meta: &mut TxnMetadata,
        change: impl FnOnce(&mut TxnMetadata),
    ) -> Result<(), TxnError> {
        let mut next = meta.clone();
        change(&mut next);
        if next == *meta {
            return Ok(());
        }
        self.persist(&next).map_err(|e| {
            tracing::error!(transactional_id = %meta.transactional_id, "could not store a transaction state: {e}");
            TxnError::Storage
        })?;
        *meta = next;
        Ok(())
    }

    /// InitProducerId with a transactional id: the id's producer id with a bumped epoch (a new
    /// id the first time), which fences every older instance. A transaction the previous
    /// instance left open is aborted first, one being ended is finished.
    pub fn init_producer(
        &self,
        parts: &impl Participants,
        transactional_id: &str,
        timeout_ms: i32,
        known: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ResponseError> {
        if timeout_ms <= 0 || i64::from(timeout_ms) > self.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let entry = {
            let mut txns = lock(&self.txns);
            match txns.get(transactional_id) {
                Some(entry) => entry.clone(),
                None => {
                    let producer_id = self.producer_ids.next().map_err(|e| {
                        tracing::error!("could not reserve producer ids: {e}");
                        ResponseError::CoordinatorNotAvailable
                    })?;
                    let entry = Arc::new(Mutex::new(TxnMetadata {
                        transactional_id: transactional_id.to_string(),
                        producer_id,
                        producer_epoch: -1,
                        timeout_ms: i64::from(timeout_ms),
                        state: TxnState::Empty,
                        partitions: BTreeSet::new(),
                        groups: BTreeSet::new(),
                        offsets: Vec::new(),
                        started_ms: -1,
                    }));
                    txns.insert(transactional_id.to_string(), entry.clone());
                    entry
                }
            }
        };
        let mut meta = lock(&entry);
        // KIP-360: a producer that names its id and epoch must be the current one.
        if let Some((producer_id, epoch)) = known
            && (producer_id != meta.producer_id || epoch != meta.producer_epoch)
        {
            return Err(
                if producer_id == meta.producer_id && epoch < meta.producer_epoch {
                    ResponseError::ProducerFenced
                } else {
                    ResponseError::InvalidProducerIdMapping
                },
            );
        }
        let storage = |_: TxnError| ResponseError::CoordinatorNotAvailable;
        match meta.state {
            TxnState::Ongoing => self.end(parts, &mut meta, false, true).map_err(storage)?,
            TxnState::PrepareCommit => self.end(parts, &mut meta, true, false).map_err(storage)?,
            TxnState::PrepareAbort => self.end(parts, &mut meta, false, false).map_err(storage)?,
            _ => {}
        }
        let new_id = if meta.producer_epoch >= i16::MAX - 1 {
            Some(self.producer_ids.next().map_err(|e| {
                tracing::error!("could not reserve producer ids: {e}");
                ResponseError::CoordinatorNotAvailable
            })?)
        } else {
            None
        };
        self.update(&mut meta, |m| {
            match new_id {
                Some(id) => {
                    m.producer_id = id;
                    m.producer_epoch = 0;
                }
                None => m.producer_epoch += 1,
            }
            m.timeout_ms = i64::from(timeout_ms);
            m.state = TxnState::Empty;
            m.started_ms = -1;
        })
        .map_err(storage)?;
        Ok((meta.producer_id, meta.producer_epoch))
    }

    /// Locks a transactional id after checking the producer is its current instance.
    fn lock_checked<'a>(
        entry: &'a Entry,
        producer_id: i64,
        epoch: i16,
    ) -> Result<MutexGuard<'a, TxnMetadata>, TxnError> {
        let meta = lock(entry);
        if producer_id != meta.producer_id {
            return Err(TxnError::UnknownProducer);
        }
        if epoch != meta.producer_epoch {
            return Err(TxnError::Fenced);
        }
        Ok(meta)
    }

    /// Starts a transaction if none is ongoing, then lets `add` add to it.
    fn add_to_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        add: impl FnOnce(&mut TxnMetadata),
    ) -> Result<(), TxnError> {
        let entry = self.known(transactional_id)?;
        let mut meta = Self::lock_checked(&entry, producer_id, epoch)?;
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => Err(TxnError::InvalidState),
            TxnState::Ongoing => self.update(&mut meta, add),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let now = now_ms();
                self.update(&mut meta, |m| {
                    m.state = TxnState::Ongoing;
                    m.started_ms = now;
                    m.partitions.clear();
                    m.groups.clear();
                    m.offsets.clear();
                    add(m);
                })
            }
        }
    }

    /// AddPartitionsToTxn (the partitions were checked to exist).
    pub fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
    ) -> Result<(), TxnError> {
        self.add_to_txn(transactional_id, producer_id, epoch, |m| {
            m.partitions.extend(partitions)
        })
    }

    /// Whether every partition is in the producer's ongoing transaction (AddPartitionsToTxn v4
    /// `verify_only`).
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<bool>, TxnError> {
        let entry = self.known(transactional_id)?;
        let meta = Self::lock_checked(&entry, producer_id, epoch)?;
        Ok(partitions
            .iter()
            .map(|p| meta.state == TxnState::Ongoing && meta.partitions.contains(p))
            .collect())
    }

    /// AddOffsetsToTxn.
    pub fn add_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), TxnError> {
        // In a cluster, as in Kafka, the group's partition of `__consumer_offsets` joins the
        // transaction: its coordinator writes the transaction's offsets there, and the marker
        // makes them count.
        let offsets_partition = match &self.journal {
            Journal::File(_) => None,
            Journal::Replicated(_) => Some((
                crate::offset_store::OFFSETS_TOPIC.to_string(),
                internal_topic::partition_for(group, self.offsets_partitions),
            )),
        };
        self.add_to_txn(transactional_id, producer_id, epoch, |m| {
            m.groups.insert(group.to_string());
            m.partitions.extend(offsets_partition);
        })
    }

    /// TxnOffsetCommit: stages offsets of a group added to the ongoing transaction.
    pub fn stage_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        offsets: Vec<StagedOffset>,
    ) -> Result<(), TxnError> {
        let entry = self.known(transactional_id)?;
        let mut meta = Self::lock_checked(&entry, producer_id, epoch)?;
        if meta.state != TxnState::Ongoing
            || offsets.iter().any(|o| !meta.groups.contains(&o.group))
        {
            return Err(TxnError::InvalidState);
        }
        let keys: Vec<StagedKey> = offsets.iter().map(|o| o.key(transactional_id)).collect();
        self.update(&mut meta, |m| {
            for o in offsets {
                m.offsets.retain(|s| {
                    (&s.group, &s.topic, s.partition) != (&o.group, &o.topic, o.partition)
                });
                m.offsets.push(o);
            }
        })?;
        lock(&self.staged).extend(keys);
        Ok(())
    }

    /// The highest commit number a staged offset holds (0 if none): the offset store must never
    /// number a commit below it.
    pub fn highest_staged_seq(&self) -> u64 {
        let entries: Vec<Entry> = lock(&self.txns).values().cloned().collect();
        entries
            .iter()
            .flat_map(|e| lock(e).offsets.iter().filter_map(|o| o.seq).max())
            .max()
            .unwrap_or(0)
    }

    /// Whether a transaction not yet complete has staged an offset for this partition of
    /// `group`: its committed offset is not stable (OffsetFetch with `require_stable` answers
    /// UNSTABLE_OFFSET_COMMIT, and the client asks again).
    pub fn has_unstable_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        let from = (
            group.to_string(),
            topic.to_string(),
            partition,
            String::new(),
        );
        lock(&self.staged)
            .range(from..)
            .next()
            .is_some_and(|(g, t, p, _)| (g.as_str(), t.as_str(), *p) == (group, topic, partition))
    }

    /// EndTxn. Ending a transaction that already ended the same way answers success (a retry).
    pub fn end_txn(
        &self,
        parts: &impl Participants,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), TxnError> {
        let entry = self.known(transactional_id)?;
        let mut meta = Self::lock_checked(&entry, producer_id, epoch)?;
        match (meta.state, commit) {
            (TxnState::Ongoing, _)
            | (TxnState::PrepareCommit, true)
            | (TxnState::PrepareAbort, false) => self.end(parts, &mut meta, commit, false),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
            _ => Err(TxnError::InvalidState),
        }
    }

    /// Runs a transactional produce to one partition under the id's lock, if the producer is
    /// current and the partition is in its ongoing transaction.
    pub fn with_produce<T>(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partition: (&str, i32),
        produce: impl FnOnce() -> T,
    ) -> Result<T, TxnError> {
        let entry = self.known(transactional_id)?;
        let meta = Self::lock_checked(&entry, producer_id, epoch)?;
        if meta.state != TxnState::Ongoing
            || !meta
                .partitions
                .contains(&(partition.0.to_string(), partition.1))
        {
            return Err(TxnError::InvalidState);
        }
        Ok(produce())
    }

    /// Writes the transaction's marker into each of its partitions, with this coordinator's
    /// epoch. A partition that refuses it as fenced (a newer producer or coordinator epoch has
    /// been there) had the transaction ended by whoever fenced it, as Kafka's coordinator
    /// concludes; any other failure is retried later.
    fn write_markers(
        &self,
        parts: &impl Participants,
        meta: &TxnMetadata,
        commit: bool,
    ) -> Result<(), TxnError> {
        let marker = Marker {
            commit,
            coordinator_epoch: self
                .coordinator_epoch(&meta.transactional_id)
                .ok_or(TxnError::NotCoordinator)?,
        };
        for (topic, index) in &meta.partitions {
            let written = parts.write_marker(
                (topic, *index),
                meta.producer_id,
                meta.producer_epoch,
                marker,
            );
            if let Err(e) = &written
                && matches!(
                    e.kafka_error(),
                    ResponseError::InvalidProducerEpoch
                        | ResponseError::TransactionCoordinatorFenced
                )
            {
                tracing::warn!(transactional_id = %meta.transactional_id, %topic, partition = index, "a marker was fenced: {e}");
                continue;
            }
            if let Err(e) = written {
                tracing::error!(transactional_id = %meta.transactional_id, %topic, partition = index, "could not write a transaction marker: {e}");
                return Err(TxnError::Storage);
            }
        }
        Ok(())
    }

    /// Ends the transaction in `meta`: `Prepare*`, markers, staged offsets (commit), `Complete*`.
    /// `bump` raises the producer epoch first (an abort that fences the current instance: a
    /// timeout, or a new instance taking over). On an error the state stays `Prepare*`, and
    /// the ticker retries.
    fn end(
        &self,
        parts: &impl Participants,
        meta: &mut TxnMetadata,
        commit: bool,
        bump: bool,
    ) -> Result<(), TxnError> {
        let prepare = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if meta.state != prepare {
            self.update(meta, |m| {
                m.state = prepare;
                if bump && m.producer_epoch < i16::MAX - 1 {
                    m.producer_epoch += 1;
                }
            })?;
        }
        self.write_markers(parts, meta, commit)?;
        if commit {
            // Each offset goes only where the group has not committed since it was staged: a
            // plain commit made meanwhile wins, and finishing again after a failure (a retry,
            // a restart) does not write twice what the first attempt wrote.
            let mut by_group: BTreeMap<&str, Vec<(String, i32, Committed, u64)>> = BTreeMap::new();
            for o in &meta.offsets {
                by_group.entry(&o.group).or_default().push((
                    o.topic.clone(),
                    o.partition,
                    Committed {
                        offset: o.offset,
                        leader_epoch: o.leader_epoch,
                        metadata: o.metadata.clone(),
                    },
                    o.seq.unwrap_or(u64::MAX),
                ));
            }
            for (group, commits) in by_group {
                parts.commit_offsets(group, commits).map_err(|e| {
                    tracing::error!(transactional_id = %meta.transactional_id, group, "could not commit a transaction's offsets: {e}");
                    TxnError::Storage
                })?;
            }
        }
        let complete = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        let staged: Vec<StagedKey> = meta
            .offsets
            .iter()
            .map(|o| o.key(&meta.transactional_id))
            .collect();
        self.update(meta, |m| {
            m.state = complete;
            m.partitions.clear();
            m.groups.clear();
            m.offsets.clear();
        })?;
        let mut unstable = lock(&self.staged);
        for key in &staged {
            unstable.remove(key);
        }
        tracing::debug!(transactional_id = %meta.transactional_id, commit, "transaction ended");
        Ok(())
    }

    /// Finishes what a previous run left: `Prepare*` completes. An `Ongoing` transaction stays
    /// open, as Kafka's coordinator keeps it across a restart: its producer, reconnecting, goes
    /// on and ends it (the partitions rebuilt its open transaction from their batch headers, so
    /// the last stable offset still holds), and if it never comes back the ticker aborts it at
    /// its timeout, fencing it. Aborting here instead fenced every live transactional producer
    /// (a Kafka Streams application lost its tasks and state) on any broker restart.
    pub fn recover(&self, parts: &impl Participants) {
        // Collected first: the map's lock must not be held while transactions end.
        let entries: Vec<Entry> = lock(&self.txns).values().cloned().collect();
        for entry in entries {
            let mut meta = lock(&entry);
            let commit = match meta.state {
                TxnState::PrepareAbort => false,
                TxnState::PrepareCommit => true,
                TxnState::Ongoing => {
                    tracing::info!(transactional_id = %meta.transactional_id, partitions = meta.partitions.len(), "a transaction left open by the previous run stays open for its producer");
                    continue;
                }
                _ => continue,
            };
            let before = meta.state;
            match self.end(parts, &mut meta, commit, false) {
                Ok(()) => {
                    tracing::info!(transactional_id = %meta.transactional_id, was = before.name(), now = meta.state.name(), "finished a transaction left by the previous run");
                }
                Err(e) => {
                    tracing::error!(transactional_id = %meta.transactional_id, "could not finish a transaction: {e:?}")
                }
            }
        }
    }

    /// Aborts transactions past their timeout (bumping the epoch, which fences the producer
    /// that let it run out) and retries ends that failed. Returns how many were aborted.
    pub fn tick(&self, parts: &impl Participants, now_ms: i64) -> usize {
        let live = lock(&self.txns).len();
        let lines = match &self.journal {
            Journal::File(file) => lock(file).lines(),
            Journal::Replicated(_) => 0,
        };
        if lines > 2 * live + 1000
            && let Err(e) = self.compact()
        {
            tracing::warn!("could not compact the transaction state file: {e}");
        }
        let mut aborted = 0;
        // Collected first: the map's lock must not be held while transactions end.
        let entries: Vec<Entry> = lock(&self.txns).values().cloned().collect();
        for entry in entries {
            let mut meta = lock(&entry);
            let result = match meta.state {
                TxnState::Ongoing if now_ms - meta.started_ms > meta.timeout_ms => {
                    tracing::info!(transactional_id = %meta.transactional_id, timeout_ms = meta.timeout_ms, "aborting a transaction past its timeout");
                    aborted += 1;
                    self.end(parts, &mut meta, false, true)
                }
                TxnState::PrepareCommit => self.end(parts, &mut meta, true, false),
                TxnState::PrepareAbort => self.end(parts, &mut meta, false, false),
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::error!(transactional_id = %meta.transactional_id, "could not end a transaction: {e:?}");
            }
        }
        aborted
    }
}
