//! Why the daemon could not start or stopped with an error, and the exit code each calls
//! for.

use std::net::SocketAddr;

use crate::deliver::DispatchError;
use crate::queue::StoreError;
use crate::startup;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The data directory cannot be used (missing and not creatable, not writable).
    #[error("{0}")]
    DataDir(String),
    /// The store could not be opened (another hookrouter holds it, or sled failed).
    #[error("{}", startup::store_error(std::path::Path::new(path), error))]
    Store {
        /// The data directory.
        path: String,
        /// What the store said.
        error: StoreError,
    },
    /// A listener could not be bound.
    #[error("{}", startup::bind_error(setting, *addr, error))]
    Bind {
        /// `server.listen` or `server.admin_listen`.
        setting: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The committer thread could not be started.
    #[error("starting the committer thread: {0}")]
    Thread(std::io::Error),
    /// The delivery side could not start.
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The final flush failed.
    #[error("final flush: {0}")]
    Flush(StoreError),
    /// The saved replay operations could not be read.
    #[error("reading the replay operations: {0}")]
    Replays(String),
    /// The store hit an I/O error that sled does not recover from without a restart.
    #[error("the store failed (see the error logged before); restart hookrouter once the disk has room again: nothing acknowledged is lost")]
    StoreFailed,
    /// Files of the store were deleted or replaced under the running daemon.
    #[error("the data directory was deleted or replaced while hookrouter was running (see the error logged before); restore it from a backup, or move what is left aside to start empty, then start hookrouter again")]
    StoreVanished,
}

impl RunError {
    /// The exit code this error calls for, when it is not the generic failure: 74
    /// (EX_IOERR) for a data directory that vanished under the daemon, 65 (EX_DATAERR) for
    /// a store found damaged at start. The systemd unit does not restart on either: a
    /// restart cannot repair them, and one on an empty directory would start afresh.
    pub fn exit_code(&self) -> Option<u8> {
        match self {
            RunError::StoreVanished => Some(74),
            RunError::Store {
                error: StoreError::Damaged { .. },
                ..
            } => Some(65),
            _ => None,
        }
    }
}
