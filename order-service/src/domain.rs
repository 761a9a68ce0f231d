//! Order domain types: validated input and the saga state machine.

use saga_shared::events::{LineItem, Topic};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Largest quantity of one line.
pub const MAX_QUANTITY: i64 = 1_000;
/// Largest unit price, in won.
pub const MAX_UNIT_PRICE: i64 = 10_000_000;
/// Most lines in one order.
pub const MAX_ITEMS: usize = 100;

/// Why an order request is invalid (answered 422).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("customer_id must not be empty")]
    EmptyCustomer,
    #[error("customer_id must be at most 64 characters of letters, digits, '-' or '_'")]
    BadCustomer,
    #[error("items must not be empty")]
    NoItems,
    #[error("an order has at most {MAX_ITEMS} items")]
    TooManyItems,
    #[error("items[{0}].sku must be 1 to 64 characters of letters, digits or '_'")]
    BadSku(usize),
    #[error("items[{0}].quantity must be between 1 and {MAX_QUANTITY}")]
    BadQuantity(usize),
    #[error("items[{0}].unit_price must be between 1 and {MAX_UNIT_PRICE}")]
    BadPrice(usize),
    #[error("currency must be KRW")]
    BadCurrency,
}

/// The body of `POST /orders`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    #[schema(example = "alice")]
    pub customer_id: String,
    pub items: Vec<LineItem>,
    /// Optional; only `KRW` is accepted.
    #[serde(default)]
    pub currency: Option<String>,
}

/// A validated order request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub customer_id: String,
    pub items: Vec<LineItem>,
    pub total: i64,
}

impl NewOrder {
    pub fn parse(req: OrderRequest) -> Result<Self, ValidationError> {
        let customer = req.customer_id.trim();
        if customer.is_empty() {
            return Err(ValidationError::EmptyCustomer);
        }
        if customer.len() > 64
            || !customer
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ValidationError::BadCustomer);
        }
        if let Some(c) = &req.currency
            && c != saga_shared::events::CURRENCY
        {
            return Err(ValidationError::BadCurrency);
        }
        if req.items.is_empty() {
            return Err(ValidationError::NoItems);
        }
        if req.items.len() > MAX_ITEMS {
            return Err(ValidationError::TooManyItems);
        }
        let mut total = 0i64;
        for (i, item) in req.items.iter().enumerate() {
            let sku_ok = !item.sku.is_empty()
                && item.sku.len() <= 64
                && item
                    .sku
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !sku_ok {
                return Err(ValidationError::BadSku(i));
            }
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                return Err(ValidationError::BadQuantity(i));
            }
            if !(1..=MAX_UNIT_PRICE).contains(&item.unit_price) {
                return Err(ValidationError::BadPrice(i));
            }
            // Bounded by MAX_ITEMS * MAX_QUANTITY * MAX_UNIT_PRICE = 1e12: no overflow.
            total += item.quantity * item.unit_price;
        }
        Ok(Self {
            customer_id: customer.to_owned(),
            items: req.items,
            total,
        })
    }
}

/// Where an order is in the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderStatus {
    Pending,
    Paid,
    Compensating,
    Confirmed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Paid => "PAID",
            OrderStatus::Compensating => "COMPENSATING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => OrderStatus::Pending,
            "PAID" => OrderStatus::Paid,
            "COMPENSATING" => OrderStatus::Compensating,
            "CONFIRMED" => OrderStatus::Confirmed,
            "CANCELLED" => OrderStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, OrderStatus::Confirmed | OrderStatus::Cancelled)
    }

    /// The status after event `topic`, or `None` when the event changes nothing.
    ///
    /// Events of different topics may arrive in any order (they travel on different partitions),
    /// so transitions only move forward and a later step implies the earlier ones: an
    /// `inventory.updated` seen while still PENDING means the payment went through too.
    pub fn on_event(self, topic: Topic) -> Option<Self> {
        use OrderStatus::*;
        let next = match (self, topic) {
            (Pending, Topic::PaymentCompleted) => Paid,
            (Pending, Topic::PaymentFailed) => Cancelled,
            (Pending | Paid, Topic::InventoryUpdated) => Confirmed,
            (Pending | Paid, Topic::InventoryFailed) => Compensating,
            (Pending | Paid | Compensating, Topic::PaymentRefunded) => Cancelled,
            _ => return None,
        };
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(customer: &str, items: Vec<(&str, i64, i64)>) -> OrderRequest {
        OrderRequest {
            customer_id: customer.into(),
            items: items
                .into_iter()
                .map(|(s, q, p)| LineItem {
                    sku: s.into(),
                    quantity: q,
                    unit_price: p,
                })
                .collect(),
            currency: None,
        }
    }

    #[test]
    fn valid_order_has_its_total() {
        let o =
            NewOrder::parse(req("alice", vec![("LATTE", 2, 5000), ("MOCHA", 1, 5500)])).unwrap();
        assert_eq!(o.total, 15500);
    }

    #[test]
    fn invalid_orders_are_rejected_with_the_reason() {
        use ValidationError::*;
        let cases = [
            (req("", vec![("LATTE", 1, 1)]), EmptyCustomer),
            (req("   ", vec![("LATTE", 1, 1)]), EmptyCustomer),
            (req("a b", vec![("LATTE", 1, 1)]), BadCustomer),
            (req("alice", vec![]), NoItems),
            (req("alice", vec![("", 1, 1)]), BadSku(0)),
            (
                req("alice", vec![("LATTE", 1, 1), ("LATTE", 0, 1)]),
                BadQuantity(1),
            ),
            (req("alice", vec![("LATTE", -3, 1)]), BadQuantity(0)),
            (req("alice", vec![("LATTE", 1, 0)]), BadPrice(0)),
            (
                req("alice", vec![("LATTE", 1, MAX_UNIT_PRICE + 1)]),
                BadPrice(0),
            ),
            (
                req("alice", vec![("LATTE", MAX_QUANTITY + 1, 1)]),
                BadQuantity(0),
            ),
        ];
        for (r, expected) in cases {
            assert_eq!(NewOrder::parse(r), Err(expected));
        }
        let many = req("alice", (0..=MAX_ITEMS).map(|_| ("LATTE", 1, 1)).collect());
        assert_eq!(NewOrder::parse(many), Err(TooManyItems));
        let mut r = req("alice", vec![("LATTE", 1, 1)]);
        r.currency = Some("USD".into());
        assert_eq!(NewOrder::parse(r), Err(BadCurrency));
    }

    #[test]
    fn saga_transitions_follow_the_design() {
        use OrderStatus::*;
        assert_eq!(Pending.on_event(Topic::PaymentCompleted), Some(Paid));
        assert_eq!(Paid.on_event(Topic::InventoryUpdated), Some(Confirmed));
        assert_eq!(Pending.on_event(Topic::PaymentFailed), Some(Cancelled));
        assert_eq!(Paid.on_event(Topic::InventoryFailed), Some(Compensating));
        assert_eq!(
            Compensating.on_event(Topic::PaymentRefunded),
            Some(Cancelled)
        );
        // Out of order arrival still ends in the right place, and terminals stay terminal.
        assert_eq!(Pending.on_event(Topic::InventoryUpdated), Some(Confirmed));
        assert_eq!(Confirmed.on_event(Topic::PaymentCompleted), None);
        assert_eq!(Cancelled.on_event(Topic::InventoryFailed), None);
        assert_eq!(Cancelled.on_event(Topic::PaymentRefunded), None);
        for s in [Pending, Paid, Compensating, Confirmed, Cancelled] {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
    }
}
