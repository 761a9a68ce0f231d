//! The CloudEvents 1.0 binary-mode envelope: event metadata carried as Kafka record headers.

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const SPECVERSION: &str = "1.0";
pub const CONTENT_TYPE: &str = "application/json";

/// Header names (the Kafka protocol binding of CloudEvents prefixes attributes with `ce_`).
pub mod header {
    pub const SPECVERSION: &str = "ce_specversion";
    pub const ID: &str = "ce_id";
    pub const TYPE: &str = "ce_type";
    pub const SOURCE: &str = "ce_source";
    pub const TIME: &str = "ce_time";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const CORRELATION_ID: &str = "ce_correlationid";
    pub const CAUSATION_ID: &str = "ce_causationid";
    pub const TRACEPARENT: &str = "traceparent";
}

/// Why a record's headers are not a valid envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("missing header `{0}`")]
    Missing(&'static str),
    #[error("header `{name}` is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Metadata of one event. `id` is the idempotency key consumers record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: Uuid,
    /// The CloudEvents type, which is the topic name.
    pub event_type: String,
    /// The producing service, e.g. `/order-service`.
    pub source: String,
    pub time: DateTime<Utc>,
    /// The order the event belongs to.
    pub correlation_id: Uuid,
    /// The `ce_id` of the event this one reacts to; none for the first event of a saga.
    pub causation_id: Option<Uuid>,
    /// W3C trace context: one trace id for the whole saga, a new span id per event.
    pub traceparent: String,
}

impl Envelope {
    /// The envelope of `E`, the first event of a saga published by `source`: its `ce_type` is
    /// `E`'s topic, so the two cannot disagree.
    pub fn first<E: crate::events::Event>(source: &str, correlation_id: Uuid) -> Self {
        Self::new(E::TOPIC.name(), source, correlation_id)
    }

    /// The envelope of `E`, published by `source` in reaction to this event (same saga and
    /// trace, caused by this one); its `ce_type` is `E`'s topic.
    pub fn next<E: crate::events::Event>(&self, source: &str) -> Self {
        self.caused(E::TOPIC.name(), source)
    }

    /// The first event of a saga: a fresh trace. (Services use [`Envelope::first`]; this one
    /// takes any type, for tools and tests that forge records.)
    pub fn new(event_type: &str, source: &str, correlation_id: Uuid) -> Self {
        let trace_id = Uuid::new_v4().simple().to_string();
        Self {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            source: source.to_owned(),
            time: Utc::now(),
            correlation_id,
            causation_id: None,
            traceparent: format!("00-{trace_id}-{}-01", new_span_id()),
        }
    }

    /// An event caused by `self`: same correlation and trace, `causation_id` = `self.id`.
    pub fn caused(&self, event_type: &str, source: &str) -> Self {
        let trace_id = self
            .traceparent
            .split('-')
            .nth(1)
            .filter(|t| t.len() == 32)
            .map(str::to_owned)
            .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
        Self {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            source: source.to_owned(),
            time: Utc::now(),
            correlation_id: self.correlation_id,
            causation_id: Some(self.id),
            traceparent: format!("00-{trace_id}-{}-01", new_span_id()),
        }
    }

    /// The headers as name/value pairs, in the order they are written.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = vec![
            (header::SPECVERSION.into(), SPECVERSION.into()),
            (header::ID.into(), self.id.to_string()),
            (header::TYPE.into(), self.event_type.clone()),
            (header::SOURCE.into(), self.source.clone()),
            (
                header::TIME.into(),
                self.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
            (header::CONTENT_TYPE.into(), CONTENT_TYPE.into()),
            (
                header::CORRELATION_ID.into(),
                self.correlation_id.to_string(),
            ),
        ];
        if let Some(c) = self.causation_id {
            pairs.push((header::CAUSATION_ID.into(), c.to_string()));
        }
        pairs.push((header::TRACEPARENT.into(), self.traceparent.clone()));
        pairs
    }

    pub fn to_headers(&self) -> OwnedHeaders {
        pairs_to_headers(&self.header_pairs())
    }

    /// Reads and validates the envelope from record headers.
    pub fn from_headers<H: Headers>(headers: &H) -> Result<Self, EnvelopeError> {
        let get =
            |name: &'static str| -> Result<Option<&str>, EnvelopeError> {
                match headers.iter().find(|h| h.key == name) {
                    None => Ok(None),
                    Some(Header { value: None, .. }) => Ok(None),
                    Some(Header { value: Some(v), .. }) => std::str::from_utf8(v)
                        .map(Some)
                        .map_err(|_| EnvelopeError::Invalid {
                            name,
                            reason: "not UTF-8".into(),
                        }),
                }
            };
        let req = |name: &'static str| get(name)?.ok_or(EnvelopeError::Missing(name));
        let uuid = |name: &'static str, v: &str| {
            Uuid::parse_str(v).map_err(|e| EnvelopeError::Invalid {
                name,
                reason: e.to_string(),
            })
        };
        let spec = req(header::SPECVERSION)?;
        if spec != SPECVERSION {
            return Err(EnvelopeError::Invalid {
                name: header::SPECVERSION,
                reason: format!("unsupported version {spec:?}"),
            });
        }
        if let Some(ct) = get(header::CONTENT_TYPE)?
            && !ct.starts_with(CONTENT_TYPE)
        {
            return Err(EnvelopeError::Invalid {
                name: header::CONTENT_TYPE,
                reason: format!("expected {CONTENT_TYPE}, got {ct:?}"),
            });
        }
        let time = DateTime::parse_from_rfc3339(req(header::TIME)?)
            .map_err(|e| EnvelopeError::Invalid {
                name: header::TIME,
                reason: e.to_string(),
            })?
            .with_timezone(&Utc);
        Ok(Self {
            id: uuid(header::ID, req(header::ID)?)?,
            event_type: req(header::TYPE)?.to_owned(),
            source: req(header::SOURCE)?.to_owned(),
            time,
            correlation_id: uuid(header::CORRELATION_ID, req(header::CORRELATION_ID)?)?,
            causation_id: get(header::CAUSATION_ID)?
                .map(|v| uuid(header::CAUSATION_ID, v))
                .transpose()?,
            traceparent: get(header::TRACEPARENT)?.unwrap_or_default().to_owned(),
        })
    }
}

fn new_span_id() -> String {
    Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// Builds Kafka headers from name/value pairs.
pub fn pairs_to_headers(pairs: &[(String, String)]) -> OwnedHeaders {
    pairs
        .iter()
        .fold(OwnedHeaders::new_with_capacity(pairs.len()), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        })
}

/// Copies record headers into name/value pairs (values lossily decoded as UTF-8).
pub fn headers_to_pairs<H: Headers>(headers: &H) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                h.value
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_causation_chains() {
        let first = Envelope::new("order.created", "/order-service", Uuid::now_v7());
        assert_eq!(first.causation_id, None);
        let back = Envelope::from_headers(&first.to_headers()).unwrap();
        assert_eq!(back.id, first.id);
        assert_eq!(back.correlation_id, first.correlation_id);
        assert_eq!(back.traceparent, first.traceparent);

        let next = first.caused("payment.completed", "/payment-service");
        assert_eq!(next.causation_id, Some(first.id));
        assert_eq!(next.correlation_id, first.correlation_id);
        assert_eq!(
            next.traceparent.split('-').nth(1),
            first.traceparent.split('-').nth(1)
        );
        assert_ne!(next.traceparent, first.traceparent);
        assert_eq!(next.traceparent.len(), 55);
    }

    #[test]
    fn typed_envelopes_take_their_type_from_the_event() {
        use crate::events::{OrderCreated, PaymentCompleted};
        let first = Envelope::first::<OrderCreated>("/order-service", Uuid::now_v7());
        assert_eq!(first.event_type, "order.created");
        assert_eq!(first.source, "/order-service");
        let next = first.next::<PaymentCompleted>("/payment-service");
        assert_eq!(next.event_type, "payment.completed");
        assert_eq!(next.causation_id, Some(first.id));
        assert_eq!(next.correlation_id, first.correlation_id);
    }

    #[test]
    fn missing_or_bad_headers_are_reported() {
        let env = Envelope::new("order.created", "/order-service", Uuid::now_v7());
        let mut pairs = env.header_pairs();
        pairs.retain(|(k, _)| k != header::ID);
        assert_eq!(
            Envelope::from_headers(&pairs_to_headers(&pairs)),
            Err(EnvelopeError::Missing(header::ID))
        );
        let mut pairs = env.header_pairs();
        pairs[1].1 = "not-a-uuid".into();
        assert!(matches!(
            Envelope::from_headers(&pairs_to_headers(&pairs)),
            Err(EnvelopeError::Invalid {
                name: header::ID,
                ..
            })
        ));
        assert!(Envelope::from_headers(&OwnedHeaders::new()).is_err());
    }
}
