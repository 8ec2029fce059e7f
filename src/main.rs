//! The `hookrouter` command: CLI parsing, logging set-up, signals and exit codes.
//! Everything else lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use hookrouter::admin::cli::{AdminArgs, CliError, Operation};
use hookrouter::cli_args::{Cli, Command, LogFormat};
use hookrouter::config::{Config, ConfigError};

/// EX_USAGE: the config is wrong; systemd's `RestartPreventExitStatus=64` stops restart loops.
const EXIT_CONFIG: u8 = 64;
/// EX_DATAERR: the input given to a command (a payload for `route`) is not usable. `serve`
/// exits 65 too for a damaged store, and 74 (EX_IOERR) when the data directory vanished
/// under it ([`hookrouter::RunError::exit_code`]); the unit restarts on neither.
const EXIT_DATA: u8 = 65;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_writer = hookrouter::logging::init(matches!(cli.log_format, LogFormat::Json));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hookrouter: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The daemon reports through the logger (journald, JSON shippers); the other commands
    // are run by a person, who reads plain standard error.
    let daemon = matches!(cli.command, Command::Serve { .. });
    let result = runtime.block_on(dispatch(cli.command));
    exit_code(result, daemon)
}

/// Runs one command: the daemon, an offline command, or an operator command over the
/// admin API.
async fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve { config } => serve(config).await,
        Command::Check {
            config,
            against_journal: false,
            strict,
            json,
            no_environment,
            ..
        } => check(config, strict, json, no_environment),
        Command::Check {
            config,
            since,
            admin,
            token,
            strict,
            json,
            no_environment,
            ..
        } => match check(config.clone(), strict, json, no_environment) {
            Ok(()) => {
                let args = AdminArgs {
                    admin,
                    config,
                    token,
                    json: false,
                };
                operate(Operation::Shadow { since }, args).await
            }
            Err(e) => Err(e),
        },
        Command::Init { dir } => init(&dir),
        Command::Route {
            config,
            event,
            explain,
            json,
            render,
            payload,
        } => route(
            config,
            event.into(),
            RouteOutput {
                explain,
                json,
                render,
            },
            payload,
        ),
        Command::Send {
            config,
            destination,
            event,
            payload,
        } => send(config, &destination, event.map(Into::into), payload).await,
        Command::Status { admin } => operate(Operation::Status, admin).await,
        Command::Dead { admin, command } => operate(Operation::Dead(command), admin).await,
        Command::Event { admin, command } => operate(Operation::Event(command), admin).await,
        Command::Destination { admin, command } => {
            operate(Operation::Destination(command), admin).await
        }
        Command::Replay { admin, args } => operate(Operation::Replay(args), admin).await,
        Command::Echo { listen } => echo(listen).await,
    }
}

/// `echo`: the local receiver, until Ctrl-C.
async fn echo(listen: std::net::SocketAddr) -> Result<(), Failure> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
    hookrouter::echo::run(listen, shutdown)
        .await
        .with_context(|| format!("echo on {listen}"))
        .map_err(Failure::Other)
}

/// Reports a failure (through the logger for the daemon, on standard error otherwise) and
/// gives the exit code it calls for.
fn exit_code(result: Result<(), Failure>, daemon: bool) -> ExitCode {
    // `line` is printed as is; `hookrouter: ` marks hookrouter's own words on a terminal
    // (the logger names its target itself).
    let report = |line: &str| {
        if daemon {
            tracing::error!("{}", line.trim_start_matches("hookrouter: "));
        } else {
            eprintln!("{line}");
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            for line in e.to_string().lines() {
                report(line);
            }
            report(if daemon {
                "hookrouter: the config has errors; not starting"
            } else {
                "hookrouter: the config has errors"
            });
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Data(e)) => {
            report(&format!("hookrouter: {e:#}"));
            ExitCode::from(EXIT_DATA)
        }
        Err(Failure::ExitWith(code, e)) => {
            report(&format!("hookrouter: {e:#}"));
            ExitCode::from(code)
        }
        Err(Failure::Other(e)) => {
            report(&format!("hookrouter: {e:#}"));
            ExitCode::FAILURE
        }
        Err(Failure::Exit(code)) => ExitCode::from(code),
    }
}

enum Failure {
    Config(ConfigError),
    Data(anyhow::Error),
    /// A daemon failure with an exit code of its own ([`hookrouter::RunError::exit_code`]).
    ExitWith(u8, anyhow::Error),
    Other(anyhow::Error),
    /// Everything has been said already: just this exit status.
    Exit(u8),
}

fn run_failure(e: hookrouter::RunError) -> Failure {
    match e.exit_code() {
        Some(code) => Failure::ExitWith(code, e.into()),
        None => Failure::Other(e.into()),
    }
}

fn check(path: PathBuf, strict: bool, json: bool, no_environment: bool) -> Result<(), Failure> {
    let loaded = if no_environment {
        eprintln!("hookrouter: --no-environment: no variable or secret file was read; the values they give are not checked");
        Config::load_without_environment(&path)
    } else {
        Config::load(&path)
    };
    let failed = match &loaded {
        Err(_) => true,
        Ok(c) => strict && !c.warnings.is_empty(),
    };
    if json {
        let report = hookrouter::inspect::check_json(&path, &loaded);
        let text = serde_json::to_string_pretty(&report)
            .context("encoding the report")
            .map_err(Failure::Other)?;
        println!("{text}");
        return if failed {
            Err(Failure::Exit(EXIT_CONFIG))
        } else {
            Ok(())
        };
    }
    let config = loaded.map_err(Failure::Config)?;
    // On standard error, where the operator looks for problems; the summary stays clean
    // for scripts.
    for warning in &config.warnings {
        eprintln!("hookrouter: {warning}");
    }
    print!("{}", hookrouter::inspect::check_summary(&config));
    let n = config.warnings.len();
    if n > 0 {
        let s = if n == 1 { "" } else { "s" };
        if strict {
            eprintln!("hookrouter: {n} warning{s}, and --strict makes them errors");
        } else {
            eprintln!("hookrouter: {n} warning{s} (--strict makes them errors)");
        }
    }
    if failed {
        return Err(Failure::Exit(EXIT_CONFIG));
    }
    Ok(())
}

fn init(dir: &Path) -> Result<(), Failure> {
    let written = hookrouter::init::write_skeleton(dir)
        .with_context(|| format!("init {}", dir.display()))
        .map_err(Failure::Other)?;
    let (routes, env) = (written.routes.display(), written.env.display());
    println!("wrote {routes}: the routes, keys and destinations (placeholders to fill in)");
    println!("wrote {env}: their secrets (mode 0600)");
    println!();
    println!("next:");
    println!(
        "  1. set MINDSTAMP_WEBHOOK_KEY (the X-KEY Mindstamp sends) and SLACK_WEBHOOK_URL in {env}"
    );
    println!("  2. put your destinations and routes in {routes}");
    println!("  3. check it with the secrets loaded (it refuses until a key is configured):");
    println!("     sh -c 'set -a; . {env}; exec hookrouter check --config {routes}'");
    Ok(())
}

/// What `route` prints besides the verdict.
struct RouteOutput {
    explain: bool,
    json: bool,
    render: bool,
}

fn route(
    path: PathBuf,
    kind: hookrouter::event::EventKind,
    output: RouteOutput,
    payload: Option<PathBuf>,
) -> Result<(), Failure> {
    let config = Config::load(&path).map_err(Failure::Config)?;
    let (bytes, payload) = read_payload(payload.filter(|p| p.as_os_str() != "-"))?;
    let mut report = hookrouter::inspect::route_report(&config, kind, &payload, output.explain);
    if output.render {
        hookrouter::inspect::render_deliveries(&config, &mut report, &bytes.into(), &payload);
    }
    if output.json {
        let text = serde_json::to_string_pretty(&report)
            .context("encoding the report")
            .map_err(Failure::Other)?;
        println!("{text}");
    } else {
        print!("{}", hookrouter::inspect::render_report(&report));
    }
    let failed = report
        .rendered
        .iter()
        .flatten()
        .filter(|r| r.error.is_some())
        .count();
    if failed > 0 {
        let of = report.rendered.as_ref().map_or(0, Vec::len);
        eprintln!(
            "hookrouter: {failed} of {of} requests could not be rendered: such deliveries would be dead-lettered"
        );
        return Err(Failure::Exit(EXIT_DATA));
    }
    Ok(())
}

/// Reads a payload from `path` (standard input when `None`); it must be a JSON object.
fn read_payload(path: Option<PathBuf>) -> Result<(Vec<u8>, serde_json::Value), Failure> {
    let (name, bytes) = match path {
        Some(p) => {
            let bytes = std::fs::read(&p)
                .with_context(|| format!("reading {}", p.display()))
                .map_err(Failure::Data)?;
            (p.display().to_string(), bytes)
        }
        None => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .context("reading the payload from standard input")
                .map_err(Failure::Data)?;
            ("standard input".to_string(), bytes)
        }
    };
    let payload: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{name} is not valid JSON"))
        .map_err(Failure::Data)?;
    if !payload.is_object() {
        return Err(Failure::Data(anyhow::anyhow!(
            "{name} must hold a JSON object, as Mindstamp sends"
        )));
    }
    Ok((bytes, payload))
}

/// `hookrouter send`: one real request, its answer printed; nothing queued.
async fn send(
    path: PathBuf,
    destination: &str,
    kind: Option<hookrouter::event::EventKind>,
    payload: Option<PathBuf>,
) -> Result<(), Failure> {
    let config = Config::load(&path).map_err(Failure::Config)?;
    let kind = kind.unwrap_or_else(|| hookrouter::send::default_kind(&config, destination));
    let (bytes, payload) = match payload {
        Some(p) if p.as_os_str() == "-" => read_payload(None)?,
        Some(p) => read_payload(Some(p))?,
        None => (
            hookrouter::payloads::sample_text(kind).as_bytes().to_vec(),
            hookrouter::payloads::sample(kind).clone(),
        ),
    };
    let sent = hookrouter::send::send(&config, destination, kind, bytes.into(), &payload)
        .await
        .map_err(|e| match e {
            hookrouter::send::SendError::Render(_) => Failure::Data(e.into()),
            other => Failure::Other(other.into()),
        })?;
    print!("{}", hookrouter::send::render(&sent));
    if sent.delivered() {
        Ok(())
    } else {
        Err(Failure::Exit(1))
    }
}

/// Runs an operator command against the admin API and prints what it says.
async fn operate(op: Operation, args: AdminArgs) -> Result<(), Failure> {
    let mut out = String::new();
    let result = hookrouter::admin::cli::run(&op, &args, &mut out).await;
    print!("{out}");
    match result {
        Ok(()) => Ok(()),
        Err(CliError::Config(e)) => Err(Failure::Config(e)),
        Err(e) => Err(Failure::Other(e.into())),
    }
}

async fn serve(path: PathBuf) -> Result<(), Failure> {
    // Handlers first: a SIGHUP that arrives as soon as the daemon says it is ready (systemd
    // may reload at once) must reload, not kill the process with the default action.
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hangup = signal(tokio::signal::unix::SignalKind::hangup())?;
    let config = Config::load(&path).map_err(Failure::Config)?;
    let running = hookrouter::start(config).await.map_err(run_failure)?;
    let shutdown = running.shutdown_token();
    let stopped = running.shutdown_token();
    let running = std::sync::Arc::new(tokio::sync::Mutex::new(Some(running)));
    let reloader = running.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped.cancelled() => return,
                _ = hangup.recv() => {}
            }
            let guard = reloader.lock().await;
            let Some(r) = guard.as_ref() else { return };
            match r.reload() {
                Ok(s) => tracing::info!(
                    routes_added = ?s.routes.added, routes_removed = ?s.routes.removed, routes_changed = ?s.routes.changed,
                    destinations_added = ?s.destinations.added, destinations_removed = ?s.destinations.removed,
                    destinations_changed = ?s.destinations.changed,
                    "config reloaded"
                ),
                Err(e) => {
                    // One line per problem: a line break inside one would lose its priority
                    // in the journal.
                    for problem in e.to_string().lines() {
                        tracing::error!("{problem}");
                    }
                    tracing::error!("config reload refused; the previous rules stay in force")
                }
            }
        }
    });
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
    let taken = running.lock().await.take();
    if let Some(r) = taken {
        r.wait().await.map_err(run_failure)?;
    }
    Ok(())
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal, Failure> {
    tokio::signal::unix::signal(kind)
        .context("installing a signal handler")
        .map_err(Failure::Other)
}
