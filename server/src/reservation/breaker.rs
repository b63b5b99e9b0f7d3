//! A circuit breaker around Redis (closed, open, half-open), as a pure
//! state machine: time is passed in, so every transition is tested without
//! sleeping. [`super::guard::RedisGuard`] runs it.
//!
//! Closed: calls go to Redis; `failure_threshold` failures in a row open it.
//! Open: orders skip Redis and go straight to the versioned update (and to
//! the database's idempotency records), which is correct on its own.
//! Half-open: after `cooldown` a background probe (a PING, never a buyer's
//! order, so no buyer is the one who gets the error) tries Redis while
//! orders keep skipping it; its success closes the breaker, its failure
//! opens it for another cooldown.
//!
//! Every transition starts a new epoch, and every admission carries the
//! epoch it was given in ([`Ticket`]). A report from an earlier epoch is
//! ignored: an order admitted before the breaker opened and finishing after
//! it says nothing about Redis now. Only the probe closes the breaker.

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

/// The epoch an admission was given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
}

/// What the breaker says about one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Use Redis; report how it went with the ticket.
    Use(Ticket),
    /// Keep Redis out.
    Bypass(Ticket),
}

/// How one call to Redis went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisCall {
    Answered,
    Failed,
}

#[derive(Debug)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    epoch: u64,
}

impl Inner {
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.epoch += 1;
    }
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
            inner: Mutex::new(Inner {
                phase: Phase::Closed { failures: 0 },
                epoch: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.lock().phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether this attempt may use Redis.
    pub fn admit(&self) -> Admission {
        let inner = self.lock();
        let ticket = Ticket { epoch: inner.epoch };
        match inner.phase {
            Phase::Closed { .. } => Admission::Use(ticket),
            Phase::Open { .. } | Phase::HalfOpen { .. } => Admission::Bypass(ticket),
        }
    }

    /// Reports how a call admitted with `ticket` went. Returns the state
    /// after it when the report changed it (the breaker opened).
    pub fn report(&self, ticket: Ticket, call: RedisCall, now: Instant) -> Option<BreakerState> {
        let mut inner = self.lock();
        if ticket.epoch != inner.epoch {
            return None;
        }
        let Phase::Closed { failures } = inner.phase else {
            return None;
        };
        match call {
            RedisCall::Answered => {
                inner.phase = Phase::Closed { failures: 0 };
                None
            }
            RedisCall::Failed if failures + 1 < self.failure_threshold => {
                inner.phase = Phase::Closed {
                    failures: failures + 1,
                };
                None
            }
            RedisCall::Failed => {
                inner.enter(Phase::Open {
                    until: now + self.cooldown,
                });
                Some(BreakerState::Open)
            }
        }
    }

    /// Starts the half-open probe when the cooldown is over and no probe
    /// runs; the caller probes and reports with [`Breaker::probed`].
    pub fn begin_probe(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Open { until } if now >= until => {
                inner.enter(Phase::HalfOpen { probing: true });
                true
            }
            Phase::HalfOpen { probing: false } => {
                inner.phase = Phase::HalfOpen { probing: true };
                true
            }
            _ => false,
        }
    }

    /// The probe's result: closes the breaker, or opens it for another
    /// cooldown. Returns the state after it.
    pub fn probed(&self, answered: bool, now: Instant) -> BreakerState {
        let mut inner = self.lock();
        if !matches!(inner.phase, Phase::HalfOpen { probing: true }) {
            return match inner.phase {
                Phase::Closed { .. } => BreakerState::Closed,
                _ => BreakerState::Open,
            };
        }
        if answered {
            inner.enter(Phase::Closed { failures: 0 });
            BreakerState::Closed
        } else {
            inner.enter(Phase::Open {
                until: now + self.cooldown,
            });
            BreakerState::Open
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(5);

    fn ticket(b: &Breaker) -> Ticket {
        match b.admit() {
            Admission::Use(t) | Admission::Bypass(t) => t,
        }
    }

    fn trip(b: &Breaker, now: Instant) {
        for _ in 0..b.failure_threshold {
            b.report(ticket(b), RedisCall::Failed, now);
        }
    }

    #[test]
    fn it_opens_after_the_threshold_of_failures_in_a_row() {
        let b = Breaker::new(3, COOLDOWN);
        let t = Instant::now();
        let admitted = ticket(&b);
        assert_eq!(b.report(admitted, RedisCall::Failed, t), None);
        assert_eq!(b.report(admitted, RedisCall::Failed, t), None);
        assert_eq!(b.state(t), BreakerState::Closed);
        assert!(matches!(b.admit(), Admission::Use(_)));
        assert_eq!(
            b.report(admitted, RedisCall::Failed, t),
            Some(BreakerState::Open)
        );
        assert!(matches!(b.admit(), Admission::Bypass(_)));
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(3, COOLDOWN);
        let t = Instant::now();
        let admitted = ticket(&b);
        b.report(admitted, RedisCall::Failed, t);
        b.report(admitted, RedisCall::Failed, t);
        b.report(admitted, RedisCall::Answered, t);
        b.report(admitted, RedisCall::Failed, t);
        b.report(admitted, RedisCall::Failed, t);
        assert_eq!(b.state(t), BreakerState::Closed);
    }

    #[test]
    fn reports_from_an_earlier_epoch_change_nothing() {
        let b = Breaker::new(1, COOLDOWN);
        let t = Instant::now();
        let before = ticket(&b);
        trip(&b, t);
        assert_eq!(b.report(before, RedisCall::Answered, t), None);
        assert_eq!(
            b.state(t),
            BreakerState::Open,
            "a stray success does not close it"
        );
        assert!(b.begin_probe(t + COOLDOWN));
        assert_eq!(b.probed(true, t + COOLDOWN), BreakerState::Closed);
        let during_open = before;
        assert_eq!(b.report(during_open, RedisCall::Failed, t + COOLDOWN), None);
        assert_eq!(
            b.state(t + COOLDOWN),
            BreakerState::Closed,
            "a stray failure from before does not open it again"
        );
    }

    #[test]
    fn only_the_probe_closes_it() {
        let b = Breaker::new(1, COOLDOWN);
        let t = Instant::now();
        trip(&b, t);
        let while_open = ticket(&b);
        assert_eq!(b.report(while_open, RedisCall::Answered, t), None);
        assert_eq!(b.state(t), BreakerState::Open);
        assert_eq!(
            b.probed(true, t),
            BreakerState::Open,
            "no probe was started"
        );
    }

    #[test]
    fn after_the_cooldown_one_probe_runs_while_orders_keep_skipping() {
        let b = Breaker::new(1, COOLDOWN);
        let t = Instant::now();
        trip(&b, t);
        assert!(
            !b.begin_probe(t + COOLDOWN - Duration::from_millis(1)),
            "still cooling down"
        );
        let later = t + COOLDOWN;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.begin_probe(later));
        assert!(!b.begin_probe(later), "one probe at a time");
        assert!(
            matches!(b.admit(), Admission::Bypass(_)),
            "orders never serve as the probe"
        );
        assert_eq!(b.probed(true, later), BreakerState::Closed);
        assert!(matches!(b.admit(), Admission::Use(_)));
    }

    #[test]
    fn a_failed_probe_opens_it_for_another_cooldown() {
        let b = Breaker::new(1, COOLDOWN);
        let t = Instant::now();
        trip(&b, t);
        let later = t + COOLDOWN;
        assert!(b.begin_probe(later));
        assert_eq!(b.probed(false, later), BreakerState::Open);
        assert!(!b.begin_probe(later + COOLDOWN / 2));
        assert!(b.begin_probe(later + COOLDOWN));
    }

    #[test]
    fn gauge_values_order_the_states_by_severity() {
        assert!(BreakerState::Closed.gauge_value() < BreakerState::HalfOpen.gauge_value());
        assert!(BreakerState::HalfOpen.gauge_value() < BreakerState::Open.gauge_value());
    }
}
