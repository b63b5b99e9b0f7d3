//! Drop day as the item page sees it: where the sale window stands on the
//! server's clock, and how often a buyer in the waiting room asks where
//! they stand.
//!
//! Pure functions, so the page (in the browser and on the server) and the
//! tests share them. The clock is always the server's: the page measures
//! its offset from the phone's clock once and adds it, so a phone set five
//! minutes fast neither opens the Buy button early nor late.

use crate::model::{Item, QueueState, QueueStatus};

/// Where an item's sale window stands at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SalePhase {
    /// The sale opens in this many milliseconds.
    Upcoming {
        opens_in_ms: i64,
    },
    Open,
    Ended,
}

/// The item's sale window at `now_ms` (the server's clock): the start is
/// inclusive, the end exclusive, as the server judges an order.
pub fn sale_phase(item: &Item, now_ms: i64) -> SalePhase {
    match (item.sale_starts_at_ms, item.sale_ends_at_ms) {
        (_, Some(ends)) if now_ms >= ends => SalePhase::Ended,
        (Some(starts), _) if now_ms < starts => SalePhase::Upcoming {
            opens_in_ms: starts - now_ms,
        },
        _ => SalePhase::Open,
    }
}

/// The quickest and slowest a waiting page polls.
const POLL_MIN_MS: u32 = 1_000;
const POLL_MAX_MS: u32 = 15_000;
/// Pages waiting for the start spread their first poll after it over this
/// long, so a drawn line does not all ask in the same second.
const START_SPREAD_MS: f64 = 2_000.0;

/// How long a waiting page sleeps before asking where it stands again;
/// `None` when there is nothing left to wait for (admitted, sold out,
/// closed).
///
/// In line with a position: a quarter of the expected wait, between 1 and
/// 15 s, so the front asks every second and the back rarely (the load
/// generator's buyers follow the same rule). Before the start, when the
/// draw has not placed anyone yet: just after the start, `spread` (in
/// `0.0..1.0`, random per page) spreading the line over two seconds, and at
/// least every 15 s.
pub fn poll_after_ms(
    status: &QueueStatus,
    admission_per_second: i64,
    phase: SalePhase,
    spread: f64,
) -> Option<u32> {
    if status.state != QueueState::Waiting {
        return None;
    }
    let ms = match (status.position, phase) {
        (None, SalePhase::Upcoming { opens_in_ms }) => {
            opens_in_ms as f64 + spread.clamp(0.0, 1.0) * START_SPREAD_MS
        }
        (position, _) => {
            let ahead_secs = position.unwrap_or(0) as f64 / admission_per_second.max(1) as f64;
            ahead_secs / 4.0 * 1_000.0
        }
    };
    Some((ms as u32).clamp(POLL_MIN_MS, POLL_MAX_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(starts: Option<i64>, ends: Option<i64>) -> Item {
        Item {
            id: crate::domain::ItemId::new(1).expect("a valid id"),
            title: "Camera".into(),
            condition: "Good".into(),
            seller: "Ann".into(),
            price_cents: 100,
            stock: 1,
            version: 0,
            max_per_buyer: None,
            sale_starts_at_ms: starts,
            sale_ends_at_ms: ends,
            admission_per_second: Some(10),
            pass_ttl_seconds: 120,
            paused: false,
        }
    }

    fn waiting(position: Option<u64>) -> QueueStatus {
        QueueStatus {
            state: QueueState::Waiting,
            ticket: Some("t".into()),
            position,
            eta_seconds: None,
            pass: None,
            pass_expires_at_ms: None,
            paused: None,
        }
    }

    #[test]
    fn the_window_opens_at_its_start_and_closes_at_its_end() {
        let window = item(Some(1_000), Some(2_000));
        assert_eq!(
            sale_phase(&window, 400),
            SalePhase::Upcoming { opens_in_ms: 600 }
        );
        assert_eq!(sale_phase(&window, 1_000), SalePhase::Open);
        assert_eq!(sale_phase(&window, 1_999), SalePhase::Open);
        assert_eq!(sale_phase(&window, 2_000), SalePhase::Ended);
        assert_eq!(sale_phase(&item(None, None), 0), SalePhase::Open);
        assert_eq!(sale_phase(&item(None, Some(5)), 9), SalePhase::Ended);
    }

    #[test]
    fn the_front_of_the_line_polls_every_second_and_the_back_rarely() {
        let open = SalePhase::Open;
        assert_eq!(
            poll_after_ms(&waiting(Some(1)), 100, open, 0.0),
            Some(1_000)
        );
        assert_eq!(
            poll_after_ms(&waiting(Some(2_000)), 100, open, 0.0),
            Some(5_000)
        );
        assert_eq!(
            poll_after_ms(&waiting(Some(100_000)), 100, open, 0.0),
            Some(15_000)
        );
    }

    #[test]
    fn before_the_draw_pages_wake_just_after_the_start_spread_over_two_seconds() {
        let soon = SalePhase::Upcoming { opens_in_ms: 3_000 };
        assert_eq!(poll_after_ms(&waiting(None), 10, soon, 0.0), Some(3_000));
        assert_eq!(poll_after_ms(&waiting(None), 10, soon, 0.5), Some(4_000));
        let later = SalePhase::Upcoming {
            opens_in_ms: 3_600_000,
        };
        assert_eq!(poll_after_ms(&waiting(None), 10, later, 0.9), Some(15_000));
    }

    #[test]
    fn nothing_is_polled_once_admitted_sold_out_or_closed() {
        for state in [
            QueueState::Admitted,
            QueueState::SoldOut,
            QueueState::Closed,
        ] {
            let status = QueueStatus {
                state,
                ..waiting(Some(1))
            };
            assert_eq!(poll_after_ms(&status, 10, SalePhase::Open, 0.0), None);
        }
    }
}
