//! Is the data directory still the one the store opened?
//!
//! A file that is deleted, or replaced by another under the same name, while the daemon
//! holds it open goes on accepting writes and `fdatasync`s: they land in a file nobody can
//! reach any more, and a restart finds them gone. So after every journal append, before any
//! request of the batch is answered, the active segment is checked to be still the file at
//! its path ([`check_file`]: two `stat`s), and every housekeeping pass checks that
//! `data_dir`, `data_dir/journal` and sled's `db` are still the ones opened
//! ([`Presence::check`]). Either failing is fatal: the batch gets 503, the store trips
//! `failed`, and the daemon exits with its own code, since a restart would start from an
//! empty or a foreign directory.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file or directory of the store that is not the one opened any more.
#[derive(Debug, thiserror::Error)]
#[error("{} was {what} while hookrouter was running; what was written there since is not on disk any more. Restore data_dir from a backup (or move what is left aside to start empty), then start hookrouter again", .path.display())]
pub struct Vanished {
    /// The path concerned.
    pub path: PathBuf,
    /// `deleted` or `replaced by another file`.
    pub what: &'static str,
}

/// Device, inode and birth time: what a path names (an inode number alone can be reused
/// at once by a file made after the first was deleted).
type Identity = (u64, u64, Option<std::time::SystemTime>);

fn identity(m: &std::fs::Metadata) -> Identity {
    (m.dev(), m.ino(), m.created().ok())
}

/// `Err` unless `path` still names `open` (and `open` still has a name).
pub fn check_file(open: &File, path: &Path) -> Result<(), Vanished> {
    let vanished = |what| Vanished {
        path: path.to_path_buf(),
        what,
    };
    let Ok(held) = open.metadata() else {
        return Ok(()); // fstat of an open file does not fail; nothing to judge by
    };
    if held.nlink() == 0 {
        return Err(vanished("deleted"));
    }
    match std::fs::metadata(path) {
        Ok(m) if identity(&m) == identity(&held) => Ok(()),
        Ok(_) => Err(vanished("replaced by another file")),
        Err(_) => Err(vanished("deleted")),
    }
}

/// What the store's directories and sled's file were when it opened.
#[derive(Debug)]
pub struct Presence {
    names: Vec<(PathBuf, Identity)>,
}

impl Presence {
    /// Remembers `dir`, `dir/journal` and `dir/db` as they are now (those that exist).
    pub fn record(dir: &Path) -> Presence {
        let names = [dir.to_path_buf(), dir.join("journal"), dir.join("db")]
            .into_iter()
            .filter_map(|p| {
                let m = std::fs::metadata(&p).ok()?;
                Some((p, identity(&m)))
            })
            .collect();
        Presence { names }
    }

    /// `Err` for the first of them that is gone or is another one now.
    pub fn check(&self) -> Result<(), Vanished> {
        for (path, id) in &self.names {
            match std::fs::metadata(path) {
                Ok(m) if identity(&m) == *id => {}
                Ok(_) => {
                    return Err(Vanished {
                        path: path.clone(),
                        what: "replaced by another file",
                    })
                }
                Err(_) => {
                    return Err(Vanished {
                        path: path.clone(),
                        what: "deleted",
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_or_replaced_file_or_directory_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let file = File::create(&path).unwrap();
        assert!(check_file(&file, &path).is_ok());
        std::fs::rename(&path, dir.path().join("old")).unwrap();
        std::fs::write(&path, b"other").unwrap();
        assert_eq!(
            check_file(&file, &path).unwrap_err().what,
            "replaced by another file"
        );
        std::fs::remove_file(dir.path().join("old")).unwrap();
        assert_eq!(check_file(&file, &path).unwrap_err().what, "deleted");

        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("journal")).unwrap();
        std::fs::write(data.join("db"), b"x").unwrap();
        let presence = Presence::record(&data);
        assert!(presence.check().is_ok());
        std::fs::remove_dir_all(&data).unwrap();
        std::fs::create_dir_all(data.join("journal")).unwrap();
        let e = presence.check().unwrap_err();
        assert_eq!(e.path, data);
        assert!(
            e.to_string().contains("Restore data_dir from a backup"),
            "{e}"
        );
    }
}
