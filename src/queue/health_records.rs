//! The destinations' health records, kept in sled's `v2.meta` tree next to the queue they
//! govern: a destination held before a restart (or a crash) is still held after it.
//!
//! The store keeps them as opaque bytes; `health` owns their shape. They change only when
//! a state changes or a probe is spaced out.

use super::{Store, StoreError};

/// Key prefix of a health record in `v2.meta`; the destination name follows.
const PREFIX: &[u8] = b"health/";

fn key(destination: &str) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(destination.as_bytes());
    k
}

impl Store {
    /// Every stored health record, by destination name.
    pub fn health_records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.trees.meta.scan_prefix(PREFIX) {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[PREFIX.len()..]).into_owned();
            out.push((name, v.to_vec()));
        }
        Ok(out)
    }

    /// Stores `destination`'s health record; with `sync`, durably before returning (an
    /// operator's hold). Without, it is durable with the next housekeeping flush (about a
    /// second): an automatic change lost to a crash is derived again from the next
    /// attempts, and a delivery worker never waits for a disk sync.
    pub fn save_health_record(
        &self,
        destination: &str,
        record: &[u8],
        sync: bool,
    ) -> Result<(), StoreError> {
        self.inner.trees.meta.insert(key(destination), record)?;
        if sync {
            self.sync_sled().map_err(|e| self.observe(e))?;
        }
        Ok(())
    }

    /// Forgets `destination`'s health record (the destination was removed).
    pub fn remove_health_record(&self, destination: &str) -> Result<(), StoreError> {
        self.inner.trees.meta.remove(key(destination))?;
        Ok(())
    }
}
