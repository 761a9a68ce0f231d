//! The consumer's librdkafka context: lag statistics, start positions on assignment, and the
//! pause a rebalance makes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// The consumer's librdkafka context: it publishes the per-partition consumer lag (from
/// librdkafka's statistics, every few seconds) as the `consumer_lag` gauge, and it takes part in
/// rebalances so that the consumer is ready the moment it holds its partitions (see
/// [`ConsumerContext::rebalance`] below).
pub(super) struct RunnerContext {
    pub(super) service: &'static str,
    pub(super) ready: Arc<AtomicBool>,
    /// When this consumer last gave up its partitions in a rebalance: from then until its new
    /// assignment it reads nothing (the rebalance's pause, `consumer_rebalance_pause_seconds`).
    pub(super) revoked_at: std::sync::Mutex<Option<std::time::Instant>>,
}

impl RunnerContext {
    pub(super) fn new(service: &'static str, ready: Arc<AtomicBool>) -> Self {
        Self {
            service,
            ready,
            revoked_at: std::sync::Mutex::new(None),
        }
    }

    fn revoked(&self) {
        let mut at = self.revoked_at.lock().unwrap_or_else(|e| e.into_inner());
        *at = Some(std::time::Instant::now());
    }

    /// The pause since the partitions were revoked, if they were: published as the gauge
    /// `consumer_rebalance_pause_seconds` (the last one) and in the histogram
    /// `consumer_rebalance_pauses_seconds`.
    fn assigned(&self, partitions: usize) {
        let revoked = self
            .revoked_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(at) = revoked {
            let pause = at.elapsed();
            metrics::gauge!("consumer_rebalance_pause_seconds", "service" => self.service)
                .set(pause.as_secs_f64());
            metrics::histogram!("consumer_rebalance_pauses_seconds", "service" => self.service)
                .record(pause.as_secs_f64());
            tracing::info!(
                service = self.service,
                partitions,
                pause_ms = pause.as_millis() as u64,
                "partitions assigned after a rebalance"
            );
        }
    }
}

impl ClientContext for RunnerContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // -1 is the internal "unassigned" partition, or a lag not known yet.
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!("consumer_lag", "service" => self.service, "topic" => topic.clone(), "partition" => partition.to_string())
                    .set(p.consumer_lag as f64);
            }
        }
    }
}

/// How long the start positions of a new assignment may take to look up.
const POSITION_TIMEOUT: Duration = Duration::from_secs(5);

impl ConsumerContext for RunnerContext {
    /// On assignment, looks up where each partition starts (the group's committed offset, or
    /// the log start when there is none, as `auto.offset.reset=earliest` would) and assigns those
    /// exact offsets. Left to itself, librdkafka looks them up after the assignment, one request
    /// at a time and sometimes after a 500 ms back-off, so the first record waited for it; here
    /// the partitions are fetched from at once, and the consumer is ready (`/ready`) exactly when
    /// every assigned partition has a position.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // The lookups block on the broker, which may be embedded in this process: hand
                // this worker's other tasks to another thread meanwhile.
                let resolved = match tokio::runtime::Handle::try_current() {
                    Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                        tokio::task::block_in_place(|| start_positions(consumer, tpl))
                    }
                    _ => start_positions(consumer, tpl),
                };
                if let Err(err) = &resolved {
                    tracing::debug!(error = %err, "start positions not resolved; librdkafka looks them up");
                }
                let assigned = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
                    _ => consumer.assign(tpl),
                };
                match assigned {
                    Ok(()) => {
                        self.assigned(tpl.count());
                        self.ready.store(true, Ordering::Release);
                    }
                    Err(err) => tracing::warn!(error = %err, "assignment failed"),
                }
            }
            other => {
                self.ready.store(false, Ordering::Release);
                self.revoked();
                if other != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::warn!(error = ?other, "rebalance error");
                }
                let unassigned = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
                    _ => consumer.unassign(),
                };
                if let Err(err) = unassigned {
                    tracing::warn!(error = %err, "unassignment failed");
                }
            }
        }
    }
}

/// Sets each partition of `tpl` to the offset its fetching starts at.
fn start_positions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &mut TopicPartitionList,
) -> KafkaResult<()> {
    if tpl.count() == 0 {
        return Ok(());
    }
    let committed = consumer.committed_offsets(tpl.clone(), POSITION_TIMEOUT)?;
    for elem in committed.elements() {
        let offset = match elem.offset() {
            Offset::Offset(n) => n,
            _ => {
                let (low, _high) =
                    consumer.fetch_watermarks(elem.topic(), elem.partition(), POSITION_TIMEOUT)?;
                low
            }
        };
        tpl.set_partition_offset(elem.topic(), elem.partition(), Offset::Offset(offset))?;
    }
    Ok(())
}
