//! The browser entry point: cargo-leptos builds this crate to wasm, and the
//! generated JavaScript calls [`hydrate`] once the server-rendered page loaded.
//!
//! The shop runs in Leptos islands mode: the wasm hydrates only the
//! `#[island]` components of the page (the item's Buy panel), which the
//! `app` crate exports to JavaScript; the rest of every page stays the HTML
//! the server sent.

// Links the app's islands (their exported hydrate functions) into the wasm.
use app as _;

/// Starts the reactive runtime; the island script then hydrates each island.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_islands();
}
