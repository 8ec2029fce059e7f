//! What can go wrong in the store, and which of it is fatal.

use std::path::PathBuf;

use super::journal::JournalError;
use super::presence;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, corruption, disk full).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// The journal could not be read or written.
    #[error("store: {0}")]
    Journal(#[from] JournalError),
    /// Syncing the database file failed.
    #[error("store: fdatasync: {0}")]
    Sync(std::io::Error),
    /// A record did not decode.
    #[error("store: corrupt record: {0}")]
    Corrupt(String),
    /// The data directory holds a store this version cannot use as it is.
    #[error("store: {0}")]
    Format(String),
    /// The batch this event was in could not be made durable.
    #[error("store: could not persist: {0}")]
    NotPersisted(String),
    /// The committer is gone (shutting down).
    #[error("store: shutting down")]
    Closed,
    /// A file of the store cannot be read as what it should be: found at open, before
    /// anything was changed. Not repaired automatically: that would drop what it held.
    #[error("store: {} is damaged ({reason}). Nothing was changed. Restore data_dir from a backup; or, to start without what it holds (its pending jobs and dead letters are then lost), move data_dir aside and start again", .path.display())]
    Damaged {
        /// The file (or, when it cannot be told which, the directory).
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// A file or directory of the store was deleted or replaced under the running daemon.
    #[error("store: {0}")]
    Vanished(#[from] presence::Vanished),
}

impl StoreError {
    /// True for errors after which this process cannot trust its store again. sled 0.34
    /// makes any I/O error in its write path sticky: it records a "global error" and fails
    /// every later operation with it, even once the cause (a full disk) is gone, until the
    /// database is reopened. A failed write or `fdatasync` of the journal leaves the page
    /// cache in an unknown state. Recovery is a restart: what was acknowledged is on disk.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StoreError::Sled(sled::Error::Io(_))
                | StoreError::Sync(_)
                | StoreError::Journal(JournalError::Io { .. })
                | StoreError::Vanished(_)
        )
    }
}
