//! `hookrouter init [DIR]`, run as the real binary: it writes the production skeleton (the
//! files the Debian package ships), the skeleton is refused by `check` and `serve` with
//! "configure a key" until its placeholders are filled in, and init never overwrites.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use crate::common;
use crate::common::text;

/// Runs the binary with exactly `env` as its environment (as systemd would, from the env
/// file), in `cwd`.
fn hookrouter(cwd: &Path, args: &[&str], env: &HashMap<String, String>) -> Output {
    let mut cli = common::hookrouter(args);
    cli.command().current_dir(cwd).env_clear().envs(env);
    cli.output()
}

fn shipped(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("contrib/production")
            .join(name),
    )
    .unwrap()
}

/// The variables an env file sets: `VAR=value` lines, comments and blanks skipped.
fn env_file(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect()
}

#[test]
fn init_writes_a_skeleton_that_is_refused_until_a_key_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let no_env = HashMap::new();
    let out = hookrouter(dir.path(), &["init", "etc/hookrouter"], &no_env);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("wrote etc/hookrouter/routes.yaml"),
        "{stdout}"
    );
    assert!(stdout.contains("wrote etc/hookrouter/env"), "{stdout}");
    assert!(stdout.contains("MINDSTAMP_WEBHOOK_KEY"), "{stdout}");

    let target = dir.path().join("etc/hookrouter");
    let (routes, env) = (target.join("routes.yaml"), target.join("env"));
    // The very files the package installs as its conffiles.
    assert_eq!(
        std::fs::read_to_string(&routes).unwrap(),
        shipped("routes.yaml")
    );
    assert_eq!(std::fs::read_to_string(&env).unwrap(), shipped("env"));
    let mode = std::fs::metadata(&env).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the env file holds secrets");
    let skeleton = std::fs::read_to_string(&routes).unwrap();
    assert!(!skeleton.contains("dev-only-insecure-key"), "{skeleton}");

    // As shipped, the env file sets nothing: check says what to do and where.
    let routes_arg = routes.to_str().unwrap();
    let loaded = env_file(&env);
    assert!(loaded.is_empty(), "{loaded:?}");
    let out = hookrouter(dir.path(), &["check", "--config", routes_arg], &loaded);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    let key_line = stderr
        .lines()
        .find(|l| l.contains("keys.0:"))
        .unwrap_or_else(|| panic!("no problem at keys.0:\n{stderr}"));
    assert!(
        key_line.starts_with(&format!("{routes_arg}:")),
        "the problem names the file: {key_line}"
    );
    assert!(
        key_line.contains("environment variable MINDSTAMP_WEBHOOK_KEY is not set; configure a key"),
        "{key_line}"
    );
    assert!(key_line.contains("/etc/hookrouter/env"), "{key_line}");
    assert!(
        stderr.contains(
            "destination \"sales-slack\": url: environment variable SLACK_WEBHOOK_URL is not set"
        ),
        "{stderr}"
    );
    // Reported once, not also as a malformed URL.
    assert!(!stderr.contains("not a valid URL"), "{stderr}");

    // serve refuses it the same way, before it opens the store.
    let out = hookrouter(dir.path(), &["serve", "--config", routes_arg], &loaded);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("configure a key"), "{stderr}");
    assert!(stderr.contains("not starting"), "{stderr}");

    // A key set but empty (an uncommented `MINDSTAMP_WEBHOOK_KEY=`) is no key either.
    let filled = shipped("env")
        .replace("#MINDSTAMP_WEBHOOK_KEY=", "MINDSTAMP_WEBHOOK_KEY=")
        .replace("#SLACK_WEBHOOK_URL=", "SLACK_WEBHOOK_URL=");
    std::fs::write(&env, &filled).unwrap();
    let out = hookrouter(
        dir.path(),
        &["check", "--config", routes_arg],
        &env_file(&env),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("keys.0:") && stderr.contains("configure a key"),
        "{stderr}"
    );

    // Filled in, it passes, with no warning and without printing the key.
    std::fs::write(
        &env,
        filled.replace(
            "MINDSTAMP_WEBHOOK_KEY=\n",
            "MINDSTAMP_WEBHOOK_KEY=prod-key-4f9a2c\n",
        ),
    )
    .unwrap();
    let out = hookrouter(
        dir.path(),
        &["check", "--config", routes_arg],
        &env_file(&env),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("keys: 1 accepted X-KEY value(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("every-lead  [lead]  always  -> sales-slack"),
        "{stdout}"
    );
    assert!(stdout.contains("data_dir: /var/lib/hookrouter"), "{stdout}");
    assert!(!stderr.contains("WARNING"), "{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("prod-key-4f9a2c"));
}

#[test]
fn init_never_overwrites_and_writes_nothing_when_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let no_env = HashMap::new();
    // DIR defaults to the current directory.
    let out = hookrouter(dir.path(), &["init"], &no_env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let routes = dir.path().join("routes.yaml");
    let env = dir.path().join("env");
    std::fs::write(&routes, "# my edited routes\n").unwrap();

    let out = hookrouter(dir.path(), &["init", "."], &no_env);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("routes.yaml already exists; init never overwrites"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&routes).unwrap(),
        "# my edited routes\n"
    );
    assert_eq!(std::fs::read_to_string(&env).unwrap(), shipped("env"));

    // Only the env file there: refused too, and routes.yaml is not written beside it.
    std::fs::remove_file(&routes).unwrap();
    std::fs::write(&env, "MINDSTAMP_WEBHOOK_KEY=mine\n").unwrap();
    let out = hookrouter(dir.path(), &["init"], &no_env);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("env already exists"), "{stderr}");
    assert!(!routes.exists());
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "MINDSTAMP_WEBHOOK_KEY=mine\n"
    );
}
