//! `hookrouter init [DIR]`: writes the production skeleton, `routes.yaml` and `env`.
//!
//! The skeleton is the very file the Debian package installs as its conffiles
//! (`contrib/production/`), so a from-source install starts from the same place as a
//! packaged one. It holds no development key: its key and its example destination's URL
//! are `${VAR}` placeholders for the env file, so `check` (and so `serve`) refuses it with
//! "configure a key" until they are filled in.
//!
//! It never overwrites: an operator's edited config is worth more than a fresh skeleton.
//! Both files are checked first and created with `create_new`, so a file that appears in
//! between is not clobbered either, and a failure leaves no half-written skeleton behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The production `routes.yaml`: placeholders for the secrets, comments for the operator.
pub const ROUTES_YAML: &str = include_str!("../contrib/production/routes.yaml");

/// The env file for the secrets `ROUTES_YAML` refers to, every line commented out.
pub const ENV_FILE: &str = include_str!("../contrib/production/env");

/// Why `init` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A file of the skeleton is already there.
    #[error("{path} already exists; init never overwrites a file (move it away, or edit it instead)", path = .0.display())]
    Exists(PathBuf),
    /// The directory could not be created.
    #[error("cannot create the directory {path}: {source}", path = .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}", path = .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The files `init` wrote, for the message that tells the operator what to do next.
#[derive(Debug)]
pub struct Written {
    /// `DIR/routes.yaml`.
    pub routes: PathBuf,
    /// `DIR/env`, mode 0600.
    pub env: PathBuf,
}

/// Writes `dir/routes.yaml` (mode 0644) and `dir/env` (mode 0600, it is for secrets),
/// creating `dir` if needed. Refuses, writing nothing, if either file exists.
pub fn write_skeleton(dir: &Path) -> Result<Written, InitError> {
    let routes = dir.join("routes.yaml");
    let env = dir.join("env");
    for path in [&routes, &env] {
        // symlink_metadata: a dangling symlink is "there" too, and writing through it
        // would create a file somewhere else.
        if path.symlink_metadata().is_ok() {
            return Err(InitError::Exists(path.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| InitError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    write_new(&routes, ROUTES_YAML, 0o644)?;
    if let Err(e) = write_new(&env, ENV_FILE, 0o600) {
        // Only what this run created is removed.
        let _ = std::fs::remove_file(&routes);
        return Err(e);
    }
    Ok(Written { routes, env })
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), InitError> {
    let error = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            InitError::Exists(path.to_path_buf())
        } else {
            InitError::Write {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    let written = file
        .write_all(contents.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(source) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(InitError::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_both_files_with_their_modes_and_refuses_a_second_time() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("etc/hookrouter");
        let written = write_skeleton(&target).unwrap();
        assert_eq!(
            std::fs::read_to_string(&written.routes).unwrap(),
            ROUTES_YAML
        );
        assert_eq!(std::fs::read_to_string(&written.env).unwrap(), ENV_FILE);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&written.env), 0o600);
        // The umask may take bits away from 0644, never add them.
        assert_eq!(mode(&written.routes) & !0o644, 0);

        std::fs::write(&written.routes, "edited").unwrap();
        let err = write_skeleton(&target).unwrap_err();
        assert!(
            matches!(&err, InitError::Exists(p) if p == &written.routes),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&written.routes).unwrap(), "edited");
    }

    #[test]
    fn an_existing_env_file_alone_stops_it_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("env"), "MINDSTAMP_WEBHOOK_KEY=mine\n").unwrap();
        let err = write_skeleton(dir.path()).unwrap_err().to_string();
        assert!(err.contains("env already exists"), "{err}");
        assert!(!dir.path().join("routes.yaml").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("env")).unwrap(),
            "MINDSTAMP_WEBHOOK_KEY=mine\n"
        );
    }

    #[test]
    fn a_dangling_symlink_counts_as_existing() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("routes.yaml")).unwrap();
        assert!(matches!(
            write_skeleton(dir.path()),
            Err(InitError::Exists(_))
        ));
        assert!(!elsewhere.exists());
    }
}
