//! Thin browser glue for the Buy panel (hydrate only): `history.state`, Page
//! Visibility, `pageshow`/`pagehide`, timers, `crypto.randomUUID` and
//! `navigator.sendBeacon`. No decisions are made here; the
//! [`SubmitMachine`](crate::guard::SubmitMachine) makes them.

use crate::domain::ItemId;
use crate::guard::Snapshot;
use std::future::Future;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// The property of `history.state` that holds the Buy panel's snapshot; the
/// rest of the state object (the router's) is left as it is.
const STATE_PROPERTY: &str = "oversellGuard";

fn window() -> Option<web_sys::Window> {
    web_sys::window()
}

fn document() -> Option<web_sys::Document> {
    window().and_then(|w| w.document())
}

pub fn document_lang() -> Option<String> {
    document()?.document_element()?.get_attribute("lang")
}

pub fn is_visible() -> bool {
    document().is_none_or(|d| d.visibility_state() == web_sys::VisibilityState::Visible)
}

/// A UUID v4 from the browser's CSPRNG.
pub fn random_uuid() -> String {
    window()
        .and_then(|w| w.crypto().ok())
        .map(|c| c.random_uuid())
        .unwrap_or_default()
}

/// The snapshot stored for this item's page, if this history entry has one.
pub fn read_snapshot(item: ItemId) -> Option<Snapshot> {
    let state = window()?.history().ok()?.state().ok()?;
    let stored = js_sys::Reflect::get(&state, &STATE_PROPERTY.into()).ok()?;
    let (stored_item, snapshot): (i64, Snapshot) =
        serde_json::from_str(&stored.as_string()?).ok()?;
    (stored_item == item.get()).then_some(snapshot)
}

/// Mirrors the snapshot into the current history entry (`replaceState`).
pub fn write_snapshot(item: ItemId, snapshot: &Snapshot) {
    let Some(history) = window().and_then(|w| w.history().ok()) else {
        return;
    };
    let Ok(json) = serde_json::to_string(&(item.get(), snapshot)) else {
        return;
    };
    let state = match history.state() {
        Ok(state) if state.is_object() => state,
        _ => js_sys::Object::new().into(),
    };
    if js_sys::Reflect::set(&state, &STATE_PROPERTY.into(), &json.into()).is_ok() {
        let _ = history.replace_state(&state, "");
    }
}

fn listen(
    target: &web_sys::EventTarget,
    event: &str,
    handler: impl FnMut(web_sys::Event) + 'static,
) {
    let closure = Closure::<dyn FnMut(web_sys::Event)>::new(handler);
    let _ = target.add_event_listener_with_callback(event, closure.as_ref().unchecked_ref());
    // The listeners live as long as the page.
    closure.forget();
}

pub fn on_visibility_change(mut handler: impl FnMut(bool) + 'static) {
    if let Some(doc) = document() {
        listen(&doc, "visibilitychange", move |_| handler(is_visible()));
    }
}

/// Calls `handler` when the page comes back from the back/forward cache.
pub fn on_bfcache_restore(mut handler: impl FnMut() + 'static) {
    if let Some(win) = window() {
        listen(&win, "pageshow", move |event| {
            let persisted = event
                .dyn_ref::<web_sys::PageTransitionEvent>()
                .is_some_and(|e| e.persisted());
            if persisted {
                handler();
            }
        });
    }
}

pub fn on_page_hide(mut handler: impl FnMut() + 'static) {
    if let Some(win) = window() {
        listen(&win, "pagehide", move |_| handler());
    }
}

pub fn after(ms: u32, handler: impl FnOnce() + 'static) {
    gloo_timers::callback::Timeout::new(ms, handler).forget();
}

pub fn every(ms: u32, handler: impl FnMut() + 'static) {
    gloo_timers::callback::Interval::new(ms, handler).forget();
}

/// The future's output, or `None` when it took longer than `ms`.
pub async fn with_timeout<T>(ms: u32, future: impl Future<Output = T>) -> Option<T> {
    let future = std::pin::pin!(future);
    let timeout = gloo_timers::future::TimeoutFuture::new(ms);
    match futures::future::select(future, timeout).await {
        futures::future::Either::Left((output, _)) => Some(output),
        futures::future::Either::Right(_) => None,
    }
}

pub fn send_beacon(url: &str, body: &str) {
    if let Some(win) = window() {
        let _ = win.navigator().send_beacon_with_opt_str(url, Some(body));
    }
}
