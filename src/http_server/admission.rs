//! Which connections may wait for a request head, and what a request in progress holds.
//!
//! A client that connects and then sends its head slowly (slowloris), or nothing at all,
//! costs a socket and a small read buffer, but it must not cost the capacity real requests
//! need. So a connection waiting for a head (its first one, or the next one on a kept-alive
//! connection) holds no slot of `max_connections`: that limit is taken only by a request
//! whose head has arrived, until its answer is ready ([`Admission::request_slots`]).
//!
//! Waiting connections are bounded on their own: at most `per_peer` from one address (an
//! IPv6 address counts by its /64, which one host usually holds whole) and `total` from
//! everyone.
//!
//! - A new connection from a peer that already has its share waiting is **parked**: it is
//!   held open but not read, at the cost of its socket and nothing else, and it is served
//!   (promoted) in its turn as soon as one of that peer's waiting connections leaves (its
//!   head arrived, it closed, it timed out); the listener closes a connection parked too
//!   long. Closing something instead is what a flood wants: a client that reconnects at
//!   once whenever it is closed turns every close into a new connection, and at thousands a
//!   second that churn (and the accept queue it fills) is what real webhooks would wait
//!   behind. Parked, the flood's connections stay where they are, and the only churn left
//!   is what the head timeout causes.
//! - A kept-alive connection idle between requests is the exception: when its peer is at
//!   its share, the oldest idle one of that peer is closed to make room instead (a proxy's
//!   idle pool would otherwise keep its new connections parked; closing an idle kept-alive
//!   connection is ordinary HTTP).
//! - When `total` are waiting, a new connection of a peer that holds at least an equal
//!   part of them is parked too; any other peer's gets in, and the connection waiting
//!   **longest** is closed to make room: a real client sends its head within milliseconds
//!   of connecting, so it is never that one. (Refusing the newcomer instead would let
//!   whoever holds the most sockets lock everyone else out.)
//! - Parking has its own bounds (`parked_per_peer`, `parked_total`); beyond them the
//!   connection waiting longest (of the peer at its share, or of all) is closed instead.
//!
//! hyper's `header_read_timeout` still closes any connection whose head takes too long.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

/// The waiting and parked connections of one listener, and its request slots.
pub struct Admission {
    waiting: Mutex<Waiting>,
    limits: Limits,
    requests: Arc<Semaphore>,
}

/// How many connections may wait for a head, and how many may be parked.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests in progress at once (`max_connections`).
    pub requests: usize,
    /// Connections waiting for a head from one peer.
    pub per_peer: usize,
    /// Connections waiting for a head from everyone.
    pub total: usize,
    /// Connections parked for one peer.
    pub parked_per_peer: usize,
    /// Connections parked for everyone.
    pub parked_total: usize,
}

/// One connection waiting for a head.
struct Entry {
    peer: IpAddr,
    closed: CancellationToken,
    /// It has served a request before: an idle kept-alive connection.
    kept_alive: bool,
}

/// Connections waiting for a head, by the order they started waiting, and the parked ones.
#[derive(Default)]
struct Waiting {
    next: u64,
    /// Sequence number -> the waiting connection.
    by_seq: BTreeMap<u64, Entry>,
    /// Per peer, the sequence numbers of its waiting connections (oldest first).
    by_peer: HashMap<IpAddr, BTreeSet<u64>>,
    /// Per peer, its parked connections (oldest first): where to send each its place.
    parked: HashMap<IpAddr, BTreeMap<u64, oneshot::Sender<Arc<Connection>>>>,
    /// Every parked connection's peer, oldest first.
    parked_order: BTreeMap<u64, IpAddr>,
    parked_count: usize,
    /// Connections closed to make room, and connections parked, since the last count.
    closed: u64,
    parked_since: u64,
}

impl Waiting {
    fn of_peer(&self, peer: IpAddr) -> usize {
        self.by_peer.get(&peer).map_or(0, BTreeSet::len)
    }

    fn parked_of(&self, peer: IpAddr) -> usize {
        self.parked.get(&peer).map_or(0, BTreeMap::len)
    }

    fn oldest_of(&self, peer: IpAddr) -> Option<u64> {
        self.by_peer.get(&peer).and_then(|set| set.first().copied())
    }

    fn enter(&mut self, peer: IpAddr, closed: CancellationToken, kept_alive: bool) -> u64 {
        let n = self.next;
        self.next += 1;
        let entry = Entry {
            peer,
            closed,
            kept_alive,
        };
        self.by_seq.insert(n, entry);
        self.by_peer.entry(peer).or_default().insert(n);
        n
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.by_seq.remove(&seq)?;
        if let Some(set) = self.by_peer.get_mut(&entry.peer) {
            set.remove(&seq);
            if set.is_empty() {
                self.by_peer.remove(&entry.peer);
            }
        }
        Some(entry)
    }

    /// Closes the connection waiting under `seq` to make room.
    fn close(&mut self, seq: u64) {
        if let Some(entry) = self.remove(seq) {
            entry.closed.cancel();
            self.closed += 1;
        }
    }

    /// The oldest parked connection of `peer`, taken out of the parked ones.
    fn unpark(&mut self, peer: IpAddr) -> Option<oneshot::Sender<Arc<Connection>>> {
        let queue = self.parked.get_mut(&peer)?;
        let (id, place) = queue.pop_first()?;
        if queue.is_empty() {
            self.parked.remove(&peer);
        }
        self.parked_order.remove(&id);
        self.parked_count -= 1;
        Some(place)
    }

    /// Gives up the place parked under `id`, if it is still parked.
    fn leave_parked(&mut self, peer: IpAddr, id: u64) {
        let Some(queue) = self.parked.get_mut(&peer) else {
            return;
        };
        if queue.remove(&id).is_some() {
            if queue.is_empty() {
                self.parked.remove(&peer);
            }
            self.parked_order.remove(&id);
            self.parked_count -= 1;
        }
    }
}

/// What became of a newly accepted connection.
pub enum Admit {
    /// Serve it now: it waits for its first head.
    Now(Arc<Connection>),
    /// Hold it, unread, until [`Parked::promoted`] says its turn came.
    Parked(Parked),
}

/// The key a peer's connections are counted under: its address, an IPv6 one by its /64
/// (and an IPv4-mapped one as the IPv4 address it is).
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

impl Admission {
    /// An admission with these limits (each at least 1).
    pub fn new(limits: Limits) -> Arc<Admission> {
        let limits = Limits {
            requests: limits.requests.max(1),
            per_peer: limits.per_peer.max(1),
            total: limits.total.max(1),
            parked_per_peer: limits.parked_per_peer,
            parked_total: limits.parked_total,
        };
        Arc::new(Admission {
            waiting: Mutex::new(Waiting::default()),
            limits,
            requests: Arc::new(Semaphore::new(limits.requests)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // The maps stay consistent whatever panicked while holding them.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The slots a request takes from its head to its answer (`max_connections`).
    pub fn request_slots(&self) -> Arc<Semaphore> {
        self.requests.clone()
    }

    /// A newly accepted connection from `ip`: it waits for its first head now, or is parked
    /// when its peer has its share waiting (see the module's doc).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Admit {
        let peer = peer_key(ip);
        let mut w = self.lock();
        if !self.may_wait(&w, peer) || w.parked_of(peer) > 0 {
            let at_share = w.of_peer(peer) >= self.limits.per_peer;
            let idle_oldest = w
                .oldest_of(peer)
                .filter(|seq| w.by_seq.get(seq).is_some_and(|e| e.kept_alive));
            if let (true, Some(idle)) = (at_share, idle_oldest) {
                w.close(idle);
            } else if w.parked_count < self.limits.parked_total
                && w.parked_of(peer) < self.limits.parked_per_peer
            {
                return Admit::Parked(self.park(&mut w, peer));
            } else if let (true, Some(oldest)) = (at_share, w.oldest_of(peer)) {
                w.close(oldest);
            }
        }
        Admit::Now(self.new_waiting(&mut w, peer))
    }

    /// Whether one more connection of `peer` may wait for a head: it is below its share,
    /// and, when `total` are waiting, below an equal part of the total (the peers holding
    /// most are the ones whose new connections park; any other still gets in, closing the
    /// one waiting longest).
    fn may_wait(&self, w: &Waiting, peer: IpAddr) -> bool {
        let mine = w.of_peer(peer);
        if mine >= self.limits.per_peer {
            return false;
        }
        if w.by_seq.len() < self.limits.total {
            return true;
        }
        mine < self.limits.total / w.by_peer.len().max(1)
    }

    fn park(self: &Arc<Self>, w: &mut Waiting, peer: IpAddr) -> Parked {
        let id = w.next;
        w.next += 1;
        let (place, promoted) = oneshot::channel();
        w.parked.entry(peer).or_default().insert(id, place);
        w.parked_order.insert(id, peer);
        w.parked_count += 1;
        w.parked_since += 1;
        // A peer below its share with connections parked (its waiting ones were closed to
        // make room for others) lets the oldest in first.
        self.promote(w, peer);
        Parked {
            admission: self.clone(),
            peer,
            id,
            promoted,
        }
    }

    /// A new connection of `peer` entered among the waiting ones (beyond `total`, the one
    /// waiting longest is closed).
    fn new_waiting(self: &Arc<Self>, w: &mut Waiting, peer: IpAddr) -> Arc<Connection> {
        self.make_room(w);
        let closed = CancellationToken::new();
        let seq = w.enter(peer, closed.clone(), false);
        Arc::new(Connection {
            admission: self.clone(),
            peer,
            closed,
            served: AtomicBool::new(false),
            seq: Mutex::new(Some(seq)),
        })
    }

    fn make_room(&self, w: &mut Waiting) {
        if w.by_seq.len() >= self.limits.total {
            if let Some((&oldest, _)) = w.by_seq.first_key_value() {
                w.close(oldest);
            }
        }
    }

    /// Lets parked connections of `peer` in while it may wait.
    fn promote(self: &Arc<Self>, w: &mut Waiting, peer: IpAddr) {
        while self.may_wait(w, peer) {
            let Some(place) = w.unpark(peer) else { return };
            if place.is_closed() {
                continue;
            }
            let connection = self.new_waiting(w, peer);
            if let Err(unsent) = place.send(connection) {
                // Its holder is gone (it cannot be while we hold the lock, but if it were):
                // take it out again, so that dropping it here does not need the lock.
                if let Some(seq) = unsent.seq().take() {
                    w.remove(seq);
                }
            }
        }
    }

    /// While the total has room, lets in the parked connections of any peer that may
    /// wait: the longest parked one's peer first, then the others.
    fn promote_others(self: &Arc<Self>, w: &mut Waiting) {
        let oldest = w.parked_order.first_key_value().map(|(_, &p)| p);
        let others: Vec<IpAddr> = w.parked.keys().copied().collect();
        for peer in oldest.into_iter().chain(others) {
            if w.by_seq.len() >= self.limits.total {
                return;
            }
            self.promote(w, peer);
        }
    }

    /// How many connections are waiting for a head now, and how many are parked.
    pub fn waiting(&self) -> (usize, usize) {
        let w = self.lock();
        (w.by_seq.len(), w.parked_count)
    }

    /// The peer with the most connections waiting and parked, with those counts (for the
    /// log line that says a flood is on).
    pub fn busiest_peer(&self) -> Option<(IpAddr, usize, usize)> {
        let w = self.lock();
        let peers = w.by_peer.keys().chain(w.parked.keys());
        peers
            .map(|&p| (p, w.of_peer(p), w.parked_of(p)))
            .max_by_key(|&(_, waiting, parked)| waiting + parked)
    }

    /// How many waiting connections were closed to make room, and how many new ones were
    /// parked, since the last call.
    pub fn take_counts(&self) -> (u64, u64) {
        let mut w = self.lock();
        (
            std::mem::take(&mut w.closed),
            std::mem::take(&mut w.parked_since),
        )
    }
}

/// A parked connection's place in line; dropping it gives the place up.
pub struct Parked {
    admission: Arc<Admission>,
    peer: IpAddr,
    id: u64,
    promoted: oneshot::Receiver<Arc<Connection>>,
}

impl Parked {
    /// Resolves when the connection's turn came, with its place among the waiting ones.
    pub async fn promoted(&mut self) -> Option<Arc<Connection>> {
        (&mut self.promoted).await.ok()
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.admission.lock().leave_parked(self.peer, self.id);
        // A place sent but not taken is dropped with the receiver, after the lock.
    }
}

/// One served connection's place in [`Admission`].
pub struct Connection {
    admission: Arc<Admission>,
    peer: IpAddr,
    closed: CancellationToken,
    /// A request arrived on it: when it waits again it is an idle kept-alive connection.
    served: AtomicBool,
    /// Its sequence number while it waits for a head.
    seq: Mutex<Option<u64>>,
}

impl Connection {
    fn seq(&self) -> MutexGuard<'_, Option<u64>> {
        self.seq.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection waits for a head again (its last answer is ready); if its peer is at
    /// its share the oldest waiting connection of that peer is closed, and beyond `total`
    /// the oldest of all.
    pub fn start_waiting(&self) {
        let a = &self.admission;
        let mut w = a.lock();
        let mut seq = self.seq();
        if seq.is_some() || self.closed.is_cancelled() {
            return;
        }
        match w.oldest_of(self.peer) {
            Some(oldest) if w.of_peer(self.peer) >= a.limits.per_peer => w.close(oldest),
            _ => a.make_room(&mut w),
        }
        let kept_alive = self.served.load(Ordering::Relaxed);
        *seq = Some(w.enter(self.peer, self.closed.clone(), kept_alive));
    }

    /// A head has arrived (or the connection ended): it no longer counts as waiting, and a
    /// parked connection of its peer may take its place.
    pub fn head_arrived(&self) {
        self.served.store(true, Ordering::Relaxed);
        if self.seq().is_none() {
            return;
        }
        let a = &self.admission;
        let mut w = a.lock();
        let Some(n) = self.seq().take() else { return };
        // Closed to make room, it left already; either way there may be room now.
        w.remove(n);
        a.promote(&mut w, self.peer);
        a.promote_others(&mut w);
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
#[path = "admission_tests.rs"]
mod tests;
