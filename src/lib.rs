//! hookrouter receives Mindstamp webhooks, checks that they are authentic, matches them
//! against the routes in `routes.yaml` and forwards each to its destinations through a
//! durable retry queue, so that nothing it acknowledged is ever lost.
//!
//! The modules, in the order a webhook passes through them:
//!
//! 1. [`config`]: `routes.yaml` parsed, expanded and validated into a [`config::Config`],
//!    whose destinations are [`destination`]'s compiled types (a leaf: neither the config
//!    nor delivery is named there, both stand on it).
//! 2. [`ingress`]: the tower service that answers each webhook, on the HTTP/1 accept loop
//!    it shares with the admin API ([`http_server`]).
//! 3. [`verify`]: the `X-KEY` check; only it produces a [`verify::Verified`] request.
//! 4. [`route`]: pure matching of the payload against the compiled rules.
//! 5. [`queue`]: the ingest journal, the fast lane and sled's retry queue, with the group
//!    committer; a request is answered 200 only after its event is in the journal and
//!    `fdatasync`ed.
//! 6. [`deliver`]: one worker per destination sends due jobs and records each outcome
//!    (decided without I/O in `deliver::outcome`, recorded as [`outcomes`]' enums), with
//!    the credentials of [`auth`] (bearer, basic, OAuth2 tokens kept fresh), both over the
//!    outbound client of [`http_client`].
//! 7. [`retry`]: the pure backoff policy that turns a failure into the next attempt time or
//!    a dead letter.
//!
//! [`daemon`] starts the stages in that order and stops them in the order that loses
//! nothing; [`reload`] holds the config in force ([`SharedConfig`]) and swaps it whole.
//!
//! [`echo`] is the little receiver operators use to try routes locally; [`inspect`] holds
//! `check` and `route`, the offline views of a config; [`init`] writes a production
//! skeleton. [`cli_args`] is the command line itself, which `build.rs` also compiles to
//! generate the shell completions and man pages.
//!
//! Operating it: [`admin`] (the admin API, the status page and the CLI), [`replay`]
//! (recorded events sent again through today's rules), [`shadow`] (a candidate config
//! judged against recorded traffic), [`metrics`]
//! (Prometheus), [`notify`] (systemd readiness and watchdog), and
//! [`queue::housekeeping`] (de-duplication and retention).
// No unsafe code but the one call that gives freed memory back to the system
// (`memory::release_free_heap`, glibc's `malloc_trim`).
#![deny(unsafe_code)]

pub mod admin;
pub mod alert;
pub mod auth;
pub mod cli_args;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod destination;
pub mod echo;
pub mod event;
pub mod health;
pub mod http_client;
pub mod http_server;
pub mod ingress;
pub mod init;
pub mod inspect;
pub mod lint;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod outcomes;
pub mod payloads;
pub mod queue;
pub mod reload;
pub mod replay;
pub mod retry;
pub mod route;
pub mod send;
pub mod shadow;
pub mod startup;
pub mod verify;

pub use daemon::{start, RunError, Running};
pub use reload::{LastReload, NameChanges, ReloadHistory, ReloadSummary, Reloader, SharedConfig};
