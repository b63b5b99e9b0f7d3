//! `/dashboard`: the admin dashboard, a page of its own rendered on the
//! server only (`server` routes it to [`dashboard_shell`]).
//!
//! No shopper opens it, so it is not a route of the shop's [`App`](super::App)
//! and none of its code (the SVG charts, their number formatting) is in the
//! shopper's wasm; the page itself loads no wasm at all. Without an admin
//! session it shows a sign-in form (a plain form: the token goes to the
//! server once and comes back as a signed session cookie). With one, it
//! draws the charts, and a few lines of inline JavaScript fetch the page
//! again every [`REFRESH_SECONDS`] while it is visible and swap the fresh
//! charts in, so it stays live without a reload.

use super::Header;
use crate::dashboard::{DashboardData, DropRow, Heatmap, LineChart, PaymentsPanel, Point};
use crate::model::{ErrorCode, OrderError};
use crate::ports::{AdminSession, SharedDashboard};
use leptos::prelude::*;
use leptos_meta::{Title, provide_meta_context};
use leptos_router::components::Router;
use leptos_router::hooks::use_query_map;

/// How often the open page asks for fresh charts.
pub const REFRESH_SECONDS: u64 = 2;

/// The dashboard's HTML document: the shop's head and header, no wasm.
pub fn dashboard_shell(options: LeptosOptions) -> impl IntoView {
    super::document(options, false, view! { <Dashboard /> })
}

/// Swaps `section.dashboard` for the one in a fresh copy of this page while
/// the page is visible. Rendered with the charts only, so the sign-in form
/// is never replaced under the admin's fingers; a copy that comes back
/// without a session (401) is not shown.
fn refresh_script() -> String {
    format!(
        "setInterval(async()=>{{if(document.hidden)return;\
try{{const r=await fetch(location.href,{{cache:'no-store'}});if(!r.ok)return;\
const next=new DOMParser().parseFromString(await r.text(),'text/html').querySelector('section.dashboard');\
if(next)document.querySelector('section.dashboard').replaceWith(next)}}catch(e){{}}}},{});",
        REFRESH_SECONDS * 1000
    )
}

#[component]
fn Dashboard() -> impl IntoView {
    provide_meta_context();
    let lang = super::current_lang();
    provide_context(lang);
    let s = lang.strings();
    view! {
        <Title text=s.dashboard />
        <Router>
            <Header />
            <main class="page">
                <DashboardPage />
            </main>
        </Router>
    }
}

#[component]
fn DashboardPage() -> impl IntoView {
    let s = super::strings();
    view! {
        <section class="dashboard">
            <h1>{s.dashboard}</h1>
            <Suspense fallback=|| view! { <p class="loading" aria-busy="true"></p> }>
                {Suspend::new(async move {
                    match dashboard_data().await {
                        Ok(data) => view! { <Charts data /> }.into_any(),
                        Err(e) if e.code == ErrorCode::Unauthorized => {
                            super::set_status(401);
                            view! { <SignIn /> }.into_any()
                        }
                        Err(_) => view! { <p class="error" role="alert">{s.load_failed}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

/// The dashboard's data, for an admin session only.
async fn dashboard_data() -> Result<DashboardData, OrderError> {
    let is_admin = use_context::<http::request::Parts>()
        .is_some_and(|parts| parts.extensions.get::<AdminSession>().is_some());
    if !is_admin {
        return Err(OrderError::new(
            ErrorCode::Unauthorized,
            "admin session required",
        ));
    }
    let source = use_context::<SharedDashboard>()
        .ok_or_else(|| OrderError::new(ErrorCode::Internal, "dashboard is not wired"))?;
    Ok(source.dashboard().await)
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
        {(!data.drops.is_empty()).then(|| view! { <Drops rows=data.drops /> })}
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
        <script>{refresh_script()}</script>
    }
}

/// Each drop's line, admissions and passes.
#[component]
fn Drops(rows: Vec<DropRow>) -> impl IntoView {
    let s = super::strings();
    view! {
        <section class="drops-panel" data-testid="drops-panel">
            <h2>{s.drops_heading}</h2>
            <div class="table-scroll">
                <table>
                    <thead>
                        <tr>
                            <th scope="col">{s.items_heading}</th>
                            <th scope="col">{s.line_waiting}</th>
                            <th scope="col">{s.admitted_per_second}</th>
                            <th scope="col">{s.admitted_total}</th>
                            <th scope="col">{s.passes_open}</th>
                            <th scope="col">{s.passes_used}</th>
                            <th scope="col">{s.passes_expired}</th>
                        </tr>
                    </thead>
                    <tbody>
                        {rows
                            .into_iter()
                            .map(|row| {
                                view! {
                                    <tr data-item-id=row.item_id>
                                        <th scope="row">
                                            <a href=format!("/items/{}", row.item_id)>{row.title}</a>
                                        </th>
                                        <td>{row.waiting}</td>
                                        <td>{format!("{:.1}", row.admitted_per_second)}</td>
                                        <td>{row.admitted}</td>
                                        <td>{row.passes_open}</td>
                                        <td>{row.passes_used}</td>
                                        <td>{row.passes_expired}</td>
                                    </tr>
                                }
                            })
                            .collect_view()}
                    </tbody>
                </table>
            </div>
        </section>
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
