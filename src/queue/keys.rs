//! sled key encodings. Everything is big-endian so that sled's byte order is the order we
//! want: due keys sort by destination, then due time, then job id.

use uuid::Uuid;

/// `attempts` key: job id, then attempt number.
pub fn attempt_key(job: &Uuid, attempt: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(job.as_bytes());
    k[16..].copy_from_slice(&attempt.to_be_bytes());
    k
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

/// What an `expiry` entry points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiring {
    /// A job settled through sled (and its attempts), after `server.retention`.
    Settled,
    /// A dead letter, after `server.dead_retention`.
    Dead,
}

impl Expiring {
    fn tag(self) -> u8 {
        match self {
            Expiring::Settled => b'j',
            Expiring::Dead => b'd',
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            b'j' => Some(Expiring::Settled),
            b'd' => Some(Expiring::Dead),
            _ => None,
        }
    }
}

/// `expiry` key: expiry time (Unix ms, BE), a tag, then the key of the record in its tree,
/// so a range scan up to "now" yields exactly what is due for purging, oldest first.
pub fn expiry_key(at_ms: u64, what: Expiring, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + id.len());
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.push(what.tag());
    k.extend_from_slice(id);
    k
}

/// Splits an `expiry` key into time, tag and record key.
pub fn parse_expiry_key(key: &[u8]) -> Option<(u64, Expiring, &[u8])> {
    if key.len() < 9 {
        return None;
    }
    let at = u64::from_be_bytes(key[..8].try_into().ok()?);
    Some((at, Expiring::from_tag(key[8])?, &key[9..]))
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

    #[test]
    fn expiry_keys_round_trip_and_sort_by_time() {
        let a = Uuid::now_v7();
        let k = expiry_key(7, Expiring::Dead, a.as_bytes());
        assert_eq!(
            parse_expiry_key(&k),
            Some((7, Expiring::Dead, &a.as_bytes()[..]))
        );
        assert!(k < expiry_key(256, Expiring::Settled, a.as_bytes()));
    }
}
