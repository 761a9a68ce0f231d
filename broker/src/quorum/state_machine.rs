//! The metadata image as Raft's state machine: each committed entry's records are applied to
//! it, in log order, on every voter. Its snapshot (the image, with the last entry it holds and
//! the voters then) is kept in `<data-dir>/metadata/snapshot.json`, written whole and renamed
//! into place, so a crash leaves the old one or the new one. On start the image is the
//! snapshot's; the entries after it are applied again as the log is committed.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::{Applied, TypeConfig};
use crate::metadata::MetadataImage;

/// A snapshot as stored: what it covers and the image then.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMeta<u64, BasicNode>,
    image: MetadataImage,
}

#[derive(Default)]
struct Inner {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    image: MetadataImage,
    snapshot: Option<Stored>,
    /// Snapshots built so far, for their ids.
    built: u64,
}

/// The state machine; clones share it (one builds the snapshots).
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    path: PathBuf,
    /// The image after each applied batch, for the broker.
    image: watch::Sender<Arc<MetadataImage>>,
    /// The index of the last applied entry, set before the image it made is published: a
    /// reader that reads it, then the image, has an image at least that far along.
    applied: Arc<AtomicU64>,
}

fn read_error(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_state_machine(&e).into()
}

fn write_error(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachine {
    /// Opens the state machine of `dir`: the image of its snapshot, if any.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("snapshot.json");
        let mut inner = Inner::default();
        match std::fs::read(&path) {
            Ok(raw) => {
                let stored: Stored = serde_json::from_slice(&raw).map_err(io::Error::other)?;
                inner.last_applied = stored.meta.last_log_id;
                inner.membership = stored.meta.last_membership.clone();
                inner.image = stored.image.clone();
                inner.snapshot = Some(stored);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (image, _) = watch::channel(Arc::new(inner.image.clone()));
        let applied = inner.last_applied.map_or(0, |id| id.index);
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
            path,
            image,
            applied: Arc::new(AtomicU64::new(applied)),
        })
    }

    /// The index of the last applied entry (0 before any), as [`StateMachine::subscribe`]'s
    /// images follow it.
    pub fn applied(&self) -> Arc<AtomicU64> {
        self.applied.clone()
    }

    /// The image as it is now, and each one after.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.subscribe()
    }

    /// Makes `stored` the current snapshot, on disk first.
    fn keep(&self, stored: &Stored) -> io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let buf = serde_json::to_vec(stored).map_err(io::Error::other)?;
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&buf)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn snapshot_of(stored: &Stored) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
    let data = serde_json::to_vec(&stored.image).map_err(read_error)?;
    Ok(Snapshot {
        meta: stored.meta.clone(),
        snapshot: Box::new(Cursor::new(data)),
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let stored = {
            let mut inner = self.inner.lock().unwrap();
            inner.built += 1;
            let id = match inner.last_applied {
                Some(last) => format!("{}-{}-{}", last.leader_id, last.index, inner.built),
                None => format!("none-{}", inner.built),
            };
            Stored {
                meta: SnapshotMeta {
                    last_log_id: inner.last_applied,
                    last_membership: inner.membership.clone(),
                    snapshot_id: id,
                },
                image: inner.image.clone(),
            }
        };
        self.keep(&stored).map_err(write_error)?;
        let snapshot = snapshot_of(&stored)?;
        self.inner.lock().unwrap().snapshot = Some(stored);
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let inner = self.inner.lock().unwrap();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock().unwrap();
        let mut replies = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            replies.push(match entry.payload {
                EntryPayload::Blank => Ok(()),
                EntryPayload::Normal(proposal) => inner.image.apply_all(&proposal.records),
                EntryPayload::Membership(membership) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(())
                }
            });
        }
        if let Some(last) = inner.last_applied {
            self.applied.store(last.index, Ordering::Release);
        }
        // Published after every batch, also one that changed nothing (a new Raft leader's blank
        // entry), so that what follows the images sees every applied index.
        self.image.send_replace(Arc::new(inner.image.clone()));
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let image: MetadataImage =
            serde_json::from_slice(snapshot.get_ref()).map_err(read_error)?;
        let stored = Stored {
            meta: meta.clone(),
            image,
        };
        self.keep(&stored).map_err(write_error)?;
        let mut inner = self.inner.lock().unwrap();
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.image = stored.image.clone();
        inner.snapshot = Some(stored);
        let index = inner.last_applied.map_or(0, |id| id.index);
        self.applied.store(index, Ordering::Release);
        self.image.send_replace(Arc::new(inner.image.clone()));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let inner = self.inner.lock().unwrap();
        inner.snapshot.as_ref().map(snapshot_of).transpose()
    }
}
