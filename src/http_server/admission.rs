//! Which connections may wait for a request head, and what a request in progress holds.
//!
//! A client that connects and then sends its head slowly (slowloris), or nothing at all,
//! costs a socket and a small read buffer, but it must not cost the capacity real requests
//! need. So a connection waiting for a head (its first one, or the next one on a kept-alive
//! connection) holds no slot of `max_connections`: that limit is taken only by a request
//! whose head has arrived, until its answer is ready ([`Admission::request_slots`]).
//!
//! Waiting connections are bounded on their own, by closing the **oldest** waiting
//! connection when a new one would pass a cap: at most [`Admission::new`]'s `per_peer`
//! waiting from one IP address, and `total` from everyone. A real client sends its head
//! within milliseconds of connecting, so it is never the oldest one waiting; the ones
//! closed are those that have been dawdling longest. (Refusing the new connection instead
//! would let whoever holds the most sockets lock everyone else out.) hyper's
//! `header_read_timeout` still closes any connection whose head takes too long.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The waiting connections of one listener and its request slots.
pub struct Admission {
    waiting: Mutex<Waiting>,
    per_peer: usize,
    total: usize,
    requests: Arc<Semaphore>,
}

/// Connections waiting for a head, by the order they started waiting.
#[derive(Default)]
struct Waiting {
    next: u64,
    /// Sequence number -> the connection's peer and its close signal.
    by_seq: BTreeMap<u64, (IpAddr, CancellationToken)>,
    /// Per peer, the sequence numbers of its waiting connections (oldest first).
    by_peer: HashMap<IpAddr, BTreeSet<u64>>,
    /// Connections closed to make room, since the last time the count was taken.
    closed: u64,
}

impl Waiting {
    fn remove(&mut self, seq: u64) -> Option<(IpAddr, CancellationToken)> {
        let (peer, token) = self.by_seq.remove(&seq)?;
        if let Some(set) = self.by_peer.get_mut(&peer) {
            set.remove(&seq);
            if set.is_empty() {
                self.by_peer.remove(&peer);
            }
        }
        Some((peer, token))
    }

    /// Closes the connection waiting under `seq` to make room.
    fn close(&mut self, seq: u64) {
        if let Some((_, token)) = self.remove(seq) {
            token.cancel();
            self.closed += 1;
        }
    }
}

impl Admission {
    /// `max_requests` requests in progress at once; at most `per_peer` connections waiting
    /// for a head from one IP address and `total` in all (each at least 1).
    pub fn new(max_requests: usize, per_peer: usize, total: usize) -> Arc<Admission> {
        Arc::new(Admission {
            waiting: Mutex::new(Waiting::default()),
            per_peer: per_peer.max(1),
            total: total.max(1),
            requests: Arc::new(Semaphore::new(max_requests.max(1))),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // The map stays consistent whatever panicked while holding it.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The slots a request takes from its head to its answer (`max_connections`).
    pub fn request_slots(&self) -> Arc<Semaphore> {
        self.requests.clone()
    }

    /// A newly accepted connection from `peer`: it starts waiting for its first head.
    pub fn connection(self: &Arc<Self>, peer: IpAddr) -> Arc<Connection> {
        let conn = Arc::new(Connection {
            admission: self.clone(),
            peer,
            closed: CancellationToken::new(),
            seq: Mutex::new(None),
        });
        conn.start_waiting();
        conn
    }

    /// How many connections are waiting for a head now.
    pub fn waiting(&self) -> usize {
        self.lock().by_seq.len()
    }

    /// How many waiting connections were closed to make room since the last call.
    pub fn take_closed(&self) -> u64 {
        std::mem::take(&mut self.lock().closed)
    }
}

/// One accepted connection's place in [`Admission`].
pub struct Connection {
    admission: Arc<Admission>,
    peer: IpAddr,
    closed: CancellationToken,
    /// Its sequence number while it waits for a head.
    seq: Mutex<Option<u64>>,
}

impl Connection {
    fn seq(&self) -> MutexGuard<'_, Option<u64>> {
        self.seq.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection waits for a head again (it is new, or its last answer is ready);
    /// the oldest waiting connections are closed if that passes a cap.
    pub fn start_waiting(&self) {
        let a = &self.admission;
        let mut w = a.lock();
        let mut seq = self.seq();
        if seq.is_some() || self.closed.is_cancelled() {
            return;
        }
        let oldest_of_peer = w
            .by_peer
            .get(&self.peer)
            .filter(|set| set.len() >= a.per_peer)
            .and_then(|set| set.first().copied());
        if let Some(oldest) = oldest_of_peer {
            w.close(oldest);
        } else if w.by_seq.len() >= a.total {
            if let Some((&oldest, _)) = w.by_seq.first_key_value() {
                w.close(oldest);
            }
        }
        let n = w.next;
        w.next += 1;
        w.by_seq.insert(n, (self.peer, self.closed.clone()));
        w.by_peer.entry(self.peer).or_default().insert(n);
        *seq = Some(n);
    }

    /// A head has arrived: the connection no longer counts as waiting.
    pub fn head_arrived(&self) {
        let mut w = self.admission.lock();
        if let Some(n) = self.seq().take() {
            w.remove(n);
        }
    }

    /// Resolves when the connection was closed to make room for newer ones.
    pub async fn evicted(&self) {
        self.closed.cancelled().await
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.head_arrived();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn the_oldest_waiting_connection_of_a_peer_is_closed_beyond_its_cap() {
        let a = Admission::new(4, 2, 100);
        let first = a.connection(ip(2));
        let second = a.connection(ip(2));
        let other = a.connection(ip(3));
        assert!(!first.closed.is_cancelled());
        let third = a.connection(ip(2));
        assert!(first.closed.is_cancelled(), "the oldest of that peer goes");
        assert!(!second.closed.is_cancelled() && !third.closed.is_cancelled());
        assert!(!other.closed.is_cancelled(), "another peer is not touched");
        assert_eq!(a.waiting(), 3);
        assert_eq!(a.take_closed(), 1);
        assert_eq!(a.take_closed(), 0);
    }

    #[test]
    fn beyond_the_total_the_oldest_of_all_is_closed() {
        let a = Admission::new(4, 10, 3);
        let conns: Vec<_> = (0..3).map(|i| a.connection(ip(10 + i))).collect();
        let newest = a.connection(ip(20));
        assert!(conns[0].closed.is_cancelled());
        assert!(!conns[1].closed.is_cancelled() && !newest.closed.is_cancelled());
        assert_eq!(a.waiting(), 3);
    }

    #[test]
    fn a_connection_past_its_head_does_not_count_until_it_waits_again() {
        let a = Admission::new(4, 1, 10);
        let busy = a.connection(ip(2));
        busy.head_arrived();
        assert_eq!(a.waiting(), 0);
        let idle = a.connection(ip(2));
        assert!(
            !busy.closed.is_cancelled(),
            "a request in progress is never closed"
        );
        busy.start_waiting();
        assert!(idle.closed.is_cancelled(), "now the older waiting one goes");
        drop(busy);
        assert_eq!(a.waiting(), 0, "a dropped connection leaves");
    }
}
