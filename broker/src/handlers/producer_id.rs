//! InitProducerId: ids for idempotent producers, and for transactional ones the id of their
//! `transactional.id` with a bumped epoch (see `crate::txn`).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;

use kafka_protocol::messages::ResponseKind;

use super::route::{Reply, Route, route};

pub(super) static ROUTES: &[Route] = &[route!(InitProducerId, 0..=4, disk, |b, r, c| {
    Reply::send(ResponseKind::InitProducerId(handle(b, r, c.version)))
})];

pub fn handle(
    broker: &Broker,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    // An empty transactional id means none, as in Kafka.
    if let Some(transactional_id) = request
        .transactional_id
        .as_ref()
        .filter(|id| !id.is_empty())
    {
        if !broker.txns.coordinates(transactional_id.as_str()) {
            return response.with_error_code(ResponseError::NotCoordinator.code());
        }
        let known = (request.producer_id.0 >= 0 && request.producer_epoch >= 0)
            .then_some((request.producer_id.0, request.producer_epoch));
        return match broker.txns.init_producer(
            broker,
            transactional_id.as_str(),
            request.transaction_timeout_ms,
            known,
        ) {
            Ok((id, epoch)) => response
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
            // PRODUCER_FENCED exists from v4 on (KIP-588).
            Err(ResponseError::ProducerFenced) if version < 4 => {
                response.with_error_code(ResponseError::InvalidProducerEpoch.code())
            }
            Err(e) => response.with_error_code(e.code()),
        };
    }
    // KIP-360: a producer that knows its id asks for the next epoch instead of a new id.
    if request.producer_id.0 >= 0
        && request.producer_epoch >= 0
        && request.producer_epoch < i16::MAX - 1
    {
        return response
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch + 1);
    }
    match broker.producer_ids.next() {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!("could not reserve producer ids: {e}");
            response.with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}
