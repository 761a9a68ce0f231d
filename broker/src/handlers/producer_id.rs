//! InitProducerId: ids for idempotent producers (transactions are not supported).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;

use kafka_protocol::messages::ResponseKind;

use super::{Reply, Route};

pub(super) static ROUTES: &[Route] = &[route!(InitProducerId, 0..=4, disk, |b, r, _c| {
    Reply::send(ResponseKind::InitProducerId(handle(b, r)))
})];

pub fn handle(broker: &Broker, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
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
