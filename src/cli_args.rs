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
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        help_heading = "Global options"
    )]
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
// The flattened and subcommand fields carry no doc comment: clap would read one as help
// text; the help is the flattened arguments' own.
#[allow(missing_docs)]
pub enum Command {
    /// Run the daemon.
    #[command(after_help = examples::SERVE)]
    Serve {
        /// The routes file.
        #[arg(long, env = "HOOKROUTER_CONFIG", default_value = "routes.yaml")]
        config: PathBuf,
    },
    /// Validate the config exactly as `serve` would, print a summary, exit 0 (or 64 with
    /// every problem, each as FILE:LINE:COL: ...). Warnings (a field the route's kinds
    /// never carry, a template that fails on a sample payload) go to standard error.
    #[command(after_help = examples::CHECK)]
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
        /// Treat warnings as errors: exit 64 if there is any.
        #[arg(long)]
        strict: bool,
        /// Read no environment variable and no secret file: each `${VAR}`, `${file:PATH}`
        /// and `{ file: PATH }` stands for a placeholder and is not judged (for a config
        /// whose secrets exist only under systemd).
        #[arg(long)]
        no_environment: bool,
        /// Print the result as JSON (errors, warnings, destinations, routes) on standard
        /// output.
        #[arg(long)]
        json: bool,
    },
    /// Write a production skeleton (routes.yaml with placeholders and comments, and a
    /// mode-0600 env file for its secrets) into DIR; never overwrites a file.
    #[command(after_help = examples::INIT)]
    Init {
        /// The directory to write into (created if missing), e.g. /etc/hookrouter.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Dry run: show which routes a payload matches and where it would go. Sends nothing.
    /// With --render, exits 65 if a request cannot be rendered.
    #[command(after_help = examples::ROUTE)]
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
    /// Render one request to a destination from a payload, exactly as a delivery would
    /// (format, templates, headers, signing), send it, and print the answer: status,
    /// headers and the start of the body. Nothing is queued or retried.
    #[command(after_help = examples::SEND)]
    Send {
        /// The routes file.
        #[arg(long, env = "HOOKROUTER_CONFIG", default_value = "routes.yaml")]
        config: PathBuf,
        /// The destination to send to.
        #[arg(long)]
        destination: String,
        /// The kind of webhook the payload is; default: the first kind a route sends to
        /// the destination (view when none does).
        #[arg(long, value_enum)]
        event: Option<EventKindArg>,
        /// The payload file ("-": standard input); default: the sample payload of the kind.
        #[arg(value_hint = clap::ValueHint::FilePath)]
        payload: Option<PathBuf>,
    },
    /// Show the queue and health per destination: state, pending, retrying, in flight,
    /// dead, oldest pending, and the last error of any destination not healthy.
    #[command(after_help = examples::STATUS)]
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List, show, retry or drop dead letters (through the admin API).
    #[command(after_help = examples::DEAD)]
    Dead {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// Show an event, its routes and every delivery attempt (through the admin API).
    #[command(after_help = examples::EVENT)]
    Event {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: EventCommand,
    },
    /// Hold or release a destination by hand (through the admin API): a held destination
    /// keeps its queue and is sent nothing, not even probes, until it is released.
    #[command(after_help = examples::DESTINATION)]
    Destination {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: DestinationCommand,
    },
    /// Send recorded events again through today's rules (or to one destination), as new
    /// deliveries paced by each destination's limits; runs in the background (progress in
    /// `status`) and survives a restart.
    #[command(after_help = examples::REPLAY)]
    Replay {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        args: ReplayArgs,
    },
    /// Run a receiver that prints every request it gets and answers 200.
    #[command(after_help = examples::ECHO)]
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
#[command(next_help_heading = "Admin API options")]
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
    #[command(after_help = examples::DEAD_LIST)]
    List {
        /// Only those of this destination.
        #[arg(long)]
        destination: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter with the original body.
    #[command(after_help = examples::DEAD_SHOW)]
    Show {
        /// The delivery id.
        id: String,
    },
    /// Put dead letters back in the queue with a fresh attempt budget.
    #[command(after_help = examples::DEAD_RETRY)]
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
    #[command(after_help = examples::DEAD_DROP)]
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
// The flattened and subcommand fields carry no doc comment: clap would read one as help
// text; the help is the flattened arguments' own.
#[allow(missing_docs)]
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
// The flattened and subcommand fields carry no doc comment: clap would read one as help
// text; the help is the flattened arguments' own.
#[allow(missing_docs)]
pub enum EventCommand {
    /// List recorded events, newest first, a page at a time.
    #[command(after_help = examples::EVENT_LIST)]
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
    #[command(after_help = examples::EVENT_SHOW)]
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
    #[command(after_help = examples::DESTINATION_HOLD)]
    Hold {
        /// The destination's name in the config.
        name: String,
    },
    /// Resume delivery to a held destination (held by hand or by its failures).
    #[command(after_help = examples::DESTINATION_RELEASE)]
    Release {
        /// The destination's name in the config.
        name: String,
    },
}

/// The examples under each command's `--help` (and in its man page).
mod examples {
    pub(super) const SERVE: &str = "Examples:
  hookrouter serve --config /etc/hookrouter/routes.yaml
  RUST_LOG=hookrouter=debug hookrouter serve --log-format json
  kill -HUP $(pidof hookrouter)     # reload routes.yaml";
    pub(super) const CHECK: &str = "Examples:
  hookrouter check --config /etc/hookrouter/routes.yaml
  hookrouter check --strict         # warnings fail too (exit 64), e.g. in CI
  hookrouter check --json | jq '.warnings[].message'
  hookrouter check --no-environment # secrets only the service can read (systemd credentials)";
    pub(super) const INIT: &str = "Examples:
  sudo hookrouter init /etc/hookrouter
  hookrouter init ./try-it";
    pub(super) const ROUTE: &str = "Examples:
  hookrouter route --event view examples/view.json --explain
  hookrouter route --event lead examples/lead.json --render
  curl -s https://example.com/sample.json | hookrouter route --event interaction --json";
    pub(super) const SEND: &str = "Examples:
  hookrouter send --destination sales-slack                 # the sample view payload
  hookrouter send --destination crm --event lead examples/lead.json
  hookrouter echo & hookrouter send --destination local-echo";
    pub(super) const STATUS: &str = "Examples:
  hookrouter status
  hookrouter status --admin http://127.0.0.1:9090 --json";
    pub(super) const DEAD: &str = "Examples:
  hookrouter dead list --destination crm
  hookrouter dead show 0190f6a4-...
  hookrouter dead retry --all --destination crm";
    pub(super) const DEAD_LIST: &str = "Examples:
  hookrouter dead list
  hookrouter dead list --destination crm --limit 10 --json";
    pub(super) const DEAD_SHOW: &str = "Example:
  hookrouter dead show 0190f6a4-8e1c-7c3d-b7a9-1f2e3d4c5b6a";
    pub(super) const DEAD_RETRY: &str = "Examples:
  hookrouter dead retry 0190f6a4-8e1c-7c3d-b7a9-1f2e3d4c5b6a
  hookrouter dead retry --all --destination crm";
    pub(super) const DEAD_DROP: &str = "Example:
  hookrouter dead drop 0190f6a4-8e1c-7c3d-b7a9-1f2e3d4c5b6a";
    pub(super) const EVENT: &str = "Example:
  hookrouter event show 0190f6a4-8e1c-7c3d-b7a9-1f2e3d4c5b6a";
    pub(super) const EVENT_SHOW: &str = "Examples:
  hookrouter event show 0190f6a4-8e1c-7c3d-b7a9-1f2e3d4c5b6a
  hookrouter event show 0190f6a4-8e1c-7c3d-b7a9-1f2e3d4c5b6a --json";
    pub(super) const DESTINATION: &str = "Examples:
  hookrouter destination hold crm       # planned maintenance: send it nothing, keep its queue
  hookrouter destination release crm    # resume (also ends a hold after failures)";
    pub(super) const DESTINATION_HOLD: &str = "Example:
  hookrouter destination hold crm --admin http://127.0.0.1:9090";
    pub(super) const DESTINATION_RELEASE: &str = "Example:
  hookrouter destination release crm";
    pub(super) const REPLAY: &str = "Examples:
  hookrouter replay --since 24h --to new-crm --dry-run --explain
  hookrouter replay --since 24h --to new-crm      # backfill a destination just added
  hookrouter replay 0190f6a4-8e1c-7c3d-b7a9-1f2e3d4c5b6a
  hookrouter replay --cancel 0190f6b0-...";
    pub(super) const EVENT_LIST: &str = "Examples:
  hookrouter event list --since 2h --kind lead
  hookrouter event list --since 24h --status unrouted
  hookrouter event list --since 7d --mindstamp-id 12345 --json";
    pub(super) const ECHO: &str = "Examples:
  hookrouter echo
  hookrouter echo --listen 127.0.0.1:9100";
}
