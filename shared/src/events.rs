//! Topic names and the JSON payload of every event in the saga.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{CustomerId, Quantity, Sku, Won};

impl Topic {
    /// The topic named `name`, if it is one of the saga's.
    pub fn parse(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Its dead-letter topic.
    pub fn dlq(self) -> String {
        topics::dlq(self.name())
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A topic in JSON is its name.
impl Serialize for Topic {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Topic {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Topic::parse(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{name:?} is not a topic of the saga ({})",
                topics::ALL.join(", ")
            ))
        })
    }
}

/// Topic names as strings (from [`Topic`]); the CloudEvents `ce_type` of an event is its topic.
pub mod topics {
    use super::Topic;

    pub const ORDER_CREATED: &str = Topic::OrderCreated.name();
    pub const PAYMENT_COMPLETED: &str = Topic::PaymentCompleted.name();
    pub const PAYMENT_FAILED: &str = Topic::PaymentFailed.name();
    pub const INVENTORY_UPDATED: &str = Topic::InventoryUpdated.name();
    pub const INVENTORY_FAILED: &str = Topic::InventoryFailed.name();
    pub const PAYMENT_REFUNDED: &str = Topic::PaymentRefunded.name();
    pub const ORDER_CANCELLED: &str = Topic::OrderCancelled.name();

    /// Every event topic of the saga (without the dead-letter topics): [`Topic::ALL`]'s names.
    pub const ALL: [&str; Topic::ALL.len()] = {
        let mut names = [""; Topic::ALL.len()];
        let mut i = 0;
        while i < names.len() {
            names[i] = Topic::ALL[i].name();
            i += 1;
        }
        names
    };

    /// The dead-letter topic of `topic`.
    pub fn dlq(topic: &str) -> String {
        format!("{topic}.dlq")
    }

    /// Every event topic followed by its dead-letter topic.
    pub fn with_dlqs() -> Vec<String> {
        ALL.iter().flat_map(|t| [t.to_string(), dlq(t)]).collect()
    }
}

/// The only currency the demo wallets hold.
pub const CURRENCY: &str = "KRW";

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: Won,
}

impl LineItem {
    /// `quantity * unit_price`, if it is still an amount.
    pub fn amount(&self) -> Option<Won> {
        self.unit_price.times(self.quantity)
    }
}

/// What `items` add up to; `None` when there are none or the sum is not an amount.
pub fn lines_total(items: &[LineItem]) -> Option<Won> {
    let (first, rest) = items.split_first()?;
    rest.iter()
        .try_fold(first.amount()?, |sum, item| sum.plus(item.amount()?))
}

/// `order.created`: an order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub customer_id: CustomerId,
    pub items: Vec<LineItem>,
    pub total: Won,
    pub currency: String,
}

/// `payment.completed`: the wallet was charged. Carries the items so inventory needs no lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentCompleted {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub customer_id: CustomerId,
    pub amount: Won,
    pub currency: String,
    pub items: Vec<LineItem>,
}

/// `payment.failed`: the charge was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentFailed {
    pub order_id: Uuid,
    pub customer_id: CustomerId,
    pub reason: String,
}

/// `inventory.updated`: stock for every line was reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryUpdated {
    pub order_id: Uuid,
    pub items: Vec<LineItem>,
}

/// `inventory.failed`: some line could not be reserved; nothing was reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryFailed {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub reason: String,
}

/// `payment.refunded`: compensation, the charge was returned to the wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentRefunded {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub customer_id: CustomerId,
    pub amount: Won,
    /// Why the saga compensated (the reason of the `inventory.failed` that caused the refund).
    pub reason: String,
}

/// `order.cancelled`: terminal failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub customer_id: CustomerId,
    pub reason: String,
}

/// An event payload: knows its topic and the order it belongs to (the record key).
pub trait Event: Serialize + serde::de::DeserializeOwned {
    /// Its topic, which is also its CloudEvents `ce_type`.
    const TOPIC: Topic;
    fn order_id(&self) -> Uuid;
}

/// The saga's contract from one list: each event type with its topic's name. It declares the
/// [`Topic`] enum, [`Topic::ALL`] and [`Topic::name`], each payload type's [`Event::TOPIC`], and
/// [`SagaEvent`], the decoded form of a record.
macro_rules! saga_contract {
    ($($name:ident => $topic:literal),* $(,)?) => {
        /// The saga's event topics: the contract between the services. A service declares the
        /// topics it consumes as `Topic`s and matches on [`SagaEvent`] without a catch-all, so a
        /// topic added here makes every service decide about it before it compiles.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Topic {
            $($name,)*
        }

        impl Topic {
            /// Every topic, in the order of the saga.
            pub const ALL: [Topic; [$(Topic::$name),*].len()] = [$(Topic::$name),*];

            /// The topic's name on the broker, which is also the CloudEvents `ce_type` of its
            /// events.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Topic::$name => $topic,)*
                }
            }

            /// The JSON Schema of the topic's events, generated from the payload type
            /// ([`crate::schemas`]).
            pub fn json_schema(self) -> serde_json::Value {
                match self {
                    $(Topic::$name => crate::schemas::of::<$name>(),)*
                }
            }
        }

        $(impl Event for $name {
            const TOPIC: Topic = Topic::$name;
            fn order_id(&self) -> Uuid {
                self.order_id
            }
        }

        impl From<$name> for SagaEvent {
            fn from(e: $name) -> Self {
                SagaEvent::$name(e)
            }
        })*

        /// A record's payload decoded by its topic: what a service's handler receives.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum SagaEvent {
            $($name($name),)*
        }

        impl SagaEvent {
            /// Decodes `payload` as the event type of `topic`: every field's rule is checked
            /// (see [`crate::domain`]), so a forged value fails here.
            pub fn decode(topic: Topic, payload: &[u8]) -> Result<Self, serde_json::Error> {
                Ok(match topic {
                    $(Topic::$name => SagaEvent::$name(serde_json::from_slice(payload)?),)*
                })
            }

            pub fn topic(&self) -> Topic {
                match self {
                    $(SagaEvent::$name(_) => Topic::$name,)*
                }
            }

            /// The order the event belongs to (also the record key and `ce_correlationid`).
            pub fn order_id(&self) -> Uuid {
                match self {
                    $(SagaEvent::$name(e) => e.order_id,)*
                }
            }
        }
    };
}

saga_contract! {
    OrderCreated => "order.created",
    PaymentCompleted => "payment.completed",
    PaymentFailed => "payment.failed",
    InventoryUpdated => "inventory.updated",
    InventoryFailed => "inventory.failed",
    PaymentRefunded => "payment.refunded",
    OrderCancelled => "order.cancelled",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_created_round_trips_and_rejects_unknown_line_fields() {
        let ev = OrderCreated {
            order_id: Uuid::now_v7(),
            customer_id: CustomerId::parse("alice").unwrap(),
            items: vec![LineItem {
                sku: Sku::parse("LATTE").unwrap(),
                quantity: Quantity::parse(2).unwrap(),
                unit_price: Won::parse(5000).unwrap(),
            }],
            total: Won::parse(10000).unwrap(),
            currency: CURRENCY.into(),
        };
        let json = serde_json::to_vec(&ev).unwrap();
        assert_eq!(serde_json::from_slice::<OrderCreated>(&json).unwrap(), ev);
        assert_eq!(
            SagaEvent::decode(Topic::OrderCreated, &json).unwrap(),
            SagaEvent::OrderCreated(ev.clone())
        );
        assert_eq!(lines_total(&ev.items), Some(ev.total));
        // The same bytes are not a payment.completed; a forged quantity is not an order.
        assert!(SagaEvent::decode(Topic::PaymentCompleted, &json).is_err());
        let forged = String::from_utf8(json)
            .unwrap()
            .replace(r#""quantity":2"#, r#""quantity":0"#);
        assert!(SagaEvent::decode(Topic::OrderCreated, forged.as_bytes()).is_err());
        let bad = r#"{"sku":"LATTE","quantity":1,"unit_price":1,"extra":1}"#;
        assert!(serde_json::from_str::<LineItem>(bad).is_err());
    }

    #[test]
    fn dlq_topic_name() {
        assert_eq!(topics::dlq(topics::ORDER_CREATED), "order.created.dlq");
    }
}
