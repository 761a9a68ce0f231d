//! Topic names and the JSON payload of every event in the saga.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The saga's event topics: the contract between the services. A service declares the topics it
/// consumes as `Topic`s and matches on them without a catch-all, so a topic added here makes
/// every service decide about it before it compiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    OrderCreated,
    PaymentCompleted,
    PaymentFailed,
    InventoryUpdated,
    InventoryFailed,
    PaymentRefunded,
    OrderCancelled,
}

impl Topic {
    /// Every topic, in the order of the saga.
    pub const ALL: [Topic; 7] = [
        Topic::OrderCreated,
        Topic::PaymentCompleted,
        Topic::PaymentFailed,
        Topic::InventoryUpdated,
        Topic::InventoryFailed,
        Topic::PaymentRefunded,
        Topic::OrderCancelled,
    ];

    /// The topic's name on the broker, which is also the CloudEvents `ce_type` of its events.
    pub const fn name(self) -> &'static str {
        match self {
            Topic::OrderCreated => "order.created",
            Topic::PaymentCompleted => "payment.completed",
            Topic::PaymentFailed => "payment.failed",
            Topic::InventoryUpdated => "inventory.updated",
            Topic::InventoryFailed => "inventory.failed",
            Topic::PaymentRefunded => "payment.refunded",
            Topic::OrderCancelled => "order.cancelled",
        }
    }

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

/// One line of an order; amounts are in minor units of the currency (KRW has none, so won).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    pub sku: String,
    pub quantity: i64,
    pub unit_price: i64,
}

/// `order.created`: an order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub customer_id: String,
    pub items: Vec<LineItem>,
    pub total: i64,
    pub currency: String,
}

/// `payment.completed`: the wallet was charged. Carries the items so inventory needs no lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCompleted {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub customer_id: String,
    pub amount: i64,
    pub currency: String,
    pub items: Vec<LineItem>,
}

/// `payment.failed`: the charge was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub order_id: Uuid,
    pub customer_id: String,
    pub reason: String,
}

/// `inventory.updated`: stock for every line was reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryUpdated {
    pub order_id: Uuid,
    pub items: Vec<LineItem>,
}

/// `inventory.failed`: some line could not be reserved; nothing was reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryFailed {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub reason: String,
}

/// `payment.refunded`: compensation, the charge was returned to the wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub customer_id: String,
    pub amount: i64,
    /// Why the saga compensated (the reason of the `inventory.failed` that caused the refund).
    pub reason: String,
}

/// `order.cancelled`: terminal failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub customer_id: String,
    pub reason: String,
}

/// An event payload: knows its topic and the order it belongs to (the record key).
pub trait Event: Serialize + serde::de::DeserializeOwned {
    /// Its topic, which is also its CloudEvents `ce_type`.
    const TOPIC: Topic;
    fn order_id(&self) -> Uuid;
}

macro_rules! event {
    ($ty:ty, $topic:expr) => {
        impl Event for $ty {
            const TOPIC: Topic = $topic;
            fn order_id(&self) -> Uuid {
                self.order_id
            }
        }
    };
}

event!(OrderCreated, Topic::OrderCreated);
event!(PaymentCompleted, Topic::PaymentCompleted);
event!(PaymentFailed, Topic::PaymentFailed);
event!(InventoryUpdated, Topic::InventoryUpdated);
event!(InventoryFailed, Topic::InventoryFailed);
event!(PaymentRefunded, Topic::PaymentRefunded);
event!(OrderCancelled, Topic::OrderCancelled);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_created_round_trips_and_rejects_unknown_line_fields() {
        let ev = OrderCreated {
            order_id: Uuid::now_v7(),
            customer_id: "alice".into(),
            items: vec![LineItem {
                sku: "LATTE".into(),
                quantity: 2,
                unit_price: 5000,
            }],
            total: 10000,
            currency: CURRENCY.into(),
        };
        let json = serde_json::to_vec(&ev).unwrap();
        assert_eq!(serde_json::from_slice::<OrderCreated>(&json).unwrap(), ev);
        let bad = r#"{"sku":"LATTE","quantity":1,"unit_price":1,"extra":1}"#;
        assert!(serde_json::from_str::<LineItem>(bad).is_err());
    }

    #[test]
    fn dlq_topic_name() {
        assert_eq!(topics::dlq(topics::ORDER_CREATED), "order.created.dlq");
    }
}
