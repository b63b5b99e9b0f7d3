//! The Buy panel: a server-rendered form that works without JavaScript, taken
//! over after hydration by the [`SubmitMachine`].
//!
//! Without JavaScript the form posts `item_id`, `qty` and the server-minted
//! `idempotency_key` to `/items/{id}/buy`; the server runs the order pipeline
//! and redirects back to the item page with `?order_key=`, which renders the
//! outcome. A double submit carries the same key and yields one order.
//!
//! With JavaScript the submit handler feeds the machine and runs its effects:
//! the server function call, outcome lookups, retry timers and the mirror in
//! `history.state`. The markup depends only on the machine's phase, which is
//! the same on the server and at hydration, so hydration never mismatches.

use crate::domain::{IdempotencyKey, Quantity};
use crate::guard::{Certainty, PendingKind, Phase, SubmitMachine};
use crate::i18n::format_price;
use crate::model::{Item, KeyOutcome, Receipt};
use leptos::prelude::*;

/// The machine a server render starts from: a fresh intent with the form's
/// token, or the outcome of a no-JavaScript post being shown after redirect.
fn initial_machine(
    form_token: IdempotencyKey,
    prior: Option<(IdempotencyKey, KeyOutcome)>,
) -> SubmitMachine {
    let Some((key, outcome)) = prior else {
        return SubmitMachine::new(form_token.to_string(), true);
    };
    let mut machine = SubmitMachine::new(key.to_string(), true);
    machine.handle(crate::guard::Event::Tap { qty: 1 });
    let event = match outcome {
        KeyOutcome::Order { order } => crate::guard::Event::Response(Ok(order)),
        KeyOutcome::Failed { error } => crate::guard::Event::Response(Err(error)),
        KeyOutcome::InProgress => crate::guard::Event::TransportFailed,
        KeyOutcome::Unknown => return SubmitMachine::new(key.to_string(), true),
    };
    machine.handle(event);
    machine
}

#[component]
pub fn BuyPanel(
    item: Item,
    form_token: IdempotencyKey,
    prior: Option<(IdempotencyKey, KeyOutcome)>,
    /// Units left as last read from the server; refreshed after each order.
    stock: RwSignal<i64>,
    /// Whether a receipt's "Pay" leads to the demo checkout.
    demo_checkout: bool,
    /// The server's clock when the page was read.
    page_now_ms: i64,
    /// Whether the sale window is open now (on the server's clock): before
    /// it the button waits, and turns live at the start without a reload.
    on_sale: Signal<bool>,
    /// The waiting room's pass, sent with the order, when the item has a
    /// waiting room and the buyer was let in.
    queue_pass: Signal<Option<String>>,
) -> impl IntoView {
    let s = super::strings();
    let item_id = item.id;
    let max_qty = item.max_selectable_qty();
    let sold_out = move || stock.get() <= 0;
    let machine = RwSignal::new(initial_machine(form_token, prior));
    let chosen_qty = RwSignal::new(1u32);
    let hydrated = RwSignal::new(false);

    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        runner::start(
            runner::Target {
                item: item_id,
                queue_pass,
            },
            machine,
        );
        hydrated.set(true);
    });
    // After an order (ours or a replay), show the stock the server has now.
    #[cfg(feature = "hydrate")]
    Effect::new(move |previous: Option<bool>| {
        let succeeded = machine.with(|m| matches!(m.phase(), Phase::Success { .. }));
        if succeeded && previous == Some(false) {
            runner::refresh_stock(item_id, stock);
        }
        succeeded
    });

    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        // Before the start the button is a countdown, not a way to order.
        #[cfg(feature = "hydrate")]
        if on_sale.get_untracked() {
            runner::dispatch(
                runner::Target {
                    item: item_id,
                    queue_pass,
                },
                machine,
                crate::guard::Event::Tap {
                    qty: chosen_qty.get_untracked(),
                },
            );
        }
    };
    let buy_again = move |_| {
        #[cfg(feature = "hydrate")]
        runner::dispatch(
            runner::Target {
                item: item_id,
                queue_pass,
            },
            machine,
            crate::guard::Event::BuyAgain {
                fresh_token: super::browser::random_uuid(),
            },
        );
    };

    let phase = move || machine.with(|m| m.phase().clone());
    let pending = move || machine.with(SubmitMachine::is_pending);
    let token = move || machine.with(|m| m.token().to_string());
    let qty_locked = move || machine.with(SubmitMachine::qty_locked);
    let shown_qty = move || {
        if qty_locked() {
            machine.with(SubmitMachine::qty)
        } else {
            chosen_qty.get()
        }
    };
    let button_label = move || match phase() {
        Phase::Pending {
            kind: PendingKind::Submitting,
        } => s.buying,
        Phase::Pending {
            kind: PendingKind::Checking,
        } => s.checking,
        Phase::Error {
            certainty: Certainty::Retryable | Certainty::Unknown,
            ..
        } => s.retry,
        _ if sold_out() => s.sold_out_badge,
        _ if !on_sale.get() => s.not_on_sale_yet,
        _ => s.buy,
    };
    let button_inert = move || {
        sold_out()
            || !on_sale.get()
            || pending()
            || matches!(
                phase(),
                Phase::Success { .. }
                    | Phase::Error {
                        certainty: Certainty::Definite,
                        ..
                    }
            )
    };
    let can_buy_again = move || {
        !sold_out()
            && matches!(
                phase(),
                Phase::Success { .. }
                    | Phase::Error {
                        certainty: Certainty::Definite,
                        ..
                    }
            )
    };
    let waiting_visible = move || machine.with(|m| m.retry_queued());

    view! {
        <form
            class="buy-panel"
            method="post"
            action=format!("/items/{item_id}/buy")
            on:submit=on_submit
            data-hydrated=move || hydrated.get().then_some("true")
        >
            <input type="hidden" name="item_id" value=item_id.get() />
            <input type="hidden" name="idempotency_key" prop:value=token value=token />
            {move || {
                queue_pass
                    .get()
                    .map(|pass| {
                        view! { <input type="hidden" name="queue_pass" value=pass /> }
                    })
            }}
            {if max_qty > 1 {
                view! {
                    <label class="qty">
                        <span>{s.quantity}</span>
                        <select
                            name="qty"
                            prop:disabled=qty_locked
                            on:change=move |ev| {
                                if let Ok(qty) = event_target_value(&ev).parse::<u32>() {
                                    chosen_qty.set(qty.clamp(1, Quantity::MAX));
                                }
                            }
                        >
                            {(1..=max_qty)
                                .map(|n| {
                                    view! {
                                        <option value=n.to_string() selected=move || shown_qty() == n>
                                            {n}
                                        </option>
                                    }
                                })
                                .collect_view()}
                        </select>
                    </label>
                }
                    .into_any()
            } else {
                view! { <input type="hidden" name="qty" value="1" /> }.into_any()
            }}
            <button
                type="submit"
                class="buy-button"
                aria-disabled=move || button_inert().then_some("true")
                aria-busy=move || pending().then_some("true")
                data-phase=move || phase_name(&phase())
            >
                {button_label}
            </button>
            <div class="outcome" role="status" aria-live="polite" data-testid="outcome">
                {move || match phase() {
                    Phase::Success { receipt } => {
                        view! { <ReceiptView receipt demo_checkout page_now_ms /> }.into_any()
                    }
                    Phase::Error { error, certainty } => {
                        let text = if certainty == Certainty::Unknown {
                            s.outcome_unknown
                        } else {
                            s.error_message(error.code)
                        };
                        view! {
                            <p class="error" data-code=error.code.as_str()>
                                {text}
                            </p>
                        }
                            .into_any()
                    }
                    Phase::Idle | Phase::Pending { .. } => ().into_any(),
                }}
                {move || {
                    (waiting_visible() && hydrated.get())
                        .then(|| view! { <p class="hint">{s.waiting_visible}</p> })
                }}
            </div>
            {move || {
                can_buy_again()
                    .then(|| {
                        view! {
                            <button type="button" class="buy-again" on:click=buy_again>
                                {s.buy_again}
                            </button>
                        }
                    })
            }}
        </form>
    }
}

fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Idle => "idle",
        Phase::Pending { .. } => "pending",
        Phase::Success { .. } => "success",
        Phase::Error { .. } => "error",
    }
}

/// The order's receipt: what its 201 answered. With a payment window it
/// shows the deadline as the time left (counted from when the order was
/// placed, or from when the page was read, whichever is later) and, with
/// the demo provider, the way to pay.
#[component]
fn ReceiptView(receipt: Receipt, demo_checkout: bool, page_now_ms: i64) -> impl IntoView {
    let s = super::strings();
    let deadline = receipt.pay_by_ms.map(|pay_by_ms| {
        let reference_ms = receipt.created_at_ms.max(page_now_ms);
        let pay = demo_checkout.then(|| receipt.order_id.clone());
        view! {
            <p class="deadline" data-testid="deadline">
                {s.status_label(receipt.status)}" · "
                <super::orders::TimeLeft pay_by_ms reference_ms />
            </p>
            {pay.map(|order_id| view! { <super::orders::PayLink order_id /> })}
        }
    });
    view! {
        <div class="receipt" data-testid="receipt" data-order-id=receipt.order_id.clone()>
            <p class="receipt-title">{s.order_placed}</p>
            <p>
                {s.order_id}": " <code>{receipt.order_id.clone()}</code>
            </p>
            <p>
                {s.quantity}": "{receipt.qty.get()}" · "{s.total}": "
                {format_price(receipt.total_cents)}
            </p>
            {deadline}
        </div>
    }
}

/// Runs the machine's effects in the browser.
#[cfg(feature = "hydrate")]
mod runner {
    use super::super::browser;
    use crate::domain::{IdempotencyKey, ItemId, Quantity};
    use crate::guard::{Effect, Event, SubmitMachine};
    use crate::model::ErrorCode;
    use crate::server_fns::{order_outcome, place_order};
    use leptos::prelude::*;
    use leptos::task::spawn_local;

    /// How long an order request may take before its outcome counts as unknown.
    const REQUEST_TIMEOUT_MS: u32 = 10_000;
    /// How often swallowed taps and other intercepts are reported.
    const REPORT_EVERY_MS: u32 = 5_000;

    /// Reads the item's stock again after an order.
    pub fn refresh_stock(item: ItemId, stock: RwSignal<i64>) {
        spawn_local(async move {
            if let Ok(view) = crate::server_fns::load_item_view(item).await {
                stock.set(view.item.stock);
            }
        });
    }

    /// What the machine orders: the item, with the waiting room's pass when
    /// the buyer holds one.
    #[derive(Clone, Copy)]
    pub struct Target {
        pub item: ItemId,
        pub queue_pass: Signal<Option<String>>,
    }

    /// Restores the intent from `history.state` and wires the page events.
    pub fn start(target: Target, machine: RwSignal<SubmitMachine>) {
        let item = target.item;
        let visible = browser::is_visible();
        match browser::read_snapshot(item) {
            Some(snapshot) => {
                let (restored, effects) = SubmitMachine::restore(snapshot, visible);
                machine.set(restored);
                run(target, machine, effects);
            }
            None => {
                let effects = machine.try_update(|m| {
                    if !visible {
                        m.handle(Event::PageHidden)
                    } else {
                        Vec::new()
                    }
                });
                browser::write_snapshot(item, &machine.get_untracked().snapshot());
                run(target, machine, effects.unwrap_or_default());
            }
        }
        browser::on_visibility_change(move |visible| {
            let event = if visible {
                Event::PageVisible
            } else {
                Event::PageHidden
            };
            dispatch(target, machine, event);
            if !visible {
                report(machine);
            }
        });
        browser::on_bfcache_restore(move || {
            report(machine);
            let snapshot = machine.get_untracked().snapshot();
            let (restored, effects) = SubmitMachine::restore(snapshot, browser::is_visible());
            machine.set(restored);
            run(target, machine, effects);
        });
        browser::on_page_hide(move || report(machine));
        browser::every(REPORT_EVERY_MS, move || report(machine));
    }

    /// Applies one event to the machine and runs what it asks for.
    pub fn dispatch(target: Target, machine: RwSignal<SubmitMachine>, event: Event) {
        let effects = machine.try_update(|m| m.handle(event)).unwrap_or_default();
        run(target, machine, effects);
    }

    fn run(target: Target, machine: RwSignal<SubmitMachine>, effects: Vec<Effect>) {
        let item = target.item;
        for effect in effects {
            match effect {
                Effect::Persist(snapshot) => browser::write_snapshot(item, &snapshot),
                Effect::ScheduleRetry { after_ms } => {
                    browser::after(after_ms, move || dispatch(target, machine, Event::RetryDue));
                }
                Effect::Submit { token, qty } => {
                    spawn_local(async move {
                        let event = match (IdempotencyKey::parse(&token), Quantity::new(qty.into()))
                        {
                            (Ok(key), Ok(qty)) => {
                                match browser::with_timeout(
                                    REQUEST_TIMEOUT_MS,
                                    place_order(item, qty, key, target.queue_pass.get_untracked()),
                                )
                                .await
                                {
                                    Some(Err(error)) if error.code == ErrorCode::NoResponse => {
                                        Event::TransportFailed
                                    }
                                    Some(result) => Event::Response(result),
                                    None => Event::TransportFailed,
                                }
                            }
                            (Err(e), _) | (_, Err(e)) => Event::Response(Err(e.into())),
                        };
                        dispatch(target, machine, event);
                    });
                }
                Effect::Lookup { token } => {
                    spawn_local(async move {
                        let event = match IdempotencyKey::parse(&token) {
                            Ok(key) => {
                                match browser::with_timeout(REQUEST_TIMEOUT_MS, order_outcome(key))
                                    .await
                                {
                                    Some(Ok(outcome)) => Event::LookupAnswered(outcome),
                                    Some(Err(_)) | None => Event::LookupFailed,
                                }
                            }
                            Err(_) => Event::LookupFailed,
                        };
                        dispatch(target, machine, event);
                    });
                }
            }
        }
    }

    /// Sends the counted intercepts with `navigator.sendBeacon`.
    fn report(machine: RwSignal<SubmitMachine>) {
        let counts = machine
            .try_update_untracked(SubmitMachine::take_intercepts)
            .unwrap_or_default();
        if !counts.is_empty() {
            browser::send_beacon("/api/guard-events", &counts.to_json());
        }
    }
}
