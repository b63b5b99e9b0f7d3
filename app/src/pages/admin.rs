//! `/dashboard`: the admin dashboard. Without an admin session it shows a
//! sign-in form (a plain form: the token goes to the server once and comes
//! back as a signed session cookie). With one, it draws the charts and, once
//! hydrated, refreshes them every two seconds without reloading the page.

use crate::dashboard::{DashboardData, Heatmap, LineChart, PaymentsPanel, Point};
use crate::model::ErrorCode;
use crate::server_fns::dashboard_data;
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

/// How often the hydrated page asks for fresh data.
pub const REFRESH_SECONDS: u64 = 2;

#[component]
pub fn DashboardPage() -> impl IntoView {
    let s = super::strings();
    let tick = RwSignal::new(0u64);
    let data = Resource::new(move || tick.get(), |_| dashboard_data());
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        set_interval(
            move || tick.update(|t| *t += 1),
            std::time::Duration::from_secs(REFRESH_SECONDS),
        );
    });
    view! {
        <section class="dashboard">
            <h1>{s.dashboard}</h1>
            <Transition fallback=|| view! { <p class="loading" aria-busy="true"></p> }>
                {move || Suspend::new(async move {
                    match data.await {
                        Ok(data) => view! { <Charts data /> }.into_any(),
                        Err(e) if e.code == ErrorCode::Unauthorized => {
                            super::set_status(401);
                            view! { <SignIn /> }.into_any()
                        }
                        Err(_) => view! { <p class="error" role="alert">{s.load_failed}</p> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn SignIn() -> impl IntoView {
    let s = super::strings();
    let query = use_query_map();
    let failed = move || query.read().get("error").is_some();
    view! {
        <form class="sign-in" method="post" action="/dashboard/login">
            <label>
                <span>{s.admin_token}</span>
                <input type="password" name="token" autocomplete="current-password" required />
            </label>
            <button type="submit" class="buy-button">{s.sign_in}</button>
            <Show when=failed>
                <p class="error" role="alert">{s.wrong_token}</p>
            </Show>
        </form>
    }
}

#[component]
fn Charts(data: DashboardData) -> impl IntoView {
    let s = super::strings();
    let series = data.series.clone();
    let max_hot = data
        .hot_items
        .iter()
        .map(|h| h.requests_per_second)
        .fold(0.0_f64, f64::max);
    view! {
        <p class="live" data-testid="dashboard-live">
            {s.live}" · "{s.orders_created}": "<b data-testid="orders-created">{data.orders_created}</b>
            " · "{s.intercepts_total}": "<b>{data.intercepts}</b>
        </p>
        <div class="chart-grid">
            <LineChart
                title=s.throughput
                unit="/s"
                series=series.clone()
                measure=|p: &Point| Some(p.orders_per_second)
                fixed_max=None
            />
            <LineChart
                title=s.latency_p99
                unit=" ms"
                series=series.clone()
                measure=|p: &Point| p.p99_ms
                fixed_max=None
            />
            <LineChart
                title=s.lua_success
                unit="%"
                series=series.clone()
                measure=|p: &Point| p.lua_success_pct
                fixed_max=Some(100.0)
            />
            <LineChart
                title=s.db_conflict
                unit="%"
                series=series.clone()
                measure=|p: &Point| p.db_conflict_pct
                fixed_max=Some(100.0)
            />
            <LineChart
                title=s.intercept_rate
                unit="%"
                series=series.clone()
                measure=|p: &Point| p.intercept_pct
                fixed_max=Some(100.0)
            />
            <Heatmap series=series rows=24 />
        </div>
        {data.payments.map(|panel| view! { <Payments panel /> })}
        <section class="hot-items">
            <h2>{s.hot_items}</h2>
            <ol>
                {data
                    .hot_items
                    .into_iter()
                    .map(|hot| {
                        let width = if max_hot > 0.0 { 100.0 * hot.requests_per_second / max_hot } else { 0.0 };
                        view! {
                            <li>
                                <a href=format!("/items/{}", hot.item_id)>{hot.title}</a>
                                <span class="bar" style=format!("width:{width:.0}%")></span>
                                <span class="rate">{format!("{:.1}", hot.requests_per_second)}</span>
                            </li>
                        }
                    })
                    .collect_view()}
            </ol>
        </section>
        <form method="post" action="/dashboard/logout">
            <button type="submit" class="buy-again">{s.sign_out}</button>
        </form>
    }
}

/// Orders by status and the payment deadline's numbers.
#[component]
fn Payments(panel: PaymentsPanel) -> impl IntoView {
    let s = super::strings();
    let seconds = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1}"));
    view! {
        <section class="payments-panel" data-testid="payments-panel">
            <h2>{s.payments_heading}</h2>
            <dl class="payment-facts">
                {panel
                    .orders_by_status
                    .into_iter()
                    .map(|(status, n)| {
                        view! {
                            <div data-status=status.as_str()>
                                <dt>{s.status_label(status)}</dt>
                                <dd>{n}</dd>
                            </div>
                        }
                    })
                    .collect_view()}
                <div>
                    <dt>{s.paid_on_time}</dt>
                    <dd data-testid="paid-on-time">{panel.paid_on_time}</dd>
                </div>
                <div>
                    <dt>{s.paid_late}</dt>
                    <dd>{panel.paid_late}</dd>
                </div>
                <div>
                    <dt>{s.units_returned}</dt>
                    <dd data-testid="units-returned">{panel.units_returned}</dd>
                </div>
                <div>
                    <dt>{s.resale_p50}</dt>
                    <dd>
                        {seconds(panel.resale_p50_seconds)}" (p90 "
                        {seconds(panel.resale_p90_seconds)}")"
                    </dd>
                </div>
            </dl>
        </section>
    }
}
