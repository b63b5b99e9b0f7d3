//! Drop day on the item page: the countdown to the sale's start and the
//! waiting room's panel, both inside the item's island.
//!
//! The clock is the server's. The page is rendered with the server's time;
//! once hydrated, [`ServerClock`] asks the server for its time once, keeps
//! the offset from the phone's clock, and ticks four times a second, so the
//! Buy button turns live at the start without a reload, whatever the
//! phone's clock says.
//!
//! The waiting room's panel shows "Join the line" (a plain form that works
//! without JavaScript), then the buyer's position and expected wait, then
//! the Buy button carrying the pass, or sold out. A waiting page asks where
//! it stands at the interval [`poll_after_ms`] gives (every second near the
//! front, rarely far back). Without JavaScript the server-rendered page
//! refreshes itself at the same interval ([`NoScriptRefresh`]).

use crate::domain::ItemId;
use crate::drop_day::{SalePhase, poll_after_ms, sale_phase};
use crate::model::{Item, QueueState, QueueStatus};
use leptos::prelude::*;

/// The server's clock as the page estimates it, in ms since the epoch.
#[derive(Debug, Clone, Copy)]
pub struct ServerClock {
    now_ms: RwSignal<i64>,
}

impl ServerClock {
    /// Starts at the server's time of the render; once hydrated, and only
    /// for an item whose page shows time (a sale window, a waiting room's
    /// pass), measures the offset to the phone's clock and ticks. Other
    /// pages make no request for it.
    #[cfg_attr(not(feature = "hydrate"), allow(unused_variables))]
    pub fn new(page_now_ms: i64, item: &Item) -> Self {
        let now_ms = RwSignal::new(page_now_ms);
        #[cfg(feature = "hydrate")]
        if item
            .sale_starts_at_ms
            .is_some_and(|starts| starts > page_now_ms)
            || item.sale_ends_at_ms.is_some()
            || item.has_waiting_room()
        {
            Effect::new(move |_| ticking::start(now_ms, page_now_ms));
        }
        Self { now_ms }
    }

    pub fn now_ms(self) -> i64 {
        self.now_ms.get()
    }
}

/// Where the item's sale window stands, on the server's clock.
pub fn phase_signal(item: &Item, clock: ServerClock) -> Memo<SalePhase> {
    let item = item.clone();
    Memo::new(move |_| sale_phase(&item, clock.now_ms()))
}

/// The countdown before the start, or the end of the sale.
#[component]
pub fn SaleBanner(phase: Memo<SalePhase>) -> impl IntoView {
    let s = super::strings();
    move || match phase.get() {
        SalePhase::Upcoming { opens_in_ms } => view! {
            <p class="sale-countdown" data-testid="sale-countdown" role="timer">
                {s.opens_in(opens_in_ms)}
            </p>
        }
        .into_any(),
        SalePhase::Ended => view! {
            <p class="sale-ended" data-testid="sale-ended">
                {s.sale_ended}
            </p>
        }
        .into_any(),
        SalePhase::Open => ().into_any(),
    }
}

/// The waiting room: join, wait, then (through `children`, the Buy panel
/// the caller renders once `queue` says admitted) buy, or sold out.
// The admission rate and the phase pace the browser's poll; the server's
// render needs neither.
#[cfg_attr(not(feature = "hydrate"), allow(unused_variables))]
#[component]
pub fn LinePanel(
    item_id: ItemId,
    admission_per_second: i64,
    queue: RwSignal<Option<QueueStatus>>,
    phase: Memo<SalePhase>,
    clock: ServerClock,
) -> impl IntoView {
    let s = super::strings();
    let joining = RwSignal::new(false);
    let hydrated = RwSignal::new(false);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        polling::watch(item_id, admission_per_second, queue, phase);
        hydrated.set(true);
    });

    let on_join = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if joining.get_untracked() {
            return;
        }
        joining.set(true);
        #[cfg(feature = "hydrate")]
        polling::join(item_id, admission_per_second, queue, phase, joining);
    };

    let status_line = move || {
        let status = queue.get()?;
        let (text, class) = match status.state {
            QueueState::Waiting => {
                let mut text = match status.position {
                    Some(position) => s.line_position(position, status.eta_seconds),
                    None => s.line_before_draw.to_owned(),
                };
                if status.paused == Some(true) {
                    text = format!("{text} {}", s.line_paused);
                }
                (text, "line-status")
            }
            QueueState::Admitted => {
                let left = status
                    .pass_expires_at_ms
                    .map(|at| s.pass_valid_for(at - clock.now_ms()))
                    .unwrap_or_default();
                (
                    format!("{} {left}", s.line_admitted),
                    "line-status admitted",
                )
            }
            QueueState::SoldOut => (s.line_sold_out.to_owned(), "line-status error"),
            QueueState::Closed => (s.sale_ended.to_owned(), "line-status error"),
        };
        Some(view! {
            <p class=class data-testid="line-status" data-state=state_name(status.state)>
                {text}
            </p>
        })
    };

    view! {
        <div
            class="line-panel"
            role="status"
            aria-live="polite"
            data-hydrated=move || hydrated.get().then_some("true")
        >
            {move || {
                queue
                    .with(Option::is_none)
                    .then(|| {
                        view! {
                            <form
                                class="join-line"
                                method="post"
                                action=format!("/items/{item_id}/queue")
                                on:submit=on_join
                            >
                                <button
                                    type="submit"
                                    class="buy-button"
                                    aria-busy=move || joining.get().then_some("true")
                                >
                                    {s.join_line}
                                </button>
                            </form>
                        }
                    })
            }}
            {status_line}
        </div>
    }
}

fn state_name(state: QueueState) -> &'static str {
    match state {
        QueueState::Waiting => "waiting",
        QueueState::Admitted => "admitted",
        QueueState::SoldOut => "sold_out",
        QueueState::Closed => "closed",
    }
}

/// For pages without JavaScript: a `<meta http-equiv="refresh">` inside
/// `<noscript>`, so only a page that cannot count down or poll reloads
/// itself: at the start of the sale, or at the waiting room's poll
/// interval. Rendered outside the island (a browser with JavaScript keeps
/// `<noscript>` as text, which an island could not hydrate).
#[component]
pub fn NoScriptRefresh(item: Item, queue: Option<QueueStatus>, now_ms: i64) -> impl IntoView {
    let s = super::strings();
    let phase = sale_phase(&item, now_ms);
    let after_ms = match (&queue, phase) {
        (Some(status), _) => {
            poll_after_ms(status, item.admission_per_second.unwrap_or(1), phase, 0.5)
        }
        (None, SalePhase::Upcoming { opens_in_ms }) => {
            Some(u32::try_from(opens_in_ms.clamp(1_000, 60_000)).unwrap_or(60_000))
        }
        (None, _) => None,
    };
    after_ms.map(|ms| {
        let seconds = ms.div_ceil(1000);
        view! {
            <noscript>
                <meta http-equiv="refresh" content=seconds.to_string() />
                <p class="hint">{s.refreshes_itself}</p>
            </noscript>
        }
    })
}

/// The clock's browser half.
#[cfg(feature = "hydrate")]
mod ticking {
    use super::super::browser;
    use leptos::prelude::*;
    use leptos::task::spawn_local;

    /// How often the clock ticks: a countdown shows seconds, and the Buy
    /// button should open within a quarter second of the start.
    const TICK_MS: u32 = 250;

    pub fn start(now_ms: RwSignal<i64>, page_now_ms: i64) {
        // Until the server answers, count from the render's time: behind by
        // the page's load time, so never early.
        let offset = StoredValue::new(page_now_ms as f64 - js_sys::Date::now());
        browser::every(TICK_MS, move || {
            now_ms.set((js_sys::Date::now() + offset.get_value()) as i64);
        });
        spawn_local(async move {
            let sent = js_sys::Date::now();
            if let Ok(server_ms) = crate::server_fns::server_now().await {
                let received = js_sys::Date::now();
                // The server read its clock about halfway through the trip.
                let at_server = server_ms as f64 + (received - sent) / 2.0;
                offset.set_value(at_server - received);
                now_ms.set((js_sys::Date::now() + offset.get_value()) as i64);
            }
        });
    }
}

/// The waiting room's browser half: joining, and the cheap poll.
#[cfg(feature = "hydrate")]
mod polling {
    use super::super::browser;
    use crate::domain::ItemId;
    use crate::drop_day::{SalePhase, poll_after_ms};
    use crate::model::{QueueState, QueueStatus};
    use crate::server_fns::{join_queue, where_in_line};
    use leptos::prelude::*;
    use leptos::task::spawn_local;

    /// When the page opens already waiting, starts asking where it stands.
    pub fn watch(
        item: ItemId,
        per_second: i64,
        queue: RwSignal<Option<QueueStatus>>,
        phase: Memo<SalePhase>,
    ) {
        if is_waiting(queue) {
            schedule(item, per_second, queue, phase);
        }
    }

    pub fn join(
        item: ItemId,
        per_second: i64,
        queue: RwSignal<Option<QueueStatus>>,
        phase: Memo<SalePhase>,
        joining: RwSignal<bool>,
    ) {
        spawn_local(async move {
            if let Ok(status) = join_queue(item).await {
                queue.set(Some(status));
                if is_waiting(queue) {
                    schedule(item, per_second, queue, phase);
                }
            }
            joining.set(false);
        });
    }

    fn is_waiting(queue: RwSignal<Option<QueueStatus>>) -> bool {
        queue.with_untracked(|q| q.as_ref().is_some_and(|q| q.state == QueueState::Waiting))
    }

    /// Asks again after the rule's interval, while the buyer is waiting. A
    /// failed read keeps the last answer and asks again later.
    fn schedule(
        item: ItemId,
        per_second: i64,
        queue: RwSignal<Option<QueueStatus>>,
        phase: Memo<SalePhase>,
    ) {
        let after = queue.with_untracked(|q| {
            q.as_ref().and_then(|status| {
                poll_after_ms(
                    status,
                    per_second,
                    phase.get_untracked(),
                    js_sys::Math::random(),
                )
            })
        });
        let Some(after) = after else { return };
        browser::after(after, move || {
            spawn_local(async move {
                if let Ok(Some(status)) = where_in_line(item).await {
                    queue.set(Some(status));
                }
                if is_waiting(queue) {
                    schedule(item, per_second, queue, phase);
                }
            });
        });
    }
}
