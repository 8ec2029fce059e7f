//! Key encodings. Everything is big-endian so that sled's byte order is the order we want:
//! due keys sort by destination, then due time, then job id.

use uuid::Uuid;

/// Body chunk size: sled writes values over ~128 KiB to blob files it never fsyncs, so
/// bodies are split well below that.
pub const BODY_CHUNK: usize = 64 * 1024;

/// `bodies` key: event id, then chunk number.
pub fn body_key(event: &Uuid, chunk: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(event.as_bytes());
    k[16..].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// `attempts` key: job id, then attempt number.
pub fn attempt_key(job: &Uuid, attempt: u32) -> [u8; 20] {
    body_key(job, attempt)
}

/// The prefix of every `due` key of `destination` (names never contain NUL).
pub fn due_prefix(destination: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(destination.len() + 1);
    k.extend_from_slice(destination.as_bytes());
    k.push(0);
    k
}

/// `due` key: destination, NUL, due time (Unix ms), job id.
pub fn due_key(destination: &str, due_ms: u64, job: &Uuid) -> Vec<u8> {
    let mut k = due_prefix(destination);
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(job.as_bytes());
    k
}

/// Splits a `due` key into destination, due time and job id.
pub fn parse_due_key(key: &[u8]) -> Option<(&str, u64, Uuid)> {
    let nul = key.iter().position(|b| *b == 0)?;
    let rest = &key[nul + 1..];
    if rest.len() != 24 {
        return None;
    }
    let dest = std::str::from_utf8(&key[..nul]).ok()?;
    let due = u64::from_be_bytes(rest[..8].try_into().ok()?);
    let job = Uuid::from_slice(&rest[8..]).ok()?;
    Some((dest, due, job))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_round_trip_and_sort_by_time() {
        let a = Uuid::now_v7();
        let early = due_key("crm", 5, &a);
        let late = due_key("crm", 256, &a);
        assert!(early < late);
        assert_eq!(parse_due_key(&late), Some(("crm", 256, a)));
        assert!(due_key("crm", u64::MAX, &a) < due_prefix("crm2"));
    }
}
