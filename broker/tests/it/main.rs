//! The broker's integration tests, one binary (one link) for all: each module starts brokers on
//! free ports and talks to them over TCP with real clients (librdkafka through `rdkafka`, raw
//! requests built with `kafka-protocol`, kcat, kafka-python, the Java client and Kafka's own
//! tools).

/// The brokers these tests embed, and the decoder under fuzzing, run with the guard the `broker`
/// binary installs: a forged array length in a request closes that connection instead of
/// aborting the process.
#[global_allocator]
static ALLOCATOR: broker::wire_alloc::LazyHugeAlloc = broker::wire_alloc::LazyHugeAlloc;

mod common;

mod abuse;
mod admin;
mod cluster;
mod compaction;
mod fuzz_decoder;
mod group_admin;
mod groups;
mod java_client;
mod jepsen;
mod kafka_python;
mod kafka_tools;
mod kcat;
mod librdkafka_suite;
mod listeners;
mod netns;
mod partitions;
mod pitfalls;
mod produce_consume;
mod robustness;
mod static_members;
mod storage;
mod transactions;
