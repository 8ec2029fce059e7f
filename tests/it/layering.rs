//! Dependencies point one way: the lower layers (`route`, `queue` and `destination`) never
//! name `crate::config`; the config is compiled into their types, not read by them. And
//! `destination` is a leaf under delivery too: `deliver` uses it, never the reverse. Doc
//! comments may point at either; code may not.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every code line (comments left out) under `src/<layer>` (a directory or `<layer>.rs`)
/// that names the config module.
fn config_uses(layer: &str) -> Vec<String> {
    uses_of(layer, "config")
}

/// Every code line (comments left out) under `src/<layer>` that names `crate::<module>`.
fn uses_of(layer: &str, module: &str) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join(layer), &mut files);
    let single = src.join(format!("{layer}.rs"));
    if single.is_file() {
        files.push(single);
    }
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if code.contains(&format!("crate::{module}"))
                || code.contains(&format!("super::{module}"))
            {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn route_queue_and_destination_do_not_name_the_config() {
    // A file of the layer must exist, or the test would pass on a renamed tree.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert!(src.join("route/mod.rs").is_file() && src.join("queue/mod.rs").is_file());
    for layer in ["route", "queue", "destination"] {
        let uses = config_uses(layer);
        assert!(
            uses.is_empty(),
            "{layer} names crate::config; compile the config into {layer}'s own types instead:\n{}",
            uses.join("\n")
        );
    }
}

#[test]
fn destination_and_config_do_not_name_delivery() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert!(src.join("destination/mod.rs").is_file() && src.join("config/mod.rs").is_file());
    for layer in ["destination", "config"] {
        let uses = uses_of(layer, "deliver");
        assert!(
            uses.is_empty(),
            "{layer} names crate::deliver; the compiled destination's parts live in destination/:\n{}",
            uses.join("\n")
        );
    }
}
