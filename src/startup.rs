//! Why the daemon cannot start, said once and in plain words: which setting, what is wrong
//! with it, and what to do ("server.listen 127.0.0.1:8080 is in use: ...").
//!
//! The operating system's errors (`Address already in use (os error 98)`) and sled's (a
//! lock error carrying Rust's `Os { code: 11, kind: WouldBlock, .. }`) name neither the
//! setting nor a way out. Each is recognised here and turned into a sentence; anything
//! else keeps the original message after the setting it concerns.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::queue::StoreError;

/// The effective uid of this process (the owner of `/proc/self`), when it can be read.
pub fn uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// `server.listen 127.0.0.1:8080 is in use: ...` for a listener that could not be bound.
pub fn bind_error(setting: &str, addr: SocketAddr, e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::AddrInUse => format!(
            "{setting} {addr} is in use: another hookrouter, or another program, listens there \
             (`ss -ltnp 'sport = :{}'` shows which); stop it, or change {setting}",
            addr.port()
        ),
        ErrorKind::PermissionDenied => format!(
            "{setting} {addr}: permission denied{}: ports below 1024 need root or \
             CAP_NET_BIND_SERVICE; listen on a higher port (behind your proxy), or change {setting}",
            uid().map(|u| format!(" for uid {u}")).unwrap_or_default()
        ),
        ErrorKind::AddrNotAvailable => format!(
            "{setting} {addr}: no network interface of this host has the address {}; change {setting}",
            addr.ip()
        ),
        _ => format!("{setting} {addr} cannot be listened on: {e}; change {setting}"),
    }
}

/// Is `e` sled's "could not acquire lock" (another process has the store open)?
pub fn is_locked(e: &StoreError) -> bool {
    matches!(e, StoreError::Sled(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock"))
}

/// The pid of the process holding the lock on the store in `dir` (sled's `flock` on
/// `dir/db`), read from `/proc/locks`; `None` when it cannot be told.
pub fn lock_holder(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir.join("db")).ok()?;
    let dev = meta.dev();
    // Linux's encoding of dev_t, as /proc/locks prints it: major:minor in hex, then the inode.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF` (a blocked waiter adds `->`).
        let at = fields.iter().position(|f| *f == wanted)?;
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        fields.get(at.checked_sub(1)?)?.parse().ok()
    })
}

/// Why `dir` cannot be used as the data directory by this process, checked before the
/// store is opened: it must exist or be creatable, and be writable.
pub fn check_data_dir(dir: &Path) -> Result<(), String> {
    let who = uid().map_or_else(|| "this user".to_string(), |u| format!("uid {u}"));
    let shown = dir.display();
    if !dir.exists() {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        return match std::fs::create_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(format!(
                "data_dir {shown} does not exist and {who} cannot create it in {}: create it for {who} \
                 (`install -d -o {} -m 0700 {shown}`), or set server.data_dir to a directory {who} can write",
                parent.display(),
                uid().map_or_else(|| "USER".to_string(), |u| u.to_string()),
            )),
            Err(e) => Err(format!(
                "data_dir {shown} cannot be created: {e}; set server.data_dir to a writable directory"
            )),
        };
    }
    if !dir.is_dir() {
        return Err(format!(
            "data_dir {shown} is not a directory; set server.data_dir to a directory"
        ));
    }
    let probe = dir.join(format!(".hookrouter-write-test-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let owner = std::fs::metadata(dir)
                .map(|m| {
                    format!(
                        " (it belongs to uid {}, mode {:04o})",
                        m.uid(),
                        m.permissions().mode() & 0o7777
                    )
                })
                .unwrap_or_default();
            let why = if e.kind() == ErrorKind::ReadOnlyFilesystem {
                " (a read-only file system)".to_string()
            } else {
                owner
            };
            Err(format!(
                "data_dir {shown} is not writable by {who}{why}: give {who} write access to it, \
                 or set server.data_dir to a directory {who} can write"
            ))
        }
        // Anything else (a full disk...) is for the store to report with its own words.
        Err(_) => Ok(()),
    }
}

/// A store that would not open, in plain words.
pub fn store_error(dir: &Path, e: &StoreError) -> String {
    if is_locked(e) {
        let pid = lock_holder(dir)
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        return format!(
            "another hookrouter holds data_dir {}{pid}: stop it first, or give this one its own \
             server.data_dir",
            dir.display()
        );
    }
    format!(
        "the store in data_dir {} cannot be opened: {e}",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_names_the_setting() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let e = std::io::Error::from(ErrorKind::AddrInUse);
        let m = bind_error("server.listen", addr, &e);
        assert!(
            m.starts_with("server.listen 127.0.0.1:8080 is in use: another hookrouter"),
            "{m}"
        );
        assert!(m.ends_with("change server.listen"), "{m}");
    }

    #[test]
    fn a_data_dir_that_is_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(check_data_dir(&file)
            .unwrap_err()
            .contains("is not a directory"));
        assert_eq!(check_data_dir(dir.path()), Ok(()));
        assert_eq!(check_data_dir(&dir.path().join("new/sub")), Ok(()));
    }
}
