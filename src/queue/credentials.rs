//! Rotated OAuth refresh tokens, kept in sled's `v2.meta` tree beside the health records.
//!
//! A CRM that rotates refresh tokens (Salesforce can) invalidates the old one the moment it
//! issues the new one: the token in `routes.yaml` is then useless, and the only copy of the
//! valid one is what the daemon received. It is written here, synced, before the access
//! token that came with it is used, so it survives a restart and `kill -9`. The store keeps
//! opaque bytes; `auth` owns their shape. The data directory is owner-only (0700, files
//! 0600), like the journal that holds the events.

use super::{Store, StoreError};

/// Key prefix of a credential record in `v2.meta`; the destination name follows.
const PREFIX: &[u8] = b"credential/";

fn key(destination: &str) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(destination.as_bytes());
    k
}

impl Store {
    /// The credential record stored for `destination`, if any.
    pub fn credential_record(&self, destination: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .inner
            .trees
            .meta
            .get(key(destination))?
            .map(|v| v.to_vec()))
    }

    /// Stores `destination`'s credential record durably (synced) before returning: a
    /// rotated refresh token lost to a crash cannot be had again.
    pub fn save_credential_record(
        &self,
        destination: &str,
        record: &[u8],
    ) -> Result<(), StoreError> {
        self.inner.trees.meta.insert(key(destination), record)?;
        self.sync_sled().map_err(|e| self.observe(e))
    }
}
