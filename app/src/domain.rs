//! Domain newtypes that validate when parsed.
//!
//! Every value that crosses a boundary (a form field, a JSON body, a header, a
//! cookie) becomes one of these types before any layer acts on it, so the
//! order pipeline never sees a zero quantity, a negative item id or a key that
//! would not fit its Redis key or URL. The browser and the server share them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a raw value was refused; the message is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

impl InvalidValue {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The client-facing explanation.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// The id of an item in the inventory: a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct ItemId(i64);

impl ItemId {
    /// Accepts a positive integer.
    ///
    /// # Errors
    /// Zero and negative numbers.
    pub fn new(raw: i64) -> Result<Self, InvalidValue> {
        if raw > 0 {
            Ok(Self(raw))
        } else {
            Err(InvalidValue::new("item id must be a positive integer"))
        }
    }

    /// Parses a path segment such as `42`.
    ///
    /// # Errors
    /// Anything that is not a positive integer.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        raw.parse::<i64>()
            .map_err(|_| InvalidValue::new("item id must be a positive integer"))
            .and_then(Self::new)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for ItemId {
    type Error = InvalidValue;
    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        Self::new(raw)
    }
}

impl From<ItemId> for i64 {
    fn from(id: ItemId) -> i64 {
        id.0
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How many units one order takes: `1..=Quantity::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Quantity(u32);

impl Quantity {
    /// The documented maximum units in one order. A frenzy buyer asking for
    /// more is refused before any layer spends work on the request.
    pub const MAX: u32 = 10;
    pub const ONE: Quantity = Quantity(1);

    /// # Errors
    /// Zero, negative, or above [`Quantity::MAX`].
    pub fn new(raw: i64) -> Result<Self, InvalidValue> {
        if raw < 1 {
            return Err(InvalidValue::new("qty must be at least 1"));
        }
        if raw > i64::from(Self::MAX) {
            return Err(InvalidValue::new(format!(
                "qty must be at most {}",
                Self::MAX
            )));
        }
        Ok(Self(raw as u32))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = InvalidValue;
    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        Self::new(raw)
    }
}

impl From<Quantity> for i64 {
    fn from(qty: Quantity) -> i64 {
        i64::from(qty.0)
    }
}

/// The client's token for one intent to buy (the `Idempotency-Key` header).
///
/// 1 to 255 characters from `A-Z a-z 0-9 - _ . : ~`: a UUID fits, and so does
/// any key that can sit unescaped in a URL path and a Redis key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    /// # Errors
    /// Empty, longer than [`IdempotencyKey::MAX_LEN`], or a character outside
    /// the allowed set.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.is_empty() {
            return Err(InvalidValue::new("Idempotency-Key must not be empty"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(InvalidValue::new(format!(
                "Idempotency-Key must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '~');
        if !raw.chars().all(allowed) {
            return Err(InvalidValue::new(
                "Idempotency-Key may only contain letters, digits and - _ . : ~",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = InvalidValue;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> String {
        key.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An anonymous buyer, as carried by the signed session cookie: a UUID in its
/// hyphenated lowercase form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BuyerId(String);

impl BuyerId {
    /// # Errors
    /// Anything but 36 characters of lowercase hex digits and hyphens.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let well_formed = raw.len() == 36
            && raw.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
            });
        if well_formed {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidValue::new("malformed buyer id"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BuyerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_ids_are_positive_integers() {
        assert_eq!(ItemId::parse("42").map(ItemId::get), Ok(42));
        assert!(ItemId::parse("0").is_err());
        assert!(ItemId::parse("-3").is_err());
        assert!(ItemId::parse("4x").is_err());
        assert!(ItemId::parse("").is_err());
    }

    #[test]
    fn quantity_is_bounded_on_both_sides() {
        assert_eq!(Quantity::new(1).map(Quantity::get), Ok(1));
        assert_eq!(Quantity::new(10).map(Quantity::get), Ok(10));
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(-1).is_err());
        assert!(Quantity::new(11).is_err());
        assert!(Quantity::new(i64::MAX).is_err());
    }

    #[test]
    fn quantity_refuses_non_integers_when_deserialized() {
        assert!(serde_json::from_str::<Quantity>("1.5").is_err());
        assert!(serde_json::from_str::<Quantity>("\"2\"").is_err());
        assert!(serde_json::from_str::<Quantity>("1e30").is_err());
        assert_eq!(
            serde_json::from_str::<Quantity>("3")
                .map(Quantity::get)
                .ok(),
            Some(3)
        );
    }

    #[test]
    fn idempotency_keys_accept_uuids_and_refuse_what_breaks_urls() {
        assert!(IdempotencyKey::parse("6f1c2a1e-8d7b-4a51-9a0e-2b3c4d5e6f70").is_ok());
        assert!(IdempotencyKey::parse("order-1").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse("slash/key").is_err());
        assert!(IdempotencyKey::parse("ключ").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
    }

    #[test]
    fn buyer_ids_are_lowercase_uuids() {
        assert!(BuyerId::parse("6f1c2a1e-8d7b-4a51-9a0e-2b3c4d5e6f70").is_ok());
        assert!(BuyerId::parse("6F1C2A1E-8D7B-4A51-9A0E-2B3C4D5E6F70").is_err());
        assert!(BuyerId::parse("6f1c2a1e8d7b4a519a0e2b3c4d5e6f70").is_err());
        assert!(BuyerId::parse("{42}").is_err());
    }
}
