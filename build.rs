//! Generates the shell completions (bash, zsh, fish) and the man pages at build time, from
//! the very clap definition the binary parses (`src/cli_args.rs`, compiled here too), so
//! what the package installs always matches the binary.
//!
//! Everything is written to `OUT_DIR`, then copied to `generated/` in the profile's target
//! directory (`target/release/generated/`), where `cargo deb`'s assets name it: Cargo gives
//! build products other than binaries no stable path of their own, and this is the place
//! cargo-deb documents for them. Man pages are gzipped here, as Debian policy wants them,
//! because cargo-deb compresses only files that were not built.

use std::error::Error;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

#[allow(dead_code)]
// the build script needs the definition, not the accessors
// The grammar is the library's public `cli_args` module; here it is a private one, so its
// `pub` items are unreachable by design.
#[allow(unreachable_pub)]
#[path = "src/cli_args.rs"]
mod cli_args;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/cli_args.rs");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("cargo did not set OUT_DIR")?);
    let generated = out_dir.join("generated");
    if generated.exists() {
        fs::remove_dir_all(&generated).map_err(|e| context(&generated, e))?;
    }
    let completions = generated.join("completions");
    let man = generated.join("man");
    for dir in [&completions, &man] {
        fs::create_dir_all(dir).map_err(|e| context(dir, e))?;
    }

    let mut cmd = cli_args::Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "hookrouter", &completions)
            .map_err(|e| context(&completions, e))?;
    }
    // The pages document every command themselves; clap's `help` subcommands would only be
    // listed as pages that do not exist.
    // (A fresh definition: generating completions has built the other one, help and all.)
    let mut cmd = without_help_subcommands(cli_args::Cli::command());
    cmd.build();
    write_man_pages(&cmd, &man)?;

    match profile_dir(&out_dir) {
        Some(profile) => copy_tree(&generated, &profile.join("generated"))?,
        None => println!(
            "cargo::warning=OUT_DIR {} is not inside a profile's target directory; the completions and man pages stay there (cargo deb will not find them)",
            out_dir.display()
        ),
    }
    Ok(())
}

fn without_help_subcommands(cmd: clap::Command) -> clap::Command {
    cmd.disable_help_subcommand(true)
        .mut_subcommands(without_help_subcommands)
}

/// One gzipped page per command: `hookrouter.1.gz`, `hookrouter-serve.1.gz`,
/// `hookrouter-dead-list.1.gz`, ... (`man hookrouter-dead-retry` works as with git).
fn write_man_pages(cmd: &clap::Command, dir: &Path) -> Result<(), Box<dyn Error>> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man_pages(sub, dir)?;
    }
    let page = clap_mangen::Man::new(cmd.clone()).manual("hookrouter manual");
    let mut roff = Vec::new();
    if cmd.get_name() == "hookrouter" {
        // The top page also says where things are and what the exit codes mean.
        page.render_title(&mut roff)?;
        page.render_name_section(&mut roff)?;
        page.render_synopsis_section(&mut roff)?;
        page.render_description_section(&mut roff)?;
        page.render_options_section(&mut roff)?;
        page.render_subcommands_section(&mut roff)?;
        reference_sections().to_writer(&mut roff)?;
        page.render_version_section(&mut roff)?;
    } else {
        page.render(&mut roff)?;
    }
    let path = dir.join(format!("{}.gz", page.get_filename()));
    let file = fs::File::create(&path).map_err(|e| context(&path, e))?;
    // No file name and no time in the gzip header: the same source gives the same bytes.
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, flate2::Compression::best());
    gz.write_all(&roff).map_err(|e| context(&path, e))?;
    gz.finish().map_err(|e| context(&path, e))?;
    Ok(())
}

/// FILES, ENVIRONMENT, EXIT STATUS and SEE ALSO for `hookrouter(1)`.
fn reference_sections() -> clap_mangen::roff::Roff {
    use clap_mangen::roff::{bold, roman, Roff};
    let mut roff = Roff::new();
    let mut list = |title: &str, items: &[(&str, &str)]| {
        roff.control("SH", [title]);
        for (term, text) in items {
            roff.control("TP", []);
            roff.text([bold(*term)]);
            roff.text([roman(*text)]);
        }
    };
    list(
        "FILES",
        &[
            ("/etc/hookrouter/routes.yaml", "The routes, keys and destinations (a conffile of the Debian package). Until a key is configured, check and serve refuse it."),
            ("/etc/hookrouter/env", "Secrets referenced as ${VAR} in routes.yaml, one VAR=value per line, mode 0600; the unit reads it with EnvironmentFile=."),
            ("/var/lib/hookrouter", "The store (server.data_dir): the journal and the retry queue. The unit runs with DynamicUser=, so it is physically /var/lib/private/hookrouter; back it up with the service stopped. Kept when the package is removed, deleted when it is purged."),
            ("/usr/lib/systemd/system/hookrouter.service", "The hardened unit: Type=notify, watchdog, the config checked before every start and reload."),
        ],
    );
    list(
        "ENVIRONMENT",
        &[
            (
                "HOOKROUTER_CONFIG",
                "The routes file when --config is not given (default ./routes.yaml).",
            ),
            (
                "HOOKROUTER_ADMIN, HOOKROUTER_ADMIN_TOKEN",
                "The admin API URL and bearer token for status, dead and event.",
            ),
            (
                "RUST_LOG",
                "Log filter, e.g. hookrouter=debug (default info).",
            ),
            (
                "MINDSTAMP_WEBHOOK_KEY",
                "The webhook key, as the shipped routes.yaml refers to it.",
            ),
        ],
    );
    list(
        "EXIT STATUS",
        &[
            ("0", "Success."),
            ("64", "The config is invalid (every problem is printed as FILE:LINE:COL: ...), or check --strict found warnings; the unit does not restart on it."),
            ("65", "The payload given to route or send is not a JSON object, or a request cannot be rendered from it."),
            ("1", "Anything else: a port in use, the store held by another hookrouter, the admin API unreachable, send answered with a failure."),
        ],
    );
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "hookrouter-serve(1), hookrouter-check(1), hookrouter-init(1), hookrouter-route(1), hookrouter-send(1), hookrouter-status(1), hookrouter-dead(1), hookrouter-event(1), hookrouter-replay(1), hookrouter-destination(1), hookrouter-echo(1), systemd.exec(5); /usr/share/doc/hookrouter/README.md",
    )]);
    roff
}

/// `target/<profile>` (or `target/<triple>/<profile>`) from
/// `target/<profile>/build/hookrouter-<hash>/out`, or `None` if Cargo laid it out otherwise.
fn profile_dir(out_dir: &Path) -> Option<PathBuf> {
    let build = out_dir.parent()?.parent()?;
    if out_dir.file_name()? != "out" || build.file_name()? != "build" {
        return None;
    }
    build.parent().map(Path::to_path_buf)
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), Box<dyn Error>> {
    if to.exists() {
        fs::remove_dir_all(to).map_err(|e| context(to, e))?;
    }
    fs::create_dir_all(to).map_err(|e| context(to, e))?;
    for entry in fs::read_dir(from).map_err(|e| context(from, e))? {
        let entry = entry.map_err(|e| context(from, e))?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target).map_err(|e| context(&target, e))?;
        }
    }
    Ok(())
}

fn context(path: &Path, e: std::io::Error) -> Box<dyn Error> {
    format!("{}: {e}", path.display()).into()
}
