//! The buyer's side of the payment deadline: `/orders` lists the buyer's
//! orders with their status and the time left to pay, and `/pay/{order_id}`
//! is the demo payment provider's checkout. Both are rendered on the server
//! and work without JavaScript: the checkout's button is a plain form that
//! posts to the server, which sends the signed webhook a real provider
//! would send.
//!
//! [`TimeLeft`] shows the time left to pay as the server saw it when the
//! page's data was read (the same text on the server and at hydration),
//! then, once hydrated, counts down every second. On these pages it is
//! wrapped in [`Countdown`], an island of its own: the only part of them
//! the browser hydrates.

use crate::i18n::format_price;
use crate::model::{ErrorCode, OrderStatus, OrderView};
use crate::server_fns::{load_checkout, load_my_orders};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};

/// The time left until `pay_by_ms`, as of `reference_ms` (the server's
/// clock when the data was read), counting down after hydration.
#[component]
pub fn TimeLeft(pay_by_ms: i64, reference_ms: i64) -> impl IntoView {
    let s = super::strings();
    let elapsed_ms = RwSignal::new(0i64);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        let mounted = js_sys::Date::now();
        let ticking = set_interval_with_handle(
            move || elapsed_ms.set((js_sys::Date::now() - mounted) as i64),
            std::time::Duration::from_secs(1),
        );
        on_cleanup(move || {
            if let Ok(ticking) = ticking {
                ticking.clear();
            }
        });
    });
    view! {
        <span class="time-left" data-testid="time-left" data-pay-by=pay_by_ms>
            {move || s.time_left(pay_by_ms - reference_ms - elapsed_ms.get())}
        </span>
    }
}

/// [`TimeLeft`] as an island, for pages that are otherwise plain HTML.
#[island]
pub fn Countdown(pay_by_ms: i64, reference_ms: i64) -> impl IntoView {
    // An island hydrates without the page's context.
    provide_context(super::current_lang());
    view! { <TimeLeft pay_by_ms reference_ms /> }
}

/// The link to the demo checkout of an order still awaiting payment.
#[component]
pub fn PayLink(order_id: String) -> impl IntoView {
    let s = super::strings();
    view! {
        <a href=format!("/pay/{order_id}") class="pay-link">
            {s.pay}
        </a>
    }
}

/// An order's status, worded for the shopper, with a colour per status.
#[component]
fn StatusBadge(status: OrderStatus) -> impl IntoView {
    let s = super::strings();
    view! {
        <span class=format!("status status-{}", status.as_str()) data-status=status.as_str()>
            {s.status_label(status)}
        </span>
    }
}

#[component]
pub fn MyOrdersPage() -> impl IntoView {
    let s = super::strings();
    let orders = Resource::new(|| (), |_| load_my_orders());
    view! {
        <Title text=s.my_orders />
        <section class="my-orders">
            <h1>{s.my_orders}</h1>
            <Suspense fallback=|| view! { <p class="loading" aria-busy="true"></p> }>
                {move || Suspend::new(async move {
                    match orders.await {
                        Ok(mine) if mine.orders.is_empty() => {
                            view! { <p>{s.no_orders}</p> }.into_any()
                        }
                        Ok(mine) => {
                            let (now_ms, demo) = (mine.now_ms, mine.demo_checkout);
                            view! {
                                <ul class="order-list">
                                    {mine
                                        .orders
                                        .into_iter()
                                        .map(|order| view! { <OrderRow order now_ms demo /> })
                                        .collect_view()}
                                </ul>
                            }
                                .into_any()
                        }
                        Err(_) => {
                            view! { <p class="error" role="alert">{s.load_failed}</p> }.into_any()
                        }
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn OrderRow(order: OrderView, now_ms: i64, demo: bool) -> impl IntoView {
    let s = super::strings();
    let awaiting = order.status == OrderStatus::AwaitingPayment;
    let deadline = order.pay_by_ms.filter(|_| awaiting);
    let pay = (awaiting && demo).then(|| order.order_id.clone());
    view! {
        <li class="order-row" data-testid="order" data-order-id=order.order_id.clone()>
            <a class="order-item" href=format!("/items/{}", order.item_id)>
                {order.item_title.clone()}
            </a>
            <p class="meta">
                {s.quantity}": "{order.qty.get()}" · "{s.total}": "{format_price(order.total_cents)}
            </p>
            <p class="order-state">
                <StatusBadge status=order.status />
                {deadline
                    .map(|pay_by_ms| {
                        view! {
                            " · "
                            <Countdown pay_by_ms reference_ms=now_ms />
                        }
                    })}
            </p>
            {pay.map(|order_id| view! { <PayLink order_id /> })}
            <p class="order-id">
                {s.order_id}": " <code>{order.order_id.clone()}</code>
            </p>
        </li>
    }
}

/// `/pay/{order_id}`: the demo provider's checkout, clearly labelled.
#[component]
pub fn CheckoutPage() -> impl IntoView {
    let s = super::strings();
    let params = use_params_map();
    let query = use_query_map();
    let order_id = move || params.read().get("order_id").unwrap_or_default();
    let refused = move || query.read().get("error").is_some();
    let view_data = Resource::new(order_id, load_checkout);
    view! {
        <Title text=s.demo_checkout />
        <section class="checkout">
            <p class="demo-banner" role="note">
                <strong>{s.demo_checkout}</strong>
                " · "
                {s.demo_checkout_notice}
            </p>
            <Suspense fallback=|| view! { <p class="loading" aria-busy="true"></p> }>
                {move || Suspend::new(async move {
                    match view_data.await {
                        Ok(data) => {
                            let order = data.order;
                            let payable = order.status == OrderStatus::AwaitingPayment
                                && order.pay_by_ms.is_some_and(|by| by > data.now_ms);
                            view! {
                                <h1>{order.item_title.clone()}</h1>
                                <p class="price">{format_price(order.total_cents)}</p>
                                <p class="order-state">
                                    <StatusBadge status=order.status />
                                    {order
                                        .pay_by_ms
                                        .filter(|_| payable)
                                        .map(|pay_by_ms| {
                                            view! {
                                                " · "
                                                <Countdown pay_by_ms reference_ms=data.now_ms />
                                            }
                                        })}
                                </p>
                                {if payable {
                                    view! {
                                        <form
                                            class="pay-form"
                                            method="post"
                                            action=format!("/pay/{}", order.order_id)
                                        >
                                            <button type="submit" class="buy-button">
                                                {s.pay_demo}" "{format_price(order.total_cents)}
                                            </button>
                                        </form>
                                    }
                                        .into_any()
                                } else {
                                    view! { <p class="hint">{s.not_payable}</p> }.into_any()
                                }}
                            }
                                .into_any()
                        }
                        Err(error) if error.code == ErrorCode::NotFound => {
                            super::set_status(404);
                            view! { <p class="error" role="alert">{s.not_payable}</p> }.into_any()
                        }
                        Err(_) => {
                            view! { <p class="error" role="alert">{s.load_failed}</p> }.into_any()
                        }
                    }
                })}
            </Suspense>
            <Show when=refused>
                <p class="error" role="alert">{s.payment_refused}</p>
            </Show>
            <p>
                <a href="/orders">{s.my_orders}</a>
            </p>
        </section>
    }
}
