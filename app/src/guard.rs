//! The submit state machine that owns the Buy button: plain Rust, no web-sys,
//! so every transition is unit-tested natively.
//!
//! ```text
//!            tap                      response ok
//!   Idle ──────────────▶ Pending ─────────────────────▶ Success
//!    ▲  (leading edge,    │  ▲ taps swallowed            │
//!    │   submit at once)  │  │                           │ buy again
//!    │                    │  │ retry / lookup            │ (new token)
//!    │                    ▼  │                           ▼
//!    └──── buy again ──── Error { definite | retryable | unknown } ◀─┘
//! ```
//!
//! Guarantees:
//! - the first tap submits immediately; taps while pending are swallowed and
//!   counted (no trailing debounce on a purchase);
//! - one token per intent to buy: every retry of an intent whose outcome is
//!   unknown (transport failure, timeout, reload) reuses it; a new token is
//!   taken only after a definite outcome and an explicit "buy again";
//! - after a reload or a back/forward restore the machine asks for the
//!   token's outcome ([`Effect::Lookup`]) instead of submitting again;
//! - nothing is submitted or retried automatically while the page is hidden;
//!   a retry that falls due then waits, and becoming visible re-checks.
//!
//! The glue executes the returned [`Effect`]s and feeds results back as
//! [`Event`]s; [`Snapshot`] is what it mirrors into `history.state`.

use crate::model::{ErrorCode, KeyOutcome, OrderError, Receipt};
use serde::{Deserialize, Serialize};

/// Automatic retries of an unknown outcome before waiting for the shopper.
pub const MAX_AUTO_RETRIES: u32 = 3;

/// Delay before the n-th automatic retry (n counts from 1), in milliseconds.
pub fn retry_delay_ms(attempt: u32) -> u32 {
    1_000u32.saturating_mul(1 << attempt.saturating_sub(1).min(3))
}

/// How sure the page is about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Certainty {
    /// The server refused for good (sold out, limit, bad input): a new
    /// attempt is a new intent and takes a new token.
    Definite,
    /// The server refused this time (conflict, busy): retrying with the same
    /// token is safe and may succeed.
    Retryable,
    /// No answer arrived: the order may or may not exist. Only the same token
    /// may be sent again.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingKind {
    /// The order request is in flight.
    Submitting,
    /// Asking the server for the token's outcome.
    Checking,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Idle,
    Pending {
        kind: PendingKind,
    },
    Success {
        receipt: Receipt,
    },
    Error {
        error: OrderError,
        certainty: Certainty,
    },
}

/// What the page mirrors into `history.state`, and restores from: one flat
/// object, `{"token", "qty", "phase", ...the phase's fields, "retry_queued"}`,
/// read back through [`SnapshotWire`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SnapshotWire")]
pub struct Snapshot {
    pub token: String,
    pub qty: u32,
    #[serde(flatten)]
    pub phase: Phase,
    /// An automatic retry was waiting when the snapshot was taken.
    #[serde(default)]
    pub retry_queued: bool,
}

/// A [`Snapshot`] as read: the same object as one flat struct. Reading the
/// flattened, tagged phase directly would make serde buffer the object
/// first, machinery the shopper's wasm need not carry.
#[derive(Deserialize)]
struct SnapshotWire {
    token: String,
    qty: u32,
    phase: PhaseTag,
    kind: Option<PendingKind>,
    receipt: Option<Receipt>,
    error: Option<OrderError>,
    certainty: Option<Certainty>,
    #[serde(default)]
    retry_queued: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum PhaseTag {
    Idle,
    Pending,
    Success,
    Error,
}

impl TryFrom<SnapshotWire> for Snapshot {
    type Error = &'static str;

    fn try_from(wire: SnapshotWire) -> Result<Self, Self::Error> {
        let phase = match (
            wire.phase,
            wire.kind,
            wire.receipt,
            wire.error,
            wire.certainty,
        ) {
            (PhaseTag::Idle, ..) => Phase::Idle,
            (PhaseTag::Pending, Some(kind), ..) => Phase::Pending { kind },
            (PhaseTag::Success, _, Some(receipt), ..) => Phase::Success { receipt },
            (PhaseTag::Error, _, _, Some(error), Some(certainty)) => {
                Phase::Error { error, certainty }
            }
            _ => return Err("the snapshot's phase lacks its fields"),
        };
        Ok(Self {
            token: wire.token,
            qty: wire.qty,
            phase,
            retry_queued: wire.retry_queued,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The shopper tapped Buy (or Try again) with this quantity.
    Tap {
        qty: u32,
    },
    /// The order request answered.
    Response(Result<Receipt, OrderError>),
    /// The order request failed without an answer (network, timeout).
    TransportFailed,
    /// An outcome lookup answered.
    LookupAnswered(KeyOutcome),
    /// An outcome lookup failed without an answer.
    LookupFailed,
    /// A scheduled automatic retry fell due.
    RetryDue,
    PageHidden,
    PageVisible,
    /// The shopper asked for a new purchase after a definite outcome; the
    /// glue mints `fresh_token` (a UUID v4).
    BuyAgain {
        fresh_token: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send the order with this token and quantity.
    Submit { token: String, qty: u32 },
    /// Ask `GET /api/orders/by-key/{token}` (or the server function) for the outcome.
    Lookup { token: String },
    /// Deliver [`Event::RetryDue`] after this many milliseconds.
    ScheduleRetry { after_ms: u32 },
    /// Mirror this into `history.state`.
    Persist(Snapshot),
}

/// The browser guard's counters: what the state machine counts, what the
/// page's beacon sends (`POST /api/guard-events`) and what the endpoint
/// reads and adds to the server's totals. Fields left out of a report are
/// zero; unknown fields are refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Intercepts {
    /// Taps swallowed while an order was pending.
    pub swallowed_taps: u32,
    /// Submissions avoided by looking up the outcome after a reload or restore.
    pub restore_lookups: u32,
    /// Retries held back while the page was hidden.
    pub hidden_blocks: u32,
}

impl Intercepts {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The body of `POST /api/guard-events`: `{"swallowed_taps",
    /// "restore_lookups", "hidden_blocks"}`. Written by hand: three integers
    /// do not need a JSON value tree in the shopper's wasm.
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"swallowed_taps":{},"restore_lookups":{},"hidden_blocks":{}}}"#,
            self.swallowed_taps, self.restore_lookups, self.hidden_blocks
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitMachine {
    token: String,
    qty: u32,
    phase: Phase,
    visible: bool,
    retry_queued: bool,
    auto_retries: u32,
    intercepts: Intercepts,
}

impl SubmitMachine {
    /// A fresh intent with the token the server minted for the page's form.
    pub fn new(token: String, visible: bool) -> Self {
        Self {
            token,
            qty: 1,
            phase: Phase::Idle,
            visible,
            retry_queued: false,
            auto_retries: 0,
            intercepts: Intercepts::default(),
        }
    }

    /// Resumes from `history.state` after a reload or a bfcache restore. An
    /// intent whose outcome was not known is looked up, never resubmitted.
    pub fn restore(snapshot: Snapshot, visible: bool) -> (Self, Vec<Effect>) {
        let mut machine = Self {
            token: snapshot.token,
            qty: snapshot.qty.max(1),
            phase: snapshot.phase,
            visible,
            retry_queued: snapshot.retry_queued,
            auto_retries: 0,
            intercepts: Intercepts::default(),
        };
        let unresolved = matches!(
            machine.phase,
            Phase::Pending { .. }
                | Phase::Error {
                    certainty: Certainty::Unknown,
                    ..
                }
        );
        let mut effects = Vec::new();
        if unresolved {
            machine.intercepts.restore_lookups += 1;
            if machine.visible {
                machine.phase = Phase::Pending {
                    kind: PendingKind::Checking,
                };
                effects.push(machine.lookup());
            } else {
                machine.phase = unknown_outcome();
                machine.retry_queued = true;
            }
        }
        effects.push(machine.persist());
        (machine, effects)
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn qty(&self) -> u32 {
        self.qty
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.phase, Phase::Pending { .. })
    }

    /// Whether a retry is waiting for the page to become visible or its timer.
    pub fn retry_queued(&self) -> bool {
        self.retry_queued
    }

    /// The quantity picker is locked while an intent is unresolved: a retry
    /// must carry the same payload as the first attempt.
    pub fn qty_locked(&self) -> bool {
        match &self.phase {
            Phase::Idle => false,
            Phase::Pending { .. } | Phase::Success { .. } => true,
            Phase::Error { certainty, .. } => *certainty != Certainty::Definite,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            token: self.token.clone(),
            qty: self.qty,
            phase: self.phase.clone(),
            retry_queued: self.retry_queued,
        }
    }

    /// Hands the intercept counters to the reporter and starts counting anew.
    pub fn take_intercepts(&mut self) -> Intercepts {
        std::mem::take(&mut self.intercepts)
    }

    pub fn intercepts(&self) -> Intercepts {
        self.intercepts
    }

    /// Applies one event and returns what the glue must do, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Effect> {
        let before = self.snapshot();
        let mut effects = self.transition(event);
        if self.snapshot() != before {
            effects.push(self.persist());
        }
        effects
    }

    fn transition(&mut self, event: Event) -> Vec<Effect> {
        match event {
            Event::Tap { qty } => self.on_tap(qty),
            Event::Response(result) => self.on_response(result),
            Event::TransportFailed | Event::LookupFailed => self.on_no_answer(),
            Event::LookupAnswered(outcome) => self.on_lookup(outcome),
            Event::RetryDue => self.on_retry_due(),
            Event::PageHidden => {
                self.visible = false;
                Vec::new()
            }
            Event::PageVisible => self.on_visible(),
            Event::BuyAgain { fresh_token } => self.on_buy_again(fresh_token),
        }
    }

    fn on_tap(&mut self, qty: u32) -> Vec<Effect> {
        match &self.phase {
            Phase::Pending { .. } => {
                self.intercepts.swallowed_taps += 1;
                Vec::new()
            }
            Phase::Idle => {
                self.qty = qty.max(1);
                self.submit()
            }
            Phase::Error { certainty, .. } if *certainty != Certainty::Definite => self.submit(),
            Phase::Success { .. } | Phase::Error { .. } => {
                self.intercepts.swallowed_taps += 1;
                Vec::new()
            }
        }
    }

    fn on_response(&mut self, result: Result<Receipt, OrderError>) -> Vec<Effect> {
        if !self.is_pending() {
            return Vec::new();
        }
        match result {
            Ok(receipt) => self.succeed(receipt),
            Err(error) if error.code == ErrorCode::RequestInProgress => self.on_no_answer(),
            Err(error) => {
                let certainty = if error.retryable {
                    Certainty::Retryable
                } else {
                    Certainty::Definite
                };
                self.retry_queued = false;
                self.phase = Phase::Error { error, certainty };
                Vec::new()
            }
        }
    }

    /// No answer, or "still running": the outcome is unknown. Queue an
    /// automatic retry of the same token while the budget lasts.
    fn on_no_answer(&mut self) -> Vec<Effect> {
        if !self.is_pending() {
            return Vec::new();
        }
        self.phase = unknown_outcome();
        if self.auto_retries < MAX_AUTO_RETRIES {
            self.auto_retries += 1;
            self.retry_queued = true;
            vec![Effect::ScheduleRetry {
                after_ms: retry_delay_ms(self.auto_retries),
            }]
        } else {
            self.retry_queued = false;
            Vec::new()
        }
    }

    fn on_lookup(&mut self, outcome: KeyOutcome) -> Vec<Effect> {
        if !self.is_pending() {
            return Vec::new();
        }
        match outcome {
            KeyOutcome::Order { order } => self.succeed(order),
            KeyOutcome::Failed { error } => self.on_response(Err(error)),
            KeyOutcome::InProgress => self.on_no_answer(),
            KeyOutcome::Unknown if self.retry_queued => self.submit(),
            KeyOutcome::Unknown => {
                self.phase = Phase::Idle;
                Vec::new()
            }
        }
    }

    fn on_retry_due(&mut self) -> Vec<Effect> {
        let waiting = self.retry_queued
            && matches!(
                self.phase,
                Phase::Error {
                    certainty: Certainty::Unknown,
                    ..
                }
            );
        if !waiting {
            return Vec::new();
        }
        if !self.visible {
            self.intercepts.hidden_blocks += 1;
            return Vec::new();
        }
        self.check()
    }

    fn on_visible(&mut self) -> Vec<Effect> {
        self.visible = true;
        let unresolved = self.is_pending()
            || matches!(
                self.phase,
                Phase::Error {
                    certainty: Certainty::Unknown,
                    ..
                }
            ) && self.retry_queued;
        if unresolved { self.check() } else { Vec::new() }
    }

    fn on_buy_again(&mut self, fresh_token: String) -> Vec<Effect> {
        let definite = match &self.phase {
            Phase::Success { .. } => true,
            Phase::Error { certainty, .. } => *certainty == Certainty::Definite,
            Phase::Idle | Phase::Pending { .. } => false,
        };
        if definite {
            self.token = fresh_token;
            self.phase = Phase::Idle;
            self.retry_queued = false;
            self.auto_retries = 0;
        }
        Vec::new()
    }

    fn submit(&mut self) -> Vec<Effect> {
        self.phase = Phase::Pending {
            kind: PendingKind::Submitting,
        };
        vec![Effect::Submit {
            token: self.token.clone(),
            qty: self.qty,
        }]
    }

    /// Re-checks the token's outcome before anything is sent again.
    fn check(&mut self) -> Vec<Effect> {
        self.phase = Phase::Pending {
            kind: PendingKind::Checking,
        };
        vec![self.lookup()]
    }

    fn succeed(&mut self, receipt: Receipt) -> Vec<Effect> {
        self.retry_queued = false;
        self.phase = Phase::Success { receipt };
        Vec::new()
    }

    fn lookup(&self) -> Effect {
        Effect::Lookup {
            token: self.token.clone(),
        }
    }

    fn persist(&self) -> Effect {
        Effect::Persist(self.snapshot())
    }
}

fn unknown_outcome() -> Phase {
    Phase::Error {
        error: OrderError::new(ErrorCode::Unavailable, "no answer from the server"),
        certainty: Certainty::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{IdempotencyKey, ItemId, Quantity};
    use crate::model::OrderStatus;

    const TOKEN: &str = "11111111-1111-4111-8111-111111111111";

    fn receipt() -> Receipt {
        Receipt {
            order_id: "order-1".into(),
            item_id: ItemId::new(1).expect("id"),
            qty: Quantity::ONE,
            unit_price_cents: 100,
            total_cents: 100,
            idempotency_key: IdempotencyKey::parse(TOKEN).expect("key"),
            status: OrderStatus::Confirmed,
            pay_by_ms: None,
            created_at_ms: 0,
        }
    }

    fn machine() -> SubmitMachine {
        SubmitMachine::new(TOKEN.into(), true)
    }

    fn submits(effects: &[Effect]) -> Vec<(String, u32)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Submit { token, qty } => Some((token.clone(), *qty)),
                _ => None,
            })
            .collect()
    }

    fn lookups(effects: &[Effect]) -> usize {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Lookup { .. }))
            .count()
    }

    fn pending_unknown(m: &mut SubmitMachine) {
        m.handle(Event::Tap { qty: 1 });
        m.handle(Event::TransportFailed);
    }

    #[test]
    fn the_first_tap_submits_at_once() {
        let mut m = machine();
        let effects = m.handle(Event::Tap { qty: 2 });
        assert_eq!(submits(&effects), vec![(TOKEN.to_string(), 2)]);
        assert!(m.is_pending());
        assert!(matches!(effects.last(), Some(Effect::Persist(_))));
    }

    #[test]
    fn taps_while_pending_are_swallowed_and_counted() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 1 });
        for _ in 0..9 {
            assert!(submits(&m.handle(Event::Tap { qty: 1 })).is_empty());
        }
        assert_eq!(m.intercepts().swallowed_taps, 9);
    }

    #[test]
    fn a_success_ends_the_intent_and_further_taps_do_nothing() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 1 });
        m.handle(Event::Response(Ok(receipt())));
        assert!(matches!(m.phase(), Phase::Success { .. }));
        assert!(submits(&m.handle(Event::Tap { qty: 1 })).is_empty());
        assert_eq!(m.intercepts().swallowed_taps, 1);
    }

    #[test]
    fn a_retry_after_an_unknown_outcome_reuses_the_token() {
        let mut m = machine();
        pending_unknown(&mut m);
        let effects = m.handle(Event::Tap { qty: 5 });
        assert_eq!(
            submits(&effects),
            vec![(TOKEN.to_string(), 1)],
            "same token and payload"
        );
    }

    #[test]
    fn a_transport_failure_schedules_a_bounded_automatic_retry() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 1 });
        let effects = m.handle(Event::TransportFailed);
        assert!(effects.contains(&Effect::ScheduleRetry { after_ms: 1_000 }));
        assert!(m.retry_queued());
        for attempt in 2..=MAX_AUTO_RETRIES {
            m.handle(Event::RetryDue);
            let effects = m.handle(Event::LookupFailed);
            assert!(effects.contains(&Effect::ScheduleRetry {
                after_ms: retry_delay_ms(attempt)
            }));
        }
        m.handle(Event::RetryDue);
        let effects = m.handle(Event::LookupFailed);
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, Effect::ScheduleRetry { .. }))
        );
        assert!(!m.retry_queued(), "the shopper decides after the budget");
    }

    #[test]
    fn a_due_retry_checks_the_outcome_before_resubmitting() {
        let mut m = machine();
        pending_unknown(&mut m);
        let effects = m.handle(Event::RetryDue);
        assert_eq!(lookups(&effects), 1);
        assert!(submits(&effects).is_empty());
        let effects = m.handle(Event::LookupAnswered(KeyOutcome::Unknown));
        assert_eq!(submits(&effects), vec![(TOKEN.to_string(), 1)]);
    }

    #[test]
    fn a_due_retry_that_finds_the_order_succeeds_without_resubmitting() {
        let mut m = machine();
        pending_unknown(&mut m);
        m.handle(Event::RetryDue);
        let effects = m.handle(Event::LookupAnswered(KeyOutcome::Order {
            order: receipt(),
        }));
        assert!(submits(&effects).is_empty());
        assert!(matches!(m.phase(), Phase::Success { .. }));
    }

    #[test]
    fn nothing_is_retried_while_hidden_and_visibility_resumes_with_a_check() {
        let mut m = machine();
        pending_unknown(&mut m);
        m.handle(Event::PageHidden);
        let effects = m.handle(Event::RetryDue);
        assert!(submits(&effects).is_empty() && lookups(&effects) == 0);
        assert_eq!(m.intercepts().hidden_blocks, 1);
        assert!(m.retry_queued());
        let effects = m.handle(Event::PageVisible);
        assert_eq!(lookups(&effects), 1);
        assert!(submits(&effects).is_empty());
    }

    #[test]
    fn becoming_visible_while_pending_rechecks_the_token() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 1 });
        m.handle(Event::PageHidden);
        assert_eq!(lookups(&m.handle(Event::PageVisible)), 1);
    }

    #[test]
    fn becoming_visible_when_idle_or_done_does_nothing() {
        let mut m = machine();
        m.handle(Event::PageHidden);
        assert!(m.handle(Event::PageVisible).is_empty());
        m.handle(Event::Tap { qty: 1 });
        m.handle(Event::Response(Ok(receipt())));
        m.handle(Event::PageHidden);
        assert!(m.handle(Event::PageVisible).is_empty());
    }

    #[test]
    fn a_definite_refusal_needs_an_explicit_new_intent_with_a_new_token() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 1 });
        m.handle(Event::Response(Err(OrderError::new(
            ErrorCode::LimitExceeded,
            "limit",
        ))));
        assert!(matches!(
            m.phase(),
            Phase::Error {
                certainty: Certainty::Definite,
                ..
            }
        ));
        assert!(submits(&m.handle(Event::Tap { qty: 1 })).is_empty());
        m.handle(Event::BuyAgain {
            fresh_token: "fresh".into(),
        });
        assert_eq!(m.token(), "fresh");
        assert_eq!(
            submits(&m.handle(Event::Tap { qty: 1 })),
            vec![("fresh".into(), 1)]
        );
    }

    #[test]
    fn buy_again_after_success_mints_a_new_token() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 1 });
        m.handle(Event::Response(Ok(receipt())));
        m.handle(Event::BuyAgain {
            fresh_token: "second".into(),
        });
        assert_eq!(m.token(), "second");
        assert_eq!(m.phase(), &Phase::Idle);
    }

    #[test]
    fn buy_again_is_refused_while_the_outcome_is_unknown_or_pending() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 1 });
        m.handle(Event::BuyAgain {
            fresh_token: "nope".into(),
        });
        assert_eq!(m.token(), TOKEN);
        m.handle(Event::TransportFailed);
        m.handle(Event::BuyAgain {
            fresh_token: "nope".into(),
        });
        assert_eq!(m.token(), TOKEN);
    }

    #[test]
    fn a_retryable_refusal_keeps_the_token_for_an_explicit_retry() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 3 });
        let effects = m.handle(Event::Response(Err(OrderError::new(
            ErrorCode::StockConflict,
            "busy",
        ))));
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, Effect::ScheduleRetry { .. }))
        );
        assert!(m.qty_locked());
        assert_eq!(
            submits(&m.handle(Event::Tap { qty: 1 })),
            vec![(TOKEN.into(), 3)]
        );
    }

    #[test]
    fn request_in_progress_is_an_unknown_outcome() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 1 });
        m.handle(Event::Response(Err(OrderError::new(
            ErrorCode::RequestInProgress,
            "running",
        ))));
        assert!(m.retry_queued());
        assert!(matches!(
            m.phase(),
            Phase::Error {
                certainty: Certainty::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn a_lookup_that_finds_the_attempt_in_progress_waits_and_asks_again() {
        let mut m = machine();
        pending_unknown(&mut m);
        m.handle(Event::RetryDue);
        let effects = m.handle(Event::LookupAnswered(KeyOutcome::InProgress));
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::ScheduleRetry { .. }))
        );
        assert!(submits(&effects).is_empty());
    }

    #[test]
    fn a_lookup_that_finds_a_refusal_shows_it() {
        let mut m = machine();
        pending_unknown(&mut m);
        m.handle(Event::RetryDue);
        m.handle(Event::LookupAnswered(KeyOutcome::Failed {
            error: OrderError::new(ErrorCode::SoldOut, "gone"),
        }));
        assert!(matches!(
            m.phase(),
            Phase::Error {
                certainty: Certainty::Definite,
                ..
            }
        ));
    }

    #[test]
    fn restoring_a_pending_intent_looks_it_up_instead_of_submitting() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 2 });
        let (mut restored, effects) = SubmitMachine::restore(m.snapshot(), true);
        assert_eq!(lookups(&effects), 1);
        assert!(submits(&effects).is_empty());
        assert_eq!(restored.intercepts().restore_lookups, 1);
        assert_eq!(restored.token(), TOKEN);
        assert_eq!(restored.qty(), 2);
        restored.handle(Event::LookupAnswered(KeyOutcome::Order {
            order: receipt(),
        }));
        assert!(matches!(restored.phase(), Phase::Success { .. }));
    }

    #[test]
    fn restoring_a_pending_intent_that_never_arrived_waits_for_a_tap() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 1 });
        let (mut restored, _) = SubmitMachine::restore(m.snapshot(), true);
        let effects = restored.handle(Event::LookupAnswered(KeyOutcome::Unknown));
        assert!(submits(&effects).is_empty());
        assert_eq!(restored.phase(), &Phase::Idle);
        assert_eq!(
            submits(&restored.handle(Event::Tap { qty: 1 })),
            vec![(TOKEN.into(), 1)]
        );
    }

    #[test]
    fn restoring_while_hidden_defers_the_lookup_until_visible() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 1 });
        let (mut restored, effects) = SubmitMachine::restore(m.snapshot(), false);
        assert_eq!(lookups(&effects), 0);
        assert_eq!(lookups(&restored.handle(Event::PageVisible)), 1);
    }

    #[test]
    fn restoring_a_success_shows_the_receipt_without_any_request() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 1 });
        m.handle(Event::Response(Ok(receipt())));
        let (restored, effects) = SubmitMachine::restore(m.snapshot(), true);
        assert_eq!(lookups(&effects) + submits(&effects).len(), 0);
        assert!(matches!(restored.phase(), Phase::Success { .. }));
        assert_eq!(restored.intercepts().restore_lookups, 0);
    }

    #[test]
    fn late_answers_after_the_intent_ended_are_ignored() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 1 });
        m.handle(Event::Response(Ok(receipt())));
        assert!(m.handle(Event::TransportFailed).is_empty());
        assert!(
            m.handle(Event::Response(Err(OrderError::new(
                ErrorCode::SoldOut,
                "x"
            ))))
            .is_empty()
        );
        assert!(matches!(m.phase(), Phase::Success { .. }));
    }

    #[test]
    fn snapshots_round_trip_through_json() {
        let mut m = machine();
        pending_unknown(&mut m);
        let json = serde_json::to_string(&m.snapshot()).expect("serializes");
        let back: Snapshot = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, m.snapshot());
    }

    #[test]
    fn every_phase_reads_back_from_its_flat_object() {
        let phases = [
            Phase::Idle,
            Phase::Pending {
                kind: PendingKind::Checking,
            },
            Phase::Success { receipt: receipt() },
            Phase::Error {
                error: OrderError::new(ErrorCode::StockConflict, "again"),
                certainty: Certainty::Retryable,
            },
        ];
        for phase in phases {
            let snapshot = Snapshot {
                token: "t-1".into(),
                qty: 2,
                phase,
                retry_queued: true,
            };
            let json = serde_json::to_value(&snapshot).expect("serializes");
            assert!(
                json.get("phase").is_some_and(serde_json::Value::is_string),
                "{json}"
            );
            let back: Snapshot = serde_json::from_value(json.clone()).expect("parses");
            assert_eq!(back, snapshot, "{json}");
        }
        let without_retry: Snapshot =
            serde_json::from_str(r#"{"token":"t","qty":1,"phase":"idle"}"#).expect("parses");
        assert!(!without_retry.retry_queued);
        for bad in [
            r#"{"token":"t","qty":1,"phase":"pending"}"#,
            r#"{"token":"t","qty":1,"phase":"error","error":{"code":"sold_out","message":"x","retryable":false}}"#,
            r#"{"token":"t","qty":1,"phase":"gone"}"#,
        ] {
            assert!(serde_json::from_str::<Snapshot>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn intercepts_are_reported_in_the_api_shape() {
        let counts = Intercepts {
            swallowed_taps: 11,
            restore_lookups: 0,
            hidden_blocks: 4_294_967_295,
        };
        let read: Intercepts =
            serde_json::from_str(&counts.to_json()).expect("the endpoint reads it");
        assert_eq!(read, counts);
        let json: serde_json::Value = serde_json::from_str(&counts.to_json()).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "swallowed_taps": 11,
                "restore_lookups": 0,
                "hidden_blocks": 4_294_967_295_u32,
            })
        );
    }

    #[test]
    fn a_report_may_leave_counters_out_but_not_add_unknown_ones() {
        let partial: Intercepts = serde_json::from_str(r#"{"hidden_blocks":2}"#).expect("partial");
        assert_eq!(
            partial,
            Intercepts {
                hidden_blocks: 2,
                ..Intercepts::default()
            }
        );
        assert!(serde_json::from_str::<Intercepts>(r#"{"taps":1}"#).is_err());
    }

    #[test]
    fn the_intercept_counters_drain() {
        let mut m = machine();
        m.handle(Event::Tap { qty: 1 });
        m.handle(Event::Tap { qty: 1 });
        assert_eq!(m.take_intercepts().swallowed_taps, 1);
        assert!(m.intercepts().is_empty());
    }
}
