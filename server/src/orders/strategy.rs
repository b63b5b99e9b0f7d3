//! Which layers an order crosses: the one vocabulary for it.
//!
//! The article compares two strategies, A and B. Inside the code they are
//! this enum and nothing else; their labels (`redis+db`, `db`) appear only
//! at the edges: the `ORDER_STRATEGY` variable, the `X-Order-Strategy`
//! header, metric labels and reports.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// The article's A: the reservation store (Redis, or the in-process
    /// store of the embedded default) filters, then the versioned update
    /// makes the order true.
    ReserveFirst,
    /// The article's B: the versioned update alone.
    LedgerOnly,
}

impl Strategy {
    pub const ALL: [Self; 2] = [Self::ReserveFirst, Self::LedgerOnly];

    /// Reads a label (`redis+db` or `db`; `a` and `b` too), in any case.
    pub fn from_label(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "redis+db" | "a" => Some(Self::ReserveFirst),
            "db" | "b" => Some(Self::LedgerOnly),
            _ => None,
        }
    }

    /// The label at the edges: environment, headers, metrics, reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::ReserveFirst => "redis+db",
            Self::LedgerOnly => "db",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_back_as_their_strategy() {
        for strategy in Strategy::ALL {
            assert_eq!(Strategy::from_label(strategy.label()), Some(strategy));
        }
        assert_eq!(Strategy::from_label("DB"), Some(Strategy::LedgerOnly));
        assert_eq!(Strategy::from_label(" a "), Some(Strategy::ReserveFirst));
        assert_eq!(Strategy::from_label("redis"), None);
    }
}
