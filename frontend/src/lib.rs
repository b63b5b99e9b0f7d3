//! The browser entry point: cargo-leptos builds this crate to wasm, and the
//! generated JavaScript calls [`hydrate`] once the server-rendered page loaded.

/// Attaches the reactive app to the server-rendered markup.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
