//! Integration tests against real servers: PostgreSQL, MariaDB, Redis and
//! SQLite files. Each test gets its own database and Redis key prefix (see
//! [`harness`]); set `TEST_LOG=1` to see the server's logs.

mod api_input;
mod dashboard;
mod delivery;
mod drops;
mod fuzz;
mod guard_events;
mod harness;
mod ledger;
mod monitoring;
mod observability;
mod payments;
mod pipeline;
mod records_contract;
mod reservation_contract;
mod resilience;
mod security;
mod traces;
mod truth;
