//! Every integration test in one binary: one link of the crate and the harness instead of
//! one per file, and one `cargo test` run that schedules them all together. Each module is
//! one concern of the daemon, as its own file was before; `common` is the harness
//! (receiver, in-process daemon, spawned binary, fixtures and the config builder).
//!
//! Run one module with `cargo test --test it MODULE::` (`cargo test --test it replay::`),
//! one test by its name.

// The harness and the tests unwrap: a panic here is a failed test, not a crashed daemon
// (clippy.toml allows it in #[test] functions; the helpers they call are tests too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod admin;
mod cli;
mod crash_restart;
mod crash_under_load;
mod crm_auth;
mod crm_recipes;
mod delivery;
mod destinations;
mod development_key;
mod example_config;
mod health;
mod hostile_clients;
mod housekeeping;
mod ingress;
mod init;
mod journal_damage;
mod layering;
mod migration;
mod mistakes;
mod monitoring_contrib;
mod notify;
mod operating;
mod outage;
mod refusals;
mod reload;
mod replay;
mod secrets;
mod status_page;
mod storage_full;
mod store_space;
