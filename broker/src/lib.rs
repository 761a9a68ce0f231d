//! A durable broker that speaks the Kafka wire protocol, so ordinary Kafka clients
//! (librdkafka via `rdkafka`, kcat, ...) use it unchanged.
//!
//! # A tour
//! A request travels through these modules, in order:
//!
//! - [`server`]: binds nothing itself; [`spawn`] takes a bound listener, accepts connections
//!   (with a connection limit) and runs the background chores: group session expiry, retention,
//!   transaction timeouts, interval fsync. [`BrokerHandle::shutdown`] stops it all.
//! - [`connection`]: one task per client; reads length-prefixed frames, answers in order; closes
//!   idle and stalled connections and takes each request's bytes from a budget shared by all
//!   (`docs/broker-limits.md`). A fetch's records go from the segment files to the socket
//!   without a copy ([`zero_copy`], `sendfile`).
//! - [`codec`]: frame bytes to a typed request and back, using the `kafka-protocol` crate for
//!   the message structs; it admits only the APIs and versions its caller names (the
//!   connection names the route registry's, [`handlers::decodable`]).
//! - [`handlers`]: one module per API family (metadata, produce, fetch, offsets, groups, group
//!   offsets, admin, producer ids, transactions), each declaring its routes: API key, versions, whether it
//!   touches the disk, handler. [`handlers::ROUTES`] gathers them; dispatch, the codec's
//!   admission and ApiVersions all read it, so nothing is advertised that isn't
//!   served. Routes that touch the disk run on tokio's blocking pool by construction, so a slow
//!   disk never stalls heartbeats or other clients.
//! - [`broker`]: the shared state the handlers work on:
//!   - [`topics`]: topics with stable ids and per-topic config; each partition holds a
//!   - [`storage`]: `PartitionLog` of segment files with an offset index, torn-tail recovery,
//!     rolling, retention, and idempotent-producer sequence checks; `records` walks the records
//!     of a produced batch (streaming through its codec) as Kafka's log validator does;
//!   - [`group`]: the `GroupCoordinator` state machine of the classic rebalance protocol;
//!   - [`offset_store`]: committed offsets, durable across restarts (an append-only JSON-lines
//!     file, like the transaction coordinator's; in a cluster, the replicated internal topic
//!     `__consumer_offsets`);
//!   - [`txn`]: the transaction coordinator (KIP-98), which decides while the broker's state
//!     writes (`txn::Participants`): one state machine per transactional id
//!     in an append-only file; ending a transaction writes control records (commit/abort
//!     markers) into its partitions, whose logs track open transactions, the last stable offset
//!     and the aborted transactions that read-committed fetches return. Both are rebuilt after a
//!     crash: the coordinator's file is replayed; each partition loads the producer-state
//!     snapshot of its last roll and re-reads the transactional batch headers after it.
//!
//! A node of a cluster (`--voters`) also runs [`quorum`]: the voters' Raft log of the
//! [`metadata`] (KRaft's records and the image they build, with the rules of leaders, in-sync
//! replicas and fencing), its active controller, and the brokers' registration and heartbeats.
//! Metadata and DescribeCluster answer the live brokers and the controller from it; replication
//! is being built on it (`docs/broker-replication.md`). A single node has none of it.
//!
//! A program that serves clients it does not trust installs [`wire_alloc::LazyHugeAlloc`] as its
//! global allocator (the `broker` and `lab` binaries do), so that a forged array length in a
//! request closes that connection instead of aborting the process. The library does not choose
//! an allocator for the programs that link it.
//!
//! The on-disk format is described in `docs/broker-storage.md`, the group state machine in
//! `docs/broker-groups.md`, transactions in `docs/broker-transactions.md`.

pub mod broker;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod connection;
pub mod group;
pub mod handlers;
pub mod internal_topic;
mod jsonl;
pub mod link;
pub mod metadata;
pub mod offset_store;
pub mod producer_ids;
pub mod quorum;
pub mod replication;
pub mod server;
pub mod storage;
pub mod topics;
pub mod txn;
pub mod wire_alloc;
pub mod zero_copy;

pub use config::{Advertised, BrokerConfig, ClusterConfig, FsyncPolicy};
pub use server::{BrokerHandle, Listener, run, spawn, spawn_listeners};
