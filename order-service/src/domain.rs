//! Order domain types: validated input, its pricing, and the saga state machine.

use std::collections::BTreeMap;

use saga_shared::domain::{CustomerId, DomainError, MAX_ITEMS, MAX_UNIT_PRICE, Quantity, Sku, Won};
use saga_shared::events::{LineItem, Topic, lines_total};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Why an order request is invalid (answered 422). The value rules are the shared domain types'.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("{0}")]
    Customer(DomainError),
    #[error("items must not be empty")]
    NoItems,
    #[error("an order has at most {MAX_ITEMS} items")]
    TooManyItems,
    /// Line `index` breaks a rule.
    #[error("items[{index}].{error}")]
    Line { index: usize, error: DomainError },
    #[error("items[{0}].unit_price must be between 1 and {MAX_UNIT_PRICE}")]
    BadPrice(usize),
    #[error("currency must be KRW")]
    BadCurrency,
    /// The catalogue lists no product `sku`.
    #[error("items[{index}].sku: {sku} is not in the catalogue")]
    NotInCatalogue { index: usize, sku: Sku },
    /// The client sent a price that is not the catalogue's.
    #[error(
        "items[{index}].unit_price: {given} is not the price of {sku} ({price}); \
         leave unit_price out to be charged the catalogue's price"
    )]
    NotThePrice {
        index: usize,
        sku: Sku,
        given: i64,
        price: i64,
    },
}

/// The body of `POST /orders`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    #[schema(example = "alice")]
    pub customer_id: String,
    pub items: Vec<LineRequest>,
    /// Optional; only `KRW` is accepted.
    #[serde(default)]
    pub currency: Option<String>,
}

/// One line of `POST /orders`, as sent (checked by [`OrderDraft::parse`]).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    #[schema(example = "LATTE")]
    pub sku: String,
    /// 1 to 1000.
    #[schema(example = 2)]
    pub quantity: i64,
    /// Optional: the order service prices each line from its copy of the catalogue. If given
    /// (in won, 1 to 10,000,000), it must be the catalogue's price.
    #[schema(example = 5000)]
    #[serde(default)]
    pub unit_price: Option<i64>,
}

/// A validated order request, not priced yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderDraft {
    pub customer_id: CustomerId,
    pub items: Vec<DraftLine>,
}

/// A line of a draft: the price, if the client sent one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DraftLine {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: Option<Won>,
}

/// A priced order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub customer_id: CustomerId,
    pub items: Vec<LineItem>,
    pub total: Won,
}

impl OrderDraft {
    pub fn parse(req: OrderRequest) -> Result<Self, ValidationError> {
        let customer_id = CustomerId::parse(&req.customer_id).map_err(ValidationError::Customer)?;
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
        let items = req
            .items
            .iter()
            .enumerate()
            .map(|(index, line)| {
                let at = |error| ValidationError::Line { index, error };
                let sku = Sku::parse(&line.sku).map_err(at)?;
                let quantity = Quantity::parse(line.quantity).map_err(at)?;
                let unit_price = line
                    .unit_price
                    .map(|p| {
                        Won::parse(p)
                            .ok()
                            .filter(|p| p.get() <= MAX_UNIT_PRICE)
                            .ok_or(ValidationError::BadPrice(index))
                    })
                    .transpose()?;
                Ok(DraftLine {
                    sku,
                    quantity,
                    unit_price,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { customer_id, items })
    }

    /// The SKUs it orders.
    pub fn skus(&self) -> Vec<&str> {
        self.items.iter().map(|l| l.sku.as_str()).collect()
    }

    /// The order priced from `prices` (the catalogue's unit price of each SKU it lists): a line
    /// whose product is not listed, or whose given price is not the catalogue's, is refused.
    pub fn priced(self, prices: &BTreeMap<String, i64>) -> Result<NewOrder, ValidationError> {
        let items = self
            .items
            .into_iter()
            .enumerate()
            .map(|(index, line)| {
                let price = prices
                    .get(line.sku.as_str())
                    .and_then(|&p| Won::parse(p).ok().filter(|p| p.get() <= MAX_UNIT_PRICE))
                    .ok_or_else(|| ValidationError::NotInCatalogue {
                        index,
                        sku: line.sku.clone(),
                    })?;
                match line.unit_price {
                    Some(given) if given != price => Err(ValidationError::NotThePrice {
                        index,
                        sku: line.sku,
                        given: given.get(),
                        price: price.get(),
                    }),
                    _ => Ok(LineItem {
                        sku: line.sku,
                        quantity: line.quantity,
                        unit_price: price,
                    }),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        // At most MAX_ITEMS lines of MAX_QUANTITY at MAX_UNIT_PRICE: always an amount.
        let total = lines_total(&items).expect("bounded lines add up to an amount");
        Ok(NewOrder {
            customer_id: self.customer_id,
            items,
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

    use saga_shared::domain::MAX_QUANTITY;

    fn req(customer: &str, items: Vec<(&str, i64, i64)>) -> OrderRequest {
        OrderRequest {
            customer_id: customer.into(),
            items: items
                .into_iter()
                .map(|(s, q, p)| LineRequest {
                    sku: s.into(),
                    quantity: q,
                    unit_price: Some(p),
                })
                .collect(),
            currency: None,
        }
    }

    fn menu() -> BTreeMap<String, i64> {
        [("LATTE".to_owned(), 5000), ("MOCHA".to_owned(), 5500)].into()
    }

    #[test]
    fn valid_order_has_its_total() {
        let draft =
            OrderDraft::parse(req("alice", vec![("LATTE", 2, 5000), ("MOCHA", 1, 5500)])).unwrap();
        assert_eq!(draft.priced(&menu()).unwrap().total.get(), 15500);
    }

    #[test]
    fn the_catalogue_prices_an_order_and_refuses_another_price() {
        let mut unpriced = req("alice", vec![("LATTE", 2, 0), ("MOCHA", 1, 0)]);
        unpriced.items.iter_mut().for_each(|l| l.unit_price = None);
        let order = OrderDraft::parse(unpriced)
            .unwrap()
            .priced(&menu())
            .unwrap();
        assert_eq!(order.total.get(), 15500);
        assert_eq!(order.items[1].unit_price.get(), 5500);
        let cheap = OrderDraft::parse(req("alice", vec![("MOCHA", 1, 5500), ("LATTE", 1, 1)]));
        let sku = Sku::parse("LATTE").unwrap();
        assert_eq!(
            cheap.unwrap().priced(&menu()),
            Err(ValidationError::NotThePrice {
                index: 1,
                sku: sku.clone(),
                given: 1,
                price: 5000
            })
        );
        let unknown = OrderDraft::parse(req("alice", vec![("TEA", 1, 5000)])).unwrap();
        assert_eq!(
            unknown.priced(&menu()),
            Err(ValidationError::NotInCatalogue {
                index: 0,
                sku: Sku::parse("TEA").unwrap()
            })
        );
    }

    #[test]
    fn invalid_orders_are_rejected_with_the_reason() {
        use ValidationError::*;
        let line = |index, error| Line { index, error };
        let cases = [
            (
                req("", vec![("LATTE", 1, 1)]),
                Customer(DomainError::EmptyCustomer),
            ),
            (
                req("   ", vec![("LATTE", 1, 1)]),
                Customer(DomainError::EmptyCustomer),
            ),
            (
                req("a b", vec![("LATTE", 1, 1)]),
                Customer(DomainError::BadCustomer),
            ),
            (req("alice", vec![]), NoItems),
            (req("alice", vec![("", 1, 1)]), line(0, DomainError::BadSku)),
            (
                req("alice", vec![("LATTE", 1, 1), ("LATTE", 0, 1)]),
                line(1, DomainError::BadQuantity),
            ),
            (
                req("alice", vec![("LATTE", -3, 1)]),
                line(0, DomainError::BadQuantity),
            ),
            (req("alice", vec![("LATTE", 1, 0)]), BadPrice(0)),
            (
                req("alice", vec![("LATTE", 1, MAX_UNIT_PRICE + 1)]),
                BadPrice(0),
            ),
            (
                req("alice", vec![("LATTE", MAX_QUANTITY + 1, 1)]),
                line(0, DomainError::BadQuantity),
            ),
        ];
        for (r, expected) in cases {
            assert_eq!(OrderDraft::parse(r), Err(expected));
        }
        let many = req("alice", (0..=MAX_ITEMS).map(|_| ("LATTE", 1, 1)).collect());
        assert_eq!(OrderDraft::parse(many), Err(TooManyItems));
        let mut r = req("alice", vec![("LATTE", 1, 1)]);
        r.currency = Some("USD".into());
        assert_eq!(OrderDraft::parse(r), Err(BadCurrency));
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
