//! The command line as a clap definition: every command, argument and help text.
//!
//! It is a module of its own, using nothing but `clap` and `std`, because `build.rs`
//! compiles this very file (through `#[path]`) to generate the shell completions and the
//! man pages at build time: what the package installs cannot drift from what the binary
//! parses. `main.rs` parses [`Cli`] and dispatches; the operator commands' arguments
//! ([`AdminArgs`], [`DeadCommand`], [`EventCommand`], [`ReplayArgs`]) are re-exported by `admin::cli`,
//! which runs them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `hookrouter`: the whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "hookrouter",
    version,
    about = "Receives Mindstamp webhooks, routes them by the rules in routes.yaml and forwards them durably, with retries.",
    after_long_help = "The man page hookrouter(1) lists the files, the environment and the exit codes."
)]
pub struct Cli {
    /// Log format: plain text (journald adds the time) or JSON lines for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// The routes file.
        #[arg(long, env = "HOOKROUTER_CONFIG", default_value = "routes.yaml")]
        config: PathBuf,
    },
    /// Validate the config exactly as `serve` would, print a summary, exit 0 (or 64 with
    /// every problem, each as FILE:LINE:COL: ...).
    Check {
        /// The routes file.
        #[arg(long, env = "HOOKROUTER_CONFIG", default_value = "routes.yaml")]
        config: PathBuf,
        /// Also judge it against the events the running daemon recorded since `--since`:
        /// per route and destination what the rules in force and this file send, and
        /// samples of the deliveries it would gain and lose. Sends and reloads nothing.
        #[arg(long)]
        against_journal: bool,
        /// With `--against-journal`: events received since this (24h, 2h, an RFC 3339 time).
        #[arg(long, default_value = "24h", requires = "against_journal")]
        since: String,
        /// With `--against-journal`: the admin API's base URL; default: this file's
        /// `server.admin_listen`.
        #[arg(long, env = "HOOKROUTER_ADMIN", value_hint = clap::ValueHint::Url)]
        admin: Option<String>,
        /// With `--against-journal`: bearer token; default: this file's `server.admin_token`.
        #[arg(long, env = "HOOKROUTER_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Write a production skeleton (routes.yaml with placeholders and comments, and a
    /// mode-0600 env file for its secrets) into DIR; never overwrites a file.
    Init {
        /// The directory to write into (created if missing), e.g. /etc/hookrouter.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Dry run: show which routes a payload matches and where it would go. Sends nothing.
    Route {
        /// The routes file.
        #[arg(long, env = "HOOKROUTER_CONFIG", default_value = "routes.yaml")]
        config: PathBuf,
        /// The kind of webhook (the ingress path it would arrive on).
        #[arg(long, value_enum)]
        event: EventKindArg,
        /// Show, for every route, each condition, the value it saw and whether it held.
        #[arg(long)]
        explain: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also print each request that would be sent (method, URL, headers, body; secrets
        /// redacted), rendered with the destination's format and templates.
        #[arg(long)]
        render: bool,
        /// The payload file; standard input when omitted or "-".
        #[arg(value_hint = clap::ValueHint::FilePath)]
        payload: Option<PathBuf>,
    },
    /// Show the queue and health per destination: state, pending, retrying, in flight,
    /// dead, oldest pending, and the last error of any destination not healthy.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List, show, retry or drop dead letters (through the admin API).
    Dead {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// Show an event, its routes and every delivery attempt (through the admin API).
    Event {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: EventCommand,
    },
    /// Hold or release a destination by hand (through the admin API): a held destination
    /// keeps its queue and is sent nothing, not even probes, until it is released.
    Destination {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: DestinationCommand,
    },
    /// Send recorded events again through today's rules (or to one destination), as new
    /// deliveries paced by each destination's limits; runs in the background (progress in
    /// `status`) and survives a restart.
    Replay {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        args: ReplayArgs,
    },
    /// Run a receiver that prints every request it gets and answers 200.
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
    },
}

/// `route --event`: the webhook kinds, spelled out here (rather than taking the library's
/// `EventKind`) so completions can offer them and this file stays free of the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventKindArg {
    /// A viewer watched (part of) a video.
    View,
    /// A viewer clicked or answered something in a video.
    Interaction,
    /// A viewer submitted a lead form.
    Lead,
}

/// How to reach the admin API; shared by every operator command.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Admin API base URL; default: `server.admin_listen` from the config file.
    #[arg(long, global = true, env = "HOOKROUTER_ADMIN", value_hint = clap::ValueHint::Url)]
    pub admin: Option<String>,
    /// The routes file to read `server.admin_listen` and `server.admin_token` from.
    #[arg(
        long,
        global = true,
        env = "HOOKROUTER_CONFIG",
        default_value = "routes.yaml"
    )]
    pub config: PathBuf,
    /// Bearer token; default: `server.admin_token` from the config file.
    #[arg(
        long,
        global = true,
        env = "HOOKROUTER_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

/// `hookrouter dead ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadCommand {
    /// List dead letters, oldest first.
    List {
        /// Only those of this destination.
        #[arg(long)]
        destination: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter with the original body.
    Show {
        /// The delivery id.
        id: String,
    },
    /// Put dead letters back in the queue with a fresh attempt budget.
    Retry {
        /// Delivery ids to retry.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Retry every dead letter (of `--destination`, if given).
        #[arg(long)]
        all: bool,
        /// With `--all`: only this destination's dead letters.
        #[arg(long, requires = "all")]
        destination: Option<String>,
    },
    /// Drop dead letters for good (their history stays readable for `server.retention`).
    Drop {
        /// Delivery ids to drop.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// `--status`: where an event stands, judged from its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventStatusArg {
    /// Every delivery succeeded.
    Delivered,
    /// A delivery is in the dead letters.
    Dead,
    /// It matched no route (kept with `server.keep_unrouted`).
    Unrouted,
    /// A delivery is waiting for an attempt or a retry.
    Queued,
    /// Settled, but a dead letter of it was dropped.
    Dropped,
}

impl EventStatusArg {
    /// The name the admin API takes.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatusArg::Delivered => "delivered",
            EventStatusArg::Dead => "dead",
            EventStatusArg::Unrouted => "unrouted",
            EventStatusArg::Queued => "queued",
            EventStatusArg::Dropped => "dropped",
        }
    }
}

/// The filters of `event list` and `replay --since`: every one given must hold.
#[derive(Debug, Clone, Default, Args)]
pub struct EventFilters {
    /// Received before this (a duration before now, such as 30m, or an RFC 3339 time).
    #[arg(long)]
    pub until: Option<String>,
    /// Only events of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<EventKindArg>,
    /// Only events that matched this route when they were accepted.
    #[arg(long)]
    pub route: Option<String>,
    /// Only events with a delivery to this destination.
    #[arg(long)]
    pub destination: Option<String>,
    /// Only events with this status now.
    #[arg(long, value_enum)]
    pub status: Option<EventStatusArg>,
    /// Only the event with this Mindstamp `id` in its body.
    #[arg(long)]
    pub mindstamp_id: Option<String>,
}

/// `hookrouter replay EVENT_ID... | --since T [filters] [--to D] [--dry-run] | --cancel ID`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Event ids to replay (instead of `--since`).
    #[arg(required_unless_present_any = ["since", "cancel"], conflicts_with_all = ["since", "cancel"])]
    pub events: Vec<String>,
    /// Replay the events received since this (a duration before now, such as 2h, or an RFC
    /// 3339 time), narrowed by the filters.
    #[arg(long)]
    pub since: Option<String>,
    #[command(flatten)]
    pub filters: EventFilters,
    /// Only to this destination (when today's rules send the event there), e.g. to backfill
    /// a new CRM without sending the other destinations anything again.
    #[arg(long)]
    pub to: Option<String>,
    /// Print what would be sent where and the counts per destination; send nothing.
    #[arg(long, conflicts_with = "cancel")]
    pub dry_run: bool,
    /// With `--dry-run`: each event's routing reasons, as `route --explain` shows them.
    #[arg(long, requires = "dry_run")]
    pub explain: bool,
    /// Stop a running replay (by the id `replay` printed) from queueing more.
    #[arg(long, conflicts_with_all = ["since", "to"])]
    pub cancel: Option<String>,
}

/// `hookrouter event ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum EventCommand {
    /// List recorded events, newest first, a page at a time.
    List {
        /// Events received since this: a duration before now (2h, 30m, 7d) or an RFC 3339 time.
        #[arg(long)]
        since: String,
        #[command(flatten)]
        filters: EventFilters,
        /// At most this many (a page; at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only events older than this event id (the next page: the id printed at the end).
        #[arg(long)]
        before: Option<String>,
    },
    /// Show an event, its routes and every attempt of every delivery.
    Show {
        /// The event id (the `event_id` hookrouter answered Mindstamp with).
        id: String,
    },
}

/// `hookrouter destination ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum DestinationCommand {
    /// Stop sending to a destination; its jobs stay queued (and their retry budget and
    /// max_age stop counting) until it is released.
    Hold {
        /// The destination's name in the config.
        name: String,
    },
    /// Resume delivery to a held destination (held by hand or by its failures).
    Release {
        /// The destination's name in the config.
        name: String,
    },
}
