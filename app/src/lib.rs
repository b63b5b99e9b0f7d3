//! The Leptos app of the oversell guard: pages, server functions, and the
//! types the browser, the server functions and the JSON API share.
//!
//! # Layout
//!
//! - [`domain`]: newtypes that validate when parsed (`ItemId`, `Quantity`,
//!   `IdempotencyKey`, `BuyerId`).
//! - [`model`]: the wire types (`Item`, `OrderRequest`, `Receipt`,
//!   `OrderError` with its `ErrorCode`, `KeyOutcome`).
//! - [`guard`]: the submit state machine that owns the Buy button, plain Rust.
//! - [`drop_day`]: the sale window on the server's clock and the waiting
//!   page's poll interval, plain Rust.
//! - [`i18n`]: every shopper-facing string, English and Simplified Chinese.
//! - [`server_fns`]: thin server functions over the [`ports`].
//! - [`ports`] (`ssr` only): what the server implements for the app: the
//!   shop's `Checkout` (its order pipeline) and the `DashboardSource`.
//! - [`pages`]: the routes and their components; [`pages::buy`] is the Buy
//!   panel and its browser glue, [`pages::drop`] the countdown and the
//!   waiting room's panel; `pages::admin` (server only) the dashboard,
//!   a page of its own that the shopper's wasm does not carry.
//! - [`dashboard`]: the dashboard's data types and SVG charts.
//!
//! The `ssr` feature builds the server half, `hydrate` the wasm half.

#![recursion_limit = "256"]

pub mod dashboard;
pub mod domain;
pub mod drop_day;
pub mod guard;
pub mod i18n;
pub mod model;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod ports;
pub mod server_fns;

pub use pages::App;
#[cfg(feature = "ssr")]
pub use pages::admin::dashboard_shell;
#[cfg(feature = "ssr")]
pub use pages::shell;
