//! The integration tests' harness. Everything listens on 127.0.0.1 only, on ephemeral
//! ports, and is stopped on drop (processes by their pid).
//!
//! | concern | module | what a test uses |
//! |---|---|---|
//! | the downstream end | `receiver` | [`Receiver::start`] (records every request, answers from a [`Reply`] script), `wait_for`, `requests`, [`Recorded`]; [`DownPort::reserve`] for a destination that is down (refused, and never handed to another listener), `Receiver::start_on(down.release())` to bring it up |
//! | the daemon in-process | `daemon` | [`TestDaemon::start`] (`rest` after a test `server:` block), `start_in` (a kept directory: a restart), `start_with_server` (extra `server:` lines), `post`, `admin`, `rewrite_config` + `running().reload`, `stop`; [`response_json`] |
//! | the real binary | `process` | [`DaemonProcess::spawn`] (waits for "ready", reads both addresses from the log), `kill9`, `terminate`, `log`; [`hookrouter`] for one-shot commands (`.stdin`, `.envs`, `.output()`) and [`text`] |
//! | config files | `config` | [`TestConfig`], the one config builder (`new(data_dir)`, `.server("name: value")`, `.without(name)`, `.keys`, `.rest`, `.write_in(dir)`); [`server_block`]; [`write_file`] for a file given whole |
//! | inputs and waiting | `fixtures` | [`KEY`], [`fixture`] / [`fixture_json`] (`tests/fixtures/`), [`eventually`], [`Rng`] (seeded, printed) |
//! | a headless browser | `browser` | `Browser` for the status page's test |
//!
//! A new test module: `use crate::common::{...};`, then `TestDaemon::start(&rest)` with
//! `rest` holding destinations and routes (the key list defaults to [`KEY`]), or
//! `TestConfig::new(..).rest(..).write_in(dir)` and [`DaemonProcess::spawn`] for the binary.

pub(crate) mod browser;
mod config;
mod daemon;
mod fixtures;
mod process;
mod receiver;

pub(crate) use config::{leads_delivered_views_dead, server_block, write_file, TestConfig};
pub(crate) use daemon::{response_json, TestDaemon};
pub(crate) use fixtures::{eventually, fixture, fixture_json, until, Rng, KEY};
pub(crate) use process::{admin_cli, hookrouter, text, DaemonProcess};
pub(crate) use receiver::{DownPort, Receiver, Recorded, Reply};
