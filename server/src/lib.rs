//! The oversell guard's server: configuration, state, the order pipeline,
//! the JSON API, and metrics, around the Leptos app.
//!
//! # Layout
//!
//! A request crosses these modules in this order:
//!
//! - [`startup`]: `Application::build` wires everything and binds the
//!   listener ([`listener`] caps concurrent connections); [`config`] reads and validates the environment; [`telemetry`]
//!   sets up logs.
//! - [`assets`]: the wasm, JavaScript and stylesheet, precompressed and
//!   cached by content hash; pages compressed per response, never cached.
//! - [`api`]: one module per resource; extractors turn raw input into domain
//!   types or a JSON 4xx. [`session`] resolves the signed buyer cookie;
//!   [`rate_limit`] turns back buyers who order too fast.
//! - [`state`]: the one context struct, which implements the app's
//!   `Checkout` port for the server functions and the API alike.
//! - [`orders`]: the pipeline, one module per stage, in request order:
//!   [`orders::idempotency`] → [`orders::reserve`] → [`orders::ledger`] →
//!   [`orders::settle`] → [`orders::answer`]; every refusal passes the gate
//!   in [`orders::refusal`].
//! - [`records`]: the idempotency records stage 1 claims and stage 5
//!   stores, in Redis or in the database.
//! - [`reservation`]: the reservation-store port, its Redis (Lua) and
//!   in-process implementations, the counter loader, the sold-out memo, the
//!   Redis breaker's bookkeeping, the reaper and reconciliation;
//!   [`redis_conn`] connects to a single Redis or a cluster.
//! - [`db`]: the SQL database (SQLite, PostgreSQL, MySQL/MariaDB) and
//!   inventory queries.
//! - [`waiting_room`]: drops' waiting rooms and the fair start, kept by the
//!   reservation store beside the counters.
//! - [`payments`]: the payment deadline: signed webhooks, the expiry
//!   reaper, and the state machine `awaiting_payment → paid | expired →
//!   refund_due`; [`stock`]: what follows a stock change the database
//!   committed (a restock, an expired order's units coming back).
//! - [`dashboard`]: samples this server's metrics for the admin dashboard.
//! - [`error`]: the HTTP error type; [`metrics`]: this server's Prometheus
//!   recorder; [`hot_items`]: the bounded, decaying top-k of busy items;
//!   [`background`]: tasks that stop with their owner.

pub mod api;
pub mod assets;
pub mod background;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod error;
pub mod hot_items;
pub mod listener;
pub mod metrics;
pub mod orders;
pub mod payments;
pub mod rate_limit;
pub mod records;
pub mod redis_conn;
pub mod reservation;
pub mod session;
pub mod startup;
pub mod state;
pub mod stock;
pub mod telemetry;
pub mod waiting_room;
