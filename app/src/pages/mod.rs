//! Routes and page components.
//!
//! `/` lists the items, `/items/{id}` shows one with its Buy panel,
//! `/orders` the buyer's orders and `/pay/{order_id}` the demo payment
//! provider's checkout ([`orders`]). Pages are rendered on the server; the
//! browser hydrates only the islands (Leptos islands mode): [`ItemPanel`],
//! the item's facts and Buy panel, and [`orders::Countdown`], a deadline's
//! time left. Everything else is plain HTML that needs no wasm, so the
//! shopper's wasm carries no router and no list page. Before hydration (or
//! with JavaScript off) every control is a plain link or form that works.
//! `/dashboard` ([`admin`], server only) is a document of its own, outside
//! the shop's router, so the shopper's wasm carries none of it.

#[cfg(feature = "ssr")]
pub mod admin;
#[cfg(feature = "hydrate")]
mod browser;
pub mod buy;
pub mod drop;
pub mod orders;

use crate::domain::{IdempotencyKey, ItemId};
use crate::drop_day::SalePhase;
use crate::i18n::{Lang, Strings, format_price};
use crate::model::{ErrorCode, Item, KeyOutcome, OrderError, QueueState, QueueStatus};
use crate::server_fns::{ItemView, list_items, load_item_view, order_outcome};
use leptos::prelude::*;
#[cfg(feature = "ssr")]
use leptos_meta::{HashedStylesheet, MetaTags};
use leptos_meta::{Title, provide_meta_context};
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::hooks::{use_location, use_params_map, use_query_map};
use leptos_router::{SsrMode, path};

/// The query parameter that carries the key of a form posted without
/// JavaScript, so the page it redirects to can show that order's outcome.
pub const ORDER_KEY_PARAM: &str = "order_key";

/// The HTML document around the app (server only). The stylesheet, the
/// JavaScript and the wasm are linked under the names the build gave them
/// (content-hashed in release builds, see `server::assets`); the icon is
/// inline, so a first visit makes no request for it.
#[cfg(feature = "ssr")]
pub fn shell(options: LeptosOptions) -> impl IntoView {
    document(options, true, view! { <App /> })
}

/// An HTML document in the shop's language around `body`; with `hydrate`,
/// it loads the wasm that hydrates the page's islands.
#[cfg(feature = "ssr")]
fn document(options: LeptosOptions, hydrate: bool, body: impl IntoView + 'static) -> impl IntoView {
    let lang = current_lang();
    let scripts =
        hydrate.then(|| view! { <HydrationScripts options=options.clone() islands=true /> });
    view! {
        <!DOCTYPE html>
        <html lang=lang.tag()>
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light" />
                <link rel="icon" type="image/svg+xml" href=favicon_data_uri() />
                <HashedStylesheet id="leptos" options=options.clone() />
                <AutoReload options=options.clone() />
                {scripts}
                <MetaTags />
            </head>
            <body>{body}</body>
        </html>
    }
}

/// `public/favicon.svg` as a `data:` URI, encoded once.
#[cfg(feature = "ssr")]
fn favicon_data_uri() -> &'static str {
    static URI: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let svg = include_str!("../../../public/favicon.svg").trim();
        let mut uri = String::from("data:image/svg+xml,");
        for c in svg.chars() {
            match c {
                '"' => uri.push('\''),
                '#' => uri.push_str("%23"),
                '%' => uri.push_str("%25"),
                '<' => uri.push_str("%3C"),
                '>' => uri.push_str("%3E"),
                other => uri.push(other),
            }
        }
        uri
    });
    &URI
}

/// The language of this render: on the server from the `lang` cookie or
/// `Accept-Language`; in the browser from `<html lang>`, which the server wrote.
pub fn current_lang() -> Lang {
    #[cfg(feature = "ssr")]
    {
        use_context::<http::request::Parts>()
            .map(|parts| lang_of_request(&parts.headers))
            .unwrap_or_default()
    }
    #[cfg(all(feature = "hydrate", not(feature = "ssr")))]
    {
        browser::document_lang()
            .and_then(|tag| Lang::from_tag(&tag))
            .unwrap_or_default()
    }
    #[cfg(not(any(feature = "ssr", feature = "hydrate")))]
    {
        Lang::default()
    }
}

/// The language a request asks for: the `lang` cookie (the visible switch)
/// wins over `Accept-Language`.
#[cfg(feature = "ssr")]
pub fn lang_of_request(headers: &http::HeaderMap) -> Lang {
    let from_cookie = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("lang="))
        .and_then(Lang::from_tag);
    from_cookie.unwrap_or_else(|| {
        headers
            .get(http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .map(Lang::negotiate)
            .unwrap_or_default()
    })
}

pub(crate) fn strings() -> &'static Strings {
    use_context::<Lang>().unwrap_or_default().strings()
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let lang = current_lang();
    provide_context(lang);
    let s = lang.strings();
    view! {
        <Title text=s.site_name />
        <Router>
            <Header />
            <main class="page">
                // Async rendering waits for the data and sends whole pages:
                // they work without JavaScript, and a 404 status set while
                // loading still reaches the response headers.
                <Routes fallback=NotFound>
                    <Route path=path!("/") view=ItemListPage ssr=SsrMode::Async />
                    <Route path=path!("/items/:id") view=ItemPage ssr=SsrMode::Async />
                    <Route path=path!("/orders") view=orders::MyOrdersPage ssr=SsrMode::Async />
                    <Route
                        path=path!("/pay/:order_id")
                        view=orders::CheckoutPage
                        ssr=SsrMode::Async
                    />
                </Routes>
            </main>
        </Router>
    }
}

#[component]
fn Header() -> impl IntoView {
    let s = strings();
    let current = use_context::<Lang>().unwrap_or_default();
    let location = use_location();
    view! {
        <header class="site-header">
            <a class="brand" href="/">
                {s.site_name}
            </a>
            <a class="my-orders-link" href="/orders">
                {s.my_orders}
            </a>
            <nav class="lang-switch" aria-label=s.language>
                {Lang::ALL
                    .into_iter()
                    .map(|lang| {
                        let href = move || {
                            format!(
                                "/lang/{}?back={}",
                                lang.tag(),
                                encode_path(&location.pathname.get()),
                            )
                        };
                        view! {
                            <a
                                href=href
                                hreflang=lang.tag()
                                lang=lang.tag()
                                aria-current=(lang == current).then_some("true")
                                rel="external nofollow"
                            >
                                {lang.native_name()}
                            </a>
                        }
                    })
                    .collect_view()}
            </nav>
        </header>
    }
}

/// Percent-encodes a path for the `back` parameter of the language switch.
/// (The switch links are `rel="external"`: the server sets the cookie, so the
/// router must not handle them in the browser.)
fn encode_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[component]
fn ItemListPage() -> impl IntoView {
    let s = strings();
    let items = Resource::new(|| (), |_| list_items());
    view! {
        <section class="intro">
            <h1>{s.items_heading}</h1>
            <p class="tagline">{s.tagline}</p>
        </section>
        <Suspense fallback=|| view! { <p class="loading" aria-busy="true"></p> }>
            {move || Suspend::new(async move {
                match items.await {
                    Ok(items) if items.is_empty() => view! { <p>{s.no_items}</p> }.into_any(),
                    Ok(items) => {
                        view! {
                            <ul class="item-grid">
                                {items
                                    .into_iter()
                                    .map(|item| view! { <ItemCard item /> })
                                    .collect_view()}
                            </ul>
                        }
                            .into_any()
                    }
                    Err(_) => view! { <p class="error" role="alert">{s.load_failed}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn ItemCard(item: Item) -> impl IntoView {
    let s = strings();
    let href = format!("/items/{}", item.id);
    let sold_out = item.stock <= 0;
    view! {
        <li class="item-card" class:sold-out=sold_out>
            <A href=href>
                <h2>{item.title}</h2>
                <p class="meta">
                    <span>{s.condition}": "{item.condition}</span>
                    <span>{s.seller}": "{item.seller}</span>
                </p>
                <p class="price">{format_price(item.price_cents)}</p>
                <p class="stock">
                    {if sold_out {
                        s.sold_out_badge.to_string()
                    } else {
                        format!("{}: {}", s.stock_left, item.stock)
                    }}
                </p>
            </A>
        </li>
    }
}

#[component]
fn ItemPage() -> impl IntoView {
    let s = strings();
    let params = use_params_map();
    let query = use_query_map();
    let item_id = move || {
        params
            .read()
            .get("id")
            .and_then(|raw| ItemId::parse(&raw).ok())
    };
    let order_key = move || {
        query
            .read()
            .get(ORDER_KEY_PARAM)
            .and_then(|raw| IdempotencyKey::parse(&raw).ok())
    };
    let view_data = Resource::new(item_id, |id| async move {
        match id {
            Some(id) => load_item_view(id).await,
            None => Err(OrderError::new(ErrorCode::UnknownItem, "no such item")),
        }
    });
    let prior = Resource::new(order_key, |key| async move {
        match key {
            Some(key) => order_outcome(key.clone())
                .await
                .ok()
                .map(|outcome| (key, outcome)),
            None => None,
        }
    });
    view! {
        <p class="crumbs">
            <A href="/">{s.back_to_list}</A>
        </p>
        <Suspense fallback=|| view! { <p class="loading" aria-busy="true"></p> }>
            {move || Suspend::new(async move {
                let prior = prior.await;
                match view_data.await {
                    Ok(data) => view! { <ItemDetails data prior /> }.into_any(),
                    Err(error) => {
                        if error.code == ErrorCode::UnknownItem {
                            set_status(404);
                        }
                        view! {
                            <p class="error" role="alert">
                                {s.error_message(error.code)}
                            </p>
                        }
                            .into_any()
                    }
                }
            })}
        </Suspense>
    }
}

#[component]
fn ItemDetails(data: ItemView, prior: Option<(IdempotencyKey, KeyOutcome)>) -> impl IntoView {
    let s = strings();
    let ItemView {
        item,
        form_token,
        demo_checkout,
        now_ms,
        queue,
    } = data;
    let title = item.title.clone();
    let fairness = item.has_waiting_room().then(|| {
        view! {
            <p class="fairness-rule">
                {s.fairness_rule}" "
                <a href=format!("/api/items/{}/fairness", item.id) rel="external">
                    {s.fairness_link}
                </a>
            </p>
        }
    });
    // Erased: the island's full view type nested in the page's is deeper
    // than the server crate's recursion limit.
    view! {
        <Title text=title.clone() />
        <article class="item-detail">
            <h1>{title}</h1>
            <drop::NoScriptRefresh item=item.clone() queue=queue.clone() now_ms />
            <ItemPanel item form_token prior demo_checkout page_now_ms=now_ms queue />
            {fairness}
        </article>
    }
    .into_any()
}

/// The item's facts, its sale's countdown, its waiting room and its Buy
/// panel: the item page's island, so the only part of it the browser
/// hydrates (everything else is plain server-rendered HTML and needs no
/// wasm). Its props travel in the page.
#[island]
fn ItemPanel(
    item: Item,
    form_token: IdempotencyKey,
    prior: Option<(IdempotencyKey, KeyOutcome)>,
    /// Whether a receipt's "Pay" leads to the demo checkout.
    demo_checkout: bool,
    /// The server's clock when the page was read.
    page_now_ms: i64,
    /// Where this buyer stands in the item's waiting room, if they joined.
    queue: Option<QueueStatus>,
) -> impl IntoView {
    // An island hydrates on its own, without the page's context: it reads
    // the language back from `<html lang>`.
    let lang = current_lang();
    provide_context(lang);
    let s = lang.strings();
    // Shared with the Buy panel, which refreshes it after an order.
    let stock = RwSignal::new(item.stock);
    let clock = drop::ServerClock::new(page_now_ms, &item);
    let phase = drop::phase_signal(&item, clock);
    let on_sale = Signal::derive(move || phase.get() == SalePhase::Open);
    let queue = RwSignal::new(queue);
    let queue_pass = Signal::derive(move || {
        queue.with(|q| {
            q.as_ref()
                .filter(|q| q.state == QueueState::Admitted)
                .and_then(|q| q.pass.clone())
        })
    });
    let has_order = prior.is_some();
    let waiting_room = item.admission_per_second.map(|per_second| {
        view! { <drop::LinePanel item_id=item.id admission_per_second=per_second queue phase clock /> }
    });
    // The Buy panel: at once for an item without a line; for one with a
    // line, once the buyer is admitted (or already ordered with this key).
    let needs_pass = item.has_waiting_room();
    let show_buy = move || !needs_pass || has_order || queue_pass.with(Option::is_some);
    let buy_panel = {
        let item = item.clone();
        move || {
            show_buy().then(|| {
                view! {
                    <buy::BuyPanel
                        item=item.clone()
                        form_token=form_token.clone()
                        prior=prior.clone()
                        stock
                        demo_checkout
                        page_now_ms
                        on_sale
                        queue_pass
                    />
                }
            })
        }
    };
    view! {
        <dl class="facts">
            <div>
                <dt>{s.price}</dt>
                <dd class="price">{format_price(item.price_cents)}</dd>
            </div>
            <div>
                <dt>{s.condition}</dt>
                <dd>{item.condition.clone()}</dd>
            </div>
            <div>
                <dt>{s.seller}</dt>
                <dd>{item.seller.clone()}</dd>
            </div>
            <div>
                <dt>{s.stock_left}</dt>
                <dd data-testid="stock">{move || stock.get()}</dd>
            </div>
        </dl>
        <drop::SaleBanner phase />
        {waiting_room}
        {buy_panel}
    }
}

#[component]
fn NotFound() -> impl IntoView {
    set_status(404);
    let s = strings();
    view! {
        <p class="error" role="alert">
            {s.error_message(ErrorCode::NotFound)}
        </p>
        <p>
            <A href="/">{s.back_to_list}</A>
        </p>
    }
}

/// Sets the HTTP status of the server-rendered response; a no-op in the browser.
pub(crate) fn set_status(_status: u16) {
    #[cfg(feature = "ssr")]
    if let (Some(options), Ok(status)) = (
        use_context::<leptos_axum::ResponseOptions>(),
        http::StatusCode::from_u16(_status),
    ) {
        options.set_status(status);
    }
}
