//! The shop's value types: a customer id, a SKU, a quantity, an amount in won.
//!
//! Each has one `parse` holding its rule. HTTP handlers call it on their input (and answer 400 or
//! 422 with the error's text), and the event payloads are made of these types, so an event that
//! breaks a rule (a forged quantity, an empty SKU) fails when it is decoded and goes to the DLQ
//! before any handler sees it.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Largest quantity of one line.
pub const MAX_QUANTITY: i64 = 1_000;
/// Largest unit price of a line, in won.
pub const MAX_UNIT_PRICE: i64 = 10_000_000;
/// Most lines in one order.
pub const MAX_ITEMS: usize = 100;
/// Largest amount: the most an order can cost (`MAX_ITEMS * MAX_QUANTITY * MAX_UNIT_PRICE`).
pub const MAX_WON: i64 = MAX_ITEMS as i64 * MAX_QUANTITY * MAX_UNIT_PRICE;

/// A value that breaks its type's rule; the text is written for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("customer_id must not be empty")]
    EmptyCustomer,
    #[error("customer_id must be at most 64 characters of letters, digits, '-' or '_'")]
    BadCustomer,
    #[error("sku must be 1 to 64 characters of letters, digits or '_'")]
    BadSku,
    #[error("quantity must be between 1 and {MAX_QUANTITY}")]
    BadQuantity,
    #[error("an amount must be between 1 and {MAX_WON} won")]
    BadAmount,
}

/// Who places orders and owns a wallet: 1 to 64 of `[A-Za-z0-9_-]`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema, sqlx::Type,
)]
#[sqlx(transparent)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "alice", pattern = "^[A-Za-z0-9_-]{1,64}$")]
pub struct CustomerId(String);

impl CustomerId {
    /// Surrounding blanks are dropped (they are never part of an id).
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(DomainError::EmptyCustomer);
        }
        let ok = s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        ok.then(|| Self(s.to_owned()))
            .ok_or(DomainError::BadCustomer)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product's stock-keeping unit: 1 to 64 of `[A-Za-z0-9_]`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema, sqlx::Type,
)]
#[sqlx(transparent)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "LATTE", pattern = "^[A-Za-z0-9_]{1,64}$")]
pub struct Sku(String);

impl Sku {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        ok.then(|| Self(s.to_owned())).ok_or(DomainError::BadSku)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Units of one line: 1 to [`MAX_QUANTITY`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema, sqlx::Type,
)]
#[sqlx(transparent)]
#[serde(try_from = "i64", into = "i64")]
#[schema(value_type = i64, example = 2, minimum = 1, maximum = 1000)]
pub struct Quantity(i64);

impl Quantity {
    pub fn parse(n: i64) -> Result<Self, DomainError> {
        (1..=MAX_QUANTITY)
            .contains(&n)
            .then_some(Self(n))
            .ok_or(DomainError::BadQuantity)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// An amount of money in won (KRW has no minor unit): 1 to [`MAX_WON`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema, sqlx::Type,
)]
#[sqlx(transparent)]
#[serde(try_from = "i64", into = "i64")]
#[schema(value_type = i64, example = 5000, minimum = 1, maximum = 1_000_000_000_000i64)]
pub struct Won(i64);

impl Won {
    pub fn parse(n: i64) -> Result<Self, DomainError> {
        (1..=MAX_WON)
            .contains(&n)
            .then_some(Self(n))
            .ok_or(DomainError::BadAmount)
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// `self * quantity`, if it is still an amount.
    pub fn times(self, quantity: Quantity) -> Option<Won> {
        self.0
            .checked_mul(quantity.0)
            .and_then(|n| Won::parse(n).ok())
    }

    /// `self + other`, if it is still an amount.
    pub fn plus(self, other: Won) -> Option<Won> {
        self.0.checked_add(other.0).and_then(|n| Won::parse(n).ok())
    }
}

impl TryFrom<String> for CustomerId {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, DomainError> {
        Self::parse(&s)
    }
}

impl TryFrom<String> for Sku {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, DomainError> {
        Self::parse(&s)
    }
}

impl TryFrom<i64> for Quantity {
    type Error = DomainError;
    fn try_from(n: i64) -> Result<Self, DomainError> {
        Self::parse(n)
    }
}

impl TryFrom<i64> for Won {
    type Error = DomainError;
    fn try_from(n: i64) -> Result<Self, DomainError> {
        Self::parse(n)
    }
}

macro_rules! inner {
    ($($ty:ident($inner:ty)),*) => {$(
        impl From<$ty> for $inner {
            fn from(v: $ty) -> $inner {
                v.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

inner!(CustomerId(String), Sku(String), Quantity(i64), Won(i64));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_accepts_its_bounds_and_refuses_past_them() {
        assert_eq!(CustomerId::parse(" alice ").unwrap().as_str(), "alice");
        assert_eq!(CustomerId::parse("a-b_9").unwrap().as_str(), "a-b_9");
        assert_eq!(CustomerId::parse("  "), Err(DomainError::EmptyCustomer));
        assert_eq!(CustomerId::parse("a b"), Err(DomainError::BadCustomer));
        assert_eq!(
            CustomerId::parse(&"a".repeat(65)),
            Err(DomainError::BadCustomer)
        );
        assert!(Sku::parse(&"A".repeat(64)).is_ok());
        for bad in ["", "LA-TTE", "LATTE ", &"A".repeat(65)] {
            assert_eq!(Sku::parse(bad), Err(DomainError::BadSku), "{bad:?}");
        }
        assert!(Quantity::parse(1).is_ok() && Quantity::parse(MAX_QUANTITY).is_ok());
        for bad in [0, -3, MAX_QUANTITY + 1] {
            assert_eq!(Quantity::parse(bad), Err(DomainError::BadQuantity));
        }
        assert!(Won::parse(1).is_ok() && Won::parse(MAX_WON).is_ok());
        for bad in [0, -1, MAX_WON + 1, i64::MAX] {
            assert_eq!(Won::parse(bad), Err(DomainError::BadAmount));
        }
    }

    #[test]
    fn arithmetic_stays_an_amount_or_says_none() {
        let price = Won::parse(MAX_UNIT_PRICE).unwrap();
        let q = Quantity::parse(MAX_QUANTITY).unwrap();
        assert_eq!(
            price.times(q).map(Won::get),
            Some(MAX_UNIT_PRICE * MAX_QUANTITY)
        );
        let max = Won::parse(MAX_WON).unwrap();
        assert_eq!(max.times(q), None);
        assert_eq!(max.plus(Won::parse(1).unwrap()), None);
    }

    #[test]
    fn json_decoding_applies_the_rules() {
        assert_eq!(serde_json::from_str::<Quantity>("2").unwrap().get(), 2);
        assert!(serde_json::from_str::<Quantity>("100000").is_err());
        assert!(serde_json::from_str::<Sku>(r#""""#).is_err());
        assert_eq!(
            serde_json::to_string(&Sku::parse("LATTE").unwrap()).unwrap(),
            r#""LATTE""#
        );
    }
}
