//! A circuit breaker around the Redis layer (closed, open, half-open).
//!
//! Closed: calls go to Redis; `failure_threshold` failures in a row open it.
//! Open: orders skip Redis and go straight to the versioned update (and to
//! the database's idempotency records), which is correct on its own.
//! Half-open: after `cooldown` a background probe (a PING, never a buyer's
//! order, so no buyer is the one who gets the error) tries Redis while
//! orders keep skipping it; its success closes the breaker, its failure opens
//! it for another cooldown.
//!
//! Time is passed in (`now`), so the transitions are tested without sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The value of the `oversell_redis_breaker_state` gauge.
    pub fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

/// What the breaker says about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Use Redis.
    Call,
    /// Skip Redis.
    Skip,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub struct Breaker {
    failure_threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(failure_threshold: u32, cooldown: Duration) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if now < until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether this call may use Redis.
    pub fn admit(&self) -> Admission {
        match *self.lock() {
            Inner::Closed { .. } => Admission::Call,
            Inner::Open { .. } | Inner::HalfOpen { .. } => Admission::Skip,
        }
    }

    /// Starts the half-open probe when the cooldown is over and no probe
    /// runs; the caller probes and reports with [`Breaker::record`].
    pub fn begin_probe(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        match *inner {
            Inner::Open { until } if now >= until => {
                *inner = Inner::HalfOpen { probing: true };
                true
            }
            Inner::HalfOpen { probing: false } => {
                *inner = Inner::HalfOpen { probing: true };
                true
            }
            _ => false,
        }
    }

    /// Reports how a call that used Redis went. Returns the state after it.
    pub fn record(&self, succeeded: bool, now: Instant) -> BreakerState {
        let mut inner = self.lock();
        *inner = match (&*inner, succeeded) {
            (_, true) => Inner::Closed { failures: 0 },
            (Inner::Closed { failures }, false) if failures + 1 < self.failure_threshold => {
                Inner::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => Inner::Open {
                until: now + self.cooldown,
            },
        };
        match *inner {
            Inner::Closed { .. } => BreakerState::Closed,
            _ => BreakerState::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(5);

    #[test]
    fn it_opens_after_the_threshold_of_failures_in_a_row() {
        let b = Breaker::new(3, COOLDOWN);
        let t = Instant::now();
        b.record(false, t);
        b.record(false, t);
        assert_eq!(b.state(t), BreakerState::Closed);
        assert_eq!(b.admit(), Admission::Call);
        assert_eq!(b.record(false, t), BreakerState::Open);
        assert_eq!(b.admit(), Admission::Skip);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(3, COOLDOWN);
        let t = Instant::now();
        b.record(false, t);
        b.record(false, t);
        b.record(true, t);
        b.record(false, t);
        b.record(false, t);
        assert_eq!(b.state(t), BreakerState::Closed);
    }

    #[test]
    fn after_the_cooldown_one_probe_runs_while_orders_keep_skipping() {
        let b = Breaker::new(1, COOLDOWN);
        let t = Instant::now();
        b.record(false, t);
        assert!(
            !b.begin_probe(t + COOLDOWN - Duration::from_millis(1)),
            "still cooling down"
        );
        let later = t + COOLDOWN;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.begin_probe(later));
        assert!(!b.begin_probe(later), "one probe at a time");
        assert_eq!(
            b.admit(),
            Admission::Skip,
            "orders never serve as the probe"
        );
        assert_eq!(b.record(true, later), BreakerState::Closed);
        assert_eq!(b.admit(), Admission::Call);
    }

    #[test]
    fn a_failed_probe_opens_it_for_another_cooldown() {
        let b = Breaker::new(1, COOLDOWN);
        let t = Instant::now();
        b.record(false, t);
        let later = t + COOLDOWN;
        assert!(b.begin_probe(later));
        assert_eq!(b.record(false, later), BreakerState::Open);
        assert!(!b.begin_probe(later + COOLDOWN / 2));
        assert!(b.begin_probe(later + COOLDOWN));
    }

    #[test]
    fn gauge_values_order_the_states_by_severity() {
        assert!(BreakerState::Closed.gauge_value() < BreakerState::HalfOpen.gauge_value());
        assert!(BreakerState::HalfOpen.gauge_value() < BreakerState::Open.gauge_value());
    }
}
