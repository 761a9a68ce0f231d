//! Topic names and the JSON payload of every event in the saga.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Topic names; the CloudEvents `ce_type` of an event is its topic.
pub mod topics {
    pub const ORDER_CREATED: &str = "order.created";
    pub const PAYMENT_COMPLETED: &str = "payment.completed";
    pub const PAYMENT_FAILED: &str = "payment.failed";
    pub const INVENTORY_UPDATED: &str = "inventory.updated";
    pub const INVENTORY_FAILED: &str = "inventory.failed";
    pub const PAYMENT_REFUNDED: &str = "payment.refunded";
    pub const ORDER_CANCELLED: &str = "order.cancelled";

    /// Every event topic of the saga (without the dead-letter topics).
    pub const ALL: [&str; 7] = [
        ORDER_CREATED,
        PAYMENT_COMPLETED,
        PAYMENT_FAILED,
        INVENTORY_UPDATED,
        INVENTORY_FAILED,
        PAYMENT_REFUNDED,
        ORDER_CANCELLED,
    ];

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
    const TOPIC: &'static str;
    fn order_id(&self) -> Uuid;
}

macro_rules! event {
    ($ty:ty, $topic:expr) => {
        impl Event for $ty {
            const TOPIC: &'static str = $topic;
            fn order_id(&self) -> Uuid {
                self.order_id
            }
        }
    };
}

event!(OrderCreated, topics::ORDER_CREATED);
event!(PaymentCompleted, topics::PAYMENT_COMPLETED);
event!(PaymentFailed, topics::PAYMENT_FAILED);
event!(InventoryUpdated, topics::INVENTORY_UPDATED);
event!(InventoryFailed, topics::INVENTORY_FAILED);
event!(PaymentRefunded, topics::PAYMENT_REFUNDED);
event!(OrderCancelled, topics::ORDER_CANCELLED);

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
